#!/bin/bash
# Stop the lab cluster and give the host back exactly as up.sh found it: no process, no mount,
# no cgroup, no bridge, no iptables chain, no sysctl change and none of the host paths the
# kubelet/containerd hard-code (/var/log/pods, ...) that did not exist before the first up.sh.
#
#   scripts/lab/down.sh [--wipe]
#
# Without --wipe the cluster's data stays in $EAGLE_LAB (etcd, pki, imported images), so the
# next up.sh is quicker and finds its objects again. With --wipe $EAGLE_LAB is deleted too.
# Idempotent: on a stopped (or never started) lab it checks and does nothing.
# Exits non-zero, with one line saying what, if anything is still left at the end.
set -euo pipefail
# shellcheck source=scripts/lab/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
WIPE=0
for a in "$@"; do
  case $a in
    --wipe) WIPE=1 ;;
    *) die "usage: down.sh [--wipe]" ;;
  esac
done
C=$EAGLE_LAB; R=$LAB_RUN
mapfile -t NODES < <(lab_nodes)
# the lab's own executables: the only processes the sweep below may end
LAB_EXES='^(etcd|containerd|containerd-shim-runc-v2|containerd-shim|runc|kube-apiserver|kube-controller-manager|kube-scheduler|kubelet|strace)$'

alive() { kill -0 "$1" 2>/dev/null; }
# stop NAME...: stop what up.sh started, by saved PID: TERM to all at once (each takes a second
# or two to shut down gracefully), KILL whatever still runs after 15 s
stop() {
  local n p tgt i pids=() tgts=() names=()
  for n in "$@"; do
    [ -f "$R/$n.pid" ] || continue
    p=$(cat "$R/$n.pid"); rm -f "$R/$n.pid"
    alive "$p" || continue
    # up.sh starts each component with setsid, so its PID is its process group: signal the
    # group (covers "strace ... kubelet"), except containerd's: its shims must not get signals
    tgt=$p
    if [[ $n != containerd* ]] && [ "$(ps -o pgid= -p "$p" | tr -d ' ')" = "$p" ]; then tgt=-$p; fi
    kill -TERM -- "$tgt" 2>/dev/null || true
    pids+=("$p"); tgts+=("$tgt"); names+=("$n($p)")
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  for ((i = 0; i < 30; i++)); do
    for p in "${pids[@]}"; do alive "$p" && break; p=; done
    [ -n "$p" ] || break
    sleep 0.5
  done
  for i in "${!pids[@]}"; do
    if alive "${pids[$i]}"; then kill -KILL -- "${tgts[$i]}" 2>/dev/null || true; fi
  done
  log "stopped ${names[*]}"
}
# PIDs of processes left over from the lab: any lab executable whose command line names the
# state dir (components, shims), and any process still in a node's cgroup tree (containers).
leftover_pids() {
  local d p exe
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    [ "$p" != $$ ] || continue
    exe=$(basename "$(readlink "$d/exe" 2>/dev/null)" 2>/dev/null) || continue
    [[ $exe =~ $LAB_EXES ]] || continue
    grep -qF -- "$C/" <<<"$(tr '\0' ' ' < "$d/cmdline" 2>/dev/null)" && echo "$p"
  done
  for d in /sys/fs/cgroup/*/"$LAB_CGROUP_PARENT"; do
    [ -d "$d" ] && find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null
  done
  true
}
lab_mounts() { # mount points under the state dir or under host paths we created, deepest first
  local roots=("$C") p
  if [ -f "$R/host-paths.created" ]; then while read -r p; do roots+=("$p"); done < "$R/host-paths.created"; fi
  awk '{print $2}' /proc/self/mounts | while read -r m; do
    for p in "${roots[@]}"; do case $m in "$p"|"$p"/*) echo "$m"; break ;; esac; done
  done | sort -r
}

T0=$(date +%s)
# 1. the kubelets first (they would restart containers), then every pod container via its
#    node's containerd
stop "${NODES[@]/#/kubelet-}"
kill_containers() { # NODE
  local n=$1 tasks t c i
  timeout 3 ctr --address "$(node_ctr_sock "$n")" version >/dev/null 2>&1 || return 0
  tasks=$(ctr_node "$n" tasks ls -q 2>/dev/null || true)
  for t in $tasks; do ctr_node "$n" tasks kill -s KILL "$t" >/dev/null 2>&1 || true; done
  for ((i = 0; i < 20; i++)); do
    [ -z "$(ctr_node "$n" tasks ls 2>/dev/null | awk 'NR>1 && $3!="STOPPED"')" ] && break; sleep 0.5
  done
  for t in $tasks; do ctr_node "$n" tasks delete "$t" >/dev/null 2>&1 || true; done
  for c in $(ctr_node "$n" containers ls -q 2>/dev/null || true); do ctr_node "$n" containers delete "$c" >/dev/null 2>&1 || true; done
  [ -z "$tasks" ] || log "killed $(wc -w <<<"$tasks") pod containers of $n"
}
for n in "${NODES[@]}"; do kill_containers "$n" & done
wait
# 2. the control plane and the containerds, reverse start order
stop kube-scheduler kube-controller-manager kube-apiserver
stop "${NODES[@]/#/containerd-}" etcd
# 3. anything left (shims, container processes, a component whose PID file was lost): by PID
left_pids=$(leftover_pids | sort -un)
if [ -n "$left_pids" ]; then
  log "ending leftover lab processes: $(tr '\n' ' ' <<<"$left_pids")"
  # shellcheck disable=SC2086  # one PID per word
  kill -KILL $left_pids 2>/dev/null || true
  for ((i = 0; i < 20; i++)); do [ -z "$(leftover_pids)" ] && break; sleep 0.5; done
fi
# 4. mounts: the nodes' mount namespaces (their nsfs files under run/ns: container root
#    filesystems, volumes and network namespaces go with them), anything else under the state dir
for ((i = 0; i < 3; i++)); do
  m=$(lab_mounts); [ -n "$m" ] || break
  while read -r mp; do umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || true; done <<<"$m"
done
# 5. cgroups the kubelet created (rmdir, deepest first; only empty cgroups can go, hence after 3)
if [ -f "$R/cgroups.created" ]; then
  while read -r d; do
    if [ -d "$d" ]; then find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
  done < "$R/cgroups.created"
fi
# 6. sysctls the kubelet changed
if [ -f "$R/sysctl.orig" ]; then
  sed 's/ = /=/' "$R/sysctl.orig" | xargs -r sysctl -q -w && log "sysctls restored"
fi
# 7. iptables chains that were not there before up.sh (the kubelet is told to make none)
if [ -f "$R/iptables-chains.orig" ]; then
  iptables_kube_chains | grep -vxF -f "$R/iptables-chains.orig" | while read -r fam t chain; do
    # drop the rules that jump to it, then the chain
    "$fam-save" -t "$t" | grep -E -- "^-A .* -j $chain( |$)" | while read -r rule; do
      eval "$fam -t $t ${rule/#-A/-D}" || true
    done
    "$fam" -t "$t" -F "$chain" 2>/dev/null || true
    "$fam" -t "$t" -X "$chain" 2>/dev/null && log "deleted $fam $t chain $chain"
  done || true
fi
# 8. the CNI bridge (veths went with their network namespaces) and the IPAM leases of dead pods
lab_bridges() { ip -o link show 2>/dev/null | sed -n 's/^[0-9]*: \(labcni[0-9]*\)[:@].*/\1/p'; }
for b in $(lab_bridges); do ip link delete "$b" && log "deleted bridge $b"; done
for n in "${NODES[@]}"; do rm -rf "$(node_dir "$n")/cni/ipam"; done
# never rm -rf a tree that still has something mounted in it (a bind mount of a host dir)
[ -z "$(lab_mounts)" ] || die "down.sh could not unmount: $(lab_mounts | tr '\n' ' ')"
# 9. host paths that did not exist before the first up.sh
if [ -f "$R/host-paths.created" ]; then
  while read -r p; do
    [ -n "$p" ] && [ -e "$p" ] && rm -rf --one-file-system "$p" && log "removed $p"
  done < "$R/host-paths.created"
fi

# --- check that nothing is left, then forget the records (the next up.sh takes new ones)
left=()
[ -z "$(leftover_pids)" ] || left+=("processes: $(leftover_pids | sort -un | tr '\n' ' ')")
[ -z "$(lab_bridges)" ] || left+=("bridges $(lab_bridges | tr '\n' ' ')")
if [ -f "$R/cgroups.created" ]; then
  while read -r d; do [ ! -e "$d" ] || left+=("cgroup $d"); done < "$R/cgroups.created"
fi
if [ -f "$R/sysctl.orig" ] && [ "$(sysctl -e "${LAB_SYSCTLS[@]}")" != "$(cat "$R/sysctl.orig")" ]; then left+=("sysctls"); fi
[ ${#left[@]} = 0 ] || die "down.sh left behind: ${left[*]}"
rm -f "$R"/sysctl.orig "$R"/host-paths.created "$R"/cgroups.created "$R"/iptables-chains.orig
if [ "$WIPE" = 1 ] && [ -d "$C" ]; then
  rm -rf --one-file-system "$C"
  # the default's parent, when it is empty (we made it)
  [ "$C" != /var/lib/kube-eagle/lab ] || rmdir /var/lib/kube-eagle 2>/dev/null || true
  log "wiped $C"
fi
log "lab down in $(( $(date +%s) - T0 ))s"

//! Which namespace a container runs in, as the node's kubelet records it, so that a cluster run
//! profiles only containers of the namespaces it declared.
//!
//! The CLI writes the namespaces of the containers it resolved into the Job
//! (`--namespace=NS`), and the admission policy admits the Job only when the user who creates
//! it may list pods in each (docs/security.md). But a container id says nothing of its
//! namespace to the API server: a user allowed in `shop` could declare `shop` and name a
//! container of `kube-system`. The id means something only on the node, so the agent checks it
//! there, against the record the kubelet keeps of every container it runs: a link
//! `/var/log/containers/<pod>_<namespace>_<container>-<id>.log` (pod, namespace and container
//! names are DNS names, which hold no `_`). Only root on the node writes that directory.
//!
//! The record is read through the root of the process that started the agent's container (its
//! runtime's shim, `containerd-shim` or `conmon`), which sees the node's files as the kubelet
//! and the runtime do; a node whose kubelet runs in a mount namespace of its own (the project's
//! lab) has its record there, not in the host's root.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::discovery::ProcFs;
use crate::target::Target;

/// The kubelet's directory of container links, below a root. Hard-coded in the kubelet.
const CONTAINER_LOGS: &str = "var/log/containers";

/// Where the agent sees the node's record: through its runtime's root (`/proc/PPID/root`), or
/// the host's (`/proc/1/root`) when it has no parent to go through.
pub fn record_dir(proc: &ProcFs) -> PathBuf {
    // SAFETY: getppid cannot fail.
    let parent = unsafe { libc::getppid() };
    let through = if parent > 1 { parent as u32 } else { 1 };
    proc.path().join(through.to_string()).join("root").join(CONTAINER_LOGS)
}

/// The namespace of each container `dir` records, by id. Names that are not the kubelet's
/// pattern are skipped: nothing in the directory is taken on trust beyond what it says.
pub fn read_record(dir: &Path) -> std::io::Result<HashMap<String, String>> {
    let mut namespaces = HashMap::new();
    for entry in std::fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
        if let Some((id, namespace)) = parse_record_name(&name) {
            namespaces.insert(id.to_owned(), namespace.to_owned());
        }
    }
    Ok(namespaces)
}

/// `(id, namespace)` of a link's name `<pod>_<namespace>_<container>-<id>.log`.
fn parse_record_name(name: &str) -> Option<(&str, &str)> {
    let (rest, id) = name.strip_suffix(".log")?.rsplit_once('-')?;
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let mut parts = rest.split('_');
    let (_pod, namespace, _container) = (parts.next()?, parts.next()?, parts.next()?);
    (parts.next().is_none() && eagle_proto::is_namespace_name(namespace)).then_some((id, namespace))
}

/// Refuses, in one line, a target that the record does not place in one of the `declared`
/// namespaces: a container of another namespace, one the kubelet does not run (a container
/// outside Kubernetes), and any process or pod named otherwise than by its container.
pub fn check_declared(targets: &[Target], declared: &[String], record: &HashMap<String, String>) -> Result<(), String> {
    let allowed = declared.join(", ");
    for target in targets {
        let Target::Container(id) = target else {
            return Err(format!(
                "{target}: a run that declares its namespaces ({allowed}) profiles containers only, named by their id"
            ));
        };
        // Ids are 64 digits in a cluster run (the policy's grammar); a shorter one must not
        // match a container of another namespace either.
        let mut matched = record.iter().filter(|(recorded, _)| recorded.starts_with(id.as_str())).peekable();
        if matched.peek().is_none() {
            return Err(format!(
                "container {id} is not one the kubelet of this node runs (no record of it in /{CONTAINER_LOGS}): only containers of the declared namespaces ({allowed}) may be profiled"
            ));
        }
        for (_, namespace) in matched {
            if !declared.contains(namespace) {
                return Err(format!(
                    "container {id} runs in namespace {namespace}, which this run did not declare ({allowed}): profile it with a run for its own namespace"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID_A: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const ID_B: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

    #[test]
    fn reads_the_kubelets_link_names_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            format!("api-7d9f_shop_server-{ID_A}.log"),
            format!("coredns-1_kube-system_coredns-{ID_B}.log"),
            // Not the kubelet's pattern: too many parts, a short id, no .log, a bad namespace.
            format!("a_b_c_d-{}.log", "1".repeat(64)),
            "p_ns_c-0123.log".to_owned(),
            format!("p_ns_c-{}", "2".repeat(64)),
            format!("p_Bad_c-{}.log", "3".repeat(64)),
        ] {
            // Dangling links, as on a node: only the names are read.
            std::os::unix::fs::symlink("/nonexistent", dir.path().join(name)).unwrap();
        }
        let record = read_record(dir.path()).unwrap();
        assert_eq!(
            record,
            HashMap::from([(ID_A.to_owned(), "shop".to_owned()), (ID_B.to_owned(), "kube-system".to_owned())])
        );
    }

    #[test]
    fn only_containers_of_declared_namespaces_pass() {
        let record = HashMap::from([(ID_A.to_owned(), "shop".to_owned()), (ID_B.to_owned(), "kube-system".to_owned())]);
        let shop = vec!["shop".to_owned()];
        assert_eq!(check_declared(&[Target::Container(ID_A.into())], &shop, &record), Ok(()));
        let other = check_declared(&[Target::Container(ID_A.into()), Target::Container(ID_B.into())], &shop, &record)
            .unwrap_err();
        assert!(other.contains("runs in namespace kube-system, which this run did not declare (shop)"), "{other}");
        let unknown = check_declared(&[Target::Container("9".repeat(64))], &shop, &record).unwrap_err();
        assert!(unknown.contains("not one the kubelet of this node runs"), "{unknown}");
        // A prefix of both ids' common start would reach kube-system's too.
        let short = check_declared(&[Target::Container(String::new())], &shop, &record).unwrap_err();
        assert!(short.contains("kube-system"), "{short}");
        for target in [Target::Pid(1), Target::Pod("0b6c6f1e-7a2e-4f41-9c6c-1d9f5a4e2b11".into())] {
            let refused = check_declared(&[target], &shop, &record).unwrap_err();
            assert!(refused.contains("containers only"), "{refused}");
        }
    }

    #[test]
    fn the_record_is_seen_through_the_agents_parent() {
        let dir = record_dir(&ProcFs::default());
        let parent = std::os::unix::process::parent_id();
        assert_eq!(dir, PathBuf::from(format!("/proc/{parent}/root/var/log/containers")));
    }
}

// SPDX-License-Identifier: GPL-2.0
/* The network side of kube-eagle (issue #19): TCP golden signals of the target processes per
 * peer, aggregated in the kernel, and the first bytes of their socket reads and writes for the
 * agent's HTTP/1.x parser.
 *
 * Every hook is a BTF-typed tracepoint (tp_btf), like the CPU program's fork/exec hooks: no
 * tracefs, kernel structures read through CO-RE relocations. No fentry/fexit: a kernel locked
 * down for integrity (as this project's lab machines are) refuses to load them; the
 * `sock_send_length`/`sock_recv_length` tracepoints (Linux 6.3) give what tcp_sendmsg and
 * tcp_recvmsg would, in the caller's context. Counters are in `net_traffic`
 * (atomic adds: many CPUs write one row); events that need their own time (a handshake's
 * latency, a request's bytes) go through the `net_events` ring buffer.
 *
 * Attribution: a read or write counts for the process that makes it; what happens in softirq or
 * timer context (handshake end, retransmission, reset) counts for the process the socket was
 * seen with first (`net_socks`, kept on the socket itself, deleted when it closes).
 */
#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "net.h"

char LICENSE[] SEC("license") = "GPL";

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define MSG_PEEK 2
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_CLOSE 7
#define TCP_LISTEN 10

/* System call numbers (the kernel's own tables: arch/x86/entry/syscalls, include/uapi/asm-generic)
 * of the calls whose buffer the HTTP parser reads, per architecture. */
#if defined(__TARGET_ARCH_arm64)
#define SYS_READ 63
#define SYS_WRITE 64
#define SYS_READV 65
#define SYS_WRITEV 66
#define SYS_SENDTO 206
#define SYS_RECVFROM 207
#define SYS_SENDMSG 211
#define SYS_RECVMSG 212
#else
#define SYS_READ 0
#define SYS_WRITE 1
#define SYS_READV 19
#define SYS_WRITEV 20
#define SYS_SENDTO 44
#define SYS_RECVFROM 45
#define SYS_SENDMSG 46
#define SYS_RECVMSG 47
#endif
/* Threads whose saved registers are not those of a system call of their own (task flags). */
#define PF_IO_WORKER 0x00000010
#define PF_KTHREAD 0x00200000

/* The processes to watch (tgid -> 1), filled by the agent and extended by the fork hook. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u32);
} net_targets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct eagle_net_key);
	__type(value, struct eagle_net_counters);
} net_traffic SEC(".maps");

/* What is known of a socket, kept on the socket itself (socket-local storage): found from the
 * socket by one helper call that reads the socket's own pointer to it (a socket with none has a
 * null pointer there), on every read and write of the machine, where a hash map keyed by its
 * address cost a lookup that mostly missed the cache; freed by the kernel with the socket, so
 * no entry outlives its socket or names a later one at the same address, and none is evicted.
 * Entries are made for every connection a listener of the node accepts (whose it is is known
 * at its first read or write), so their number is capped (`NET_SOCKS_MAX`, `net_socks_live`):
 * about 100 bytes each of the node's memory, charged to the agent. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct eagle_net_sock);
} net_socks SEC(".maps");

/* Drops of each row by reason (the row's `drops` is their sum). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct eagle_net_drop_key);
	__type(value, __u64);
} net_drop_reasons SEC(".maps");

/* [0]: entries of `net_socks` that exist now (made here, taken away when their socket closes);
 * [1]: connection numbers given so far (`struct eagle_net_sock.id`). */
#define NET_SOCKS_MAX 65536
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} net_socks_live SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} net_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EAGLE_NET_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} net_counters SEC(".maps");

/* 0: TCP counters only, no bytes copied for HTTP. */
const volatile __u32 CAPTURE_HTTP = 1;

/* The kernel's structures, reduced to the fields read here; CO-RE rewrites the offsets. */
struct in6_addr {
	union {
		__u8 u6_addr8[16];
	} in6_u;
} __attribute__((preserve_access_index));

struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));

struct net {
	struct ns_common ns;
} __attribute__((preserve_access_index));

typedef struct {
	struct net *net;
} possible_net_t;

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	possible_net_t skc_net;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
} __attribute__((preserve_access_index));

typedef struct {
	int counter;
} atomic_t;

struct sock {
	struct sock_common __sk_common;
	__u16 sk_protocol;
	atomic_t sk_drops;
} __attribute__((preserve_access_index));

struct tcp_sock {
	__u32 srtt_us;
} __attribute__((preserve_access_index));

struct sk_buff {
	struct sock *sk;
} __attribute__((preserve_access_index));

struct task_struct {
	unsigned int flags;
	int pid;
	int tgid;
} __attribute__((preserve_access_index));

/* A thread's registers as its system call found them, saved on its kernel stack: the call's number
 * and its second argument (every buffer read here is the second). */
#if defined(__TARGET_ARCH_arm64)
struct pt_regs {
	unsigned long regs[31];
	int syscallno;
} __attribute__((preserve_access_index));
#define SYSCALL_NUMBER(r) ((r)->syscallno)
#define SECOND_ARGUMENT(r) ((r)->regs[1])
#else
struct pt_regs {
	unsigned long si;
	unsigned long orig_ax;
} __attribute__((preserve_access_index));
#define SYSCALL_NUMBER(r) ((r)->orig_ax)
#define SECOND_ARGUMENT(r) ((r)->si)
#endif

/* struct iovec as user space lays it out (64-bit). */
struct user_iovec {
	__u64 base;
	__u64 len;
};

static __always_inline void bump(__u32 counter)
{
	__u64 *value = bpf_map_lookup_elem(&net_counters, &counter);
	if (value)
		*value += 1;
}

static __always_inline int is_target(__u32 tgid)
{
	return bpf_map_lookup_elem(&net_targets, &tgid) != 0;
}

static __always_inline __u16 swap16(__u16 v)
{
	return (v >> 8) | (v << 8);
}

/* The row of `sk` for `tgid`; 0 when the socket is no IPv4/IPv6 TCP socket. `sk` is BTF-typed
 * (a tracepoint's argument, or a segment's socket read from one): plain loads, which the
 * verifier turns into guarded reads at a fraction of a helper call's cost; this runs on every
 * read and write of a target. */
static __always_inline int make_key(struct sock *sk, __u32 tgid, __u16 direction, struct eagle_net_key *key)
{
	__builtin_memset(key, 0, sizeof(*key));
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	__u16 family = sk->__sk_common.skc_family;
	key->tgid = tgid;
	key->family = family;
	key->direction = direction;
	if (family == AF_INET) {
		__be32 addr = sk->__sk_common.skc_daddr;
		__builtin_memcpy(key->peer_addr, &addr, 4);
	} else if (family == AF_INET6) {
		__builtin_memcpy(key->peer_addr, sk->__sk_common.skc_v6_daddr.in6_u.u6_addr8, 16);
	} else {
		return 0;
	}
	if (direction == EAGLE_NET_INBOUND)
		key->local_port = sk->__sk_common.skc_num;
	else
		key->peer_port = swap16(sk->__sk_common.skc_dport);
	return 1;
}

static __always_inline struct eagle_net_counters *row(struct eagle_net_key *key)
{
	struct eagle_net_counters *counters = bpf_map_lookup_elem(&net_traffic, key);
	if (counters)
		return counters;
	struct eagle_net_counters zero = {};
	if (bpf_map_update_elem(&net_traffic, key, &zero, BPF_NOEXIST) != 0 &&
	    !bpf_map_lookup_elem(&net_traffic, key)) {
		bump(EAGLE_NET_ROWS_FULL);
		return 0;
	}
	return bpf_map_lookup_elem(&net_traffic, key);
}

/* `sk`'s entry of `net_socks` as `seen`, a new connection with a number of its own, made if it
 * has none (within `NET_SOCKS_MAX`). */
static __always_inline struct eagle_net_sock *remember_sock(struct sock *sk, struct eagle_net_sock *seen)
{
	__u32 zero = 0, one = 1;
	__u64 *live = bpf_map_lookup_elem(&net_socks_live, &zero);
	__u64 *numbers = bpf_map_lookup_elem(&net_socks_live, &one);
	if (!live || !numbers)
		return 0;
	seen->id = __sync_fetch_and_add(numbers, 1) + 1;
	struct eagle_net_sock *entry = bpf_sk_storage_get(&net_socks, sk, 0, 0);
	if (entry) {
		*entry = *seen;
		return entry;
	}
	if (__sync_fetch_and_add(live, 1) >= NET_SOCKS_MAX) {
		__sync_fetch_and_add(live, -1);
		return 0;
	}
	entry = bpf_sk_storage_get(&net_socks, sk, seen, BPF_SK_STORAGE_GET_F_CREATE);
	if (!entry)
		__sync_fetch_and_add(live, -1);
	return entry;
}

/* `sk` closed: its entry goes, and leaves room for another. */
static __always_inline void forget_sock(struct sock *sk)
{
	__u32 zero = 0;
	__u64 *live = bpf_map_lookup_elem(&net_socks_live, &zero);
	if (bpf_sk_storage_delete(&net_socks, sk) == 0 && live)
		__sync_fetch_and_add(live, -1);
}

/* The socket's row for the current process if it is a target, else for the process the socket
 * was seen with; remembers the socket on first sight. 0: nobody of ours. `*connection`: the
 * socket's connection number (its address if it could not be remembered). */
static __always_inline struct eagle_net_counters *row_of_io(struct sock *sk, struct eagle_net_key *key,
							    __u64 *connection)
{
	*connection = (__u64)sk;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct eagle_net_sock *known = bpf_sk_storage_get(&net_socks, sk, 0, 0);
	/* A socket is recorded for a target only (an accepted one's, pending, for nobody yet): the
	 * current process's own needs no target lookup. */
	int own = known && !known->pending_accept && known->tgid == tgid;
	if (!own && !is_target(tgid)) {
		if (!known || known->pending_accept)
			return 0;
		tgid = known->tgid;
	}
	__u16 direction = known ? known->direction : EAGLE_NET_UNKNOWN;
	if (!make_key(sk, tgid, direction, key))
		return 0;
	if (!known) {
		struct eagle_net_sock seen = { .tgid = tgid, .direction = direction };
		struct eagle_net_sock *remembered = remember_sock(sk, &seen);
		if (remembered)
			*connection = remembered->id;
		else
			bump(EAGLE_NET_SOCKS_FULL);
		return row(key);
	}
	*connection = known->id;
	struct eagle_net_counters *counters = row(key);
	if (known->pending_accept && __sync_lock_test_and_set(&known->pending_accept, 0)) {
		known->tgid = tgid;
		if (counters)
			__sync_fetch_and_add(&counters->accepts, 1);
	}
	return counters;
}

/* The row of a socket in softirq or timer context: only sockets already seen count. */
static __always_inline struct eagle_net_counters *row_of_sock(const struct sock *sk, struct eagle_net_key *key)
{
	struct eagle_net_sock *known = bpf_sk_storage_get(&net_socks, (struct sock *)sk, 0, 0);
	if (!known || known->pending_accept || !make_key((struct sock *)sk, known->tgid, known->direction, key))
		return 0;
	return row(key);
}

static __always_inline void sample_rtt(struct sock *sk, struct eagle_net_counters *counters)
{
	/* The helper checks what the cast would assume, and its result is BTF-typed: a plain load. */
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return;
	__u32 srtt = tp->srtt_us;
	if (srtt == 0)
		return;
	__sync_fetch_and_add(&counters->rtt_sum_us, srtt >> 3); /* the kernel keeps it << 3 */
	__sync_fetch_and_add(&counters->rtt_samples, 1);
}

/* Where the socket read or write the current thread is in puts or takes its bytes: the user
 * buffer of its system call, found in the registers the call saved (no hook on the machine's
 * every system call is needed for that: those would tax every process of the node). The buffer
 * of read/write and recvfrom/sendto; the first iovec of readv/writev and recvmsg/sendmsg, whose
 * length is then `*room`. 0 for any other way in (io_uring, sendfile, splice, a 32-bit task's
 * numbers, a kernel thread): those bytes are counted, not copied. `write`: the call must send. */
static __always_inline __u64 io_buffer(__u32 write, __u64 *room)
{
	struct task_struct *task = bpf_get_current_task_btf();
	if (task->flags & (PF_KTHREAD | PF_IO_WORKER))
		return 0;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	long nr = SYSCALL_NUMBER(regs);
	__u64 arg = SECOND_ARGUMENT(regs);
	*room = ~0ULL;
	if (write ? nr == SYS_WRITE || nr == SYS_SENDTO : nr == SYS_READ || nr == SYS_RECVFROM)
		return arg;
	if (write ? nr == SYS_SENDMSG : nr == SYS_RECVMSG) {
		/* struct user_msghdr { void *msg_name; int msg_namelen; struct iovec *msg_iov; ... } */
		if (bpf_probe_read_user(&arg, sizeof(arg), (void *)(arg + 16)) != 0)
			return 0;
	} else if (write ? nr != SYS_WRITEV : nr != SYS_READV) {
		return 0;
	}
	struct user_iovec iov;
	if (bpf_probe_read_user(&iov, sizeof(iov), (void *)arg) != 0)
		return 0;
	*room = iov.len;
	return iov.base;
}

/* Four bytes as one little-endian word, as a load of them reads on the architectures built for
 * (x86_64, arm64). */
#define WORD4(a, b, c, d) ((__u32)(a) | (__u32)(b) << 8 | (__u32)(c) << 16 | (__u32)(d) << 24)

/* Can `data` open an HTTP/1.x message: a request line of one of the methods the agent's parser
 * knows (src/http.rs, METHODS), or a status line? Everything else a target reads or writes (TLS,
 * a database's protocol, the rest of a body) stays in the kernel: it would only take room in the
 * ring buffer from the requests, and the agent's time. */
static __always_inline int opens_http_message(const __u8 *data, __u32 len)
{
	if (len < 4)
		return 0;
	__u32 word;
	__builtin_memcpy(&word, data, sizeof(word));
	switch (word) {
	case WORD4('G', 'E', 'T', ' '):
	case WORD4('P', 'O', 'S', 'T'):
	case WORD4('P', 'U', 'T', ' '):
	case WORD4('D', 'E', 'L', 'E'):
	case WORD4('P', 'A', 'T', 'C'):
	case WORD4('H', 'E', 'A', 'D'):
	case WORD4('O', 'P', 'T', 'I'):
	case WORD4('C', 'O', 'N', 'N'):
	case WORD4('T', 'R', 'A', 'C'):
	case WORD4('H', 'T', 'T', 'P'):
		return 1;
	}
	return 0;
}

/* The first bytes of a target's socket read or write, for the HTTP parser. A read's bytes are in
 * the user's buffer by the time `sock_recv_length` fires (the protocol copied them); a write's
 * are still there. */
static __always_inline void emit_data(__u64 connection, struct eagle_net_key *key, __u64 len, __u32 write)
{
	__u64 room;
	__u64 buf = io_buffer(write, &room);
	if (!buf)
		return;
	__u64 have = len < room ? len : room;
	__u32 copy = have < EAGLE_NET_DATA_BYTES ? have : EAGLE_NET_DATA_BYTES;
	/* Keep the bound in the register the verifier checks the size in. */
	asm volatile("" : "+r"(copy));
	if (copy > EAGLE_NET_DATA_BYTES)
		copy = EAGLE_NET_DATA_BYTES;
	/* Read into the ring buffer's record itself, one read of the user's bytes, and given back
	 * if it opens no HTTP message; until the agent's next read a record given back holds its
	 * room as any other. */
	struct eagle_net_event *event = bpf_ringbuf_reserve(&net_events, sizeof(*event), 0);
	if (!event) {
		/* Full: lost, if it was a record the agent would have had. */
		__u32 word = 0;
		if (bpf_probe_read_user(&word, copy < sizeof(word) ? copy : sizeof(word), (void *)buf) == 0 &&
		    opens_http_message((const __u8 *)&word, copy))
			bump(EAGLE_NET_EVENTS_LOST);
		return;
	}
	if (bpf_probe_read_user(event->data, copy, (void *)buf) != 0 || !opens_http_message(event->data, copy)) {
		bpf_ringbuf_discard(event, BPF_RB_NO_WAKEUP);
		return;
	}
	event->kind = EAGLE_NET_EVENT_DATA;
	event->ok = write;
	event->value = len;
	event->time_ns = bpf_ktime_get_ns();
	/* The connection by its number, which no later socket at its address gets. (The socket's
	 * cookie would do too, but reading it measured 50 to 190 ns more a record here.) */
	event->sock = connection;
	event->key = *key;
	event->len = copy;
	event->_pad = 0;
	bpf_ringbuf_submit(event, 0);
}

/* sock_send_length(struct sock *sk, int ret, int flags): a sendmsg of any socket returned. */
SEC("tp_btf/sock_send_length")
int net_send_length(__u64 *ctx)
{
	struct sock *sk = (struct sock *)ctx[0];
	int sent = (int)ctx[1];
	if (sent <= 0 || !sk)
		return 0;
	struct eagle_net_key key;
	__u64 connection;
	struct eagle_net_counters *counters = row_of_io(sk, &key, &connection);
	if (!counters)
		return 0;
	__sync_fetch_and_add(&counters->bytes_sent, sent);
	sample_rtt(sk, counters);
	/* The row is the current process's exactly when it is a target (else the socket's owner's):
	 * only a target's own bytes are copied. */
	if (CAPTURE_HTTP && key.tgid == bpf_get_current_pid_tgid() >> 32)
		emit_data(connection, &key, sent, 1);
	return 0;
}

/* sock_recv_length(struct sock *sk, int ret, int flags): a recvmsg of any socket returned. */
SEC("tp_btf/sock_recv_length")
int net_recv_length(__u64 *ctx)
{
	struct sock *sk = (struct sock *)ctx[0];
	int copied = (int)ctx[1];
	int flags = (int)ctx[2];
	if (copied <= 0 || !sk || (flags & MSG_PEEK))
		return 0;
	struct eagle_net_key key;
	__u64 connection;
	struct eagle_net_counters *counters = row_of_io(sk, &key, &connection);
	if (!counters)
		return 0;
	__sync_fetch_and_add(&counters->bytes_received, copied);
	sample_rtt(sk, counters);
	/* The row is the current process's exactly when it is a target (else the socket's owner's):
	 * only a target's own bytes are copied. */
	if (CAPTURE_HTTP && key.tgid == bpf_get_current_pid_tgid() >> 32)
		emit_data(connection, &key, copied, 0);
	return 0;
}

/* A target closes a listener (close() or its exit: the target's own context): its drop count
 * (`sk_drops`, which `tcp_listendrop()` raises for every connection the listener dropped,
 * accept-queue overflows included) is read now, since the agent's reading at the window's end
 * will not find it. Listeners whose drops are split per NUMA node (`sk_drop_counters`, UDP and
 * raw sockets) are not TCP's. */
static __always_inline void listener_closed(struct sock *sk)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!is_target(tgid))
		return;
	struct eagle_net_event *event = bpf_ringbuf_reserve(&net_events, sizeof(*event), 0);
	if (!event) {
		bump(EAGLE_NET_EVENTS_LOST);
		return;
	}
	__builtin_memset(event, 0, sizeof(*event));
	event->kind = EAGLE_NET_EVENT_LISTENER_CLOSED;
	event->key.tgid = tgid;
	event->value = (__u32)BPF_CORE_READ(sk, sk_drops.counter);
	event->time_ns = bpf_ktime_get_ns();
	event->sock = (__u64)sk;
	struct eagle_net_listener *listener = &event->listener;
	listener->cookie = bpf_get_socket_cookie(sk);
	listener->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	listener->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	listener->port = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (listener->family == AF_INET) {
		__be32 addr = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__builtin_memcpy(listener->addr, &addr, 4);
	} else {
		BPF_CORE_READ_INTO(&listener->addr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
	}
	bpf_ringbuf_submit(event, 0);
}

/* inet_sock_set_state(const struct sock *sk, int oldstate, int newstate) */
SEC("tp_btf/inet_sock_set_state")
int net_set_state(__u64 *ctx)
{
	struct sock *sk = (struct sock *)ctx[0];
	int old = (int)ctx[1];
	int new = (int)ctx[2];
	__u64 sock = (__u64)sk;
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	if (old == TCP_CLOSE && new == TCP_SYN_SENT) {
		/* connect(): the process context of the caller. */
		__u32 tgid = bpf_get_current_pid_tgid() >> 32;
		if (!is_target(tgid))
			return 0;
		struct eagle_net_sock seen = {
			.tgid = tgid,
			.direction = EAGLE_NET_OUTBOUND,
			.connect_start_ns = bpf_ktime_get_ns(),
		};
		if (!remember_sock(sk, &seen))
			bump(EAGLE_NET_SOCKS_FULL);
		return 0;
	}
	if (old == TCP_SYN_RECV && new == TCP_ESTABLISHED) {
		/* A connection accepted by a listener (softirq: whose is not known yet). Its first read
		 * or write names the process (`row_of_io`), which counts it as accepted then. */
		struct eagle_net_sock seen = { .direction = EAGLE_NET_INBOUND, .pending_accept = 1 };
		/* At the cap nothing is counted lost: the socket may be nobody's. If a target reads or
		 * writes it, its first call makes its entry (direction unknown, its accept not counted)
		 * or counts it lost. */
		remember_sock(sk, &seen);
		return 0;
	}
	if (old == TCP_LISTEN && new == TCP_CLOSE) {
		listener_closed(sk);
		return 0;
	}
	if (old != TCP_SYN_SENT && new != TCP_CLOSE)
		return 0;
	struct eagle_net_sock *known = bpf_sk_storage_get(&net_socks, sk, 0, 0);
	if (!known)
		return 0;
	if (old == TCP_SYN_SENT) {
		struct eagle_net_key key;
		struct eagle_net_counters *counters = row_of_sock(sk, &key);
		if (counters) {
			int ok = new == TCP_ESTABLISHED;
			__sync_fetch_and_add(ok ? &counters->connects : &counters->connect_failures, 1);
			struct eagle_net_event *event = bpf_ringbuf_reserve(&net_events, sizeof(*event), 0);
			if (event) {
				__builtin_memset(event, 0, sizeof(*event));
				event->kind = EAGLE_NET_EVENT_CONNECT;
				event->ok = ok;
				event->value = bpf_ktime_get_ns() - known->connect_start_ns;
				event->time_ns = bpf_ktime_get_ns();
				event->sock = sock;
				event->key = key;
				bpf_ringbuf_submit(event, 0);
			} else {
				bump(EAGLE_NET_EVENTS_LOST);
			}
		}
	}
	if (new == TCP_CLOSE)
		forget_sock(sk);
	return 0;
}

/* tcp_retransmit_skb(const struct sock *sk, const struct sk_buff *skb, int err) */
SEC("tp_btf/tcp_retransmit_skb")
int net_retransmit(__u64 *ctx)
{
	struct eagle_net_key key;
	struct eagle_net_counters *counters = row_of_sock((const struct sock *)ctx[0], &key);
	if (counters)
		__sync_fetch_and_add(&counters->retransmits, 1);
	return 0;
}

/* tcp_send_reset(const struct sock *sk, const struct sk_buff *skb, enum sk_rst_reason reason);
 * sk is NULL for a reset answering a segment of no socket. */
SEC("tp_btf/tcp_send_reset")
int net_send_reset(__u64 *ctx)
{
	const struct sock *sk = (const struct sock *)ctx[0];
	struct eagle_net_key key;
	struct eagle_net_counters *counters = sk ? row_of_sock(sk, &key) : 0;
	if (counters)
		__sync_fetch_and_add(&counters->resets_sent, 1);
	return 0;
}

/* tcp_receive_reset(struct sock *sk) */
SEC("tp_btf/tcp_receive_reset")
int net_receive_reset(__u64 *ctx)
{
	struct eagle_net_key key;
	struct eagle_net_counters *counters = row_of_sock((const struct sock *)ctx[0], &key);
	if (counters)
		__sync_fetch_and_add(&counters->resets_received, 1);
	return 0;
}

/* A segment of a target's socket dropped by the kernel: counted on the socket's row, whatever
 * the reason (a full receive queue, data outside the window, a bad checksum...). Drops of a
 * listener are not here: a full accept queue drops SYNs without this tracepoint (the agent
 * reads the listen-queue counters of the targets' network namespaces instead, see
 * src/sampler/net.rs). */
static __always_inline void count_drop(struct sock *sk, __u32 reason)
{
	struct eagle_net_drop_key drop = { .reason = reason };
	struct eagle_net_counters *counters = sk ? row_of_sock(sk, &drop.key) : 0;
	if (!counters)
		return;
	__sync_fetch_and_add(&counters->drops, 1);
	__u64 *count = bpf_map_lookup_elem(&net_drop_reasons, &drop);
	if (!count) {
		__u64 zero = 0;
		bpf_map_update_elem(&net_drop_reasons, &drop, &zero, BPF_NOEXIST);
		count = bpf_map_lookup_elem(&net_drop_reasons, &drop);
	}
	if (count)
		__sync_fetch_and_add(count, 1);
	else
		bump(EAGLE_NET_ROWS_FULL);
}

/* kfree_skb(struct sk_buff *skb, void *location, enum skb_drop_reason reason, struct sock *rx_sk)
 * (Linux 6.11+): `rx_sk` is the socket a received segment was meant for, which `skb->sk` is
 * not yet on the receive path. The reason is a number of the kernel's `enum skb_drop_reason`,
 * which changes between versions: the agent names it from this kernel's BTF. */
SEC("tp_btf/kfree_skb")
int net_kfree_skb(__u64 *ctx)
{
	struct sock *sk = (struct sock *)ctx[3];
	if (!sk)
		sk = ((struct sk_buff *)ctx[0])->sk;
	count_drop(sk, (__u32)ctx[2]);
	return 0;
}

/* kfree_skb(struct sk_buff *skb, void *location, enum skb_drop_reason reason) from 5.17 to 6.10
 * (the network view needs 6.3+ anyway): only the segments that already belong to a socket (the
 * send path, the receive queues). */
SEC("tp_btf/kfree_skb")
int net_kfree_skb_no_rx_sk(__u64 *ctx)
{
	count_drop(((struct sk_buff *)ctx[0])->sk, (__u32)ctx[2]);
	return 0;
}

/* sched_process_fork(struct task_struct *parent, struct task_struct *child): children of targets
 * are targets (a pre-forking server's workers). */
SEC("tp_btf/sched_process_fork")
int net_fork(__u64 *ctx)
{
	struct task_struct *child = (struct task_struct *)ctx[1];
	__u32 parent = bpf_get_current_pid_tgid() >> 32;
	__u32 child_tgid = child->tgid;
	if (child_tgid == 0 || child_tgid == parent || !is_target(parent))
		return 0;
	__u32 one = 1;
	bpf_map_update_elem(&net_targets, &child_tgid, &one, BPF_NOEXIST);
	return 0;
}

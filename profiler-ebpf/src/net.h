/* Types shared by the network program (net.bpf.c) and the agent (src/lib.rs mirrors them with
 * #[repr(C)] in `net`). Keep both sides in step. */
#ifndef EAGLE_NET_H
#define EAGLE_NET_H

enum eagle_net_direction {
	EAGLE_NET_UNKNOWN = 0,  /* opened before the window: who connected is not known */
	EAGLE_NET_OUTBOUND = 1, /* the target connected */
	EAGLE_NET_INBOUND = 2,  /* the target accepted */
};

/* One row of `net_traffic`: a process and a peer. Inbound rows carry the peer's address only
 * (client ports are ephemeral) and the local port the connection was accepted on. */
struct eagle_net_key {
	__u32 tgid;
	__u16 family;     /* AF_INET or AF_INET6 */
	__u16 direction;  /* enum eagle_net_direction */
	__u16 peer_port;  /* host order; 0 for inbound rows */
	__u16 local_port; /* host order; inbound rows only */
	__u32 _pad;
	__u8 peer_addr[16]; /* IPv4: the first 4 bytes */
};

/* Value of `net_traffic`, updated with atomic adds (many CPUs write one row). */
struct eagle_net_counters {
	__u64 bytes_sent;
	__u64 bytes_received;
	__u64 connects;
	__u64 accepts;
	__u64 connect_failures;
	__u64 retransmits;
	__u64 resets_sent;
	__u64 resets_received;
	__u64 rtt_sum_us;
	__u64 rtt_samples;
	__u64 drops; /* segments of the row's sockets the kernel dropped (skb:kfree_skb) */
};

/* What the program knows about a socket (kept on the socket: `net_socks`): a target's, or one a
 * listener of the node accepted, whose process is not known until its first read or write. */
struct eagle_net_sock {
	__u32 tgid;
	__u16 direction;
	__u16 _pad;
	__u64 pending_accept; /* accepted, no read or write seen yet: whose it is is not known (64 bits: atomic exchange) */
	__u64 connect_start_ns; /* outbound: when connect() began the handshake */
	__u64 id; /* the connection's number in this run: told apart from a later socket at its address */
};

enum eagle_net_event_kind {
	EAGLE_NET_EVENT_CONNECT = 1, /* a handshake ended: `value` = ns it took, `ok` */
	EAGLE_NET_EVENT_DATA = 2,    /* the first bytes of a target's socket read or write that opens an HTTP/1.x message */
	EAGLE_NET_EVENT_LISTENER_CLOSED = 3, /* a target closed a listener: `value` = its sk_drops */
};

/* Key of `net_drop_reasons`: a row of `net_traffic` and a drop reason (`enum skb_drop_reason`,
 * named by the agent from the kernel's BTF). */
struct eagle_net_drop_key {
	struct eagle_net_key key;
	__u32 reason;
	__u32 _pad;
};

/* A listener a target closed (EAGLE_NET_EVENT_LISTENER_CLOSED): where it listened, so that its
 * last drop count joins the one read of it at the window's start, or stands alone. */
struct eagle_net_listener {
	__u64 cookie;   /* the socket's cookie, as sock_diag reports it */
	__u32 netns;    /* the inode number of its network namespace */
	__u16 family;
	__u16 port;     /* host order */
	__u8 addr[16];  /* the bound address; IPv4: the first 4 bytes */
};

/* Bytes of a read or write copied for the HTTP parser: a request or status line. */
#define EAGLE_NET_DATA_BYTES 128

/* One record of the `net_events` ring buffer. */
struct eagle_net_event {
	__u32 kind;
	__u32 ok;      /* CONNECT: 1 when established; DATA: 1 for a write, 0 for a read */
	__u64 value;   /* CONNECT: latency in ns; DATA: bytes the call moved */
	__u64 time_ns; /* bpf_ktime_get_ns() when it happened */
	__u64 sock;    /* DATA: the connection's number (`eagle_net_sock.id`); else the socket's kernel address */
	struct eagle_net_key key;
	__u32 len;     /* DATA: bytes of `data` that are valid */
	__u32 _pad;
	union {
		__u8 data[EAGLE_NET_DATA_BYTES];
		struct eagle_net_listener listener; /* LISTENER_CLOSED */
	};
};

/* Indexes of the per-CPU counter array `net_counters`. */
enum eagle_net_counter {
	EAGLE_NET_ROWS_FULL = 0,    /* events not counted: `net_traffic` had no room */
	EAGLE_NET_EVENTS_LOST = 1,  /* ring buffer records dropped: the agent read too slowly */
	EAGLE_NET_SOCKS_FULL = 2,   /* a target's sockets not followed: no room for their `net_socks` entry (the cap, or memory) */
	EAGLE_NET_COUNTER_MAX = 3,
};

#endif

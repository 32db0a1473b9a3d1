//! The network program (`src/net.bpf.c`, issue #19) and the map types it shares with the agent;
//! `src/net.h` is their C side.

/// Bytes of the compiled network object, aligned for the ELF parser. `None` when this build had
/// no clang (see `build.rs`).
pub fn object() -> Option<&'static [u8]> {
    #[repr(C, align(32))]
    struct Aligned<T: ?Sized>(T);
    static OBJECT: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/net.bpf.o")));
    if cfg!(eagle_ebpf_stub) {
        None
    } else {
        Some(&OBJECT.0)
    }
}

/// Names of the programs and maps in the object.
pub mod names {
    /// tp_btf programs: (program, tracepoint), the TCP ones.
    pub const TRACEPOINTS: [(&str, &str); 7] = [
        ("net_send_length", "sock_send_length"),
        ("net_recv_length", "sock_recv_length"),
        ("net_set_state", "inet_sock_set_state"),
        ("net_retransmit", "tcp_retransmit_skb"),
        ("net_send_reset", "tcp_send_reset"),
        ("net_receive_reset", "tcp_receive_reset"),
        ("net_fork", "sched_process_fork"),
    ];
    /// The drop counter's program on `kfree_skb`: the first that loads (the tracepoint's
    /// `rx_sk` argument is Linux 6.11+; the second reads only `skb->sk`).
    pub const DROP_PROGRAMS: [&str; 2] = ["net_kfree_skb", "net_kfree_skb_no_rx_sk"];
    pub const DROP_TRACEPOINT: &str = "kfree_skb";
    pub const TARGETS: &str = "net_targets";
    pub const TRAFFIC: &str = "net_traffic";
    pub const EVENTS: &str = "net_events";
    pub const COUNTERS: &str = "net_counters";
    pub const DROP_REASONS: &str = "net_drop_reasons";
    pub const CAPTURE_HTTP: &str = "CAPTURE_HTTP";
}

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// `enum eagle_net_direction`.
pub mod direction {
    pub const UNKNOWN: u16 = 0;
    pub const OUTBOUND: u16 = 1;
    pub const INBOUND: u16 = 2;
}

/// `enum eagle_net_event_kind`.
pub mod event_kind {
    pub const CONNECT: u32 = 1;
    pub const DATA: u32 = 2;
    pub const LISTENER_CLOSED: u32 = 3;
}

/// Bytes of a read or write copied for the HTTP parser.
pub const DATA_BYTES: usize = 128;

/// Key of `net_traffic`: `struct eagle_net_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetKey {
    pub tgid: u32,
    pub family: u16,
    /// [`direction`].
    pub direction: u16,
    /// Host order; 0 for inbound rows.
    pub peer_port: u16,
    /// Host order; inbound rows only.
    pub local_port: u16,
    pub _pad: u32,
    /// IPv4: the first 4 bytes.
    pub peer_addr: [u8; 16],
}

/// Value of `net_traffic`: `struct eagle_net_counters`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetCounters {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub connects: u64,
    pub accepts: u64,
    pub connect_failures: u64,
    pub retransmits: u64,
    pub resets_sent: u64,
    pub resets_received: u64,
    pub rtt_sum_us: u64,
    pub rtt_samples: u64,
    /// Segments of the row's sockets the kernel dropped (`skb:kfree_skb`).
    pub drops: u64,
}

/// Key of `net_drop_reasons`: `struct eagle_net_drop_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetDropKey {
    pub key: NetKey,
    /// A value of the kernel's `enum skb_drop_reason`.
    pub reason: u32,
    pub _pad: u32,
}

/// A listener a target closed: `struct eagle_net_listener`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetListener {
    /// The socket's cookie, as sock_diag reports it.
    pub cookie: u64,
    /// The inode number of its network namespace.
    pub netns: u32,
    pub family: u16,
    /// Host order.
    pub port: u16,
    /// The bound address; IPv4: the first 4 bytes.
    pub addr: [u8; 16],
}

/// One record of the `net_events` ring buffer: `struct eagle_net_event`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NetEvent {
    /// [`event_kind`].
    pub kind: u32,
    /// CONNECT: 1 when established; DATA: 1 for a write, 0 for a read.
    pub ok: u32,
    /// CONNECT: latency in ns; DATA: bytes the call moved.
    pub value: u64,
    pub time_ns: u64,
    /// DATA: the connection's number in this run (no later socket at its address gets it);
    /// otherwise the socket's kernel address.
    pub sock: u64,
    pub key: NetKey,
    /// DATA: bytes of `data` that are valid.
    pub len: u32,
    pub _pad: u32,
    pub data: [u8; DATA_BYTES],
}

impl NetEvent {
    /// Reads a record out of the ring buffer's bytes; `None` when it is too short.
    pub fn read(bytes: &[u8]) -> Option<NetEvent> {
        if bytes.len() < core::mem::size_of::<NetEvent>() {
            return None;
        }
        // SAFETY: `NetEvent` is plain old data (every bit pattern is valid) and `bytes` holds at
        // least its size; the read is unaligned.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<NetEvent>()) })
    }

    /// The valid bytes of `data`.
    pub fn data(&self) -> &[u8] {
        &self.data[..(self.len as usize).min(DATA_BYTES)]
    }

    /// LISTENER_CLOSED: the listener, which the C side writes over `data`.
    pub fn listener(&self) -> NetListener {
        // SAFETY: `NetListener` is plain old data smaller than `data`; the read is unaligned.
        unsafe { core::ptr::read_unaligned(self.data.as_ptr().cast::<NetListener>()) }
    }
}

/// Indexes of the per-CPU `net_counters` array: `enum eagle_net_counter`.
#[derive(Clone, Copy, Debug)]
#[repr(u32)]
pub enum NetCounter {
    /// Events not counted: `net_traffic` had no room.
    RowsFull = 0,
    /// Ring buffer records dropped: the agent read too slowly.
    EventsLost = 1,
    /// A target's sockets not followed: no room for their `net_socks` entry (its cap of
    /// live entries, or the kernel's memory).
    SocksFull = 2,
}

pub const NET_COUNTER_MAX: u32 = 3;

#[cfg(feature = "user")]
// SAFETY: plain old data, `repr(C)`, no padding (32 bytes: explicit `_pad`).
unsafe impl aya::Pod for NetKey {}
#[cfg(feature = "user")]
// SAFETY: as above (11 x u64).
unsafe impl aya::Pod for NetCounters {}
#[cfg(feature = "user")]
// SAFETY: as above (a 32-byte key and two u32).
unsafe impl aya::Pod for NetDropKey {}

#[cfg(test)]
mod tests {
    #[test]
    fn the_layouts_are_those_of_net_h() {
        assert_eq!(core::mem::size_of::<super::NetKey>(), 32);
        assert_eq!(core::mem::size_of::<super::NetCounters>(), 88);
        assert_eq!(core::mem::size_of::<super::NetDropKey>(), 40);
        assert_eq!(core::mem::size_of::<super::NetListener>(), 32);
        assert_eq!(core::mem::size_of::<super::NetEvent>(), 4 + 4 + 8 + 8 + 8 + 32 + 4 + 4 + 128);
    }
}

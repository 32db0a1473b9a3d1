//! The result stream between `eagle-agent` and `kubectl-eagle`, and the folded-stack model.
//!
//! The agent writes the stream to stdout; it reaches the CLI through a pod log (or, in local
//! mode, an in-process channel). Pod logs mix in stderr, are size-limited and can be cut short,
//! so the stream is line-framed, compressed and verifiable:
//!
//! ```text
//! EAGLE1 H {"agent_version":"0.1.0","node":"lab-node",...}      header, exactly one, first
//! EAGLE1 P {"elapsed_ms":1000,"samples":99,"processes":1}       progress, any number
//! EAGLE1 W {"code":"process-exited","pid":42,"message":"..."}   warnings, any number
//! EAGLE1 N {"version":1,"window_ms":5000,"peers":[..],"http":[..]}  network record, at most one
//! EAGLE1 D 0 <base64 of a piece of one deflate stream>          payload chunks, in order
//! EAGLE1 T {"samples":..,"stacks":..,"chunks":..,"payload_bytes":..,"crc32":..}  trailer, last
//! ```
//!
//! Both sides keep to [`stream::Limits`]: the agent writes at most
//! [`stream::PAYLOAD_BUDGET_BYTES`] of compressed payload (keeping its biggest stacks whole and
//! folding the rest per process, so every sample still counts), and the decoder refuses longer
//! lines, larger payloads and bigger announced sizes with [`DecodeError::TooLarge`] instead of
//! allocating what a damaged or forged stream asks for.
//!
//! Any line that does not start with `EAGLE` is not ours and is skipped. Nothing else in the
//! project parses or prints this format: the agent encodes with [`stream::Encoder`], the CLI
//! decodes with [`stream::Decoder`]. No I/O happens here.

pub mod agent;
pub mod contract;
pub mod folded;
pub mod net;
pub mod sched;
pub mod stream;

pub use agent::{
    is_namespace_name, AgentArgs, AgentCommand, Exit, ProfileMode, Runtime, Unit, AGENT_USAGE, DEFAULT_MIN_BLOCK_US,
    NAMESPACE_FLAG,
};
pub use contract::{agent_error_in, WarningCode, AGENT_ERROR_PREFIX, MAX_FREQUENCY_HZ};
pub use folded::{FoldedStacks, INLINED_SUFFIX};
pub use net::{Direction, HttpRoute, LatencyHistogram, ListenQueues, Listener, NetLimits, NetPayload, PeerTraffic};
pub use sched::{for_people, is_wait_frame, CgroupCpuStat, LimitedLevel, THROTTLED_FRAME, WAITING_FRAME};
pub use stream::{
    trailer_in_tail, DecodeError, Decoder, Encoder, Event, Header, Limits, NodeResult, Payload, Progress, StackRecord,
    StackRef, Trailer, Warning,
};

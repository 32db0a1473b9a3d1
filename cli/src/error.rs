//! Errors and exit codes. Each failure is one line that says what was wrong and what to do;
//! the exit code says which kind of failure it was, so scripts and CI can tell them apart.

use std::process::ExitCode;

/// The documented exit codes (README "Exit codes").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Ok = 0,
    /// A `check` threshold was broken.
    CheckFailed = 1,
    /// Bad arguments (also clap's own code).
    Usage = 2,
    /// The target does not exist: no such pid, resource, namespace, command.
    NotFound = 3,
    /// Not permitted: not root / no CAP_BPF locally, RBAC forbids in the cluster.
    Forbidden = 4,
    /// The target exists but there was nothing to sample (no running process, no samples).
    NothingToProfile = 5,
    /// Profiling failed everywhere: no result at all.
    Failed = 6,
    /// A result was written but it is partial (some nodes failed, or stopped early).
    Partial = 7,
    /// The output could not be written, or an input file could not be read.
    Io = 8,
    /// The cluster could not be reached or configured (kubeconfig, API server).
    Cluster = 9,
    /// A node already runs as many profiling runs as `--max-per-node` allows.
    Busy = 10,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NothingToProfile(String),
    #[error("{0}")]
    Failed(String),
    #[error("{0}")]
    Io(String),
    #[allow(dead_code)] // the cluster path of `profile` reports through it
    #[error("{0}")]
    Cluster(String),
    #[error("{0}")]
    Busy(String),
}

impl CliError {
    pub fn exit(&self) -> Exit {
        match self {
            CliError::Usage(_) => Exit::Usage,
            CliError::NotFound(_) => Exit::NotFound,
            CliError::Forbidden(_) => Exit::Forbidden,
            CliError::NothingToProfile(_) => Exit::NothingToProfile,
            CliError::Failed(_) => Exit::Failed,
            CliError::Io(_) => Exit::Io,
            CliError::Cluster(_) => Exit::Cluster,
            CliError::Busy(_) => Exit::Busy,
        }
    }
}

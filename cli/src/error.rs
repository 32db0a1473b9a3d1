//! Errors and exit codes. Each failure is one line that says what was wrong and what to do;
//! the exit code says which kind of failure it was, so scripts and CI can tell them apart.

/// The documented exit codes (README "Exit codes"), shared with the agent.
pub use eagle_proto::Exit;

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

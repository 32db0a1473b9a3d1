//! `kubectl eagle version`: what runs where. The CLI's version, the agent image its profiles
//! run (the one this version decodes), and the API server's version when it is reachable:
//! the three facts a bug report needs.

use crate::cluster::api::{connect, runtime, Connection};
use crate::error::{CliError, Exit};

/// `version`, as its arguments asked for it.
#[derive(Debug)]
pub struct VersionPlan {
    /// The cluster to ask for its version; `None` with `--client`.
    pub conn: Option<Connection>,
    /// The agent image `profile` would run.
    pub image: String,
}

/// `kubectl eagle version`.
pub fn run(plan: VersionPlan) -> Result<Exit, CliError> {
    println!("Client Version: {}", env!("CARGO_PKG_VERSION"));
    println!("Agent Image: {}", plan.image);
    let Some(conn) = plan.conn else { return Ok(Exit::Ok) };
    let server = runtime()?.block_on(async {
        let (client, _) = connect(&conn).await?;
        client.apiserver_version().await.map_err(|e| {
            CliError::Cluster(format!("cannot read the server's version: {e}; --client prints the client's alone"))
        })
    })?;
    println!("Server Version: {} ({})", server.git_version, server.platform);
    Ok(Exit::Ok)
}

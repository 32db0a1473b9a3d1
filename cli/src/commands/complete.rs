//! `__complete`: the answer kubectl's plugin completion reads (cobra's protocol): candidates, one
//! a line, then `:DIRECTIVE`. The static part is planned by the edge; this asks the cluster for
//! what lives there (`TYPE/NAME`, run ids), briefly, and stays quiet when it cannot: a
//! completion that prints an error or hangs is worse than none.

use std::ops::BitOr;
use std::time::Duration;

use crate::cluster::api::{connect, runtime, Connection};
use crate::cluster::names::{object_names, run_ids};
use crate::error::{CliError, Exit};
use crate::target::ClusterKind;

/// How long a completion may wait for the API server.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// One candidate: the value, and what it is (shells that show descriptions show it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub value: String,
    pub description: Option<String>,
}

impl Candidate {
    pub fn new(value: String, description: Option<String>) -> Self {
        Candidate { value, description }
    }
}

/// Cobra's `ShellCompDirective` bits, which kubectl passes on to the shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Directive(u32);

impl Directive {
    /// The shell completes files when there is no candidate.
    pub const DEFAULT: Directive = Directive(0);
    /// No space after the candidate (`deployment/` goes on with the name).
    pub const NO_SPACE: Directive = Directive(2);
    /// No file completion when there is no candidate.
    pub const NO_FILE: Directive = Directive(4);
}

impl BitOr for Directive {
    type Output = Directive;
    fn bitor(self, other: Directive) -> Directive {
        Directive(self.0 | other.0)
    }
}

/// What the cluster is asked for.
#[derive(Debug)]
pub enum Lookup {
    /// Names of objects of `kind` starting with `prefix`, in `namespace` (else the context's).
    Targets { conn: Connection, namespace: Option<String>, kind: String, prefix: String },
    /// Ids of the runs in the locked namespace starting with `prefix`.
    Runs { conn: Connection, eagle_namespace: String, prefix: String },
}

/// The answer known without the cluster, and what to ask it for.
#[derive(Debug)]
pub struct CompletionPlan {
    pub candidates: Vec<Candidate>,
    pub directive: Directive,
    pub lookup: Option<Lookup>,
}

impl CompletionPlan {
    pub fn fixed(candidates: Vec<Candidate>, directive: Directive) -> Self {
        CompletionPlan { candidates, directive, lookup: None }
    }
}

/// `kubectl-eagle __complete WORDS...`.
pub fn run(plan: CompletionPlan) -> Result<Exit, CliError> {
    let mut candidates = plan.candidates;
    if let Some(lookup) = plan.lookup {
        candidates.extend(look_up(lookup).unwrap_or_default());
    }
    print!("{}", answer(&candidates, plan.directive));
    Ok(Exit::Ok)
}

/// Cobra's wire format: `value\tdescription` lines, then `:directive`.
pub fn answer(candidates: &[Candidate], directive: Directive) -> String {
    let mut out = String::new();
    for c in candidates {
        // A value or description with a line break would end the candidate early.
        let value = c.value.replace(['\n', '\t'], " ");
        match &c.description {
            Some(d) => out.push_str(&format!("{value}\t{}\n", d.replace(['\n', '\t'], " "))),
            None => out.push_str(&format!("{value}\n")),
        }
    }
    out.push_str(&format!(":{}\n", directive.0));
    out
}

fn look_up(lookup: Lookup) -> Option<Vec<Candidate>> {
    runtime().ok()?.block_on(async {
        tokio::time::timeout(LOOKUP_TIMEOUT, async {
            match lookup {
                Lookup::Targets { conn, namespace, kind, prefix } => {
                    let kind_found = ClusterKind::parse(&kind)?;
                    let (client, default_namespace) = connect(&conn).await.ok()?;
                    let namespace = namespace.unwrap_or(default_namespace);
                    let names = object_names(&client, kind_found, &namespace).await.ok()?;
                    Some(
                        names
                            .into_iter()
                            .filter(|n| n.starts_with(&prefix))
                            .map(|n| Candidate::new(format!("{kind}/{n}"), None))
                            .collect(),
                    )
                }
                Lookup::Runs { conn, eagle_namespace, prefix } => {
                    let (client, _) = connect(&conn).await.ok()?;
                    let ids = run_ids(&client, &eagle_namespace).await.ok()?;
                    Some(
                        ids.into_iter()
                            .filter(|id| id.starts_with(&prefix))
                            .map(|id| Candidate::new(id, None))
                            .collect(),
                    )
                }
            }
        })
        .await
        .ok()
        .flatten()
    })
}

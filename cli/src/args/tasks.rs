//! The arguments of the cluster's task commands (`list`, `fetch`, `clean`, `uninstall`) and of
//! its set-up (`init`, `doctor`), with the connection flags every cluster command shares.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::shared::{CheckArgs, ConnArgs, GraphArgs, ImageArgs, PushArgs, SummaryArgs};
use crate::cluster::doctor::DoctorPlan;
use crate::cluster::rbac::Grant;
use crate::commands::clean::{CleanPlan, UninstallPlan};
use crate::commands::doctor::{DoctorOutput, DoctorRun};
use crate::commands::fetch::FetchPlan;
use crate::commands::init::InitPlan;
use crate::commands::list::ListPlan;
use crate::commands::version::VersionPlan;
use crate::duration::parse_duration;
use crate::error::CliError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ListOutputArg {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// `table`, or `json`: every run with its nodes, newest first.
    #[arg(short = 'o', long, value_enum, default_value_t = ListOutputArg::Table)]
    pub output: ListOutputArg,

    /// Also the runs other users started [default: only yours].
    #[arg(long)]
    pub all_users: bool,

    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The run id that `profile -a` printed (also in `kubectl eagle list`).
    #[arg(value_name = "RUN")]
    pub run: String,

    #[command(flatten)]
    pub graph: GraphArgs,

    /// Write the network report of a run that watched the network (`net -a`, `profile --net
    /// FILE -a`) to FILE: .json, .prom, .dot/.gv, else the table; `-` is stdout.
    #[arg(long, value_name = "FILE")]
    pub net: Option<PathBuf>,

    /// Delete the run's Jobs once the profile is written (else their TTL does).
    #[arg(long)]
    pub clean: bool,

    /// Also fetch a run another user started [default: only yours; another's is refused].
    #[arg(long)]
    pub all_users: bool,

    #[command(flatten)]
    pub summary: SummaryArgs,

    #[command(flatten)]
    pub checks: CheckArgs,

    #[command(flatten)]
    pub push: PushArgs,

    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Debug, Args)]
pub struct CleanArgs {
    /// Run ids to delete.
    #[arg(value_name = "RUN", required_unless_present = "all", conflicts_with = "all")]
    pub runs: Vec<String>,

    /// Every run (and doctor probe) in the locked namespace, running or not.
    #[arg(long)]
    pub all: bool,

    /// Say what would be deleted, and delete nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Also act on runs other users started [default: only yours; naming another's run is
    /// refused].
    #[arg(long)]
    pub all_users: bool,

    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// Say what would be deleted, and delete nothing.
    #[arg(long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Also create (or update) the RBAC objects; without it they are printed, for review or
    /// `kubectl apply -f -`. Needs cluster-admin.
    #[arg(long)]
    pub apply: bool,

    /// Print the namespace and the RBAC as YAML, and change nothing.
    #[arg(long, conflicts_with = "apply")]
    pub dry_run: bool,

    /// A user who may profile; repeatable.
    #[arg(long = "user", value_name = "NAME")]
    pub users: Vec<String>,

    /// A group whose members may profile; repeatable [default, when no subject is named:
    /// kube-eagle:users].
    #[arg(long = "group", value_name = "NAME")]
    pub groups: Vec<String>,

    /// A service account that may profile (CI), as NAMESPACE/NAME; repeatable.
    #[arg(long = "service-account", value_name = "NAMESPACE/NAME")]
    pub service_accounts: Vec<String>,

    /// A namespace whose workloads they may profile; repeatable [default: every namespace].
    #[arg(long = "target-namespace", value_name = "NAMESPACE")]
    pub target_namespaces: Vec<String>,

    /// The most pods the locked namespace may hold (a ResourceQuota) [default: the node count].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_pods: Option<u32>,

    /// The agent image the admission policy admits in the locked namespace [default: the
    /// eagle-agent image of this version]; pin it by digest.
    #[arg(long = "image", value_name = "IMAGE")]
    pub agent_image: Option<String>,

    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DoctorOutputArg {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Namespace of the workloads to profile [default: the context's].
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,

    /// The image to check, as `profile` would use it.
    #[command(flatten)]
    pub agent_image: ImageArgs,

    /// Check the image on this node [default: wherever the scheduler puts the probe].
    #[arg(long)]
    pub node: Option<String>,

    /// Probe with the minimal capabilities (as `profile --capabilities`) instead of privileged.
    #[arg(long)]
    pub capabilities: bool,

    /// Skip the image check (it starts one short pod).
    #[arg(long)]
    pub skip_image: bool,

    /// How long the image check may take.
    #[arg(long, default_value = "2m", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,

    /// `table`, or `json`: every check with its status.
    #[arg(short = 'o', long, value_enum, default_value_t = DoctorOutputArg::Table)]
    pub output: DoctorOutputArg,

    #[command(flatten)]
    pub conn: ConnArgs,
}

impl ListArgs {
    pub fn into_plan(self) -> ListPlan {
        ListPlan {
            conn: self.conn.connection(),
            eagle_namespace: self.conn.eagle_namespace,
            json: self.output == ListOutputArg::Json,
            all_users: self.all_users,
        }
    }
}

impl FetchArgs {
    pub fn into_plan(self) -> Result<FetchPlan, CliError> {
        Ok(FetchPlan {
            conn: self.conn.connection(),
            eagle_namespace: self.conn.eagle_namespace,
            run: self.run,
            output: self.graph.output,
            format: self.graph.format,
            group_by: self.graph.group_by,
            net: self.net.map(crate::commands::net::NetOutput::new),
            clean: self.clean,
            all_users: self.all_users,
            summary: self.summary.into_plan(),
            rules: self.checks.into_plan(),
            push: self.push.into_plan()?,
        })
    }
}

impl CleanArgs {
    pub fn into_plan(self) -> CleanPlan {
        CleanPlan {
            conn: self.conn.connection(),
            eagle_namespace: self.conn.eagle_namespace,
            runs: self.runs,
            all: self.all,
            dry_run: self.dry_run,
            all_users: self.all_users,
        }
    }
}

impl UninstallArgs {
    pub fn into_plan(self) -> UninstallPlan {
        UninstallPlan {
            conn: self.conn.connection(),
            eagle_namespace: self.conn.eagle_namespace,
            dry_run: self.dry_run,
        }
    }
}

impl InitArgs {
    pub fn into_plan(self) -> InitPlan {
        InitPlan {
            conn: self.conn.connection(),
            eagle_namespace: self.conn.eagle_namespace,
            apply: self.apply,
            dry_run: self.dry_run,
            grant: Grant {
                users: self.users,
                groups: self.groups,
                service_accounts: self.service_accounts,
                target_namespaces: self.target_namespaces,
            },
            max_pods: self.max_pods,
            image: self.agent_image.unwrap_or_else(crate::cluster::plan::default_image),
        }
    }
}

impl DoctorArgs {
    pub fn into_plan(self) -> DoctorRun {
        DoctorRun {
            output: match self.output {
                DoctorOutputArg::Table => DoctorOutput::Table,
                DoctorOutputArg::Json => DoctorOutput::Json,
            },
            checks: DoctorPlan {
                conn: self.conn.connection(),
                eagle_namespace: self.conn.eagle_namespace,
                namespace: self.namespace,
                image: self.agent_image.into_plan(),
                node: self.node,
                capabilities: self.capabilities,
                skip_image: self.skip_image,
                timeout: self.timeout,
            },
        }
    }
}

#[derive(Debug, Args)]
pub struct VersionArgs {
    /// The client's version and agent image only: do not ask the cluster.
    #[arg(long)]
    pub client: bool,

    #[command(flatten)]
    pub conn: ConnArgs,
}

impl VersionArgs {
    pub fn into_plan(self) -> VersionPlan {
        VersionPlan {
            conn: (!self.client).then(|| self.conn.connection()),
            image: crate::cluster::plan::default_image(),
        }
    }
}

//! Where a container sits in the cluster, and how many of those levels a graph keeps: values
//! shared by target resolution, the task store and merging.

use std::collections::HashMap;

/// How many hierarchy levels to keep above the code frames. `none` merges replicas and
/// processes into one code view; each level keeps the ones above it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupBy {
    None,
    Namespace,
    Workload,
    Pod,
    Container,
    #[default]
    Process,
}

/// Where a container sits in the cluster, from the CLI's own knowledge of its pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub namespace: String,
    /// `deployment/api`, `statefulset/db`, or `pod/NAME` for a bare pod.
    pub workload: String,
    pub pod: String,
    pub container: String,
}

/// Container id -> placement.
pub type Placements = HashMap<String, Placement>;

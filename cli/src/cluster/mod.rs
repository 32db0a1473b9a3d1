//! Cluster mode: TYPE/NAME -> pods -> one Job per node -> one merged flame graph.
//! Modules follow the flow: [`resolve`] -> [`plan`] -> [`run`] -> [`profile`] (render); the
//! Jobs are the task store ([`store`], [`annotations`]), read back by [`runs`] and guarded by
//! [`conflicts`]; [`pod_state`] says what a pod's status means, [`permissions`] what the
//! plugin may do; [`rbac`] and [`doctor`] set up and check a cluster. [`net`] runs the same
//! Jobs for the network side of a window (`kubectl eagle net`).

pub mod annotations;
pub mod api;
pub mod conflicts;
pub mod doctor;
pub mod identity;
pub mod limits;
pub mod names;
pub mod net;
pub mod permissions;
pub mod plan;
pub mod pod_state;
pub mod profile;
pub mod rbac;
pub mod resolve;
pub mod run;
pub mod runs;
pub mod store;

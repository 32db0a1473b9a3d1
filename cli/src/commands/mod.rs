//! One module per subcommand, each the glue between its plan (built by `args`) and the engines
//! below: no clap here, and nothing below imports these.

pub mod check;
pub mod clean;
pub mod complete;
pub mod convert;
pub mod diff;
pub mod doctor;
pub mod fetch;
pub mod init;
pub mod list;
pub mod net;
pub mod profile;
pub mod version;

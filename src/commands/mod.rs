//! One module per subcommand: each turns its arguments into configuration and wires the parts.

pub mod demo;
pub mod drain;
pub mod imds;
pub mod queue;
pub mod simulate_cluster;
pub mod simulate_imds;
pub mod telling;

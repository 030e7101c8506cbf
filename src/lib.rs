//! spot-interrupt-handler: turns EC2 Spot interruption notices into a calm, deadline-aware
//! evacuation of the Kubernetes node. The library holds the product (agent, controller,
//! responder, command line) so that two binaries share it: `spot-interrupt-handler`, which
//! runs on every node and links nothing else, and `spot-interrupt-handler-sim`, the rehearsal
//! tools (simulators, demo), which adds the simulators on top. The controller (queue mode) and
//! the AWS SDK it needs are the `queue` feature: the agent image's binary is built without it.
#![forbid(unsafe_code)]

pub mod admin;
pub mod agent;
pub mod cli;
pub mod commands;
#[cfg(feature = "queue")]
pub mod controller;
pub mod logging;
pub mod nth;
pub mod responder;
pub mod signals;

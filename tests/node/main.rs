//! Fence and drain against `simulate cluster`: the node actions as the agent and the `drain`
//! command use them.

mod claim;
mod cli;
mod drain;
#[path = "../support/fault_proxy.rs"]
mod fault_proxy;
mod fault_proxy_real;
mod fence;
mod find;
mod rbac;
#[path = "../support/real_cluster.rs"]
mod real_cluster;
mod reserve;
mod support;

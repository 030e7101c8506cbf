//! The IMDS agent and the queue controller end to end: `simulate cluster`, `simulate imds`,
//! moto, `imds` and `queue` as separate processes, as a user would start them; NTH's
//! conformance scenarios, faults, the NTH drop-in and the demo.

mod clouds;
mod confinement;
mod demo;
mod faults;
#[path = "../support/moto.rs"]
mod moto;
mod nth;
mod overlaps;
mod queue;
#[path = "../support/real_cluster.rs"]
mod real_cluster;
mod scenarios;
mod support;
mod view;

//! Two more metadata services to rehearse on, with the shape of the EC2 one (`sih-sim-imds`):
//! scenario flags, a control API under `/_sim/`, faults and a request log.
//!
//! - [`gce`]: Google Compute Engine's metadata server, with `Metadata-Flavor` checks, ETags and
//!   `wait_for_change` long polls served as GCE serves them, preemption and host maintenance;
//! - [`azure`]: Azure's instance metadata with Scheduled Events: `DocumentIncarnation`, events
//!   that start at their `NotBefore` or when acknowledged (`StartRequests`), cancellations, and
//!   the service's slow first call.
//!
//! Written apart from our clients (no shared types), so a test of one against the other can
//! catch either's bug; the GCE one is also checked with Google's own `google-auth`.
#![forbid(unsafe_code)]

pub mod azure;
mod common;
pub mod gce;

pub use common::{Faults, Logged, Running};

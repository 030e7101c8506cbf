//! The other clouds' metadata services, as the per-node agent needs them:
//!
//! - [`gce`]: Google Compute Engine's metadata server. `instance/preempted` and
//!   `instance/maintenance-event` are watched with long polls (`wait_for_change` and ETags),
//!   so a change is seen as it happens and a quiet instance costs one request per watch timeout.
//! - [`azure`]: Azure's Scheduled Events (`Preempt`, `Reboot`, `Redeploy`, `Freeze`,
//!   `Terminate`), with acknowledgements (`StartRequests`) that let Azure proceed early.
//!
//! Each has pure parsers (`items`), a pure mapping to our one `Notice` type (`notices`) and a
//! thin HTTP client; every request is bounded and every body capped.
#![forbid(unsafe_code)]

pub mod azure;
mod error;
pub mod gce;
mod http;

pub use error::CloudError;

//! One module per subcommand of the product binary: each turns its arguments into
//! configuration and wires the parts. The rehearsal commands (`demo`, `simulate ...`) live in
//! the other binary, `src/bin/spot-interrupt-handler-sim/`.

pub mod drain;
pub mod imds;
pub mod permissions;
#[cfg(feature = "queue")]
pub mod queue;
pub mod wiring;

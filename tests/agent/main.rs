//! The IMDS agent end to end: `simulate cluster`, `simulate imds` and `imds` as separate
//! processes, as a user would start them; NTH's conformance scenarios, faults, the NTH
//! drop-in and the demo.

mod demo;
mod faults;
mod nth;
mod scenarios;
mod support;

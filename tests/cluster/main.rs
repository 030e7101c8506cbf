//! `simulate cluster` driven by the real kubectl and by kube-rs, and fed bad input.

mod auth;
mod bad_input;
mod cli;
mod faults;
mod kube_rs;
mod kubectl;
mod lifecycle;
mod support;

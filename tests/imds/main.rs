//! The metadata-service client and simulator over real loopback sockets, a client we did not
//! write (the AWS SDK's, Google's google-auth) against our simulators, the GCE and Azure clients
//! against theirs, and the `simulate imds` command as a process.

mod aws_sdk;
mod cli;
mod client;
mod clouds;
mod simulator;
mod support;

//! The metadata-service client and simulator over real loopback sockets, a client we did not
//! write (the AWS SDK's) against our simulator, and the `simulate imds` command as a process.

mod aws_sdk;
mod cli;
mod client;
mod simulator;
mod support;

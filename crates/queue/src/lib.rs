//! Queue mode's pure half: SQS message bodies (EventBridge events, Auto Scaling lifecycle
//! messages, raw or through SNS) parsed into notices, one parser per message kind. The SQS
//! consumer, instance → node lookup and lifecycle-hook calls build on this.
#![forbid(unsafe_code)]

pub mod aws_error;
pub mod directory;
pub mod ec2;
pub mod elbv2;
pub mod hooks;
pub mod messages;
pub mod query;
pub mod sqs;
pub mod visibility;

pub use aws_config::SdkConfig;
pub use aws_error::{Counted, ErrorClass, ErrorSink};
pub use directory::{Describe, Directory};
pub use ec2::{Ec2, Ec2Error, Instance};
pub use elbv2::{Elbv2, Elbv2Error};
pub use hooks::{HookError, HookResult, Hooks};
pub use messages::{LifecycleAction, Malformed, Parsed, QueueNotice, Transition, parse};
pub use sqs::{Message, Queue, QueueError};
pub use visibility::Keeper;

//! The Auto Scaling adapter, thin: complete a lifecycle action (CONTINUE or ABANDON) and
//! record a heartbeat. Errors say whether trying again may help.

use crate::messages::LifecycleAction;

#[derive(Debug, thiserror::Error)]
#[error("Auto Scaling {call}: {message}")]
pub struct HookError {
    pub call: &'static str,
    pub message: String,
    pub retryable: bool,
}

fn error<E: std::error::Error + Send + Sync + 'static>(
    call: &'static str,
    e: aws_sdk_autoscaling::error::SdkError<E, aws_sdk_autoscaling::config::http::HttpResponse>,
) -> HookError {
    let (message, retryable) = crate::aws_error::classify(e);
    HookError {
        call,
        message,
        retryable,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookResult {
    Continue,
    Abandon,
}

impl HookResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Continue => "CONTINUE",
            Self::Abandon => "ABANDON",
        }
    }
}

#[derive(Clone)]
pub struct Hooks {
    client: aws_sdk_autoscaling::Client,
}

impl Hooks {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Self {
            client: aws_sdk_autoscaling::Client::new(config),
        }
    }

    pub async fn complete(
        &self,
        a: &LifecycleAction,
        instance: &str,
        result: HookResult,
    ) -> Result<(), HookError> {
        self.client
            .complete_lifecycle_action()
            .auto_scaling_group_name(&a.group)
            .lifecycle_hook_name(&a.hook)
            .lifecycle_action_token(&a.token)
            .instance_id(instance)
            .lifecycle_action_result(result.as_str())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| error("CompleteLifecycleAction", e))
    }

    pub async fn heartbeat(&self, a: &LifecycleAction, instance: &str) -> Result<(), HookError> {
        self.client
            .record_lifecycle_action_heartbeat()
            .auto_scaling_group_name(&a.group)
            .lifecycle_hook_name(&a.hook)
            .lifecycle_action_token(&a.token)
            .instance_id(instance)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| error("RecordLifecycleActionHeartbeat", e))
    }
}

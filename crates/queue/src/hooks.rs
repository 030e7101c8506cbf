//! The Auto Scaling adapter, thin: complete a lifecycle action (CONTINUE or ABANDON) and
//! record a heartbeat. Errors say whether trying again may help.

use crate::messages::LifecycleAction;

#[derive(Debug, thiserror::Error)]
#[error("Auto Scaling {call}: {message}")]
pub struct HookError {
    pub call: &'static str,
    pub message: String,
    /// For the error metric.
    pub class: crate::aws_error::ErrorClass,
}

impl HookError {
    /// Throttling, 5xx, timeouts and connection errors; not a missing queue, a refusal or a
    /// bad receipt or hook.
    pub fn retryable(&self) -> bool {
        self.class.retryable()
    }
}

fn error<
    E: std::error::Error + aws_sdk_autoscaling::error::ProvideErrorMetadata + Send + Sync + 'static,
>(
    call: &'static str,
    e: aws_sdk_autoscaling::error::SdkError<E, aws_sdk_autoscaling::config::http::HttpResponse>,
) -> HookError {
    let (message, class) = crate::aws_error::classify(e);
    HookError {
        call,
        message,
        class,
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
    errors: crate::aws_error::Counted,
}

impl Hooks {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Self {
            client: aws_sdk_autoscaling::Client::new(config),
            errors: crate::aws_error::Counted::default(),
        }
    }

    /// Every failed call is also counted here.
    pub fn counting_errors(mut self, errors: crate::aws_error::Counted) -> Self {
        self.errors = errors;
        self
    }

    fn failed(&self, e: HookError) -> HookError {
        self.errors.count("autoscaling", e.call, e.class);
        e
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
            .map_err(|e| self.failed(error("CompleteLifecycleAction", e)))
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
            .map_err(|e| self.failed(error("RecordLifecycleActionHeartbeat", e)))
    }
}

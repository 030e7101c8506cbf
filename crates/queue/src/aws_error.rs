//! AWS SDK errors classified in one place for every AWS client here (SQS, Auto Scaling share
//! the SDK's error type): the text for logs, a bounded class for metrics, and whether trying
//! again may help.

use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// 429 or a throttling code: worth another try, later.
    Throttled,
    /// 5xx.
    Server,
    /// The request never got an answer (connection refused, reset, DNS).
    Network,
    Timeout,
    /// The request itself is wrong (a missing queue, no permission, a bad receipt or hook):
    /// trying again does not help.
    Client,
}

impl ErrorClass {
    pub fn label(self) -> &'static str {
        match self {
            Self::Throttled => "throttled",
            Self::Server => "server",
            Self::Network => "network",
            Self::Timeout => "timeout",
            Self::Client => "client",
        }
    }

    pub fn retryable(self) -> bool {
        self != Self::Client
    }
}

/// The SDK's error as one line of text (the service's code and message when it answered), and
/// its class.
pub(crate) fn classify<E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static>(
    e: SdkError<E, HttpResponse>,
) -> (String, ErrorClass) {
    let class = match &e {
        SdkError::TimeoutError(_) => ErrorClass::Timeout,
        SdkError::DispatchFailure(d) if d.is_timeout() => ErrorClass::Timeout,
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => ErrorClass::Network,
        SdkError::ServiceError(s) => {
            let status = s.raw().status().as_u16();
            let code = s.err().code().unwrap_or_default();
            if status == 429 || code.contains("Throttl") || code.contains("RequestLimitExceeded") {
                ErrorClass::Throttled
            } else if status >= 500 {
                ErrorClass::Server
            } else {
                ErrorClass::Client
            }
        }
        _ => ErrorClass::Client,
    };
    let text = match (e.code(), e.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => DisplayErrorContext(&e).to_string(),
    };
    (text.replace('\n', " "), class)
}

/// Where failed AWS calls are counted (the binary hands in its metrics): every client here
/// reports each failure once, by service, operation and class.
pub trait ErrorSink: Send + Sync {
    fn aws_error(&self, service: &'static str, operation: &'static str, class: ErrorClass);
}

/// An optional sink, shared by a client's clones.
#[derive(Clone, Default)]
pub struct Counted(Option<std::sync::Arc<dyn ErrorSink>>);

impl Counted {
    pub fn new(sink: std::sync::Arc<dyn ErrorSink>) -> Self {
        Self(Some(sink))
    }

    pub(crate) fn count(&self, service: &'static str, operation: &'static str, class: ErrorClass) {
        if let Some(s) = &self.0 {
            s.aws_error(service, operation, class);
        }
    }
}

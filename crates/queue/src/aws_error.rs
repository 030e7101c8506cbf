//! AWS SDK errors classified in one place for every AWS client here (SQS, Auto Scaling share
//! the SDK's error type): the text for logs, and whether trying again may help.

use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{DisplayErrorContext, SdkError};

/// `(message, retryable)`: throttling, 5xx and connection trouble are worth another try; a
/// missing queue, a bad receipt or an unknown hook are not.
pub(crate) fn classify<E: std::error::Error + Send + Sync + 'static>(
    e: SdkError<E, HttpResponse>,
) -> (String, bool) {
    let retryable = match &e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(s) => {
            let status = s.raw().status().as_u16();
            status >= 500 || status == 429
        }
        _ => false,
    };
    (DisplayErrorContext(&e).to_string(), retryable)
}

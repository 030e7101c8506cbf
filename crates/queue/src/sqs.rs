//! The SQS adapter, thin: receive (long poll), delete, extend visibility. Errors say whether
//! trying again may help.

use std::time::Duration;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use jiff::Timestamp;

#[derive(Debug, thiserror::Error)]
#[error("SQS {call}: {message}")]
pub struct QueueError {
    pub call: &'static str,
    pub message: String,
    /// For the error metric.
    pub class: crate::aws_error::ErrorClass,
}

impl QueueError {
    /// Throttling, 5xx, timeouts and connection errors; not a missing queue, a refusal or a
    /// bad receipt or hook.
    pub fn retryable(&self) -> bool {
        self.class.retryable()
    }
}

fn error<
    E: std::error::Error + aws_sdk_sqs::error::ProvideErrorMetadata + Send + Sync + 'static,
>(
    call: &'static str,
    e: aws_sdk_sqs::error::SdkError<E, aws_sdk_sqs::config::http::HttpResponse>,
) -> QueueError {
    let (message, class) = crate::aws_error::classify(e);
    QueueError {
        call,
        message,
        class,
    }
}

#[derive(Debug, Clone)]
pub struct Message {
    pub id: String,
    pub body: String,
    pub receipt: String,
    /// When SQS received it (`SentTimestamp`), for the message-age metric.
    pub sent: Option<Timestamp>,
    /// How many times it has been received, this time included (`ApproximateReceiveCount`).
    pub receives: u32,
}

#[derive(Clone)]
pub struct Queue {
    client: aws_sdk_sqs::Client,
    url: String,
    errors: crate::aws_error::Counted,
}

/// The region in a queue URL (`https://sqs.us-east-1.amazonaws.com/123/q`).
pub fn region_of_queue_url(url: &str) -> Option<String> {
    let host = url.split("://").nth(1)?.split('/').next()?;
    let mut parts = host.split('.');
    match (parts.next(), parts.next()) {
        (Some("sqs"), Some(region)) if region.contains('-') => Some(region.to_owned()),
        _ => None,
    }
}

/// The AWS configuration: region from the flag, the environment or the queue URL; endpoint
/// from `--aws-endpoint` (tests point it at a local server). Every call is bounded: a receive
/// long-polls up to 20 s, so one attempt may take 25 s and a call with its retries 30 s; a
/// connection must open within 3 s.
pub async fn aws_config(region: Option<String>, endpoint: Option<String>) -> aws_config::SdkConfig {
    let mut loader = bounded_loader();
    if let Some(r) = region {
        loader = loader.region(aws_config::Region::new(r));
    }
    if let Some(e) = endpoint {
        loader = loader.endpoint_url(e);
    }
    loader.load().await
}

/// Every call bounded (see `aws_config`).
fn bounded_loader() -> aws_config::ConfigLoader {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(25))
        .operation_timeout(Duration::from_secs(30))
        .build();
    aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(timeouts)
}

/// The AWS configuration for a local stand-in of the services (`demo --mode queue`): its
/// endpoint, a region, and keys of its own (nothing there checks them; the default chain would
/// look for real ones).
pub async fn stand_in_config(endpoint: &str) -> aws_config::SdkConfig {
    let keys =
        aws_sdk_sqs::config::Credentials::new("stand-in", "stand-in", None, None, "stand-in");
    bounded_loader()
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(keys)
        .load()
        .await
}

impl Queue {
    pub fn new(config: &aws_config::SdkConfig, url: &str) -> Self {
        Self {
            client: aws_sdk_sqs::Client::new(config),
            url: url.to_owned(),
            errors: crate::aws_error::Counted::default(),
        }
    }

    /// Every failed call is also counted here.
    pub fn counting_errors(mut self, errors: crate::aws_error::Counted) -> Self {
        self.errors = errors;
        self
    }

    fn failed(&self, e: QueueError) -> QueueError {
        self.errors.count("sqs", e.call, e.class);
        e
    }

    /// Up to `max` messages, waiting up to `wait` for one; each stays hidden for `hidden`.
    pub async fn receive(
        &self,
        max: i32,
        wait: Duration,
        hidden: Duration,
    ) -> Result<Vec<Message>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10))
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .visibility_timeout(hidden.as_secs().clamp(1, 43_200) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| self.failed(error("ReceiveMessage", e)))?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let sent = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                    .and_then(|ms| ms.parse::<i64>().ok())
                    .and_then(|ms| Timestamp::from_millisecond(ms).ok());
                let receives = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|n| n.parse::<u32>().ok())
                    .unwrap_or(1);
                Some(Message {
                    id: m.message_id?,
                    body: m.body.unwrap_or_default(),
                    receipt: m.receipt_handle?,
                    sent,
                    receives,
                })
            })
            .collect())
    }

    pub async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.failed(error("DeleteMessage", e)))
    }

    /// Keeps up to ten messages hidden from other consumers for `by` from now, in one call;
    /// returns the receipts SQS refused (the message was deleted, or received again elsewhere
    /// with a new receipt): extending those again is pointless.
    pub async fn extend_batch(
        &self,
        receipts: &[String],
        by: Duration,
    ) -> Result<Vec<String>, QueueError> {
        use aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry as Entry;
        let entries = receipts
            .iter()
            .take(10)
            .enumerate()
            .filter_map(|(i, r)| {
                Entry::builder()
                    .id(i.to_string())
                    .receipt_handle(r)
                    .visibility_timeout(by.as_secs().clamp(1, 43_200) as i32)
                    .build()
                    .ok()
            })
            .collect();
        let out = self
            .client
            .change_message_visibility_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| self.failed(error("ChangeMessageVisibilityBatch", e)))?;
        Ok(out
            .failed
            .iter()
            // The caller's fault (an invalid or stale receipt) is final; SQS's own may pass.
            .filter(|f| f.sender_fault)
            .filter_map(|f| receipts.get(f.id.parse::<usize>().ok()?).cloned())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_comes_from_the_queue_url() {
        assert_eq!(
            region_of_queue_url("https://sqs.us-east-1.amazonaws.com/123/q").as_deref(),
            Some("us-east-1")
        );
        assert_eq!(region_of_queue_url("http://127.0.0.1:5000/123/q"), None);
        assert_eq!(region_of_queue_url("nonsense"), None);
    }
}

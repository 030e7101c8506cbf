//! A stand-in for the few AWS calls queue mode makes, so that queue mode can be rehearsed with
//! nothing installed (`demo --mode queue`): SQS over its JSON protocol (CreateQueue,
//! GetQueueUrl, SendMessage, ReceiveMessage with long polls and visibility timeouts,
//! DeleteMessage, ChangeMessageVisibility and its batch, GetQueueAttributes), EC2's
//! DescribeInstances and Auto Scaling's CompleteLifecycleAction and
//! RecordLifecycleActionHeartbeat over the Query protocol — all on one endpoint
//! (`--aws-endpoint`), in memory, on loopback. Signatures are not checked (no secret exists to
//! check them against). What queue mode reads is answered as the real services answer it; the
//! tests run boto3 against it, and the same story against moto.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::time::Instant;

/// The account every queue URL names.
pub const ACCOUNT: &str = "123456789012";
/// Longest body accepted (SQS's message limit is 256 KiB; a request carries one or ten).
const BODY_LIMIT: usize = 3 * 1024 * 1024;

/// An EC2 instance as DescribeInstances tells of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub private_dns_name: String,
    pub private_ip: String,
    pub availability_zone: String,
    pub instance_type: String,
    pub tags: Vec<(String, String)>,
}

#[derive(Debug)]
struct Message {
    id: String,
    body: String,
    sent_ms: i64,
    receives: u32,
    /// Hidden until then (after a receive or a visibility change).
    visible_at: Instant,
    /// The last receive's handle: only it may delete or extend the message.
    receipt: Option<String>,
}

#[derive(Default)]
struct State {
    /// Queues by name.
    queues: BTreeMap<String, Vec<Message>>,
    instances: Vec<Instance>,
    /// Every lifecycle call, in order: `{action, group, hook, instance, token, result}`.
    lifecycle: Vec<Value>,
}

/// The stand-in's state, shared by its server and whoever drives it (the demo, tests).
#[derive(Clone, Default)]
pub struct Aws {
    state: Arc<Mutex<State>>,
    /// Woken when a message is sent or becomes visible: long polls answer at once.
    arrived: Arc<Notify>,
}

impl Aws {
    /// With `instances` known to DescribeInstances.
    pub fn new(instances: Vec<Instance>) -> Self {
        let aws = Self::default();
        aws.lock().instances = instances;
        aws
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates `name` (again: no-op) and returns its URL under `endpoint`.
    pub fn create_queue(&self, endpoint: &str, name: &str) -> String {
        self.lock().queues.entry(name.to_owned()).or_default();
        queue_url(endpoint, name)
    }

    /// Sends `body` to the queue `name`; its message id.
    pub fn send(&self, name: &str, body: &str) -> Option<String> {
        let id = new_id();
        self.lock().queues.get_mut(name)?.push(Message {
            id: id.clone(),
            body: body.to_owned(),
            sent_ms: jiff::Timestamp::now().as_millisecond(),
            receives: 0,
            visible_at: Instant::now(),
            receipt: None,
        });
        self.arrived.notify_waiters();
        Some(id)
    }

    /// `(visible, in flight)` messages of the queue `name`.
    pub fn depth(&self, name: &str) -> (usize, usize) {
        let now = Instant::now();
        self.lock().queues.get(name).map_or((0, 0), |q| {
            let visible = q.iter().filter(|m| m.visible_at <= now).count();
            (visible, q.len() - visible)
        })
    }

    /// Every lifecycle call received so far.
    pub fn lifecycle_calls(&self) -> Vec<Value> {
        self.lock().lifecycle.clone()
    }

    /// The server's routes: every call is a POST to `/`.
    pub fn router(&self) -> Router {
        let aws = self.clone();
        Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let aws = aws.clone();
            async move { aws.handle(&headers, &body).await }
        })
    }

    /// Serves on `listen` (loopback unless told otherwise) until the handle stops.
    pub async fn start(&self, listen: SocketAddr) -> std::io::Result<sih_sim_serve::Running> {
        let router = self.router();
        sih_sim_serve::Running::start(listen, move |listener, stop| {
            sih_sim_serve::serve_router(listener, router, stop.wait())
        })
        .await
    }

    async fn handle(&self, headers: &HeaderMap, body: &[u8]) -> Response {
        if body.len() > BODY_LIMIT {
            return sqs_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestTooLarge",
                "request too large",
            );
        }
        let target = headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if let Some(op) = target.strip_prefix("AmazonSQS.") {
            let Ok(input) = serde_json::from_slice::<Value>(body) else {
                return sqs_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidParameterValue",
                    "the body is not JSON",
                );
            };
            let host = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("localhost");
            return self.sqs_at(op, &input, &format!("http://{host}")).await;
        }
        let form: BTreeMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
        match form.get("Action").map(String::as_str) {
            Some("DescribeInstances") => self.describe_instances(&form),
            Some(action @ ("CompleteLifecycleAction" | "RecordLifecycleActionHeartbeat")) => {
                self.lifecycle(action, &form)
            }
            other => query_error(
                "InvalidAction",
                &format!(
                    "{} is not served by this stand-in",
                    other.unwrap_or("(no Action)")
                ),
            ),
        }
    }

    #[cfg(test)]
    async fn sqs(&self, op: &str, input: &Value) -> Response {
        self.sqs_at(op, input, "http://localhost").await
    }

    /// One SQS call; `base`: the endpoint the caller reached (new queue URLs are under it).
    async fn sqs_at(&self, op: &str, input: &Value, base: &str) -> Response {
        let str_of = |k: &str| input[k].as_str().unwrap_or_default().to_owned();
        match op {
            "CreateQueue" | "GetQueueUrl" => {
                let name = str_of("QueueName");
                let exists = self.lock().queues.contains_key(&name);
                if op == "GetQueueUrl" && !exists {
                    return no_queue();
                }
                self.lock().queues.entry(name.clone()).or_default();
                sqs_ok(json!({"QueueUrl": queue_url(base, &name)}))
            }
            "SendMessage" => {
                let Some(name) = queue_name(&str_of("QueueUrl")) else {
                    return no_queue();
                };
                match self.send(&name, &str_of("MessageBody")) {
                    Some(id) => sqs_ok(json!({"MessageId": id})),
                    None => no_queue(),
                }
            }
            "ReceiveMessage" => self.receive(input).await,
            "DeleteMessage" => {
                let Some(name) = queue_name(&str_of("QueueUrl")) else {
                    return no_queue();
                };
                let receipt = str_of("ReceiptHandle");
                let mut state = self.lock();
                let Some(q) = state.queues.get_mut(&name) else {
                    return no_queue();
                };
                // As SQS: a stale handle of a message received again elsewhere deletes nothing
                // and is no error.
                q.retain(|m| m.receipt.as_deref() != Some(receipt.as_str()));
                sqs_ok(json!({}))
            }
            "ChangeMessageVisibility" => {
                let Some(name) = queue_name(&str_of("QueueUrl")) else {
                    return no_queue();
                };
                let secs = input["VisibilityTimeout"].as_u64().unwrap_or(0);
                match self.hide(&name, &str_of("ReceiptHandle"), secs) {
                    Some(true) => sqs_ok(json!({})),
                    Some(false) => sqs_error(
                        StatusCode::BAD_REQUEST,
                        "MessageNotInflight",
                        "The message referred to isn't in flight.",
                    ),
                    None => no_queue(),
                }
            }
            "ChangeMessageVisibilityBatch" => {
                let Some(name) = queue_name(&str_of("QueueUrl")) else {
                    return no_queue();
                };
                let (mut ok, mut failed) = (Vec::new(), Vec::new());
                for e in input["Entries"].as_array().into_iter().flatten() {
                    let id = e["Id"].as_str().unwrap_or_default();
                    let secs = e["VisibilityTimeout"].as_u64().unwrap_or(0);
                    match self.hide(&name, e["ReceiptHandle"].as_str().unwrap_or_default(), secs) {
                        Some(true) => ok.push(json!({"Id": id})),
                        Some(false) => failed.push(json!({"Id": id, "SenderFault": true,
                            "Code": "ReceiptHandleIsInvalid",
                            "Message": "The receipt handle is not the message's current one."})),
                        None => return no_queue(),
                    }
                }
                sqs_ok(json!({"Successful": ok, "Failed": failed}))
            }
            "GetQueueAttributes" => {
                let Some(name) = queue_name(&str_of("QueueUrl")) else {
                    return no_queue();
                };
                if !self.lock().queues.contains_key(&name) {
                    return no_queue();
                }
                let (visible, hidden) = self.depth(&name);
                sqs_ok(json!({"Attributes": {
                    "ApproximateNumberOfMessages": visible.to_string(),
                    "ApproximateNumberOfMessagesNotVisible": hidden.to_string(),
                    "VisibilityTimeout": "30"}}))
            }
            other => sqs_error(
                StatusCode::BAD_REQUEST,
                "UnsupportedOperation",
                &format!("{other} is not served by this stand-in"),
            ),
        }
    }

    /// Hides a message received with `receipt` for `secs` from now: `None` for no queue,
    /// `Some(false)` when the receipt is not the message's current one.
    fn hide(&self, name: &str, receipt: &str, secs: u64) -> Option<bool> {
        let mut state = self.lock();
        let q = state.queues.get_mut(name)?;
        let Some(m) = q.iter_mut().find(|m| m.receipt.as_deref() == Some(receipt)) else {
            return Some(false);
        };
        m.visible_at = Instant::now() + Duration::from_secs(secs.min(43_200));
        if secs == 0 {
            self.arrived.notify_waiters();
        }
        Some(true)
    }

    /// Up to `MaxNumberOfMessages` visible messages, waiting up to `WaitTimeSeconds` (at most
    /// 20) for the first; each hidden for `VisibilityTimeout` (30 s by default).
    async fn receive(&self, input: &Value) -> Response {
        let Some(name) = queue_name(input["QueueUrl"].as_str().unwrap_or_default()) else {
            return no_queue();
        };
        let max = input["MaxNumberOfMessages"]
            .as_u64()
            .unwrap_or(1)
            .clamp(1, 10) as usize;
        let wait = Duration::from_secs(input["WaitTimeSeconds"].as_u64().unwrap_or(0).min(20));
        let hide = Duration::from_secs(
            input["VisibilityTimeout"]
                .as_u64()
                .unwrap_or(30)
                .min(43_200),
        );
        let until = Instant::now() + wait;
        loop {
            // Registered before looking: a send between the look and the wait still wakes it.
            let arrived = self.arrived.notified();
            let got = {
                let mut state = self.lock();
                let Some(q) = state.queues.get_mut(&name) else {
                    return no_queue();
                };
                let now = Instant::now();
                let mut out = Vec::new();
                for m in q.iter_mut().filter(|m| m.visible_at <= now).take(max) {
                    let receipt = new_id();
                    m.receipt = Some(receipt.clone());
                    m.receives += 1;
                    m.visible_at = now + hide;
                    out.push(json!({"MessageId": m.id, "ReceiptHandle": receipt,
                        "Body": m.body, "Attributes": {
                            "SentTimestamp": m.sent_ms.to_string(),
                            "ApproximateReceiveCount": m.receives.to_string()}}));
                }
                // The next message to come back into view, for the wait below.
                let next = q.iter().map(|m| m.visible_at).filter(|t| *t > now).min();
                (out, next)
            };
            let (messages, next) = got;
            if !messages.is_empty() || Instant::now() >= until {
                return sqs_ok(if messages.is_empty() {
                    json!({})
                } else {
                    json!({"Messages": messages})
                });
            }
            let wake = next.map_or(until, |n| n.min(until));
            let _ = tokio::time::timeout_at(wake, arrived).await;
        }
    }

    fn describe_instances(&self, form: &BTreeMap<String, String>) -> Response {
        // `Filter.1.Name=instance-id` with `Filter.1.Value.N`, or `InstanceId.N`.
        let wanted: Vec<&String> = form
            .iter()
            .filter(|(k, _)| k.starts_with("Filter.1.Value.") || k.starts_with("InstanceId."))
            .map(|(_, v)| v)
            .collect();
        let state = self.lock();
        let mut items = String::new();
        for i in state
            .instances
            .iter()
            .filter(|i| wanted.is_empty() || wanted.contains(&&i.id))
        {
            let tags: String = i
                .tags
                .iter()
                .map(|(k, v)| {
                    format!(
                        "<item><key>{}</key><value>{}</value></item>",
                        xml(k),
                        xml(v)
                    )
                })
                .collect();
            items.push_str(&format!(
                "<item><reservationId>r-{id}</reservationId><ownerId>{ACCOUNT}</ownerId><instancesSet><item>\
                 <instanceId>{id}</instanceId><instanceState><code>16</code><name>running</name></instanceState>\
                 <privateDnsName>{dns}</privateDnsName><instanceType>{ty}</instanceType>\
                 <placement><availabilityZone>{az}</availabilityZone><tenancy>default</tenancy></placement>\
                 <privateIpAddress>{ip}</privateIpAddress><tagSet>{tags}</tagSet></item></instancesSet></item>",
                id = xml(&i.id),
                dns = xml(&i.private_dns_name),
                ty = xml(&i.instance_type),
                az = xml(&i.availability_zone),
                ip = xml(&i.private_ip),
            ));
        }
        xml_ok(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DescribeInstancesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
             <requestId>{}</requestId><reservationSet>{items}</reservationSet></DescribeInstancesResponse>",
            new_id()
        ))
    }

    fn lifecycle(&self, action: &str, form: &BTreeMap<String, String>) -> Response {
        let get = |k: &str| form.get(k).cloned().unwrap_or_default();
        let (group, hook) = (get("AutoScalingGroupName"), get("LifecycleHookName"));
        if group.is_empty() || hook.is_empty() {
            return query_error(
                "ValidationError",
                "AutoScalingGroupName and LifecycleHookName are required",
            );
        }
        self.lock()
            .lifecycle
            .push(json!({"action": action, "group": group, "hook": hook,
            "instance": get("InstanceId"), "token": get("LifecycleActionToken"),
            "result": get("LifecycleActionResult")}));
        xml_ok(format!(
            "<{action}Response xmlns=\"http://autoscaling.amazonaws.com/doc/2011-01-01/\"><{action}Result/>\
             <ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></{action}Response>",
            new_id()
        ))
    }
}

/// The queue story's three messages for `instance`, as EventBridge delivers them, stamped
/// now: a rebalance recommendation, the spot interruption warning, and `group`'s terminate
/// lifecycle action (hook `hook`). The same story runs on this stand-in (`demo --mode
/// queue`) and, in the tests, against moto.
pub fn story_messages(instance: &str, group: &str, hook: &str) -> [(&'static str, String); 3] {
    let now = jiff::Timestamp::now().to_string();
    let stamp = |sample: &str, id_at: &[&str]| -> String {
        let mut v: Value = serde_json::from_str(sample).unwrap_or_default();
        v["time"] = json!(now);
        let mut at = &mut v["detail"];
        for key in &id_at[..id_at.len() - 1] {
            at = &mut at[*key];
        }
        at[id_at[id_at.len() - 1]] = json!(instance);
        if let Some(r) = v["resources"].as_array_mut() {
            for r in r
                .iter_mut()
                .filter(|r| r.as_str().is_some_and(|s| s.contains(":instance/")))
            {
                *r = json!(format!("arn:aws:ec2:us-east-1a:instance/{instance}"));
            }
        }
        v.to_string()
    };
    let mut lifecycle: Value = serde_json::from_str(&stamp(
        include_str!("../../queue/samples/asg-terminate-lifecycle-eventbridge.json"),
        &["EC2InstanceId"],
    ))
    .unwrap_or_default();
    lifecycle["detail"]["AutoScalingGroupName"] = json!(group);
    lifecycle["detail"]["LifecycleHookName"] = json!(hook);
    [
        (
            "EC2 Instance Rebalance Recommendation",
            stamp(
                include_str!("../../queue/samples/rebalance-recommendation.json"),
                &["instance-id"],
            ),
        ),
        (
            "EC2 Spot Instance Interruption Warning",
            stamp(
                include_str!("../../queue/samples/spot-interruption-warning.json"),
                &["instance-id"],
            ),
        ),
        (
            "EC2 Instance-terminate Lifecycle Action",
            lifecycle.to_string(),
        ),
    ]
}

/// `endpoint/ACCOUNT/name`, as SQS writes queue URLs.
pub fn queue_url(endpoint: &str, name: &str) -> String {
    format!("{}/{ACCOUNT}/{name}", endpoint.trim_end_matches('/'))
}

/// The queue a URL names (its last path segment).
fn queue_name(url: &str) -> Option<String> {
    let name = url.trim_end_matches('/').rsplit('/').next()?;
    (!name.is_empty() && !name.contains(':')).then(|| name.to_owned())
}

fn new_id() -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        fastrand::u32(..),
        fastrand::u16(..),
        fastrand::u16(..0x1000),
        fastrand::u16(0x8000..0xc000),
        fastrand::u64(..1 << 48)
    )
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn sqs_ok(body: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-amz-json-1.0")],
        body.to_string(),
    )
        .into_response()
}

/// An SQS error as its JSON protocol writes it (the SDKs read `__type`).
fn sqs_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/x-amz-json-1.0")],
        json!({"__type": format!("com.amazonaws.sqs#{code}"), "message": message}).to_string(),
    )
        .into_response()
}

fn no_queue() -> Response {
    let mut r = sqs_error(
        StatusCode::BAD_REQUEST,
        "QueueDoesNotExist",
        "The specified queue does not exist.",
    );
    r.headers_mut().insert(
        "x-amzn-query-error",
        axum::http::HeaderValue::from_static("AWS.SimpleQueueService.NonExistentQueue;Sender"),
    );
    r
}

fn xml_ok(body: String) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/xml")], body).into_response()
}

/// A Query-protocol error (EC2's and Auto Scaling's shapes differ; both SDK readers take the
/// `Errors`/`Error` form with `Code` and `Message`).
fn query_error(code: &str, message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/xml")],
        format!(
            "<ErrorResponse><Error><Type>Sender</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
            xml(code),
            xml(message),
            new_id()
        ),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_url_names_its_queue() {
        let url = queue_url("http://127.0.0.1:4566/", "spot-events");
        assert_eq!(url, "http://127.0.0.1:4566/123456789012/spot-events");
        assert_eq!(queue_name(&url).as_deref(), Some("spot-events"));
        assert_eq!(queue_name(""), None);
    }

    /// Received once, a message is hidden for its visibility timeout; deleted only with its
    /// current receipt; back in view when the timeout ends.
    #[tokio::test(start_paused = true)]
    async fn a_message_is_hidden_while_received_and_deleted_only_with_its_receipt() {
        let aws = Aws::new(Vec::new());
        let url = aws.create_queue("http://x", "q");
        aws.send("q", "hello").unwrap();
        let take = |hide: u64| json!({"QueueUrl": url, "VisibilityTimeout": hide, "MaxNumberOfMessages": 10});
        let body = |r: Response| async move {
            let b = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
            serde_json::from_slice::<Value>(&b).unwrap()
        };
        let first = body(aws.sqs("ReceiveMessage", &take(5)).await).await;
        let m = &first["Messages"][0];
        assert_eq!(m["Body"], "hello");
        assert_eq!(m["Attributes"]["ApproximateReceiveCount"], "1");
        assert_eq!(aws.depth("q"), (0, 1));
        assert!(body(aws.sqs("ReceiveMessage", &take(5)).await).await["Messages"].is_null());
        tokio::time::advance(Duration::from_secs(6)).await;
        let again = body(aws.sqs("ReceiveMessage", &take(5)).await).await;
        assert_eq!(
            again["Messages"][0]["Attributes"]["ApproximateReceiveCount"],
            "2"
        );
        // The first receipt is stale: it deletes nothing.
        aws.sqs(
            "DeleteMessage",
            &json!({"QueueUrl": url, "ReceiptHandle": m["ReceiptHandle"]}),
        )
        .await;
        assert_eq!(aws.depth("q"), (0, 1));
        aws.sqs(
            "DeleteMessage",
            &json!({"QueueUrl": url, "ReceiptHandle": again["Messages"][0]["ReceiptHandle"]}),
        )
        .await;
        assert_eq!(aws.depth("q"), (0, 0));
    }

    /// A long poll answers as soon as a message arrives, not at its end.
    #[tokio::test(start_paused = true)]
    async fn a_long_poll_answers_when_a_message_arrives() {
        let aws = Aws::new(Vec::new());
        let url = aws.create_queue("http://x", "q");
        let polling = tokio::spawn({
            let aws = aws.clone();
            async move {
                let started = Instant::now();
                aws.sqs(
                    "ReceiveMessage",
                    &json!({"QueueUrl": url, "WaitTimeSeconds": 20}),
                )
                .await;
                started.elapsed()
            }
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        aws.send("q", "now").unwrap();
        let took = polling.await.unwrap();
        assert!(
            took >= Duration::from_secs(3) && took < Duration::from_secs(4),
            "{took:?}"
        );
    }
}

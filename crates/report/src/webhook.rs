//! Webhooks (Slack and the like): a template with NTH's field names (`{{ .EventID }}`,
//! `{{ .Kind }}`, `{{ .InstanceID }}`, `{{ .NodeName }}`, `{{ .Description }}`,
//! `{{ .StartTime }}`, ...) plus `{{ .ClusterName }}`, posted with headers, an optional proxy, a
//! timeout and retries with backoff until the notice's deadline.
//!
//! Only field substitution (with Go's `{{-`/`-}}` whitespace trimming) is supported, not Go's
//! whole template language: that is what NTH's documented templates use, and a template is
//! checked at start so a typo fails loudly then,
//! not silently during the one interruption that matters.

use std::collections::BTreeMap;
use std::time::Duration;

use sih_core::Backoff;
use tokio::time::Instant;

pub use crate::known::InstanceFacts;
use crate::known::SharedFacts;
use crate::update::Update;
use sih_node::Progress;
use std::collections::HashMap;

/// Slack-shaped, like NTH's default, with the cluster's name.
pub const DEFAULT_TEMPLATE: &str = r#"{"text":"[spot-interrupt-handler] cluster {{ .ClusterName }}: {{ .Description }} (EventID: {{ .EventID }} - Kind: {{ .Kind }} - Instance: {{ .InstanceID }} - Node: {{ .NodeName }} - Start Time: {{ .StartTime }})"}"#;

/// What one message says: the names a template may use are exactly these fields (NTH's event
/// and instance fields, then ours), so a name the start-up check accepts is one that is filled
/// whenever its source knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TemplateData {
    #[serde(rename = "EventID")]
    pub event_id: String,
    /// `spot-interruption`, ...
    pub kind: String,
    /// Who saw it: `imds`, `queue` or `manual`.
    pub monitor: String,
    pub description: String,
    /// `active`, then `drained` or `drain-failed`.
    pub state: String,
    /// `detected` or `drained`.
    pub phase: String,
    pub node_name: String,
    #[serde(rename = "InstanceID")]
    pub instance_id: String,
    pub start_time: String,
    pub end_time: String,
    pub deadline: String,
    /// The pods the drain moved, `namespace/name`, comma-separated.
    pub pods: String,
    pub cluster_name: String,
    #[serde(flatten)]
    pub node: NodeFields,
    #[serde(flatten)]
    pub instance: InstanceFacts,
}

/// What the node says of itself, learned when it is fenced.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeFields {
    #[serde(rename = "ProviderID")]
    pub provider_id: String,
    /// `key=value`, comma-separated, sorted by key.
    pub node_labels: String,
}

impl TemplateData {
    /// The same message in aws-node-termination-handler's terms, for a template written for
    /// it: `.Kind` is NTH's kind (`SPOT_ITN`, ...), `.StartTime` the interruption's own time
    /// (NTH's: when the instance goes) where ours is the detection; `.Deadline` stays.
    pub fn in_nth_terms(&self) -> Self {
        let kind = match self.kind.as_str() {
            "spot-interruption" => "SPOT_ITN",
            "rebalance-recommendation" => "REBALANCE_RECOMMENDATION",
            "scheduled-maintenance" => "SCHEDULED_EVENT",
            "asg-termination" => "ASG_LIFECYCLE",
            "asg-launch" => "ASG_LAUNCH_LIFECYCLE",
            "instance-state-change" => "STATE_CHANGE",
            other => other,
        };
        Self {
            kind: kind.to_owned(),
            start_time: if self.deadline.is_empty() {
                self.start_time.clone()
            } else {
                self.deadline.clone()
            },
            ..self.clone()
        }
    }

    fn values(&self) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        }
    }
}

/// Every name a template may use: the fields of [`TemplateData`].
pub fn fields() -> &'static [String] {
    static FIELDS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    FIELDS.get_or_init(|| TemplateData::default().values().keys().cloned().collect())
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("webhook template: unclosed `{{{{` at byte {0}")]
    Unclosed(usize),
    #[error("webhook template: `{{{{ {0} }}}}` is not a field; use one of {fields}", fields = fields().join(", "))]
    UnknownField(String),
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook: {0}")]
    Template(#[from] TemplateError),
    /// Says which header is wrong and why, never its value (it may hold a token).
    #[error("webhook: invalid headers: {0}")]
    Header(String),
    #[error("webhook: cannot build the HTTP client: {0}")]
    Client(String),
    /// The URL itself is wrong (said without its path: it may hold a secret).
    #[error("webhook URL {0}")]
    Url(String),
    /// Redirects are followed only on the URL's own scheme, host and port: the message's
    /// headers may hold a token that must not go to another host.
    #[error(
        "webhook endpoint redirected to another host ({0}); not followed, so the headers go nowhere else"
    )]
    Redirected(String),
    /// Worth retrying: connection errors, timeouts, 429 and 5xx.
    #[error("webhook endpoint unreachable: {0}")]
    Unreachable(String),
    #[error("webhook endpoint answered {0}")]
    Status(u16),
}

impl WebhookError {
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable(_) => true,
            Self::Status(s) => *s == 429 || *s >= 500,
            _ => false,
        }
    }
}

enum Piece<'t> {
    Text(&'t str),
    Field(&'t str),
}

fn pieces(template: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = template;
    let mut offset = 0;
    let mut trim_next = false;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or(TemplateError::Unclosed(offset + open))?;
        let raw = &after[..close];
        // `{{- .X -}}` trims the whitespace before / after the action, as in Go.
        let (trim_before, trim_after) = (raw.starts_with('-'), raw.ends_with('-'));
        let mut text = &rest[..open];
        if trim_next {
            text = text.trim_start();
        }
        if trim_before {
            text = text.trim_end();
        }
        out.push(Piece::Text(text));
        let inner = raw.trim_matches('-').trim();
        let name = inner
            .strip_prefix('.')
            .filter(|n| fields().iter().any(|f| f == n))
            .ok_or_else(|| TemplateError::UnknownField(inner.to_owned()))?;
        out.push(Piece::Field(name));
        trim_next = trim_after;
        let consumed = open + 2 + close + 2;
        offset += consumed;
        rest = &rest[consumed..];
    }
    out.push(Piece::Text(if trim_next {
        rest.trim_start()
    } else {
        rest
    }));
    Ok(out)
}

/// Checks a template without sending anything.
pub fn check(template: &str) -> Result<(), TemplateError> {
    pieces(template).map(|_| ())
}

/// Renders `template`. When `json` is set (the body is JSON), values are escaped for a JSON
/// string so a description with quotes cannot break the message.
pub fn render(template: &str, data: &TemplateData, json: bool) -> Result<String, TemplateError> {
    let pieces = pieces(template)?;
    let values = data.values();
    let mut out = String::with_capacity(template.len() + 128);
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Field(name) => {
                let value = values
                    .get(name)
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default();
                if json {
                    let quoted = serde_json::Value::String(value.to_owned()).to_string();
                    out.push_str(&quoted[1..quoted.len() - 1]);
                } else {
                    out.push_str(value);
                }
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub url: String,
    pub template: String,
    /// Extra headers; `Content-Type: application/json` unless given.
    pub headers: Vec<(String, String)>,
    pub proxy: Option<String>,
    /// Per attempt.
    pub timeout: Duration,
    /// Attempts in all (at least 1); retries also stop at the caller's give-up time.
    pub attempts: u32,
    pub backoff_base: Duration,
    /// Templates carried over from aws-node-termination-handler: `.Kind` and `.StartTime` in
    /// NTH's meaning (`--webhook-nth-fields`, on in the NTH drop-in).
    pub nth_fields: bool,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            template: DEFAULT_TEMPLATE.to_owned(),
            headers: Vec::new(),
            proxy: None,
            timeout: Duration::from_secs(5),
            attempts: 5,
            backoff_base: Duration::from_millis(500),
            nth_fields: false,
        }
    }
}

/// Parses NTH's `WEBHOOK_HEADERS` (a JSON object) or `Name: value` lines / comma-separated pairs.
pub fn parse_headers(s: &str) -> Result<Vec<(String, String)>, WebhookError> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(Vec::new());
    }
    if s.starts_with('{') {
        let map: BTreeMap<String, serde_json::Value> = serde_json::from_str(s).map_err(|e| {
            WebhookError::Header(format!(
                "not a JSON object ({} at column {})",
                match e.classify() {
                    serde_json::error::Category::Syntax | serde_json::error::Category::Eof =>
                        "malformed JSON",
                    _ => "wrong JSON shape",
                },
                e.column()
            ))
        })?;
        return Ok(map
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, v)
            })
            .collect());
    }
    s.split([',', '\n'])
        .filter(|p| !p.trim().is_empty())
        .enumerate()
        .map(|(i, p)| {
            p.split_once([':', '='])
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| {
                    WebhookError::Header(format!(
                        "entry {} is not `Name: value` (its text is not shown: it may hold a secret)",
                        i + 1
                    ))
                })
        })
        .collect()
}

pub struct Webhook {
    client: reqwest::Client,
    config: WebhookConfig,
    json: bool,
}

/// The delivery's outcome, for logs and metrics.
#[derive(Debug)]
pub struct Delivery {
    pub attempts: u32,
    pub result: Result<u16, WebhookError>,
}

impl Webhook {
    pub fn new(config: WebhookConfig) -> Result<Self, WebhookError> {
        let url = check_url(&config.url)?;
        check(&config.template)?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &config.headers {
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| WebhookError::Header(format!("{k:?} is not a header name")))?;
            let value = reqwest::header::HeaderValue::from_str(v).map_err(|_| {
                WebhookError::Header(format!("the value of {k} is not a valid header value"))
            })?;
            headers.insert(name, value);
        }
        let json = headers
            .get(reqwest::header::CONTENT_TYPE)
            .is_none_or(|v| v.to_str().unwrap_or_default().contains("json"));
        if !headers.contains_key(reqwest::header::CONTENT_TYPE) {
            headers.insert(
                reqwest::header::CONTENT_TYPE,
                reqwest::header::HeaderValue::from_static("application/json"),
            );
        }
        let origin = url.origin();
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 5 {
                attempt.error("more than 5 redirects")
            } else if attempt.url().origin() == origin {
                attempt.follow()
            } else {
                attempt.stop()
            }
        });
        let mut builder = reqwest::Client::builder()
            .redirect(redirects)
            .default_headers(headers)
            .timeout(config.timeout)
            .connect_timeout(config.timeout);
        if let Some(proxy) = &config.proxy {
            builder = builder.proxy(
                reqwest::Proxy::all(proxy).map_err(|e| WebhookError::Client(e.to_string()))?,
            );
        }
        let client = builder
            .build()
            .map_err(|e| WebhookError::Client(e.to_string()))?;
        Ok(Self {
            client,
            config,
            json,
        })
    }

    /// The URL without its path and query (Slack URLs carry their secret there): for logs.
    pub fn redacted_url(&self) -> String {
        redact(&self.config.url)
    }

    /// The body of one message.
    pub fn render(&self, data: &TemplateData) -> Result<String, TemplateError> {
        if self.config.nth_fields {
            return render(&self.config.template, &data.in_nth_terms(), self.json);
        }
        render(&self.config.template, data, self.json)
    }

    /// Posts one message, retrying with backoff until it is delivered, `attempts` are spent or
    /// `give_up_at` comes.
    pub async fn send(&self, data: &TemplateData, give_up_at: Instant) -> Delivery {
        let body = match self.render(data) {
            Ok(b) => b,
            Err(e) => {
                return Delivery {
                    attempts: 0,
                    result: Err(e.into()),
                };
            }
        };
        let mut backoff =
            Backoff::new(self.config.backoff_base, Duration::from_secs(10)).jittered();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match self
                .client
                .post(&self.config.url)
                .body(body.clone())
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => Ok(r.status().as_u16()),
                Ok(r) if r.status().is_redirection() => Err(WebhookError::Redirected(
                    r.headers()
                        .get(reqwest::header::LOCATION)
                        .and_then(|l| l.to_str().ok())
                        .map(redact)
                        .unwrap_or_else(|| format!("HTTP {}", r.status().as_u16())),
                )),
                Ok(r) => Err(WebhookError::Status(r.status().as_u16())),
                // reqwest's error text can carry the URL; keep the secret part out of logs.
                Err(e) => Err(WebhookError::Unreachable(e.without_url().to_string())),
            };
            let retry = matches!(&result, Err(e) if e.is_retryable())
                && attempt < self.config.attempts.max(1)
                && Instant::now() + backoff.peek() < give_up_at;
            if !retry {
                return Delivery {
                    attempts: attempt,
                    result,
                };
            }
            if let Err(e) = &result {
                tracing::debug!(error = %e, attempt, "webhook failed; retrying");
            }
            tokio::time::sleep(backoff.wait()).await;
        }
    }
}

/// A webhook URL is an absolute `http(s)` URL with a host: checked at start, so a URL without
/// its scheme fails then and not during the one interruption that matters.
pub fn check_url(url: &str) -> Result<reqwest::Url, WebhookError> {
    if !url.contains("://") {
        return Err(WebhookError::Url(
            "has no scheme: it must start with https:// (or http://)".to_owned(),
        ));
    }
    let parsed = reqwest::Url::parse(url.trim())
        .map_err(|e| WebhookError::Url(format!("{}: {e}", redact(url))))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(WebhookError::Url(format!(
            "{}: the scheme must be https or http, not {}",
            redact(url),
            parsed.scheme()
        )));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(WebhookError::Url(format!("{}: no host", redact(url))));
    }
    Ok(parsed)
}

/// `https://hooks.slack.com/services/T/B/secret` → `https://hooks.slack.com/…`.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split(['/', '?']).next().unwrap_or_default();
            let host = host.rsplit('@').next().unwrap_or_default();
            format!("{scheme}://{host}/…")
        }
        None => "(invalid URL)".into(),
    }
}

/// The webhook message for an update, if it is one people are told about: on detection and
/// at the drain's end.
pub(crate) fn message(
    u: &Update,
    source: &str,
    known: &SharedFacts,
    learned: &Learned,
    patience: Duration,
) -> Option<(TemplateData, Instant)> {
    let (notice, phase, description) = match u {
        Update::Detected { notice, action } => (
            notice,
            "detected",
            format!(
                "{} notice on node {}{}; action: {}",
                notice.kind,
                notice.node,
                notice
                    .deadline
                    .map(|d| format!(", instance goes at {d}"))
                    .unwrap_or_default(),
                action
            ),
        ),
        Update::DrainFinished { notice, report } => (
            notice,
            "drained",
            format!(
                "drain of node {} {}: {}",
                notice.node,
                if report.succeeded() {
                    "succeeded"
                } else {
                    "FAILED"
                },
                report.summary()
            ),
        ),
        _ => return None,
    };
    let known = known.read().unwrap_or_else(|e| e.into_inner());
    let mut data = TemplateData {
        event_id: notice.id.clone(),
        kind: notice.kind.as_str().to_owned(),
        monitor: source.to_owned(),
        phase: phase.to_owned(),
        description,
        node_name: notice.node.clone(),
        instance_id: notice.instance_id.clone().unwrap_or_default(),
        start_time: notice.detected.to_string(),
        cluster_name: known.cluster_name.clone(),
        ..TemplateData::default()
    };
    if let Some(facts) = notice
        .instance_id
        .as_deref()
        .and_then(|i| known.instance(i))
    {
        data.instance = facts.clone();
    }
    drop(known);
    if let Some(node) = learned.nodes.get(&notice.node) {
        data.node = node.clone();
    }
    if let Some(d) = notice.deadline {
        data.deadline = d.to_string();
        data.end_time = d.to_string();
    }
    data.state = match u {
        Update::DrainFinished { report, .. } => {
            data.pods = learned
                .pods
                .get(&notice.id)
                .map(|p| p.join(","))
                .unwrap_or_default();
            if report.succeeded() {
                "drained"
            } else {
                "drain-failed"
            }
        }
        _ => "active",
    }
    .to_owned();
    // Retry until the instance is gone (a message after that still helps people, but a
    // bounded wait keeps shutdown prompt).
    let until = notice
        .deadline
        .and_then(|d| {
            let left = d.duration_since(jiff::Timestamp::now());
            Duration::try_from(left).ok()
        })
        .unwrap_or(patience)
        .max(Duration::from_secs(5));
    Some((data, Instant::now() + until))
}

/// What the stream itself taught the reporters: each node's facts (from its fence write) and
/// the pods each drain moved, for the messages that follow.
#[derive(Default)]
pub(crate) struct Learned {
    nodes: HashMap<String, NodeFields>,
    pods: HashMap<String, Vec<String>>,
}

/// Nodes remembered at most (queue mode fences many).
const LEARNED_NODES: usize = 4096;

impl Learned {
    pub(crate) fn learn(&mut self, u: &Update) {
        match u {
            Update::Fenced { notice, node, .. } => {
                if self.nodes.len() >= LEARNED_NODES && !self.nodes.contains_key(&notice.node) {
                    self.nodes.clear();
                }
                self.nodes.insert(notice.node.clone(), node_fields(node));
            }
            Update::Drain {
                notice,
                progress:
                    Progress::Evicted { pod, .. }
                    | Progress::DeletedAtDeadline { pod, .. }
                    | Progress::Failed { pod, .. },
            } => self
                .pods
                .entry(notice.id.clone())
                .or_default()
                .push(pod.to_string()),
            _ => {}
        }
    }

    /// After the update's message is made: a drain's pods are told once.
    pub(crate) fn forget(&mut self, u: &Update) {
        if let Update::DrainFinished { notice, .. } | Update::DrainStopped { notice, .. } = u {
            self.pods.remove(&notice.id);
        }
    }
}

/// NTH's rendering of a node's labels: `key=value`, comma-separated, sorted.
fn node_fields(facts: &sih_node::NodeFacts) -> NodeFields {
    NodeFields {
        provider_id: facts.provider_id.clone().unwrap_or_default(),
        node_labels: facts
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> TemplateData {
        TemplateData {
            event_id: "i-1-spot-1".to_owned(),
            kind: "spot-interruption".to_owned(),
            description: "say \"hi\"\n".to_owned(),
            cluster_name: "prod".to_owned(),
            ..TemplateData::default()
        }
    }

    /// A template carried over from NTH reads `.Kind` and `.StartTime` with NTH's meaning
    /// when asked; ours otherwise.
    #[test]
    fn nth_terms_give_nths_kind_and_start_time() {
        let d = TemplateData {
            start_time: "2026-12-06T10:00:00Z".into(),
            deadline: "2026-12-06T10:02:00Z".into(),
            ..data()
        };
        let template = r#"{"text":"{{ .Kind }} at {{ .StartTime }}, by {{ .Deadline }}"}"#;
        let hook = |nth_fields| {
            Webhook::new(WebhookConfig {
                url: "http://127.0.0.1:9/hook".into(),
                template: template.into(),
                nth_fields,
                ..WebhookConfig::default()
            })
            .unwrap()
        };
        assert_eq!(
            hook(true).render(&d).unwrap(),
            r#"{"text":"SPOT_ITN at 2026-12-06T10:02:00Z, by 2026-12-06T10:02:00Z"}"#
        );
        assert_eq!(
            hook(false).render(&d).unwrap(),
            r#"{"text":"spot-interruption at 2026-12-06T10:00:00Z, by 2026-12-06T10:02:00Z"}"#
        );
        // Without a deadline (an ASG termination), NTH's start is the detection as ours.
        let asg = TemplateData {
            kind: "asg-termination".into(),
            deadline: String::new(),
            ..d
        }
        .in_nth_terms();
        assert_eq!(
            (asg.kind.as_str(), asg.start_time.as_str()),
            ("ASG_LIFECYCLE", "2026-12-06T10:00:00Z")
        );
    }

    /// The names a template may use are the fields filled, NTH's among them, and each renders
    /// what was filled in.
    #[test]
    fn every_field_name_is_a_filled_field() {
        let names = fields();
        for nth in [
            "EventID",
            "Kind",
            "Description",
            "State",
            "AutoScalingGroupName",
            "NodeName",
            "InstanceID",
            "ProviderID",
            "InstanceType",
            "StartTime",
            "EndTime",
            "Pods",
            "NodeLabels",
            "AccountId",
            "InstanceLifeCycle",
            "PublicHostname",
            "PublicIP",
            "LocalHostname",
            "LocalIP",
            "AvailabilityZone",
            "Region",
            "ClusterName",
        ] {
            assert!(names.iter().any(|n| n == nth), "{nth} missing");
        }
        // Fill each field with its own name: every name renders its own value.
        let mut map = serde_json::Map::new();
        for n in names {
            map.insert(n.clone(), serde_json::Value::String(format!("<{n}>")));
        }
        let filled = TemplateData {
            event_id: "<EventID>".into(),
            kind: "<Kind>".into(),
            monitor: "<Monitor>".into(),
            description: "<Description>".into(),
            state: "<State>".into(),
            phase: "<Phase>".into(),
            node_name: "<NodeName>".into(),
            instance_id: "<InstanceID>".into(),
            start_time: "<StartTime>".into(),
            end_time: "<EndTime>".into(),
            deadline: "<Deadline>".into(),
            pods: "<Pods>".into(),
            cluster_name: "<ClusterName>".into(),
            node: NodeFields {
                provider_id: "<ProviderID>".into(),
                node_labels: "<NodeLabels>".into(),
            },
            instance: InstanceFacts {
                cloud: "<Cloud>".into(),
                instance_name: "<InstanceName>".into(),
                project_id: "<ProjectID>".into(),
                resource_group: "<ResourceGroup>".into(),
                instance_type: "<InstanceType>".into(),
                availability_zone: "<AvailabilityZone>".into(),
                region: "<Region>".into(),
                account_id: "<AccountId>".into(),
                instance_life_cycle: "<InstanceLifeCycle>".into(),
                local_hostname: "<LocalHostname>".into(),
                local_ip: "<LocalIP>".into(),
                public_hostname: "<PublicHostname>".into(),
                public_ip: "<PublicIP>".into(),
                auto_scaling_group_name: "<AutoScalingGroupName>".into(),
            },
        };
        assert_eq!(filled.values(), map);
        for n in names {
            assert_eq!(
                render(&format!("{{{{ .{n} }}}}"), &filled, false).unwrap(),
                format!("<{n}>")
            );
        }
    }

    #[test]
    fn fields_are_substituted_and_escaped_for_json() {
        let t = r#"{"text":"{{ .ClusterName }}: {{.Kind}} {{- .EventID -}} {{ .Description }}{{ .NodeName }}"}"#;
        let out = render(t, &data(), true).unwrap();
        assert_eq!(
            out,
            r#"{"text":"prod: spot-interruptioni-1-spot-1say \"hi\"\n"}"#
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["text"], "prod: spot-interruptioni-1-spot-1say \"hi\"\n");
        assert_eq!(
            render("{{ .Description }}", &data(), false).unwrap(),
            "say \"hi\"\n"
        );
    }

    #[test]
    fn bad_templates_fail_at_start() {
        assert_eq!(
            check("{{ .Nope }}"),
            Err(TemplateError::UnknownField(".Nope".into()))
        );
        assert_eq!(check("x {{ .Kind"), Err(TemplateError::Unclosed(2)));
        assert!(check(DEFAULT_TEMPLATE).is_ok());
        let rendered = render(DEFAULT_TEMPLATE, &data(), true).unwrap();
        assert!(serde_json::from_str::<serde_json::Value>(&rendered).is_ok());
    }

    #[test]
    fn headers_as_json_or_pairs() {
        assert_eq!(
            parse_headers(r#"{"Content-type":"application/json","X-Token":"t"}"#).unwrap(),
            vec![
                ("Content-type".to_owned(), "application/json".to_owned()),
                ("X-Token".to_owned(), "t".to_owned())
            ]
        );
        assert_eq!(
            parse_headers("X-A: 1, X-B=2").unwrap(),
            vec![("X-A".into(), "1".into()), ("X-B".into(), "2".into())]
        );
        assert!(parse_headers("{not json").is_err());
        assert!(parse_headers("novalue").is_err());
        // A malformed value never reaches a log line: the error says where, not what.
        for bad in [
            r#"{"Authorization": "Bearer s3cr3t-token""#,
            "X-A: 1, Bearer s3cr3t-token",
            r#"{"Authorization": "Bearer s3cr3t-token\u0001"}"#,
        ] {
            let shown = match parse_headers(bad) {
                Err(e) => e.to_string(),
                Ok(h) => match Webhook::new(WebhookConfig {
                    headers: h,
                    ..WebhookConfig::default()
                }) {
                    Err(e) => e.to_string(),
                    Ok(_) => panic!("{bad} accepted"),
                },
            };
            assert!(!shown.contains("s3cr3t"), "{shown}");
        }
        assert!(parse_headers("").unwrap().is_empty());
    }

    #[test]
    fn urls_are_checked_at_start() {
        for (bad, says) in [
            ("hooks.slack.com/services/T/B/secret", "has no scheme"),
            ("ftp://example.com/x", "scheme must be https or http"),
            ("https://", "empty host"),
            ("", "has no scheme"),
        ] {
            let e = Webhook::new(WebhookConfig {
                url: bad.to_owned(),
                ..WebhookConfig::default()
            })
            .err()
            .unwrap_or_else(|| panic!("{bad} accepted"))
            .to_string();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
        assert!(check_url("https://hooks.slack.com/services/T/B/x").is_ok());
        assert!(check_url("http://127.0.0.1:8080/hook").is_ok());
    }

    #[test]
    fn urls_are_redacted_for_logs() {
        assert_eq!(
            redact("https://hooks.slack.com/services/T0/B0/secret"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(redact("http://user:pw@host:8080/x?y"), "http://host:8080/…");
        assert_eq!(redact("nonsense"), "(invalid URL)");
    }
}

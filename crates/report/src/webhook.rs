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

use tokio::time::Instant;

/// Slack-shaped, like NTH's default, with the cluster's name.
pub const DEFAULT_TEMPLATE: &str = r#"{"text":"[spot-interrupt-handler] cluster {{ .ClusterName }}: {{ .Description }} (EventID: {{ .EventID }} - Kind: {{ .Kind }} - Instance: {{ .InstanceID }} - Node: {{ .NodeName }} - Start Time: {{ .StartTime }})"}"#;

/// Every name a template may use: NTH's event and instance fields, then ours.
pub const FIELDS: &[&str] = &[
    "EventID",
    "Kind",
    "Monitor",
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
    "Phase",
    "Deadline",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("webhook template: unclosed `{{{{` at byte {0}")]
    Unclosed(usize),
    #[error("webhook template: `{{{{ {0} }}}}` is not a field; use one of {fields}", fields = FIELDS.join(", "))]
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

/// Values for one message, by field name. Missing fields render empty, as in NTH.
pub type TemplateData = BTreeMap<&'static str, String>;

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
            .filter(|n| FIELDS.contains(n))
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
    let mut out = String::with_capacity(template.len() + 128);
    for piece in pieces(template)? {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Field(name) => {
                let value = data.get(name).map(String::as_str).unwrap_or_default();
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
        let mut builder = reqwest::Client::builder()
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

    /// Posts one message, retrying with backoff until it is delivered, `attempts` are spent or
    /// `give_up_at` comes.
    pub async fn send(&self, data: &TemplateData, give_up_at: Instant) -> Delivery {
        let body = match render(&self.config.template, data, self.json) {
            Ok(b) => b,
            Err(e) => {
                return Delivery {
                    attempts: 0,
                    result: Err(e.into()),
                };
            }
        };
        let mut wait = self.config.backoff_base;
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
                Ok(r) => Err(WebhookError::Status(r.status().as_u16())),
                // reqwest's error text can carry the URL; keep the secret part out of logs.
                Err(e) => Err(WebhookError::Unreachable(e.without_url().to_string())),
            };
            let retry = matches!(&result, Err(e) if e.is_retryable())
                && attempt < self.config.attempts.max(1)
                && Instant::now() + wait < give_up_at;
            if !retry {
                return Delivery {
                    attempts: attempt,
                    result,
                };
            }
            if let Err(e) = &result {
                tracing::debug!(error = %e, attempt, "webhook failed; retrying");
            }
            tokio::time::sleep(wait.mul_f64(0.8 + fastrand::f64() * 0.4)).await;
            wait = (wait * 2).min(Duration::from_secs(10));
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> TemplateData {
        BTreeMap::from([
            ("EventID", "i-1-spot-1".to_owned()),
            ("Kind", "spot-interruption".to_owned()),
            ("Description", "say \"hi\"\n".to_owned()),
            ("ClusterName", "prod".to_owned()),
        ])
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
    fn urls_are_redacted_for_logs() {
        assert_eq!(
            redact("https://hooks.slack.com/services/T0/B0/secret"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(redact("http://user:pw@host:8080/x?y"), "http://host:8080/…");
        assert_eq!(redact("nonsense"), "(invalid URL)");
    }
}

//! AWS's Query protocol, for the two services queue mode calls without their SDKs (EC2 and
//! Elastic Load Balancing v2): a form-encoded POST signed with `aws-sigv4` (the SDK's own
//! signer), sent with the HTTP client the binary already has, answered in XML read with
//! `aws-smithy-xml`. Their SDK crates would cost minutes of release build for a call or two
//! each (docs/benchmarks.md, "Instance lookup").

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_smithy_xml::decode::{Document, ScopedDecoder, try_data};

use crate::aws_error::{Counted, ErrorClass};

/// A failed call, its class (as the SDK clients' errors are classed) and whether trying again
/// may help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct QueryError {
    pub message: String,
    pub class: ErrorClass,
    /// Throttling, 5xx, timeouts and connection errors; not a denied permission or bad input.
    pub retryable: bool,
}

impl QueryError {
    pub fn new(message: impl Into<String>, class: ErrorClass) -> Self {
        Self {
            message: message.into(),
            class,
            retryable: class.retryable(),
        }
    }
}

/// Which service a client talks to.
pub struct Service {
    /// SigV4's name for it (`ec2`, `elasticloadbalancing`).
    pub signing_name: &'static str,
    /// The host's first label (`ec2.REGION.amazonaws.com`).
    pub host_prefix: &'static str,
    /// The SDK's service-specific endpoint variable (`AWS_ENDPOINT_URL_EC2`).
    pub endpoint_env: &'static str,
}

pub struct QueryClient {
    http: reqwest::Client,
    endpoint: String,
    region: String,
    signing_name: &'static str,
    credentials: SharedCredentialsProvider,
    /// Credentials are reused until shortly before they expire: with IRSA each fetch is an
    /// STS call, and a burst of interruptions must not become a burst of STS calls.
    cached: Mutex<Option<Credentials>>,
    /// Where failed calls are counted (the error metric), as the SDK clients' are.
    errors: Counted,
}

impl QueryClient {
    /// From the SDK configuration the SQS and Auto Scaling clients use: the same region,
    /// credentials and (in tests) endpoint; the service's own endpoint variable overrides it,
    /// as every AWS client honours it.
    pub fn new(config: &aws_config::SdkConfig, service: Service) -> Result<Self, QueryError> {
        let region = config
            .region()
            .map(|r| r.to_string())
            .ok_or_else(|| QueryError::new("no AWS region configured", ErrorClass::Client))?;
        let credentials = config.credentials_provider().ok_or_else(|| {
            QueryError::new("no AWS credentials provider configured", ErrorClass::Client)
        })?;
        let own = std::env::var(service.endpoint_env)
            .ok()
            .filter(|e| !e.is_empty());
        let prefix = service.host_prefix;
        let endpoint = match own.as_deref().or(config.endpoint_url()) {
            Some(e) => e.trim_end_matches('/').to_owned(),
            None if region.starts_with("cn-") => {
                format!("https://{prefix}.{region}.amazonaws.com.cn")
            }
            None => format!("https://{prefix}.{region}.amazonaws.com"),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| QueryError::new(format!("HTTP client: {e}"), ErrorClass::Client))?;
        Ok(Self {
            http,
            endpoint,
            region,
            signing_name: service.signing_name,
            credentials,
            cached: Mutex::new(None),
            errors: Counted::default(),
        })
    }

    /// Counts each failed call in `errors`, by service and operation.
    pub fn counting_errors(mut self, errors: Counted) -> Self {
        self.errors = errors;
        self
    }

    async fn credentials(&self) -> Result<Credentials, QueryError> {
        let fresh = |c: &Credentials| {
            c.expiry().is_none_or(|e| {
                e.duration_since(SystemTime::now())
                    .is_ok_and(|left| left > Duration::from_secs(300))
            })
        };
        if let Some(c) = self
            .cached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|c| fresh(c))
        {
            return Ok(c.clone());
        }
        let c = self.credentials.provide_credentials().await.map_err(|e| {
            QueryError::new(format!("no AWS credentials: {e}"), ErrorClass::Network)
        })?;
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
        Ok(c)
    }

    /// One call of `operation`: the answer's XML on success. A failure is counted.
    pub async fn call(&self, operation: &'static str, body: &str) -> Result<String, QueryError> {
        let answer = self.send(body).await;
        if let Err(e) = &answer {
            self.errors.count(self.signing_name, operation, e.class);
        }
        answer
    }

    async fn send(&self, body: &str) -> Result<String, QueryError> {
        let creds = self.credentials().await?;
        let url = format!("{}/", self.endpoint);
        let content_type = "application/x-www-form-urlencoded; charset=utf-8";
        let headers = sign(
            &creds,
            &self.region,
            self.signing_name,
            &url,
            content_type,
            body,
        )?;
        let mut req = self
            .http
            .post(&url)
            .header("content-type", content_type)
            .body(body.to_owned());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = req.send().await.map_err(|e| {
            let class = if e.is_timeout() {
                ErrorClass::Timeout
            } else {
                ErrorClass::Network
            };
            QueryError::new(format!("request failed: {e}"), class)
        })?;
        let status = resp.status();
        let text = read_capped(resp, ANSWER_LIMIT).await?;
        if !status.is_success() {
            let (code, message) = parse_error(&text);
            let class = if status.as_u16() == 429
                || matches!(code.as_str(), "RequestLimitExceeded" | "Throttling")
            {
                ErrorClass::Throttled
            } else if status.is_server_error() {
                ErrorClass::Server
            } else {
                ErrorClass::Client
            };
            return Err(QueryError::new(
                format!("HTTP {}: {code}: {message}", status.as_u16()),
                class,
            ));
        }
        Ok(text)
    }
}

/// The largest EC2 or ELBv2 answer we read. A page of the largest answer we ask for (1000
/// instances, or 400 target groups, with every field) is well under 2 MiB; an endless or
/// hostile body stops here instead of growing the controller to its memory limit.
pub const ANSWER_LIMIT: usize = 8 * 1024 * 1024;

/// The body of `resp`, refused once it passes `limit` bytes (declared or read).
async fn read_capped(mut resp: reqwest::Response, limit: usize) -> Result<String, QueryError> {
    let too_large = || {
        QueryError::new(
            format!("the answer is larger than {limit} bytes: not read"),
            ErrorClass::Client,
        )
    };
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| QueryError::new(format!("reading the answer: {e}"), ErrorClass::Network))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body)
        .map_err(|_| QueryError::new("the answer is not UTF-8", ErrorClass::Client))
}

/// The SigV4 headers for one POST (`authorization`, `x-amz-date`, and the session token).
fn sign(
    creds: &Credentials,
    region: &str,
    name: &str,
    url: &str,
    content_type: &str,
    body: &str,
) -> Result<Vec<(String, String)>, QueryError> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    use aws_sigv4::sign::v4;
    let signing =
        |e: &dyn std::fmt::Display| QueryError::new(format!("signing: {e}"), ErrorClass::Client);
    let identity = creds.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(name)
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| signing(&e))?
        .into();
    let headers = [("content-type", content_type)];
    let signable = SignableRequest::new(
        "POST",
        url,
        headers.into_iter(),
        SignableBody::Bytes(body.as_bytes()),
    )
    .map_err(|e| signing(&e))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| signing(&e))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// Percent-encoding as the Query protocol wants it: RFC 3986 unreserved characters stay.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A garbled answer (from the service or a proxy in between) may be a one-off.
pub fn xml_error(e: impl std::fmt::Display) -> QueryError {
    // An answer that is not what the service sends: a fault on its side, worth another try.
    QueryError::new(format!("unreadable answer: {e}"), ErrorClass::Server)
}

/// An element's text, trimmed.
pub fn text(d: &mut ScopedDecoder) -> Result<String, QueryError> {
    Ok(try_data(d).map_err(xml_error)?.trim().to_owned())
}

/// `(code, message)` of an error answer: EC2's `<Response><Errors><Error>…` or the other
/// Query services' `<ErrorResponse><Error>…`; the raw text, shortened, when it is neither.
pub fn parse_error(xml: &str) -> (String, String) {
    fn fields(error: &mut ScopedDecoder) -> Option<(String, String)> {
        let (mut code, mut message) = (String::new(), String::new());
        while let Some(mut f) = error.next_tag() {
            match f.start_el().local() {
                "Code" => code = try_data(&mut f).ok()?.into_owned(),
                "Message" => message = try_data(&mut f).ok()?.into_owned(),
                _ => {}
            }
        }
        Some((code, message))
    }
    let mut doc = Document::new(xml);
    let found = (|| {
        let mut root = doc.root_element().ok()?;
        while let Some(mut el) = root.next_tag() {
            if el.start_el().matches("Error") {
                return fields(&mut el);
            }
            // The first error says what went wrong.
            if el.start_el().matches("Errors")
                && let Some(mut error) = el.next_tag()
            {
                return fields(&mut error);
            }
        }
        None
    })();
    found.unwrap_or_else(|| {
        let short: String = xml.chars().take(200).collect();
        ("Unknown".into(), short)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what it is told.
    #[derive(Default)]
    struct Sink(Mutex<Vec<(&'static str, &'static str, ErrorClass)>>);

    impl crate::ErrorSink for Sink {
        fn aws_error(&self, service: &'static str, operation: &'static str, class: ErrorClass) {
            self.0.lock().unwrap().push((service, operation, class));
        }
    }

    /// A server on loopback that answers every request with `status` and `body`.
    async fn answering(status: &str, body: &str) -> String {
        let answer = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = vec![0u8; 65536];
                let _ = conn.read(&mut buf).await;
                let _ = conn.write_all(answer.as_bytes()).await;
            }
        });
        url
    }

    fn client(endpoint: &str, sink: &std::sync::Arc<Sink>) -> QueryClient {
        let config = aws_config::SdkConfig::builder()
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "AKIDEXAMPLE",
                "secret",
                None,
                None,
                "test",
            )))
            .build();
        let service = Service {
            signing_name: "elasticloadbalancing",
            host_prefix: "elasticloadbalancing",
            endpoint_env: "SIH_TEST_UNSET_ENDPOINT",
        };
        QueryClient::new(&config, service)
            .unwrap()
            .counting_errors(Counted::new(sink.clone()))
    }

    #[tokio::test]
    async fn failed_calls_are_classed_as_the_sdk_clients_are_and_counted() {
        let sink = std::sync::Arc::new(Sink::default());
        let throttled = answering(
            "400 Bad Request",
            "<ErrorResponse><Error><Code>Throttling</Code><Message>Rate exceeded</Message></Error></ErrorResponse>",
        )
        .await;
        let down = answering("503 Service Unavailable", "").await;
        let denied = answering("403 Forbidden", "").await;
        let closed = format!(
            "http://{}",
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
        );
        for (url, class) in [
            (throttled, ErrorClass::Throttled),
            (down, ErrorClass::Server),
            (denied, ErrorClass::Client),
            (closed, ErrorClass::Network),
        ] {
            let e = client(&url, &sink)
                .call("DescribeTargetHealth", "Action=DescribeTargetHealth")
                .await
                .unwrap_err();
            assert_eq!(e.class, class, "{url}: {e}");
            assert_eq!(e.retryable, class.retryable());
        }
        let counted = sink.0.lock().unwrap().clone();
        assert_eq!(counted.len(), 4, "{counted:?}");
        assert!(
            counted
                .iter()
                .all(|(s, o, _)| *s == "elasticloadbalancing" && *o == "DescribeTargetHealth")
        );
    }

    /// An answer that never ends (chunked, no length) is cut at the limit, not read whole.
    #[tokio::test]
    async fn an_endless_answer_is_refused_at_the_limit() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = sent.clone();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 65536];
            let _ = conn.read(&mut buf).await;
            let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
            conn.write_all(head.as_bytes()).await.unwrap();
            let chunk = format!(
                "10000\r\n{}\r\n",
                "<a>".repeat(65536 / 3 + 1)[..65536].to_owned()
            );
            // Bounded: 4x the limit at most, then it stops by itself.
            for _ in 0..(4 * ANSWER_LIMIT / 65536) {
                if conn.write_all(chunk.as_bytes()).await.is_err() {
                    return;
                }
                count.fetch_add(65536, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let sink = std::sync::Arc::new(Sink::default());
        let e = client(&url, &sink)
            .call("DescribeTargetGroups", "Action=DescribeTargetGroups")
            .await
            .unwrap_err();
        assert!(e.message.contains("larger than"), "{e}");
        assert!(!e.retryable);
        let sent = sent.load(std::sync::atomic::Ordering::SeqCst);
        assert!(sent < 2 * ANSWER_LIMIT, "read {sent} bytes");
    }

    #[test]
    fn reads_error_answers_of_both_shapes() {
        let ec2 = "<Response><Errors><Error><Code>UnauthorizedOperation</Code><Message>You are not authorized to perform this operation.</Message></Error></Errors><RequestID>r</RequestID></Response>";
        assert_eq!(
            parse_error(ec2),
            (
                "UnauthorizedOperation".into(),
                "You are not authorized to perform this operation.".into()
            )
        );
        let elb = r#"<ErrorResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"><Error><Type>Sender</Type><Code>TargetGroupNotFound</Code><Message>One or more target groups not found</Message></Error><RequestId>r</RequestId></ErrorResponse>"#;
        assert_eq!(
            parse_error(elb),
            (
                "TargetGroupNotFound".into(),
                "One or more target groups not found".into()
            )
        );
        assert_eq!(parse_error("<html>bad gateway</html>").0, "Unknown");
    }

    #[test]
    fn encodes_like_the_query_protocol() {
        assert_eq!(enc("a+b/c= ~x"), "a%2Bb%2Fc%3D%20~x");
    }

    #[test]
    fn signs_with_the_session_token_for_the_named_service() {
        let creds = Credentials::new("AKIDEXAMPLE", "secret", Some("token".into()), None, "t");
        let h = sign(
            &creds,
            "us-east-1",
            "elasticloadbalancing",
            "https://elasticloadbalancing.us-east-1.amazonaws.com/",
            "application/x-www-form-urlencoded; charset=utf-8",
            "Action=DescribeTargetGroups",
        )
        .unwrap();
        let get = |k: &str| h.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let auth = get("authorization").unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
            "{auth}"
        );
        assert!(
            auth.contains("/us-east-1/elasticloadbalancing/aws4_request"),
            "{auth}"
        );
        assert_eq!(get("x-amz-security-token"), Some("token"));
        assert!(get("x-amz-date").is_some());
    }
}

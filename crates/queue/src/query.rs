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

/// A failed call, and whether trying again may help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct QueryError {
    pub message: String,
    /// Throttling, 5xx, timeouts and connection errors; not a denied permission or bad input.
    pub retryable: bool,
}

impl QueryError {
    pub fn new(message: impl Into<String>, retryable: bool) -> Self {
        Self {
            message: message.into(),
            retryable,
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
}

impl QueryClient {
    /// From the SDK configuration the SQS and Auto Scaling clients use: the same region,
    /// credentials and (in tests) endpoint; the service's own endpoint variable overrides it,
    /// as every AWS client honours it.
    pub fn new(config: &aws_config::SdkConfig, service: Service) -> Result<Self, QueryError> {
        let region = config
            .region()
            .map(|r| r.to_string())
            .ok_or_else(|| QueryError::new("no AWS region configured", false))?;
        let credentials = config
            .credentials_provider()
            .ok_or_else(|| QueryError::new("no AWS credentials provider configured", false))?;
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
            .map_err(|e| QueryError::new(format!("HTTP client: {e}"), false))?;
        Ok(Self {
            http,
            endpoint,
            region,
            signing_name: service.signing_name,
            credentials,
            cached: Mutex::new(None),
        })
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
        let c = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| QueryError::new(format!("no AWS credentials: {e}"), true))?;
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
        Ok(c)
    }

    /// One call: the answer's XML on success.
    pub async fn call(&self, body: &str) -> Result<String, QueryError> {
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
            QueryError::new(format!("request failed: {e}"), true) // connection trouble or timeout
        })?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| QueryError::new(format!("reading the answer: {e}"), true))?;
        if !status.is_success() {
            let (code, message) = parse_error(&text);
            let retryable = status.is_server_error()
                || status.as_u16() == 429
                || matches!(code.as_str(), "RequestLimitExceeded" | "Throttling");
            return Err(QueryError::new(
                format!("HTTP {}: {code}: {message}", status.as_u16()),
                retryable,
            ));
        }
        Ok(text)
    }
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
    let signing = |e: &dyn std::fmt::Display| QueryError::new(format!("signing: {e}"), false);
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
    QueryError::new(format!("unreadable answer: {e}"), true)
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

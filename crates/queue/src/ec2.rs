//! One EC2 call, `DescribeInstances`, made directly: the request is form-encoded, signed with
//! `aws-sigv4` (the SDK's own signer) and sent with the HTTP client the binary already has;
//! the XML answer is read with `aws-smithy-xml` (already in the tree for Auto Scaling).
//! `aws-sdk-ec2` would cost about six minutes of release build and 8.5 GB of compiler memory
//! for this one call (docs/benchmarks.md, "Instance lookup").

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_smithy_xml::decode::{Document, ScopedDecoder, try_data};

/// What the controller needs to know about an instance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Instance {
    pub id: String,
    /// The usual node name (`ip-10-0-0-12.ec2.internal`); empty once terminated.
    pub private_dns_name: Option<String>,
    pub availability_zone: Option<String>,
    pub instance_type: Option<String>,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
    pub public_dns_name: Option<String>,
    pub tags: Vec<(String, String)>,
}

impl Instance {
    pub fn has_tag(&self, key: &str) -> bool {
        self.tags.iter().any(|(k, _)| k == key)
    }

    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("EC2 DescribeInstances: {message}")]
pub struct Ec2Error {
    pub message: String,
    /// Throttling, 5xx, timeouts and connection errors; not a denied permission or bad input.
    pub retryable: bool,
}

impl Ec2Error {
    fn new(message: impl Into<String>, retryable: bool) -> Self {
        Self {
            message: message.into(),
            retryable,
        }
    }
}

/// EC2 answers at most this many instance ids per filter value list.
pub const MAX_IDS_PER_CALL: usize = 200;

pub struct Ec2 {
    http: reqwest::Client,
    endpoint: String,
    region: String,
    credentials: SharedCredentialsProvider,
    /// Credentials are reused until shortly before they expire: with IRSA each fetch is an
    /// STS call, and a burst of interruptions must not become a burst of STS calls.
    cached: Mutex<Option<Credentials>>,
}

impl Ec2 {
    /// From the SDK configuration the SQS and Auto Scaling clients use: the same region,
    /// credentials and (in tests) endpoint; `AWS_ENDPOINT_URL_EC2` overrides the endpoint.
    pub fn new(config: &aws_config::SdkConfig) -> Result<Self, Ec2Error> {
        let region = config
            .region()
            .map(|r| r.to_string())
            .ok_or_else(|| Ec2Error::new("no AWS region configured", false))?;
        let credentials = config
            .credentials_provider()
            .ok_or_else(|| Ec2Error::new("no AWS credentials provider configured", false))?;
        // The SDK's service-specific endpoint variable first, as every AWS client honours it.
        let own = std::env::var("AWS_ENDPOINT_URL_EC2")
            .ok()
            .filter(|e| !e.is_empty());
        let endpoint = match own.as_deref().or(config.endpoint_url()) {
            Some(e) => e.trim_end_matches('/').to_owned(),
            None if region.starts_with("cn-") => format!("https://ec2.{region}.amazonaws.com.cn"),
            None => format!("https://ec2.{region}.amazonaws.com"),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| Ec2Error::new(format!("HTTP client: {e}"), false))?;
        Ok(Self {
            http,
            endpoint,
            region,
            credentials,
            cached: Mutex::new(None),
        })
    }

    async fn credentials(&self) -> Result<Credentials, Ec2Error> {
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
            .map_err(|e| Ec2Error::new(format!("no AWS credentials: {e}"), true))?;
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
        Ok(c)
    }

    /// The instances among `ids` that EC2 knows (unknown ids are simply absent: the
    /// `instance-id` filter, unlike `InstanceId.N`, does not fail the whole call for one).
    pub async fn describe(&self, ids: &[String]) -> Result<Vec<Instance>, Ec2Error> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_IDS_PER_CALL) {
            let mut next: Option<String> = None;
            loop {
                let page = self.call(&request_body(chunk, next.as_deref())).await?;
                out.extend(page.instances);
                match page.next_token {
                    Some(t) if !t.is_empty() => next = Some(t),
                    _ => break,
                }
            }
        }
        Ok(out)
    }

    async fn call(&self, body: &str) -> Result<Page, Ec2Error> {
        let creds = self.credentials().await?;
        let url = format!("{}/", self.endpoint);
        let content_type = "application/x-www-form-urlencoded; charset=utf-8";
        let headers = sign(&creds, &self.region, &url, content_type, body)?;
        let mut req = self
            .http
            .post(&url)
            .header("content-type", content_type)
            .body(body.to_owned());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = req.send().await.map_err(|e| {
            Ec2Error::new(format!("request failed: {e}"), true) // connection trouble or timeout
        })?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| Ec2Error::new(format!("reading the answer: {e}"), true))?;
        if !status.is_success() {
            let (code, message) = parse_error(&text);
            let retryable = status.is_server_error()
                || status.as_u16() == 429
                || matches!(code.as_str(), "RequestLimitExceeded" | "Throttling");
            return Err(Ec2Error::new(
                format!("HTTP {}: {code}: {message}", status.as_u16()),
                retryable,
            ));
        }
        parse_page(&text)
    }
}

/// The SigV4 headers for one POST (`authorization`, `x-amz-date`, and the session token).
fn sign(
    creds: &Credentials,
    region: &str,
    url: &str,
    content_type: &str,
    body: &str,
) -> Result<Vec<(String, String)>, Ec2Error> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    use aws_sigv4::sign::v4;
    let identity = creds.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("ec2")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| Ec2Error::new(format!("signing: {e}"), false))?
        .into();
    let headers = [("content-type", content_type)];
    let signable = SignableRequest::new(
        "POST",
        url,
        headers.into_iter(),
        SignableBody::Bytes(body.as_bytes()),
    )
    .map_err(|e| Ec2Error::new(format!("signing: {e}"), false))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| Ec2Error::new(format!("signing: {e}"), false))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// The form body of one call. Instance ids and tokens are percent-encoded as the Query
/// protocol wants (RFC 3986 unreserved characters stay as they are).
pub fn request_body(ids: &[String], next_token: Option<&str>) -> String {
    fn enc(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    let mut body =
        String::from("Action=DescribeInstances&Version=2016-11-15&Filter.1.Name=instance-id");
    for (i, id) in ids.iter().enumerate() {
        body.push_str(&format!("&Filter.1.Value.{}={}", i + 1, enc(id)));
    }
    if let Some(t) = next_token {
        body.push_str(&format!("&NextToken={}", enc(t)));
    }
    body
}

#[derive(Debug, Default, PartialEq)]
pub struct Page {
    pub instances: Vec<Instance>,
    pub next_token: Option<String>,
}

fn xml_error(e: impl std::fmt::Display) -> Ec2Error {
    // A garbled answer from EC2 (or a proxy in between) may be a one-off.
    Ec2Error::new(format!("unreadable answer: {e}"), true)
}

/// A `DescribeInstancesResponse`: reservations hold instances.
pub fn parse_page(xml: &str) -> Result<Page, Ec2Error> {
    let mut doc = Document::new(xml);
    let mut root = doc.root_element().map_err(xml_error)?;
    if !root.start_el().matches("DescribeInstancesResponse") {
        return Err(xml_error(format!(
            "expected DescribeInstancesResponse, got {}",
            root.start_el().local()
        )));
    }
    let mut page = Page::default();
    while let Some(mut tag) = root.next_tag() {
        match tag.start_el().local() {
            "reservationSet" => {
                while let Some(mut reservation) = tag.next_tag() {
                    while let Some(mut field) = reservation.next_tag() {
                        if field.start_el().matches("instancesSet") {
                            while let Some(mut item) = field.next_tag() {
                                page.instances.push(parse_instance(&mut item)?);
                            }
                        }
                    }
                }
            }
            "nextToken" => {
                page.next_token = Some(try_data(&mut tag).map_err(xml_error)?.into_owned());
            }
            _ => {}
        }
    }
    Ok(page)
}

fn parse_instance(item: &mut ScopedDecoder) -> Result<Instance, Ec2Error> {
    let mut i = Instance::default();
    let text = |d: &mut ScopedDecoder| -> Result<String, Ec2Error> {
        Ok(try_data(d).map_err(xml_error)?.trim().to_owned())
    };
    while let Some(mut f) = item.next_tag() {
        match f.start_el().local() {
            "instanceId" => i.id = text(&mut f)?,
            "privateDnsName" => i.private_dns_name = Some(text(&mut f)?).filter(|s| !s.is_empty()),
            "instanceType" => i.instance_type = Some(text(&mut f)?).filter(|s| !s.is_empty()),
            "privateIpAddress" => i.private_ip = Some(text(&mut f)?).filter(|s| !s.is_empty()),
            "ipAddress" => i.public_ip = Some(text(&mut f)?).filter(|s| !s.is_empty()),
            "dnsName" => i.public_dns_name = Some(text(&mut f)?).filter(|s| !s.is_empty()),
            "placement" => {
                while let Some(mut p) = f.next_tag() {
                    if p.start_el().matches("availabilityZone") {
                        i.availability_zone = Some(text(&mut p)?);
                    }
                }
            }
            "tagSet" => {
                while let Some(mut tag) = f.next_tag() {
                    let (mut k, mut v) = (String::new(), String::new());
                    while let Some(mut kv) = tag.next_tag() {
                        match kv.start_el().local() {
                            "key" => k = text(&mut kv)?,
                            "value" => v = text(&mut kv)?,
                            _ => {}
                        }
                    }
                    i.tags.push((k, v));
                }
            }
            _ => {}
        }
    }
    if i.id.is_empty() {
        return Err(xml_error("an instance without instanceId"));
    }
    Ok(i)
}

/// `(code, message)` of an EC2 error answer (`<Response><Errors><Error>…`); the raw text,
/// shortened, when it is not one.
pub fn parse_error(xml: &str) -> (String, String) {
    let mut doc = Document::new(xml);
    let found = (|| {
        let mut root = doc.root_element().ok()?;
        while let Some(mut errors) = root.next_tag() {
            if !errors.start_el().matches("Errors") {
                continue;
            }
            // The first error says what went wrong.
            if let Some(mut error) = errors.next_tag() {
                let (mut code, mut message) = (String::new(), String::new());
                while let Some(mut f) = error.next_tag() {
                    match f.start_el().local() {
                        "Code" => code = try_data(&mut f).ok()?.into_owned(),
                        "Message" => message = try_data(&mut f).ok()?.into_owned(),
                        _ => {}
                    }
                }
                return Some((code, message));
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

    const ANSWER: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>fdcdcab1-ae5c-489e-9c33-4637c5dda355</requestId>
  <reservationSet>
    <item>
      <reservationId>r-1234567890abcdef0</reservationId>
      <ownerId>123456789012</ownerId>
      <groupSet/>
      <instancesSet>
        <item>
          <instanceId>i-1234567890abcdef0</instanceId>
          <imageId>ami-bff32ccc</imageId>
          <instanceState><code>16</code><name>running</name></instanceState>
          <privateDnsName>ip-192-168-1-88.eu-west-1.compute.internal</privateDnsName>
          <dnsName/>
          <placement><availabilityZone>eu-west-1c</availabilityZone><tenancy>default</tenancy></placement>
          <groupSet><item><groupId>sg-e4076980</groupId><groupName>SecurityGroup1</groupName></item></groupSet>
          <tagSet>
            <item><key>aws:autoscaling:groupName</key><value>spot-workers</value></item>
            <item><key>aws-node-termination-handler/managed</key><value/></item>
          </tagSet>
          <networkInterfaceSet><item><privateDnsName>not-this-one.internal</privateDnsName></item></networkInterfaceSet>
        </item>
        <item>
          <instanceId>i-0598c7d356eba48d7</instanceId>
          <privateDnsName></privateDnsName>
          <placement><availabilityZone>eu-west-1a</availabilityZone></placement>
        </item>
      </instancesSet>
    </item>
  </reservationSet>
  <nextToken>eyJ2IjoiMiIsImMiOiJ4In0=</nextToken>
</DescribeInstancesResponse>"#;

    #[test]
    fn reads_instances_tags_and_the_next_token() {
        let page = parse_page(ANSWER).unwrap();
        assert_eq!(page.instances.len(), 2);
        let a = &page.instances[0];
        assert_eq!(a.id, "i-1234567890abcdef0");
        assert_eq!(
            a.private_dns_name.as_deref(),
            Some("ip-192-168-1-88.eu-west-1.compute.internal"),
            "the instance's own name, not a network interface's"
        );
        assert_eq!(a.availability_zone.as_deref(), Some("eu-west-1c"));
        assert!(a.has_tag("aws-node-termination-handler/managed"));
        assert!(!a.has_tag("team"));
        assert_eq!(
            a.tags[0],
            ("aws:autoscaling:groupName".into(), "spot-workers".into())
        );
        assert_eq!(
            page.instances[1].private_dns_name, None,
            "terminated: no name"
        );
        assert_eq!(page.next_token.as_deref(), Some("eyJ2IjoiMiIsImMiOiJ4In0="));
    }

    #[test]
    fn empty_answers_and_garbage() {
        let empty = r#"<DescribeInstancesResponse><requestId>x</requestId><reservationSet/></DescribeInstancesResponse>"#;
        assert_eq!(parse_page(empty).unwrap(), Page::default());
        for bad in [
            "",
            "not xml",
            "<Response><Errors/></Response>",
            "<DescribeInstancesResponse><reservationSet><item><instancesSet><item><privateDnsName>x</privateDnsName></item></instancesSet></item></reservationSet></DescribeInstancesResponse>",
        ] {
            let e = parse_page(bad).unwrap_err();
            assert!(e.retryable, "{bad:?}: {e}");
        }
    }

    #[test]
    fn reads_error_answers() {
        let xml = "<Response><Errors><Error><Code>UnauthorizedOperation</Code><Message>You are not authorized to perform this operation.</Message></Error></Errors><RequestID>r</RequestID></Response>";
        assert_eq!(
            parse_error(xml),
            (
                "UnauthorizedOperation".into(),
                "You are not authorized to perform this operation.".into()
            )
        );
        assert_eq!(parse_error("<html>bad gateway</html>").0, "Unknown");
    }

    #[test]
    fn request_body_filters_by_id_and_encodes_the_token() {
        let ids = vec!["i-1".to_owned(), "i-2".to_owned()];
        assert_eq!(
            request_body(&ids, Some("a+b/c=")),
            "Action=DescribeInstances&Version=2016-11-15&Filter.1.Name=instance-id\
             &Filter.1.Value.1=i-1&Filter.1.Value.2=i-2&NextToken=a%2Bb%2Fc%3D"
        );
    }

    #[test]
    fn signs_with_the_session_token() {
        let creds = Credentials::new("AKIDEXAMPLE", "secret", Some("token".into()), None, "t");
        let h = sign(
            &creds,
            "us-east-1",
            "https://ec2.us-east-1.amazonaws.com/",
            "application/x-www-form-urlencoded; charset=utf-8",
            "Action=DescribeInstances",
        )
        .unwrap();
        let get = |k: &str| h.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let auth = get("authorization").unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
            "{auth}"
        );
        assert!(auth.contains("/us-east-1/ec2/aws4_request"), "{auth}");
        assert_eq!(get("x-amz-security-token"), Some("token"));
        assert!(get("x-amz-date").is_some());
    }
}

//! One EC2 call, `DescribeInstances`, made directly over the Query protocol ([`crate::query`]):
//! `aws-sdk-ec2` would cost about six minutes of release build and 8.5 GB of compiler memory
//! for this one call (docs/benchmarks.md, "Instance lookup").

use aws_smithy_xml::decode::{Document, ScopedDecoder, try_data};

use crate::query::{QueryClient, QueryError, Service, enc, text, xml_error};

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
    query: QueryClient,
}

impl From<QueryError> for Ec2Error {
    fn from(e: QueryError) -> Self {
        Self::new(e.message, e.retryable)
    }
}

impl Ec2 {
    /// From the SDK configuration the SQS and Auto Scaling clients use: the same region,
    /// credentials and (in tests) endpoint; `AWS_ENDPOINT_URL_EC2` overrides the endpoint.
    pub fn new(config: &aws_config::SdkConfig) -> Result<Self, Ec2Error> {
        let service = Service {
            signing_name: "ec2",
            host_prefix: "ec2",
            endpoint_env: "AWS_ENDPOINT_URL_EC2",
        };
        Ok(Self {
            query: QueryClient::new(config, service)?,
        })
    }

    /// Counts each failed call in the error metric.
    pub fn counting_errors(mut self, errors: crate::aws_error::Counted) -> Self {
        self.query = self.query.counting_errors(errors);
        self
    }

    /// The instances among `ids` that EC2 knows (unknown ids are simply absent: the
    /// `instance-id` filter, unlike `InstanceId.N`, does not fail the whole call for one).
    pub async fn describe(&self, ids: &[String]) -> Result<Vec<Instance>, Ec2Error> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_IDS_PER_CALL) {
            let mut next: Option<String> = None;
            loop {
                let xml = self
                    .query
                    .call("DescribeInstances", &request_body(chunk, next.as_deref()))
                    .await?;
                let page = parse_page(&xml)?;
                out.extend(page.instances);
                match page.next_token {
                    Some(t) if !t.is_empty() => next = Some(t),
                    _ => break,
                }
            }
        }
        Ok(out)
    }
}

/// The form body of one call.
pub fn request_body(ids: &[String], next_token: Option<&str>) -> String {
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

/// A `DescribeInstancesResponse`: reservations hold instances.
pub fn parse_page(xml: &str) -> Result<Page, Ec2Error> {
    let mut doc = Document::new(xml);
    let mut root = doc.root_element().map_err(xml_error)?;
    if !root.start_el().matches("DescribeInstancesResponse") {
        return Err(xml_error(format!(
            "expected DescribeInstancesResponse, got {}",
            root.start_el().local()
        ))
        .into());
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
        return Err(xml_error("an instance without instanceId").into());
    }
    Ok(i)
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
    fn request_body_filters_by_id_and_encodes_the_token() {
        let ids = vec!["i-1".to_owned(), "i-2".to_owned()];
        assert_eq!(
            request_body(&ids, Some("a+b/c=")),
            "Action=DescribeInstances&Version=2016-11-15&Filter.1.Name=instance-id\
             &Filter.1.Value.1=i-1&Filter.1.Value.2=i-2&NextToken=a%2Bb%2Fc%3D"
        );
    }
}

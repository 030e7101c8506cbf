//! Elastic Load Balancing v2, for the optional wait before a node's Service endpoints are
//! evicted (`--lb-target-health`): which target groups hold the node (its instance id, or its
//! own IP addresses), and whether any of them still sends it new requests. Two calls,
//! `DescribeTargetGroups` and `DescribeTargetHealth`, over the Query protocol
//! ([`crate::query`]).

use aws_smithy_xml::decode::{Document, ScopedDecoder};

use crate::query::{QueryClient, QueryError, Service, enc, text, xml_error};

const VERSION: &str = "2015-12-01";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ELBv2 {operation}: {message}")]
pub struct Elbv2Error {
    pub operation: &'static str,
    pub message: String,
    /// Throttling, 5xx, timeouts and connection errors; not a denied permission or bad input.
    pub retryable: bool,
}

impl Elbv2Error {
    fn of(operation: &'static str) -> impl Fn(QueryError) -> Self {
        move |e| Self {
            operation,
            message: e.message,
            retryable: e.retryable,
        }
    }
}

/// One registered target's state in one target group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetState {
    pub group: String,
    /// An instance id, or an IP address.
    pub id: String,
    pub port: Option<u16>,
    /// `initial`, `healthy`, `unhealthy`, `unused`, `draining`, `unavailable`, …
    pub state: String,
}

impl TargetState {
    /// A load balancer sends new requests to a target only while it is `healthy`: once the
    /// AWS Load Balancer Controller (or anyone) deregisters it, it is `draining` and gets none.
    pub fn serving(&self) -> bool {
        self.state == "healthy"
    }
}

pub struct Elbv2 {
    query: QueryClient,
}

impl Elbv2 {
    /// From the SDK configuration the other clients use; `AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2`
    /// overrides the endpoint.
    pub fn new(config: &aws_config::SdkConfig) -> Result<Self, Elbv2Error> {
        let service = Service {
            signing_name: "elasticloadbalancing",
            host_prefix: "elasticloadbalancing",
            endpoint_env: "AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2",
        };
        Ok(Self {
            query: QueryClient::new(config, service).map_err(Elbv2Error::of("client"))?,
        })
    }

    /// Counts each failed call in the error metric.
    pub fn counting_errors(mut self, errors: crate::aws_error::Counted) -> Self {
        self.query = self.query.counting_errors(errors);
        self
    }

    /// Every target group of the region that can hold an instance or an IP (not Lambda
    /// functions or other load balancers), by ARN.
    pub async fn target_groups(&self) -> Result<Vec<String>, Elbv2Error> {
        let err = Elbv2Error::of("DescribeTargetGroups");
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let xml = self
                .query
                .call("DescribeTargetGroups", &groups_body(marker.as_deref()))
                .await
                .map_err(&err)?;
            let page = parse_groups(&xml).map_err(&err)?;
            out.extend(page.arns);
            match page.next_marker {
                // A marker that does not move would loop for ever.
                Some(m) if !m.is_empty() && marker.as_deref() != Some(m.as_str()) => {
                    marker = Some(m)
                }
                _ => break,
            }
        }
        Ok(out)
    }

    /// The state of every target registered in `group`.
    pub async fn target_health(&self, group: &str) -> Result<Vec<TargetState>, Elbv2Error> {
        let err = Elbv2Error::of("DescribeTargetHealth");
        let xml = self
            .query
            .call("DescribeTargetHealth", &health_body(group))
            .await
            .map_err(&err)?;
        parse_health(group, &xml).map_err(err)
    }

    /// Every target of `groups`, asked a few groups at a time (a region may have hundreds);
    /// a group deleted since it was listed holds nothing.
    async fn targets_in(&self, groups: &[String]) -> Result<Vec<TargetState>, Elbv2Error> {
        let mut out = Vec::new();
        for chunk in groups.chunks(AT_ONCE) {
            let answers =
                futures_util::future::join_all(chunk.iter().map(|g| self.target_health(g))).await;
            for answer in answers {
                match answer {
                    Ok(targets) => out.extend(targets),
                    Err(e) if e.message.contains("TargetGroupNotFound") => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(out)
    }

    /// The target groups holding a target `ours` recognises, in any state.
    pub async fn groups_holding(
        &self,
        ours: impl Fn(&str) -> bool,
    ) -> Result<Vec<String>, Elbv2Error> {
        let groups = self.target_groups().await?;
        let mut holding: Vec<String> = self
            .targets_in(&groups)
            .await?
            .into_iter()
            .filter(|t| ours(&t.id))
            .map(|t| t.group)
            .collect();
        // Targets come group by group: one entry per group.
        holding.dedup();
        Ok(holding)
    }

    /// How many targets `ours` recognises in `groups` are still sent new requests.
    pub async fn serving_in(
        &self,
        groups: &[String],
        ours: impl Fn(&str) -> bool,
    ) -> Result<usize, Elbv2Error> {
        let targets = self.targets_in(groups).await?;
        Ok(targets
            .iter()
            .filter(|t| ours(&t.id) && t.serving())
            .count())
    }
}

/// Target groups asked at once.
const AT_ONCE: usize = 16;

/// One page of `DescribeTargetGroups` (400, the most a page holds).
pub fn groups_body(marker: Option<&str>) -> String {
    let mut body = format!("Action=DescribeTargetGroups&Version={VERSION}&PageSize=400");
    if let Some(m) = marker {
        body.push_str(&format!("&Marker={}", enc(m)));
    }
    body
}

pub fn health_body(group: &str) -> String {
    format!(
        "Action=DescribeTargetHealth&Version={VERSION}&TargetGroupArn={}",
        enc(group)
    )
}

#[derive(Debug, Default, PartialEq)]
pub struct GroupsPage {
    pub arns: Vec<String>,
    pub next_marker: Option<String>,
}

/// Runs `read` on the element `result` inside the response `response`; an error names what
/// came instead.
fn in_result(
    xml: &str,
    response: &str,
    result: &str,
    mut read: impl FnMut(&mut ScopedDecoder) -> Result<(), QueryError>,
) -> Result<(), QueryError> {
    let mut doc = Document::new(xml);
    let mut root = doc.root_element().map_err(xml_error)?;
    if !root.start_el().matches(response) {
        return Err(xml_error(format!(
            "expected {response}, got {}",
            root.start_el().local()
        )));
    }
    while let Some(mut tag) = root.next_tag() {
        if tag.start_el().matches(result) {
            read(&mut tag)?;
        }
    }
    Ok(())
}

pub fn parse_groups(xml: &str) -> Result<GroupsPage, QueryError> {
    let mut page = GroupsPage::default();
    in_result(
        xml,
        "DescribeTargetGroupsResponse",
        "DescribeTargetGroupsResult",
        |result| {
            while let Some(mut tag) = result.next_tag() {
                match tag.start_el().local() {
                    "TargetGroups" => {
                        while let Some(mut member) = tag.next_tag() {
                            let (mut arn, mut kind) = (String::new(), String::new());
                            while let Some(mut f) = member.next_tag() {
                                match f.start_el().local() {
                                    "TargetGroupArn" => arn = text(&mut f)?,
                                    "TargetType" => kind = text(&mut f)?,
                                    _ => {}
                                }
                            }
                            if arn.is_empty() {
                                return Err(xml_error("a target group without TargetGroupArn"));
                            }
                            if matches!(kind.as_str(), "" | "instance" | "ip") {
                                page.arns.push(arn);
                            }
                        }
                    }
                    "NextMarker" => {
                        page.next_marker = Some(text(&mut tag)?).filter(|m| !m.is_empty())
                    }
                    _ => {}
                }
            }
            Ok(())
        },
    )?;
    Ok(page)
}

pub fn parse_health(group: &str, xml: &str) -> Result<Vec<TargetState>, QueryError> {
    let mut out = Vec::new();
    in_result(
        xml,
        "DescribeTargetHealthResponse",
        "DescribeTargetHealthResult",
        |result| {
            while let Some(mut tag) = result.next_tag() {
                if !tag.start_el().matches("TargetHealthDescriptions") {
                    continue;
                }
                while let Some(mut member) = tag.next_tag() {
                    let mut t = TargetState {
                        group: group.to_owned(),
                        id: String::new(),
                        port: None,
                        state: String::new(),
                    };
                    while let Some(mut f) = member.next_tag() {
                        match f.start_el().local() {
                            "Target" => {
                                while let Some(mut g) = f.next_tag() {
                                    match g.start_el().local() {
                                        "Id" => t.id = text(&mut g)?,
                                        "Port" => t.port = text(&mut g)?.parse().ok(),
                                        _ => {}
                                    }
                                }
                            }
                            "TargetHealth" => {
                                while let Some(mut g) = f.next_tag() {
                                    if g.start_el().matches("State") {
                                        t.state = text(&mut g)?;
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                    if t.id.is_empty() {
                        return Err(xml_error("a target without an Id"));
                    }
                    out.push(t);
                }
            }
            Ok(())
        },
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUPS: &str = r#"<DescribeTargetGroupsResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/">
  <DescribeTargetGroupsResult>
    <NextMarker>bWFya2VyIDI=</NextMarker>
    <TargetGroups>
      <member>
        <TargetGroupArn>arn:aws:elasticloadbalancing:us-west-2:123456789012:targetgroup/web/73e2d6bc24d8a067</TargetGroupArn>
        <TargetGroupName>web</TargetGroupName>
        <Protocol>HTTP</Protocol>
        <Port>80</Port>
        <TargetType>instance</TargetType>
        <LoadBalancerArns><member>arn:aws:elasticloadbalancing:us-west-2:123456789012:loadbalancer/app/my-lb/50dc6c495c0c9188</member></LoadBalancerArns>
      </member>
      <member>
        <TargetGroupArn>arn:aws:elasticloadbalancing:us-west-2:123456789012:targetgroup/pods/83e2d6bc24d8a067</TargetGroupArn>
        <TargetType>ip</TargetType>
      </member>
      <member>
        <TargetGroupArn>arn:aws:elasticloadbalancing:us-west-2:123456789012:targetgroup/fn/93e2d6bc24d8a067</TargetGroupArn>
        <TargetType>lambda</TargetType>
      </member>
    </TargetGroups>
  </DescribeTargetGroupsResult>
  <ResponseMetadata><RequestId>70092c0e-f3a9-11e5-ae48-cff02092876b</RequestId></ResponseMetadata>
</DescribeTargetGroupsResponse>"#;

    const HEALTH: &str = r#"<DescribeTargetHealthResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/">
  <DescribeTargetHealthResult>
    <TargetHealthDescriptions>
      <member>
        <HealthCheckPort>80</HealthCheckPort>
        <TargetHealth><State>healthy</State></TargetHealth>
        <Target><Port>30080</Port><Id>i-0f76fade435676abd</Id></Target>
      </member>
      <member>
        <HealthCheckPort>80</HealthCheckPort>
        <TargetHealth>
          <State>draining</State>
          <Reason>Target.DeregistrationInProgress</Reason>
          <Description>Target deregistration is in progress</Description>
        </TargetHealth>
        <Target><Port>30080</Port><Id>10.0.1.17</Id><AvailabilityZone>us-west-2a</AvailabilityZone></Target>
      </member>
    </TargetHealthDescriptions>
  </DescribeTargetHealthResult>
  <ResponseMetadata><RequestId>c534f810-f389-11e5-9192-3fff33344cfa</RequestId></ResponseMetadata>
</DescribeTargetHealthResponse>"#;

    #[test]
    fn reads_target_groups_that_can_hold_a_node_and_the_marker() {
        let page = parse_groups(GROUPS).unwrap();
        assert_eq!(page.arns.len(), 2, "not the Lambda group: {:?}", page.arns);
        assert!(page.arns[0].ends_with("targetgroup/web/73e2d6bc24d8a067"));
        assert!(page.arns[1].ends_with("targetgroup/pods/83e2d6bc24d8a067"));
        assert_eq!(page.next_marker.as_deref(), Some("bWFya2VyIDI="));
    }

    #[test]
    fn reads_each_targets_state() {
        let targets = parse_health("tg", HEALTH).unwrap();
        assert_eq!(
            targets,
            vec![
                TargetState {
                    group: "tg".into(),
                    id: "i-0f76fade435676abd".into(),
                    port: Some(30080),
                    state: "healthy".into()
                },
                TargetState {
                    group: "tg".into(),
                    id: "10.0.1.17".into(),
                    port: Some(30080),
                    state: "draining".into()
                },
            ]
        );
        assert!(targets[0].serving() && !targets[1].serving());
    }

    #[test]
    fn empty_answers_and_garbage() {
        let empty = "<DescribeTargetHealthResponse><DescribeTargetHealthResult><TargetHealthDescriptions/></DescribeTargetHealthResult></DescribeTargetHealthResponse>";
        assert_eq!(parse_health("tg", empty).unwrap(), vec![]);
        let none = "<DescribeTargetGroupsResponse><DescribeTargetGroupsResult><TargetGroups/></DescribeTargetGroupsResult></DescribeTargetGroupsResponse>";
        assert_eq!(parse_groups(none).unwrap(), GroupsPage::default());
        for bad in [
            "",
            "not xml",
            "<ErrorResponse/>",
            "<DescribeTargetHealthResponse><DescribeTargetHealthResult><TargetHealthDescriptions><member><TargetHealth><State>healthy</State></TargetHealth></member></TargetHealthDescriptions></DescribeTargetHealthResult></DescribeTargetHealthResponse>",
        ] {
            let e = parse_health("tg", bad).unwrap_err();
            assert!(e.retryable, "{bad:?}: {e}");
        }
        assert!(parse_groups(HEALTH).is_err(), "the wrong answer is refused");
    }

    #[test]
    fn request_bodies_encode_arns_and_markers() {
        assert_eq!(
            health_body("arn:aws:elasticloadbalancing:us-west-2:1:targetgroup/web/7"),
            "Action=DescribeTargetHealth&Version=2015-12-01&TargetGroupArn=\
             arn%3Aaws%3Aelasticloadbalancing%3Aus-west-2%3A1%3Atargetgroup%2Fweb%2F7"
        );
        assert_eq!(
            groups_body(Some("a+b=")),
            "Action=DescribeTargetGroups&Version=2015-12-01&PageSize=400&Marker=a%2Bb%3D"
        );
    }
}

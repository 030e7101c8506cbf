//! A moto server for tests and benchmarks (included by both with `#[path]`): SQS, EC2 and
//! Auto Scaling on a free loopback port, with the two Auto Scaling calls moto lacks added and
//! recorded by `moto_launcher.py`.

use std::time::Duration;

use serde_json::Value;

/// A moto server on a free loopback port, stopped when dropped, with the two Auto Scaling
/// calls moto lacks added and recorded (`tests/support/moto_launcher.py`).
pub struct Moto {
    _server: tokio::process::Child,
    pub url: String,
    /// One JSON line per CompleteLifecycleAction / RecordLifecycleActionHeartbeat / deletion.
    pub calls: std::path::PathBuf,
    /// One JSON line per request served: the IAM action it needs and its access key.
    pub requests: std::path::PathBuf,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.calls);
        let _ = std::fs::remove_file(&self.requests);
    }
}

impl Moto {
    /// Another server may take the port between our probe and moto's bind (many scenarios
    /// start at once in the soak): then moto exits, or a stranger answers; we try another port.
    pub async fn start() -> Self {
        for _ in 0..5 {
            if let Some(moto) = Self::try_start().await {
                return moto;
            }
        }
        panic!("moto did not start on any of 5 free ports");
    }

    async fn try_start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        // A launcher script run by python3 works wherever `pip install 'moto[server]'` put
        // moto, with no PATH shims needed.
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        let calls = std::env::temp_dir().join(format!(
            "sih-moto-calls-{}-{port}.jsonl",
            std::process::id()
        ));
        let requests = calls.with_extension("requests.jsonl");
        let launcher = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/moto_launcher.py"
        );
        let mut cmd = tokio::process::Command::new(python);
        cmd.args([launcher, "-H", "127.0.0.1", "-p", &port.to_string()])
            .env("SIH_MOTO_CALLS", &calls)
            .env("SIH_MOTO_REQUESTS", &requests)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .expect("python3 runs (./scripts/test installs moto[server])");
        let url = format!("http://127.0.0.1:{port}");
        let started = std::time::Instant::now();
        loop {
            if let Ok(r) = reqwest::get(format!("{url}/moto-api/")).await {
                if r.status().is_success() {
                    break;
                }
                // Not moto: whatever took the port answers.
                return None;
            }
            if child.try_wait().ok().flatten().is_some() {
                return None;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "moto did not answer within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(Self {
            _server: child,
            url,
            calls,
            requests,
        })
    }

    /// The IAM actions (`sqs:ReceiveMessage`, ...) of the requests sent with this access key.
    #[allow(dead_code)] // the soak does not ask
    pub fn iam_actions(&self, access_key: &str) -> std::collections::BTreeSet<String> {
        std::fs::read_to_string(&self.requests)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["key"] == access_key)
            .filter_map(|v| v["iam"].as_str().map(str::to_owned))
            .collect()
    }

    pub async fn config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&self.url)
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .load()
            .await
    }

    pub async fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.config().await)
    }

    pub async fn autoscaling(&self) -> aws_sdk_autoscaling::Client {
        aws_sdk_autoscaling::Client::new(&self.config().await)
    }

    /// Launches `count` instances in moto's EC2 (tagged `tag` if given); returns their ids.
    /// Moto routes a Query call by the credential scope in `Authorization` and does not
    /// check the signature, so this setup call needs none.
    pub async fn run_instances(&self, count: usize, tag: Option<&str>) -> Vec<String> {
        let mut ids = Vec::with_capacity(count);
        // 100 per call keeps each answer small.
        while ids.len() < count {
            let n = (count - ids.len()).min(100);
            let mut body = format!(
                "Action=RunInstances&Version=2016-11-15&ImageId=ami-12345678&MinCount={n}\
                 &MaxCount={n}&InstanceType=m5.large&Placement.AvailabilityZone=us-east-1a"
            );
            if let Some(t) = tag {
                body.push_str(&format!(
                    "&TagSpecification.1.ResourceType=instance&TagSpecification.1.Tag.1.Key={}\
                     &TagSpecification.1.Tag.1.Value=",
                    t.replace('/', "%2F")
                ));
            }
            let text = self.query("ec2", body).await;
            let before = ids.len();
            ids.extend(
                text.split("<instanceId>")
                    .skip(1)
                    .filter_map(|s| s.split('<').next())
                    .map(str::to_owned),
            );
            assert_eq!(ids.len() - before, n, "{text}");
        }
        ids
    }

    /// One Query-protocol call (EC2, ELBv2) for the test's set-up; the answer's XML. Moto
    /// routes it by the credential scope in `Authorization` and does not check the signature.
    pub async fn query(&self, service: &str, body: String) -> String {
        reqwest::Client::new()
            .post(format!("{}/", self.url))
            .header(
                "authorization",
                format!(
                    "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/{service}/aws4_request, \
                     SignedHeaders=host, Signature=0"
                ),
            )
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// A new instance-type ELBv2 target group in the default VPC; its ARN.
    #[allow(dead_code)] // only the load-balancer tests
    pub async fn target_group(&self, name: &str) -> String {
        let vpcs = self
            .query("ec2", "Action=DescribeVpcs&Version=2016-11-15".into())
            .await;
        let vpc = between(&vpcs, "<vpcId>", "<").expect("moto has a default VPC");
        let created = self
            .query(
                "elasticloadbalancing",
                format!(
                    "Action=CreateTargetGroup&Version=2015-12-01&Name={name}&Protocol=HTTP\
                     &Port=80&VpcId={vpc}&TargetType=instance"
                ),
            )
            .await;
        between(&created, "<TargetGroupArn>", "<")
            .unwrap_or_else(|| panic!("{created}"))
            .to_owned()
    }

    /// Registers (`true`) or deregisters an instance in a target group, on port 30080.
    #[allow(dead_code)] // only the load-balancer tests
    pub async fn set_target(&self, group: &str, instance: &str, registered: bool) {
        let action = if registered {
            "RegisterTargets"
        } else {
            "DeregisterTargets"
        };
        let group = group.replace(':', "%3A").replace('/', "%2F");
        let answer = self
            .query(
                "elasticloadbalancing",
                format!(
                    "Action={action}&Version=2015-12-01&TargetGroupArn={group}\
                     &Targets.member.1.Id={instance}&Targets.member.1.Port=30080"
                ),
            )
            .await;
        assert!(answer.contains(&format!("{action}Response")), "{answer}");
    }

    /// The instances as our own DescribeInstances client reads them from moto.
    pub async fn instances(&self, ids: &[String]) -> Vec<sih_queue::Instance> {
        let ec2 = sih_queue::Ec2::new(&self.config().await).unwrap();
        let mut found = ec2.describe(ids).await.unwrap();
        found.sort_by_key(|i| ids.iter().position(|id| *id == i.id));
        found
    }

    fn recorded(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.calls)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The recorded lifecycle calls.
    pub fn lifecycle_calls(&self) -> Vec<Value> {
        self.recorded()
            .into_iter()
            .filter(|c| c["action"] != "DeleteMessage")
            .collect()
    }

    /// Every SQS message deleted: `queue`, `message_id`, `body`, `time` (Unix seconds).
    #[allow(dead_code)] // not every includer reads them
    pub fn deletions(&self) -> Vec<Value> {
        self.recorded()
            .into_iter()
            .filter(|c| c["action"] == "DeleteMessage")
            .collect()
    }
}

/// The text between `start` and the next `end` in `s`.
fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    s.split(start).nth(1)?.split(end).next()
}

//! The wait before a node's Service endpoints are evicted, when a load balancer's own word is
//! asked (`--lb-target-health`): once the fence labels the node out of external load
//! balancers, its targets are deregistered (by the AWS Load Balancer Controller, or by the
//! Auto Scaling group); pods that serve traffic leave once no target group still sends the
//! node new requests, never past their last moment. The cloud is behind [`TargetHealth`], so
//! this module stays free of AWS.
//!
//! Only the node's own targets are watched (its instance id, its addresses): IP-mode targets of
//! pod IPs leave their groups only once the pod has left its endpoints, which is after its
//! eviction, so waiting on them would hold every pod to its last moment. For those, the AWS
//! Load Balancer Controller's pod readiness gate and a `preStop` delay are the tools.

use std::sync::Arc;
use std::time::Duration;

pub use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::progress::Progress;

/// How often the targets are asked about while pods wait on them: deregistration takes
/// seconds, and each ask is two calls at most.
pub const POLL: Duration = Duration::from_secs(2);

/// What load balancers may know a node by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeTargets {
    /// From the node's `providerID` (`aws:///us-west-2a/i-0123…`).
    pub instance_id: Option<String>,
    /// The node's `InternalIP` and `ExternalIP` addresses.
    pub ips: Vec<String>,
}

impl NodeTargets {
    pub fn of(node: &Node) -> Self {
        let instance_id = node
            .spec
            .as_ref()
            .and_then(|s| s.provider_id.as_deref())
            .and_then(|p| p.rsplit('/').next())
            .filter(|id| id.starts_with("i-"))
            .map(str::to_owned);
        let ips = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| matches!(a.type_.as_str(), "InternalIP" | "ExternalIP"))
            .map(|a| a.address.clone())
            .collect();
        Self { instance_id, ips }
    }

    pub fn is_empty(&self) -> bool {
        self.instance_id.is_none() && self.ips.is_empty()
    }

    /// Whether a target id (an instance id or an IP address) is one of the node's.
    pub fn holds(&self, id: &str) -> bool {
        self.instance_id.as_deref() == Some(id) || self.ips.iter().any(|ip| ip == id)
    }
}

/// A load balancer service that knows which of a node's targets still get new requests.
/// Every call is bounded by the caller.
pub trait TargetHealth: Send + Sync {
    /// The target groups that hold any of the node's targets, in any state.
    fn groups<'a>(&'a self, node: &'a NodeTargets) -> BoxFuture<'a, Result<Vec<String>, LbError>>;
    /// How many of the node's targets in `groups` are still sent new requests.
    fn serving<'a>(
        &'a self,
        node: &'a NodeTargets,
        groups: &'a [String],
    ) -> BoxFuture<'a, Result<usize, LbError>>;
}

/// Why the load balancers gave no answer; its text is one line for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LbError {
    #[error("the load balancers (ELBv2) did not answer within {0:?}")]
    Silent(Duration),
    /// Throttled, a server error, the network: asking again may help.
    #[error("{0}")]
    Failed(String),
    /// No permission, a bad request: asking again does not help, so the wait is the
    /// fallback delay's from then on.
    #[error("{0}")]
    Refused(String),
}

impl LbError {
    pub fn retryable(&self) -> bool {
        !matches!(self, Self::Refused(_))
    }
}

/// A [`TargetHealth`] to keep in a configuration.
#[derive(Clone)]
pub struct LbHealth(pub Arc<dyn TargetHealth>);

impl std::fmt::Debug for LbHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LbHealth")
    }
}

/// Where the wait stands, for the pods that hold on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Some target still gets requests (or nobody has answered yet).
    Waiting,
    /// No load balancer sends the node new requests: endpoints may go.
    Open,
    /// The load balancers cannot be asked: endpoints wait `--lb-drain-delay` from the drain's
    /// start instead.
    Fallback,
}

/// Watches the node's targets until none is served, and says what it sees; the gate opens
/// then. Runs until then, or until dropped (the drain aborts it when it ends).
pub async fn watch_targets(
    health: Arc<dyn TargetHealth>,
    client: kube::Client,
    node: String,
    api_timeout: Duration,
    gate: watch::Sender<Gate>,
    progress: mpsc::UnboundedSender<Progress>,
) {
    let say = |what: String, warning: bool| {
        let _ = progress.send(Progress::LoadBalancers { what, warning });
    };
    let nodes: Api<Node> = Api::all(client);
    let targets = match crate::bounded(api_timeout, "get node", nodes.get(&node)).await {
        Ok(Ok(n)) => NodeTargets::of(&n),
        Ok(Err(e)) => return fall_back(&gate, &say, format!("cannot read the node: {e}")),
        Err(e) => return fall_back(&gate, &say, e.to_string()),
    };
    watch_groups(&*health, &targets, api_timeout, &gate, &say).await;
}

/// The node's targets known: find their groups, then ask until none is served. A refusal
/// (no permission) ends the asking with the gate on the fallback; anything else is asked
/// again at the next poll.
async fn watch_groups(
    health: &dyn TargetHealth,
    targets: &NodeTargets,
    api_timeout: Duration,
    gate: &watch::Sender<Gate>,
    say: &impl Fn(String, bool),
) {
    let started = Instant::now();
    if targets.is_empty() {
        return fall_back(gate, say, "the node has no instance id or address".into());
    }
    let groups = loop {
        match ask(api_timeout, health.groups(targets)).await {
            Ok(g) => break g,
            Err(e) => {
                // Nothing known yet: the fallback delay applies while the question is asked
                // again (unless asking again cannot help); the gate still opens once an
                // answer says the node is out.
                let again = e.retryable();
                let then = if again { "; asking again" } else { "" };
                fall_back(
                    gate,
                    say,
                    format!("cannot find the node's target groups ({e}){then}"),
                );
                if !again {
                    return;
                }
                tokio::time::sleep(POLL).await;
            }
        }
    };
    if groups.is_empty() {
        say("the node is in no target group".into(), false);
        let _ = gate.send(Gate::Open);
        return;
    }
    let mut warned = false;
    loop {
        match ask(api_timeout, health.serving(targets, &groups)).await {
            Ok(0) => {
                say(
                    format!(
                        "no load balancer sends the node new requests ({} target group(s), {:.1}s after the drain began)",
                        groups.len(),
                        started.elapsed().as_secs_f64()
                    ),
                    false,
                );
                let _ = gate.send(Gate::Open);
                return;
            }
            Ok(n) => {
                if !warned && *gate.borrow() == Gate::Waiting {
                    say(
                        format!(
                            "waiting for {n} target(s) in {} target group(s) to be deregistered before evicting Service endpoints",
                            groups.len()
                        ),
                        false,
                    );
                    warned = true;
                }
                // An answer again: the wait is the load balancers' once more.
                let _ =
                    gate.send_if_modified(|g| std::mem::replace(g, Gate::Waiting) != Gate::Waiting);
            }
            Err(e) => {
                fall_back(gate, say, format!("cannot read the targets' health ({e})"));
                if !e.retryable() {
                    return;
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The load balancers cannot be asked: endpoints wait `--lb-drain-delay` meanwhile. Said
/// once, when the gate turns to the fallback.
fn fall_back(gate: &watch::Sender<Gate>, say: &impl Fn(String, bool), why: String) {
    if gate.send_replace(Gate::Fallback) != Gate::Fallback {
        say(format!("{why}; endpoints wait --lb-drain-delay"), true);
    }
}

/// One question to the load balancers, bounded like every outside call. Its timeout names
/// the load balancers (ELBv2), not the Kubernetes API the shared helper's error names.
async fn ask<T>(limit: Duration, call: BoxFuture<'_, Result<T, LbError>>) -> Result<T, LbError> {
    tokio::time::timeout(limit, call)
        .await
        .map_err(|_| LbError::Silent(limit))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};

    #[tokio::test(start_paused = true)]
    async fn a_load_balancer_that_never_answers_is_named_as_such() {
        let never: BoxFuture<'_, Result<(), LbError>> = Box::pin(std::future::pending());
        let e = ask(Duration::from_secs(2), never)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("load balancers (ELBv2)"), "{e}");
        assert!(!e.contains("Kubernetes"), "{e}");
    }

    /// Answers from a script, one per call; counts the calls.
    struct Scripted {
        groups: std::sync::Mutex<Vec<Result<Vec<String>, LbError>>>,
        serving: std::sync::Mutex<Vec<Result<usize, LbError>>>,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl Scripted {
        fn new(
            groups: Vec<Result<Vec<String>, LbError>>,
            serving: Vec<Result<usize, LbError>>,
        ) -> Self {
            Self {
                groups: std::sync::Mutex::new(groups),
                serving: std::sync::Mutex::new(serving),
                calls: Default::default(),
            }
        }

        fn calls(&self) -> usize {
            self.calls.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    impl TargetHealth for Scripted {
        fn groups<'a>(&'a self, _: &'a NodeTargets) -> BoxFuture<'a, Result<Vec<String>, LbError>> {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let next = self.groups.lock().unwrap().remove(0);
            Box::pin(async move { next })
        }

        fn serving<'a>(
            &'a self,
            _: &'a NodeTargets,
            _: &'a [String],
        ) -> BoxFuture<'a, Result<usize, LbError>> {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let next = self.serving.lock().unwrap().remove(0);
            Box::pin(async move { next })
        }
    }

    fn node_targets() -> NodeTargets {
        NodeTargets {
            instance_id: Some("i-0123456789abcdef0".into()),
            ips: vec!["10.0.1.17".into()],
        }
    }

    async fn watched(health: &Scripted) -> (Gate, Vec<(String, bool)>) {
        // The drain's pods hold the receivers; a sender without any would not keep a value.
        let (gate, _pods) = watch::channel(Gate::Waiting);
        let said = std::sync::Mutex::new(Vec::new());
        let say = |what: String, warning: bool| said.lock().unwrap().push((what, warning));
        let limit = Duration::from_secs(5);
        tokio::time::timeout(
            Duration::from_secs(60),
            watch_groups(health, &node_targets(), limit, &gate, &say),
        )
        .await
        .expect("the watch ends");
        let last = *gate.borrow();
        (last, said.into_inner().unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_is_not_asked_again_and_the_fallback_delay_holds() {
        let denied =
            LbError::Refused("AccessDenied: not authorized to DescribeTargetHealth".into());
        let health = Scripted::new(vec![Ok(vec!["tg-1".into()])], vec![Ok(1), Err(denied)]);
        let (gate, said) = watched(&health).await;
        assert_eq!(gate, Gate::Fallback);
        assert_eq!(
            health.calls(),
            3,
            "groups once, serving twice, then no more asking"
        );
        let (last, warning) = said.last().expect("said why");
        assert!(*warning && last.contains("AccessDenied"), "{said:?}");
        assert!(last.contains("--lb-drain-delay"), "{said:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_passing_failure_is_asked_again_and_the_gate_opens_on_the_answer() {
        fn throttled<T>() -> Result<T, LbError> {
            Err(LbError::Failed("Throttling: Rate exceeded".into()))
        }
        let health = Scripted::new(
            vec![throttled(), Ok(vec!["tg-1".into()])],
            vec![Ok(2), throttled(), Ok(0)],
        );
        let (gate, said) = watched(&health).await;
        assert_eq!(gate, Gate::Open);
        assert_eq!(health.calls(), 5);
        let warned = said.iter().filter(|(_, w)| *w).count();
        assert_eq!(warned, 2, "one warning per turn to the fallback: {said:?}");
        assert!(
            said.last().unwrap().0.contains("no load balancer sends"),
            "{said:?}"
        );
    }

    #[test]
    fn a_node_is_known_by_its_instance_id_and_addresses() {
        let node = Node {
            spec: Some(NodeSpec {
                provider_id: Some("aws:///us-west-2a/i-0123456789abcdef0".into()),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(vec![
                    NodeAddress {
                        type_: "InternalIP".into(),
                        address: "10.0.1.17".into(),
                    },
                    NodeAddress {
                        type_: "Hostname".into(),
                        address: "ip-10-0-1-17".into(),
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let t = NodeTargets::of(&node);
        assert_eq!(t.instance_id.as_deref(), Some("i-0123456789abcdef0"));
        assert_eq!(t.ips, vec!["10.0.1.17".to_string()]);
        assert!(t.holds("i-0123456789abcdef0") && t.holds("10.0.1.17"));
        assert!(!t.holds("ip-10-0-1-17") && !t.holds("i-other"));
        let bare = NodeTargets::of(&Node {
            spec: Some(NodeSpec {
                provider_id: Some("kind://docker/kind/kind-worker".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(bare.is_empty(), "{bare:?}");
    }
}

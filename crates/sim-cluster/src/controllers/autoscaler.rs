//! A simulated cluster-autoscaler for one node group (`--autoscaler`), so a rehearsal of a
//! full cluster goes on past the drain: pods the scheduler cannot place that a new node of the
//! group would take make the group grow (the nodes appear after `scale_up_delay`, an instance's
//! boot), and a node of the group that runs nothing but DaemonSet pods for `scale_down_after`
//! is removed, never below `min`. As the real one, it counts pods, not nodes: it asks for as
//! many nodes as the waiting pods need (by pod capacity), less those already on their way.
//! Only nodes labelled with the group ([`GROUP_LABEL`]) are its own.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::{name_of, scheduler};
use crate::error::ApiError;
use crate::resources::{NODES, PODS};
use crate::store::{Key, Tx};

/// cluster-autoscaler's default `--expendable-pods-priority-cutoff`.
pub const EXPENDABLE_CUTOFF: i64 = -10;

/// The label naming the node group a node belongs to.
pub const GROUP_LABEL: &str = "sim.spot-interrupt-handler/node-group";

#[derive(Debug, Clone, PartialEq)]
pub struct AutoscalerConfig {
    pub group: String,
    pub min: usize,
    pub max: usize,
    /// Its nodes are spot capacity (labelled as such).
    pub spot: bool,
    /// From the decision to the node's registration.
    pub scale_up_delay: Duration,
    /// How long a node runs nothing but DaemonSet pods before it is removed.
    pub scale_down_after: Duration,
    /// `--expendable-pods-priority-cutoff`: pods below this priority are never scaled for.
    pub expendable_cutoff: i64,
    /// The pods one of its nodes takes (another instance type than the cluster's); `None`:
    /// the cluster's.
    pub max_pods: Option<usize>,
}

impl Default for AutoscalerConfig {
    fn default() -> Self {
        Self {
            group: "workers".into(),
            min: 0,
            max: 10,
            spot: false,
            scale_up_delay: Duration::from_secs(10),
            scale_down_after: Duration::from_secs(60),
            expendable_cutoff: EXPENDABLE_CUTOFF,
            max_pods: None,
        }
    }
}

impl AutoscalerConfig {
    /// `group=NAME,min=N,max=N,spot=BOOL,scale-up-delay=DUR,scale-down-after=DUR,
    /// expendable-cutoff=N,max-pods=N`, every key optional.
    pub fn parse_flag(s: &str) -> Result<Self, String> {
        let mut c = Self::default();
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} is not key=value"))?;
            let count = |v: &str| {
                v.parse::<usize>()
                    .map_err(|_| format!("{k}: {v:?} is not a count"))
            };
            let duration = |v: &str| {
                v.parse::<jiff::SignedDuration>()
                    .ok()
                    .and_then(|d| Duration::try_from(d).ok())
                    .ok_or_else(|| format!("{k}: {v:?} is not a duration like 10s or 500ms"))
            };
            match k {
                "group" if !v.is_empty() && v.len() <= 63 => c.group = v.to_owned(),
                "group" => return Err("group: 1 to 63 characters".into()),
                "min" => c.min = count(v)?,
                "max" => c.max = count(v)?,
                "spot" => {
                    c.spot = v
                        .parse()
                        .map_err(|_| format!("spot: {v:?} is not true or false"))?
                }
                "scale-up-delay" => c.scale_up_delay = duration(v)?,
                "scale-down-after" => c.scale_down_after = duration(v)?,
                "max-pods" => c.max_pods = Some(count(v)?.max(1)),
                "expendable-cutoff" => {
                    c.expendable_cutoff = v
                        .parse()
                        .map_err(|_| format!("expendable-cutoff: {v:?} is not a priority"))?
                }
                _ => {
                    return Err(format!(
                        "unknown key {k:?} (group, min, max, spot, scale-up-delay, scale-down-after, expendable-cutoff, max-pods)"
                    ));
                }
            }
        }
        if c.min > c.max || c.max > 1000 {
            return Err(format!(
                "min {} and max {}: 0 <= min <= max <= 1000",
                c.min, c.max
            ));
        }
        Ok(c)
    }

    /// The group's `n`th node as it registers: the cluster's nodes are numbered from 0, the
    /// group's from 50 000, so their names and addresses never meet.
    fn node(&self, n: usize) -> Value {
        let mut node = crate::workload::node(50_000 + n, self.spot);
        node["metadata"]["labels"][GROUP_LABEL] = json!(self.group);
        if let Some(pods) = self.max_pods {
            node["status"]["allocatable"]["pods"] = json!(pods.to_string());
        }
        node
    }
}

/// What the autoscaler remembers between passes.
#[derive(Debug, Default)]
pub struct Autoscaler {
    /// Nodes asked for, each with when it registers.
    booting: Vec<Instant>,
    /// Group nodes running nothing but DaemonSet pods, since when.
    idle_since: HashMap<String, Instant>,
    /// The next node's number.
    next: usize,
}

impl Autoscaler {
    /// One pass; returns when something is next due.
    pub fn reconcile(
        &mut self,
        tx: &mut Tx<'_>,
        config: &AutoscalerConfig,
        max_pods: usize,
        unscheduled: &BTreeSet<Key>,
    ) -> Result<Option<Instant>, ApiError> {
        let now = Instant::now();
        // Booted: the nodes register.
        let (ready, booting): (Vec<Instant>, Vec<Instant>) =
            self.booting.iter().partition(|at| **at <= now);
        self.booting = booting;
        for _ in ready {
            self.register(tx, config)?;
        }
        let mut members: Vec<String> = tx
            .view()
            .list(NODES, None)
            .filter(|n| n["metadata"]["labels"][GROUP_LABEL] == config.group.as_str())
            .map(|n| name_of(n))
            .collect();
        let mut size = members.len() + self.booting.len();
        while size < config.min {
            members.push(self.register(tx, config)?);
            size += 1;
        }

        // Pods waiting that a new node of the group would take.
        let template = config.node(self.next);
        let waiting = unscheduled
            .iter()
            .filter_map(|(ns, name)| tx.view().get(PODS, ns, name))
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            // Expendable pods are never scaled for; a pod whose preemption made it room on a
            // node waits for that node, not for a new one (as the real one filters both).
            .filter(|p| p["spec"]["priority"].as_i64().unwrap_or(0) >= config.expendable_cutoff)
            .filter(|p| {
                p["status"]["nominatedNodeName"]
                    .as_str()
                    .is_none_or(str::is_empty)
            })
            .filter(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "PodScheduled" && c["reason"] == "Unschedulable")
            })
            .filter(|p| scheduler::fits(p, &template))
            .count();
        // A new node also runs one pod of each DaemonSet.
        let per_node = config
            .max_pods
            .unwrap_or(max_pods)
            .saturating_sub(tx.view().count(crate::resources::DAEMONSETS))
            .max(1);
        // Room the group has or will have: its nodes' free places (a node just registered is
        // not Ready yet, but its place is as good as taken by the waiting pods) and the nodes
        // still booting.
        let free: usize = members
            .iter()
            .filter_map(|m| tx.view().get(NODES, "", m))
            .filter(|n| !super::nodes::is_terminated(n) && n["spec"]["unschedulable"] != true)
            .map(|n| {
                scheduler::pod_room(n, max_pods)
                    .saturating_sub(tx.view().pod_count_on_node(&name_of(n)))
            })
            .sum();
        let coming = self.booting.len() * per_node + free;
        if waiting > coming {
            let wanted = (waiting - coming).div_ceil(per_node);
            let room = config.max.saturating_sub(size);
            let asked = wanted.min(room);
            for _ in 0..asked {
                self.booting.push(now + config.scale_up_delay);
            }
            if asked > 0 {
                tracing::info!(group = %config.group, pods = waiting, nodes = asked,
                    delay_s = config.scale_up_delay.as_secs_f64(), "autoscaler: scale-up");
            } else if room == 0 {
                tracing::debug!(group = %config.group, pods = waiting, max = config.max,
                    "autoscaler: pods wait, the group is at its maximum");
            }
        }

        // Idle nodes go, down to the minimum.
        let mut size = members.len() + self.booting.len();
        let mut next: Option<Instant> = self.booting.iter().min().copied();
        let mut still_idle = HashMap::new();
        for name in members {
            let node = tx.view().get(NODES, "", &name);
            let busy = tx
                .view()
                .pods_on_node(&name)
                .iter()
                .any(|p| !is_daemon_pod(p));
            let gone = node.is_none_or(|n| super::nodes::is_terminated(n));
            if busy || gone {
                continue;
            }
            let since = self.idle_since.get(&name).copied().unwrap_or(now);
            let due = since + config.scale_down_after;
            if due <= now && size > config.min {
                tx.remove(NODES, "", &name);
                size -= 1;
                tracing::info!(group = %config.group, node = %name, "autoscaler: scale-down of an idle node");
                continue;
            }
            still_idle.insert(name, since);
            if size > config.min {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        self.idle_since = still_idle;
        Ok(next)
    }

    fn register(&mut self, tx: &mut Tx<'_>, config: &AutoscalerConfig) -> Result<String, ApiError> {
        let node = config.node(self.next);
        self.next += 1;
        let name = name_of(&node);
        tracing::info!(group = %config.group, node = %name, "autoscaler: node registered");
        tx.create(NODES, "", node)?;
        Ok(name)
    }
}

fn is_daemon_pod(p: &Value) -> bool {
    p["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| r["kind"] == "DaemonSet")
        || p["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_takes_every_key_and_refuses_nonsense() {
        let c = AutoscalerConfig::parse_flag(
            "group=od,min=1,max=4,spot=false,scale-up-delay=3s,scale-down-after=500ms,expendable-cutoff=-100,max-pods=3",
        )
        .unwrap();
        assert_eq!(
            c,
            AutoscalerConfig {
                group: "od".into(),
                min: 1,
                max: 4,
                spot: false,
                scale_up_delay: Duration::from_secs(3),
                scale_down_after: Duration::from_millis(500),
                expendable_cutoff: -100,
                max_pods: Some(3),
            }
        );
        assert_eq!(
            AutoscalerConfig::parse_flag("").unwrap(),
            AutoscalerConfig::default()
        );
        for bad in [
            "min=3,max=2",
            "max=x",
            "size=3",
            "group=",
            "spot=maybe",
            "expendable-cutoff=low",
            "max",
        ] {
            assert!(AutoscalerConfig::parse_flag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn group_nodes_never_share_a_name_with_the_clusters() {
        let c = AutoscalerConfig::default();
        let n = c.node(0);
        assert_eq!(n["metadata"]["labels"][GROUP_LABEL], "workers");
        assert_eq!(n["metadata"]["labels"]["lifecycle"], "OnDemand");
        assert_ne!(
            n["metadata"]["name"],
            crate::workload::node(0, false)["metadata"]["name"]
        );
    }
}

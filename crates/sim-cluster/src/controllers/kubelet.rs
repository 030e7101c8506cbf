//! The kubelets of every node: a bound pod runs (Running, Ready) after a short start; a pod
//! being deleted disappears once its grace period has passed.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::json;
use tokio::time::Instant;

use super::{LoopConfig, name_of, ns_of};
use crate::resources::{NODES, PODS};
use crate::store::{Key, Tx, now_rfc3339, parse_time};

#[derive(Default)]
pub struct Kubelet {
    /// When each pod (by uid) was first seen bound and not yet running.
    bound_at: HashMap<String, Instant>,
    next_ip: u32,
}

impl Kubelet {
    /// Returns when the next pod start or grace-period end is due.
    /// Visits the pods in `work` (bound and starting, or being deleted).
    pub fn reconcile(
        &mut self,
        tx: &mut Tx<'_>,
        config: &LoopConfig,
        work: &BTreeSet<Key>,
    ) -> Option<Instant> {
        let now = Instant::now();
        let wall = jiff::Timestamp::now();
        let mut next: Option<Instant> = None;
        let mut due = |at: Instant| next = Some(next.map_or(at, |n: Instant| n.min(at)));
        let bound: Vec<_> = work
            .iter()
            .filter_map(|(ns, name)| tx.get(PODS, ns, name))
            .filter(|p| {
                p["spec"]["nodeName"]
                    .as_str()
                    .is_some_and(|n| !n.is_empty())
            })
            .filter(|p| {
                p["metadata"]["deletionTimestamp"].is_string()
                    || p["status"]["phase"] == "Pending"
                    || p["status"]["phase"].is_null()
            })
            // A terminated instance's kubelet is gone with it.
            .filter(|p| {
                let node = p["spec"]["nodeName"].as_str().unwrap_or_default();
                !tx.view()
                    .get(NODES, "", node)
                    .is_some_and(|n| super::nodes::is_terminated(n))
            })
            .collect();
        let mut seen = HashSet::new();
        for pod in bound {
            let (ns, name) = (ns_of(&pod), name_of(&pod));
            if let Some(at) = pod["metadata"]["deletionTimestamp"]
                .as_str()
                .and_then(parse_time)
            {
                if at <= wall {
                    tx.remove(PODS, &ns, &name);
                } else {
                    let left = (at.as_millisecond() - wall.as_millisecond()).max(0) as u64;
                    due(now + std::time::Duration::from_millis(left));
                }
                continue;
            }
            let uid = pod["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let started = *self.bound_at.entry(uid.clone()).or_insert(now);
            seen.insert(uid);
            let ready_at = started + config.pod_start_delay;
            if ready_at > now {
                due(ready_at);
                continue;
            }
            let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
            let host_ip = tx
                .view()
                .get(NODES, "", node)
                .and_then(|n| {
                    n["status"]["addresses"][0]["address"]
                        .as_str()
                        .map(str::to_owned)
                })
                .unwrap_or_default();
            self.next_ip += 1;
            let ip = format!(
                "10.244.{}.{}",
                self.next_ip / 250 % 256,
                self.next_ip % 250 + 2
            );
            let stamp = now_rfc3339();
            let condition =
                |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": stamp});
            let containers: Vec<_> = pod["spec"]["containers"].as_array().into_iter().flatten().map(|c| json!({
                "name": c["name"], "image": c["image"], "imageID": "", "containerID": format!("containerd://{}", crate::store::new_uid().replace('-', "")),
                "ready": true, "started": true, "restartCount": 0, "state": {"running": {"startedAt": stamp}},
            })).collect();
            let mut new = (*pod).clone();
            new["status"] = json!({
                "phase": "Running",
                "conditions": [condition("PodReadyToStartContainers"), condition("Initialized"), condition("Ready"), condition("ContainersReady"), condition("PodScheduled")],
                "hostIP": host_ip, "hostIPs": [{"ip": host_ip}], "podIP": ip, "podIPs": [{"ip": ip}],
                "startTime": stamp, "containerStatuses": containers,
                "qosClass": pod["status"]["qosClass"].as_str().unwrap_or("BestEffort"),
            });
            let _ = tx.replace(PODS, &ns, &name, new);
        }
        // Forget pods that have started or gone.
        self.bound_at.retain(|uid, _| seen.contains(uid));
        next
    }
}

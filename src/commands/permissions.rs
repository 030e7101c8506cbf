//! The permissions each mode's work needs, asked once at start without holding the start up
//! (detection never waits for Kubernetes): each missing one is said once with the rule to add,
//! counted in `spot_interrupt_handler_features_off`, and the feature that needs it is turned
//! off; what cannot be turned off (the fence, the drain) is said as an error.

use std::sync::Arc;
use std::time::Duration;

use sih_node::access::{self, Feature, Rule, Switches};
use sih_report::Metrics;
use sih_report::metrics::FeatureLabels;

const NODE_GET: Rule = Rule::new("", "nodes", "get");
const NODE_PATCH: Rule = Rule::new("", "nodes", "patch");
const NODE_LIST: Rule = Rule::new("", "nodes", "list");
const NODE_WATCH: Rule = Rule::new("", "nodes", "watch");
const POD_LIST: Rule = Rule::new("", "pods", "list");
const POD_GET: Rule = Rule::new("", "pods", "get");
const POD_DELETE: Rule = Rule::new("", "pods", "delete");
const POD_CREATE: Rule = Rule::new("", "pods", "create");
const EVICT: Rule = Rule::sub("", "pods", "eviction", "create");
const PDB_LIST: Rule = Rule::new("policy", "poddisruptionbudgets", "list");
const EVENT_CREATE: Rule = Rule::new("events.k8s.io", "events", "create");
const SLICE_LIST: Rule = Rule::new("discovery.k8s.io", "endpointslices", "list");
const RS_GET: Rule = Rule::new("apps", "replicasets", "get");
const DEPLOY_GET: Rule = Rule::new("apps", "deployments", "get");
const DEPLOY_PATCH: Rule = Rule::new("apps", "deployments", "patch");
const HPA_LIST: Rule = Rule::new("autoscaling", "horizontalpodautoscalers", "list");

/// What the flags ask for, as far as permissions go.
#[derive(Debug, Clone, Default)]
pub struct Wanted {
    /// Queue mode: every node is found from a watch of them all.
    pub node_index: bool,
    /// `--on-pdb-deadline delete`.
    pub deadline_deletion: bool,
    /// Events are written (on, and not a dry run).
    pub events: bool,
    /// `--reserve-capacity` on (and not a dry run).
    pub reserve: bool,
    /// `--lb-drain-delay` above zero: endpoints are told apart.
    pub lb_endpoints: bool,
}

/// One piece of work and what it needs.
struct Need {
    /// The metric label.
    name: &'static str,
    rules: &'static [Rule],
    /// Turned off without them; `None`: it cannot be (said as an error).
    switch: Option<Feature>,
    /// What happens without them, in the log line.
    without: &'static str,
}

fn needs(w: &Wanted) -> Vec<Need> {
    let mut needs = vec![
        Need {
            name: "fence",
            rules: &[NODE_GET, NODE_PATCH],
            switch: None,
            without: "the node cannot be fenced: notices are still announced (logs, webhooks, metrics)",
        },
        Need {
            name: "drain",
            rules: &[POD_LIST, POD_GET, EVICT],
            switch: None,
            without: "pods cannot be evicted: a drain fails and is said",
        },
        Need {
            name: Feature::GrantedEvictions.name(),
            rules: &[PDB_LIST],
            switch: Some(Feature::GrantedEvictions),
            without: "an eviction its budget granted but never carried out is left to the API server",
        },
        Need {
            name: Feature::Surge.name(),
            rules: &[RS_GET, DEPLOY_GET, DEPLOY_PATCH, HPA_LIST],
            switch: Some(Feature::Surge),
            without: "no Deployment is surged before its pods leave",
        },
        Need {
            name: Feature::Recovery.name(),
            rules: &[RS_GET],
            switch: Some(Feature::Recovery),
            without: "the workloads' return to Ready is not watched (no Recovered Event, placeholders go at their TTL)",
        },
    ];
    if w.node_index {
        needs.push(Need {
            name: "node-index",
            rules: &[NODE_LIST, NODE_WATCH],
            switch: None,
            without: "no notice can be matched to its node",
        });
    }
    if w.deadline_deletion {
        needs.push(Need {
            name: Feature::DeadlineDeletion.name(),
            rules: &[POD_DELETE],
            switch: Some(Feature::DeadlineDeletion),
            without: "a pod its budget still protects at a hard deadline stays until the instance ends (as --on-pdb-deadline wait)",
        });
    }
    if w.events {
        needs.push(Need {
            name: Feature::Events.name(),
            rules: &[EVENT_CREATE],
            switch: Some(Feature::Events),
            without: "no Kubernetes Event is written (logs, metrics and webhooks go on)",
        });
    }
    if w.reserve {
        needs.push(Need {
            name: Feature::Reserve.name(),
            rules: &[POD_CREATE],
            switch: Some(Feature::Reserve),
            without: "no capacity placeholder is made",
        });
    }
    if w.lb_endpoints {
        needs.push(Need {
            name: "lb-endpoints",
            rules: &[SLICE_LIST],
            switch: None,
            without: "every pod waits --lb-drain-delay, endpoint or not",
        });
    }
    needs
}

/// Asks, in a task of its own, and turns off what cannot work.
pub fn spawn_check(
    client: kube::Client,
    wanted: Wanted,
    off: Switches,
    metrics: Arc<Metrics>,
    api_timeout: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let needs = needs(&wanted);
        let mut rules: Vec<Rule> = needs.iter().flat_map(|n| n.rules.iter().copied()).collect();
        rules.sort();
        rules.dedup();
        let refused = match access::refused(&client, &rules, api_timeout).await {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(error = %e, "cannot ask the API server what this process may do: every feature stays on; a refusal is said when it happens");
                return;
            }
        };
        for need in &needs {
            let missing: Vec<Rule> = need
                .rules
                .iter()
                .filter(|r| refused.contains(r))
                .copied()
                .collect();
            if missing.is_empty() {
                continue;
            }
            let rules = missing
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            let add = missing
                .iter()
                .map(Rule::to_yaml)
                .collect::<Vec<_>>()
                .join(", ");
            metrics
                .features_off
                .get_or_create(&FeatureLabels { feature: need.name })
                .set(1);
            match need.switch {
                Some(f) => {
                    off.turn_off(f);
                    tracing::warn!(feature = need.name, missing = %rules, add = %add, effect = need.without, "a permission is missing: the feature is off");
                }
                None => {
                    tracing::error!(feature = need.name, missing = %rules, add = %add, effect = need.without, "a permission is missing: this work cannot be done");
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_the_flags_ask_is_needed() {
        let names =
            |w: &Wanted| -> Vec<&'static str> { needs(w).into_iter().map(|n| n.name).collect() };
        assert_eq!(
            names(&Wanted::default()),
            [
                "fence",
                "drain",
                "granted-evictions",
                "surge",
                "recovery-watch"
            ]
        );
        let w = Wanted {
            events: true,
            reserve: true,
            ..Wanted::default()
        };
        assert!(
            names(&w).contains(&"kubernetes-events") && names(&w).contains(&"reserve-capacity")
        );
    }
}

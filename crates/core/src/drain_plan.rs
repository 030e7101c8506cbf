//! Drain planning against a deadline: which pods leave, in what order, with how much grace, and
//! when a pod that a PodDisruptionBudget still protects must be deleted so that it gets a useful
//! grace period before the instance disappears.
//!
//! Unlike `kubectl drain`, nothing here has a fixed timeout: every number comes from the time
//! left before the notice's deadline.

use std::time::Duration;

/// What the drain needs to know about a pod (read from the API by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFacts {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Kind of the controlling owner; `None` for a pod nobody recreates.
    pub owner_kind: Option<String>,
    /// Name of the controlling owner (a ReplicaSet's, for a Deployment's pods).
    pub owner_name: Option<String>,
    /// A static pod's mirror (`kubernetes.io/config.mirror`): the kubelet owns it.
    pub mirror: bool,
    /// Succeeded or Failed.
    pub terminal: bool,
    /// Already being deleted: wait for it, do not evict it again.
    pub terminating: bool,
    /// `system-node-critical` or `system-cluster-critical`: leaves last.
    pub critical: bool,
    /// The pod's priority (`spec.priority`, from its PriorityClass): lower leaves earlier.
    pub priority: i32,
    /// What the pod asked for (the `spot-interrupt-handler/eviction` annotation).
    pub choice: EvictionChoice,
    /// The annotation's value when it is not one of the choices (the default is used, and
    /// the pod is told with an Event).
    pub invalid_choice: Option<String>,
    /// The pod's own `terminationGracePeriodSeconds`.
    pub grace_seconds: i64,
    /// Uses an emptyDir volume, whose data is lost with the pod.
    pub empty_dir: bool,
    /// An endpoint of a Service on this node: waits for the load balancers before it goes.
    pub serves_traffic: bool,
}

/// The pod annotation through which a workload says how it wants to leave.
pub const EVICTION_ANNOTATION: &str = "spot-interrupt-handler/eviction";

/// How a pod wants to leave a node that is going away (`spot-interrupt-handler/eviction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EvictionChoice {
    /// In its priority's tier.
    #[default]
    Default,
    /// Before every tier (a cache that should make room first).
    First,
    /// After the other workloads, before the critical pods.
    Last,
    /// Told as late as its grace allows: evicted at the deadline − margin − its grace (a batch
    /// job that checkpoints when told and wants every second of work before that).
    AtDeadline,
    /// Never evicted: it stays until the instance goes (it handles its own shutdown).
    Never,
}

impl EvictionChoice {
    pub const VALUES: [&str; 4] = ["first", "last", "at-deadline", "never"];

    /// The annotation's value: `Err` with the value when it is not a choice.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim() {
            "first" => Ok(Self::First),
            "last" => Ok(Self::Last),
            "at-deadline" => Ok(Self::AtDeadline),
            "never" => Ok(Self::Never),
            other => Err(other.to_owned()),
        }
    }
}

impl PodFacts {
    pub fn is_daemonset_pod(&self) -> bool {
        self.owner_kind.as_deref() == Some("DaemonSet")
    }

    pub fn unmanaged(&self) -> bool {
        self.owner_kind.is_none()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    Mirror,
    DaemonSet,
    Terminal,
    OwnPod,
    OptedOut,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mirror => "mirror pod",
            Self::DaemonSet => "DaemonSet pod",
            Self::Terminal => "finished",
            Self::OwnPod => "our own pod",
            Self::OptedOut => "opted out (spot-interrupt-handler/eviction: never)",
        }
    }
}

/// The pods of a node, sorted into what the drain does with each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodPlan {
    /// Evicted tier after tier, each in parallel: pods asking to go `first`; then the other
    /// workloads by priority, lowest first; then those asking to go `last`; then critical pods.
    /// A tier starts once the one before has been evicted, or at the latest at its share of
    /// the time ([`tier_starts`]).
    pub tiers: Vec<Vec<PodFacts>>,
    /// Evicted as late as their grace allows (`at-deadline`).
    pub at_deadline: Vec<PodFacts>,
    /// Already terminating: only waited for.
    pub terminating: Vec<PodFacts>,
    pub skipped: Vec<(PodFacts, SkipReason)>,
}

impl PodPlan {
    /// Every pod that will be asked to leave.
    pub fn to_evict(&self) -> impl Iterator<Item = &PodFacts> {
        self.tiers.iter().flatten().chain(&self.at_deadline)
    }
}

/// Sorts a node's pods. `own` is `(namespace, name)` of the handler's own pod, which must keep
/// running to finish the drain.
pub fn plan_drain(pods: Vec<PodFacts>, own: Option<(&str, &str)>) -> PodPlan {
    let mut plan = PodPlan::default();
    let (mut first, mut by_priority, mut last, mut critical) = (
        Vec::new(),
        std::collections::BTreeMap::<i32, Vec<PodFacts>>::new(),
        Vec::new(),
        Vec::new(),
    );
    for p in pods {
        let skip = if p.mirror {
            Some(SkipReason::Mirror)
        } else if p.is_daemonset_pod()
            && matches!(p.choice, EvictionChoice::Default | EvictionChoice::Never)
        {
            // Its controller puts it back on the node at once; only a pod that asks (to be
            // told at the deadline, say) is evicted.
            Some(SkipReason::DaemonSet)
        } else if p.terminal {
            Some(SkipReason::Terminal)
        } else if own.is_some_and(|(ns, name)| ns == p.namespace && name == p.name) {
            Some(SkipReason::OwnPod)
        } else if p.choice == EvictionChoice::Never && !p.terminating {
            Some(SkipReason::OptedOut)
        } else {
            None
        };
        match skip {
            Some(reason) => plan.skipped.push((p, reason)),
            None if p.terminating => plan.terminating.push(p),
            None if p.critical => critical.push(p),
            None => match p.choice {
                EvictionChoice::First => first.push(p),
                EvictionChoice::Last => last.push(p),
                EvictionChoice::AtDeadline => plan.at_deadline.push(p),
                _ => by_priority.entry(p.priority).or_default().push(p),
            },
        }
    }
    plan.tiers = std::iter::once(first)
        .chain(by_priority.into_values())
        .chain([last, critical])
        .filter(|t| !t.is_empty())
        .collect();
    plan
}

/// When each of `tiers` tiers must start at the latest, as offsets from the drain's start:
/// the time before the deadline (less the margin and the longest grace among the tiers, so
/// that the last tier's pods still stop in time) shared equally; the first starts at once.
pub fn tier_starts(
    tiers: usize,
    time_left: Duration,
    policy: &DrainPolicy,
    longest_grace: i64,
) -> Vec<Duration> {
    let usable = time_left
        .saturating_sub(policy.margin())
        .saturating_sub(Duration::from_secs(
            policy.wanted_grace(longest_grace) as u64
        ));
    (0..tiers)
        .map(|k| usable.mul_f64(k as f64 / tiers.max(1) as f64))
        .collect()
}

/// How the drain spends the time before the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainPolicy {
    /// `--pod-termination-grace-period`: an upper bound on every pod's grace.
    pub grace_override: Option<i64>,
    /// Kept free before the deadline (`--deadline-margin`, at least 1 s).
    pub margin: Duration,
    /// At a hard deadline, delete a pod its budget still protects once its grace period would
    /// no longer fit (`--on-pdb-deadline=delete`); otherwise keep respecting the budget.
    pub delete_at_deadline: bool,
}

impl Default for DrainPolicy {
    fn default() -> Self {
        Self {
            grace_override: None,
            margin: Duration::from_secs(5),
            delete_at_deadline: true,
        }
    }
}

impl DrainPolicy {
    pub fn margin(&self) -> Duration {
        self.margin.max(Duration::from_secs(1))
    }

    /// The pod's grace, bounded by the override.
    pub fn wanted_grace(&self, pod_grace: i64) -> i64 {
        let g = pod_grace.max(0);
        self.grace_override.map_or(g, |o| g.min(o.max(0)))
    }

    /// The grace period to give a pod leaving now, with `time_left` before the deadline:
    /// `min(pod's own, override, time left − margin)`, never below 1 s. Time left is rounded
    /// to the nearest second: a pod deleted at the moment its grace just fits must get all of
    /// it, not a second less for the microseconds since; the margin absorbs the difference.
    pub fn grace(&self, pod_grace: i64, time_left: Duration) -> i64 {
        let fits = time_left
            .saturating_sub(self.margin())
            .as_secs_f64()
            .round() as i64;
        self.wanted_grace(pod_grace).min(fits).max(1)
    }

    /// How long before the deadline a budget-protected pod must be deleted for its own grace
    /// period (bounded by the override) to still fit before deadline − margin.
    pub fn delete_lead(&self, pod_grace: i64) -> Duration {
        Duration::from_secs(self.wanted_grace(pod_grace) as u64) + self.margin()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn pod(name: &str) -> PodFacts {
        PodFacts {
            namespace: "default".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            owner_kind: Some("ReplicaSet".into()),
            owner_name: Some("web-1".into()),
            mirror: false,
            terminal: false,
            terminating: false,
            critical: false,
            priority: 0,
            choice: EvictionChoice::Default,
            invalid_choice: None,
            grace_seconds: 30,
            empty_dir: false,
            serves_traffic: false,
        }
    }

    #[test]
    fn plan_skips_what_must_stay_and_puts_critical_pods_last() {
        let mirror = PodFacts {
            mirror: true,
            ..pod("mirror")
        };
        let daemon = PodFacts {
            owner_kind: Some("DaemonSet".into()),
            ..pod("daemon")
        };
        let done = PodFacts {
            terminal: true,
            ..pod("done")
        };
        let own = PodFacts {
            namespace: "kube-system".into(),
            ..pod("handler")
        };
        let going = PodFacts {
            terminating: true,
            ..pod("going")
        };
        let critical = PodFacts {
            critical: true,
            ..pod("dns")
        };
        let bare = PodFacts {
            owner_kind: None,
            ..pod("bare")
        };
        let plan = plan_drain(
            vec![
                pod("web"),
                mirror,
                daemon,
                done,
                own,
                going,
                critical,
                bare.clone(),
            ],
            Some(("kube-system", "handler")),
        );
        let names = |v: &[PodFacts]| v.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        assert_eq!(plan.tiers.len(), 2);
        assert_eq!(names(&plan.tiers[0]), ["web", "bare"]);
        assert_eq!(names(&plan.tiers[1]), ["dns"]);
        assert_eq!(names(&plan.terminating), ["going"]);
        let skipped: Vec<_> = plan
            .skipped
            .iter()
            .map(|(p, r)| (p.name.as_str(), *r))
            .collect();
        assert_eq!(
            skipped,
            [
                ("mirror", SkipReason::Mirror),
                ("daemon", SkipReason::DaemonSet),
                ("done", SkipReason::Terminal),
                ("handler", SkipReason::OwnPod)
            ]
        );
        assert!(
            bare.unmanaged(),
            "unmanaged pods are evicted, with a warning"
        );
    }

    /// Tiers: `first`, then priorities lowest first, then `last`, then critical pods;
    /// `at-deadline` pods apart, `never` pods stay; an invalid choice is the default.
    #[test]
    fn tiers_follow_choices_then_priorities_then_criticality() {
        let with = |name: &str, priority: i32, choice: EvictionChoice| PodFacts {
            priority,
            choice,
            ..pod(name)
        };
        let plan = plan_drain(
            vec![
                with("batch", 0, EvictionChoice::AtDeadline),
                with("api", 1000, EvictionChoice::Default),
                with("cache", 1000, EvictionChoice::First),
                with("worker", -10, EvictionChoice::Default),
                with("web", 0, EvictionChoice::Default),
                with("db", 0, EvictionChoice::Last),
                with("self-managed", 0, EvictionChoice::Never),
                PodFacts {
                    critical: true,
                    priority: 2_000_000_000,
                    ..pod("dns")
                },
            ],
            None,
        );
        let tiers: Vec<Vec<&str>> = plan
            .tiers
            .iter()
            .map(|t| t.iter().map(|p| p.name.as_str()).collect())
            .collect();
        assert_eq!(
            tiers,
            [
                vec!["cache"],
                vec!["worker"],
                vec!["web"],
                vec!["api"],
                vec!["db"],
                vec!["dns"]
            ]
        );
        assert_eq!(plan.at_deadline[0].name, "batch");
        assert_eq!(plan.skipped[0].1, SkipReason::OptedOut);
        assert_eq!(plan.to_evict().count(), 7);
        for ok in EvictionChoice::VALUES {
            assert!(EvictionChoice::parse(ok).is_ok());
        }
        assert_eq!(EvictionChoice::parse("soon"), Err("soon".into()));
        // A DaemonSet pod stays unless it asks.
        let daemon = |name: &str, choice| PodFacts {
            owner_kind: Some("DaemonSet".into()),
            choice,
            ..pod(name)
        };
        let plan = plan_drain(
            vec![
                daemon("logs", EvictionChoice::Default),
                daemon("flush", EvictionChoice::AtDeadline),
            ],
            None,
        );
        assert_eq!(plan.skipped[0].1, SkipReason::DaemonSet);
        assert_eq!(plan.at_deadline[0].name, "flush");
    }

    #[test]
    fn each_tier_starts_by_its_share_of_the_time() {
        let p = DrainPolicy::default();
        // 120 s left, 5 s margin, 15 s the longest grace: 100 s shared by 4 tiers.
        let starts = tier_starts(4, Duration::from_secs(120), &p, 15);
        assert_eq!(starts, [0, 25, 50, 75].map(Duration::from_secs).to_vec());
        // No time to share: every tier starts at once.
        assert!(
            tier_starts(3, Duration::from_secs(10), &p, 30)
                .iter()
                .all(|d| d.is_zero())
        );
    }

    #[test]
    fn grace_is_the_smallest_of_pod_override_and_time_left_never_below_one_second() {
        let p = DrainPolicy::default();
        assert_eq!(p.grace(30, Duration::from_secs(120)), 30);
        assert_eq!(
            p.grace(300, Duration::from_secs(120)),
            115,
            "clamped to time left − margin"
        );
        assert_eq!(p.grace(30, Duration::from_secs(6)), 1);
        assert_eq!(
            p.grace(2, Duration::from_millis(6_999)),
            2,
            "rounded, not floored"
        );
        assert_eq!(p.grace(30, Duration::ZERO), 1, "never below one second");
        let capped = DrainPolicy {
            grace_override: Some(10),
            ..DrainPolicy::default()
        };
        assert_eq!(capped.grace(30, Duration::from_secs(120)), 10);
        assert_eq!(capped.grace(5, Duration::from_secs(120)), 5);
        let tight = DrainPolicy {
            margin: Duration::ZERO,
            ..DrainPolicy::default()
        };
        assert_eq!(
            tight.grace(300, Duration::from_secs(20)),
            19,
            "the margin is at least 1 s"
        );
    }

    #[test]
    fn blocked_pods_are_deleted_when_their_own_grace_would_no_longer_fit() {
        let p = DrainPolicy::default();
        assert_eq!(p.delete_lead(30), Duration::from_secs(35));
        assert_eq!(p.delete_lead(0), Duration::from_secs(5));
        let capped = DrainPolicy {
            grace_override: Some(10),
            ..DrainPolicy::default()
        };
        assert_eq!(capped.delete_lead(600), Duration::from_secs(15));
        // A pod whose grace is longer than the whole notice must go at once.
        assert!(p.delete_lead(300) > Duration::from_secs(120));
    }
}

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
    /// A static pod's mirror (`kubernetes.io/config.mirror`): the kubelet owns it.
    pub mirror: bool,
    /// Succeeded or Failed.
    pub terminal: bool,
    /// Already being deleted: wait for it, do not evict it again.
    pub terminating: bool,
    /// `system-node-critical` or `system-cluster-critical`: leaves last.
    pub critical: bool,
    /// The pod's own `terminationGracePeriodSeconds`.
    pub grace_seconds: i64,
    /// Uses an emptyDir volume, whose data is lost with the pod.
    pub empty_dir: bool,
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
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mirror => "mirror pod",
            Self::DaemonSet => "DaemonSet pod",
            Self::Terminal => "finished",
            Self::OwnPod => "our own pod",
        }
    }
}

/// The pods of a node, sorted into what the drain does with each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodPlan {
    /// Evicted first, in parallel.
    pub first: Vec<PodFacts>,
    /// Critical pods, evicted once the first tier has been evicted.
    pub last: Vec<PodFacts>,
    /// Already terminating: only waited for.
    pub terminating: Vec<PodFacts>,
    pub skipped: Vec<(PodFacts, SkipReason)>,
}

/// Sorts a node's pods. `own` is `(namespace, name)` of the handler's own pod, which must keep
/// running to finish the drain.
pub fn plan_drain(pods: Vec<PodFacts>, own: Option<(&str, &str)>) -> PodPlan {
    let mut plan = PodPlan::default();
    for p in pods {
        let skip = if p.mirror {
            Some(SkipReason::Mirror)
        } else if p.is_daemonset_pod() {
            Some(SkipReason::DaemonSet)
        } else if p.terminal {
            Some(SkipReason::Terminal)
        } else if own.is_some_and(|(ns, name)| ns == p.namespace && name == p.name) {
            Some(SkipReason::OwnPod)
        } else {
            None
        };
        match skip {
            Some(reason) => plan.skipped.push((p, reason)),
            None if p.terminating => plan.terminating.push(p),
            None if p.critical => plan.last.push(p),
            None => plan.first.push(p),
        }
    }
    plan
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
    fn margin(&self) -> Duration {
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
            mirror: false,
            terminal: false,
            terminating: false,
            critical: false,
            grace_seconds: 30,
            empty_dir: false,
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
        assert_eq!(names(&plan.first), ["web", "bare"]);
        assert_eq!(names(&plan.last), ["dns"]);
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

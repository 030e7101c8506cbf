//! The one progress stream's vocabulary: what the responder (and `drain`) say about each notice
//! and node action, as typed updates. The reporters (`updates`, `kube_events`, `metrics`,
//! `webhook`) each turn them into their own form.

use std::time::Duration;

use sih_core::{Action, Notice};
use sih_node::{DrainReport, Progress};

#[derive(Debug, Clone)]
pub enum Update {
    /// A new notice and what the policy says to do about it.
    Detected {
        notice: Notice,
        action: Action,
    },
    /// The fence write (`changed` is false when the node already was fenced so).
    Fenced {
        notice: Notice,
        effect: String,
        cordoned: bool,
        changed: bool,
        latency: Duration,
        /// What the node said of itself when it was written.
        node: sih_node::NodeFacts,
    },
    DrainStarted {
        notice: Notice,
        time_left: Duration,
    },
    Drain {
        notice: Notice,
        progress: Progress,
    },
    DrainFinished {
        notice: Notice,
        report: DrainReport,
    },
    /// A drain stopped before its end: the notice was withdrawn, a nearer deadline replaced
    /// it, or the agent is shutting down (a restarted agent resumes it).
    DrainStopped {
        notice: Notice,
        why: String,
    },
    /// The notice was withdrawn (or the instance rebooted) and our fence removed.
    Unfenced {
        notice: Notice,
        changed: bool,
        why: String,
    },
    /// A write that failed; `retrying` says whether the agent tries again.
    Failed {
        notice: Notice,
        action: &'static str,
        error: String,
        retrying: bool,
    },
    /// `--dry-run`: what would have been written.
    WouldDo {
        notice: Notice,
        what: String,
    },
    /// Extra post-drain step (`--out-of-service-taint`).
    OutOfService {
        notice: Notice,
    },
    /// Every workload the drain evicted from has its replicas Ready again, this long after
    /// the notice ("time to recover").
    Recovered {
        notice: Notice,
        after: Duration,
    },
    /// The source restated the notice with an earlier deadline: the earliest stands.
    DeadlineMoved {
        notice: Notice,
        from: Option<jiff::Timestamp>,
    },
}

impl Update {
    pub fn notice(&self) -> &Notice {
        match self {
            Update::Detected { notice, .. }
            | Update::Fenced { notice, .. }
            | Update::DrainStarted { notice, .. }
            | Update::Drain { notice, .. }
            | Update::DrainFinished { notice, .. }
            | Update::DrainStopped { notice, .. }
            | Update::Unfenced { notice, .. }
            | Update::Failed { notice, .. }
            | Update::WouldDo { notice, .. }
            | Update::OutOfService { notice }
            | Update::Recovered { notice, .. }
            | Update::DeadlineMoved { notice, .. } => notice,
        }
    }

    /// Whether a Kubernetes Event is written for it.
    pub(crate) fn makes_event(&self) -> bool {
        match self {
            Update::Detected { .. }
            | Update::DrainStarted { .. }
            | Update::DrainFinished { .. } => true,
            Update::Fenced { changed, .. } | Update::Unfenced { changed, .. } => *changed,
            Update::Drain { progress, .. } => matches!(
                progress,
                Progress::Evicted { .. }
                    | Progress::Warning { .. }
                    | Progress::InvalidChoice { .. }
                    | Progress::DeletedAtDeadline { .. }
                    | Progress::LoadBalancers { .. }
                    | Progress::Reserved { .. }
                    | Progress::Surge { warning: true, .. }
            ),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(progress: Progress) -> Update {
        Update::Drain {
            notice: Notice::spot_interruption(
                "i-1",
                "n1",
                jiff::Timestamp::now(),
                jiff::Timestamp::now(),
                sih_core::Source::Agent,
            ),
            progress,
        }
    }

    /// What the Events reporter writes on the node is queued for it: a surge not made and the
    /// capacity reserved were once written by `kube_events` but never queued.
    #[test]
    fn every_progress_the_events_reporter_writes_is_queued_for_it() {
        for p in [
            Progress::Reserved {
                what: "2 placeholder(s)".into(),
                warning: false,
            },
            Progress::Surge {
                workload: "default/web".into(),
                what: "not surged".into(),
                warning: true,
            },
            Progress::LoadBalancers {
                what: "draining".into(),
                warning: false,
            },
        ] {
            assert!(drain(p.clone()).makes_event(), "{p:?}");
        }
        // A surge made is said by its pods' own evictions.
        assert!(
            !drain(Progress::Surge {
                workload: "default/web".into(),
                what: "raised".into(),
                warning: false,
            })
            .makes_event()
        );
    }
}

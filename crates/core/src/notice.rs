//! The one `Notice` type every source produces, and what each kind of notice implies.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoticeKind {
    SpotInterruption,
    RebalanceRecommendation,
    ScheduledMaintenance,
    AsgTermination,
    AsgLaunch,
    InstanceStateChange,
}

impl NoticeKind {
    pub const ALL: [NoticeKind; 6] = [
        Self::SpotInterruption,
        Self::RebalanceRecommendation,
        Self::ScheduledMaintenance,
        Self::AsgTermination,
        Self::AsgLaunch,
        Self::InstanceStateChange,
    ];

    /// The name in flags, taint keys and logs: `spot-interruption`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SpotInterruption => "spot-interruption",
            Self::RebalanceRecommendation => "rebalance-recommendation",
            Self::ScheduledMaintenance => "scheduled-maintenance",
            Self::AsgTermination => "asg-termination",
            Self::AsgLaunch => "asg-launch",
            Self::InstanceStateChange => "instance-state-change",
        }
    }

    /// The Kubernetes Event reason: `SpotInterruption`.
    pub fn event_reason(self) -> &'static str {
        match self {
            Self::SpotInterruption => "SpotInterruption",
            Self::RebalanceRecommendation => "RebalanceRecommendation",
            Self::ScheduledMaintenance => "ScheduledMaintenance",
            Self::AsgTermination => "AsgTermination",
            Self::AsgLaunch => "AsgLaunch",
            Self::InstanceStateChange => "InstanceStateChange",
        }
    }

    /// The taint key this kind of notice puts on the node.
    pub fn taint_key(self) -> String {
        format!("spot-interrupt-handler/{}", self.as_str())
    }

    /// A rebalance recommendation only asks new pods to go elsewhere if they can.
    pub fn default_taint_effect(self) -> &'static str {
        match self {
            Self::RebalanceRecommendation => "PreferNoSchedule",
            _ => "NoSchedule",
        }
    }

    /// Whether the instance is gone at the deadline whatever we do: then a pod that a budget
    /// still protects is better deleted with some grace than killed with none.
    pub fn deadline_is_hard(self) -> bool {
        matches!(self, Self::SpotInterruption | Self::InstanceStateChange)
    }
}

impl std::fmt::Display for NoticeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for NoticeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown notice kind {s:?}"))
    }
}

/// A warning that a node's instance will be interrupted, from any source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub kind: NoticeKind,
    /// Stable for the same underlying event, so seeing it twice changes nothing.
    pub id: String,
    pub instance_id: Option<String>,
    pub node: String,
    pub detected: Timestamp,
    /// When the instance will be stopped or terminated, when known.
    pub deadline: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_reasons_and_taints() {
        for kind in NoticeKind::ALL {
            assert_eq!(kind.as_str().parse::<NoticeKind>(), Ok(kind));
            assert!(kind.taint_key().starts_with("spot-interrupt-handler/"));
        }
        assert_eq!(
            NoticeKind::SpotInterruption.event_reason(),
            "SpotInterruption"
        );
        assert_eq!(
            NoticeKind::RebalanceRecommendation.default_taint_effect(),
            "PreferNoSchedule"
        );
        assert_eq!(
            NoticeKind::ScheduledMaintenance.default_taint_effect(),
            "NoSchedule"
        );
        assert!(NoticeKind::SpotInterruption.deadline_is_hard());
        assert!(!NoticeKind::ScheduledMaintenance.deadline_is_hard());
        assert!("spot".parse::<NoticeKind>().is_err());
    }
}

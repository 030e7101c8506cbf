//! The one decision "what do we do about this notice?": a pure function of the notice's kind and
//! the configured per-kind actions.

use serde::{Deserialize, Serialize};

use crate::NoticeKind;

/// What may be done about a notice; each includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    None,
    Notify,
    Taint,
    Cordon,
    Drain,
}

impl Action {
    pub fn includes(self, other: Action) -> bool {
        self >= other
    }

    /// As it is written in flags, logs and messages: `drain`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Notify => "notify",
            Self::Taint => "taint",
            Self::Cordon => "cordon",
            Self::Drain => "drain",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "notify" => Ok(Self::Notify),
            "taint" => Ok(Self::Taint),
            "cordon" => Ok(Self::Cordon),
            "drain" => Ok(Self::Drain),
            other => Err(format!(
                "unknown action {other:?}: one of none, notify, taint, cordon, drain"
            )),
        }
    }
}

/// Per-kind actions (`--spot-interruption-action` and friends), with product.md's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionPolicy {
    pub spot_interruption: Action,
    pub rebalance: Action,
    pub scheduled_maintenance: Action,
    pub asg_termination: Action,
    pub state_change: Action,
    /// A pause or move of a running instance (GCE live migration, Azure `Freeze`).
    pub live_migration: Action,
    /// NTH's `CORDON_ONLY`: nothing beyond a cordon, whatever the kind.
    pub cap: Option<Action>,
}

impl Default for ActionPolicy {
    fn default() -> Self {
        Self {
            spot_interruption: Action::Drain,
            rebalance: Action::Taint,
            scheduled_maintenance: Action::Drain,
            asg_termination: Action::Drain,
            state_change: Action::Drain,
            live_migration: Action::Notify,
            cap: None,
        }
    }
}

impl ActionPolicy {
    /// What to do about a notice of `kind`. A launch notice needs no node action (its lifecycle
    /// hook is completed once the node is Ready).
    pub fn action_for(&self, kind: NoticeKind) -> Action {
        let wanted = match kind {
            NoticeKind::SpotInterruption => self.spot_interruption,
            NoticeKind::RebalanceRecommendation => self.rebalance,
            NoticeKind::ScheduledMaintenance => self.scheduled_maintenance,
            NoticeKind::AsgTermination => self.asg_termination,
            NoticeKind::InstanceStateChange => self.state_change,
            NoticeKind::LiveMigration => self.live_migration,
            NoticeKind::AsgLaunch => Action::None,
        };
        self.cap.map_or(wanted, |cap| wanted.min(cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_product_contract() {
        let p = ActionPolicy::default();
        assert_eq!(p.action_for(NoticeKind::SpotInterruption), Action::Drain);
        assert_eq!(
            p.action_for(NoticeKind::RebalanceRecommendation),
            Action::Taint
        );
        assert_eq!(
            p.action_for(NoticeKind::ScheduledMaintenance),
            Action::Drain
        );
        assert_eq!(p.action_for(NoticeKind::AsgTermination), Action::Drain);
        assert_eq!(p.action_for(NoticeKind::InstanceStateChange), Action::Drain);
        assert_eq!(p.action_for(NoticeKind::AsgLaunch), Action::None);
        assert_eq!(p.action_for(NoticeKind::LiveMigration), Action::Notify);
    }

    #[test]
    fn actions_are_ordered_and_the_cap_limits_them() {
        assert!(
            Action::Drain.includes(Action::Cordon)
                && Action::Cordon.includes(Action::Taint)
                && Action::Taint.includes(Action::Notify)
        );
        assert!(!Action::Taint.includes(Action::Cordon));
        let cordon_only = ActionPolicy {
            cap: Some(Action::Cordon),
            ..ActionPolicy::default()
        };
        assert_eq!(
            cordon_only.action_for(NoticeKind::SpotInterruption),
            Action::Cordon
        );
        assert_eq!(
            cordon_only.action_for(NoticeKind::RebalanceRecommendation),
            Action::Taint
        );
        assert_eq!("drain".parse::<Action>(), Ok(Action::Drain));
        assert!("evict".parse::<Action>().is_err());
    }
}

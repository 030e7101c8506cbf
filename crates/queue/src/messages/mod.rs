//! SQS bodies to notices: the envelope is recognised once (EventBridge, SNS-wrapped or raw
//! Auto Scaling), then routed by (`source`, `detail-type`) to one parser per message kind, as
//! Karpenter does. Pure: no AWS, no clock.
//!
//! Three outcomes, each telling the consumer what to do with the message:
//! - `Parsed::Act`: notices to act on (delete the message once their action is done);
//! - `Parsed::Ignore`: a well-formed message we deliberately do nothing about (a test
//!   notification, a state we do not act on, a kind we do not know): delete it;
//! - `Err(Malformed)`: a body that can never succeed: log, count, delete.

mod envelope;
mod health;
mod lifecycle;
mod spot;
mod state_change;

use jiff::Timestamp;
use serde_json::Value;
use sih_core::{Notice, NoticeKind};

pub use envelope::Envelope;

/// An Auto Scaling lifecycle action to complete once the node is dealt with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleAction {
    pub group: String,
    pub hook: String,
    pub token: String,
    pub transition: Transition,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Launching,
    Terminating,
}

/// One notice from the queue, before its instance is resolved to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueNotice {
    pub kind: NoticeKind,
    /// Stable across redeliveries and replicas: the same event always gives the same id.
    pub id: String,
    pub instance_id: String,
    /// When the event was emitted (EventBridge `time`, or the ASG message's `Time`).
    pub event_time: Timestamp,
    pub deadline: Option<Timestamp>,
    pub lifecycle: Option<LifecycleAction>,
}

impl QueueNotice {
    /// From a notice built by its kind's constructor in `sih_core` (which makes its id, the
    /// same one the IMDS agent makes for the same event), before its node is known.
    pub(crate) fn of(
        notice: Notice,
        event_time: Timestamp,
        lifecycle: Option<LifecycleAction>,
    ) -> Self {
        Self {
            kind: notice.kind,
            id: notice.id,
            instance_id: notice.instance_id.unwrap_or_default(),
            event_time,
            deadline: notice.deadline,
            lifecycle,
        }
    }

    /// The notice for the node the instance runs as, detected now.
    pub fn into_notice(self, node: &str, detected: Timestamp) -> Notice {
        Notice {
            kind: self.kind,
            id: self.id,
            instance_id: Some(self.instance_id),
            node: node.to_owned(),
            detected,
            deadline: self.deadline,
            source: sih_core::Source::Queue,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Act(Vec<QueueNotice>),
    Ignore(String),
}

/// A body that can never be acted on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("not an EventBridge event, an SNS notification or an Auto Scaling message")]
    Unrecognized,
    #[error("{kind}: missing field {field}")]
    Missing {
        kind: &'static str,
        field: &'static str,
    },
    #[error("{kind}: field {field} has an invalid value {value:?}")]
    Invalid {
        kind: &'static str,
        field: &'static str,
        value: String,
    },
}

impl Malformed {
    /// A bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotJson(_) => "not_json",
            Self::Unrecognized => "unrecognized",
            Self::Missing { .. } => "missing_field",
            Self::Invalid { .. } => "invalid_value",
        }
    }
}

/// A string field of `v` (`a.b` walks objects), or `Missing`.
pub(crate) fn text<'a>(
    v: &'a Value,
    path: &'static str,
    kind: &'static str,
) -> Result<&'a str, Malformed> {
    path.split('.')
        .try_fold(v, |v, key| v.get(key))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(Malformed::Missing { kind, field: path })
}

pub(crate) fn rfc3339(
    s: &str,
    kind: &'static str,
    field: &'static str,
) -> Result<Timestamp, Malformed> {
    s.parse().map_err(|_| Malformed::Invalid {
        kind,
        field,
        value: s.to_owned(),
    })
}

/// Parses one SQS message body.
pub fn parse(body: &str) -> Result<Parsed, Malformed> {
    let v: Value = serde_json::from_str(body).map_err(|e| Malformed::NotJson(e.to_string()))?;
    match Envelope::of(v)? {
        Envelope::EventBridge {
            source,
            detail_type,
            event,
        } => match (source.as_str(), detail_type.as_str()) {
            ("aws.ec2", "EC2 Spot Instance Interruption Warning") => spot::interruption(&event),
            ("aws.ec2", "EC2 Instance Rebalance Recommendation") => spot::rebalance(&event),
            ("aws.ec2", "EC2 Instance State-change Notification") => state_change::parse(&event),
            ("aws.autoscaling", "EC2 Instance-terminate Lifecycle Action")
            | ("aws.autoscaling", "EC2 Instance-launch Lifecycle Action") => {
                lifecycle::eventbridge(&event)
            }
            ("aws.health", "AWS Health Event") => health::parse(&event),
            // A kind AWS may add tomorrow is not an error: nothing to do, delete it.
            (s, d) => Ok(Parsed::Ignore(format!(
                "{s} / {d:?} is not a kind we act on"
            ))),
        },
        Envelope::AutoScaling(msg) => lifecycle::direct(&msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Copies of ../shared/spec/events (the product contract's samples), so a clean clone has them.
    const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/samples");

    fn sample(name: &str) -> String {
        std::fs::read_to_string(format!("{SAMPLES}/{name}"))
            .unwrap_or_else(|e| panic!("sample {name}: {e}"))
    }

    fn act(name: &str) -> Vec<QueueNotice> {
        match parse(&sample(name)) {
            Ok(Parsed::Act(n)) => n,
            other => panic!("{name}: {other:?}"),
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn spot_interruption_warning_has_its_deadline_two_minutes_after_the_event() {
        let n = act("spot-interruption-warning.json");
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].kind, NoticeKind::SpotInterruption);
        assert_eq!(n[0].instance_id, "i-0123456789abcdef0");
        assert_eq!(n[0].event_time, ts("2026-05-01T12:00:00Z"));
        assert_eq!(n[0].deadline, Some(ts("2026-05-01T12:02:00Z")));
        assert_eq!(
            n[0].id,
            sih_core::Notice::spot_interruption(
                "i-0123456789abcdef0",
                "",
                ts("2026-05-01T12:00:03Z"),
                ts("2026-05-01T12:02:00Z"),
                sih_core::Source::Agent
            )
            .id,
            "the id the IMDS agent gives the same interruption"
        );
        assert_eq!(n[0].lifecycle, None);
        let notice = n[0]
            .clone()
            .into_notice("ip-10-0-0-1.ec2.internal", ts("2026-05-01T12:00:03Z"));
        assert_eq!(notice.node, "ip-10-0-0-1.ec2.internal");
        assert_eq!(notice.instance_id.as_deref(), Some("i-0123456789abcdef0"));
    }

    #[test]
    fn rebalance_recommendation_has_no_deadline() {
        let n = act("rebalance-recommendation.json");
        assert_eq!(
            (n[0].kind, n[0].deadline),
            (NoticeKind::RebalanceRecommendation, None)
        );
        assert_eq!(n[0].instance_id, "i-0123456789abcdef0");
    }

    #[test]
    fn state_change_acts_on_exact_states_only() {
        let n = act("instance-state-change.json");
        assert_eq!(n[0].kind, NoticeKind::InstanceStateChange);
        assert_eq!(
            n[0].deadline,
            Some(ts("2026-05-01T12:02:00Z")),
            "the instance goes now"
        );
        let body = sample("instance-state-change.json");
        for (state, acted) in [
            ("stopping", true),
            ("stopped", true),
            ("terminated", true),
            ("running", false),
            ("pending", false),
            ("stop", false),
            ("", false),
        ] {
            let b = body.replace("\"shutting-down\"", &format!("{state:?}"));
            let got = parse(&b).unwrap();
            assert_eq!(matches!(got, Parsed::Act(_)), acted, "{state:?}: {got:?}");
        }
    }

    #[test]
    fn lifecycle_actions_from_eventbridge_sns_and_direct() {
        let direct = act("asg-terminate-lifecycle-direct.json");
        let via_sns = act("asg-terminate-lifecycle-via-sns.json");
        assert_eq!(direct, via_sns, "SNS only wraps the same message");
        let d = &direct[0];
        assert_eq!(d.kind, NoticeKind::AsgTermination);
        assert_eq!(d.instance_id, "i-0123456789abcdef0");
        assert_eq!(
            d.lifecycle,
            Some(LifecycleAction {
                group: "spot-workers".into(),
                hook: "drain-before-terminate".into(),
                token: "5f0e7c2a-0000-4000-8000-0000000000cc".into(),
                transition: Transition::Terminating,
            })
        );
        assert_eq!(d.event_time, ts("2026-05-01T12:00:00.123Z"));
        let eb = act("asg-terminate-lifecycle-eventbridge.json");
        assert_eq!(eb[0].kind, NoticeKind::AsgTermination);
        assert_eq!(
            eb[0].lifecycle.as_ref().unwrap().token,
            "5f0e7c2a-0000-4000-8000-0000000000aa"
        );
        let launch = act("asg-launch-lifecycle-eventbridge.json");
        assert_eq!(launch[0].kind, NoticeKind::AsgLaunch);
        assert_eq!(launch[0].instance_id, "i-0fedcba9876543210");
        assert_eq!(
            launch[0].lifecycle.as_ref().unwrap().transition,
            Transition::Launching
        );
        assert_eq!(
            launch[0].lifecycle.as_ref().unwrap().hook,
            "wait-until-ready"
        );
    }

    #[test]
    fn test_notification_is_ignored() {
        assert!(matches!(
            parse(&sample("asg-test-notification.json")),
            Ok(Parsed::Ignore(_))
        ));
    }

    #[test]
    fn a_health_event_names_every_instance() {
        let n = act("aws-health-scheduled-change.json");
        let ids: Vec<&str> = n.iter().map(|n| n.instance_id.as_str()).collect();
        assert_eq!(ids, ["i-0123456789abcdef0", "i-0aaaaaaaaaaaaaaa1"]);
        for x in &n {
            assert_eq!(x.kind, NoticeKind::ScheduledMaintenance);
            assert_eq!(x.deadline, Some(ts("2026-05-15T10:00:00Z")));
            assert!(
                x.id.starts_with("a4f1b2c3d4e5f60718293a4b5c6d7e8f-1-"),
                "{}",
                x.id
            );
        }
        assert_ne!(n[0].id, n[1].id);
        let other =
            sample("aws-health-scheduled-change.json").replace("\"scheduledChange\"", "\"issue\"");
        assert!(matches!(parse(&other), Ok(Parsed::Ignore(_))));
        let rds = sample("aws-health-scheduled-change.json")
            .replace("\"service\":\"EC2\"", "\"service\":\"RDS\"");
        assert!(matches!(parse(&rds), Ok(Parsed::Ignore(_))));
    }

    #[test]
    fn a_closed_or_ended_health_event_is_ignored_and_a_started_one_has_no_deadline() {
        let base = sample("aws-health-scheduled-change.json");
        let closed = base.replace("\"statusCode\":\"upcoming\"", "\"statusCode\":\"closed\"");
        assert!(
            matches!(parse(&closed), Ok(Parsed::Ignore(ref why)) if why.contains("closed")),
            "{:?}",
            parse(&closed)
        );
        let ended = base.replace(
            "\"endTime\":\"Fri, 15 May 2026 12:00:00 GMT\"",
            "\"endTime\":\"Thu, 30 Apr 2026 12:00:00 GMT\"",
        );
        assert!(matches!(parse(&ended), Ok(Parsed::Ignore(_))));
        let started = base
            .replace("\"statusCode\":\"upcoming\"", "\"statusCode\":\"open\"")
            .replace(
                "\"startTime\":\"Fri, 15 May 2026 10:00:00 GMT\"",
                "\"startTime\":\"Thu, 30 Apr 2026 10:00:00 GMT\"",
            );
        let Ok(Parsed::Act(n)) = parse(&started) else {
            panic!("{:?}", parse(&started))
        };
        assert!(n.iter().all(|x| x.deadline.is_none()), "{n:?}");
        // A field needed only to tell the event is over, unreadable: the event stands.
        let odd_status = base.replace("\"statusCode\":\"upcoming\"", "\"statusCode\":7");
        assert!(
            matches!(parse(&odd_status), Ok(Parsed::Act(_))),
            "{:?}",
            parse(&odd_status)
        );
        let odd_end = base.replace(
            "\"endTime\":\"Fri, 15 May 2026 12:00:00 GMT\"",
            "\"endTime\":\"later\"",
        );
        assert!(
            matches!(parse(&odd_end), Ok(Parsed::Act(_))),
            "{:?}",
            parse(&odd_end)
        );
    }

    /// AWS's own documented example (the one NTH's end-to-end suite sends) says "Sat, 05 Jun
    /// 2016", a Sunday: read by its date, never dropped as malformed.
    #[test]
    fn a_health_time_whose_weekday_disagrees_is_read_by_its_date() {
        let base = sample("aws-health-scheduled-change.json");
        let sunday = base.replace(
            "\"startTime\":\"Fri, 15 May 2026 10:00:00 GMT\"",
            "\"startTime\":\"Sat, 17 May 2026 10:00:00 GMT\"",
        );
        let Ok(Parsed::Act(n)) = parse(&sunday) else {
            panic!("{:?}", parse(&sunday))
        };
        assert!(
            n.iter()
                .all(|x| x.deadline == Some(ts("2026-05-17T10:00:00Z"))),
            "{n:?}"
        );
        let nonsense = base.replace(
            "\"startTime\":\"Fri, 15 May 2026 10:00:00 GMT\"",
            "\"startTime\":\"Sat, 99 May 2026 10:00:00 GMT\"",
        );
        assert!(parse(&nonsense).is_err());
    }

    #[test]
    fn a_null_source_or_entities_that_are_no_list_are_malformed_not_ignored() {
        let base = sample("aws-health-scheduled-change.json");
        let no_source = base.replace("\"source\":\"aws.health\"", "\"source\":null");
        assert!(
            matches!(
                parse(&no_source),
                Err(Malformed::Invalid {
                    field: "source",
                    ..
                })
            ),
            "{:?}",
            parse(&no_source)
        );
        let v: Value = serde_json::from_str(&base).unwrap();
        let mut v2 = v.clone();
        v2["detail"]["affectedEntities"] = Value::String("i-0123456789abcdef0".into());
        let got = parse(&v2.to_string());
        assert!(
            matches!(
                got,
                Err(Malformed::Invalid {
                    field: "detail.affectedEntities",
                    ..
                })
            ),
            "{got:?}"
        );
        let mut v3 = v;
        v3.as_object_mut().unwrap().remove("source");
        assert!(parse(&v3.to_string()).is_err());
    }

    #[test]
    fn the_same_event_always_gives_the_same_id() {
        for name in [
            "spot-interruption-warning.json",
            "rebalance-recommendation.json",
            "instance-state-change.json",
            "asg-terminate-lifecycle-eventbridge.json",
            "aws-health-scheduled-change.json",
        ] {
            assert_eq!(act(name), act(name), "{name}");
        }
    }

    #[test]
    fn every_malformed_example_is_handled_without_a_crash() {
        let bodies: Vec<String> = serde_json::from_str(&sample("malformed-examples.json")).unwrap();
        let outcomes: Vec<String> = bodies
            .iter()
            .map(|b| match parse(b) {
                Ok(Parsed::Act(n)) => panic!("{b:?} produced notices {n:?}"),
                Ok(Parsed::Ignore(why)) => format!("ignored: {why}"),
                Err(e) => format!("malformed ({}): {e}", e.reason()),
            })
            .collect();
        assert_eq!(outcomes.len(), 8);
        assert!(
            outcomes[0].starts_with("malformed (not_json)"),
            "{outcomes:?}"
        );
        assert!(
            outcomes[1].starts_with("malformed (not_json)"),
            "{outcomes:?}"
        );
        assert!(
            outcomes[2].starts_with("malformed (unrecognized)"),
            "{outcomes:?}"
        );
        assert!(outcomes[3].contains("missing field"), "{outcomes:?}");
        assert!(
            outcomes[4].contains("invalid value \"yesterday\""),
            "{outcomes:?}"
        );
        assert!(outcomes[5].starts_with("ignored"), "{outcomes:?}");
        assert!(
            outcomes[6].starts_with("ignored"),
            "an empty state is not a stop: {outcomes:?}"
        );
        assert!(
            outcomes[7].starts_with("malformed (not_json)"),
            "{outcomes:?}"
        );
    }

    #[test]
    fn odd_bodies_never_panic() {
        for b in [
            "null",
            "[]",
            "42",
            "\"x\"",
            "{\"detail-type\":5}",
            "{\"Type\":\"Notification\",\"Message\":5}",
            "{\"Type\":\"Notification\",\"Message\":\"[]\"}",
            "{\"version\":\"0\",\"detail-type\":\"AWS Health Event\",\"source\":\"aws.health\",\"time\":\"2026-05-01T10:00:00Z\",\"detail\":{\"service\":\"EC2\",\"eventTypeCategory\":\"scheduledChange\",\"startTime\":\"soon\",\"affectedEntities\":[{\"entityValue\":\"i-1\"}]}}",
            "{\"LifecycleTransition\":\"autoscaling:EC2_INSTANCE_TERMINATING\"}",
            "{\"LifecycleTransition\":\"autoscaling:EC2_INSTANCE_REBOOTING\",\"EC2InstanceId\":\"i-1\",\"AutoScalingGroupName\":\"g\",\"LifecycleHookName\":\"h\",\"LifecycleActionToken\":\"t\",\"Time\":\"2026-05-01T12:00:00Z\"}",
        ] {
            let _ = parse(b);
        }
    }
}

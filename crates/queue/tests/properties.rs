//! Property tests of the queue's message parsers: any body, any mutation of a real message,
//! any wrapping gives notices, an "ignore" or a typed error, never a panic; SNS wrapping
//! changes nothing; one bad entity of an AWS Health event hides no good one.
//! `PROPTEST_CASES` sets the cases per property (256 by default).

use proptest::prelude::*;
use serde_json::{Value, json};
use sih_queue::{Parsed, parse};

const SAMPLES: [&str; 9] = [
    "asg-launch-lifecycle-eventbridge.json",
    "asg-terminate-lifecycle-direct.json",
    "asg-terminate-lifecycle-eventbridge.json",
    "asg-terminate-lifecycle-via-sns.json",
    "asg-test-notification.json",
    "aws-health-scheduled-change.json",
    "instance-state-change.json",
    "rebalance-recommendation.json",
    "spot-interruption-warning.json",
];

fn sample(name: &str) -> Value {
    let path = format!("{}/samples/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        ".{0,24}".prop_map(Value::String),
        "i-[0-9a-f]{0,17}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The paths of every value inside `v`.
fn paths(v: &Value, at: Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(at.clone());
    if let Value::Object(m) = v {
        for (k, child) in m {
            let mut next = at.clone();
            next.push(k.clone());
            paths(child, next, out);
        }
    }
}

fn replace(v: &mut Value, path: &[String], with: Option<Value>) {
    match path {
        [] => {}
        [last] => {
            if let Value::Object(m) = v {
                match with {
                    Some(w) => {
                        m.insert(last.clone(), w);
                    }
                    None => {
                        m.remove(last);
                    }
                }
            }
        }
        [head, rest @ ..] => {
            if let Some(child) = v.get_mut(head) {
                replace(child, rest, with);
            }
        }
    }
}

fn check(result: &Result<Parsed, sih_queue::Malformed>) -> Result<(), TestCaseError> {
    if let Ok(Parsed::Act(notices)) = result {
        for n in notices {
            prop_assert!(n.instance_id.starts_with("i-") || !n.instance_id.is_empty());
            prop_assert!(!n.id.is_empty());
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn no_body_makes_the_parser_panic(body in ".{0,400}") {
        let _ = parse(&body);
    }

    #[test]
    fn no_json_value_makes_the_parser_panic(v in json_value()) {
        check(&parse(&v.to_string()))?;
        // The same value inside each envelope the parser knows.
        for kind in ["EC2 Spot Instance Interruption Warning", "EC2 Instance Rebalance Recommendation",
                     "EC2 Instance State-change Notification", "AWS Health Event",
                     "EC2 Instance-terminate Lifecycle Action", "EC2 Instance-launch Lifecycle Action"] {
            let source = if kind.contains("Lifecycle") { "aws.autoscaling" } else if kind.starts_with("AWS") { "aws.health" } else { "aws.ec2" };
            let event = json!({"version": "0", "id": "x", "detail-type": kind, "source": source,
                "time": "2026-05-01T12:00:00Z", "detail": v.clone()});
            check(&parse(&event.to_string()))?;
            let sns = json!({"Type": "Notification", "Message": event.to_string()});
            check(&parse(&sns.to_string()))?;
        }
    }

    /// A real message with one field removed or replaced by anything: never a panic.
    #[test]
    fn mutated_samples_never_make_the_parser_panic(which in 0..SAMPLES.len(), pick in any::<prop::sample::Index>(), with in prop::option::of(json_value())) {
        let mut v = sample(SAMPLES[which]);
        let mut all = Vec::new();
        paths(&v, Vec::new(), &mut all);
        let path = pick.get(&all).clone();
        replace(&mut v, &path, with);
        check(&parse(&v.to_string()))?;
    }

    /// SNS wrapping is transparent: the same notices, or the same refusal.
    #[test]
    fn sns_wrapping_changes_nothing(which in 0..SAMPLES.len()) {
        let raw = sample(SAMPLES[which]).to_string();
        let wrapped = json!({"Type": "Notification", "Message": raw}).to_string();
        let (a, b) = (parse(&raw), parse(&wrapped));
        if SAMPLES[which].contains("via-sns") {
            return Ok(()); // already wrapped once
        }
        prop_assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }

    /// An AWS Health event naming good instances among junk entities acts on every good one.
    #[test]
    fn one_bad_health_entity_hides_no_good_one(good in prop::collection::btree_set("i-[0-9a-f]{8,17}", 1..6), junk in prop::collection::vec(json_value(), 0..6)) {
        let mut v = sample("aws-health-scheduled-change.json");
        let mut entities: Vec<Value> = good.iter().map(|i| json!({"entityValue": i})).collect();
        entities.extend(junk.into_iter().filter(|j| {
            // Junk that happens to look like an instance is a good entity after all.
            !j.get("entityValue").and_then(Value::as_str).is_some_and(|s| s.starts_with("i-"))
        }));
        v["detail"]["affectedEntities"] = Value::Array(entities);
        match parse(&v.to_string()) {
            Ok(Parsed::Act(notices)) => {
                let got: std::collections::BTreeSet<String> = notices.into_iter().map(|n| n.instance_id).collect();
                prop_assert_eq!(got, good);
            }
            other => prop_assert!(false, "{other:?}"),
        }
    }
}

//! Drop-in for aws-node-termination-handler: run with no subcommand, its environment variables
//! configure us with the same meaning (../shared/spec/peers.md). The translation is a pure
//! function from the environment to our command line, which clap then parses as usual (so our
//! own variables still apply beside NTH's).
//!
//! Variables whose name and meaning are the same as ours (NODE_NAME, POD_NAME, NAMESPACE,
//! INSTANCE_METADATA_URL, DRY_RUN, CORDON_ONLY, TAINT_EFFECT, ENABLE_OUT_OF_SERVICE_TAINT,
//! POD_TERMINATION_GRACE_PERIOD, METADATA_TRIES, LOG_LEVEL, WEBHOOK_URL, WEBHOOK_HEADERS,
//! WEBHOOK_TEMPLATE, WEBHOOK_TEMPLATE_FILE, WEBHOOK_PROXY, KUBERNETES_EVENTS_EXTRA_ANNOTATIONS)
//! are read by clap directly; the rest are translated here.

use std::collections::HashMap;

pub struct Translated {
    pub args: Vec<String>,
    /// Where our behaviour deliberately differs, said once at start.
    pub notes: Vec<String>,
}

/// Variables whose presence says "configured the NTH way".
const MARKERS: &[&str] = &[
    "NODE_NAME",
    "ENABLE_SQS_TERMINATION_DRAINING",
    "ENABLE_SPOT_INTERRUPTION_DRAINING",
    "ENABLE_SCHEDULED_EVENT_DRAINING",
    "ENABLE_REBALANCE_MONITORING",
    "ENABLE_REBALANCE_DRAINING",
    "QUEUE_URL",
];

pub fn configured(env: &HashMap<String, String>) -> bool {
    MARKERS.iter().any(|k| env.contains_key(*k))
}

/// NTH parses booleans with Go's strconv.ParseBool.
fn flag(env: &HashMap<String, String>, key: &str, default: bool) -> anyhow::Result<bool> {
    match env.get(key).map(|v| v.trim()) {
        None | Some("") => Ok(default),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some(other) => anyhow::bail!("{key}={other:?} is not a boolean (true or false)"),
    }
}

fn seconds(env: &HashMap<String, String>, key: &str) -> anyhow::Result<Option<i64>> {
    match env.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| anyhow::anyhow!("{key}={v:?} is not a whole number of seconds")),
    }
}

fn port(env: &HashMap<String, String>, key: &str, default: u16) -> anyhow::Result<u16> {
    match env.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{key}={v:?} is not a port number")),
    }
}

/// NTH's environment as our flags. Longer than a function should be, on purpose: one entry per
/// NTH variable, read best as one table.
pub fn translate(env: &HashMap<String, String>) -> anyhow::Result<Translated> {
    let mut args: Vec<String> = vec!["spot-interrupt-handler".into()];
    let mut notes = Vec::new();
    let mut push = |a: &str, v: String| {
        args.push(a.to_owned());
        args.push(v);
    };
    if flag(env, "JSON_LOGGING", false)? {
        push("--log-format", "json".into());
    }
    let queue = flag(env, "ENABLE_SQS_TERMINATION_DRAINING", false)?;
    let mut cmd: Vec<String> = vec![if queue { "queue" } else { "imds" }.into()];
    // `--flag=value`: switches take their value only that way.
    let mut opt = |a: &str, v: String| cmd.push(format!("{a}={v}"));
    let on_off = |on: bool, action: &str| if on { action.to_owned() } else { "none".into() };
    opt(
        "--spot-interruption-action",
        on_off(
            flag(env, "ENABLE_SPOT_INTERRUPTION_DRAINING", true)?,
            "drain",
        ),
    );
    opt(
        "--scheduled-maintenance-action",
        on_off(flag(env, "ENABLE_SCHEDULED_EVENT_DRAINING", true)?, "drain"),
    );
    let rebalance = if flag(env, "ENABLE_REBALANCE_DRAINING", false)? {
        "drain"
    } else if flag(env, "ENABLE_REBALANCE_MONITORING", false)? {
        "cordon"
    } else {
        "none"
    };
    opt("--rebalance-action", rebalance.into());
    opt(
        "--asg-termination-action",
        on_off(flag(env, "ENABLE_ASG_LIFECYCLE_DRAINING", false)?, "drain"),
    );
    // NTH's name for the endpoint; QUEUE_URL, AWS_REGION and WORKERS are read as they are.
    if let Some(e) = env.get("AWS_ENDPOINT").filter(|e| !e.is_empty()) {
        if !queue {
            notes.push("AWS_ENDPOINT is only used in queue mode".into());
        } else {
            opt("--aws-endpoint", e.clone());
        }
    }
    // NTH's name for the uptime source (a reboot is told by it); ours reads UPTIME_FILE too.
    if let Some(path) = env.get("UPTIME_FROM_FILE").filter(|p| !p.trim().is_empty()) {
        if queue {
            notes.push("UPTIME_FROM_FILE is only used in IMDS mode".into());
        } else {
            opt("--uptime-file", path.trim().to_owned());
        }
    }
    if queue {
        // Whole seconds there, -1 for off.
        if let Some(s) = seconds(env, "HEARTBEAT_INTERVAL")?.filter(|s| *s > 0) {
            opt("--heartbeat-interval", format!("{s}s"));
        }
        if let Some(s) = seconds(env, "COMPLETE_LIFECYCLE_ACTION_DELAY_SECONDS")?.filter(|s| *s > 0)
        {
            opt("--complete-lifecycle-action-delay", format!("{s}s"));
        }
        if let Some(s) = seconds(env, "SQS_MSG_VISIBILITY_TIMEOUT_SEC")?.filter(|s| *s > 0) {
            opt("--visibility-timeout", format!("{s}s"));
        }
        if let Some(s) = seconds(env, "HEARTBEAT_UNTIL")?.filter(|s| *s > 0) {
            opt("--heartbeat-until", format!("{s}s"));
        }
        // NTH checks its managed tag unless told not to; we only when asked (a frequent
        // surprise there): an explicit CHECK_TAG_BEFORE_DRAINING=true or a MANAGED_TAG.
        let tag = env.get("MANAGED_TAG").filter(|t| !t.trim().is_empty());
        let check = match env.get("CHECK_TAG_BEFORE_DRAINING").map(|v| v.trim()) {
            None | Some("") => tag.is_some(),
            Some(_) => flag(env, "CHECK_TAG_BEFORE_DRAINING", false)?,
        };
        if check {
            opt(
                "--managed-tag",
                tag.map(|t| t.trim().to_owned())
                    .unwrap_or_else(|| "aws-node-termination-handler/managed".into()),
            );
        } else if env.get("CHECK_TAG_BEFORE_DRAINING").is_none() {
            notes.push(
                "instances are acted on whether or not they carry NTH's managed tag \
                 (set CHECK_TAG_BEFORE_DRAINING=true or MANAGED_TAG to filter)"
                    .into(),
            );
        }
    }
    // Templates written for NTH read its fields with its meaning.
    opt("--webhook-nth-fields", "true".into());
    if let Some(s) = seconds(env, "NODE_TERMINATION_GRACE_PERIOD")? {
        opt("--drain-budget", format!("{}s", s.max(1)));
    }
    opt(
        "--kubernetes-events",
        flag(env, "EMIT_KUBERNETES_EVENTS", false)?.to_string(),
    );
    // NTH serves metrics and probes on two ports, each off unless enabled.
    let metrics_port = port(env, "PROMETHEUS_SERVER_PORT", 9092)?;
    let metrics_host = if flag(env, "ENABLE_PROMETHEUS_SERVER", false)? {
        "0.0.0.0"
    } else {
        "127.0.0.1"
    };
    opt("--admin-listen", format!("{metrics_host}:{metrics_port}"));
    if flag(env, "ENABLE_PROBES_SERVER", false)? {
        opt(
            "--probes-listen",
            format!("0.0.0.0:{}", port(env, "PROBES_SERVER_PORT", 8080)?),
        );
    }
    if !flag(env, "TAINT_NODE", true)? {
        notes.push(
            "TAINT_NODE=false is not followed: the node is always tainted, so nothing is \
             scheduled onto it between the notice and the cordon"
                .into(),
        );
    }
    if !flag(env, "EXCLUDE_FROM_LOAD_BALANCERS", true)? {
        notes.push(
            "EXCLUDE_FROM_LOAD_BALANCERS=false is not followed: a node that is going away is \
             always labelled out of external load balancers"
                .into(),
        );
    }
    if !flag(env, "IGNORE_DAEMON_SETS", true)? {
        notes.push("IGNORE_DAEMON_SETS=false is not followed: DaemonSet pods always stay".into());
    }
    if !flag(env, "DELETE_LOCAL_DATA", true)? {
        notes.push(
            "DELETE_LOCAL_DATA=false is not followed: pods with emptyDir are evicted (with a \
             warning Event), since the instance takes the data anyway"
                .into(),
        );
    }
    args.extend(cmd);
    Ok(Translated { args, notes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// `--flag value` or `--flag=value`.
    fn value_of<'a>(t: &'a Translated, flag: &str) -> Option<&'a str> {
        t.args.iter().enumerate().find_map(|(i, a)| {
            if a == flag {
                t.args.get(i + 1).map(String::as_str)
            } else {
                a.strip_prefix(flag).and_then(|v| v.strip_prefix('='))
            }
        })
    }

    #[test]
    fn nth_defaults_become_our_flags() {
        let e = env(&[("NODE_NAME", "n1")]);
        assert!(configured(&e));
        let t = translate(&e).unwrap();
        assert_eq!(value_of(&t, "--spot-interruption-action"), Some("drain"));
        assert_eq!(
            value_of(&t, "--scheduled-maintenance-action"),
            Some("drain")
        );
        assert_eq!(value_of(&t, "--rebalance-action"), Some("none"));
        assert_eq!(value_of(&t, "--asg-termination-action"), Some("none"));
        assert_eq!(value_of(&t, "--kubernetes-events"), Some("false"));
        assert_eq!(value_of(&t, "--webhook-nth-fields"), Some("true"));
        assert_eq!(value_of(&t, "--admin-listen"), Some("127.0.0.1:9092"));
        assert_eq!(value_of(&t, "--probes-listen"), None);
        assert!(t.notes.is_empty());
        assert!(t.args.contains(&"imds".to_owned()));
        assert!(!configured(&env(&[("HOME", "/root")])));
    }

    #[test]
    fn nth_switches_translate_with_their_meaning() {
        let t = translate(&env(&[
            ("NODE_NAME", "n1"),
            ("ENABLE_SPOT_INTERRUPTION_DRAINING", "false"),
            ("ENABLE_REBALANCE_MONITORING", "true"),
            ("ENABLE_ASG_LIFECYCLE_DRAINING", "1"),
            ("NODE_TERMINATION_GRACE_PERIOD", "90"),
            ("EMIT_KUBERNETES_EVENTS", "true"),
            ("ENABLE_PROMETHEUS_SERVER", "true"),
            ("PROMETHEUS_SERVER_PORT", "9999"),
            ("ENABLE_PROBES_SERVER", "true"),
            ("JSON_LOGGING", "true"),
            ("TAINT_NODE", "false"),
        ]))
        .unwrap();
        assert_eq!(value_of(&t, "--spot-interruption-action"), Some("none"));
        assert_eq!(value_of(&t, "--rebalance-action"), Some("cordon"));
        assert_eq!(value_of(&t, "--asg-termination-action"), Some("drain"));
        assert_eq!(value_of(&t, "--drain-budget"), Some("90s"));
        assert_eq!(value_of(&t, "--kubernetes-events"), Some("true"));
        assert_eq!(value_of(&t, "--admin-listen"), Some("0.0.0.0:9999"));
        assert_eq!(value_of(&t, "--probes-listen"), Some("0.0.0.0:8080"));
        assert_eq!(value_of(&t, "--log-format"), Some("json"));
        assert_eq!(t.notes.len(), 1);
        let uptime = translate(&env(&[("UPTIME_FROM_FILE", "/host/proc/uptime")])).unwrap();
        assert_eq!(
            value_of(&uptime, "--uptime-file"),
            Some("/host/proc/uptime")
        );
        let queue_uptime = translate(&env(&[
            ("ENABLE_SQS_TERMINATION_DRAINING", "true"),
            ("UPTIME_FROM_FILE", "/host/proc/uptime"),
        ]))
        .unwrap();
        assert_eq!(value_of(&queue_uptime, "--uptime-file"), None);
        assert!(
            queue_uptime
                .notes
                .iter()
                .any(|n| n.contains("UPTIME_FROM_FILE"))
        );
        let rebalance_drain = translate(&env(&[
            ("ENABLE_REBALANCE_MONITORING", "true"),
            ("ENABLE_REBALANCE_DRAINING", "true"),
        ]))
        .unwrap();
        assert_eq!(
            value_of(&rebalance_drain, "--rebalance-action"),
            Some("drain")
        );
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let e = translate(&env(&[("ENABLE_REBALANCE_DRAINING", "yes please")]));
        assert!(
            e.err()
                .unwrap()
                .to_string()
                .contains("ENABLE_REBALANCE_DRAINING")
        );
        assert!(translate(&env(&[("NODE_TERMINATION_GRACE_PERIOD", "2m")])).is_err());
        assert!(
            translate(&env(&[
                ("PROBES_SERVER_PORT", "x"),
                ("ENABLE_PROBES_SERVER", "true")
            ]))
            .is_err()
        );
        let q = translate(&env(&[
            ("ENABLE_SQS_TERMINATION_DRAINING", "true"),
            ("QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/1/q"),
            ("AWS_ENDPOINT", "http://127.0.0.1:5000"),
        ]))
        .unwrap();
        assert!(q.args.contains(&"queue".to_owned()) && !q.args.contains(&"imds".to_owned()));
        assert_eq!(
            value_of(&q, "--aws-endpoint"),
            Some("http://127.0.0.1:5000")
        );
    }

    #[test]
    fn queue_mode_managed_tag_and_heartbeats() {
        let queue = |extra: &[(&str, &str)]| {
            let mut e = env(&[
                ("ENABLE_SQS_TERMINATION_DRAINING", "true"),
                ("QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/1/q"),
            ]);
            e.extend(env(extra));
            translate(&e).unwrap()
        };
        let plain = queue(&[]);
        assert_eq!(value_of(&plain, "--managed-tag"), None, "off unless asked");
        assert_eq!(plain.notes.len(), 1, "{:?}", plain.notes);
        let nth_default = queue(&[("CHECK_TAG_BEFORE_DRAINING", "true")]);
        assert_eq!(
            value_of(&nth_default, "--managed-tag"),
            Some("aws-node-termination-handler/managed")
        );
        assert!(nth_default.notes.is_empty());
        let own = queue(&[("MANAGED_TAG", "team/spot"), ("HEARTBEAT_UNTIL", "600")]);
        assert_eq!(value_of(&own, "--managed-tag"), Some("team/spot"));
        assert_eq!(value_of(&own, "--heartbeat-until"), Some("600s"));
        let off = queue(&[
            ("MANAGED_TAG", "team/spot"),
            ("CHECK_TAG_BEFORE_DRAINING", "false"),
        ]);
        assert_eq!(value_of(&off, "--managed-tag"), None);
        assert!(
            translate(&env(&[
                ("ENABLE_SQS_TERMINATION_DRAINING", "true"),
                ("CHECK_TAG_BEFORE_DRAINING", "maybe")
            ]))
            .is_err()
        );
    }
}

#[cfg(test)]
mod properties {
    //! Any value in any of NTH's variables: a translation, or a clear error; never a panic,
    //! and a translation clap then accepts or refuses with a message.
    use super::*;
    use clap::Parser;
    use proptest::prelude::*;

    const KEYS: &[&str] = &[
        "NODE_NAME",
        "QUEUE_URL",
        "ENABLE_SQS_TERMINATION_DRAINING",
        "ENABLE_SPOT_INTERRUPTION_DRAINING",
        "ENABLE_SCHEDULED_EVENT_DRAINING",
        "ENABLE_REBALANCE_MONITORING",
        "ENABLE_REBALANCE_DRAINING",
        "ENABLE_ASG_LIFECYCLE_DRAINING",
        "NODE_TERMINATION_GRACE_PERIOD",
        "PROBES_SERVER_PORT",
        "PROMETHEUS_SERVER_PORT",
        "ENABLE_PROBES_SERVER",
        "ENABLE_PROMETHEUS_SERVER",
        "SQS_MSG_VISIBILITY_TIMEOUT_SEC",
        "HEARTBEAT_INTERVAL",
        "HEARTBEAT_UNTIL",
        "COMPLETE_LIFECYCLE_ACTION_DELAY_SECONDS",
        "CHECK_TAG_BEFORE_DRAINING",
        "MANAGED_TAG",
        "TAINT_NODE",
        "EXCLUDE_FROM_LOAD_BALANCERS",
        "JSON_LOGGING",
        "EMIT_KUBERNETES_EVENTS",
        "DELETE_LOCAL_DATA",
        "IGNORE_DAEMON_SETS",
        "AWS_ENDPOINT",
    ];

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just("true".to_owned()),
            Just("false".to_owned()),
            "[0-9]{1,6}",
            "-[0-9]{1,4}",
            ".{0,20}",
        ]
    }

    proptest! {
        #[test]
        fn no_environment_makes_the_translation_panic(
            pairs in prop::collection::vec((prop::sample::select(KEYS.to_vec()), value()), 1..12)
        ) {
            let env: HashMap<String, String> =
                pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            if let Ok(t) = translate(&env) {
                let _ = crate::cli::Cli::try_parse_from(&t.args);
            }
        }
    }
}

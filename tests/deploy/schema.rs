//! The chart refuses mistakes at render (`helm template`, `install`, `lint` alike): unknown
//! values, a flag under the other mode's section, a value a flag does not take, and every
//! aws-node-termination-handler value name (with ours), so nothing given is dropped silently
//! and no pod crash-loops on an argument its mode lacks. `values.schema.json`'s flag sections
//! are generated from the binary's own definitions and checked here;
//! `SIH_UPDATE_DOCS=1 cargo test --test deploy schema` rewrites them.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::{chart, helm_template, manifest, of_kind, rendered};

fn schema_path() -> String {
    format!("{}/values.schema.json", chart())
}

/// NTH's value names and ours, from `templates/_nth.tpl` (`name: "ours"` lines).
fn nth_names() -> BTreeMap<String, String> {
    let tpl = std::fs::read_to_string(format!("{}/templates/_nth.tpl", chart())).unwrap();
    tpl.lines()
        .filter_map(|l| {
            let (name, ours) = l.split_once(": \"")?;
            (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()))
                .then(|| (name.to_owned(), ours.trim_end_matches('"').to_owned()))
        })
        .collect()
}

/// A flag's entry: the values it takes (booleans also as YAML writes them), or any scalar.
fn flag_entry(arg: &clap::Arg) -> Value {
    let long = arg.get_long().unwrap();
    // Hidden ones too (`yes`, `on`, `1` for a boolean): what the binary accepts, no less.
    let choices: Vec<String> = arg
        .get_possible_values()
        .iter()
        .map(|v| v.get_name().to_owned())
        .collect();
    if choices.is_empty() {
        return json!({"description": format!("--{long}"),
            "type": ["null", "string", "integer", "number", "boolean"]});
    }
    let mut allowed = vec![Value::Null];
    for c in choices {
        match c.as_str() {
            "true" => allowed.push(json!(true)),
            "false" => allowed.push(json!(false)),
            _ => {}
        }
        allowed.push(json!(c));
    }
    json!({"description": format!("--{long}"), "enum": allowed})
}

/// The schema as it should be: the file's, with its flag sections made from the binary's
/// flags of each section in values.yaml and its NTH names from `_nth.tpl`.
fn expected_schema(current: &Value) -> Value {
    use clap::CommandFactory;
    use spot_interrupt_handler::cli::Cli;
    let cli = Cli::command();
    let values: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(format!("{}/values.yaml", chart())).unwrap(),
    )
    .unwrap();
    let section = |values: &Value, mode: &str| -> Value {
        let cmd = cli.find_subcommand(mode).unwrap();
        let props: serde_json::Map<String, Value> = values
            .as_object()
            .unwrap()
            .keys()
            .map(|k| {
                let arg = cmd
                    .get_arguments()
                    .chain(cli.get_arguments())
                    .find(|a| a.get_long() == Some(k.as_str()))
                    .unwrap_or_else(|| panic!("values.yaml: {k} is not a flag of {mode}"));
                (k.clone(), flag_entry(arg))
            })
            .collect();
        Value::Object(props)
    };
    let mut s = current.clone();
    let secrets = |mut section: Value| -> Value {
        for flag in ["webhook-url", "webhook-headers", "webhook-proxy"] {
            section[flag] = json!({"description": SECRET_DESCRIPTION});
        }
        section
    };
    s["properties"]["flags"]["properties"] = secrets(section(&values["flags"], "imds"));
    s["properties"]["imds"]["properties"]["flags"]["properties"] =
        secrets(section(&values["imds"]["flags"], "imds"));
    s["properties"]["queue"]["properties"]["flags"]["properties"] =
        secrets(section(&values["queue"]["flags"], "queue"));
    let props = s["properties"].as_object_mut().unwrap();
    props.retain(|_, v| !v["description"].as_str().is_some_and(is_nth_description));
    for name in nth_names().keys() {
        assert!(!props.contains_key(name), "{name} is both NTH's and ours");
        props.insert(name.clone(), json!({"description": NTH_DESCRIPTION}));
    }
    s
}

/// A webhook secret given as a flag: let through to the template, which refuses it with the
/// value to use instead (kept in a Secret).
const SECRET_DESCRIPTION: &str =
    "refused at render: set webhook.url, webhook.headers or webhook.proxy (kept in a Secret)";

const NTH_DESCRIPTION: &str =
    "aws-node-termination-handler's value: refused at render, with ours (templates/_nth.tpl)";

fn is_nth_description(d: &str) -> bool {
    d == NTH_DESCRIPTION
}

#[test]
fn the_schema_flag_sections_are_the_binarys_flags() {
    let text = std::fs::read_to_string(schema_path()).unwrap();
    let current: Value = serde_json::from_str(&text).unwrap();
    let want = expected_schema(&current);
    let written = serde_json::to_string_pretty(&want).unwrap() + "\n";
    if std::env::var_os("SIH_UPDATE_DOCS").is_some() {
        std::fs::write(schema_path(), &written).unwrap();
        return;
    }
    assert!(
        text == written,
        "values.schema.json is out of date: SIH_UPDATE_DOCS=1 cargo test --test deploy schema"
    );
    // Every section is closed, and the top level too.
    for path in [
        vec![],
        vec!["flags"],
        vec!["imds", "flags"],
        vec!["queue", "flags"],
        vec!["webhook"],
        vec!["image"],
        vec!["queue"],
    ] {
        let mut v = &current;
        for p in &path {
            v = &v["properties"][p];
        }
        assert_eq!(v["additionalProperties"], json!(false), "{path:?} is open");
    }
}

/// Each mistake an operator made in the field, refused at render with what is wrong.
#[test]
fn the_chart_refuses_unknown_values_the_other_modes_flags_and_values_no_flag_takes() {
    let queue = [
        "mode=queue",
        "queue.url=https://sqs.us-east-1.amazonaws.com/1/q",
    ];
    let cases: &[(&[&str], &str)] = &[
        (&["flags.bogus=1"], "bogus"),
        // An imds-only flag under the shared section: in queue mode it crash-looped the pod.
        (&["flags.poll-interval=1s"], "poll-interval"),
        (&["imds.flags.visibility-timeout=5s"], "visibility-timeout"),
        (&["queue.flags.poll-interval=1s"], "poll-interval"),
        (&["flags.reserve-capacity=sometimes"], "reserve-capacity"),
        (
            &["flags.spot-interruption-action=evacuate"],
            "spot-interruption-action",
        ),
        (&["flags.dry-run=maybe"], "dry-run"),
        (&["mode=kube"], "mode"),
        (&["cloud=aks"], "cloud"),
        (&["webhook.urls=https://x"], "urls"),
        (&["serviceMonitor.create=true"], "create"),
        (&["adminPort=70000"], "adminPort"),
    ];
    for (sets, says) in cases {
        let out = helm_template(sets);
        assert!(!out.ok, "{sets:?} rendered");
        assert!(out.stderr.contains(says), "{sets:?}: {}", out.stderr);
    }
    for mode_sets in [&[][..], &queue[..]] {
        // What is right still renders, booleans as YAML writes them or as strings.
        for ok in [
            "flags.reserve-capacity=annotated",
            "flags.dry-run=true",
            "flags.kubernetes-events=false",
            "flags.drain-budget=90s",
            "flags.max-concurrent-evictions=20",
        ] {
            let sets: Vec<&str> = mode_sets.iter().copied().chain([ok]).collect();
            let out = helm_template(&sets);
            assert!(out.ok, "{sets:?}: {}", out.stderr);
        }
    }
    let lint = crate::run(
        "helm",
        &["lint", &chart(), "--set", "flags.bogus=1"],
        None,
        &[],
    );
    assert!(!lint.ok, "helm lint let an unknown value through");
}

/// Every NTH value name we know is refused with ours; the names are the README table's and
/// the schema's (which lets them through to that check, so the reason is ours, not a bare
/// "additional property").
#[test]
fn nth_value_names_are_refused_with_ours() {
    let names = nth_names();
    assert!(names.len() > 50, "{names:?}");
    for (name, ours) in &names {
        let out = helm_template(&[&format!("{name}=1")]);
        assert!(!out.ok, "{name} rendered");
        assert!(
            out.stderr.contains(&format!("{name} -> {ours}")),
            "{name}: {}",
            out.stderr
        );
    }
    // Several at once are said at once.
    let out = helm_template(&["enableRebalanceMonitoring=true", "webhookURL=https://x"]);
    assert!(
        out.stderr
            .contains("enableRebalanceMonitoring -> flags.rebalance-action: cordon")
            && out.stderr.contains("webhookURL -> webhook.url"),
        "{}",
        out.stderr
    );
    // The README's table names no NTH value the chart would drop.
    let readme = std::fs::read_to_string(format!("{}/README.md", chart())).unwrap();
    let same_names = [
        "nodeSelector",
        "tolerations",
        "affinity",
        "priorityClassName",
        "resources",
        "podAnnotations",
        "podLabels",
        "serviceAccount.create/name/annotations",
        "rbac.create",
        "replicas",
        "podDisruptionBudget",
        "serviceMonitor.create",
        "podMonitor.create",
    ];
    let table = readme
        .split("## From aws-node-termination-handler's chart")
        .nth(1)
        .unwrap();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let first = row.split(" | ").next().unwrap();
        for name in first.split('`').skip(1).step_by(2) {
            let name = name.split(':').next().unwrap().trim();
            // `webhookTemplateConfigMapName`/`Key`: the second half of a name.
            if same_names.contains(&name) || name.starts_with(char::is_uppercase) {
                continue;
            }
            assert!(
                names.contains_key(name),
                "the README's table names {name}, which the chart does not refuse"
            );
        }
    }
}

/// Queue mode: a nodeSelector of spot capacity contradicts the placement off it (Pending
/// forever); the controller tolerates no lost node's NoExecute taint; both modes and both
/// manifests select Linux nodes; the image's registry is one value.
#[test]
fn placement_and_image_refuse_contradictions_and_select_linux() {
    let queue = [
        "mode=queue",
        "queue.url=https://sqs.us-east-1.amazonaws.com/1/q",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        queue
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    let sets = with(&["nodeSelector.lifecycle=Ec2Spot"]);
    let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
    let out = helm_template(&refs);
    assert!(
        !out.ok,
        "a queue Deployment that can never schedule rendered"
    );
    assert!(
        out.stderr.contains("nodeSelector lifecycle=Ec2Spot")
            && out.stderr.contains("queue.placement.offCapacity"),
        "{}",
        out.stderr
    );
    // Allowed once the placement allows that capacity; a selector of other nodes is fine.
    for extra in [
        &[
            "nodeSelector.lifecycle=Ec2Spot",
            "queue.placement.offCapacity.lifecycle=null",
        ][..],
        &["nodeSelector.pool=system"][..],
    ] {
        let sets = with(extra);
        let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
        let docs = rendered(&refs);
        let pod = &of_kind(&docs, "Deployment")[0]["spec"]["template"]["spec"];
        assert_eq!(pod["nodeSelector"]["kubernetes.io/os"], "linux");
        let tolerations = pod["tolerations"].as_array().cloned().unwrap_or_default();
        for t in &tolerations {
            assert!(
                t["key"].is_string(),
                "the controller tolerates every taint: {t}"
            );
            assert!(
                !t["key"]
                    .as_str()
                    .unwrap()
                    .starts_with("node.kubernetes.io/"),
                "{t}"
            );
        }
    }
    let docs = rendered(&["nodeSelector.lifecycle=Ec2Spot"]);
    let pod = &of_kind(&docs, "DaemonSet")[0]["spec"]["template"]["spec"];
    assert_eq!(
        pod["nodeSelector"],
        json!({"kubernetes.io/os": "linux", "lifecycle": "Ec2Spot"})
    );
    for m in [
        "spot-interrupt-handler.yaml",
        "spot-interrupt-handler-queue.yaml",
    ] {
        let docs = sih_sim_cluster::workload::parse(&std::fs::read_to_string(manifest(m)).unwrap())
            .unwrap();
        let workload = docs
            .iter()
            .find(|d| d["kind"] == "DaemonSet" || d["kind"] == "Deployment")
            .unwrap();
        let pod = &workload["spec"]["template"]["spec"];
        assert_eq!(pod["nodeSelector"]["kubernetes.io/os"], "linux", "{m}");
        if workload["kind"] == "Deployment" {
            for t in pod["tolerations"].as_array().cloned().unwrap_or_default() {
                assert!(t["key"].is_string(), "{m}: tolerates every taint: {t}");
            }
        }
    }
    // The image by mode under one registry: the agent's (no queue mode) for the DaemonSet,
    // the full one for the queue Deployment; a set repository is the mode's.
    let registry = "image.registry=123456789012.dkr.ecr.us-east-1.amazonaws.com";
    let image_of = |sets: &[&str], kind: &str| -> String {
        let docs = rendered(sets);
        of_kind(&docs, kind)[0]["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let at = "123456789012.dkr.ecr.us-east-1.amazonaws.com/";
    let image = image_of(&[registry], "DaemonSet");
    assert!(
        image.starts_with(&format!("{at}spot-interrupt-handler-agent:")),
        "{image}"
    );
    let sets = with(&[registry]);
    let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
    let image = image_of(&refs, "Deployment");
    assert!(
        image.starts_with(&format!("{at}spot-interrupt-handler:")),
        "{image}"
    );
    let image = image_of(&[registry, "image.repository=mirror/sih"], "DaemonSet");
    assert!(image.starts_with(&format!("{at}mirror/sih:")), "{image}");
    // The agent's image for the controller would stop at start: refused at render.
    let sets = with(&["image.repository=spot-interrupt-handler-agent"]);
    let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
    let out = helm_template(&refs);
    assert!(!out.ok, "queue mode on the agent's image rendered");
    assert!(
        out.stderr
            .contains("the agent's image, which has no queue mode"),
        "{}",
        out.stderr
    );
}

/// `helm install`'s NOTES say where the agents run as the chart places them: on GCE and Azure
/// that cloud's spot nodes (they gave EC2's advice), on AWS every Linux node unless a selector
/// says otherwise.
// helm is waited for on a thread of its own while the cluster serves on the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notes_say_where_the_agents_run_on_each_cloud() {
    let (_cluster, kubeconfig, _) = crate::cluster(false).await;
    let notes = |sets: &[&str]| -> String {
        let chart = chart();
        let mut args = vec!["install", "r", chart.as_str(), "--dry-run=client"];
        for s in sets {
            args.extend(["--set", s]);
        }
        let out = crate::run("helm", &args, None, &[("KUBECONFIG", &kubeconfig)]);
        assert!(out.ok, "{sets:?}: {}", out.stderr);
        out.stdout
            .split("NOTES:")
            .nth(1)
            .expect("NOTES rendered")
            .to_owned()
    };
    let gce = notes(&["cloud=gce"]);
    assert!(
        gce.contains("gce's spot nodes") && gce.contains("cloud.google.com/gke-spot"),
        "{gce}"
    );
    assert!(!gce.contains("Ec2Spot"), "{gce}");
    let azure = notes(&["cloud=azure"]);
    assert!(
        azure.contains("kubernetes.azure.com/scalesetpriority") && !azure.contains("Ec2Spot"),
        "{azure}"
    );
    let aws = notes(&[]);
    assert!(aws.contains("every Linux node"), "{aws}");
    let selected = notes(&["nodeSelector.lifecycle=Ec2Spot"]);
    assert!(
        selected.contains(r#"{"lifecycle":"Ec2Spot"}"#),
        "{selected}"
    );
}

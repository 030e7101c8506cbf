//! Packaging: the Helm chart lints and renders for both modes and a matrix of values; its
//! ClusterRole is the manifest's (whose every rule `tests/node/rbac.rs` proves needed); its
//! values cover every agent flag; and `kubectl apply` of the plain manifests and of the
//! rendered chart against `simulate cluster` (4 nodes, 2 spot) runs one agent per spot node.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use serde_json::Value;
use sih_sim_cluster::{ClusterConfig, RunningCluster, workload};

mod docs;
mod schema;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn chart() -> String {
    format!("{ROOT}/deploy/helm/spot-interrupt-handler")
}

fn manifest(name: &str) -> String {
    format!("{ROOT}/deploy/manifests/{name}")
}

fn tool(name: &str) -> String {
    std::env::var(name.to_uppercase()).unwrap_or_else(|_| name.into())
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn run(cmd: &str, args: &[&str], stdin: Option<&str>, env: &[(&str, &PathBuf)]) -> Out {
    use std::io::Write;
    let mut c = std::process::Command::new(tool(cmd));
    c.args(args)
        .env("HOME", std::env::temp_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd} is installed (./scripts/test installs it): {e}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn helm_template(sets: &[&str]) -> Out {
    helm_template_with(sets, None)
}

/// `values`: a values file's text, for values `--set` cannot spell (braces, commas).
fn helm_template_with(sets: &[&str], values: Option<&str>) -> Out {
    let chart = chart();
    let mut args = vec![
        "template",
        "r",
        chart.as_str(),
        "--namespace",
        "kube-system",
    ];
    for s in sets {
        args.push("--set");
        args.push(s);
    }
    let file = std::env::temp_dir().join(format!(
        "sih-values-{}-{}.yaml",
        std::process::id(),
        fastrand::u64(..)
    ));
    if let Some(v) = values {
        std::fs::write(&file, v).unwrap();
        args.push("-f");
        args.push(file.to_str().unwrap());
    }
    let out = run("helm", &args, None, &[]);
    let _ = std::fs::remove_file(&file);
    out
}

fn rendered(sets: &[&str]) -> Vec<Value> {
    rendered_with(sets, None)
}

fn rendered_with(sets: &[&str], values: Option<&str>) -> Vec<Value> {
    let out = helm_template_with(sets, values);
    assert!(out.ok, "helm template {sets:?}: {}", out.stderr);
    workload::parse(&out.stdout).expect("the rendered chart is valid YAML")
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn args_of(doc: &Value) -> Vec<String> {
    doc["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn helm_lint_and_template_for_both_modes_and_a_values_matrix() {
    let lint = run("helm", &["lint", &chart()], None, &[]);
    assert!(lint.ok, "{}{}", lint.stdout, lint.stderr);
    let lint = run(
        "helm",
        &[
            "lint",
            &chart(),
            "--set",
            "mode=queue",
            "--set",
            "queue.url=https://sqs.us-east-1.amazonaws.com/1/q",
        ],
        None,
        &[],
    );
    assert!(lint.ok, "{}{}", lint.stdout, lint.stderr);

    // imds: a DaemonSet on the nodes asked for, on the host network, read-only and non-root.
    let docs = rendered(&["nodeSelector.lifecycle=Ec2Spot"]);
    let ds = of_kind(&docs, "DaemonSet");
    assert_eq!(ds.len(), 1);
    assert!(of_kind(&docs, "Deployment").is_empty());
    let pod = &ds[0]["spec"]["template"]["spec"];
    assert_eq!(pod["nodeSelector"]["lifecycle"], "Ec2Spot");
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], image_uid());
    assert_eq!(
        pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
        true
    );
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(args_of(ds[0])[0], "imds");
    let env: Vec<&str> = pod["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(env, ["NODE_NAME", "POD_NAME", "NAMESPACE"]);

    // queue: a Deployment with a budget, the queue flags, no host network.
    let docs = rendered(&[
        "mode=queue",
        "queue.url=https://sqs.us-east-1.amazonaws.com/1/q",
        "queue.region=us-east-1",
        "replicas=3",
    ]);
    let dep = of_kind(&docs, "Deployment");
    assert_eq!(dep.len(), 1);
    assert_eq!(dep[0]["spec"]["replicas"], 3);
    assert!(of_kind(&docs, "DaemonSet").is_empty());
    assert_eq!(of_kind(&docs, "PodDisruptionBudget").len(), 1);
    let args = args_of(dep[0]);
    assert_eq!(args[0], "queue");
    assert!(args.contains(&"--queue-url=https://sqs.us-east-1.amazonaws.com/1/q".to_owned()));
    assert!(args.contains(&"--aws-region=us-east-1".to_owned()));
    let pod = &dep[0]["spec"]["template"]["spec"];
    assert!(pod["hostNetwork"].is_null());
    // Off spot capacity, replicas apart: a reclaim never takes both, nor the one draining.
    let off = &pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        [0]["matchExpressions"];
    assert!(
        off.as_array()
            .unwrap()
            .iter()
            .any(|e| e["key"] == "karpenter.sh/capacity-type"
                && e["operator"] == "NotIn"
                && e["values"][0] == "spot"),
        "{off}"
    );
    let apart = &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        [0]["podAffinityTerm"];
    assert_eq!(apart["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(
        pod["topologySpreadConstraints"][0]["topologyKey"],
        "topology.kubernetes.io/zone"
    );
    // An affinity of one's own replaces the default placement.
    let docs = rendered(&[
        "mode=queue",
        "queue.url=https://sqs.us-east-1.amazonaws.com/1/q",
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=pool",
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
    ]);
    let pod = &of_kind(&docs, "Deployment")[0]["spec"]["template"]["spec"];
    assert!(pod["affinity"]["podAntiAffinity"].is_null());
    assert_eq!(
        pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0]["matchExpressions"][0]["key"],
        "pool"
    );
    // imds mode places nothing by default: the agents go where nodeSelector says.
    assert!(
        rendered(&[])
            .iter()
            .filter(|d| d["kind"] == "DaemonSet")
            .all(|d| d["spec"]["template"]["spec"]["affinity"].is_null())
    );

    // Monitoring, IRSA, a webhook URL from a Secret and a template in a ConfigMap, flags.
    let docs = rendered_with(
        &[
            "serviceMonitor.enabled=true",
            "podMonitor.enabled=true",
            "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::1:role/sih",
            "webhook.secretName=slack",
            "flags.dry-run=true",
            "imds.flags.poll-interval=500ms",
            "clusterName=prod",
        ],
        Some("webhook:\n  template: '{\"text\":\"{{ .Kind }}\"}'\n"),
    );
    assert_eq!(of_kind(&docs, "ServiceMonitor").len(), 1);
    assert_eq!(of_kind(&docs, "PodMonitor").len(), 1);
    let sa = of_kind(&docs, "ServiceAccount");
    assert_eq!(
        sa[0]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::1:role/sih"
    );
    let cm = of_kind(&docs, "ConfigMap");
    assert_eq!(cm[0]["data"]["template"], "{\"text\":\"{{ .Kind }}\"}");
    let ds = of_kind(&docs, "DaemonSet");
    let args = args_of(ds[0]);
    for a in [
        "--dry-run=true",
        "--poll-interval=500ms",
        "--cluster-name=prod",
        "--webhook-template-file=/etc/spot-interrupt-handler/webhook/template",
    ] {
        assert!(args.contains(&a.to_owned()), "{a} missing from {args:?}");
    }
    let env = &ds[0]["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.as_array().unwrap().iter().any(
            |e| e["name"] == "WEBHOOK_URL" && e["valueFrom"]["secretKeyRef"]["name"] == "slack"
        )
    );

    // Bring your own account and RBAC.
    let docs = rendered(&[
        "rbac.create=false",
        "serviceAccount.create=false",
        "serviceAccount.name=mine",
    ]);
    assert!(
        of_kind(&docs, "ClusterRole").is_empty() && of_kind(&docs, "ServiceAccount").is_empty()
    );
    assert_eq!(
        of_kind(&docs, "DaemonSet")[0]["spec"]["template"]["spec"]["serviceAccountName"],
        "mine"
    );

    // Mistakes fail the render with a clear message.
    let bad = helm_template(&["mode=sqs"]);
    assert!(
        !bad.ok
            && bad
                .stderr
                .contains(r#"mode must be one of the following: "imds", "queue""#),
        "{}",
        bad.stderr
    );
    let bad = helm_template(&["mode=queue"]);
    assert!(
        !bad.ok && bad.stderr.contains("needs queue.url"),
        "{}",
        bad.stderr
    );
}

/// Both modes: the chart's roles are the plain manifests' roles (which tests/node/rbac.rs
/// proves rule by rule).
#[test]
fn the_chart_grants_exactly_the_manifests_rules() {
    for (sets, file) in [
        (&[][..], "spot-interrupt-handler.yaml"),
        (
            &[
                "mode=queue",
                "queue.url=https://sqs.us-east-1.amazonaws.com/1/q",
            ][..],
            "spot-interrupt-handler-queue.yaml",
        ),
    ] {
        let docs = rendered(sets);
        let text = std::fs::read_to_string(manifest(file)).unwrap();
        let objects = workload::parse(&text).unwrap();
        for kind in ["ClusterRole", "Role"] {
            let chart: Vec<Value> = of_kind(&docs, kind)
                .iter()
                .map(|r| r["rules"].clone())
                .collect();
            let plain: Vec<Value> = objects
                .iter()
                .filter(|o| o["kind"] == kind)
                .map(|r| r["rules"].clone())
                .collect();
            assert_eq!(chart, plain, "{kind} of {file}");
        }
    }
}

/// Issue 31: capacity first turned on in the chart (`true` or `annotated`) ships the
/// placeholders' PriorityClass and the one more rule they need, exactly as
/// deploy/manifests/reserve-capacity.yaml does; off (the default), neither.
#[test]
fn capacity_first_ships_the_manifests_priority_class_and_rule() {
    let text = std::fs::read_to_string(manifest("reserve-capacity.yaml")).unwrap();
    let plain = workload::parse(&text).unwrap();
    let of = |objects: &[Value], kind: &str| -> Vec<Value> {
        objects
            .iter()
            .filter(|o| o["kind"] == kind)
            .map(|o| {
                let mut o = o.clone();
                // Names and labels are the release's; the rest is the same.
                o["metadata"] = Value::Null;
                o["subjects"] = Value::Null;
                o["roleRef"]["name"] = Value::Null;
                o
            })
            .collect()
    };
    for mode in ["true", "annotated"] {
        let docs = rendered(&[&format!("flags.reserve-capacity={mode}")]);
        let class = of_kind(&docs, "PriorityClass");
        assert_eq!(class.len(), 1, "{mode}");
        assert_eq!(class[0]["metadata"]["name"], reserve_class());
        assert_eq!(class[0]["value"], -5);
        assert_eq!(class[0]["preemptionPolicy"], "Never");
        assert_eq!(of(&docs, "PriorityClass"), of(&plain, "PriorityClass"));
        // The main ClusterRole as without it, the reservation's as the manifest's.
        let roles = of(&docs, "ClusterRole");
        assert_eq!(roles.len(), 2, "{mode}");
        assert_eq!(roles[1], of(&plain, "ClusterRole")[0], "{mode}");
        assert_eq!(
            of(&docs, "ClusterRoleBinding")[1],
            of(&plain, "ClusterRoleBinding")[0]
        );
        assert!(
            args_of(of_kind(&docs, "DaemonSet")[0]).contains(&format!("--reserve-capacity={mode}")),
            "{mode}"
        );
    }
    let docs = rendered(&[]);
    assert!(of_kind(&docs, "PriorityClass").is_empty());
    assert_eq!(of_kind(&docs, "ClusterRole").len(), 1);
}

fn reserve_class() -> &'static str {
    "spot-interrupt-handler-reservation"
}

/// Issue 32 (12): a webhook secret given as a plain flag (`flags.webhook-url`, ...) would be a
/// pod argument for anyone who can read the pod: refused at render, pointing to webhook.*.
#[test]
fn webhook_secrets_given_as_flags_are_refused_at_render() {
    for (set, value) in [
        ("flags.webhook-url", "webhook.url"),
        ("flags.webhook-headers", "webhook.headers"),
        ("imds.flags.webhook-proxy", "webhook.proxy"),
    ] {
        let out = helm_template(&[&format!("{set}=x")]);
        assert!(!out.ok, "{set} rendered");
        assert!(out.stderr.contains(value), "{set}: {}", out.stderr);
    }
}

/// imds mode: the chart confines each agent to its node with the manifest's admission policy
/// (proven on the real API server by tests/agent/confinement.rs), bound to the release's own
/// ServiceAccount; not in queue mode, not before Kubernetes 1.30, not when turned off.
#[test]
fn the_chart_confines_each_agent_as_the_manifest_does() {
    let docs = rendered(&[]);
    let text = std::fs::read_to_string(manifest("spot-interrupt-handler.yaml")).unwrap();
    let objects = workload::parse(&text).unwrap();
    let policy = |all: Vec<&Value>| -> Value {
        assert_eq!(all.len(), 1, "one policy");
        let mut spec = all[0]["spec"].clone();
        // The account's name differs (the release's); the rest is the same policy.
        spec["matchConditions"] = Value::Null;
        spec
    };
    let plain: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "ValidatingAdmissionPolicy")
        .collect();
    assert_eq!(
        policy(of_kind(&docs, "ValidatingAdmissionPolicy")),
        policy(plain)
    );
    let chart = of_kind(&docs, "ValidatingAdmissionPolicy")[0];
    let sa = &of_kind(&docs, "ServiceAccount")[0]["metadata"];
    let who = format!(
        "system:serviceaccount:{}:{}",
        sa["namespace"].as_str().unwrap_or("default"),
        sa["name"].as_str().unwrap()
    );
    assert!(
        chart["spec"]["matchConditions"][0]["expression"]
            .as_str()
            .unwrap()
            .contains(&who),
        "{chart}"
    );
    let bound = of_kind(&docs, "ValidatingAdmissionPolicyBinding");
    assert_eq!(bound[0]["spec"]["policyName"], chart["metadata"]["name"]);
    assert_eq!(bound[0]["spec"]["validationActions"][0], "Deny");
    for sets in [
        &["confinement.enabled=false"][..],
        &[
            "mode=queue",
            "queue.url=https://sqs.us-east-1.amazonaws.com/1/q",
        ][..],
    ] {
        assert!(
            of_kind(&rendered(sets), "ValidatingAdmissionPolicy").is_empty(),
            "{sets:?}"
        );
    }
}

/// The flags of one command in docs/configuration.md (with the ones every command has).
fn flags_of(command: &str) -> Vec<String> {
    let reference = std::fs::read_to_string(format!("{ROOT}/docs/configuration.md")).unwrap();
    let heading = format!("`spot-interrupt-handler {command}`");
    let mut section = "";
    let mut flags = Vec::new();
    for line in reference.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            section = h;
            continue;
        }
        if (section == "`spot-interrupt-handler`: flags of every command" || section == heading)
            && let Some(rest) = line.strip_prefix("| `--")
        {
            flags.push(rest.split('`').next().unwrap().to_owned());
        }
    }
    flags
}

/// Every flag of `imds` and `queue` is a chart value (`flags:` for both, `imds.flags:` and
/// `queue.flags:` for one alone) or set by the chart itself, and every value is a flag.
#[test]
fn chart_values_cover_every_flag_of_both_modes() {
    let agent = flags_of("imds");
    let queue = flags_of("queue");
    assert!(agent.len() > 30 && queue.len() > 30, "{agent:?} {queue:?}");
    let values: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(format!("{}/values.yaml", chart())).unwrap(),
    )
    .unwrap();
    let by_chart = [
        "node-name",
        "pod-name",
        "pod-namespace",
        "kubeconfig",
        "admin-listen",
        "cluster-name",
        "webhook-url",
        "webhook-template",
        "webhook-template-file",
        "webhook-headers",
        "webhook-proxy",
        // queue.url, queue.region, queue.endpoint, queue.workers
        "queue-url",
        "aws-region",
        "aws-endpoint",
        "workers",
        // cloud
        "cloud",
    ];
    let shared = values["flags"].as_object().unwrap();
    let imds_only = values["imds"]["flags"].as_object().unwrap();
    let queue_only = values["queue"]["flags"].as_object().unwrap();
    for f in agent.iter().chain(&queue) {
        assert!(
            shared.contains_key(f)
                || imds_only.contains_key(f)
                || queue_only.contains_key(f)
                || by_chart.contains(&f.as_str()),
            "the chart has no value for --{f}"
        );
    }
    for k in shared.keys() {
        assert!(
            agent.contains(k) && queue.contains(k),
            "values.yaml flags.{k} is not a flag of both modes"
        );
    }
    for k in imds_only.keys() {
        assert!(
            agent.contains(k) && !queue.contains(k),
            "values.yaml imds.flags.{k} is not a flag of imds alone"
        );
    }
    for k in queue_only.keys() {
        assert!(
            queue.contains(k) && !agent.contains(k),
            "values.yaml queue.flags.{k} is not a flag of queue alone"
        );
    }
    // Set, they reach the Deployment's arguments.
    let docs = rendered(&[
        "mode=queue",
        "queue.url=https://sqs.us-east-1.amazonaws.com/1/q",
        "queue.flags.managed-tag=team/spot",
        "queue.flags.use-provider-id=true",
    ]);
    let args = args_of(of_kind(&docs, "Deployment")[0]);
    assert!(
        args.contains(&"--managed-tag=team/spot".to_owned()),
        "{args:?}"
    );
    assert!(
        args.contains(&"--use-provider-id=true".to_owned()),
        "{args:?}"
    );
}

/// With `tls`, HTTPS with tokens and RBAC (the admin kubeconfig carries the CA and token).
async fn cluster(tls: bool) -> (RunningCluster, PathBuf, kube::Client) {
    let c = sih_sim_cluster::start(
        ClusterConfig {
            nodes: 4,
            spot_nodes: 2,
            pod_start_delay: Duration::from_millis(50),
            tls,
            ..ClusterConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let kubeconfig = std::env::temp_dir().join(format!(
        "sih-deploy-{}-{}",
        std::process::id(),
        c.addr().port()
    ));
    std::fs::write(&kubeconfig, c.kubeconfig()).unwrap();
    let kc = kube::config::Kubeconfig::from_yaml(&c.kubeconfig()).unwrap();
    let mut config = kube::Config::try_from(kc).unwrap();
    config.default_retry = false;
    let client = kube::Client::try_from(config).unwrap();
    (c, kubeconfig, client)
}

/// `kubectl get daemonsets` shows DESIRED = CURRENT = 2, and the pods run on spot nodes only.
async fn one_agent_per_spot_node(kubeconfig: &PathBuf, client: &kube::Client, name: &str) {
    let spot: Vec<String> = Api::<Node>::all(client.clone())
        .list(&ListParams::default().labels("lifecycle=Ec2Spot"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert_eq!(spot.len(), 2);
    let ds: Api<DaemonSet> = Api::namespaced(client.clone(), "kube-system");
    let end = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let status = ds.get(name).await.unwrap().status.unwrap_or_default();
        if status.desired_number_scheduled == 2 && status.current_number_scheduled == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "DaemonSet {name}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = run(
        "kubectl",
        &["get", "daemonsets", "-n", "kube-system", name],
        None,
        &[("KUBECONFIG", kubeconfig)],
    );
    assert!(out.ok, "{}", out.stderr);
    let row: Vec<&str> = out
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!((row[0], row[1], row[2]), (name, "2", "2"), "{}", out.stdout);
    let pods = Api::<Pod>::namespaced(client.clone(), "kube-system")
        .list(&ListParams::default().labels("app.kubernetes.io/name=spot-interrupt-handler"))
        .await
        .unwrap()
        .items;
    assert_eq!(pods.len(), 2);
    for p in &pods {
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        assert!(spot.contains(&node), "{node} is not a spot node");
    }
}

// Two threads: the simulator serves while the test waits on kubectl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_of_the_manifests_runs_one_agent_per_spot_node() {
    let (_c, kubeconfig, client) = cluster(false).await;
    for m in [
        "spot-interrupt-handler.yaml",
        "imds-simulator.yaml",
        "spot-interrupt-handler-queue.yaml",
    ] {
        let out = run(
            "kubectl",
            &["apply", "-f", &manifest(m)],
            None,
            &[("KUBECONFIG", &kubeconfig)],
        );
        assert!(out.ok, "{m}: {}", out.stderr);
    }
    one_agent_per_spot_node(&kubeconfig, &client, "spot-interrupt-handler").await;
    let _ = std::fs::remove_file(&kubeconfig);
}

// Two threads: the simulator serves while the test waits on kubectl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_of_the_rendered_chart_runs_one_agent_per_spot_node() {
    // Over HTTPS with the admin's token, as against a real cluster.
    let (_c, kubeconfig, client) = cluster(true).await;
    let out = helm_template(&["nodeSelector.lifecycle=Ec2Spot"]);
    assert!(out.ok, "{}", out.stderr);
    let applied = run(
        "kubectl",
        &["apply", "-f", "-"],
        Some(&out.stdout),
        &[("KUBECONFIG", &kubeconfig)],
    );
    assert!(applied.ok, "{}", applied.stderr);
    one_agent_per_spot_node(&kubeconfig, &client, "r-spot-interrupt-handler").await;
    let _ = std::fs::remove_file(&kubeconfig);
}

/// The non-root UID both images run as: the Dockerfile's `USER` (every stage) and the
/// engine-free image builder (scripts/oci-image) must agree on it.
fn image_uid() -> i64 {
    let root = env!("CARGO_MANIFEST_DIR");
    let dockerfile = std::fs::read_to_string(format!("{root}/Dockerfile")).unwrap();
    let users: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .collect();
    assert_eq!(
        users,
        ["65532:65532", "65532:65532", "65532:65532"],
        "the Dockerfile's stages"
    );
    let builder = std::fs::read_to_string(format!("{root}/scripts/oci-image")).unwrap();
    assert!(
        builder.contains("\nUID = 65532\n"),
        "scripts/oci-image's UID"
    );
    65532
}

/// Each manifest runs its commands from the image that holds them: the rehearsal commands
/// (`simulate`, `demo`) only exist in the rehearsal image, `queue` only in the full product's,
/// and the DaemonSet runs the agent's (no queue mode, no AWS SDK).
/// The arguments are checked against the binary of that image (`--help` after them parses
/// every flag before it and fails on an unknown subcommand).
#[test]
fn every_manifest_runs_its_binary_from_the_image_that_holds_it() {
    const PRODUCT: &str = env!("CARGO_BIN_EXE_spot-interrupt-handler");
    const SIM: &str = env!("CARGO_BIN_EXE_spot-interrupt-handler-sim");
    let mut checked = 0;
    for m in [
        "spot-interrupt-handler.yaml",
        "imds-simulator.yaml",
        "spot-interrupt-handler-queue.yaml",
    ] {
        let text = std::fs::read_to_string(manifest(m)).unwrap();
        for doc in workload::parse(&text).unwrap() {
            let Some(container) = doc["spec"]["template"]["spec"]["containers"].get(0) else {
                continue;
            };
            let image = container["image"].as_str().unwrap_or_default();
            let args: Vec<&str> = container["args"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            // The agent's image has no queue mode; the full image carries it (the agent's
            // command line is the full product's, so PRODUCT checks both).
            let (bin, repo) = match args.first() {
                Some(&"simulate" | &"demo") => (SIM, "/spot-interrupt-handler-sim:"),
                Some(&"queue") => (PRODUCT, "/spot-interrupt-handler:"),
                _ => (PRODUCT, "/spot-interrupt-handler-agent:"),
            };
            assert!(image.contains(repo), "{m}: {args:?} runs from {image}");
            // Confined by the runtime's default seccomp profile, as the chart's pods are.
            let seccomp = &doc["spec"]["template"]["spec"]["securityContext"]["seccompProfile"];
            assert_eq!(seccomp["type"], "RuntimeDefault", "{m}: seccomp {seccomp}");
            // The pod runs as the user the image is built for (a UID the image owns nothing as).
            let uid = &container["securityContext"]["runAsUser"];
            assert_eq!(uid, &image_uid(), "{m}: {args:?} runs as {uid}");
            // The simulator's control API stays on the pod's loopback (kubectl port-forward).
            if args.first() == Some(&"simulate") {
                let at = args
                    .iter()
                    .position(|a| *a == "--control-listen")
                    .and_then(|i| args.get(i + 1))
                    .and_then(|a| a.parse::<std::net::SocketAddr>().ok());
                assert!(
                    at.is_some_and(|a| a.ip().is_loopback()),
                    "{m}: the control API must listen on loopback: {args:?}"
                );
            }
            // Environment-only configuration (the agent's DaemonSet) has no subcommand to check.
            if args.is_empty() {
                checked += 1;
                continue;
            }
            let out = std::process::Command::new(bin)
                .args(&args)
                .arg("--help")
                .env_clear()
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{m}: {args:?} is not a command of {bin}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 3, "one workload per manifest");
}

/// A value each flag accepts: its first choice, else its default, else one written here.
fn sample_value(arg: &clap::Arg) -> String {
    let long = arg.get_long().unwrap_or_default();
    if let Some(v) = arg.get_possible_values().first() {
        return v.get_name().to_owned();
    }
    if let Some(v) = arg.get_default_values().first() {
        return v.to_string_lossy().into_owned();
    }
    match long {
        "pod-termination-grace-period" => "30s",
        "probes-listen" => "0.0.0.0:8080",
        "managed-tag" => "team/spot",
        "imds-endpoint" => "http://169.254.169.254",
        "node-name" | "pod-name" => "node-1",
        "pod-namespace" => "kube-system",
        "webhook-url" => "https://hooks.slack.com/services/T/B/secret",
        "webhook-headers" => r#"{"Authorization":"Bearer s3cr3t"}"#,
        "webhook-proxy" => "http://user:pr0xypw@proxy:3128",
        other => panic!("no sample value for --{other}: add one"),
    }
    .to_owned()
}

/// The chart rendered in each mode with every value set: the container's arguments, with the
/// environment it sets (downward API, the webhook's Secret) taken as the flags that read it,
/// are accepted by the binary's own parser; every flag value reaches the arguments of its mode
/// only; the webhook's URL and headers are in a Secret, never in the pod spec.
#[test]
fn the_chart_with_every_value_set_renders_arguments_the_binary_accepts() {
    use clap::{CommandFactory, Parser};
    use spot_interrupt_handler::cli::Cli;
    let values: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(format!("{}/values.yaml", chart())).unwrap(),
    )
    .unwrap();
    let keys = |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    let cli = Cli::command();
    for mode in ["imds", "queue"] {
        let command = cli.find_subcommand(mode).unwrap();
        let arg_named = |long: &str| {
            command
                .get_arguments()
                .chain(cli.get_arguments())
                .find(|a| a.get_long() == Some(long))
                .cloned()
        };
        let own = keys(&values[mode]["flags"]);
        let other = keys(&values[if mode == "imds" { "queue" } else { "imds" }]["flags"]);
        let mut yaml = String::from("flags:\n");
        for k in keys(&values["flags"]) {
            let arg = arg_named(&k).unwrap_or_else(|| panic!("flags.{k} is not a flag of {mode}"));
            yaml += &format!("  {k}: {}\n", serde_json::json!(sample_value(&arg)));
        }
        for m in ["imds", "queue"] {
            let cmd = cli.find_subcommand(m).unwrap();
            yaml += &format!("{m}:\n  flags:\n");
            for k in keys(&values[m]["flags"]) {
                let arg = cmd
                    .get_arguments()
                    .find(|a| a.get_long() == Some(&k))
                    .unwrap();
                yaml += &format!("    {k}: {}\n", serde_json::json!(sample_value(arg)));
            }
        }
        yaml += "webhook:\n  url: https://hooks.slack.com/services/T/B/secret\n  headers: '{\"Authorization\":\"Bearer s3cr3t\"}'\n  proxy: http://user:pr0xypw@proxy:3128\n  template: '{\"text\":\"{{ .Kind }}\"}'\n";
        let docs = rendered_with(
            &[
                &format!("mode={mode}"),
                "queue.url=https://sqs.us-east-1.amazonaws.com/1/q",
                "queue.region=us-east-1",
                "queue.endpoint=http://127.0.0.1:5000",
                "clusterName=prod",
            ],
            Some(&yaml),
        );
        let workload = docs
            .iter()
            .find(|d| d["kind"] == "DaemonSet" || d["kind"] == "Deployment")
            .unwrap();
        let mut args = args_of(workload);
        let flags_given: Vec<String> = args
            .iter()
            .filter_map(|a| a.strip_prefix("--"))
            .map(|a| a.split('=').next().unwrap().to_owned())
            .collect();
        for k in keys(&values["flags"]).iter().chain(&own) {
            assert!(
                flags_given.contains(k),
                "{mode}: --{k} not passed: {args:?}"
            );
        }
        for k in &other {
            assert!(
                !flags_given.contains(k),
                "{mode}: --{k} is not its flag: {args:?}"
            );
        }
        let spec = serde_json::to_string(&workload["spec"]).unwrap();
        assert!(
            !spec.contains("s3cr3t") && !spec.contains("services/T/B") && !spec.contains("pr0xypw"),
            "{mode}: a webhook secret in the pod spec: {spec}"
        );
        let pod = serde_json::to_string(&workload["spec"]["template"]["metadata"]).unwrap();
        assert!(!pod.contains("checksum/webhook-secret"), "{mode}: {pod}");
        let secret = of_kind(&docs, "Secret");
        assert_eq!(secret.len(), 1, "{mode}");
        assert!(serde_json::to_string(secret[0]).unwrap().contains("s3cr3t"));
        // The environment the chart sets, as the flags that read it.
        for e in workload["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
        {
            let name = e["name"].as_str().unwrap();
            let arg = command
                .get_arguments()
                .find(|a| a.get_env().is_some_and(|v| v == name))
                .unwrap_or_else(|| panic!("{mode}: env {name} is read by no flag"));
            if let Some(secret) = e["valueFrom"]["secretKeyRef"]["name"].as_str() {
                assert_eq!(secret, secret_name(&docs), "{name}");
            }
            args.push(format!(
                "--{}={}",
                arg.get_long().unwrap(),
                sample_value(arg)
            ));
        }
        let parsed = Cli::try_parse_from(
            std::iter::once("spot-interrupt-handler".to_owned()).chain(args.clone()),
        );
        assert!(parsed.is_ok(), "{mode}: {args:?}: {}", parsed.unwrap_err());
    }
}

fn secret_name(docs: &[Value]) -> &str {
    of_kind(docs, "Secret")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
}

/// `cloud`: the agents read that cloud's metadata service and, on GCE and AKS, run only on
/// its spot nodes (any of its labels) with its taints tolerated; a nodeSelector of one's own
/// replaces that placement; queue mode stays EC2's.
#[test]
fn the_cloud_value_places_the_agents_on_that_clouds_spot_nodes() {
    let spec = |docs: &[Value]| of_kind(docs, "DaemonSet")[0]["spec"]["template"]["spec"].clone();
    let terms = |s: &Value| -> Vec<(String, String)> {
        s["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"]
            .as_array()
            .map(|t| {
                t.iter()
                    .map(|term| {
                        let e = &term["matchExpressions"][0];
                        (
                            e["key"].as_str().unwrap().to_owned(),
                            e["values"][0].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let gce = rendered(&["cloud=gce"]);
    assert!(args_of(of_kind(&gce, "DaemonSet")[0]).contains(&"--cloud=gce".to_owned()));
    let s = spec(&gce);
    assert_eq!(
        terms(&s),
        [
            ("cloud.google.com/gke-spot".to_owned(), "true".to_owned()),
            (
                "cloud.google.com/gke-preemptible".to_owned(),
                "true".to_owned()
            )
        ]
    );
    let tolerated: Vec<&str> = s["tolerations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["key"].as_str())
        .collect();
    assert!(
        tolerated.contains(&"cloud.google.com/gke-spot"),
        "{tolerated:?}"
    );

    let azure = rendered(&["cloud=azure"]);
    assert!(args_of(of_kind(&azure, "DaemonSet")[0]).contains(&"--cloud=azure".to_owned()));
    assert_eq!(
        terms(&spec(&azure)),
        [(
            "kubernetes.azure.com/scalesetpriority".to_owned(),
            "spot".to_owned()
        )]
    );
    // One's own placement wins.
    let own = spec(&rendered(&["cloud=azure", "nodeSelector.pool=spot"]));
    assert!(terms(&own).is_empty());
    assert_eq!(own["nodeSelector"]["pool"], "spot");
    // EC2 keeps today's placement: every node.
    let aws = spec(&rendered(&[]));
    assert!(terms(&aws).is_empty());
    assert!(!helm_template(&["cloud=gcp"]).ok);
    let queue = helm_template(&[
        "mode=queue",
        "cloud=gce",
        "queue.url=https://sqs.us-east-1.amazonaws.com/1/q",
    ]);
    assert!(
        !queue.ok && queue.stderr.contains("cloud must be aws"),
        "{}",
        queue.stderr
    );
}

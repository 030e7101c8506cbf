//! The roles in `deploy/manifests` grant exactly what the code uses: with them, fence, drain
//! (evictions, waiting for pods to go, deletion at the deadline) and Events work against
//! `simulate cluster --tls` and on the real control plane (its RBAC authorizer), and in queue mode also the watched node index and the Lease per
//! notice; without any one of their rules, the call that needs that rule gets a 403. And every
//! rule in the manifests has such a case (nothing more is granted).

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, ListParams, PostParams};
use serde_json::Value;
use sih_core::{Carried, DrainPolicy, Notice, PlanRules, Source};
use sih_node::{DrainConfig, NodeError, Progress};
use sih_sim_cluster::{ClusterConfig, RunningCluster, workload};

use crate::support::{deployment, node_name, until_budget_allows, until_running};

/// A manifest and the ServiceAccount its roles are bound to.
struct Manifest {
    text: &'static str,
    sa: (&'static str, &'static str),
}

const AGENT: Manifest = Manifest {
    text: include_str!("../../deploy/manifests/spot-interrupt-handler.yaml"),
    sa: ("kube-system", "spot-interrupt-handler"),
};

const QUEUE: Manifest = Manifest {
    text: include_str!("../../deploy/manifests/spot-interrupt-handler-queue.yaml"),
    sa: ("kube-system", "spot-interrupt-handler-queue"),
};

impl Manifest {
    /// The manifest's objects of `kind`.
    fn objects(&self, kind: &str) -> Vec<Value> {
        workload::parse(self.text)
            .expect("the manifest parses")
            .into_iter()
            .filter(|o| o["kind"] == kind)
            .collect()
    }
}

/// The roles under test: the ClusterRole and, in queue mode, the Role for the Leases.
#[derive(Clone)]
struct Roles {
    cluster: Value,
    namespaced: Option<Value>,
}

/// `(apiGroup, resource, verb)` for every grant of the manifest's ClusterRole.
fn grants(role: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        let list = |k: &str| -> Vec<String> {
            rule[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        };
        for g in list("apiGroups") {
            for r in list("resources") {
                for v in list("verbs") {
                    out.insert((g.clone(), r.clone(), v));
                }
            }
        }
    }
    out
}

/// The ClusterRole without one grant.
fn without(role: &Value, cut: &(String, String, String)) -> Value {
    let mut role = role.clone();
    let mut rules = Vec::new();
    for rule in role["rules"].as_array().unwrap() {
        let has = |k: &str, v: &str| rule[k].as_array().unwrap().iter().any(|x| x == v);
        if has("apiGroups", &cut.0) && has("resources", &cut.1) && has("verbs", &cut.2) {
            // Split the rule so only the cut (resource, verb) goes.
            for r in rule["resources"].as_array().unwrap() {
                let verbs: Vec<&Value> = rule["verbs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|v| !(r == cut.1.as_str() && *v == cut.2.as_str()))
                    .collect();
                if !verbs.is_empty() {
                    let mut part = rule.clone();
                    part["resources"] = serde_json::json!([r]);
                    part["verbs"] = serde_json::json!(verbs);
                    rules.push(part);
                }
            }
        } else {
            rules.push(rule.clone());
        }
    }
    role["rules"] = Value::Array(rules);
    role
}

/// What keeps a cluster of one exercise running: the simulator, or a real control plane.
enum Held {
    Simulator(#[allow(dead_code)] RunningCluster),
    Real(#[allow(dead_code)] crate::real_cluster::ControlPlane),
}

/// A cluster (`simulate cluster --tls`, or the real control plane with its RBAC authorizer)
/// with the manifest's account bound to `roles`; `(cluster, admin, agent)`.
async fn cluster_with(
    m: &Manifest,
    roles: &Roles,
    yaml: &str,
) -> (Held, kube::Client, kube::Client) {
    let (held, admin, agent) = match crate::real_cluster::backend() {
        crate::real_cluster::Backend::Simulator => simulated_cluster(m, yaml).await,
        crate::real_cluster::Backend::Real => real_cluster(m, yaml).await,
    };
    bind(m, roles, &admin).await;
    (held, admin, agent)
}

async fn simulated_cluster(m: &Manifest, yaml: &str) -> (Held, kube::Client, kube::Client) {
    let config = ClusterConfig {
        nodes: 2,
        spot_nodes: 2,
        workload: Some(workload::parse(yaml).unwrap()),
        pod_start_delay: Duration::from_millis(50),
        tls: true,
        service_accounts: vec![(m.sa.0.into(), m.sa.1.into())],
        ..ClusterConfig::default()
    };
    let cluster = sih_sim_cluster::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = |token: &str| {
        let kc = kube::config::Kubeconfig::from_yaml(&cluster.kubeconfig_for(token)).unwrap();
        let mut config = kube::Config::try_from(kc).unwrap();
        config.default_retry = false;
        kube::Client::try_from(config).unwrap()
    };
    let admin = client(cluster.admin_token().unwrap());
    let agent = client(cluster.token_of(m.sa.0, m.sa.1).unwrap());
    (Held::Simulator(cluster), admin, agent)
}

/// The same on a real control plane: two spot nodes run by kwok, the account's bound token
/// (bound to a pod on the first node, as a DaemonSet pod's is).
async fn real_cluster(m: &Manifest, yaml: &str) -> (Held, kube::Client, kube::Client) {
    let cp = crate::real_cluster::ControlPlane::start().await;
    cp.add_nodes(&[workload::node(0, true), workload::node(1, true)])
        .await;
    cp.apply(&format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {}, namespace: {}}}\n",
        m.sa.1, m.sa.0
    ));
    cp.apply(yaml);
    let dir = cp.dir.join("rbac-agent");
    let kubeconfig = cp
        .service_account_kubeconfig(m.sa.0, m.sa.1, crate::real_cluster::Bound::Nothing, &dir)
        .await;
    let agent = crate::real_cluster::client_for(&kubeconfig).await;
    let admin = cp.client.clone();
    (Held::Real(cp), admin, agent)
}

/// Binds the manifest's account to `roles` (the ClusterRole and, in queue mode, the Role).
async fn bind(m: &Manifest, roles: &Roles, admin: &kube::Client) {
    let role = &roles.cluster;
    let cluster_roles: Api<ClusterRole> = Api::all(admin.clone());
    cluster_roles
        .create(
            &PostParams::default(),
            &serde_json::from_value(role.clone()).unwrap(),
        )
        .await
        .unwrap();
    let binding = m.objects("ClusterRoleBinding").remove(0);
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(binding).unwrap(),
        )
        .await
        .unwrap();
    if let Some(role) = &roles.namespaced {
        let ns = role["metadata"]["namespace"].as_str().unwrap();
        Api::<Role>::namespaced(admin.clone(), ns)
            .create(
                &PostParams::default(),
                &serde_json::from_value(role.clone()).unwrap(),
            )
            .await
            .unwrap();
        let binding = m.objects("RoleBinding").remove(0);
        Api::<RoleBinding>::namespaced(admin.clone(), ns)
            .create(
                &PostParams::default(),
                &serde_json::from_value(binding).unwrap(),
            )
            .await
            .unwrap();
    }
}

fn notice(node: &str) -> Carried {
    let now = Timestamp::now();
    Carried::new(Notice::spot_interruption(
        "i-1",
        node,
        now,
        now,
        Source::Agent,
    ))
}

fn is_forbidden(e: &NodeError) -> bool {
    matches!(e, NodeError::Api(kube::Error::Api(s)) if s.code == 403)
}

/// A claim on `node` held by another replica, `replica-b`.
fn lease_of_another(node: &str) -> Lease {
    use sih_node::claim::{HOLDER, MANAGED_BY, NODE_ANNOTATION, ROLE};
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": sih_node::claim::lease_name(node),
            "labels": {MANAGED_BY.0: MANAGED_BY.1, ROLE: "node", HOLDER: "b"},
            "annotations": {NODE_ANNOTATION: node}},
        "spec": {"holderIdentity": "replica-b", "leaseDurationSeconds": 30,
            "renewTime": Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}
    }))
    .unwrap()
}

/// `replica-b`'s heartbeat, renewed `age` ago (30 s claims).
fn heartbeat_of_another(age: Duration) -> Lease {
    use sih_node::claim::{MANAGED_BY, ROLE};
    let renewed = Timestamp::now() - jiff::SignedDuration::try_from(age).unwrap();
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": sih_node::claim::replica_lease_name("replica-b"),
            "labels": {MANAGED_BY.0: MANAGED_BY.1, ROLE: "replica"}},
        "spec": {"holderIdentity": "replica-b", "leaseDurationSeconds": 30,
            "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}
    }))
    .unwrap()
}

/// What the code does with one grant, and whether it worked.
async fn exercise(m: &Manifest, grant: &(String, String, String), roles: &Roles) -> bool {
    let pods_delete =
        (grant.1 == "pods" && grant.2 == "delete") || grant.1 == "poddisruptionbudgets";
    let surge = matches!(
        grant.1.as_str(),
        "replicasets" | "deployments" | "horizontalpodautoscalers"
    );
    let workload = if surge {
        deployment("web", 2, 1, "maxUnavailable: 1").replacen(
            "metadata: {name: web, namespace: default}",
            "metadata: {name: web, namespace: default, annotations: {spot-interrupt-handler/surge: \"true\"}}",
            1,
        )
    } else if pods_delete {
        // A budget that never allows a disruption: only deletion at the deadline moves it.
        deployment("guarded", 1, 1, "maxUnavailable: 0")
    } else {
        deployment("web", 2, 1, "maxUnavailable: 1")
    };
    let (cluster, admin, agent) = cluster_with(m, roles, &workload).await;
    let app = if pods_delete {
        "app=guarded"
    } else {
        "app=web"
    };
    until_running(&admin, app, if pods_delete { 1 } else { 2 }).await;
    if !pods_delete {
        until_budget_allows(&admin, "web").await;
    }
    // The node to drain is one the workload runs on: a real scheduler places pods where it
    // likes (the simulator's fills the first node first).
    let node = crate::support::running(&admin, app)
        .await
        .first()
        .map(crate::support::node_of)
        .unwrap_or_else(|| node_name(0));
    let nodes: Api<Node> = Api::all(agent.clone());
    let spot = [notice(&node)];
    let drain = |within: Duration| {
        let agent = agent.clone();
        let node = node.clone();
        async move {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let cfg = DrainConfig {
                policy: DrainPolicy {
                    margin: Duration::from_secs(1),
                    ..DrainPolicy::default()
                },
                ..DrainConfig::default()
            };
            let deadline = tokio::time::Instant::now() + within;
            let target = sih_node::drain::Target {
                deadline,
                hard: Some(deadline),
            };
            let report = sih_node::drain::drain_until(agent, &node, target, cfg, tx).await;
            let mut progress = Vec::new();
            while let Ok(p) = rx.try_recv() {
                progress.push(p);
            }
            (report, progress)
        }
    };
    let ok = match (grant.0.as_str(), grant.1.as_str(), grant.2.as_str()) {
        ("", "nodes", "get" | "patch") => match sih_node::fence(
            &nodes,
            &node,
            Source::Agent,
            &spot,
            &PlanRules::default(),
            sih_node::API_TIMEOUT,
        )
        .await
        {
            Ok(_) => true,
            Err(e) => {
                assert!(is_forbidden(&e), "{e}");
                false
            }
        },
        ("", "pods", "list") => match drain(Duration::from_secs(10)).await.0 {
            Ok(r) => r.succeeded(),
            Err(e) => {
                assert!(is_forbidden(&e), "{e}");
                false
            }
        },
        ("", "pods/eviction", "create") | ("", "pods", "get") => {
            // Room for a slow list first and a slow kubelet after: with several control planes
            // on two cores a list once took the whole of a 3 s window (CI, stop 37), and an
            // evicted pod was not seen gone within 6 s (stop 38).
            let (report, progress) = drain(Duration::from_secs(10)).await;
            let report = report.expect("the list is allowed");
            let evicted = progress
                .iter()
                .any(|p| matches!(p, Progress::Evicted { .. }));
            if grant.1 == "pods/eviction" {
                report.succeeded() && evicted
            } else {
                // Evicted, but never seen gone: the drain cannot finish.
                assert!(evicted);
                report.succeeded()
            }
        }
        ("", "pods", "delete") => {
            // Deleted at its last moment (deadline - grace - margin = 4 s in), with room for
            // a slow eviction attempt before it (clusters run side by side).
            let (report, progress) = drain(Duration::from_secs(6)).await;
            let deleted = progress
                .iter()
                .any(|p| matches!(p, Progress::DeletedAtDeadline { .. }));
            let refused = progress.iter().any(
                |p| matches!(p, Progress::Failed { reason, .. } if reason.contains("forbidden")),
            );
            assert!(deleted != refused, "{progress:?}");
            report.expect("the list is allowed");
            deleted
        }
        ("policy", "poddisruptionbudgets", "list") => {
            // The budget counts the pod as disrupted (an eviction it granted, whose deletion
            // never came): the drain finishes that eviction well before the deadline, where
            // without the rule only the deletion at the deadline would move it.
            let pod = crate::support::running(&admin, app).await[0]
                .metadata
                .name
                .clone()
                .unwrap();
            let pdbs: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
                Api::namespaced(admin.clone(), "default");
            let status = serde_json::json!({"status": {"disruptionsAllowed": 0,
                "disruptedPods": {&pod: Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()}}});
            pdbs.patch_status(
                "guarded",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&status),
            )
            .await
            .unwrap();
            let (report, progress) = drain(Duration::from_secs(8)).await;
            report.expect("the list of pods is allowed");
            progress
                .iter()
                .any(|p| matches!(p, Progress::Evicted { pod: evicted, .. } if evicted.name == pod))
        }
        ("apps", "replicasets", "get")
        | ("apps", "deployments", "get" | "patch")
        | ("autoscaling", "horizontalpodautoscalers", "list") => {
            // The Deployment asked for a surge: it is raised only when every call it needs
            // is allowed (its ReplicaSet, the Deployment, the HPAs that might scale it).
            let (report, progress) = drain(Duration::from_secs(10)).await;
            report.expect("the drain runs");
            progress.iter().any(
                |p| matches!(p, Progress::Surge { what, .. } if what.starts_with("replicas raised")),
            )
        }
        ("discovery.k8s.io", "endpointslices", "list") => {
            // With a 3 s --lb-drain-delay, a pod no Service selects goes at once when the
            // EndpointSlices can be read; when they cannot, every pod waits the delay.
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let cfg = DrainConfig {
                policy: DrainPolicy {
                    margin: Duration::from_secs(1),
                    ..DrainPolicy::default()
                },
                lb_drain_delay: Duration::from_secs(3),
                ..DrainConfig::default()
            };
            let started = tokio::time::Instant::now();
            let deadline = started + Duration::from_secs(10);
            let target = sih_node::drain::Target {
                deadline,
                hard: Some(deadline),
            };
            let (agent, node) = (agent.clone(), node.clone());
            let drained = tokio::spawn(async move {
                sih_node::drain::drain_until(agent, &node, target, cfg, tx).await
            });
            let mut first = None;
            while let Some(p) = rx.recv().await {
                if matches!(p, Progress::Evicted { .. }) && first.is_none() {
                    first = Some(started.elapsed());
                }
            }
            drained.await.unwrap().expect("the drain runs");
            // Without the rule every pod waits the whole 3 s delay; with it the first goes
            // as soon as the drain has looked (well under that, even with clusters side by side).
            first.is_some_and(|t| t < Duration::from_millis(2500))
        }
        ("events.k8s.io", "events", "create") => {
            sih_report::EventReporter::new(agent.clone(), &node, None)
                .notice(&notice(&node).notice)
                .await;
            Api::<Event>::all(admin.clone())
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .iter()
                .any(|e| e.reason.as_deref() == Some("SpotInterruption"))
        }
        ("", "nodes", "list") => {
            // The index is ready once its first list is in.
            tokio::time::timeout(Duration::from_secs(5), sih_node::watch_nodes(agent.clone()))
                .await
                .is_ok_and(|(index, _)| index.len() == 2)
        }
        ("", "nodes", "watch") => {
            let (index, _task) = sih_node::watch_nodes(agent.clone()).await;
            let mut joined = workload::node(7, true);
            joined["metadata"]["name"] = serde_json::json!("joined-later");
            Api::<Node>::all(admin.clone())
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(joined).unwrap(),
                )
                .await
                .unwrap();
            let mut seen = false;
            for _ in 0..40 {
                if index.len() == 3 {
                    seen = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            seen
        }
        ("coordination.k8s.io", "leases", verb) => {
            let ns = "kube-system";
            let claims = sih_node::Claims::new(
                agent.clone(),
                ns,
                "replica-a",
                Duration::from_secs(30),
                sih_node::API_TIMEOUT,
            );
            let leases: Api<Lease> = Api::namespaced(admin.clone(), ns);
            match verb {
                "create" => matches!(
                    claims.acquire("n-create").await,
                    Ok(sih_node::Claim::Acquired)
                ),
                "get" => {
                    // A claim of a live replica is left alone.
                    for l in [
                        lease_of_another("n-get"),
                        heartbeat_of_another(Duration::ZERO),
                    ] {
                        leases.create(&PostParams::default(), &l).await.unwrap();
                    }
                    matches!(
                        claims.acquire("n-get").await,
                        Ok(sih_node::Claim::HeldElsewhere(_))
                    )
                }
                "update" => {
                    // Its holder left no heartbeat: taken over with a replace.
                    leases
                        .create(&PostParams::default(), &lease_of_another("n-update"))
                        .await
                        .unwrap();
                    matches!(
                        claims.acquire("n-update").await,
                        Ok(sih_node::Claim::Acquired)
                    )
                }
                "patch" => {
                    // The heartbeat and a release are patches.
                    claims.heartbeat().await.is_ok()
                        && claims.heartbeat().await.is_ok()
                        && matches!(
                            claims.acquire("n-patch").await,
                            Ok(sih_node::Claim::Acquired)
                        )
                        && claims.release("n-patch").await.is_ok()
                }
                "list" => {
                    // Survivors look for the claims of replicas whose heartbeat expired.
                    for l in [
                        lease_of_another("n-list"),
                        heartbeat_of_another(Duration::from_secs(60)),
                    ] {
                        leases.create(&PostParams::default(), &l).await.unwrap();
                    }
                    claims
                        .abandoned(false)
                        .await
                        .is_ok_and(|nodes| nodes == ["n-list"])
                }
                "delete" => {
                    // Released claims are deleted after their retention.
                    matches!(
                        claims.acquire("n-delete").await,
                        Ok(sih_node::Claim::Acquired)
                    ) && claims.release("n-delete").await.is_ok()
                        && claims.sweep(Duration::ZERO).await.is_ok_and(|n| n == 1)
                        && leases
                            .get_opt(&sih_node::claim::lease_name("n-delete"))
                            .await
                            .unwrap()
                            .is_none()
                }
                other => panic!("leases {other} is granted but never used"),
            }
        }
        other => panic!(
            "the manifest grants {other:?}, which no code path here uses: remove it, or add the call that needs it"
        ),
    };
    drop(cluster);
    ok
}

/// Every grant of every role in `m` is needed (its call fails without it) and enough.
async fn every_rule_needed_and_enough(m: &Manifest, expected: usize) {
    let roles = Roles {
        cluster: m.objects("ClusterRole").remove(0),
        namespaced: m.objects("Role").into_iter().next(),
    };
    let mut all: Vec<(bool, (String, String, String))> = grants(&roles.cluster)
        .into_iter()
        .map(|g| (true, g))
        .collect();
    if let Some(role) = &roles.namespaced {
        all.extend(grants(role).into_iter().map(|g| (false, g)));
    }
    assert_eq!(all.len(), expected, "{all:?}");
    // Each grant twice: with the full roles (it must work) and without its rule (it must
    // not). Two clusters at a time: an exercise mostly waits (for pods, for its deadline), but
    // three real control planes per test, two tests at once, starved each other on two cores.
    let mut cases = Vec::new();
    for (in_cluster_role, grant) in &all {
        let mut cut = roles.clone();
        if *in_cluster_role {
            cut.cluster = without(&roles.cluster, grant);
        } else {
            cut.namespaced = roles.namespaced.as_ref().map(|r| without(r, grant));
        }
        cases.push((grant, roles.clone(), true));
        cases.push((grant, cut, false));
    }
    use futures_util::StreamExt;
    let results: Vec<_> =
        futures_util::stream::iter(cases.iter().map(|(grant, roles, want)| async move {
            (*grant, *want, exercise(m, grant, roles).await)
        }))
        .buffer_unordered(2)
        .collect()
        .await;
    for (grant, want, worked) in results {
        assert!(worked || !want, "{grant:?} fails with the full roles");
        assert!(
            !worked || want,
            "{grant:?} still works without its rule: the rule is not needed"
        );
    }
}

// Under the simulator's RBAC and under the real API server's RBAC authorizer.
crate::on_both_backends!(
    every_rule_of_the_agents_cluster_role_is_needed_and_enough,
    every_rule_of_the_queue_controllers_roles_is_needed_and_enough,
);

async fn every_rule_of_the_agents_cluster_role_is_needed_and_enough() {
    every_rule_needed_and_enough(&AGENT, 13).await;
}

/// Queue mode adds nodes list/watch (the index) and Leases in its namespace (the claims).
async fn every_rule_of_the_queue_controllers_roles_is_needed_and_enough() {
    every_rule_needed_and_enough(&QUEUE, 21).await;
}

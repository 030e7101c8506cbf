//! `drain NODE` and `undrain NODE` as a user runs them: progress lines, a summary, exit status 0
//! only when every pod left before the deadline.

use std::time::Duration;

use crate::support::{cluster, deployment, node_of, running, until_budget_allows, until_running};

const BIN: &str = env!("CARGO_BIN_EXE_spot-interrupt-handler");

// The same bodies against the simulator and against the real control plane.
crate::on_both_backends!(
    drain_and_undrain_commands,
    drain_command_fails_when_a_pod_cannot_leave_in_time,
);

async fn run(kubeconfig: &std::path::Path, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(BIN)
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .output()
        .await
        .unwrap()
}

async fn drain_and_undrain_commands() {
    let (c, client) = cluster(2, 110, &deployment("web", 4, 1, "maxUnavailable: 1")).await;
    until_running(&client, "app=web", 4).await;
    until_budget_allows(&client, "web").await;
    let node = node_of(&running(&client, "app=web").await[0]);
    let kubeconfig = std::env::temp_dir().join(format!("sih-drain-cli-{}", c.tag()));
    std::fs::write(&kubeconfig, c.kubeconfig()).unwrap();

    let dry = run(&kubeconfig, &["drain", &node, "--dry-run"]).await;
    assert!(dry.status.success());
    let said = String::from_utf8_lossy(&dry.stdout);
    assert!(
        said.contains("dry run: would drain: evict 2 pod(s) [default/web-"),
        "{said}"
    );
    assert!(
        said.contains("dry run: would taint spot-interrupt-handler/spot-interruption="),
        "{said}"
    );

    let out = run(
        &kubeconfig,
        &[
            "drain",
            &node,
            "--deadline",
            "60s",
            "--deadline-margin",
            "1s",
        ],
    )
    .await;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("fenced")
            && said.contains("evicted  default/web-")
            && said.contains("0 remaining"),
        "{said}"
    );
    // Two of the four pods were on this node (the scheduler spreads them) and the budget
    // allows one at a time: on the simulator the second was refused until the first one's
    // replacement was Ready elsewhere, then evicted. (A real disruption controller counts the
    // replacement Ready within milliseconds, so there the second may go at once.)
    assert_eq!(
        said.lines()
            .filter(|l| l.contains("evicted  default/web-"))
            .count(),
        2,
        "{said}"
    );
    if crate::real_cluster::backend() == crate::real_cluster::Backend::Simulator {
        assert!(said.contains("blocked  default/web-"), "{said}");
    }
    assert!(
        running(&client, "app=web")
            .await
            .iter()
            .all(|p| node_of(p) != node)
    );

    // The drain told Kubernetes too: Events on the node (and the evicted pods), listed by the
    // core/v1 API that `kubectl get events` reads.
    let events: kube::Api<k8s_openapi::api::core::v1::Event> = kube::Api::all(client.clone());
    let reasons: Vec<String> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    for reason in [
        "SpotInterruption",
        "Fenced",
        "DrainStarted",
        "PodEvicted",
        "DrainSucceeded",
    ] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "no {reason} Event in {reasons:?}"
        );
    }

    let undo = run(&kubeconfig, &["undrain", &node]).await;
    assert!(String::from_utf8_lossy(&undo.stdout).contains("unfenced"));
    std::fs::remove_file(&kubeconfig).unwrap();
}

async fn drain_command_fails_when_a_pod_cannot_leave_in_time() {
    let (c, client) = cluster(2, 110, &deployment("db", 1, 1, "maxUnavailable: 0")).await;
    until_running(&client, "app=db", 1).await;
    let node = node_of(&running(&client, "app=db").await[0]);
    let kubeconfig = std::env::temp_dir().join(format!("sih-drain-fail-{}", c.tag()));
    std::fs::write(&kubeconfig, c.kubeconfig()).unwrap();
    let started = std::time::Instant::now();
    let out = run(
        &kubeconfig,
        &[
            "drain",
            &node,
            "--deadline",
            "3s",
            "--deadline-margin",
            "1s",
            "--on-pdb-deadline",
            "wait",
        ],
    )
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("did not leave") && err.contains("default/db-"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "gives up at the deadline"
    );
    std::fs::remove_file(&kubeconfig).unwrap();
}

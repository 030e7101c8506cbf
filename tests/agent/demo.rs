//! `demo` as a newcomer runs it: nothing installed, one command, exit 0 when the evicted
//! replicas run elsewhere.

use serde_json::Value;

/// Runs `demo --json ARGS` to its end (exit 0 asserted); its JSON lines and its stdout.
async fn demo(args: &[&str], within: u64) -> (Vec<Value>, String) {
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(within),
        tokio::process::Command::new(crate::support::SIM_BIN)
            .arg("demo")
            .arg("--json")
            .args(args)
            .env_remove("NODE_NAME")
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("the demo finishes within {within} s"))
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (lines, stdout)
}

#[tokio::test]
async fn demo_tells_the_whole_story_and_exits_zero() {
    let (lines, _) = demo(&[], 60).await;
    let events: Vec<&str> = lines.iter().filter_map(|l| l["event"].as_str()).collect();
    for e in [
        "notice",
        "detected",
        "fenced",
        "drain-started",
        "evicted",
        "drain-done",
        "rescheduled",
        "replicas-back",
    ] {
        assert!(events.contains(&e), "{e} missing from {events:?}");
    }
    // Every line has typed fields besides its text.
    let first = |e: &str| lines.iter().find(|l| l["event"] == e).unwrap();
    let node = first("notice")["node"].as_str().unwrap().to_owned();
    assert!(node.starts_with("ip-"), "{}", first("notice"));
    assert_eq!(first("notice")["seconds"], 120);
    assert_eq!(first("notice")["daemonset_pods_staying"], 1);
    assert_eq!(first("detected")["kind"], "spot-interruption");
    assert_eq!(first("detected")["action"], "drain");
    assert_eq!(first("fenced")["effect"], "NoSchedule");
    assert_eq!(first("evicted")["node"], node.as_str());
    assert!(
        first("evicted")["pod"]
            .as_str()
            .unwrap()
            .starts_with("default/web-")
    );
    assert!(first("evicted")["grace_s"].as_u64().is_some());
    assert!(first("drain-done")["seconds_left"].as_f64().unwrap() > 60.0);
    assert!(
        first("drain-done")["slowest_pod"]
            .as_str()
            .is_some_and(|p| p.starts_with("default/web-")),
        "{}",
        first("drain-done")
    );
    assert_ne!(first("rescheduled")["node"], node.as_str());
    assert!(
        lines
            .iter()
            .all(|l| l["text"].is_string() || l["summary"].is_object())
    );
    // Times are relative to the notice and in order.
    let times: Vec<f64> = lines.iter().filter_map(|l| l["t"].as_f64()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(summary["drain_succeeded"], true);
    assert!(summary["evicted"].as_u64().unwrap() >= 1);
    assert!(summary["fence_s"].as_f64().unwrap() < 2.0);
    assert!(summary["deadline_slack_s"].as_f64().unwrap() > 60.0);
    // Milliseconds, as the terminal prints them (it printed 0.23041275 and the like).
    for (k, v) in summary.as_object().unwrap() {
        if let Some(f) = v.as_f64().filter(|_| k.ends_with("_s")) {
            assert!(((f * 1000.0).round() - f * 1000.0).abs() < 1e-6, "{k}: {f}");
        }
    }
}

/// `--keep-running` still tells the instance's end after the summary (the README says so; it
/// printed nothing of it), and then keeps the cluster until told to stop.
#[tokio::test]
async fn keep_running_tells_the_instance_end_after_the_summary() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(crate::support::SIM_BIN)
        .args(["demo", "--json", "--keep-running", "--notice", "20s"])
        .env_remove("NODE_NAME")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen: Vec<String> = Vec::new();
    let read = async {
        while let Some(l) = lines.next_line().await.unwrap() {
            let v: Value = serde_json::from_str(&l).unwrap();
            let e = v["event"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| "summary".into());
            let done = e == "node-deleted";
            seen.push(e);
            if done {
                break;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), read)
        .await
        .unwrap_or_else(|_| panic!("no node-deleted line: {seen:?}"));
    let at = |e: &str| seen.iter().position(|s| s == e);
    assert!(
        at("summary") < at("keep-running")
            && at("keep-running") < at("instance-ended")
            && at("instance-ended") < at("node-deleted"),
        "{seen:?}"
    );
    // Still running: the cluster waits for Ctrl-C.
    assert!(child.try_wait().unwrap().is_none());
    child.kill().await.unwrap();
}

/// `demo --scenario surge`: the web Deployment asks for a surge, and its Ready replicas never
/// drop below the desired count, where the default story loses one for a while.
#[tokio::test]
async fn the_surge_scenario_keeps_every_ready_replica() {
    let summary = |scenario: &'static str| async move {
        let (lines, stdout) = demo(&["--scenario", scenario], 60).await;
        (lines.last().unwrap()["summary"].clone(), stdout)
    };
    let ((surge, surge_out), (plain, _)) = tokio::join!(summary("surge"), summary("drain"));
    assert_eq!(surge["drain_succeeded"], true);
    assert_eq!(
        surge["lowest_ready_replicas"], surge["desired_replicas"],
        "{surge}"
    );
    assert!(surge_out.contains("\"event\":\"surge\""), "{surge_out}");
    assert!(
        plain["lowest_ready_replicas"].as_i64() < plain["desired_replicas"].as_i64(),
        "{plain}"
    );
}

/// `demo --scenario autoscaler`: the cluster is full, so the evicted replicas wait until the
/// simulated cluster-autoscaler adds a node (5 s after they found no room), and the story
/// goes on to the instance's end at its deadline and its node's removal.
#[tokio::test]
async fn the_autoscaler_story_brings_a_node_and_ends_with_the_instance() {
    let (lines, stdout) = demo(&["--scenario", "autoscaler"], 90).await;
    let first = |e: &str| {
        lines
            .iter()
            .find(|l| l["event"] == e)
            .unwrap_or_else(|| panic!("{e} missing from {stdout}"))
    };
    let t = |e: &str| first(e)["t"].as_f64().unwrap();
    let spot = first("notice")["node"].as_str().unwrap().to_owned();
    let added = first("node-added")["node"].as_str().unwrap().to_owned();
    assert!(t("waiting") < t("node-added"));
    // The demo looks every 100 ms: the group's 5 s boot, give or take its look.
    assert!(
        t("node-added") - t("waiting") >= 4.0,
        "the node comes after the group's 5 s boot: {stdout}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "rescheduled" && l["node"] == added.as_str()),
        "the evicted replicas run on the new node: {stdout}"
    );
    // The scenario's notice: 30 s.
    assert_eq!(first("notice")["seconds"], 30);
    assert!(t("drain-done") < 30.0, "drained before the deadline");
    assert!(
        t("instance-ended") >= 30.0,
        "the instance ends at its deadline, not before"
    );
    assert_eq!(first("instance-ended")["node"], spot.as_str());
    assert!(t("node-deleted") > t("instance-ended"));
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(summary["drain_succeeded"], true, "{summary}");
    assert_eq!(summary["nodes_added"], 1, "{summary}");
    assert!(summary["most_waiting"].as_u64().unwrap() >= 1, "{summary}");
    assert_eq!(summary["deleted_at_deadline"], 0, "{summary}");
}

/// `demo --cloud gce|azure`: the same story told by the other clouds' metadata services, with
/// their 30 seconds; on Azure the `Preempt` is acknowledged once the node is drained.
#[tokio::test]
async fn the_story_on_gce_and_azure() {
    let (gce, azure) = tokio::join!(
        demo(&["--cloud", "gce"], 60),
        demo(&["--cloud", "azure"], 60)
    );
    for (cloud, lines) in [("gce", &gce.0), ("azure", &azure.0)] {
        let first = |e: &str| {
            lines
                .iter()
                .find(|l| l["event"] == e)
                .unwrap_or_else(|| panic!("{cloud}: no {e}: {lines:?}"))
        };
        assert_eq!(first("notice")["cloud"], cloud);
        // That cloud's node names, not EC2's: the instance its metadata service describes.
        let node = first("notice")["node"].as_str().unwrap();
        let want = if cloud == "gce" {
            "gke-spot-pool-5f0c1a2b-x7kq"
        } else {
            "aks-spotpool-12345678-vmss000000"
        };
        assert_eq!(node, want);
        assert!(
            lines
                .iter()
                .filter(|l| l["event"] == "rescheduled")
                .all(|l| l["node"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(&want[..4]))),
            "{cloud}: {lines:?}"
        );
        assert_eq!(first("notice")["seconds"], 30);
        assert_eq!(first("detected")["kind"], "spot-interruption");
        let summary = &lines.last().unwrap()["summary"];
        assert_eq!(summary["drain_succeeded"], true, "{cloud}: {summary}");
        assert!(
            summary["deadline_slack_s"].as_f64().unwrap() > 0.0,
            "{cloud}: {summary}"
        );
        if cloud == "azure" {
            let acked = summary["acknowledged_s"].as_f64().unwrap();
            let drained = summary["drain_done_s"].as_f64().unwrap();
            assert!(acked >= drained && acked < 30.0, "{summary}");
            assert!(first("acknowledged")["seconds_early"].as_f64().unwrap() > 0.0);
        } else {
            assert!(summary["acknowledged_s"].is_null());
        }
    }
}

/// `demo --scenario capacity` (issue 31), on a compressed clock (a 30 s notice, nodes that
/// boot in 10 s): without reservations each budget step waits for a node and pods are
/// deleted at the deadline; with `--reserve-capacity` the autoscaler is asked for every node
/// at the notice, no pod is deleted at the deadline, and the replicas are back sooner.
#[tokio::test]
async fn capacity_first_beats_the_budget_steps_on_a_full_cluster() {
    let (lines, stdout) = demo(&["--scenario", "capacity", "--notice", "30s"], 150).await;
    let summary = &lines.last().unwrap()["summary"];
    let (without, reserve) = (&summary["without"], &summary["reserve"]);
    assert!(
        without["deleted_at_deadline"].as_u64().unwrap() > 0,
        "the baseline loses pods at the deadline: {stdout}"
    );
    assert_eq!(reserve["deleted_at_deadline"], 0, "{stdout}");
    assert!(
        reserve["replicas_back_s"].as_f64().unwrap() < without["replicas_back_s"].as_f64().unwrap(),
        "{stdout}"
    );
    assert!(
        reserve["most_placeholders"].as_u64().unwrap() >= 1,
        "{stdout}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "reserved" && l["story"] == "reserve"),
        "{stdout}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l["event"] == "reserved" && l["story"] == "without"),
        "{stdout}"
    );
}

/// `demo --mode queue`: the same cluster story fed through SQS on the built-in stand-in for
/// SQS, EC2 and Auto Scaling — a rebalance recommendation, the spot warning and the group's
/// terminate lifecycle action for one instance make one evacuation; the hook is answered
/// CONTINUE once, after the drain; every message is deleted, each after its action.
#[tokio::test]
async fn the_queue_story_runs_through_sqs_on_the_stand_in() {
    let (lines, stdout) = demo(&["--mode", "queue"], 90).await;
    let events: Vec<&str> = lines.iter().filter_map(|l| l["event"].as_str()).collect();
    let count = |e: &str| events.iter().filter(|x| **x == e).count();
    assert_eq!(count("message-sent"), 3, "{stdout}");
    for e in [
        "detected",
        "fenced",
        "drain-started",
        "evicted",
        "drain-done",
        "lifecycle-completed",
        "queue-empty",
        "replicas-back",
    ] {
        assert!(events.contains(&e), "{e} missing from {stdout}");
    }
    let kinds: Vec<&str> = lines
        .iter()
        .filter(|l| l["event"] == "detected")
        .filter_map(|l| l["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"rebalance-recommendation") && kinds.contains(&"spot-interruption"),
        "{kinds:?}"
    );
    assert_eq!(count("drain-started"), 1, "one evacuation: {stdout}");
    let at = |e: &str| {
        lines
            .iter()
            .find(|l| l["event"] == e)
            .and_then(|l| l["t"].as_f64())
            .unwrap()
    };
    assert!(at("lifecycle-completed") >= at("drain-done"), "{stdout}");
    let summary = &lines.iter().find(|l| l["summary"].is_object()).unwrap()["summary"];
    assert_eq!(summary["drain_succeeded"], true, "{summary}");
    let queue = &lines.last().unwrap()["queue"];
    let calls = queue["lifecycle_calls"].as_array().unwrap();
    let completed: Vec<&Value> = calls
        .iter()
        .filter(|c| c["action"] == "CompleteLifecycleAction")
        .collect();
    assert_eq!(completed.len(), 1, "{calls:?}");
    assert_eq!(completed[0]["result"], "CONTINUE");
    assert_eq!(completed[0]["hook"], "drain-before-terminate");
}

/// What the queue story cannot tell is refused at once with the reason, before anything
/// starts (it used to tell the plain story whatever was asked).
#[tokio::test]
async fn the_queue_story_refuses_what_it_cannot_tell() {
    for (args, says) in [
        (&["--cloud", "gce"][..], "--cloud aws"),
        (&["--scenario", "surge"][..], "without --scenario"),
        (&["--scenario", "capacity"][..], "without --scenario"),
        (&["--keep-running"][..], "without --view or --keep-running"),
    ] {
        let out = tokio::process::Command::new(crate::support::SIM_BIN)
            .args(["demo", "--mode", "queue"])
            .args(args)
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{args:?}: {err}"
        );
    }
}

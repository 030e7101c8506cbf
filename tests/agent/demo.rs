//! `demo` as a newcomer runs it: nothing installed, one command, exit 0 when the evicted
//! replicas run elsewhere.

use serde_json::Value;

#[tokio::test]
async fn demo_tells_the_whole_story_and_exits_zero() {
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::process::Command::new(crate::support::SIM_BIN)
            .args(["demo", "--json"])
            .env_remove("NODE_NAME")
            .output(),
    )
    .await
    .expect("the demo finishes within a minute")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
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
    // Times are relative to the notice and in order.
    let times: Vec<f64> = lines.iter().filter_map(|l| l["t"].as_f64()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(summary["drain_succeeded"], true);
    assert!(summary["evicted"].as_u64().unwrap() >= 1);
    assert!(summary["fence_s"].as_f64().unwrap() < 2.0);
    assert!(summary["deadline_slack_s"].as_f64().unwrap() > 60.0);
}

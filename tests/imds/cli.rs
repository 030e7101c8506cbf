//! `spot-interrupt-handler simulate imds` as a user runs it: a separate process, flags and
//! environment variables, its address on stdout, a clean exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use sih_imds::{ImdsClient, ImdsConfig, SpotAction};

const BIN: &str = env!("CARGO_BIN_EXE_spot-interrupt-handler-sim");

/// Starts the simulator process and returns it with the URL from its first stdout line.
fn spawn(args: &[&str], env: &[(&str, &str)]) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(["simulate", "imds", "--listen", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line names the address, got {line:?}"))
        .to_owned();
    (child, url)
}

fn terminate(mut child: Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    child.wait().unwrap()
}

#[tokio::test]
async fn scenario_flags_and_required_tokens_as_a_process() {
    let (child, url) = spawn(
        &[
            "--spot-action",
            "stop",
            "--spot-after",
            "0s",
            "--imdsv2",
            "required",
            "--instance-id",
            "i-0cafe",
        ],
        &[],
    );
    let client = ImdsClient::new(ImdsConfig {
        endpoint: url,
        v2_only: true,
        ..ImdsConfig::default()
    })
    .unwrap();
    let notice = client
        .spot_instance_action()
        .await
        .unwrap()
        .expect("notice at once");
    assert_eq!(notice.action, SpotAction::Stop);
    let lead = notice.time.unwrap().as_second() - jiff::Timestamp::now().as_second();
    assert!(
        (118..=120).contains(&lead),
        "default lead 120 s, got {lead}"
    );
    assert_eq!(client.identity().await.unwrap().instance_id, "i-0cafe");
    assert!(terminate(child).success(), "SIGTERM is a clean stop");
}

#[tokio::test]
async fn environment_variables_configure_the_simulator() {
    let (child, url) = spawn(
        &[],
        &[
            ("SIH_SIM_SPOT_ACTION", "hibernate"),
            (
                "SIH_SIM_SCHEDULED_EVENTS",
                "system-reboot@10m,instance-stop@1h",
            ),
            ("SIH_SIM_ASG_TERMINATE_AFTER", "0s"),
        ],
    );
    let client = ImdsClient::new(ImdsConfig {
        endpoint: url,
        ..ImdsConfig::default()
    })
    .unwrap();
    let snap = client.poll().await;
    assert_eq!(
        snap.spot_instance_action.unwrap().unwrap().action,
        SpotAction::Hibernate
    );
    let events = snap.scheduled_events.unwrap().events;
    let codes: Vec<&str> = events.iter().map(|e| e.code.as_str()).collect();
    assert_eq!(codes, ["system-reboot", "instance-stop"]);
    assert_eq!(
        snap.target_lifecycle_state.unwrap().map(|s| s.as_str()),
        Some("Terminated")
    );
    assert!(terminate(child).success());
}

#[test]
fn bad_flags_fail_with_a_clear_message() {
    for (args, says) in [
        (&["--spot-after", "soon"][..], "not a duration"),
        (&["--scheduled-event", "coffee@1m"][..], "unknown code"),
        (&["--imdsv2", "maybe"][..], "invalid value"),
        (&["--listen", "localhost"][..], "invalid"),
    ] {
        let out = Command::new(BIN)
            .args(["simulate", "imds"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn help_shows_each_flag_with_its_environment_variable() {
    let out = Command::new(BIN)
        .args(["simulate", "imds", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "SIH_SIM_IMDS_LISTEN",
        "SIH_SIM_SPOT_AFTER",
        "SIH_SIM_IMDSV2",
        "LOG_LEVEL",
    ] {
        assert!(
            help.contains(&format!("[env: {var}")),
            "--help mentions {var}"
        );
    }
}

#[tokio::test]
async fn aemm_defaults_serve_a_spot_notice_a_rebalance_and_a_started_event() {
    let (child, url) = spawn(&["--aemm-defaults"], &[]);
    let client = ImdsClient::new(ImdsConfig {
        endpoint: url,
        ..ImdsConfig::default()
    })
    .unwrap();
    let snap = client.poll().await;
    let spot = snap
        .spot_instance_action
        .expect("read")
        .expect("a spot notice at once");
    assert_eq!(spot.action, SpotAction::Terminate);
    assert!(snap.rebalance.expect("read").is_some());
    let events = snap.scheduled_events.expect("read").events;
    assert_eq!(events.len(), 1);
    assert!(
        events[0].not_before <= jiff::Timestamp::now(),
        "its window has already started"
    );
    assert!(events[0].not_after.is_some());
    // Times restated on every read, as amazon-ec2-metadata-mock serves them.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let again = client.spot_instance_action().await.unwrap().unwrap();
    assert!(again.time > spot.time);
    assert!(terminate(child).success());
}

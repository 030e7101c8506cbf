//! `spot-interrupt-handler simulate cluster` as a user starts it: a process with flags, a
//! kubeconfig written for kubectl, a workload file, its address on stdout.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_spot-interrupt-handler-sim");

#[test]
fn process_serves_the_workload_and_writes_a_kubeconfig() {
    let dir = std::env::temp_dir().join(format!("sih-cli-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    let workload = dir.join("workload.yaml");
    std::fs::write(&workload, "apiVersion: v1\nkind: Namespace\nmetadata: {name: team-a}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: solo, namespace: team-a}\nspec:\n  containers: [{name: c, image: busybox}]\n").unwrap();
    let mut child = Command::new(BIN)
        .args([
            "simulate",
            "cluster",
            "--listen",
            "127.0.0.1:0",
            "--nodes",
            "4",
            "--spot-nodes",
            "2",
        ])
        .arg("--kubeconfig-out")
        .arg(&kubeconfig)
        .arg("--workload")
        .arg(&workload)
        .env("SIH_SIM_FAULTS", "resource=pods,verb=delete,status=503")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("listening on http://127.0.0.1:"),
        "{line:?}"
    );

    let kubectl = |args: &[&str]| {
        let out = Command::new(std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()))
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        kubectl(&["get", "nodes", "-l", "lifecycle=Ec2Spot", "-o", "name"])
            .lines()
            .count(),
        2
    );
    assert_eq!(
        kubectl(&[
            "get",
            "nodes",
            "-l",
            "karpenter.sh/capacity-type=on-demand",
            "-o",
            "name"
        ])
        .lines()
        .count(),
        2
    );
    // `--fault` (here `SIH_SIM_FAULTS`) is active from the start: pod deletions answer 503.
    let refused = Command::new(std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()))
        .args(["delete", "pod", "solo", "-n", "team-a", "--wait=false"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("ServiceUnavailable"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let provider = kubectl(&["get", "nodes", "-o", "jsonpath={.items[0].spec.providerID}"]);
    assert!(provider.starts_with("aws:///us-east-1a/i-0"), "{provider}");
    assert!(kubectl(&["get", "pods", "-n", "team-a", "-o", "name"]).contains("pod/solo"));

    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert!(child.wait().unwrap().success(), "SIGTERM is a clean stop");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_start_up_input_fails_with_a_clear_message() {
    let dir = std::env::temp_dir().join(format!("sih-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases: [(&str, &[&str], &str); 4] = [
        (
            "",
            &["--fault", "resource=pods/eviction,hang,reset"],
            "choose one of status, hang, reset, drop, expire",
        ),
        (
            "kind: Widget\napiVersion: v9\nmetadata: {name: w}\n",
            &[],
            "not served",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p\n",
            &[],
            "invalid YAML",
        ),
        (
            "",
            &["--nodes", "1", "--spot-nodes", "2"],
            "more than --nodes",
        ),
    ];
    for (i, (yaml, args, says)) in cases.into_iter().enumerate() {
        let file = dir.join(format!("w{i}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        let out = Command::new(BIN)
            .args(["simulate", "cluster", "--listen", "127.0.0.1:0"])
            .args(args)
            .arg("--workload")
            .arg(&file)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{yaml:?}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

//! The live view in a real headless browser (Debian's chromium, driven through chromedriver
//! with fantoccini): during the demo it must show the spot node's pods going from Running to
//! Terminating and away, their replacements appearing on other nodes, the notice counting
//! down, and the fence on the node. A screenshot is kept (target/view-screenshot.png) and
//! checked not to be blank.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use crate::support::{SIM_BIN, free_port};

/// chromedriver on a free loopback port, stopped when dropped.
pub struct Driver {
    _child: tokio::process::Child,
    pub url: String,
    profile: std::path::PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Driver {
    pub async fn start() -> Self {
        let port = free_port();
        let bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let child = tokio::process::Command::new(&bin)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{bin} runs ({e}); ./scripts/test installs chromium and chromium-driver")
            });
        let url = format!("http://127.0.0.1:{port}");
        crate::support::until("chromedriver answers", Duration::from_secs(20), || async {
            reqwest::get(format!("{url}/status")).await.is_ok()
        })
        .await;
        let profile =
            std::env::temp_dir().join(format!("sih-chromium-{}-{port}", std::process::id()));
        Self {
            _child: child,
            url,
            profile,
        }
    }

    /// A headless browser session, as the machine's notes say chromium runs here: no sandbox
    /// (root), and none of the background connections a closed network refuses.
    pub async fn browser(&self, width: u32, height: u32) -> fantoccini::Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                format!("--window-size={width},{height}"),
                format!("--user-data-dir={}", self.profile.display()),
            ]}),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        fantoccini::ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a chromium session")
    }
}

/// What the page shows now, read off its DOM.
const LOOK: &str = r#"
const spot = document.querySelector('#group-spot .node');
const tiles = el => [...(el ? el.querySelectorAll('.pod:not(.daemon)') : [])];
return {
  stats: window.viewStats,
  spotNode: spot ? spot.dataset.node : null,
  spotPods: tiles(spot).map(e => ({pod: e.dataset.pod, state: e.dataset.state, evicted: e.classList.contains('evicted')})),
  badges: spot ? [...spot.querySelectorAll('.badge')].map(e => e.className) : [],
  countdown: spot && spot.querySelector('.countdown') ? spot.querySelector('.countdown').textContent : null,
  elsewhere: tiles(document.querySelector('#group-on-demand')).map(e => ({pod: e.dataset.pod, state: e.dataset.state})),
  timeline: [...document.querySelectorAll('#timeline li')].map(e => e.dataset.reason).filter(Boolean),
  lines: [...document.querySelectorAll('#timeline li[data-reason]')].map(e => ({
    reason: e.dataset.reason, when: e.querySelector('.when').textContent,
    clock: e.title, text: e.textContent})),
  startVisible: !document.getElementById('start').hidden,
  waitingShown: !document.getElementById('waiting').hidden,
  waitingPods: document.querySelectorAll('#waiting .pod').length,
  cards: [...document.querySelectorAll('.node')].map(e => ({
    tiles: e.querySelectorAll('.tiles .pod').length,
    counted: Number(e.querySelector('.podcount').dataset.tiles),
    says: e.querySelector('.podcount').textContent,
    breaksAt: e.querySelector('.name').querySelectorAll('wbr').length})),
};
"#;

#[tokio::test]
async fn the_view_shows_a_drain_as_it_happens() {
    let driver = Driver::start().await;
    let mut demo = tokio::process::Command::new(SIM_BIN)
        .args([
            "demo",
            "--json",
            "--view=127.0.0.1:0",
            "--start",
            "manual",
            "--notice",
            "20s",
        ])
        .env_remove("NODE_NAME")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(demo.stdout.take().unwrap()).lines();
    let (tx, mut said) = tokio::sync::mpsc::unbounded_channel::<Value>();
    tokio::spawn(async move {
        while let Ok(Some(l)) = lines.next_line().await {
            if let Ok(v) = serde_json::from_str(&l) {
                let _ = tx.send(v);
            }
        }
    });
    let url = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let v = said.recv().await.expect("the demo prints the view's URL");
            if v["event"] == "view" {
                return v["url"].as_str().unwrap().to_owned();
            }
        }
    })
    .await
    .expect("the view's URL within 30 s");

    let browser = driver.browser(1400, 1000).await;
    browser.goto(&url).await.unwrap();
    // A presenter's start: the button shows, and nothing happens until it is pressed.
    let shown = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let look = browser.execute(LOOK, vec![]).await.unwrap();
            if look["startVisible"] == true {
                return look;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the start button shows");
    assert_eq!(
        shown["waitingShown"], false,
        "an empty waiting area: {shown}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    while let Ok(v) = said.try_recv() {
        assert_ne!(
            v["event"], "notice",
            "the story began before the start button"
        );
    }
    browser
        .find(fantoccini::Locator::Css("#start"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let mut before: Option<HashSet<String>> = None;
    let (mut saw_running, mut saw_terminating, mut saw_evicted) = (false, false, false);
    let (mut countdown, mut fence, mut new_elsewhere) = (None, HashSet::new(), HashSet::new());
    let mut story_done = false;
    let mut last = Value::Null;
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut screenshot = None;
    while tokio::time::Instant::now() < end {
        while let Ok(v) = said.try_recv() {
            story_done |= v["event"] == "keep-running";
        }
        let look = browser.execute(LOOK, vec![]).await.unwrap();
        let spot_pods = look["spotPods"].as_array().cloned().unwrap_or_default();
        let elsewhere: HashSet<String> = look["elsewhere"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["pod"].as_str().map(str::to_owned))
            .collect();
        if before.is_none() && !spot_pods.is_empty() && !elsewhere.is_empty() {
            before = Some(elsewhere.clone());
        }
        if let Some(b) = &before {
            new_elsewhere.extend(elsewhere.difference(b).cloned());
        }
        saw_running |= spot_pods.iter().any(|p| p["state"] == "running");
        if spot_pods.iter().any(|p| p["state"] == "terminating") {
            saw_terminating = true;
            // Mid-drain: the picture the README shows.
            if screenshot.is_none() {
                screenshot = Some(browser.screenshot().await.unwrap());
            }
        }
        saw_evicted |= spot_pods.iter().any(|p| p["evicted"] == true);
        if let Some(c) = look["countdown"].as_str() {
            countdown.get_or_insert(c.to_owned());
        }
        for b in look["badges"].as_array().into_iter().flatten() {
            fence.insert(b.as_str().unwrap_or_default().to_owned());
        }
        let emptied = before.is_some() && spot_pods.is_empty();
        // Our Events reach the page a moment after the story's end (written from a queue,
        // then watched): the last one is awaited too.
        let told = look["timeline"].as_array().is_some_and(|t| {
            t.iter().any(|r| r == "DrainSucceeded") && t.iter().any(|r| r == "NodeDeleted")
        });
        // Every card counts what it shows; a waiting area shows only with pods in it.
        for c in look["cards"].as_array().into_iter().flatten() {
            assert_eq!(c["tiles"], c["counted"], "{c}");
        }
        assert_eq!(
            look["waitingShown"] == true,
            look["waitingPods"].as_u64() > Some(0),
            "{look}"
        );
        last = look;
        if story_done && emptied && saw_terminating && told {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        saw_running,
        "the spot node's pods were Running first: {last}"
    );
    assert!(saw_terminating, "then Terminating: {last}");
    assert!(saw_evicted, "marked evicted by us: {last}");
    assert!(
        new_elsewhere.len() >= 2,
        "the replacements appear on other nodes: {new_elsewhere:?}"
    );
    let countdown = countdown.expect("a countdown to the notice's deadline");
    assert!(countdown.ends_with("s left"), "{countdown}");
    for marker in ["badge cordon", "badge taint", "badge lb"] {
        assert!(fence.contains(marker), "{marker} missing from {fence:?}");
    }
    let timeline: Vec<&str> = last["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for reason in [
        "SpotInterruption",
        "Fenced",
        "PodEvicted",
        "DrainSucceeded",
        "Replaced",
        "InstanceReclaimed",
        "NodeDeleted",
    ] {
        assert!(
            timeline.contains(&reason),
            "{reason} missing from {timeline:?}"
        );
    }
    assert!(last["stats"]["connected"] == true, "{last}");
    // Each evicted pod is linked to its replacement; times read as the terminal's, from the
    // notice, with the clock time in the title; long node names break at their dots.
    let lines = last["lines"].as_array().unwrap();
    let replaced: Vec<&str> = lines
        .iter()
        .filter(|l| l["reason"] == "Replaced")
        .filter_map(|l| l["text"].as_str())
        .collect();
    assert!(
        replaced.len() >= 2
            && replaced
                .iter()
                .all(|t| t.contains("web-") && t.contains("→ ip-10-0-0-1")),
        "{replaced:?}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l["when"].as_str().is_some_and(|w| w.starts_with('+'))
                && l["clock"].as_str().is_some_and(|c| c.contains(':'))),
        "{lines:?}"
    );
    assert!(
        last["cards"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["breaksAt"].as_u64() > Some(0)),
        "{last}"
    );
    let png = screenshot.expect("a screenshot mid-drain");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // A blank 1400x1000 page compresses to a few kilobytes; this one has cards and tiles.
    assert!(
        png.len() > 30_000,
        "a blank screenshot? {} bytes",
        png.len()
    );
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/view-screenshot.png");
    std::fs::write(path, &png).unwrap();
    browser.close().await.unwrap();
    let _ = demo.kill().await;
}

// Its watches and its ClusterRole under the simulator and under the real API server.
crate::on_both_backends!(the_view_needs_only_its_clusterrole);

/// The view with nothing but its ClusterRole (HTTPS, tokens and RBAC on, the manifest applied
/// with kubectl): it sees every node and pod, then what changes, and no watch is refused.
async fn the_view_needs_only_its_clusterrole() {
    let s = crate::support::Scene::start_full(
        &[],
        Some((
            "view-clusterrole.yaml",
            "kube-system/spot-interrupt-handler-view",
        )),
        None,
    )
    .await;
    let mut view = tokio::process::Command::new(SIM_BIN)
        .args(["view", "--listen", "127.0.0.1:0", "--kubeconfig"])
        .arg(&s.kubeconfig)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(view.stdout.take().unwrap()).lines();
    let first = out.next_line().await.unwrap().unwrap();
    let url = first
        .strip_prefix("view on ")
        .expect("the URL first")
        .to_owned();
    let page = reqwest::get(&url).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("EventSource"));
    let mut updates = reqwest::get(format!("{url}updates")).await.unwrap();
    let mut buffer = String::new();
    let mut messages: Vec<Value> = Vec::new();
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut scaled = false;
    while tokio::time::Instant::now() < end {
        let chunk = tokio::time::timeout(Duration::from_secs(5), updates.chunk())
            .await
            .expect("updates flow")
            .unwrap()
            .expect("the stream stays open");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(i) = buffer.find("\n\n") {
            let event: String = buffer.drain(..i + 2).collect();
            if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                messages.push(serde_json::from_str(data).unwrap());
            }
        }
        // The first message may come before the watches have listed: wait for the pods.
        let pods_seen: usize = messages
            .iter()
            .map(|m| m["pods"].as_array().map_or(0, Vec::len))
            .sum();
        if !scaled && pods_seen >= 9 {
            // Something changes: the view says so.
            scaled = true;
            let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
                kube::Api::namespaced(s.client.clone(), "default");
            deployments
                .patch(
                    "web",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(json!({"spec": {"replicas": 7}})),
                )
                .await
                .unwrap();
        }
        if scaled && messages.iter().filter(|m| m["type"] == "delta").count() >= 1 {
            let names: HashSet<String> = messages
                .iter()
                .flat_map(|m| m["pods"].as_array().cloned().unwrap_or_default())
                .filter_map(|p| p["name"].as_str().map(str::to_owned))
                .collect();
            if names.iter().filter(|n| n.starts_with("web-")).count() >= 7 {
                break;
            }
        }
    }
    assert_eq!(messages[0]["type"], "snapshot", "{messages:?}");
    let nodes: HashSet<String> = messages
        .iter()
        .flat_map(|m| m["nodes"].as_array().cloned().unwrap_or_default())
        .filter_map(|n| n["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(nodes.len(), 3, "{messages:?}");
    let web: HashSet<String> = messages
        .iter()
        .flat_map(|m| m["pods"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .filter(|n| n.starts_with("web-"))
        .collect();
    assert!(web.len() >= 7, "the seventh replica is seen: {web:?}");
    let _ = view.kill().await;
    let mut err = String::new();
    use tokio::io::AsyncReadExt;
    view.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .await
        .unwrap();
    assert!(!err.contains("watch failed"), "a watch was refused: {err}");
}

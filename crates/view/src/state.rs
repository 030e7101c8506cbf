//! What the page knows, kept from the watches: nodes, pods, the last of our Events. Changes
//! are gathered into one delta message at most every [`FLUSH`]; a page that connects gets the
//! whole state first, then the deltas, with nothing lost or doubled between the two (both are
//! made under the same lock).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use crate::model::{EventView, NodeView, PodView, evicted_pod};

/// How often changes go out: a drain changes many pods in a moment, and one message for
/// them all keeps a page with 30 000 pods responsive.
pub const FLUSH: Duration = Duration::from_millis(200);
/// Events the timeline keeps.
const EVENTS: usize = 300;

#[derive(Default)]
struct Inner {
    nodes: BTreeMap<String, NodeView>,
    pods: HashMap<String, PodView>,
    events: VecDeque<EventView>,
    /// Pods (`namespace/name`) our Events say we evicted.
    evicted: HashSet<String>,
    changed_nodes: HashSet<String>,
    gone_nodes: HashSet<String>,
    changed_pods: HashSet<String>,
    gone_pods: HashSet<String>,
    new_events: Vec<EventView>,
    /// Objects seen since a watch (re)started its list, per kind: the rest are gone at its end.
    relisting: HashMap<&'static str, HashSet<String>>,
}

/// The shared state; cheap to clone.
#[derive(Clone)]
pub struct State {
    inner: Arc<Mutex<Inner>>,
    deltas: broadcast::Sender<Arc<str>>,
    /// A presenter's start (`demo --start manual`): `Some(false)` while the story waits for
    /// the page's button, `Some(true)` once pressed; `None` when nothing waits.
    start: Arc<watch::Sender<Option<bool>>>,
}

impl Default for State {
    fn default() -> Self {
        Self::new()
    }
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

impl State {
    pub fn new() -> Self {
        Self {
            inner: Default::default(),
            // A page that falls this far behind gets the whole state again.
            deltas: broadcast::channel(64).0,
            start: Arc::new(watch::channel(None).0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere mid-update leaves maps that are still maps.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn node(&self, v: NodeView) {
        let mut s = self.lock();
        if let Some(seen) = s.relisting.get_mut("node") {
            seen.insert(v.name.clone());
        }
        if s.nodes.get(&v.name) != Some(&v) {
            s.gone_nodes.remove(&v.name);
            s.changed_nodes.insert(v.name.clone());
            s.nodes.insert(v.name.clone(), v);
        }
    }

    pub fn node_gone(&self, name: &str) {
        let mut s = self.lock();
        if s.nodes.remove(name).is_some() {
            s.changed_nodes.remove(name);
            s.gone_nodes.insert(name.to_owned());
        }
    }

    pub fn pod(&self, mut v: PodView) {
        let mut s = self.lock();
        if let Some(seen) = s.relisting.get_mut("pod") {
            seen.insert(v.uid.clone());
        }
        v.evicted = s.evicted.contains(&format!("{}/{}", v.namespace, v.name));
        if s.pods.get(&v.uid) != Some(&v) {
            s.gone_pods.remove(&v.uid);
            s.changed_pods.insert(v.uid.clone());
            s.pods.insert(v.uid.clone(), v);
        }
    }

    pub fn pod_gone(&self, uid: &str) {
        let mut s = self.lock();
        if s.pods.remove(uid).is_some() {
            s.changed_pods.remove(uid);
            s.gone_pods.insert(uid.to_owned());
        }
    }

    pub fn event(&self, v: EventView) {
        let mut s = self.lock();
        if s.events
            .iter()
            .any(|e| e.uid == v.uid && e.message == v.message)
        {
            return;
        }
        if let Some(pod) = evicted_pod(&v)
            && s.evicted.insert(pod.to_owned())
            && let Some((ns, name)) = pod.split_once('/')
        {
            let inner = &mut *s;
            for p in inner.pods.values_mut() {
                if p.namespace == ns && p.name == name {
                    p.evicted = true;
                    inner.changed_pods.insert(p.uid.clone());
                }
            }
        }
        s.events.push_back(v.clone());
        s.new_events.push(v);
        while s.events.len() > EVENTS {
            s.events.pop_front();
        }
    }

    /// A watch of `kind` (`node`, `pod`) lists again: objects it does not list are gone.
    pub fn relist_started(&self, kind: &'static str) {
        if matches!(kind, "node" | "pod") {
            self.lock().relisting.insert(kind, HashSet::new());
        }
    }

    pub fn relist_done(&self, kind: &'static str) {
        let mut s = self.lock();
        let Some(seen) = s.relisting.remove(kind) else {
            return;
        };
        let gone: Vec<String> = match kind {
            "node" => s
                .nodes
                .keys()
                .filter(|k| !seen.contains(*k))
                .cloned()
                .collect(),
            "pod" => s
                .pods
                .keys()
                .filter(|k| !seen.contains(*k))
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        drop(s);
        for k in gone {
            match kind {
                "node" => self.node_gone(&k),
                _ => self.pod_gone(&k),
            }
        }
    }

    /// Everything, for a page that connects, with the deltas that follow it.
    pub fn subscribe(&self) -> (Arc<str>, broadcast::Receiver<Arc<str>>) {
        let s = self.lock();
        let rx = self.deltas.subscribe();
        let snapshot = json!({
            "type": "snapshot",
            "sentMs": now_ms(),
            "nodes": s.nodes.values().collect::<Vec<_>>(),
            "pods": s.pods.values().collect::<Vec<_>>(),
            "events": s.events,
        });
        (snapshot.to_string().into(), rx)
    }

    /// Sends what changed since the last flush, if anything did.
    pub fn flush(&self) {
        let mut s = self.lock();
        if s.changed_nodes.is_empty()
            && s.gone_nodes.is_empty()
            && s.changed_pods.is_empty()
            && s.gone_pods.is_empty()
            && s.new_events.is_empty()
        {
            return;
        }
        let nodes: Vec<&NodeView> = s
            .changed_nodes
            .iter()
            .filter_map(|n| s.nodes.get(n))
            .collect();
        let pods: Vec<&PodView> = s
            .changed_pods
            .iter()
            .filter_map(|p| s.pods.get(p))
            .collect();
        let delta: Value = json!({
            "type": "delta",
            "sentMs": now_ms(),
            "nodes": nodes,
            "nodesGone": s.gone_nodes,
            "pods": pods,
            "podsGone": s.gone_pods,
            "events": s.new_events,
        });
        s.changed_nodes.clear();
        s.gone_nodes.clear();
        s.changed_pods.clear();
        s.gone_pods.clear();
        s.new_events.clear();
        // Nobody watching is fine.
        let _ = self.deltas.send(delta.to_string().into());
    }

    /// Nodes and pods known now.
    pub fn counts(&self) -> (usize, usize) {
        let s = self.lock();
        (s.nodes.len(), s.pods.len())
    }

    /// Pages connected now.
    pub fn viewers(&self) -> usize {
        self.deltas.receiver_count()
    }

    /// Whether a story waits for the page's start button.
    pub fn awaits_start(&self) -> bool {
        *self.start.borrow() == Some(false)
    }

    /// The page's start button: true when it started a waiting story.
    pub fn press_start(&self) -> bool {
        self.start.send_if_modified(|s| {
            let waiting = *s == Some(false);
            if waiting {
                *s = Some(true);
            }
            waiting
        })
    }

    /// Shows the page's start button and waits until it is pressed (`demo --start manual`).
    pub async fn until_started(&self) {
        self.start.send_replace(Some(false));
        let mut rx = self.start.subscribe();
        let _ = rx.wait_for(|s| *s == Some(true)).await;
        self.start.send_replace(None);
    }

    /// Waits until a page is connected (the demo starts its story once someone looks).
    pub async fn until_viewed(&self, within: Duration) -> bool {
        let end = tokio::time::Instant::now() + within;
        while self.viewers() == 0 {
            if tokio::time::Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, name: &str, node: &str, state: &'static str) -> PodView {
        PodView {
            uid: uid.into(),
            namespace: "default".into(),
            name: name.into(),
            node: node.into(),
            state,
            daemon: false,
            placeholder: false,
            evicted: false,
            owner: String::new(),
        }
    }

    /// The page's start button starts only a story that waits for it, and only once.
    #[tokio::test]
    async fn a_start_button_starts_a_waiting_story_once() {
        let s = State::new();
        assert!(!s.awaits_start());
        assert!(!s.press_start(), "nothing waits yet");
        let waiting = tokio::spawn({
            let s = s.clone();
            async move { s.until_started().await }
        });
        while !s.awaits_start() {
            tokio::task::yield_now().await;
        }
        assert!(s.press_start());
        waiting.await.unwrap();
        assert!(!s.awaits_start());
        assert!(!s.press_start(), "pressed once");
    }

    fn next(rx: &mut broadcast::Receiver<Arc<str>>) -> Value {
        serde_json::from_str(&rx.try_recv().unwrap()).unwrap()
    }

    #[test]
    fn a_page_gets_the_state_then_only_what_changed() {
        let s = State::new();
        s.pod(pod("u1", "web-1", "n1", "running"));
        s.flush();
        let (snapshot, mut rx) = s.subscribe();
        let snapshot: Value = serde_json::from_str(&snapshot).unwrap();
        assert_eq!(snapshot["pods"][0]["uid"], "u1");
        // The same again is no change; a new state is one.
        s.pod(pod("u1", "web-1", "n1", "running"));
        s.flush();
        assert!(rx.try_recv().is_err(), "nothing changed, nothing sent");
        s.pod(pod("u1", "web-1", "n1", "terminating"));
        s.pod(pod("u2", "web-2", "n2", "starting"));
        s.flush();
        let d = next(&mut rx);
        assert_eq!(d["type"], "delta");
        assert_eq!(d["pods"].as_array().unwrap().len(), 2);
        s.pod_gone("u1");
        s.flush();
        assert_eq!(next(&mut rx)["podsGone"], json!(["u1"]));
    }

    #[test]
    fn an_eviction_event_marks_its_pod_and_a_relist_drops_what_is_gone() {
        let s = State::new();
        s.pod(pod("u1", "web-1", "n1", "terminating"));
        s.pod(pod("u2", "web-2", "n1", "running"));
        s.flush();
        let (_, mut rx) = s.subscribe();
        s.event(EventView {
            uid: "e1".into(),
            at_ms: 1,
            reason: "PodEvicted".into(),
            severity: "Normal".into(),
            object: "Pod/default/web-1".into(),
            message: "evicted".into(),
        });
        s.flush();
        let d = next(&mut rx);
        let evicted = PodView {
            evicted: true,
            ..pod("u1", "web-1", "n1", "terminating")
        };
        assert_eq!(d["pods"], json!([evicted]));
        assert_eq!(d["events"][0]["reason"], "PodEvicted");
        s.relist_started("pod");
        s.relist_started("event");
        s.pod(pod("u2", "web-2", "n1", "running"));
        s.relist_done("event");
        s.relist_done("pod");
        s.flush();
        assert_eq!(next(&mut rx)["podsGone"], json!(["u1"]));
    }
}

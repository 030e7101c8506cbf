//! The object store: every object as JSON under one lock, one global resourceVersion, a bounded
//! history of changes (so a watch can start from a resourceVersion) and a broadcast of new ones.
//!
//! Writes happen in a transaction closure that sees a consistent world; what it changes is
//! published in order before the lock is released, so watchers see resourceVersions ascend.
//! A transaction is not rolled back on error: callers validate before they write.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast};

use crate::error::ApiError;
use crate::resources::{NAMESPACES, NODES, PODS, RESOURCES};

/// `(namespace, name)`; the namespace is empty for cluster-scoped objects.
pub type Key = (String, String);
pub type Obj = Arc<Value>;

/// Receives every change committed after subscribing.
pub type Subscription = broadcast::Receiver<Arc<Change>>;

/// How many changes are kept for watches that resume from a resourceVersion.
/// Each entry holds an object's old and new versions, so this bounds memory too.
const HISTORY: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub storage: usize,
    pub kind: ChangeType,
    pub object: Obj,
    pub old: Option<Obj>,
}

pub struct Store {
    inner: Mutex<Inner>,
    changes: broadcast::Sender<Arc<Change>>,
    /// Wakes the controllers after any change.
    pub wake: Notify,
    /// What happened: requests (logged by the API) and pod ends (logged here, at commit).
    pub journal: crate::journal::Journal,
}

pub struct Inner {
    rv: u64,
    objects: Vec<BTreeMap<Key, Obj>>,
    pods_by_node: HashMap<String, BTreeSet<Key>>,
    /// Pods by the uid of their controlling owner.
    pods_by_owner: HashMap<String, BTreeSet<Key>>,
    history: VecDeque<Arc<Change>>,
}

/// A write transaction.
pub struct Tx<'a> {
    inner: &'a mut Inner,
    pending: Vec<Arc<Change>>,
}

impl Store {
    pub fn new() -> Arc<Self> {
        let (changes, _) = broadcast::channel(16_384);
        Arc::new(Self {
            inner: Mutex::new(Inner {
                rv: 1,
                objects: (0..RESOURCES.len()).map(|_| BTreeMap::new()).collect(),
                pods_by_node: HashMap::new(),
                pods_by_owner: HashMap::new(),
                history: VecDeque::new(),
            }),
            changes,
            wake: Notify::new(),
            journal: crate::journal::Journal::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock()
    }

    pub fn read<R>(&self, f: impl FnOnce(&Inner) -> R) -> R {
        f(&self.lock())
    }

    pub fn write<R>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<R, ApiError>,
    ) -> Result<R, ApiError> {
        let mut guard = self.lock();
        let mut tx = Tx {
            inner: &mut guard,
            pending: Vec::new(),
        };
        let result = f(&mut tx);
        let pending = std::mem::take(&mut tx.pending);
        let changed = !pending.is_empty();
        for change in pending {
            if change.storage == NODES {
                self.journal
                    .node_change(&change.object, change.kind == ChangeType::Deleted);
            }
            if change.storage == PODS {
                let new = (change.kind != ChangeType::Deleted).then_some(&*change.object);
                self.journal
                    .pod_change(change.old.as_deref(), new, |node: &str| {
                        guard.get(NODES, "", node).is_some()
                    });
            }
            if guard.history.len() >= HISTORY {
                guard.history.pop_front();
            }
            guard.history.push_back(change.clone());
            // No receiver is fine: nobody is watching.
            let _ = self.changes.send(change);
        }
        // Hand the lock to a waiting request: the control loop runs its transactions back to
        // back and would otherwise take the lock again before a waiting API request wakes.
        MutexGuard::unlock_fair(guard);
        if changed {
            self.wake.notify_one();
        }
        result
    }

    /// Changes of `storage` after `rv`, and a receiver for the ones to come. `None` when `rv`
    /// is older than the history kept (the client must list again: 410).
    pub fn watch_from(&self, rv: u64) -> Option<(Vec<Arc<Change>>, Subscription)> {
        let inner = self.lock();
        let rx = self.changes.subscribe();
        let oldest = inner.history.front().map(|c| c.rv).unwrap_or(inner.rv + 1);
        if rv + 1 < oldest && rv < inner.rv {
            return None;
        }
        let past = inner
            .history
            .iter()
            .filter(|c| c.rv > rv)
            .cloned()
            .collect();
        Some((past, rx))
    }

    /// Reads and subscribes under one lock, so no change falls between the two.
    pub fn read_and_subscribe<R>(
        &self,
        f: impl FnOnce(&Inner) -> R,
    ) -> (R, broadcast::Receiver<Arc<Change>>) {
        let inner = self.lock();
        let rx = self.changes.subscribe();
        (f(&inner), rx)
    }
}

impl Inner {
    pub fn rv(&self) -> u64 {
        self.rv
    }

    pub fn get(&self, storage: usize, ns: &str, name: &str) -> Option<&Obj> {
        self.objects[storage].get(&(ns.to_owned(), name.to_owned()))
    }

    /// Objects of a storage, in one namespace or all.
    pub fn list<'a>(
        &'a self,
        storage: usize,
        ns: Option<&'a str>,
    ) -> Box<dyn Iterator<Item = &'a Obj> + 'a> {
        let map = &self.objects[storage];
        match ns {
            Some(ns) => Box::new(
                map.range((ns.to_owned(), String::new())..)
                    .take_while(move |((n, _), _)| n == ns)
                    .map(|(_, o)| o),
            ),
            None => Box::new(map.values()),
        }
    }

    pub fn count(&self, storage: usize) -> usize {
        self.objects[storage].len()
    }

    /// The pods bound to a node, from the index (no scan of every pod).
    pub fn pods_on_node(&self, node: &str) -> Vec<&Obj> {
        self.pods_by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|k| self.objects[PODS].get(k))
            .collect()
    }

    /// How many pods are bound to a node (terminating ones included: they still hold their
    /// place until they are gone, as the scheduler sees it).
    pub fn pod_count_on_node(&self, node: &str) -> usize {
        self.pods_by_node.get(node).map_or(0, BTreeSet::len)
    }

    /// The pods whose controlling owner has this uid, from the index.
    pub fn pods_owned_by(&self, uid: &str) -> Vec<&Obj> {
        self.pods_by_owner
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|k| self.objects[PODS].get(k))
            .collect()
    }
}

impl Tx<'_> {
    pub fn get(&self, storage: usize, ns: &str, name: &str) -> Option<Obj> {
        self.inner.get(storage, ns, name).cloned()
    }

    pub fn view(&self) -> &Inner {
        self.inner
    }

    /// Creates an object: name (or `generateName`), uid, creation time, resourceVersion.
    pub fn create(&mut self, storage: usize, ns: &str, mut obj: Value) -> Result<Obj, ApiError> {
        let res = &RESOURCES[storage];
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        let name = match obj["metadata"]["name"].as_str() {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => match obj["metadata"]["generateName"].as_str() {
                Some(prefix) if !prefix.is_empty() => loop {
                    let candidate = format!("{prefix}{}", random_suffix());
                    if self.inner.get(storage, ns, &candidate).is_none() {
                        break candidate;
                    }
                },
                _ => {
                    return Err(ApiError::invalid(
                        &res.qualified(),
                        "",
                        "metadata.name: Required value: name or generateName is required",
                    ));
                }
            },
        };
        validate_name(&res.qualified(), &name)?;
        if res.namespaced && self.inner.get(NAMESPACES, "", ns).is_none() {
            return Err(ApiError::not_found("namespaces", ns));
        }
        if self.inner.get(storage, ns, &name).is_some() {
            return Err(ApiError::already_exists(&res.qualified(), &name));
        }
        let m = &mut obj["metadata"];
        m["name"] = json!(name);
        if res.namespaced {
            m["namespace"] = json!(ns);
        } else if let Some(m) = m.as_object_mut() {
            m.remove("namespace");
        }
        m["uid"] = json!(new_uid());
        m["creationTimestamp"] = json!(now_rfc3339());
        if obj.get("spec").is_some() {
            obj["metadata"]["generation"] = json!(1);
        }
        obj["apiVersion"] = json!(res.api_version());
        obj["kind"] = json!(res.kind);
        if storage == crate::resources::PODS {
            crate::api::defaults::admit_priority(self.inner, &mut obj)?;
        }
        crate::validation::validate(storage, &obj)?;
        Ok(self.commit(storage, (ns.to_owned(), name), obj, None))
    }

    /// Replaces an existing object with `new`, keeping its identity (uid, creation time);
    /// bumps `generation` when the spec changed. An unchanged object is not written (no new
    /// resourceVersion, no watch event), as on a real server.
    pub fn replace(
        &mut self,
        storage: usize,
        ns: &str,
        name: &str,
        mut new: Value,
    ) -> Result<Obj, ApiError> {
        let key = (ns.to_owned(), name.to_owned());
        let Some(old) = self.inner.objects[storage].get(&key).cloned() else {
            return Err(ApiError::not_found(&RESOURCES[storage].qualified(), name));
        };
        if !new["metadata"].is_object() {
            new["metadata"] = json!({});
        }
        for field in [
            "uid",
            "creationTimestamp",
            "name",
            "namespace",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            match old["metadata"].get(field) {
                Some(v) => new["metadata"][field] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(field);
                    }
                }
            }
        }
        let generation = old["metadata"]["generation"].as_i64();
        match generation {
            Some(g) if old.get("spec") != new.get("spec") => {
                new["metadata"]["generation"] = json!(g + 1)
            }
            Some(g) => new["metadata"]["generation"] = json!(g),
            None => {}
        }
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        new["apiVersion"] = old["apiVersion"].clone();
        new["kind"] = old["kind"].clone();
        if new == *old {
            return Ok(old);
        }
        crate::validation::validate(storage, &new)?;
        Ok(self.commit(storage, key, new, Some(old)))
    }

    /// Marks an object as being deleted (graceful deletion); the caller removes it later.
    pub fn mark_deleting(
        &mut self,
        storage: usize,
        ns: &str,
        name: &str,
        at: &str,
        grace: i64,
    ) -> Result<Obj, ApiError> {
        let key = (ns.to_owned(), name.to_owned());
        let Some(old) = self.inner.objects[storage].get(&key).cloned() else {
            return Err(ApiError::not_found(&RESOURCES[storage].qualified(), name));
        };
        let mut new = (*old).clone();
        new["metadata"]["deletionTimestamp"] = json!(at);
        new["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        Ok(self.commit(storage, key, new, Some(old)))
    }

    pub fn remove(&mut self, storage: usize, ns: &str, name: &str) -> Option<Obj> {
        let key = (ns.to_owned(), name.to_owned());
        let old = self.inner.objects[storage].remove(&key)?;
        if storage == PODS {
            self.index_pod(&key, Some(&old), None);
        }
        self.inner.rv += 1;
        let mut gone = (*old).clone();
        gone["metadata"]["resourceVersion"] = json!(self.inner.rv.to_string());
        let gone = Arc::new(gone);
        self.pending.push(Arc::new(Change {
            rv: self.inner.rv,
            storage,
            kind: ChangeType::Deleted,
            object: gone.clone(),
            old: Some(old),
        }));
        Some(gone)
    }

    fn commit(&mut self, storage: usize, key: Key, mut obj: Value, old: Option<Obj>) -> Obj {
        self.inner.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.inner.rv.to_string());
        let obj = Arc::new(obj);
        if storage == PODS {
            self.index_pod(&key, old.as_deref(), Some(&obj));
        }
        self.inner.objects[storage].insert(key, obj.clone());
        self.pending.push(Arc::new(Change {
            rv: self.inner.rv,
            storage,
            kind: if old.is_some() {
                ChangeType::Modified
            } else {
                ChangeType::Added
            },
            object: obj.clone(),
            old,
        }));
        obj
    }

    fn index_pod(&mut self, key: &Key, old: Option<&Value>, new: Option<&Value>) {
        let node_of = |p: Option<&Value>| {
            p.and_then(|p| p["spec"]["nodeName"].as_str())
                .map(str::to_owned)
        };
        reindex(
            &mut self.inner.pods_by_node,
            key,
            node_of(old),
            node_of(new),
        );
        let owner_of = |p: Option<&Value>| p.and_then(controller_uid).map(str::to_owned);
        reindex(
            &mut self.inner.pods_by_owner,
            key,
            owner_of(old),
            owner_of(new),
        );
    }
}

/// The uid of an object's controlling owner (what the owner index is keyed by).
pub fn controller_uid(obj: &Value) -> Option<&str> {
    obj["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)?["uid"]
        .as_str()
}

/// Moves `key` from the entry `before` to the entry `after` of an index.
fn reindex(
    index: &mut HashMap<String, BTreeSet<Key>>,
    key: &Key,
    before: Option<String>,
    after: Option<String>,
) {
    if before == after {
        return;
    }
    if let Some(b) = before
        && let Some(set) = index.get_mut(&b)
    {
        set.remove(key);
        if set.is_empty() {
            index.remove(&b);
        }
    }
    if let Some(a) = after {
        index.entry(a).or_default().insert(key.clone());
    }
}

/// DNS-1123 subdomain: what Kubernetes accepts for most object names.
fn validate_name(qualified: &str, name: &str) -> Result<(), ApiError> {
    let ok = name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name
            .as_bytes()
            .first()
            .is_some_and(u8::is_ascii_alphanumeric)
        && name
            .as_bytes()
            .last()
            .is_some_and(u8::is_ascii_alphanumeric);
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            qualified,
            name,
            format!(
                "metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            ),
        ))
    }
}

/// Five characters as the API server appends to `generateName`.
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
        .collect()
}

pub fn new_uid() -> String {
    let hex = |n: usize| -> String {
        (0..n)
            .map(|_| char::from(b"0123456789abcdef"[fastrand::usize(..16)]))
            .collect()
    };
    format!("{}-{}-4{}-a{}-{}", hex(8), hex(4), hex(3), hex(3), hex(12))
}

/// Kubernetes timestamps have second precision.
pub fn now_rfc3339() -> String {
    rfc3339(jiff::Timestamp::now())
}

pub fn rfc3339(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn parse_time(s: &str) -> Option<jiff::Timestamp> {
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::NODES;

    fn ns(tx: &mut Tx<'_>, name: &str) {
        tx.create(NAMESPACES, "", json!({"metadata": {"name": name}}))
            .unwrap();
    }

    #[test]
    fn create_stamps_identity_and_refuses_duplicates_and_missing_namespaces() {
        let store = Store::new();
        store
            .write(|tx| {
                ns(tx, "default");
                let pod = tx.create(
                    PODS,
                    "default",
                    json!({"metadata": {"generateName": "web-"}, "spec": {}}),
                )?;
                assert!(
                    pod["metadata"]["name"]
                        .as_str()
                        .unwrap()
                        .starts_with("web-")
                );
                assert_eq!(pod["metadata"]["generation"], 1);
                assert_eq!(pod["kind"], "Pod");
                let dup = tx
                    .create(NODES, "", json!({"metadata": {"name": "n1"}}))
                    .and_then(|_| tx.create(NODES, "", json!({"metadata": {"name": "n1"}})));
                assert_eq!(dup.unwrap_err().code, 409);
                let orphan = tx.create(PODS, "nowhere", json!({"metadata": {"name": "p"}}));
                assert_eq!(orphan.unwrap_err().code, 404);
                let bad = tx.create(NODES, "", json!({"metadata": {"name": "Bad_Name"}}));
                assert_eq!(bad.unwrap_err().code, 422);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn replace_bumps_generation_only_for_spec_and_skips_no_op_writes() {
        let store = Store::new();
        let (a, b, c) = store
            .write(|tx| {
                let a = tx.create(NODES, "", json!({"metadata": {"name": "n1"}, "spec": {}}))?;
                let b = tx.replace(NODES, "", "n1", json!({"metadata": {"name": "n1", "labels": {"x": "y"}}, "spec": {}}))?;
                let c = tx.replace(NODES, "", "n1", json!({"metadata": {"name": "n1", "labels": {"x": "y"}}, "spec": {"unschedulable": true}}))?;
                let same = tx.replace(NODES, "", "n1", (*c).clone())?;
                assert_eq!(same["metadata"]["resourceVersion"], c["metadata"]["resourceVersion"]);
                Ok((a, b, c))
            })
            .unwrap();
        assert_eq!(b["metadata"]["generation"], 1);
        assert_eq!(c["metadata"]["generation"], 2);
        assert_eq!(a["metadata"]["uid"], c["metadata"]["uid"]);
        assert_ne!(
            a["metadata"]["resourceVersion"],
            b["metadata"]["resourceVersion"]
        );
    }

    #[test]
    fn pod_index_follows_binding_and_removal() {
        let store = Store::new();
        store
            .write(|tx| {
                ns(tx, "default");
                tx.create(
                    PODS,
                    "default",
                    json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}}),
                )?;
                assert_eq!(tx.view().pods_on_node("n1").len(), 1);
                tx.replace(
                    PODS,
                    "default",
                    "p",
                    json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n2"}}),
                )?;
                assert!(tx.view().pods_on_node("n1").is_empty());
                assert_eq!(tx.view().pods_on_node("n2").len(), 1);
                tx.remove(PODS, "default", "p");
                assert!(tx.view().pods_on_node("n2").is_empty());
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn watch_history_resumes_after_a_version_and_expires() {
        let store = Store::new();
        let rv0 = store.read(|i| i.rv());
        store
            .write(|tx| tx.create(NODES, "", json!({"metadata": {"name": "n1"}})))
            .unwrap();
        store
            .write(|tx| tx.create(NODES, "", json!({"metadata": {"name": "n2"}})))
            .unwrap();
        let (past, _) = store.watch_from(rv0).unwrap();
        assert_eq!(past.len(), 2);
        let (past, _) = store.watch_from(rv0 + 1).unwrap();
        assert_eq!(past.len(), 1);
        assert_eq!(past[0].object["metadata"]["name"], "n2");
        for i in 0..HISTORY {
            store
                .write(|tx| tx.create(NODES, "", json!({"metadata": {"name": format!("x{i}")}})))
                .unwrap();
        }
        assert!(
            store.watch_from(rv0).is_none(),
            "too old: the client must relist"
        );
    }
}

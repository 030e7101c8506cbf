//! Faults on demand: the ways a real API server fails that a client must survive, matched to
//! requests by verb, resource (with subresource), namespace and name, for a fraction (`rate`)
//! of the next `count` matching requests, as the metadata simulator's faults are.
//!
//! - `status`: any code with a real `metav1.Status` body (429 carries `Retry-After`);
//! - `latency_ms`: answers late (alone, or before any other effect);
//! - `hang`: accepts and never answers, until the fault is cleared (then the connection is
//!   closed unanswered: a request a client gave up on must not take effect later) or the
//!   client gives up;
//! - `reset`: the answer starts, then the connection is closed mid-body;
//! - `drop` (watches): the stream ends after what it had to send first;
//! - `expire` (watches and lists): 410 Gone, `too old resource version`, as after compaction.
//!
//! Several faults may be active; the first that matches (in the order they were added) and
//! wins its `rate` roll applies. Each matching request counts against a fault's `count`
//! whether or not its roll won, and a fault whose count is spent is removed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;

/// What a fault does to a request it hits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Status {
        code: u16,
        retry_after: Option<u64>,
        message: Option<String>,
    },
    Hang,
    Reset,
    Drop,
    Expire,
    /// Only late (`latency_ms`).
    Late,
}

impl Effect {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Status { .. } => "status",
            Self::Hang => "hang",
            Self::Reset => "reset",
            Self::Drop => "drop",
            Self::Expire => "expire",
            Self::Late => "latency",
        }
    }
}

/// A fault as written in `POST /_sim/faults` or `--fault`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// RBAC verb: get, list, watch, create, update, patch, delete, deletecollection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verb: Option<String>,
    /// `pods`, `pods/eviction`, `nodes`, `events`, `leases`... (`*/eviction` for any
    /// resource's subresource; a plain name matches only requests without subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Seconds in `Retry-After` (and `details.retryAfterSeconds`); defaults to 1 with a 429
    /// (client-go then retries up to ten times by itself), none otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// The Status message, instead of the real server's usual one for the code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hang: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drop: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expire: bool,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

const VERBS: [&str; 8] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

impl FaultSpec {
    /// `{}` (nothing to match and nothing to do) means "clear every fault".
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The one effect, or why the spec makes no sense.
    pub fn effect(&self) -> Result<Effect, String> {
        let chosen = [
            self.status.is_some(),
            self.hang,
            self.reset,
            self.drop,
            self.expire,
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if chosen > 1 {
            return Err("choose one of status, hang, reset, drop, expire".into());
        }
        if let Some(code) = self.status {
            if !(400..=599).contains(&code) {
                return Err(format!("status {code}: a fault is an error code (400-599)"));
            }
            return Ok(Effect::Status {
                code,
                retry_after: self.retry_after.or((code == 429).then_some(1)),
                message: self.message.clone(),
            });
        }
        if self.retry_after.is_some() || self.message.is_some() {
            return Err("retry_after and message go with status".into());
        }
        Ok(if self.hang {
            Effect::Hang
        } else if self.reset {
            Effect::Reset
        } else if self.drop {
            Effect::Drop
        } else if self.expire {
            Effect::Expire
        } else if self.latency_ms > 0 {
            Effect::Late
        } else {
            return Err(
                "a fault needs an effect: status, latency_ms, hang, reset, drop or expire".into(),
            );
        })
    }

    fn validate(&self) -> Result<Effect, String> {
        if let Some(v) = &self.verb
            && !VERBS.contains(&v.as_str())
        {
            return Err(format!("unknown verb {v:?}; one of {}", VERBS.join(", ")));
        }
        if let Some(r) = self.rate
            && !(0.0..=1.0).contains(&r)
        {
            return Err("rate must be between 0 and 1".into());
        }
        if self.count == Some(0) {
            return Err("count must be at least 1 (leave it out for every request)".into());
        }
        let effect = self.effect()?;
        if matches!(effect, Effect::Drop) && self.verb.as_deref().is_some_and(|v| v != "watch") {
            return Err("drop ends a watch stream: verb must be watch".into());
        }
        Ok(effect)
    }

    /// `--fault` in either form: the JSON object, or `key=value` pairs separated by commas
    /// (`resource=pods/eviction,verb=create,hang`; a bare key is `true`).
    pub fn parse_flag(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let value: Value = if s.starts_with('{') {
            serde_json::from_str(s).map_err(|e| format!("invalid fault JSON: {e}"))?
        } else {
            let mut obj = serde_json::Map::new();
            for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (k, v) = match part.split_once('=') {
                    Some((k, v)) => (k.trim(), v.trim()),
                    None => (part, "true"),
                };
                let v = if let Ok(n) = v.parse::<u64>() {
                    json!(n)
                } else if let Ok(f) = v.parse::<f64>() {
                    json!(f)
                } else if let Ok(b) = v.parse::<bool>() {
                    json!(b)
                } else {
                    json!(v)
                };
                obj.insert(k.to_owned(), v);
            }
            Value::Object(obj)
        };
        let spec: Self =
            serde_json::from_value(value).map_err(|e| format!("invalid fault: {e}"))?;
        spec.validate()?;
        Ok(spec)
    }
}

/// The request a fault is matched against.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    pub verb: &'a str,
    /// `(plural, subresource)` for a resource request.
    pub resource: Option<(&'a str, Option<&'a str>)>,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

fn resource_matches(want: &str, got: Option<(&str, Option<&str>)>) -> bool {
    if want == "*" {
        return true;
    }
    let Some((plural, sub)) = got else {
        return false;
    };
    match want.split_once('/') {
        Some((p, s)) => (p == "*" || p == plural) && (s == "*" || Some(s) == sub),
        None => want == plural && sub.is_none(),
    }
}

impl FaultSpec {
    fn matches(&self, r: &RequestInfo<'_>) -> bool {
        self.verb.as_deref().is_none_or(|v| v == r.verb)
            && self
                .resource
                .as_deref()
                .is_none_or(|w| resource_matches(w, r.resource))
            && self
                .namespace
                .as_deref()
                .is_none_or(|n| Some(n) == r.namespace)
            && self.name.as_deref().is_none_or(|n| Some(n) == r.name)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ActiveFault {
    pub id: u64,
    #[serde(flatten)]
    pub spec: FaultSpec,
    /// Matching requests still to come (`None`: every one).
    pub remaining: Option<u32>,
    /// Requests this fault has hit so far.
    pub hits: u64,
    #[serde(skip)]
    effect: Effect,
}

/// The fault chosen for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    pub id: u64,
    pub latency: Duration,
    pub effect: Effect,
}

pub struct Faults {
    active: Mutex<Vec<ActiveFault>>,
    next_id: AtomicU64,
    /// Bumped on every clear or removal, so hanging requests can end.
    cleared: watch::Sender<u64>,
    /// Hits per effect since start, for reports.
    totals: Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            active: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            cleared: watch::channel(0).0,
            totals: Mutex::new(Default::default()),
        }
    }
}

impl Faults {
    /// Adds a fault; its id lets it be removed alone.
    pub fn add(&self, spec: FaultSpec) -> Result<u64, String> {
        let effect = spec.validate()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.active.lock().push(ActiveFault {
            id,
            remaining: spec.count,
            spec,
            hits: 0,
            effect,
        });
        Ok(id)
    }

    pub fn clear(&self) -> usize {
        let n = std::mem::take(&mut *self.active.lock()).len();
        self.cleared.send_modify(|g| *g += 1);
        n
    }

    pub fn remove(&self, id: u64) -> bool {
        let mut active = self.active.lock();
        let before = active.len();
        active.retain(|f| f.id != id);
        let removed = active.len() != before;
        drop(active);
        if removed {
            self.cleared.send_modify(|g| *g += 1);
        }
        removed
    }

    pub fn list(&self) -> Vec<ActiveFault> {
        self.active.lock().clone()
    }

    /// How many requests each kind of fault has hit since start.
    pub fn totals(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.totals.lock().clone()
    }

    /// Whether fault `id` is still active.
    pub fn is_active(&self, id: u64) -> bool {
        self.active.lock().iter().any(|f| f.id == id)
    }

    /// Resolves once fault `id` has been cleared or removed.
    pub async fn until_gone(&self, id: u64) {
        let mut rx = self.cleared.subscribe();
        while self.is_active(id) {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// The fault for one request, if any hits it.
    pub fn pick(&self, r: &RequestInfo<'_>) -> Option<Chosen> {
        let mut active = self.active.lock();
        let mut chosen = None;
        for f in active.iter_mut() {
            if !f.spec.matches(r) {
                continue;
            }
            // A drop or an expiry only means something for a watch (expiry: or a list).
            let applies = match f.effect {
                Effect::Drop => r.verb == "watch",
                Effect::Expire => matches!(r.verb, "watch" | "list"),
                _ => true,
            };
            if !applies {
                continue;
            }
            if let Some(n) = &mut f.remaining {
                *n = n.saturating_sub(1);
            }
            if chosen.is_none() && fastrand::f64() < f.spec.rate.unwrap_or(1.0) {
                f.hits += 1;
                chosen = Some(Chosen {
                    id: f.id,
                    latency: Duration::from_millis(f.spec.latency_ms),
                    effect: f.effect.clone(),
                });
            }
        }
        let before = active.len();
        active.retain(|f| f.remaining != Some(0));
        let spent = active.len() != before;
        drop(active);
        if spent {
            self.cleared.send_modify(|g| *g += 1);
        }
        if let Some(c) = &chosen {
            *self.totals.lock().entry(c.effect.label()).or_default() += 1;
        }
        chosen
    }
}

/// The `metav1.Status` a real API server sends with `code`.
pub fn status_error(code: u16, message: Option<&str>) -> crate::error::ApiError {
    let (reason, usual) = match code {
        400 => (
            "BadRequest",
            "the server rejected our request for an unknown reason",
        ),
        401 => ("Unauthorized", "Unauthorized"),
        403 => ("Forbidden", "forbidden"),
        404 => (
            "NotFound",
            "the server could not find the requested resource",
        ),
        405 => (
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        ),
        409 => (
            "Conflict",
            "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again",
        ),
        410 => ("Expired", "too old resource version"),
        422 => (
            "Invalid",
            "the server rejected our request due to an error in our request",
        ),
        429 => (
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later",
        ),
        500 => (
            "InternalError",
            "an error on the server (\"\") has prevented the request from succeeding",
        ),
        503 => (
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        ),
        504 => (
            "Timeout",
            "the server was unable to return a response in the time allotted, but may still be processing the request",
        ),
        _ => ("", "the server reported an error"),
    };
    crate::error::ApiError::custom(code, reason, message.unwrap_or(usual))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(verb: &'a str, res: &'a str, sub: Option<&'a str>) -> RequestInfo<'a> {
        RequestInfo {
            verb,
            resource: Some((res, sub)),
            namespace: Some("default"),
            name: Some("web-1"),
        }
    }

    #[test]
    fn flags_parse_in_both_forms_and_bad_ones_say_why() {
        let a = FaultSpec::parse_flag("resource=pods/eviction,verb=create,hang").unwrap();
        assert!(a.hang);
        assert_eq!(a.resource.as_deref(), Some("pods/eviction"));
        let b = FaultSpec::parse_flag(r#"{"status":429,"rate":0.5,"count":3}"#).unwrap();
        assert_eq!(
            b.effect().unwrap(),
            Effect::Status {
                code: 429,
                retry_after: Some(1),
                message: None
            }
        );
        for bad in [
            "hang,reset",
            "status=200",
            "verb=frobnicate,hang",
            "rate=2,hang",
            "count=0,hang",
            "drop,verb=get",
            "resource=pods",
            "nonsense=1,hang",
        ] {
            assert!(FaultSpec::parse_flag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn matching_by_verb_resource_subresource_namespace_and_name() {
        let f = Faults::default();
        f.add(FaultSpec::parse_flag("resource=pods/eviction,status=503").unwrap())
            .unwrap();
        assert!(f.pick(&req("create", "pods", Some("eviction"))).is_some());
        assert!(f.pick(&req("create", "pods", None)).is_none());
        assert!(f.pick(&req("get", "nodes", None)).is_none());
        f.clear();
        f.add(FaultSpec::parse_flag("resource=pods,namespace=kube-system,latency_ms=5").unwrap())
            .unwrap();
        assert!(
            f.pick(&req("get", "pods", None)).is_none(),
            "other namespace"
        );
        f.clear();
        f.add(FaultSpec::parse_flag("resource=*/eviction,name=web-1,reset").unwrap())
            .unwrap();
        assert_eq!(
            f.pick(&req("create", "pods", Some("eviction")))
                .map(|c| c.effect),
            Some(Effect::Reset)
        );
    }

    #[test]
    fn count_and_rate_bound_a_fault_and_watch_only_effects_skip_other_verbs() {
        let f = Faults::default();
        f.add(FaultSpec::parse_flag("status=500,count=2").unwrap())
            .unwrap();
        assert!(f.pick(&req("get", "pods", None)).is_some());
        assert!(f.pick(&req("get", "pods", None)).is_some());
        assert!(f.pick(&req("get", "pods", None)).is_none(), "spent");
        assert!(f.list().is_empty());
        f.add(FaultSpec::parse_flag("status=500,rate=0").unwrap())
            .unwrap();
        assert!(f.pick(&req("get", "pods", None)).is_none());
        f.clear();
        f.add(FaultSpec::parse_flag("drop").unwrap()).unwrap();
        assert!(f.pick(&req("get", "pods", None)).is_none());
        assert_eq!(
            f.pick(&req("watch", "pods", None)).map(|c| c.effect),
            Some(Effect::Drop)
        );
        assert_eq!(f.totals().get("drop"), Some(&1));
    }

    #[tokio::test]
    async fn a_hang_ends_when_its_fault_is_cleared() {
        let f = std::sync::Arc::new(Faults::default());
        let id = f.add(FaultSpec::parse_flag("hang").unwrap()).unwrap();
        let waiter = {
            let f = f.clone();
            tokio::spawn(async move { f.until_gone(id).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        f.clear();
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("released")
            .unwrap();
    }
}

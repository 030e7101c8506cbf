//! Google Compute Engine's metadata server as an instance sees it.
//!
//! Served as GCE serves it: every request needs `Metadata-Flavor: Google` (403 without it, as
//! with an `X-Forwarded-For`), answers carry `Metadata-Flavor: Google` and an `ETag` per value,
//! directories list their children, `?alt=json` quotes a value, and
//! `?wait_for_change=true[&last_etag=E][&timeout_sec=N]` holds the request until the value
//! differs from the one `E` names (at once if it already does; without `E`, until the next
//! change) or `N` seconds pass, then answers the value as it is.
//!
//! Control API: `POST /_sim/preempt {"after_ms"}`, `POST /_sim/maintenance {"value",
//! "for_seconds"}`, `POST /_sim/values {"path","value"}`, `POST /_sim/faults`, `POST
//! /_sim/reset`, `GET|DELETE /_sim/requests`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::common::{Journal, Journaled, Running, journal_routes, json_body, serve_router};

const ROOT: &str = "/computeMetadata/v1/";
/// GCE's longest watch when the client names none.
const DEFAULT_WATCH: Duration = Duration::from_secs(300);

/// The instance the simulator pretends to be.
#[derive(Debug, Clone)]
pub struct Identity {
    pub id: String,
    pub name: String,
    pub zone: String,
    pub project_id: String,
    pub numeric_project_id: String,
    pub machine_type: String,
    pub preemptible: bool,
    pub ip: String,
}

impl Default for Identity {
    fn default() -> Self {
        Self {
            id: "4520031799277581759".into(),
            name: "gke-spot-pool-5f0c1a2b-x7kq".into(),
            zone: "us-central1-a".into(),
            project_id: "rehearsal-project".into(),
            numeric_project_id: "123456789012".into(),
            machine_type: "e2-standard-4".into(),
            preemptible: true,
            ip: "10.128.0.12".into(),
        }
    }
}

/// What happens on its own after start.
#[derive(Debug, Clone, Default)]
pub struct Scenario {
    /// `instance/preempted` turns `TRUE` this long after start.
    pub preempt_after: Option<Duration>,
    /// `instance/maintenance-event` turns to this value this long after start.
    pub maintenance: Option<(String, Duration)>,
}

#[derive(Debug, Clone, Default)]
pub struct Config {
    pub identity: Identity,
    pub scenario: Scenario,
}

struct Item {
    value: String,
    etag: String,
}

struct World {
    items: BTreeMap<String, Item>,
    changes: u64,
}

impl World {
    fn new(id: &Identity) -> Self {
        let mut w = Self {
            items: BTreeMap::new(),
            changes: 0,
        };
        let project_zone = format!("projects/{}/zones/{}", id.numeric_project_id, id.zone);
        let leaves = [
            ("instance/id", id.id.clone()),
            ("instance/name", id.name.clone()),
            (
                "instance/hostname",
                format!("{}.{}.c.{}.internal", id.name, id.zone, id.project_id),
            ),
            ("instance/zone", project_zone),
            (
                "instance/machine-type",
                format!(
                    "projects/{}/machineTypes/{}",
                    id.numeric_project_id, id.machine_type
                ),
            ),
            ("instance/network-interfaces/0/ip", id.ip.clone()),
            (
                "instance/scheduling/preemptible",
                if id.preemptible { "TRUE" } else { "FALSE" }.into(),
            ),
            (
                "instance/scheduling/on-host-maintenance",
                if id.preemptible {
                    "TERMINATE"
                } else {
                    "MIGRATE"
                }
                .into(),
            ),
            ("instance/preempted", "FALSE".into()),
            ("instance/maintenance-event", "NONE".into()),
            ("project/project-id", id.project_id.clone()),
            ("project/numeric-project-id", id.numeric_project_id.clone()),
        ];
        for (path, value) in leaves {
            w.set(path, value);
        }
        w
    }

    /// Sets a value; a new value gets a new ETag, the same value keeps its own.
    fn set(&mut self, path: &str, value: String) -> bool {
        if self.items.get(path).is_some_and(|i| i.value == value) {
            return false;
        }
        self.changes += 1;
        let etag = format!(
            "{:016x}",
            self.changes.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ fastrand::u64(..)
        );
        self.items.insert(path.to_owned(), Item { value, etag });
        true
    }

    /// Directory `dir` as GCE's `?recursive=true` serves it: JSON, names in camelCase,
    /// numbered directories as arrays.
    fn tree(&self, dir: &str) -> Option<serde_json::Value> {
        use serde_json::{Map, Value};
        fn camel(name: &str) -> String {
            let mut out = String::new();
            let mut up = false;
            for c in name.chars() {
                if c == '-' {
                    up = true;
                } else if up {
                    out.extend(c.to_uppercase());
                    up = false;
                } else {
                    out.push(c);
                }
            }
            out
        }
        fn insert(into: &mut Map<String, Value>, parts: &[&str], value: &str) {
            match parts {
                [] => {}
                [leaf] => {
                    into.insert(camel(leaf), Value::String(value.to_owned()));
                }
                [d, rest @ ..] => {
                    let child = into
                        .entry(camel(d))
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(m) = child {
                        insert(m, rest, value);
                    }
                }
            }
        }
        fn arrays(v: Value) -> Value {
            match v {
                Value::Object(m) => {
                    let numbered = !m.is_empty() && m.keys().all(|k| k.parse::<usize>().is_ok());
                    if numbered {
                        let mut items: Vec<(usize, Value)> = m
                            .into_iter()
                            .map(|(k, v)| (k.parse().unwrap_or(0), arrays(v)))
                            .collect();
                        items.sort_by_key(|(k, _)| *k);
                        Value::Array(items.into_iter().map(|(_, v)| v).collect())
                    } else {
                        Value::Object(m.into_iter().map(|(k, v)| (k, arrays(v))).collect())
                    }
                }
                other => other,
            }
        }
        let mut root = Map::new();
        for (k, item) in &self.items {
            if let Some(rest) = k.strip_prefix(dir) {
                insert(&mut root, &rest.split('/').collect::<Vec<_>>(), &item.value);
            }
        }
        (!root.is_empty()).then(|| arrays(Value::Object(root)))
    }

    /// The children of directory `dir` (`instance/`), directories with a trailing `/`.
    fn children(&self, dir: &str) -> Option<String> {
        let names: BTreeSet<String> = self
            .items
            .keys()
            .filter_map(|k| k.strip_prefix(dir))
            .map(|rest| match rest.split_once('/') {
                Some((d, _)) => format!("{d}/"),
                None => rest.to_owned(),
            })
            .collect();
        (!names.is_empty() || dir.is_empty()).then(|| {
            names.into_iter().fold(String::new(), |mut s, n| {
                s.push_str(&n);
                s.push('\n');
                s
            })
        })
    }
}

pub(crate) struct App {
    world: Mutex<World>,
    changed: watch::Sender<u64>,
    identity: Identity,
    journal: Journal,
}

impl Journaled for App {
    fn journal(&self) -> &Journal {
        &self.journal
    }
}

impl App {
    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, path: &str, value: &str) {
        let mut w = self.world();
        if w.set(path, value.to_owned()) {
            let n = w.changes;
            drop(w);
            self.changed.send_replace(n);
        }
    }
}

fn flavored(status: StatusCode, content_type: &'static str, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert("Metadata-Flavor", HeaderValue::from_static("Google"));
    h.insert("Content-Type", HeaderValue::from_static(content_type));
    r
}

#[derive(Default)]
struct Query {
    wait: bool,
    last_etag: Option<String>,
    timeout: Option<Duration>,
    json: bool,
    recursive: bool,
}

fn query(uri: &Uri) -> Query {
    let mut q = Query::default();
    for pair in uri.query().unwrap_or_default().split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "wait_for_change" => q.wait = v.eq_ignore_ascii_case("true"),
            "last_etag" if !v.is_empty() => q.last_etag = Some(v.to_owned()),
            "timeout_sec" => q.timeout = v.parse().ok().map(Duration::from_secs),
            "alt" => q.json = v == "json",
            "recursive" => q.recursive = v.eq_ignore_ascii_case("true"),
            _ => {}
        }
    }
    q
}

async fn metadata(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path().to_owned();
    let logged = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| path.clone());
    let response = match app.journal.play().await {
        Some(status) => flavored(status, "text/html", format!("simulated {status}\n")),
        None => answer(&app, &method, &uri, &headers).await,
    };
    app.journal
        .record(method.as_str(), &logged, response.status().as_u16(), None);
    response
}

async fn answer(app: &App, method: &Method, uri: &Uri, headers: &HeaderMap) -> Response {
    if headers.contains_key("x-forwarded-for") {
        return flavored(StatusCode::FORBIDDEN, "text/html", "Forbidden\n".into());
    }
    let path = uri.path();
    if path == "/" {
        // What Google's client libraries ping to learn they are on GCE.
        return flavored(
            StatusCode::OK,
            "application/text",
            "computeMetadata/\n".into(),
        );
    }
    let flavor = headers
        .get("metadata-flavor")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("google"));
    if !flavor {
        return flavored(
            StatusCode::FORBIDDEN,
            "text/html",
            "Missing required header: Metadata-Flavor\n".into(),
        );
    }
    if method != Method::GET {
        return flavored(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/html",
            "Method not allowed\n".into(),
        );
    }
    let Some(item) = path
        .strip_prefix(ROOT)
        .or((path == "/computeMetadata/v1").then_some(""))
    else {
        return flavored(StatusCode::NOT_FOUND, "text/html", "Not Found\n".into());
    };
    let q = query(uri);
    if item.is_empty() || item.ends_with('/') {
        if q.recursive {
            return match app.world().tree(item) {
                Some(tree) => flavored(StatusCode::OK, "application/json", tree.to_string()),
                None => flavored(StatusCode::NOT_FOUND, "text/html", "Not Found\n".into()),
            };
        }
        return match app.world().children(item) {
            Some(list) => flavored(StatusCode::OK, "application/text", list),
            None => flavored(StatusCode::NOT_FOUND, "text/html", "Not Found\n".into()),
        };
    }
    let mut changed = app.changed.subscribe();
    let current = |app: &App| {
        app.world()
            .items
            .get(item)
            .map(|i| (i.value.clone(), i.etag.clone()))
    };
    let Some((mut value, mut etag)) = current(app) else {
        return match app.world().children(&format!("{item}/")) {
            // A directory named without its slash: GCE redirects to it.
            Some(_) => {
                let mut r = flavored(StatusCode::MOVED_PERMANENTLY, "text/html", String::new());
                if let Ok(v) = HeaderValue::from_str(&format!("{path}/")) {
                    r.headers_mut().insert("Location", v);
                }
                r
            }
            None => flavored(StatusCode::NOT_FOUND, "text/html", "Not Found\n".into()),
        };
    };
    if q.wait {
        let baseline = q.last_etag.clone().unwrap_or_else(|| etag.clone());
        let until = tokio::time::Instant::now() + q.timeout.unwrap_or(DEFAULT_WATCH);
        while etag == baseline {
            match tokio::time::timeout_at(until, changed.changed()).await {
                Ok(Ok(())) => {}
                // Timed out (or the server stops): the value as it is.
                _ => break,
            }
            if let Some((v, e)) = current(app) {
                (value, etag) = (v, e);
            }
        }
    }
    let mut r = if q.json {
        flavored(
            StatusCode::OK,
            "application/json",
            serde_json::Value::String(value).to_string(),
        )
    } else {
        flavored(StatusCode::OK, "application/text", value)
    };
    if let Ok(v) = HeaderValue::from_str(&etag) {
        r.headers_mut().insert("ETag", v);
    }
    r
}

type Reply = Result<Response, (StatusCode, String)>;

fn ok(v: serde_json::Value) -> Reply {
    Ok(axum::Json(v).into_response())
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Preempt {
    after_ms: u64,
}

async fn preempt(State(app): State<Arc<App>>, b: Bytes) -> Reply {
    let p: Preempt = json_body(&b)?;
    let after = Duration::from_millis(p.after_ms);
    spawn_preempt(app, after);
    ok(serde_json::json!({ "preempted_in_ms": p.after_ms }))
}

fn spawn_preempt(app: Arc<App>, after: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        app.set("instance/preempted", "TRUE");
        tracing::info!(instance = %app.identity.name, "preempted: instance/preempted is TRUE");
    });
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MaintenanceBody {
    value: String,
    /// Back to `NONE` after this long (the maintenance is over).
    #[serde(default)]
    for_seconds: Option<u64>,
}

async fn maintenance(State(app): State<Arc<App>>, b: Bytes) -> Reply {
    let m: MaintenanceBody = json_body(&b)?;
    app.set("instance/maintenance-event", &m.value);
    tracing::info!(value = %m.value, "maintenance-event changed");
    if let Some(secs) = m.for_seconds {
        let app = app.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            app.set("instance/maintenance-event", "NONE");
            tracing::info!("maintenance over: maintenance-event is NONE");
        });
    }
    ok(serde_json::json!({ "value": m.value }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetValue {
    path: String,
    value: String,
}

async fn values(State(app): State<Arc<App>>, b: Bytes) -> Reply {
    let v: SetValue = json_body(&b)?;
    let path = v.path.trim_start_matches('/');
    if path.is_empty() || path.ends_with('/') {
        return Err((StatusCode::BAD_REQUEST, "path must name a value\n".into()));
    }
    app.set(path, &v.value);
    ok(serde_json::json!({ "path": path, "value": v.value }))
}

async fn reset(State(app): State<Arc<App>>) -> Reply {
    app.set("instance/preempted", "FALSE");
    app.set("instance/maintenance-event", "NONE");
    app.journal.clear_faults();
    ok(serde_json::json!({}))
}

async fn value_of(State(app): State<Arc<App>>, Path(path): Path<String>) -> Reply {
    match app.world().items.get(&path) {
        Some(i) => ok(serde_json::json!({ "value": i.value, "etag": i.etag })),
        None => Err((StatusCode::NOT_FOUND, format!("no value {path}\n"))),
    }
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/_sim/preempt", post(preempt))
        .route("/_sim/maintenance", post(maintenance))
        .route("/_sim/values", post(values))
        .route("/_sim/values/{*path}", get(value_of))
        .route("/_sim/reset", post(reset))
        .merge(journal_routes())
        .fallback(metadata)
        .with_state(app)
}

/// Serves on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (changed, _) = watch::channel(0);
    let app = Arc::new(App {
        world: Mutex::new(World::new(&config.identity)),
        changed,
        identity: config.identity.clone(),
        journal: Journal::new(),
    });
    if let Some(after) = config.scenario.preempt_after {
        spawn_preempt(app.clone(), after);
    }
    if let Some((value, after)) = config.scenario.maintenance.clone() {
        let app = app.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            app.set("instance/maintenance-event", &value);
            tracing::info!(%value, "maintenance-event changed");
        });
    }
    serve_router(listener, router(app), shutdown).await
}

/// Starts one on `listen` (port 0: any free port) in this runtime.
pub async fn start(config: Config, listen: SocketAddr) -> std::io::Result<Running> {
    Running::start(listen, move |l, stop| serve(l, config, stop.wait())).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_list_their_children_and_values_keep_their_etag() {
        let mut w = World::new(&Identity::default());
        let list = w.children("instance/").unwrap();
        assert!(
            list.contains("preempted\n") && list.contains("scheduling/\n"),
            "{list}"
        );
        assert!(w.children("nothing/").is_none());
        let tree = w.tree("instance/").unwrap();
        assert_eq!(tree["scheduling"]["preemptible"], "TRUE");
        assert_eq!(tree["scheduling"]["onHostMaintenance"], "TERMINATE");
        assert_eq!(tree["networkInterfaces"][0]["ip"], "10.128.0.12");
        assert_eq!(tree["maintenanceEvent"], "NONE");
        let before = w.items["instance/preempted"].etag.clone();
        assert!(
            !w.set("instance/preempted", "FALSE".into()),
            "same value, same ETag"
        );
        assert_eq!(w.items["instance/preempted"].etag, before);
        assert!(w.set("instance/preempted", "TRUE".into()));
        assert_ne!(w.items["instance/preempted"].etag, before);
    }
}

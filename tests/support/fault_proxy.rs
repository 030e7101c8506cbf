//! A fault-injecting proxy in front of a real kube-apiserver (included with `#[path]`): the
//! simulator's faults (`sih_sim_cluster::faults`: hang, status, latency, reset, watch drop,
//! expiry), matched by the same specs, for a server we did not write.
//!
//! Clients talk plain HTTP to the proxy on loopback with their own bearer token; the proxy
//! forwards each request over TLS with that token and no credentials of its own, so the real
//! authenticator, RBAC and admission see the client as it is. Answers stream through (watches
//! included) unless a fault picks the request.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, Response, StatusCode, Uri, header};
use axum::response::IntoResponse;
use futures_util::StreamExt;
use sih_sim_cluster::faults::{Effect, Faults, RequestInfo};
use sih_sim_cluster::journal::{Journal, RequestRecord};

/// A watch dropped by a fault still passes on what arrives in this long (the simulator's drop
/// ends a stream "after what it had to send first").
const DROP_AFTER: Duration = Duration::from_millis(300);

pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub faults: Arc<Faults>,
    /// Every request that passed, as the simulator journals its own (the time to the answer's
    /// start, for a stream).
    pub journal: Arc<Journal>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct State {
    upstream: kube::Client,
    faults: Arc<Faults>,
    journal: Arc<Journal>,
}

impl FaultProxy {
    /// A proxy to the server of `kubeconfig` (its CA trusted; its credentials not used).
    pub async fn start(kubeconfig: &std::path::Path) -> Self {
        let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("the kubeconfig reads");
        let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("the kubeconfig is whole");
        config.auth_info = Default::default();
        config.default_retry = false;
        // Watches last as long as the client asks; a hang is the fault's, not ours.
        config.read_timeout = None;
        let upstream = kube::Client::try_from(config).expect("a client for the real server");
        let faults = Arc::new(Faults::default());
        let journal = Arc::new(Journal::default());
        let state = Arc::new(State {
            upstream,
            faults: faults.clone(),
            journal: journal.clone(),
        });
        let app = axum::Router::new().fallback(move |req: Request<Body>| {
            let state = state.clone();
            async move { forward(&state, req).await }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url,
            faults,
            journal,
            task,
        }
    }

    /// A kubeconfig for the proxy with `token` (as its clients use it).
    pub fn kubeconfig(&self, token: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: '{}'}}\nusers:\n- name: u\n  user: {{token: '{token}'}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u, namespace: default}}\ncurrent-context: c\n",
            self.url
        )
    }
}

/// What a request is, in the terms faults match: verb, resource and subresource, namespace,
/// name (the API server's own request-info rules, for `/api` and `/apis` paths).
pub fn classify<'a>(method: &Method, path: &'a str, watch: bool) -> RequestInfo<'a> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match parts.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => &[][..],
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, more @ ..] if !more.is_empty() => (Some(*ns), more),
        _ => (None, rest),
    };
    let resource = rest.first().map(|plural| (*plural, rest.get(2).copied()));
    let name = rest.get(1).copied();
    let verb = match *method {
        Method::GET if watch => "watch",
        Method::GET if name.is_some() => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if name.is_some() => "delete",
        Method::DELETE => "deletecollection",
        _ => "get",
    };
    RequestInfo {
        verb,
        resource,
        namespace,
        name,
    }
}

fn is_watch(uri: &Uri) -> bool {
    uri.query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"))
}

async fn forward(state: &State, req: Request<Body>) -> Response<Body> {
    let arrived = jiff::Timestamp::now();
    let started = tokio::time::Instant::now();
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let watch = is_watch(req.uri());
    let (record, fault) = {
        let info = classify(&method, &path, watch);
        let fault = state.faults.pick(&info);
        let record = RequestRecord {
            seq: state.journal.next_seq(),
            at: arrived,
            duration_ms: 0,
            method: method.to_string(),
            path: path.clone(),
            verb: info.verb.to_owned(),
            resource: info.resource.map(|(p, _)| p.to_owned()),
            subresource: info.resource.and_then(|(_, s)| s.map(str::to_owned)),
            namespace: info.namespace.map(str::to_owned),
            name: info.name.map(str::to_owned),
            status: 0,
            fault: fault.as_ref().map(|f| f.effect.label().to_owned()),
            grace_seconds: None,
        };
        (record, fault)
    };
    let resp = answer(state, req, watch, fault).await;
    let mut record = record;
    record.duration_ms = started.elapsed().as_millis() as u64;
    record.status = resp.status().as_u16();
    state.journal.request(record);
    resp
}

async fn answer(
    state: &State,
    req: Request<Body>,
    watch: bool,
    fault: Option<sih_sim_cluster::faults::Chosen>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    if let Some(f) = &fault {
        if !f.latency.is_zero() {
            tokio::time::sleep(f.latency).await;
        }
        match &f.effect {
            Effect::Hang => {
                // Never answered; once the fault is gone, the connection closes unanswered
                // (a request its client gave up on must not take effect later).
                state.faults.until_gone(f.id).await;
                return sih_sim_cluster::api::unanswered();
            }
            Effect::Status {
                code,
                retry_after,
                message,
            } => {
                let mut e = sih_sim_cluster::faults::status_error(*code, message.as_deref());
                if let Some(s) = retry_after {
                    e = e.with_retry_after(*s);
                }
                return e.into_response();
            }
            Effect::Expire if watch => return expired_watch(),
            Effect::Expire => {
                return sih_sim_cluster::error::ApiError::gone("too old resource version")
                    .into_response();
            }
            _ => {}
        }
    }
    let body = match axum::body::to_bytes(body, 16 << 20).await {
        Ok(b) => b,
        Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    };
    let mut up = Request::builder().method(parts.method).uri(
        parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned(),
    );
    for (k, v) in &parts.headers {
        if !hop_by_hop(k) {
            up = up.header(k, v);
        }
    }
    let Ok(up) = up.body(kube::client::Body::from(body.to_vec())) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let answer = match state.upstream.send(up).await {
        Ok(a) => a,
        Err(e) => {
            return (StatusCode::BAD_GATEWAY, format!("the real server: {e}")).into_response();
        }
    };
    let (parts, body) = answer.into_parts();
    let mut headers = HeaderMap::new();
    for (k, v) in &parts.headers {
        if !hop_by_hop(k) && k != header::CONTENT_LENGTH {
            headers.insert(k, v.clone());
        }
    }
    let stream = Body::new(body).into_data_stream();
    let body = match fault.map(|f| f.effect) {
        // A dropped watch ends cleanly, as a real server's stream does at its timeout.
        Some(Effect::Drop) => Body::from_stream(stream.take_until(tokio::time::sleep(DROP_AFTER))),
        // The answer starts, then the connection breaks.
        Some(Effect::Reset) => {
            let first = stream.take_until(tokio::time::sleep(DROP_AFTER));
            let broken = futures_util::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::other("connection reset by fault"))
            });
            Body::from_stream(
                first
                    .map(|r| r.map_err(std::io::Error::other))
                    .chain(broken),
            )
        }
        _ => Body::from_stream(stream),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = parts.status;
    *resp.headers_mut() = headers;
    resp
}

fn hop_by_hop(k: &header::HeaderName) -> bool {
    k == header::HOST
        || k == header::CONNECTION
        || k == header::TRANSFER_ENCODING
        || k == header::CONTENT_LENGTH
        || k == "keep-alive"
}

/// What a real server streams when a watch's resource version has been compacted away: one
/// `ERROR` event carrying 410 Gone.
fn expired_watch() -> Response<Body> {
    let event = serde_json::json!({"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "too old resource version", "reason": "Expired", "code": 410}});
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(format!("{event}\n")))
        .unwrap_or_default()
}

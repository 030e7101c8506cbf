//! The `/_sim/...` control API, outside every Kubernetes path: faults on demand, the journal
//! of what happened, and node lifecycle for rehearsals. With `--tls` only the admin's token
//! may use it.
//!
//! | request | effect |
//! |---|---|
//! | `POST /_sim/faults` (a fault, or a list of them) | adds faults; `{}` clears them all |
//! | `GET /_sim/faults` | the active faults, with what each has hit |
//! | `DELETE /_sim/faults[/ID]` | clears all, or one |
//! | `GET /_sim/requests` / `DELETE /_sim/requests` | the request log / empty it (and the pod log) |
//! | `GET /_sim/pod-events` | every pod's deletion (with its grace) and removal |
//! | `GET /_sim/node-changes` | each node as every change left it (taints, cordon, labels, annotations) |
//! | `POST /_sim/nodes/NAME/terminate` `{"delete_after_seconds": 5}` | the instance is gone |
//! | `POST /_sim/nodes/NAME/terminate` `{"at": "2026-12-04T10:00:00Z"}` | it goes then (a notice's deadline) |

use axum::body::Bytes;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiState;
use super::objects::json_response;
use crate::error::ApiError;
use crate::faults::FaultSpec;

fn body_json(body: &Bytes) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
}

pub async fn handle(st: &ApiState, method: &Method, path: &str, body: &Bytes) -> Response {
    match route(st, method, path, body) {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn route(st: &ApiState, method: &Method, path: &str, body: &Bytes) -> Result<Response, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').skip(1).collect();
    match (method, segs.as_slice()) {
        (&Method::GET, ["faults"]) => Ok(json_response(
            StatusCode::OK,
            &json!({"faults": st.faults.list(), "totals": st.faults.totals()}),
        )),
        (&Method::POST, ["faults"]) => add_faults(st, body),
        (&Method::DELETE, ["faults"]) => {
            let n = st.faults.clear();
            Ok(json_response(StatusCode::OK, &json!({"cleared": n})))
        }
        (&Method::DELETE, ["faults", id]) => {
            let id: u64 = id
                .parse()
                .map_err(|_| ApiError::bad_request("a fault id is a number"))?;
            if st.faults.remove(id) {
                Ok(json_response(StatusCode::OK, &json!({"cleared": 1})))
            } else {
                Err(ApiError::not_found("faults", &id.to_string()))
            }
        }
        (&Method::GET, ["requests"]) => {
            Ok(json_response(StatusCode::OK, &st.store.journal.requests()))
        }
        (&Method::DELETE, ["requests"]) => {
            st.store.journal.clear();
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (&Method::GET, ["pod-events"]) => Ok(json_response(
            StatusCode::OK,
            &st.store.journal.pod_events(),
        )),
        (&Method::GET, ["node-changes"]) => Ok(json_response(
            StatusCode::OK,
            &st.store.journal.node_changes(),
        )),
        (&Method::POST, ["nodes", name, "terminate"]) => terminate(st, name, body),
        _ => Err(ApiError::path_not_found()),
    }
}

fn add_faults(st: &ApiState, body: &Bytes) -> Result<Response, ApiError> {
    let v = body_json(body)?;
    let list = match v {
        Value::Array(items) => items,
        other => vec![other],
    };
    let specs: Vec<FaultSpec> = list
        .into_iter()
        .map(|v| {
            serde_json::from_value(v).map_err(|e| ApiError::bad_request(format!("fault: {e}")))
        })
        .collect::<Result<_, _>>()?;
    if specs.iter().all(FaultSpec::is_empty) {
        let n = st.faults.clear();
        tracing::info!(cleared = n, "faults cleared");
        return Ok(json_response(StatusCode::OK, &json!({"cleared": n})));
    }
    // Check every one before adding any: a bad list changes nothing.
    for s in &specs {
        s.effect().map_err(ApiError::bad_request)?;
    }
    let mut ids = Vec::new();
    for s in specs {
        tracing::info!(fault = ?s, "fault added");
        ids.push(st.faults.add(s).map_err(ApiError::bad_request)?);
    }
    Ok(json_response(StatusCode::CREATED, &json!({"ids": ids})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TerminateReq {
    #[serde(default = "default_delete_after")]
    delete_after_seconds: f64,
    /// When the instance ends; now if absent or past.
    #[serde(default)]
    at: Option<jiff::Timestamp>,
}

fn default_delete_after() -> f64 {
    5.0
}

fn terminate(st: &ApiState, name: &str, body: &Bytes) -> Result<Response, ApiError> {
    let req: TerminateReq = serde_json::from_value(body_json(body)?)
        .map_err(|e| ApiError::bad_request(format!("invalid request: {e}")))?;
    if !(0.0..=86_400.0).contains(&req.delete_after_seconds) {
        return Err(ApiError::bad_request(
            "delete_after_seconds must be between 0 and 86400",
        ));
    }
    let delete_after = std::time::Duration::from_secs_f64(req.delete_after_seconds);
    if let Some(at) = req.at.filter(|at| *at > jiff::Timestamp::now()) {
        st.store.write(|tx| {
            crate::controllers::nodes::schedule_termination(tx, name, at, delete_after)
        })?;
        tracing::info!(node = name, at = %at, "instance ends at its time");
        return Ok(json_response(
            StatusCode::OK,
            &json!({"node": name, "terminateAt": at.to_string()}),
        ));
    }
    let delete_at = jiff::Timestamp::now() + delete_after;
    st.store
        .write(|tx| crate::controllers::nodes::terminate(tx, name, delete_at))?;
    tracing::info!(
        node = name,
        delete_after_s = req.delete_after_seconds,
        "instance terminated"
    );
    Ok(json_response(
        StatusCode::OK,
        &json!({"node": name, "deleteAt": delete_at.to_string()}),
    ))
}

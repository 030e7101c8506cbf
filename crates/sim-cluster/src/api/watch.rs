//! Watches: a chunked stream of `{"type": ..., "object": ...}` lines, from a resourceVersion
//! (history kept by the store) or from now with the current objects as ADDED first. An object
//! that moves out of (into) the selector is DELETED (ADDED) for the watcher, as on a real server.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::objects::Request;
use super::{ApiState, events};
use crate::error::ApiError;
use crate::resources::storage_of;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Change, ChangeType, Obj};

/// A watch without `timeoutSeconds` ends after this long; clients watch again.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

struct Filter {
    resource: usize,
    storage: usize,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace
            && obj["metadata"]["namespace"].as_str() != Some(ns)
        {
            return false;
        }
        let view = events::to_api(self.resource, obj);
        self.labels.matches(&view) && self.fields.matches(&view)
    }

    fn event(&self, change: &Change) -> Option<Bytes> {
        if change.storage != self.storage {
            return None;
        }
        let now = self.matches(&change.object);
        let before = change.old.as_deref().is_some_and(|o| self.matches(o));
        let kind = match change.kind {
            ChangeType::Added if now => "ADDED",
            ChangeType::Modified if now && before => "MODIFIED",
            ChangeType::Modified if now => "ADDED",
            ChangeType::Modified if before => "DELETED",
            ChangeType::Deleted if before || now => "DELETED",
            _ => return None,
        };
        Some(line(kind, &events::to_api(self.resource, &change.object)))
    }
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut bytes =
        serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

pub async fn serve(st: &ApiState, r: &Request) -> Result<Response, ApiError> {
    let t = &r.target;
    let filter = Filter {
        resource: t.resource,
        storage: storage_of(t.resource),
        namespace: t.namespace.clone(),
        labels: LabelSelector::parse(r.query.label_selector.as_deref().unwrap_or_default())?,
        fields: FieldSelector::parse(r.query.field_selector.as_deref().unwrap_or_default())?,
    };
    let from: Option<u64> =
        match r.query.resource_version.as_deref() {
            None | Some("0") => None,
            Some(v) => Some(v.parse().map_err(|_| {
                ApiError::bad_request(format!("resourceVersion {v:?} is not valid"))
            })?),
        };
    if r.watch_fault == Some(crate::faults::Effect::Expire) {
        // As after an etcd compaction: the client must list again.
        let status = ApiError::gone(format!(
            "too old resource version: {} ({})",
            from.unwrap_or(0),
            st.store.read(|i| i.rv())
        ))
        .status_body();
        return Ok(stream_response(
            vec![line("ERROR", &status)],
            None,
            filter,
            Duration::ZERO,
        ));
    }
    let (first, rx): (Vec<Bytes>, broadcast::Receiver<Arc<Change>>) = match from {
        None => st.store.read_and_subscribe(|inner| {
            inner
                .list(filter.storage, filter.namespace.as_deref())
                .filter(|o| filter.matches(o))
                .map(|o: &Obj| line("ADDED", &events::to_api(filter.resource, o)))
                .collect()
        }),
        Some(rv) => match st.store.watch_from(rv) {
            Some((past, rx)) => (past.iter().filter_map(|c| filter.event(c)).collect(), rx),
            None => {
                let status =
                    ApiError::gone(format!("too old resource version: {rv}")).status_body();
                return Ok(stream_response(
                    vec![line("ERROR", &status)],
                    None,
                    filter,
                    Duration::ZERO,
                ));
            }
        },
    };
    let timeout = r
        .query
        .timeout_seconds
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    // A dropped stream ends after what it had to send first, as when a connection to the
    // server breaks: the client watches again from the last resourceVersion it saw.
    let rx = (r.watch_fault != Some(crate::faults::Effect::Drop)).then_some(rx);
    Ok(stream_response(first, rx, filter, timeout))
}

fn stream_response(
    first: Vec<Bytes>,
    rx: Option<broadcast::Receiver<Arc<Change>>>,
    filter: Filter,
    timeout: Duration,
) -> Response {
    let (tx, body) = mpsc::channel::<Result<Bytes, Infallible>>(256);
    tokio::spawn(async move {
        for b in first {
            if tx.send(Ok(b)).await.is_err() {
                return;
            }
        }
        let Some(mut rx) = rx else { return };
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                change = rx.recv() => match change {
                    Ok(c) => {
                        if let Some(b) = filter.event(&c)
                            && tx.send(Ok(b)).await.is_err()
                        {
                            return;
                        }
                    }
                    // Fell behind or shut down: end the stream; the client watches again.
                    Err(_) => return,
                },
                _ = &mut deadline => return,
                _ = tx.closed() => return,
            }
        }
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(ReceiverStream::new(body)),
    )
        .into_response()
}

//! get, list, create, update, patch and delete of stored objects, with the subresources
//! (`status`, `scale`, `eviction`, `binding`) and the Table form kubectl asks for.

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use super::pods::{self, DeleteOptions};
use super::route::Target;
use super::{ApiState, Query, defaults, events, table, watch};
use crate::error::ApiError;
use crate::patch;
use crate::resources::{DEPLOYMENTS, PODS, REPLICASETS, RESOURCES, storage_of};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::Obj;

pub struct Request {
    pub method: Method,
    pub target: Target,
    pub query: Query,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// A watch's fault (`drop` or `expire`) from `/_sim/faults`.
    pub watch_fault: Option<crate::faults::Effect>,
}

impl Request {
    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => ApiError::internal(format!("encoding the response: {e}")).into_response(),
    }
}

pub async fn handle(st: &ApiState, r: Request) -> Result<Response, ApiError> {
    if r.query.dry_run {
        return Err(ApiError::bad_request(
            "dryRun is not supported by the cluster simulator",
        ));
    }
    let t = r.target.clone();
    let ns = t.namespace.clone().unwrap_or_default();
    let table = table::wants_table(r.header(header::ACCEPT));
    let res = &RESOURCES[t.resource];
    match (&r.method, t.name.as_deref(), t.subresource.as_deref()) {
        (&Method::GET, None, _) if r.query.watch => watch::serve(st, &r).await,
        (&Method::GET, None, _) => list(st, &r, table),
        (&Method::GET, Some(name), Some("scale")) => {
            let obj = get_obj(st, t.resource, &ns, name)?;
            Ok(json_response(StatusCode::OK, &scale_of(&obj)))
        }
        (&Method::GET, Some(name), _) => {
            let obj = get_obj(st, t.resource, &ns, name)?;
            let rv = st.store.read(|i| i.rv());
            if table {
                let view = events::to_api(t.resource, &obj);
                Ok(json_response(
                    StatusCode::OK,
                    &table::table(t.resource, &[&view], rv, None),
                ))
            } else {
                Ok(json_response(
                    StatusCode::OK,
                    &events::to_api(t.resource, &obj),
                ))
            }
        }
        (&Method::POST, None, None) if !res.namespaced || t.namespace.is_some() => {
            create(st, &r, &ns)
        }
        (&Method::POST, Some(name), Some("eviction")) => {
            let body = decode(&r, Some("Eviction"))?;
            let out = st.store.write(|tx| pods::evict(tx, &ns, name, &body))?;
            Ok(json_response(StatusCode::CREATED, &out))
        }
        (&Method::POST, Some(name), Some("binding")) => {
            let body = decode(&r, Some("Binding"))?;
            let out = st.store.write(|tx| pods::bind(tx, &ns, name, &body))?;
            Ok(json_response(StatusCode::CREATED, &out))
        }
        (&Method::PUT, Some(name), sub) => update(st, &r, &ns, name, sub),
        (&Method::PATCH, Some(name), sub) => patch_obj(st, &r, &ns, name, sub),
        (&Method::DELETE, Some(name), None) => {
            let opts = delete_options(&r)?;
            let gone = st
                .store
                .write(|tx| pods::delete(tx, storage_of(t.resource), &ns, name, &opts))?;
            Ok(json_response(
                StatusCode::OK,
                &events::to_api(t.resource, &gone),
            ))
        }
        (&Method::DELETE, None, None) => delete_collection(st, &r, &ns),
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn get_obj(st: &ApiState, resource: usize, ns: &str, name: &str) -> Result<Obj, ApiError> {
    st.store
        .read(|i| i.get(storage_of(resource), ns, name).cloned())
        .ok_or_else(|| ApiError::not_found(&RESOURCES[resource].qualified(), name))
}

/// The request body as JSON (or YAML), checked to be an object of the expected kind.
fn decode(r: &Request, kind: Option<&str>) -> Result<Value, ApiError> {
    let ct = r.header(header::CONTENT_TYPE);
    let v: Value = if ct.contains("protobuf") {
        // Only kubectl's typed creates come this way; see `protobuf.rs`.
        match RESOURCES[r.target.resource].kind {
            "ServiceAccount" => super::protobuf::service_account(&r.body),
            k @ ("ClusterRole" | "Role") => super::protobuf::role(&r.body, k),
            k @ ("ClusterRoleBinding" | "RoleBinding") => super::protobuf::binding(&r.body, k),
            _ => None,
        }
        .ok_or_else(|| ApiError::unsupported_media_type(ct))?
    } else if ct.contains("yaml") {
        let text =
            std::str::from_utf8(&r.body).map_err(|_| ApiError::bad_request("body is not UTF-8"))?;
        serde_saphyr::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("invalid YAML body: {e}")))?
    } else {
        serde_json::from_slice(&r.body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?
    };
    if !v.is_object() {
        return Err(ApiError::bad_request("the request body must be an object"));
    }
    let want = kind.unwrap_or(RESOURCES[r.target.resource].kind);
    match v["kind"].as_str() {
        Some(k) if k != want => Err(ApiError::bad_request(format!(
            "the kind in the body ({k}) does not match the resource ({want})"
        ))),
        _ => Ok(v),
    }
}

#[derive(Serialize)]
struct ListBody<'a> {
    kind: String,
    #[serde(rename = "apiVersion")]
    api_version: String,
    metadata: Value,
    items: Vec<&'a Value>,
}

fn list(st: &ApiState, r: &Request, table: bool) -> Result<Response, ApiError> {
    let t = &r.target;
    let storage = storage_of(t.resource);
    let labels = LabelSelector::parse(r.query.label_selector.as_deref().unwrap_or_default())?;
    let fields = FieldSelector::parse(r.query.field_selector.as_deref().unwrap_or_default())?;
    let offset: usize = match &r.query.continue_token {
        Some(c) => c.parse().map_err(|_| {
            ApiError::gone("the provided continue parameter is too old or malformed")
        })?,
        None => 0,
    };
    let (page, rv, more) = st.store.read(|inner| {
        let ns = t.namespace.as_deref();
        let candidates: Vec<&Obj> = match fields.node_name() {
            Some(node) if storage == PODS => inner
                .pods_on_node(node)
                .into_iter()
                .filter(|p| ns.is_none_or(|n| p["metadata"]["namespace"] == n))
                .collect(),
            _ => inner.list(storage, ns).collect(),
        };
        let limit = r.query.limit.unwrap_or(usize::MAX);
        let mut matched = candidates.into_iter().filter(|o| {
            let view = events::to_api(t.resource, o);
            labels.matches(&view) && fields.matches(&view)
        });
        // Only `Arc`s are taken under the lock; conversion and encoding happen after it.
        let page: Vec<Obj> = matched.by_ref().skip(offset).take(limit).cloned().collect();
        let remaining = matched.count();
        (page, inner.rv(), remaining)
    });
    let views: Vec<_> = page.iter().map(|o| events::to_api(t.resource, o)).collect();
    let page: Vec<&Value> = views.iter().map(|v| &**v).collect();
    let cont = (more > 0).then(|| (offset + page.len()).to_string());
    if table {
        return Ok(json_response(
            StatusCode::OK,
            &table::table(t.resource, &page, rv, cont),
        ));
    }
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = cont {
        metadata["continue"] = json!(c);
        metadata["remainingItemCount"] = json!(more);
    }
    let res = &RESOURCES[t.resource];
    Ok(json_response(
        StatusCode::OK,
        &ListBody {
            kind: res.list_kind(),
            api_version: res.api_version(),
            metadata,
            items: page,
        },
    ))
}

fn create(st: &ApiState, r: &Request, ns: &str) -> Result<Response, ApiError> {
    let t = &r.target;
    let storage = storage_of(t.resource);
    let body = decode(r, None)?;
    if t.resource == crate::resources::EVENTS_V1 {
        crate::validation::validate_event_v1(&body)?;
    }
    let mut obj = events::from_api(t.resource, body);
    if let Some(body_ns) = obj["metadata"]["namespace"].as_str()
        && RESOURCES[t.resource].namespaced
        && body_ns != ns
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    defaults::apply(storage, &mut obj);
    let created = st.store.write(|tx| tx.create(storage, ns, obj))?;
    Ok(json_response(
        StatusCode::CREATED,
        &events::to_api(t.resource, &created),
    ))
}

/// What a write through the main resource or a subresource changes: the status subresource
/// changes only status; the main resource never changes a status that has its own subresource.
fn merge_for_subresource(
    resource: usize,
    current: &Value,
    mut new: Value,
    sub: Option<&str>,
) -> Value {
    match sub {
        Some("status") => {
            let mut out = current.clone();
            out["status"] = new["status"].take();
            out
        }
        _ if RESOURCES[resource].has_status && !current["status"].is_null() => {
            new["status"] = current["status"].clone();
            new
        }
        _ => new,
    }
}

fn rv_of(v: &Value) -> Option<&str> {
    v["metadata"]["resourceVersion"]
        .as_str()
        .filter(|s| !s.is_empty())
}

fn update(
    st: &ApiState,
    r: &Request,
    ns: &str,
    name: &str,
    sub: Option<&str>,
) -> Result<Response, ApiError> {
    let t = &r.target;
    let storage = storage_of(t.resource);
    let qualified = RESOURCES[t.resource].qualified();
    if sub == Some("scale") {
        let body = decode(r, Some("Scale"))?;
        let out = st.store.write(|tx| {
            let cur = tx
                .get(storage, ns, name)
                .ok_or_else(|| ApiError::not_found(&qualified, name))?;
            set_scale(tx, storage, ns, name, &cur, &body)
        })?;
        return Ok(json_response(StatusCode::OK, &out));
    }
    let body = events::from_api(t.resource, decode(r, None)?);
    if body["metadata"]["name"].as_str().is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(
            "the name of the object does not match the name on the URL",
        ));
    }
    let updated = st.store.write(|tx| {
        let cur = tx
            .get(storage, ns, name)
            .ok_or_else(|| ApiError::not_found(&qualified, name))?;
        if let Some(want) = rv_of(&body)
            && Some(want) != rv_of(&cur)
        {
            return Err(ApiError::conflict(&qualified, name));
        }
        let new = merge_for_subresource(t.resource, &cur, body, sub);
        tx.replace(storage, ns, name, new)
    })?;
    Ok(json_response(
        StatusCode::OK,
        &events::to_api(t.resource, &updated),
    ))
}

fn patch_obj(
    st: &ApiState,
    r: &Request,
    ns: &str,
    name: &str,
    sub: Option<&str>,
) -> Result<Response, ApiError> {
    let t = &r.target;
    let storage = storage_of(t.resource);
    let qualified = RESOURCES[t.resource].qualified();
    let ct = r.header(header::CONTENT_TYPE).to_owned();
    let out = st.store.write(|tx| {
        let Some(cur) = tx.get(storage, ns, name) else {
            // Server-side apply creates what does not exist yet.
            if ct.starts_with(patch::APPLY_PATCH) && sub.is_none() {
                let mut obj = patch::apply(&json!({}), &ct, &r.body)?;
                obj = events::from_api(t.resource, obj);
                obj["metadata"]["name"] = json!(name);
                defaults::apply(storage, &mut obj);
                let created = tx.create(storage, ns, obj)?;
                return Ok(events::to_api(t.resource, &created).into_owned());
            }
            return Err(ApiError::not_found(&qualified, name));
        };
        if sub == Some("scale") {
            let patched = patch::apply(&scale_of(&cur), &ct, &r.body)?;
            return set_scale(tx, storage, ns, name, &cur, &patched);
        }
        let view = events::to_api(t.resource, &cur);
        let patched = patch::apply(&view, &ct, &r.body)?;
        if rv_of(&patched) != rv_of(&view) {
            return Err(ApiError::conflict(&qualified, name));
        }
        if patched["metadata"]["name"] != view["metadata"]["name"] {
            return Err(ApiError::bad_request(
                "the name of an object cannot be changed by a patch",
            ));
        }
        let new =
            merge_for_subresource(t.resource, &cur, events::from_api(t.resource, patched), sub);
        let updated = tx.replace(storage, ns, name, new)?;
        Ok(events::to_api(t.resource, &updated).into_owned())
    })?;
    Ok(json_response(StatusCode::OK, &out))
}

/// The autoscaling/v1 `Scale` view of a Deployment or ReplicaSet.
fn scale_of(obj: &Value) -> Value {
    let m = &obj["metadata"];
    let selector: Vec<String> = obj["spec"]["selector"]["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
        "spec": {"replicas": obj["spec"]["replicas"]},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector.join(",")},
    })
}

fn set_scale(
    tx: &mut crate::store::Tx<'_>,
    storage: usize,
    ns: &str,
    name: &str,
    cur: &Obj,
    scale: &Value,
) -> Result<Value, ApiError> {
    if !matches!(storage, DEPLOYMENTS | REPLICASETS) {
        return Err(ApiError::path_not_found());
    }
    let qualified = RESOURCES[storage].qualified();
    if let Some(want) = rv_of(scale)
        && Some(want) != rv_of(cur)
    {
        return Err(ApiError::conflict(&qualified, name));
    }
    let replicas = scale["spec"]["replicas"]
        .as_i64()
        .filter(|r| *r >= 0)
        .ok_or_else(|| {
            ApiError::invalid(
                &qualified,
                name,
                "spec.replicas: Invalid value: must be a non-negative integer",
            )
        })?;
    let mut new = (**cur).clone();
    new["spec"]["replicas"] = json!(replicas);
    let updated = tx.replace(storage, ns, name, new)?;
    Ok(scale_of(&updated))
}

fn delete_options(r: &Request) -> Result<DeleteOptions, ApiError> {
    let body: Value = if r.body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&r.body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    let mut opts = DeleteOptions::from_body(&body);
    if r.query.grace_period_seconds.is_some() {
        opts.grace_period_seconds = r.query.grace_period_seconds;
    }
    if r.query.propagation_policy.is_some() {
        opts.propagation_policy = r.query.propagation_policy.clone();
    }
    Ok(opts)
}

fn delete_collection(st: &ApiState, r: &Request, ns: &str) -> Result<Response, ApiError> {
    let t = &r.target;
    let storage = storage_of(t.resource);
    let labels = LabelSelector::parse(r.query.label_selector.as_deref().unwrap_or_default())?;
    let fields = FieldSelector::parse(r.query.field_selector.as_deref().unwrap_or_default())?;
    let opts = delete_options(r)?;
    let ns_filter = t.namespace.as_deref().map(|_| ns);
    let deleted = st.store.write(|tx| {
        let keys: Vec<(String, String)> = tx
            .view()
            .list(storage, ns_filter)
            .filter(|o| labels.matches(o) && fields.matches(o))
            .map(|o| {
                (
                    o["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    o["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect();
        let mut out = Vec::new();
        for (n, name) in keys {
            let gone = pods::delete(tx, storage, &n, &name, &opts)?;
            out.push(events::to_api(t.resource, &gone).into_owned());
        }
        Ok(out)
    })?;
    let res = &RESOURCES[t.resource];
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": res.list_kind(), "apiVersion": res.api_version(), "metadata": {}, "items": deleted}),
    ))
}

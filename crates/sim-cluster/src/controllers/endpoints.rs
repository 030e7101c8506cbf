//! The EndpointSlice controller: for each Service with a selector, one EndpointSlice
//! (`<service>-sim`) listing the selected pods that have an address, with the node each runs
//! on and its conditions (ready, serving, terminating), as the real controller writes them.
//! What a drain reads to know which pods receive traffic.

use serde_json::{Value, json};

use super::{is_ready, name_of, ns_of};
use crate::error::ApiError;
use crate::resources::{ENDPOINT_SLICES, PODS, SERVICES};
use crate::selector::LabelSelector;
use crate::store::Tx;

/// The label that ties a slice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

fn endpoint(pod: &Value) -> Option<Value> {
    let ip = pod["status"]["podIP"]
        .as_str()
        .filter(|ip| !ip.is_empty())?;
    let terminating = pod["metadata"]["deletionTimestamp"].is_string();
    let serving = is_ready(pod);
    Some(json!({
        "addresses": [ip],
        "conditions": {"ready": serving && !terminating, "serving": serving, "terminating": terminating},
        "nodeName": pod["spec"]["nodeName"],
        "targetRef": {"kind": "Pod", "namespace": ns_of(pod), "name": name_of(pod), "uid": pod["metadata"]["uid"]},
    }))
}

fn slice_for(svc: &Value, endpoints: Vec<Value>) -> Value {
    let name = name_of(svc);
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{name}-sim"),
            "namespace": ns_of(svc),
            "labels": {SERVICE_NAME_LABEL: name, "endpointslice.kubernetes.io/managed-by": MANAGED_BY},
            "ownerReferences": [super::controller_ref(svc)],
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": svc["spec"]["ports"].as_array().map(|ports| ports.iter().map(|p| json!({
            "name": p["name"].as_str().unwrap_or_default(),
            "port": p["targetPort"].as_i64().or_else(|| p["port"].as_i64()),
            "protocol": p["protocol"].as_str().unwrap_or("TCP"),
        })).collect::<Vec<_>>()).unwrap_or_default(),
    })
}

pub fn reconcile(tx: &mut Tx<'_>) -> Result<(), ApiError> {
    let services: Vec<_> = tx.view().list(SERVICES, None).cloned().collect();
    for svc in services {
        let selector = &svc["spec"]["selector"];
        if !selector.is_object() {
            continue; // a Service without a selector has slices of its own making
        }
        let (ns, name) = (ns_of(&svc), name_of(&svc));
        let select = LabelSelector::from_object(&json!({"matchLabels": selector}));
        let mut endpoints: Vec<Value> = tx
            .view()
            .list(PODS, Some(&ns))
            .filter(|p| select.matches(p))
            .filter_map(|p| endpoint(p))
            .collect();
        endpoints.sort_by(|a, b| {
            a["targetRef"]["name"]
                .as_str()
                .cmp(&b["targetRef"]["name"].as_str())
        });
        let want = slice_for(&svc, endpoints);
        let slice = format!("{name}-sim");
        match tx.get(ENDPOINT_SLICES, &ns, &slice) {
            Some(have) if have["endpoints"] == want["endpoints"] => {}
            Some(have) => {
                let mut next = want;
                next["metadata"] = have["metadata"].clone();
                tx.replace(ENDPOINT_SLICES, &ns, &slice, next)?;
            }
            None => {
                tx.create(ENDPOINT_SLICES, &ns, want)?;
            }
        }
    }
    Ok(())
}

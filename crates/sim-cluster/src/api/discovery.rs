//! Discovery documents (legacy form, which kubectl and kube-rs both read) and `/version`.

use serde_json::{Value, json};

use crate::resources::{self, RESOURCES, verbs};

pub fn version() -> Value {
    json!({
        "major": "1", "minor": "32", "gitVersion": "v1.32.0-sim",
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2026-11-23T00:00:00Z", "goVersion": "go1.23", "compiler": "gc",
        "platform": "linux/amd64",
    })
}

pub fn core_versions(server: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}]})
}

fn group(name: &str) -> Value {
    let gv = json!({"groupVersion": format!("{name}/v1"), "version": "v1"});
    json!({"name": name, "versions": [gv.clone()], "preferredVersion": gv})
}

pub fn groups() -> Value {
    json!({"kind": "APIGroupList", "apiVersion": "v1",
        "groups": resources::GROUPS.iter().map(|g| group(g)).collect::<Vec<_>>()})
}

pub fn api_group(name: &str) -> Value {
    let mut g = group(name);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    g
}

pub fn resource_list(group: &str, version: &str) -> Value {
    let mut out = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        out.push(json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
            "verbs": if r.kind == "SelfSubjectAccessReview" { json!(["create"]) } else { json!(verbs()) },
            "shortNames": r.short_names,
            "categories": if matches!(r.kind, "Pod" | "Deployment" | "ReplicaSet" | "DaemonSet") { json!(["all"]) } else { json!([]) },
        }));
        for sub in r.subresources {
            let (kind, group, version, verbs): (&str, &str, &str, &[&str]) = match *sub {
                "eviction" => ("Eviction", "policy", "v1", &["create"]),
                "binding" => ("Binding", "", "v1", &["create"]),
                "token" => ("TokenRequest", "authentication.k8s.io", "v1", &["create"]),
                "scale" => ("Scale", "autoscaling", "v1", &["get", "patch", "update"]),
                _ => (r.kind, r.group, r.version, &["get", "patch", "update"]),
            };
            out.push(json!({"name": format!("{}/{sub}", r.plural), "singularName": "", "namespaced": r.namespaced,
                "group": group, "version": version, "kind": kind, "verbs": verbs}));
        }
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out})
}

//! Just enough OpenAPI for kubectl: `kubectl apply` refuses to run without a document, checks
//! the PATCH operation of each kind for the `fieldValidation` parameter (so it leaves
//! validation to the server), and looks up each kind's schema by its
//! `x-kubernetes-group-version-kind`. Schemas accept any field: the server is not a validator.

use serde_json::{Map, Value, json};

use crate::resources::{self, RESOURCES, Resource};

fn gvk(r: &Resource) -> Value {
    json!({"group": r.group, "version": r.version, "kind": r.kind})
}

fn schema_name(r: &Resource) -> String {
    let group = if r.group.is_empty() {
        "core".to_owned()
    } else {
        r.group.split('.').next().unwrap_or(r.group).to_owned()
    };
    format!("io.k8s.api.{group}.{}.{}", r.version, r.kind)
}

fn object_path(r: &Resource) -> String {
    let base = if r.group.is_empty() {
        format!("/api/{}", r.version)
    } else {
        format!("/apis/{}/{}", r.group, r.version)
    };
    if r.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
    } else {
        format!("{base}/{}/{{name}}", r.plural)
    }
}

fn operation(r: &Resource, action: &str) -> Value {
    json!({
        "operationId": format!("{action}{}", r.kind),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(r),
        "parameters": [
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        ],
        "responses": {"200": {"description": "OK"}},
    })
}

fn schema(r: &Resource) -> Value {
    json!({
        "type": "object",
        "x-kubernetes-group-version-kind": [gvk(r)],
        "x-kubernetes-preserve-unknown-fields": true,
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
        },
    })
}

/// `/openapi/v3`: one document per group-version.
pub fn v3_index() -> Value {
    let mut paths = Map::new();
    paths.insert(
        "api/v1".into(),
        json!({"serverRelativeURL": "/openapi/v3/api/v1?hash=0"}),
    );
    for g in resources::GROUPS {
        paths.insert(
            format!("apis/{g}/v1"),
            json!({"serverRelativeURL": format!("/openapi/v3/apis/{g}/v1?hash=0")}),
        );
    }
    json!({ "paths": paths })
}

pub fn v3_document(group: &str, version: &str) -> Option<Value> {
    let served: Vec<&Resource> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if served.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for r in served {
        paths.insert(
            object_path(r),
            json!({
                "get": operation(r, "get"), "put": operation(r, "put"),
                "patch": operation(r, "patch"), "delete": operation(r, "delete"),
            }),
        );
        schemas.insert(schema_name(r), schema(r));
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0-sim"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// `/openapi/v2`: the same kinds in Swagger 2.0 form, for clients that still read it.
pub fn v2_document() -> Value {
    let mut paths = Map::new();
    let mut definitions = Map::new();
    for r in RESOURCES.iter() {
        let mut op = operation(r, "patch");
        op["parameters"] = json!([{"name": "fieldValidation", "in": "query", "type": "string", "uniqueItems": true}]);
        paths.insert(object_path(r), json!({"patch": op}));
        definitions.insert(schema_name(r), schema(r));
    }
    json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.32.0-sim"},
        "paths": paths, "definitions": definitions})
}

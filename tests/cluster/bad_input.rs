//! Bad requests get a `metav1.Status` with the right code, never a crash or a hang.

use serde_json::Value;

use crate::support::{cluster, node_name};

async fn status_of(resp: reqwest::Response) -> (u16, Value) {
    let code = resp.status().as_u16();
    let body: Value = resp.json().await.expect("a JSON Status body");
    (code, body)
}

#[tokio::test]
async fn bad_requests_get_status_errors() {
    let sim = cluster(1, 0, Some("")).await;
    let http = reqwest::Client::new();
    let base = sim.cluster.url();
    let pods = format!("{base}/api/v1/namespaces/default/pods");
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            http.post(&pods)
                .header("content-type", "application/json")
                .body("{not json"),
            400,
            "BadRequest",
        ),
        (
            http.post(&pods)
                .header("content-type", "application/json")
                .body(r#"{"kind":"Node","metadata":{"name":"x"}}"#),
            400,
            "BadRequest",
        ),
        (
            http.post(&pods)
                .header("content-type", "application/json")
                .body(r#"{"metadata":{"name":"Not_Valid"}}"#),
            422,
            "Invalid",
        ),
        (
            http.post(&pods)
                .header("content-type", "application/json")
                .body("[1,2]"),
            400,
            "BadRequest",
        ),
        (
            http.post(format!("{base}/api/v1/namespaces/nowhere/pods"))
                .header("content-type", "application/json")
                .body(r#"{"metadata":{"name":"p"}}"#),
            404,
            "NotFound",
        ),
        (http.get(format!("{base}/api/v1/widgets")), 404, "NotFound"),
        (
            http.get(format!(
                "{base}/apis/apps/v1/namespaces/default/deployments/nope"
            )),
            404,
            "NotFound",
        ),
        (
            http.get(format!("{pods}?labelSelector=app+in+web")),
            400,
            "BadRequest",
        ),
        (
            http.get(format!("{pods}?fieldSelector=nonsense")),
            400,
            "BadRequest",
        ),
        (http.get(format!("{pods}?limit=many")), 400, "BadRequest"),
        (
            http.patch(format!("{base}/api/v1/nodes/{}", node_name(0)))
                .header("content-type", "text/plain")
                .body("{}"),
            415,
            "UnsupportedMediaType",
        ),
        (
            http.patch(format!("{base}/api/v1/nodes/{}", node_name(0)))
                .header("content-type", "application/json-patch+json")
                .body("{}"),
            400,
            "BadRequest",
        ),
        (
            http.post(&pods)
                .header("content-type", "application/json")
                .body(vec![b' '; 4 * 1024 * 1024]),
            413,
            "RequestEntityTooLarge",
        ),
        (
            http.put(format!("{base}/api/v1/nodes/{}", node_name(0)))
                .header("content-type", "application/json")
                .body(r#"{"metadata":{"name":"other"}}"#),
            400,
            "BadRequest",
        ),
        (
            http.post(format!("{pods}/ghost/eviction"))
                .header("content-type", "application/json")
                .body(
                    r#"{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"ghost"}}"#,
                ),
            404,
            "NotFound",
        ),
        (
            http.delete(format!("{base}/api/v1/nodes/{}", node_name(0)))
                .header("content-type", "application/json")
                .body("{oops"),
            400,
            "BadRequest",
        ),
    ];
    for (req, code, reason) in cases {
        let (got, body) = status_of(req.send().await.unwrap()).await;
        assert_eq!(
            (got, body["reason"].as_str()),
            (code, Some(reason)),
            "{body}"
        );
        assert_eq!(body["kind"], "Status");
        assert_eq!(body["code"], code);
    }
    // The server is still answering after all of that.
    let ok = http
        .get(format!("{base}/api/v1/nodes"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn a_watch_from_a_forgotten_version_ends_with_410() {
    let sim = cluster(1, 0, Some("")).await;
    let store = sim.cluster.store().clone();
    // Push the history far beyond what is kept.
    for i in 0..10_100 {
        store
            .write(|tx| {
                tx.create(
                    sih_sim_cluster::resources::EVENTS,
                    "default",
                    serde_json::json!({"metadata": {"name": format!("e{i}")}}),
                )
            })
            .unwrap();
    }
    let resp = reqwest::get(format!(
        "{}/api/v1/nodes?watch=1&resourceVersion=2",
        sim.cluster.url()
    ))
    .await
    .unwrap();
    let text = resp.text().await.unwrap();
    let event: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(event["type"], "ERROR");
    assert_eq!(event["object"]["code"], 410);
}

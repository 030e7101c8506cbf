//! A webhook endpoint that redirects: followed on the URL's own origin (scheme, host, port),
//! never to another, since the message's custom headers may hold a token.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use sih_report::webhook::{TemplateData, Webhook, WebhookConfig, WebhookError};

type Seen = Arc<Mutex<Vec<Option<String>>>>;

/// Serves `/hook` (records the `x-token` header) and `/to` (a 307 to `location`).
async fn endpoint(location: Option<String>) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let mut app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap| async move {
            record.lock().unwrap().push(
                headers
                    .get("x-token")
                    .map(|v| v.to_str().unwrap().to_owned()),
            );
            "ok"
        }),
    );
    if let Some(to) = location {
        app = app.route(
            "/to",
            post(move || async move {
                (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, to)]).into_response()
            }),
        );
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, seen)
}

fn hook(url: String) -> Webhook {
    Webhook::new(WebhookConfig {
        url,
        headers: vec![("X-Token".into(), "s3cr3t".into())],
        attempts: 1,
        ..WebhookConfig::default()
    })
    .unwrap()
}

#[tokio::test]
async fn redirects_are_followed_on_the_same_origin_only() {
    let later = tokio::time::Instant::now() + Duration::from_secs(5);
    // Another origin (another port): not followed, and that host never sees the token.
    let (elsewhere, seen_elsewhere) = endpoint(None).await;
    let (base, seen_here) = endpoint(Some(format!("{elsewhere}/hook"))).await;
    let d = hook(format!("{base}/to"))
        .send(&TemplateData::default(), later)
        .await;
    match d.result {
        Err(e @ WebhookError::Redirected(_)) => {
            assert!(!e.is_retryable());
            assert!(e.to_string().contains("another host"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert!(seen_elsewhere.lock().unwrap().is_empty());
    assert!(seen_here.lock().unwrap().is_empty());

    // The same origin: followed, headers and all.
    let (base, seen) = endpoint(Some("/hook".into())).await;
    let d = hook(format!("{base}/to"))
        .send(&TemplateData::default(), later)
        .await;
    assert_eq!(d.result.unwrap(), 200);
    assert_eq!(*seen.lock().unwrap(), vec![Some("s3cr3t".to_owned())]);
}

//! The EC2-facing paths: `PUT /latest/api/token` and every `GET` below a version root, with
//! EC2's status codes, bodies and headers.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use tokio::time::Instant;

use crate::state::{LogEntry, TokenUse, World};
use crate::tree::{self, Resolved};
use crate::{App, TokenMode};

const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const MAX_TTL_SECS: u64 = 21_600;

pub async fn handle(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path();
    // One lock per request: decide the fault, answer and log under the same guard. Only an
    // injected latency releases it, to sleep.
    let fault = app.world().next_fault(path);
    if let Some(f) = fault.filter(|f| f.latency > Duration::ZERO) {
        tokio::time::sleep(f.latency).await;
    }
    let now = Instant::now();
    let mut world = app.world();
    let (token, mut reply) = match (fault.and_then(|f| f.status), &method) {
        (Some(status), _) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            (token_use(&world, &headers), error_page(status))
        }
        (None, &Method::PUT) => (TokenUse::None, put(&mut world, path, &headers, now)),
        (None, &Method::GET | &Method::HEAD) => {
            let token = token_use(&world, &headers);
            (token, get(&world, &app.fixed, path, token, now))
        }
        (None, _) => (
            token_use(&world, &headers),
            error_page(StatusCode::METHOD_NOT_ALLOWED),
        ),
    };
    reply
        .headers_mut()
        .insert(header::SERVER, HeaderValue::from_static("EC2ws"));
    world.record(LogEntry {
        time: Timestamp::now(),
        method: method.to_string(),
        path: path.to_owned(),
        status: reply.status().as_u16(),
        token,
    });
    reply
}

fn token_use(world: &World, headers: &HeaderMap) -> TokenUse {
    let token = headers.get(TOKEN_HEADER).map(|v| v.to_str().unwrap_or(""));
    world.check_token(token, Instant::now())
}

fn put(world: &mut World, path: &str, headers: &HeaderMap, now: Instant) -> Response {
    if path != "/latest/api/token" {
        // Tokens come only from the unversioned path; EC2 answers 403 for versioned ones.
        return if path.ends_with("/api/token") {
            error_page(StatusCode::FORBIDDEN)
        } else {
            error_page(StatusCode::METHOD_NOT_ALLOWED)
        };
    }
    // A forwarded request is one that crossed a proxy: EC2 refuses to hand it a token.
    if headers.contains_key("x-forwarded-for") {
        return error_page(StatusCode::FORBIDDEN);
    }
    let ttl = headers
        .get(TTL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| (1..=MAX_TTL_SECS).contains(s));
    let Some(ttl) = ttl else {
        return error_page(StatusCode::BAD_REQUEST);
    };
    let token = world.issue_token(Duration::from_secs(ttl), now);
    let mut resp = text(StatusCode::OK, token);
    resp.headers_mut()
        .insert(TTL_HEADER, HeaderValue::from(ttl));
    resp
}

fn get(world: &World, fixed: &tree::Leaves, path: &str, token: TokenUse, now: Instant) -> Response {
    match (token, world.mode) {
        (TokenUse::Invalid | TokenUse::Expired, _) | (TokenUse::None, TokenMode::Required) => {
            return error_page(StatusCode::UNAUTHORIZED);
        }
        _ => {}
    }
    if path == "/" {
        return text(StatusCode::OK, "latest".into());
    }
    let rest = &path[1..];
    let (version, rel) = rest.split_once('/').unwrap_or((rest, ""));
    if !is_version(version) {
        return error_page(StatusCode::NOT_FOUND);
    }
    if rel.trim_end_matches('/') == "api/token" {
        return error_page(StatusCode::METHOD_NOT_ALLOWED);
    }
    if rel.is_empty() {
        return text(StatusCode::OK, "dynamic\nmeta-data".into());
    }
    if let Some(o) = world.override_for(rel.trim_end_matches('/')) {
        let status = StatusCode::from_u16(o.status).unwrap_or(StatusCode::OK);
        return if status == StatusCode::OK {
            text(status, o.body.clone())
        } else {
            error_page(status)
        };
    }
    match tree::resolve(rel, fixed, &world.dynamic_leaves(now)) {
        Resolved::Leaf(body) | Resolved::Listing(body) => text(StatusCode::OK, body),
        Resolved::NotFound => error_page(StatusCode::NOT_FOUND),
    }
}

/// `latest`, or a dated API version such as `2021-03-23`.
fn is_version(v: &str) -> bool {
    v == "latest"
        || v == "1.0"
        || (v.len() == 10
            && v.bytes().enumerate().all(|(i, b)| {
                if i == 4 || i == 7 {
                    b == b'-'
                } else {
                    b.is_ascii_digit()
                }
            }))
}

/// Every item, JSON ones included, is `text/plain` on EC2.
fn text(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

/// EC2's small XHTML error page.
pub fn error_page(status: StatusCode) -> Response {
    let title = format!(
        "{} - {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n\
         <!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Transitional//EN\"\n\
         \t\"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\">\n\
         <html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">\n \
         <head>\n  <title>{title}</title>\n </head>\n <body>\n  <h1>{title}</h1>\n </body>\n</html>\n"
    );
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_latest_or_dates() {
        assert!(is_version("latest"));
        assert!(is_version("2021-03-23"));
        assert!(!is_version("2021-3-23"));
        assert!(!is_version("_sim"));
        assert!(!is_version(""));
    }
}

//! The HTTP side shared by both clients: one connection pool, a timeout per request, capped
//! bodies, and errors that name the service and the path (never a header: none is secret
//! here, but the habit holds).

use std::time::Duration;

use crate::CloudError;

/// Larger answers are refused: a scheduled-events document is a few kilobytes.
pub const BODY_LIMIT: usize = 256 * 1024;

pub struct Http {
    client: reqwest::Client,
    base: String,
    service: &'static str,
    header: (&'static str, &'static str),
}

/// One successful answer: its `ETag` and body.
pub struct Answer {
    pub etag: Option<String>,
    pub body: String,
}

impl Http {
    /// `header`: what every request carries (`Metadata-Flavor: Google`, `Metadata: true`).
    pub fn new(
        service: &'static str,
        endpoint: &str,
        header: (&'static str, &'static str),
    ) -> Result<Self, CloudError> {
        let base = endpoint.trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&base).map_err(|e| CloudError::Config {
            service,
            endpoint: endpoint.to_owned(),
            reason: e.to_string(),
        })?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(CloudError::Config {
                service,
                endpoint: endpoint.to_owned(),
                reason: "the scheme must be http".into(),
            });
        }
        let client = reqwest::Client::builder()
            // Metadata services are link-local: a proxy in the environment must not see them.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| CloudError::Config {
                service,
                endpoint: endpoint.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            client,
            base,
            service,
            header,
        })
    }

    /// GETs `path` (with its query), bounded by `timeout`.
    pub async fn get(&self, path: &str, timeout: Duration) -> Result<Answer, CloudError> {
        let req = self.client.get(format!("{}{path}", self.base));
        self.send(req, path, timeout).await
    }

    /// POSTs a JSON `body` to `path`, bounded by `timeout`.
    pub async fn post_json(
        &self,
        path: &str,
        body: String,
        timeout: Duration,
    ) -> Result<Answer, CloudError> {
        let req = self
            .client
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/json")
            .body(body);
        self.send(req, path, timeout).await
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        path: &str,
        timeout: Duration,
    ) -> Result<Answer, CloudError> {
        let req = req.header(self.header.0, self.header.1);
        match tokio::time::timeout(timeout, self.exchange(req, path)).await {
            Ok(answer) => answer,
            Err(_) => Err(CloudError::Timeout {
                service: self.service,
                path: path.to_owned(),
                timeout,
            }),
        }
    }

    async fn exchange(
        &self,
        req: reqwest::RequestBuilder,
        path: &str,
    ) -> Result<Answer, CloudError> {
        let transport = |e: reqwest::Error| CloudError::Transport {
            service: self.service,
            path: path.to_owned(),
            reason: error_chain(&e),
        };
        let mut resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > BODY_LIMIT {
                return Err(CloudError::BodyTooLarge {
                    service: self.service,
                    path: path.to_owned(),
                    limit: BODY_LIMIT,
                });
            }
            body.extend_from_slice(&chunk);
        }
        let body = String::from_utf8(body).map_err(|_| CloudError::Malformed {
            service: self.service,
            path: path.to_owned(),
            reason: "the body is not UTF-8".into(),
        })?;
        if !(200..300).contains(&status) {
            let line: String = body
                .lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect();
            return Err(CloudError::Status {
                service: self.service,
                path: path.to_owned(),
                status,
                body: line,
            });
        }
        Ok(Answer { etag, body })
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

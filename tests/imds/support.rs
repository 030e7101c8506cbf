//! Shared set-up: a simulator on a free loopback port, its control API, and a client for it.

use std::time::Duration;

use serde_json::Value;
use sih_imds::{ImdsClient, ImdsConfig};
use sih_sim_imds::{RunningSim, SimConfig, TokenMode};

pub async fn sim(mode: TokenMode) -> RunningSim {
    sim_with(SimConfig {
        imdsv2: mode,
        ..SimConfig::default()
    })
    .await
}

pub async fn sim_with(config: SimConfig) -> RunningSim {
    sih_sim_imds::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("simulator starts")
}

/// A client with fast retries so failure paths finish quickly.
pub fn client(sim: &RunningSim) -> ImdsClient {
    client_with(sim, |_| {})
}

pub fn client_with(sim: &RunningSim, tweak: impl FnOnce(&mut ImdsConfig)) -> ImdsClient {
    let mut config = ImdsConfig {
        endpoint: sim.url(),
        backoff_base: Duration::from_millis(5),
        ..ImdsConfig::default()
    };
    tweak(&mut config);
    ImdsClient::new(config).expect("valid client config")
}

/// The simulator's `/_sim/` API.
pub struct Control {
    http: reqwest::Client,
    base: String,
}

impl Control {
    pub fn of(sim: &RunningSim) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: sim.url(),
        }
    }

    /// POSTs and returns (status, JSON body).
    pub async fn try_post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}/_sim/{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("control API reachable");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.try_post(path, body).await;
        assert_eq!(status, 200, "POST /_sim/{path} answered {status}: {v}");
        v
    }

    /// The request log, then cleared.
    pub async fn take_requests(&self) -> Vec<Value> {
        let url = format!("{}/_sim/requests", self.base);
        let log: Vec<Value> = self
            .http
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        self.http.delete(&url).send().await.unwrap();
        log
    }
}

/// `(method, path, status, token)` of each logged request, for compact assertions.
pub fn summary(log: &[Value]) -> Vec<(String, String, u64, String)> {
    log.iter()
        .map(|e| {
            (
                e["method"].as_str().unwrap_or_default().to_owned(),
                e["path"].as_str().unwrap_or_default().to_owned(),
                e["status"].as_u64().unwrap_or_default(),
                e["token"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

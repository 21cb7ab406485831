//! A `sluice-limiter` process and a client for its API.

use std::{path::Path, time::Duration};

use serde_json::Value;

use crate::{Process, binary, free_port, wait_for_http};

/// A running `sluice-limiter` on a loopback port.
pub struct LimiterProcess {
    /// The process.
    pub process: Process,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    client: reqwest::Client,
}

/// An answer from the limiter.
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The headers.
    pub headers: reqwest::header::HeaderMap,
    /// The JSON body (`Null` when not JSON).
    pub body: Value,
}

impl LimiterProcess {
    /// Starts the limiter on `policy` with extra `args`, and waits until it
    /// is ready.
    pub async fn start(policy: &Path, args: &[&str]) -> Self {
        Self::start_with_env(policy, args, &[]).await
    }

    /// Like [`start`](Self::start), with environment variables.
    pub async fn start_with_env(policy: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut all = vec![
            "--policy".to_owned(),
            policy.display().to_string(),
            "--listen".to_owned(),
            format!("127.0.0.1:{port}"),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let process = Process::start("sluice-limiter", &binary("sluice-limiter"), &all, env);
        let base = format!("http://127.0.0.1:{port}");
        wait_for_http(&format!("{base}/readyz"), Duration::from_secs(20)).await;
        Self {
            process,
            base,
            client: reqwest::Client::new(),
        }
    }

    /// Sends a check with the given JSON body.
    pub async fn check(&self, body: Value) -> Reply {
        let response = self
            .client
            .post(format!("{}/v1/check", self.base))
            .json(&body)
            .send()
            .await;
        Self::reply(response.expect("check answered")).await
    }

    /// Sends a GET to `path`.
    pub async fn get(&self, path: &str) -> Reply {
        let response = self.client.get(format!("{}{path}", self.base)).send().await;
        Self::reply(response.expect("GET answered")).await
    }

    /// The raw text of `/metrics`.
    pub async fn metrics(&self) -> String {
        let response = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics");
        response.text().await.expect("metrics text")
    }

    async fn reply(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap_or_default();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }
}

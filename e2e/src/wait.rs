//! Waiting for things with a deadline instead of sleeping.

use std::{
    future::Future,
    time::{Duration, Instant},
};

/// Polls `condition` every 20 ms until it returns true; panics with `what`
/// after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `url` answers 200.
pub async fn wait_for_http(url: &str, timeout: Duration) {
    let client = reqwest::Client::new();
    eventually(timeout, url, || async {
        let response = client.get(url).timeout(Duration::from_secs(1)).send().await;
        response.is_ok_and(|r| r.status().is_success())
    })
    .await;
}

//! A permissive fake API server: answers every call plausibly, checking
//! it against the RBAC rules like the mock does. For tests that care which
//! APIs the operator uses, not in which order.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::api::{Call, MockApi, merge};

/// Switches that make the fake fail on purpose.
#[derive(Clone, Default)]
pub struct Faults {
    /// Applying a Deployment answers 503.
    pub deployments_unavailable: Arc<AtomicBool>,
}

/// Serves `api` until the client is dropped. Await the handle: a call
/// the RBAC rules do not cover panics the task.
pub fn serve(mut api: MockApi, faults: Faults) -> JoinHandle<()> {
    tokio::spawn(async move {
        let lease = Arc::new(Mutex::new(None::<Value>));
        let mut watches = Vec::new();
        loop {
            let Some(call) = api.next_or_none().await else {
                return;
            };
            if let Some(held) = answer(call, &faults, &lease) {
                watches.push(held); // keep watches open, as a server does
            }
        }
    })
}

fn answer(call: Call, faults: &Faults, lease: &Mutex<Option<Value>>) -> Option<Call> {
    let is_lease = call.path.contains("/leases");
    match call.method.as_str() {
        "GET" if call.query.contains_key("watch") => return Some(call),
        "GET" if call.path.contains("/secrets/") => {
            let name = call.path.rsplit('/').next().unwrap().to_owned();
            let secret = json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": "shop"},
                "data": {"password": "czNjcmV0"},
            });
            call.reply(200, &secret);
        }
        "GET" if is_lease => match lease.lock().unwrap().clone() {
            Some(stored) => call.reply(200, &stored),
            None => call.reply_failure(404, "NotFound", "leases not found"),
        },
        "GET" => {
            let meta = json!({"resourceVersion": "1"});
            let list = json!({"kind": "List", "apiVersion": "v1", "metadata": meta, "items": []});
            call.reply(200, &list);
        }
        "PATCH" if call.path.contains("/deployments/") => {
            if faults.deployments_unavailable.load(Ordering::Relaxed) {
                call.reply_failure(503, "ServiceUnavailable", "unable to handle the request");
            } else {
                call.reply_stored(json!({"status": {"observedGeneration": 1}}));
            }
        }
        "POST" | "PUT" if is_lease => {
            let mut stored = call.body.clone();
            let mut lease = lease.lock().unwrap();
            let version = lease.as_ref().map_or(0, |l| {
                l["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            });
            let version = (version + 1).to_string();
            merge(
                &mut stored,
                json!({"metadata": {"resourceVersion": version}}),
            );
            *lease = Some(stored.clone());
            call.reply(200, &stored);
        }
        "PATCH" if call.path.ends_with("/status") => {
            let limits = json!([{"name": "global", "requests": 1, "window": "1s"}]);
            call.reply_stored(json!({"spec": {"limits": limits}}));
        }
        "DELETE" => call.reply_failure(404, "NotFound", "not found"),
        _ => call.reply_stored(json!({})),
    }
    None
}

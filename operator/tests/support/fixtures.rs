//! Policies, contexts and expected objects for the tests.

use std::{path::Path, sync::Arc};

use k8s_openapi::jiff::Timestamp;
use kube::Client;
use sluice_crds::{RateLimitPolicy, RateLimitPolicySpec};
use sluice_operator::{
    clock::Clock,
    context::{Adaptation, Context},
    leader::{Leadership, LeadershipSender},
    metrics::Metrics,
    render::RenderConfig,
};

/// The namespace of the test policies.
pub const NAMESPACE: &str = "shop";
/// The uid the API server gave the test policy.
pub const UID: &str = "9d3c6f1e-0000-4000-8000-000000000001";
/// The namespace of the leader-election Lease in tests.
pub const LEASE_NAMESPACE: &str = "sluice-system";
/// The image the tests render.
pub const IMAGE: &str = "sluice/sluice-limiter:test";

/// The instant the test clock is stopped at.
pub fn now() -> Timestamp {
    Timestamp::from_second(1_767_225_600).unwrap()
}

/// What rendering gets in tests.
pub fn render_config() -> RenderConfig {
    RenderConfig {
        limiter_image: IMAGE.to_owned(),
    }
}

/// The policy `shop/checkout` with `spec` (YAML) at `generation`, as the
/// API server would hand it over.
pub fn policy(spec: &str, generation: i64) -> RateLimitPolicy {
    let spec: RateLimitPolicySpec = serde_yaml::from_str(spec).expect("test spec parses");
    from_cluster(RateLimitPolicy::new("checkout", spec), generation)
}

/// A spec with one limit of `requests` per second and `replicas` pods.
pub fn spec(requests: u64, replicas: i32) -> String {
    format!(
        "limits: [{{name: global, requests: {requests}, window: 1s}}]\n\
         limiter: {{replicas: {replicas}}}"
    )
}

/// A policy from `operator/tests/fixtures/`, as the API server would hand
/// it over.
pub fn fixture(file: &str) -> RateLimitPolicy {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(file);
    read_policy(&path)
}

/// Every policy in the repository's `examples/`, by file name, as the API
/// server would hand it over (in `shop` when it names no namespace).
pub fn examples() -> Vec<(String, RateLimitPolicy)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/ exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let name = |path: &Path| path.file_stem().unwrap().to_string_lossy().into_owned();
    files
        .iter()
        .map(|path| (name(path), read_policy(path)))
        .collect()
}

fn read_policy(path: &Path) -> RateLimitPolicy {
    let text = std::fs::read_to_string(path).expect("policy file reads");
    let origin = path.display().to_string();
    let mut policies = sluice_crds::parse_policies(&text, &origin).expect("policy file is valid");
    from_cluster(policies.remove(0), 1)
}

fn from_cluster(mut policy: RateLimitPolicy, generation: i64) -> RateLimitPolicy {
    let meta = &mut policy.metadata;
    meta.namespace.get_or_insert_with(|| NAMESPACE.to_owned());
    meta.uid = Some(UID.to_owned());
    meta.generation = Some(generation);
    meta.resource_version = Some("100".to_owned());
    policy
}

/// A reconcile context on `client`, leading or not, with the test clock
/// and fakes for Prometheus and Redis; the sender moves its leadership.
pub fn context(client: Client, leading: bool) -> (Arc<Context>, LeadershipSender) {
    let fakes = super::adaptation::Fakes::new();
    context_with(client, leading, Clock::fixed(now()), fakes.adaptation())
}

/// A reconcile context on `client`, with `clock` and `adaptation`.
pub fn context_with(
    client: Client,
    leading: bool,
    clock: Clock,
    adaptation: Adaptation,
) -> (Arc<Context>, LeadershipSender) {
    let (sender, leadership) = Leadership::channel(leading);
    let ctx = Context::new(
        client,
        render_config(),
        leadership,
        Arc::new(Metrics::new()),
        clock,
        Some("sluice-operator-0".to_owned()),
        adaptation,
    );
    (Arc::new(ctx), sender)
}

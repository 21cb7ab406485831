//! The generated CRD: committed, and its schema rules doing what they say.

use kube::{CustomResourceExt, core::cel::Validator};
use serde_json::Value;
use sluice_crds::RateLimitPolicy;

const COMMITTED: &str = include_str!("../ratelimitpolicy.yaml");

fn schema() -> Value {
    let crd = RateLimitPolicy::crd();
    let version = &crd.spec.versions[0];
    let schema = version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref());
    serde_json::to_value(schema.expect("a schema")).expect("schema as JSON")
}

/// Validates a policy (YAML) against the CEL rules, as the API server would.
fn cel_errors(yaml: &str) -> Vec<String> {
    let object: Value = serde_yaml::from_str(yaml).expect("test YAML");
    match Validator::new().validate(&schema(), &object, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.into_vec().into_iter().map(|e| e.message).collect(),
    }
}

fn policy(spec: &str) -> String {
    format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {{name: p}}\nspec:\n{spec}"
    )
}

const LIMIT: &str = "  limits:\n    - {name: a, requests: 5, window: 1s}\n";
const ADAPTIVE: &str = "  target: {selector: {matchLabels: {app: x}}}\n  adaptive:\n    prometheus: {url: 'http://prometheus:9090'}\n    signals:\n      errors: {weight: 1, target: 0.01, max: 0.1}\n";

#[test]
fn committed_crd_matches_what_crdgen_prints() {
    let generated = serde_yaml::to_string(&RateLimitPolicy::crd()).unwrap();
    assert!(
        generated == COMMITTED,
        "crds/ratelimitpolicy.yaml is stale: run `cargo run -p sluice-crds --bin crdgen > crds/ratelimitpolicy.yaml`"
    );
}

#[test]
fn crd_names_match_the_contract() {
    let crd = RateLimitPolicy::crd();
    assert_eq!(crd.spec.group, "sluice.dev");
    assert_eq!(crd.spec.names.plural, "ratelimitpolicies");
    assert_eq!(crd.spec.names.short_names, Some(vec!["rlp".to_owned()]));
    assert_eq!(crd.spec.scope, "Namespaced");
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(
        version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some()
    );
    let columns: Vec<_> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "Multiplier",
            "Ready",
            "Accepted",
            "Status",
            "Message",
            "Age"
        ]
    );
}

#[test]
fn every_cel_rule_compiles() {
    let compiled = kube::core::cel::compile_schema(&schema());
    assert!(
        !compiled.has_errors(),
        "{:?}",
        compiled.compilation_errors()
    );
}

#[test]
fn example_policies_pass_the_cel_rules() {
    for file in ["quickstart.yaml", "checkout.yaml"] {
        let text =
            std::fs::read_to_string(format!("{}/../examples/{file}", env!("CARGO_MANIFEST_DIR")))
                .unwrap();
        assert_eq!(cel_errors(&text), Vec::<String>::new(), "{file}");
    }
}

#[test]
fn schema_rejects_duplicate_limit_names() {
    let spec = "  limits:\n    - {name: a, requests: 5, window: 1s}\n    - {name: a, requests: 9, window: 1m}\n";
    assert!(cel_errors(&policy(spec)).contains(&"limit names must be unique".to_owned()));
}

#[test]
fn schema_rejects_windows_outside_10ms_to_24h() {
    for window in ["5ms", "25h"] {
        let spec = format!("  limits:\n    - {{name: a, requests: 5, window: {window}}}\n");
        let errors = cel_errors(&policy(&spec));
        assert!(
            errors.contains(&"window must be between 10ms and 24h".to_owned()),
            "{window}: {errors:?}"
        );
    }
    assert!(cel_errors(&policy(LIMIT)).is_empty());
}

#[test]
fn schema_rejects_bounds_min_above_max() {
    let spec = format!("{LIMIT}{ADAPTIVE}    bounds: {{min: 0.5, max: 0.2}}\n");
    assert!(
        cel_errors(&policy(&spec)).contains(&"bounds.min must not exceed bounds.max".to_owned())
    );
    let spec = format!("{LIMIT}{ADAPTIVE}    bounds: {{min: 0.2, max: 0.5}}\n");
    assert_eq!(cel_errors(&policy(&spec)), Vec::<String>::new());
}

#[test]
fn schema_rejects_a_signal_target_not_below_its_max() {
    let spec =
        format!("{LIMIT}{ADAPTIVE}").replace("target: 0.01, max: 0.1", "target: 0.2, max: 0.1");
    assert!(cel_errors(&policy(&spec)).contains(&"target must be below max".to_owned()));
    let latency =
        format!("{LIMIT}{ADAPTIVE}      latency: {{weight: 1, target: 600ms, max: 300ms}}\n");
    assert!(cel_errors(&policy(&latency)).contains(&"target must be below max".to_owned()));
}

#[test]
fn schema_rejects_adaptive_without_signals() {
    let spec = format!("{LIMIT}{ADAPTIVE}").replace(
        "      errors: {weight: 1, target: 0.01, max: 0.1}\n",
        "      {}\n",
    );
    assert!(
        cel_errors(&policy(&spec)).contains(&"set at least one of cpu, latency, errors".to_owned())
    );
}

#[test]
fn schema_rejects_an_interval_outside_1s_to_10m() {
    let spec = format!("{LIMIT}{ADAPTIVE}    interval: 500ms\n");
    assert!(cel_errors(&policy(&spec)).contains(&"interval must be between 1s and 10m".to_owned()));
}

#[test]
fn schema_rejects_a_repeated_partition_key() {
    let spec = "  limits:\n    - {name: a, requests: 5, window: 1s, by: [user, user]}\n";
    assert!(cel_errors(&policy(spec)).contains(&"by must not repeat a key".to_owned()));
}

//! `values.schema.json`: a bad value stops `helm template` (and so
//! `helm install`) with a message naming it.

use crate::helm::template;

/// Renders with `args` and returns helm's error; fails if it rendered.
fn refused(args: &[&str]) -> String {
    let outcome = template(args);
    assert!(!outcome.ok, "{args:?} was accepted:\n{}", outcome.stdout);
    outcome.stderr
}

#[test]
fn a_negative_replica_count_is_refused_naming_the_value() {
    let error = refused(&["--set", "replicas=-1"]);
    assert!(error.contains("/replicas"), "{error}");
    assert!(error.contains("minimum"), "{error}");
}

#[test]
fn zero_replicas_are_refused() {
    let error = refused(&["--set", "replicas=0"]);
    assert!(error.contains("/replicas"), "{error}");
}

#[test]
fn a_replica_count_that_is_not_an_integer_is_refused_naming_the_value() {
    for value in ["replicas=two", "replicas=1.5"] {
        let error = refused(&["--set", value]);
        assert!(error.contains("/replicas"), "{value}: {error}");
        assert!(error.contains("want integer"), "{value}: {error}");
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "replicas: \"2\"\n").unwrap();
    let error = refused(&["-f", file.path().to_str().unwrap()]);
    assert!(error.contains("/replicas"), "a quoted number: {error}");
}

#[test]
fn an_unknown_top_level_value_is_refused_naming_the_key() {
    let error = refused(&["--set", "replica=3"]);
    assert!(error.contains("'replica' not allowed"), "{error}");
}

#[test]
fn an_unknown_nested_value_is_refused_naming_the_key() {
    let error = refused(&["--set", "metrics.prot=9090"]);
    assert!(error.contains("/metrics"), "{error}");
    assert!(error.contains("'prot' not allowed"), "{error}");
}

#[test]
fn an_unknown_pull_policy_is_refused_naming_the_value() {
    let error = refused(&["--set", "image.pullPolicy=Sometimes"]);
    assert!(error.contains("/image/pullPolicy"), "{error}");
}

#[test]
fn a_metrics_port_outside_1_to_65535_is_refused() {
    for port in ["0", "65536"] {
        let error = refused(&["--set", &format!("metrics.port={port}")]);
        assert!(error.contains("/metrics/port"), "{port}: {error}");
    }
}

#[test]
fn an_empty_log_level_is_refused() {
    let error = refused(&["--set", "logLevel="]);
    assert!(error.contains("/logLevel"), "{error}");
}

#[test]
fn extra_args_must_be_strings() {
    let error = refused(&["--set", "extraArgs[0]=1"]);
    assert!(error.contains("/extraArgs/0"), "{error}");
}

#[test]
fn an_existing_service_account_must_be_named() {
    let error = refused(&["--set", "serviceAccount.create=false"]);
    assert!(error.contains("serviceAccount.name is required"), "{error}");
}

//! Every object the operator renders, and its RBAC roles, validate against
//! the official Kubernetes 1.33 schemas, strictly (no unknown field), with
//! the `kubernetes-validate` tool (`pip install kubernetes-validate`).

mod support;

use std::{path::PathBuf, process::Command};

use sluice_operator::{
    rbac::{self, Install},
    render::render,
};
use support::fixtures::{examples, fixture, policy, render_config, spec};

const KUBERNETES_VERSION: &str = "1.33.0";

/// Writes each YAML document to its own file in `dir`.
fn write_documents(dir: &std::path::Path, prefix: &str, documents: &[String]) -> Vec<PathBuf> {
    documents
        .iter()
        .enumerate()
        .map(|(i, document)| {
            let path = dir.join(format!("{prefix}-{i}.yaml"));
            std::fs::write(&path, document).unwrap();
            path
        })
        .collect()
}

fn rendered_documents(policy: &sluice_crds::RateLimitPolicy) -> Vec<String> {
    let children = render(policy, &render_config()).unwrap();
    let mut documents = vec![
        serde_yaml::to_string(&children.config_map).unwrap(),
        serde_yaml::to_string(&children.deployment).unwrap(),
        serde_yaml::to_string(&children.service).unwrap(),
    ];
    documents.extend(children.pdb.map(|pdb| serde_yaml::to_string(&pdb).unwrap()));
    documents
}

#[test]
fn every_rendered_object_validates_against_the_kubernetes_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let mut cases = vec![
        ("checkout".to_owned(), fixture("checkout.yaml")),
        ("single".to_owned(), policy(&spec(10, 1), 1)),
        (
            "cluster".to_owned(),
            policy(
                "limits: [{name: global, requests: 10, window: 1s}]\n\
                 limiter: {replicas: 4, redis: {url: 'rediss://redis.shop:6380', cluster: true}}",
                1,
            ),
        ),
    ];
    cases.extend(
        examples()
            .into_iter()
            .map(|(name, policy)| (format!("example-{name}"), policy)),
    );
    let mut files = Vec::new();
    for (name, policy) in &cases {
        files.extend(write_documents(
            dir.path(),
            name,
            &rendered_documents(policy),
        ));
    }
    let install = Install {
        name: "sluice-operator".into(),
        namespace: "sluice-system".into(),
    };
    let roles = rbac::manifests(&install).unwrap();
    let roles: Vec<String> = roles
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(str::to_owned)
        .collect();
    files.extend(write_documents(dir.path(), "rbac", &roles));
    assert!(files.len() >= 4 + 3 + 4 + 4, "too few files: {files:?}");

    let (ok, stdout) = validate(&files);
    assert!(ok, "validation failed:\n{stdout}");
    let passed = stdout
        .lines()
        .filter(|l| l.contains(" passed for resource "))
        .count();
    assert_eq!(
        passed,
        files.len(),
        "every file must be validated:\n{stdout}"
    );
}

/// Guards the test above against a validator that passes everything.
#[test]
fn the_validator_rejects_a_field_the_schema_does_not_know() {
    let dir = tempfile::tempdir().unwrap();
    let deployment = render(&policy(&spec(10, 2), 1), &render_config())
        .unwrap()
        .deployment;
    let mut yaml = serde_yaml::to_string(&deployment).unwrap();
    yaml = yaml.replace("  replicas: 2\n", "  replicas: 2\n  replicaz: 2\n");
    let files = write_documents(dir.path(), "bad", &[yaml]);
    let (ok, stdout) = validate(&files);
    assert!(!ok, "an unknown field passed:\n{stdout}");
    assert!(stdout.contains("replicaz"), "{stdout}");
}

/// Runs the validator on `files`: whether all passed, and what it said.
fn validate(files: &[PathBuf]) -> (bool, String) {
    let output = Command::new("kubernetes-validate")
        .arg("--strict")
        .args(["-k", KUBERNETES_VERSION])
        .args(files)
        .output()
        .unwrap_or_else(|e| {
            let install = "pip install kubernetes-validate";
            panic!("cannot run kubernetes-validate ({e}); install it with `{install}`")
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    (output.status.success(), format!("{stdout}{stderr}"))
}

//! The Helm chart `charts/sluice`, rendered by the real `helm` (installed
//! by `scripts/setup.sh` in `target/tools/helm/`, or on `PATH`): it lints,
//! every object it renders passes `kubernetes-validate --strict` for
//! Kubernetes 1.33, its CRD is the generated one, its RBAC is exactly what
//! the operator declares (`rbac.rs` here), its values are checked by the
//! schema (`values.rs`), and its Deployment runs the operator as
//! docs/install.md says (`deployment.rs`).

mod deployment;
mod helm;
mod rbac;
mod values;

use std::{path::Path, process::Command};

use serde_json::Value;

use helm::{chart, helm, render, repository, template, validate};

#[test]
fn chart_version_and_app_version_are_the_crates_version() {
    let text = std::fs::read_to_string(chart().join("Chart.yaml")).unwrap();
    let meta: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(meta["apiVersion"], "v2");
    assert_eq!(meta["name"], "sluice");
    assert_eq!(meta["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(meta["appVersion"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn a_missing_helm_fails_the_tests_with_a_message_to_run_setup() {
    let empty = tempfile::tempdir().unwrap();
    let installed = empty.path().join("target/tools/helm/helm");
    let error = helm::locate_helm(&installed, Some(empty.path().as_os_str())).unwrap_err();
    assert!(error.contains("run scripts/setup.sh"), "{error}");
    assert!(helm::locate_helm(&installed, None).is_err());

    std::fs::write(empty.path().join("helm"), "").unwrap();
    let found = helm::locate_helm(&installed, Some(empty.path().as_os_str()));
    assert_eq!(found, Ok(empty.path().join("helm")), "helm on PATH is used");
}

#[test]
fn helm_lint_passes_in_strict_mode() {
    let chart = chart();
    let outcome = helm(&["lint", "--strict", chart.to_str().unwrap()]);
    assert!(outcome.ok, "{}\n{}", outcome.stdout, outcome.stderr);
    assert!(
        outcome.stdout.contains("0 chart(s) failed"),
        "{}",
        outcome.stdout
    );
}

#[test]
fn every_object_of_the_default_install_validates_against_the_kubernetes_schemas() {
    let kinds = validate_rendered(&["--include-crds"]);
    assert_eq!(
        kinds,
        [
            "CustomResourceDefinition",
            "PodDisruptionBudget",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Service",
            "Deployment",
        ]
    );
}

/// Every optional block of the templates filled in, so that an indentation
/// slip in one of them shows.
const EVERY_OPTION: &str = r#"
replicas: 3
imagePullSecrets: [{name: pull}]
serviceAccount: {create: true, name: limits, annotations: {team: api}}
resources: {requests: {cpu: 10m, memory: 32Mi}, limits: {cpu: "1", memory: 1Gi}}
nodeSelector: {kubernetes.io/os: linux}
tolerations: [{key: dedicated, operator: Equal, value: control, effect: NoSchedule}]
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector: {matchLabels: {app.kubernetes.io/name: sluice}}
podAnnotations: {note: "yes"}
podLabels: {team: api}
metrics: {port: 9102, service: {enabled: true, annotations: {note: "yes"}}}
logLevel: info,sluice_operator=debug
extraArgs: [--lease-duration, 20s]
"#;

#[test]
fn every_object_validates_with_every_optional_value_set() {
    let values = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(values.path(), EVERY_OPTION).unwrap();
    let kinds = validate_rendered(&["-f", values.path().to_str().unwrap()]);
    assert_eq!(kinds.len(), 8, "{kinds:?}");
}

/// Renders with `extra`, validates each object on its own, and returns
/// their kinds in order.
fn validate_rendered(extra: &[&str]) -> Vec<String> {
    let outcome = template(extra);
    assert!(outcome.ok, "{}", outcome.stderr);
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<_> = split_documents(&outcome.stdout)
        .enumerate()
        .map(|(i, document)| {
            let path = dir.path().join(format!("object-{i}.yaml"));
            std::fs::write(&path, document).unwrap();
            path
        })
        .collect();
    let kinds: Vec<_> = helm::documents(&outcome.stdout)
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(files.len(), kinds.len(), "one file per object");

    let (ok, report) = validate(&files);
    assert!(ok, "validation failed:\n{report}");
    let passed = report.matches(" passed for resource ").count();
    assert_eq!(
        passed,
        files.len(),
        "every object must be validated:\n{report}"
    );
    kinds
}

/// Helm's output split at its `---` lines, empty parts left out.
fn split_documents(text: &str) -> impl Iterator<Item = String> {
    let mut documents = vec![String::new()];
    for line in text.lines() {
        match line == "---" {
            true => documents.push(String::new()),
            false => {
                let last = documents.last_mut().unwrap();
                last.push_str(line);
                last.push('\n');
            }
        }
    }
    documents.into_iter().filter(|d| !is_blank(d))
}

/// Whether a document holds nothing but comments and blank lines.
fn is_blank(document: &str) -> bool {
    document
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
}

#[test]
fn chart_crd_is_the_generated_crd_also_once_packaged() {
    let generated =
        std::fs::read_to_string(repository().join("crds/ratelimitpolicy.yaml")).unwrap();
    // A link, so that `crdgen`'s output has one home.
    let link = chart().join("crds/ratelimitpolicy.yaml");
    let target = std::fs::read_link(&link).expect("the chart's CRD is a symbolic link");
    assert_eq!(target, Path::new("../../../crds/ratelimitpolicy.yaml"));
    let in_chart = std::fs::read_to_string(&link).unwrap();
    assert!(
        in_chart == generated,
        "charts/sluice/crds/ differs from crds/"
    );

    // `helm package` stores the file the link points at.
    let out = tempfile::tempdir().unwrap();
    let destination = out.path().to_str().unwrap();
    let outcome = helm(&["package", chart().to_str().unwrap(), "-d", destination]);
    assert!(outcome.ok, "{}", outcome.stderr);
    let archive = out
        .path()
        .join(format!("sluice-{}.tgz", env!("CARGO_PKG_VERSION")));
    let packaged = Command::new("tar")
        .arg("-xzOf")
        .arg(&archive)
        .arg("sluice/crds/ratelimitpolicy.yaml")
        .output()
        .expect("tar reads the package");
    assert!(packaged.status.success(), "{packaged:?}");
    assert!(
        packaged.stdout == generated.as_bytes(),
        "the packaged CRD differs"
    );

    // And `helm template --include-crds` renders it.
    let crds: Vec<_> = render(&["--include-crds"])
        .into_iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .collect();
    let expected: Value = serde_yaml::from_str(&generated).unwrap();
    assert_eq!(crds, [expected]);
}

//! The chart's roles and bindings against `sluice_operator::rbac`, the
//! one place the operator's permissions are declared.

use std::path::Path;

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use serde_json::Value;
use sluice_operator::rbac::{self, Install};

use crate::helm::{self, NAMESPACE, copy_tree, of_kind, only, template_chart};

const KINDS: [&str; 4] = ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"];

/// The RBAC objects among `objects`, in the order of [`KINDS`], without
/// the chart's labels: what `sluice-operator rbac` would print for them.
fn rbac_objects(objects: &[Value]) -> Vec<Value> {
    let mut found = Vec::new();
    for kind in KINDS {
        for object in of_kind(objects, kind) {
            let mut object = object.clone();
            if let Some(metadata) = object["metadata"].as_object_mut() {
                metadata.remove("labels");
            }
            found.push(object);
        }
    }
    found
}

/// What the operator declares for `install`, as objects.
fn declared(install: &Install) -> Vec<Value> {
    helm::documents(&rbac::manifests(install).expect("the roles serialize"))
}

/// Every difference between the chart's RBAC objects and the declared
/// ones, rules first, in words.
fn differences(chart: &[Value], install: &Install) -> Vec<String> {
    let mut problems = Vec::new();
    let chart_rules = rules_of(chart);
    let declared_rules = rules_of(&declared(install));
    for rule in declared_rules.iter().filter(|r| !chart_rules.contains(r)) {
        problems.push(format!("declared in rbac.rs, not in the chart: {rule:?}"));
    }
    for rule in chart_rules.iter().filter(|r| !declared_rules.contains(r)) {
        problems.push(format!("in the chart, not declared in rbac.rs: {rule:?}"));
    }
    let chart = rbac_objects(chart);
    let declared = declared(install);
    if chart != declared {
        let yaml = |objects: &[Value]| serde_yaml::to_string(objects).unwrap();
        problems.push(format!(
            "the objects differ.\nchart:\n{}\nsluice-operator rbac:\n{}",
            yaml(&chart),
            yaml(&declared)
        ));
    }
    problems
}

/// `(kind, rule)` for each rule of each role among `objects`.
fn rules_of(objects: &[Value]) -> Vec<(&'static str, PolicyRule)> {
    let mut rules = Vec::new();
    for object in of_kind(objects, "ClusterRole") {
        let role: ClusterRole = serde_json::from_value(object.clone()).unwrap();
        let role_rules = role.rules.unwrap_or_default();
        rules.extend(role_rules.into_iter().map(|r| ("ClusterRole", r)));
    }
    for object in of_kind(objects, "Role") {
        let role: Role = serde_json::from_value(object.clone()).unwrap();
        let role_rules = role.rules.unwrap_or_default();
        rules.extend(role_rules.into_iter().map(|r| ("Role", r)));
    }
    rules
}

fn default_install() -> Install {
    Install {
        name: "sluice-operator".into(),
        namespace: NAMESPACE.into(),
    }
}

#[test]
fn chart_rbac_is_exactly_what_the_operator_declares() {
    let objects = helm::render(&[]);
    let problems = differences(&objects, &default_install());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn chart_rbac_binds_the_service_account_the_operator_runs_as() {
    let objects = helm::render(&["--set", "serviceAccount.name=limits"]);
    let account: Value = only(&objects, "ServiceAccount");
    assert_eq!(account["metadata"]["name"], "limits");
    assert_eq!(account["metadata"]["namespace"], NAMESPACE);
    let deployment: Value = only(&objects, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "limits");
    for kind in ["ClusterRoleBinding", "RoleBinding"] {
        let binding: Value = only(&objects, kind);
        let subjects = binding["subjects"].as_array().unwrap();
        assert_eq!(subjects.len(), 1, "{kind}: {subjects:?}");
        assert_eq!(subjects[0]["kind"], "ServiceAccount", "{kind}");
        assert_eq!(subjects[0]["name"], "limits", "{kind}");
        assert_eq!(subjects[0]["namespace"], NAMESPACE, "{kind}");
    }
}

#[test]
fn chart_rbac_is_named_after_the_release_and_holds_the_declared_rules() {
    let objects = helm::render(&["--set", "fullnameOverride=limits"]);
    let install = Install {
        name: "limits-operator".into(),
        namespace: NAMESPACE.into(),
    };
    let problems = differences(&objects, &install);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Guards the tests above against a comparison that passes everything: a
/// chart missing one verb, or granting one more, fails it.
#[test]
fn a_chart_whose_rules_differ_from_the_declared_ones_fails_the_comparison() {
    let edits = [
        (
            r#"verbs: ["list", "watch", "create", "patch", "delete"]"#,
            r#"verbs: ["list", "watch", "create", "patch"]"#,
            "declared in rbac.rs, not in the chart",
        ),
        (
            r#"verbs: ["get", "create", "update"]"#,
            r#"verbs: ["get", "create", "update", "delete"]"#,
            "in the chart, not declared in rbac.rs",
        ),
    ];
    for (from, to, expected) in edits {
        let copy = tempfile::tempdir().unwrap();
        copy_tree(&helm::chart(), copy.path());
        edit(&copy.path().join("templates/rbac.yaml"), from, to);
        let outcome = template_chart(copy.path(), &[]);
        assert!(outcome.ok, "{}", outcome.stderr);
        let objects = helm::documents(&outcome.stdout);
        let problems = differences(&objects, &default_install());
        assert!(
            problems.iter().any(|p| p.starts_with(expected)),
            "{to}: {problems:?}"
        );
    }
}

fn edit(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    assert_eq!(
        text.matches(from).count(),
        1,
        "{from} in {}",
        file.display()
    );
    std::fs::write(file, text.replace(from, to)).unwrap();
}

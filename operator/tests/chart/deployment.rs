//! The operator's Deployment, its metrics Service and its budget, as the
//! chart renders them.

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Container, EnvVar, Probe, Service},
};
use serde_json::Value;

use crate::helm::{self, of_kind, only, render};

fn deployment(extra: &[&str]) -> Deployment {
    only(&render(extra), "Deployment")
}

fn operator_container(deployment: &Deployment) -> Container {
    let pod = deployment.spec.as_ref().unwrap().template.spec.as_ref();
    let containers = &pod.unwrap().containers;
    assert_eq!(containers.len(), 1);
    containers[0].clone()
}

#[test]
fn the_operator_runs_non_root_with_a_read_only_root_filesystem() {
    let deployment = deployment(&[]);
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    let pod_context = pod.security_context.unwrap();
    assert_eq!(pod_context.run_as_non_root, Some(true));
    assert_ne!(pod_context.run_as_user, Some(0));
    let seccomp = pod_context.seccomp_profile.unwrap();
    assert_eq!(seccomp.type_, "RuntimeDefault");

    let context = pod.containers[0].security_context.clone().unwrap();
    assert_eq!(context.read_only_root_filesystem, Some(true));
    assert_eq!(context.allow_privilege_escalation, Some(false));
    assert_eq!(context.run_as_non_root, Some(true));
    assert_eq!(context.privileged, None);
    let drop = context.capabilities.unwrap().drop.unwrap();
    assert_eq!(drop, ["ALL"]);
}

#[test]
fn the_operator_runs_with_its_pod_identity_and_the_api_token() {
    let deployment = deployment(&[]);
    let pod = deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .clone()
        .unwrap();
    assert_eq!(pod.automount_service_account_token, Some(true));
    assert_eq!(pod.service_account_name.as_deref(), Some("sluice-operator"));

    let container = operator_container(&deployment);
    let env = container.env.unwrap_or_default();
    let field = |name: &str| -> Option<String> {
        let var: &EnvVar = env.iter().find(|v| v.name == name)?;
        let source = var.value_from.as_ref()?.field_ref.as_ref()?;
        Some(source.field_path.clone())
    };
    assert_eq!(field("POD_NAME").as_deref(), Some("metadata.name"));
    assert_eq!(
        field("POD_NAMESPACE").as_deref(),
        Some("metadata.namespace")
    );
    let log = env.iter().find(|v| v.name == "RUST_LOG").unwrap();
    assert_eq!(log.value.as_deref(), Some("info"));
}

#[test]
fn the_operator_serves_probes_and_metrics_on_8081() {
    let deployment = deployment(&[]);
    let container = operator_container(&deployment);
    assert_eq!(
        container.command.as_deref(),
        Some(&["sluice-operator".to_owned()][..])
    );
    let args = container.args.clone().unwrap();
    assert_eq!(args[0], "run");
    assert!(
        args.windows(2).any(|w| w == ["--listen", "0.0.0.0:8081"]),
        "{args:?}"
    );

    let port = &container.ports.clone().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.container_port),
        (Some("metrics"), 8081)
    );
    let probe_path = |probe: Option<Probe>| {
        let get = probe.unwrap().http_get.unwrap();
        (get.path.unwrap(), serde_json::to_value(get.port).unwrap())
    };
    assert_eq!(
        probe_path(container.liveness_probe),
        ("/healthz".into(), "metrics".into())
    );
    assert_eq!(
        probe_path(container.readiness_probe),
        ("/readyz".into(), "metrics".into())
    );

    let template = deployment.spec.unwrap().template.metadata.unwrap();
    let annotations = template.annotations.unwrap();
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "8081");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");

    let service: Service = only(&render(&[]), "Service");
    let spec = service.spec.unwrap();
    let pod_labels = template.labels.unwrap();
    for (key, value) in spec.selector.unwrap() {
        assert_eq!(
            pod_labels.get(&key),
            Some(&value),
            "the Service selects {key}"
        );
    }
    let ports = spec.ports.unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(
        (ports[0].name.as_deref(), ports[0].port),
        (Some("metrics"), 8081)
    );
}

#[test]
fn images_default_to_the_chart_version_and_values_reach_the_command_line() {
    let version = env!("CARGO_PKG_VERSION");
    let container = operator_container(&deployment(&[]));
    assert_eq!(
        container.image.unwrap(),
        format!("sluice/sluice-operator:{version}")
    );
    let args = container.args.unwrap();
    let limiter = format!("sluice/sluice-limiter:{version}");
    assert!(
        args.windows(2)
            .any(|w| w == ["--limiter-image", limiter.as_str()]),
        "{args:?}"
    );

    let container = operator_container(&deployment(&[
        "--set",
        "image.tag=dev,limiterImage.repository=example/limiter",
        "--set-string",
        "limiterImage.tag=7",
        "--set",
        "logLevel=debug",
        "--set-json",
        r#"extraArgs=["--adaptive-timeout","3s"]"#,
    ]));
    assert_eq!(container.image.unwrap(), "sluice/sluice-operator:dev");
    let args = container.args.unwrap();
    assert!(
        args.windows(2)
            .any(|w| w == ["--limiter-image", "example/limiter:7"]),
        "{args:?}"
    );
    assert!(
        args.ends_with(&["--adaptive-timeout".into(), "3s".into()]),
        "{args:?}"
    );
    let env = container.env.unwrap();
    let log = env.iter().find(|v| v.name == "RUST_LOG").unwrap();
    assert_eq!(log.value.as_deref(), Some("debug"));
}

#[test]
fn two_replicas_by_default_with_a_budget_of_one_unavailable_pod() {
    let objects = render(&[]);
    let deployment: Deployment = only(&objects, "Deployment");
    assert_eq!(deployment.spec.unwrap().replicas, Some(2));
    let budget: Value = only(&objects, "PodDisruptionBudget");
    assert_eq!(budget["spec"]["maxUnavailable"], 1);
}

#[test]
fn one_replica_renders_no_pod_disruption_budget() {
    let objects = render(&["--set", "replicas=1"]);
    let deployment: Deployment = only(&objects, "Deployment");
    assert_eq!(deployment.spec.unwrap().replicas, Some(1));
    let budgets: Vec<_> = of_kind(&objects, "PodDisruptionBudget").collect();
    assert!(budgets.is_empty(), "{budgets:?}");
}

#[test]
fn every_object_carries_the_standard_labels() {
    for object in render(&[]) {
        let labels = &object["metadata"]["labels"];
        let kind = &object["kind"];
        assert_eq!(labels["app.kubernetes.io/name"], "sluice", "{kind}");
        assert_eq!(
            labels["app.kubernetes.io/instance"],
            helm::RELEASE,
            "{kind}"
        );
        assert_eq!(
            labels["app.kubernetes.io/version"],
            env!("CARGO_PKG_VERSION"),
            "{kind}"
        );
        assert_eq!(labels["app.kubernetes.io/managed-by"], "Helm", "{kind}");
        let chart = format!("sluice-{}", env!("CARGO_PKG_VERSION"));
        assert_eq!(labels["helm.sh/chart"], chart.as_str(), "{kind}");
    }
}

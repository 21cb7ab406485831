//! Rendering: what a policy's children look like, field by field, and as
//! a whole against a reviewed golden file.

mod support;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use serde_json::{Value, json};
use sluice_operator::render::{Children, POLICY_KEY, render};
use support::fixtures::{self, IMAGE, UID, fixture, policy, render_config, spec};

fn children(policy: &sluice_crds::RateLimitPolicy) -> Children {
    render(policy, &render_config()).expect("renders")
}

fn pod(children: &Children) -> &PodSpec {
    let template = &children.deployment.spec.as_ref().unwrap().template;
    template.spec.as_ref().unwrap()
}

fn container(children: &Children) -> &Container {
    &pod(children).containers[0]
}

fn json_of<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap()
}

#[test]
fn configmap_holds_a_full_document_the_limiter_accepts() {
    let checkout = fixture("checkout.yaml");
    let data = children(&checkout).config_map.data.unwrap();
    let document = &data[POLICY_KEY];
    let parsed =
        sluice_crds::parse_policies(document, "configmap").expect("the limiter accepts it");
    assert_eq!(parsed.len(), 1);
    assert_eq!(parsed[0].key(), "shop/checkout");
    assert_eq!(parsed[0].spec, checkout.spec);
    let yaml: Value = serde_yaml::from_str(document).unwrap();
    assert_eq!(yaml["apiVersion"], "sluice.dev/v1alpha1");
    assert_eq!(yaml["kind"], "RateLimitPolicy");
    assert_eq!(
        yaml["metadata"],
        json!({"name": "checkout", "namespace": "shop"})
    );
    assert_eq!(yaml.get("status"), None);
}

#[test]
fn children_are_named_after_the_policy_and_labelled_as_its_limiter() {
    let rendered = children(&policy(&spec(10, 2), 1));
    let labels = json!({
        "app.kubernetes.io/name": "sluice-limiter",
        "app.kubernetes.io/instance": "checkout",
        "app.kubernetes.io/managed-by": "sluice-operator",
    });
    let metas = [
        json_of(&rendered.config_map.metadata),
        json_of(&rendered.deployment.metadata),
        json_of(&rendered.service.metadata),
        json_of(&rendered.pdb.unwrap().metadata),
    ];
    let names: Vec<_> = metas
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "checkout-policy",
            "checkout-limiter",
            "checkout-limiter",
            "checkout-limiter"
        ]
    );
    for meta in metas {
        assert_eq!(meta["namespace"], "shop");
        assert_eq!(meta["labels"], labels);
    }
}

#[test]
fn every_child_is_controlled_by_its_policy() {
    let rendered = children(&policy(&spec(10, 2), 1));
    let expected = json!([{
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "RateLimitPolicy",
        "name": "checkout",
        "uid": UID,
        "controller": true,
        "blockOwnerDeletion": true,
    }]);
    let owners = [
        json_of(&rendered.config_map.metadata.owner_references),
        json_of(&rendered.deployment.metadata.owner_references),
        json_of(&rendered.service.metadata.owner_references),
        json_of(&rendered.pdb.unwrap().metadata.owner_references),
    ];
    for owner in owners {
        assert_eq!(owner, expected);
    }
}

#[test]
fn limiter_runs_on_the_mounted_policy_directory_listening_on_all_addresses() {
    let rendered = children(&policy(&spec(10, 2), 1));
    let limiter = container(&rendered);
    assert_eq!(limiter.image.as_deref(), Some(IMAGE));
    assert_eq!(limiter.command, Some(vec!["sluice-limiter".to_owned()]));
    let args = [
        "--policy",
        "/etc/sluice/policies",
        "--listen",
        "0.0.0.0:8080",
    ];
    assert_eq!(limiter.args, Some(args.map(str::to_owned).to_vec()));
    let mount = &limiter.volume_mounts.as_ref().unwrap()[0];
    assert_eq!(
        (mount.mount_path.as_str(), mount.read_only),
        ("/etc/sluice/policies", Some(true))
    );
    let volume = &pod(&rendered).volumes.as_ref().unwrap()[0];
    assert_eq!(volume.name, mount.name);
    assert_eq!(volume.config_map.as_ref().unwrap().name, "checkout-policy");
}

#[test]
fn limiter_pods_run_non_root_on_a_read_only_root_without_a_token() {
    let rendered = children(&policy(&spec(10, 2), 1));
    let pod = pod(&rendered);
    assert_eq!(pod.automount_service_account_token, Some(false));
    let pod_security = pod.security_context.as_ref().unwrap();
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert_ne!(pod_security.run_as_user, Some(0));
    let security = container(&rendered).security_context.as_ref().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(json_of(&security.capabilities), json!({"drop": ["ALL"]}));
}

#[test]
fn limiter_pods_are_probed_on_the_limiters_health_endpoints() {
    let rendered = children(&policy(&spec(10, 2), 1));
    let limiter = container(&rendered);
    let probe =
        |p: &Option<k8s_openapi::api::core::v1::Probe>| json_of(&p.as_ref().unwrap().http_get);
    assert_eq!(
        probe(&limiter.liveness_probe),
        json!({"path": "/healthz", "port": "http"})
    );
    assert_eq!(
        probe(&limiter.readiness_probe),
        json!({"path": "/readyz", "port": "http"})
    );
    let port = &limiter.ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.container_port),
        (Some("http"), 8080)
    );
}

#[test]
fn limiter_pods_request_resources_and_invite_prometheus() {
    let rendered = children(&policy(&spec(10, 2), 1));
    let requests = json_of(&container(&rendered).resources.as_ref().unwrap().requests);
    assert_eq!(requests, json!({"cpu": "100m", "memory": "64Mi"}));
    let template = &rendered.deployment.spec.as_ref().unwrap().template;
    let annotations = json_of(&template.metadata.as_ref().unwrap().annotations);
    assert_eq!(
        annotations,
        json!({
            "prometheus.io/scrape": "true",
            "prometheus.io/port": "8080",
            "prometheus.io/path": "/metrics",
        })
    );
}

#[test]
fn redis_becomes_flags_and_its_password_comes_only_from_the_secret() {
    let checkout = fixture("checkout.yaml");
    let rendered = children(&checkout);
    let limiter = container(&rendered);
    let args = limiter.args.clone().unwrap();
    assert_eq!(
        &args[4..],
        ["--store", "redis", "--redis-url", "redis://redis.shop:6379"]
    );
    let env = json_of(&limiter.env);
    assert_eq!(
        env,
        json!([{
            "name": "SLUICE_REDIS_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "redis-auth", "key": "password", "optional": false}},
        }])
    );
}

#[test]
fn redis_cluster_adds_the_cluster_flag() {
    let rendered = children(&policy(
        "limits: [{name: global, requests: 10, window: 1s}]\n\
         limiter: {redis: {url: 'redis://redis-cluster.shop:6379', cluster: true}}",
        1,
    ));
    let limiter = container(&rendered);
    assert_eq!(
        limiter.args.as_ref().unwrap().last().map(String::as_str),
        Some("--redis-cluster")
    );
    assert_eq!(limiter.env, None, "no password, no variable");
}

#[test]
fn a_single_replica_gets_no_disruption_budget() {
    let rendered = children(&policy(&spec(10, 1), 1));
    assert_eq!(rendered.pdb, None);
    assert_eq!(rendered.deployment.spec.unwrap().replicas, Some(1));
}

#[test]
fn the_disruption_budget_lets_one_limiter_go_at_a_time() {
    let rendered = children(&policy(&spec(10, 3), 1));
    let pdb = json_of(&rendered.pdb.unwrap().spec);
    assert_eq!(
        pdb,
        json!({"maxUnavailable": 1, "selector": {"matchLabels": {
            "app.kubernetes.io/name": "sluice-limiter", "app.kubernetes.io/instance": "checkout"}}})
    );
}

#[test]
fn the_service_reaches_the_limiter_pods_by_port_name() {
    let rendered = children(&policy(&spec(10, 2), 1));
    let service = json_of(&rendered.service.spec);
    assert_eq!(
        service["selector"],
        json_of(&rendered.deployment.spec.unwrap().selector.match_labels)
    );
    assert_eq!(service["ports"][0]["port"], 8080);
    assert_eq!(service["ports"][0]["targetPort"], "http");
}

#[test]
fn a_spec_change_changes_the_configmap_and_not_the_pods() {
    let before = children(&policy(&spec(10, 2), 1));
    let after = children(&policy(&spec(20, 2), 2));
    assert_ne!(before.config_map, after.config_map);
    assert_eq!(
        before.deployment, after.deployment,
        "pods would roll for nothing"
    );
    assert_eq!(before.service, after.service);
}

#[test]
fn a_replica_change_keeps_the_immutable_selector() {
    let two = children(&policy(&spec(10, 2), 1)).deployment.spec.unwrap();
    let five = children(&policy(&spec(10, 5), 2)).deployment.spec.unwrap();
    assert_eq!(two.selector, five.selector);
    assert_eq!(five.replicas, Some(5));
}

/// Every child of the checkout fixture, as a reviewer reads it. Set
/// `SLUICE_UPDATE_GOLDEN=1` to rewrite the file after an intended change,
/// and review the diff.
#[test]
fn checkout_fixture_renders_as_reviewed() {
    let rendered = children(&fixture("checkout.yaml"));
    let documents = [
        serde_yaml::to_string(&rendered.config_map).unwrap(),
        serde_yaml::to_string(&rendered.deployment).unwrap(),
        serde_yaml::to_string(&rendered.service).unwrap(),
        serde_yaml::to_string(&rendered.pdb.unwrap()).unwrap(),
    ];
    let actual = documents.map(|d| format!("---\n{d}")).concat();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/checkout.yaml");
    if std::env::var_os("SLUICE_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).expect("golden file exists");
    assert_eq!(
        actual,
        expected,
        "rendering changed; see {}",
        path.display()
    );
}

#[test]
fn a_policy_not_read_from_a_cluster_is_refused() {
    let mut local = policy(&spec(10, 2), 1);
    local.metadata.uid = None;
    let error = render(&local, &fixtures::render_config()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "failed to render children: the policy has no metadata.uid"
    );
}

//! The operator on a real Kubernetes cluster (kind, k3d, ...). Runs only
//! when `KUBECONFIG` is set; see docs/operator.md for how to run it.
//!
//! It installs the CRD, starts the built `sluice-operator` on this machine
//! against the cluster, applies a policy in a namespace of its own, waits
//! for it to be Ready, asks the limiters through their Service, changes the
//! spec and sees the limiters take it, deletes the policy and sees the
//! children go, then stops the operator and removes the namespace.

use std::{panic::AssertUnwindSafe, time::Duration};

use futures::FutureExt;
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        coordination::v1::Lease,
        core::v1::{ConfigMap, Namespace, Service},
        policy::v1::PodDisruptionBudget,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, CustomResourceExt, Resource,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::{Value, json};
use sluice_crds::RateLimitPolicy;
use sluice_e2e::{Process, binary, eventually, free_port, wait_for_http};

const MANAGER: &str = "sluice-e2e";
/// Pulling an image and starting pods takes a while on a fresh cluster.
const ROLLOUT: Duration = Duration::from_secs(300);
/// The kubelet refreshes mounted ConfigMaps about once a minute.
const CONFIG_SYNC: Duration = Duration::from_secs(180);

#[tokio::test]
async fn operator_serves_a_policy_on_a_real_cluster() {
    if std::env::var_os("KUBECONFIG").is_none() {
        // Written past the test harness's capture, so that the skip shows.
        let message = "operator_serves_a_policy_on_a_real_cluster skipped: KUBECONFIG is not set. \
                       This suite needs a real cluster; docs/operator.md tells how to run it.\n";
        let _ = std::io::Write::write_all(&mut std::io::stderr(), message.as_bytes());
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::try_default()
        .await
        .expect("a client for KUBECONFIG");
    let namespace = format!("sluice-e2e-{}", std::process::id());
    create_namespace(&client, &namespace).await;
    let outcome = AssertUnwindSafe(scenario(&client, &namespace))
        .catch_unwind()
        .await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces
        .delete(&namespace, &DeleteParams::background())
        .await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn scenario(client: &Client, namespace: &str) {
    install_crd(client).await;
    let mut operator = start_operator(namespace).await;
    let policies: Api<RateLimitPolicy> = Api::namespaced(client.clone(), namespace);

    apply_policy(&policies, namespace, 5).await;
    wait_ready(&policies, 1).await;
    let decision = check(client, namespace).await;
    assert_eq!(decision["allowed"], true, "{decision}");
    assert_children(client, namespace, true).await;

    apply_policy(&policies, namespace, 7).await;
    wait_ready(&policies, 2).await;
    wait_served_requests(client, namespace, 7).await;

    policies
        .delete("checkout", &DeleteParams::foreground())
        .await
        .expect("delete the policy");
    eventually(ROLLOUT, "the children to be garbage-collected", || async {
        !any_child_left(client, namespace).await
    })
    .await;

    operator.signal("TERM");
    let exit = operator
        .wait_exit(Duration::from_secs(30))
        .expect("the operator exits on SIGTERM");
    assert!(
        exit.success(),
        "operator exited with {exit}:\n{}",
        operator.output()
    );
    let lease = Api::<Lease>::namespaced(client.clone(), namespace)
        .get("sluice-operator")
        .await;
    let holder = lease
        .expect("the lease exists")
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(holder, None, "the lease is released on shutdown");
}

async fn create_namespace(client: &Client, namespace: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
    api.patch(namespace, &PatchParams::apply(MANAGER), &Patch::Apply(body))
        .await
        .expect("create the test namespace");
}

async fn install_crd(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = RateLimitPolicy::crd();
    let name = crd.meta().name.clone().unwrap();
    let params = PatchParams::apply(MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(&crd))
        .await
        .expect("install the CRD");
    eventually(
        Duration::from_secs(60),
        "the CRD to be established",
        || async {
            let crd = api.get(&name).await.ok();
            let conditions = crd
                .and_then(|c| c.status)
                .and_then(|s| s.conditions)
                .unwrap_or_default();
            conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        },
    )
    .await;
}

async fn start_operator(namespace: &str) -> Process {
    let port = free_port();
    let image = std::env::var("SLUICE_E2E_LIMITER_IMAGE")
        .unwrap_or_else(|_| format!("sluice/sluice-limiter:{}", env!("CARGO_PKG_VERSION")));
    let args = [
        "run".to_owned(),
        "--limiter-image".to_owned(),
        image,
        "--lease-namespace".to_owned(),
        namespace.to_owned(),
        "--listen".to_owned(),
        format!("127.0.0.1:{port}"),
    ];
    let operator = Process::start("sluice-operator", &binary("sluice-operator"), &args, &[]);
    wait_for_http(
        &format!("http://127.0.0.1:{port}/readyz"),
        Duration::from_secs(60),
    )
    .await;
    operator
}

async fn apply_policy(policies: &Api<RateLimitPolicy>, namespace: &str, requests: u64) {
    let policy = json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "RateLimitPolicy",
        "metadata": {"name": "checkout", "namespace": namespace},
        "spec": {
            "limits": [{"name": "per-user", "requests": requests, "window": "1m", "by": ["user"]}],
            "limiter": {"replicas": 2},
        },
    });
    policies
        .patch(
            "checkout",
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(policy),
        )
        .await
        .expect("apply the policy");
}

async fn wait_ready(policies: &Api<RateLimitPolicy>, generation: i64) {
    let what = format!("generation {generation} to be Ready");
    eventually(ROLLOUT, &what, || async {
        let status = policies.get("checkout").await.ok().and_then(|p| p.status);
        status.is_some_and(|s| {
            let ready = s
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ready && s.observed_generation == Some(generation)
        })
    })
    .await;
}

/// `POST /v1/check` through the API server's proxy to the limiter Service.
async fn check(client: &Client, namespace: &str) -> Value {
    let path =
        format!("/api/v1/namespaces/{namespace}/services/checkout-limiter:http/proxy/v1/check");
    let body =
        json!({"policy": format!("{namespace}/checkout"), "user": "e2e", "endpoint": "GET /"});
    let request = http::Request::post(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    let text = client
        .request_text(request)
        .await
        .expect("a check through the Service");
    serde_json::from_str(&text).expect("a JSON decision")
}

/// Waits until a limiter behind the Service serves `requests` per window.
async fn wait_served_requests(client: &Client, namespace: &str, requests: u64) {
    let path =
        format!("/api/v1/namespaces/{namespace}/services/checkout-limiter:http/proxy/v1/policies");
    let what = format!("the limiters to serve {requests} requests per window");
    eventually(CONFIG_SYNC, &what, || async {
        let request = http::Request::get(path.clone()).body(Vec::new()).unwrap();
        let text = client.request_text(request).await.unwrap_or_default();
        text.contains(&format!("\"requests\":{requests}"))
    })
    .await;
}

async fn assert_children(client: &Client, namespace: &str, with_pdb: bool) {
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let config_map = config_maps
        .get("checkout-policy")
        .await
        .expect("the ConfigMap exists");
    let document = &config_map.data.unwrap_or_default()["policy.yaml"];
    assert!(
        sluice_crds::parse_policies(document, "configmap").is_ok(),
        "{document}"
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let deployment = deployments
        .get("checkout-limiter")
        .await
        .expect("the Deployment exists");
    assert_eq!(deployment.spec.and_then(|s| s.replicas), Some(2));
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    services
        .get("checkout-limiter")
        .await
        .expect("the Service exists");
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), namespace);
    assert_eq!(
        pdbs.get_opt("checkout-limiter").await.unwrap().is_some(),
        with_pdb
    );
}

async fn any_child_left(client: &Client, namespace: &str) -> bool {
    let limiter = "checkout-limiter";
    let found = [
        exists::<ConfigMap>(client, namespace, "checkout-policy").await,
        exists::<Deployment>(client, namespace, limiter).await,
        exists::<Service>(client, namespace, limiter).await,
        exists::<PodDisruptionBudget>(client, namespace, limiter).await,
    ];
    found.into_iter().any(|f| f)
}

/// Whether `namespace/name` exists; an error counts as "maybe".
async fn exists<K>(client: &Client, namespace: &str, name: &str) -> bool
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + k8s_openapi::serde::de::DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.get_opt(name)
        .await
        .map_or(true, |found| found.is_some())
}

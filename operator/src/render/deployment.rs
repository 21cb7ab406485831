//! The Deployment of `sluice-limiter` pods that enforce a policy.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment},
        core::v1::{
            Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
            HTTPGetAction, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
            ResourceRequirements, SeccompProfile, SecretKeySelector, SecurityContext, Volume,
            VolumeMount,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity, apis::meta::v1::ObjectMeta, util::intstr::IntOrString,
    },
};
use sluice_crds::{LimiterSpec, RedisSpec};

use super::{Owner, RenderConfig};

/// The limiter container's name.
pub const CONTAINER_NAME: &str = "limiter";
/// Where the policy ConfigMap is mounted; the limiter loads every YAML
/// file in it and reloads them when the kubelet updates the mount.
pub const POLICY_DIR: &str = "/etc/sluice/policies";
/// The port the limiter serves its API, probes and metrics on.
pub const HTTP_PORT: i32 = 8080;
/// The name of [`HTTP_PORT`] on the container and the Service.
pub const PORT_NAME: &str = "http";
/// The environment variable that hands the Redis password to the limiter.
pub const REDIS_PASSWORD_ENV: &str = "SLUICE_REDIS_PASSWORD";
/// The user and group the limiter runs as: not root, and no user of the
/// host's.
pub const RUN_AS_ID: i64 = 65532;

const POLICY_VOLUME: &str = "policy";

/// Renders the Deployment `<policy>-limiter`. Pure.
///
/// Pods do not roll when the policy changes: the limiter notices the
/// kubelet's update of the mounted ConfigMap and reloads it, keeping its
/// counters.
pub fn render_deployment(
    owner: &Owner,
    limiter: &LimiterSpec,
    config: &RenderConfig,
) -> Deployment {
    Deployment {
        metadata: owner.child_metadata(owner.limiter_name()),
        spec: Some(DeploymentSpec {
            replicas: Some(limiter.replicas),
            selector: owner.selector(),
            strategy: Some(rolling_update()),
            template: pod_template(owner, limiter, config),
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// One new pod at a time, never fewer ready pods than asked for.
fn rolling_update() -> DeploymentStrategy {
    DeploymentStrategy {
        type_: Some("RollingUpdate".to_owned()),
        rolling_update: Some(RollingUpdateDeployment {
            max_surge: Some(IntOrString::Int(1)),
            max_unavailable: Some(IntOrString::Int(0)),
        }),
    }
}

fn pod_template(owner: &Owner, limiter: &LimiterSpec, config: &RenderConfig) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(owner.labels()),
            annotations: Some(scrape_annotations()),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            // The limiter never calls the Kubernetes API.
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            security_context: Some(pod_security_context()),
            containers: vec![limiter_container(limiter.redis.as_ref(), config)],
            volumes: Some(vec![policy_volume(owner)]),
            ..PodSpec::default()
        }),
    }
}

/// Tells a Prometheus that follows the common annotations where to scrape.
fn scrape_annotations() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("prometheus.io/scrape".to_owned(), "true".to_owned()),
        ("prometheus.io/port".to_owned(), HTTP_PORT.to_string()),
        ("prometheus.io/path".to_owned(), "/metrics".to_owned()),
    ])
}

fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_ID),
        run_as_group: Some(RUN_AS_ID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

fn limiter_container(redis: Option<&RedisSpec>, config: &RenderConfig) -> Container {
    Container {
        name: CONTAINER_NAME.to_owned(),
        image: Some(config.limiter_image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        command: Some(vec!["sluice-limiter".to_owned()]),
        args: Some(limiter_args(redis)),
        env: redis.and_then(redis_password_env).map(|env| vec![env]),
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.to_owned()),
            container_port: HTTP_PORT,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        liveness_probe: Some(http_probe("/healthz", 10, 3)),
        readiness_probe: Some(http_probe("/readyz", 5, 2)),
        resources: Some(resources()),
        security_context: Some(container_security_context()),
        volume_mounts: Some(vec![VolumeMount {
            name: POLICY_VOLUME.to_owned(),
            mount_path: POLICY_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    }
}

/// The limiter's command line after the program name.
pub fn limiter_args(redis: Option<&RedisSpec>) -> Vec<String> {
    let mut args = vec![
        "--policy".to_owned(),
        POLICY_DIR.to_owned(),
        "--listen".to_owned(),
        format!("0.0.0.0:{HTTP_PORT}"),
    ];
    if let Some(redis) = redis {
        args.extend(["--store".to_owned(), "redis".to_owned()]);
        args.extend(["--redis-url".to_owned(), redis.url.clone()]);
        if redis.cluster {
            args.push("--redis-cluster".to_owned());
        }
    }
    args
}

/// The password comes from the Secret through the kubelet, and never
/// appears in the Deployment. (The operator reads the Secret too, but only
/// to publish the multiplier in the same Redis.)
fn redis_password_env(redis: &RedisSpec) -> Option<EnvVar> {
    let secret = redis.password_secret_ref.as_ref()?;
    Some(EnvVar {
        name: REDIS_PASSWORD_ENV.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.name.clone(),
                key: secret.key.clone(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    })
}

fn http_probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(PORT_NAME.to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        timeout_seconds: Some(1),
        ..Probe::default()
    }
}

/// Requests sized for a limiter answering a few thousand checks a second;
/// the memory limit leaves room for the in-memory store's bound of a
/// million counters. No CPU limit: throttling a limiter adds latency to
/// every request of the API it protects.
fn resources() -> ResourceRequirements {
    let quantity = |q: &str| Quantity(q.to_owned());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), quantity("100m")),
            ("memory".to_owned(), quantity("64Mi")),
        ])),
        limits: Some(BTreeMap::from([("memory".to_owned(), quantity("256Mi"))])),
        ..ResourceRequirements::default()
    }
}

fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

fn policy_volume(owner: &Owner) -> Volume {
    Volume {
        name: POLICY_VOLUME.to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: owner.config_map_name(),
            default_mode: Some(0o444),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }
}

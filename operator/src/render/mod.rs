//! Render: the objects a policy needs, as pure functions of the policy and
//! the operator's settings. No client, no clock; the apply step writes
//! what these return.

mod configmap;
mod deployment;
mod meta;
mod pdb;
mod service;

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Service},
    policy::v1::PodDisruptionBudget,
};
use sluice_crds::RateLimitPolicy;

pub use configmap::{POLICY_KEY, policy_document, render_config_map};
pub use deployment::{
    CONTAINER_NAME, HTTP_PORT, POLICY_DIR, PORT_NAME, REDIS_PASSWORD_ENV, RUN_AS_ID, limiter_args,
    render_deployment,
};
pub use meta::{
    LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_NAME, LIMITER_NAME, MANAGER, MAX_POLICY_NAME, Owner,
};
pub use pdb::render_pdb;
pub use service::render_service;

/// What rendering needs besides the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderConfig {
    /// The limiter image, such as `sluice/sluice-limiter:0.1.0`.
    pub limiter_image: String,
}

/// Why a policy could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The policy lacks metadata that only the API server sets; it was not
    /// read from a cluster.
    #[error("failed to render children: the policy has no metadata.{0}")]
    MissingMetadata(&'static str),
    /// The policy document could not be written as YAML.
    #[error("failed to write the policy document as YAML: {0}")]
    SerializePolicy(#[source] serde_yaml::Error),
}

/// Every object a policy needs, in the order they are applied: the
/// ConfigMap before the Deployment that mounts it.
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    /// `<policy>-policy`: the policy document.
    pub config_map: ConfigMap,
    /// `<policy>-limiter`: the limiter pods.
    pub deployment: Deployment,
    /// `<policy>-limiter`: the limiters' address.
    pub service: Service,
    /// `<policy>-limiter`, when more than one replica runs.
    pub pdb: Option<PodDisruptionBudget>,
}

/// Renders every child of `policy`. Pure.
pub fn render(policy: &RateLimitPolicy, config: &RenderConfig) -> Result<Children, RenderError> {
    let owner = Owner::of(policy)?;
    let limiter = &policy.spec.limiter;
    Ok(Children {
        config_map: render_config_map(&owner, &policy.spec)?,
        deployment: render_deployment(&owner, limiter, config),
        service: render_service(&owner),
        pdb: render_pdb(&owner, limiter),
    })
}

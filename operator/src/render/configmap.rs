//! The ConfigMap that carries the policy to the limiter pods.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use serde::Serialize;
use sluice_crds::RateLimitPolicySpec;

use super::{Owner, RenderError};

/// The ConfigMap key, and so the file name in the mounted directory.
pub const POLICY_KEY: &str = "policy.yaml";

/// A policy document as the limiter reads it: no status and no server
/// metadata, since the limiter rejects fields it does not know.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PolicyDocument<'a> {
    api_version: &'static str,
    kind: &'static str,
    metadata: DocumentMetadata<'a>,
    spec: &'a RateLimitPolicySpec,
}

#[derive(Serialize)]
struct DocumentMetadata<'a> {
    name: &'a str,
    namespace: &'a str,
}

/// Writes the policy as a YAML document the limiter can load. Pure.
pub fn policy_document(owner: &Owner, spec: &RateLimitPolicySpec) -> Result<String, RenderError> {
    let document = PolicyDocument {
        api_version: sluice_crds::API_VERSION,
        kind: sluice_crds::KIND,
        metadata: DocumentMetadata {
            name: &owner.name,
            namespace: &owner.namespace,
        },
        spec,
    };
    let yaml = serde_yaml::to_string(&document).map_err(RenderError::SerializePolicy)?;
    let header = format!(
        "# Written by sluice-operator from RateLimitPolicy {}.\n\
         # Edit the policy, not this ConfigMap: changes here are overwritten.\n",
        owner.key()
    );
    Ok(header + &yaml)
}

/// Renders the ConfigMap `<policy>-policy` holding [`POLICY_KEY`]. Pure.
pub fn render_config_map(
    owner: &Owner,
    spec: &RateLimitPolicySpec,
) -> Result<ConfigMap, RenderError> {
    let document = policy_document(owner, spec)?;
    Ok(ConfigMap {
        metadata: owner.child_metadata(owner.config_map_name()),
        data: Some(BTreeMap::from([(POLICY_KEY.to_owned(), document)])),
        ..ConfigMap::default()
    })
}

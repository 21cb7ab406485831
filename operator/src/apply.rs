//! Apply: server-side apply of rendered objects and of the status, with
//! the field manager `sluice-operator`, forcing ownership of the fields it
//! sets (the operator is their one rightful writer).

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;
use sluice_crds::{RateLimitPolicy, RateLimitPolicyStatus};

use crate::render::{MANAGER, Owner};

fn params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

/// Applies `object` in its namespace and returns it as stored, status
/// included.
pub async fn apply<K>(client: &Client, object: &K) -> Result<K, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let namespace = object.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    api.patch(&object.name_any(), &params(), &Patch::Apply(object))
        .await
}

/// Deletes `namespace/name` of kind `K`; one already gone is no failure.
pub async fn delete_if_present<K>(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<(), kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

/// Applies `status` to the policy's status subresource.
pub async fn apply_status(
    client: &Client,
    owner: &Owner,
    status: &RateLimitPolicyStatus,
) -> Result<RateLimitPolicy, kube::Error> {
    let api: Api<RateLimitPolicy> = Api::namespaced(client.clone(), &owner.namespace);
    let body = json!({
        "apiVersion": sluice_crds::API_VERSION,
        "kind": sluice_crds::KIND,
        "metadata": {"name": owner.name, "namespace": owner.namespace},
        "status": status,
    });
    api.patch_status(&owner.name, &params(), &Patch::Apply(body))
        .await
}

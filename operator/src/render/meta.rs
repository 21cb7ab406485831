//! Names, labels and owner references shared by every child of a policy.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::Resource;
use sluice_crds::RateLimitPolicy;

use super::RenderError;

/// `app.kubernetes.io/name`: what runs in the pods.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/instance`: which policy the object serves.
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
/// `app.kubernetes.io/managed-by`: who writes the object.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The value of [`LABEL_NAME`] on every child.
pub const LIMITER_NAME: &str = "sluice-limiter";
/// The value of [`LABEL_MANAGED_BY`] on every child, and the field manager
/// of every write the operator makes.
pub const MANAGER: &str = "sluice-operator";

/// The longest policy name whose children still have valid names: a
/// Service name is a DNS label of at most 63 characters, and `-limiter`
/// takes 8 of them.
pub const MAX_POLICY_NAME: usize = 63 - "-limiter".len();

/// The identity of the policy that owns a set of children.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The policy's name.
    pub name: String,
    /// The policy's namespace, where every child lives.
    pub namespace: String,
    /// The policy's uid, which owner references need.
    pub uid: String,
}

impl Owner {
    /// Reads the identity of `policy`, which must come from the API server
    /// (it carries a namespace and a uid).
    pub fn of(policy: &RateLimitPolicy) -> Result<Self, RenderError> {
        let meta = policy.meta();
        let field = |value: &Option<String>, name: &'static str| {
            value.clone().ok_or(RenderError::MissingMetadata(name))
        };
        Ok(Self {
            name: field(&meta.name, "name")?,
            namespace: field(&meta.namespace, "namespace")?,
            uid: field(&meta.uid, "uid")?,
        })
    }

    /// `<namespace>/<name>`, as logs and metrics name the policy.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The name of the Deployment, Service and PodDisruptionBudget.
    pub fn limiter_name(&self) -> String {
        format!("{}-limiter", self.name)
    }

    /// The name of the ConfigMap holding the policy document.
    pub fn config_map_name(&self) -> String {
        format!("{}-policy", self.name)
    }

    /// The labels that select this policy's limiter pods. They are part of
    /// the Deployment's immutable selector, so they never change.
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_NAME.to_owned(), LIMITER_NAME.to_owned()),
            (LABEL_INSTANCE.to_owned(), self.name.clone()),
        ])
    }

    /// The labels every child carries.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.selector_labels();
        labels.insert(LABEL_MANAGED_BY.to_owned(), MANAGER.to_owned());
        labels
    }

    /// A selector matching this policy's limiter pods.
    pub fn selector(&self) -> LabelSelector {
        LabelSelector {
            match_labels: Some(self.selector_labels()),
            ..LabelSelector::default()
        }
    }

    /// The reference that makes the policy the controller of a child, so
    /// that deleting the policy garbage-collects the child and a change
    /// to the child wakes the policy's reconcile.
    pub fn owner_reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: sluice_crds::API_VERSION.to_owned(),
            kind: sluice_crds::KIND.to_owned(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    /// The metadata of a child called `name`.
    pub fn child_metadata(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels()),
            owner_references: Some(vec![self.owner_reference()]),
            ..ObjectMeta::default()
        }
    }
}

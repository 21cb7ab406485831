//! The Lease as stored by the API server: read, create, replace.

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{Api, Client, api::PostParams};

use crate::render::MANAGER;

/// Why a call on the Lease failed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Reading the Lease failed.
    #[error("failed to read lease {name}: {source}")]
    ReadLease {
        /// The Lease's name.
        name: String,
        /// What the API answered.
        source: kube::Error,
    },
    /// Creating the Lease failed for a reason other than a lost race.
    #[error("failed to create lease {name}: {source}")]
    CreateLease {
        /// The Lease's name.
        name: String,
        /// What the API answered.
        source: kube::Error,
    },
    /// Replacing the Lease failed for a reason other than a lost race.
    #[error("failed to update lease {name}: {source}")]
    UpdateLease {
        /// The Lease's name.
        name: String,
        /// What the API answered.
        source: kube::Error,
    },
}

/// What became of a write.
#[derive(Debug)]
pub enum Written {
    /// The API server stored it.
    Stored(Box<Lease>),
    /// Another candidate wrote first (409): this one lost the race.
    Conflict,
}

/// One Lease in one namespace.
#[derive(Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
}

impl LeaseLock {
    /// The Lease `namespace/name`.
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
        }
    }

    /// The Lease, or `None` when it does not exist.
    pub async fn read(&self) -> Result<Option<Lease>, LockError> {
        self.api
            .get_opt(&self.name)
            .await
            .map_err(|source| LockError::ReadLease {
                name: self.name.clone(),
                source,
            })
    }

    /// Creates the Lease holding `spec`.
    pub async fn create(&self, spec: LeaseSpec) -> Result<Written, LockError> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
        };
        let created = self.api.create(&params(), &lease).await;
        settle(created).map_err(|source| LockError::CreateLease {
            name: self.name.clone(),
            source,
        })
    }

    /// Replaces `read` with `spec`, only if nobody changed it since
    /// (its resourceVersion still matches).
    pub async fn replace(&self, read: &Lease, spec: LeaseSpec) -> Result<Written, LockError> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                resource_version: read.metadata.resource_version.clone(),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
        };
        let replaced = self.api.replace(&self.name, &params(), &lease).await;
        settle(replaced).map_err(|source| LockError::UpdateLease {
            name: self.name.clone(),
            source,
        })
    }
}

fn params() -> PostParams {
    PostParams {
        field_manager: Some(MANAGER.to_owned()),
        ..PostParams::default()
    }
}

/// A 409 means another candidate wrote first, which is no failure.
fn settle(result: Result<Lease, kube::Error>) -> Result<Written, kube::Error> {
    match result {
        Ok(lease) => Ok(Written::Stored(Box::new(lease))),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Written::Conflict),
        Err(error) => Err(error),
    }
}

//! The sluice operator: reconciles each `RateLimitPolicy` into the limiter
//! pods that enforce it, and reports on them in the policy's status.
//!
//! Reconcile is a pipeline ([`reconcile`]): [`validate`] → [`render`]
//! (pure) → [`apply`] (server-side apply) → [`adapt`] (one tick of an
//! adaptive policy's controller, when due) → [`status`], with [`events`]
//! for failures and changes of readiness or adaptation. [`leader`] keeps
//! two replicas from writing at once; [`rbac`] declares every permission
//! the operator uses. The adaptive controller, its signals and its
//! standalone loop live in [`adaptive`].

pub mod adapt;
pub mod adaptive;
pub mod apply;
pub mod backoff;
pub mod cli;
pub mod clock;
pub mod conditions;
pub mod context;
pub mod controller;
pub mod events;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod rbac;
pub mod reconcile;
pub mod render;
pub mod run;
pub mod status;
pub mod validate;

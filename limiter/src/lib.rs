//! The sluice limiter: decides whether a request may pass under a
//! `RateLimitPolicy`, counting in memory or in a shared store.
//!
//! The pure parts (matching in [`policy`], the window maths in [`window`],
//! turning counts into answers in [`decision`]) take no store and no clock;
//! [`engine`] ties them to a [`store::Store`].

pub mod behaviour;
pub mod breaker;
pub mod clock;
pub mod decision;
pub mod engine;
pub mod policy;
pub mod registry;
pub mod store;
pub mod window;

pub use engine::{CheckError, Fallback, Limiter};
pub mod config;
pub mod http;
pub mod metrics;
pub mod multiplier;
pub mod server;
pub mod source;

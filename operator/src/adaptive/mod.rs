//! Adaptive thresholding: Prometheus health signals move each policy's
//! multiplier.
//!
//! - [`controller`]: the pure controller, one tick at a time;
//! - [`signals`]: the PromQL of each signal and reading it;
//! - [`adapter`]: one policy's controller with its settings, queries and
//!   state, ticking on readings;
//! - [`standalone`]: `sluice-operator adapt`, the same loop without
//!   Kubernetes, publishing to Redis.

pub mod adapter;
pub mod controller;
pub mod signals;
pub mod standalone;

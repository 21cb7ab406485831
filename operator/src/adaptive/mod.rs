//! Adaptive thresholding: Prometheus health signals move each policy's
//! multiplier.
//!
//! - [`controller`]: the pure controller, one tick at a time;
//! - [`signals`]: the PromQL of each signal and reading it;
//! - [`adapter`]: one policy's controller with its settings, queries and
//!   state, ticking on readings;
//! - [`adapters`]: each policy's controller between reconciles, in the
//!   operator's memory;
//! - [`source`] and [`sink`]: where `sluice-operator run` reads signals and
//!   publishes multipliers, behind traits that tests replace;
//! - [`standalone`]: `sluice-operator adapt`, the same loop without
//!   Kubernetes, publishing to Redis.

pub mod adapter;
pub mod adapters;
pub mod controller;
pub mod signals;
pub mod sink;
pub mod source;
pub mod standalone;

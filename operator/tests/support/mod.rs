//! What the operator's integration tests share: fixtures, a mock API
//! server that checks every call against the declared RBAC rules, a
//! permissive fake API for tests that only need plausible answers, and
//! fakes for Prometheus and Redis.

#![allow(dead_code)] // each test binary uses its own part of this module

pub mod adaptation;
pub mod api;
pub mod authorize;
pub mod fake;
pub mod fixtures;
pub mod scenario;

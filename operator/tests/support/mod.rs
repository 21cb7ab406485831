//! What the operator's integration tests share: fixtures, a mock API
//! server that checks every call against the declared RBAC rules, and a
//! permissive fake API for tests that only need plausible answers.

#![allow(dead_code)] // each test binary uses its own part of this module

pub mod api;
pub mod authorize;
pub mod fake;
pub mod fixtures;

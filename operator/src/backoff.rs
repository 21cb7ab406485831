//! How long to wait before retrying a policy whose reconcile failed:
//! doubling per consecutive failure, up to a cap, and back to the start
//! after a success.

use std::{collections::HashMap, sync::Mutex, time::Duration};

/// The wait after the first failure.
pub const FIRST_RETRY: Duration = Duration::from_secs(5);
/// The longest wait.
pub const MAX_RETRY: Duration = Duration::from_secs(300);

/// The wait after `failures` consecutive failures (1 or more). Pure.
pub fn retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_RETRY.saturating_mul(1 << doublings).min(MAX_RETRY)
}

/// Consecutive failures per policy.
#[derive(Debug, Default)]
pub struct Retries {
    failures: Mutex<HashMap<String, u32>>,
}

impl Retries {
    /// Counts a failure of `policy` and returns how long to wait.
    pub fn failed(&self, policy: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let count = failures.entry(policy.to_owned()).or_default();
        *count = count.saturating_add(1);
        retry_delay(*count)
    }

    /// Forgets the failures of `policy` after a success.
    pub fn succeeded(&self, policy: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(policy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_up_to_its_cap() {
        let secs: Vec<_> = (1..=8).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(retry_delay(u32::MAX), MAX_RETRY);
    }

    #[test]
    fn success_resets_the_backoff_of_that_policy_only() {
        let retries = Retries::default();
        retries.failed("shop/a");
        retries.failed("shop/b");
        assert_eq!(retries.failed("shop/a"), Duration::from_secs(10));
        retries.succeeded("shop/a");
        assert_eq!(retries.failed("shop/a"), FIRST_RETRY);
        assert_eq!(retries.failed("shop/b"), Duration::from_secs(10));
    }
}

//! A circuit breaker in front of the shared store.
//!
//! Closed, every check goes to the store. After `threshold` failures in a
//! row (errors or timeouts) it opens: checks stop calling the store and
//! take the policy's fallback at once, instead of each waiting out a
//! timeout. While open, a background probe pings the store; the first
//! success closes the breaker. Nothing here waits or reads a clock, so it
//! is cheap on the hot path (one atomic load per check while closed).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// A change of the breaker's state, for logging and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Nothing changed.
    None,
    /// The breaker just opened.
    Opened,
    /// The breaker just closed.
    Closed,
}

/// The breaker. Shared by every check of one limiter.
#[derive(Debug)]
pub struct Breaker {
    open: AtomicBool,
    failures: AtomicU32,
    threshold: u32,
}

impl Breaker {
    /// A closed breaker that opens after `threshold` failures in a row.
    pub fn new(threshold: u32) -> Self {
        Self {
            open: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            threshold: threshold.max(1),
        }
    }

    /// Whether checks may call the store.
    pub fn is_closed(&self) -> bool {
        !self.open.load(Ordering::Acquire)
    }

    /// A call to the store succeeded.
    pub fn record_success(&self) -> Transition {
        // Reading first keeps the hot path from writing a shared cache line.
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        match self.open.swap(false, Ordering::AcqRel) {
            true => Transition::Closed,
            false => Transition::None,
        }
    }

    /// Opens the breaker without waiting for failures: the store could not
    /// be reached at start, so the first checks need not time out to learn it.
    pub fn open_now(&self) -> Transition {
        self.failures.store(self.threshold, Ordering::Relaxed);
        match self.open.swap(true, Ordering::AcqRel) {
            false => Transition::Opened,
            true => Transition::None,
        }
    }

    /// A call to the store failed or timed out.
    pub fn record_failure(&self) -> Transition {
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if failures < self.threshold {
            return Transition::None;
        }
        match self.open.swap(true, Ordering::AcqRel) {
            false => Transition::Opened,
            true => Transition::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_after_threshold_failures_in_a_row() {
        let b = Breaker::new(3);
        assert_eq!(b.record_failure(), Transition::None);
        assert_eq!(b.record_failure(), Transition::None);
        assert!(b.is_closed());
        assert_eq!(b.record_failure(), Transition::Opened);
        assert!(!b.is_closed());
        assert_eq!(b.record_failure(), Transition::None, "opens once");
    }

    #[test]
    fn a_success_resets_the_count_of_failures() {
        let b = Breaker::new(3);
        b.record_failure();
        b.record_failure();
        b.record_success();
        b.record_failure();
        b.record_failure();
        assert!(b.is_closed());
    }

    #[test]
    fn open_now_opens_at_once_and_a_success_closes_it() {
        let b = Breaker::new(5);
        assert_eq!(b.open_now(), Transition::Opened);
        assert!(!b.is_closed());
        assert_eq!(b.open_now(), Transition::None);
        assert_eq!(b.record_success(), Transition::Closed);
    }

    #[test]
    fn a_successful_probe_closes_an_open_breaker() {
        let b = Breaker::new(1);
        b.record_failure();
        assert_eq!(b.record_success(), Transition::Closed);
        assert!(b.is_closed());
        assert_eq!(b.record_success(), Transition::None);
    }
}

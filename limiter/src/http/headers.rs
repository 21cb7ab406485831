//! The `RateLimit-Policy`, `RateLimit` and `Retry-After` response headers.
//!
//! Formats follow the IETF httpapi draft "RateLimit header fields for HTTP"
//! (draft-ietf-httpapi-ratelimit-headers-10): both fields are Structured
//! Field lists with one item per limit that applied, named by the limit.
//! `RateLimit-Policy` gives the quota (`q`, the effective limit) and the
//! window (`w`, whole seconds; omitted for sub-second windows, which the
//! field cannot express); `RateLimit` gives what remains (`r`) and the
//! seconds until the whole quota is back (`t`).

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::decision::Decision;

/// `RateLimit-Policy`.
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Whole seconds, rounded up: a client that waits this long never comes
/// back too early.
pub fn ceil_secs(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// Adds the rate limit headers describing `decision` to `headers`.
pub fn insert(headers: &mut HeaderMap, decision: &Decision) {
    if decision.limits.is_empty() {
        return;
    }
    let mut policy = String::with_capacity(48 * decision.limits.len());
    let mut state = String::with_capacity(48 * decision.limits.len());
    for limit in &decision.limits {
        // `w` is in whole seconds: a sub-second window is left out.
        let quota = [("q", limit.effective), ("w", limit.window_ms / 1000)];
        let shown = if limit.window_ms % 1000 == 0 { 2 } else { 1 };
        push_item(&mut policy, &limit.name, &quota[..shown]);
        let left = [
            ("r", limit.remaining),
            ("t", ceil_secs(limit.reset_after_ms)),
        ];
        push_item(&mut state, &limit.name, &left);
    }
    for (name, value) in [(&RATELIMIT_POLICY, policy), (&RATELIMIT, state)] {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(name.clone(), value);
        }
    }
    if let Some(wait) = decision.retry_after_ms() {
        headers.insert(
            http::header::RETRY_AFTER,
            HeaderValue::from(ceil_secs(wait)),
        );
    }
}

/// Appends one member to a Structured Field list: `"name";key=value…`.
///
/// Built by hand rather than with `write!`: these headers go out with every
/// check, and the formatting machinery made them take twice as long (see
/// `parts/rate_limit_headers` in docs/benchmarks.md).
fn push_item(list: &mut String, name: &str, params: &[(&str, u64)]) {
    if !list.is_empty() {
        list.push_str(", ");
    }
    // Limit names are DNS labels: they need no escaping in an sf-string.
    list.push('"');
    list.push_str(name);
    list.push('"');
    let mut digits = itoa::Buffer::new();
    for (key, value) in params {
        list.push(';');
        list.push_str(key);
        list.push('=');
        list.push_str(digits.format(*value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{DenyReason, LimitState};

    fn limit(name: &str, window_ms: u64, remaining: u64, retry: Option<u64>) -> LimitState {
        LimitState {
            name: name.into(),
            requests: 10,
            effective: 5,
            window_ms,
            remaining,
            reset_after_ms: 1_500,
            retry_after_ms: retry,
        }
    }

    fn decision(allowed: bool, limits: Vec<LimitState>) -> Decision {
        let reason = (!allowed).then_some(DenyReason::LimitExhausted);
        Decision {
            allowed,
            reason,
            limits,
            deciding: Some(0),
            multiplier: 0.5,
            degraded: false,
        }
    }

    #[test]
    fn headers_list_every_applied_limit_with_effective_quota() {
        let mut h = HeaderMap::new();
        insert(
            &mut h,
            &decision(
                true,
                vec![
                    limit("global", 1000, 4, Some(0)),
                    limit("user", 60_000, 2, Some(0)),
                ],
            ),
        );
        assert_eq!(
            h[&RATELIMIT_POLICY],
            "\"global\";q=5;w=1, \"user\";q=5;w=60"
        );
        assert_eq!(h[&RATELIMIT], "\"global\";r=4;t=2, \"user\";r=2;t=2");
        assert!(h.get(http::header::RETRY_AFTER).is_none());
    }

    #[test]
    fn sub_second_windows_omit_the_window_parameter() {
        let mut h = HeaderMap::new();
        insert(
            &mut h,
            &decision(true, vec![limit("burst", 500, 1, Some(0))]),
        );
        assert_eq!(h[&RATELIMIT_POLICY], "\"burst\";q=5");
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let mut h = HeaderMap::new();
        insert(
            &mut h,
            &decision(false, vec![limit("a", 1000, 0, Some(1_001))]),
        );
        assert_eq!(h[http::header::RETRY_AFTER], "2");
        insert(
            &mut h,
            &decision(false, vec![limit("a", 1000, 0, Some(2_000))]),
        );
        assert_eq!(h[http::header::RETRY_AFTER], "2");
    }

    #[test]
    fn a_request_that_can_never_fit_gets_no_retry_after() {
        let mut h = HeaderMap::new();
        insert(&mut h, &decision(false, vec![limit("a", 1000, 0, None)]));
        assert!(h.get(http::header::RETRY_AFTER).is_none());
    }
}

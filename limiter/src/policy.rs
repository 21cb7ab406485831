//! Policies compiled for enforcement: which limits apply to a check, and
//! which counter each one uses. Pure: no store, no clock.

use std::sync::Arc;

use sluice_crds::{OnStoreFailure, PartitionKey, RateLimitPolicy};

/// What a check asks about: who, on which endpoint, for how much.
#[derive(Clone, Copy, Debug, Default)]
pub struct Request<'a> {
    /// The caller's user id, if the API knows one.
    pub user: Option<&'a str>,
    /// The endpoint, such as `GET /search`.
    pub endpoint: Option<&'a str>,
    /// How much quota the request consumes; zero only looks.
    pub cost: u64,
}

/// A fixed-length digest naming one counter; user input never reaches a
/// store key in any other form.
pub type CounterKey = [u8; 16];

/// A policy ready to enforce.
#[derive(Debug)]
pub struct CompiledPolicy {
    /// `<namespace>/<name>`.
    pub key: Arc<str>,
    /// The limits, in the order the policy lists them.
    pub limits: Vec<CompiledLimit>,
    /// What to decide while the shared store is down.
    pub on_store_failure: OnStoreFailure,
    /// The limiter replicas configured to share the limits.
    pub replicas: u32,
    /// The policy as loaded, for `GET /v1/policies`.
    pub source: RateLimitPolicy,
}

/// One limit ready to enforce.
#[derive(Debug)]
pub struct CompiledLimit {
    /// The limit's name.
    pub name: Arc<str>,
    /// Requests per window at multiplier 1.0.
    pub requests: u64,
    /// Window length in milliseconds.
    pub window_ms: u64,
    /// Which endpoints the limit counts.
    pub endpoint: EndpointMatch,
    /// Whether the counter is partitioned by user.
    pub by_user: bool,
    /// Whether the counter is partitioned by endpoint.
    pub by_endpoint: bool,
    /// Identifies the limit's counters: `<namespace>/<policy>/<limit>/<window ms>`.
    /// The window is part of it so that changing a window starts new counters
    /// instead of reinterpreting old ones.
    pub counter_prefix: Arc<str>,
}

/// How a limit matches endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointMatch {
    /// Every request, with or without an endpoint.
    Any,
    /// Exactly this endpoint.
    Exact(String),
    /// Every endpoint starting with this prefix (pattern `prefix*`).
    Prefix(String),
}

impl EndpointMatch {
    fn from_pattern(pattern: Option<&str>) -> Self {
        match pattern {
            None => Self::Any,
            Some(p) => match p.strip_suffix('*') {
                Some(prefix) => Self::Prefix(prefix.to_owned()),
                None => Self::Exact(p.to_owned()),
            },
        }
    }

    fn matches(&self, endpoint: Option<&str>) -> bool {
        match (self, endpoint) {
            (Self::Any, _) => true,
            (Self::Exact(e), Some(endpoint)) => e == endpoint,
            (Self::Prefix(p), Some(endpoint)) => endpoint.starts_with(p.as_str()),
            (_, None) => false,
        }
    }
}

/// A limit under a multiplier: `max(1, floor(requests × multiplier))`. It is
/// never below one request, so that a deep cut slows traffic without
/// stopping it; a multiplier outside `[0, 1]` or not a number is clamped or
/// taken as 1.
pub fn effective_limit(requests: u64, multiplier: f64) -> u64 {
    let m = if multiplier.is_finite() {
        multiplier.clamp(0.0, 1.0)
    } else {
        1.0
    };
    // `as` saturates for floats; requests are at most 1e9, so the product is
    // exact enough in an f64.
    ((requests as f64 * m).floor() as u64).max(1)
}

impl CompiledPolicy {
    /// Compiles a policy that has passed validation.
    pub fn compile(source: RateLimitPolicy) -> Self {
        let key: Arc<str> = source.key().into();
        let limits = source
            .spec
            .limits
            .iter()
            .map(|l| compile_limit(&key, l))
            .collect();
        let limiter = &source.spec.limiter;
        Self {
            key,
            limits,
            on_store_failure: limiter.on_store_failure,
            replicas: u32::try_from(limiter.replicas).unwrap_or(1).max(1),
            source,
        }
    }

    /// The limits that apply to `request`, each with the counter it uses.
    pub fn applicable<'p>(
        &'p self,
        request: &'p Request<'_>,
    ) -> impl Iterator<Item = (&'p CompiledLimit, CounterKey)> + 'p {
        self.limits.iter().filter_map(move |limit| {
            let applies = limit.endpoint.matches(request.endpoint)
                && (!limit.by_user || request.user.is_some())
                && (!limit.by_endpoint || request.endpoint.is_some());
            applies.then(|| (limit, limit.counter_key(request)))
        })
    }
}

fn compile_limit(policy: &str, limit: &sluice_crds::Limit) -> CompiledLimit {
    let window_ms = limit.window.as_millis();
    let pattern = limit.matches.as_ref().and_then(|m| m.endpoint.as_deref());
    CompiledLimit {
        name: limit.name.as_str().into(),
        requests: limit.requests,
        window_ms,
        endpoint: EndpointMatch::from_pattern(pattern),
        by_user: limit.by.contains(&PartitionKey::User),
        by_endpoint: limit.by.contains(&PartitionKey::Endpoint),
        counter_prefix: format!("{policy}/{}/{window_ms}", limit.name).into(),
    }
}

impl CompiledLimit {
    /// The digest of the limit and the request's partition values.
    ///
    /// Each value is length-prefixed, so `("ab", "c")` and `("a", "bc")`
    /// never share a counter, whatever bytes a user id holds.
    pub fn counter_key(&self, request: &Request<'_>) -> CounterKey {
        let mut hasher = blake3::Hasher::new();
        hasher.update(self.counter_prefix.as_bytes());
        let parts = [
            (self.by_user, request.user),
            (self.by_endpoint, request.endpoint),
        ];
        for value in parts
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, v)| v.unwrap_or_default())
        {
            hasher.update(&(value.len() as u64).to_le_bytes());
            hasher.update(value.as_bytes());
        }
        let mut key = [0; 16];
        key.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml_limits: &str) -> CompiledPolicy {
        let text = format!(
            "apiVersion: sluice.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {{name: p}}\nspec:\n  limits:\n{yaml_limits}"
        );
        let mut policies = sluice_crds::parse_policies(&text, "test").unwrap();
        CompiledPolicy::compile(policies.remove(0))
    }

    fn names(p: &CompiledPolicy, user: Option<&str>, endpoint: Option<&str>) -> Vec<String> {
        let request = Request {
            user,
            endpoint,
            cost: 1,
        };
        p.applicable(&request)
            .map(|(l, _)| l.name.to_string())
            .collect()
    }

    const LIMITS: &str = "
    - {name: global, requests: 100, window: 1s}
    - {name: per-user, requests: 10, window: 1m, by: [user]}
    - {name: search, requests: 5, window: 1s, by: [user], match: {endpoint: GET /search}}
    - {name: api, requests: 5, window: 1s, by: [endpoint], match: {endpoint: GET /api/*}}
";

    #[test]
    fn global_limit_applies_to_every_request() {
        let p = policy(LIMITS);
        assert_eq!(names(&p, None, None), ["global"]);
    }

    #[test]
    fn per_user_limits_apply_only_to_checks_carrying_a_user() {
        let p = policy(LIMITS);
        assert_eq!(names(&p, Some("u"), None), ["global", "per-user"]);
        assert_eq!(names(&p, None, Some("GET /search")), ["global"]);
    }

    #[test]
    fn endpoint_and_user_granularities_combine() {
        let p = policy(LIMITS);
        assert_eq!(
            names(&p, Some("u"), Some("GET /search")),
            ["global", "per-user", "search"]
        );
        assert_eq!(
            names(&p, Some("u"), Some("GET /search/x")),
            ["global", "per-user"]
        );
    }

    #[test]
    fn trailing_star_matches_an_endpoint_prefix() {
        let p = policy(LIMITS);
        assert_eq!(names(&p, None, Some("GET /api/orders")), ["global", "api"]);
        assert_eq!(names(&p, None, Some("POST /api/orders")), ["global"]);
    }

    #[test]
    fn partition_values_give_distinct_counters() {
        let p = policy(LIMITS);
        let key = |user: &str, endpoint: &str| {
            let request = Request {
                user: Some(user),
                endpoint: Some(endpoint),
                cost: 1,
            };
            p.limits[3].counter_key(&request)
        };
        // `api` is partitioned by endpoint only: users share its counter.
        assert_eq!(key("a", "GET /api/x"), key("b", "GET /api/x"));
        assert_ne!(key("a", "GET /api/x"), key("a", "GET /api/y"));
        let user_key = |user: &str| {
            p.limits[1].counter_key(&Request {
                user: Some(user),
                endpoint: None,
                cost: 1,
            })
        };
        assert_ne!(user_key("ab"), user_key("a"));
        assert_ne!(user_key("é"), user_key("e"));
    }

    #[test]
    fn changing_a_window_starts_a_new_counter() {
        let a = policy("    - {name: l, requests: 1, window: 1s}\n");
        let b = policy("    - {name: l, requests: 1, window: 2s}\n");
        let r = Request::default();
        assert_ne!(a.limits[0].counter_key(&r), b.limits[0].counter_key(&r));
    }

    #[test]
    fn effective_limit_scales_floors_and_never_drops_below_one() {
        assert_eq!(effective_limit(100, 1.0), 100);
        assert_eq!(effective_limit(100, 0.725), 72);
        assert_eq!(effective_limit(3, 0.1), 1);
        assert_eq!(effective_limit(100, f64::NAN), 100);
        assert_eq!(effective_limit(100, 7.0), 100);
    }
}

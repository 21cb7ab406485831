//! The rules a policy must follow, checked in Rust.
//!
//! The CRD schema enforces the same rules at `kubectl apply`; this copy runs
//! in the operator and the limiter, which also read policies that never
//! passed through an API server (files, ConfigMaps edited by hand).

use std::{collections::HashSet, fmt};

use crate::{
    Duration,
    policy::{
        Adaptive, LatencySignal, Limit, LimiterSpec, MAX_ENDPOINT_LEN, MAX_LIMITS, MAX_REQUESTS,
        MAX_WINDOW, MIN_WINDOW, RateLimitPolicySpec, RatioSignal,
    },
};

/// One problem with a policy, at a field path such as `spec.limits[1].window`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Where the problem is.
    pub path: String,
    /// What is wrong, in a sentence a person can act on.
    pub message: String,
}

/// Every problem found in a policy, in field order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", e.path, e.message)?;
        }
        Ok(())
    }
}

/// Collects problems under a growing field path.
struct Report {
    errors: Vec<FieldError>,
}

impl Report {
    fn fail(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn check(&mut self, ok: bool, path: impl fmt::Display, message: impl Into<String>) {
        if !ok {
            self.fail(path.to_string(), message);
        }
    }

    fn fraction(&mut self, value: f64, lo: f64, path: impl fmt::Display) {
        let ok = value.is_finite() && value >= lo && value <= 1.0;
        let range = if lo == 0.0 { "[0, 1]" } else { "(0, 1]" };
        self.check(
            ok,
            path,
            format!("must be a number in {range}, got {value}"),
        );
    }
}

impl RateLimitPolicySpec {
    /// Checks every rule of the policy and returns all the problems found,
    /// each with its field path; `Ok` when the policy can be enforced.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut report = Report { errors: Vec::new() };
        validate_limits(&self.limits, &mut report);
        if let Some(adaptive) = &self.adaptive {
            let has_target = self
                .target
                .as_ref()
                .is_some_and(|t| !t.selector.match_labels.is_empty());
            report.check(
                has_target,
                "spec.target.selector.matchLabels",
                "is required when adaptive is set: it names the pods whose health is measured",
            );
            validate_adaptive(adaptive, &mut report);
        }
        validate_limiter(&self.limiter, &mut report);
        match report.errors.is_empty() {
            true => Ok(()),
            false => Err(ValidationErrors(report.errors)),
        }
    }
}

fn validate_limits(limits: &[Limit], report: &mut Report) {
    if limits.is_empty() {
        report.fail("spec.limits", "must hold at least one limit");
    }
    if limits.len() > MAX_LIMITS {
        report.fail(
            "spec.limits",
            format!(
                "holds {} limits; at most {MAX_LIMITS} are allowed",
                limits.len()
            ),
        );
    }
    let mut names = HashSet::new();
    for (i, limit) in limits.iter().enumerate() {
        let path = format!("spec.limits[{i}]");
        if !names.insert(limit.name.as_str()) {
            report.fail(
                format!("{path}.name"),
                format!(
                    "{:?} is used by an earlier limit; names must be unique",
                    limit.name
                ),
            );
        }
        validate_limit(limit, &path, report);
    }
}

impl Limit {
    /// Checks the rules of one limit on its own, reporting under `path`
    /// (such as `spec.limits[2]`). Uniqueness of names is a rule of the
    /// whole policy, checked by [`RateLimitPolicySpec::validate`].
    pub fn validate_at(&self, path: &str) -> Result<(), ValidationErrors> {
        let mut report = Report { errors: Vec::new() };
        validate_limit(self, path, &mut report);
        match report.errors.is_empty() {
            true => Ok(()),
            false => Err(ValidationErrors(report.errors)),
        }
    }
}

fn validate_limit(limit: &Limit, path: &str, report: &mut Report) {
    report.check(is_dns_label(&limit.name), format_args!("{path}.name"), format!("{:?} must be 1-63 lower case letters, digits or dashes, starting and ending with a letter or digit", limit.name));
    report.check(
        (1..=MAX_REQUESTS).contains(&limit.requests),
        format_args!("{path}.requests"),
        format!(
            "must be between 1 and {MAX_REQUESTS}, got {}",
            limit.requests
        ),
    );
    report.check(
        (MIN_WINDOW..=MAX_WINDOW).contains(&limit.window),
        format_args!("{path}.window"),
        format!(
            "must be between {MIN_WINDOW} and {MAX_WINDOW}, got {}",
            limit.window
        ),
    );
    let mut seen = HashSet::new();
    for key in &limit.by {
        report.check(
            seen.insert(key),
            format_args!("{path}.by"),
            format!("repeats {key}"),
        );
    }
    if let Some(endpoint) = limit.matches.as_ref().and_then(|m| m.endpoint.as_deref()) {
        validate_endpoint_pattern(endpoint, &format!("{path}.match.endpoint"), report);
    }
}

fn validate_endpoint_pattern(pattern: &str, path: &str, report: &mut Report) {
    let len = pattern.chars().count();
    report.check(
        (1..=MAX_ENDPOINT_LEN).contains(&len),
        path,
        format!("must be 1 to {MAX_ENDPOINT_LEN} characters, got {len}"),
    );
    report.check(
        !pattern.chars().any(char::is_control),
        path,
        "must not contain control characters",
    );
    let star_inside = pattern.trim_end_matches('*').contains('*') || pattern.ends_with("**");
    report.check(
        !star_inside,
        path,
        "may hold `*` only once, as its last character",
    );
}

fn validate_adaptive(a: &Adaptive, report: &mut Report) {
    let interval_ok = (Duration::from_secs(1)..=Duration::from_secs(600)).contains(&a.interval);
    report.check(
        interval_ok,
        "spec.adaptive.interval",
        format!("must be between 1s and 10m, got {}", a.interval),
    );
    report.fraction(
        a.sensitivity,
        f64::MIN_POSITIVE,
        "spec.adaptive.sensitivity",
    );
    report.fraction(
        a.recovery_step,
        f64::MIN_POSITIVE,
        "spec.adaptive.recoveryStep",
    );
    report.fraction(a.bounds.min, f64::MIN_POSITIVE, "spec.adaptive.bounds.min");
    report.fraction(a.bounds.max, f64::MIN_POSITIVE, "spec.adaptive.bounds.max");
    report.check(
        a.bounds.min <= a.bounds.max,
        "spec.adaptive.bounds",
        format!(
            "min ({}) must not exceed max ({})",
            a.bounds.min, a.bounds.max
        ),
    );
    let rate_ok = a.min_request_rate.is_finite() && a.min_request_rate >= 0.0;
    report.check(
        rate_ok,
        "spec.adaptive.minRequestRate",
        format!(
            "must be a number of requests per second, 0 or more, got {}",
            a.min_request_rate
        ),
    );
    let url_ok =
        a.prometheus.url.starts_with("http://") || a.prometheus.url.starts_with("https://");
    report.check(
        url_ok,
        "spec.adaptive.prometheus.url",
        format!("{:?} must start with http:// or https://", a.prometheus.url),
    );

    let s = &a.signals;
    report.check(
        s.cpu.is_some() || s.latency.is_some() || s.errors.is_some(),
        "spec.adaptive.signals",
        "must set at least one of cpu, latency, errors",
    );
    if let Some(cpu) = &s.cpu {
        validate_ratio_signal(cpu, "spec.adaptive.signals.cpu", report);
    }
    if let Some(errors) = &s.errors {
        validate_ratio_signal(errors, "spec.adaptive.signals.errors", report);
    }
    if let Some(latency) = &s.latency {
        validate_latency_signal(latency, report);
    }
    let queries = [
        ("cpu", &a.queries.cpu),
        ("latency", &a.queries.latency),
        ("errors", &a.queries.errors),
        ("requests", &a.queries.requests),
    ];
    for (name, query) in queries {
        let blank = query.as_deref().is_some_and(|q| q.trim().is_empty());
        report.check(
            !blank,
            format_args!("spec.adaptive.queries.{name}"),
            "must not be blank; remove it to use the default query",
        );
    }
}

fn validate_ratio_signal(signal: &RatioSignal, path: &str, report: &mut Report) {
    report.fraction(signal.weight, 0.0, format_args!("{path}.weight"));
    let ordered = signal.target.is_finite()
        && signal.max.is_finite()
        && 0.0 <= signal.target
        && signal.target < signal.max;
    report.check(
        ordered,
        path,
        format!(
            "target ({}) must be 0 or more and below max ({})",
            signal.target, signal.max
        ),
    );
}

fn validate_latency_signal(signal: &LatencySignal, report: &mut Report) {
    let path = "spec.adaptive.signals.latency";
    report.fraction(signal.weight, 0.0, format_args!("{path}.weight"));
    report.check(
        signal.target < signal.max,
        path,
        format!(
            "target ({}) must be below max ({})",
            signal.target, signal.max
        ),
    );
}

fn validate_limiter(limiter: &LimiterSpec, report: &mut Report) {
    report.check(
        (1..=100).contains(&limiter.replicas),
        "spec.limiter.replicas",
        format!("must be between 1 and 100, got {}", limiter.replicas),
    );
    let Some(redis) = &limiter.redis else { return };
    let path = "spec.limiter.redis.url";
    let rest = redis
        .url
        .strip_prefix("redis://")
        .or_else(|| redis.url.strip_prefix("rediss://"));
    let Some(rest) = rest else {
        return report.fail(
            path,
            format!("{:?} must start with redis:// or rediss://", redis.url),
        );
    };
    let authority = rest.split('/').next().unwrap_or_default();
    report.check(!authority.contains('@'), path, "must not hold credentials; put the password in a Secret and name it in spec.limiter.redis.passwordSecretRef");
    let host = authority.rsplit('@').next().unwrap_or_default();
    report.check(
        !host.is_empty(),
        path,
        "must name a host, as in redis://redis.shop:6379",
    );
}

/// Whether `s` is a DNS label (RFC 1123): what Kubernetes accepts in names.
pub fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    let inner = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (1..=63).contains(&bytes.len())
        && bytes.iter().all(inner)
        && edge(bytes.first())
        && edge(bytes.last())
}

#[cfg(test)]
mod tests {
    use crate::parse_policies;

    const BASE: &str =
        "apiVersion: sluice.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {name: p}\nspec:\n";
    const ADAPTIVE: &str = "  target: {selector: {matchLabels: {app: x}}}\n  adaptive:\n    prometheus: {url: 'http://prom:9090'}\n    signals:\n      errors: {weight: 1, target: 0.01, max: 0.1}\n";
    const LIMIT: &str = "  limits:\n    - {name: a, requests: 5, window: 1s}\n";

    /// The problems `validate()` finds in `spec`, as `path: message` lines.
    fn problems(spec: &str) -> Vec<String> {
        match parse_policies(&format!("{BASE}{spec}"), "t") {
            Ok(_) => Vec::new(),
            Err(e) => e.errors.into_iter().map(|e| e.message).collect(),
        }
    }

    fn has(problems: &[String], path: &str) -> bool {
        problems.iter().any(|p| p.starts_with(path))
    }

    #[test]
    fn a_policy_needs_at_least_one_limit() {
        assert!(has(
            &problems("  limits: []\n"),
            "spec.limits: must hold at least one limit"
        ));
    }

    #[test]
    fn limit_names_are_unique_dns_labels() {
        let p = problems(
            "  limits:\n    - {name: a, requests: 5, window: 1s}\n    - {name: a, requests: 5, window: 1s}\n    - {name: -x, requests: 5, window: 1s}\n",
        );
        assert!(
            has(&p, "spec.limits[1].name: \"a\" is used by an earlier limit"),
            "{p:?}"
        );
        assert!(has(&p, "spec.limits[2].name"), "{p:?}");
    }

    #[test]
    fn requests_and_window_stay_in_range() {
        let p = problems(
            "  limits:\n    - {name: a, requests: 0, window: 1s}\n    - {name: b, requests: 1000000001, window: 5ms}\n    - {name: c, requests: 1, window: 25h}\n",
        );
        for path in [
            "spec.limits[0].requests",
            "spec.limits[1].requests",
            "spec.limits[1].window",
            "spec.limits[2].window",
        ] {
            assert!(has(&p, path), "{path}: {p:?}");
        }
    }

    #[test]
    fn endpoint_pattern_allows_only_a_trailing_star() {
        let p = problems(
            "  limits:\n    - {name: a, requests: 5, window: 1s, match: {endpoint: 'GET /*/x'}}\n    - {name: b, requests: 5, window: 1s, match: {endpoint: 'GET /x*'}}\n",
        );
        assert!(
            has(&p, "spec.limits[0].match.endpoint: may hold `*` only once"),
            "{p:?}"
        );
        assert!(!has(&p, "spec.limits[1]"), "{p:?}");
    }

    #[test]
    fn adaptive_needs_a_target_to_measure() {
        let spec = format!(
            "{LIMIT}{}",
            ADAPTIVE.replace("  target: {selector: {matchLabels: {app: x}}}\n", "")
        );
        assert!(has(
            &problems(&spec),
            "spec.target.selector.matchLabels: is required"
        ));
    }

    #[test]
    fn adaptive_knobs_stay_in_range() {
        let spec = format!(
            "{LIMIT}{ADAPTIVE}    sensitivity: 0\n    recoveryStep: 2\n    interval: 20m\n    bounds: {{min: 0.9, max: 0.5}}\n    minRequestRate: -1\n"
        );
        let p = problems(&spec);
        for path in [
            "spec.adaptive.sensitivity",
            "spec.adaptive.recoveryStep",
            "spec.adaptive.interval",
            "spec.adaptive.bounds: min (0.9) must not exceed max (0.5)",
            "spec.adaptive.minRequestRate",
        ] {
            assert!(has(&p, path), "{path}: {p:?}");
        }
    }

    #[test]
    fn signals_need_a_weight_in_range_and_target_below_max() {
        let spec = format!("{LIMIT}{}", ADAPTIVE.replace("errors: {weight: 1, target: 0.01, max: 0.1}", "errors: {weight: 1.5, target: 0.2, max: 0.1}\n      latency: {weight: 0.5, target: 1s, max: 1s}"));
        let p = problems(&spec);
        for path in [
            "spec.adaptive.signals.errors.weight",
            "spec.adaptive.signals.errors: target (0.2)",
            "spec.adaptive.signals.latency: target (1s)",
        ] {
            assert!(has(&p, path), "{path}: {p:?}");
        }
    }

    #[test]
    fn nan_is_never_a_valid_number() {
        let spec = format!("{LIMIT}{ADAPTIVE}    sensitivity: .nan\n");
        assert!(has(
            &problems(&spec),
            "spec.adaptive.sensitivity: must be a number in (0, 1], got NaN"
        ));
    }

    #[test]
    fn redis_url_must_not_carry_a_password() {
        let p = problems(&format!(
            "{LIMIT}  limiter:\n    redis: {{url: 'redis://:hunter2@redis:6379'}}\n"
        ));
        assert!(
            has(&p, "spec.limiter.redis.url: must not hold credentials"),
            "{p:?}"
        );
        assert!(
            !p.iter().any(|m| m.contains("hunter2")),
            "the password is never echoed: {p:?}"
        );
        let p = problems(&format!(
            "{LIMIT}  limiter:\n    redis: {{url: 'http://redis:6379'}}\n"
        ));
        assert!(
            has(
                &p,
                "spec.limiter.redis.url: \"http://redis:6379\" must start with redis://"
            ),
            "{p:?}"
        );
    }

    #[test]
    fn replicas_stay_between_1_and_100() {
        let p = problems(&format!("{LIMIT}  limiter: {{replicas: 0}}\n"));
        assert!(
            has(
                &p,
                "spec.limiter.replicas: must be between 1 and 100, got 0"
            ),
            "{p:?}"
        );
    }

    #[test]
    fn a_valid_policy_has_no_problems() {
        assert_eq!(
            problems(&format!("{LIMIT}{ADAPTIVE}")),
            Vec::<String>::new()
        );
    }
}

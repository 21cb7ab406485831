//! Reading policies from YAML text, as found in files and ConfigMaps.
//!
//! The API server prunes fields it does not know; a file never meets one,
//! so here an unknown field is an error (it is most often a typo, such as
//! `requets`, that would otherwise silently fall back to a default).

use std::fmt;

use serde::{Deserialize, de::DeserializeOwned};

use crate::{Limit, RateLimitPolicy, ValidationErrors, validate::is_dns_label};

/// The `apiVersion` every policy document carries.
pub const API_VERSION: &str = "sluice.dev/v1alpha1";
/// The `kind` every policy document carries.
pub const KIND: &str = "RateLimitPolicy";
/// The namespace of a policy whose metadata names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// One problem in one YAML document of a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentError {
    /// The 1-based position of the document in its source.
    pub document: usize,
    /// What is wrong, starting with the field path where there is one.
    pub message: String,
}

/// Every problem found in a source, which is then used not at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DocumentErrors {
    /// Where the text came from, such as a file path.
    pub origin: String,
    /// The problems, in document order.
    pub errors: Vec<DocumentError>,
}

impl fmt::Display for DocumentErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is not a valid policy source:", self.origin)?;
        for e in &self.errors {
            write!(f, "\n  document {}: {}", e.document, e.message)?;
        }
        Ok(())
    }
}

impl RateLimitPolicy {
    /// `<namespace>/<name>`, the key checks name the policy by.
    pub fn key(&self) -> String {
        let namespace = self
            .metadata
            .namespace
            .as_deref()
            .unwrap_or(DEFAULT_NAMESPACE);
        let name = self.metadata.name.as_deref().unwrap_or_default();
        format!("{namespace}/{name}")
    }
}

/// Reads every policy in `text`, a stream of YAML documents separated by
/// `---`; empty documents are skipped. Each policy is checked in full
/// (fields, `apiVersion`, `kind`, `metadata`, [`validate`]); if any document
/// has a problem, every problem is returned and no policy.
///
/// [`validate`]: crate::RateLimitPolicySpec::validate
pub fn parse_policies(text: &str, origin: &str) -> Result<Vec<RateLimitPolicy>, DocumentErrors> {
    if let Some(message) = too_deep(text) {
        let errors = vec![DocumentError {
            document: 1,
            message,
        }];
        return Err(DocumentErrors {
            origin: origin.to_owned(),
            errors,
        });
    }
    let mut policies = Vec::new();
    let mut errors = Vec::new();
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let mut fail = |message: String| {
            errors.push(DocumentError {
                document: i + 1,
                message,
            })
        };
        match serde_yaml::Value::deserialize(document) {
            Ok(serde_yaml::Value::Null) => {}
            Ok(value) => match parse_policy(value) {
                Ok(policy) => policies.push(policy),
                Err(problems) => problems.into_iter().for_each(&mut fail),
            },
            Err(e) => {
                // The parser cannot find the next document after a syntax
                // error; what follows is not read.
                fail(format!("not valid YAML: {e}"));
                break;
            }
        }
    }
    match errors.is_empty() {
        true => Ok(policies),
        false => Err(DocumentErrors {
            origin: origin.to_owned(),
            errors,
        }),
    }
}

/// How deeply flow collections (`[…]`, `{…}`) may nest. A policy needs
/// four levels; the YAML parser takes time quadratic in the depth before
/// its own recursion limit refuses a deep document, so a hostile file is
/// refused here in one pass instead.
pub const MAX_FLOW_DEPTH: usize = 32;

/// Why `text` nests flow collections too deeply to read, if it does.
/// Brackets inside quotes and comments are not counted; a quote ends at
/// the end of its line here, so that no stray apostrophe can hide the
/// rest of a file from the count.
fn too_deep(text: &str) -> Option<String> {
    let (mut depth, mut quote, mut comment) = (0usize, None, false);
    for c in text.chars() {
        match (quote, c) {
            (_, '\n') => (comment, quote) = (false, None),
            _ if comment => {}
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '#') => comment = true,
            (None, '"' | '\'') => quote = Some(c),
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > MAX_FLOW_DEPTH {
            return Some(format!(
                "not read: collections are nested deeper than {MAX_FLOW_DEPTH} levels"
            ));
        }
    }
    None
}

/// Reads one policy document. Each limit is read on its own, so that a
/// malformed limit does not hide the problems of the others.
fn parse_policy(mut value: serde_yaml::Value) -> Result<RateLimitPolicy, Vec<String>> {
    let mut problems = check_type(&value);
    let limits = take_limits(&mut value);
    let names: Vec<Option<String>> = limits
        .iter()
        .map(|l| {
            l.get("name")
                .and_then(serde_yaml::Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    let mut parsed = Vec::with_capacity(limits.len());
    for (i, limit) in limits.into_iter().enumerate() {
        match strict::<Limit>(limit, &format!("spec.limits[{i}]")) {
            Ok((limit, unknown)) => {
                problems.extend(unknown);
                parsed.push(Some(limit));
            }
            Err(found) => {
                problems.extend(found);
                parsed.push(None);
            }
        }
    }
    let mut policy = match strict::<RateLimitPolicy>(value, "") {
        Ok((policy, unknown)) => {
            problems.extend(unknown);
            problems.extend(check_header(&policy));
            Some(policy)
        }
        Err(found) => {
            problems.extend(found);
            None
        }
    };
    let complete = parsed.iter().all(Option::is_some);
    match policy.as_mut().filter(|_| complete) {
        Some(policy) => {
            policy.spec.limits = parsed.into_iter().flatten().collect();
            problems.extend(validation_problems(policy.spec.validate()));
        }
        // Some part did not parse: still report what is wrong with the
        // limits that did, at their own positions, and repeated names.
        None => {
            for (i, limit) in parsed.iter().enumerate() {
                let Some(limit) = limit else { continue };
                let problems_of_one = limit.validate_at(&format!("spec.limits[{i}]"));
                problems.extend(validation_problems(problems_of_one));
            }
            problems.extend(repeated_names(&names));
        }
    }
    match (problems.is_empty(), policy) {
        (true, Some(policy)) => Ok(policy),
        _ => Err(problems),
    }
}

/// A problem for each limit whose name an earlier limit already uses; the
/// same words as [`crate::RateLimitPolicySpec::validate`].
fn repeated_names(names: &[Option<String>]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let Some(name) = name else { continue };
        if names[..i].iter().flatten().any(|earlier| earlier == name) {
            let message = format!("{name:?} is used by an earlier limit; names must be unique");
            problems.push(format!("spec.limits[{i}].name: {message}"));
        }
    }
    problems
}

/// Moves `spec.limits` out of the document, leaving an empty list.
fn take_limits(value: &mut serde_yaml::Value) -> Vec<serde_yaml::Value> {
    let limits = value
        .get_mut("spec")
        .and_then(|spec| spec.get_mut("limits"));
    match limits {
        Some(serde_yaml::Value::Sequence(items)) => std::mem::take(items),
        _ => Vec::new(),
    }
}

/// Deserializes `value`, returning the unknown fields it held as problems.
/// Paths are written under `prefix`.
fn strict<T: DeserializeOwned>(
    value: serde_yaml::Value,
    prefix: &str,
) -> Result<(T, Vec<String>), Vec<String>> {
    let join = |path: String| match (prefix.is_empty(), path.as_str()) {
        (true, "." | "") => String::new(),
        (true, _) => format!("{path}: "),
        (false, "." | "") => format!("{prefix}: "),
        (false, _) => format!("{prefix}.{path}: "),
    };
    let mut unknown = Vec::new();
    let mut track = |path: serde_ignored::Path<'_>| unknown.push(field_path(&path));
    let ignored = serde_ignored::Deserializer::new(value, &mut track);
    let parsed = serde_path_to_error::deserialize(ignored);
    // Unknown fields seen before a failure are named too: a typo such as
    // `reqests` is the cause of the "missing field" that follows it.
    let mut problems: Vec<String> = unknown
        .into_iter()
        .filter(|path| !is_server_owned(path))
        .map(|path| format!("{}unknown field", join(path)))
        .collect();
    match parsed {
        Ok(parsed) => Ok((parsed, problems)),
        Err(e) => {
            problems.push(format!("{}{}", join(e.path().to_string()), e.inner()));
            Err(problems)
        }
    }
}

fn validation_problems(result: Result<(), ValidationErrors>) -> Vec<String> {
    let errors = result.err().map(|e| e.0).unwrap_or_default();
    errors
        .into_iter()
        .map(|e| format!("{}: {}", e.path, e.message))
        .collect()
}

/// Writes a path the way the rest of sluice does: `spec.limits[0].window`.
fn field_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => match field_path(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => field_path(parent),
    }
}

/// Checks `apiVersion` and `kind`, which the typed policy does not keep.
fn check_type(value: &serde_yaml::Value) -> Vec<String> {
    let field = |name: &str| value.get(name).and_then(serde_yaml::Value::as_str);
    let mut problems = Vec::new();
    if field("apiVersion") != Some(API_VERSION) {
        let got = field("apiVersion").unwrap_or_default();
        problems.push(format!("apiVersion: must be {API_VERSION}, got {got:?}"));
    }
    if field("kind") != Some(KIND) {
        let got = field("kind").unwrap_or_default();
        problems.push(format!("kind: must be {KIND}, got {got:?}"));
    }
    problems
}

/// Fields a policy exported from a cluster carries that the file loader
/// has no use for; they are not typos.
fn is_server_owned(path: &str) -> bool {
    path == "apiVersion"
        || path == "kind"
        || path == "status"
        || path.starts_with("status.")
        || path.starts_with("metadata.")
}

fn check_header(policy: &RateLimitPolicy) -> Vec<String> {
    let mut problems = Vec::new();
    let name = policy.metadata.name.as_deref().unwrap_or_default();
    if !is_dns_label(name) {
        problems.push(format!(
            "metadata.name: {name:?} must be 1-63 lower case letters, digits or dashes"
        ));
    }
    if let Some(ns) = policy
        .metadata
        .namespace
        .as_deref()
        .filter(|ns| !is_dns_label(ns))
    {
        problems.push(format!(
            "metadata.namespace: {ns:?} must be 1-63 lower case letters, digits or dashes"
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "
apiVersion: sluice.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: checkout, namespace: shop}
spec:
  limits:
    - {name: global, requests: 100, window: 1s}
";

    #[test]
    fn reads_every_document_and_skips_empty_ones() {
        let text = format!(
            "---\n{GOOD}\n---\n{}\n---\n",
            GOOD.replace("checkout", "search")
        );
        let policies = parse_policies(&text, "t").unwrap();
        let keys: Vec<_> = policies.iter().map(RateLimitPolicy::key).collect();
        assert_eq!(keys, ["shop/checkout", "shop/search"]);
    }

    #[test]
    fn policy_without_namespace_lives_in_default() {
        let text = GOOD.replace(", namespace: shop", "");
        let policies = parse_policies(&text, "t").unwrap();
        assert_eq!(policies[0].key(), "default/checkout");
    }

    #[test]
    fn unknown_field_is_reported_with_its_path() {
        let text = GOOD.replace("requests: 100", "requets: 100, requests: 100");
        let err = parse_policies(&text, "t").unwrap_err();
        assert_eq!(
            err.errors[0].message,
            "spec.limits[0].requets: unknown field"
        );
    }

    #[test]
    fn wrongly_typed_field_is_reported_with_its_path() {
        let text = GOOD.replace("requests: 100", "requests: lots");
        let err = parse_policies(&text, "t").unwrap_err();
        let message = &err.errors[0].message;
        assert!(
            message.starts_with("spec.limits[0].requests: invalid type"),
            "{message}"
        );
    }

    #[test]
    fn wrong_kind_or_api_version_is_rejected() {
        let err = parse_policies(
            &GOOD.replace("kind: RateLimitPolicy", "kind: Deployment"),
            "t",
        );
        assert!(err.unwrap_err().to_string().contains("RateLimitPolicy"));
        let err = parse_policies(&GOOD.replace("v1alpha1", "v9"), "t");
        assert!(err.unwrap_err().to_string().contains("sluice.dev/v1alpha1"));
    }

    #[test]
    fn every_problem_of_every_document_is_listed() {
        let bad = GOOD
            .replace("requests: 100", "requests: 0")
            .replace("window: 1s", "window: 1d");
        let text = format!(
            "{bad}\n---\n{}",
            GOOD.replace("name: checkout", "name: Bad_Name")
        );
        let err = parse_policies(&text, "policies.yaml").unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.starts_with("policies.yaml is not a valid policy source"),
            "{shown}"
        );
        assert!(
            shown.contains("document 1: spec.limits[0].window"),
            "{shown}"
        );
        assert!(shown.contains("document 2: metadata.name"), "{shown}");
    }

    #[test]
    fn a_malformed_limit_does_not_hide_the_problems_of_the_others() {
        let limits = "    - {name: a, requests: 0, window: 1s}\n    - {name: b, requests: 1, window: 2d}\n    - {name: C, requests: 1, window: 1s}\n";
        let text = GOOD.replace("    - {name: global, requests: 100, window: 1s}\n", limits);
        let shown = parse_policies(&text, "t").unwrap_err().to_string();
        for path in [
            "spec.limits[0].requests",
            "spec.limits[1].window",
            "spec.limits[2].name",
        ] {
            assert!(shown.contains(path), "{path} missing from {shown}");
        }
    }

    #[test]
    fn a_repeated_name_is_reported_even_beside_a_malformed_limit() {
        let limits =
            "    - {name: a, requests: 1, window: 1s}\n    - {name: a, requests: 1, window: 2d}\n";
        let text = GOOD.replace("    - {name: global, requests: 100, window: 1s}\n", limits);
        let shown = parse_policies(&text, "t").unwrap_err().to_string();
        assert!(
            shown.contains("spec.limits[1].name: \"a\" is used by an earlier limit"),
            "{shown}"
        );
        assert!(shown.contains("spec.limits[1].window"), "{shown}");
    }

    #[test]
    fn a_misspelled_required_field_is_named_beside_the_missing_one() {
        let text = GOOD.replace("requests: 100", "reqests: 100");
        let shown = parse_policies(&text, "t").unwrap_err().to_string();
        assert!(
            shown.contains("spec.limits[0].reqests: unknown field"),
            "{shown}"
        );
        assert!(
            shown.contains("spec.limits[0]: missing field `requests`"),
            "{shown}"
        );
    }

    #[test]
    fn a_missing_spec_is_reported_without_a_bare_dot_path() {
        let text = "apiVersion: sluice.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {name: p}\n";
        let err = parse_policies(text, "t").unwrap_err();
        assert_eq!(err.errors[0].message, "missing field `spec`");
    }

    #[test]
    fn deeply_nested_yaml_is_refused_before_parsing() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let started = std::time::Instant::now();
        let err = parse_policies(&format!("{GOOD}\nextra: {deep}\n"), "t").unwrap_err();
        assert!(err.to_string().contains("nested deeper than"), "{err}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn malformed_yaml_is_reported_not_panicked_on() {
        let err = parse_policies("spec: [unclosed", "t").unwrap_err();
        assert!(err.errors[0].message.starts_with("not valid YAML"), "{err}");
    }

    #[test]
    fn exported_status_and_server_metadata_are_accepted() {
        let text = GOOD.replace(
            "namespace: shop}",
            "namespace: shop, uid: abc, resourceVersion: '7'}",
        ) + "status: {multiplier: 0.5}\n";
        assert_eq!(parse_policies(&text, "t").unwrap().len(), 1);
    }
}

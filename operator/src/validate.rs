//! Validate: the first step of reconcile. The policy's own rules (the same
//! `validate()` the limiter runs) and what the operator needs of the
//! policy's name to name its children. Pure.

use kube::ResourceExt;
use sluice_crds::{FieldError, RateLimitPolicy, ValidationErrors, is_dns_label};

use crate::render::MAX_POLICY_NAME;

/// Every problem of `policy`, each with its field path.
pub fn validate(policy: &RateLimitPolicy) -> Result<(), ValidationErrors> {
    let mut problems = match policy.spec.validate() {
        Ok(()) => Vec::new(),
        Err(errors) => errors.0,
    };
    if let Some(problem) = name_problem(&policy.name_any()) {
        problems.insert(0, problem);
    }
    match problems.is_empty() {
        true => Ok(()),
        false => Err(ValidationErrors(problems)),
    }
}

/// The Service `<name>-limiter` must be a DNS label that starts with a
/// letter, of at most 63 characters.
fn name_problem(name: &str) -> Option<FieldError> {
    let starts_with_letter = name.starts_with(|c: char| c.is_ascii_lowercase());
    let fits = name.len() <= MAX_POLICY_NAME && is_dns_label(name) && starts_with_letter;
    (!fits).then(|| FieldError {
        path: "metadata.name".to_owned(),
        message: format!(
            "{name:?} must be at most {MAX_POLICY_NAME} lower case letters, digits or dashes, \
             starting with a letter, so that the Service {name}-limiter can exist"
        ),
    })
}

#[cfg(test)]
mod tests {
    use sluice_crds::RateLimitPolicySpec;

    use super::*;

    fn policy(name: &str, requests: u64) -> RateLimitPolicy {
        let spec: RateLimitPolicySpec = serde_yaml::from_str(&format!(
            "limits: [{{name: global, requests: {requests}, window: 1s}}]"
        ))
        .unwrap();
        RateLimitPolicy::new(name, spec)
    }

    #[test]
    fn a_valid_policy_passes() {
        assert_eq!(validate(&policy("checkout", 10)), Ok(()));
    }

    #[test]
    fn every_problem_is_listed_with_its_path() {
        let name = "x".repeat(MAX_POLICY_NAME + 1);
        let errors = validate(&policy(&name, 0)).unwrap_err();
        let paths: Vec<_> = errors.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["metadata.name", "spec.limits[0].requests"]);
    }

    #[test]
    fn a_name_starting_with_a_digit_cannot_name_a_service() {
        let errors = validate(&policy("1checkout", 10)).unwrap_err();
        assert_eq!(errors.0[0].path, "metadata.name");
    }

    #[test]
    fn the_longest_allowed_name_passes() {
        let name = "a".repeat(MAX_POLICY_NAME);
        assert_eq!(validate(&policy(&name, 10)), Ok(()));
    }
}

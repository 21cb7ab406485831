//! The Kubernetes permissions the operator needs, all of them and no
//! more, declared once. `sluice-operator rbac` prints them; the Helm
//! chart's roles hold the same rules (`operator/tests/chart/` fails when
//! they differ). The tests fail when the operator calls an API these rules
//! do not cover, or when a rule covers nothing it calls.

use k8s_openapi::{
    api::rbac::v1::{
        ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

/// Some verbs on one resource of one API group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The API group; empty for the core group.
    pub api_group: &'static str,
    /// The resource, with `/subresource` where one is meant.
    pub resource: &'static str,
    /// The verbs allowed.
    pub verbs: &'static [&'static str],
}

/// The policy, its children, Events and the Secrets holding Redis
/// passwords, in every namespace.
pub const CLUSTER_RULES: &[Rule] = &[
    // The controller watches policies...
    Rule {
        api_group: "sluice.dev",
        resource: "ratelimitpolicies",
        verbs: &["list", "watch"],
    },
    // ...and writes their status, never their spec.
    Rule {
        api_group: "sluice.dev",
        resource: "ratelimitpolicies/status",
        verbs: &["patch"],
    },
    // Owner references with blockOwnerDeletion need this where the
    // OwnerReferencesPermissionEnforcement admission plugin runs.
    Rule {
        api_group: "sluice.dev",
        resource: "ratelimitpolicies/finalizers",
        verbs: &["update"],
    },
    // Children are watched, and server-side applied: an apply that creates
    // needs `create` as well as `patch`.
    Rule {
        api_group: "",
        resource: "configmaps",
        verbs: &["list", "watch", "create", "patch"],
    },
    Rule {
        api_group: "",
        resource: "services",
        verbs: &["list", "watch", "create", "patch"],
    },
    Rule {
        api_group: "apps",
        resource: "deployments",
        verbs: &["list", "watch", "create", "patch"],
    },
    // A budget is deleted when replicas go down to one.
    Rule {
        api_group: "policy",
        resource: "poddisruptionbudgets",
        verbs: &["list", "watch", "create", "patch", "delete"],
    },
    // An adaptive policy's multiplier is published in the limiters' Redis,
    // whose password is in a Secret the policy names. Read one by one, by
    // name: never listed or watched.
    Rule {
        api_group: "",
        resource: "secrets",
        verbs: &["get"],
    },
    // A repeated Event is patched into a series.
    Rule {
        api_group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
    },
];

/// The leader-election Lease, in the operator's own namespace.
pub const LEASE_RULES: &[Rule] = &[Rule {
    api_group: "coordination.k8s.io",
    resource: "leases",
    verbs: &["get", "create", "update"],
}];

/// Whether `rules` allow `verb` on `resource` of `api_group`.
pub fn permits(rules: &[Rule], verb: &str, api_group: &str, resource: &str) -> bool {
    rules
        .iter()
        .any(|r| r.api_group == api_group && r.resource == resource && r.verbs.contains(&verb))
}

fn policy_rules(rules: &[Rule]) -> Vec<PolicyRule> {
    let rule = |r: &Rule| PolicyRule {
        api_groups: Some(vec![r.api_group.to_owned()]),
        resources: Some(vec![r.resource.to_owned()]),
        verbs: r.verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..PolicyRule::default()
    };
    rules.iter().map(rule).collect()
}

/// The ClusterRole holding [`CLUSTER_RULES`].
pub fn cluster_role(name: &str) -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        rules: Some(policy_rules(CLUSTER_RULES)),
        ..ClusterRole::default()
    }
}

/// The Role holding [`LEASE_RULES`] in `namespace`.
pub fn lease_role(name: &str, namespace: &str) -> Role {
    Role {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        rules: Some(policy_rules(LEASE_RULES)),
    }
}

/// Where the operator runs: the names its roles and bindings use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Install {
    /// The name of the roles, bindings and service account.
    pub name: String,
    /// The operator's namespace, where its Lease lives.
    pub namespace: String,
}

/// The ClusterRole, Role and their bindings to the service account
/// `install.name` in `install.namespace`, as YAML documents.
pub fn manifests(install: &Install) -> Result<String, serde_yaml::Error> {
    let subject = Subject {
        kind: "ServiceAccount".to_owned(),
        name: install.name.clone(),
        namespace: Some(install.namespace.clone()),
        ..Subject::default()
    };
    let role_ref = |kind: &str| RoleRef {
        api_group: "rbac.authorization.k8s.io".to_owned(),
        kind: kind.to_owned(),
        name: install.name.clone(),
    };
    let cluster_binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(install.name.clone()),
            ..ObjectMeta::default()
        },
        role_ref: role_ref("ClusterRole"),
        subjects: Some(vec![subject.clone()]),
    };
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some(install.name.clone()),
            namespace: Some(install.namespace.clone()),
            ..ObjectMeta::default()
        },
        role_ref: role_ref("Role"),
        subjects: Some(vec![subject]),
    };
    let documents = [
        serde_yaml::to_string(&cluster_role(&install.name))?,
        serde_yaml::to_string(&cluster_binding)?,
        serde_yaml::to_string(&lease_role(&install.name, &install.namespace))?,
        serde_yaml::to_string(&binding)?,
    ];
    Ok(documents.map(|d| format!("---\n{d}")).concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_rule_uses_a_wildcard() {
        for rule in CLUSTER_RULES.iter().chain(LEASE_RULES) {
            assert!(
                !rule.resource.contains('*') && !rule.api_group.contains('*'),
                "{rule:?}"
            );
            assert!(!rule.verbs.contains(&"*"), "{rule:?}");
        }
    }

    #[test]
    fn secrets_are_only_read_by_name() {
        let all = CLUSTER_RULES.iter().chain(LEASE_RULES);
        let secrets: Vec<_> = all.filter(|r| r.resource == "secrets").collect();
        assert_eq!(secrets.len(), 1);
        assert_eq!(secrets[0].verbs, ["get"]);
    }

    #[test]
    fn permits_matches_group_resource_and_verb() {
        assert!(permits(CLUSTER_RULES, "patch", "apps", "deployments"));
        assert!(!permits(CLUSTER_RULES, "delete", "apps", "deployments"));
        assert!(!permits(CLUSTER_RULES, "patch", "", "deployments"));
        assert!(!permits(
            CLUSTER_RULES,
            "patch",
            "sluice.dev",
            "ratelimitpolicies"
        ));
    }

    #[test]
    fn manifests_bind_both_roles_to_the_service_account() {
        let install = Install {
            name: "sluice-operator".into(),
            namespace: "sluice-system".into(),
        };
        let yaml = manifests(&install).unwrap();
        for kind in ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"] {
            assert!(
                yaml.contains(&format!("kind: {kind}\n")),
                "{kind} missing:\n{yaml}"
            );
        }
        assert_eq!(yaml.matches("kind: ServiceAccount").count(), 2, "{yaml}");
    }
}

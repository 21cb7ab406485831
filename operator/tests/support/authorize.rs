//! What Kubernetes RBAC would require of a request, and whether the
//! operator's declared rules grant it: an authorizer for the mock API.

use serde_json::Value;
use sluice_operator::rbac::{self, CLUSTER_RULES, LEASE_RULES};

use super::fixtures::LEASE_NAMESPACE;

/// One verb on one resource, as RBAC checks it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Permission {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, ...
    pub verb: String,
    /// The API group; empty for the core group.
    pub group: String,
    /// The resource, with `/subresource` when one is addressed.
    pub resource: String,
    /// The namespace, absent for a request across all namespaces.
    pub namespace: Option<String>,
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {}/{}", self.verb, group, self.resource)?;
        if let Some(ns) = &self.namespace {
            write!(f, " in {ns}")?;
        }
        Ok(())
    }
}

/// The parts of a request RBAC looks at.
pub struct Request<'a> {
    /// The HTTP method.
    pub method: &'a str,
    /// The URL path.
    pub path: &'a str,
    /// Whether the query asks to watch.
    pub watch: bool,
    /// The request's content type.
    pub content_type: Option<&'a str>,
    /// The body, as JSON (null when empty).
    pub body: &'a Value,
}

/// Every permission `request` needs.
///
/// Besides the verb of the method, a server-side apply may create the
/// object and so also needs `create`, and an owner reference with
/// `blockOwnerDeletion` needs `update` on the owner's `finalizers`.
pub fn required(request: &Request<'_>) -> Vec<Permission> {
    let (group, namespace, resource, name) = parse_path(request.path);
    let verb = match (request.method, name.is_some()) {
        ("GET", true) => "get",
        ("GET", false) if request.watch => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (other, _) => panic!("unexpected method {other}"),
    };
    let permission = |verb: &str, group: &str, resource: &str| Permission {
        verb: verb.to_owned(),
        group: group.to_owned(),
        resource: resource.to_owned(),
        namespace: namespace.clone(),
    };
    let mut needed = vec![permission(verb, &group, &resource)];
    let applies = request.content_type == Some("application/apply-patch+yaml");
    if applies && !resource.contains('/') {
        needed.push(permission("create", &group, &resource));
    }
    for owner in blocking_owners(request.body) {
        needed.push(permission(
            "update",
            &owner.0,
            &format!("{}/finalizers", owner.1),
        ));
    }
    needed
}

/// Whether the operator's declared rules grant `permission`: the cluster
/// rules anywhere, the Lease rules in the operator's namespace only.
pub fn granted(permission: &Permission) -> bool {
    let Permission {
        verb,
        group,
        resource,
        namespace,
    } = permission;
    let lease_scope = namespace.as_deref() == Some(LEASE_NAMESPACE);
    rbac::permits(CLUSTER_RULES, verb, group, resource)
        || (lease_scope && rbac::permits(LEASE_RULES, verb, group, resource))
}

/// `(group, namespace, resource[/subresource], name)` of an API path.
fn parse_path(path: &str) -> (String, Option<String>, String, Option<String>) {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => ((*group).to_owned(), rest),
        _ => panic!("not an API path: {path}"),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        rest => (None, rest),
    };
    match rest {
        [resource] => (group, namespace, (*resource).to_owned(), None),
        [resource, name] => (
            group,
            namespace,
            (*resource).to_owned(),
            Some((*name).to_owned()),
        ),
        [resource, name, sub] => (
            group,
            namespace,
            format!("{resource}/{sub}"),
            Some((*name).to_owned()),
        ),
        _ => panic!("unexpected API path: {path}"),
    }
}

/// `(group, plural)` of each owner a body names with blockOwnerDeletion.
fn blocking_owners(body: &Value) -> Vec<(String, String)> {
    let owners = body["metadata"]["ownerReferences"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    owners
        .iter()
        .filter(|o| o["blockOwnerDeletion"] == Value::Bool(true))
        .map(|o| {
            let api_version = o["apiVersion"].as_str().unwrap_or_default();
            let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
            let kind = o["kind"].as_str().unwrap_or_default();
            assert_eq!(kind, "RateLimitPolicy", "only policies own children");
            (group.to_owned(), "ratelimitpolicies".to_owned())
        })
        .collect()
}

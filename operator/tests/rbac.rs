//! The declared RBAC rules against what the operator really calls: every
//! call must be granted (the mock API checks each one), and every
//! declared permission must be used by some call, so the rules are exactly
//! what the operator needs.

mod support;

use std::{collections::BTreeSet, sync::Arc, sync::atomic::Ordering, time::Duration};

use sluice_operator::{
    clock::Clock,
    controller,
    leader::{Elector, Leadership, LeaseLock, Timings, campaign},
    rbac::{CLUSTER_RULES, LEASE_RULES},
    reconcile::reconcile,
};
use support::{
    api::{Used, mock_client},
    authorize::Permission,
    fake::{self, Faults},
    fixtures::{LEASE_NAMESPACE, context, fixture, now, policy, spec},
};

/// `(verb, group, resource)` of each permission, namespaces aside.
fn flatten(used: &Used) -> BTreeSet<(String, String, String)> {
    let used = used.lock().unwrap();
    used.iter()
        .map(|p: &Permission| (p.verb.clone(), p.group.clone(), p.resource.clone()))
        .collect()
}

fn declared() -> BTreeSet<(String, String, String)> {
    let rules = CLUSTER_RULES.iter().chain(LEASE_RULES);
    rules
        .flat_map(|r| {
            r.verbs.iter().map(|v| {
                (
                    (*v).to_owned(),
                    r.api_group.to_owned(),
                    r.resource.to_owned(),
                )
            })
        })
        .collect()
}

/// Runs the controller until it has listed and watched each kind it
/// needs; returns the permissions its calls used.
async fn controller_calls() -> Used {
    let (client, api) = mock_client();
    let used = api.used();
    let (ctx, _leader) = context(client, true);
    let server = fake::serve(api, Faults::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(controller::run(ctx, async {
        let _ = stopped.await;
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while flatten(&used)
        .iter()
        .filter(|(verb, ..)| verb == "watch")
        .count()
        < 5
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "watches so far: {:?}",
            flatten(&used)
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop.send(());
    running.abort();
    let _ = running.await;
    server
        .await
        .expect("every call of the controller is granted");
    used
}

#[tokio::test]
async fn the_controller_lists_and_watches_only_what_the_rules_grant() {
    let used = flatten(&controller_calls().await);
    for resource in [
        "ratelimitpolicies",
        "configmaps",
        "deployments",
        "services",
        "poddisruptionbudgets",
    ] {
        for verb in ["list", "watch"] {
            assert!(
                used.iter().any(|(v, _, r)| v == verb && r == resource),
                "no {verb} of {resource}: {used:?}"
            );
        }
    }
}

#[tokio::test]
async fn declared_rules_are_exactly_what_the_operator_calls() {
    let mut used = flatten(&controller_calls().await);

    // Reconciles: two replicas (budget applied), one (budget deleted), an
    // adaptive policy publishing with the Redis password from its Secret,
    // and twice a failing Deployment (the second Event becomes a series
    // patch).
    let (client, api) = mock_client();
    let calls = api.used();
    let faults = Faults::default();
    let server = fake::serve(api, faults.clone());
    let (ctx, _leader) = context(client, true);
    reconcile(Arc::new(policy(&spec(10, 2), 1)), ctx.clone())
        .await
        .unwrap();
    reconcile(Arc::new(policy(&spec(10, 1), 2)), ctx.clone())
        .await
        .unwrap();
    reconcile(Arc::new(fixture("checkout.yaml")), ctx.clone())
        .await
        .unwrap();
    faults
        .deployments_unavailable
        .store(true, Ordering::Relaxed);
    for _ in 0..2 {
        reconcile(Arc::new(policy(&spec(10, 2), 3)), ctx.clone())
            .await
            .unwrap_err();
    }
    drop(ctx);
    server.await.expect("every call of reconcile is granted");
    used.extend(flatten(&calls));

    // The election: create the Lease, renew it, release it.
    let (client, api) = mock_client();
    let calls = api.used();
    let server = fake::serve(api, Faults::default());
    let (sender, leadership) = Leadership::channel(false);
    let lock = LeaseLock::new(client, LEASE_NAMESPACE, "sluice-operator");
    let timings = Timings {
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_millis(20),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let election = tokio::spawn(campaign(
        Elector::new("op-a", timings),
        lock,
        Clock::fixed(now()),
        sender,
        async {
            let _ = stopped.await;
        },
    ));
    leadership.acquired().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !flatten(&calls).iter().any(|(verb, ..)| verb == "update") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lease was never renewed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop.send(());
    election.await.unwrap();
    server.await.expect("every call of the election is granted");
    used.extend(flatten(&calls));

    let declared = declared();
    let unused: Vec<_> = declared.difference(&used).collect();
    let undeclared: Vec<_> = used.difference(&declared).collect();
    assert!(unused.is_empty(), "declared but never used: {unused:?}");
    assert!(
        undeclared.is_empty(),
        "used but not declared: {undeclared:?}"
    );
}

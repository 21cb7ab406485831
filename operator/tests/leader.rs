//! Leader election against a mock API server, on a paused clock: every
//! call on the Lease is stated, and time moves only when every task waits.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use sluice_operator::{
    clock::Clock,
    leader::{Elector, Leadership, LeaseLock, Timings, campaign},
};
use support::{
    api::{Call, MockApi, mock_client, spawn},
    fixtures::{LEASE_NAMESPACE, now},
};
use tokio::{sync::oneshot, task::JoinHandle, time::Instant};

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/sluice-system/leases/sluice-operator";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/sluice-system/leases";

struct Candidate {
    api: MockApi,
    leadership: Leadership,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// The candidate `op-a` campaigning against a mock API.
fn candidate() -> Candidate {
    let (client, api) = mock_client();
    let (sender, leadership) = Leadership::channel(false);
    let (stop, stopped) = oneshot::channel();
    let elector = Elector::new("op-a", Timings::default());
    let lock = LeaseLock::new(client, LEASE_NAMESPACE, "sluice-operator");
    let stop_signal = async {
        let _ = stopped.await;
    };
    let task = spawn(campaign(
        elector,
        lock,
        Clock::fixed(now()),
        sender,
        stop_signal,
    ));
    let api = api.with_deadline(Duration::from_secs(120));
    Candidate {
        api,
        leadership,
        stop,
        task,
    }
}

/// A Lease held by `holder` at `version`.
fn lease(holder: &str, version: u64, transitions: i32) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {
            "name": "sluice-operator",
            "namespace": LEASE_NAMESPACE,
            "resourceVersion": version.to_string(),
        },
        "spec": {
            "holderIdentity": holder, "leaseDurationSeconds": 15, "leaseTransitions": transitions,
            "acquireTime": "2025-12-31T00:00:00.000000Z",
            "renewTime": "2025-12-31T23:59:59.000000Z",
        },
    })
}

/// Answers a write with what was written, at `version`.
fn store(call: Call, version: u64) {
    let mut stored = call.body.clone();
    stored["metadata"]["resourceVersion"] = json!(version.to_string());
    call.reply(200, &stored);
}

fn assert_written_by_the_operator(call: &Call) {
    assert_eq!(
        call.query.get("fieldManager").map(String::as_str),
        Some("sluice-operator")
    );
}

#[tokio::test(start_paused = true)]
async fn missing_lease_is_created_and_released_on_stop() {
    let Candidate {
        mut api,
        leadership,
        stop,
        task,
    } = candidate();

    api.expect("GET", LEASE).await.reply_failure(
        404,
        "NotFound",
        "leases \"sluice-operator\" not found",
    );
    let create = api.expect("POST", LEASES).await;
    assert_written_by_the_operator(&create);
    let spec = &create.body["spec"];
    assert_eq!(create.body["metadata"]["name"], "sluice-operator");
    assert_eq!(spec["holderIdentity"], "op-a");
    assert_eq!(spec["leaseDurationSeconds"], 15);
    assert_eq!(spec["leaseTransitions"], 0);
    assert_eq!(spec["renewTime"], spec["acquireTime"]);
    store(create, 1);
    leadership.acquired().await;

    stop.send(()).unwrap();
    let release = api.expect("PUT", LEASE).await;
    assert_written_by_the_operator(&release);
    assert_eq!(
        release.body["metadata"]["resourceVersion"], "1",
        "only the lease it wrote"
    );
    assert_eq!(release.body["spec"].get("holderIdentity"), None);
    assert_eq!(release.body["spec"]["leaseDurationSeconds"], 1);
    store(release, 2);

    api.finish(task, ()).await;
    assert!(!leadership.is_leader());
}

#[tokio::test(start_paused = true)]
async fn holder_renews_with_the_resource_version_it_read() {
    let Candidate {
        mut api,
        leadership,
        stop,
        task,
    } = candidate();

    for version in [41, 42] {
        api.expect("GET", LEASE)
            .await
            .reply(200, &lease("op-a", version, 3));
        let renew = api.expect("PUT", LEASE).await;
        assert_written_by_the_operator(&renew);
        assert_eq!(
            renew.body["metadata"]["resourceVersion"],
            version.to_string()
        );
        assert_eq!(renew.body["spec"]["holderIdentity"], "op-a");
        assert_eq!(
            renew.body["spec"]["leaseTransitions"], 3,
            "a renewal is no transition"
        );
        assert_eq!(
            renew.body["spec"]["acquireTime"],
            "2025-12-31T00:00:00.000000Z"
        );
        store(renew, version + 1);
        leadership.acquired().await;
    }

    // Stop once the last renewal has been taken in: the next round began.
    let _third_read = api.expect("GET", LEASE).await;
    stop.send(()).unwrap();
    let release = api.expect("PUT", LEASE).await;
    assert_eq!(release.body["metadata"]["resourceVersion"], "43");
    store(release, 44);
    api.finish(task, ()).await;
}

#[tokio::test(start_paused = true)]
async fn standby_only_reads_while_the_holder_renews() {
    let Candidate {
        mut api,
        leadership,
        stop,
        task,
    } = candidate();

    for version in 1..=15 {
        // Thirty seconds of a holder that renews every two.
        api.expect("GET", LEASE)
            .await
            .reply(200, &lease("op-b", version, 0));
        assert!(!leadership.is_leader());
    }

    stop.send(()).unwrap();
    api.finish(task, ()).await;
    assert!(!leadership.is_leader());
}

#[tokio::test(start_paused = true)]
async fn standby_takes_over_a_lease_unrenewed_for_its_duration() {
    let Candidate {
        mut api,
        leadership,
        stop,
        task,
    } = candidate();

    let first_read = Instant::now();
    let take_over = loop {
        let call = api.next().await;
        match (call.method.as_str(), call.path.as_str()) {
            ("GET", LEASE) => call.reply(200, &lease("op-b", 5, 2)),
            ("PUT", LEASE) => break call,
            _ => panic!("unexpected call {} {}", call.method, call.path),
        }
    };
    assert!(
        first_read.elapsed() >= Duration::from_secs(15),
        "took over after {:?}",
        first_read.elapsed()
    );
    assert_eq!(take_over.body["metadata"]["resourceVersion"], "5");
    assert_eq!(take_over.body["spec"]["holderIdentity"], "op-a");
    assert_eq!(take_over.body["spec"]["leaseTransitions"], 3);
    store(take_over, 6);
    leadership.acquired().await;

    stop.send(()).unwrap();
    store(api.expect("PUT", LEASE).await, 7);
    api.finish(task, ()).await;
}

#[tokio::test(start_paused = true)]
async fn leader_stops_leading_by_the_renew_deadline_when_the_api_hangs() {
    let Candidate {
        mut api,
        leadership,
        stop,
        task,
    } = candidate();

    let acquired_at = Instant::now();
    api.expect("GET", LEASE)
        .await
        .reply_failure(404, "NotFound", "not found");
    store(api.expect("POST", LEASES).await, 1);
    leadership.acquired().await;

    // The next read never gets an answer.
    let _hanging = api.expect("GET", LEASE).await;
    leadership.lost().await;
    let led_for = acquired_at.elapsed();
    assert!(
        led_for <= Timings::default().renew_deadline,
        "led for {led_for:?}"
    );

    stop.send(()).unwrap();
    let mut task = task;
    loop {
        tokio::select! {
            ended = &mut task => break ended.unwrap(),
            call = api.next_or_none() => match call {
                Some(call) => {
                    assert_eq!(call.method, "GET", "a replica that lost the lease must not write");
                    call.reply_failure(503, "ServiceUnavailable", "unavailable");
                }
                None => break (&mut task).await.unwrap(),
            },
        }
    }
}

#[tokio::test(start_paused = true)]
async fn losing_the_race_to_create_leaves_it_standing_by() {
    let Candidate {
        mut api,
        leadership,
        stop,
        task,
    } = candidate();

    api.expect("GET", LEASE)
        .await
        .reply_failure(404, "NotFound", "not found");
    api.expect("POST", LEASES).await.reply_failure(
        409,
        "AlreadyExists",
        "leases \"sluice-operator\" already exists",
    );
    api.expect("GET", LEASE)
        .await
        .reply(200, &lease("op-b", 1, 0));
    assert!(!leadership.is_leader());

    stop.send(()).unwrap();
    api.finish(task, ()).await;
    assert!(!leadership.is_leader());
}

//! Loading policies from disk and picking up changes: a plain file, a
//! directory, and a directory laid out like a mounted Kubernetes ConfigMap.

mod common;

use std::{
    fs,
    os::unix::fs::symlink,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use common::T0;
use sluice_limiter::{
    Limiter,
    clock::ManualClock,
    decision::{Decision, LimitState},
    metrics::Metrics,
    policy::Request,
    source::{self, PolicySource, Poll},
    store::{MemoryStore, MemoryStoreConfig},
};
use tempfile::TempDir;
use tokio::task::JoinHandle;

/// How often the watched tests poll the disk.
const INTERVAL: Duration = Duration::from_millis(10);

/// How long a watched change may take to show before a test fails.
const DEADLINE: Duration = Duration::from_secs(10);

/// `default/api` with one limit, `per-user`, of `requests` a minute.
fn api_policy(requests: u64) -> String {
    format!(
        "apiVersion: sluice.dev/v1alpha1
kind: RateLimitPolicy
metadata: {{name: api}}
spec:
  limits:
    - {{name: per-user, requests: {requests}, window: 1m, by: [user]}}
"
    )
}

/// Replaces `path` in one step, through a hidden temporary file beside it,
/// so that no poll ever reads half a file.
fn write_atomically(path: &Path, text: &str) {
    let name = path.file_name().unwrap().to_string_lossy();
    let temp = path.with_file_name(format!(".{name}.tmp"));
    fs::write(&temp, text).unwrap();
    fs::rename(&temp, path).unwrap();
}

/// A directory holding `policy.yaml` with [`api_policy`] of `requests`.
fn policy_dir(requests: u64) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("policy.yaml"), api_policy(requests)).unwrap();
    dir
}

fn limiter_for(source: &PolicySource) -> (Arc<Limiter<MemoryStore>>, blake3::Hash) {
    let loaded = source.load().expect("the first policies are valid");
    let clock = Arc::new(ManualClock::new(T0));
    let store = MemoryStore::with_clock(MemoryStoreConfig::default(), clock);
    (
        Arc::new(Limiter::new(loaded.policies, store)),
        loaded.fingerprint,
    )
}

/// One check of cost 1 by `user`, against the only policy served.
async fn check(limiter: &Limiter<MemoryStore>, user: &str) -> Decision {
    let request = Request {
        user: Some(user),
        endpoint: None,
        cost: 1,
    };
    let (_, decision) = limiter.check(None, &request).await.unwrap();
    decision
}

fn deciding(decision: &Decision) -> &LimitState {
    decision.deciding_limit().expect("a limit applied")
}

/// `requests` of the `per-user` limit now served.
fn served_requests(limiter: &Limiter<MemoryStore>) -> u64 {
    let policies = limiter.policies();
    let served = policies
        .resolve(Some("api"))
        .expect("default/api is served");
    let limit = served.policy.limits.iter().find(|l| &*l.name == "per-user");
    limit.expect("per-user is a limit").requests
}

/// Polls `source` once and serves what changed; panics unless it changed
/// to valid policies.
fn reload(source: &PolicySource, seen: &blake3::Hash, limiter: &Limiter<MemoryStore>) {
    match source.poll(seen) {
        Poll::Changed(_, Ok(policies)) => limiter.replace_policies(policies),
        other => panic!("expected valid changed policies, got {other:?}"),
    }
}

/// Waits, up to [`DEADLINE`], until `done` holds.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A limiter whose policies [`source::watch`] keeps fresh.
struct Watched {
    limiter: Arc<Limiter<MemoryStore>>,
    metrics: Arc<Metrics>,
    task: JoinHandle<()>,
}

impl Watched {
    fn start(source: PolicySource) -> Self {
        let (limiter, fingerprint) = limiter_for(&source);
        let metrics = Arc::new(Metrics::new());
        let task = tokio::spawn(source::watch(
            source,
            fingerprint,
            limiter.clone(),
            metrics.clone(),
            INTERVAL,
        ));
        Self {
            limiter,
            metrics,
            task,
        }
    }

    /// Reload attempts that ended with `result` (`ok` or `error`).
    fn reloads(&self, result: &str) -> u64 {
        let sample = format!("sluice_policy_reloads_total{{result=\"{result}\"}} ");
        let text = self.metrics.encode();
        let line = text.lines().find_map(|l| l.strip_prefix(&sample));
        line.map_or(0, |n| n.parse().unwrap())
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// Changes that are picked up.

#[tokio::test]
async fn raising_requests_in_the_file_raises_the_next_checks_limit() {
    let dir = policy_dir(3);
    let source = PolicySource::Path(dir.path().join("policy.yaml"));
    let (limiter, seen) = limiter_for(&source);
    let before = check(&limiter, "alice").await;

    fs::write(dir.path().join("policy.yaml"), api_policy(5)).unwrap();
    reload(&source, &seen, &limiter);
    let after = check(&limiter, "alice").await;

    assert_eq!(deciding(&before).effective, 3);
    assert_eq!(deciding(&after).effective, 5);
    assert_eq!(
        deciding(&after).remaining,
        3,
        "the first check still counts"
    );
}

#[tokio::test]
async fn lowering_requests_applies_to_what_was_already_counted() {
    let dir = policy_dir(5);
    let source = PolicySource::Path(dir.path().to_owned());
    let (limiter, seen) = limiter_for(&source);
    for _ in 0..3 {
        assert!(check(&limiter, "alice").await.allowed);
    }

    fs::write(dir.path().join("policy.yaml"), api_policy(3)).unwrap();
    reload(&source, &seen, &limiter);
    let after = check(&limiter, "alice").await;

    assert!(!after.allowed);
    assert_eq!(deciding(&after).effective, 3);
}

#[tokio::test]
async fn unchanged_file_polls_as_unchanged() {
    let dir = policy_dir(3);
    let source = PolicySource::Path(dir.path().to_owned());
    let (_, seen) = limiter_for(&source);

    fs::write(dir.path().join("policy.yaml"), api_policy(3)).unwrap();

    assert!(matches!(source.poll(&seen), Poll::Unchanged));
}

#[tokio::test]
async fn reload_keeps_the_multiplier_of_a_policy_still_served() {
    let dir = policy_dir(10);
    let source = PolicySource::Path(dir.path().to_owned());
    let (limiter, seen) = limiter_for(&source);
    let served = limiter.policies();
    served.resolve(None).unwrap().multiplier.set(0.5);

    fs::write(dir.path().join("policy.yaml"), api_policy(20)).unwrap();
    reload(&source, &seen, &limiter);
    let after = check(&limiter, "alice").await;

    assert_eq!(after.multiplier, 0.5);
    assert_eq!(deciding(&after).effective, 10);
}

#[tokio::test]
async fn watched_file_change_is_served_without_restart() {
    let dir = policy_dir(3);
    let watched = Watched::start(PolicySource::Path(dir.path().to_owned()));

    write_atomically(&dir.path().join("policy.yaml"), &api_policy(5));
    eventually("requests 5 are served", || {
        served_requests(&watched.limiter) == 5
    })
    .await;
    let after = check(&watched.limiter, "alice").await;

    assert_eq!(deciding(&after).effective, 5);
    assert_eq!(watched.reloads("ok"), 1);
    assert_eq!(watched.reloads("error"), 0);
}

// Changes that are reported and ignored.

/// Starts watching a directory serving 3 requests a minute, counts one
/// check, applies `change`, and asserts that it is reported (a failed
/// reload, and `problem` in the load error) while the old policy keeps
/// serving with its count.
async fn assert_bad_change_is_reported_and_ignored(change: impl FnOnce(&Path), problem: &str) {
    let dir = policy_dir(3);
    let source = PolicySource::Path(dir.path().to_owned());
    let watched = Watched::start(source.clone());
    assert_eq!(
        deciding(&check(&watched.limiter, "alice").await).remaining,
        2
    );

    change(dir.path());
    eventually("the bad change is reported", || {
        watched.reloads("error") >= 1
    })
    .await;
    let after = check(&watched.limiter, "alice").await;

    assert!(after.allowed);
    assert_eq!(deciding(&after).effective, 3);
    assert_eq!(
        deciding(&after).remaining,
        1,
        "the earlier check still counts"
    );
    assert_eq!(watched.reloads("ok"), 0);
    let error = source.load().unwrap_err().to_string();
    assert!(error.contains(problem), "{error}");
}

#[tokio::test]
async fn invalid_yaml_is_reported_and_the_old_policy_keeps_serving() {
    let change = |dir: &Path| write_atomically(&dir.join("policy.yaml"), "spec: [unclosed");
    assert_bad_change_is_reported_and_ignored(change, "not valid YAML").await;
}

#[tokio::test]
async fn invalid_policy_is_reported_and_the_old_policy_keeps_serving() {
    let change = |dir: &Path| write_atomically(&dir.join("policy.yaml"), &api_policy(0));
    assert_bad_change_is_reported_and_ignored(change, "spec.limits[0].requests").await;
}

#[tokio::test]
async fn policy_defined_in_two_files_is_reported_and_the_old_policy_keeps_serving() {
    let change = |dir: &Path| write_atomically(&dir.join("second.yaml"), &api_policy(9));
    assert_bad_change_is_reported_and_ignored(change, "default/api is defined twice").await;
}

#[tokio::test]
async fn emptied_directory_is_reported_and_the_old_policy_keeps_serving() {
    let change = |dir: &Path| fs::remove_file(dir.join("policy.yaml")).unwrap();
    assert_bad_change_is_reported_and_ignored(change, "holds no policy").await;
}

#[tokio::test]
async fn good_change_after_a_bad_one_is_served() {
    let dir = policy_dir(3);
    let watched = Watched::start(PolicySource::Path(dir.path().to_owned()));
    let file = dir.path().join("policy.yaml");
    write_atomically(&file, "spec: [unclosed");
    eventually("the bad change is reported", || {
        watched.reloads("error") == 1
    })
    .await;

    write_atomically(&file, &api_policy(4));
    eventually("requests 4 are served", || {
        served_requests(&watched.limiter) == 4
    })
    .await;

    assert_eq!(watched.reloads("ok"), 1);
}

// A mounted ConfigMap.

/// A directory laid out as the kubelet mounts a ConfigMap with one key,
/// `policy.yaml`: the data in a hidden timestamped directory, `..data`
/// pointing at it, and the visible file pointing through `..data`.
struct ConfigMapMount {
    dir: TempDir,
    current: String,
}

impl ConfigMapMount {
    fn new(policy: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let current = "..2026_01_01_00_00_00.000000001".to_owned();
        fs::create_dir(dir.path().join(&current)).unwrap();
        fs::write(dir.path().join(&current).join("policy.yaml"), policy).unwrap();
        symlink(&current, dir.path().join("..data")).unwrap();
        symlink("..data/policy.yaml", dir.path().join("policy.yaml")).unwrap();
        Self { dir, current }
    }

    /// Updates the data as the kubelet does: a new timestamped directory,
    /// `..data` swapped to it in one rename, the old directory removed.
    fn update(&mut self, policy: &str, timestamp: &str) {
        let root = self.dir.path();
        let next = format!("..{timestamp}");
        fs::create_dir(root.join(&next)).unwrap();
        fs::write(root.join(&next).join("policy.yaml"), policy).unwrap();
        symlink(&next, root.join("..data_tmp")).unwrap();
        fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        fs::remove_dir_all(root.join(&self.current)).unwrap();
        self.current = next;
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

#[tokio::test]
async fn configmap_update_through_the_data_symlink_is_served_without_restart() {
    let mut mount = ConfigMapMount::new(&api_policy(3));
    let watched = Watched::start(PolicySource::Path(mount.path().to_owned()));
    assert_eq!(served_requests(&watched.limiter), 3);

    mount.update(&api_policy(6), "2026_01_01_00_01_00.000000002");
    eventually("requests 6 are served", || {
        served_requests(&watched.limiter) == 6
    })
    .await;
    let after = check(&watched.limiter, "alice").await;

    assert_eq!(deciding(&after).effective, 6);
    assert!(
        !mount
            .path()
            .join("..2026_01_01_00_00_00.000000001")
            .exists()
    );
    // The swap is atomic: no poll ever saw a broken mount.
    assert_eq!(watched.reloads("error"), 0);
}

#[tokio::test]
async fn configmap_file_named_directly_follows_the_data_symlink() {
    let mut mount = ConfigMapMount::new(&api_policy(3));
    let file = PolicySource::Path(mount.path().join("policy.yaml"));
    let watched = Watched::start(file);

    mount.update(&api_policy(8), "2026_01_01_00_01_00.000000002");

    eventually("requests 8 are served", || {
        served_requests(&watched.limiter) == 8
    })
    .await;
}

#[test]
fn hidden_entries_of_a_directory_are_not_read_as_policies() {
    let mount = ConfigMapMount::new(&api_policy(3));
    // An editor's leftover copy: read, it would define the policy twice.
    fs::write(mount.path().join(".policy.yaml"), api_policy(9)).unwrap();
    fs::write(mount.path().join("..policy.yaml"), "spec: [unclosed").unwrap();

    let loaded = PolicySource::Path(mount.path().to_owned()).load().unwrap();

    let keys: Vec<String> = loaded.policies.iter().map(|p| p.key()).collect();
    assert_eq!(keys, ["default/api"]);
    assert_eq!(loaded.policies[0].spec.limits[0].requests, 3);
}

// Startup.

#[test]
fn startup_with_invalid_policies_fails_listing_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    let second = api_policy(3).replace("name: api", "name: Bad_Name");
    fs::write(&file, format!("{}---\n{second}", api_policy(0))).unwrap();

    let error = PolicySource::Path(file).load().unwrap_err().to_string();

    assert!(
        error.contains("document 1: spec.limits[0].requests"),
        "{error}"
    );
    assert!(error.contains("document 2: metadata.name"), "{error}");
}

#[test]
fn startup_lists_the_problems_of_every_invalid_file() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.yaml"), api_policy(0)).unwrap();
    let window = api_policy(3).replace("window: 1m", "window: 1d");
    fs::write(dir.path().join("b.yaml"), window).unwrap();

    let error = PolicySource::Path(dir.path().to_owned())
        .load()
        .unwrap_err()
        .to_string();

    assert!(error.contains("a.yaml"), "{error}");
    assert!(error.contains("spec.limits[0].requests"), "{error}");
    assert!(error.contains("b.yaml"), "{error}");
    assert!(error.contains("spec.limits[0].window"), "{error}");
}

#[test]
fn startup_from_an_empty_directory_fails_saying_so() {
    let dir = tempfile::tempdir().unwrap();

    let error = PolicySource::Path(dir.path().to_owned())
        .load()
        .unwrap_err()
        .to_string();

    assert!(error.ends_with("holds no policy"), "{error}");
}

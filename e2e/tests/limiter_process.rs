//! The built `sluice-limiter` binary, driven over real HTTP on loopback.

use std::{fs, time::Duration};

use serde_json::json;
use sluice_e2e::{LimiterProcess, Process, binary, eventually, free_port, repo_root};

#[tokio::test]
async fn limiter_binary_enforces_the_example_policy_over_http() {
    let limiter = LimiterProcess::start(&repo_root().join("examples/quickstart.yaml"), &[]).await;
    let search = json!({"user": "alice", "endpoint": "GET /search"});
    for remaining in (0..5).rev() {
        let reply = limiter.check(search.clone()).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body["remaining"], remaining);
        assert_eq!(reply.body["limit"]["name"], "search-per-user");
    }
    let denied = limiter.check(search).await;
    assert_eq!(denied.status, 429);
    let retry: u64 = denied.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // The previous window still weighs in the next: a sliding 10 s window
    // can ask for up to 20 s.
    assert!((1..=20).contains(&retry), "retry-after {retry}");
    assert!(
        denied.headers["ratelimit-policy"]
            .to_str()
            .unwrap()
            .contains("\"search-per-user\";q=5;w=10")
    );
    let other = limiter
        .check(json!({"user": "bob", "endpoint": "GET /search"}))
        .await;
    assert_eq!(other.status, 200, "bob has his own counter");
}

#[tokio::test]
async fn limiter_without_a_policy_flag_serves_the_embedded_example() {
    let port = free_port();
    let args = vec!["--listen".to_owned(), format!("127.0.0.1:{port}")];
    let _process = Process::start("sluice-limiter", &binary("sluice-limiter"), &args, &[]);
    let base = format!("http://127.0.0.1:{port}");
    sluice_e2e::wait_for_http(&format!("{base}/readyz"), Duration::from_secs(20)).await;
    let policies: serde_json::Value = reqwest::get(format!("{base}/v1/policies"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(policies["policies"][0]["policy"], "default/quickstart");
}

/// Starts the limiter on `policy`, expecting it to refuse; what it printed.
fn failed_start(policy: &std::path::Path) -> String {
    let args = vec![
        "--policy".to_owned(),
        policy.display().to_string(),
        "--listen".to_owned(),
        format!("127.0.0.1:{}", free_port()),
    ];
    let mut process = Process::start("sluice-limiter", &binary("sluice-limiter"), &args, &[]);
    let status = process.wait_exit(Duration::from_secs(20)).expect("exits");
    assert!(!status.success(), "started on {}", policy.display());
    process.output()
}

#[tokio::test]
async fn invalid_policy_file_stops_startup_listing_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    let text = "apiVersion: sluice.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {name: bad}\nspec:\n  limits:\n    - {name: a, requests: 0, window: 1s}\n    - {name: a, requests: 5, window: 2d}\n";
    fs::write(&file, text).unwrap();
    let output = failed_start(&file);
    for problem in [
        "spec.limits[0].requests",
        "spec.limits[1].name",
        "spec.limits[1].window",
    ] {
        assert!(
            output.contains(problem),
            "{problem} missing from:\n{output}"
        );
    }
}

#[tokio::test]
async fn a_missing_policy_file_stops_startup_naming_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("absent.yaml");
    let output = failed_start(&file);
    assert!(
        output.contains(&format!("failed to read {}", file.display())),
        "{output}"
    );
    assert_eq!(output.matches("No such file").count(), 1, "{output}");
}

#[tokio::test]
async fn sigterm_stops_the_limiter_cleanly() {
    let mut limiter =
        LimiterProcess::start(&repo_root().join("examples/quickstart.yaml"), &[]).await;
    limiter.process.signal("TERM");
    let status = limiter
        .process
        .wait_exit(Duration::from_secs(10))
        .expect("exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn limiter_reloads_a_configmap_style_mount_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let write_version = |name: &str, requests: u32| {
        let version = root.join(name);
        fs::create_dir(&version).unwrap();
        let text = format!(
            "apiVersion: sluice.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {{name: cm}}\nspec:\n  limits:\n    - {{name: l, requests: {requests}, window: 1m}}\n"
        );
        fs::write(version.join("policy.yaml"), text).unwrap();
    };
    write_version("..2026_01_01_00_00_00.000000001", 3);
    std::os::unix::fs::symlink("..2026_01_01_00_00_00.000000001", root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/policy.yaml", root.join("policy.yaml")).unwrap();
    let limiter = LimiterProcess::start(root, &["--reload-interval", "100ms"]).await;
    assert_eq!(limiter.check(json!({})).await.body["limit"]["effective"], 3);

    // The kubelet's update: a new version directory, then an atomic swap of `..data`.
    write_version("..2026_01_01_00_01_00.000000002", 7);
    std::os::unix::fs::symlink("..2026_01_01_00_01_00.000000002", root.join("..data_tmp")).unwrap();
    fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    fs::remove_dir_all(root.join("..2026_01_01_00_00_00.000000001")).unwrap();

    eventually(
        Duration::from_secs(10),
        "the new policy to be served",
        || async { limiter.check(json!({"cost": 0})).await.body["limit"]["effective"] == 7 },
    )
    .await;
}

//! How a real `sluice-limiter` proves who it is to a real Redis, and checks
//! who Redis is: the password comes from `SLUICE_REDIS_PASSWORD` or
//! `--redis-password-file` and never from the URL; a missing or wrong one
//! stops startup with a message that says which; `rediss://` verifies the
//! server's certificate against the CA of `--redis-ca-file`.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::json;
use sluice_e2e::{LimiterProcess, Process, RedisServer, binary, free_port, repo_root};

const PASSWORD: &str = "e2e-pass-5d1f0c";

fn policy() -> PathBuf {
    repo_root().join("examples/quickstart.yaml")
}

/// Arguments for `--store redis` at `url`, with a timeout generous enough
/// that a loaded machine does not turn slow answers into degraded ones.
fn redis_args(url: &str) -> Vec<String> {
    [
        "--store",
        "redis",
        "--redis-url",
        url,
        "--redis-timeout",
        "2s",
    ]
    .map(String::from)
    .to_vec()
}

fn server_with_password() -> RedisServer {
    RedisServer::start_with(&["--requirepass", PASSWORD])
}

/// Sluice keys the server holds, read with the password.
fn sluice_keys(server: &RedisServer) -> Vec<String> {
    let scan = [
        "--no-auth-warning",
        "-a",
        PASSWORD,
        "--scan",
        "--pattern",
        "sluice:*",
    ];
    let keys = server.cli(&scan);
    keys.lines()
        .filter(|k| !k.is_empty())
        .map(String::from)
        .collect()
}

/// Starts a limiter that is expected to refuse to start; returns what it
/// printed.
fn failed_start(args: &[String], env: &[(&str, &str)]) -> String {
    let mut all = vec![
        "--policy".to_owned(),
        policy().display().to_string(),
        "--listen".to_owned(),
        format!("127.0.0.1:{}", free_port()),
    ];
    all.extend_from_slice(args);
    let mut process = Process::start("sluice-limiter", &binary("sluice-limiter"), &all, env);
    let status = process.wait_exit(Duration::from_secs(20));
    let output = process.output();
    assert!(
        status.is_some_and(|s| !s.success()),
        "the limiter did not fail to start ({status:?}):\n{output}"
    );
    output
}

async fn start(args: &[String], env: &[(&str, &str)]) -> LimiterProcess {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    LimiterProcess::start_with_env(&policy(), &args, env).await
}

/// A check that Redis, not the fallback, decided: admitted, not degraded,
/// and its counters written in the server.
async fn assert_counted_in_redis(limiter: &LimiterProcess, keys: impl Fn() -> Vec<String>) {
    let reply = limiter.check(json!({"user": "alice"})).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["degraded"], false, "{reply:?}");
    let keys = keys();
    assert!(
        keys.iter().any(|k| k.contains("/per-user/")),
        "no per-user counter in Redis: {keys:?}"
    );
}

#[tokio::test]
async fn limiter_authenticates_with_the_password_from_the_environment() {
    let server = server_with_password();
    let env = [("SLUICE_REDIS_PASSWORD", PASSWORD)];
    let limiter = start(&redis_args(&server.url()), &env).await;

    assert_counted_in_redis(&limiter, || sluice_keys(&server)).await;
    assert!(
        !limiter.process.output().contains(PASSWORD),
        "the password appears in the limiter's output"
    );
}

#[tokio::test]
async fn limiter_authenticates_with_the_password_from_a_file() {
    let server = server_with_password();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("redis-password");
    // As a mounted Secret often has it: with a trailing newline.
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let mut args = redis_args(&server.url());
    args.extend(["--redis-password-file".into(), file.display().to_string()]);
    let limiter = start(&args, &[]).await;

    assert_counted_in_redis(&limiter, || sluice_keys(&server)).await;
}

#[tokio::test]
async fn a_wrong_password_stops_startup_saying_redis_refused_it() {
    let server = server_with_password();
    let wrong = "not-the-pass-88e2";
    let env = [("SLUICE_REDIS_PASSWORD", wrong)];
    let output = failed_start(&redis_args(&server.url()), &env);

    assert!(output.contains("Redis refused the password"), "{output}");
    assert!(
        !output.contains(wrong),
        "the wrong password is echoed:\n{output}"
    );
}

#[tokio::test]
async fn a_missing_password_stops_startup_saying_where_to_give_it() {
    let server = server_with_password();
    let output = failed_start(&redis_args(&server.url()), &[]);

    assert!(output.contains("Redis requires a password"), "{output}");
    assert!(output.contains("SLUICE_REDIS_PASSWORD"), "{output}");
    assert!(output.contains("--redis-password-file"), "{output}");
}

#[tokio::test]
async fn a_password_in_the_redis_url_is_refused_without_echoing_it() {
    let server = server_with_password();
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}", server.port);
    let by_flag = failed_start(&redis_args(&url), &[]);
    let store_only = ["--store", "redis"].map(String::from);
    let by_env = failed_start(&store_only, &[("SLUICE_REDIS_URL", &url)]);

    for output in [by_flag, by_env] {
        assert!(
            output.contains("--redis-url must not hold credentials"),
            "{output}"
        );
        assert!(
            !output.contains(PASSWORD),
            "the password is echoed:\n{output}"
        );
    }
}

/// `openssl` commands, run in one directory: a CA, a key and request for
/// the server, and its certificate signed by the CA with the names of
/// `server.ext`. Elliptic-curve keys, which are quick to make.
const CA: &str = concat!(
    "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes",
    " -keyout ca.key -out ca.crt -days 1 -subj /CN=sluice-e2e-ca"
);
const SERVER_KEY: &str = concat!(
    "req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes",
    " -keyout server.key -out server.csr -subj /CN=sluice-e2e-redis"
);
const SERVER_CERTIFICATE: &str = concat!(
    "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial",
    " -days 1 -extfile server.ext -out server.crt"
);

/// A private CA and a server certificate it signed, made with `openssl`.
struct Certificates {
    dir: tempfile::TempDir,
}

impl Certificates {
    /// A CA, and a certificate for `names` (`subjectAltName` entries such
    /// as `IP:127.0.0.1`) signed by it.
    fn for_names(names: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let extensions = format!("subjectAltName={names}\nextendedKeyUsage=serverAuth\n");
        std::fs::write(dir.path().join("server.ext"), extensions).unwrap();
        for command in [CA, SERVER_KEY, SERVER_CERTIFICATE] {
            openssl(dir.path(), command);
        }
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// A Redis serving TLS on its own port besides the plain one (which
    /// the harness and these tests use to look inside); returns the server
    /// and its `rediss://` URL.
    fn redis_server(&self) -> (RedisServer, String) {
        let port = free_port().to_string();
        let (cert, key, ca) = (
            self.path("server.crt"),
            self.path("server.key"),
            self.path("ca.crt"),
        );
        let server = RedisServer::start_with(&[
            "--tls-port",
            &port,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
        ]);
        (server, format!("rediss://127.0.0.1:{port}"))
    }
}

/// Runs `openssl` with the whitespace-separated `command` in `dir`.
fn openssl(dir: &Path, command: &str) {
    let output = Command::new("openssl")
        .args(command.split_whitespace())
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "openssl {command} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn keys_of(server: &RedisServer) -> Vec<String> {
    let keys = server.cli(&["--scan", "--pattern", "sluice:*"]);
    keys.lines()
        .filter(|k| !k.is_empty())
        .map(String::from)
        .collect()
}

#[tokio::test]
async fn limiter_counts_in_redis_over_tls_trusting_the_ca_file() {
    let certificates = Certificates::for_names("IP:127.0.0.1");
    let (server, url) = certificates.redis_server();
    let mut args = redis_args(&url);
    args.extend(["--redis-ca-file".into(), certificates.path("ca.crt")]);
    let limiter = start(&args, &[]).await;

    assert_counted_in_redis(&limiter, || keys_of(&server)).await;
}

#[tokio::test]
async fn a_tls_server_signed_by_an_unknown_ca_stops_startup() {
    let certificates = Certificates::for_names("IP:127.0.0.1");
    let (_server, url) = certificates.redis_server();
    let output = failed_start(&redis_args(&url), &[]);

    assert!(
        output.contains("invalid peer certificate: UnknownIssuer"),
        "{output}"
    );
}

#[tokio::test]
async fn a_certificate_for_another_host_stops_startup_even_from_the_trusted_ca() {
    let certificates = Certificates::for_names("DNS:redis.elsewhere.test");
    let (_server, url) = certificates.redis_server();
    let mut args = redis_args(&url);
    args.extend(["--redis-ca-file".into(), certificates.path("ca.crt")]);
    let output = failed_start(&args, &[]);

    assert!(
        output.contains("certificate not valid for name"),
        "{output}"
    );
}

#[tokio::test]
async fn a_tls_url_asking_to_skip_verification_is_refused() {
    let url = format!("rediss://127.0.0.1:{}#insecure", free_port());
    let output = failed_start(&redis_args(&url), &[]);

    assert!(output.contains("insecure"), "{output}");
}

#[tokio::test]
async fn a_standalone_redis_named_as_a_cluster_stops_startup() {
    let server = RedisServer::start();
    let mut args = redis_args(&server.url());
    args.push("--redis-cluster".into());
    let output = failed_start(&args, &[]);

    assert!(output.contains("this Redis is not a cluster"), "{output}");
}

#[tokio::test]
async fn a_url_of_a_server_that_is_not_redis_stops_startup() {
    // A server that answers every connection like an HTTP server would.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten().take(16) {
            let mut stream = stream;
            let _ = std::io::Write::write_all(
                &mut stream,
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
            );
        }
    });
    let output = failed_start(&redis_args(&format!("redis://127.0.0.1:{port}")), &[]);

    assert!(output.contains("does not answer like Redis"), "{output}");
}

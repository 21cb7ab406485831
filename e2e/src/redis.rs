//! Real `redis-server` processes: one standalone server, or a cluster.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use crate::Process;

/// A `redis-server` on a loopback port, without persistence.
pub struct RedisServer {
    /// Its port.
    pub port: u16,
    process: Process,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a standalone server and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra `redis-server` arguments.
    pub fn start_with(extra: &[&str]) -> Self {
        let port = free_port_pair();
        let dir = tempfile::tempdir().expect("redis dir");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let process = spawn(port, dir.path(), &extra);
        let server = Self {
            port,
            process,
            dir,
            extra,
        };
        server.wait_ready();
        server
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli` against this server and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args)
    }

    /// The server process, for signals.
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// Kills the server (SIGKILL) and starts a fresh one on the same port;
    /// nothing it held survives.
    pub fn restart(&mut self) {
        self.process.kill();
        self.process = spawn(self.port, self.dir.path(), &self.extra);
        self.wait_ready();
    }

    /// Kills the server for good.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Waits until the server answers; one started with `--requirepass`
    /// answers that it needs the password, which shows it is up as well.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let answers = |reply: String| reply == "PONG" || reply.starts_with("NOAUTH");
        while !answers(self.cli(&["PING"]).trim().to_owned()) {
            assert!(
                Instant::now() < deadline,
                "redis-server on {} not ready:\n{}",
                self.port,
                self.process.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every sluice key and its remaining time to live in ms (-1: none).
    pub fn sluice_key_ttls(&self) -> Vec<(String, i64)> {
        let keys = self.cli(&["--scan", "--pattern", "sluice:*"]);
        keys.lines()
            .filter(|k| !k.is_empty())
            .map(|k| {
                (
                    k.to_owned(),
                    self.cli(&["PTTL", k]).trim().parse().unwrap_or(-3),
                )
            })
            .collect()
    }
}

fn spawn(port: u16, dir: &Path, extra: &[String]) -> Process {
    let mut args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(["--dir".to_owned(), dir.display().to_string()]);
    args.extend(extra.iter().cloned());
    Process::start(
        &format!("redis-server:{port}"),
        &PathBuf::from("redis-server"),
        &args,
        &[],
    )
}

/// Runs `redis-cli -p <port> <args>`.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A port `p` such that both `p` and `p + 10000` (the cluster bus) are free.
fn free_port_pair() -> u16 {
    let free = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
    let seed = std::process::id() as u64 * 7919 + Instant::now().elapsed().as_nanos() as u64;
    let mut candidate = 20_000 + (seed % 20_000) as u16;
    for _ in 0..20_000 {
        candidate = 20_000 + (candidate - 20_000 + 7) % 20_000;
        if free(candidate) && free(candidate + 10_000) {
            return candidate;
        }
    }
    panic!("no free port pair between 20000 and 40000");
}

/// A Redis Cluster of `masters` masters, each with `replicas` replicas.
pub struct RedisCluster {
    /// Every node, masters first as `redis-cli --cluster create` assigned them.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts the nodes, creates the cluster, and waits until every node
    /// reports `cluster_state:ok`.
    pub fn start(masters: usize, replicas: usize) -> Self {
        let flags = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "1000",
            // Replicas sync at once instead of after the default 5 s wait
            // for more replicas to join the transfer.
            "--repl-diskless-sync-delay",
            "0",
        ];
        let nodes: Vec<RedisServer> = (0..masters * (1 + replicas))
            .map(|_| RedisServer::start_with(&flags))
            .collect();
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        args.extend([
            "--cluster-replicas".into(),
            replicas.to_string(),
            "--cluster-yes".into(),
        ]);
        let output = Command::new("redis-cli")
            .args(&args)
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            output.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let cluster = Self { nodes };
        cluster.wait_ok(Duration::from_secs(20));
        cluster.wait_replicas_synced(Duration::from_secs(20));
        cluster
    }

    /// Waits until every replica has its master's data: until then, a
    /// replica cannot take over from a failed master.
    fn wait_replicas_synced(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let synced = |n: &RedisServer| {
            let info = n.cli(&["INFO", "replication"]);
            !info.contains("role:slave") || info.contains("master_link_status:up")
        };
        while !self.nodes.iter().all(synced) {
            assert!(
                Instant::now() < deadline,
                "replicas not in sync after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Seed URLs of every node, comma separated.
    pub fn url(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(RedisServer::url).collect();
        urls.join(",")
    }

    /// Waits until every live node reports `cluster_state:ok` and agrees on
    /// all slots being served.
    pub fn wait_ok(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let ok = self
                .live_nodes()
                .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"));
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cluster not ok after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The node serving `key`'s slot as master now.
    pub fn master_of(&self, key: &str) -> &RedisServer {
        self.try_master_of(key).expect("slot served")
    }

    /// The node serving `key`'s slot as master now, as a live node sees
    /// it; `None` while no healthy master serves it (during a failover).
    pub fn try_master_of(&self, key: &str) -> Option<&RedisServer> {
        let live = self.live_nodes().next().expect("a live node");
        let slot: u16 = live
            .cli(&["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("a slot");
        let port = master_port_of_slot(&live.cli(&["CLUSTER", "NODES"]), slot)?;
        self.nodes.iter().find(|n| n.port == port)
    }

    /// The nodes that answer now.
    fn live_nodes(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes
            .iter()
            .filter(|n| n.cli(&["PING"]).trim() == "PONG")
    }
}

/// Reads `CLUSTER NODES`: each line is `<id> <ip:port@bus> <flags> <master>
/// <ping> <pong> <epoch> <link> <slots...>`; finds the healthy master whose
/// slot ranges hold `slot`.
fn master_port_of_slot(nodes: &str, slot: u16) -> Option<u16> {
    nodes.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let flags = fields.get(2)?;
        if !flags.contains("master") || flags.contains("fail") {
            return None;
        }
        let serves = fields.iter().skip(8).any(|range| {
            let (lo, hi) = range.split_once('-').unwrap_or((range, range));
            matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if (lo..=hi).contains(&slot))
        });
        let address = fields.get(1)?.split('@').next()?;
        serves.then(|| address.rsplit(':').next()?.parse().ok()).flatten()
    })
}

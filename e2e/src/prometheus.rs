//! A real `prometheus` server scraping targets on loopback every second.

use std::{path::PathBuf, time::Duration};

use crate::{Process, free_port, wait_for_http};

/// A running Prometheus.
pub struct Prometheus {
    /// Its port.
    pub port: u16,
    process: Process,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port`) every second, with
    /// the targets' own labels kept, and waits until it is ready.
    pub async fn start(targets: &[String]) -> Self {
        let dir = tempfile::tempdir().expect("prometheus dir");
        let quoted: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: api\n    honor_labels: true\n    static_configs:\n      - targets: [{}]\n",
            quoted.join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let port = free_port();
        let args = vec![
            format!("--config.file={}", config_path.display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
        ];
        let process = Process::start("prometheus", &PathBuf::from("prometheus"), &args, &[]);
        wait_for_http(
            &format!("http://127.0.0.1:{port}/-/ready"),
            Duration::from_secs(30),
        )
        .await;
        Self {
            port,
            process,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The process, for signals.
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }
}

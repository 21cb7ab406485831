//! Child processes that are stopped when the test is done with them.

use std::{
    net::TcpListener,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

/// A free TCP port on 127.0.0.1, as the kernel hands it out. The port is
/// released before it is returned; a server started on it right away gets
/// it except in rare races, which the starters retry.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// A running child process, killed when dropped. Its stderr and stdout go
/// to a log file, printed when a test using it fails.
pub struct Process {
    name: String,
    child: Option<Child>,
    log: tempfile::NamedTempFile,
}

impl Process {
    /// Starts `program` with `args`.
    pub fn start(name: &str, program: &Path, args: &[String], env: &[(&str, &str)]) -> Self {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let out = log.reopen().expect("log file for stdout");
        let err = log.reopen().expect("log file for stderr");
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({}): {e}", program.display()));
        watch_for_orphan(child.id());
        Self {
            name: name.to_owned(),
            child: Some(child),
            log,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    /// Sends `signal` (such as `TERM`, `STOP`, `CONT`, `KILL`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "kill -{signal} {}",
            self.name
        );
    }

    /// Whether the process has exited, and how.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.try_status() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Everything the process printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Kills the process now and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Kills `child` once this test process is gone, however it ends: servers
/// kept in statics are never dropped, and a test binary can abort.
fn watch_for_orphan(child: u32) {
    let script = "while kill -0 $0 2>/dev/null && kill -0 $1 2>/dev/null; do sleep 1; done; kill -9 $1 2>/dev/null";
    let _ = Command::new("sh")
        .args([
            "-c",
            script,
            &std::process::id().to_string(),
            &child.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- output of {} ----\n{}", self.name, self.output());
        }
    }
}

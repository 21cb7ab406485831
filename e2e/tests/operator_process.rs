//! The built `sluice-operator` binary started without a usable cluster.

use std::{io::Write, net::TcpListener, time::Duration};

use sluice_e2e::{Process, binary, free_port};

/// A kubeconfig naming `server`, written to a temporary file.
fn kubeconfig(server: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"{server}\"}}}}]\n\
         users: [{{name: u, user: {{token: t}}}}]\ncontexts: [{{name: x, context: {{cluster: c, user: u}}}}]\ncurrent-context: x\n"
    );
    file.write_all(text.as_bytes()).unwrap();
    file
}

#[test]
fn run_against_a_silent_api_server_fails_clearly_instead_of_hanging() {
    // Accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = format!("http://{}", silent.local_addr().unwrap());
    let config = kubeconfig(&server);
    let args = ["run", "--api-timeout", "2s", "--listen"]
        .map(String::from)
        .to_vec();
    let mut args = args;
    args.push(format!("127.0.0.1:{}", free_port()));
    let path = config.path().display().to_string();
    let mut operator = Process::start(
        "sluice-operator",
        &binary("sluice-operator"),
        &args,
        &[("KUBECONFIG", &path)],
    );
    let status = operator
        .wait_exit(Duration::from_secs(20))
        .expect("exits instead of hanging");
    assert!(!status.success());
    let output = operator.output();
    assert!(
        output.contains("failed to reach the Kubernetes API server"),
        "{output}"
    );
    assert!(output.contains("no answer within 2s"), "{output}");
}

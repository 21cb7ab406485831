//! Finding the sluice binaries the tests run, building them if needed.

use std::{path::PathBuf, process::Command, sync::OnceLock};

/// The path of the workspace binary `name`, built in the same profile as
/// the running test (once per test process).
///
/// `SLUICE_BIN_DIR` overrides where binaries are looked up, for running the
/// suite against binaries built elsewhere.
pub fn binary(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("SLUICE_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(build_binaries);
    profile_dir().join(name)
}

/// `target/<profile>`: the test executable lives in its `deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps directory");
    deps.parent().expect("profile directory").to_owned()
}

fn build_binaries() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(["build", "--quiet", "--bins", "--workspace"]);
    if profile_dir().ends_with("release") {
        command.arg("--release");
    }
    let status = command
        .current_dir(crate::repo_root())
        .status()
        .expect("run cargo build");
    assert!(
        status.success(),
        "cargo build of the sluice binaries failed"
    );
}

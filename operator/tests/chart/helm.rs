//! Running the real `helm` on the chart, and reading what it renders.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::Command,
};

use serde::Deserialize;
use serde_json::Value;

/// The release every test installs, as `docs/install.md` does.
pub const RELEASE: &str = "sluice";
/// Its namespace.
pub const NAMESPACE: &str = "sluice-system";

/// The workspace root.
pub fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the operator crate lives in the workspace")
        .to_path_buf()
}

/// `charts/sluice`.
pub fn chart() -> PathBuf {
    repository().join("charts/sluice")
}

/// The helm binary: the one `scripts/setup.sh` installs, else the first on
/// `PATH`. Without either the test fails: a chart nobody rendered is not a
/// chart that passed.
pub fn helm_binary() -> PathBuf {
    let installed = repository().join("target/tools/helm/helm");
    let path = std::env::var_os("PATH");
    locate_helm(&installed, path.as_deref()).unwrap_or_else(|message| panic!("{message}"))
}

/// `installed` when it exists, else a `helm` in the folders of `path`;
/// else a message that says how to install it.
pub fn locate_helm(installed: &Path, path: Option<&OsStr>) -> Result<PathBuf, String> {
    if installed.is_file() {
        return Ok(installed.to_path_buf());
    }
    let on_path = path
        .into_iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("helm"))
        .find(|candidate| candidate.is_file());
    on_path.ok_or_else(|| {
        format!(
            "helm is neither at {} nor on PATH: run scripts/setup.sh, which installs it there",
            installed.display()
        )
    })
}

/// What one helm command did.
#[derive(Debug)]
pub struct Outcome {
    /// Whether it exited with success.
    pub ok: bool,
    /// What it printed on standard output.
    pub stdout: String,
    /// What it printed on standard error.
    pub stderr: String,
}

/// Runs `helm args...` offline: its cache, configuration and data in a
/// fresh temporary folder, so that nothing of the user's setup leaks in.
pub fn helm(args: &[&str]) -> Outcome {
    let home = tempfile::tempdir().unwrap();
    let output = Command::new(helm_binary())
        .args(args)
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .env_remove("KUBECONFIG")
        .output()
        .unwrap_or_else(|e| panic!("cannot run helm ({e}); run scripts/setup.sh"));
    Outcome {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `helm template` of `chart` as [`RELEASE`] in [`NAMESPACE`], with more
/// arguments (`--set`, `-f`, `--include-crds`).
pub fn template_chart(chart: &Path, extra: &[&str]) -> Outcome {
    let chart = chart.to_str().expect("a UTF-8 path");
    let mut args = vec!["template", RELEASE, chart, "--namespace", NAMESPACE];
    args.extend_from_slice(extra);
    helm(&args)
}

/// `helm template` of `charts/sluice`.
pub fn template(extra: &[&str]) -> Outcome {
    template_chart(&chart(), extra)
}

/// The objects `helm template` renders with `extra`; panics with helm's
/// message when it fails.
pub fn render(extra: &[&str]) -> Vec<Value> {
    let outcome = template(extra);
    assert!(outcome.ok, "helm template failed:\n{}", outcome.stderr);
    documents(&outcome.stdout)
}

/// The YAML documents of `text`, empty ones left out.
pub fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|document| Value::deserialize(document).expect("helm printed YAML"))
        .filter(|document| !document.is_null())
        .collect()
}

/// The one object of `kind` among `objects`, typed.
pub fn only<T: serde::de::DeserializeOwned>(objects: &[Value], kind: &str) -> T {
    let found: Vec<_> = of_kind(objects, kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind}: {found:?}");
    serde_json::from_value(found[0].clone()).unwrap_or_else(|e| panic!("a {kind}: {e}"))
}

/// The objects of `kind` among `objects`.
pub fn of_kind<'a>(objects: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> {
    objects.iter().filter(move |o| o["kind"] == kind)
}

/// Runs `kubernetes-validate --strict` for Kubernetes 1.33 on `files`:
/// whether all passed, and what it said.
pub fn validate(files: &[PathBuf]) -> (bool, String) {
    let output = Command::new("kubernetes-validate")
        .arg("--strict")
        .args(["-k", "1.33.0"])
        .args(files)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run kubernetes-validate ({e}); run scripts/setup.sh to install it")
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    (output.status.success(), format!("{stdout}{stderr}"))
}

/// Copies `from` into `to` recursively, following symbolic links, so that
/// a test can change a copy of the chart.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        match path.is_dir() {
            true => copy_tree(&path, &target),
            false => {
                std::fs::copy(&path, &target).unwrap();
            }
        }
    }
}

//! Where policies come from: a file, a directory, or the embedded example,
//! and how changes on disk are picked up.
//!
//! Changes are found by polling: every interval the files are read and
//! hashed. This sees every way a file can change, including the way the
//! kubelet updates a mounted ConfigMap (it writes a new hidden directory and
//! atomically swaps the `..data` symlink the visible files point through),
//! which file-event APIs report unreliably. Policy files are small; reading
//! them once a second costs nothing measurable.

use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use sluice_crds::{DocumentErrors, RateLimitPolicy, parse_policies};

use crate::{
    Limiter,
    metrics::{Metrics, ReloadLabels},
    store::Store,
};

/// The example policy served when no `--policy` is given.
pub const EMBEDDED_EXAMPLE: &str = include_str!("../../examples/quickstart.yaml");

/// Why policies could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file or directory could not be read.
    // The cause is part of the message and not a `source`, so that a
    // report of the whole chain does not print it twice.
    #[error("failed to read {path}: {error}")]
    Read {
        /// What was being read.
        path: PathBuf,
        /// The I/O error.
        error: io::Error,
    },
    /// Files hold invalid policies: the problems of each such file.
    #[error("{}", list(.0))]
    Invalid(Vec<DocumentErrors>),
    /// Two documents define the same policy.
    #[error("policy {key} is defined twice, in {first} and {second}")]
    Duplicate {
        /// `<namespace>/<name>`.
        key: String,
        /// Where it was first defined.
        first: String,
        /// Where it was defined again.
        second: String,
    },
    /// No policy was found.
    #[error("{0} holds no policy")]
    Empty(String),
}

/// A place policies are read from.
#[derive(Clone, Debug)]
pub enum PolicySource {
    /// A file of YAML documents, or a directory of such files.
    Path(PathBuf),
    /// The example compiled into the binary.
    Embedded,
}

/// Policies read at one moment, with a fingerprint of the text they came
/// from.
#[derive(Debug)]
pub struct Loaded {
    /// The policies, valid.
    pub policies: Vec<RateLimitPolicy>,
    /// Changes whenever any file's name or content changes.
    pub fingerprint: blake3::Hash,
}

/// What one poll of a source found.
#[derive(Debug)]
pub enum Poll {
    /// The text is the same as last time.
    Unchanged,
    /// The text changed; here is what it holds, or why it is unusable.
    Changed(blake3::Hash, Result<Vec<RateLimitPolicy>, LoadError>),
    /// The source could not be read.
    Unreadable(LoadError),
}

impl PolicySource {
    /// Reads the raw texts with their names, in name order.
    fn read(&self) -> Result<Vec<(String, String)>, LoadError> {
        match self {
            Self::Embedded => Ok(vec![("embedded example".into(), EMBEDDED_EXAMPLE.into())]),
            Self::Path(path) => read_path(path),
        }
    }

    /// Reads and validates every policy. Fails, with every problem, if any
    /// file is invalid, a policy is defined twice, or none is found.
    pub fn load(&self) -> Result<Loaded, LoadError> {
        let texts = self.read()?;
        let policies = self.parse(&texts)?;
        Ok(Loaded {
            policies,
            fingerprint: fingerprint(&texts),
        })
    }

    /// Reads the source and parses it only if its text differs from `seen`.
    pub fn poll(&self, seen: &blake3::Hash) -> Poll {
        match self.read() {
            Err(e) => Poll::Unreadable(e),
            Ok(texts) => match fingerprint(&texts) {
                f if f == *seen => Poll::Unchanged,
                f => Poll::Changed(f, self.parse(&texts)),
            },
        }
    }

    fn parse(&self, texts: &[(String, String)]) -> Result<Vec<RateLimitPolicy>, LoadError> {
        let mut policies: Vec<(RateLimitPolicy, &str)> = Vec::new();
        let mut invalid = Vec::new();
        for (name, text) in texts {
            // Every file is read even after a bad one, so that one attempt
            // shows every problem instead of one file per restart.
            match parse_policies(text, name) {
                Ok(parsed) => policies.extend(parsed.into_iter().map(|p| (p, name.as_str()))),
                Err(errors) => invalid.push(errors),
            }
        }
        if !invalid.is_empty() {
            return Err(LoadError::Invalid(invalid));
        }
        check_unique(&policies)?;
        if policies.is_empty() {
            return Err(LoadError::Empty(self.describe()));
        }
        Ok(policies.into_iter().map(|(p, _)| p).collect())
    }

    /// The source as a person would name it.
    pub fn describe(&self) -> String {
        match self {
            Self::Embedded => "the embedded example".into(),
            Self::Path(path) => path.display().to_string(),
        }
    }
}

fn check_unique(policies: &[(RateLimitPolicy, &str)]) -> Result<(), LoadError> {
    for (i, (policy, second)) in policies.iter().enumerate() {
        let key = policy.key();
        if let Some((_, first)) = policies[..i].iter().find(|(p, _)| p.key() == key) {
            let (first, second) = (first.to_string(), second.to_string());
            return Err(LoadError::Duplicate { key, first, second });
        }
    }
    Ok(())
}

fn list(invalid: &[DocumentErrors]) -> String {
    let shown: Vec<String> = invalid.iter().map(ToString::to_string).collect();
    shown.join("\n")
}

/// A directory is read one level deep: every visible `.yaml`, `.yml` or
/// `.json` file. Hidden entries (the kubelet's `..data` and timestamped
/// directories) are skipped; the visible files are symlinks into them.
fn read_path(path: &Path) -> Result<Vec<(String, String)>, LoadError> {
    let meta = fs::metadata(path).map_err(read_error(path))?;
    if !meta.is_dir() {
        let text = fs::read_to_string(path).map_err(read_error(path))?;
        return Ok(vec![(path.display().to_string(), text)]);
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(path).map_err(read_error(path))? {
        let entry = entry.map_err(read_error(path))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let wanted = [".yaml", ".yml", ".json"]
            .iter()
            .any(|ext| name.ends_with(ext));
        if name.starts_with('.') || !wanted {
            continue;
        }
        let file = entry.path();
        let text = fs::read_to_string(&file).map_err(read_error(&file))?;
        files.push((file.display().to_string(), text));
    }
    files.sort();
    Ok(files)
}

fn read_error(path: &Path) -> impl FnOnce(io::Error) -> LoadError + '_ {
    move |error| LoadError::Read {
        path: path.to_owned(),
        error,
    }
}

fn fingerprint(texts: &[(String, String)]) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    for (name, text) in texts {
        for part in [name, text] {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
    }
    hasher.finalize()
}

/// Polls `source` every `interval` and swaps in its policies when its text
/// changes. An invalid change is logged once and counted; the policies
/// already served keep serving.
pub async fn watch<S: Store>(
    source: PolicySource,
    mut seen: blake3::Hash,
    limiter: Arc<Limiter<S>>,
    metrics: Arc<Metrics>,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unreadable = false;
    loop {
        tick.tick().await;
        let (polled, fingerprint) = (source.clone(), seen);
        let Ok(poll) = tokio::task::spawn_blocking(move || polled.poll(&fingerprint)).await else {
            continue;
        };
        let count = |result| {
            metrics
                .reloads
                .get_or_create(&ReloadLabels { result })
                .inc()
        };
        match poll {
            Poll::Unchanged => {}
            Poll::Unreadable(error) => {
                if !unreadable {
                    count("unreadable");
                    tracing::warn!(%error, "Cannot read policies; the last good policies keep serving");
                }
                unreadable = true;
                continue;
            }
            Poll::Changed(fingerprint, Ok(policies)) => {
                let keys: Vec<String> = policies.iter().map(RateLimitPolicy::key).collect();
                limiter.replace_policies(policies);
                metrics.policies.set(keys.len() as i64);
                count("ok");
                tracing::info!(policies = ?keys, "Reloaded policies");
                seen = fingerprint;
            }
            Poll::Changed(fingerprint, Err(error)) => {
                count("error");
                tracing::error!(%error, "Ignored an invalid policy change; the last good policies keep serving");
                seen = fingerprint;
            }
        }
        unreadable = false;
    }
}

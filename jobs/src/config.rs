//! `cluster.toml`: the one file a cluster is launched from (CONTRACT.md, "cluster.toml").
//!
//! Relative paths are resolved against the file's own directory, and unknown keys are errors
//! that name the key, so a typo is never silently ignored.

use std::collections::HashSet;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The default `slots` of a worker.
pub const DEFAULT_SLOTS: u32 = 1;

/// A problem with a cluster file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape (the message names the key).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the line and the key.
        message: String,
    },
    /// The file parses but describes an impossible cluster.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    cluster: RawCluster,
    #[serde(default)]
    master: Vec<MasterEntry>,
    #[serde(default)]
    worker: Vec<RawWorker>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    data_dir: PathBuf,
    secret: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorker {
    name: String,
    rpc: String,
    #[serde(default)]
    slots: Option<u32>,
    #[serde(default)]
    bin: Option<PathBuf>,
}

/// One `[[master]]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterEntry {
    /// Raft node id, unique, at least 1.
    pub id: u64,
    /// Where its tarpc service (Raft and worker traffic) listens.
    pub rpc: String,
    /// Where its web UI and JSON API listen.
    pub http: String,
}

/// One `[[worker]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerEntry {
    /// Unique name; the worker's id is allocated for it once and kept.
    pub name: String,
    /// Where its tarpc service listens (port 0: any free port, reported when it registers).
    pub rpc: String,
    /// How many tasks it runs at once.
    pub slots: u32,
    /// The worker binary to start (absolute), if not the default `worker`.
    pub bin: Option<PathBuf>,
}

/// A parsed and validated `cluster.toml`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The file it was read from (absolute).
    pub path: PathBuf,
    /// Each node keeps its state under `data_dir/<node>` (absolute).
    pub data_dir: PathBuf,
    /// Authenticates node-to-node RPC and mutating HTTP calls.
    pub secret: String,
    /// The masters, in file order.
    pub masters: Vec<MasterEntry>,
    /// The workers, in file order.
    pub workers: Vec<WorkerEntry>,
}

impl ClusterConfig {
    /// Reads and validates a cluster file.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file and the problem.
    pub fn load(path: &Path) -> Result<ClusterConfig, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let path = std::path::absolute(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        ClusterConfig::parse(&text, &path)
    }

    /// Parses and validates the text of a cluster file that lives at `path` (used to resolve
    /// relative paths).
    ///
    /// # Errors
    /// [`ConfigError::Parse`] or [`ConfigError::Invalid`].
    pub fn parse(text: &str, path: &Path) -> Result<ClusterConfig, ConfigError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let invalid = |reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let base = path.parent().unwrap_or(Path::new("."));
        if raw.cluster.secret.is_empty() {
            return Err(invalid("`cluster.secret` must not be empty".into()));
        }
        if raw.master.is_empty() {
            return Err(invalid("at least one [[master]] is needed".into()));
        }
        // 1, 3 or 5 masters tolerate 0, 1 or 2 failures; an even number is allowed because a
        // file lists 2 or 4 while a master is being added or removed at runtime.
        let mut ids = HashSet::new();
        for m in &raw.master {
            if m.id == 0 {
                return Err(invalid("master ids start at 1".into()));
            }
            if !ids.insert(m.id) {
                return Err(invalid(format!("master id {} appears twice", m.id)));
            }
            check_addr(&m.rpc).map_err(|e| invalid(format!("master {}: `rpc`: {e}", m.id)))?;
            check_addr(&m.http).map_err(|e| invalid(format!("master {}: `http`: {e}", m.id)))?;
        }
        let mut names = HashSet::new();
        let mut workers = Vec::with_capacity(raw.worker.len());
        for w in raw.worker {
            if w.name.is_empty() || w.name.contains(['/', '\\']) || w.name.starts_with('.') {
                return Err(invalid(format!(
                    "worker name `{}` must be non-empty and usable as a directory name",
                    w.name
                )));
            }
            if !names.insert(w.name.clone()) {
                return Err(invalid(format!("worker name `{}` appears twice", w.name)));
            }
            check_addr(&w.rpc).map_err(|e| invalid(format!("worker {}: `rpc`: {e}", w.name)))?;
            let slots = w.slots.unwrap_or(DEFAULT_SLOTS);
            if slots == 0 || slots > 1024 {
                return Err(invalid(format!(
                    "worker {}: `slots` must be between 1 and 1024",
                    w.name
                )));
            }
            workers.push(WorkerEntry {
                name: w.name,
                rpc: w.rpc,
                slots,
                bin: w.bin.map(|b| base.join(b)),
            });
        }
        Ok(ClusterConfig {
            path: path.to_path_buf(),
            data_dir: base.join(raw.cluster.data_dir),
            secret: raw.cluster.secret,
            masters: raw.master,
            workers,
        })
    }

    /// The master with this id.
    pub fn master(&self, id: u64) -> Option<&MasterEntry> {
        self.masters.iter().find(|m| m.id == id)
    }

    /// The worker with this name.
    pub fn worker(&self, name: &str) -> Option<&WorkerEntry> {
        self.workers.iter().find(|w| w.name == name)
    }
}

fn check_addr(addr: &str) -> Result<(), String> {
    addr.parse::<SocketAddr>()
        .map(|_| ())
        .map_err(|_| format!("`{addr}` is not an ip:port address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[cluster]
data_dir = "data"
secret = "dev-secret"

[[master]]
id = 1
rpc = "127.0.0.1:7001"
http = "127.0.0.1:8080"

[[worker]]
name = "w1"
rpc = "127.0.0.1:0"
slots = 2
bin = "target/release/my-worker"

[[worker]]
name = "w2"
rpc = "127.0.0.1:7102"
"#;

    #[test]
    fn parses_and_resolves_relative_paths() {
        let config = ClusterConfig::parse(GOOD, Path::new("/srv/cluster/cluster.toml")).unwrap();
        assert_eq!(config.data_dir, Path::new("/srv/cluster/data"));
        assert_eq!(
            config.workers[0].bin.as_deref(),
            Some(Path::new("/srv/cluster/target/release/my-worker"))
        );
        assert_eq!(config.workers[1].slots, DEFAULT_SLOTS);
        assert_eq!(config.master(1).unwrap().http, "127.0.0.1:8080");
    }

    #[test]
    fn unknown_keys_are_named() {
        let text = GOOD.replace("slots = 2", "slot = 2");
        let err = ClusterConfig::parse(&text, Path::new("/c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("slot"), "{err}");
        let text = GOOD.replace("secret = ", "secrets = ");
        let err = ClusterConfig::parse(&text, Path::new("/c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("secrets"), "{err}");
    }

    #[test]
    fn impossible_clusters_are_refused() {
        for (from, to, needle) in [
            ("id = 1", "id = 0", "start at 1"),
            ("name = \"w2\"", "name = \"w1\"", "twice"),
            ("rpc = \"127.0.0.1:7102\"", "rpc = \"nowhere\"", "ip:port"),
            ("slots = 2", "slots = 0", "slots"),
            ("secret = \"dev-secret\"", "secret = \"\"", "secret"),
        ] {
            let err = ClusterConfig::parse(&GOOD.replace(from, to), Path::new("/c.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{from} -> {to}: {err}");
        }
    }

    #[test]
    fn the_shipped_cluster_toml_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cluster.toml");
        let config = ClusterConfig::load(&path).unwrap();
        assert_eq!(config.masters.len(), 3);
        assert_eq!(config.workers.len(), 2);
        assert!(
            config.workers.iter().any(|w| w.bin.is_some()),
            "a worker runs the example binary"
        );
    }
}

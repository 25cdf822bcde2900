//! `WorkerConfig`: what one worker needs, taken from the cluster file and its `--name`.

use std::net::SocketAddr;
use std::path::PathBuf;

use jobs::config::{ClusterConfig, ConfigError};

/// Memory a map task may buffer before it spills a sorted run to disk.
pub const DEFAULT_MAP_BUFFER: usize = 128 << 20;

/// One worker's configuration.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Its unique name.
    pub name: String,
    /// Where its tarpc service listens (port 0: any; the bound address is registered).
    pub rpc_addr: SocketAddr,
    /// Tasks it runs at once.
    pub slots: u32,
    /// Its own state directory (`data_dir/worker-<name>`): map outputs, fetched segments.
    pub data_dir: PathBuf,
    /// The cluster secret.
    pub secret: String,
    /// The masters' RPC addresses.
    pub masters: Vec<String>,
    /// Map-side buffer per task before spilling.
    pub map_buffer: usize,
}

impl WorkerConfig {
    /// The configuration of worker `name` of `cluster`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] if there is no such worker.
    pub fn from_cluster(cluster: &ClusterConfig, name: &str) -> Result<WorkerConfig, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            path: cluster.path.clone(),
            reason,
        };
        let entry = cluster
            .worker(name)
            .ok_or_else(|| invalid(format!("no [[worker]] named `{name}`")))?;
        let rpc_addr = entry
            .rpc
            .parse()
            .map_err(|_| invalid(format!("bad address `{}`", entry.rpc)))?;
        Ok(WorkerConfig {
            name: name.to_string(),
            rpc_addr,
            slots: entry.slots,
            data_dir: cluster.data_dir.join(format!("worker-{name}")),
            secret: cluster.secret.clone(),
            masters: cluster.masters.iter().map(|m| m.rpc.clone()).collect(),
            map_buffer: DEFAULT_MAP_BUFFER,
        })
    }
}

//! `MasterConfig`: what one master needs, taken from the cluster file and its `--id`.

use std::net::SocketAddr;
use std::path::PathBuf;

use jobs::config::{ClusterConfig, ConfigError};

/// One master's configuration.
#[derive(Clone, Debug)]
pub struct MasterConfig {
    /// Its Raft node id.
    pub id: u64,
    /// Where its tarpc service listens (port 0: any).
    pub rpc_addr: SocketAddr,
    /// Where its HTTP API and UI listen (port 0: any).
    pub http_addr: SocketAddr,
    /// Its own state directory (`data_dir/master-<id>`).
    pub data_dir: PathBuf,
    /// The cluster secret.
    pub secret: String,
    /// Relative paths in submitted specs are resolved against this.
    pub base_dir: PathBuf,
    /// The whole cluster file (for the cluster view and peers).
    pub cluster: ClusterConfig,
}

impl MasterConfig {
    /// The configuration of master `id` of `cluster`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] if `id` is not in the file.
    pub fn from_cluster(cluster: ClusterConfig, id: u64) -> Result<MasterConfig, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            path: cluster.path.clone(),
            reason,
        };
        let entry = cluster
            .master(id)
            .ok_or_else(|| invalid(format!("no [[master]] with id = {id}")))?;
        // Both were checked to be ip:port when the file was parsed.
        let parse = |addr: &str| {
            addr.parse::<SocketAddr>()
                .map_err(|_| invalid(format!("bad address `{addr}`")))
        };
        let base_dir = std::env::current_dir().map_err(|source| ConfigError::Read {
            path: PathBuf::from("."),
            source,
        })?;
        Ok(MasterConfig {
            id,
            rpc_addr: parse(&entry.rpc)?,
            http_addr: parse(&entry.http)?,
            data_dir: cluster.data_dir.join(format!("master-{id}")),
            secret: cluster.secret.clone(),
            base_dir,
            cluster,
        })
    }
}

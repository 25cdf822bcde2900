//! The server side of the Raft RPCs between masters: the tarpc service [`RaftService`] and
//! [`serve_raft_connection`], which runs it on one connection.
//!
//! # One address per master
//! A master has one tarpc address (`rpc` in `cluster.toml`) for workers and for the other
//! masters. Every connection starts with the `jobs::auth` handshake; right after it the client
//! sends one selector byte naming the service it wants: [`SELECT_RAFT`] for this one,
//! `jobs::rpc::SELECT_MASTER_SERVICE` for the worker-facing `MasterService`. The listener reads
//! it (e.g. with [`read_selector`]) and hands the connection to the right service:
//!
//! ```ignore
//! jobs::auth::accept_loop(listener, secret, move |mut stream| async move {
//!     match read_selector(&mut stream).await {
//!         Ok(SELECT_RAFT) => serve_raft_connection(stream, raft).await,
//!         Ok(jobs::rpc::SELECT_MASTER_SERVICE) => { /* MasterService */ }
//!         Ok(other) => warn!(selector = other, "unknown service selector"),
//!         Err(error) => warn!(%error, "no service selector"),
//!     }
//! }, shutdown).await;
//! ```
//!
//! The client side (dialling, one connection per peer, error mapping) is [`super::network`].

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use tarpc::context::Context;
use tarpc::server::{BaseChannel, Channel};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tracing::debug;

use super::type_config::{Raft, TypeConfig};

/// The selector byte of a connection to [`RaftService`], sent right after the handshake (the
/// worker-facing service's is `jobs::rpc::SELECT_MASTER_SERVICE`, `b'W'`).
pub const SELECT_RAFT: u8 = b'R';
/// How long a listener waits for the selector byte after the handshake.
pub const SELECTOR_TIMEOUT: Duration = Duration::from_secs(5);

/// Raft's RPCs between the masters of the metadata group. Each returns what the receiving
/// node's openraft returned; transport failures are the caller's `tarpc::client::RpcError`.
///
/// The large requests travel as `Arc`s (serialized as the value itself) so that a client can
/// send one again after a broken connection without copying its entries.
#[tarpc::service]
pub trait RaftService {
    /// Replicates log entries from the leader (an empty request is a heartbeat).
    async fn append_entries(
        request: Arc<AppendEntriesRequest<TypeConfig>>,
    ) -> Result<AppendEntriesResponse<u64>, RaftError<u64>>;
    /// Asks for this node's vote in an election.
    async fn vote(request: VoteRequest<u64>) -> Result<VoteResponse<u64>, RaftError<u64>>;
    /// Sends one chunk of a snapshot to a follower whose log is behind the leader's purged log.
    async fn install_snapshot(
        request: Arc<InstallSnapshotRequest<TypeConfig>>,
    ) -> Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>;
    /// The voters of the group this node belongs to, by its own log: empty while its log holds
    /// no membership (a pristine node that no leader has replicated to yet). A pristine master
    /// asks the others before initialising a group (see `super::membership`).
    async fn group_voters() -> Vec<u64>;
}

/// The service: a thin adapter that hands each request to the local Raft node.
#[derive(Clone)]
struct RaftServer {
    raft: Raft,
}

impl RaftService for RaftServer {
    async fn append_entries(
        self,
        _ctx: Context,
        request: Arc<AppendEntriesRequest<TypeConfig>>,
    ) -> Result<AppendEntriesResponse<u64>, RaftError<u64>> {
        self.raft
            .append_entries(Arc::unwrap_or_clone(request))
            .await
    }

    async fn vote(
        self,
        _ctx: Context,
        request: VoteRequest<u64>,
    ) -> Result<VoteResponse<u64>, RaftError<u64>> {
        self.raft.vote(request).await
    }

    async fn install_snapshot(
        self,
        _ctx: Context,
        request: Arc<InstallSnapshotRequest<TypeConfig>>,
    ) -> Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> {
        self.raft
            .install_snapshot(Arc::unwrap_or_clone(request))
            .await
    }

    async fn group_voters(self, _ctx: Context) -> Vec<u64> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics.membership_config.membership().voter_ids().collect()
    }
}

/// Reads the selector byte that follows the handshake on a connection the listener accepted.
///
/// # Errors
/// `TimedOut` if it does not come within [`SELECTOR_TIMEOUT`], or the read error (the client
/// closed the connection).
pub async fn read_selector(stream: &mut TcpStream) -> io::Result<u8> {
    tokio::time::timeout(SELECTOR_TIMEOUT, stream.read_u8())
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no service selector in time"))?
}

/// Serves [`RaftService`] for `raft` on `stream`, an authenticated connection whose selector
/// byte was already read, until the peer closes it. Requests run concurrently, each on a task
/// of its own; their deadlines come from the caller.
pub async fn serve_raft_connection(stream: TcpStream, raft: Raft) {
    let peer = stream.peer_addr().ok();
    let server = RaftServer { raft };
    BaseChannel::with_defaults(jobs::auth::transport(stream))
        .execute(server.serve())
        .for_each(|response| async move {
            tokio::spawn(response);
        })
        .await;
    debug!(?peer, "raft connection closed");
}

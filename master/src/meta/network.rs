//! Raft RPCs between masters, the client side: [`Network`], the connection factory openraft
//! calls, over tarpc on each master's `rpc` address (the server side is [`super::raft_rpc`]).
//!
//! # Connections
//! openraft asks for a "client" per replication stream and per election round, and per
//! leadership check of a linearizable read. [`Network`] keeps one tarpc connection per target
//! master, shared by all of them: the first call dials (`jobs::auth::dial`, then the
//! [`SELECT_RAFT`] byte); a connection that breaks is dropped and the next call dials again.
//! A call that finds its cached connection already broken (the peer restarted) redials once
//! within its deadline, so a restarted master is reached without an error round.
//!
//! # Deadlines and errors (openraft's semantics)
//! Every call, dial included, must finish within the hard TTL of its [`RPCOption`]; its tarpc
//! deadline is the same instant. Outcomes map to [`RPCError`]:
//! - no answer in time, or a dial that timed out: [`RPCError::Timeout`];
//! - the peer refused the connection or the handshake: [`RPCError::Unreachable`] (openraft backs
//!   off before trying that peer again);
//! - the connection broke during the call: [`RPCError::Network`] (retried on the next tick);
//! - the peer's openraft returned an error: [`RPCError::RemoteError`].
//!
//! After [`TIMEOUTS_BEFORE_REDIAL`] calls in a row without an answer on one connection it is
//! dropped too, so a connection whose peer vanished without a reset (a host crash, a partition)
//! is replaced.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use tarpc::client::RpcError;
use tarpc::context::{self, Context};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tracing::debug;

use super::membership::MemberAddrs;
use super::raft_rpc::{RaftServiceClient, SELECT_RAFT};
use super::type_config::TypeConfig;

/// After this many calls in a row without an answer, a connection is dropped and the next call
/// dials again.
pub const TIMEOUTS_BEFORE_REDIAL: u32 = 3;

/// The connection factory handed to openraft: one shared tarpc connection per target master.
/// Cheap to clone; clones share the connections.
#[derive(Clone)]
pub struct Network {
    /// This master's id (openraft's timeout errors name both ends).
    node_id: u64,
    /// The cluster secret, for the handshake.
    secret: Arc<str>,
    /// The connection to each target, by node id.
    peers: Arc<Mutex<HashMap<u64, Arc<Peer>>>>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Network {
    /// A factory for master `node_id`'s connections, authenticated with `secret`.
    pub fn new(node_id: u64, secret: Arc<str>) -> Network {
        Network {
            node_id,
            secret,
            peers: Arc::default(),
        }
    }
}

/// The connection to one target master.
struct Peer {
    /// Where it listens.
    addr: String,
    /// The open client and its generation, if any. The lock is held while dialling, so that
    /// concurrent calls share one dial.
    client: tokio::sync::Mutex<Option<(u64, RaftServiceClient)>>,
    /// Generations number the connections, so that a failed call drops only its own one.
    generation: AtomicU64,
    /// Calls in a row that got no answer (timed out, or were given up by openraft).
    unanswered: AtomicU32,
}

/// Why a dial failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to master {target} at {addr}")]
struct DialError {
    target: u64,
    addr: String,
    #[source]
    source: jobs::Error,
}

impl Peer {
    /// The open client, or a new one dialled now; `true` if it was dialled by this call.
    async fn client(
        &self,
        target: u64,
        secret: &str,
        ttl: Duration,
    ) -> Result<(u64, RaftServiceClient, bool), DialError> {
        let mut slot = self.client.lock().await;
        if let Some((generation, client)) = slot.as_ref() {
            if self.unanswered.load(Ordering::Relaxed) < TIMEOUTS_BEFORE_REDIAL {
                return Ok((*generation, client.clone(), false));
            }
            debug!(target, addr = %self.addr, "raft connection dropped after calls went unanswered");
            *slot = None;
        }
        let client = raft_client(&self.addr, secret, ttl)
            .await
            .map_err(|source| DialError {
                target,
                addr: self.addr.clone(),
                source,
            })?;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        self.unanswered.store(0, Ordering::Relaxed);
        debug!(target, addr = %self.addr, "raft connection opened");
        *slot = Some((generation, client.clone()));
        Ok((generation, client, true))
    }

    /// Drops connection `generation` if it is still the current one.
    async fn discard(&self, generation: u64) {
        let mut slot = self.client.lock().await;
        if slot
            .as_ref()
            .is_some_and(|(current, _)| *current == generation)
        {
            *slot = None;
        }
    }
}

/// Counts a call that ends without an answer from the peer: one that timed out, or that
/// openraft gave up (dropped) because its own timeout fired first.
struct Unanswered<'a> {
    peer: &'a Peer,
    answered: bool,
}

impl Unanswered<'_> {
    fn answered(mut self) {
        self.answered = true;
        self.peer.unanswered.store(0, Ordering::Relaxed);
    }
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.peer.unanswered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A connection to one master, as openraft sees it: a handle to the connection [`Network`]
/// shares for that master.
pub struct Connection {
    /// This master's id.
    from: u64,
    /// The target's id.
    target: u64,
    /// The target's address, for errors.
    node: BasicNode,
    secret: Arc<str>,
    peer: Arc<Peer>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Connection {
        // The node carries the `rpc` and the `http` address; Raft uses the first.
        let addr = MemberAddrs::of(node).rpc;
        let peer = {
            let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
            let peer = peers.entry(target).or_insert_with(|| new_peer(&addr));
            if peer.addr != addr {
                // The member moved (a membership change with a new address): forget the old one.
                *peer = new_peer(&addr);
            }
            Arc::clone(peer)
        };
        Connection {
            from: self.node_id,
            target,
            node: node.clone(),
            secret: Arc::clone(&self.secret),
            peer,
        }
    }
}

fn new_peer(addr: &str) -> Arc<Peer> {
    Arc::new(Peer {
        addr: addr.to_string(),
        client: tokio::sync::Mutex::new(None),
        generation: AtomicU64::new(0),
        unanswered: AtomicU32::new(0),
    })
}

type Reply<T, E> = Result<Result<T, RaftError<u64, E>>, RpcError>;

impl Connection {
    /// Makes one call with `send` on the shared connection, dialling first if needed, all within
    /// `ttl`; maps the outcome as the module docs say.
    async fn call<T, E, F, Fut>(
        &self,
        action: RPCTypes,
        ttl: Duration,
        send: F,
    ) -> Result<T, RPCError<u64, BasicNode, RaftError<u64, E>>>
    where
        E: std::error::Error,
        F: Fn(RaftServiceClient, Context) -> Fut,
        Fut: Future<Output = Reply<T, E>>,
    {
        let deadline = Instant::now() + ttl;
        let timeout = || {
            RPCError::Timeout(Timeout {
                action,
                id: self.from,
                target: self.target,
                timeout: ttl,
            })
        };
        let mut may_redial = true;
        loop {
            let dialled =
                tokio::time::timeout_at(deadline, self.peer.client(self.target, &self.secret, ttl))
                    .await;
            let (generation, client, fresh) = match dialled {
                Err(_) => return Err(timeout()),
                Ok(Err(e)) if is_timeout(&e.source) => return Err(timeout()),
                Ok(Err(e)) => return Err(RPCError::Unreachable(Unreachable::new(&e))),
                Ok(Ok(client)) => client,
            };
            let mut ctx = context::current();
            ctx.deadline = deadline.into_std();
            let pending = Unanswered {
                peer: &self.peer,
                answered: false,
            };
            let reply = match tokio::time::timeout_at(deadline, send(client, ctx)).await {
                Ok(reply) => reply,
                Err(_) => Err(RpcError::DeadlineExceeded),
            };
            match reply {
                Ok(Ok(response)) => {
                    pending.answered();
                    return Ok(response);
                }
                Ok(Err(remote)) => {
                    pending.answered();
                    let remote = RemoteError::new_with_node(self.target, self.node.clone(), remote);
                    return Err(RPCError::RemoteError(remote));
                }
                Err(RpcError::DeadlineExceeded) => return Err(timeout()),
                // The peer could not run the request (e.g. it passed its deadline there); the
                // connection itself is fine.
                Err(e @ RpcError::Server(_)) => {
                    pending.answered();
                    return Err(RPCError::Network(NetworkError::new(&e)));
                }
                Err(e) => {
                    pending.answered();
                    self.peer.discard(generation).await;
                    debug!(target = self.target, error = %e, fresh, "raft connection broke");
                    if !fresh && may_redial && Instant::now() < deadline {
                        // A cached connection that had broken before this call (the peer
                        // restarted): dial once more. Raft RPCs may be repeated safely.
                        may_redial = false;
                        continue;
                    }
                    return Err(RPCError::Network(NetworkError::new(&e)));
                }
            }
        }
    }
}

/// Why [`group_voters`] got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Connecting (or the handshake) failed.
    #[error("cannot connect to {addr}")]
    Dial {
        /// Where.
        addr: String,
        /// Why.
        #[source]
        source: jobs::Error,
    },
    /// The call failed or ran out of time.
    #[error("no answer from {addr}")]
    Call {
        /// Where.
        addr: String,
        /// Why.
        #[source]
        source: RpcError,
    },
    /// No answer within the time allowed.
    #[error("no answer from {addr} within {after:?}")]
    Timeout {
        /// Where.
        addr: String,
        /// How long we waited.
        after: Duration,
    },
}

/// Connects to a master's `rpc` address (handshake within `ttl`) and selects its Raft service.
async fn raft_client(addr: &str, secret: &str, ttl: Duration) -> jobs::Result<RaftServiceClient> {
    let mut stream = jobs::auth::dial(addr, secret, ttl).await?;
    stream.write_all(&[SELECT_RAFT]).await?;
    Ok(RaftServiceClient::new(
        tarpc::client::Config::default(),
        jobs::auth::transport(stream),
    )
    .spawn())
}

/// Asks the master whose Raft service listens at `addr` for the voters of its group
/// ([`super::raft_rpc::RaftService::group_voters`]) on a connection of its own, within `ttl`.
///
/// # Errors
/// [`ProbeError`] if it cannot be reached or does not answer in time.
pub async fn group_voters(addr: &str, secret: &str, ttl: Duration) -> Result<Vec<u64>, ProbeError> {
    let deadline = Instant::now() + ttl;
    let call = async {
        let client = raft_client(addr, secret, ttl)
            .await
            .map_err(|source| ProbeError::Dial {
                addr: addr.to_string(),
                source,
            })?;
        let mut ctx = context::current();
        ctx.deadline = deadline.into_std();
        client
            .group_voters(ctx)
            .await
            .map_err(|source| ProbeError::Call {
                addr: addr.to_string(),
                source,
            })
    };
    tokio::time::timeout_at(deadline, call)
        .await
        .map_err(|_| ProbeError::Timeout {
            addr: addr.to_string(),
            after: ttl,
        })?
}

/// Whether a dial failed by running out of time (rather than being refused).
fn is_timeout(e: &jobs::Error) -> bool {
    matches!(e, jobs::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut)
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let rpc = Arc::new(rpc);
        self.call(RPCTypes::AppendEntries, option.hard_ttl(), |client, ctx| {
            let rpc = Arc::clone(&rpc);
            async move { client.append_entries(ctx, rpc).await }
        })
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        let rpc = Arc::new(rpc);
        self.call(
            RPCTypes::InstallSnapshot,
            option.hard_ttl(),
            |client, ctx| {
                let rpc = Arc::clone(&rpc);
                async move { client.install_snapshot(ctx, rpc).await }
            },
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(RPCTypes::Vote, option.hard_ttl(), |client, ctx| {
            let rpc = rpc.clone();
            async move { client.vote(ctx, rpc).await }
        })
        .await
    }
}

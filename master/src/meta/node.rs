//! [`Meta`]: this master's member of the metadata Raft group, and the handle the rest of the
//! master uses to propose commands and read the applied state.
//!
//! # Batching
//! Proposals go through one queue to a batcher task. While one log entry is being committed, new
//! proposals accumulate; the next entry carries all of them (up to [`MAX_BATCH_COMMANDS`]), so
//! many concurrent proposers share one append and one fsync. Because every proposal goes through
//! the same queue, proposals are committed in the order they were made, fire-and-forget ones
//! included.
//!
//! # Start
//! The log and snapshots live under the node's directory (`log/`, `snapshots/`). On the very
//! first start of a fresh single-node cluster the group is initialised with this node as its only
//! member; later starts rejoin from what is on disk.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use openraft::error::{ClientWriteError, Fatal, InitializeError, RaftError};
use openraft::{BasicNode, Config, ConfigError, RaftMetrics, SnapshotPolicy};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::command::{Command, CommandResult, Request};
use super::log_store::LogStore;
use super::network::Network;
use super::state::MetaState;
use super::state_machine::StateMachineStore;
use super::type_config::Raft;

/// Leaders send heartbeats this often (ms).
const HEARTBEAT_INTERVAL_MS: u64 = 100;
/// A follower that hears no leader for a random time in this range starts an election (ms).
const ELECTION_TIMEOUT_MS: (u64, u64) = (300, 600);
/// At most this many entries per append-entries RPC (one entry can carry thousands of commands).
const MAX_PAYLOAD_ENTRIES: u64 = 64;
/// A snapshot is built once this many entries were applied since the last one.
const SNAPSHOT_EVERY_ENTRIES: u64 = 10_000;
/// Entries already in a snapshot that stay in the log, for followers that lag a little.
const ENTRIES_KEPT_AFTER_SNAPSHOT: u64 = 1_000;
/// Purge the log in steps of at least this many entries.
const PURGE_BATCH_SIZE: u64 = 256;
/// At most this many commands are merged into one log entry.
pub const MAX_BATCH_COMMANDS: usize = 4096;
/// How long [`Meta::start`] waits for a leader (and, on the leader, for the log to be applied).
const START_WAIT: Duration = Duration::from_secs(10);

/// Why a metadata operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// This master is not the leader; proposals must go to `leader`, if one is known.
    #[error("this master is not the metadata leader (leader: {leader:?})")]
    NotLeader {
        /// The current leader's node id.
        leader: Option<u64>,
    },
    /// The Raft node stopped, panicked, or its storage failed.
    #[error("the metadata raft node failed")]
    Raft {
        /// What openraft reported.
        #[source]
        source: Fatal<u64>,
    },
    /// openraft refused a write for a reason other than leadership.
    #[error("the metadata write was refused")]
    Write {
        /// What openraft reported.
        #[source]
        source: ClientWriteError<u64, BasicNode>,
    },
    /// Initialising the group on first start failed.
    #[error("initialising the metadata group failed")]
    Initialize {
        /// What openraft reported.
        #[source]
        source: RaftError<u64, InitializeError<u64, BasicNode>>,
    },
    /// The Raft configuration is invalid.
    #[error("invalid metadata raft configuration")]
    Config {
        /// What openraft reported.
        #[source]
        source: ConfigError,
    },
    /// Opening the log or the snapshots failed.
    #[error("metadata storage failed")]
    Storage {
        /// The I/O error.
        #[from]
        source: io::Error,
    },
    /// The Raft node's task failed while shutting down.
    #[error("shutting down the metadata raft node failed")]
    Shutdown {
        /// The join error of openraft's core task.
        #[source]
        source: tokio::task::JoinError,
    },
    /// The node was shut down before the proposal was committed.
    #[error("the metadata node is shut down")]
    Closed,
    /// The state machine returned a different number of results than the entry had commands
    /// (a bug).
    #[error("{results} results for {commands} commands")]
    ResultCount {
        /// Commands in the entry.
        commands: usize,
        /// Results returned.
        results: usize,
    },
}

/// A proposal waiting in the batcher's queue.
struct Proposal {
    commands: Vec<Command>,
    /// Where the results go; `None` for fire-and-forget.
    reply: Option<ProposalReply>,
}

/// The handle to this master's metadata node. Cheap to clone; clones share the node. Call
/// [`Meta::shutdown`] to stop it: dropping the handles stops only the batcher.
#[derive(Clone)]
pub struct Meta {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Meta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meta")
            .field("node_id", &self.inner.node_id)
            .finish_non_exhaustive()
    }
}

struct Inner {
    node_id: u64,
    raft: Raft,
    state: Arc<RwLock<MetaState>>,
    proposals: mpsc::UnboundedSender<Proposal>,
    /// The batcher task, stopped by [`Meta::shutdown`].
    batcher: Mutex<Option<JoinHandle<()>>>,
}

/// The Raft configuration of the metadata group.
fn raft_config() -> Config {
    Config {
        cluster_name: "jobs-meta".to_string(),
        heartbeat_interval: HEARTBEAT_INTERVAL_MS,
        election_timeout_min: ELECTION_TIMEOUT_MS.0,
        election_timeout_max: ELECTION_TIMEOUT_MS.1,
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY_ENTRIES),
        max_in_snapshot_log_to_keep: ENTRIES_KEPT_AFTER_SNAPSHOT,
        purge_batch_size: PURGE_BATCH_SIZE,
        ..Config::default()
    }
}

impl Meta {
    /// Opens (or creates) the node's log and snapshots under `dir`, starts openraft, and on the
    /// very first start of a fresh single-node cluster initialises the group with this node as
    /// its only member (later starts rejoin from disk). Returns once a leader is known and, if
    /// this node leads, its log is applied; after 10 s without a leader it returns anyway with
    /// a warning, and proposals fail with [`MetaError::NotLeader`] until one is
    /// elected.
    ///
    /// # Errors
    /// [`MetaError::Storage`] if the log or a snapshot cannot be opened, [`MetaError::Raft`] or
    /// [`MetaError::Initialize`] if openraft fails to start.
    pub async fn start(node_id: u64, rpc_addr: String, dir: &Path) -> Result<Meta, MetaError> {
        let config = raft_config()
            .validate()
            .map_err(|source| MetaError::Config { source })?;
        let (log_dir, sm_dir) = (dir.join("log"), dir.join("snapshots"));
        let (log_store, state_machine) = tokio::task::spawn_blocking(move || {
            io::Result::Ok((LogStore::open(&log_dir)?, StateMachineStore::open(&sm_dir)?))
        })
        .await
        .map_err(io::Error::other)??;
        let fresh = log_store.is_pristine()? && state_machine.last_applied().is_none();
        let state = state_machine.state();
        let raft = Raft::new(node_id, Arc::new(config), Network, log_store, state_machine)
            .await
            .map_err(|source| MetaError::Raft { source })?;
        if fresh {
            let members = BTreeMap::from([(node_id, BasicNode::new(rpc_addr))]);
            raft.initialize(members)
                .await
                .map_err(|source| MetaError::Initialize { source })?;
            info!(
                node_id,
                "metadata group initialised with this master as its only member"
            );
        }
        let ready = raft
            .wait(Some(START_WAIT))
            .metrics(
                |m| match m.current_leader {
                    Some(leader) if leader == node_id => {
                        m.last_applied.map(|id| id.index) >= m.last_log_index
                    }
                    Some(_) => true,
                    None => false,
                },
                "a leader is known and the leader's log is applied",
            )
            .await;
        match ready {
            Ok(m) => info!(node_id, leader = ?m.current_leader, term = m.current_term,
                last_log_index = ?m.last_log_index, "metadata node started"),
            Err(e) => warn!(node_id, error = %e, "no metadata leader yet"),
        }
        if let Err(source) = raft.metrics().borrow().running_state.clone() {
            return Err(MetaError::Raft { source });
        }
        let (proposals, queue) = mpsc::unbounded_channel();
        let batcher = tokio::spawn(run_batcher(raft.clone(), queue));
        Ok(Meta {
            inner: Arc::new(Inner {
                node_id,
                raft,
                state,
                proposals,
                batcher: Mutex::new(Some(batcher)),
            }),
        })
    }

    /// Proposes one command and waits until it is committed and applied; returns its result.
    /// Concurrent proposals share log entries (see the module docs).
    ///
    /// # Errors
    /// [`MetaError::NotLeader`] on a follower, [`MetaError::Closed`] after shutdown,
    /// [`MetaError::Raft`] if the node failed.
    pub async fn propose(&self, command: Command) -> Result<CommandResult, MetaError> {
        let mut results = self.propose_all(vec![command]).await?;
        // The batcher hands each proposal exactly as many results as it had commands.
        results.pop().ok_or(MetaError::ResultCount {
            commands: 1,
            results: 0,
        })
    }

    /// Proposes several commands that are committed in one log entry, in order; returns their
    /// results in the same order.
    ///
    /// # Errors
    /// As [`Meta::propose`].
    pub async fn propose_all(
        &self,
        commands: Vec<Command>,
    ) -> Result<Vec<CommandResult>, MetaError> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, result) = oneshot::channel();
        let proposal = Proposal {
            commands,
            reply: Some(reply),
        };
        self.inner
            .proposals
            .send(proposal)
            .map_err(|_| MetaError::Closed)?;
        result.await.map_err(|_| MetaError::Closed)?
    }

    /// Proposes a command without waiting. It is queued in order with other proposals, so it is
    /// committed before anything proposed after it; its result is ignored (a failure is logged).
    pub fn propose_nowait(&self, command: Command) {
        let proposal = Proposal {
            commands: vec![command],
            reply: None,
        };
        if self.inner.proposals.send(proposal).is_err() {
            warn!(
                node_id = self.inner.node_id,
                "metadata node is shut down, proposal dropped"
            );
        }
    }

    /// The applied state. Take the read lock briefly: applying waits for readers.
    pub fn state(&self) -> Arc<RwLock<MetaState>> {
        Arc::clone(&self.inner.state)
    }

    /// This node's id in the group.
    pub fn node_id(&self) -> u64 {
        self.inner.node_id
    }

    /// The node's current Raft metrics: role, term, leader, last log index, applied, snapshot.
    pub fn metrics(&self) -> RaftMetrics<u64, BasicNode> {
        self.inner.raft.metrics().borrow().clone()
    }

    /// The openraft node, for what this handle does not cover (triggering a snapshot, waiting on
    /// metrics, and later membership changes and RPCs from other masters).
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// Stops the Raft node and the batcher. A proposal in flight or queued fails with
    /// [`MetaError::Raft`] or [`MetaError::Closed`]; later proposals fail with `Closed`.
    ///
    /// # Errors
    /// [`MetaError::Shutdown`] if openraft's core task failed.
    pub async fn shutdown(&self) -> Result<(), MetaError> {
        let result = self.inner.raft.shutdown().await;
        let batcher = self
            .inner
            .batcher
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(batcher) = batcher {
            batcher.abort();
            // Wait until the queue is dropped, so that every later proposal fails with `Closed`;
            // the join error only says that the task was cancelled.
            let _ = batcher.await;
        }
        result.map_err(|source| MetaError::Shutdown { source })?;
        info!(node_id = self.inner.node_id, "metadata node stopped");
        Ok(())
    }
}

/// Drains the proposal queue: each log entry carries every proposal that arrived while the
/// previous entry was being committed, up to [`MAX_BATCH_COMMANDS`] commands.
async fn run_batcher(raft: Raft, mut queue: mpsc::UnboundedReceiver<Proposal>) {
    let mut carried: Option<Proposal> = None;
    loop {
        let first = match carried.take() {
            Some(proposal) => proposal,
            None => match queue.recv().await {
                Some(proposal) => proposal,
                None => return,
            },
        };
        let mut commands = first.commands;
        let mut replies = vec![(commands.len(), first.reply)];
        while commands.len() < MAX_BATCH_COMMANDS {
            match queue.try_recv() {
                Ok(next) if commands.len() + next.commands.len() <= MAX_BATCH_COMMANDS => {
                    replies.push((next.commands.len(), next.reply));
                    commands.extend(next.commands);
                }
                Ok(next) => {
                    carried = Some(next);
                    break;
                }
                Err(_) => break,
            }
        }
        let count = commands.len();
        match raft.client_write(Request { commands }).await {
            Ok(response) => {
                debug!(
                    proposals = replies.len(),
                    commands = count,
                    index = response.log_id.index,
                    "metadata batch committed"
                );
                let results = response.data.results;
                if results.len() != count {
                    let results = results.len();
                    reply_all(replies, || MetaError::ResultCount {
                        commands: count,
                        results,
                    });
                    continue;
                }
                let mut results = results.into_iter();
                for (n, reply) in replies {
                    let mine: Vec<_> = results.by_ref().take(n).collect();
                    if let Some(reply) = reply {
                        // The proposer may have stopped waiting; nothing to do then.
                        let _ = reply.send(Ok(mine));
                    }
                }
            }
            Err(e) => {
                warn!(proposals = replies.len(), commands = count, error = %e,
                    "metadata batch failed");
                reply_all(replies, || write_error(&e));
            }
        }
    }
}

/// Sends an error to every waiting proposer of a batch.
fn reply_all<F>(replies: Vec<(usize, Option<ProposalReply>)>, error: F)
where
    F: Fn() -> MetaError,
{
    for reply in replies.into_iter().filter_map(|(_, reply)| reply) {
        let _ = reply.send(Err(error()));
    }
}

type ProposalReply = oneshot::Sender<Result<Vec<CommandResult>, MetaError>>;

fn write_error(e: &RaftError<u64, ClientWriteError<u64, BasicNode>>) -> MetaError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => MetaError::NotLeader {
            leader: forward.leader_id,
        },
        RaftError::APIError(source) => MetaError::Write {
            source: source.clone(),
        },
        RaftError::Fatal(source) => MetaError::Raft {
            source: source.clone(),
        },
    }
}

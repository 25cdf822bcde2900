//! [`Meta`]: this master's member of the metadata Raft group, and the handle the rest of the
//! master uses to propose commands, read the applied state, and follow leadership.
//!
//! # Start
//! The log and snapshots live under the node's directory (`log/`, `snapshots/`). The initial
//! members (id and addresses of every master) come from the cluster file; after that the
//! membership lives in the log and changes at runtime ([`super::membership`]). The group is
//! initialised exactly once, on the first start of a fresh cluster: the member with the
//! smallest id, if its log is pristine and no other master of the file belongs to a group yet,
//! initialises it with all members; every other start (the other members' first start, and a
//! master added later, included) simply rejoins, and a pristine member joins when the leader
//! replicates to it. (A fresh cluster therefore elects its first leader once the smallest-id
//! master is up.)
//!
//! Raft RPCs reach this node through [`super::raft_rpc::serve_raft_connection`], which the
//! master's RPC listener must run for connections that select Raft; this node reaches the
//! others through [`Network`].
//!
//! # Writes
//! Proposals are batched, many commands per log entry ([`super::batcher`]). Only the leader
//! takes them: on a follower [`Meta::propose`] fails at once with [`MetaError::NotLeader`]
//! naming the leader (look its address up with [`Meta::leader`]), so callers can redirect.
//!
//! # Leadership and reads
//! [`Meta::leadership`] says who leads now; [`Meta::subscribe_leadership`] wakes on every change
//! of leader or term. A new leader is [`Leadership::ready`] once it applied everything committed
//! before its term: that is when its actors may be rebuilt from [`Meta::state`], and when the API
//! starts answering job reads (followers forward theirs to the leader), so a client never sees a
//! job go back. [`Meta::ensure_linearizable`] also confirms leadership with a majority.
//!
//! # Timing
//! Heartbeats every [`HEARTBEAT_INTERVAL_MS`], elections after [`ELECTION_TIMEOUT_MS`]. openraft
//! adds a leader lease of the maximum election timeout: a follower neither starts nor grants an
//! election until it has heard nothing from its leader for lease + its own election timeout, so
//! a crashed leader is replaced after roughly 2 × the election timeout.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use openraft::error::{
    CheckIsLeaderError, ClientWriteError, Fatal, InitializeError, QuorumNotEnough, RaftError,
};
use openraft::{BasicNode, Config, ConfigError, RaftMetrics, ServerState, SnapshotPolicy};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

pub use super::batcher::MAX_BATCH_COMMANDS;
use super::batcher::{check_writable, run_batcher, Proposal};
use super::command::{Command, CommandResult};
use super::log_store::LogStore;
use super::membership::{group_exists, MemberAddrs};
use super::network::Network;
use super::state::MetaState;
use super::state_machine::StateMachineStore;
use super::type_config::Raft;

/// Leaders send heartbeats this often (ms).
pub const HEARTBEAT_INTERVAL_MS: u64 = 100;
/// A follower that hears no leader for a random time in this range (plus openraft's leader
/// lease, the range's maximum) starts an election (ms).
pub const ELECTION_TIMEOUT_MS: (u64, u64) = (200, 400);
/// At most this many entries per append-entries RPC (one entry can carry thousands of commands).
const MAX_PAYLOAD_ENTRIES: u64 = 64;
/// A snapshot is built once this many entries were applied since the last one.
const SNAPSHOT_EVERY_ENTRIES: u64 = 10_000;
/// Entries already in a snapshot that stay in the log, for followers that lag a little.
const ENTRIES_KEPT_AFTER_SNAPSHOT: u64 = 1_000;
/// Purge the log in steps of at least this many entries.
const PURGE_BATCH_SIZE: u64 = 256;
/// How long one snapshot chunk (3 MiB) may take to send and, for the last one, to install.
const INSTALL_SNAPSHOT_TIMEOUT_MS: u64 = 10_000;
/// How long a one-master [`Meta::start`] waits for its election and for its log to be applied.
const START_WAIT: Duration = Duration::from_secs(10);
/// How long [`Meta::ensure_linearizable`] may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// This master leads but has not heard from a majority of the group for `silence_ms`: it is
    /// probably cut off (a minority), so it takes no writes.
    #[error("this master leads but has not heard from a majority for {silence_ms} ms")]
    NoQuorum {
        /// How long since a majority last acknowledged this leader.
        silence_ms: u64,
    },
    /// The group did not answer in time: a write was not committed within `after` (it may still
    /// commit later, so its outcome is unknown), or a linearizable read could not be confirmed.
    #[error("the metadata group did not answer within {after:?}")]
    Timeout {
        /// How long we waited.
        after: Duration,
    },
    /// A linearizable read found no majority to confirm this master's leadership.
    #[error("this master could not confirm its leadership with a majority")]
    Unconfirmed {
        /// What openraft reported.
        #[source]
        source: QuorumNotEnough<u64>,
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

/// Who leads the metadata group, as this master sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leadership {
    /// The current term: a new election starts a new term.
    pub term: u64,
    /// The leader's id and `rpc` address, if one is known (this master's own when it leads).
    pub leader: Option<(u64, BasicNode)>,
    /// This master is the leader: it takes writes.
    pub is_leader: bool,
    /// This master is the leader and has applied every entry committed before its term (it
    /// applied an entry of its own term), so [`Meta::state`] is complete: the moment to rebuild
    /// the leader's actors from it.
    pub ready: bool,
}

impl Leadership {
    fn of(metrics: &RaftMetrics<u64, BasicNode>) -> Leadership {
        let leader = metrics.current_leader.map(|id| {
            let membership = metrics.membership_config.membership();
            let rpc = membership
                .get_node(&id)
                .map(|node| MemberAddrs::of(node).rpc);
            (id, BasicNode::new(rpc.unwrap_or_default()))
        });
        let is_leader = metrics.state == ServerState::Leader;
        let applied_own_term = metrics
            .last_applied
            .is_some_and(|applied| applied.leader_id.term == metrics.current_term);
        Leadership {
            term: metrics.current_term,
            leader,
            is_leader,
            ready: is_leader && applied_own_term,
        }
    }
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
    /// Leadership as of the last change, for [`Meta::subscribe_leadership`].
    leadership: watch::Receiver<Leadership>,
    /// The batcher and the leadership watcher, stopped by [`Meta::shutdown`].
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// The Raft configuration of the metadata group.
pub(crate) fn raft_config() -> Config {
    Config {
        cluster_name: "jobs-meta".to_string(),
        heartbeat_interval: HEARTBEAT_INTERVAL_MS,
        election_timeout_min: ELECTION_TIMEOUT_MS.0,
        election_timeout_max: ELECTION_TIMEOUT_MS.1,
        install_snapshot_timeout: INSTALL_SNAPSHOT_TIMEOUT_MS,
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY_ENTRIES),
        max_in_snapshot_log_to_keep: ENTRIES_KEPT_AFTER_SNAPSHOT,
        purge_batch_size: PURGE_BATCH_SIZE,
        ..Config::default()
    }
}

impl Meta {
    /// Opens (or creates) master `node_id`'s log and snapshots under `dir` and starts its Raft
    /// node in the group of `members` (every master of the cluster file, this one included,
    /// with its addresses: [`MemberAddrs::node`], or a plain `rpc` address), talking to the
    /// others with the cluster `secret`. On the first start of a fresh cluster the smallest-id
    /// member initialises the group (see the module docs).
    ///
    /// With a single member (this one) it returns once this node leads and its log is applied
    /// (after 10 s it returns anyway, with a warning). With several it returns at once: the
    /// others can only reach this node once the caller serves Raft connections
    /// ([`super::raft_rpc::serve_raft_connection`]); then await [`Meta::wait_for_leader`].
    ///
    /// # Errors
    /// [`MetaError::Storage`] if the log or a snapshot cannot be opened, [`MetaError::Raft`] or
    /// [`MetaError::Initialize`] if openraft fails to start.
    pub async fn start(
        node_id: u64,
        members: BTreeMap<u64, BasicNode>,
        secret: Arc<str>,
        dir: &Path,
    ) -> Result<Meta, MetaError> {
        Meta::start_with(node_id, members, secret, dir, raft_config()).await
    }

    /// [`Meta::start`] with another Raft configuration (tests use small snapshot policies).
    pub(crate) async fn start_with(
        node_id: u64,
        members: BTreeMap<u64, BasicNode>,
        secret: Arc<str>,
        dir: &Path,
        config: Config,
    ) -> Result<Meta, MetaError> {
        let config = config
            .validate()
            .map_err(|source| MetaError::Config { source })?;
        let (log_dir, sm_dir) = (dir.join("log"), dir.join("snapshots"));
        let (log_store, state_machine) = tokio::task::spawn_blocking(move || {
            io::Result::Ok((
                LogStore::open_preallocated(&log_dir)?,
                StateMachineStore::open(&sm_dir)?,
            ))
        })
        .await
        .map_err(io::Error::other)??;
        let fresh = log_store.is_pristine()? && state_machine.last_applied().is_none();
        let state = state_machine.state();
        let network = Network::new(node_id, secret.clone());
        let raft = Raft::new(node_id, Arc::new(config), network, log_store, state_machine)
            .await
            .map_err(|source| MetaError::Raft { source })?;
        let initialiser = fresh && members.keys().next() == Some(&node_id);
        if initialiser && members.len() > 1 && group_exists(node_id, &members, &secret).await {
            // A master added later, with a smaller id than the members: it must not found a
            // group of its own.
            info!(
                node_id,
                "fresh metadata node: another master already belongs to a group; waiting to be \
                 added (POST /api/masters on the leader)"
            );
        } else if initialiser {
            raft.initialize(members.clone())
                .await
                .map_err(|source| MetaError::Initialize { source })?;
            info!(node_id, members = ?members.keys().collect::<Vec<_>>(),
                "metadata group initialised");
        } else if fresh {
            info!(
                node_id,
                "fresh metadata node: waiting for the leader to replicate to it"
            );
        }
        let alone = members.len() == 1 && members.contains_key(&node_id);
        if alone {
            let ready = raft
                .wait(Some(START_WAIT))
                .metrics(
                    |m| Leadership::of(m).ready,
                    "this node leads and its log is applied",
                )
                .await;
            match ready {
                Ok(m) => info!(node_id, term = m.current_term,
                    last_log_index = ?m.last_log_index, "metadata node started"),
                Err(e) => warn!(node_id, error = %e, "no metadata leader yet"),
            }
        } else {
            info!(node_id, members = members.len(), "metadata node started");
        }
        if let Err(source) = raft.metrics().borrow().running_state.clone() {
            return Err(MetaError::Raft { source });
        }
        let (proposals, queue) = mpsc::unbounded_channel();
        let batcher = tokio::spawn(run_batcher(raft.clone(), queue));
        let (leadership_tx, leadership) = watch::channel(Leadership::of(&raft.metrics().borrow()));
        let watcher = tokio::spawn(watch_leadership(node_id, raft.metrics(), leadership_tx));
        Ok(Meta {
            inner: Arc::new(Inner {
                node_id,
                raft,
                state,
                proposals,
                leadership,
                tasks: Mutex::new(vec![batcher, watcher]),
            }),
        })
    }

    /// Proposes one command and waits until it is committed and applied; returns its result.
    /// Concurrent proposals share log entries (see [`super::batcher`]).
    ///
    /// # Errors
    /// [`MetaError::NotLeader`] on a follower (at once), [`MetaError::NoQuorum`] on a leader cut
    /// off from its majority, [`MetaError::Timeout`] if the entry did not commit in time (it may
    /// still commit), [`MetaError::Closed`] after shutdown, [`MetaError::Raft`] if the node
    /// failed.
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
        if self.inner.proposals.is_closed() {
            return Err(MetaError::Closed);
        }
        // Refuse at once on a follower, even if the queue is busy.
        let writable = check_writable(&self.inner.raft.metrics().borrow());
        writable?;
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
    /// committed before anything proposed after it; its result is ignored (a failure, such as
    /// this master not leading, is logged).
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

    /// Waits until this master may serve a read that must not go backwards: it confirms with a
    /// majority that it still leads, then waits until its state machine applied everything
    /// committed so far. Read [`Meta::state`] after it returns.
    ///
    /// # Errors
    /// [`MetaError::NotLeader`] on a follower, [`MetaError::Unconfirmed`] if no majority
    /// answered, [`MetaError::Timeout`] after 5 s, [`MetaError::Raft`] if the node failed.
    pub async fn ensure_linearizable(&self) -> Result<(), MetaError> {
        let confirmed = tokio::time::timeout(READ_TIMEOUT, self.inner.raft.ensure_linearizable());
        match confirmed.await {
            Err(_) => Err(MetaError::Timeout {
                after: READ_TIMEOUT,
            }),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward)))) => {
                Err(MetaError::NotLeader {
                    leader: forward.leader_id,
                })
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(source)))) => {
                Err(MetaError::Unconfirmed { source })
            }
            Ok(Err(RaftError::Fatal(source))) => Err(MetaError::Raft { source }),
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

    /// Whether this master leads the group now (by its latest metrics; a leader that was just
    /// deposed may not know it yet: writes and [`Meta::ensure_linearizable`] find out).
    pub fn is_leader(&self) -> bool {
        self.inner.raft.metrics().borrow().state == ServerState::Leader
    }

    /// The leader this master knows of, with its `rpc` address (its own when it leads).
    pub fn leader(&self) -> Option<(u64, BasicNode)> {
        self.leadership().leader
    }

    /// Leadership now: term, leader, and whether this master leads and is ready.
    pub fn leadership(&self) -> Leadership {
        Leadership::of(&self.inner.raft.metrics().borrow())
    }

    /// A receiver that changes whenever the leader, the term, or this master's
    /// [`Leadership::is_leader`] / [`Leadership::ready`] change (not on every commit): `await
    /// rx.changed()`, then read `rx.borrow_and_update()`. The first `changed()` is the first
    /// change after this call. It closes when the node shuts down.
    pub fn subscribe_leadership(&self) -> watch::Receiver<Leadership> {
        let mut rx = self.inner.leadership.clone();
        rx.mark_unchanged();
        rx
    }

    /// Waits until a leader is known, at most `timeout`; returns it.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<(u64, BasicNode)> {
        let mut rx = self.subscribe_leadership();
        let known = tokio::time::timeout(timeout, rx.wait_for(|l| l.leader.is_some())).await;
        match known {
            Ok(Ok(leadership)) => leadership.leader.clone(),
            _ => None,
        }
    }

    /// The members of the group (voters and learners) with their `rpc` addresses
    /// ([`Meta::membership`] has both addresses and who votes).
    pub fn members(&self) -> BTreeMap<u64, BasicNode> {
        self.membership()
            .into_iter()
            .map(|m| (m.id, BasicNode::new(m.addrs.rpc)))
            .collect()
    }

    /// The node's current Raft metrics: role, term, leader, last log index, applied, snapshot,
    /// and (on the leader) each follower's replication progress.
    pub fn metrics(&self) -> RaftMetrics<u64, BasicNode> {
        self.inner.raft.metrics().borrow().clone()
    }

    /// The openraft node, for what this handle does not cover (serving Raft RPCs, triggering a
    /// snapshot, waiting on metrics).
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// Stops the Raft node, the batcher and the leadership watcher. A proposal in flight or
    /// queued fails with [`MetaError::Raft`] or [`MetaError::Closed`]; later proposals fail with
    /// `Closed` (or `NotLeader`).
    ///
    /// # Errors
    /// [`MetaError::Shutdown`] if openraft's core task failed.
    pub async fn shutdown(&self) -> Result<(), MetaError> {
        let result = self.inner.raft.shutdown().await;
        let tasks = std::mem::take(
            &mut *self
                .inner
                .tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for task in tasks {
            task.abort();
            // Wait until the batcher's queue is dropped, so that every later proposal fails with
            // `Closed`; the join error only says that the task was cancelled.
            let _ = task.await;
        }
        result.map_err(|source| MetaError::Shutdown { source })?;
        info!(node_id = self.inner.node_id, "metadata node stopped");
        Ok(())
    }
}

/// Publishes [`Leadership`] changes from openraft's metrics until the node stops.
async fn watch_leadership(
    node_id: u64,
    mut metrics: watch::Receiver<RaftMetrics<u64, BasicNode>>,
    leadership: watch::Sender<Leadership>,
) {
    loop {
        let now = Leadership::of(&metrics.borrow_and_update());
        leadership.send_if_modified(|last| {
            if *last == now {
                return false;
            }
            let leader = now.leader.as_ref().map(|(id, _)| *id);
            if leader != last.leader.as_ref().map(|(id, _)| *id) || now.ready != last.ready {
                info!(
                    node_id,
                    term = now.term,
                    ?leader,
                    is_leader = now.is_leader,
                    ready = now.ready,
                    "metadata leadership changed"
                );
            } else {
                debug!(node_id, term = now.term, ?leader, "metadata term changed");
            }
            *last = now;
            true
        });
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

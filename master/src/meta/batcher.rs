//! The proposal batcher: one task that turns queued proposals into log entries.
//!
//! Proposals go through one queue to the batcher. While one log entry is being committed, new
//! proposals accumulate; the next entry carries all of them (up to [`MAX_BATCH_COMMANDS`]), so
//! many concurrent proposers share one append, one replication round and one fsync. Because
//! every proposal goes through the same queue, proposals are committed in the order they were
//! made, fire-and-forget ones included.
//!
//! Before it closes a batch the batcher yields once to the runtime: the proposers it has just
//! answered are runnable then, and those that propose again at once join this batch instead of
//! waiting a whole commit for the next one (without the yield, concurrent proposers split into
//! two cohorts that take turns, and each waits two commits). One entry is committed at a time:
//! keeping two or three in flight was measured no faster (openraft 0.9 appends and fsyncs an
//! entry on the leader before it replicates it, and a node handles one append at a time).
//!
//! # Failing fast
//! On a follower openraft refuses a write at once ([`MetaError::NotLeader`]). A leader that has
//! not heard from a majority for [`QUORUM_SILENCE_MS`] refuses new batches
//! ([`MetaError::NoQuorum`]: nothing was written) and gives up on the one in flight
//! ([`MetaError::Timeout`]: it may still commit if the majority comes back); no entry waits
//! longer than [`WRITE_TIMEOUT`] for its commit in any case. So a leader cut off from its
//! followers answers within about a second instead of hanging.

use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, RaftMetrics, ServerState};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::command::{Command, CommandResult, Request};
use super::node::MetaError;
use super::type_config::Raft;

/// At most this many commands are merged into one log entry.
pub const MAX_BATCH_COMMANDS: usize = 4096;
/// How long a log entry may take to commit before its proposers get [`MetaError::Timeout`].
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// A leader that has not heard from a majority for this long (ms) refuses writes: it is
/// probably cut off, and a new leader may already be elected on the other side.
pub const QUORUM_SILENCE_MS: u64 = 1_000;

/// Where a proposal's results go.
pub(super) type ProposalReply = oneshot::Sender<Result<Vec<CommandResult>, MetaError>>;

/// A proposal waiting in the batcher's queue.
pub(super) struct Proposal {
    /// Its commands, committed together in one entry.
    pub(super) commands: Vec<Command>,
    /// Where the results go; `None` for fire-and-forget.
    pub(super) reply: Option<ProposalReply>,
}

/// Why this node cannot take a write now, judged by its metrics.
#[derive(Clone, Copy, Debug)]
pub(super) enum Unwritable {
    /// A follower or candidate, with the leader it knows of.
    NotLeader(Option<u64>),
    /// A leader that has not heard from a majority for this many ms.
    NoQuorum(u64),
}

impl From<Unwritable> for MetaError {
    fn from(why: Unwritable) -> MetaError {
        match why {
            Unwritable::NotLeader(leader) => MetaError::NotLeader { leader },
            Unwritable::NoQuorum(silence_ms) => MetaError::NoQuorum { silence_ms },
        }
    }
}

/// Whether this node may take a write now, by its metrics: not on a follower or candidate, nor
/// on a leader that lost its majority.
///
/// # Errors
/// Why not.
pub(super) fn check_writable(metrics: &RaftMetrics<u64, BasicNode>) -> Result<(), Unwritable> {
    if metrics.state != ServerState::Leader {
        let leader = metrics.current_leader.filter(|id| *id != metrics.id);
        return Err(Unwritable::NotLeader(leader));
    }
    match metrics.millis_since_quorum_ack {
        Some(silence_ms) if silence_ms > QUORUM_SILENCE_MS => Err(Unwritable::NoQuorum(silence_ms)),
        _ => Ok(()),
    }
}

/// Drains the proposal queue until every sender is gone: each log entry carries every proposal
/// that arrived while the previous entry was being committed, up to [`MAX_BATCH_COMMANDS`]
/// commands.
pub(super) async fn run_batcher(raft: Raft, mut queue: mpsc::UnboundedReceiver<Proposal>) {
    let mut carried: Option<Proposal> = None;
    loop {
        let first = match carried.take() {
            Some(proposal) => proposal,
            None => match queue.recv().await {
                Some(proposal) => proposal,
                None => return,
            },
        };
        // Let the proposers answered a moment ago propose again before the batch closes.
        tokio::task::yield_now().await;
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
        let writable = check_writable(&raft.metrics().borrow());
        if let Err(why) = writable {
            if let Unwritable::NoQuorum(silence_ms) = why {
                warn!(
                    proposals = replies.len(),
                    commands = count,
                    silence_ms,
                    "metadata batch refused: no majority"
                );
            }
            reply_all(replies, || why.into());
            continue;
        }
        let started = Instant::now();
        let write = tokio::time::timeout(WRITE_TIMEOUT, raft.client_write(Request { commands }));
        let written = tokio::select! {
            written = write => written.map_err(|_| WRITE_TIMEOUT),
            () = quorum_lost(&raft) => Err(started.elapsed()),
        };
        match written {
            Ok(Ok(response)) => {
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
            Ok(Err(e)) => {
                if !matches!(e, RaftError::APIError(ClientWriteError::ForwardToLeader(_))) {
                    warn!(proposals = replies.len(), commands = count, error = %e,
                        "metadata batch failed");
                }
                reply_all(replies, || write_error(&e));
            }
            Err(after) => {
                warn!(
                    proposals = replies.len(),
                    commands = count,
                    ?after,
                    "metadata batch not committed in time (it may still commit)"
                );
                reply_all(replies, || MetaError::Timeout { after });
            }
        }
    }
}

/// Returns once this node leads without having heard from a majority for
/// [`QUORUM_SILENCE_MS`] (openraft refreshes its metrics at least every tick); never if the
/// node stops.
async fn quorum_lost(raft: &Raft) {
    let mut metrics = raft.metrics();
    loop {
        let writable = check_writable(&metrics.borrow_and_update());
        if let Err(Unwritable::NoQuorum(_)) = writable {
            return;
        }
        if metrics.changed().await.is_err() {
            std::future::pending::<()>().await;
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

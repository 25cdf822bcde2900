//! The members of the metadata group and changing them at runtime: [`Meta::membership`],
//! [`Meta::add_master`] and [`Meta::remove_master`].
//!
//! # Both addresses in the membership
//! openraft keeps each member's [`BasicNode`] in the membership entries of the log, so every
//! master learns the members from the log itself, including masters added after it started
//! (which its cluster file may not list). A master has two addresses, `rpc` (Raft and workers)
//! and `http` (API and UI: followers forward to the leader's), so a node's `addr` holds both as
//! `"<rpc> http=<http>"` ([`MemberAddrs`]). A plain `"<rpc>"`, as groups initialised before
//! this format hold, still parses: its `http` then comes from the cluster file. (A custom node
//! type would say the same more directly, but it would change the bincode of every membership
//! entry and snapshot on disk, and the storage modules with it.) Only [`super::network`] and
//! this module see the encoded form: [`Meta::leader`] and [`Meta::members`] hand out the `rpc`
//! address alone.
//!
//! # Adding a master
//! The operator adds its `[[master]]` entry to the cluster file and starts it (`master run
//! --id N`): a fresh master that is not the group's initialiser waits to be replicated to. Then
//! [`Meta::add_master`] on the leader adds it as a learner, waits (bounded) until the learner's
//! log has caught up with the leader's as of that moment, and makes it a voter with openraft's
//! joint consensus. A second call for a learner that has not caught up yet resumes there.
//!
//! # Removing a master
//! [`Meta::remove_master`] removes a voter (or a learner) from the membership; the last voter
//! cannot be removed. The leader stops replicating to a removed master as soon as it appends the
//! membership without it, so a removed master that keeps running never receives that entry: it
//! may campaign, but its log is shorter than every remaining member's, so no one votes for it
//! and its requests change no one's term (openraft checks the log before the term); it disturbs
//! nothing and serves only stale reads of its own. A removed leader steps down once the
//! membership without it is committed, and the rest elect a new leader.
//!
//! # Initialising a group, safely
//! The smallest-id master of the cluster file initialises the group when its log is pristine.
//! A master added later with a smaller id than every member would do so too, and found a group
//! of its own; so before initialising, a pristine initialiser asks the other masters of the
//! file for their membership ([`super::raft_rpc::RaftService::group_voters`]) and waits to be
//! added instead if any of them already belongs to a group.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ChangeMembershipError, ClientWriteError, Fatal, RaftError};
use openraft::{BasicNode, ChangeMembers, RaftMetrics, ServerState};
use tracing::{debug, info, warn};

use super::network;
use super::node::Meta;

/// How long one membership change may take to commit (each of joint consensus's two steps).
pub const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a pristine initialiser waits for each other master's answer before initialising.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How many times a peer that is running but does not answer is asked again.
const PROBE_ROUNDS: u32 = 5;
/// What separates the two addresses in a [`BasicNode`]'s `addr`.
const HTTP_SEPARATOR: &str = " http=";

/// A master's two addresses, as a member's [`BasicNode`] carries them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberAddrs {
    /// Its tarpc address: Raft and worker traffic.
    pub rpc: String,
    /// Its HTTP address, if the membership carries it (groups initialised before it did
    /// carry only `rpc`; the cluster file has the rest).
    pub http: Option<String>,
}

impl MemberAddrs {
    /// Both addresses.
    pub fn new(rpc: impl Into<String>, http: impl Into<String>) -> MemberAddrs {
        MemberAddrs {
            rpc: rpc.into(),
            http: Some(http.into()),
        }
    }

    /// The addresses a member's node carries.
    pub fn of(node: &BasicNode) -> MemberAddrs {
        match node.addr.split_once(HTTP_SEPARATOR) {
            Some((rpc, http)) => MemberAddrs {
                rpc: rpc.to_string(),
                http: Some(http.to_string()),
            },
            None => MemberAddrs {
                rpc: node.addr.clone(),
                http: None,
            },
        }
    }

    /// The node to put in the membership.
    pub fn node(&self) -> BasicNode {
        match &self.http {
            Some(http) => BasicNode::new(format!("{}{HTTP_SEPARATOR}{http}", self.rpc)),
            None => BasicNode::new(&self.rpc),
        }
    }
}

/// One member of the group, as this master's log says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its node id.
    pub id: u64,
    /// Its addresses.
    pub addrs: MemberAddrs,
    /// A voter (counts for elections and commits) or a learner (only replicated to).
    pub voter: bool,
}

/// Why a membership change was refused or did not complete.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// Node ids start at 1.
    #[error("master ids start at 1")]
    InvalidId,
    /// The master is a voter already.
    #[error("master {id} is already a voter of the group")]
    AlreadyVoter {
        /// The master.
        id: u64,
    },
    /// The master is a learner with other addresses than the ones asked for.
    #[error(
        "master {id} is already a learner with rpc {rpc}; remove it first to change its addresses"
    )]
    LearnerElsewhere {
        /// The master.
        id: u64,
        /// Its `rpc` address in the membership.
        rpc: String,
    },
    /// Another member already has this address.
    #[error("address {addr} already belongs to master {owner}")]
    AddressTaken {
        /// The address.
        addr: String,
        /// The member that has it.
        owner: u64,
    },
    /// No member has this id.
    #[error("master {id} is not a member of the group")]
    NotMember {
        /// The master.
        id: u64,
    },
    /// Removing the only voter would leave a group that cannot commit anything.
    #[error("master {id} is the last voter of the group and cannot be removed")]
    LastVoter {
        /// The master.
        id: u64,
    },
    /// Only the leader changes the membership.
    #[error("this master is not the metadata leader (leader: {leader:?})")]
    NotLeader {
        /// The leader it knows of.
        leader: Option<u64>,
    },
    /// Another membership change is still being committed.
    #[error("another membership change is in progress; try again")]
    InProgress,
    /// The new learner's log did not catch up in time; it stays a learner.
    #[error(
        "master {id} was added as a learner but has not caught up within {after:?} (it has \
         log index {matched:?} of {target}); is `master run --id {id}` running and reachable? \
         Add it again to finish, or remove it"
    )]
    NotCaughtUp {
        /// The master.
        id: u64,
        /// How long we waited.
        after: Duration,
        /// The last log index it has, as the leader knows.
        matched: Option<u64>,
        /// The leader's last log index when the wait began.
        target: u64,
    },
    /// A step of the change did not commit in time; it may still commit.
    #[error("the membership change did not commit within {after:?}; it may still complete")]
    Timeout {
        /// How long we waited.
        after: Duration,
    },
    /// The Raft node stopped or failed.
    #[error("the metadata raft node failed")]
    Raft {
        /// What openraft reported.
        #[source]
        source: Box<Fatal<u64>>,
    },
    /// openraft refused the change for another reason (it conflicts with the membership as
    /// it is, say a learner it does not know).
    #[error("the membership change was refused: {source}")]
    Refused {
        /// What openraft reported.
        source: Box<ClientWriteError<u64, BasicNode>>,
    },
}

impl MembershipError {
    fn of(error: RaftError<u64, ClientWriteError<u64, BasicNode>>) -> MembershipError {
        match error {
            RaftError::Fatal(source) => MembershipError::Raft {
                source: Box::new(source),
            },
            RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
                MembershipError::NotLeader {
                    leader: forward.leader_id,
                }
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(
                ChangeMembershipError::InProgress(_),
            )) => MembershipError::InProgress,
            RaftError::APIError(source) => MembershipError::Refused {
                source: Box::new(source),
            },
        }
    }
}

/// The members in `metrics`' membership (the latest one in the log), by id.
pub(crate) fn members_of(metrics: &RaftMetrics<u64, BasicNode>) -> Vec<Member> {
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(id, node)| Member {
            id: *id,
            addrs: MemberAddrs::of(node),
            voter: voters.contains(id),
        })
        .collect()
}

fn leader_only(metrics: &RaftMetrics<u64, BasicNode>) -> Result<(), MembershipError> {
    if metrics.state == ServerState::Leader {
        Ok(())
    } else {
        Err(MembershipError::NotLeader {
            leader: metrics.current_leader.filter(|id| *id != metrics.id),
        })
    }
}

impl Meta {
    /// The members of the group (voters and learners) with both addresses, by id, as this
    /// master's log says (the leader's is the latest).
    pub fn membership(&self) -> Vec<Member> {
        members_of(&self.raft().metrics().borrow())
    }

    /// Adds master `id` at `addrs` to the group: as a learner, then, once its log has caught up
    /// with the leader's (waiting at most `catch_up`), as a voter. Returns the new members.
    /// Called again for a learner with the same addresses, it resumes the wait.
    ///
    /// # Errors
    /// [`MembershipError::NotLeader`] on a follower; [`MembershipError::InvalidId`],
    /// [`MembershipError::AlreadyVoter`], [`MembershipError::LearnerElsewhere`] or
    /// [`MembershipError::AddressTaken`] for a request that cannot be done;
    /// [`MembershipError::NotCaughtUp`] if the learner did not catch up in time (it stays a
    /// learner); [`MembershipError::InProgress`] while another change commits;
    /// [`MembershipError::Timeout`] if a step did not commit in time.
    pub async fn add_master(
        &self,
        id: u64,
        addrs: MemberAddrs,
        catch_up: Duration,
    ) -> Result<Vec<Member>, MembershipError> {
        if id == 0 {
            return Err(MembershipError::InvalidId);
        }
        leader_only(&self.metrics())?;
        let members = self.membership();
        match members.iter().find(|m| m.id == id) {
            Some(member) if member.voter => return Err(MembershipError::AlreadyVoter { id }),
            Some(member) if member.addrs.rpc != addrs.rpc => {
                return Err(MembershipError::LearnerElsewhere {
                    id,
                    rpc: member.addrs.rpc.clone(),
                })
            }
            Some(_) => info!(
                id,
                "master is a learner already: waiting for it to catch up"
            ),
            None => {
                for member in &members {
                    let http = addrs.http.as_ref();
                    let taken = if member.addrs.rpc == addrs.rpc {
                        Some(&addrs.rpc)
                    } else {
                        http.filter(|http| member.addrs.http.as_ref() == Some(*http))
                    };
                    if let Some(addr) = taken {
                        return Err(MembershipError::AddressTaken {
                            addr: addr.clone(),
                            owner: member.id,
                        });
                    }
                }
                let added = tokio::time::timeout(
                    CHANGE_TIMEOUT,
                    self.raft().add_learner(id, addrs.node(), false),
                );
                added
                    .await
                    .map_err(|_| MembershipError::Timeout {
                        after: CHANGE_TIMEOUT,
                    })?
                    .map_err(MembershipError::of)?;
                info!(id, rpc = %addrs.rpc, http = ?addrs.http, "master added as a learner");
            }
        }
        self.await_caught_up(id, catch_up).await?;
        let promote = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
        self.change(promote).await?;
        info!(id, "master is a voter now");
        Ok(self.membership())
    }

    /// Removes master `id` (a voter or a learner) from the group; returns the members left.
    ///
    /// # Errors
    /// [`MembershipError::NotLeader`] on a follower, [`MembershipError::NotMember`] for an
    /// unknown id, [`MembershipError::LastVoter`] for the only voter,
    /// [`MembershipError::InProgress`] while another change commits,
    /// [`MembershipError::Timeout`] if a step did not commit in time.
    pub async fn remove_master(&self, id: u64) -> Result<Vec<Member>, MembershipError> {
        leader_only(&self.metrics())?;
        let members = self.membership();
        let member = members
            .iter()
            .find(|m| m.id == id)
            .ok_or(MembershipError::NotMember { id })?;
        let change = if member.voter {
            if members.iter().filter(|m| m.voter).count() == 1 {
                return Err(MembershipError::LastVoter { id });
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.change(change).await?;
        info!(id, "master removed from the group");
        Ok(self.membership())
    }

    /// Commits one membership change (both steps of joint consensus for voters); a removed
    /// voter leaves the membership altogether.
    async fn change(&self, change: ChangeMembers<u64, BasicNode>) -> Result<(), MembershipError> {
        // Two steps, each bounded by CHANGE_TIMEOUT.
        let after = CHANGE_TIMEOUT * 2;
        tokio::time::timeout(after, self.raft().change_membership(change, false))
            .await
            .map_err(|_| MembershipError::Timeout { after })?
            .map_err(MembershipError::of)?;
        Ok(())
    }

    /// Waits until learner `id` has replicated the leader's log as of now, at most `timeout`.
    async fn await_caught_up(&self, id: u64, timeout: Duration) -> Result<(), MembershipError> {
        let mut metrics = self.raft().metrics();
        let target = metrics.borrow().last_log_index.unwrap_or(0);
        let matched = |m: &RaftMetrics<u64, BasicNode>| {
            m.replication
                .as_ref()
                .and_then(|r| r.get(&id).copied().flatten())
                .map(|log_id| log_id.index)
        };
        let waited = tokio::time::timeout(timeout, async {
            loop {
                {
                    let now = metrics.borrow_and_update();
                    leader_only(&now)?;
                    if matched(&now).is_some_and(|index| index >= target) {
                        return Ok(());
                    }
                }
                if metrics.changed().await.is_err() {
                    return Err(MembershipError::NotLeader { leader: None });
                }
            }
        });
        match waited.await {
            Ok(result) => result,
            Err(_) => Err(MembershipError::NotCaughtUp {
                id,
                after: timeout,
                matched: matched(&metrics.borrow()),
                target,
            }),
        }
    }
}

/// Whether another master of `members` (this node's cluster file) already belongs to a group,
/// as a pristine initialiser must check before it initialises one (see the module docs).
/// A master that refuses the connection (not running) counts as not belonging; one that does
/// not answer within [`PROBE_TIMEOUT`] is asked up to [`PROBE_ROUNDS`] times first.
pub(crate) async fn group_exists(
    node_id: u64,
    members: &BTreeMap<u64, BasicNode>,
    secret: &Arc<str>,
) -> bool {
    let mut pending: Vec<(u64, String)> = members
        .iter()
        .filter(|(id, _)| **id != node_id)
        .map(|(id, node)| (*id, MemberAddrs::of(node).rpc))
        .collect();
    // A peer that refuses the connection is not running; one that is running but slow to
    // answer (a loaded machine) is asked again, so that a slow member of an existing group is
    // not taken for a pristine one.
    for round in 1..=PROBE_ROUNDS {
        let probes = pending.iter().map(|(id, rpc)| async move {
            let answer = network::group_voters(rpc, secret, PROBE_TIMEOUT).await;
            (*id, answer)
        });
        let mut unanswered = Vec::new();
        for (id, answer) in futures::future::join_all(probes).await {
            match answer {
                Ok(voters) if !voters.is_empty() => {
                    warn!(
                        node_id,
                        peer = id,
                        ?voters,
                        "another master already belongs to a metadata group"
                    );
                    return true;
                }
                Ok(_) => debug!(node_id, peer = id, "peer is pristine too"),
                Err(error) if is_refused(&error) => {
                    debug!(node_id, peer = id, %error, "peer is not running")
                }
                Err(error) => {
                    debug!(node_id, peer = id, round, %error, "peer did not answer the probe");
                    unanswered.push(id);
                }
            }
        }
        pending.retain(|(id, _)| unanswered.contains(id));
        if pending.is_empty() {
            break;
        }
    }
    if !pending.is_empty() {
        warn!(
            node_id,
            peers = ?pending.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            "peers did not answer whether they belong to a group; taking them for pristine"
        );
    }
    false
}

/// Whether a probe failed because nothing listens at the peer's address.
fn is_refused(error: &network::ProbeError) -> bool {
    matches!(
        error,
        network::ProbeError::Dial {
            source: jobs::Error::Io(e),
            ..
        } if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_addresses_round_trip_and_plain_nodes_parse() {
        let addrs = MemberAddrs::new("127.0.0.1:7004", "127.0.0.1:8083");
        let node = addrs.node();
        assert_eq!(node.addr, "127.0.0.1:7004 http=127.0.0.1:8083");
        assert_eq!(MemberAddrs::of(&node), addrs);
        let plain = MemberAddrs::of(&BasicNode::new("127.0.0.1:7001"));
        assert_eq!(plain.rpc, "127.0.0.1:7001");
        assert_eq!(plain.http, None);
        assert_eq!(plain.node(), BasicNode::new("127.0.0.1:7001"));
    }
}

//! The masters' metadata: a Raft-replicated state machine (openraft) shared by every master.
//!
//! - [`type_config`]: the openraft type configuration.
//! - [`command`]: the commands written to the log, batched into one [`command::Request`] per entry.
//! - [`state`]: [`state::MetaState`], the deterministic state every master applies commands to.
//! - [`log_store`]: the Raft log and vote on disk (append-only, fsync before an entry counts).
//! - [`state_machine`]: the openraft state machine over `MetaState`, with snapshots on disk.
//! - [`raft_rpc`]: Raft RPCs between masters, the server side: the tarpc `RaftService` on each
//!   master's `rpc` address (behind a selector byte), and `serve_raft_connection`.
//! - [`network`]: Raft RPCs between masters, the client side: one tarpc connection per peer,
//!   deadlines and openraft's error semantics.
//! - [`batcher`]: the proposal batcher (many commands per log entry and per fsync), and the
//!   fast refusal of writes on a follower or a cut-off leader.
//! - [`node`]: [`node::Meta`], the handle the rest of the master uses: start the Raft node,
//!   propose commands, read the state (linearizably if needed), follow leadership.
//! - [`membership`]: the members with both of their addresses, and adding or removing a master
//!   at runtime.

pub mod batcher;
pub mod command;
pub mod log_store;
pub mod membership;
pub mod network;
pub mod node;
pub mod raft_rpc;
pub mod state;
pub mod state_machine;
pub mod type_config;

#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod tests;

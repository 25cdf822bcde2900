//! The masters' metadata: a Raft-replicated state machine (openraft).
//!
//! - [`type_config`]: the openraft type configuration.
//! - [`command`]: the commands written to the log, batched into one [`command::Request`] per entry.
//! - [`state`]: [`state::MetaState`], the deterministic state every master applies commands to.
//! - [`log_store`]: the Raft log and vote on disk (append-only, fsync before an entry counts).
//! - [`state_machine`]: the openraft state machine over `MetaState`, with snapshots on disk.
//! - [`network`]: Raft RPCs between masters.
//! - [`node`]: [`node::Meta`], the handle the rest of the master uses: start the Raft node and
//!   propose commands (batched: many commands per log entry and per fsync).

pub mod command;
pub mod log_store;
pub mod network;
pub mod node;
pub mod state;
pub mod state_machine;
pub mod type_config;

#[cfg(test)]
mod tests;

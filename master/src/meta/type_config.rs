//! The openraft type configuration of the metadata group.

use std::io::Cursor;

use super::command::{Request, Response};

openraft::declare_raft_types!(
    /// Types of the masters' Raft group: log entries carry a [`Request`] (a batch of commands),
    /// applying one yields a [`Response`].
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A Raft node of the metadata group.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log id of the metadata log.
pub type LogId = openraft::LogId<u64>;

//! Raft RPCs between masters.
//!
//! For now a cluster runs exactly one master (a cluster file listing several is refused before
//! the metadata group starts), so a one-node group never sends a Raft RPC: openraft only opens
//! connections to other members. [`Network`] exists to satisfy openraft and refuses every call
//! with [`RPCError::Unreachable`]; multi-master replication over tarpc replaces it.

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;

use super::type_config::TypeConfig;

/// Why a Raft RPC could not be sent.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach master {target}: multi-master replication is not available yet")]
pub struct ReplicationUnavailable {
    /// The master the RPC was for.
    pub target: u64,
}

/// The connection factory handed to openraft: every connection is [`Unconnected`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Network;

/// A "connection" to another master that refuses every RPC.
#[derive(Clone, Copy, Debug)]
pub struct Unconnected {
    /// The master it would talk to.
    target: u64,
}

impl Unconnected {
    fn refuse<E: std::error::Error>(&self) -> RPCError<u64, BasicNode, E> {
        let error = ReplicationUnavailable {
            target: self.target,
        };
        RPCError::Unreachable(Unreachable::new(&error))
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Unconnected;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Unconnected {
        Unconnected { target }
    }
}

impl RaftNetwork<TypeConfig> for Unconnected {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(self.refuse())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        Err(self.refuse())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(self.refuse())
    }
}

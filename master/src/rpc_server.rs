//! The master's tarpc service for workers: a thin adapter that turns each call into a message to
//! the `WorkerRegistry` or the `Scheduler`, behind the secret-checking handshake.

use std::sync::Arc;

use actix::Addr;
use futures::{Future, StreamExt};
use jobs::lock::{LockError, LockRequest};
use jobs::rpc::{
    HeartbeatRequest, HeartbeatResponse, MasterService, RegisterWorkerRequest,
    RegisterWorkerResponse, RemoteError, ReportTaskStatusRequest,
};
use tarpc::context::Context;
use tarpc::server::{BaseChannel, Channel};
use tokio::net::TcpListener;
use tracing::{instrument, warn};

use crate::locks::Locks;
use crate::meta::raft_rpc;
use crate::meta::type_config::Raft;
use crate::registry::{Heartbeat, Register, WorkerRegistry};
use crate::scheduler::{ReportStatuses, Scheduler};

/// The service implementation: addresses of the actors that do the work.
#[derive(Clone)]
pub struct MasterRpc {
    registry: Addr<WorkerRegistry>,
    scheduler: Addr<Scheduler>,
    locks: Locks,
}

fn gone(e: actix::MailboxError) -> RemoteError {
    RemoteError::Unavailable {
        reason: format!("master is shutting down: {e}"),
    }
}

impl MasterService for MasterRpc {
    #[instrument(skip(self, _ctx), fields(name = %request.name))]
    async fn register_worker(
        self,
        _ctx: Context,
        request: RegisterWorkerRequest,
    ) -> Result<RegisterWorkerResponse, RemoteError> {
        self.registry.send(Register(request)).await.map_err(gone)?
    }

    async fn heartbeat(
        self,
        _ctx: Context,
        request: HeartbeatRequest,
    ) -> Result<HeartbeatResponse, RemoteError> {
        self.registry.send(Heartbeat(request)).await.map_err(gone)?
    }

    async fn report_task_status(
        self,
        _ctx: Context,
        request: ReportTaskStatusRequest,
    ) -> Result<(), RemoteError> {
        self.scheduler
            .send(ReportStatuses {
                worker_id: request.worker_id,
                statuses: request.statuses,
            })
            .await
            .map_err(gone)?
    }

    async fn lock(
        self,
        _ctx: Context,
        request: LockRequest,
    ) -> Result<Result<u64, LockError>, RemoteError> {
        match self.locks.handle(request).await {
            // The worker follows the hint to the leader and asks again.
            Err(LockError::NotLeader { .. }) => Err(RemoteError::NotLeader {
                leader: self.locks.leader_rpc(),
            }),
            answer => Ok(answer),
        }
    }
}

/// Serves the master's `rpc` address until `shutdown` resolves: after the handshake, a
/// connection's first byte selects [`MasterService`] (workers) or Raft (other masters).
/// Connections that fail the handshake or name no known service are logged and dropped.
pub async fn run(
    listener: TcpListener,
    secret: Arc<str>,
    raft: Raft,
    registry: Addr<WorkerRegistry>,
    scheduler: Addr<Scheduler>,
    locks: Locks,
    shutdown: impl Future<Output = ()>,
) {
    let service = MasterRpc {
        registry,
        scheduler,
        locks,
    };
    let serve_connection = move |mut stream: tokio::net::TcpStream| {
        let (service, raft) = (service.clone(), raft.clone());
        async move {
            match raft_rpc::read_selector(&mut stream).await {
                Ok(raft_rpc::SELECT_RAFT) => raft_rpc::serve_raft_connection(stream, raft).await,
                Ok(jobs::rpc::SELECT_MASTER_SERVICE) => {
                    BaseChannel::with_defaults(jobs::auth::transport(stream))
                        .execute(service.serve())
                        .for_each(|response| async move {
                            tokio::spawn(response);
                        })
                        .await
                }
                Ok(other) => warn!(
                    selector = other,
                    "unknown service selector; connection dropped"
                ),
                Err(error) => warn!(%error, "no service selector; connection dropped"),
            }
        }
    };
    jobs::auth::accept_loop(listener, secret, serve_connection, shutdown).await;
}

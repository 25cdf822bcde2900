//! The master's tarpc service for workers: a thin adapter that turns each call into a message to
//! the `WorkerRegistry` or the `Scheduler`, behind the secret-checking handshake.

use std::sync::Arc;

use actix::Addr;
use futures::{Future, StreamExt};
use jobs::rpc::{
    HeartbeatRequest, HeartbeatResponse, MasterService, RegisterWorkerRequest,
    RegisterWorkerResponse, RemoteError, ReportTaskStatusRequest,
};
use tarpc::context::Context;
use tarpc::server::{BaseChannel, Channel};
use tokio::net::TcpListener;
use tracing::instrument;

use crate::registry::{Heartbeat, Register, WorkerRegistry};
use crate::scheduler::{ReportStatuses, Scheduler};

/// The service implementation: addresses of the actors that do the work.
#[derive(Clone)]
pub struct MasterRpc {
    registry: Addr<WorkerRegistry>,
    scheduler: Addr<Scheduler>,
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
            .map_err(gone)
    }
}

/// Serves [`MasterService`] on `listener` until `shutdown` resolves. Connections that fail the
/// handshake are logged and dropped.
pub async fn run(
    listener: TcpListener,
    secret: Arc<str>,
    registry: Addr<WorkerRegistry>,
    scheduler: Addr<Scheduler>,
    shutdown: impl Future<Output = ()>,
) {
    let service = MasterRpc {
        registry,
        scheduler,
    };
    let serve_connection = move |stream| {
        let service = service.clone();
        BaseChannel::with_defaults(jobs::auth::transport(stream))
            .execute(service.serve())
            .for_each(|response| async move {
                tokio::spawn(response);
            })
    };
    jobs::auth::accept_loop(listener, secret, serve_connection, shutdown).await;
}

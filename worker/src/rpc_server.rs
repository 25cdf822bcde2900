//! The worker's tarpc service: launch and cancel attempts, serve map output to reducers,
//! release finished jobs — a thin adapter over the [`Executor`], behind the secret-checking
//! handshake.

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use jobs::rpc::{
    AttemptId, FetchPartitionRequest, FetchPartitionResponse, LaunchTasksRequest, RemoteError,
    WorkerService,
};
use jobs::JobId;
use tarpc::context::Context;
use tarpc::server::{BaseChannel, Channel};
use tokio::net::TcpListener;

use crate::executor::Executor;

/// The service implementation.
#[derive(Clone)]
pub struct WorkerRpc {
    executor: Executor,
}

impl WorkerService for WorkerRpc {
    async fn launch_tasks(
        self,
        _ctx: Context,
        request: LaunchTasksRequest,
    ) -> Result<(), RemoteError> {
        self.executor.launch(request.tasks)
    }

    async fn cancel_task(self, _ctx: Context, attempt: AttemptId) -> Result<(), RemoteError> {
        self.executor.cancel(&attempt);
        Ok(())
    }

    async fn fetch_partition(
        self,
        _ctx: Context,
        request: FetchPartitionRequest,
    ) -> Result<FetchPartitionResponse, RemoteError> {
        let store = self.executor.store().clone();
        let read = tokio::task::spawn_blocking(move || {
            store.read_chunk(
                request.map,
                request.partition,
                request.offset,
                request.max_len,
            )
        })
        .await
        .map_err(|e| RemoteError::Unavailable {
            reason: e.to_string(),
        })?;
        match read {
            Ok((data, total_len)) => Ok(FetchPartitionResponse { data, total_len }),
            // Missing output → NotFound (the map runs again); a bad offset → Invalid.
            Err(e) => Err(RemoteError::from(e)),
        }
    }

    async fn release_job(self, _ctx: Context, job_id: JobId) -> Result<(), RemoteError> {
        let executor = self.executor.clone();
        tokio::task::spawn_blocking(move || executor.release_job(job_id))
            .await
            .map(|_| ())
            .map_err(|e| RemoteError::Unavailable {
                reason: format!("releasing job {job_id}: {e}"),
            })
    }
}

/// Serves [`WorkerService`] on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    secret: Arc<str>,
    executor: Executor,
    shutdown: impl Future<Output = ()>,
) {
    let service = WorkerRpc { executor };
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

//! The real [`TaskLauncher`]: tarpc calls to workers over a [`WorkerPool`] (a failed call
//! drops the connection so the next one reconnects).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use jobs::pool::WorkerPool;
use jobs::rpc::{AttemptId, LaunchTasksRequest, TaskAssignment, WorkerServiceClient};
use jobs::JobId;
use tarpc::context;
use tracing::debug;

use crate::scheduler::{LaunchError, TaskLauncher};

/// Deadline of a launch or cancel call.
const CALL_DEADLINE: Duration = Duration::from_secs(5);

/// Launches through authenticated tarpc connections to workers.
#[derive(Clone)]
pub struct WorkerClients {
    pool: WorkerPool,
}

impl WorkerClients {
    /// Clients that authenticate with `secret`.
    pub fn new(secret: Arc<str>) -> WorkerClients {
        WorkerClients {
            pool: WorkerPool::new(secret),
        }
    }

    async fn client(&self, addr: &str) -> Result<WorkerServiceClient, LaunchError> {
        self.pool.get(addr).await.map_err(|e| LaunchError {
            addr: addr.to_string(),
            reason: e.to_string(),
        })
    }

    /// Sends a notice a worker may miss (a cancel, a release): a failure is logged and the
    /// connection dropped, nothing is retried.
    fn notify<F, Fut>(&self, addr: String, what: String, call: F) -> BoxFuture<'static, ()>
    where
        F: FnOnce(WorkerServiceClient) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), tarpc::client::RpcError>> + Send,
    {
        let this = self.clone();
        Box::pin(async move {
            let client = match this.client(&addr).await {
                Ok(client) => client,
                Err(error) => {
                    debug!(%addr, %error, "worker unreachable; {what} not sent");
                    return;
                }
            };
            if let Err(error) = call(client).await {
                debug!(%addr, %error, "{what} did not reach the worker");
                this.forget(&addr);
            }
        })
    }

    fn forget(&self, addr: &str) {
        self.pool.forget(addr);
    }
}

/// A call context with our explicit deadline (tarpc's default is 10 s).
fn deadline() -> context::Context {
    let mut ctx = context::current();
    ctx.deadline = Instant::now() + CALL_DEADLINE;
    ctx
}

impl TaskLauncher for WorkerClients {
    fn launch(
        &self,
        addr: String,
        tasks: Vec<TaskAssignment>,
    ) -> BoxFuture<'static, Result<(), LaunchError>> {
        let this = self.clone();
        Box::pin(async move {
            let client = this.client(&addr).await?;
            match client
                .launch_tasks(deadline(), LaunchTasksRequest { tasks })
                .await
            {
                Ok(Ok(())) => Ok(()),
                Ok(Err(remote)) => Err(LaunchError {
                    addr,
                    reason: remote.to_string(),
                }),
                Err(rpc) => {
                    this.forget(&addr);
                    Err(LaunchError {
                        addr,
                        reason: rpc.to_string(),
                    })
                }
            }
        })
    }

    fn cancel(&self, addr: String, attempt: AttemptId) -> BoxFuture<'static, ()> {
        let what = format!("cancel of {attempt}");
        self.notify(addr, what, move |client| async move {
            client.cancel_task(deadline(), attempt).await.map(drop)
        })
    }

    fn release_job(&self, addr: String, job: JobId) -> BoxFuture<'static, ()> {
        let what = format!("release of job {job}");
        self.notify(addr, what, move |client| async move {
            client.release_job(deadline(), job).await.map(drop)
        })
    }
}

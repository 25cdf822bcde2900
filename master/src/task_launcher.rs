//! `TaskLauncher`: how the scheduler reaches workers. The real one speaks tarpc
//! ([`crate::worker_client`]); tests plug in a fake.

use futures::future::BoxFuture;
use jobs::rpc::{AttemptId, TaskAssignment};
use jobs::JobId;

/// Why a launch did not reach a worker.
#[derive(Debug, thiserror::Error)]
#[error("cannot launch on {addr}: {reason}")]
pub struct LaunchError {
    /// The worker's address.
    pub addr: String,
    /// What failed.
    pub reason: String,
}

/// How the scheduler reaches workers. The real one speaks tarpc; tests plug in a fake.
pub trait TaskLauncher: Send + Sync + 'static {
    /// Sends attempts to the worker at `addr` (returns once the worker queued them).
    fn launch(
        &self,
        addr: String,
        tasks: Vec<TaskAssignment>,
    ) -> BoxFuture<'static, Result<(), LaunchError>>;
    /// Asks the worker at `addr` to stop an attempt (best effort).
    fn cancel(&self, addr: String, attempt: AttemptId) -> BoxFuture<'static, ()>;
    /// Tells the worker at `addr` that a job's map outputs can be deleted (best effort).
    fn release_job(&self, addr: String, job: JobId) -> BoxFuture<'static, ()>;
}

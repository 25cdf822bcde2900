//! The `task` job-author API: a handler that takes a JSON payload and returns a JSON result.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::ids::{JobId, TaskId};
use crate::lock::{LockError, LockGuard, LockService};

/// What a task handler knows about the run it is part of.
#[derive(Clone)]
pub struct TaskContext {
    /// The job this run belongs to.
    pub job_id: JobId,
    /// The task of that job.
    pub task_id: TaskId,
    /// 1 for the first attempt, 2 for the first retry, ...
    pub attempt: u32,
    /// Stays the same across retries of the same task: a handler with side effects can use it
    /// to do them at most once, since runs are at-least-once.
    pub idempotency_key: String,
    /// Set when the master cancels the task or its deadline passes.
    pub cancelled: Arc<AtomicBool>,
    /// The cluster's lock service (none when a handler runs outside a worker, as in a unit
    /// test).
    pub locks: Option<Arc<dyn LockService>>,
}

impl std::fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskContext")
            .field("job_id", &self.job_id)
            .field("task_id", &self.task_id)
            .field("attempt", &self.attempt)
            .field("idempotency_key", &self.idempotency_key)
            .field("cancelled", &self.is_cancelled())
            .field("locks", &self.locks.is_some())
            .finish()
    }
}

impl TaskContext {
    /// Whether the handler should stop early.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// The owner name this attempt's locks are held under: `<job>/<task>#<attempt>`, unique
    /// per attempt, so a retry never inherits an earlier attempt's grant.
    pub fn lock_owner(&self) -> String {
        format!("{}/{}#{}", self.job_id, self.task_id, self.attempt)
    }

    /// Takes cluster lock `name` with a lease of `ttl` (keep it alive with
    /// [`LockGuard::keepalive`] for longer work), waiting up to `wait` in line (zero: try
    /// once). Use [`LockGuard::token`] to fence what the lock protects.
    ///
    /// It blocks while it waits: call it from `run` of a task that is not
    /// [`Task::is_instant`] (those run on the worker's async thread, where blocking panics).
    ///
    /// # Errors
    /// [`LockError::Held`] or [`LockError::WaitTimedOut`] if not granted; a transient error
    /// if the masters cannot answer.
    pub fn lock(&self, name: &str, ttl: Duration, wait: Duration) -> Result<LockGuard, LockError> {
        let service = self.locks.clone().ok_or_else(|| {
            LockError::Unavailable("no lock service: the task runs outside a worker".into())
        })?;
        LockGuard::acquire(service, name, &self.lock_owner(), ttl, wait)
    }
}

/// A single-shot job. `run` may panic: a panic fails the attempt with the panic's message.
pub trait Task: Send + Sync + 'static {
    /// Runs the task once. `Err` fails this attempt with that message (it is retried up to the
    /// job's `max_attempts`).
    ///
    /// # Errors
    /// Whatever the handler considers a failed run.
    fn run(&self, ctx: &TaskContext, payload: &Value) -> Result<Value, String>;

    /// Whether `run` returns at once without blocking or heavy work (like `echo`): such a task
    /// runs on the worker's async thread, saving the hop to a blocking thread. Default: false.
    fn is_instant(&self) -> bool {
        false
    }
}

//! The `task` job-author API: a handler that takes a JSON payload and returns a JSON result.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::Value;

use crate::ids::{JobId, TaskId};

/// What a task handler knows about the run it is part of.
#[derive(Clone, Debug)]
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
}

impl TaskContext {
    /// Whether the handler should stop early.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
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

//! Commands: every durable change to the masters' metadata, as it is written to the Raft log.
//!
//! Commands are facts decided by the leader (ids, times and task plans are in the command, so
//! applying it is deterministic on every master). One log entry carries a batch of them
//! ([`Request`]), so that many changes cost one append and one fsync.

use jobs::registry::JobName;
use jobs::rpc::{Counters, InputSplit, TaskOutput};
use jobs::spec::Json;
use jobs::{JobId, JobSpec, JobState, TaskId, WorkerId};
use serde::{Deserialize, Serialize};

/// One Raft log entry's payload: commands applied in order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The commands.
    pub commands: Vec<Command>,
}

/// What applying a [`Request`] returned: one result per command, in order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The results.
    pub results: Vec<CommandResult>,
}

/// The plan of a submitted job's tasks, decided by the leader at submission.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TaskPlan {
    /// A map task over one split.
    Map {
        /// Its id.
        id: TaskId,
        /// Its input.
        split: InputSplit,
    },
    /// A reduce task for one partition.
    Reduce {
        /// Its id.
        id: TaskId,
        /// Its partition.
        partition: u32,
    },
    /// The single run of a `task` job.
    Run {
        /// Its id.
        id: TaskId,
    },
}

impl TaskPlan {
    /// The task's id.
    pub fn id(&self) -> TaskId {
        match self {
            TaskPlan::Map { id, .. } | TaskPlan::Reduce { id, .. } | TaskPlan::Run { id } => *id,
        }
    }
}

/// A finished attempt's record, as committed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskDone {
    /// The attempt that won.
    pub attempt: u32,
    /// Where it ran (and, for a map, where its output lives).
    pub worker_id: WorkerId,
    /// What it produced.
    pub output: TaskOutput,
    /// Its counters.
    pub counters: Counters,
    /// When it started on the worker (ms since the Unix epoch).
    pub started_ms: u64,
    /// When it finished.
    pub finished_ms: u64,
}

/// A durable change to the metadata.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// A job was accepted, with its task plan.
    SubmitJob {
        /// Its id.
        id: JobId,
        /// What the user submitted (paths made absolute).
        spec: JobSpec,
        /// Acceptance time, ms since the Unix epoch.
        at_ms: u64,
        /// Its tasks (maps then reduces, or one run).
        tasks: Vec<TaskPlan>,
        /// The recurring job this is a firing of, if any.
        parent: Option<JobId>,
    },
    /// The job's first task was launched.
    StartJob {
        /// The job.
        id: JobId,
        /// When.
        at_ms: u64,
    },
    /// A task attempt succeeded; the first record for a task wins, later ones are ignored.
    FinishTask {
        /// The job.
        job_id: JobId,
        /// The task.
        task_id: TaskId,
        /// The record.
        done: TaskDone,
    },
    /// Finished map outputs that are gone (their worker died, or a reducer could not fetch
    /// them): those map tasks must run again.
    LoseMapOutputs {
        /// The job.
        job_id: JobId,
        /// The map tasks.
        tasks: Vec<TaskId>,
    },
    /// The job ended (succeeded, failed or cancelled); ignored if it had already ended.
    FinishJob {
        /// The job.
        id: JobId,
        /// Its final state.
        state: JobState,
        /// Why it failed or was cancelled.
        error: Option<String>,
        /// A task job's result.
        result: Option<Json>,
        /// Output files (a MapReduce job's part files and `_SUCCESS`).
        output: Vec<String>,
        /// When.
        at_ms: u64,
    },
    /// A worker registered: the same name keeps its id across restarts.
    RegisterWorker {
        /// Its configured name.
        name: String,
        /// Where it listens.
        rpc_addr: String,
        /// Its slots.
        slots: u32,
        /// The jobs it serves.
        jobs: Vec<JobName>,
    },
    /// The leader reserves Snowflake time up to `until_ms`; ids issued after a failover start
    /// above it.
    ReserveIds {
        /// The end of the reserved window, ms since the Snowflake epoch.
        until_ms: u64,
    },
    /// `owner` asks for lock `name`: granted if it is free (or already `owner`'s: a new grant,
    /// with no gap); otherwise queued at the back if `ticket` is set (a waiting acquire), or
    /// refused.
    AcquireLock {
        /// The lock.
        name: String,
        /// Who asks.
        owner: String,
        /// The lease's time to live; the leader keeps the lease's clock.
        ttl_ms: u64,
        /// Set for a waiting acquire: names the waiter, so the leader can wake it.
        ticket: Option<u64>,
        /// When (ms since the Unix epoch), for display.
        at_ms: u64,
    },
    /// The holder releases the lock; it passes to the first waiter, if any.
    ReleaseLock {
        /// The lock.
        name: String,
        /// The holder.
        owner: String,
        /// The holder's fencing token: a stale one is refused.
        token: u64,
        /// When.
        at_ms: u64,
    },
    /// The grant `token` of lock `name` ran out of lease (the leader saw no keepalive within
    /// its TTL); the lock passes to the first waiter, if any. Ignored if that grant has ended.
    ExpireLock {
        /// The lock.
        name: String,
        /// The grant that expired.
        token: u64,
        /// When.
        at_ms: u64,
    },
    /// A waiting acquire gave up (its `wait_ms` passed): it leaves the queue, unless it was
    /// granted meanwhile (then the result is the grant).
    AbandonLockWait {
        /// The lock.
        name: String,
        /// The waiting owner.
        owner: String,
        /// The waiter.
        ticket: u64,
    },
    /// A new leader drops every queued waiter: their requests were held by an earlier leader,
    /// whose clients get an error and ask again.
    DropLockWaiters,
}

/// What applying a command returned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CommandResult {
    /// Applied.
    Applied,
    /// Ignored: it repeats a change already applied (a duplicate completion, an already
    /// finished job). Harmless by design.
    Ignored,
    /// The command names a job that does not exist.
    UnknownJob,
    /// A worker's id.
    Worker(WorkerId),
    /// The lock was granted with this fencing token.
    LockGranted {
        /// The token.
        token: u64,
    },
    /// The lock is held by another owner; the acquire waits in the queue.
    LockQueued,
    /// The lock is held by another owner (a `try` acquire is refused).
    LockHeld {
        /// The holder.
        owner: String,
    },
    /// The grant ended; the lock passed to `next`, if a waiter was queued.
    LockReleased {
        /// The waiter that got it.
        next: Option<LockHandoff>,
    },
    /// The owner and token do not name the lock's current grant.
    LockStale {
        /// The current holder, if any.
        holder: Option<(String, u64)>,
    },
}

/// A lock passed to a queued waiter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHandoff {
    /// The waiter's ticket.
    pub ticket: u64,
    /// Its fencing token.
    pub token: u64,
}

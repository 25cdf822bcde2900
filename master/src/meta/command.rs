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
}

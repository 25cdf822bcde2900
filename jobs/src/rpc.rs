//! The tarpc services between the nodes, and their messages.
//!
//! - [`MasterService`] runs on every master's `rpc` address; workers call it to register,
//!   heartbeat and report task outcomes.
//! - [`WorkerService`] runs on every worker's `rpc` address; the master launches and cancels
//!   tasks through it, and reducers fetch map output from it (the shuffle).
//!
//! Every method returns `Result<T, RemoteError>`; the caller also sees tarpc's own
//! `RpcError` (deadline, disconnect), so call sites handle both layers (`.await??`).
//! Long work never runs inside a call: `launch_tasks` only acknowledges, and the outcome comes
//! back through `report_task_status`.

use serde::{Deserialize, Serialize};

use crate::ids::{JobId, TaskId, WorkerId};
use crate::registry::JobName;
use crate::spec::Json;

/// Sent by a client right after the handshake on a master's `rpc` address, naming the service
/// it wants: the master serves both worker traffic and Raft on that one address.
pub const SELECT_MASTER_SERVICE: u8 = b'W';

/// The largest chunk one `fetch_partition` call returns.
pub const FETCH_CHUNK: u64 = 4 << 20;

/// An error the remote side decided on (as opposed to a transport failure).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteError {
    /// This master is not the Raft leader; `leader` is the leader's RPC address if known.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// Where the leader's RPC service listens, if this node knows.
        leader: Option<String>,
    },
    /// The worker id is not registered (for example after a master restart): register again.
    #[error("unknown worker {worker_id}")]
    UnknownWorker {
        /// The id the caller used.
        worker_id: WorkerId,
    },
    /// The thing asked for does not exist (for example map output that was deleted).
    #[error("not found: {what}")]
    NotFound {
        /// What was not found.
        what: String,
    },
    /// The request is invalid.
    #[error("invalid request: {reason}")]
    Invalid {
        /// Why.
        reason: String,
    },
    /// The remote side failed internally; retrying later may help.
    #[error("remote failure: {reason}")]
    Unavailable {
        /// What failed.
        reason: String,
    },
}

/// One attempt of one task: the unit the master launches and a worker reports on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AttemptId {
    /// The job.
    pub job_id: JobId,
    /// The task within the job.
    pub task_id: TaskId,
    /// 1-based attempt number; backups and retries get new numbers.
    pub attempt: u32,
}

impl std::fmt::Display for AttemptId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}#{}", self.job_id, self.task_id, self.attempt)
    }
}

/// `register_worker`: a worker announces itself (again, after a master failover or restart).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterWorkerRequest {
    /// The worker's configured name; the same name gets the same id.
    pub name: String,
    /// Where its `WorkerService` listens (the address it actually bound).
    pub rpc_addr: String,
    /// How many tasks it runs at once.
    pub slots: u32,
    /// The jobs linked into its binary.
    pub jobs: Vec<JobName>,
    /// Random per process start: a new incarnation has lost the old one's map outputs.
    pub incarnation: u64,
    /// Attempts it is running now (non-empty when re-registering with a new leader).
    pub running: Vec<AttemptId>,
}

/// Reply to `register_worker`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterWorkerResponse {
    /// The worker's id, allocated through the log.
    pub worker_id: WorkerId,
    /// How often to heartbeat, in milliseconds.
    pub heartbeat_interval_ms: u64,
}

/// `heartbeat`: the worker is alive and running these attempts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    /// Its id.
    pub worker_id: WorkerId,
    /// Its incarnation, as registered.
    pub incarnation: u64,
    /// Attempts running now.
    pub running: Vec<AttemptId>,
    /// The worker is shutting down and takes no new tasks.
    pub draining: bool,
}

/// Reply to `heartbeat`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// Attempts the worker runs that the master no longer wants (cancelled or superseded).
    pub cancel: Vec<AttemptId>,
}

/// Counters a task reports (shown per phase on the job page).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Records read (lines for a map, key/value pairs for a reduce).
    pub records_in: u64,
    /// Bytes read.
    pub bytes_in: u64,
    /// Records written.
    pub records_out: u64,
    /// Bytes written.
    pub bytes_out: u64,
}

impl Counters {
    /// Adds `other` to `self`.
    pub fn add(&mut self, other: &Counters) {
        self.records_in += other.records_in;
        self.bytes_in += other.bytes_in;
        self.records_out += other.records_out;
        self.bytes_out += other.bytes_out;
    }
}

/// Where one partition of a map task's output lies in its output file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Byte offset in the map output file.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// What a successful attempt produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TaskOutput {
    /// A map task's output: one sorted segment per reduce partition, on the worker's disk.
    Map {
        /// The segments, indexed by partition.
        segments: Vec<Segment>,
    },
    /// A reduce task wrote this file.
    Reduce {
        /// The `part-r-NNNNN` path.
        file: String,
    },
    /// A task handler returned this result.
    Run {
        /// The handler's result.
        result: Json,
    },
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TaskOutcome {
    /// It finished; the output is recorded.
    Succeeded(TaskOutput),
    /// It failed. `retryable` is false when trying again cannot help (e.g. an unknown job).
    Failed {
        /// The error or panic message.
        error: String,
        /// Whether another attempt may succeed.
        retryable: bool,
    },
    /// A reduce could not fetch a map output: that map task must run again. Not the
    /// reduce's fault, so it does not count as a failed attempt.
    FetchFailed {
        /// The map task whose output could not be fetched.
        map_task: TaskId,
        /// What went wrong.
        error: String,
    },
}

/// One finished attempt, as reported by a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// Which attempt.
    pub attempt: AttemptId,
    /// How it ended.
    pub outcome: TaskOutcome,
    /// Milliseconds since the Unix epoch when it started on the worker.
    pub started_ms: u64,
    /// Milliseconds since the Unix epoch when it ended.
    pub finished_ms: u64,
    /// Its counters.
    pub counters: Counters,
}

/// `report_task_status`: attempts that ended on a worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReportTaskStatusRequest {
    /// The reporting worker.
    pub worker_id: WorkerId,
    /// Finished attempts.
    pub statuses: Vec<TaskStatus>,
}

/// A byte range of one input file for one map task; the map handles the lines that start
/// within `start..end` (a line that starts before `end` is read to its end).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputSplit {
    /// The file.
    pub path: String,
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// Where a reducer finds one map task's output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapOutputLocation {
    /// The map task.
    pub map_task: TaskId,
    /// The attempt whose output was recorded.
    pub attempt: u32,
    /// The worker holding it.
    pub worker_id: WorkerId,
    /// That worker's RPC address.
    pub worker_addr: String,
    /// Length of this reducer's segment, so empty segments need no call.
    pub len: u64,
}

/// What a task attempt has to do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TaskWork {
    /// Map one split into `reducers` partitions.
    Map {
        /// The input.
        split: InputSplit,
        /// The number of partitions.
        reducers: u32,
        /// The job's params.
        params: Json,
    },
    /// Reduce one partition of every map output into `output_dir/part-r-NNNNN`.
    Reduce {
        /// The partition.
        partition: u32,
        /// The job's output directory.
        output_dir: String,
        /// Every map task's output.
        maps: Vec<MapOutputLocation>,
        /// The job's params.
        params: Json,
    },
    /// Run a task handler on a payload.
    Run {
        /// The payload.
        payload: Json,
    },
}

/// One attempt to start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskAssignment {
    /// Which attempt.
    pub attempt: AttemptId,
    /// The registered job name.
    pub job: String,
    /// The attempt's deadline, if the job has one.
    pub timeout_ms: Option<u64>,
    /// What to do.
    pub work: TaskWork,
}

/// `launch_tasks`: start these attempts (the call returns once they are queued).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LaunchTasksRequest {
    /// The attempts.
    pub tasks: Vec<TaskAssignment>,
}

/// `fetch_partition`: read part of one partition of a map output.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct FetchPartitionRequest {
    /// The map attempt whose output to read.
    pub map: AttemptId,
    /// The partition.
    pub partition: u32,
    /// Offset within the partition's segment.
    pub offset: u64,
    /// At most this many bytes (capped at [`FETCH_CHUNK`]).
    pub max_len: u64,
}

/// Reply to `fetch_partition`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FetchPartitionResponse {
    /// The bytes; shorter than asked only at the end of the segment.
    pub data: Vec<u8>,
    /// The segment's whole length.
    pub total_len: u64,
}

/// The master's RPC service for workers.
#[tarpc::service]
pub trait MasterService {
    /// Registers a worker (or re-registers it after a failover) and returns its id.
    async fn register_worker(
        request: RegisterWorkerRequest,
    ) -> Result<RegisterWorkerResponse, RemoteError>;
    /// Tells the master the worker is alive; the reply lists attempts to cancel.
    async fn heartbeat(request: HeartbeatRequest) -> Result<HeartbeatResponse, RemoteError>;
    /// Reports attempts that ended.
    async fn report_task_status(request: ReportTaskStatusRequest) -> Result<(), RemoteError>;
    /// A lock request from a task handler; the outer error is about reaching the leader, the
    /// inner one about the lock.
    async fn lock(
        request: crate::lock::LockRequest,
    ) -> Result<Result<u64, crate::lock::LockError>, RemoteError>;
}

/// A worker's RPC service.
#[tarpc::service]
pub trait WorkerService {
    /// Queues task attempts; outcomes come back through `report_task_status`.
    async fn launch_tasks(request: LaunchTasksRequest) -> Result<(), RemoteError>;
    /// Cancels a running or queued attempt; unknown attempts are ignored.
    async fn cancel_task(attempt: AttemptId) -> Result<(), RemoteError>;
    /// Reads a chunk of a map output partition (the shuffle).
    async fn fetch_partition(
        request: FetchPartitionRequest,
    ) -> Result<FetchPartitionResponse, RemoteError>;
    /// Deletes the map outputs of a job that has ended.
    async fn release_job(job_id: JobId) -> Result<(), RemoteError>;
}

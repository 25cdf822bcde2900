//! The [`ClusterApi`] trait the `master` crate implements, and the view types it answers with.
//!
//! The web layer holds no cluster state: every handler calls one method of the trait and renders
//! what comes back, as JSON (the serde impls here are the CONTRACT's shapes) or as HTML.
//! In JSON, snowflake ids (`JobId`, `TaskId`, `WorkerId`) are decimal strings and times are
//! RFC 3339 UTC strings with milliseconds; master ids are small numbers and stay numbers.

use std::time::Duration;

use futures::future::BoxFuture;
use jobs::lock::{LockError, LockRequest};
use jobs::rpc::Counters;
use jobs::{JobId, JobSpec, JobState, TaskId, TaskState, WorkerId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::json;

/// How many jobs one page of `GET /api/jobs` holds when the caller does not say.
pub const DEFAULT_LIMIT: usize = 50;
/// The most jobs one page of `GET /api/jobs` may hold; larger limits are lowered to this.
pub const MAX_LIMIT: usize = 1000;

/// What the web layer needs from the master. Every method returns a `'static` future so that
/// the implementation can clone its actor addresses into it and the handler can await it.
pub trait ClusterApi: Send + Sync + 'static {
    /// The cluster secret that mutating HTTP calls must present as a bearer token.
    fn secret(&self) -> &str;
    /// This master's own view of the Raft group; answered locally, never forwarded.
    fn health(&self) -> BoxFuture<'static, Health>;
    /// The masters and workers, as the leader knows them.
    fn cluster(&self) -> BoxFuture<'static, Result<ClusterView, ApiError>>;
    /// Accepts a validated spec and returns the new job's id.
    fn submit(&self, spec: JobSpec) -> BoxFuture<'static, Result<JobId, ApiError>>;
    /// One page of jobs, newest first, filtered by `query`.
    fn list_jobs(&self, query: JobQuery) -> BoxFuture<'static, Result<JobPage, ApiError>>;
    /// One job with its tasks. `wait`: if Some, resolve when the job reaches a final state or
    /// the duration passes (long poll).
    fn job(
        &self,
        id: JobId,
        wait: Option<Duration>,
    ) -> BoxFuture<'static, Result<JobView, ApiError>>;
    /// Cancels a job that has not ended yet.
    fn cancel(&self, id: JobId) -> BoxFuture<'static, Result<(), ApiError>>;
    /// The leader's HTTP address when this master is not the leader and knows which master is:
    /// JSON API calls are then forwarded there. `None` (the default) serves them here.
    fn leader_http(&self) -> Option<String> {
        None
    }
    /// Prometheus text exposition format, built by the master.
    fn metrics(&self) -> BoxFuture<'static, Result<String, ApiError>>;
    /// How many jobs there are of each kind in each state (for the UI's filter tabs and the
    /// glance). May lag the jobs by up to a second on a cluster with very many jobs, so that
    /// it stays cheap to ask for on every page.
    fn job_counts(&self) -> BoxFuture<'static, Result<JobCounts, ApiError>>;
    /// Carries out a lock request (`POST /api/locks/{name}/acquire|keepalive|release`) and
    /// returns the grant's fencing token.
    fn lock(&self, request: LockRequest) -> BoxFuture<'static, Result<u64, LockError>>;
    /// Every lock that is held or waited for (`GET /api/locks`), by name.
    fn locks(&self) -> BoxFuture<'static, Result<Vec<LockView>, ApiError>>;
    /// The members of the metadata group (voters and learners), as this master's log says
    /// (`GET /api/masters`; followers forward it, so it is the leader's view).
    fn masters(&self) -> BoxFuture<'static, Result<MembersView, ApiError>>;
    /// Adds a master to the metadata group (`POST /api/masters`): as a learner, then, once its
    /// log has caught up (a bounded wait), as a voter. Returns the members after the change.
    fn add_master(&self, master: NewMaster) -> BoxFuture<'static, Result<MembersView, ApiError>>;
    /// Removes a master from the metadata group (`DELETE /api/masters/{id}`). Returns the
    /// members after the change.
    fn remove_master(&self, id: u64) -> BoxFuture<'static, Result<MembersView, ApiError>>;
}

/// A lock, as `GET /api/locks` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockView {
    /// Its name.
    pub name: String,
    /// Who holds it (null while it passes between waiters, which it does in one commit, so
    /// practically never).
    pub owner: Option<String>,
    /// The holder's fencing token.
    pub token: Option<u64>,
    /// The holder's lease TTL.
    pub ttl_ms: Option<u64>,
    /// When it was granted; `granted_at` in JSON.
    #[serde(rename = "granted_at", with = "json::opt_time")]
    pub granted_ms: Option<u64>,
    /// How long the lease has left by the leader's clock (null until the leader starts it).
    pub expires_in_ms: Option<u64>,
    /// The owners waiting for it, first in line first.
    pub waiters: Vec<String>,
}

/// Why the master could not do what a request asked; each variant picks the HTTP status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is invalid (for example a spec naming a job no worker runs).
    #[error("{0}")]
    BadRequest(String),
    /// 404: the job (or other thing) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// 409: the request conflicts with the current state (for example cancelling a finished job).
    #[error("{0}")]
    Conflict(String),
    /// 503: the cluster cannot answer now (no leader, leader unreachable); retry later.
    #[error("{0}")]
    Unavailable(String),
}

/// A master's role in the Raft group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Accepts writes and runs the scheduler.
    Leader,
    /// Replicates the log and forwards API calls to the leader.
    Follower,
    /// Asking for votes after losing touch with a leader.
    Candidate,
    /// Replicating but not voting (while joining).
    Learner,
}

impl Role {
    /// The lowercase name used in JSON and in the UI.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
        }
    }
}

/// `GET /api/health`: `{"id": 1, "role": "leader", "leader": 1, "term": 3, "last_log_index":
/// 42, "last_applied": 42, "membership": "voter"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// This master's Raft node id.
    pub id: u64,
    /// Its role now.
    pub role: Role,
    /// The leader it knows of, if any.
    pub leader: Option<u64>,
    /// Its current Raft term.
    pub term: u64,
    /// The index of its last log entry (`null` while its log is empty), to show how far it
    /// has replicated.
    #[serde(default)]
    pub last_log_index: Option<u64>,
    /// The index of the last entry it applied: everything up to it is committed (openraft 0.9
    /// reports the applied index, which trails the commit index only while it applies).
    #[serde(default)]
    pub last_applied: Option<u64>,
    /// Its place in the membership, as its own log says (a master that was added but has not
    /// heard from the leader yet still says `none`).
    #[serde(default)]
    pub membership: Membership,
}

/// A master's place in the metadata group's membership.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Membership {
    /// Counts in elections and commits.
    Voter,
    /// Replicated to, but does not vote (while it catches up after being added).
    Learner,
    /// Not a member: a master of the cluster file not added yet, or removed.
    #[default]
    #[serde(rename = "none")]
    NotMember,
}

impl Membership {
    /// The name used in JSON (`voter`, `learner`, `none`).
    pub fn as_str(self) -> &'static str {
        match self {
            Membership::Voter => "voter",
            Membership::Learner => "learner",
            Membership::NotMember => "none",
        }
    }
}

/// `POST /api/masters`: the master to add, `{"id": 4, "rpc": "127.0.0.1:7004", "http":
/// "127.0.0.1:8083"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMaster {
    /// Its Raft node id (at least 1, not a member yet).
    pub id: u64,
    /// Its tarpc address (`ip:port`), as in its `[[master]]` entry.
    pub rpc: String,
    /// Its HTTP address (`ip:port`), as in its `[[master]]` entry.
    pub http: String,
}

/// One member of the metadata group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// Its Raft node id.
    pub id: u64,
    /// Its tarpc address.
    pub rpc: String,
    /// Its HTTP address, if known.
    pub http: Option<String>,
    /// Voter or learner.
    pub membership: Membership,
}

/// `GET /api/masters`, and the answer to adding or removing one: the members after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersView {
    /// The leader's id, if one is known.
    pub leader: Option<u64>,
    /// Every member, by id.
    pub masters: Vec<MemberView>,
}

/// `GET /api/cluster`: every master and worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// The current leader's id, if there is one.
    pub leader: Option<u64>,
    /// The masters of the Raft group.
    pub masters: Vec<MasterView>,
    /// The workers that have registered.
    pub workers: Vec<WorkerView>,
}

/// One master, as listed by `GET /api/cluster`: every member of the group and every master of
/// the serving master's cluster file. Role, term and indices are what the master itself said
/// in its `GET /api/health` just now; `null` if it did not answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterView {
    /// Its Raft node id.
    pub id: u64,
    /// Its tarpc address (Raft and worker traffic).
    pub rpc: String,
    /// Its HTTP address, so the UI can link to it.
    pub http: String,
    /// Its role, as it says.
    pub role: Option<Role>,
    /// Its current term, as it says.
    pub term: Option<u64>,
    /// The index of its last log entry, to show replication lag.
    pub last_log_index: Option<u64>,
    /// The index of the last entry it applied.
    #[serde(default)]
    pub last_applied: Option<u64>,
    /// Voter, learner or not a member, as the serving master's log says.
    #[serde(default)]
    pub membership: Membership,
    /// Whether it answered its health check just now.
    #[serde(default)]
    pub reachable: bool,
    /// Why it did not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One worker, as listed by `GET /api/cluster`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerView {
    /// Its id (a decimal string in JSON).
    #[serde(with = "json::id")]
    pub id: WorkerId,
    /// Its configured name.
    pub name: String,
    /// Where its tarpc service listens.
    pub rpc: String,
    /// How many tasks it runs at once.
    pub slots: u32,
    /// How many attempts it runs now, to show load.
    pub running: u32,
    /// Whether its heartbeats arrive in time.
    pub alive: bool,
    /// When its last heartbeat arrived (ms since the epoch); `last_heartbeat_at` in JSON.
    #[serde(rename = "last_heartbeat_at", with = "json::opt_time")]
    pub last_heartbeat_ms: Option<u64>,
    /// The names of the jobs linked into its binary.
    pub jobs: Vec<String>,
    /// The same jobs with their kinds, so a form can offer only the names of one kind.
    #[serde(default)]
    pub served: Vec<ServedJob>,
    /// The fraction (0 to 1) of the placement ring it owns: the share of keys (keyed tasks,
    /// reduce partitions) it owns among workers that all serve the job; a key whose owner does
    /// not serve the job goes to the next candidate that does. 0 for a dead worker, and on a
    /// master that does not lead.
    #[serde(default)]
    pub ring_share: f64,
}

/// `ring_share` is a fraction computed from ring positions (or 0), never NaN, so equality is an
/// equivalence and the views stay `Eq` (as [`ClusterView`] needs).
impl Eq for WorkerView {}

/// A job a worker serves: its kind and its registered name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServedJob {
    /// `mapreduce` or `task`, as in a spec's `kind`.
    pub kind: String,
    /// The registered name, as in a spec's `job`.
    pub name: String,
}

/// How many jobs of one kind are in one state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCount {
    /// `mapreduce`, `task`, ...
    pub kind: String,
    /// The state.
    pub state: JobState,
    /// How many jobs.
    pub jobs: u64,
}

/// Jobs counted by kind and state; pairs with no job may be left out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCounts {
    /// One entry per (kind, state) pair.
    pub counts: Vec<JobCount>,
}

impl JobCounts {
    /// How many jobs match a filter like [`JobQuery`]'s (`None` matches everything).
    pub fn matching(&self, state: Option<JobState>, kind: Option<&str>) -> u64 {
        self.counts
            .iter()
            .filter(|c| state.is_none_or(|s| c.state == s))
            .filter(|c| kind.is_none_or(|k| c.kind == k))
            .map(|c| c.jobs)
            .sum()
    }

    /// Every kind with at least one job, sorted.
    pub fn kinds(&self) -> Vec<&str> {
        let mut kinds: Vec<&str> = self
            .counts
            .iter()
            .filter(|c| c.jobs > 0)
            .map(|c| c.kind.as_str())
            .collect();
        kinds.sort_unstable();
        kinds.dedup();
        kinds
    }
}

/// The filter and page of `GET /api/jobs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobQuery {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs of this kind (`mapreduce`, `task`, ...).
    pub kind: Option<String>,
    /// At most this many jobs (1..=[`MAX_LIMIT`], default [`DEFAULT_LIMIT`]).
    pub limit: usize,
    /// Paging: only jobs with ids strictly below this one (the previous page's `next_before`).
    pub before: Option<JobId>,
}

impl Default for JobQuery {
    fn default() -> Self {
        JobQuery {
            state: None,
            kind: None,
            limit: DEFAULT_LIMIT,
            before: None,
        }
    }
}

/// One page of jobs, newest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobPage {
    /// The jobs of this page (without their tasks).
    pub jobs: Vec<JobView>,
    /// Pass as `before` to get the next page; `null` on the last page.
    #[serde(with = "json::opt_id")]
    pub next_before: Option<JobId>,
    /// How many jobs match the filter in all pages. Exact without a filter; with one it comes
    /// from [`ClusterApi::job_counts`] and so may lag by up to a second on a large cluster.
    pub total: u64,
}

/// One job, as `GET /api/jobs/{id}` returns it (CONTRACT.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    /// Its id (a decimal string in JSON).
    #[serde(with = "json::id")]
    pub id: JobId,
    /// `mapreduce`, `task`, ...
    pub kind: String,
    /// The registered job name.
    pub job: String,
    /// Where it is in its lifecycle.
    pub state: JobState,
    /// When it was accepted (ms since the epoch); `submitted_at` in JSON.
    #[serde(rename = "submitted_at", with = "json::time")]
    pub submitted_ms: u64,
    /// When its first task was launched; `started_at` in JSON.
    #[serde(rename = "started_at", with = "json::opt_time")]
    pub started_ms: Option<u64>,
    /// When it reached a final state; `finished_at` in JSON.
    #[serde(rename = "finished_at", with = "json::opt_time")]
    pub finished_ms: Option<u64>,
    /// Tasks done out of tasks known so far.
    pub progress: Progress,
    /// Why it failed, in full.
    pub error: Option<String>,
    /// The files it wrote.
    pub output: Vec<String>,
    /// What a `task` job's handler returned.
    pub result: Option<Value>,
    /// The recurring job this one is a firing of.
    #[serde(with = "json::opt_id")]
    pub parent: Option<JobId>,
    /// The spec as submitted (normalized by `JobSpec::to_json`).
    pub spec: Value,
    /// Counters summed per phase.
    pub counters: PhaseCounters,
    /// Its tasks; only in the single-job view (omitted from lists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<TaskView>>,
}

/// How far a job is: tasks done out of tasks known so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Tasks that succeeded.
    pub done: u64,
    /// All tasks of the job known so far.
    pub total: u64,
}

/// Counters summed over the map and the reduce phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseCounters {
    /// The map phase (and the single run of a `task` job).
    pub map: Counters,
    /// The reduce phase.
    pub reduce: Counters,
}

/// One task of a job, with its attempts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    /// Its id (a decimal string in JSON).
    #[serde(with = "json::id")]
    pub id: TaskId,
    /// `map`, `reduce` or `run`.
    pub kind: String,
    /// Its index within its phase (split or partition number).
    pub index: u32,
    /// Its state.
    pub state: TaskState,
    /// Every attempt so far, oldest first.
    pub attempts: Vec<AttemptView>,
}

/// One attempt of a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptView {
    /// 1-based attempt number.
    pub attempt: u32,
    /// The name of the worker it ran on.
    pub worker: String,
    /// When it was launched; `started_at` in JSON.
    #[serde(rename = "started_at", with = "json::opt_time")]
    pub started_ms: Option<u64>,
    /// When it ended; `finished_at` in JSON.
    #[serde(rename = "finished_at", with = "json::opt_time")]
    pub finished_ms: Option<u64>,
    /// `running`, `succeeded`, `failed`, `lost` or `superseded`.
    pub state: String,
    /// Why it failed.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::testing::{sample_job, sample_task};

    use super::*;

    #[test]
    fn a_job_serializes_to_the_contract_shape_and_back() {
        let mut job = sample_job(7_000_000_000_000_000_001, JobState::Running);
        job.parent = Some(JobId(42));
        job.tasks = Some(vec![sample_task()]);
        let value = serde_json::to_value(&job).unwrap();
        assert_eq!(value["id"], json!("7000000000000000001"));
        assert_eq!(value["parent"], json!("42"));
        assert_eq!(value["state"], json!("running"));
        assert_eq!(value["submitted_at"], json!("2024-05-01T12:00:00.250Z"));
        assert_eq!(value["started_at"], json!("2024-05-01T12:00:01.000Z"));
        assert_eq!(value["finished_at"], json!(null));
        assert_eq!(value["progress"], json!({"done": 1, "total": 3}));
        assert_eq!(value["counters"]["map"]["records_in"], json!(10));
        assert_eq!(value["tasks"][0]["id"], json!("900"));
        assert_eq!(
            value["tasks"][0]["attempts"][0]["started_at"],
            json!("2024-05-01T12:00:01.000Z")
        );
        assert!(value.get("submitted_ms").is_none());
        let back: JobView = serde_json::from_value(value).unwrap();
        assert_eq!(back, job);
    }

    #[test]
    fn list_entries_omit_tasks_and_pages_use_string_ids() {
        let page = JobPage {
            jobs: vec![sample_job(5, JobState::Queued)],
            next_before: Some(JobId(5)),
            total: 9,
        };
        let value = serde_json::to_value(&page).unwrap();
        assert!(value["jobs"][0].get("tasks").is_none());
        assert_eq!(value["next_before"], json!("5"));
        assert_eq!(value["total"], json!(9));
    }

    #[test]
    fn workers_and_roles_serialize_as_documented() {
        let worker = WorkerView {
            id: WorkerId(3),
            name: "w1".into(),
            rpc: "127.0.0.1:7101".into(),
            slots: 2,
            running: 1,
            alive: true,
            last_heartbeat_ms: Some(1_714_564_800_250),
            jobs: vec!["wordcount".into()],
            served: vec![ServedJob {
                kind: "mapreduce".into(),
                name: "wordcount".into(),
            }],
            ring_share: 0.25,
        };
        let value = serde_json::to_value(&worker).unwrap();
        assert_eq!(value["ring_share"], json!(0.25));
        let mut old = value.clone();
        old.as_object_mut().unwrap().remove("ring_share");
        let back: WorkerView = serde_json::from_value(old).unwrap();
        assert_eq!(back.ring_share, 0.0, "absent in older answers: 0");
        assert_eq!(value["id"], json!("3"));
        assert_eq!(
            value["last_heartbeat_at"],
            json!("2024-05-01T12:00:00.250Z")
        );
        assert_eq!(
            value["served"],
            json!([{"kind": "mapreduce", "name": "wordcount"}])
        );
        assert_eq!(
            serde_json::to_value(Role::Candidate).unwrap(),
            json!("candidate")
        );
        assert_eq!(Role::Learner.as_str(), "learner");
    }
}

#[cfg(test)]
mod count_tests {
    use super::*;

    #[test]
    fn counts_sum_over_a_filter() {
        let count = |kind: &str, state, jobs| JobCount {
            kind: kind.into(),
            state,
            jobs,
        };
        let counts = JobCounts {
            counts: vec![
                count("task", JobState::Failed, 2),
                count("task", JobState::Running, 3),
                count("mapreduce", JobState::Failed, 5),
                count("crawl", JobState::Queued, 0),
            ],
        };
        assert_eq!(counts.matching(None, None), 10);
        assert_eq!(counts.matching(Some(JobState::Failed), None), 7);
        assert_eq!(counts.matching(Some(JobState::Failed), Some("task")), 2);
        assert_eq!(counts.matching(None, Some("mapreduce")), 5);
        assert_eq!(counts.kinds(), ["mapreduce", "task"]);
    }
}

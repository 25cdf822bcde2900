//! `MasterApi`: the master's implementation of [`web::api::ClusterApi`], the bridge between the
//! HTTP layer and the actors and replicated state.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use actix::Addr;
use futures::future::BoxFuture;
use jobs::rpc::Counters;
use jobs::{JobId, JobSpec, JobState};
use openraft::ServerState;
use web::api::{
    ApiError, AttemptView, ClusterApi, ClusterView, Health, JobCount, JobCounts, JobPage, JobQuery,
    JobView, PhaseCounters, Progress, Role, ServedJob, TaskView, WorkerView,
};
use web::api::{MemberView, MembersView, NewMaster};

use crate::error::Error;
use crate::job_run::{AttemptState, TaskRun};
use crate::locks::Locks;
use crate::meta::command::TaskPlan;
use crate::meta::membership::{members_of, Member, MemberAddrs, MembershipError};
use crate::meta::node::Meta;
use crate::meta::state::{JobRecord, MetaState};
use crate::peers;
use crate::registry::{ListWorkers, WorkerRegistry};
use crate::scheduler::{CancelJob, JobTasks, Scheduler, SubmitJob, WatchJob, WorkerLoads};

/// Up to this many jobs, counts by state are computed afresh for every request (a pass over
/// them takes about a millisecond); above it, from [`JobStats`] cached for
/// [`STATS_MAX_AGE`], so that neither a busy UI nor a scraper makes every request O(all jobs).
const FRESH_STATS_LIMIT: usize = 10_000;
/// How stale cached [`JobStats`] may get while the metadata changes.
const STATS_MAX_AGE: Duration = Duration::from_secs(1);

/// The master's API.
#[derive(Clone)]
pub struct MasterApi {
    id: u64,
    secret: Arc<str>,
    meta: Meta,
    scheduler: Addr<Scheduler>,
    registry: Addr<WorkerRegistry>,
    locks: Locks,
    masters: Vec<jobs::config::MasterEntry>,
    /// The last [`JobStats`] computed, shared by the HTTP worker threads; not actor state.
    stats: Arc<Mutex<Option<CachedStats>>>,
}

/// The job kinds counted by [`JobStats`] (every kind `JobSpec::kind_name` returns).
const JOB_KINDS: [&str; 2] = ["mapreduce", "task"];
/// The task kinds counted by [`JobStats`].
const TASK_KINDS: [&str; 3] = ["map", "reduce", "run"];
/// The task states counted by [`JobStats`]: recorded as done, or not yet in a job that has not
/// ended.
const TASK_STATES: [&str; 2] = ["succeeded", "unfinished"];

/// Counts over every job, made in one pass over the metadata with plain arrays (9 ms for
/// 100,000 jobs in a release build): jobs by kind and state, tasks by kind and whether they
/// are done, and the durations of the recorded (winning) attempts.
#[derive(Debug, Default)]
struct JobStats {
    jobs: [[u64; JobState::ALL.len()]; JOB_KINDS.len()],
    tasks: [[u64; TASK_STATES.len()]; TASK_KINDS.len()],
    durations: [Histogram; TASK_KINDS.len()],
}

/// A Prometheus histogram of seconds over [`BUCKETS`] (counts per bucket, not cumulative).
#[derive(Clone, Debug, Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }
}

fn state_index(state: JobState) -> usize {
    JobState::ALL
        .iter()
        .position(|s| *s == state)
        .unwrap_or_default()
}

fn task_kind_slot(plan: &TaskPlan) -> usize {
    match plan {
        TaskPlan::Map { .. } => 0,
        TaskPlan::Reduce { .. } => 1,
        TaskPlan::Run { .. } => 2,
    }
}

impl JobStats {
    fn compute(state: &MetaState) -> JobStats {
        let mut stats = JobStats::default();
        for record in state.jobs.values() {
            let kind = JOB_KINDS
                .iter()
                .position(|k| *k == record.spec.kind_name())
                .unwrap_or_default();
            stats.jobs[kind][state_index(record.state)] += 1;
            let active = !record.state.is_final();
            for task in &record.tasks {
                let kind = task_kind_slot(&task.plan);
                match &task.done {
                    Some(done) => {
                        stats.tasks[kind][0] += 1;
                        let ms = done.finished_ms.saturating_sub(done.started_ms);
                        stats.durations[kind].observe(ms as f64 / 1000.0);
                    }
                    None if active => stats.tasks[kind][1] += 1,
                    None => {}
                }
            }
        }
        stats
    }

    /// How many jobs of `kind` are in `state`.
    fn jobs(&self, kind: &str, state: JobState) -> u64 {
        JOB_KINDS
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |k| self.jobs[k][state_index(state)])
    }

    /// How many tasks of `kind` (`map`, `reduce`, `run`) are in `state` (see [`TASK_STATES`]).
    fn tasks(&self, kind: &str, state: &str) -> u64 {
        match (
            TASK_KINDS.iter().position(|k| *k == kind),
            TASK_STATES.iter().position(|s| *s == state),
        ) {
            (Some(k), Some(s)) => self.tasks[k][s],
            _ => 0,
        }
    }

    fn counts(&self) -> JobCounts {
        let mut counts = Vec::new();
        for kind in JOB_KINDS {
            for state in JobState::ALL {
                let jobs = self.jobs(kind, state);
                if jobs > 0 {
                    counts.push(JobCount {
                        kind: kind.to_string(),
                        state,
                        jobs,
                    });
                }
            }
        }
        JobCounts { counts }
    }

    fn matching(&self, state: Option<JobState>, kind: Option<&str>) -> u64 {
        JOB_KINDS
            .iter()
            .filter(|k| kind.is_none_or(|want| **k == want))
            .flat_map(|k| {
                JobState::ALL
                    .into_iter()
                    .filter(|s| state.is_none_or(|want| *s == want))
                    .map(|s| self.jobs(k, s))
            })
            .sum()
    }
}

struct CachedStats {
    at: Instant,
    applied: Option<u64>,
    stats: Arc<JobStats>,
}

impl MasterApi {
    /// The API of master `id`.
    pub fn new(
        id: u64,
        secret: Arc<str>,
        meta: Meta,
        scheduler: Addr<Scheduler>,
        registry: Addr<WorkerRegistry>,
        locks: Locks,
        masters: Vec<jobs::config::MasterEntry>,
    ) -> MasterApi {
        MasterApi {
            id,
            secret,
            meta,
            scheduler,
            registry,
            locks,
            masters,
            stats: Arc::new(Mutex::new(None)),
        }
    }

    /// The [`JobStats`] of `state` (whose last applied log index is `applied`): computed now
    /// for a small cluster, else the cached ones unless they are older than [`STATS_MAX_AGE`]
    /// and the metadata has changed since.
    fn stats(&self, state: &MetaState, applied: Option<u64>) -> Arc<JobStats> {
        if state.jobs.len() <= FRESH_STATS_LIMIT {
            return Arc::new(JobStats::compute(state));
        }
        // Computing under the lock keeps concurrent requests from each making the same pass.
        let mut cache = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cached) = cache.as_ref() {
            if cached.applied == applied || cached.at.elapsed() < STATS_MAX_AGE {
                return cached.stats.clone();
            }
        }
        let stats = Arc::new(JobStats::compute(state));
        *cache = Some(CachedStats {
            at: Instant::now(),
            applied,
            stats: stats.clone(),
        });
        stats
    }
}

/// One page of jobs, newest first: walks the jobs from the newest (below `before`) and stops
/// as soon as the page is full, so an unfiltered page costs O(limit) however many jobs there
/// are. A filtered page walks past the jobs that do not match (O(jobs) at worst for a rare
/// state); `total` comes from `total_matching` instead of a second pass.
fn list_page(state: &MetaState, query: &JobQuery, total_matching: impl FnOnce() -> u64) -> JobPage {
    let matches = |r: &&JobRecord| {
        query.state.is_none_or(|s| r.state == s)
            && query
                .kind
                .as_deref()
                .is_none_or(|k| r.spec.kind_name() == k)
    };
    let upper = query
        .before
        .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
    let mut page: Vec<JobView> = Vec::new();
    let mut next_before = None;
    for record in state
        .jobs
        .range((std::ops::Bound::Unbounded, upper))
        .rev()
        .map(|(_, r)| r)
        .filter(matches)
    {
        if page.len() == query.limit {
            next_before = page.last().map(|j| j.id);
            break;
        }
        page.push(job_view(record));
    }
    let total = if query.state.is_none() && query.kind.is_none() {
        state.jobs.len() as u64
    } else {
        total_matching()
    };
    JobPage {
        jobs: page,
        next_before,
        total,
    }
}

fn role(state: ServerState) -> Role {
    match state {
        ServerState::Leader => Role::Leader,
        ServerState::Candidate => Role::Candidate,
        ServerState::Learner => Role::Learner,
        _ => Role::Follower,
    }
}

fn api_error(error: Error) -> ApiError {
    match error {
        Error::Rejected { reason } => ApiError::BadRequest(reason),
        Error::UnknownJob { id } => ApiError::NotFound(format!("no job {id}")),
        other => ApiError::Unavailable(other.to_string()),
    }
}

fn mailbox(error: actix::MailboxError) -> ApiError {
    ApiError::Unavailable(format!("the master is shutting down: {error}"))
}

fn read_state(state: &RwLock<MetaState>) -> std::sync::RwLockReadGuard<'_, MetaState> {
    // `apply` never panics half-way through a change, so a poisoned lock still holds a
    // consistent state.
    state.read().unwrap_or_else(|p| p.into_inner())
}

fn counters(record: &JobRecord) -> PhaseCounters {
    let mut phases = PhaseCounters {
        map: Counters::default(),
        reduce: Counters::default(),
    };
    for task in &record.tasks {
        let Some(done) = &task.done else { continue };
        match task.plan {
            TaskPlan::Map { .. } | TaskPlan::Run { .. } => phases.map.add(&done.counters),
            TaskPlan::Reduce { .. } => phases.reduce.add(&done.counters),
        }
    }
    phases
}

fn task_kind_index(plan: &TaskPlan, position: usize, maps: usize) -> (&'static str, u32) {
    match plan {
        TaskPlan::Map { .. } => ("map", position as u32),
        TaskPlan::Reduce { partition, .. } => ("reduce", *partition),
        TaskPlan::Run { .. } => ("run", (position - maps) as u32),
    }
}

fn task_views(
    record: &JobRecord,
    runs: Option<Vec<TaskRun>>,
    names: &HashMap<jobs::WorkerId, String>,
) -> Vec<TaskView> {
    let maps = record
        .tasks
        .iter()
        .filter(|t| matches!(t.plan, TaskPlan::Map { .. }))
        .count();
    let name = |w: jobs::WorkerId| names.get(&w).cloned().unwrap_or_else(|| w.to_string());
    record
        .tasks
        .iter()
        .enumerate()
        .map(|(position, task)| {
            let (kind, index) = task_kind_index(&task.plan, position, maps);
            let run = runs.as_ref().and_then(|r| r.get(position));
            let attempts: Vec<AttemptView> = match run {
                Some(run) => run
                    .attempts
                    .iter()
                    .map(|a| {
                        let (state, error) = match &a.state {
                            AttemptState::Running => ("running", None),
                            AttemptState::Succeeded => ("succeeded", None),
                            AttemptState::Failed(e) => ("failed", Some(e.clone())),
                            AttemptState::Lost => ("lost", None),
                            AttemptState::Superseded => ("superseded", None),
                        };
                        AttemptView {
                            attempt: a.number,
                            worker: name(a.worker),
                            started_ms: Some(a.launched_ms),
                            finished_ms: a.finished_ms,
                            state: state.to_string(),
                            error,
                        }
                    })
                    .collect(),
                None => task
                    .done
                    .iter()
                    .map(|d| AttemptView {
                        attempt: d.attempt,
                        worker: name(d.worker_id),
                        started_ms: Some(d.started_ms),
                        finished_ms: Some(d.finished_ms),
                        state: "succeeded".to_string(),
                        error: None,
                    })
                    .collect(),
            };
            let state = if task.done.is_some() {
                jobs::TaskState::Succeeded
            } else if run.is_some_and(TaskRun::is_running) {
                jobs::TaskState::Running
            } else if record.state == JobState::Failed && run.is_some_and(|r| r.failures > 0) {
                jobs::TaskState::Failed
            } else {
                jobs::TaskState::Pending
            };
            TaskView {
                id: task.plan.id(),
                kind: kind.to_string(),
                index,
                state,
                attempts,
            }
        })
        .collect()
}

/// The API view of a job record (without tasks).
pub fn job_view(record: &JobRecord) -> JobView {
    let (done, total) = record.progress();
    JobView {
        id: record.id,
        kind: record.spec.kind_name().to_string(),
        job: record.spec.job.clone(),
        state: record.state,
        submitted_ms: record.submitted_ms,
        started_ms: record.started_ms,
        finished_ms: record.finished_ms,
        progress: Progress { done, total },
        error: record.error.clone(),
        output: record.output.clone(),
        result: record.result.as_ref().map(|r| r.0.clone()),
        parent: record.parent,
        spec: record.spec.to_json(),
        counters: counters(record),
        tasks: None,
    }
}

impl MasterApi {
    /// Reads of job state come from the leader (followers forward them), and a leader answers
    /// them only once it has applied everything committed before its term: right after an
    /// election (or a restart of every master) its state may still lag, and a client must never
    /// see a job go back. Waits for that, at most [`READY_WAIT`]; a follower answers at once.
    async fn await_ready(&self) -> Result<(), ApiError> {
        let mut leadership = self.meta.subscribe_leadership();
        let ready = tokio::time::timeout(READY_WAIT, async {
            loop {
                let now = leadership.borrow_and_update().clone();
                if now.ready || !now.is_leader {
                    return;
                }
                if leadership.changed().await.is_err() {
                    return;
                }
            }
        });
        ready
            .await
            .map_err(|_| ApiError::Unavailable("the leader is still catching up; try again".into()))
    }
}

/// The longest a new leader holds a read while it catches up.
const READY_WAIT: Duration = Duration::from_secs(5);
/// The longest `POST /api/masters` waits for a new master's log to catch up before it makes it
/// a voter (the caller's HTTP timeout must be longer).
const CATCH_UP_WAIT: Duration = Duration::from_secs(10);

impl MasterApi {
    /// This master's own view of the group, from its metrics.
    fn own_health(&self) -> Health {
        let metrics = self.meta.metrics();
        let members = members_of(&metrics);
        Health {
            id: self.id,
            role: role(metrics.state),
            leader: metrics.current_leader,
            term: metrics.current_term,
            last_log_index: metrics.last_log_index,
            last_applied: metrics.last_applied.map(|l| l.index),
            membership: peers::membership_of(self.id, &members),
        }
    }

    /// The members, as this master's log says, with their HTTP addresses (from the cluster
    /// file for members whose membership entry carries none).
    fn members_view(&self, members: Vec<Member>) -> MembersView {
        let masters = members
            .iter()
            .map(|m| MemberView {
                id: m.id,
                rpc: m.addrs.rpc.clone(),
                http: peers::http_of(m.id, &members, &self.masters),
                membership: peers::membership_of(m.id, &members),
            })
            .collect();
        MembersView {
            leader: self.meta.leader().map(|(id, _)| id),
            masters,
        }
    }
}

fn membership_error(error: MembershipError) -> ApiError {
    let message = error.to_string();
    match error {
        MembershipError::InvalidId
        | MembershipError::AlreadyVoter { .. }
        | MembershipError::LearnerElsewhere { .. }
        | MembershipError::AddressTaken { .. }
        | MembershipError::LastVoter { .. } => ApiError::BadRequest(message),
        MembershipError::NotMember { .. } => ApiError::NotFound(message),
        MembershipError::InProgress | MembershipError::Refused { .. } => {
            ApiError::Conflict(message)
        }
        MembershipError::NotLeader { .. }
        | MembershipError::NotCaughtUp { .. }
        | MembershipError::Timeout { .. }
        | MembershipError::Raft { .. } => ApiError::Unavailable(message),
    }
}

impl ClusterApi for MasterApi {
    fn secret(&self) -> &str {
        &self.secret
    }

    fn health(&self) -> BoxFuture<'static, Health> {
        let health = self.own_health();
        Box::pin(async move { health })
    }

    fn cluster(&self) -> BoxFuture<'static, Result<ClusterView, ApiError>> {
        let this = self.clone();
        Box::pin(async move {
            let live = this.registry.send(ListWorkers).await.map_err(mailbox)?;
            let loads = this.scheduler.send(WorkerLoads).await.map_err(mailbox)?;
            let shares = this
                .scheduler
                .send(crate::scheduler::RingShares)
                .await
                .map_err(mailbox)?;
            let metrics = this.meta.metrics();
            let own = this.own_health();
            let members = this.meta.membership();
            let masters = peers::master_views(this.id, own, &members, &this.masters).await;
            let shared = this.meta.state();
            let state = read_state(&shared);
            let mut workers: Vec<WorkerView> = state
                .workers
                .iter()
                .map(|(name, record)| {
                    let info = live.iter().find(|w| w.id == record.id);
                    let mut served: Vec<ServedJob> = record
                        .jobs
                        .iter()
                        .map(|j| ServedJob {
                            kind: j.kind.as_str().to_string(),
                            name: j.name.clone(),
                        })
                        .collect();
                    served.sort();
                    served.dedup();
                    let mut names: Vec<String> = served.iter().map(|j| j.name.clone()).collect();
                    names.sort();
                    names.dedup();
                    WorkerView {
                        id: record.id,
                        name: name.clone(),
                        rpc: info.map_or_else(|| record.rpc_addr.clone(), |i| i.addr.clone()),
                        slots: record.slots,
                        running: loads.get(&record.id).copied().unwrap_or(0),
                        alive: info.is_some_and(|i| i.alive),
                        last_heartbeat_ms: info.map(|i| i.last_heartbeat_ms),
                        jobs: names,
                        served,
                        ring_share: shares.get(&record.id).copied().unwrap_or(0.0),
                    }
                })
                .collect();
            workers.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(ClusterView {
                leader: metrics.current_leader,
                masters,
                workers,
            })
        })
    }

    fn submit(&self, spec: JobSpec) -> BoxFuture<'static, Result<JobId, ApiError>> {
        let scheduler = self.scheduler.clone();
        Box::pin(async move {
            scheduler
                .send(SubmitJob { spec })
                .await
                .map_err(mailbox)?
                .map_err(api_error)
        })
    }

    fn list_jobs(&self, query: JobQuery) -> BoxFuture<'static, Result<JobPage, ApiError>> {
        let this = self.clone();
        Box::pin(async move {
            this.await_ready().await?;
            let applied = this.meta.metrics().last_applied.map(|l| l.index);
            let shared = this.meta.state();
            let state = read_state(&shared);
            Ok(list_page(&state, &query, || {
                this.stats(&state, applied)
                    .matching(query.state, query.kind.as_deref())
            }))
        })
    }

    fn job_counts(&self) -> BoxFuture<'static, Result<JobCounts, ApiError>> {
        let this = self.clone();
        Box::pin(async move {
            this.await_ready().await?;
            let applied = this.meta.metrics().last_applied.map(|l| l.index);
            let shared = this.meta.state();
            let state = read_state(&shared);
            Ok(this.stats(&state, applied).counts())
        })
    }

    fn lock(
        &self,
        request: jobs::lock::LockRequest,
    ) -> BoxFuture<'static, Result<u64, jobs::lock::LockError>> {
        let locks = self.locks.clone();
        Box::pin(async move { locks.handle(request).await })
    }

    fn locks(&self) -> BoxFuture<'static, Result<Vec<web::api::LockView>, ApiError>> {
        let this = self.clone();
        Box::pin(async move {
            this.await_ready().await?;
            let shared = this.meta.state();
            let state = read_state(&shared);
            Ok(this.locks.list(&state))
        })
    }

    fn job(
        &self,
        id: JobId,
        wait: Option<Duration>,
    ) -> BoxFuture<'static, Result<JobView, ApiError>> {
        let this = self.clone();
        Box::pin(async move {
            this.await_ready().await?;
            if let Some(wait) = wait {
                if let Some(ended) = this
                    .scheduler
                    .send(WatchJob { id })
                    .await
                    .map_err(mailbox)?
                {
                    let _ = tokio::time::timeout(wait, ended).await;
                }
            }
            let runs = this
                .scheduler
                .send(JobTasks { id })
                .await
                .map_err(mailbox)?;
            let shared = this.meta.state();
            let state = read_state(&shared);
            let record = state
                .jobs
                .get(&id)
                .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))?;
            let names = state
                .workers
                .iter()
                .map(|(name, w)| (w.id, name.clone()))
                .collect();
            let mut view = job_view(record);
            view.tasks = Some(task_views(record, runs, &names));
            Ok(view)
        })
    }

    fn cancel(&self, id: JobId) -> BoxFuture<'static, Result<(), ApiError>> {
        let scheduler = self.scheduler.clone();
        Box::pin(async move {
            scheduler
                .send(CancelJob { id })
                .await
                .map_err(mailbox)?
                .map_err(api_error)
        })
    }

    fn leader_http(&self) -> Option<String> {
        let (leader, _) = self.meta.leader()?;
        if leader == self.id {
            return None;
        }
        // A leader added at runtime is in the membership, not necessarily in this file.
        peers::http_of(leader, &self.meta.membership(), &self.masters)
    }

    fn metrics(&self) -> BoxFuture<'static, Result<String, ApiError>> {
        let this = self.clone();
        Box::pin(async move {
            let live = this.registry.send(ListWorkers).await.map_err(mailbox)?;
            let loads = this.scheduler.send(WorkerLoads).await.map_err(mailbox)?;
            let raft = this.meta.metrics();
            let applied = raft.last_applied.map(|l| l.index);
            let shared = this.meta.state();
            let state = read_state(&shared);
            let stats = this.stats(&state, applied);
            let alive: Vec<_> = live.iter().filter(|w| w.alive).collect();
            Ok(render_metrics(&MetricsInput {
                stats: &stats,
                workers_alive: alive.len(),
                workers_known: state.workers.len(),
                slots: alive.iter().map(|w| u64::from(w.slots)).sum(),
                attempts_running: loads.values().map(|n| u64::from(*n)).sum(),
                term: raft.current_term,
                last_log_index: raft.last_log_index.unwrap_or(0),
                last_applied: applied.unwrap_or(0),
                is_leader: raft.state == ServerState::Leader,
                locks_held: state.locks.values().filter(|l| l.holder.is_some()).count(),
                lock_waiters: state.locks.values().map(|l| l.waiters.len()).sum(),
                lock_tokens: state.last_lock_token,
            }))
        })
    }

    fn masters(&self) -> BoxFuture<'static, Result<MembersView, ApiError>> {
        let view = self.members_view(self.meta.membership());
        Box::pin(async move { Ok(view) })
    }

    fn add_master(&self, master: NewMaster) -> BoxFuture<'static, Result<MembersView, ApiError>> {
        let this = self.clone();
        Box::pin(async move {
            let addrs = MemberAddrs::new(master.rpc, master.http);
            let members = this
                .meta
                .add_master(master.id, addrs, CATCH_UP_WAIT)
                .await
                .map_err(membership_error)?;
            Ok(this.members_view(members))
        })
    }

    fn remove_master(&self, id: u64) -> BoxFuture<'static, Result<MembersView, ApiError>> {
        let this = self.clone();
        Box::pin(async move {
            let members = this
                .meta
                .remove_master(id)
                .await
                .map_err(membership_error)?;
            Ok(this.members_view(members))
        })
    }
}

struct MetricsInput<'a> {
    stats: &'a JobStats,
    workers_alive: usize,
    workers_known: usize,
    slots: u64,
    attempts_running: u64,
    term: u64,
    last_log_index: u64,
    last_applied: u64,
    is_leader: bool,
    locks_held: usize,
    lock_waiters: usize,
    lock_tokens: u64,
}

/// Task duration histogram buckets, in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0];

fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

fn render_metrics(m: &MetricsInput<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP mrcluster_jobs Jobs by kind and state.\n# TYPE mrcluster_jobs gauge"
    );
    for kind in JOB_KINDS {
        for state in JobState::ALL {
            let n = m.stats.jobs(kind, state);
            let _ = writeln!(
                out,
                "mrcluster_jobs{{kind=\"{kind}\",state=\"{}\"}} {n}",
                state.as_str()
            );
        }
    }
    let _ = writeln!(out, "# HELP mrcluster_tasks Tasks by kind and state: succeeded (recorded), or unfinished in a job that has not ended.\n# TYPE mrcluster_tasks gauge");
    for kind in TASK_KINDS {
        for state in TASK_STATES {
            let _ = writeln!(
                out,
                "mrcluster_tasks{{kind=\"{kind}\",state=\"{state}\"}} {}",
                m.stats.tasks(kind, state)
            );
        }
    }
    let _ = writeln!(out, "# HELP mrcluster_tasks_succeeded Recorded task completions by kind.\n# TYPE mrcluster_tasks_succeeded gauge");
    for kind in TASK_KINDS {
        let _ = writeln!(
            out,
            "mrcluster_tasks_succeeded{{kind=\"{kind}\"}} {}",
            m.stats.tasks(kind, "succeeded")
        );
    }
    gauge(
        &mut out,
        "mrcluster_task_attempts_running",
        "Task attempts running on workers now.",
        m.attempts_running,
    );
    let _ = writeln!(out, "# HELP mrcluster_task_duration_seconds Durations of recorded (winning) task attempts.\n# TYPE mrcluster_task_duration_seconds histogram");
    for (kind, histogram) in TASK_KINDS.iter().zip(&m.stats.durations) {
        let mut cumulative = 0;
        for (bucket, n) in BUCKETS.iter().zip(histogram.buckets) {
            cumulative += n;
            let _ = writeln!(
                out,
                "mrcluster_task_duration_seconds_bucket{{kind=\"{kind}\",le=\"{bucket}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "mrcluster_task_duration_seconds_bucket{{kind=\"{kind}\",le=\"+Inf\"}} {}",
            histogram.count
        );
        let _ = writeln!(
            out,
            "mrcluster_task_duration_seconds_sum{{kind=\"{kind}\"}} {}",
            histogram.sum
        );
        let _ = writeln!(
            out,
            "mrcluster_task_duration_seconds_count{{kind=\"{kind}\"}} {}",
            histogram.count
        );
    }
    let _ = writeln!(
        out,
        "# HELP mrcluster_workers Workers by liveness.\n# TYPE mrcluster_workers gauge"
    );
    let _ = writeln!(
        out,
        "mrcluster_workers{{alive=\"true\"}} {}",
        m.workers_alive
    );
    let _ = writeln!(
        out,
        "mrcluster_workers{{alive=\"false\"}} {}",
        m.workers_known.saturating_sub(m.workers_alive)
    );
    gauge(
        &mut out,
        "mrcluster_worker_slots",
        "Task slots of the live workers.",
        m.slots,
    );
    gauge(
        &mut out,
        "mrcluster_raft_term",
        "Current Raft term.",
        m.term,
    );
    gauge(
        &mut out,
        "mrcluster_raft_last_log_index",
        "Last Raft log index.",
        m.last_log_index,
    );
    gauge(
        &mut out,
        "mrcluster_raft_commit_index",
        "Highest Raft log index known committed and applied on this master (openraft 0.9 reports the applied index; it trails the commit index only while entries are applied).",
        m.last_applied,
    );
    gauge(
        &mut out,
        "mrcluster_raft_last_applied",
        "Last applied Raft log index.",
        m.last_applied,
    );
    gauge(
        &mut out,
        "mrcluster_raft_is_leader",
        "1 on the leader.",
        u8::from(m.is_leader),
    );
    gauge(
        &mut out,
        "mrcluster_locks_held",
        "Locks held now.",
        m.locks_held,
    );
    gauge(
        &mut out,
        "mrcluster_lock_waiters",
        "Acquires waiting in lock queues now.",
        m.lock_waiters,
    );
    let _ = writeln!(
        out,
        "# HELP mrcluster_lock_grants_total Lock grants ever made (the last fencing token).\n# TYPE mrcluster_lock_grants_total counter\nmrcluster_lock_grants_total {}",
        m.lock_tokens
    );
    out
}

#[cfg(test)]
mod tests {
    use jobs::rpc::TaskOutput;
    use jobs::{TaskId, WorkerId};

    use super::*;
    use crate::meta::command::TaskDone;

    fn record(id: u64, kind: &str, state: JobState, done: bool) -> JobRecord {
        let spec = if kind == "task" {
            r#"{"kind": "task", "job": "echo", "payload": 1}"#
        } else {
            r#"{"kind": "mapreduce", "job": "wordcount", "input": ["a"], "output": "o", "reducers": 1}"#
        };
        let spec = JobSpec::from_json(spec).unwrap();
        let tasks = [TaskPlan::Run {
            id: TaskId(id * 10),
        }];
        let mut record = JobRecord::submitted(JobId(id), &spec, 1_000 + id, &tasks, None);
        record.state = state;
        record.tasks[0].done = done.then(|| TaskDone {
            attempt: 1,
            worker_id: WorkerId(1),
            output: TaskOutput::Run {
                result: jobs::spec::Json(serde_json::Value::Null),
            },
            counters: Counters::default(),
            started_ms: 0,
            finished_ms: 2_000,
        });
        record
    }

    fn state_with(n: u64) -> MetaState {
        let mut state = MetaState::default();
        for id in 1..=n {
            let (kind, job_state) = match id % 4 {
                0 => ("task", JobState::Failed),
                1 => ("task", JobState::Succeeded),
                2 => ("mapreduce", JobState::Succeeded),
                _ => ("mapreduce", JobState::Running),
            };
            state.jobs.insert(
                JobId(id),
                record(id, kind, job_state, job_state == JobState::Succeeded),
            );
        }
        state
    }

    #[test]
    fn pages_walk_newest_first_and_stop_when_full() {
        let state = state_with(100);
        let query = JobQuery {
            limit: 10,
            ..JobQuery::default()
        };
        let page = list_page(&state, &query, || {
            unreachable!("no filter: total is the length")
        });
        let ids: Vec<u64> = page.jobs.iter().map(|j| j.id.0).collect();
        assert_eq!(ids, (91..=100).rev().collect::<Vec<_>>());
        assert_eq!(page.next_before, Some(JobId(91)));
        assert_eq!(page.total, 100);
        let query = JobQuery {
            state: Some(JobState::Failed),
            kind: Some("task".into()),
            limit: 3,
            before: Some(JobId(90)),
        };
        let page = list_page(&state, &query, || 25);
        let ids: Vec<u64> = page.jobs.iter().map(|j| j.id.0).collect();
        assert_eq!(ids, [88, 84, 80]);
        assert_eq!(page.next_before, Some(JobId(80)));
        assert_eq!(page.total, 25);
        let last = JobQuery {
            before: Some(JobId(5)),
            ..query
        };
        let page = list_page(&state, &last, || 25);
        assert_eq!(page.jobs.len(), 1);
        assert_eq!(page.next_before, None);
    }

    #[test]
    fn stats_count_jobs_and_tasks_in_one_pass() {
        let stats = JobStats::compute(&state_with(100));
        assert_eq!(stats.matching(None, None), 100);
        assert_eq!(stats.matching(Some(JobState::Failed), Some("task")), 25);
        assert_eq!(stats.matching(Some(JobState::Succeeded), None), 50);
        assert_eq!(stats.matching(None, Some("mapreduce")), 50);
        assert_eq!(stats.tasks("run", "succeeded"), 50);
        assert_eq!(stats.tasks("run", "unfinished"), 25, "only running jobs");
        assert_eq!(stats.tasks("nope", "succeeded"), 0);
        let counts = stats.counts();
        assert_eq!(
            counts.matching(Some(JobState::Running), Some("mapreduce")),
            25
        );
        assert!(counts.counts.iter().all(|c| c.jobs > 0));
        assert_eq!(stats.durations[2].count, 50);
    }

    #[test]
    fn metrics_are_prometheus_text() {
        let mut stats = JobStats::default();
        stats.jobs[1][state_index(JobState::Succeeded)] = 3;
        stats.tasks[2][0] = 3;
        stats.tasks[0][1] = 4;
        stats.durations[2].observe(0.002);
        stats.durations[2].observe(2.0);
        let text = render_metrics(&MetricsInput {
            stats: &stats,
            workers_alive: 2,
            workers_known: 3,
            slots: 4,
            attempts_running: 1,
            term: 4,
            last_log_index: 10,
            last_applied: 9,
            is_leader: true,
            locks_held: 2,
            lock_waiters: 5,
            lock_tokens: 77,
        });
        assert!(text.contains("mrcluster_jobs{kind=\"task\",state=\"succeeded\"} 3"));
        assert!(text.contains("mrcluster_tasks{kind=\"map\",state=\"unfinished\"} 4"));
        assert!(text.contains("mrcluster_tasks_succeeded{kind=\"run\"} 3"));
        assert!(
            text.contains("mrcluster_task_duration_seconds_bucket{kind=\"run\",le=\"0.005\"} 1")
        );
        assert!(
            text.contains("mrcluster_task_duration_seconds_bucket{kind=\"run\",le=\"5\"} 2"),
            "buckets are cumulative: {text}"
        );
        assert!(text.contains("mrcluster_task_duration_seconds_count{kind=\"run\"} 2"));
        assert!(text.contains("mrcluster_task_attempts_running 1"));
        assert!(text.contains("mrcluster_workers{alive=\"false\"} 1"));
        assert!(text.contains("mrcluster_worker_slots 4"));
        assert!(text.contains("mrcluster_raft_term 4"));
        assert!(text.contains("mrcluster_raft_commit_index 9"));
        assert!(text.contains("mrcluster_locks_held 2"));
        assert!(text.contains("mrcluster_lock_waiters 5"));
        assert!(text.contains("mrcluster_lock_grants_total 77"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "bad sample line {line}");
        }
        // every TYPE is declared once
        let mut types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE")).collect();
        let n = types.len();
        types.dedup();
        assert_eq!(types.len(), n);
    }
}

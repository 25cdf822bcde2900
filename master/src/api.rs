//! `MasterApi`: the master's implementation of [`web::api::ClusterApi`], the bridge between the
//! HTTP layer and the actors and replicated state.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::Addr;
use futures::future::BoxFuture;
use jobs::rpc::Counters;
use jobs::{JobId, JobSpec, JobState};
use openraft::ServerState;
use web::api::{
    ApiError, AttemptView, ClusterApi, ClusterView, Health, JobPage, JobQuery, JobView, MasterView,
    PhaseCounters, Progress, Role, TaskView, WorkerView,
};

use crate::error::Error;
use crate::job_run::{AttemptState, TaskRun};
use crate::meta::command::TaskPlan;
use crate::meta::node::Meta;
use crate::meta::state::{JobRecord, MetaState};
use crate::registry::{ListWorkers, WorkerRegistry};
use crate::scheduler::{CancelJob, JobTasks, Scheduler, SubmitJob, WatchJob, WorkerLoads};

/// The master's API.
#[derive(Clone)]
pub struct MasterApi {
    id: u64,
    secret: Arc<str>,
    meta: Meta,
    scheduler: Addr<Scheduler>,
    registry: Addr<WorkerRegistry>,
    masters: Vec<jobs::config::MasterEntry>,
}

impl MasterApi {
    /// The API of master `id`.
    pub fn new(
        id: u64,
        secret: Arc<str>,
        meta: Meta,
        scheduler: Addr<Scheduler>,
        registry: Addr<WorkerRegistry>,
        masters: Vec<jobs::config::MasterEntry>,
    ) -> MasterApi {
        MasterApi {
            id,
            secret,
            meta,
            scheduler,
            registry,
            masters,
        }
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

impl ClusterApi for MasterApi {
    fn secret(&self) -> &str {
        &self.secret
    }

    fn health(&self) -> BoxFuture<'static, Health> {
        let metrics = self.meta.metrics();
        let id = self.id;
        Box::pin(async move {
            Health {
                id,
                role: role(metrics.state),
                leader: metrics.current_leader,
                term: metrics.current_term,
            }
        })
    }

    fn cluster(&self) -> BoxFuture<'static, Result<ClusterView, ApiError>> {
        let this = self.clone();
        Box::pin(async move {
            let live = this.registry.send(ListWorkers).await.map_err(mailbox)?;
            let loads = this.scheduler.send(WorkerLoads).await.map_err(mailbox)?;
            let metrics = this.meta.metrics();
            let masters = this
                .masters
                .iter()
                .map(|m| MasterView {
                    id: m.id,
                    rpc: m.rpc.clone(),
                    http: m.http.clone(),
                    role: if m.id == this.id {
                        role(metrics.state)
                    } else {
                        Role::Follower
                    },
                    term: metrics.current_term,
                    last_log_index: if m.id == this.id {
                        metrics.last_log_index
                    } else {
                        None
                    },
                })
                .collect();
            let shared = this.meta.state();
            let state = read_state(&shared);
            let mut workers: Vec<WorkerView> = state
                .workers
                .iter()
                .map(|(name, record)| {
                    let info = live.iter().find(|w| w.id == record.id);
                    let mut names: Vec<String> =
                        record.jobs.iter().map(|j| j.name.clone()).collect();
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
        let meta = self.meta.clone();
        Box::pin(async move {
            let shared = meta.state();
            let state = read_state(&shared);
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
                state.jobs.values().filter(|r| matches(r)).count() as u64
            };
            Ok(JobPage {
                jobs: page,
                next_before,
                total,
            })
        })
    }

    fn job(
        &self,
        id: JobId,
        wait: Option<Duration>,
    ) -> BoxFuture<'static, Result<JobView, ApiError>> {
        let this = self.clone();
        Box::pin(async move {
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

    fn metrics(&self) -> BoxFuture<'static, Result<String, ApiError>> {
        let this = self.clone();
        Box::pin(async move {
            let live = this.registry.send(ListWorkers).await.map_err(mailbox)?;
            let raft = this.meta.metrics();
            let shared = this.meta.state();
            let state = read_state(&shared);
            let mut jobs_by_state: HashMap<(&str, JobState), u64> = HashMap::new();
            let mut tasks_done: HashMap<&str, u64> = HashMap::new();
            let mut task_durations: Vec<(&str, u64)> = Vec::new();
            for record in state.jobs.values() {
                *jobs_by_state
                    .entry((record.spec.kind_name(), record.state))
                    .or_default() += 1;
                for task in &record.tasks {
                    if let Some(done) = &task.done {
                        let kind = match task.plan {
                            TaskPlan::Map { .. } => "map",
                            TaskPlan::Reduce { .. } => "reduce",
                            TaskPlan::Run { .. } => "run",
                        };
                        *tasks_done.entry(kind).or_default() += 1;
                        task_durations
                            .push((kind, done.finished_ms.saturating_sub(done.started_ms)));
                    }
                }
            }
            Ok(render_metrics(&MetricsInput {
                jobs_by_state,
                tasks_done,
                task_durations,
                workers_alive: live.iter().filter(|w| w.alive).count(),
                workers_known: state.workers.len(),
                term: raft.current_term,
                last_log_index: raft.last_log_index.unwrap_or(0),
                last_applied: raft.last_applied.map_or(0, |l| l.index),
                is_leader: raft.state == ServerState::Leader,
            }))
        })
    }
}

struct MetricsInput<'a> {
    jobs_by_state: HashMap<(&'a str, JobState), u64>,
    tasks_done: HashMap<&'a str, u64>,
    task_durations: Vec<(&'a str, u64)>,
    workers_alive: usize,
    workers_known: usize,
    term: u64,
    last_log_index: u64,
    last_applied: u64,
    is_leader: bool,
}

/// Task duration histogram buckets, in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0];

fn render_metrics(m: &MetricsInput<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP mrcluster_jobs Jobs by kind and state.\n# TYPE mrcluster_jobs gauge"
    );
    for kind in ["mapreduce", "task"] {
        for state in JobState::ALL {
            let n = m.jobs_by_state.get(&(kind, state)).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "mrcluster_jobs{{kind=\"{kind}\",state=\"{}\"}} {n}",
                state.as_str()
            );
        }
    }
    let _ = writeln!(out, "# HELP mrcluster_tasks_succeeded Recorded task completions by kind.\n# TYPE mrcluster_tasks_succeeded gauge");
    for kind in ["map", "reduce", "run"] {
        let _ = writeln!(
            out,
            "mrcluster_tasks_succeeded{{kind=\"{kind}\"}} {}",
            m.tasks_done.get(kind).copied().unwrap_or(0)
        );
    }
    let _ = writeln!(out, "# HELP mrcluster_task_duration_seconds Durations of recorded task attempts.\n# TYPE mrcluster_task_duration_seconds histogram");
    for kind in ["map", "reduce", "run"] {
        let durations: Vec<f64> = m
            .task_durations
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, ms)| *ms as f64 / 1000.0)
            .collect();
        for bucket in BUCKETS {
            let n = durations.iter().filter(|d| **d <= bucket).count();
            let _ = writeln!(
                out,
                "mrcluster_task_duration_seconds_bucket{{kind=\"{kind}\",le=\"{bucket}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "mrcluster_task_duration_seconds_bucket{{kind=\"{kind}\",le=\"+Inf\"}} {}",
            durations.len()
        );
        let _ = writeln!(
            out,
            "mrcluster_task_duration_seconds_sum{{kind=\"{kind}\"}} {}",
            durations.iter().sum::<f64>()
        );
        let _ = writeln!(
            out,
            "mrcluster_task_duration_seconds_count{{kind=\"{kind}\"}} {}",
            durations.len()
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
    let _ = writeln!(out, "# HELP mrcluster_raft_term Current Raft term.\n# TYPE mrcluster_raft_term gauge\nmrcluster_raft_term {}", m.term);
    let _ = writeln!(out, "# HELP mrcluster_raft_last_log_index Last Raft log index.\n# TYPE mrcluster_raft_last_log_index gauge\nmrcluster_raft_last_log_index {}", m.last_log_index);
    let _ = writeln!(out, "# HELP mrcluster_raft_last_applied Last applied Raft log index.\n# TYPE mrcluster_raft_last_applied gauge\nmrcluster_raft_last_applied {}", m.last_applied);
    let _ = writeln!(out, "# HELP mrcluster_raft_is_leader 1 on the leader.\n# TYPE mrcluster_raft_is_leader gauge\nmrcluster_raft_is_leader {}", u8::from(m.is_leader));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_prometheus_text() {
        let mut jobs_by_state = HashMap::new();
        jobs_by_state.insert(("task", JobState::Succeeded), 3);
        let text = render_metrics(&MetricsInput {
            jobs_by_state,
            tasks_done: HashMap::from([("run", 3)]),
            task_durations: vec![("run", 2), ("run", 2000)],
            workers_alive: 2,
            workers_known: 3,
            term: 4,
            last_log_index: 10,
            last_applied: 10,
            is_leader: true,
        });
        assert!(text.contains("mrcluster_jobs{kind=\"task\",state=\"succeeded\"} 3"));
        assert!(
            text.contains("mrcluster_task_duration_seconds_bucket{kind=\"run\",le=\"0.005\"} 1")
        );
        assert!(text.contains("mrcluster_task_duration_seconds_count{kind=\"run\"} 2"));
        assert!(text.contains("mrcluster_workers{alive=\"false\"} 1"));
        assert!(text.contains("mrcluster_raft_term 4"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "bad sample line {line}");
        }
    }
}

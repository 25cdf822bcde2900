//! `Scheduler`: the leader's job → task state machine. It accepts jobs (planning them and
//! committing `SubmitJob`), hands tasks to live workers with free slots through a
//! [`TaskLauncher`], records outcomes (committing finished tasks and jobs), re-runs work lost
//! with a worker or a failed shuffle fetch, fails jobs whose tasks fail `max_attempts` times,
//! times attempts out, and launches backup copies of stragglers at the end of a phase.
//!
//! Everything it decides that must survive a crash is committed through [`Meta`] first or in
//! order (a job is only reported finished once `FinishJob` is committed); everything else
//! (attempts, slots) is rebuilt from the replicated state after a restart.
//!
//! Where tasks go: a keyed `task` job (`"key"` in its spec) runs on the owner of its key on the
//! [`Placement`] ring, the first worker in the key's ring order that serves the job, so the same
//! key lands on the same worker while that worker lives; when it is lost, the key's next
//! candidate takes over (and a worker that joins may take over the keys that fall on its part of
//! the ring). A keyed task whose owner has no free slot waits for it rather than running
//! elsewhere: keeping a key in one place is the point of a key. A reduce task prefers the owner
//! of `<job id>/<partition>`, but only softly (any worker if that one is busy): reducers fetch
//! from every mapper anyway. Everything else goes to the worker with the most free slots.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use jobs::registry::{JobKind, JobName};
use jobs::rpc::{AttemptId, TaskAssignment, TaskOutcome, TaskOutput, TaskStatus};
use jobs::spec::{Json, KindSpec, TaskSpec};
use jobs::{JobId, JobSpec, JobState, WorkerId};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::ids::{now_ms, IdGenerator};
use crate::job_run::{Failure, JobRun, Success};
use crate::meta::command::{Command, TaskDone, TaskPlan};
use crate::meta::node::Meta;
use crate::placement::Placement;
use crate::planner;
pub use crate::task_launcher::{LaunchError, TaskLauncher};

/// How often timeouts, stragglers and lost launches are checked.
pub const TICK: Duration = Duration::from_millis(250);
/// A task is a straggler only after running at least this long (and twice the median).
pub const BACKUP_MIN_AGE: Duration = Duration::from_secs(10);
/// A launched attempt a worker's heartbeat does not list after this long was lost in transit.
pub const LAUNCH_GRACE: Duration = Duration::from_secs(3);
/// How far ahead a leader reserves Snowflake time for its ids, and how early it renews.
pub const ID_RESERVATION_MS: u64 = 10_000;
const ID_RENEWAL_MARGIN_MS: u64 = 5_000;
/// After taking over, how long a new leader waits for workers to re-register before it
/// re-runs finished map outputs held by workers that did not.
pub const TAKEOVER_GRACE: Duration = crate::registry::WORKER_TIMEOUT;
/// How many finished jobs keep their attempt history in memory for the UI.
pub const FINISHED_HISTORY: usize = 1000;

/// A live worker as the scheduler sees it.
#[derive(Debug)]
struct LiveWorker {
    name: String,
    addr: String,
    slots: u32,
    running: u32,
    serves: HashSet<JobName>,
    /// Don't launch there before this (a launch just failed).
    backoff_until: Option<Instant>,
}

impl LiveWorker {
    /// Whether launches may go there now (no launch just failed).
    fn reachable(&self, now: Instant) -> bool {
        self.backoff_until.is_none_or(|t| t <= now)
    }

    /// Whether it can take a task now: reachable, with a free slot.
    fn can_take(&self, now: Instant) -> bool {
        self.running < self.slots && self.reachable(now)
    }
}

/// The scheduler actor.
pub struct Scheduler {
    meta: Meta,
    ids: Arc<IdGenerator>,
    launcher: Arc<dyn TaskLauncher>,
    /// Relative spec paths are resolved against this.
    base_dir: PathBuf,
    workers: BTreeMap<WorkerId, LiveWorker>,
    /// The consistent-hash ring over `workers` (keyed tasks, reduce preferences); rebuilt
    /// whenever a worker joins or is lost.
    placement: Placement,
    /// Active jobs, and recently finished ones (for their attempt history).
    jobs: HashMap<JobId, JobRun>,
    /// Active jobs in submission order.
    active: BTreeMap<JobId, ()>,
    finished: VecDeque<JobId>,
    /// Jobs being finished (FinishJob in flight).
    finishing: HashSet<JobId>,
    waiters: HashMap<JobId, Vec<oneshot::Sender<()>>>,
    dispatch_queued: bool,
    backup_min_age: Duration,
    /// This master is the ready Raft leader: only then does the scheduler act.
    leading: Option<Instant>,
    /// Snowflake time reserved in the log for this leader's ids.
    ids_reserved_until: u64,
}

impl Scheduler {
    /// A scheduler over the committed state in `meta`: unfinished jobs are picked up again.
    pub fn new(
        meta: Meta,
        ids: Arc<IdGenerator>,
        launcher: Arc<dyn TaskLauncher>,
        base_dir: PathBuf,
    ) -> Scheduler {
        Scheduler {
            meta,
            ids,
            launcher,
            base_dir,
            workers: BTreeMap::new(),
            placement: Placement::default(),
            jobs: HashMap::new(),
            active: BTreeMap::new(),
            finished: VecDeque::new(),
            finishing: HashSet::new(),
            waiters: HashMap::new(),
            dispatch_queued: false,
            backup_min_age: BACKUP_MIN_AGE,
            leading: None,
            ids_reserved_until: 0,
        }
    }

    /// Changes the straggler age threshold (tests use a short one).
    pub fn with_backup_min_age(mut self, age: Duration) -> Scheduler {
        self.backup_min_age = age;
        self
    }

    /// This master became the ready leader: start from the committed state.
    fn take_over(&mut self, ctx: &mut Context<Self>) {
        self.step_down();
        self.leading = Some(Instant::now());
        self.rebuild();
        self.reserve_ids();
        self.queue_dispatch(ctx);
        // Once, after workers have had time to register again with this leader.
        let since = self.leading;
        ctx.run_later(TAKEOVER_GRACE, move |act, _| {
            if act.leading == since {
                act.lose_outputs_of_absent_workers();
            }
        });
    }

    /// This master is no longer the leader: forget everything that is not committed. Waiting
    /// long-polls return (their senders are dropped).
    fn step_down(&mut self) {
        if self.leading.take().is_some() {
            info!("scheduler stepping down: no longer the leader");
        }
        self.workers.clear();
        self.rebuild_placement();
        self.jobs.clear();
        self.active.clear();
        self.finished.clear();
        self.finishing.clear();
        self.waiters.clear();
    }

    /// Issues ids above every earlier leader's reservation, and reserves the next window in
    /// the log (ahead of any command carrying a new id, through the same ordered queue).
    fn reserve_ids(&mut self) {
        let reserved = {
            let state = self.meta.state();
            let state = state.read().unwrap_or_else(|p| p.into_inner());
            state.ids_reserved_until_ms
        };
        self.ids.advance_to(reserved.max(self.ids_reserved_until));
        self.renew_ids();
    }

    fn renew_ids(&mut self) {
        let now = now_ms()
            .saturating_sub(crate::ids::EPOCH_MS)
            .max(self.ids.last_ms());
        let until = now + ID_RESERVATION_MS;
        self.meta
            .propose_nowait(Command::ReserveIds { until_ms: until });
        self.ids_reserved_until = until;
    }

    /// The leader's RPC address, for workers that reached a follower.
    fn not_leader(&self) -> jobs::rpc::RemoteError {
        jobs::rpc::RemoteError::NotLeader {
            leader: self.meta.leader().map(|(_, node)| node.addr),
        }
    }

    fn rebuild(&mut self) {
        let state = self.meta.state();
        let state = state.read().unwrap_or_else(|p| p.into_inner());
        for record in state.jobs.values().filter(|j| !j.state.is_final()) {
            self.jobs.insert(record.id, JobRun::from_record(record));
            self.active.insert(record.id, ());
        }
        info!(
            active = self.active.len(),
            "scheduler picked up unfinished jobs"
        );
    }

    fn queue_dispatch(&mut self, ctx: &mut Context<Self>) {
        if !self.dispatch_queued {
            self.dispatch_queued = true;
            ctx.notify(Dispatch);
        }
    }

    fn free_slots(&self) -> u32 {
        let now = Instant::now();
        self.workers
            .values()
            .filter(|w| w.reachable(now))
            .map(|w| w.slots.saturating_sub(w.running))
            .sum()
    }

    fn pick_worker(&self, name: &JobName, exclude: &[WorkerId]) -> Option<WorkerId> {
        let now = Instant::now();
        self.workers
            .iter()
            .filter(|(id, w)| w.can_take(now) && w.serves.contains(name) && !exclude.contains(id))
            .max_by_key(|(id, w)| {
                (
                    w.slots - w.running,
                    std::cmp::Reverse(w.running),
                    std::cmp::Reverse(**id),
                )
            })
            .map(|(id, _)| *id)
    }

    /// Whether `worker` can take a task now (a free slot, no launch backoff).
    fn has_free_slot(&self, worker: WorkerId, now: Instant) -> bool {
        self.workers.get(&worker).is_some_and(|w| w.can_take(now))
    }

    /// The owner of `key` among the live workers serving `name`: the first of its ring
    /// candidates that serves the job and is reachable (a worker whose launches fail, though
    /// it still heartbeats, hands its keys to the next candidate until it recovers).
    fn ring_owner<K: Hash + ?Sized>(
        &self,
        key: &K,
        name: &JobName,
        now: Instant,
    ) -> Option<WorkerId> {
        self.placement.candidates(key).find(|id| {
            self.workers
                .get(id)
                .is_some_and(|w| w.serves.contains(name) && w.reachable(now))
        })
    }

    /// Where task `index` of `job` runs now, or `None` if it must wait: a keyed task on its
    /// key's owner only, a reduce on its preferred worker if that one is free, anything else
    /// (and a reduce whose preferred worker is busy) through [`Scheduler::pick_worker`].
    fn place(&self, job: &JobRun, index: usize, name: &JobName) -> Option<WorkerId> {
        let now = Instant::now();
        if let Some(key) = Self::routing_key(&job.spec) {
            return self
                .ring_owner(key, name, now)
                .filter(|owner| self.has_free_slot(*owner, now));
        }
        if let TaskPlan::Reduce { partition, .. } = &job.tasks[index].plan {
            let preferred = self
                .ring_owner(&format!("{}/{partition}", job.id), name, now)
                .filter(|w| self.has_free_slot(*w, now));
            if preferred.is_some() {
                return preferred;
            }
        }
        self.pick_worker(name, &[])
    }

    /// The routing key of a keyed `task` job.
    fn routing_key(spec: &JobSpec) -> Option<&str> {
        match &spec.kind {
            KindSpec::Task(TaskSpec { key, .. }) => key.as_deref(),
            KindSpec::MapReduce(_) => None,
        }
    }

    /// Rebuilds the ring from the live workers (after one joined or was lost).
    fn rebuild_placement(&mut self) {
        self.placement = Placement::new(self.workers.iter().map(|(id, w)| (*id, w.slots)));
        debug!(
            workers = self.placement.workers(),
            vnodes = self.placement.vnodes(),
            "placement ring rebuilt"
        );
    }

    fn job_name(spec: &JobSpec) -> JobName {
        let kind = match spec.kind {
            KindSpec::MapReduce(_) => JobKind::MapReduce,
            KindSpec::Task(_) => JobKind::Task,
        };
        JobName {
            kind,
            name: spec.job.clone(),
        }
    }

    fn addr_of(&self, worker: WorkerId) -> Option<String> {
        self.workers.get(&worker).map(|w| w.addr.clone())
    }

    /// Launches whatever fits in the free slots, oldest job first.
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        if self.leading.is_none() {
            return;
        }
        let mut batches: HashMap<WorkerId, Vec<TaskAssignment>> = HashMap::new();
        let mut free = self.free_slots();
        let now = Instant::now();
        let now_wall = now_ms();
        let job_ids: Vec<JobId> = self.active.keys().copied().collect();
        for job_id in job_ids {
            if free == 0 {
                break;
            }
            if self.finishing.contains(&job_id) {
                continue;
            }
            let Some(job) = self.jobs.get(&job_id) else {
                continue;
            };
            let runnable = job.runnable();
            if runnable.is_empty() {
                continue;
            }
            let name = Self::job_name(&job.spec);
            let was_started = job.started;
            for index in runnable {
                let placed = self
                    .jobs
                    .get(&job_id)
                    .and_then(|job| self.place(job, index, &name));
                let Some(worker) = placed else {
                    break;
                };
                let Some(job) = self.jobs.get_mut(&job_id) else {
                    break;
                };
                let attempt = job.start_attempt(index, worker, now, now_wall, false);
                let assignment = self.assignment(job_id, index, attempt);
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.running += 1;
                }
                batches.entry(worker).or_default().push(assignment);
                free -= 1;
                if free == 0 {
                    break;
                }
            }
            if !was_started && self.jobs.get(&job_id).is_some_and(|j| j.started) {
                self.meta.propose_nowait(Command::StartJob {
                    id: job_id,
                    at_ms: now_wall,
                });
            }
        }
        for (worker, tasks) in batches {
            self.send_launch(worker, tasks, ctx);
        }
    }

    fn assignment(&self, job_id: JobId, index: usize, attempt: AttemptId) -> TaskAssignment {
        let job = &self.jobs[&job_id];
        job.assignment(index, attempt, |w| self.addr_of(w))
    }

    fn send_launch(
        &mut self,
        worker: WorkerId,
        tasks: Vec<TaskAssignment>,
        ctx: &mut Context<Self>,
    ) {
        let Some(addr) = self.addr_of(worker) else {
            return;
        };
        debug!(%worker, count = tasks.len(), "launching tasks");
        let attempts: Vec<AttemptId> = tasks.iter().map(|t| t.attempt).collect();
        let launch = self.launcher.launch(addr, tasks);
        let me = ctx.address();
        actix::spawn(async move {
            if let Err(error) = launch.await {
                warn!(%worker, %error, "launch failed; the tasks go back to the queue");
                me.do_send(LaunchFailed { worker, attempts });
            }
        });
    }

    /// Marks an attempt as no longer running on its worker (frees the slot).
    fn release_slot(&mut self, worker: WorkerId) {
        if let Some(w) = self.workers.get_mut(&worker) {
            w.running = w.running.saturating_sub(1);
        }
    }

    fn attempt_running_on(&self, attempt: &AttemptId) -> Option<(usize, WorkerId)> {
        let job = self.jobs.get(&attempt.job_id)?;
        let index = job.task_index(attempt.task_id)?;
        job.tasks[index]
            .attempts
            .iter()
            .find(|a| {
                a.number == attempt.attempt && a.state == crate::job_run::AttemptState::Running
            })
            .map(|a| (index, a.worker))
    }

    fn cancel_attempt(&self, worker: WorkerId, attempt: AttemptId) {
        if let Some(addr) = self.addr_of(worker) {
            actix::spawn(self.launcher.cancel(addr, attempt));
        }
    }

    fn on_status(&mut self, worker_id: WorkerId, status: TaskStatus, ctx: &mut Context<Self>) {
        let attempt = status.attempt;
        if !self.active.contains_key(&attempt.job_id) || self.finishing.contains(&attempt.job_id) {
            debug!(%attempt, "report for a job that is not active; ignored");
            return;
        }
        let running = self
            .attempt_running_on(&attempt)
            .filter(|(_, worker)| *worker == worker_id);
        let Some((index, worker)) = running else {
            // Not running any more: a superseded or lost attempt finishing late. A late success
            // of a task that is not done yet is still good output.
            if let TaskOutcome::Succeeded(output) = status.outcome {
                self.late_success(
                    worker_id,
                    status.attempt,
                    output,
                    status.started_ms,
                    status.finished_ms,
                    status.counters,
                    ctx,
                );
            }
            return;
        };
        self.release_slot(worker);
        let now_wall = now_ms();
        match status.outcome {
            TaskOutcome::Succeeded(output) => {
                let done = TaskDone {
                    attempt: attempt.attempt,
                    worker_id: worker,
                    output,
                    counters: status.counters,
                    started_ms: status.started_ms,
                    finished_ms: status.finished_ms,
                };
                self.record_success(attempt, index, done, ctx);
            }
            TaskOutcome::Failed { error, retryable } => {
                let Some(job) = self.jobs.get_mut(&attempt.job_id) else {
                    return;
                };
                match job.fail(index, attempt.attempt, &error, retryable, now_wall) {
                    Failure::Stale => {}
                    Failure::Retry => {
                        warn!(%attempt, %error, "task attempt failed; it will be retried")
                    }
                    Failure::JobFailed(message) => {
                        warn!(job_id = %attempt.job_id, %message, "job failed");
                        self.finish_job(attempt.job_id, JobState::Failed, Some(message), None, ctx);
                    }
                }
            }
            TaskOutcome::FetchFailed { map_task, error } => {
                let Some(job) = self.jobs.get_mut(&attempt.job_id) else {
                    return;
                };
                if let Some(lost) = job.fetch_failed(index, attempt.attempt, map_task, now_wall) {
                    warn!(%attempt, %map_task, %error, "shuffle fetch failed; the map task runs again");
                    self.meta.propose_nowait(Command::LoseMapOutputs {
                        job_id: attempt.job_id,
                        tasks: vec![lost],
                    });
                }
            }
        }
        self.queue_dispatch(ctx);
    }

    #[allow(clippy::too_many_arguments)]
    fn late_success(
        &mut self,
        worker_id: WorkerId,
        attempt: AttemptId,
        output: TaskOutput,
        started_ms: u64,
        finished_ms: u64,
        counters: jobs::rpc::Counters,
        ctx: &mut Context<Self>,
    ) {
        let Some(job) = self.jobs.get(&attempt.job_id) else {
            return;
        };
        let Some(index) = job.task_index(attempt.task_id) else {
            return;
        };
        if job.tasks[index].done.is_some() || !self.workers.contains_key(&worker_id) {
            return;
        }
        let done = TaskDone {
            attempt: attempt.attempt,
            worker_id,
            output,
            counters,
            started_ms,
            finished_ms,
        };
        self.record_success(attempt, index, done, ctx);
    }

    fn record_success(
        &mut self,
        attempt: AttemptId,
        index: usize,
        done: TaskDone,
        ctx: &mut Context<Self>,
    ) {
        let job_id = attempt.job_id;
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let result = match &done.output {
            TaskOutput::Run { result } => Some(result.clone()),
            _ => None,
        };
        let command = Command::FinishTask {
            job_id,
            task_id: attempt.task_id,
            done: done.clone(),
        };
        match job.succeed(index, attempt.attempt, done) {
            Success::Duplicate => return,
            Success::Recorded { cancel } => {
                for (worker, other) in cancel {
                    self.release_slot(worker);
                    self.cancel_attempt(worker, other);
                }
            }
        }
        self.meta.propose_nowait(command);
        let Some(job) = self.jobs.get(&job_id) else {
            return;
        };
        if job.all_done() {
            match &job.spec.kind {
                KindSpec::Task(_) => {
                    self.finish_job(job_id, JobState::Succeeded, None, result, ctx)
                }
                KindSpec::MapReduce(mr) => {
                    let marker = PathBuf::from(&mr.output).join("_SUCCESS");
                    match std::fs::write(&marker, b"") {
                        Ok(()) => self.finish_job(job_id, JobState::Succeeded, None, None, ctx),
                        Err(e) => {
                            let message = format!("cannot write {}: {e}", marker.display());
                            self.finish_job(job_id, JobState::Failed, Some(message), None, ctx)
                        }
                    }
                }
            }
        }
    }

    /// Ends a job: cancels its running attempts, commits `FinishJob`, then wakes waiters and
    /// releases map outputs.
    fn finish_job(
        &mut self,
        job_id: JobId,
        state: JobState,
        error: Option<String>,
        result: Option<Json>,
        ctx: &mut Context<Self>,
    ) {
        if !self.finishing.insert(job_id) {
            return;
        }
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let running: Vec<(usize, u32, WorkerId)> = job
            .running()
            .map(|(i, a)| (i, a.number, a.worker))
            .collect();
        let now_wall = now_ms();
        for (index, number, worker) in running {
            job.lose_attempt(index, number, now_wall);
            let attempt = AttemptId {
                job_id,
                task_id: job.tasks[index].plan.id(),
                attempt: number,
            };
            if let Some(w) = self.workers.get_mut(&worker) {
                w.running = w.running.saturating_sub(1);
            }
            if let Some(addr) = self.workers.get(&worker).map(|w| w.addr.clone()) {
                actix::spawn(self.launcher.cancel(addr, attempt));
            }
        }
        let output =
            if state == JobState::Succeeded && matches!(job.spec.kind, KindSpec::MapReduce(_)) {
                job.output_files()
            } else {
                Vec::new()
            };
        let holders = job.map_holders();
        let command = Command::FinishJob {
            id: job_id,
            state,
            error,
            result,
            output,
            at_ms: now_wall,
        };
        let meta = self.meta.clone();
        let finished = async move { meta.propose(command).await }
            .into_actor(self)
            .map(move |committed, act, ctx| {
                act.finishing.remove(&job_id);
                if let Err(error) = committed {
                    // Not committed (lost leadership or storage failure): whoever leads next
                    // finishes it again from the committed tasks.
                    warn!(%job_id, %error, "could not commit the end of a job");
                    return;
                }
                info!(%job_id, state = state.as_str(), "job finished");
                act.active.remove(&job_id);
                act.finished.push_back(job_id);
                while act.finished.len() > FINISHED_HISTORY {
                    if let Some(old) = act.finished.pop_front() {
                        act.jobs.remove(&old);
                    }
                }
                for waiter in act.waiters.remove(&job_id).unwrap_or_default() {
                    let _ = waiter.send(());
                }
                for worker in holders {
                    if let Some(addr) = act.addr_of(worker) {
                        actix::spawn(act.launcher.release_job(addr, job_id));
                    }
                }
                act.queue_dispatch(ctx);
            });
        // Spawned, not waited: many jobs can be finishing at once, and their commits share
        // log entries.
        ctx.spawn(finished);
    }

    /// Forgets a job whose submission could not be committed: its attempts are cancelled and
    /// their outcomes will be ignored.
    fn abandon(&mut self, job_id: JobId, ctx: &mut Context<Self>) {
        self.active.remove(&job_id);
        let Some(job) = self.jobs.remove(&job_id) else {
            return;
        };
        warn!(%job_id, "the submission could not be committed; dropping the job");
        for (index, attempt) in job.running() {
            let id = AttemptId {
                job_id,
                task_id: job.tasks[index].plan.id(),
                attempt: attempt.number,
            };
            self.release_slot(attempt.worker);
            self.cancel_attempt(attempt.worker, id);
        }
        for waiter in self.waiters.remove(&job_id).unwrap_or_default() {
            let _ = waiter.send(());
        }
        self.queue_dispatch(ctx);
    }

    /// Map outputs recorded on workers that are not live (after a takeover: workers that never
    /// re-registered) are lost: those maps run again.
    fn lose_outputs_of_absent_workers(&mut self) {
        let now_wall = now_ms();
        let mut commands = Vec::new();
        for job_id in self.active.keys() {
            let Some(job) = self.jobs.get_mut(job_id) else {
                continue;
            };
            let absent: std::collections::BTreeSet<WorkerId> = job
                .tasks
                .iter()
                .filter_map(|t| t.done.as_ref().map(|d| d.worker_id))
                .filter(|w| !self.workers.contains_key(w))
                .collect();
            let mut lost = Vec::new();
            for worker in absent {
                lost.extend(job.lose_worker(worker, now_wall));
            }
            if !lost.is_empty() {
                warn!(%job_id, maps = lost.len(), "map outputs on workers that did not come back run again");
                commands.push(Command::LoseMapOutputs {
                    job_id: *job_id,
                    tasks: lost,
                });
            }
        }
        for command in commands {
            self.meta.propose_nowait(command);
        }
    }

    fn worker_lost(&mut self, worker: WorkerId, ctx: &mut Context<Self>) {
        let Some(gone) = self.workers.remove(&worker) else {
            return;
        };
        self.rebuild_placement();
        warn!(%worker, name = %gone.name, "worker lost; its tasks run elsewhere");
        let now_wall = now_ms();
        let mut lost_outputs = Vec::new();
        for job_id in self.active.keys() {
            if let Some(job) = self.jobs.get_mut(job_id) {
                let lost = job.lose_worker(worker, now_wall);
                if !lost.is_empty() {
                    lost_outputs.push(Command::LoseMapOutputs {
                        job_id: *job_id,
                        tasks: lost,
                    });
                }
            }
        }
        for command in lost_outputs {
            self.meta.propose_nowait(command);
        }
        self.queue_dispatch(ctx);
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.leading.is_none() {
            return;
        }
        if self.ids.last_ms() + ID_RENEWAL_MARGIN_MS > self.ids_reserved_until {
            self.renew_ids();
        }
        let now = Instant::now();
        let now_wall = now_ms();
        let mut timed_out = Vec::new();
        let mut backups = Vec::new();
        for job_id in self.active.keys() {
            let Some(job) = self.jobs.get(job_id) else {
                continue;
            };
            if let Some(timeout) = job.spec.timeout_ms.map(Duration::from_millis) {
                for (index, attempt) in job.running() {
                    if now.duration_since(attempt.launched) > timeout {
                        timed_out.push((*job_id, index, attempt.number, attempt.worker, timeout));
                    }
                }
            }
            for index in job.stragglers(now, self.backup_min_age) {
                backups.push((*job_id, index));
            }
        }
        for (job_id, index, number, worker, timeout) in timed_out {
            let Some(job) = self.jobs.get_mut(&job_id) else {
                continue;
            };
            let attempt = AttemptId {
                job_id,
                task_id: job.tasks[index].plan.id(),
                attempt: number,
            };
            let error = format!("timed out after {} ms", timeout.as_millis());
            let outcome = job.fail(index, number, &error, true, now_wall);
            self.release_slot(worker);
            self.cancel_attempt(worker, attempt);
            if let Failure::JobFailed(message) = outcome {
                self.finish_job(job_id, JobState::Failed, Some(message), None, ctx);
            }
        }
        for (job_id, index) in backups {
            let Some(job) = self.jobs.get(&job_id) else {
                continue;
            };
            if Self::routing_key(&job.spec).is_some() {
                continue; // a keyed task runs on its key's owner only, never as a copy elsewhere
            }
            let name = Self::job_name(&job.spec);
            let exclude: Vec<WorkerId> =
                job.tasks[index].attempts.iter().map(|a| a.worker).collect();
            let Some(worker) = self.pick_worker(&name, &exclude) else {
                continue;
            };
            let Some(job) = self.jobs.get_mut(&job_id) else {
                continue;
            };
            let attempt = job.start_attempt(index, worker, now, now_wall, true);
            info!(%attempt, %worker, "launching a backup copy of a straggler");
            let assignment = self.assignment(job_id, index, attempt);
            if let Some(w) = self.workers.get_mut(&worker) {
                w.running += 1;
            }
            self.send_launch(worker, vec![assignment], ctx);
        }
        self.queue_dispatch(ctx);
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(100_000);
        ctx.run_interval(TICK, |act, ctx| act.tick(ctx));
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Dispatch;

impl Handler<Dispatch> for Scheduler {
    type Result = ();
    fn handle(&mut self, _: Dispatch, ctx: &mut Context<Self>) {
        self.dispatch_queued = false;
        self.dispatch(ctx);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct LaunchFailed {
    worker: WorkerId,
    attempts: Vec<AttemptId>,
}

impl Handler<LaunchFailed> for Scheduler {
    type Result = ();
    fn handle(&mut self, msg: LaunchFailed, ctx: &mut Context<Self>) {
        let now_wall = now_ms();
        for attempt in msg.attempts {
            let Some(job) = self.jobs.get_mut(&attempt.job_id) else {
                continue;
            };
            let Some(index) = job.task_index(attempt.task_id) else {
                continue;
            };
            if job.lose_attempt(index, attempt.attempt, now_wall) {
                self.release_slot(msg.worker);
            }
        }
        if let Some(w) = self.workers.get_mut(&msg.worker) {
            w.backoff_until = Some(Instant::now() + Duration::from_secs(1));
        }
        self.queue_dispatch(ctx);
    }
}

/// Submit a job: plan it, commit it, queue its tasks. Replies with its id.
#[derive(Debug, Message)]
#[rtype(result = "Result<JobId>")]
pub struct SubmitJob {
    /// The validated spec.
    pub spec: JobSpec,
}

impl Handler<SubmitJob> for Scheduler {
    type Result = ResponseActFuture<Self, Result<JobId>>;

    fn handle(&mut self, msg: SubmitJob, _ctx: &mut Context<Self>) -> Self::Result {
        if self.leading.is_none() {
            let leader = self.meta.leader().map(|(id, _)| id);
            return Box::pin(fut::ready(Err(Error::NotLeader { leader })));
        }
        let name = Self::job_name(&msg.spec);
        if !self.workers.values().any(|w| w.serves.contains(&name)) {
            let mut served: Vec<&str> = self
                .workers
                .values()
                .flat_map(|w| w.serves.iter())
                .filter(|n| n.kind == name.kind)
                .map(|n| n.name.as_str())
                .collect();
            served.sort_unstable();
            served.dedup();
            let reason = format!(
                "unknown {} job `{}`: no live worker serves it (served: {})",
                name.kind.as_str(),
                name.name,
                if served.is_empty() {
                    "none".to_string()
                } else {
                    served.join(", ")
                }
            );
            return Box::pin(fut::ready(Err(Error::Rejected { reason })));
        }
        if let KindSpec::MapReduce(mr) = &msg.spec.kind {
            if let Err(jobs::Error::InvalidParams { reason, .. }) =
                jobs::registry::mapreduce(&msg.spec.job, &mr.params.0)
            {
                let reason = format!("invalid params for `{}`: {reason}", msg.spec.job);
                return Box::pin(fut::ready(Err(Error::Rejected { reason })));
            }
        }
        let ids = self.ids.clone();
        let base = self.base_dir.clone();
        let spec = msg.spec;
        let planned = async move {
            let id = JobId(ids.next());
            let (spec, tasks) = if matches!(spec.kind, KindSpec::Task(_)) {
                planner::plan(spec, &base, || ids.next())?
            } else {
                let ids = ids.clone();
                tokio::task::spawn_blocking(move || planner::plan(spec, &base, || ids.next()))
                    .await
                    .map_err(|e| Error::Io(std::io::Error::other(e)))??
            };
            Ok::<_, Error>((id, spec, tasks))
        };
        Box::pin(planned.into_actor(self).then(
            |planned, act, ctx| -> ResponseActFuture<Self, Result<JobId>> {
                let (id, spec, tasks) = match planned {
                    Ok(planned) => planned,
                    Err(error) => return Box::pin(fut::ready(Err(error))),
                };
                let at_ms = now_ms();
                // The job's tasks may launch while `SubmitJob` is being committed: every later
                // command about the job (`StartJob`, `FinishTask`, `FinishJob`) is proposed after it
                // through the same ordered queue, so none can commit without it, and the submitter
                // hears of the job only once it is durable.
                let record =
                    crate::meta::state::JobRecord::submitted(id, &spec, at_ms, &tasks, None);
                act.jobs.insert(id, JobRun::from_record(&record));
                act.active.insert(id, ());
                act.queue_dispatch(ctx);
                let meta = act.meta.clone();
                let command = Command::SubmitJob {
                    id,
                    spec,
                    at_ms,
                    tasks,
                    parent: None,
                };
                Box::pin(
                    async move { meta.propose(command).await }
                        .into_actor(act)
                        .map(move |committed, act, ctx| match committed {
                            Ok(_) => {
                                debug!(job_id = %id, "job accepted");
                                Ok(id)
                            }
                            Err(error) => {
                                act.abandon(id, ctx);
                                Err(error.into())
                            }
                        }),
                )
            },
        ))
    }
}

/// Task outcomes reported by a worker. Refused with `NotLeader` on a follower, so the worker
/// reports them again to the leader.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), jobs::rpc::RemoteError>")]
pub struct ReportStatuses {
    /// The reporting worker.
    pub worker_id: WorkerId,
    /// The outcomes.
    pub statuses: Vec<TaskStatus>,
}

impl Handler<ReportStatuses> for Scheduler {
    type Result = Result<(), jobs::rpc::RemoteError>;
    fn handle(&mut self, msg: ReportStatuses, ctx: &mut Context<Self>) -> Self::Result {
        if self.leading.is_none() {
            return Err(self.not_leader());
        }
        for status in msg.statuses {
            self.on_status(msg.worker_id, status, ctx);
        }
        Ok(())
    }
}

/// This master's leadership changed: `ready` means it leads and its state is complete.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "()")]
pub struct LeadershipChanged {
    /// Whether this master is the ready leader now.
    pub ready: bool,
}

impl Handler<LeadershipChanged> for Scheduler {
    type Result = ();
    fn handle(&mut self, msg: LeadershipChanged, ctx: &mut Context<Self>) {
        match (msg.ready, self.leading.is_some()) {
            (true, false) => {
                info!("scheduler taking over as the leader");
                self.take_over(ctx);
            }
            (false, true) => self.step_down(),
            _ => {}
        }
    }
}

/// A worker (re)joined: it can take tasks. A new incarnation of a known worker replaces the old
/// one, whose running tasks and map outputs are gone.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct WorkerJoined {
    /// Its id.
    pub worker_id: WorkerId,
    /// Its name.
    pub name: String,
    /// Its RPC address.
    pub addr: String,
    /// Its slots.
    pub slots: u32,
    /// The jobs it serves.
    pub jobs: Vec<JobName>,
    /// Whether this replaces an earlier incarnation.
    pub restarted: bool,
}

impl Handler<WorkerJoined> for Scheduler {
    type Result = ();
    fn handle(&mut self, msg: WorkerJoined, ctx: &mut Context<Self>) {
        if msg.restarted {
            self.worker_lost(msg.worker_id, ctx);
        }
        let running = self.workers.get(&msg.worker_id).map_or(0, |w| w.running);
        self.workers.insert(
            msg.worker_id,
            LiveWorker {
                name: msg.name,
                addr: msg.addr,
                slots: msg.slots,
                running,
                serves: msg.jobs.into_iter().collect(),
                backoff_until: None,
            },
        );
        self.rebuild_placement();
        self.queue_dispatch(ctx);
    }
}

/// A worker stopped heartbeating or is draining: its work goes elsewhere.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct WorkerLost {
    /// Its id.
    pub worker_id: WorkerId,
}

impl Handler<WorkerLost> for Scheduler {
    type Result = ();
    fn handle(&mut self, msg: WorkerLost, ctx: &mut Context<Self>) {
        self.worker_lost(msg.worker_id, ctx);
    }
}

/// A heartbeat's list of running attempts; replies with the attempts the worker should stop
/// (the master no longer wants them), and treats attempts the worker should have but does not
/// (lost in transit) as lost.
#[derive(Debug, Message)]
#[rtype(result = "Vec<AttemptId>")]
pub struct Reconcile {
    /// The worker.
    pub worker_id: WorkerId,
    /// What it runs.
    pub running: Vec<AttemptId>,
}

impl Handler<Reconcile> for Scheduler {
    type Result = MessageResult<Reconcile>;
    fn handle(&mut self, msg: Reconcile, ctx: &mut Context<Self>) -> Self::Result {
        let reported: HashSet<AttemptId> = msg.running.iter().copied().collect();
        let cancel: Vec<AttemptId> = msg
            .running
            .into_iter()
            .filter(|a| {
                self.attempt_running_on(a)
                    .is_none_or(|(_, w)| w != msg.worker_id)
            })
            .collect();
        let now = Instant::now();
        let now_wall = now_ms();
        let mut missing = Vec::new();
        for job_id in self.active.keys() {
            let Some(job) = self.jobs.get(job_id) else {
                continue;
            };
            for (index, attempt) in job.running() {
                let id = AttemptId {
                    job_id: *job_id,
                    task_id: job.tasks[index].plan.id(),
                    attempt: attempt.number,
                };
                if attempt.worker == msg.worker_id
                    && now.duration_since(attempt.launched) > LAUNCH_GRACE
                    && !reported.contains(&id)
                {
                    missing.push((index, id));
                }
            }
        }
        for (index, id) in missing {
            if let Some(job) = self.jobs.get_mut(&id.job_id) {
                if job.lose_attempt(index, id.attempt, now_wall) {
                    warn!(attempt = %id, worker = %msg.worker_id, "worker does not run a launched attempt; re-queued");
                    self.release_slot(msg.worker_id);
                }
            }
        }
        if !cancel.is_empty() {
            self.queue_dispatch(ctx);
        }
        MessageResult(cancel)
    }
}

/// Cancel a job.
#[derive(Debug, Message)]
#[rtype(result = "Result<()>")]
pub struct CancelJob {
    /// The job.
    pub id: JobId,
}

impl Handler<CancelJob> for Scheduler {
    type Result = Result<()>;
    fn handle(&mut self, msg: CancelJob, ctx: &mut Context<Self>) -> Result<()> {
        if self.active.contains_key(&msg.id) {
            self.finish_job(
                msg.id,
                JobState::Cancelled,
                Some("cancelled by a user".into()),
                None,
                ctx,
            );
            return Ok(());
        }
        let state = self.meta.state();
        let known = state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .jobs
            .contains_key(&msg.id);
        if known {
            Ok(()) // already ended: cancelling is a no-op
        } else {
            Err(Error::UnknownJob { id: msg.id })
        }
    }
}

/// Wait for a job to end: replies with a receiver that fires when it does, or `None` if it is
/// not active (already ended, or unknown).
#[derive(Debug, Message)]
#[rtype(result = "Option<oneshot::Receiver<()>>")]
pub struct WatchJob {
    /// The job.
    pub id: JobId,
}

impl Handler<WatchJob> for Scheduler {
    type Result = Option<oneshot::Receiver<()>>;
    fn handle(&mut self, msg: WatchJob, _ctx: &mut Context<Self>) -> Self::Result {
        if !self.active.contains_key(&msg.id) {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.entry(msg.id).or_default().push(tx);
        Some(rx)
    }
}

/// A job's tasks with their attempt history, if the scheduler still has it.
#[derive(Debug, Message)]
#[rtype(result = "Option<Vec<crate::job_run::TaskRun>>")]
pub struct JobTasks {
    /// The job.
    pub id: JobId,
}

impl Handler<JobTasks> for Scheduler {
    type Result = Option<Vec<crate::job_run::TaskRun>>;
    fn handle(&mut self, msg: JobTasks, _ctx: &mut Context<Self>) -> Self::Result {
        self.jobs.get(&msg.id).map(|j| j.tasks.clone())
    }
}

/// Running attempts per worker.
#[derive(Debug, Message)]
#[rtype(result = "HashMap<WorkerId, u32>")]
pub struct WorkerLoads;

impl Handler<WorkerLoads> for Scheduler {
    type Result = MessageResult<WorkerLoads>;
    fn handle(&mut self, _: WorkerLoads, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.workers
                .iter()
                .map(|(id, w)| (*id, w.running))
                .collect(),
        )
    }
}

/// Each live worker's share of the placement ring: the fraction of keys it owns, summing to 1
/// over the live workers (empty on a master that does not lead).
#[derive(Debug, Message)]
#[rtype(result = "BTreeMap<WorkerId, f64>")]
pub struct RingShares;

impl Handler<RingShares> for Scheduler {
    type Result = MessageResult<RingShares>;
    fn handle(&mut self, _: RingShares, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.placement.shares().clone())
    }
}

#[cfg(test)]
mod tests;

//! `JobRun`: the leader's in-memory view of one active job — which tasks are pending, which
//! attempts run where, what failed — as plain data with no actors and no I/O, so the
//! scheduling rules can be tested directly. It is rebuilt from the replicated [`JobRecord`]
//! after an election; only what is committed there (finished tasks) survives a leader change.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jobs::rpc::{AttemptId, MapOutputLocation, Segment, TaskAssignment, TaskOutput, TaskWork};
use jobs::spec::KindSpec;
use jobs::{JobId, JobSpec, TaskId, WorkerId};

use crate::meta::command::{TaskDone, TaskPlan};
use crate::meta::state::JobRecord;

/// How one attempt is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptState {
    /// Launched and not reported yet.
    Running,
    /// Its output was recorded.
    Succeeded,
    /// It failed with this message.
    Failed(String),
    /// Its worker died or could not be reached; not counted as a failure.
    Lost,
    /// Another attempt of the same task won; this one was cancelled.
    Superseded,
}

/// One attempt of a task.
#[derive(Clone, Debug)]
pub struct AttemptRun {
    /// Its number.
    pub number: u32,
    /// Where it runs.
    pub worker: WorkerId,
    /// When it was launched.
    pub launched: Instant,
    /// Launch time in ms since the Unix epoch (for the UI).
    pub launched_ms: u64,
    /// Finish time in ms since the Unix epoch.
    pub finished_ms: Option<u64>,
    /// Its state.
    pub state: AttemptState,
    /// Whether it is a speculative backup copy.
    pub backup: bool,
}

/// One task of an active job.
#[derive(Clone, Debug)]
pub struct TaskRun {
    /// What it is.
    pub plan: TaskPlan,
    /// The winning attempt's record (for a map: where its output lives).
    pub done: Option<TaskDone>,
    /// Every attempt so far.
    pub attempts: Vec<AttemptRun>,
    /// Failed attempts (lost ones do not count).
    pub failures: u32,
}

impl TaskRun {
    /// Whether an attempt is running.
    pub fn is_running(&self) -> bool {
        self.attempts
            .iter()
            .any(|a| a.state == AttemptState::Running)
    }

    fn attempt_mut(&mut self, number: u32) -> Option<&mut AttemptRun> {
        self.attempts.iter_mut().find(|a| a.number == number)
    }
}

/// What became of a reported success.
#[derive(Debug, PartialEq, Eq)]
pub enum Success {
    /// The task was already done (a backup or a late duplicate): nothing to record.
    Duplicate,
    /// Recorded; these other attempts of the task should be cancelled.
    Recorded {
        /// The losing attempts still running.
        cancel: Vec<(WorkerId, AttemptId)>,
    },
}

/// What became of a reported failure.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// The attempt was not running (stale report): ignored.
    Stale,
    /// The task will be tried again.
    Retry,
    /// The task has failed for good, and with it the job, with this message.
    JobFailed(String),
}

/// An active job.
#[derive(Debug)]
pub struct JobRun {
    /// Its id.
    pub id: JobId,
    /// Its spec.
    pub spec: JobSpec,
    /// Its tasks in plan order.
    pub tasks: Vec<TaskRun>,
    /// Whether a task has been launched (the job is `running`).
    pub started: bool,
    index: HashMap<TaskId, usize>,
}

impl JobRun {
    /// The runtime view of a recorded job: finished tasks stay finished, the rest are pending.
    pub fn from_record(record: &JobRecord) -> JobRun {
        let tasks: Vec<TaskRun> = record
            .tasks
            .iter()
            .map(|t| TaskRun {
                plan: t.plan.clone(),
                done: t.done.clone(),
                attempts: Vec::new(),
                failures: 0,
            })
            .collect();
        let index = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.plan.id(), i))
            .collect();
        JobRun {
            id: record.id,
            spec: record.spec.clone(),
            tasks,
            started: record.started_ms.is_some(),
            index,
        }
    }

    /// The position of a task.
    pub fn task_index(&self, task: TaskId) -> Option<usize> {
        self.index.get(&task).copied()
    }

    /// Whether every map task is done (true for jobs without maps).
    pub fn maps_done(&self) -> bool {
        self.tasks
            .iter()
            .all(|t| !matches!(t.plan, TaskPlan::Map { .. }) || t.done.is_some())
    }

    /// Whether every task is done.
    pub fn all_done(&self) -> bool {
        self.tasks.iter().all(|t| t.done.is_some())
    }

    /// Tasks that can be launched now: not done, not running, and (for a reduce) all maps done.
    pub fn runnable(&self) -> Vec<usize> {
        let maps_done = self.maps_done();
        self.tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.done.is_none() && !t.is_running())
            .filter(|(_, t)| maps_done || !matches!(t.plan, TaskPlan::Reduce { .. }))
            .map(|(i, _)| i)
            .collect()
    }

    /// Records a new attempt of task `index` on `worker` and returns its id.
    pub fn start_attempt(
        &mut self,
        index: usize,
        worker: WorkerId,
        now: Instant,
        now_ms: u64,
        backup: bool,
    ) -> AttemptId {
        let task = &mut self.tasks[index];
        let number = task.attempts.len() as u32 + 1;
        task.attempts.push(AttemptRun {
            number,
            worker,
            launched: now,
            launched_ms: now_ms,
            finished_ms: None,
            state: AttemptState::Running,
            backup,
        });
        self.started = true;
        AttemptId {
            job_id: self.id,
            task_id: task.plan.id(),
            attempt: number,
        }
    }

    /// What to send a worker for an attempt. `addr` gives live workers' RPC addresses (for a
    /// reduce's map output locations).
    pub fn assignment(
        &self,
        index: usize,
        attempt: AttemptId,
        addr: impl Fn(WorkerId) -> Option<String>,
    ) -> TaskAssignment {
        let task = &self.tasks[index];
        let work = match (&task.plan, &self.spec.kind) {
            (TaskPlan::Map { split, .. }, KindSpec::MapReduce(mr)) => TaskWork::Map {
                split: split.clone(),
                reducers: mr.reducers,
                params: mr.params.clone(),
            },
            (TaskPlan::Reduce { partition, .. }, KindSpec::MapReduce(mr)) => TaskWork::Reduce {
                partition: *partition,
                output_dir: mr.output.clone(),
                maps: self.map_locations(*partition, &addr),
                params: mr.params.clone(),
            },
            // A task job's single run. The planner makes no other combination; were one made, it
            // would reach the worker as a run of a job it does not serve as a task, and fail
            // there with that message rather than do something made up here.
            (_, kind) => TaskWork::Run {
                payload: match kind {
                    KindSpec::Task(t) => t.payload.clone(),
                    KindSpec::MapReduce(_) => jobs::spec::Json::default(),
                },
            },
        };
        TaskAssignment {
            attempt,
            job: self.spec.job.clone(),
            timeout_ms: self.spec.timeout_ms,
            work,
        }
    }

    fn map_locations(
        &self,
        partition: u32,
        addr: &impl Fn(WorkerId) -> Option<String>,
    ) -> Vec<MapOutputLocation> {
        self.tasks
            .iter()
            .filter_map(|t| {
                let done = t.done.as_ref()?;
                let TaskOutput::Map { segments } = &done.output else {
                    return None;
                };
                let len = segments
                    .get(partition as usize)
                    .copied()
                    .unwrap_or(Segment::default())
                    .len;
                Some(MapOutputLocation {
                    map_task: t.plan.id(),
                    attempt: done.attempt,
                    worker_id: done.worker_id,
                    worker_addr: addr(done.worker_id).unwrap_or_default(),
                    len,
                })
            })
            .collect()
    }

    /// Records a successful attempt (of `done.worker_id`); every other running attempt of the
    /// task is superseded and returned for cancelling.
    pub fn succeed(&mut self, index: usize, number: u32, done: TaskDone) -> Success {
        let job_id = self.id;
        let task = &mut self.tasks[index];
        let task_id = task.plan.id();
        let already_done = task.done.is_some();
        // The reporting worker's own attempt: after a failover a new leader numbers attempts
        // afresh, so the same number may belong to an attempt on another worker, which must
        // then be superseded (and its slot freed), not marked as the winner.
        let reporter = done.worker_id;
        if let Some(attempt) = task
            .attempts
            .iter_mut()
            .find(|a| a.number == number && a.worker == reporter)
        {
            attempt.finished_ms = Some(done.finished_ms);
            attempt.state = if already_done {
                AttemptState::Superseded
            } else {
                AttemptState::Succeeded
            };
        }
        if task.done.is_some() {
            return Success::Duplicate;
        }
        task.done = Some(done);
        let mut cancel = Vec::new();
        for other in task
            .attempts
            .iter_mut()
            .filter(|a| a.state == AttemptState::Running)
        {
            other.state = AttemptState::Superseded;
            cancel.push((
                other.worker,
                AttemptId {
                    job_id,
                    task_id,
                    attempt: other.number,
                },
            ));
        }
        Success::Recorded { cancel }
    }

    /// Records a failed attempt; the task fails the job after `max_attempts` failures, or at
    /// once if the failure is not retryable.
    pub fn fail(
        &mut self,
        index: usize,
        number: u32,
        error: &str,
        retryable: bool,
        now_ms: u64,
    ) -> Failure {
        let max_attempts = self.spec.max_attempts;
        let task = &mut self.tasks[index];
        let Some(attempt) = task.attempt_mut(number) else {
            return Failure::Stale;
        };
        if attempt.state != AttemptState::Running {
            return Failure::Stale;
        }
        attempt.state = AttemptState::Failed(error.to_string());
        attempt.finished_ms = Some(now_ms);
        task.failures += 1;
        if task.done.is_some() {
            return Failure::Stale;
        }
        if !retryable || task.failures >= max_attempts {
            let what = match task.plan {
                TaskPlan::Map { .. } => "map task",
                TaskPlan::Reduce { .. } => "reduce task",
                TaskPlan::Run { .. } => "task",
            };
            let tries = if retryable {
                format!(" after {} attempts", task.failures)
            } else {
                String::new()
            };
            return Failure::JobFailed(format!("{what} {index} failed{tries}: {error}"));
        }
        Failure::Retry
    }

    /// Marks an attempt lost (its worker died or could not be reached); the task becomes
    /// pending again unless another attempt runs. Not counted as a failure.
    pub fn lose_attempt(&mut self, index: usize, number: u32, now_ms: u64) -> bool {
        let Some(attempt) = self.tasks[index].attempt_mut(number) else {
            return false;
        };
        if attempt.state != AttemptState::Running {
            return false;
        }
        attempt.state = AttemptState::Lost;
        attempt.finished_ms = Some(now_ms);
        true
    }

    /// A worker died: its running attempts are lost, and its finished map outputs are lost if
    /// a reduce may still need them. Returns the map tasks whose output was lost.
    pub fn lose_worker(&mut self, worker: WorkerId, now_ms: u64) -> Vec<TaskId> {
        for task in &mut self.tasks {
            for attempt in task
                .attempts
                .iter_mut()
                .filter(|a| a.worker == worker && a.state == AttemptState::Running)
            {
                attempt.state = AttemptState::Lost;
                attempt.finished_ms = Some(now_ms);
            }
        }
        let reduces_pending = self
            .tasks
            .iter()
            .any(|t| matches!(t.plan, TaskPlan::Reduce { .. }) && t.done.is_none());
        if !reduces_pending {
            return Vec::new();
        }
        let mut lost = Vec::new();
        for task in &mut self.tasks {
            if matches!(task.plan, TaskPlan::Map { .. })
                && task.done.as_ref().is_some_and(|d| d.worker_id == worker)
            {
                task.done = None;
                lost.push(task.plan.id());
            }
        }
        lost
    }

    /// A reduce attempt could not fetch `map_task`'s output: the reduce attempt is lost (not a
    /// failure) and, if the output is still the one recorded, the map must run again. Returns
    /// the map task if its output was dropped.
    pub fn fetch_failed(
        &mut self,
        index: usize,
        number: u32,
        map_task: TaskId,
        now_ms: u64,
    ) -> Option<TaskId> {
        self.lose_attempt(index, number, now_ms);
        let map = self.task_index(map_task)?;
        let task = &mut self.tasks[map];
        if matches!(task.plan, TaskPlan::Map { .. }) && task.done.is_some() {
            task.done = None;
            return Some(map_task);
        }
        None
    }

    /// Running attempts: (task index, attempt).
    pub fn running(&self) -> impl Iterator<Item = (usize, &AttemptRun)> {
        self.tasks.iter().enumerate().flat_map(|(i, t)| {
            t.attempts
                .iter()
                .filter(|a| a.state == AttemptState::Running)
                .map(move |a| (i, a))
        })
    }

    /// Tasks that deserve a backup copy: the phase has nothing left to launch, the task runs
    /// alone (no backup yet) for longer than twice the phase's median finished duration and at
    /// least `min_age`.
    pub fn stragglers(&self, now: Instant, min_age: Duration) -> Vec<usize> {
        let maps_done = self.maps_done();
        let in_phase = |t: &TaskRun| maps_done != matches!(t.plan, TaskPlan::Map { .. });
        if self.runnable().iter().any(|&i| in_phase(&self.tasks[i])) {
            return Vec::new();
        }
        let mut durations: Vec<u64> = self
            .tasks
            .iter()
            .filter(|t| in_phase(t))
            .filter_map(|t| {
                t.done
                    .as_ref()
                    .map(|d| d.finished_ms.saturating_sub(d.started_ms))
            })
            .collect();
        if durations.is_empty() {
            return Vec::new();
        }
        durations.sort_unstable();
        let threshold = Duration::from_millis(2 * durations[durations.len() / 2]).max(min_age);
        self.tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| in_phase(t) && t.done.is_none())
            .filter(|(_, t)| {
                let running: Vec<&AttemptRun> = t
                    .attempts
                    .iter()
                    .filter(|a| a.state == AttemptState::Running)
                    .collect();
                running.len() == 1
                    && !running[0].backup
                    && now.duration_since(running[0].launched) > threshold
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// A MapReduce job's output files once every reduce is done: the part files, then `_SUCCESS`.
    pub fn output_files(&self) -> Vec<String> {
        let mut files: Vec<String> = self
            .tasks
            .iter()
            .filter_map(|t| match &t.done.as_ref()?.output {
                TaskOutput::Reduce { file } => Some(file.clone()),
                _ => None,
            })
            .collect();
        files.sort();
        if let KindSpec::MapReduce(mr) = &self.spec.kind {
            files.push(format!("{}/_SUCCESS", mr.output.trim_end_matches('/')));
        }
        files
    }

    /// Workers holding map outputs of this job (to release when it ends).
    pub fn map_holders(&self) -> Vec<WorkerId> {
        let mut holders: Vec<WorkerId> = self
            .tasks
            .iter()
            .filter(|t| matches!(t.plan, TaskPlan::Map { .. }))
            .flat_map(|t| t.attempts.iter().map(|a| a.worker))
            .collect();
        holders.sort();
        holders.dedup();
        holders
    }
}

#[cfg(test)]
mod tests {
    use jobs::rpc::{Counters, InputSplit};

    use super::*;

    fn mapreduce_job(maps: u64, reduces: u32) -> JobRun {
        let spec = JobSpec::from_json(&format!(
            r#"{{"kind":"mapreduce","job":"wordcount","input":["x"],"output":"/out","reducers":{reduces},"max_attempts":2}}"#
        ))
        .unwrap();
        let mut tasks = Vec::new();
        for i in 0..maps {
            tasks.push(TaskPlan::Map {
                id: TaskId(100 + i),
                split: InputSplit {
                    path: "x".into(),
                    start: i,
                    end: i + 1,
                },
            });
        }
        for p in 0..reduces {
            tasks.push(TaskPlan::Reduce {
                id: TaskId(200 + u64::from(p)),
                partition: p,
            });
        }
        let record = JobRecord::submitted(JobId(1), &spec, 0, &tasks, None);
        JobRun::from_record(&record)
    }

    fn map_done(worker: u64, attempt: u32, started: u64, finished: u64) -> TaskDone {
        TaskDone {
            attempt,
            worker_id: WorkerId(worker),
            output: TaskOutput::Map {
                segments: vec![
                    Segment { offset: 0, len: 10 },
                    Segment { offset: 10, len: 0 },
                ],
            },
            counters: Counters::default(),
            started_ms: started,
            finished_ms: finished,
        }
    }

    #[test]
    fn reduces_wait_for_every_map() {
        let mut job = mapreduce_job(2, 2);
        assert_eq!(job.runnable(), vec![0, 1]);
        let now = Instant::now();
        let a = job.start_attempt(0, WorkerId(1), now, 0, false);
        assert_eq!(job.runnable(), vec![1]);
        job.succeed(0, a.attempt, map_done(1, a.attempt, 0, 5));
        assert_eq!(job.runnable(), vec![1], "one map is still pending");
        let b = job.start_attempt(1, WorkerId(2), now, 0, false);
        job.succeed(1, b.attempt, map_done(2, b.attempt, 0, 5));
        assert_eq!(job.runnable(), vec![2, 3]);
        let r = job.start_attempt(2, WorkerId(1), now, 0, false);
        let assignment = job.assignment(2, r, |w| Some(format!("addr{}", w.0)));
        let TaskWork::Reduce {
            maps, partition, ..
        } = assignment.work
        else {
            panic!("not a reduce")
        };
        assert_eq!(partition, 0);
        assert_eq!(maps.len(), 2);
        assert_eq!(maps[1].worker_addr, "addr2");
        assert_eq!(maps[0].len, 10);
    }

    #[test]
    fn a_dead_worker_loses_running_attempts_and_needed_map_outputs() {
        let mut job = mapreduce_job(2, 1);
        let now = Instant::now();
        let a = job.start_attempt(0, WorkerId(1), now, 0, false);
        job.succeed(0, a.attempt, map_done(1, 1, 0, 5));
        job.start_attempt(1, WorkerId(1), now, 0, false);
        let lost = job.lose_worker(WorkerId(1), 9);
        assert_eq!(lost, vec![TaskId(100)]);
        assert_eq!(job.runnable(), vec![0, 1], "both maps run again");
        assert_eq!(job.tasks[1].failures, 0, "a lost attempt is not a failure");
    }

    #[test]
    fn failures_fail_the_job_after_max_attempts() {
        let mut job = mapreduce_job(1, 1);
        let now = Instant::now();
        let a = job.start_attempt(0, WorkerId(1), now, 0, false);
        assert_eq!(job.fail(0, a.attempt, "boom", true, 1), Failure::Retry);
        assert_eq!(
            job.fail(0, a.attempt, "boom", true, 1),
            Failure::Stale,
            "a repeated report is stale"
        );
        let b = job.start_attempt(0, WorkerId(2), now, 0, false);
        match job.fail(0, b.attempt, "panicked: boom", true, 2) {
            Failure::JobFailed(msg) => assert!(
                msg.contains("panicked: boom") && msg.contains("2 attempts"),
                "{msg}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_first_success_wins_and_backups_are_cancelled() {
        let mut job = mapreduce_job(1, 1);
        let now = Instant::now();
        let a = job.start_attempt(0, WorkerId(1), now, 0, false);
        let b = job.start_attempt(0, WorkerId(2), now, 0, true);
        let outcome = job.succeed(0, b.attempt, map_done(2, b.attempt, 0, 5));
        assert_eq!(
            outcome,
            Success::Recorded {
                cancel: vec![(WorkerId(1), a)]
            }
        );
        assert_eq!(
            job.succeed(0, a.attempt, map_done(1, a.attempt, 0, 6)),
            Success::Duplicate
        );
        assert_eq!(job.tasks[0].done.as_ref().unwrap().worker_id, WorkerId(2));
    }

    #[test]
    fn stragglers_get_backups_only_at_the_end_of_a_phase() {
        let mut job = mapreduce_job(3, 1);
        let start = Instant::now();
        for i in 0..3 {
            job.start_attempt(i, WorkerId(i as u64 + 1), start, 0, false);
        }
        job.succeed(0, 1, map_done(1, 1, 0, 100));
        assert!(job
            .stragglers(
                start + Duration::from_millis(150),
                Duration::from_millis(10)
            )
            .is_empty());
        let late = start + Duration::from_millis(250);
        assert_eq!(job.stragglers(late, Duration::from_millis(10)), vec![1, 2]);
        assert!(
            job.stragglers(late, Duration::from_secs(10)).is_empty(),
            "min age holds"
        );
        job.start_attempt(1, WorkerId(3), late, 0, true);
        assert_eq!(
            job.stragglers(late, Duration::from_millis(10)),
            vec![2],
            "one backup per task"
        );
    }

    #[test]
    fn fetch_failure_reruns_the_map_without_counting_a_failure() {
        let mut job = mapreduce_job(1, 1);
        let now = Instant::now();
        job.start_attempt(0, WorkerId(1), now, 0, false);
        job.succeed(0, 1, map_done(1, 1, 0, 5));
        let r = job.start_attempt(1, WorkerId(2), now, 0, false);
        assert_eq!(
            job.fetch_failed(1, r.attempt, TaskId(100), 6),
            Some(TaskId(100))
        );
        assert_eq!(job.runnable(), vec![0], "the map first; the reduce waits");
        assert_eq!(job.tasks[1].failures, 0);
        assert_eq!(job.output_files(), vec!["/out/_SUCCESS".to_string()]);
    }

    #[test]
    fn a_late_success_under_a_reused_number_supersedes_the_other_worker_s_attempt() {
        // A new leader launched attempt 1 on w1; the old leader's attempt 1 on w2 reports first.
        let mut job = mapreduce_job(1, 1);
        let now = Instant::now();
        let ours = job.start_attempt(0, WorkerId(1), now, 0, false);
        let outcome = job.succeed(0, ours.attempt, map_done(2, ours.attempt, 0, 5));
        assert_eq!(
            outcome,
            Success::Recorded {
                cancel: vec![(WorkerId(1), ours)]
            }
        );
        assert_eq!(job.tasks[0].attempts[0].state, AttemptState::Superseded);
        assert_eq!(job.tasks[0].done.as_ref().unwrap().worker_id, WorkerId(2));
    }
}

//! The replicated metadata: jobs with their tasks, workers, and the id reservation, changed only
//! by [`MetaState::apply`]. Every master applies the same commands in the same order and so
//! holds the same state; the leader's in-memory actors are rebuilt from it after an election.

use std::collections::BTreeMap;

use jobs::registry::JobName;
use jobs::spec::Json;
use jobs::{JobId, JobSpec, JobState, WorkerId};
use serde::{Deserialize, Serialize};

use super::command::{Command, CommandResult, TaskDone, TaskPlan};

/// Everything the masters agree on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetaState {
    /// Every job, by id (Snowflake ids sort by submission time).
    pub jobs: BTreeMap<JobId, JobRecord>,
    /// Every worker that ever registered, by name.
    pub workers: BTreeMap<String, WorkerRecord>,
    /// The last worker id handed out.
    pub last_worker_id: u64,
    /// Snowflake time reserved so far (ms since the Snowflake epoch); ids must be issued above
    /// whatever an earlier leader may have issued.
    pub ids_reserved_until_ms: u64,
}

/// A job as recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Its id.
    pub id: JobId,
    /// The accepted spec.
    pub spec: JobSpec,
    /// Its state.
    pub state: JobState,
    /// When it was accepted (ms since the Unix epoch).
    pub submitted_ms: u64,
    /// When its first task was launched.
    pub started_ms: Option<u64>,
    /// When it ended.
    pub finished_ms: Option<u64>,
    /// Why it failed or was cancelled.
    pub error: Option<String>,
    /// A task job's result.
    pub result: Option<Json>,
    /// Output files.
    pub output: Vec<String>,
    /// The recurring job this is a firing of.
    pub parent: Option<JobId>,
    /// Its tasks, in plan order (maps, then reduces by partition; or one run).
    pub tasks: Vec<TaskRecord>,
}

/// A task as recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// What the task is.
    pub plan: TaskPlan,
    /// Its winning attempt, once it succeeded (cleared again if a map output is lost).
    pub done: Option<TaskDone>,
}

/// A registered worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// Its id, kept for the name forever.
    pub id: WorkerId,
    /// Its last registered RPC address.
    pub rpc_addr: String,
    /// Its slots.
    pub slots: u32,
    /// The jobs it serves.
    pub jobs: Vec<JobName>,
}

impl JobRecord {
    /// The record of a job as `SubmitJob` creates it: queued, no task done.
    pub fn submitted(
        id: JobId,
        spec: &JobSpec,
        at_ms: u64,
        tasks: &[TaskPlan],
        parent: Option<JobId>,
    ) -> JobRecord {
        JobRecord {
            id,
            spec: spec.clone(),
            state: JobState::Queued,
            submitted_ms: at_ms,
            started_ms: None,
            finished_ms: None,
            error: None,
            result: None,
            output: Vec::new(),
            parent,
            tasks: tasks
                .iter()
                .map(|plan| TaskRecord {
                    plan: plan.clone(),
                    done: None,
                })
                .collect(),
        }
    }

    /// Finished tasks and all tasks.
    pub fn progress(&self) -> (u64, u64) {
        let done = self.tasks.iter().filter(|t| t.done.is_some()).count();
        (done as u64, self.tasks.len() as u64)
    }
}

impl MetaState {
    /// Applies one command. Deterministic: the result depends only on the state and the
    /// command. Repeats are harmless: a second completion of a task, or of a job, is ignored.
    pub fn apply(&mut self, command: &Command) -> CommandResult {
        match command {
            Command::SubmitJob {
                id,
                spec,
                at_ms,
                tasks,
                parent,
            } => {
                if self.jobs.contains_key(id) {
                    return CommandResult::Ignored;
                }
                self.jobs
                    .insert(*id, JobRecord::submitted(*id, spec, *at_ms, tasks, *parent));
                CommandResult::Applied
            }
            Command::StartJob { id, at_ms } => match self.jobs.get_mut(id) {
                None => CommandResult::UnknownJob,
                Some(job) if job.state == JobState::Queued => {
                    job.state = JobState::Running;
                    job.started_ms = Some(*at_ms);
                    CommandResult::Applied
                }
                Some(_) => CommandResult::Ignored,
            },
            Command::FinishTask {
                job_id,
                task_id,
                done,
            } => {
                let Some(job) = self.jobs.get_mut(job_id) else {
                    return CommandResult::UnknownJob;
                };
                if job.state.is_final() {
                    return CommandResult::Ignored;
                }
                match job.tasks.iter_mut().find(|t| t.plan.id() == *task_id) {
                    Some(task) if task.done.is_none() => {
                        task.done = Some(done.clone());
                        CommandResult::Applied
                    }
                    _ => CommandResult::Ignored,
                }
            }
            Command::LoseMapOutputs { job_id, tasks } => {
                let Some(job) = self.jobs.get_mut(job_id) else {
                    return CommandResult::UnknownJob;
                };
                if job.state.is_final() {
                    return CommandResult::Ignored;
                }
                let mut lost = false;
                for task in job.tasks.iter_mut() {
                    if matches!(task.plan, TaskPlan::Map { .. })
                        && tasks.contains(&task.plan.id())
                        && task.done.is_some()
                    {
                        task.done = None;
                        lost = true;
                    }
                }
                if lost {
                    CommandResult::Applied
                } else {
                    CommandResult::Ignored
                }
            }
            Command::FinishJob {
                id,
                state,
                error,
                result,
                output,
                at_ms,
            } => match self.jobs.get_mut(id) {
                None => CommandResult::UnknownJob,
                Some(job) if job.state.is_final() => CommandResult::Ignored,
                Some(job) => {
                    job.state = *state;
                    job.error = error.clone();
                    job.result = result.clone();
                    job.output = output.clone();
                    job.finished_ms = Some(*at_ms);
                    CommandResult::Applied
                }
            },
            Command::RegisterWorker {
                name,
                rpc_addr,
                slots,
                jobs,
            } => {
                if let Some(worker) = self.workers.get_mut(name) {
                    worker.rpc_addr = rpc_addr.clone();
                    worker.slots = *slots;
                    worker.jobs = jobs.clone();
                    return CommandResult::Worker(worker.id);
                }
                self.last_worker_id += 1;
                let id = WorkerId(self.last_worker_id);
                let record = WorkerRecord {
                    id,
                    rpc_addr: rpc_addr.clone(),
                    slots: *slots,
                    jobs: jobs.clone(),
                };
                self.workers.insert(name.clone(), record);
                CommandResult::Worker(id)
            }
            Command::ReserveIds { until_ms } => {
                self.ids_reserved_until_ms = self.ids_reserved_until_ms.max(*until_ms);
                CommandResult::Applied
            }
        }
    }

    /// The name of the worker with this id.
    pub fn worker_name(&self, id: WorkerId) -> Option<&str> {
        self.workers
            .iter()
            .find(|(_, w)| w.id == id)
            .map(|(name, _)| name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use jobs::rpc::{Counters, TaskOutput};
    use jobs::TaskId;

    use super::*;

    fn submit(id: u64) -> Command {
        let spec = JobSpec::from_json(r#"{"kind":"task","job":"echo","payload":1}"#).unwrap();
        Command::SubmitJob {
            id: JobId(id),
            spec,
            at_ms: 5,
            tasks: vec![TaskPlan::Run { id: TaskId(id + 1) }],
            parent: None,
        }
    }

    fn finish_task(job: u64, attempt: u32) -> Command {
        Command::FinishTask {
            job_id: JobId(job),
            task_id: TaskId(job + 1),
            done: TaskDone {
                attempt,
                worker_id: WorkerId(1),
                output: TaskOutput::Run {
                    result: Json(attempt.into()),
                },
                counters: Counters::default(),
                started_ms: 6,
                finished_ms: 7,
            },
        }
    }

    #[test]
    fn duplicate_completions_are_ignored() {
        let mut state = MetaState::default();
        assert_eq!(state.apply(&submit(10)), CommandResult::Applied);
        assert_eq!(state.apply(&submit(10)), CommandResult::Ignored);
        assert_eq!(state.apply(&finish_task(10, 1)), CommandResult::Applied);
        assert_eq!(state.apply(&finish_task(10, 2)), CommandResult::Ignored);
        let done = state.jobs[&JobId(10)].tasks[0].done.as_ref().unwrap();
        assert_eq!(done.attempt, 1, "the first completion wins");
        let finish = |s: JobState| Command::FinishJob {
            id: JobId(10),
            state: s,
            error: None,
            result: None,
            output: vec![],
            at_ms: 9,
        };
        assert_eq!(
            state.apply(&finish(JobState::Succeeded)),
            CommandResult::Applied
        );
        assert_eq!(
            state.apply(&finish(JobState::Failed)),
            CommandResult::Ignored
        );
        assert_eq!(state.jobs[&JobId(10)].state, JobState::Succeeded);
        assert_eq!(state.apply(&finish_task(99, 1)), CommandResult::UnknownJob);
    }

    #[test]
    fn worker_names_keep_their_ids() {
        let mut state = MetaState::default();
        let register = |name: &str, addr: &str| Command::RegisterWorker {
            name: name.into(),
            rpc_addr: addr.into(),
            slots: 1,
            jobs: vec![],
        };
        assert_eq!(
            state.apply(&register("a", "x:1")),
            CommandResult::Worker(WorkerId(1))
        );
        assert_eq!(
            state.apply(&register("b", "x:2")),
            CommandResult::Worker(WorkerId(2))
        );
        assert_eq!(
            state.apply(&register("a", "x:3")),
            CommandResult::Worker(WorkerId(1))
        );
        assert_eq!(state.workers["a"].rpc_addr, "x:3");
        assert_eq!(state.worker_name(WorkerId(2)), Some("b"));
    }

    #[test]
    fn lost_map_outputs_are_cleared_only_for_maps() {
        let mut state = MetaState::default();
        let spec = JobSpec::from_json(
            r#"{"kind":"mapreduce","job":"wordcount","input":["x"],"output":"o","reducers":1}"#,
        )
        .unwrap();
        let split = jobs::rpc::InputSplit {
            path: "x".into(),
            start: 0,
            end: 1,
        };
        state.apply(&Command::SubmitJob {
            id: JobId(1),
            spec,
            at_ms: 0,
            tasks: vec![
                TaskPlan::Map {
                    id: TaskId(2),
                    split,
                },
                TaskPlan::Reduce {
                    id: TaskId(3),
                    partition: 0,
                },
            ],
            parent: None,
        });
        let done = TaskDone {
            attempt: 1,
            worker_id: WorkerId(1),
            output: TaskOutput::Map { segments: vec![] },
            counters: Counters::default(),
            started_ms: 0,
            finished_ms: 0,
        };
        state.apply(&Command::FinishTask {
            job_id: JobId(1),
            task_id: TaskId(2),
            done: done.clone(),
        });
        assert_eq!(state.jobs[&JobId(1)].progress(), (1, 2));
        let lose = Command::LoseMapOutputs {
            job_id: JobId(1),
            tasks: vec![TaskId(2), TaskId(3)],
        };
        assert_eq!(state.apply(&lose), CommandResult::Applied);
        assert_eq!(state.jobs[&JobId(1)].progress(), (0, 2));
        assert_eq!(state.apply(&lose), CommandResult::Ignored);
    }
}

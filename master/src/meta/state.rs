//! The replicated metadata: jobs with their tasks, workers, and the id reservation, changed only
//! by [`MetaState::apply`]. Every master applies the same commands in the same order and so
//! holds the same state; the leader's in-memory actors are rebuilt from it after an election.

use std::collections::{BTreeMap, VecDeque};

use jobs::registry::JobName;
use jobs::spec::Json;
use jobs::{JobId, JobSpec, JobState, TaskId, WorkerId};
use serde::{Deserialize, Serialize};

use super::command::{Command, CommandResult, LockHandoff, TaskDone, TaskPlan};

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
    /// Locks that are held or waited for, by name (a free lock has no record).
    #[serde(default)]
    pub locks: BTreeMap<String, LockRecord>,
    /// The last fencing token granted, over all locks: every grant takes the next one, so
    /// tokens strictly increase across all grants of a lock, whichever leader made them.
    #[serde(default)]
    pub last_lock_token: u64,
}

/// A held lock and its queue.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LockRecord {
    /// The current grant.
    pub holder: Option<LockHolder>,
    /// Waiting acquires, first come first served.
    pub waiters: VecDeque<LockWaiter>,
}

/// A lock's current grant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LockHolder {
    /// Who holds it.
    pub owner: String,
    /// Its fencing token.
    pub token: u64,
    /// Its lease's time to live.
    pub ttl_ms: u64,
    /// When it was granted (ms since the Unix epoch).
    pub granted_ms: u64,
    /// The ticket it waited with, if it was queued.
    pub ticket: Option<u64>,
}

/// A waiting acquire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LockWaiter {
    /// Who waits.
    pub owner: String,
    /// The lease TTL it asked for.
    pub ttl_ms: u64,
    /// Names the waiting request on the leader.
    pub ticket: u64,
    /// Since when (ms since the Unix epoch).
    pub since_ms: u64,
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

    /// The task with this id. Plans list tasks in the order their ids were issued, so this is
    /// a binary search (a linear scan if a plan was ever out of order).
    pub fn task_mut(&mut self, id: TaskId) -> Option<&mut TaskRecord> {
        let index = match self.tasks.binary_search_by_key(&id, |t| t.plan.id()) {
            Ok(index) => Some(index),
            Err(_) => self.tasks.iter().position(|t| t.plan.id() == id),
        };
        index.map(|i| &mut self.tasks[i])
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
                match job.task_mut(*task_id) {
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
                for id in tasks {
                    if let Some(task) = job.task_mut(*id) {
                        if matches!(task.plan, TaskPlan::Map { .. }) && task.done.is_some() {
                            task.done = None;
                            lost = true;
                        }
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
            Command::AcquireLock {
                name,
                owner,
                ttl_ms,
                ticket,
                at_ms,
            } => self.acquire_lock(name, owner, *ttl_ms, *ticket, *at_ms),
            Command::ReleaseLock {
                name,
                owner,
                token,
                at_ms,
            } => {
                let current = self
                    .locks
                    .get(name)
                    .and_then(|l| l.holder.as_ref())
                    .map(|h| (h.owner.clone(), h.token));
                match current {
                    Some((o, t)) if o == *owner && t == *token => self.hand_off(name, *at_ms),
                    holder => CommandResult::LockStale { holder },
                }
            }
            Command::ExpireLock { name, token, at_ms } => {
                let held = self.locks.get(name).and_then(|l| l.holder.as_ref());
                if held.is_some_and(|h| h.token == *token) {
                    self.hand_off(name, *at_ms)
                } else {
                    CommandResult::Ignored
                }
            }
            Command::AbandonLockWait {
                name,
                owner,
                ticket,
            } => {
                let Some(lock) = self.locks.get_mut(name) else {
                    return CommandResult::Ignored;
                };
                if let Some(i) = lock.waiters.iter().position(|w| w.ticket == *ticket) {
                    lock.waiters.remove(i);
                    return CommandResult::Applied;
                }
                match &lock.holder {
                    Some(h) if h.ticket == Some(*ticket) && h.owner == *owner => {
                        CommandResult::LockGranted { token: h.token }
                    }
                    _ => CommandResult::Ignored,
                }
            }
            Command::DropLockWaiters => {
                self.locks.retain(|_, lock| {
                    lock.waiters.clear();
                    lock.holder.is_some()
                });
                CommandResult::Applied
            }
        }
    }

    fn acquire_lock(
        &mut self,
        name: &str,
        owner: &str,
        ttl_ms: u64,
        ticket: Option<u64>,
        at_ms: u64,
    ) -> CommandResult {
        let lock = self.locks.entry(name.to_string()).or_default();
        // A free lock is granted; so is one the asker holds (say its answer was lost in a
        // failover): it keeps the lock without a gap, under a new grant, so that an expiry of
        // the old grant that is already on its way changes nothing.
        if lock.holder.as_ref().is_none_or(|h| h.owner == owner) {
            self.last_lock_token += 1;
            let token = self.last_lock_token;
            lock.holder = Some(LockHolder {
                owner: owner.to_string(),
                token,
                ttl_ms,
                granted_ms: at_ms,
                ticket,
            });
            return CommandResult::LockGranted { token };
        }
        let Some(ticket) = ticket else {
            let holder = lock.holder.as_ref().map(|h| h.owner.clone());
            return CommandResult::LockHeld {
                owner: holder.unwrap_or_default(),
            };
        };
        // A waiter that asks again keeps its place under the new ticket.
        match lock.waiters.iter_mut().find(|w| w.owner == owner) {
            Some(waiter) => {
                waiter.ticket = ticket;
                waiter.ttl_ms = ttl_ms;
            }
            None => lock.waiters.push_back(LockWaiter {
                owner: owner.to_string(),
                ttl_ms,
                ticket,
                since_ms: at_ms,
            }),
        }
        CommandResult::LockQueued
    }

    /// Ends lock `name`'s grant and passes the lock to its first waiter (which takes the next
    /// token), or drops the record if nobody waits.
    fn hand_off(&mut self, name: &str, at_ms: u64) -> CommandResult {
        let Some(lock) = self.locks.get_mut(name) else {
            return CommandResult::Ignored;
        };
        lock.holder = None;
        let Some(waiter) = lock.waiters.pop_front() else {
            self.locks.remove(name);
            return CommandResult::LockReleased { next: None };
        };
        self.last_lock_token += 1;
        let token = self.last_lock_token;
        lock.holder = Some(LockHolder {
            owner: waiter.owner,
            token,
            ttl_ms: waiter.ttl_ms,
            granted_ms: at_ms,
            ticket: Some(waiter.ticket),
        });
        CommandResult::LockReleased {
            next: Some(LockHandoff {
                ticket: waiter.ticket,
                token,
            }),
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

    fn acquire(name: &str, owner: &str, ticket: Option<u64>) -> Command {
        Command::AcquireLock {
            name: name.into(),
            owner: owner.into(),
            ttl_ms: 1000,
            ticket,
            at_ms: 1,
        }
    }

    fn release(name: &str, owner: &str, token: u64) -> Command {
        Command::ReleaseLock {
            name: name.into(),
            owner: owner.into(),
            token,
            at_ms: 2,
        }
    }

    fn granted(token: u64) -> CommandResult {
        CommandResult::LockGranted { token }
    }

    fn handed(ticket: u64, token: u64) -> CommandResult {
        CommandResult::LockReleased {
            next: Some(LockHandoff { ticket, token }),
        }
    }

    #[test]
    fn locks_grant_queue_and_hand_off_in_order_with_rising_tokens() {
        let mut state = MetaState::default();
        assert_eq!(state.apply(&acquire("l", "a", None)), granted(1));
        // The holder asking again keeps the lock under a new grant, so an expiry of the old
        // grant that was on its way is ignored; a try by another is refused.
        assert_eq!(state.apply(&acquire("l", "a", None)), granted(2));
        let expire_first = Command::ExpireLock {
            name: "l".into(),
            token: 1,
            at_ms: 2,
        };
        assert_eq!(state.apply(&expire_first), CommandResult::Ignored);
        assert_eq!(
            state.apply(&acquire("l", "b", None)),
            CommandResult::LockHeld { owner: "a".into() }
        );
        assert_eq!(
            state.apply(&acquire("l", "b", Some(10))),
            CommandResult::LockQueued
        );
        assert_eq!(
            state.apply(&acquire("l", "c", Some(11))),
            CommandResult::LockQueued
        );
        // Another lock takes the next token: tokens rise over all grants.
        assert_eq!(state.apply(&acquire("m", "z", None)), granted(3));
        // A stale release changes nothing.
        assert_eq!(
            state.apply(&release("l", "a", 1)),
            CommandResult::LockStale {
                holder: Some(("a".into(), 2))
            }
        );
        assert_eq!(state.apply(&release("l", "a", 2)), handed(10, 4));
        assert_eq!(state.locks["l"].holder.as_ref().unwrap().owner, "b");
        // An expiry of an ended grant is ignored; of the current one, hands on.
        let expire = |token| Command::ExpireLock {
            name: "l".into(),
            token,
            at_ms: 3,
        };
        assert_eq!(state.apply(&expire(2)), CommandResult::Ignored);
        assert_eq!(state.apply(&expire(4)), handed(11, 5));
        assert_eq!(
            state.apply(&release("l", "c", 5)),
            CommandResult::LockReleased { next: None }
        );
        assert!(
            !state.locks.contains_key("l"),
            "a free lock leaves no record"
        );
        assert_eq!(state.apply(&acquire("l", "d", None)), granted(6));
    }

    #[test]
    fn abandoned_and_dropped_waiters_leave_the_queue() {
        let mut state = MetaState::default();
        assert_eq!(state.apply(&acquire("l", "a", None)), granted(1));
        state.apply(&acquire("l", "b", Some(1)));
        state.apply(&acquire("l", "c", Some(2)));
        let abandon = |owner: &str, ticket| Command::AbandonLockWait {
            name: "l".into(),
            owner: owner.into(),
            ticket,
        };
        assert_eq!(state.apply(&abandon("b", 1)), CommandResult::Applied);
        assert_eq!(state.apply(&release("l", "a", 1)), handed(2, 2));
        // Abandoning after the grant came: the answer is the grant (only to its owner).
        assert_eq!(state.apply(&abandon("x", 2)), CommandResult::Ignored);
        assert_eq!(state.apply(&abandon("c", 2)), granted(2));
        state.apply(&acquire("l", "d", Some(3)));
        assert_eq!(
            state.apply(&Command::DropLockWaiters),
            CommandResult::Applied
        );
        assert!(state.locks["l"].waiters.is_empty());
        assert_eq!(
            state.apply(&release("l", "c", 2)),
            CommandResult::LockReleased { next: None }
        );
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

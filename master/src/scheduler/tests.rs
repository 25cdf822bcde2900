//! Scheduler tests with a fake launcher: no network, a real single-node metadata store.
use std::sync::Mutex;

use futures::future::BoxFuture;
use jobs::rpc::{Counters, TaskWork};

use super::*;

/// Records launches instead of sending them; the test plays the workers.
#[derive(Default)]
struct FakeLauncher {
    launched: Mutex<Vec<(String, TaskAssignment)>>,
    cancelled: Mutex<Vec<AttemptId>>,
    /// Launches to these addresses fail (a worker that heartbeats but cannot be reached).
    unreachable: Mutex<HashSet<String>>,
    /// Attempts whose launch failed.
    failed: Mutex<Vec<(String, AttemptId)>>,
}

impl TaskLauncher for FakeLauncher {
    fn launch(
        &self,
        addr: String,
        tasks: Vec<TaskAssignment>,
    ) -> BoxFuture<'static, Result<(), LaunchError>> {
        if self.unreachable.lock().unwrap().contains(&addr) {
            let mut failed = self.failed.lock().unwrap();
            failed.extend(tasks.iter().map(|t| (addr.clone(), t.attempt)));
            let error = LaunchError {
                addr,
                reason: "unreachable".into(),
            };
            return Box::pin(async { Err(error) });
        }
        let mut launched = self.launched.lock().unwrap();
        launched.extend(tasks.into_iter().map(|t| (addr.clone(), t)));
        Box::pin(async { Ok(()) })
    }
    fn cancel(&self, _addr: String, attempt: AttemptId) -> BoxFuture<'static, ()> {
        self.cancelled.lock().unwrap().push(attempt);
        Box::pin(async {})
    }
    fn release_job(&self, _addr: String, _job: JobId) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

struct Harness {
    scheduler: Addr<Scheduler>,
    launcher: Arc<FakeLauncher>,
    meta: Meta,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let members = [(1, openraft::BasicNode::new("127.0.0.1:1"))].into();
    let meta = Meta::start(1, members, "secret".into(), &dir.path().join("meta"))
        .await
        .unwrap();
    let launcher = Arc::new(FakeLauncher::default());
    let scheduler = Scheduler::new(
        meta.clone(),
        Arc::new(IdGenerator::new(1)),
        launcher.clone(),
        dir.path().into(),
    )
    .with_backup_min_age(Duration::from_millis(50))
    .start();
    scheduler
        .send(LeadershipChanged { ready: true })
        .await
        .unwrap();
    for (id, name) in [(1, "w1"), (2, "w2")] {
        scheduler
            .send(WorkerJoined {
                worker_id: WorkerId(id),
                name: name.into(),
                addr: format!("{name}:1"),
                slots: 1,
                jobs: vec![
                    JobName {
                        kind: JobKind::Task,
                        name: "echo".into(),
                    },
                    JobName {
                        kind: JobKind::MapReduce,
                        name: "wordcount".into(),
                    },
                ],
                restarted: false,
            })
            .await
            .unwrap();
    }
    Harness {
        scheduler,
        launcher,
        meta,
        _dir: dir,
    }
}

impl Harness {
    async fn submit(&self, spec: &str) -> Result<JobId> {
        self.scheduler
            .send(SubmitJob {
                spec: JobSpec::from_json(spec).unwrap(),
            })
            .await
            .unwrap()
    }

    /// Waits (bounded) until `n` attempts have been launched in total.
    async fn launched(&self, n: usize) -> Vec<(String, TaskAssignment)> {
        for _ in 0..200 {
            let launched = self.launcher.launched.lock().unwrap().clone();
            if launched.len() >= n {
                return launched;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "fewer than {n} launches: {:?}",
            self.launcher.launched.lock().unwrap()
        );
    }

    /// Reports as the worker the attempt was launched on (`worker` is checked against it).
    async fn report(&self, worker: u64, attempt: AttemptId, outcome: TaskOutcome) {
        let launched_on = self
            .launcher
            .launched
            .lock()
            .unwrap()
            .iter()
            .find(|(_, t)| t.attempt == attempt)
            .map(|(addr, _)| worker_of(addr))
            .expect("reported attempts were launched");
        let worker = if worker == 0 { launched_on } else { worker };
        assert_eq!(
            worker, launched_on,
            "the test reports from the worker that runs the attempt"
        );
        let status = TaskStatus {
            attempt,
            outcome,
            started_ms: 1,
            finished_ms: 2,
            counters: Counters::default(),
        };
        self.scheduler
            .send(ReportStatuses {
                worker_id: WorkerId(worker),
                statuses: vec![status],
            })
            .await
            .unwrap()
            .unwrap();
    }

    async fn state(&self, id: JobId) -> JobState {
        // Committed state, polled until the scheduler's commit lands (bounded).
        let mut last = JobState::Queued;
        for _ in 0..200 {
            last = self.meta.state().read().unwrap().jobs[&id].state;
            if last.is_final() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        last
    }
}

/// The worker number of a fake address: `w3:1` → 3.
fn worker_of(addr: &str) -> u64 {
    addr.trim_start_matches('w')
        .split(':')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a fake worker address: {addr}"))
}

const ECHO: &str = r#"{"kind":"task","job":"echo","payload":{"a":1},"max_attempts":2}"#;

#[actix::test]
async fn a_task_job_runs_once_and_records_its_result() {
    let h = harness().await;
    let id = h.submit(ECHO).await.unwrap();
    let launched = h.launched(1).await;
    let (_, task) = &launched[0];
    assert_eq!(task.attempt.job_id, id);
    let TaskWork::Run { payload } = &task.work else {
        panic!("not a run")
    };
    let output = TaskOutput::Run {
        result: payload.clone(),
    };
    h.report(0, task.attempt, TaskOutcome::Succeeded(output))
        .await;
    assert_eq!(h.state(id).await, JobState::Succeeded);
    let result = h.meta.state().read().unwrap().jobs[&id]
        .result
        .clone()
        .unwrap();
    assert_eq!(result.0, serde_json::json!({"a": 1}));
    assert_eq!(
        h.launcher.launched.lock().unwrap().len(),
        1,
        "no second launch"
    );
}

#[actix::test]
async fn unknown_jobs_are_rejected_with_what_is_served() {
    let h = harness().await;
    let err = h
        .submit(r#"{"kind":"task","job":"nope"}"#)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope") && err.contains("echo"), "{err}");
}

#[actix::test]
async fn failures_retry_then_fail_the_job_with_the_message() {
    let h = harness().await;
    let id = h.submit(ECHO).await.unwrap();
    let first = h.launched(1).await[0].1.attempt;
    let failed = |e: &str| TaskOutcome::Failed {
        error: e.into(),
        retryable: true,
    };
    h.report(0, first, failed("panicked: boom")).await;
    let second = h.launched(2).await[1].1.attempt;
    assert_eq!(second.attempt, 2);
    h.report(0, second, failed("panicked: boom")).await;
    assert_eq!(h.state(id).await, JobState::Failed);
    let error = h.meta.state().read().unwrap().jobs[&id]
        .error
        .clone()
        .unwrap();
    assert!(
        error.contains("panicked: boom") && error.contains("2 attempts"),
        "{error}"
    );
}

#[actix::test]
async fn a_lost_worker_s_task_runs_on_another_worker() {
    let h = harness().await;
    let id = h.submit(ECHO).await.unwrap();
    let (addr, first) = h.launched(1).await[0].clone();
    let lost = if addr == "w1:1" { 1 } else { 2 };
    h.scheduler
        .send(WorkerLost {
            worker_id: WorkerId(lost),
        })
        .await
        .unwrap();
    let (addr2, second) = h.launched(2).await[1].clone();
    assert_ne!(addr, addr2, "re-run elsewhere");
    assert_eq!(second.attempt.task_id, first.attempt.task_id);
    let output = TaskOutput::Run {
        result: Json(serde_json::Value::Null),
    };
    // The lost attempt reporting late changes nothing; the new one finishes the job.
    h.report(3 - lost, second.attempt, TaskOutcome::Succeeded(output))
        .await;
    assert_eq!(h.state(id).await, JobState::Succeeded);
}

#[actix::test]
async fn mapreduce_reduces_wait_for_maps_and_see_their_locations() {
    let h = harness().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "a b\n").unwrap();
    std::fs::write(dir.path().join("b.txt"), "c\n").unwrap();
    let spec = format!(
        r#"{{"kind":"mapreduce","job":"wordcount","input":["{}/*.txt"],"output":"{}/out","reducers":1}}"#,
        dir.path().display(),
        dir.path().display()
    );
    let id = h.submit(&spec).await.unwrap();
    let maps = h.launched(2).await;
    assert!(maps
        .iter()
        .all(|(_, t)| matches!(t.work, TaskWork::Map { .. })));
    for (addr, task) in &maps {
        let worker = if addr == "w1:1" { 1 } else { 2 };
        let segments = vec![jobs::rpc::Segment { offset: 0, len: 5 }];
        h.report(
            worker,
            task.attempt,
            TaskOutcome::Succeeded(TaskOutput::Map { segments }),
        )
        .await;
    }
    let (_, reduce) = h.launched(3).await[2].clone();
    let TaskWork::Reduce {
        maps: locations, ..
    } = &reduce.work
    else {
        panic!("not a reduce")
    };
    assert_eq!(locations.len(), 2);
    assert!(locations
        .iter()
        .all(|l| l.len == 5 && !l.worker_addr.is_empty()));
    let file = format!("{}/out/part-r-00000", dir.path().display());
    let worker = if h.launcher.launched.lock().unwrap()[2].0 == "w1:1" {
        1
    } else {
        2
    };
    h.report(
        worker,
        reduce.attempt,
        TaskOutcome::Succeeded(TaskOutput::Reduce { file: file.clone() }),
    )
    .await;
    assert_eq!(h.state(id).await, JobState::Succeeded);
    assert!(dir.path().join("out/_SUCCESS").exists());
    let output = h.meta.state().read().unwrap().jobs[&id].output.clone();
    assert_eq!(
        output,
        vec![file, format!("{}/out/_SUCCESS", dir.path().display())]
    );
}

#[actix::test]
async fn a_scheduler_that_is_not_the_leader_refuses_work() {
    let h = harness().await;
    let id = h.submit(ECHO).await.unwrap();
    let attempt = h.launched(1).await[0].1.attempt;
    h.scheduler
        .send(LeadershipChanged { ready: false })
        .await
        .unwrap();
    let err = h.submit(ECHO).await.unwrap_err();
    assert!(matches!(err, Error::NotLeader { .. }), "{err}");
    let status = TaskStatus {
        attempt,
        outcome: TaskOutcome::Failed {
            error: "x".into(),
            retryable: true,
        },
        started_ms: 1,
        finished_ms: 2,
        counters: Counters::default(),
    };
    let refused = h
        .scheduler
        .send(ReportStatuses {
            worker_id: WorkerId(1),
            statuses: vec![status],
        })
        .await
        .unwrap();
    assert!(matches!(
        refused,
        Err(jobs::rpc::RemoteError::NotLeader { .. })
    ));
    // Leading again, it picks the job up from the committed state and launches it anew.
    h.scheduler
        .send(LeadershipChanged { ready: true })
        .await
        .unwrap();
    for (worker, name) in [(1, "w1"), (2, "w2")] {
        h.scheduler
            .send(WorkerJoined {
                worker_id: WorkerId(worker),
                name: name.into(),
                addr: format!("{name}:1"),
                slots: 1,
                jobs: vec![JobName {
                    kind: JobKind::Task,
                    name: "echo".into(),
                }],
                restarted: false,
            })
            .await
            .unwrap();
    }
    let relaunched = h.launched(2).await[1].1.attempt;
    assert_eq!(relaunched.job_id, id);
}

// ----- placement -----

impl Harness {
    /// Worker `w<id>` (re)joins with `slots` slots, serving `echo` and `wordcount`.
    async fn join(&self, id: u64, slots: u32) {
        self.scheduler
            .send(WorkerJoined {
                worker_id: WorkerId(id),
                name: format!("w{id}"),
                addr: format!("w{id}:1"),
                slots,
                jobs: vec![
                    JobName {
                        kind: JobKind::Task,
                        name: "echo".into(),
                    },
                    JobName {
                        kind: JobKind::MapReduce,
                        name: "wordcount".into(),
                    },
                ],
                restarted: false,
            })
            .await
            .unwrap();
    }

    async fn lose(&self, id: u64) {
        self.scheduler
            .send(WorkerLost {
                worker_id: WorkerId(id),
            })
            .await
            .unwrap();
    }

    /// Submits a keyed echo task, waits for its launch (the `n`th in total), and returns the
    /// worker it was launched on and its attempt.
    async fn keyed(&self, key: &str, n: usize) -> (JobId, u64, AttemptId) {
        let spec = format!(r#"{{"kind":"task","job":"echo","payload":1,"key":"{key}"}}"#);
        let id = self.submit(&spec).await.unwrap();
        let (addr, task) = self.launched(n).await[n - 1].clone();
        assert_eq!(task.attempt.job_id, id, "the launch is the new job's");
        (id, worker_of(&addr), task.attempt)
    }

    /// Reports success of an echo attempt and waits until its job succeeded.
    async fn finish(&self, id: JobId, worker: u64, attempt: AttemptId) {
        let output = TaskOutput::Run {
            result: Json(serde_json::Value::Null),
        };
        self.report(worker, attempt, TaskOutcome::Succeeded(output))
            .await;
        assert_eq!(self.state(id).await, JobState::Succeeded);
    }
}

/// The ring the scheduler should have over these (id, slots) workers.
fn ring(workers: &[(u64, u32)]) -> Placement {
    Placement::new(workers.iter().map(|&(id, slots)| (WorkerId(id), slots)))
}

#[actix::test]
async fn the_same_key_runs_on_the_same_worker() {
    let h = harness().await;
    h.join(3, 1).await;
    let ring = ring(&[(1, 1), (2, 1), (3, 1)]);
    let mut launches = 0;
    let mut owners = HashSet::new();
    for key in ["k1", "k2", "k3", "k4", "k5", "k6"] {
        let expected = ring.owner(key).unwrap();
        owners.insert(expected);
        for _ in 0..3 {
            launches += 1;
            let (id, worker, attempt) = h.keyed(key, launches).await;
            assert_eq!(WorkerId(worker), expected, "{key} runs on its ring owner");
            h.finish(id, worker, attempt).await;
        }
    }
    assert!(owners.len() >= 2, "keys spread over workers: {owners:?}");
}

#[actix::test]
async fn a_lost_owner_s_keys_go_to_their_next_candidate() {
    let h = harness().await;
    h.join(3, 1).await;
    let ring = ring(&[(1, 1), (2, 1), (3, 1)]);
    let candidates: Vec<WorkerId> = ring.candidates("k1").collect();
    let (id, owner, attempt) = h.keyed("k1", 1).await;
    assert_eq!(WorkerId(owner), candidates[0]);
    h.finish(id, owner, attempt).await;
    // The owner dies while running the key's next task: the task re-runs on the next candidate.
    let (id, _, _) = h.keyed("k1", 2).await;
    h.lose(owner).await;
    let (addr, rerun) = h.launched(3).await[2].clone();
    assert_eq!(rerun.attempt.job_id, id);
    assert_eq!(
        WorkerId(worker_of(&addr)),
        candidates[1],
        "re-run on the next candidate"
    );
    h.finish(id, worker_of(&addr), rerun.attempt).await;
    // Later submissions stay there.
    for n in 4..=6 {
        let (id, worker, attempt) = h.keyed("k1", n).await;
        assert_eq!(WorkerId(worker), candidates[1]);
        h.finish(id, worker, attempt).await;
    }
}

#[actix::test]
async fn an_unreachable_owner_s_keys_go_to_the_next_candidate() {
    let h = harness().await;
    h.join(3, 1).await;
    let candidates: Vec<WorkerId> = ring(&[(1, 1), (2, 1), (3, 1)]).candidates("k1").collect();
    // The owner heartbeats but every launch to it fails: the task must not wait for it forever.
    let owner_addr = format!("w{}:1", candidates[0].0);
    h.launcher
        .unreachable
        .lock()
        .unwrap()
        .insert(owner_addr.clone());
    let (id, worker, attempt) = h.keyed("k1", 1).await;
    assert_eq!(WorkerId(worker), candidates[1], "ran on the next candidate");
    let failed = h.launcher.failed.lock().unwrap().clone();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, owner_addr, "the owner was tried first");
    h.finish(id, worker, attempt).await;
}

#[actix::test]
async fn a_keyed_task_waits_for_its_busy_owner() {
    let h = harness().await;
    let (first, owner, attempt) = h.keyed("k1", 1).await;
    // The owner's only slot is busy: a second task with the key waits, though the other worker
    // is idle.
    let second = h
        .submit(r#"{"kind":"task","job":"echo","payload":2,"key":"k1"}"#)
        .await
        .unwrap();
    // An unkeyed task submitted after it runs at once on the idle worker; by then the keyed
    // one (older, so considered first) has been passed over.
    let other = h.submit(ECHO).await.unwrap();
    let launched = h.launched(2).await;
    assert_eq!(launched[1].1.attempt.job_id, other, "{launched:?}");
    assert_ne!(worker_of(&launched[1].0), owner);
    assert_eq!(
        h.launcher.launched.lock().unwrap().len(),
        2,
        "the keyed task waits"
    );
    // The owner's slot frees: the waiting task runs there.
    h.finish(first, owner, attempt).await;
    let (addr, task) = h.launched(3).await[2].clone();
    assert_eq!(task.attempt.job_id, second);
    assert_eq!(worker_of(&addr), owner);
}

/// A wordcount job over two small files with `reducers` partitions; runs its maps (reported
/// done in the order the test gives) and returns its id and the map launches.
async fn mapreduce(
    h: &Harness,
    dir: &std::path::Path,
    reducers: u32,
) -> (JobId, Vec<(String, TaskAssignment)>) {
    std::fs::write(dir.join("a.txt"), "a b\n").unwrap();
    std::fs::write(dir.join("b.txt"), "c\n").unwrap();
    let spec = format!(
        r#"{{"kind":"mapreduce","job":"wordcount","input":["{}/*.txt"],"output":"{}/out","reducers":{reducers}}}"#,
        dir.display(),
        dir.display()
    );
    let id = h.submit(&spec).await.unwrap();
    let maps = h.launched(2).await;
    (id, maps)
}

fn map_done() -> TaskOutcome {
    let segments = vec![jobs::rpc::Segment { offset: 0, len: 5 }];
    TaskOutcome::Succeeded(TaskOutput::Map { segments })
}

#[actix::test]
async fn reduces_run_on_their_preferred_worker_when_it_is_free() {
    let h = harness().await;
    for id in 1..=3 {
        h.join(id, 16).await;
    }
    let ring = ring(&[(1, 16), (2, 16), (3, 16)]);
    let dir = tempfile::tempdir().unwrap();
    let reducers = 12;
    let (id, maps) = mapreduce(&h, dir.path(), reducers).await;
    for (addr, task) in &maps {
        h.report(worker_of(addr), task.attempt, map_done()).await;
    }
    let launched = h.launched(2 + reducers as usize).await;
    let mut preferred = HashSet::new();
    for (addr, task) in &launched[2..] {
        let TaskWork::Reduce { partition, .. } = task.work else {
            panic!("not a reduce: {task:?}")
        };
        let expected = ring.owner(&format!("{id}/{partition}")).unwrap();
        preferred.insert(expected);
        assert_eq!(WorkerId(worker_of(addr)), expected, "partition {partition}");
    }
    assert!(preferred.len() >= 2, "partitions spread: {preferred:?}");
}

#[actix::test]
async fn a_reduce_whose_preferred_worker_is_busy_runs_elsewhere() {
    let h = harness().await;
    let dir = tempfile::tempdir().unwrap();
    let (id, maps) = mapreduce(&h, dir.path(), 1).await;
    let ring = ring(&[(1, 1), (2, 1)]);
    let preferred = ring.owner(&format!("{id}/0")).unwrap().0;
    let other = 3 - preferred;
    // The map on the preferred worker finishes first, and a keyed task takes its slot.
    let on = |w: u64| {
        maps.iter()
            .find(|(a, _)| worker_of(a) == w)
            .unwrap()
            .1
            .attempt
    };
    h.report(preferred, on(preferred), map_done()).await;
    let key = (0..1000)
        .map(|i| format!("key-{i}"))
        .find(|k| ring.owner(k) == Some(WorkerId(preferred)))
        .unwrap();
    let (_, worker, _) = h.keyed(&key, 3).await;
    assert_eq!(worker, preferred);
    // The last map finishes: the reduce's preferred worker is busy, so it runs on the other.
    h.report(other, on(other), map_done()).await;
    let (addr, task) = h.launched(4).await[3].clone();
    assert!(matches!(task.work, TaskWork::Reduce { .. }), "{task:?}");
    assert_eq!(worker_of(&addr), other);
}

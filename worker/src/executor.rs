//! `Executor`: runs task attempts off the async threads. Map, reduce and task-handler work
//! runs on the blocking pool, at most `slots` at once; a reduce first fetches its partition of
//! every map output (the shuffle) into local files. Panics in job code are caught and become
//! failed attempts carrying the panic message. Outcomes go to the reporter, and an attempt
//! counts as running until the master has acknowledged its report, so a heartbeat never shows
//! the master a gap between "running" and "reported".

use std::any::Any;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jobs::now_ms;

use futures::StreamExt;
use jobs::pool::WorkerPool;
use jobs::rpc::{
    AttemptId, Counters, FetchPartitionRequest, MapOutputLocation, RemoteError, TaskAssignment,
    TaskOutcome, TaskOutput, TaskStatus, TaskWork, FETCH_CHUNK,
};
use jobs::spec::Json;
use jobs::{JobId, TaskContext};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, info, warn};

use crate::shuffle_store::ShuffleStore;

/// Map outputs fetched at once by one reduce.
const PARALLEL_FETCHES: usize = 4;
/// Deadline of one fetch call.
const FETCH_DEADLINE: Duration = Duration::from_secs(30);

/// What the executor needs to know about its worker.
#[derive(Clone, Debug)]
pub struct ExecutorConfig {
    /// Tasks at once.
    pub slots: u32,
    /// The worker's data directory.
    pub data_dir: PathBuf,
    /// The worker's own RPC address (map outputs there are read locally).
    pub own_addr: String,
    /// Map-side buffer before spilling.
    pub map_buffer: usize,
}

struct Inner {
    config: ExecutorConfig,
    running: Mutex<HashMap<AttemptId, Arc<AtomicBool>>>,
    slots: Arc<Semaphore>,
    store: Arc<ShuffleStore>,
    peers: WorkerPool,
    reports: mpsc::UnboundedSender<TaskStatus>,
    draining: AtomicBool,
    /// The lock service handlers get in their context, once the link to the masters exists.
    locks: std::sync::OnceLock<Arc<dyn jobs::lock::LockService>>,
}

/// The executor (cheap to clone).
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

/// The message of a caught panic.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    let text = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_string()
    };
    format!("panicked: {text}")
}

/// Runs `f` on the blocking pool, catching a panic as a failed outcome.
async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(move || catch_unwind(AssertUnwindSafe(f))).await {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => Err(panic_message(panic.as_ref())),
        Err(join) => Err(format!("task thread failed: {join}")),
    }
}

impl Executor {
    /// An executor whose outcomes go to `reports`.
    pub fn new(
        config: ExecutorConfig,
        store: Arc<ShuffleStore>,
        peers: WorkerPool,
        reports: mpsc::UnboundedSender<TaskStatus>,
    ) -> Executor {
        let slots = Arc::new(Semaphore::new(config.slots as usize));
        Executor {
            inner: Arc::new(Inner {
                config,
                running: Mutex::default(),
                slots,
                store,
                peers,
                reports,
                draining: AtomicBool::new(false),
                locks: std::sync::OnceLock::new(),
            }),
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<AttemptId, Arc<AtomicBool>>> {
        // Entries are inserted and removed whole; a poisoned lock still holds valid flags.
        self.inner.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives task handlers the cluster's lock service (set once, when the link to the
    /// masters exists; later calls are ignored).
    pub fn set_locks(&self, locks: Arc<dyn jobs::lock::LockService>) {
        let _ = self.inner.locks.set(locks);
    }

    /// Attempts running or awaiting the master's acknowledgement.
    pub fn running_attempts(&self) -> Vec<AttemptId> {
        self.running().keys().copied().collect()
    }

    /// The master acknowledged these reports.
    pub fn acknowledged(&self, attempts: &[AttemptId]) {
        let mut running = self.running();
        for attempt in attempts {
            running.remove(attempt);
        }
    }

    /// Stops taking new tasks.
    pub fn drain(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
    }

    /// Cancels an attempt (it stops at its next check and reports a failure the master
    /// ignores).
    pub fn cancel(&self, attempt: &AttemptId) {
        if let Some(flag) = self.running().get(attempt) {
            debug!(%attempt, "cancelling");
            flag.store(true, Ordering::SeqCst);
        }
    }

    /// Cancels everything (at shutdown).
    pub fn cancel_all(&self) {
        for flag in self.running().values() {
            flag.store(true, Ordering::SeqCst);
        }
    }

    /// The shuffle store (map outputs served to reducers).
    pub fn store(&self) -> &Arc<ShuffleStore> {
        &self.inner.store
    }

    /// Queues attempts; each runs when a slot is free.
    ///
    /// # Errors
    /// [`RemoteError::Unavailable`] while draining.
    pub fn launch(&self, tasks: Vec<TaskAssignment>) -> Result<(), RemoteError> {
        if self.inner.draining.load(Ordering::SeqCst) {
            return Err(RemoteError::Unavailable {
                reason: "the worker is shutting down".into(),
            });
        }
        for task in tasks {
            let cancelled = Arc::new(AtomicBool::new(false));
            {
                let mut running = self.running();
                if running.contains_key(&task.attempt) {
                    continue; // a repeated launch of the same attempt
                }
                running.insert(task.attempt, cancelled.clone());
            }
            let this = self.clone();
            tokio::spawn(async move { this.run(task, cancelled).await });
        }
        Ok(())
    }

    async fn run(self, task: TaskAssignment, cancelled: Arc<AtomicBool>) {
        let Ok(_permit) = self.inner.slots.clone().acquire_owned().await else {
            return;
        };
        let started_ms = now_ms();
        let attempt = task.attempt;
        let timeout = task.timeout_ms;
        let deadline_passed = Arc::new(AtomicBool::new(false));
        let timer = timeout.map(|ms| {
            let (cancel, passed) = (cancelled.clone(), deadline_passed.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                passed.store(true, Ordering::SeqCst);
                cancel.store(true, Ordering::SeqCst);
            })
        });
        debug!(%attempt, job = %task.job, "attempt started");
        let (mut outcome, counters) = match self.execute(task, cancelled.clone()).await {
            Ok((output, counters)) => (TaskOutcome::Succeeded(output), counters),
            Err(outcome) => (outcome, Counters::default()),
        };
        if let Some(timer) = timer {
            timer.abort();
        }
        if let (TaskOutcome::Failed { error, .. }, Some(ms)) = (&mut outcome, timeout) {
            // The job stopped because its deadline set the cancel flag: say so.
            if deadline_passed.load(Ordering::SeqCst) {
                *error = format!("timed out after {ms} ms");
            }
        }
        if let TaskOutcome::Failed { error, .. } = &outcome {
            if !cancelled.load(Ordering::SeqCst) || deadline_passed.load(Ordering::SeqCst) {
                warn!(%attempt, %error, "attempt failed");
            }
        }
        let status = TaskStatus {
            attempt,
            outcome,
            started_ms,
            finished_ms: now_ms(),
            counters,
        };
        if self.inner.reports.send(status).is_err() {
            debug!(%attempt, "reporter gone; outcome dropped at shutdown");
        }
    }

    /// `data_dir/<area>/<job>`: where a job's map outputs (`shuffle`) or fetched reduce
    /// inputs (`fetch`) live on this worker.
    fn job_dir(&self, area: &str, job_id: JobId) -> PathBuf {
        self.inner
            .config
            .data_dir
            .join(area)
            .join(job_id.to_string())
    }

    async fn execute(
        &self,
        task: TaskAssignment,
        cancelled: Arc<AtomicBool>,
    ) -> Result<(TaskOutput, Counters), TaskOutcome> {
        let failed = |error: String, retryable: bool| TaskOutcome::Failed { error, retryable };
        let attempt = task.attempt;
        let name = task.job.clone();
        match task.work {
            TaskWork::Map {
                split,
                reducers,
                params,
            } => {
                let job = jobs::registry::mapreduce(&name, &params.0)
                    .map_err(|e| failed(e.to_string(), false))?;
                let dir = self.job_dir("shuffle", attempt.job_id);
                let out = dir.join(format!("{}-{}.out", attempt.task_id, attempt.attempt));
                let budget = self.inner.config.map_buffer;
                let out_for_map = out.clone();
                let output = run_blocking(move || {
                    std::fs::create_dir_all(&dir)
                        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                    crate::mapper::run_map(
                        job.as_ref(),
                        &split,
                        reducers,
                        &out_for_map,
                        budget,
                        &cancelled,
                    )
                    .map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| failed(e, true))?;
                self.inner
                    .store
                    .register(attempt, out, output.segments.clone());
                Ok((
                    TaskOutput::Map {
                        segments: output.segments,
                    },
                    output.counters,
                ))
            }
            TaskWork::Reduce {
                partition,
                output_dir,
                maps,
                params,
            } => {
                let job = jobs::registry::mapreduce(&name, &params.0)
                    .map_err(|e| failed(e.to_string(), false))?;
                let dir = self
                    .job_dir("fetch", attempt.job_id)
                    .join(format!("{}-{}", attempt.task_id, attempt.attempt));
                let inputs = self
                    .fetch_all(
                        dir.clone(),
                        attempt.job_id,
                        partition,
                        maps,
                        cancelled.clone(),
                    )
                    .await;
                let inputs = match inputs {
                    Ok(inputs) => inputs,
                    Err(outcome) => {
                        let _ = tokio::fs::remove_dir_all(&dir).await;
                        return Err(outcome);
                    }
                };
                let tag = format!("{}-{}", attempt.task_id, attempt.attempt);
                let fetched = dir.clone();
                let result = run_blocking(move || {
                    crate::reducer::run_reduce(
                        job.as_ref(),
                        &inputs,
                        Path::new(&output_dir),
                        partition,
                        &tag,
                        &cancelled,
                    )
                    .map_err(|e| e.to_string())
                })
                .await;
                let _ = tokio::fs::remove_dir_all(&fetched).await;
                let output = result.map_err(|e| failed(e, true))?;
                let file = output.file.to_string_lossy().into_owned();
                Ok((TaskOutput::Reduce { file }, output.counters))
            }
            TaskWork::Run { payload } => {
                let handler =
                    jobs::registry::task(&name).map_err(|e| failed(e.to_string(), false))?;
                let ctx = TaskContext {
                    job_id: attempt.job_id,
                    task_id: attempt.task_id,
                    attempt: attempt.attempt,
                    idempotency_key: format!("{}/{}", attempt.job_id, attempt.task_id),
                    cancelled,
                    locks: self.inner.locks.get().cloned(),
                };
                let bytes_in = payload.0.to_string().len() as u64;
                let result = if handler.is_instant() {
                    catch_unwind(AssertUnwindSafe(|| handler.run(&ctx, &payload.0)))
                        .unwrap_or_else(|panic| Err(panic_message(panic.as_ref())))
                } else {
                    run_blocking(move || handler.run(&ctx, &payload.0)).await
                };
                let result = result.map_err(|e| failed(e, true))?;
                let counters = Counters {
                    records_in: 1,
                    bytes_in,
                    records_out: 1,
                    bytes_out: result.to_string().len() as u64,
                };
                Ok((
                    TaskOutput::Run {
                        result: Json(result),
                    },
                    counters,
                ))
            }
        }
    }

    /// Fetches this reduce's segment of every map output into `dir`, a few at a time.
    async fn fetch_all(
        &self,
        dir: PathBuf,
        job_id: JobId,
        partition: u32,
        maps: Vec<MapOutputLocation>,
        cancelled: Arc<AtomicBool>,
    ) -> Result<Vec<PathBuf>, TaskOutcome> {
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| TaskOutcome::Failed {
                error: format!("cannot create {}: {e}", dir.display()),
                retryable: true,
            })?;
        let mut fetches = Vec::with_capacity(maps.len());
        for map in maps.into_iter().filter(|m| m.len > 0) {
            let this = self.clone();
            let path = dir.join(format!("m-{}.run", map.map_task));
            fetches.push(async move {
                match this.fetch_one(job_id, partition, &map, &path).await {
                    Ok(()) => Ok(path),
                    Err(error) => Err(TaskOutcome::FetchFailed {
                        map_task: map.map_task,
                        error: format!(
                            "fetching map output {} from {}: {error}",
                            map.map_task, map.worker_addr
                        ),
                    }),
                }
            });
        }
        let mut results = futures::stream::iter(fetches).buffer_unordered(PARALLEL_FETCHES);
        let mut paths = Vec::new();
        while let Some(result) = results.next().await {
            if cancelled.load(Ordering::SeqCst) {
                return Err(TaskOutcome::Failed {
                    error: "cancelled".into(),
                    retryable: true,
                });
            }
            paths.push(result?);
        }
        paths.sort();
        Ok(paths)
    }

    async fn fetch_one(
        &self,
        job_id: JobId,
        partition: u32,
        map: &MapOutputLocation,
        path: &Path,
    ) -> Result<(), String> {
        let source = AttemptId {
            job_id,
            task_id: map.map_task,
            attempt: map.attempt,
        };
        let mut file = tokio::fs::File::create(path)
            .await
            .map_err(|e| e.to_string())?;
        // Map output on this worker is read from the local store, without the network.
        let client = if map.worker_addr == self.inner.config.own_addr {
            None
        } else {
            Some(
                self.inner
                    .peers
                    .get(&map.worker_addr)
                    .await
                    .map_err(|e| e.to_string())?,
            )
        };
        let mut offset = 0;
        while offset < map.len {
            let request = FetchPartitionRequest {
                map: source,
                partition,
                offset,
                max_len: FETCH_CHUNK,
            };
            let data = match &client {
                None => {
                    self.inner
                        .store
                        .read_chunk(source, partition, offset, FETCH_CHUNK)
                        .map_err(|e| e.to_string())?
                        .0
                }
                Some(client) => {
                    let mut ctx = tarpc::context::current();
                    ctx.deadline = std::time::Instant::now() + FETCH_DEADLINE;
                    match client.fetch_partition(ctx, request).await {
                        Ok(Ok(response)) => response.data,
                        Ok(Err(remote)) => return Err(remote.to_string()),
                        Err(rpc) => {
                            self.inner.peers.forget(&map.worker_addr);
                            return Err(rpc.to_string());
                        }
                    }
                }
            };
            if data.is_empty() {
                return Err(format!("segment ended at {offset} of {} bytes", map.len));
            }
            file.write_all(&data).await.map_err(|e| e.to_string())?;
            offset += data.len() as u64;
        }
        file.flush().await.map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Deletes a finished job's map outputs.
    pub fn release_job(&self, job_id: JobId) {
        info!(%job_id, "releasing map outputs");
        self.inner.store.release_job(job_id);
    }
}

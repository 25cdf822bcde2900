//! `MasterLink`: the worker's side of the conversation with the masters — registering (again
//! whenever a master does not know it), heartbeating, and reporting outcomes in batches.
//! It finds a master by a Fisher–Yates shuffle of the configured list, follows leader hints,
//! and retries with backoff, so a master restart or failover needs no worker restart.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jobs::lock::{LockError, LockOp, LockRequest, LockService};
use jobs::registry::JobName;
use jobs::rpc::{
    HeartbeatRequest, MasterServiceClient, RegisterWorkerRequest, RemoteError,
    ReportTaskStatusRequest, TaskStatus,
};
use jobs::WorkerId;
use rand::seq::SliceRandom;
use tokio::sync::{mpsc, Mutex};
use tracing::{info, warn};

use crate::executor::Executor;

/// How long connecting to a master may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Deadline of one call to a master.
const CALL_DEADLINE: Duration = Duration::from_secs(5);
/// Backoff bounds between retries. The cap is short: a failover takes about a second, and a
/// worker should find the new leader within a few round trips of its election (a retry is one
/// connection attempt or one small call).
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_millis(250);
/// How long a lock request keeps trying to reach the leader (a failover takes about a second).
const LOCK_RETRY_FOR: Duration = Duration::from_secs(10);
/// The most outcomes in one report.
const MAX_REPORT_BATCH: usize = 4096;

/// Connects to a master's `rpc` address and selects its worker-facing service.
async fn dial_master(addr: &str, secret: &str) -> jobs::Result<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut stream = jobs::auth::dial(addr, secret, CONNECT_TIMEOUT).await?;
    stream
        .write_all(&[jobs::rpc::SELECT_MASTER_SERVICE])
        .await?;
    Ok(stream)
}

/// What the worker tells the master about itself.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Its name.
    pub name: String,
    /// Its bound RPC address.
    pub rpc_addr: String,
    /// Its slots.
    pub slots: u32,
    /// The jobs it serves.
    pub jobs: Vec<JobName>,
    /// Random per process.
    pub incarnation: u64,
}

/// The link (cheap to clone).
#[derive(Clone)]
pub struct MasterLink {
    inner: Arc<Inner>,
}

struct Inner {
    identity: Identity,
    masters: Vec<String>,
    secret: Arc<str>,
    executor: Executor,
    /// The connected master and its client.
    client: Mutex<Option<(String, MasterServiceClient)>>,
    /// The leader's address, as a master that is not the leader last told us: the next
    /// connection goes there first.
    leader_hint: std::sync::Mutex<Option<String>>,
    /// 0 until registered.
    worker_id: AtomicU64,
    heartbeat_ms: AtomicU64,
}

fn context() -> tarpc::context::Context {
    let mut ctx = tarpc::context::current();
    ctx.deadline = Instant::now() + CALL_DEADLINE;
    ctx
}

/// Why a call failed.
enum CallError {
    /// The master does not know this worker: register again.
    Unknown,
    /// Transport failure or a master-side problem: try again (maybe elsewhere).
    Retry(String),
}

impl MasterLink {
    /// A link for a worker that has not registered yet.
    pub fn new(
        identity: Identity,
        masters: Vec<String>,
        secret: Arc<str>,
        executor: Executor,
    ) -> MasterLink {
        MasterLink {
            inner: Arc::new(Inner {
                identity,
                masters,
                secret,
                executor,
                client: Mutex::new(None),
                leader_hint: std::sync::Mutex::new(None),
                worker_id: AtomicU64::new(0),
                heartbeat_ms: AtomicU64::new(500),
            }),
        }
    }

    /// The worker's id (0 before registration).
    pub fn worker_id(&self) -> WorkerId {
        WorkerId(self.inner.worker_id.load(Ordering::SeqCst))
    }

    /// A client to some master: the current one, or the first of a shuffled list that answers
    /// (a leader hint goes first).
    async fn client(&self, hint: Option<String>) -> Result<MasterServiceClient, String> {
        let remembered = self
            .inner
            .leader_hint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let hint = hint.or(remembered);
        let mut current = self.inner.client.lock().await;
        if hint.is_none() {
            if let Some((_, client)) = current.as_ref() {
                return Ok(client.clone());
            }
        }
        let mut order = self.inner.masters.clone();
        order.shuffle(&mut rand::thread_rng());
        if let Some(hint) = hint {
            order.retain(|m| *m != hint);
            order.insert(0, hint);
        }
        let mut last_error = String::from("no masters configured");
        for addr in order {
            match dial_master(&addr, &self.inner.secret).await {
                Ok(stream) => {
                    let client = MasterServiceClient::new(
                        tarpc::client::Config::default(),
                        jobs::auth::transport(stream),
                    )
                    .spawn();
                    *current = Some((addr, client.clone()));
                    return Ok(client);
                }
                Err(e) => last_error = format!("{addr}: {e}"),
            }
        }
        Err(last_error)
    }

    async fn drop_client(&self) {
        *self.inner.client.lock().await = None;
    }

    /// Makes one call to a master (connecting first if needed, to `hint` if given). A failed
    /// call comes back with what to do about it and the leader hint the master gave, if any.
    async fn call<T, F, Fut>(
        &self,
        hint: Option<String>,
        f: F,
    ) -> Result<T, (CallError, Option<String>)>
    where
        F: FnOnce(MasterServiceClient) -> Fut,
        Fut: std::future::Future<Output = Result<Result<T, RemoteError>, tarpc::client::RpcError>>,
    {
        let client = self
            .client(hint)
            .await
            .map_err(|e| (CallError::Retry(e), None))?;
        match f(client).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(RemoteError::UnknownWorker { .. })) => Err((CallError::Unknown, None)),
            Ok(Err(RemoteError::NotLeader { leader })) => {
                // Talk to the leader from now on (or to another master if it is unknown).
                self.drop_client().await;
                *self
                    .inner
                    .leader_hint
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = leader.clone();
                Err((CallError::Retry("not the leader".into()), leader))
            }
            Ok(Err(other)) => Err((CallError::Retry(other.to_string()), None)),
            Err(rpc) => {
                self.drop_client().await;
                Err((CallError::Retry(rpc.to_string()), None))
            }
        }
    }

    /// Registers (again), retrying until it succeeds.
    pub async fn register(&self) {
        let mut backoff = MIN_BACKOFF;
        let mut hint = None;
        loop {
            let request = RegisterWorkerRequest {
                name: self.inner.identity.name.clone(),
                rpc_addr: self.inner.identity.rpc_addr.clone(),
                slots: self.inner.identity.slots,
                jobs: self.inner.identity.jobs.clone(),
                incarnation: self.inner.identity.incarnation,
                running: self.inner.executor.running_attempts(),
            };
            let error = match self
                .call(hint.take(), |c| async move {
                    c.register_worker(context(), request).await
                })
                .await
            {
                Ok(response) => {
                    self.inner
                        .worker_id
                        .store(response.worker_id.0, Ordering::SeqCst);
                    self.inner
                        .heartbeat_ms
                        .store(response.heartbeat_interval_ms.max(10), Ordering::SeqCst);
                    info!(worker_id = %response.worker_id, "registered with the master");
                    return;
                }
                Err((error, leader)) => {
                    hint = leader;
                    error
                }
            };
            if let CallError::Retry(reason) = error {
                warn!(%reason, "registration failed; retrying");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Heartbeats until the task is dropped; re-registers when the master does not know us.
    /// A failed heartbeat is retried soon (from [`MIN_BACKOFF`], doubling up to the interval),
    /// at the leader a "not the leader" answer named, so that after a failover the worker
    /// finds the new leader within a few round trips of its election, not a whole interval.
    pub async fn heartbeat_loop(self) {
        let mut retry_in = None;
        let mut backoff = MIN_BACKOFF;
        loop {
            let interval = Duration::from_millis(self.inner.heartbeat_ms.load(Ordering::SeqCst));
            tokio::time::sleep(retry_in.take().unwrap_or(interval)).await;
            match self.heartbeat(false).await {
                Ok(()) => backoff = MIN_BACKOFF,
                Err(CallError::Unknown) => {
                    warn!("the master does not know this worker; registering again");
                    self.register().await;
                }
                Err(CallError::Retry(reason)) => {
                    warn!(%reason, "heartbeat failed; trying again");
                    retry_in = Some(backoff.min(interval));
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Sends one heartbeat (with `draining` set at shutdown) and applies its cancellations.
    async fn heartbeat(&self, draining: bool) -> Result<(), CallError> {
        let request = HeartbeatRequest {
            worker_id: self.worker_id(),
            incarnation: self.inner.identity.incarnation,
            running: self.inner.executor.running_attempts(),
            draining,
        };
        let response = self
            .call(
                None,
                |c| async move { c.heartbeat(context(), request).await },
            )
            .await
            .map_err(|(error, _)| error)?;
        for attempt in &response.cancel {
            self.inner.executor.cancel(attempt);
        }
        // An attempt the master no longer wants will never be acknowledged.
        self.inner.executor.acknowledged(&response.cancel);
        Ok(())
    }

    /// Tells the master this worker is leaving, so its tasks move on at once.
    pub async fn say_goodbye(&self) {
        let _ = tokio::time::timeout(CALL_DEADLINE, self.heartbeat(true)).await;
    }

    /// Sends outcomes to the master in batches (everything queued while a report is in flight
    /// goes in the next one), until `outcomes` closes. A report is retried until the master
    /// acknowledges it.
    pub async fn report_loop(self, mut outcomes: mpsc::UnboundedReceiver<TaskStatus>) {
        while let Some(first) = outcomes.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_REPORT_BATCH {
                match outcomes.try_recv() {
                    Ok(status) => batch.push(status),
                    Err(_) => break,
                }
            }
            self.report(batch).await;
        }
    }

    /// Carries a lock request of a task handler to the leader: follows leader hints and retries
    /// failures to reach it with backoff, for up to [`LOCK_RETRY_FOR`]. Asking again is safe:
    /// an owner that acquires a lock it already holds gets the same grant.
    pub async fn lock(&self, request: LockRequest) -> Result<u64, LockError> {
        let wait = match request.op {
            LockOp::Acquire { wait_ms, .. } => Duration::from_millis(wait_ms),
            _ => Duration::ZERO,
        };
        let give_up = Instant::now() + LOCK_RETRY_FOR;
        let mut backoff = MIN_BACKOFF;
        let mut hint = None;
        loop {
            let request = request.clone();
            let answer = self
                .call(hint.take(), |c| async move {
                    let mut ctx = context();
                    ctx.deadline += wait;
                    c.lock(ctx, request).await
                })
                .await;
            let reason = match answer {
                // A failover on the masters' side: ask again, as for a transport failure.
                Ok(Err(error)) if error.is_transient() => error.to_string(),
                Ok(answer) => return answer,
                Err((CallError::Unknown, _)) => "the master does not know this worker".to_string(),
                Err((CallError::Retry(reason), leader)) => {
                    hint = leader;
                    reason
                }
            };
            if Instant::now() >= give_up {
                return Err(LockError::Unavailable(format!(
                    "no master took the lock request: {reason}"
                )));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn report(&self, statuses: Vec<TaskStatus>) {
        let attempts: Vec<_> = statuses.iter().map(|s| s.attempt).collect();
        let mut backoff = MIN_BACKOFF;
        let mut hint = None;
        loop {
            let request = ReportTaskStatusRequest {
                worker_id: self.worker_id(),
                statuses: statuses.clone(),
            };
            let outcome = match self
                .call(hint.take(), |c| async move {
                    c.report_task_status(context(), request).await
                })
                .await
            {
                Ok(()) => {
                    self.inner.executor.acknowledged(&attempts);
                    return;
                }
                Err((error, leader)) => {
                    hint = leader;
                    error
                }
            };
            match outcome {
                CallError::Unknown => self.register().await,
                CallError::Retry(reason) => {
                    warn!(%reason, count = attempts.len(), "report failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// The lock service task handlers reach through their context: blocking calls carried to the
/// leader by a [`MasterLink`] on the worker's runtime.
pub struct LinkLocks {
    link: MasterLink,
    runtime: tokio::runtime::Handle,
}

impl LinkLocks {
    /// Locks over `link`, whose calls run on `runtime`.
    pub fn new(link: MasterLink, runtime: tokio::runtime::Handle) -> LinkLocks {
        LinkLocks { link, runtime }
    }
}

impl LockService for LinkLocks {
    fn call(&self, request: LockRequest) -> Result<u64, LockError> {
        let link = self.link.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.runtime.spawn(async move {
            let _ = tx.send(link.lock(request).await);
        });
        // Handlers run on blocking threads, where waiting is allowed.
        rx.blocking_recv()
            .unwrap_or_else(|_| Err(LockError::Unavailable("the worker is stopping".into())))
    }
}

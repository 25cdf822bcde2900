//! `Locks`: the leader's lock service. Grants, releases, expiries and the FIFO queue of each
//! lock are commands in the Raft log (see `MetaState::acquire_lock`), so they survive any
//! single master; what is kept here, on the leader only, is what can be rebuilt: each lease's
//! clock and the waiting requests to wake.
//!
//! - A lease's clock starts when the leader first sees the grant (a new leader restarts every
//!   lease at its full TTL: never shorter), is restarted by a keepalive, and when it runs out
//!   the leader commits `ExpireLock`, which passes the lock to the first waiter.
//! - A waiting acquire is queued in the log with a ticket; the command that hands the lock on
//!   returns the ticket, and only that request is woken (no thundering herd).
//! - A new leader first commits `DropLockWaiters`: requests queued under an earlier leader were
//!   held by it and have failed; their clients ask again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jobs::lock::{limits, LockError, LockOp, LockRequest};
use tokio::sync::oneshot;
use tracing::warn;
use web::api::LockView;

use crate::ids::now_ms;
use crate::meta::batcher::QUORUM_SILENCE_MS;
use crate::meta::command::{Command, CommandResult, LockHandoff};
use crate::meta::node::{Meta, MetaError};
use crate::meta::state::MetaState;

/// How often the leader checks leases.
const SWEEP_EVERY: Duration = Duration::from_millis(25);
/// The shortest time between two logged failures of the lease keeper.
const WARN_EVERY: Duration = Duration::from_secs(5);
/// The longest a request waits for a new leader to start serving locks.
const SERVING_WAIT: Duration = Duration::from_secs(5);

/// The lock service (cheap to clone).
#[derive(Clone)]
pub struct Locks {
    inner: Arc<Inner>,
}

struct Inner {
    meta: Meta,
    table: Mutex<Table>,
}

/// The leader's rebuildable lock state.
#[derive(Default)]
struct Table {
    /// The term in which this master leads and has dropped its predecessors' waiters.
    serving_term: Option<u64>,
    /// Lease clocks by lock name.
    leases: HashMap<String, Lease>,
    /// Waiting acquires by ticket (random, so unique across masters and restarts), with
    /// their lock's name.
    waiting: HashMap<u64, (String, oneshot::Sender<u64>)>,
    /// When the last failure to commit lock changes was logged (they repeat every sweep
    /// while there is no quorum).
    last_warning: Option<Instant>,
}

impl Table {
    /// Wakes the request waiting with `ticket` for lock `name`, if it is still here.
    fn wake(&mut self, name: &str, ticket: u64, token: u64) {
        if self.waiting.get(&ticket).is_some_and(|(n, _)| n == name) {
            if let Some((_, waiter)) = self.waiting.remove(&ticket) {
                let _ = waiter.send(token);
            }
        }
    }

    /// Whether to log a failure now (at most one every [`WARN_EVERY`]).
    fn should_warn(&mut self) -> bool {
        let now = Instant::now();
        if self.last_warning.is_some_and(|t| now < t + WARN_EVERY) {
            return false;
        }
        self.last_warning = Some(now);
        true
    }
}

struct Lease {
    token: u64,
    deadline: Instant,
}

fn unavailable(error: MetaError) -> LockError {
    match error {
        MetaError::NotLeader { leader } => LockError::NotLeader { leader },
        other => LockError::Unavailable(format!("the lock service cannot commit: {other}")),
    }
}

fn unexpected(result: CommandResult) -> LockError {
    LockError::Unavailable(format!("unexpected lock command result {result:?}"))
}

fn check_name(what: &str, value: &str) -> Result<(), LockError> {
    if value.is_empty() || value.len() > limits::MAX_NAME {
        return Err(LockError::Invalid(format!(
            "`{what}` must be 1 to {} bytes long",
            limits::MAX_NAME
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(LockError::Invalid(format!(
            "`{what}` must not contain control characters"
        )));
    }
    Ok(())
}

fn check(request: &LockRequest) -> Result<(), LockError> {
    check_name("name", &request.name)?;
    check_name("owner", &request.owner)?;
    if let LockOp::Acquire { ttl_ms, wait_ms } = request.op {
        if !(limits::MIN_TTL_MS..=limits::MAX_TTL_MS).contains(&ttl_ms) {
            return Err(LockError::Invalid(format!(
                "`ttl_ms` must be between {} and {}",
                limits::MIN_TTL_MS,
                limits::MAX_TTL_MS
            )));
        }
        if wait_ms > limits::MAX_WAIT_MS {
            return Err(LockError::Invalid(format!(
                "`wait_ms` must be at most {}",
                limits::MAX_WAIT_MS
            )));
        }
    }
    Ok(())
}

impl Locks {
    /// The service of this master; it serves only while the master leads. Spawns the task that
    /// follows leadership and keeps the lease clocks (on the current tokio runtime).
    pub fn start(meta: Meta) -> Locks {
        let locks = Locks {
            inner: Arc::new(Inner {
                meta,
                table: Mutex::new(Table::default()),
            }),
        };
        let keeper = locks.clone();
        tokio::spawn(async move { keeper.keep().await });
        locks
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // Nothing panics while holding the lock, so a poisoned table is still consistent.
        self.inner.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Carries out one request (HTTP and workers' RPCs both come here); returns the grant's
    /// token (for a keepalive and a release, the token they named).
    ///
    /// # Errors
    /// As [`LockError`] describes.
    pub async fn handle(&self, request: LockRequest) -> Result<u64, LockError> {
        check(&request)?;
        self.await_serving().await?;
        let LockRequest { name, owner, op } = request;
        match op {
            LockOp::Acquire { ttl_ms, wait_ms } => self.acquire(name, owner, ttl_ms, wait_ms).await,
            LockOp::Keepalive { token } => self.keepalive(&name, &owner, token),
            LockOp::Release { token } => self.release(name, owner, token).await,
        }
    }

    /// The leader's RPC address, for a worker that asked a follower.
    pub fn leader_rpc(&self) -> Option<String> {
        self.inner.meta.leader().map(|(_, node)| node.addr)
    }

    /// Every held or awaited lock, by name, from the leader's state.
    pub fn list(&self, state: &MetaState) -> Vec<LockView> {
        let now = Instant::now();
        let table = self.table();
        state
            .locks
            .iter()
            .map(|(name, lock)| {
                let holder = lock.holder.as_ref();
                let lease = table
                    .leases
                    .get(name)
                    .filter(|l| holder.is_some_and(|h| h.token == l.token));
                LockView {
                    name: name.clone(),
                    owner: holder.map(|h| h.owner.clone()),
                    token: holder.map(|h| h.token),
                    ttl_ms: holder.map(|h| h.ttl_ms),
                    granted_ms: holder.map(|h| h.granted_ms),
                    expires_in_ms: lease
                        .map(|l| l.deadline.saturating_duration_since(now).as_millis() as u64),
                    waiters: lock.waiters.iter().map(|w| w.owner.clone()).collect(),
                }
            })
            .collect()
    }

    /// Returns once this master leads and serves locks in its current term; a new leader
    /// first drops its predecessors' waiters (see [`Locks::keep`]).
    async fn await_serving(&self) -> Result<(), LockError> {
        let deadline = Instant::now() + SERVING_WAIT;
        loop {
            let leadership = self.inner.meta.leadership();
            if !leadership.is_leader {
                return Err(LockError::NotLeader {
                    leader: leadership.leader.map(|(id, _)| id),
                });
            }
            if self.table().serving_term == Some(leadership.term) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LockError::Unavailable(
                    "a new leader is taking over the locks; try again".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn acquire(
        &self,
        name: String,
        owner: String,
        ttl_ms: u64,
        wait_ms: u64,
    ) -> Result<u64, LockError> {
        // The waiter is registered before the acquire is proposed, so that a hand-off that
        // commits right after it finds the request to wake.
        let waiter = (wait_ms > 0).then(|| {
            let ticket = rand::random::<u64>();
            let (tx, rx) = oneshot::channel();
            self.table().waiting.insert(ticket, (name.clone(), tx));
            (ticket, rx)
        });
        let ticket = waiter.as_ref().map(|(t, _)| *t);
        let result = self
            .inner
            .meta
            .propose(Command::AcquireLock {
                name: name.clone(),
                owner: owner.clone(),
                ttl_ms,
                ticket,
                at_ms: now_ms(),
            })
            .await;
        let result = match result {
            Ok(result) => result,
            Err(error) => {
                if let Some(ticket) = ticket {
                    self.table().waiting.remove(&ticket);
                }
                return Err(unavailable(error));
            }
        };
        match (result, waiter) {
            (CommandResult::LockGranted { token }, waiter) => {
                if let Some((ticket, _)) = waiter {
                    self.table().waiting.remove(&ticket);
                }
                self.start_lease(&name, token, ttl_ms);
                Ok(token)
            }
            (CommandResult::LockHeld { owner: holder }, _) => Err(LockError::Held { name, holder }),
            (CommandResult::LockQueued, Some((ticket, rx))) => {
                let woken = tokio::time::timeout(Duration::from_millis(wait_ms), rx).await;
                let dropped = match woken {
                    Ok(Ok(token)) => return Ok(token),
                    // This master stopped serving locks (its waiters were dropped).
                    Ok(Err(_)) => true,
                    Err(_) => false,
                };
                // Leave the queue, unless the lock came our way meanwhile.
                self.table().waiting.remove(&ticket);
                let abandoned = self
                    .inner
                    .meta
                    .propose(Command::AbandonLockWait {
                        name: name.clone(),
                        owner,
                        ticket,
                    })
                    .await
                    .map_err(unavailable)?;
                match abandoned {
                    CommandResult::LockGranted { token } => {
                        self.start_lease(&name, token, ttl_ms);
                        Ok(token)
                    }
                    _ if dropped => Err(LockError::Unavailable(
                        "the leader changed while the acquire waited; ask again".into(),
                    )),
                    _ => Err(LockError::WaitTimedOut {
                        name,
                        waited_ms: wait_ms,
                    }),
                }
            }
            (other, _) => Err(unexpected(other)),
        }
    }

    fn keepalive(&self, name: &str, owner: &str, token: u64) -> Result<u64, LockError> {
        let shared = self.inner.meta.state();
        let state = shared.read().unwrap_or_else(|p| p.into_inner());
        let holder = state.locks.get(name).and_then(|l| l.holder.as_ref());
        let stale = || LockError::Stale {
            name: name.to_string(),
            owner: owner.to_string(),
            token,
            holder: holder.map(|h| (h.owner.clone(), h.token)),
        };
        let Some(holder) = holder.filter(|h| h.owner == owner && h.token == token) else {
            return Err(stale());
        };
        // A leader cut off from its majority may already have been replaced, and the new one
        // will expire the lease: it must not promise the holder more time.
        if let Some(silence_ms) = self
            .inner
            .meta
            .metrics()
            .millis_since_quorum_ack
            .filter(|ms| *ms > QUORUM_SILENCE_MS)
        {
            return Err(LockError::Unavailable(format!(
                "the leader has not heard from a majority for {silence_ms} ms"
            )));
        }
        let mut table = self.table();
        // Read under the table lock, so that a sweep that decided to expire this lease
        // happened before (and this keepalive is refused) or sees the new deadline.
        let now = Instant::now();
        // A lease whose clock ran out is gone, even if its expiry has not committed yet.
        if table
            .leases
            .get(name)
            .is_some_and(|l| l.token == token && l.deadline <= now)
        {
            return Err(stale());
        }
        table.leases.insert(
            name.to_string(),
            Lease {
                token,
                deadline: now + Duration::from_millis(holder.ttl_ms),
            },
        );
        Ok(token)
    }

    async fn release(&self, name: String, owner: String, token: u64) -> Result<u64, LockError> {
        let result = self
            .inner
            .meta
            .propose(Command::ReleaseLock {
                name: name.clone(),
                owner: owner.clone(),
                token,
                at_ms: now_ms(),
            })
            .await
            .map_err(unavailable)?;
        match result {
            CommandResult::LockReleased { next } => {
                self.ended(&name, token, next);
                Ok(token)
            }
            CommandResult::LockStale { holder } => Err(LockError::Stale {
                name,
                owner,
                token,
                holder,
            }),
            other => Err(unexpected(other)),
        }
    }

    fn start_lease(&self, name: &str, token: u64, ttl_ms: u64) {
        self.table().leases.insert(
            name.to_string(),
            Lease {
                token,
                deadline: Instant::now() + Duration::from_millis(ttl_ms),
            },
        );
    }

    /// Grant `token` of `name` ended; wakes the waiter it passed to. The new holder's lease
    /// clock starts at the next sweep, or at its first keepalive.
    fn ended(&self, name: &str, token: u64, next: Option<LockHandoff>) {
        let mut table = self.table();
        if table.leases.get(name).is_some_and(|l| l.token == token) {
            table.leases.remove(name);
        }
        if let Some(next) = next {
            table.wake(name, next.ticket, next.token);
        }
    }

    /// Follows leadership and keeps the lease clocks, until the metadata node shuts down.
    async fn keep(&self) {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut changes = self.inner.meta.subscribe_leadership();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                changed = changes.changed() => if changed.is_err() {
                    return; // the metadata node is gone
                },
            }
            let leadership = self.inner.meta.leadership();
            if !(leadership.is_leader && leadership.ready) {
                let mut table = self.table();
                if table.serving_term.take().is_some() {
                    // Dropping the senders fails every waiting request on this master.
                    table.leases.clear();
                    table.waiting.clear();
                }
                continue;
            }
            if self.table().serving_term != Some(leadership.term) {
                match self.inner.meta.propose(Command::DropLockWaiters).await {
                    Ok(_) => {
                        let mut table = self.table();
                        table.leases.clear();
                        table.waiting.clear();
                        table.serving_term = Some(leadership.term);
                    }
                    Err(MetaError::Closed) => return,
                    Err(error) => {
                        if self.table().should_warn() {
                            warn!(%error, "could not take over the locks");
                        }
                    }
                }
                continue;
            }
            self.sweep().await;
        }
    }

    /// Starts the clock of every grant it has none for (at its full TTL) and commits the
    /// expiry of every lease whose clock ran out.
    async fn sweep(&self) {
        let now = Instant::now();
        // The grants whose lease ran out, as (lock, token).
        let expired: Vec<(String, u64)> = {
            let shared = self.inner.meta.state();
            let state = shared.read().unwrap_or_else(|p| p.into_inner());
            let mut table = self.table();
            table.leases.retain(|name, lease| {
                state
                    .locks
                    .get(name)
                    .and_then(|l| l.holder.as_ref())
                    .is_some_and(|h| h.token == lease.token)
            });
            let mut expired = Vec::new();
            for (name, lock) in &state.locks {
                let Some(holder) = &lock.holder else { continue };
                // A hand-off whose commit answered late (or not at all) still reaches its
                // waiter.
                if let Some(ticket) = holder.ticket {
                    table.wake(name, ticket, holder.token);
                }
                let lease = table.leases.entry(name.clone()).or_insert_with(|| Lease {
                    token: holder.token,
                    deadline: now + Duration::from_millis(holder.ttl_ms),
                });
                if lease.deadline <= now {
                    expired.push((name.clone(), holder.token));
                }
            }
            expired
        };
        if expired.is_empty() {
            return;
        }
        let at_ms = now_ms();
        let commands = expired
            .iter()
            .map(|(name, token)| Command::ExpireLock {
                name: name.clone(),
                token: *token,
                at_ms,
            })
            .collect();
        match self.inner.meta.propose_all(commands).await {
            Ok(results) => {
                for ((name, token), result) in expired.into_iter().zip(results) {
                    if let CommandResult::LockReleased { next } = result {
                        self.ended(&name, token, next);
                    }
                }
            }
            Err(error) => {
                if self.table().should_warn() {
                    warn!(%error, "could not commit lock expiries");
                }
            }
        }
    }
}

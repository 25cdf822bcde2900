//! Distributed locks as job code and the RPC layer see them: the request and error types, the
//! [`LockService`] a task reaches through its [`TaskContext`](crate::TaskContext), and
//! [`LockGuard`], a granted lock with its fencing token.
//!
//! A lock hangs on a lease with a time to live that its holder keeps alive; when the lease runs
//! out the lock passes to the next waiter. Every grant carries a fencing token that strictly
//! increases across all grants of a lock: pass it to whatever the lock protects, and have that
//! refuse a token lower than one it has seen, so a holder that paused past its lease can do no
//! harm.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Bounds on what a lock request may ask, checked by the master.
pub mod limits {
    /// The longest lock name or owner, in bytes.
    pub const MAX_NAME: usize = 256;
    /// The shortest lease: the master checks leases about every 25 ms.
    pub const MIN_TTL_MS: u64 = 100;
    /// The longest lease (one day).
    pub const MAX_TTL_MS: u64 = 86_400_000;
    /// The longest an acquire may wait (a minute: a follower forwards a request to the
    /// leader and waits for its answer about that long).
    pub const MAX_WAIT_MS: u64 = 60_000;
}

/// What a lock request does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockOp {
    /// Take the lock with a lease of `ttl_ms`, waiting up to `wait_ms` (0: try once).
    Acquire {
        /// The lease's time to live.
        ttl_ms: u64,
        /// How long to wait in the queue.
        wait_ms: u64,
    },
    /// Restart the lease's clock of the grant `token`.
    Keepalive {
        /// The grant.
        token: u64,
    },
    /// End the grant `token`.
    Release {
        /// The grant.
        token: u64,
    },
}

/// One lock request: `owner` names the holder (unique per client; the same owner acquiring a
/// lock it holds gets its grant again).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRequest {
    /// The lock.
    pub name: String,
    /// Who asks.
    pub owner: String,
    /// What to do.
    pub op: LockOp,
}

/// Why a lock request did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum LockError {
    /// A `try` found the lock held by someone else.
    #[error("lock `{name}` is held by `{holder}`")]
    Held {
        /// The lock.
        name: String,
        /// Its holder.
        holder: String,
    },
    /// A waiting acquire was not granted within its `wait_ms`.
    #[error("lock `{name}` was not granted within {waited_ms} ms")]
    WaitTimedOut {
        /// The lock.
        name: String,
        /// How long it waited.
        waited_ms: u64,
    },
    /// The owner and token are not the lock's current grant (it was released, or its lease
    /// expired and the lock moved on).
    #[error("`{owner}` with token {token} does not hold lock `{name}`{}", current(.holder))]
    Stale {
        /// The lock.
        name: String,
        /// Who asked.
        owner: String,
        /// The token it gave.
        token: u64,
        /// The current holder and token, if the lock is held.
        holder: Option<(String, u64)>,
    },
    /// The request is invalid (an empty name, a TTL out of bounds, ...).
    #[error("{0}")]
    Invalid(String),
    /// This master does not lead; ask the leader (`leader` is its node id, if known).
    #[error("this master is not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader's node id.
        leader: Option<u64>,
    },
    /// The lock service cannot answer now (no quorum, a failover, shutdown); retry.
    #[error("{0}")]
    Unavailable(String),
}

fn current(holder: &Option<(String, u64)>) -> String {
    match holder {
        Some((owner, token)) => format!(" (it is held by `{owner}` with token {token})"),
        None => " (it is free)".to_string(),
    }
}

impl LockError {
    /// Whether asking again later may succeed without changing the request (the service was
    /// unavailable or did not lead), as opposed to an answer about the lock itself.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            LockError::NotLeader { .. } | LockError::Unavailable(_)
        )
    }
}

/// The lock service, as the worker offers it to task handlers. Blocking: call it from a task's
/// `run` (which runs on a blocking thread), not from async code.
pub trait LockService: Send + Sync + 'static {
    /// Carries out one request; returns the token (acquire, keepalive, release all name one).
    ///
    /// # Errors
    /// As [`LockError`] describes.
    fn call(&self, request: LockRequest) -> Result<u64, LockError>;
}

/// A granted lock. Dropping it releases the lock (errors are ignored then; call
/// [`LockGuard::release`] to see them).
pub struct LockGuard {
    service: Arc<dyn LockService>,
    name: String,
    owner: String,
    token: u64,
    released: bool,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("name", &self.name)
            .field("owner", &self.owner)
            .field("token", &self.token)
            .finish()
    }
}

impl LockGuard {
    /// Acquires lock `name` for `owner` through `service`.
    ///
    /// # Errors
    /// As [`LockService::call`].
    pub fn acquire(
        service: Arc<dyn LockService>,
        name: &str,
        owner: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<LockGuard, LockError> {
        let token = service.call(LockRequest {
            name: name.to_string(),
            owner: owner.to_string(),
            op: LockOp::Acquire {
                ttl_ms: ttl.as_millis() as u64,
                wait_ms: wait.as_millis() as u64,
            },
        })?;
        Ok(LockGuard {
            service,
            name: name.to_string(),
            owner: owner.to_string(),
            token,
            released: false,
        })
    }

    /// The grant's fencing token: pass it to what the lock protects.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Restarts the lease's clock. An error means the lock may have passed on: stop the work
    /// it protects.
    ///
    /// # Errors
    /// [`LockError::Stale`] if the lease expired, or a transient error.
    pub fn keepalive(&self) -> Result<(), LockError> {
        self.service
            .call(self.request(LockOp::Keepalive { token: self.token }))
            .map(|_| ())
    }

    /// Releases the lock.
    ///
    /// # Errors
    /// [`LockError::Stale`] if it was no longer held, or a transient error.
    pub fn release(mut self) -> Result<(), LockError> {
        self.released = true;
        self.service
            .call(self.request(LockOp::Release { token: self.token }))
            .map(|_| ())
    }

    fn request(&self, op: LockOp) -> LockRequest {
        LockRequest {
            name: self.name.clone(),
            owner: self.owner.clone(),
            op,
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if !self.released {
            let _ = self
                .service
                .call(self.request(LockOp::Release { token: self.token }));
        }
    }
}

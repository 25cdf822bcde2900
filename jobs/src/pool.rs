//! `WorkerPool`: authenticated tarpc clients to workers — the master launches tasks through it,
//! reducers fetch map output through it — one connection per
//! address, reopened after a failure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::rpc::WorkerServiceClient;

/// How long connecting to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The pool.
#[derive(Clone)]
pub struct WorkerPool {
    secret: Arc<str>,
    clients: Arc<Mutex<HashMap<String, WorkerServiceClient>>>,
}

impl WorkerPool {
    /// A pool that authenticates with `secret`.
    pub fn new(secret: Arc<str>) -> WorkerPool {
        WorkerPool {
            secret,
            clients: Arc::default(),
        }
    }

    /// A client for `addr`, connecting if needed.
    ///
    /// # Errors
    /// If the peer cannot be reached or refuses the handshake.
    pub async fn get(&self, addr: &str) -> crate::Result<WorkerServiceClient> {
        if let Some(client) = self.lock().get(addr) {
            return Ok(client.clone());
        }
        let stream = crate::auth::dial(addr, &self.secret, CONNECT_TIMEOUT).await?;
        let client = WorkerServiceClient::new(
            tarpc::client::Config::default(),
            crate::auth::transport(stream),
        )
        .spawn();
        self.lock().insert(addr.to_string(), client.clone());
        Ok(client)
    }

    /// Drops the connection to `addr` (after a failed call).
    pub fn forget(&self, addr: &str) {
        self.lock().remove(addr);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, WorkerServiceClient>> {
        // Entries are inserted or removed whole; a poisoned lock still holds valid clients.
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }
}

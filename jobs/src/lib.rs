//! The shared vocabulary of the cluster and the API that job authors write against.
//!
//! # Layout
//! - [`ids`]: the `JobId`, `TaskId` and `WorkerId` newtypes (Snowflake ids are made by the master).
//! - [`spec`]: `JobSpec`, the JSON a user submits, and its validation.
//! - [`state`]: job and task states as the API reports them.
//! - [`mapreduce`]: the `MapReduce` trait, the input record and the emitter a map or reduce writes to.
//! - [`task`]: the `Task` trait for single-shot jobs that take a JSON payload.
//! - [`lock`]: distributed locks with fencing tokens, as task handlers reach them.
//! - [`registry`]: how a crate makes its jobs known to every worker binary that links it
//!   ([`register_mapreduce!`], [`register_task!`]).
//! - [`config`]: `cluster.toml`, read by masters, workers and the launcher alike.
//! - [`builtin`]: `wordcount`, `index`, `grep`, `echo` and `sleep`.
//! - [`rpc`]: the tarpc service traits between masters and workers and their messages.
//! - [`pool`]: `WorkerPool`, authenticated clients to workers, shared by master and worker.
//! - [`auth`]: the secret-checking handshake and the bounded framing every RPC connection uses.
//! - [`error`]: this crate's error type.
//!
//! This crate has no actors and runs no servers; the `master` and `worker` crates do.

pub mod auth;
pub mod builtin;
pub mod config;
pub mod error;
pub mod ids;
pub mod lock;
pub mod mapreduce;
pub mod pool;
pub mod registry;
pub mod rpc;
pub mod spec;
pub mod state;
pub mod task;

pub use error::{Error, Result};
pub use ids::{JobId, TaskId, WorkerId};
pub use mapreduce::{Emit, MapReduce, Record};
pub use spec::JobSpec;
pub use state::{JobState, TaskState};
pub use task::{Task, TaskContext};

#[doc(hidden)]
pub use inventory as __inventory;
#[doc(hidden)]
pub use serde_json as __serde_json;

/// The wall clock in milliseconds since the Unix epoch (0 if the clock is before it): the time
/// of every record the cluster keeps.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Resolves on SIGINT or SIGTERM: the shutdown signal of every binary (`master`, `worker`, and
/// worker binaries built with job crates).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

//! The master node.
//!
//! # Layout
//! - [`server`]: [`server::run`], one master node until shutdown.
//! - [`config`]: [`config::MasterConfig`], taken from the cluster file and `--id`.
//! - [`meta`]: the Raft-replicated metadata (commands, state machine, log, snapshots).
//! - [`scheduler`]: the `Scheduler` actor: jobs → tasks → workers, faults, backups.
//! - [`job_run`]: the per-job runtime state the scheduler keeps (pure logic).
//! - [`planner`]: input globs → splits → the task plan of a job.
//! - [`placement`]: the consistent-hash ring that maps keys to live workers.
//! - [`registry`]: the `WorkerRegistry` actor: registration and heartbeats.
//! - [`rpc_server`]: the tarpc service workers call.
//! - [`task_launcher`]: the `TaskLauncher` trait the scheduler launches tasks through.
//! - [`worker_client`]: the real `TaskLauncher`, over tarpc.
//! - [`api`]: the HTTP API's view of the master (implements `web::api::ClusterApi`).
//! - [`peers`]: the other masters' own health, asked over HTTP for the cluster view.
//! - [`ids`]: Snowflake ids.
//! - [`locks`]: the leader's lock service (leases, FIFO waiters, fencing tokens).
//! - [`launcher`]: `master up`, which starts every node of a cluster file as child processes.
//! - [`client`]: `master submit`, the command-line client of the HTTP API.
//! - [`error`]: the master's error type.

pub mod api;
pub mod client;
pub mod config;
pub mod error;
pub mod ids;
pub mod job_run;
pub mod launcher;
pub mod locks;
pub mod meta;
pub mod peers;
pub mod placement;
pub mod planner;
pub mod registry;
pub mod rpc_server;
pub mod scheduler;
pub mod server;
pub mod task_launcher;
pub mod worker_client;

pub use error::{Error, Result};

pub use jobs::shutdown_signal;

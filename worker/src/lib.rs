//! The worker node: it registers with the masters, heartbeats, runs map, reduce and task
//! attempts, and serves its map outputs to reducers (the shuffle).
//!
//! # Layout
//! - [`run`]: one worker until shutdown.
//! - [`config`]: [`config::WorkerConfig`], taken from the cluster file and `--name`.
//! - [`executor`]: runs attempts off the async threads, catches panics, fetches shuffle input.
//! - [`master_link`]: registration, heartbeats and outcome reports to the masters.
//! - [`rpc_server`]: the tarpc service the master and other workers call.
//! - [`mapper`]: a map attempt: memory-mapped input, partition, combine, sort, spill.
//! - [`reducer`]: a reduce attempt: k-way merge of fetched runs, reduce, atomic output.
//! - [`run_file`]: the sorted-run format and the k-way merge both sides share.
//! - [`shuffle_store`]: finished map outputs, served in chunks.
//! - [`error`]: the worker's error type.

pub mod config;
pub mod error;
pub mod executor;
pub mod mapper;
pub mod master_link;
pub mod reducer;
pub mod rpc_server;
pub mod run_file;
pub mod shuffle_store;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::info;

pub use error::{Error, Result};

use crate::config::WorkerConfig;
use crate::executor::{Executor, ExecutorConfig};
use crate::master_link::{Identity, MasterLink};
use crate::shuffle_store::ShuffleStore;

/// How long a stopping worker waits for its last reports to reach the master.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs a worker until `shutdown` resolves: bind, register, serve, heartbeat; then drain (stop
/// taking tasks, tell the master, cancel what runs) and return. `on_ready` gets the bound
/// address once the service listens.
///
/// # Errors
/// If the listener cannot be bound, the data directory cannot be prepared, or the linked jobs
/// are inconsistent.
pub async fn run(
    config: WorkerConfig,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    let jobs = jobs::registry::linked_jobs()?;
    // Outputs of an earlier incarnation are useless (the master re-runs them): start clean.
    for dir in ["shuffle", "fetch"] {
        let path = config.data_dir.join(dir);
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
    }
    std::fs::create_dir_all(&config.data_dir)?;
    let listener = tokio::net::TcpListener::bind(config.rpc_addr).await?;
    let bound = listener.local_addr()?;
    let secret: Arc<str> = Arc::from(config.secret.as_str());

    let (reports_tx, reports_rx) = tokio::sync::mpsc::unbounded_channel();
    let executor = Executor::new(
        ExecutorConfig {
            slots: config.slots,
            data_dir: config.data_dir.clone(),
            own_addr: bound.to_string(),
            map_buffer: config.map_buffer,
        },
        Arc::new(ShuffleStore::new()),
        jobs::pool::WorkerPool::new(secret.clone()),
        reports_tx,
    );
    let (stop_rpc, rpc_stopped) = tokio::sync::oneshot::channel::<()>();
    let rpc = tokio::spawn(rpc_server::run(
        listener,
        secret.clone(),
        executor.clone(),
        async {
            let _ = rpc_stopped.await;
        },
    ));
    info!(name = %config.name, rpc = %bound, slots = config.slots, jobs = jobs.len(), "worker listening");
    on_ready(bound);

    let identity = Identity {
        name: config.name.clone(),
        rpc_addr: bound.to_string(),
        slots: config.slots,
        jobs,
        incarnation: rand::random(),
    };
    let link = MasterLink::new(identity, config.masters.clone(), secret, executor.clone());
    executor.set_locks(Arc::new(master_link::LinkLocks::new(
        link.clone(),
        tokio::runtime::Handle::current(),
    )));
    tokio::pin!(shutdown);
    tokio::select! {
        _ = link.register() => {}
        _ = &mut shutdown => {
            let _ = stop_rpc.send(());
            return Ok(());
        }
    }
    let heartbeats = tokio::spawn(link.clone().heartbeat_loop());
    let reporter = tokio::spawn(link.clone().report_loop(reports_rx));
    shutdown.await;

    info!("worker draining");
    executor.drain();
    heartbeats.abort();
    link.say_goodbye().await;
    executor.cancel_all();
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while !executor.running_attempts().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    reporter.abort();
    let _ = stop_rpc.send(());
    let _ = rpc.await;
    info!("worker stopped");
    Ok(())
}

pub use jobs::shutdown_signal;

/// The `main` of a worker binary: parses `--config FILE --name NAME`, installs logging, and runs
/// the worker with every job linked into the binary. A job crate's own worker binary is just
/// `fn main() -> std::process::ExitCode { worker::main() }` plus `use my_jobs as _;`.
pub fn main() -> std::process::ExitCode {
    use clap::Parser;

    /// A worker node of the job cluster.
    #[derive(Parser)]
    #[command(version, about)]
    struct Cli {
        /// The cluster file.
        #[arg(long, env = "CLUSTER_CONFIG", default_value = "cluster.toml")]
        config: std::path::PathBuf,
        /// This worker's name in the file.
        #[arg(long)]
        name: String,
    }

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,tarpc=warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = (|| -> Result<()> {
        let cluster = jobs::config::ClusterConfig::load(&cli.config)?;
        let config = WorkerConfig::from_cluster(&cluster, &cli.name)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(run(config, shutdown_signal(), |_| {}))
    })();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

//! The `master` binary: `master run`, `master up` and `master submit` (CONTRACT.md).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use jobs::config::ClusterConfig;
use master::config::MasterConfig;

/// A master node of the job cluster, and the cluster's launcher and client.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs one master of the cluster file.
    Run {
        /// The cluster file.
        #[arg(long, env = "CLUSTER_CONFIG")]
        config: PathBuf,
        /// This master's id in the file.
        #[arg(long)]
        id: u64,
    },
    /// Starts every master and worker of the cluster file on this host, until Ctrl-C.
    Up {
        /// The cluster file.
        #[arg(long, env = "CLUSTER_CONFIG", default_value = "cluster.toml")]
        config: PathBuf,
    },
    /// Submits a job spec (a file, or `-` for stdin) and prints its id.
    Submit {
        /// The cluster file.
        #[arg(long, env = "CLUSTER_CONFIG", default_value = "cluster.toml")]
        config: PathBuf,
        /// The spec.
        spec: String,
        /// Show progress until the job ends; exit 0 only if it succeeded.
        #[arg(long)]
        wait: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(env_filter())
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse().command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn env_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,openraft=warn,tarpc=warn".into())
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run { config, id } => {
            let config = MasterConfig::from_cluster(ClusterConfig::load(&config)?, id)?;
            actix::System::new().block_on(master::server::run(
                config,
                master::shutdown_signal(),
                |_| {},
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Up { config } => {
            let config = ClusterConfig::load(&config)?;
            let master_bin = std::env::current_exe()?;
            let worker_bin = master::launcher::sibling_binary("worker")?;
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(master::launcher::up(
                &config,
                &master_bin,
                &worker_bin,
                master::shutdown_signal(),
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Submit { config, spec, wait } => {
            let config = ClusterConfig::load(&config)?;
            // A job that did not succeed comes back as an error (non-zero exit).
            master::client::submit(&config, &spec, wait)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

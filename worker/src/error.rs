//! Errors of the worker.

/// An error that stops the worker from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cluster file is invalid for this worker.
    #[error(transparent)]
    Config(#[from] jobs::config::ConfigError),
    /// The linked jobs are inconsistent (two jobs of one kind share a name).
    #[error(transparent)]
    Jobs(#[from] jobs::Error),
    /// A socket or file operation failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The result type of the worker.
pub type Result<T, E = Error> = std::result::Result<T, E>;

//! Errors of the master.

use jobs::JobId;

use crate::meta::node::MetaError;

/// An error of the master's library code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A submitted job was refused; the message is for the submitter (HTTP 400).
    #[error("{reason}")]
    Rejected {
        /// What is wrong with the job.
        reason: String,
    },
    /// This master is not the Raft leader; writes go to the leader (`leader` is its id).
    #[error("this master is not the leader (leader: {})", leader.map_or("unknown".to_string(), |id| format!("master {id}")))]
    NotLeader {
        /// The leader's id, if known.
        leader: Option<u64>,
    },
    /// No job has this id.
    #[error("no job {id}")]
    UnknownJob {
        /// The id asked for.
        id: JobId,
    },
    /// The metadata could not be changed (not the leader, Raft stopped, storage failed).
    /// Boxed: Raft errors are large, and this type travels through every `Result`.
    #[error(transparent)]
    Meta(Box<MetaError>),
    /// The scheduler actor is gone (the master is shutting down).
    #[error("the scheduler is not running")]
    SchedulerGone,
    /// A file or socket operation failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The cluster file is invalid for this master.
    #[error(transparent)]
    Config(#[from] jobs::config::ConfigError),
    /// An RPC handshake or framing error.
    #[error(transparent)]
    Rpc(#[from] jobs::Error),
}

impl From<MetaError> for Error {
    fn from(error: MetaError) -> Error {
        Error::Meta(Box::new(error))
    }
}

/// The result type of the master.
pub type Result<T, E = Error> = std::result::Result<T, E>;

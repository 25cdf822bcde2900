//! Errors of the `jobs` crate.

use std::io;

/// An error from building a job, validating a spec, or an RPC handshake.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A job spec is malformed or names something impossible.
    #[error("invalid job spec: {reason}")]
    InvalidSpec {
        /// What is wrong, in words for the person who wrote the spec.
        reason: String,
    },
    /// A job's `params` could not be used to build it.
    #[error("invalid params for job `{job}`: {reason}")]
    InvalidParams {
        /// The job's registered name.
        job: String,
        /// What is wrong with the params.
        reason: String,
    },
    /// No job of that kind and name is linked into this binary.
    #[error("unknown {kind} job `{name}`")]
    UnknownJob {
        /// `mapreduce` or `task`.
        kind: &'static str,
        /// The name that was asked for.
        name: String,
    },
    /// The peer of an RPC connection did not prove it knows the cluster secret.
    #[error("RPC handshake refused: {reason}")]
    Handshake {
        /// Why the handshake failed (wrong secret, bad protocol, early close).
        reason: &'static str,
    },
    /// An I/O error on a connection or a file.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

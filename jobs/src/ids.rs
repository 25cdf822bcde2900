//! Id newtypes. Job and task ids are Snowflake ids made by the Raft leader; worker ids are
//! allocated through the replicated log. All are `u64` on the wire and decimal strings in JSON.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl FromStr for $name {
            type Err = std::num::ParseIntError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map($name)
            }
        }
    };
}

id_type!(
    /// A job: one submitted spec (a firing of a recurring job is a job of its own).
    JobId
);
id_type!(
    /// A task of a job: one map split, one reduce partition, or the single run of a `task` job.
    TaskId
);
id_type!(
    /// A worker, allocated through the log the first time a worker name registers.
    WorkerId
);

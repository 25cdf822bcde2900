//! How jobs become known to a worker: every crate linked into the worker binary registers its
//! jobs with [`register_mapreduce!`](crate::register_mapreduce) and
//! [`register_task!`](crate::register_task), and the worker reads them all at start.
//!
//! Registration uses link-time collection (the `inventory` crate): a job crate only has to be
//! linked. A binary that names nothing from a job crate must still link it, e.g. with
//! `use my_jobs as _;` in `main.rs`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::mapreduce::MapReduce;
use crate::task::Task;

/// A registered MapReduce job.
#[derive(Debug)]
pub struct MapReduceEntry {
    /// The name specs use in `job`.
    pub name: &'static str,
    /// Builds the job from the spec's `params`.
    pub build: fn(&Value) -> Result<Box<dyn MapReduce>, String>,
}

/// A registered task handler.
#[derive(Debug)]
pub struct TaskEntry {
    /// The name specs use in `job`.
    pub name: &'static str,
    /// Builds the handler.
    pub build: fn() -> Box<dyn Task>,
}

inventory::collect!(MapReduceEntry);
inventory::collect!(TaskEntry);

/// The kind of a registered job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum JobKind {
    /// A [`MapReduce`] job.
    MapReduce,
    /// A [`Task`] handler.
    Task,
}

impl JobKind {
    /// `"mapreduce"` or `"task"`, as in a spec's `kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::MapReduce => "mapreduce",
            JobKind::Task => "task",
        }
    }
}

/// A job a worker can run: what it registers with the master.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobName {
    /// Its kind.
    pub kind: JobKind,
    /// Its registered name.
    pub name: String,
}

/// Every job linked into this binary, sorted.
///
/// # Errors
/// [`Error::InvalidSpec`] if two registrations of one kind share a name (which one would run
/// would be up to the linker).
pub fn linked_jobs() -> Result<Vec<JobName>> {
    let mut names = BTreeSet::new();
    let entries = inventory::iter::<MapReduceEntry>
        .into_iter()
        .map(|e| (JobKind::MapReduce, e.name))
        .chain(
            inventory::iter::<TaskEntry>
                .into_iter()
                .map(|e| (JobKind::Task, e.name)),
        );
    for (kind, name) in entries {
        if !names.insert(JobName {
            kind,
            name: name.to_string(),
        }) {
            return Err(Error::InvalidSpec {
                reason: format!("two {} jobs are registered as `{name}`", kind.as_str()),
            });
        }
    }
    Ok(names.into_iter().collect())
}

/// Builds the MapReduce job `name` with `params`.
///
/// # Errors
/// [`Error::UnknownJob`] if no such job is linked, [`Error::InvalidParams`] if its constructor
/// refuses the params.
pub fn mapreduce(name: &str, params: &Value) -> Result<Box<dyn MapReduce>> {
    let entry = inventory::iter::<MapReduceEntry>
        .into_iter()
        .find(|e| e.name == name)
        .ok_or_else(|| Error::UnknownJob {
            kind: "mapreduce",
            name: name.to_string(),
        })?;
    (entry.build)(params).map_err(|reason| Error::InvalidParams {
        job: name.to_string(),
        reason,
    })
}

/// Builds the task handler `name`.
///
/// # Errors
/// [`Error::UnknownJob`] if no such handler is linked.
pub fn task(name: &str) -> Result<Box<dyn Task>> {
    inventory::iter::<TaskEntry>
        .into_iter()
        .find(|e| e.name == name)
        .map(|e| (e.build)())
        .ok_or_else(|| Error::UnknownJob {
            kind: "task",
            name: name.to_string(),
        })
}

/// Registers a [`MapReduce`] job under a name.
///
/// `register_mapreduce!("name", Type)` builds it with `Type::default()`;
/// `register_mapreduce!("name", Type, constructor)` calls
/// `constructor(&params) -> Result<Type, String>` with the spec's `params`.
#[macro_export]
macro_rules! register_mapreduce {
    ($name:literal, $ty:ty) => {
        $crate::register_mapreduce!($name, $ty, |_: &$crate::__serde_json::Value| {
            ::std::result::Result::<$ty, ::std::string::String>::Ok(
                <$ty as ::std::default::Default>::default(),
            )
        });
    };
    ($name:literal, $ty:ty, $ctor:expr) => {
        const _: () = {
            fn build(
                params: &$crate::__serde_json::Value,
            ) -> ::std::result::Result<
                ::std::boxed::Box<dyn $crate::MapReduce>,
                ::std::string::String,
            > {
                let ctor: fn(
                    &$crate::__serde_json::Value,
                ) -> ::std::result::Result<$ty, ::std::string::String> = $ctor;
                ctor(params).map(|job| {
                    ::std::boxed::Box::new(job) as ::std::boxed::Box<dyn $crate::MapReduce>
                })
            }
            $crate::__inventory::submit! {
                $crate::registry::MapReduceEntry { name: $name, build }
            }
        };
    };
}

/// Registers a [`Task`] handler under a name; `register_task!("name", Type)` builds it with
/// `Type::default()`.
#[macro_export]
macro_rules! register_task {
    ($name:literal, $ty:ty) => {
        const _: () = {
            fn build() -> ::std::boxed::Box<dyn $crate::Task> {
                ::std::boxed::Box::new(<$ty as ::std::default::Default>::default())
            }
            $crate::__inventory::submit! {
                $crate::registry::TaskEntry { name: $name, build }
            }
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_linked_and_unique() {
        let names = linked_jobs().unwrap();
        for (kind, name) in [
            (JobKind::MapReduce, "wordcount"),
            (JobKind::MapReduce, "index"),
            (JobKind::MapReduce, "grep"),
            (JobKind::Task, "echo"),
            (JobKind::Task, "sleep"),
        ] {
            assert!(
                names.contains(&JobName {
                    kind,
                    name: name.into()
                }),
                "{name} missing"
            );
        }
    }

    #[test]
    fn unknown_jobs_and_bad_params_are_errors() {
        assert!(matches!(
            mapreduce("nope", &Value::Null),
            Err(Error::UnknownJob { .. })
        ));
        assert!(matches!(task("nope"), Err(Error::UnknownJob { .. })));
        let bad = serde_json::json!({"pattern": "("});
        assert!(matches!(
            mapreduce("grep", &bad),
            Err(Error::InvalidParams { .. })
        ));
    }
}

//! Job specs: the JSON documents users submit (see CONTRACT.md, "Job specs").
//!
//! A spec is parsed in two steps so that a typo is an error that names the field: the keys of the
//! object are checked against the fields of its `kind` first, then the typed spec is built.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::error::{Error, Result};

/// The default of `max_attempts`: how often a task may fail before its job fails.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 4;
/// The most reduce partitions a job may ask for.
pub const MAX_REDUCERS: u32 = 10_000;

/// A JSON value that travels as JSON text in binary encodings (bincode cannot carry
/// `serde_json::Value`, which needs a self-describing format).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Json(pub Value);

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            self.0.serialize(s)
        } else {
            s.serialize_str(&self.0.to_string())
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            Value::deserialize(d).map(Json)
        } else {
            let text = String::deserialize(d)?;
            serde_json::from_str(&text)
                .map(Json)
                .map_err(D::Error::custom)
        }
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A submitted job: the fields every kind shares and the kind's own fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The registered name of the job (`wordcount`, `echo`, ...).
    pub job: String,
    /// When to run it; `None` runs it at once.
    pub schedule: Option<Json>,
    /// How often one task may be attempted before the job fails.
    pub max_attempts: u32,
    /// The longest one task attempt may run before it counts as failed.
    pub timeout_ms: Option<u64>,
    /// What kind of job this is, with that kind's fields.
    pub kind: KindSpec,
}

/// The kind-specific part of a [`JobSpec`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum KindSpec {
    /// A MapReduce job over input files.
    MapReduce(MapReduceSpec),
    /// A single task that takes a JSON payload and returns a JSON result.
    Task(TaskSpec),
}

/// The fields of a `"kind": "mapreduce"` spec.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MapReduceSpec {
    /// Input paths or glob patterns.
    pub input: Vec<String>,
    /// The output directory; it must not exist yet, or be empty.
    pub output: String,
    /// The number of reduce partitions, and so of `part-r-*` files.
    pub reducers: u32,
    /// Job-specific parameters handed to the job's constructor.
    pub params: Json,
}

/// The fields of a `"kind": "task"` spec.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// What the handler is given.
    pub payload: Json,
    /// Optional routing key: tasks with the same key go to the same worker while it lives.
    pub key: Option<String>,
}

impl JobSpec {
    /// `"mapreduce"` or `"task"`, as in the spec's `kind` field.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            KindSpec::MapReduce(_) => "mapreduce",
            KindSpec::Task(_) => "task",
        }
    }

    /// Parses and validates a spec from JSON text.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] naming the first problem: not JSON, not an object, a missing or
    /// unknown field, a field of the wrong type, or a value out of range.
    pub fn from_json(text: &str) -> Result<JobSpec> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| invalid(format!("malformed JSON: {e}")))?;
        JobSpec::from_value(value)
    }

    /// Parses and validates a spec from a JSON value; see [`JobSpec::from_json`].
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] naming the first problem.
    pub fn from_value(value: Value) -> Result<JobSpec> {
        let Value::Object(mut obj) = value else {
            return Err(invalid("a job spec must be a JSON object".into()));
        };
        let kind = match obj.remove("kind") {
            Some(Value::String(k)) => k,
            Some(_) => return Err(invalid("`kind` must be a string".into())),
            None => return Err(invalid("missing field `kind`".into())),
        };
        const COMMON: &[&str] = &["job", "schedule", "max_attempts", "timeout_ms"];
        let own: &[&str] = match kind.as_str() {
            "mapreduce" => &["input", "output", "reducers", "params"],
            "task" => &["payload", "key"],
            "crawl" => {
                return Err(invalid(
                    "crawl jobs are not supported by this cluster yet".into(),
                ))
            }
            other => {
                return Err(invalid(format!(
                    "unknown kind `{other}` (expected `mapreduce` or `task`)"
                )))
            }
        };
        if let Some(key) = obj
            .keys()
            .find(|k| !COMMON.contains(&k.as_str()) && !own.contains(&k.as_str()))
        {
            return Err(invalid(format!("unknown field `{key}` in a {kind} spec")));
        }
        let job = take_string(&mut obj, "job")?;
        if job.is_empty() {
            return Err(invalid("`job` must not be empty".into()));
        }
        let schedule = obj.remove("schedule").filter(|v| !v.is_null());
        if schedule.is_some() {
            return Err(invalid(
                "`schedule` (delayed and cron jobs) is not supported by this cluster yet".into(),
            ));
        }
        let max_attempts = match take_u64(&mut obj, "max_attempts")? {
            None => DEFAULT_MAX_ATTEMPTS,
            Some(n) if (1..=100).contains(&n) => n as u32,
            Some(n) => {
                return Err(invalid(format!(
                    "`max_attempts` must be between 1 and 100, not {n}"
                )))
            }
        };
        let timeout_ms = match take_u64(&mut obj, "timeout_ms")? {
            Some(0) => return Err(invalid("`timeout_ms` must be positive".into())),
            t => t,
        };
        let kind = if kind == "mapreduce" {
            let input = match obj.remove("input") {
                Some(Value::Array(items)) if !items.is_empty() => items
                    .into_iter()
                    .map(|v| match v {
                        Value::String(s) if !s.is_empty() => Ok(s),
                        _ => Err(invalid(
                            "`input` must be a list of non-empty strings".into(),
                        )),
                    })
                    .collect::<Result<Vec<_>>>()?,
                Some(Value::Array(_)) => {
                    return Err(invalid("`input` must name at least one path".into()))
                }
                Some(_) => return Err(invalid("`input` must be a list of paths or globs".into())),
                None => return Err(invalid("missing field `input`".into())),
            };
            let output = take_string(&mut obj, "output")?;
            if output.is_empty() {
                return Err(invalid("`output` must not be empty".into()));
            }
            let reducers = match take_u64(&mut obj, "reducers")? {
                None => return Err(invalid("missing field `reducers`".into())),
                Some(n) if (1..=MAX_REDUCERS as u64).contains(&n) => n as u32,
                Some(n) => {
                    return Err(invalid(format!(
                        "`reducers` must be between 1 and {MAX_REDUCERS}, not {n}"
                    )))
                }
            };
            let params = obj.remove("params").unwrap_or(Value::Null);
            if !(params.is_null() || params.is_object()) {
                return Err(invalid("`params` must be an object".into()));
            }
            KindSpec::MapReduce(MapReduceSpec {
                input,
                output,
                reducers,
                params: Json(params),
            })
        } else {
            let payload = obj.remove("payload").unwrap_or(Value::Null);
            let key = match obj.remove("key") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s),
                Some(_) => return Err(invalid("`key` must be a string".into())),
            };
            KindSpec::Task(TaskSpec {
                payload: Json(payload),
                key,
            })
        };
        Ok(JobSpec {
            job,
            schedule: None,
            max_attempts,
            timeout_ms,
            kind,
        })
    }

    /// The spec as the JSON a user would submit.
    pub fn to_json(&self) -> Value {
        let mut obj = serde_json::Map::new();
        obj.insert("kind".into(), self.kind_name().into());
        obj.insert("job".into(), self.job.clone().into());
        match &self.kind {
            KindSpec::MapReduce(mr) => {
                obj.insert("input".into(), mr.input.clone().into());
                obj.insert("output".into(), mr.output.clone().into());
                obj.insert("reducers".into(), mr.reducers.into());
                if !mr.params.0.is_null() {
                    obj.insert("params".into(), mr.params.0.clone());
                }
            }
            KindSpec::Task(t) => {
                obj.insert("payload".into(), t.payload.0.clone());
                if let Some(key) = &t.key {
                    obj.insert("key".into(), key.clone().into());
                }
            }
        }
        if let Some(s) = &self.schedule {
            obj.insert("schedule".into(), s.0.clone());
        }
        obj.insert("max_attempts".into(), self.max_attempts.into());
        if let Some(t) = self.timeout_ms {
            obj.insert("timeout_ms".into(), t.into());
        }
        Value::Object(obj)
    }
}

fn invalid(reason: String) -> Error {
    Error::InvalidSpec { reason }
}

fn take_string(obj: &mut serde_json::Map<String, Value>, key: &str) -> Result<String> {
    match obj.remove(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(invalid(format!("`{key}` must be a string"))),
        None => Err(invalid(format!("missing field `{key}`"))),
    }
}

fn take_u64(obj: &mut serde_json::Map<String, Value>, key: &str) -> Result<Option<u64>> {
    match obj.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| invalid(format!("`{key}` must be a non-negative integer"))),
        Some(_) => Err(invalid(format!("`{key}` must be a non-negative integer"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(text: &str) -> String {
        match JobSpec::from_json(text) {
            Err(Error::InvalidSpec { reason }) => reason,
            other => panic!("expected an invalid spec, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_mapreduce_spec_and_round_trips() {
        let spec = JobSpec::from_json(
            r#"{"kind":"mapreduce","job":"grep","input":["a/*.txt"],"output":"out","reducers":2,"params":{"pattern":"x"}}"#,
        )
        .unwrap();
        assert_eq!(spec.max_attempts, DEFAULT_MAX_ATTEMPTS);
        let again = JobSpec::from_value(spec.to_json()).unwrap();
        assert_eq!(spec, again);
        let bin = bincode_roundtrip(&spec);
        assert_eq!(spec, bin);
    }

    fn bincode_roundtrip(spec: &JobSpec) -> JobSpec {
        // tarpc's transport uses bincode; `Json` must survive a non-self-describing format.
        let bytes = bincode::serialize(spec).unwrap();
        bincode::deserialize(&bytes).unwrap()
    }

    #[test]
    fn rejects_bad_specs_with_the_field_named() {
        assert!(reason("{").contains("malformed JSON"));
        assert!(reason("[]").contains("object"));
        assert!(reason(r#"{"job":"x"}"#).contains("`kind`"));
        assert!(reason(r#"{"kind":"nope","job":"x"}"#).contains("unknown kind"));
        assert!(reason(r#"{"kind":"task","job":"echo","paylod":1}"#).contains("`paylod`"));
        assert!(reason(
            r#"{"kind":"mapreduce","job":"wordcount","input":["x"],"output":"o","reducers":0}"#
        )
        .contains("`reducers`"));
        assert!(reason(
            r#"{"kind":"mapreduce","job":"wordcount","input":[],"output":"o","reducers":1}"#
        )
        .contains("`input`"));
        assert!(reason(r#"{"kind":"task","job":"echo","max_attempts":0}"#).contains("max_attempts"));
        assert!(reason(r#"{"kind":"task","job":""}"#).contains("`job`"));
    }
}

//! Example job crate: how a user writes jobs for the cluster.
//!
//! A job crate depends on `jobs`, implements [`jobs::MapReduce`] or [`jobs::Task`], and
//! registers each job under a name with [`jobs::register_mapreduce!`] or
//! [`jobs::register_task!`]. A worker binary that links the crate serves its jobs (see
//! `src/bin/example-worker.rs`, three lines), and `cluster.toml` points workers at that binary
//! with `bin = "target/release/example-worker"`.
//!
//! The jobs here:
//! - `anagrams` (MapReduce): groups the words of the input that are anagrams of each other.
//! - `crash-test` (MapReduce): counts lines, but panics in `map` on a line containing
//!   `params.panic_on` — a fault-injection job that shows how a panicking job fails.
//! - `slow-wordcount` (MapReduce): `wordcount` that sleeps `params.line_delay_us` microseconds
//!   per input line — for watching progress, and for killing workers mid-job in fault demos.
//! - `reverse` (task): reverses the string payload.
//! - `locked-counter` (task): adds one to a counter file under a cluster lock, and fences the
//!   write with the lock's token — how job code uses [`jobs::TaskContext::lock`].
//!
//! [`corpus`] generates the Zipf text the benchmarks and cluster tests run on, and
//! [`local_cluster`] starts real master and worker processes for them.

pub mod corpus;
pub mod local_cluster;

use std::collections::BTreeSet;

use jobs::{Emit, MapReduce, Record, Task, TaskContext};
use serde_json::Value;

/// Groups words by their sorted letters; value = the distinct words, comma-separated, sorted.
/// Only groups of two or more words are written.
#[derive(Debug, Default)]
pub struct Anagrams;

fn distinct<'a>(values: &mut dyn Iterator<Item = &'a str>) -> BTreeSet<&'a str> {
    values
        .flat_map(|v| v.split(','))
        .filter(|w| !w.is_empty())
        .collect()
}

impl MapReduce for Anagrams {
    fn map(&self, record: &Record<'_>, out: &mut dyn Emit) {
        jobs::builtin::for_each_word(record.line, |word| {
            let mut letters: Vec<char> = word.chars().collect();
            letters.sort_unstable();
            out.emit(&letters.into_iter().collect::<String>(), word);
        });
    }

    fn reduce(&self, key: &str, values: &mut dyn Iterator<Item = &str>, out: &mut dyn Emit) {
        let words = distinct(values);
        if words.len() > 1 {
            out.emit(key, &words.into_iter().collect::<Vec<_>>().join(","));
        }
    }

    fn combine(&self, _key: &str, values: &mut dyn Iterator<Item = &str>) -> Option<String> {
        Some(distinct(values).into_iter().collect::<Vec<_>>().join(","))
    }
}

jobs::register_mapreduce!("anagrams", Anagrams);

/// Counts lines per file, and panics on a line containing `panic_on`.
#[derive(Debug)]
pub struct CrashTest {
    panic_on: String,
}

impl CrashTest {
    /// Builds the job from `{"panic_on": "<text>"}`.
    ///
    /// # Errors
    /// If `panic_on` is missing or empty.
    pub fn from_params(params: &Value) -> Result<CrashTest, String> {
        let panic_on = params
            .get("panic_on")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if panic_on.is_empty() {
            return Err("crash-test needs params {\"panic_on\": \"<text>\"}".into());
        }
        Ok(CrashTest {
            panic_on: panic_on.to_string(),
        })
    }
}

impl MapReduce for CrashTest {
    fn map(&self, record: &Record<'_>, out: &mut dyn Emit) {
        if record.line.contains(&self.panic_on) {
            panic!(
                "crash-test found {:?} at {}:{}",
                self.panic_on, record.path, record.line_number
            );
        }
        out.emit(record.path, "1");
    }

    fn reduce(&self, key: &str, values: &mut dyn Iterator<Item = &str>, out: &mut dyn Emit) {
        out.emit(key, &values.count().to_string());
    }
}

jobs::register_mapreduce!("crash-test", CrashTest, CrashTest::from_params);

/// Word count, slowed down on purpose.
#[derive(Debug)]
pub struct SlowWordCount {
    delay: std::time::Duration,
}

impl SlowWordCount {
    /// Builds the job from `{"line_delay_us": n}` (default 1000).
    ///
    /// # Errors
    /// If `line_delay_us` is not a non-negative integer.
    pub fn from_params(params: &Value) -> Result<SlowWordCount, String> {
        let micros = match params.get("line_delay_us") {
            None | Some(Value::Null) => 1000,
            Some(v) => v
                .as_u64()
                .ok_or("`line_delay_us` must be a non-negative integer")?,
        };
        Ok(SlowWordCount {
            delay: std::time::Duration::from_micros(micros),
        })
    }
}

impl MapReduce for SlowWordCount {
    fn map(&self, record: &Record<'_>, out: &mut dyn Emit) {
        std::thread::sleep(self.delay);
        jobs::builtin::wordcount::WordCount.map(record, out);
    }

    fn reduce(&self, key: &str, values: &mut dyn Iterator<Item = &str>, out: &mut dyn Emit) {
        jobs::builtin::wordcount::WordCount.reduce(key, values, out);
    }

    fn combine(&self, key: &str, values: &mut dyn Iterator<Item = &str>) -> Option<String> {
        jobs::builtin::wordcount::WordCount.combine(key, values)
    }
}

jobs::register_mapreduce!("slow-wordcount", SlowWordCount, SlowWordCount::from_params);

/// Reverses a string payload.
#[derive(Debug, Default)]
pub struct Reverse;

impl Task for Reverse {
    fn run(&self, _ctx: &TaskContext, payload: &Value) -> Result<Value, String> {
        let text = payload.as_str().ok_or("reverse needs a string payload")?;
        Ok(Value::String(text.chars().rev().collect()))
    }
}

jobs::register_task!("reverse", Reverse);

/// A counter in a file that refuses writes fenced by a token older than the last one it took:
/// the resource side of fencing. The file holds `<value> <token>`.
#[derive(Debug)]
pub struct FencedCounter {
    path: std::path::PathBuf,
}

impl FencedCounter {
    /// The counter in `path` (a missing file is 0, never written).
    pub fn new(path: impl Into<std::path::PathBuf>) -> FencedCounter {
        FencedCounter { path: path.into() }
    }

    /// The value and the token of the last write.
    ///
    /// # Errors
    /// If the file cannot be read or does not hold two numbers.
    pub fn read(&self) -> Result<(u64, u64), String> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
            Err(e) => return Err(format!("reading {}: {e}", self.path.display())),
        };
        let mut fields = text.split_whitespace().map(str::parse::<u64>);
        match (fields.next(), fields.next()) {
            (Some(Ok(value)), Some(Ok(token))) => Ok((value, token)),
            _ => Err(format!(
                "{} does not hold `<value> <token>`",
                self.path.display()
            )),
        }
    }

    /// Writes `value` under fencing `token` (temp file + rename), unless a write with a newer
    /// token came first. The check and the write happen under an exclusive lock of a sidecar
    /// file (the path with the extension `fence`), so two writers cannot interleave them.
    ///
    /// # Errors
    /// If `token` is older than the last write's, or on an I/O error.
    pub fn write(&self, value: u64, token: u64) -> Result<(), String> {
        let fence = std::fs::File::create(self.path.with_extension("fence"))
            .and_then(|f| f.lock().map(|()| f))
            .map_err(|e| format!("locking {}.fence: {e}", self.path.display()))?;
        let (_, last) = self.read()?;
        if token < last {
            return Err(format!(
                "refused a write fenced by token {token}: token {last} wrote already"
            ));
        }
        let temp = self.path.with_extension(format!("tmp-{token}"));
        std::fs::write(&temp, format!("{value} {token}\n"))
            .and_then(|()| std::fs::rename(&temp, &self.path))
            .map_err(|e| format!("writing {}: {e}", self.path.display()))?;
        drop(fence);
        Ok(())
    }
}

/// Adds one to the [`FencedCounter`] in `payload.counter` (a path) while holding the cluster
/// lock `payload.lock` (default: the path), optionally holding it `payload.hold_ms` longer
/// to widen the window for other writers. Result: `{"value": new value, "token": token}`.
#[derive(Debug, Default)]
pub struct LockedCounter;

impl Task for LockedCounter {
    fn run(&self, ctx: &TaskContext, payload: &Value) -> Result<Value, String> {
        let path = payload["counter"]
            .as_str()
            .ok_or("locked-counter needs `counter`: the counter file's path")?;
        let name = payload["lock"].as_str().unwrap_or(path);
        let hold = std::time::Duration::from_millis(payload["hold_ms"].as_u64().unwrap_or(0));
        let wait = std::time::Duration::from_secs(30);
        let ttl = std::time::Duration::from_secs(10);
        let guard = ctx.lock(name, ttl, wait).map_err(|e| e.to_string())?;
        let counter = FencedCounter::new(path);
        let (value, _) = counter.read()?;
        std::thread::sleep(hold);
        counter.write(value + 1, guard.token())?;
        let token = guard.token();
        // The write is done: failing the attempt now would make a retry count twice. A release
        // that fails only keeps the next holder waiting until the lease runs out.
        let _ = guard.release();
        Ok(serde_json::json!({ "value": value + 1, "token": token }))
    }
}

jobs::register_task!("locked-counter", LockedCounter);

#[cfg(test)]
mod tests {
    use super::*;

    fn run_map(job: &dyn MapReduce, line: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let record = Record {
            path: "f",
            line_number: 1,
            line,
        };
        job.map(&record, &mut |k: &str, v: &str| {
            out.push((k.to_string(), v.to_string()))
        });
        out
    }

    #[test]
    fn a_fenced_counter_refuses_older_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let counter = FencedCounter::new(dir.path().join("c"));
        assert_eq!(counter.read().unwrap(), (0, 0));
        counter.write(1, 5).unwrap();
        counter.write(2, 7).unwrap();
        let refused = counter.write(3, 6).unwrap_err();
        assert!(refused.contains("token 7 wrote already"), "{refused}");
        assert_eq!(counter.read().unwrap(), (2, 7));
    }

    #[test]
    fn locked_counter_needs_a_lock_service() {
        let ctx = TaskContext {
            job_id: jobs::JobId(1),
            task_id: jobs::TaskId(2),
            attempt: 1,
            idempotency_key: "1/2".into(),
            cancelled: Default::default(),
            locks: None,
        };
        let error = LockedCounter
            .run(&ctx, &serde_json::json!({"counter": "/nonexistent/c"}))
            .unwrap_err();
        assert!(error.contains("no lock service"), "{error}");
    }

    #[test]
    fn anagrams_group_words_by_letters() {
        let pairs = run_map(&Anagrams, "Listen silent");
        assert_eq!(
            pairs,
            vec![
                ("eilnst".into(), "listen".into()),
                ("eilnst".into(), "silent".into())
            ]
        );
        let mut out = Vec::new();
        Anagrams.reduce(
            "eilnst",
            &mut ["silent", "listen,enlist", "silent"].into_iter(),
            &mut |k: &str, v: &str| out.push((k.to_string(), v.to_string())),
        );
        assert_eq!(
            out,
            vec![("eilnst".to_string(), "enlist,listen,silent".to_string())]
        );
    }

    #[test]
    fn crash_test_panics_on_its_marker() {
        let job = CrashTest::from_params(&serde_json::json!({"panic_on": "BOOM"})).unwrap();
        assert_eq!(run_map(&job, "fine").len(), 1);
        let caught = std::panic::catch_unwind(|| run_map(&job, "a BOOM here"));
        assert!(caught.is_err());
        assert!(CrashTest::from_params(&Value::Null).is_err());
    }

    #[test]
    fn the_jobs_are_registered() {
        let names: Vec<String> = jobs::registry::linked_jobs()
            .unwrap()
            .into_iter()
            .map(|j| j.name)
            .collect();
        for name in ["anagrams", "crash-test", "reverse", "wordcount"] {
            assert!(
                names.contains(&name.to_string()),
                "{name} missing from {names:?}"
            );
        }
    }
}

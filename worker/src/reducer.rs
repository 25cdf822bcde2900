//! The reduce side of a task: merge the fetched segments of one partition, run the job's
//! `reduce` once per key, and publish `part-r-NNNNN` atomically.
//!
//! Every input is one map output's segment for this partition, already on local disk as a
//! sorted run ([`crate::run_file`]). They are k-way merged, so the partition is never loaded
//! into memory: what is held at once is one record and one read buffer per input, plus the
//! values of the key being reduced (see [`run_reduce`]). Output lines `key\tvalue\n` go to a
//! temporary file named after the attempt, which is fsynced and renamed over the final name:
//! a reader sees either no file or a whole one, and a duplicate (backup) attempt is harmless.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use jobs::rpc::Counters;
use jobs::{Emit, MapReduce};
use tracing::{debug, warn};

use crate::run_file::{merge_runs, RunError, RunReader, ValueBuffer};

/// The cancellation flag is checked once every 4096 input records (when the count masked with
/// this is 0).
const CANCEL_CHECK_MASK: u64 = 4096 - 1;
/// Read buffer per input run.
const READ_BUFFER: usize = 64 << 10;
/// Write buffer of the output file.
const WRITE_BUFFER: usize = 256 << 10;

/// Why a reduce attempt failed (a panic in user code is not caught here).
#[derive(Debug, thiserror::Error)]
pub enum ReduceError {
    /// An input file could not be opened.
    #[error("cannot open reduce input {path}: {source}")]
    Input {
        /// The input file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An input holds a key or value that is not UTF-8, so it is not map output.
    #[error("reduce input is corrupt: a {part} of key {key:?} is not UTF-8")]
    NotUtf8 {
        /// "key" or "value".
        part: &'static str,
        /// The key, lossily converted.
        key: String,
    },
    /// The attempt tag would not make a plain file name (allowed: ASCII letters, digits, `-`,
    /// `_` and `.`).
    #[error("invalid attempt tag {tag:?}")]
    InvalidAttemptTag {
        /// The tag given.
        tag: String,
    },
    /// The cancellation flag was set.
    #[error("reduce cancelled")]
    Cancelled,
    /// An input run is truncated, unsorted or unreadable.
    #[error(transparent)]
    Run(#[from] RunError),
    /// Writing the output failed.
    #[error("reduce output I/O failed: {0}")]
    Io(#[from] io::Error),
}

/// Results of this module.
pub type Result<T, E = ReduceError> = std::result::Result<T, E>;

/// What a successful reduce produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReduceOutput {
    /// The published `output_dir/part-r-NNNNN`.
    pub file: PathBuf,
    /// Input records and bytes; output lines and bytes.
    pub counters: Counters,
}

/// The final name of a partition's output file: `part-r-NNNNN` (at least 5 digits).
pub fn part_file_name(partition: u32) -> String {
    format!("part-r-{partition:05}")
}

/// Reduces partition `partition` from `inputs` (sorted runs) into `output_dir/part-r-NNNNN`,
/// writing through `output_dir/.part-r-NNNNN.<attempt_tag>.tmp` (removed on error or panic).
///
/// `reduce` takes an `Iterator<Item = &str>` whose items may be kept across calls to `next`,
/// so the values cannot come straight from the merge's reused buffers: the values of **one
/// key** are collected (into one reused string) before `reduce` runs. A single key with more
/// values than fit in memory would therefore not fit; a partition larger than memory does,
/// since everything else streams.
///
/// # Errors
/// An unreadable or corrupt input, an invalid tag, cancellation, or output I/O.
pub fn run_reduce(
    job: &dyn MapReduce,
    inputs: &[PathBuf],
    output_dir: &Path,
    partition: u32,
    attempt_tag: &str,
    cancelled: &AtomicBool,
) -> Result<ReduceOutput> {
    let tag_ok = !attempt_tag.is_empty()
        && (attempt_tag.bytes()).all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !tag_ok {
        return Err(ReduceError::InvalidAttemptTag {
            tag: attempt_tag.to_owned(),
        });
    }
    let mut counters = Counters::default();
    let mut readers = Vec::with_capacity(inputs.len());
    for path in inputs {
        let input_err = |source| ReduceError::Input {
            path: path.clone(),
            source,
        };
        let file = File::open(path).map_err(input_err)?;
        counters.bytes_in += file.metadata().map_err(input_err)?.len();
        readers.push(RunReader::new(BufReader::with_capacity(READ_BUFFER, file)));
    }

    fs::create_dir_all(output_dir)?;
    let name = part_file_name(partition);
    let mut tmp = TempFile {
        path: output_dir.join(format!(".{name}.{attempt_tag}.tmp")),
        published: false,
    };
    let mut sink = LineSink {
        out: BufWriter::with_capacity(WRITE_BUFFER, File::create(&tmp.path)?),
        error: None,
        records: 0,
        bytes: 0,
    };
    let mut values = ValueBuffer::default();
    merge_runs(readers, |key, group| {
        let not_utf8 = |part| ReduceError::NotUtf8 {
            part,
            key: String::from_utf8_lossy(key).into_owned(),
        };
        let key_str = std::str::from_utf8(key).map_err(|_| not_utf8("key"))?;
        values.clear();
        while let Some(value) = group.next_value()? {
            if counters.records_in & CANCEL_CHECK_MASK == 0 && cancelled.load(Ordering::Relaxed) {
                return Err(ReduceError::Cancelled);
            }
            counters.records_in += 1;
            values.push_utf8(value).map_err(|_| not_utf8("value"))?;
        }
        job.reduce(key_str, &mut values.iter(), &mut sink);
        match sink.error.take() {
            Some(error) => Err(error.into()),
            None => Ok(()),
        }
    })?;

    let file = sink
        .out
        .into_inner()
        .map_err(io::IntoInnerError::into_error)?;
    file.sync_all()?;
    let final_path = output_dir.join(name);
    fs::rename(&tmp.path, &final_path)?;
    tmp.published = true;
    sync_dir(output_dir);
    counters.records_out = sink.records;
    counters.bytes_out = sink.bytes;
    debug!(file = %final_path.display(), records_out = sink.records, "reduce finished");
    Ok(ReduceOutput {
        file: final_path,
        counters,
    })
}

/// Makes the rename durable. A failure is only logged: the file is in place already.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Err(error) = File::open(dir).and_then(|d| d.sync_all()) {
        warn!(dir = %dir.display(), %error, "cannot fsync the output directory");
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// The `Emit` that `reduce` writes to: `key\tvalue\n` lines, counted.
struct LineSink {
    out: BufWriter<File>,
    /// The first write error; `emit` cannot return it, so it is checked after `reduce`.
    error: Option<io::Error>,
    records: u64,
    bytes: u64,
}

impl Emit for LineSink {
    fn emit(&mut self, key: &str, value: &str) {
        if self.error.is_some() {
            return;
        }
        let line = [key.as_bytes(), b"\t", value.as_bytes(), b"\n"];
        match line.iter().try_for_each(|part| self.out.write_all(part)) {
            Ok(()) => {
                self.records += 1;
                self.bytes += (key.len() + value.len() + 2) as u64;
            }
            Err(error) => self.error = Some(error),
        }
    }
}

/// A temporary output file, removed when dropped (on error or unwinding) unless published.
struct TempFile {
    path: PathBuf,
    /// Renamed to the final name: nothing to remove.
    published: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.published {
            // Best effort: the file may not have been created.
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run_file::RunWriter;
    use jobs::builtin::wordcount::WordCount;
    use std::collections::BTreeMap;

    fn write_run(path: &Path, mut records: Vec<(String, String)>) {
        records.sort_by(|a, b| a.0.cmp(&b.0));
        let mut writer = RunWriter::new(File::create(path).unwrap());
        for (k, v) in &records {
            writer.write(k.as_bytes(), v.as_bytes()).unwrap();
        }
        writer.finish().unwrap();
    }

    fn reduce(inputs: &[PathBuf], out: &Path, partition: u32) -> Result<ReduceOutput> {
        let never = AtomicBool::new(false);
        run_reduce(&WordCount, inputs, out, partition, "7-3-1", &never)
    }

    fn dir_names(dir: &Path) -> Vec<String> {
        let entries = fs::read_dir(dir).unwrap();
        let mut names: Vec<_> = entries
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn merges_inputs_into_exact_totals_sorted_bytewise() {
        let dir = tempfile::tempdir().unwrap();
        let runs: [&[(&str, u64)]; 4] = [
            &[("zebra", 2), ("été", 1), ("apple", 5)],
            &[("apple", 1), ("Zulu", 4), ("日本", 3)],
            &[],
            &[("zebra", 1), ("apple", 2), ("été", 10), ("straße", 7)],
        ];
        let mut inputs = Vec::new();
        let mut expected = BTreeMap::new();
        for (i, run) in runs.iter().enumerate() {
            let path = dir.path().join(format!("in-{i}"));
            write_run(
                &path,
                run.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
            for (k, v) in run.iter() {
                *expected.entry(k.to_string()).or_insert(0) += v;
            }
            inputs.push(path);
        }
        let out = dir.path().join("out");
        let output = reduce(&inputs, &out, 3).unwrap();
        assert_eq!(output.file, out.join("part-r-00003"));
        let text = fs::read_to_string(&output.file).unwrap();
        let expected: String = expected
            .iter()
            .map(|(k, v)| format!("{k}\t{v}\n"))
            .collect();
        assert!(expected.starts_with("Zulu\t4\napple\t8\n"));
        assert!(expected.ends_with("zebra\t3\nété\t11\n日本\t3\n"));
        assert_eq!(text, expected);
        assert_eq!(output.counters.records_in, 10);
        assert_eq!(output.counters.records_out, 6);
        assert_eq!(output.counters.bytes_out, text.len() as u64);
        assert_eq!(dir_names(&out), ["part-r-00003"]);
    }

    #[test]
    fn output_is_published_atomically_and_failures_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let good = dir.path().join("good");
        write_run(&good, vec![("a".into(), "1".into())]);
        assert_eq!(
            reduce(std::slice::from_ref(&good), &out, 12345)
                .unwrap()
                .counters
                .records_out,
            1
        );
        assert_eq!(dir_names(&out), ["part-r-12345"]);

        let truncated = dir.path().join("truncated");
        let bytes = fs::read(&good).unwrap();
        fs::write(&truncated, &bytes[..bytes.len() - 1]).unwrap();
        let result = reduce(&[good.clone(), truncated], &out, 4);
        assert!(matches!(
            result,
            Err(ReduceError::Run(RunError::Truncated { .. }))
        ));

        let not_utf8 = dir.path().join("not-utf8");
        let mut writer = RunWriter::new(File::create(&not_utf8).unwrap());
        writer.write(b"key", b"\xff\xfe").unwrap();
        writer.finish().unwrap();
        let result = reduce(&[not_utf8], &out, 4);
        assert!(matches!(
            result,
            Err(ReduceError::NotUtf8 { part: "value", .. })
        ));

        let cancelled = AtomicBool::new(true);
        let result = run_reduce(
            &WordCount,
            std::slice::from_ref(&good),
            &out,
            4,
            "t",
            &cancelled,
        );
        assert!(matches!(result, Err(ReduceError::Cancelled)));
        let missing = dir.path().join("missing");
        assert!(matches!(
            reduce(&[missing], &out, 4),
            Err(ReduceError::Input { .. })
        ));
        let never = AtomicBool::new(false);
        let result = run_reduce(&WordCount, &[good], &out, 4, "../x", &never);
        assert!(matches!(result, Err(ReduceError::InvalidAttemptTag { .. })));
        assert_eq!(dir_names(&out), ["part-r-12345"]);
    }

    #[test]
    fn streams_a_partition_of_many_keys_across_many_runs() {
        const KEYS: u64 = 200_000;
        const RUNS: u64 = 20;
        let dir = tempfile::tempdir().unwrap();
        let mut inputs = Vec::new();
        for run in 0..RUNS {
            // Key i appears in run i % RUNS with value 1 and in run (i * 7 + 3) % RUNS with i.
            let records = (0..KEYS).flat_map(|i| {
                let key = format!("key{i:07}");
                let first = (i % RUNS == run).then(|| (key.clone(), "1".to_string()));
                let second = ((i * 7 + 3) % RUNS == run).then(|| (key, i.to_string()));
                first.into_iter().chain(second)
            });
            let path = dir.path().join(format!("run-{run}"));
            write_run(&path, records.collect());
            inputs.push(path);
        }
        let out = dir.path().join("out");
        let output = reduce(&inputs, &out, 0).unwrap();
        assert_eq!(output.counters.records_in, 2 * KEYS);
        assert_eq!(output.counters.records_out, KEYS);
        let text = fs::read_to_string(out.join("part-r-00000")).unwrap();
        let mut lines = 0;
        for (i, line) in (0..).zip(text.lines()) {
            assert_eq!(line, format!("key{i:07}\t{}", i + 1));
            lines += 1;
        }
        assert_eq!(lines, KEYS);
    }
}

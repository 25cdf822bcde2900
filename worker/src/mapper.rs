//! The map side of a task: read one input split, run the job's `map`, and leave one sorted,
//! partitioned output file on local disk for the shuffle.
//!
//! The split is memory-mapped and cut into lines by the Hadoop convention (see
//! [`InputSplit`]): a split owns the lines that *start* in `start..end`. Emitted pairs are
//! buffered per partition; a job with a combiner is combined in memory as pairs arrive
//! ([`COMBINE_THRESHOLD`]), which is what keeps word count's shuffle small. When the buffer
//! passes the memory budget it is sorted and spilled as one run file; at the end a single
//! spill is renamed into place and several are k-way merged ([`crate::run_file`]).

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use jobs::rpc::{Counters, InputSplit, Segment};
use jobs::{Emit, MapReduce, Record};
use memmap2::Mmap;
use tracing::debug;

use crate::run_file::{merge_runs, RunError, RunReader, RunWriter, ValueBuffer};

/// A key's buffered values are combined once this many have accumulated.
pub const COMBINE_THRESHOLD: usize = 32;
/// The cancellation flag is checked once every 4096 records (when the count masked with this
/// is 0).
const CANCEL_CHECK_MASK: u64 = 4096 - 1;
/// Estimated bytes of hash-table entry and allocation overhead per distinct buffered key.
const KEY_OVERHEAD: usize = 96;
/// At most this many spills are merged at once (each holds an open file and a read buffer).
const MERGE_FAN_IN: usize = 64;
/// Read buffer per spill while merging spills.
const MERGE_BUFFER: usize = 64 << 10;

/// Why a map attempt failed (a panic in user code is not caught here).
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// The input file could not be opened or mapped.
    #[error("cannot read input {path}: {source}")]
    Input {
        /// The input file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The split does not lie within the input file (or `start > end`).
    #[error("split {start}..{end} does not fit input {path} of {len} bytes")]
    InvalidSplit {
        /// The input file.
        path: PathBuf,
        /// The split's first byte.
        start: u64,
        /// The split's end.
        end: u64,
        /// The file's length.
        len: u64,
    },
    /// `reducers` was 0.
    #[error("a map needs at least one reduce partition")]
    NoReducers,
    /// The job's partitioner returned a partition out of range.
    #[error("partitioner put key {key:?} in partition {partition}, not in 0..{reducers}")]
    BadPartition {
        /// The key.
        key: String,
        /// What `partition` returned.
        partition: u32,
        /// The number of partitions.
        reducers: u32,
    },
    /// A spill file holds a key or value that is not UTF-8: it was corrupted on disk.
    #[error("spill {path} holds a key or value that is not UTF-8")]
    CorruptSpill {
        /// The spill file.
        path: PathBuf,
    },
    /// The cancellation flag was set.
    #[error("map cancelled")]
    Cancelled,
    /// Writing or merging runs failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// File system I/O on the output or spill files failed.
    #[error("map output I/O failed: {0}")]
    Io(#[from] io::Error),
}

/// Results of this module.
pub type Result<T, E = MapError> = std::result::Result<T, E>;

/// What a successful map produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapOutput {
    /// Where each partition's sorted run lies in the output file, indexed by partition.
    pub segments: Vec<Segment>,
    /// Lines and split bytes read; records and bytes in the output file.
    pub counters: Counters,
}

/// Maps `split` into `out`: one sorted run per partition (`reducers` of them), described by
/// the returned segments. Buffers up to about `budget_bytes` of pairs before spilling to
/// `<out>.spills/`. `out` appears only complete (written as `<out>.tmp`, then renamed); on an
/// error or a panic in user code the temporary and spill files are removed.
///
/// # Errors
/// Unreadable input, an invalid split, a bad partitioner, cancellation, or output I/O.
pub fn run_map(
    job: &dyn MapReduce,
    split: &InputSplit,
    reducers: u32,
    out: &Path,
    budget_bytes: usize,
    cancelled: &AtomicBool,
) -> Result<MapOutput> {
    map_split(job, split, reducers, out, budget_bytes, cancelled).map(|(output, _spills)| output)
}

/// [`run_map`], also returning how many runs were spilled.
fn map_split(
    job: &dyn MapReduce,
    split: &InputSplit,
    reducers: u32,
    out: &Path,
    budget_bytes: usize,
    cancelled: &AtomicBool,
) -> Result<(MapOutput, usize)> {
    if reducers == 0 {
        return Err(MapError::NoReducers);
    }
    let mut files = OutputFiles::new(out);
    let path = Path::new(&split.path);
    let input_err = |source| MapError::Input {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(input_err)?;
    let len = file.metadata().map_err(input_err)?.len();
    let mmap = if len == 0 {
        None
    } else {
        // SAFETY: the mapping is read-only and dropped before returning. Like Hadoop, we assume
        // input files are not modified while a job reads them; a file truncated under the map
        // would fault the process (SIGBUS), as it would any mmap reader.
        Some(unsafe { Mmap::map(&file) }.map_err(input_err)?)
    };
    let data: &[u8] = mmap.as_deref().unwrap_or_default();
    if split.start > split.end || split.start > len {
        return Err(MapError::InvalidSplit {
            path: path.to_owned(),
            start: split.start,
            end: split.end,
            len,
        });
    }
    // Both fit in usize: they are at most the length of a mapped file.
    let (start, end) = (split.start as usize, split.end.min(len) as usize);

    let mut lines = SplitLines::new(data, start, end);
    let first_line_start = lines.pos;
    // Line numbers are 1-based within the file: count the lines before the split's first.
    let first_line_number =
        1 + memchr::memchr_iter(b'\n', &data[..first_line_start]).count() as u64;
    let mut counters = Counters::default();
    let mut buffer = PairBuffer::new(job, reducers);
    let mut spills = Vec::new();
    for (line_number, line) in (first_line_number..).zip(lines.by_ref()) {
        if counters.records_in & CANCEL_CHECK_MASK == 0 && cancelled.load(Ordering::Relaxed) {
            return Err(MapError::Cancelled);
        }
        let line = String::from_utf8_lossy(line);
        let record = Record {
            path: &split.path,
            line_number,
            line: &line,
        };
        job.map(&record, &mut buffer);
        if let Some(error) = buffer.error.take() {
            return Err(error);
        }
        counters.records_in += 1;
        if buffer.used > budget_bytes {
            spills.push(buffer.write_run(&files.next_spill()?)?);
        }
    }
    counters.bytes_in = (lines.pos - first_line_start) as u64;

    let spill_count = spills.len();
    let written = if spills.is_empty() {
        buffer.write_run(&files.tmp)?
    } else {
        if buffer.used > 0 {
            spills.push(buffer.write_run(&files.next_spill()?)?);
        }
        // Merge at most MERGE_FAN_IN runs at once (open files), in order, so that values of
        // equal keys keep their emission order and the output does not depend on the budget.
        while spills.len() > MERGE_FAN_IN {
            let mut merged = Vec::with_capacity(spills.len().div_ceil(MERGE_FAN_IN));
            for batch in spills.chunks(MERGE_FAN_IN) {
                let dest = files.next_spill()?;
                merged.push(merge_spills(job, buffer.mode, batch, &dest, cancelled)?);
                for spill in batch {
                    fs::remove_file(&spill.path)?;
                }
            }
            spills = merged;
        }
        match spills.as_slice() {
            [only] => {
                fs::rename(&only.path, &files.tmp)?;
                only.clone()
            }
            _ => merge_spills(job, buffer.mode, &spills, &files.tmp, cancelled)?,
        }
    };
    // Map output is not fsynced: if the worker crashes, its map outputs are redone anyway.
    fs::rename(&files.tmp, out)?;
    counters.records_out = written.records;
    counters.bytes_out = written.bytes;
    let records_out = written.records;
    debug!(input = %split.path, spills = spill_count, records_out, "map finished");
    let segments = written.segments;
    Ok((MapOutput { segments, counters }, spill_count))
}

/// The lines of a split: those that start in `start..end`, each without its line ending.
struct SplitLines<'a> {
    data: &'a [u8],
    /// Start of the next line; after the last line, the end of the bytes consumed.
    pos: usize,
    end: usize,
}

impl<'a> SplitLines<'a> {
    /// Skips the line that contains byte `start - 1`: it belongs to the previous split.
    fn new(data: &'a [u8], start: usize, end: usize) -> Self {
        let pos = match start {
            0 => 0,
            _ => memchr::memchr(b'\n', &data[start - 1..]).map_or(data.len(), |i| start + i),
        };
        SplitLines { data, pos, end }
    }
}

impl<'a> Iterator for SplitLines<'a> {
    type Item = &'a [u8];

    /// Like `str::lines`: ends at `\n`, strips a `\r` before it, and the last line needs no `\n`.
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.pos >= self.end || self.pos >= self.data.len() {
            return None;
        }
        let rest = &self.data[self.pos..];
        Some(match memchr::memchr(b'\n', rest) {
            Some(i) => {
                self.pos += i + 1;
                rest[..i].strip_suffix(b"\r").unwrap_or(&rest[..i])
            }
            None => {
                self.pos = self.data.len();
                rest
            }
        })
    }
}

/// The combining tables hash with FxHash: keys are short and come from the job's own input, so
/// SipHash's DoS resistance buys nothing here.
type CombineTable = rustc_hash::FxHashMap<Box<str>, ValueBuffer>;

/// Replaces two or more values by the job's combination (kept as they are if it has none).
fn combine_values(job: &dyn MapReduce, key: &str, values: &mut ValueBuffer) {
    if values.len() < 2 {
        return;
    }
    let combined = job.combine(key, &mut values.iter());
    if let Some(combined) = combined {
        values.clear();
        values.push(&combined);
    }
}

/// Whether the job has a combiner, learnt from the first pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Unknown,
    Plain,
    Combining,
}

/// One pair in a plain (combiner-less) partition buffer: key then value at `offset` in the arena.
#[derive(Clone, Copy, Debug)]
struct PlainPair {
    offset: usize,
    key_len: usize,
    value_len: usize,
}

/// The map's in-memory pairs, per partition; the `Emit` that `map` writes to.
struct PairBuffer<'j> {
    job: &'j dyn MapReduce,
    reducers: u32,
    mode: Mode,
    /// Plain mode: keys and values back to back, and each partition's pairs into it.
    arena: Vec<u8>,
    plain: Vec<Vec<PlainPair>>,
    /// Combining mode: per partition, each key's not yet combined values.
    tables: Vec<CombineTable>,
    /// Approximate bytes held, compared against the budget.
    used: usize,
    /// The first error seen inside `emit` (which cannot return one).
    error: Option<MapError>,
}

/// A run file written from the buffer or merged from spills.
#[derive(Clone, Debug)]
struct WrittenRun {
    path: PathBuf,
    segments: Vec<Segment>,
    records: u64,
    bytes: u64,
}

impl<'j> PairBuffer<'j> {
    fn new(job: &'j dyn MapReduce, reducers: u32) -> Self {
        PairBuffer {
            job,
            reducers,
            mode: Mode::Unknown,
            arena: Vec::new(),
            plain: (0..reducers).map(|_| Vec::new()).collect(),
            tables: (0..reducers).map(|_| CombineTable::default()).collect(),
            used: 0,
            error: None,
        }
    }

    /// Sorts every partition by key, combines, writes them as one run file at `path` and
    /// empties the buffer (freeing its memory).
    fn write_run(&mut self, path: &Path) -> Result<WrittenRun> {
        let mut writer = RunWriter::new(File::create(path)?);
        let mut segments = Vec::with_capacity(self.plain.len());
        for (plain, table) in self.plain.iter_mut().zip(&mut self.tables) {
            let offset = writer.bytes();
            let arena = &self.arena;
            let key = |pair: &PlainPair| &arena[pair.offset..pair.offset + pair.key_len];
            // Stable, so equal keys keep emission order and the output is deterministic.
            plain.sort_by(|a, b| key(a).cmp(key(b)));
            for pair in plain.iter() {
                let value_start = pair.offset + pair.key_len;
                writer.write(key(pair), &arena[value_start..value_start + pair.value_len])?;
            }
            let mut keys: Vec<_> = table.iter_mut().collect();
            keys.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (key, values) in keys {
                combine_values(self.job, key, values);
                for value in values.iter() {
                    writer.write(key.as_bytes(), value.as_bytes())?;
                }
            }
            *plain = Vec::new();
            *table = CombineTable::default();
            segments.push(Segment {
                offset,
                len: writer.bytes() - offset,
            });
        }
        self.arena = Vec::new();
        self.used = 0;
        let (records, bytes) = (writer.records(), writer.bytes());
        writer.finish()?;
        debug!(path = %path.display(), records, bytes, "map run written");
        Ok(WrittenRun {
            path: path.to_owned(),
            segments,
            records,
            bytes,
        })
    }
}

impl Emit for PairBuffer<'_> {
    fn emit(&mut self, key: &str, value: &str) {
        let partition = self.job.partition(key, self.reducers);
        if partition >= self.reducers {
            self.error.get_or_insert_with(|| MapError::BadPartition {
                key: key.to_owned(),
                partition,
                reducers: self.reducers,
            });
            return;
        }
        let mut value = std::borrow::Cow::Borrowed(value);
        if self.mode == Mode::Unknown {
            // The documented probe: `None` on the first call means the job has no combiner.
            match self.job.combine(key, &mut std::iter::once(value.as_ref())) {
                Some(combined) => {
                    self.mode = Mode::Combining;
                    value = combined.into();
                }
                None => self.mode = Mode::Plain,
            }
        }
        let partition = partition as usize;
        if self.mode == Mode::Plain {
            self.plain[partition].push(PlainPair {
                offset: self.arena.len(),
                key_len: key.len(),
                value_len: value.len(),
            });
            self.arena.extend_from_slice(key.as_bytes());
            self.arena.extend_from_slice(value.as_bytes());
            self.used += key.len() + value.len() + size_of::<PlainPair>();
            return;
        }
        let table = &mut self.tables[partition];
        if let Some(values) = table.get_mut(key) {
            let before = values.footprint();
            values.push(&value);
            if values.len() % COMBINE_THRESHOLD == 0 {
                combine_values(self.job, key, values);
            }
            self.used = (self.used + values.footprint()).saturating_sub(before);
        } else {
            let mut values = ValueBuffer::default();
            values.push(&value);
            self.used += KEY_OVERHEAD + key.len() + values.footprint();
            table.insert(key.into(), values);
        }
    }
}

/// Merges several spills partition by partition into `dest`, combining each key's values if
/// the job has a combiner (one value per spill: each spill was combined already).
fn merge_spills(
    job: &dyn MapReduce,
    mode: Mode,
    spills: &[WrittenRun],
    dest: &Path,
    cancelled: &AtomicBool,
) -> Result<WrittenRun> {
    let files = spills
        .iter()
        .map(|spill| File::open(&spill.path))
        .collect::<io::Result<Vec<_>>>()?;
    let partitions = spills.first().map_or(0, |spill| spill.segments.len());
    let mut writer = RunWriter::new(File::create(dest)?);
    let mut segments = Vec::with_capacity(partitions);
    let mut values = ValueBuffer::default();
    let mut groups = 0u64;
    for partition in 0..partitions {
        let offset = writer.bytes();
        let mut readers = Vec::with_capacity(files.len());
        for (mut file, spill) in files.iter().zip(spills) {
            let segment = spill.segments[partition];
            file.seek(SeekFrom::Start(segment.offset))?;
            let slice = BufReader::with_capacity(MERGE_BUFFER, file.take(segment.len));
            readers.push(RunReader::new(slice));
        }
        merge_runs(readers, |key, group| {
            groups += 1;
            if groups & CANCEL_CHECK_MASK == 0 && cancelled.load(Ordering::Relaxed) {
                return Err(MapError::Cancelled);
            }
            if mode != Mode::Combining {
                while let Some(value) = group.next_value()? {
                    writer.write(key, value)?;
                }
                return Ok(());
            }
            let corrupt = |_| MapError::CorruptSpill {
                path: spills[0].path.clone(),
            };
            values.clear();
            while let Some(value) = group.next_value()? {
                values.push_utf8(value).map_err(corrupt)?;
            }
            let key = std::str::from_utf8(key).map_err(corrupt)?;
            combine_values(job, key, &mut values);
            for value in values.iter() {
                writer.write(key.as_bytes(), value.as_bytes())?;
            }
            Ok(())
        })?;
        segments.push(Segment {
            offset,
            len: writer.bytes() - offset,
        });
    }
    let (records, bytes) = (writer.records(), writer.bytes());
    writer.finish()?;
    Ok(WrittenRun {
        path: dest.to_owned(),
        segments,
        records,
        bytes,
    })
}

/// The temporary and spill files of one map; dropping it (on success, error or unwinding
/// panic) removes whatever of them is left.
struct OutputFiles {
    /// `<out>.tmp`: the output before its rename.
    tmp: PathBuf,
    /// `<out>.spills/`: created on the first spill.
    spill_dir: PathBuf,
    spills: usize,
}

impl OutputFiles {
    fn new(out: &Path) -> Self {
        let with_suffix = |suffix: &str| {
            let mut name = OsString::from(out.as_os_str());
            name.push(suffix);
            PathBuf::from(name)
        };
        OutputFiles {
            tmp: with_suffix(".tmp"),
            spill_dir: with_suffix(".spills"),
            spills: 0,
        }
    }

    fn next_spill(&mut self) -> Result<PathBuf> {
        if self.spills == 0 {
            fs::create_dir_all(&self.spill_dir)?;
        }
        self.spills += 1;
        Ok(self.spill_dir.join(format!("spill-{}.run", self.spills)))
    }
}

impl Drop for OutputFiles {
    fn drop(&mut self) {
        // Errors are ignored: the files may not exist, and cleanup is best effort.
        let _ = fs::remove_file(&self.tmp);
        if self.spills > 0 {
            let _ = fs::remove_dir_all(&self.spill_dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobs::builtin::{for_each_word, wordcount::WordCount};
    use std::collections::BTreeMap;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    /// Emits `<line number>` (zero padded, so keys sort by line) → the line.
    struct Lines;
    impl MapReduce for Lines {
        fn map(&self, record: &Record<'_>, out: &mut dyn Emit) {
            out.emit(&format!("{:06}", record.line_number), record.line);
        }
        fn reduce(&self, _: &str, _: &mut dyn Iterator<Item = &str>, _: &mut dyn Emit) {}
    }

    /// Word → line number, without a combiner; partitioned by the key's first byte.
    struct WordLines;
    impl MapReduce for WordLines {
        fn map(&self, record: &Record<'_>, out: &mut dyn Emit) {
            if record.line_number == 10_000 {
                panic!("user code failed");
            }
            let line = record.line_number.to_string();
            for_each_word(record.line, |word| out.emit(word, &line));
        }
        fn reduce(&self, _: &str, _: &mut dyn Iterator<Item = &str>, _: &mut dyn Emit) {}
        fn partition(&self, key: &str, reducers: u32) -> u32 {
            u32::from(key.as_bytes().first().copied().unwrap_or(0)) % reducers
        }
    }

    fn split(path: &Path, start: u64, end: u64) -> InputSplit {
        let path = path.to_string_lossy().into_owned();
        InputSplit { path, start, end }
    }

    fn map_all(
        job: &dyn MapReduce,
        input: &Path,
        reducers: u32,
        out: &Path,
        budget: usize,
    ) -> (MapOutput, usize) {
        let len = fs::metadata(input).unwrap().len();
        let never = AtomicBool::new(false);
        map_split(job, &split(input, 0, len), reducers, out, budget, &never).unwrap()
    }

    fn read_partitions(out: &Path, segments: &[Segment]) -> Vec<Vec<(String, String)>> {
        let data = fs::read(out).unwrap();
        let mut end = 0;
        let partitions = segments.iter().map(|s| {
            assert_eq!(s.offset, end, "segments are back to back");
            end = s.offset + s.len;
            RunReader::new(&data[s.offset as usize..end as usize])
                .map(|r| {
                    let (k, v) = r.unwrap();
                    (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap())
                })
                .collect()
        });
        let partitions = partitions.collect();
        assert_eq!(end, data.len() as u64);
        partitions
    }

    /// `lines` lines of 8 words drawn from a vocabulary of 300 (digits spelt as letters).
    fn words_text(lines: usize) -> String {
        let mut seed = 12345u64;
        let mut text = String::new();
        for _ in 0..lines {
            for _ in 0..8 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let n = (seed >> 33) % 300;
                let word: String = n
                    .to_string()
                    .bytes()
                    .map(|d| char::from(d - b'0' + b'a'))
                    .collect();
                text.push_str(&format!("{word}{} ", "q".repeat((n % 3) as usize)));
            }
            text.push('\n');
        }
        text
    }

    #[test]
    fn splits_process_every_line_once_with_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let (input, out) = (dir.path().join("input"), dir.path().join("out"));
        let cases: [&[u8]; 4] = [
            b"first\r\nsecond\n\nfourth line\r\n\r\nno newline at the end",
            b"a\nbb\n\nccc\n",
            b"cr without lf\r",
            b"\n\n\xffnot utf8\nend\r\n",
        ];
        for content in cases {
            fs::write(&input, content).unwrap();
            let text = String::from_utf8_lossy(content);
            let expected: Vec<_> = (1..)
                .zip(text.lines())
                .map(|(i, l)| (format!("{i:06}"), l.to_string()))
                .collect();
            let len = content.len() as u64;
            let mut cut_sets: Vec<Vec<u64>> = (0..=len).map(|c| vec![c]).collect();
            cut_sets.push((1..len).step_by(3).collect());
            cut_sets.push((1..len).collect());
            for cuts in cut_sets {
                let bounds: Vec<u64> = [0].into_iter().chain(cuts.clone()).chain([len]).collect();
                let (mut got, mut counters) = (Vec::new(), Counters::default());
                for w in bounds.windows(2) {
                    let never = AtomicBool::new(false);
                    let output =
                        run_map(&Lines, &split(&input, w[0], w[1]), 3, &out, 1 << 20, &never)
                            .unwrap();
                    counters.add(&output.counters);
                    got.extend(
                        read_partitions(&out, &output.segments)
                            .into_iter()
                            .flatten(),
                    );
                }
                got.sort();
                assert_eq!(got, expected, "cuts {cuts:?} of {content:?}");
                assert_eq!(counters.bytes_in, len, "cuts {cuts:?} of {content:?}");
                assert_eq!(counters.records_in, expected.len() as u64);
            }
        }
    }

    #[test]
    fn every_key_lands_in_its_partition() {
        let dir = tempfile::tempdir().unwrap();
        let (input, out) = (dir.path().join("input"), dir.path().join("out"));
        fs::write(&input, words_text(200)).unwrap();
        for (job, r) in [(&WordCount as &dyn MapReduce, 5), (&WordLines, 7)] {
            let (output, _) = map_all(job, &input, r, &out, 1 << 20);
            let partitions = read_partitions(&out, &output.segments);
            assert_eq!(partitions.len(), r as usize);
            assert!(partitions.iter().filter(|p| !p.is_empty()).count() > 1);
            for (p, records) in partitions.iter().enumerate() {
                for (key, _) in records {
                    assert_eq!(job.partition(key, r), p as u32, "{key}");
                }
            }
        }
    }

    #[test]
    fn spilling_under_a_tiny_budget_gives_identical_output() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("input");
        fs::write(&input, words_text(600)).unwrap();
        for job in [&WordCount as &dyn MapReduce, &WordLines] {
            let (big, tiny) = (dir.path().join("big"), dir.path().join("tiny"));
            let (big_output, big_spills) = map_all(job, &input, 4, &big, 1 << 30);
            let (tiny_output, tiny_spills) = map_all(job, &input, 4, &tiny, 1024);
            assert_eq!(big_spills, 0);
            assert!(tiny_spills > MERGE_FAN_IN, "{tiny_spills} spills");
            assert_eq!(tiny_output, big_output);
            assert!(fs::read(&tiny).unwrap() == fs::read(&big).unwrap());
            let leftovers: Vec<_> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(leftovers.len(), 3, "{leftovers:?}");
            fs::remove_file(&big).unwrap();
            fs::remove_file(&tiny).unwrap();
        }
    }

    #[test]
    fn word_count_is_combined_to_one_record_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let (input, out) = (dir.path().join("input"), dir.path().join("out"));
        let text = format!(
            "{}{}",
            "Straße ÉTÉ 日本, straße été\n".repeat(100),
            words_text(50)
        );
        fs::write(&input, &text).unwrap();
        let mut expected = BTreeMap::new();
        for line in text.lines() {
            for_each_word(line, |w| {
                *expected.entry(w.to_string()).or_insert(0u64) += 1
            });
        }
        assert_eq!(expected["straße"], 200);
        assert_eq!(expected["日本"], 100);
        for budget in [1 << 30, 2048] {
            let (output, _) = map_all(&WordCount, &input, 3, &out, budget);
            let mut got = BTreeMap::new();
            for records in read_partitions(&out, &output.segments) {
                assert!(
                    records.windows(2).all(|w| w[0].0 < w[1].0),
                    "one sorted record per key"
                );
                for (key, count) in records {
                    got.insert(key, count.parse::<u64>().unwrap());
                }
            }
            assert_eq!(got, expected);
            assert_eq!(output.counters.records_out, expected.len() as u64);
        }
    }

    #[test]
    fn combiner_keeps_a_hot_key_in_constant_memory() {
        let dir = tempfile::tempdir().unwrap();
        let (input, out) = (dir.path().join("input"), dir.path().join("out"));
        fs::write(&input, "a A a a a a a a a a\n".repeat(10_000)).unwrap();
        let (output, spills) = map_all(&WordCount, &input, 2, &out, 4096);
        assert_eq!(
            spills, 0,
            "100 000 values of one key must be combined as they arrive"
        );
        let records: Vec<_> = read_partitions(&out, &output.segments).concat();
        assert_eq!(records, [("a".to_string(), "100000".to_string())]);
    }

    #[test]
    fn failures_leave_no_output_behind() {
        let dir = tempfile::tempdir().unwrap();
        let (input, out) = (dir.path().join("input"), dir.path().join("out"));
        fs::write(&input, words_text(20_000)).unwrap();
        let len = fs::metadata(&input).unwrap().len();
        let cancelled = AtomicBool::new(true);
        let result = run_map(
            &WordCount,
            &split(&input, 0, len),
            2,
            &out,
            1024,
            &cancelled,
        );
        assert!(matches!(result, Err(MapError::Cancelled)), "{result:?}");
        // WordLines panics on line 10000, after many spills.
        let never = AtomicBool::new(false);
        let result = catch_unwind(AssertUnwindSafe(|| {
            run_map(&WordLines, &split(&input, 0, len), 2, &out, 4096, &never)
        }));
        assert!(result.is_err());
        assert!(matches!(
            run_map(&Lines, &split(&input, 0, len), 0, &out, 1024, &never),
            Err(MapError::NoReducers)
        ));
        let bad = run_map(
            &Lines,
            &split(&input, len + 1, len + 2),
            1,
            &out,
            1024,
            &never,
        );
        assert!(matches!(bad, Err(MapError::InvalidSplit { .. })), "{bad:?}");
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["input"]);
    }

    #[test]
    fn empty_input_gives_empty_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (input, out) = (dir.path().join("input"), dir.path().join("out"));
        fs::write(&input, "").unwrap();
        let (output, _) = map_all(&WordCount, &input, 3, &out, 1024);
        assert_eq!(output.segments, vec![Segment { offset: 0, len: 0 }; 3]);
        assert_eq!(output.counters, Counters::default());
        assert!(out.exists());
    }
}

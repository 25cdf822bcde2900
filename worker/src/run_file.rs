//! Sorted runs on disk and the k-way merge over them: the one format that map spills, map
//! output files and fetched reduce inputs share.
//!
//! A *sorted run* is a sequence of records
//! `[u32 LE key_len][u32 LE value_len][key bytes][value bytes]`, sorted by key bytewise (equal
//! keys may repeat). A map output file is the concatenation of one sorted run per reduce
//! partition; a `Vec<jobs::rpc::Segment>` indexed by partition says where each one lies.
//!
//! - [`RunWriter`] appends records through a buffer and counts what it wrote.
//! - [`RunReader`] reads records from any [`Read`] (a `BufReader<File>`, or one segment of a
//!   file through [`Read::take`]); a truncated or corrupt run is an [`RunError`], never a panic.
//! - [`merge_runs`] merges N sorted runs with a binary heap and calls back once per distinct
//!   key with a [`GroupValues`] cursor over all its values, holding one record per run in
//!   memory.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::io::{self, BufWriter, Read, Write};

/// Why reading, writing or merging runs failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The underlying reader or writer failed.
    #[error("run I/O failed: {0}")]
    Io(#[from] io::Error),
    /// The run ends in the middle of a record: the file was cut short or is not a run.
    #[error("run truncated in record {record} (after {offset} bytes), in its {part}")]
    Truncated {
        /// 0-based index of the incomplete record.
        record: u64,
        /// Bytes of the run consumed before the incomplete record.
        offset: u64,
        /// Which part of the record is incomplete: "header", "key" or "value".
        part: &'static str,
    },
    /// A key is smaller than the key before it in the same run, so the run is not sorted.
    #[error("run {run} is not sorted: record {record} has a smaller key than the one before it")]
    Unsorted {
        /// Index of the run among the merged readers.
        run: usize,
        /// 0-based index of the out-of-order record in that run.
        record: u64,
    },
    /// A key or value is too long for the 32-bit length fields of the format.
    #[error("record too large: {len} bytes in a key or value (limit {})", u32::MAX)]
    RecordTooLarge {
        /// The offending length.
        len: usize,
    },
}

/// Results of this module.
pub type Result<T, E = RunError> = std::result::Result<T, E>;

/// Bytes of the length header in front of every record.
pub const RECORD_HEADER_LEN: u64 = 8;

/// Keys and values up to this size are read with one exact read into a buffer sized up front;
/// longer ones grow the buffer as data arrives, so a corrupt length cannot allocate gigabytes.
const EXACT_READ_LIMIT: usize = 1 << 20;

/// Writes one sorted run (or several back to back) through a buffer, counting bytes and records.
///
/// The writer does not check the order of keys; its callers sort before writing.
#[derive(Debug)]
pub struct RunWriter<W: Write> {
    /// Batches the many small record writes into large writes.
    inner: BufWriter<W>,
    /// Bytes written so far; map segments are computed from it.
    bytes: u64,
    /// Records written so far, for the task counters.
    records: u64,
}

impl<W: Write> RunWriter<W> {
    /// Wraps `inner` with a 64 KiB buffer.
    pub fn new(inner: W) -> Self {
        RunWriter {
            inner: BufWriter::with_capacity(64 << 10, inner),
            bytes: 0,
            records: 0,
        }
    }

    /// Appends one record.
    ///
    /// # Errors
    /// [`RunError::RecordTooLarge`] if the key or value exceeds `u32::MAX` bytes, or an I/O error.
    pub fn write(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let key_len =
            u32::try_from(key.len()).map_err(|_| RunError::RecordTooLarge { len: key.len() })?;
        let value_len = u32::try_from(value.len())
            .map_err(|_| RunError::RecordTooLarge { len: value.len() })?;
        self.inner.write_all(&key_len.to_le_bytes())?;
        self.inner.write_all(&value_len.to_le_bytes())?;
        self.inner.write_all(key)?;
        self.inner.write_all(value)?;
        self.bytes += RECORD_HEADER_LEN + u64::from(key_len) + u64::from(value_len);
        self.records += 1;
        Ok(())
    }

    /// Bytes written so far (the offset the next record will have).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Flushes the buffer and returns the inner writer (e.g. to `sync_all` a file).
    ///
    /// # Errors
    /// The I/O error of the final write.
    pub fn finish(self) -> Result<W> {
        self.inner
            .into_inner()
            .map_err(|e| RunError::Io(e.into_error()))
    }
}

/// Reads the records of a sorted run from any [`Read`]; give it a buffered reader.
#[derive(Debug)]
pub struct RunReader<R: Read> {
    /// The run's bytes.
    inner: R,
    /// Records read so far, for error messages.
    records: u64,
    /// Bytes read so far, for error messages and counters.
    bytes: u64,
}

impl<R: Read> RunReader<R> {
    /// Reads a run from `inner` (for one segment of a file: `BufReader::new(file.take(len))`
    /// after seeking to the segment's offset).
    pub fn new(inner: R) -> Self {
        RunReader {
            inner,
            records: 0,
            bytes: 0,
        }
    }

    /// Reads the next record into `key` and `value` (both cleared first, capacity reused).
    /// Returns `false` at the clean end of the run.
    ///
    /// # Errors
    /// [`RunError::Truncated`] if the run ends inside a record, or an I/O error.
    pub fn read_into(&mut self, key: &mut Vec<u8>, value: &mut Vec<u8>) -> Result<bool> {
        key.clear();
        value.clear();
        let mut header = [0u8; RECORD_HEADER_LEN as usize];
        match read_full(&mut self.inner, &mut header)? {
            0 => return Ok(false),
            n if n < header.len() => return Err(self.truncated("header")),
            _ => {}
        }
        let [k0, k1, k2, k3, v0, v1, v2, v3] = header;
        let key_len = u32::from_le_bytes([k0, k1, k2, k3]);
        let value_len = u32::from_le_bytes([v0, v1, v2, v3]);
        if !read_exact_into(&mut self.inner, key, key_len)? {
            return Err(self.truncated("key"));
        }
        if !read_exact_into(&mut self.inner, value, value_len)? {
            return Err(self.truncated("value"));
        }
        self.records += 1;
        self.bytes += RECORD_HEADER_LEN + u64::from(key_len) + u64::from(value_len);
        Ok(true)
    }

    /// Records read so far.
    pub fn records_read(&self) -> u64 {
        self.records
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes
    }

    fn truncated(&self, part: &'static str) -> RunError {
        RunError::Truncated {
            record: self.records,
            offset: self.bytes,
            part,
        }
    }
}

/// Yields owned `(key, value)` records; prefer [`RunReader::read_into`] in hot loops.
impl<R: Read> Iterator for RunReader<R> {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        let (mut key, mut value) = (Vec::new(), Vec::new());
        match self.read_into(&mut key, &mut value) {
            Ok(true) => Some(Ok((key, value))),
            Ok(false) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

/// Fills `buf` as far as the reader allows; returns how many bytes were read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Reads exactly `len` bytes into the empty `buf`; returns `false` if the reader ends first.
fn read_exact_into(reader: &mut impl Read, buf: &mut Vec<u8>, len: u32) -> io::Result<bool> {
    let len = len as usize;
    if len <= EXACT_READ_LIMIT {
        buf.resize(len, 0);
        Ok(read_full(reader, buf)? == len)
    } else {
        let read = reader.take(len as u64).read_to_end(buf)?;
        Ok(read == len)
    }
}

/// One run's place in the merge heap: its current key. Ordered so that the max-heap pops the
/// smallest key first, and among equal keys the lowest run index (values come run by run).
#[derive(Debug, PartialEq, Eq)]
struct HeapEntry {
    key: Vec<u8>,
    run: usize,
}

impl Ord for HeapEntry {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .key
            .cmp(&self.key)
            .then_with(|| other.run.cmp(&self.run))
    }
}

impl PartialOrd for HeapEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One input of the merge: its reader, the value of its current record (the key lives in the
/// heap) and a spare key buffer to read the next key into.
#[derive(Debug)]
struct Cursor<R: Read> {
    reader: RunReader<R>,
    value: Vec<u8>,
    spare_key: Vec<u8>,
}

/// The mutable state of a merge: the heap and the cursors.
#[derive(Debug)]
struct MergeState<R: Read> {
    heap: BinaryHeap<HeapEntry>,
    cursors: Vec<Cursor<R>>,
}

impl<R: Read> MergeState<R> {
    /// Reads the next record of `run` and pushes it onto the heap, checking that its key is not
    /// smaller than `previous`, the key the run had before.
    fn advance(&mut self, run: usize, previous: Option<&[u8]>) -> Result<()> {
        let cursor = &mut self.cursors[run];
        let mut key = std::mem::take(&mut cursor.spare_key);
        if !cursor.reader.read_into(&mut key, &mut cursor.value)? {
            cursor.spare_key = key;
            return Ok(());
        }
        if previous.is_some_and(|previous| key.as_slice() < previous) {
            return Err(RunError::Unsorted {
                run,
                record: cursor.reader.records_read() - 1,
            });
        }
        self.heap.push(HeapEntry { key, run });
        Ok(())
    }
}

/// A cursor over the values of one key, from all runs, in run order. It is a lending iterator:
/// each value borrows a buffer that the next call reuses, which keeps the merge's memory at one
/// record per run however many values a key has.
#[derive(Debug)]
pub struct GroupValues<'m, R: Read> {
    key: &'m [u8],
    state: &'m mut MergeState<R>,
    /// The run whose value was yielded last; it is advanced on the next call.
    yielded: Option<usize>,
}

impl<R: Read> GroupValues<'_, R> {
    /// The next value of the key, or `None` once all runs have moved past it.
    ///
    /// # Errors
    /// A [`RunError`] if reading the next record of a run fails or finds it unsorted.
    pub fn next_value(&mut self) -> Result<Option<&[u8]>> {
        if let Some(run) = self.yielded.take() {
            self.state.advance(run, Some(self.key))?;
        }
        if self.state.heap.peek().is_none_or(|top| top.key != self.key) {
            return Ok(None);
        }
        // The peek above saw an entry, so the pop returns it.
        let Some(HeapEntry { key, run }) = self.state.heap.pop() else {
            return Ok(None);
        };
        let cursor = &mut self.state.cursors[run];
        cursor.spare_key = key;
        self.yielded = Some(run);
        Ok(Some(&cursor.value))
    }
}

/// Merges sorted runs, calling `on_group(key, values)` once per distinct key in ascending
/// bytewise order; `values` yields every value of that key from every run. Values the callback
/// leaves unread are skipped. Memory: one record and one read buffer per run.
///
/// # Errors
/// The first error of a reader (truncated, unsorted, I/O) or of `on_group`; the merge stops.
pub fn merge_runs<R, E, F>(readers: Vec<RunReader<R>>, mut on_group: F) -> Result<(), E>
where
    R: Read,
    E: From<RunError>,
    F: FnMut(&[u8], &mut GroupValues<'_, R>) -> Result<(), E>,
{
    let mut state = MergeState {
        heap: BinaryHeap::with_capacity(readers.len()),
        cursors: readers
            .into_iter()
            .map(|reader| Cursor {
                reader,
                value: Vec::new(),
                spare_key: Vec::new(),
            })
            .collect(),
    };
    for run in 0..state.cursors.len() {
        state.advance(run, None)?;
    }
    let mut group_key = Vec::new();
    while let Some(top) = state.heap.peek() {
        group_key.clear();
        group_key.extend_from_slice(&top.key);
        let mut values = GroupValues {
            key: &group_key,
            state: &mut state,
            yielded: None,
        };
        on_group(&group_key, &mut values)?;
        while values.next_value()?.is_some() {}
    }
    Ok(())
}

/// The values of one key collected as UTF-8 text, back to back in one string: no allocation
/// per value, and both buffers are reused across keys. The map side buffers values here
/// before combining them; the reduce side collects one group here for `reduce`.
#[derive(Debug, Default)]
pub struct ValueBuffer {
    /// The values, concatenated.
    buf: String,
    /// End offset of each value in `buf`.
    ends: Vec<usize>,
}

impl ValueBuffer {
    /// Appends a value.
    pub fn push(&mut self, value: &str) {
        self.buf.push_str(value);
        self.ends.push(self.buf.len());
    }

    /// Appends a value read from a run, which must be UTF-8.
    ///
    /// # Errors
    /// The UTF-8 error, leaving the buffer unchanged.
    pub fn push_utf8(&mut self, value: &[u8]) -> Result<(), std::str::Utf8Error> {
        self.push(std::str::from_utf8(value)?);
        Ok(())
    }

    /// Removes all values, keeping the allocations.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
    }

    /// The number of values.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The values in the order they were pushed.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let value = &self.buf[start..end];
            start = end;
            value
        })
    }

    /// Bytes allocated, for memory accounting.
    pub fn footprint(&self) -> usize {
        self.buf.capacity() + self.ends.capacity() * size_of::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor as IoCursor;

    fn run_bytes(records: &[(&str, &str)]) -> Vec<u8> {
        let mut writer = RunWriter::new(Vec::new());
        for (k, v) in records {
            writer.write(k.as_bytes(), v.as_bytes()).unwrap();
        }
        writer.finish().unwrap()
    }

    fn merged(runs: Vec<Vec<u8>>) -> Result<Vec<(String, Vec<String>)>> {
        let readers = runs
            .into_iter()
            .map(|bytes| RunReader::new(IoCursor::new(bytes)))
            .collect();
        let mut groups = Vec::new();
        merge_runs(readers, |key, values| {
            let mut all = Vec::new();
            while let Some(v) = values.next_value()? {
                all.push(String::from_utf8(v.to_vec()).unwrap());
            }
            groups.push((String::from_utf8(key.to_vec()).unwrap(), all));
            Ok::<_, RunError>(())
        })?;
        Ok(groups)
    }

    #[test]
    fn write_read_round_trip() {
        let records = [("", "empty key"), ("a", ""), ("a", "again"), ("日本", "ß")];
        let mut writer = RunWriter::new(Vec::new());
        for (k, v) in records {
            writer.write(k.as_bytes(), v.as_bytes()).unwrap();
        }
        let (bytes, count) = (writer.bytes(), writer.records());
        let data = writer.finish().unwrap();
        assert_eq!(bytes, data.len() as u64);
        assert_eq!(count, 4);

        let mut reader = RunReader::new(IoCursor::new(data.clone()));
        let (mut key, mut value) = (Vec::new(), Vec::new());
        for (k, v) in records {
            assert!(reader.read_into(&mut key, &mut value).unwrap());
            assert_eq!(
                (key.as_slice(), value.as_slice()),
                (k.as_bytes(), v.as_bytes())
            );
        }
        assert!(!reader.read_into(&mut key, &mut value).unwrap());
        assert_eq!(reader.bytes_read(), bytes);

        let owned: Vec<_> = RunReader::new(IoCursor::new(data))
            .map(Result::unwrap)
            .collect();
        assert_eq!(owned.len(), 4);
        assert_eq!(
            owned[3],
            ("日本".as_bytes().to_vec(), "ß".as_bytes().to_vec())
        );
    }

    #[test]
    fn merge_of_three_runs_groups_sorted_distinct_keys_with_all_values() {
        let runs = vec![
            run_bytes(&[
                ("apple", "1"),
                ("cherry", "2"),
                ("cherry", "3"),
                ("zebra", "4"),
            ]),
            run_bytes(&[("banana", "5"), ("cherry", "6")]),
            run_bytes(&[
                ("apple", "7"),
                ("banana", "8"),
                ("date", "9"),
                ("zebra", "10"),
            ]),
            run_bytes(&[]),
        ];
        let groups = merged(runs).unwrap();
        let expected = [
            ("apple", vec!["1", "7"]),
            ("banana", vec!["5", "8"]),
            ("cherry", vec!["2", "3", "6"]),
            ("date", vec!["9"]),
            ("zebra", vec!["4", "10"]),
        ];
        assert_eq!(groups.len(), expected.len());
        for ((key, values), (want_key, want_values)) in groups.iter().zip(expected) {
            assert_eq!(key, want_key);
            assert_eq!(values, &want_values);
        }
    }

    #[test]
    fn merge_skips_values_the_callback_does_not_read() {
        let runs = vec![
            run_bytes(&[("a", "1"), ("a", "2"), ("b", "3")]),
            run_bytes(&[("a", "4"), ("c", "5")]),
        ];
        let mut keys = Vec::new();
        merge_runs(
            runs.into_iter()
                .map(|b| RunReader::new(IoCursor::new(b)))
                .collect(),
            |key, values| {
                let first = values.next_value()?.map(<[u8]>::to_vec);
                keys.push((key.to_vec(), first));
                Ok::<_, RunError>(())
            },
        )
        .unwrap();
        let keys: Vec<_> = keys.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(keys, [b"a".as_slice(), b"b", b"c"]);
    }

    #[test]
    fn truncated_run_is_an_error() {
        let data = run_bytes(&[("key", "value"), ("other", "value")]);
        for cut in [3, 8, 10, data.len() - 1] {
            let mut reader = RunReader::new(IoCursor::new(data[..cut].to_vec()));
            let result: Result<Vec<_>> = reader.by_ref().collect();
            assert!(
                matches!(result, Err(RunError::Truncated { .. })),
                "cut at {cut}: {result:?}"
            );
            let err = merged(vec![data[..cut].to_vec()]).unwrap_err();
            assert!(err.to_string().contains("truncated"), "{err}");
        }
    }

    #[test]
    fn corrupt_length_is_an_error_not_a_huge_allocation() {
        let mut data = run_bytes(&[("k", "v")]);
        data[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let result: Result<Vec<_>> = RunReader::new(IoCursor::new(data)).collect();
        assert!(matches!(
            result,
            Err(RunError::Truncated { part: "value", .. })
        ));
    }

    #[test]
    fn unsorted_run_is_an_error() {
        let runs = vec![run_bytes(&[("b", "1"), ("a", "2")])];
        assert!(matches!(
            merged(runs),
            Err(RunError::Unsorted { run: 0, record: 1 })
        ));
    }
}

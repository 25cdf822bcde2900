//! The MapReduce job-author API.
//!
//! A job implements [`MapReduce`]: `map` is called once per input line and emits key/value
//! pairs; the runtime partitions them, combines them (if the job has a combiner), sorts them by
//! key and hands every key with all its values to `reduce`. Keys and values are UTF-8 text, and
//! the output files hold `key<TAB>value` lines, so neither should contain a newline (and keys no
//! tab).
//!
//! ```
//! use jobs::{Emit, MapReduce, Record};
//!
//! #[derive(Default)]
//! struct LineLengths;
//!
//! impl MapReduce for LineLengths {
//!     fn map(&self, record: &Record<'_>, out: &mut dyn Emit) {
//!         out.emit(record.path, &record.line.len().to_string());
//!     }
//!     fn reduce(&self, key: &str, values: &mut dyn Iterator<Item = &str>, out: &mut dyn Emit) {
//!         let longest = values.filter_map(|v| v.parse::<u64>().ok()).max().unwrap_or(0);
//!         out.emit(key, &longest.to_string());
//!     }
//! }
//! jobs::register_mapreduce!("line-lengths", LineLengths);
//! ```

/// One line of input, as `map` sees it.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// The input file, as expanded from the job's input globs.
    pub path: &'a str,
    /// The 1-based number of the line within its file.
    pub line_number: u64,
    /// The line without its line ending; invalid UTF-8 has become U+FFFD.
    pub line: &'a str,
}

/// Where `map`, `combine` and `reduce` put their key/value pairs.
pub trait Emit {
    /// Emits one pair.
    fn emit(&mut self, key: &str, value: &str);
}

impl<F: FnMut(&str, &str)> Emit for F {
    fn emit(&mut self, key: &str, value: &str) {
        self(key, value)
    }
}

/// A MapReduce job. Implementations must be deterministic for the output to be exact under
/// re-execution, and may panic: a panic fails the task attempt with the panic's message.
pub trait MapReduce: Send + Sync + 'static {
    /// Maps one input record to any number of intermediate pairs.
    fn map(&self, record: &Record<'_>, out: &mut dyn Emit);

    /// Reduces all values of one key (in no particular order) to output pairs.
    fn reduce(&self, key: &str, values: &mut dyn Iterator<Item = &str>, out: &mut dyn Emit);

    /// Combines some values of one key into one on the map side, to shrink the shuffle. Return
    /// `None` (the default) if the job has no combiner; then this is called once per map task
    /// and never again. A combiner must be associative and commutative, and its output must be
    /// a valid input to `reduce` as well as to `combine`.
    fn combine(&self, key: &str, values: &mut dyn Iterator<Item = &str>) -> Option<String> {
        let _ = (key, values);
        None
    }

    /// Chooses the reduce partition of a key, in `0..reducers`. The default hashes the key.
    fn partition(&self, key: &str, reducers: u32) -> u32 {
        default_partition(key, reducers)
    }
}

/// The default partitioner: FNV-1a of the key's bytes modulo `reducers`. It is stable across
/// processes and versions, which a shuffle needs (std's `DefaultHasher` is not).
pub fn default_partition(key: &str, reducers: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(reducers.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_partition_is_stable_and_in_range() {
        assert_eq!(
            default_partition("", 7),
            (0xcbf2_9ce4_8422_2325u64 % 7) as u32
        );
        // FNV-1a of "a" is 0xaf63dc4c8601ec8c: the partition of a key never changes.
        assert_eq!(
            default_partition("a", 1000),
            (0xaf63_dc4c_8601_ec8c_u64 % 1000) as u32
        );
        for r in 1..20 {
            for key in ["a", "b", "straße", "日本"] {
                assert!(default_partition(key, r) < r);
            }
        }
    }

    #[test]
    fn default_partition_spreads_keys() {
        let mut counts = [0u32; 8];
        for i in 0..8000 {
            counts[default_partition(&format!("word{i}"), 8) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }
}

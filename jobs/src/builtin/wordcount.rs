//! `wordcount`: value = how often the word occurs.

use crate::mapreduce::{Emit, MapReduce, Record};

/// Counts words (see [`for_each_word`](super::for_each_word)).
#[derive(Debug, Default)]
pub struct WordCount;

/// Adds up decimal counts, ignoring (there should be none) values that do not parse.
fn sum(values: &mut dyn Iterator<Item = &str>) -> u64 {
    values.filter_map(|v| v.parse::<u64>().ok()).sum()
}

impl MapReduce for WordCount {
    fn map(&self, record: &Record<'_>, out: &mut dyn Emit) {
        super::for_each_word(record.line, |word| out.emit(word, "1"));
    }

    fn reduce(&self, key: &str, values: &mut dyn Iterator<Item = &str>, out: &mut dyn Emit) {
        out.emit(key, &sum(values).to_string());
    }

    fn combine(&self, _key: &str, values: &mut dyn Iterator<Item = &str>) -> Option<String> {
        Some(sum(values).to_string())
    }
}

crate::register_mapreduce!("wordcount", WordCount);

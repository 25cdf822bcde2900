//! `index`: value = `<n> <file1>,<file2>,...`, the sorted distinct input files holding the word.

use std::collections::BTreeSet;

use crate::mapreduce::{Emit, MapReduce, Record};

/// Separates file names inside intermediate values (a path cannot contain NUL).
const SEP: char = '\0';

/// An inverted index from words to files.
#[derive(Debug, Default)]
pub struct Index;

fn distinct_files<'a>(values: &mut dyn Iterator<Item = &'a str>) -> BTreeSet<&'a str> {
    values
        .flat_map(|v| v.split(SEP))
        .filter(|f| !f.is_empty())
        .collect()
}

impl MapReduce for Index {
    fn map(&self, record: &Record<'_>, out: &mut dyn Emit) {
        super::for_each_word(record.line, |word| out.emit(word, record.path));
    }

    fn reduce(&self, key: &str, values: &mut dyn Iterator<Item = &str>, out: &mut dyn Emit) {
        let files = distinct_files(values);
        let list: Vec<&str> = files.into_iter().collect();
        out.emit(key, &format!("{} {}", list.len(), list.join(",")));
    }

    fn combine(&self, _key: &str, values: &mut dyn Iterator<Item = &str>) -> Option<String> {
        let files: Vec<&str> = distinct_files(values).into_iter().collect();
        Some(files.join(&SEP.to_string()))
    }
}

crate::register_mapreduce!("index", Index);

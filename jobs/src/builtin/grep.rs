//! `grep`: params `{"pattern": "<regex>"}`; key = `<path>:<line number>`, value = the line.

use regex::Regex;
use serde_json::Value;

use crate::mapreduce::{Emit, MapReduce, Record};

/// Lines matching a regular expression.
#[derive(Debug)]
pub struct Grep {
    pattern: Regex,
}

impl Grep {
    /// Builds the job from `{"pattern": "..."}`.
    ///
    /// # Errors
    /// A message if the pattern is missing or not a valid regular expression.
    pub fn from_params(params: &Value) -> Result<Grep, String> {
        let pattern = params
            .get("pattern")
            .and_then(Value::as_str)
            .ok_or("grep needs params {\"pattern\": \"<regex>\"}")?;
        let pattern = Regex::new(pattern).map_err(|e| format!("bad pattern: {e}"))?;
        Ok(Grep { pattern })
    }
}

impl MapReduce for Grep {
    fn map(&self, record: &Record<'_>, out: &mut dyn Emit) {
        if self.pattern.is_match(record.line) {
            out.emit(
                &format!("{}:{}", record.path, record.line_number),
                record.line,
            );
        }
    }

    fn reduce(&self, key: &str, values: &mut dyn Iterator<Item = &str>, out: &mut dyn Emit) {
        for value in values {
            out.emit(key, value);
        }
    }
}

crate::register_mapreduce!("grep", Grep, Grep::from_params);

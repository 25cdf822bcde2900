//! Turning an accepted spec into tasks: input globs are expanded and checked, the output
//! directory is checked and created, and files are cut into splits of about [`SPLIT_SIZE`]
//! (the map side moves each cut to a line boundary).

use std::path::{Path, PathBuf};

use jobs::rpc::InputSplit;
use jobs::spec::KindSpec;
use jobs::{JobSpec, TaskId};

use crate::error::{Error, Result};
use crate::meta::command::TaskPlan;

/// The target size of one map task's input.
pub const SPLIT_SIZE: u64 = 64 << 20;
/// The most map tasks one job may have.
pub const MAX_MAPS: usize = 100_000;

fn rejected(reason: String) -> Error {
    Error::Rejected { reason }
}

/// Makes a spec's paths absolute (against `base`), expands its input globs into files, checks
/// that the output directory is free and creates it, and plans the tasks with ids from
/// `next_id`. Blocking: it reads the file system.
///
/// # Errors
/// [`Error::Rejected`] with a message for the submitter: an input that matches no file or
/// cannot be read, an output directory that exists and is not empty, too many splits.
pub fn plan(
    mut spec: JobSpec,
    base: &Path,
    mut next_id: impl FnMut() -> u64,
) -> Result<(JobSpec, Vec<TaskPlan>)> {
    let KindSpec::MapReduce(mr) = &mut spec.kind else {
        return Ok((
            spec,
            vec![TaskPlan::Run {
                id: TaskId(next_id()),
            }],
        ));
    };
    let mut files: Vec<(String, u64)> = Vec::new();
    for pattern in &mr.input {
        let absolute = base.join(pattern);
        let text = absolute.to_string_lossy().into_owned();
        let matches = glob::glob(&text)
            .map_err(|e| rejected(format!("input `{pattern}` is not a valid glob: {e}")))?;
        let mut found = false;
        for entry in matches {
            let path = entry.map_err(|e| {
                rejected(format!(
                    "input `{pattern}`: cannot read {}",
                    e.path().display()
                ))
            })?;
            let meta = std::fs::metadata(&path)
                .map_err(|e| rejected(format!("input `{}` cannot be read: {e}", path.display())))?;
            if !meta.is_file() {
                continue;
            }
            std::fs::File::open(&path)
                .map_err(|e| rejected(format!("input `{}` cannot be read: {e}", path.display())))?;
            found = true;
            files.push((path.to_string_lossy().into_owned(), meta.len()));
        }
        if !found {
            return Err(rejected(format!(
                "input `{pattern}` matches no readable file"
            )));
        }
    }
    files.sort();
    files.dedup();
    let output = normalize(&base.join(&mr.output));
    check_output(&output)?;
    mr.input = files.iter().map(|(path, _)| path.clone()).collect();
    mr.output = output.to_string_lossy().into_owned();

    let mut tasks = Vec::new();
    for (path, len) in &files {
        let mut start = 0;
        while start < *len {
            let end = (start + SPLIT_SIZE).min(*len);
            tasks.push(TaskPlan::Map {
                id: TaskId(next_id()),
                split: InputSplit {
                    path: path.clone(),
                    start,
                    end,
                },
            });
            start = end;
        }
        if tasks.len() > MAX_MAPS {
            return Err(rejected(format!(
                "the input needs more than {MAX_MAPS} map tasks"
            )));
        }
    }
    for partition in 0..mr.reducers {
        tasks.push(TaskPlan::Reduce {
            id: TaskId(next_id()),
            partition,
        });
    }
    std::fs::create_dir_all(&output).map_err(|e| {
        rejected(format!(
            "cannot create output directory `{}`: {e}",
            output.display()
        ))
    })?;
    Ok((spec, tasks))
}

/// Removes `.` components and trailing slashes so outputs compare and print cleanly.
fn normalize(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

fn check_output(output: &Path) -> Result<()> {
    match std::fs::read_dir(output) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(rejected(format!(
                    "output directory `{}` already exists and is not empty",
                    output.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Err(rejected(format!(
            "output `{}` exists and is not a directory",
            output.display()
        ))),
        Err(e) => Err(rejected(format!(
            "output directory `{}` cannot be used: {e}",
            output.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(input: &str, output: &str, reducers: u32) -> JobSpec {
        JobSpec::from_json(&format!(
            r#"{{"kind":"mapreduce","job":"wordcount","input":[{input}],"output":"{output}","reducers":{reducers}}}"#
        ))
        .unwrap()
    }

    fn reason(result: Result<(JobSpec, Vec<TaskPlan>)>) -> String {
        match result {
            Err(Error::Rejected { reason }) => reason,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn expands_globs_and_plans_maps_and_reduces() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "hello\n").unwrap();
        std::fs::write(dir.path().join("b.txt"), "").unwrap();
        std::fs::create_dir(dir.path().join("sub.txt")).unwrap();
        let mut n = 0;
        let (spec, tasks) = plan(spec(r#""*.txt""#, "out", 3), dir.path(), || {
            n += 1;
            n
        })
        .unwrap();
        let KindSpec::MapReduce(mr) = &spec.kind else {
            panic!()
        };
        assert_eq!(mr.input.len(), 2, "directories are skipped: {:?}", mr.input);
        assert!(Path::new(&mr.output).is_absolute() && Path::new(&mr.output).is_dir());
        let maps = tasks
            .iter()
            .filter(|t| matches!(t, TaskPlan::Map { .. }))
            .count();
        assert_eq!(maps, 1, "an empty file needs no map task");
        assert_eq!(tasks.len(), 4);
        let ids: std::collections::HashSet<_> = tasks.iter().map(TaskPlan::id).collect();
        assert_eq!(ids.len(), 4);
    }

    #[test]
    fn rejects_missing_inputs_and_used_outputs() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            reason(plan(spec(r#""nope/*.txt""#, "out", 1), dir.path(), || 1))
                .contains("matches no readable file")
        );
        std::fs::write(dir.path().join("a.txt"), "x\n").unwrap();
        std::fs::create_dir(dir.path().join("used")).unwrap();
        std::fs::write(dir.path().join("used/part-r-00000"), "x").unwrap();
        assert!(
            reason(plan(spec(r#""a.txt""#, "used", 1), dir.path(), || 1)).contains("not empty")
        );
        assert!(
            reason(plan(spec(r#""a.txt""#, "a.txt", 1), dir.path(), || 1))
                .contains("not a directory")
        );
    }

    #[test]
    fn large_files_are_cut_into_splits() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("big")).unwrap();
        file.set_len(2 * SPLIT_SIZE + 5).unwrap();
        let (_, tasks) = plan(spec(r#""big""#, "out", 1), dir.path(), || 1).unwrap();
        let splits: Vec<(u64, u64)> = tasks
            .iter()
            .filter_map(|t| match t {
                TaskPlan::Map { split, .. } => Some((split.start, split.end)),
                _ => None,
            })
            .collect();
        assert_eq!(
            splits,
            vec![
                (0, SPLIT_SIZE),
                (SPLIT_SIZE, 2 * SPLIT_SIZE),
                (2 * SPLIT_SIZE, 2 * SPLIT_SIZE + 5)
            ]
        );
    }
}

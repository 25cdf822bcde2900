//! The worker's registry of finished map outputs, which it serves to reducers (the shuffle).
//!
//! A finished map attempt registers its output file and segments; `fetch_partition` requests
//! then read chunks of one partition's segment through [`ShuffleStore::read_chunk`]. Requests
//! name an [`AttemptId`], never a path, so nothing a caller sends reaches the file system
//! directly. Each file is memory-mapped on its first read and the mapping is cached; reads
//! copy at most [`FETCH_CHUNK`] bytes without holding the store's lock. When a job ends,
//! [`ShuffleStore::release_job`] forgets and deletes its outputs.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use jobs::rpc::{AttemptId, RemoteError, Segment, FETCH_CHUNK};
use jobs::JobId;
use memmap2::Mmap;
use tracing::{debug, warn};

/// Why a chunk could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ShuffleError {
    /// No output is registered for this attempt (never, or released since).
    #[error("no map output registered for attempt {attempt}")]
    UnknownAttempt {
        /// The attempt asked for.
        attempt: AttemptId,
    },
    /// The output has no such partition.
    #[error("map output of {attempt} has {partitions} partitions, not partition {partition}")]
    UnknownPartition {
        /// The attempt.
        attempt: AttemptId,
        /// The partition asked for.
        partition: u32,
        /// How many it has.
        partitions: usize,
    },
    /// The offset lies beyond the end of the partition's segment.
    #[error("offset {offset} is past the end of partition {partition} of {attempt} ({len} bytes)")]
    OffsetPastEnd {
        /// The attempt.
        attempt: AttemptId,
        /// The partition.
        partition: u32,
        /// The offset asked for.
        offset: u64,
        /// The segment's length.
        len: u64,
    },
    /// The file is shorter than its registered segments: it was truncated or replaced.
    #[error("map output of {attempt} is {file_len} bytes, too short for partition {partition}")]
    SegmentOutOfBounds {
        /// The attempt.
        attempt: AttemptId,
        /// The partition.
        partition: u32,
        /// The file's length.
        file_len: u64,
    },
    /// The output file could not be opened or mapped.
    #[error("cannot read map output {path} of {attempt}: {source}")]
    Unreadable {
        /// The attempt.
        attempt: AttemptId,
        /// Its file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// How a reducer sees a failed fetch: anything that makes the output unusable is `NotFound`
/// (the map must run again); a bad offset is the reducer's own `Invalid` request.
impl From<ShuffleError> for RemoteError {
    fn from(error: ShuffleError) -> Self {
        match error {
            ShuffleError::OffsetPastEnd { .. } => RemoteError::Invalid {
                reason: error.to_string(),
            },
            ShuffleError::Unreadable { ref source, .. }
                if source.kind() != io::ErrorKind::NotFound =>
            {
                RemoteError::Unavailable {
                    reason: error.to_string(),
                }
            }
            _ => RemoteError::NotFound {
                what: error.to_string(),
            },
        }
    }
}

/// One registered map output.
#[derive(Debug)]
struct StoredOutput {
    path: PathBuf,
    segments: Vec<Segment>,
    /// Mapped on the first read; shared with reads in progress, so a release never pulls the
    /// memory from under a copy.
    mmap: Option<Arc<Mmap>>,
}

/// The map outputs this worker serves; share it as `Arc<ShuffleStore>` (it is `Send + Sync`).
#[derive(Debug, Default)]
pub struct ShuffleStore {
    outputs: Mutex<HashMap<AttemptId, StoredOutput>>,
}

impl ShuffleStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Locks the table. A panic while it was held cannot have left it half-updated (every
    /// critical section is a single insert, remove or field update), so poisoning is ignored.
    fn outputs(&self) -> MutexGuard<'_, HashMap<AttemptId, StoredOutput>> {
        self.outputs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Serves the output of `attempt`: the file at `path`, with one segment per partition. The
    /// file must not change afterwards. Registering an attempt again replaces its entry.
    pub fn register(&self, attempt: AttemptId, path: PathBuf, segments: Vec<Segment>) {
        debug!(%attempt, path = %path.display(), "map output registered");
        let output = StoredOutput {
            path,
            segments,
            mmap: None,
        };
        if let Some(old) = self.outputs().insert(attempt, output) {
            warn!(%attempt, old = %old.path.display(), "map output registered twice; replaced");
        }
    }

    /// Copies up to `min(max_len, FETCH_CHUNK)` bytes of partition `partition` of the output of
    /// `attempt`, from `offset` within the partition's segment, and returns them with the
    /// segment's length. The chunk is shorter only at the end of the segment (and empty when
    /// `offset` equals its length).
    ///
    /// # Errors
    /// An unknown attempt or partition, an offset past the segment's end, or an output file
    /// that cannot be read or is too short.
    pub fn read_chunk(
        &self,
        attempt: AttemptId,
        partition: u32,
        offset: u64,
        max_len: u64,
    ) -> Result<(Vec<u8>, u64), ShuffleError> {
        let (mmap, segment) =
            {
                let mut outputs = self.outputs();
                let output = outputs
                    .get_mut(&attempt)
                    .ok_or(ShuffleError::UnknownAttempt { attempt })?;
                let segment = *output.segments.get(partition as usize).ok_or(
                    ShuffleError::UnknownPartition {
                        attempt,
                        partition,
                        partitions: output.segments.len(),
                    },
                )?;
                if offset > segment.len {
                    return Err(ShuffleError::OffsetPastEnd {
                        attempt,
                        partition,
                        offset,
                        len: segment.len,
                    });
                }
                if segment.len == 0 {
                    return Ok((Vec::new(), 0));
                }
                let mmap = match &output.mmap {
                    Some(mmap) => Arc::clone(mmap),
                    None => {
                        let mmap = Arc::new(map_file(attempt, &output.path)?);
                        output.mmap = Some(Arc::clone(&mmap));
                        mmap
                    }
                };
                (mmap, segment)
            };
        let file_len = mmap.len() as u64;
        let out_of_bounds = ShuffleError::SegmentOutOfBounds {
            attempt,
            partition,
            file_len,
        };
        match segment.offset.checked_add(segment.len) {
            Some(end) if end <= file_len => {}
            _ => return Err(out_of_bounds),
        }
        // All below fit in usize: they are bounded by the mapping's length.
        let len = (segment.len - offset).min(max_len).min(FETCH_CHUNK) as usize;
        let start = (segment.offset + offset) as usize;
        Ok((mmap[start..start + len].to_vec(), segment.len))
    }

    /// Forgets every output of `job_id` and deletes their files; returns how many there were.
    /// Reads in progress finish from their mapping.
    pub fn release_job(&self, job_id: JobId) -> usize {
        let released: Vec<StoredOutput> = {
            let mut outputs = self.outputs();
            let attempts: Vec<AttemptId> = (outputs.keys())
                .filter(|attempt| attempt.job_id == job_id)
                .copied()
                .collect();
            (attempts.iter())
                .filter_map(|attempt| outputs.remove(attempt))
                .collect()
        };
        for output in &released {
            match fs::remove_file(&output.path) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => {
                    warn!(path = %output.path.display(), %error, "cannot delete map output");
                }
                _ => {}
            }
        }
        debug!(%job_id, outputs = released.len(), "map outputs released");
        released.len()
    }
}

fn map_file(attempt: AttemptId, path: &std::path::Path) -> Result<Mmap, ShuffleError> {
    let unreadable = |source| ShuffleError::Unreadable {
        attempt,
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(unreadable)?;
    // SAFETY: map outputs are written by this worker, renamed into place before they are
    // registered and never modified afterwards; they are only deleted, which leaves an existing
    // mapping valid.
    unsafe { Mmap::map(&file) }.map_err(unreadable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobs::TaskId;

    fn attempt(job: u64, task: u64) -> AttemptId {
        let (job_id, task_id) = (JobId(job), TaskId(task));
        AttemptId {
            job_id,
            task_id,
            attempt: 1,
        }
    }

    /// Writes a file of three segments (10 000, 0 and FETCH_CHUNK + 17 bytes) and registers it.
    fn stored(store: &ShuffleStore, dir: &std::path::Path, attempt: AttemptId) -> Vec<Vec<u8>> {
        let parts: Vec<Vec<u8>> = [10_000, 0, FETCH_CHUNK as usize + 17]
            .iter()
            .enumerate()
            .map(|(p, &len)| (0..len).map(|i| (i * 31 + p * 7) as u8).collect())
            .collect();
        let (mut data, mut segments) = (Vec::new(), Vec::new());
        for part in &parts {
            let offset = data.len() as u64;
            data.extend_from_slice(part);
            let len = part.len() as u64;
            segments.push(Segment { offset, len });
        }
        let path = dir.join(format!("map-{}-{}", attempt.job_id, attempt.task_id));
        fs::write(&path, data).unwrap();
        store.register(attempt, path, segments);
        parts
    }

    #[test]
    fn chunked_reads_reassemble_each_segment() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShuffleStore::new();
        let a = attempt(1, 2);
        let parts = stored(&store, dir.path(), a);
        for (p, part) in parts.iter().enumerate() {
            for max_len in [1000, 4096, u64::MAX] {
                let mut got = Vec::new();
                loop {
                    let (chunk, total) = store
                        .read_chunk(a, p as u32, got.len() as u64, max_len)
                        .unwrap();
                    assert_eq!(total, part.len() as u64);
                    assert!(chunk.len() as u64 <= max_len.min(FETCH_CHUNK));
                    if chunk.is_empty() {
                        break;
                    }
                    got.extend_from_slice(&chunk);
                }
                assert!(got == *part, "partition {p}, max_len {max_len}");
            }
        }
        let (chunk, _) = store.read_chunk(a, 2, 0, u64::MAX).unwrap();
        assert_eq!(chunk.len() as u64, FETCH_CHUNK);
    }

    #[test]
    fn bad_requests_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShuffleStore::new();
        let a = attempt(1, 2);
        stored(&store, dir.path(), a);
        let unknown = store.read_chunk(attempt(1, 3), 0, 0, 10);
        assert!(matches!(unknown, Err(ShuffleError::UnknownAttempt { .. })));
        let partition = store.read_chunk(a, 3, 0, 10);
        assert!(matches!(
            partition,
            Err(ShuffleError::UnknownPartition { partitions: 3, .. })
        ));
        let past_end = store.read_chunk(a, 0, 10_001, 10);
        assert!(matches!(
            past_end,
            Err(ShuffleError::OffsetPastEnd { len: 10_000, .. })
        ));
        assert!(matches!(
            store.read_chunk(a, 1, 1, 10),
            Err(ShuffleError::OffsetPastEnd { .. })
        ));
        assert_eq!(
            store.read_chunk(a, 0, 10_000, 10).unwrap(),
            (Vec::new(), 10_000)
        );

        let short = attempt(9, 9);
        let path = dir.path().join("short");
        fs::write(&path, b"abc").unwrap();
        store.register(short, path, vec![Segment { offset: 2, len: 5 }]);
        let result = store.read_chunk(short, 0, 0, 10);
        assert!(matches!(
            result,
            Err(ShuffleError::SegmentOutOfBounds { file_len: 3, .. })
        ));
        let gone = attempt(9, 10);
        store.register(
            gone,
            dir.path().join("gone"),
            vec![Segment { offset: 0, len: 5 }],
        );
        let result = store.read_chunk(gone, 0, 0, 10);
        assert!(matches!(result, Err(ShuffleError::Unreadable { .. })));
        let remote = RemoteError::from(result.unwrap_err());
        assert!(matches!(remote, RemoteError::NotFound { .. }), "{remote:?}");
    }

    #[test]
    fn release_job_deletes_only_that_jobs_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShuffleStore::new();
        let (a, b, other) = (attempt(1, 1), attempt(1, 2), attempt(2, 1));
        for id in [a, b, other] {
            stored(&store, dir.path(), id);
        }
        store.read_chunk(a, 0, 0, 10).unwrap();
        assert_eq!(store.release_job(JobId(1)), 2);
        assert!(matches!(
            store.read_chunk(a, 0, 0, 10),
            Err(ShuffleError::UnknownAttempt { .. })
        ));
        assert!(!dir.path().join("map-1-1").exists());
        assert!(!dir.path().join("map-1-2").exists());
        assert!(dir.path().join("map-2-1").exists());
        assert_eq!(store.read_chunk(other, 0, 0, 3).unwrap().0.len(), 3);
        assert_eq!(store.release_job(JobId(1)), 0);
    }

    #[test]
    fn store_is_send_and_sync() {
        fn shared<T: Send + Sync + 'static>() {}
        shared::<ShuffleStore>();
    }
}

//! The Raft log and vote of one master, on disk.
//!
//! # Files (under the store's directory)
//! - `log.bin`: append-only records `[u32 len][u32 crc32][bincode of Entry]` (little endian; the
//!   crc covers the bincode payload). A batch of entries is written with one write and one fsync
//!   before openraft is told that it is durable: this is where group commit makes durability
//!   cheap.
//! - `vote.bin` and `purged.bin`: bincode of the vote and of the last purged log id, replaced
//!   atomically (temp file, fsync, rename, fsync of the directory).
//!
//! The committed log id is kept in memory only (openraft makes persisting it optional): after a
//! restart, entries after the last snapshot are applied again once the leader commits.
//!
//! # Recovery
//! Opening scans `log.bin` and stops at the first torn or corrupt record (short read, zero
//! length, crc mismatch); that tail was never acknowledged, so it is cut off. Purging only records
//! the purged id until the dead prefix of the file is large, then rewrites the live entries to a
//! new file; entries at or below the purged id that are still in the file are skipped on open.
//!
//! An in-memory index maps each live log index to its record, and the most recent entries are
//! cached, so the reads that follow an append (applying, replicating) never touch the disk.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, LogState, RaftLogReader, StorageError, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::{debug, info, warn};

use super::type_config::{LogId, TypeConfig};

const LOG_FILE: &str = "log.bin";
const VOTE_FILE: &str = "vote.bin";
const PURGED_FILE: &str = "purged.bin";
/// `[u32 len][u32 crc32]`.
const HEADER_LEN: u64 = 8;
/// A larger length field is a torn or corrupt header, not a record.
const MAX_RECORD_LEN: u32 = 256 << 20;
/// The recent-entry cache keeps at most this many bytes (encoded size) ...
const CACHE_MAX_BYTES: u64 = 16 << 20;
/// ... and at most this many entries.
const CACHE_MAX_ENTRIES: usize = 8192;
/// The file is rewritten once its purged prefix is at least this large (and at least as large
/// as the live part).
const COMPACT_MIN_BYTES: u64 = 8 << 20;

/// Where one live entry's record lies in `log.bin`.
#[derive(Clone, Copy, Debug)]
struct Position {
    log_id: LogId,
    offset: u64,
    /// The whole record, header included.
    len: u64,
}

/// The store's state, behind one mutex shared by the store and its readers.
struct Inner {
    dir: PathBuf,
    file: File,
    /// The end of the last valid record: the next append goes here.
    end: u64,
    /// The live entries (above the purged id) by index.
    positions: BTreeMap<u64, Position>,
    /// Recent entries by index, with their encoded size.
    cache: BTreeMap<u64, (Entry<TypeConfig>, u64)>,
    cache_bytes: u64,
    vote: Option<Vote<u64>>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    compact_min_bytes: u64,
}

/// The Raft log storage of one master: openraft's `RaftLogStorage` over an append-only file.
///
/// Cheap to clone: clones share the same files and index (a clone is the log reader).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

impl LogStore {
    /// Opens (or creates) the log under `dir`, dropping a torn tail.
    ///
    /// # Errors
    /// An I/O error, or `InvalidData` if a record with a valid checksum cannot be decoded or the
    /// indexes in the file go backwards.
    pub fn open(dir: &Path) -> io::Result<LogStore> {
        LogStore::open_with(dir, COMPACT_MIN_BYTES)
    }

    /// [`LogStore::open`] with a different compaction threshold (tests use a tiny one).
    pub(crate) fn open_with(dir: &Path, compact_min_bytes: u64) -> io::Result<LogStore> {
        let inner = Inner::open(dir, compact_min_bytes)?;
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    /// True if nothing was ever stored: no vote, no entry, nothing purged (a fresh node).
    ///
    /// # Errors
    /// Only if a thread panicked while holding the store's lock.
    pub fn is_pristine(&self) -> io::Result<bool> {
        let inner = lock(&self.inner)?;
        Ok(inner.vote.is_none() && inner.positions.is_empty() && inner.purged.is_none())
    }

    /// Appends `entries` with one write and one fsync and returns once they are on disk: what
    /// [`RaftLogStorage::append`] does before it tells openraft.
    ///
    /// # Errors
    /// An I/O error, or `InvalidInput` if an entry does not come after the last one (openraft
    /// truncates before it overwrites).
    pub async fn append_durably(&self, entries: Vec<Entry<TypeConfig>>) -> io::Result<()> {
        self.blocking(move |inner| inner.append(entries)).await
    }

    /// Runs `f` on the store in the blocking pool, so that file I/O and fsync do not stall the
    /// async runtime. The closure runs to completion even if the caller stops waiting, so the
    /// file and the index never disagree.
    async fn blocking<T, F>(&self, f: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Inner) -> io::Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&mut *lock(&inner)?))
            .await
            .map_err(io::Error::other)?
    }
}

fn lock(inner: &Mutex<Inner>) -> io::Result<std::sync::MutexGuard<'_, Inner>> {
    inner
        .lock()
        .map_err(|_| io::Error::other("the log store lock is poisoned"))
}

fn storage_error(subject: ErrorSubject<u64>, verb: ErrorVerb, e: io::Error) -> StorageError<u64> {
    StorageError::from_io_error(subject, verb, e)
}

fn invalid_data(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

impl Inner {
    fn open(dir: &Path, compact_min_bytes: u64) -> io::Result<Inner> {
        fs::create_dir_all(dir)?;
        remove_temp_files(dir)?;
        let vote = read_small::<Vote<u64>>(dir, VOTE_FILE)?;
        let purged = read_small::<LogId>(dir, PURGED_FILE)?;
        let path = dir.join(LOG_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        // Make the (possibly new) directory and file names durable before anything counts on them.
        sync_dir(dir)?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        let file_len = file.metadata()?.len();
        let (positions, end) = scan(&mut file, file_len, purged)?;
        if end < file_len {
            warn!(path = %path.display(), valid_bytes = end, dropped_bytes = file_len - end,
                "dropping a torn or corrupt tail of the raft log");
            file.set_len(end)?;
            file.sync_all()?;
        }
        info!(dir = %dir.display(), entries = positions.len(), ?purged, ?vote, "raft log opened");
        Ok(Inner {
            dir: dir.to_path_buf(),
            file,
            end,
            positions,
            cache: BTreeMap::new(),
            cache_bytes: 0,
            vote,
            committed: None,
            purged,
            compact_min_bytes,
        })
    }

    fn log_state(&self) -> LogState<TypeConfig> {
        LogState {
            last_purged_log_id: self.purged,
            last_log_id: last_log_id(&self.positions).or(self.purged),
        }
    }

    fn append(&mut self, mut entries: Vec<Entry<TypeConfig>>) -> io::Result<()> {
        // Entries a snapshot already covers are dropped: openraft never appends them, the
        // conformance suite does.
        let purged = self.purged.map(|p| p.index);
        entries.retain(|e| purged.is_none_or(|p| e.log_id.index > p));
        if entries.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        let mut added = Vec::with_capacity(entries.len());
        let mut last = last_log_id(&self.positions).map(|l| l.index);
        let mut offset = self.end;
        for entry in &entries {
            let index = entry.log_id.index;
            if last.is_some_and(|last| index <= last) {
                let msg = format!("append of index {index} after {last:?} without a truncate");
                return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
            }
            last = Some(index);
            let payload = bincode::serialize(entry).map_err(io::Error::other)?;
            let len = u32::try_from(payload.len())
                .ok()
                .filter(|len| *len <= MAX_RECORD_LEN)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "entry too large"))?;
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            buf.extend_from_slice(&payload);
            let len = HEADER_LEN + u64::from(len);
            added.push(Position {
                log_id: entry.log_id,
                offset,
                len,
            });
            offset += len;
        }
        let written = self
            .file
            .seek(SeekFrom::Start(self.end))
            .and_then(|_| self.file.write_all(&buf))
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Cut what may have been written, so that a later append starts on a record
            // boundary; if even that fails, the next open drops the torn tail.
            if let Err(cut) = self.file.set_len(self.end) {
                warn!(error = %cut, "could not cut a failed append");
            }
            return Err(e);
        }
        debug!(
            entries = added.len(),
            bytes = buf.len(),
            "raft log appended"
        );
        self.end = offset;
        for (entry, position) in entries.into_iter().zip(&added) {
            self.cache_bytes += position.len;
            self.cache
                .insert(position.log_id.index, (entry, position.len));
        }
        self.positions
            .extend(added.into_iter().map(|p| (p.log_id.index, p)));
        while self.cache_bytes > CACHE_MAX_BYTES || self.cache.len() > CACHE_MAX_ENTRIES {
            match self.cache.pop_first() {
                Some((_, (_, len))) => self.cache_bytes -= len,
                None => break,
            }
        }
        Ok(())
    }

    /// The live entries with indexes in `range`.
    fn entries(&mut self, range: (Bound<u64>, Bound<u64>)) -> io::Result<Vec<Entry<TypeConfig>>> {
        let wanted: Vec<Position> = self.positions.range(range).map(|(_, p)| *p).collect();
        let mut out = Vec::with_capacity(wanted.len());
        for position in wanted {
            match self.cache.get(&position.log_id.index) {
                Some((entry, _)) => out.push(entry.clone()),
                None => out.push(self.read_at(position)?),
            }
        }
        Ok(out)
    }

    fn read_at(&mut self, position: Position) -> io::Result<Entry<TypeConfig>> {
        self.file.seek(SeekFrom::Start(position.offset))?;
        let mut record = vec![0; position.len as usize];
        self.file.read_exact(&mut record)?;
        let (header, payload) = record.split_at(HEADER_LEN as usize);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if crc32fast::hash(payload) != crc {
            let msg = format!("checksum mismatch in log entry {}", position.log_id);
            return Err(invalid_data(msg));
        }
        bincode::deserialize(payload).map_err(|e| invalid_data(e.to_string()))
    }

    /// Removes the entries with index `>= index`.
    fn truncate(&mut self, index: u64) -> io::Result<()> {
        let Some(cut) = self.positions.range(index..).next().map(|(_, p)| p.offset) else {
            return Ok(());
        };
        self.file.set_len(cut)?;
        self.file.sync_all()?;
        self.end = cut;
        self.positions.split_off(&index);
        for (_, (_, len)) in self.cache.split_off(&index) {
            self.cache_bytes -= len;
        }
        debug!(index, "raft log truncated");
        Ok(())
    }

    /// Removes the entries with index `<= log_id.index`.
    fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        if self.purged.is_some_and(|p| p.index >= log_id.index) {
            return Ok(());
        }
        // The purged id goes first: once it is durable, the entries below it are dead.
        write_atomic(&self.dir, PURGED_FILE, &encode(&Some(log_id))?, true)?;
        self.purged = Some(log_id);
        let first_live = log_id.index.saturating_add(1);
        self.positions = self.positions.split_off(&first_live);
        let live_cache = self.cache.split_off(&first_live);
        for (_, (_, len)) in std::mem::replace(&mut self.cache, live_cache) {
            self.cache_bytes -= len;
        }
        let dead = self
            .positions
            .values()
            .next()
            .map_or(self.end, |p| p.offset);
        debug!(%log_id, dead_bytes = dead, "raft log purged");
        if dead >= self.compact_min_bytes && dead >= self.end - dead {
            self.compact(dead)?;
        }
        Ok(())
    }

    /// Rewrites the live part of the file (from `dead` on) to a new file that replaces it.
    fn compact(&mut self, dead: u64) -> io::Result<()> {
        let tmp_path = self.dir.join(format!("{LOG_FILE}.tmp"));
        let mut tmp = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp_path)?;
        self.file.seek(SeekFrom::Start(dead))?;
        let live = self.end - dead;
        let copied = io::copy(&mut (&self.file).take(live), &mut tmp)?;
        if copied != live {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "log file shorter than its index",
            ));
        }
        tmp.sync_all()?;
        fs::rename(&tmp_path, self.dir.join(LOG_FILE))?;
        sync_dir(&self.dir)?;
        self.file = tmp;
        self.end = live;
        for position in self.positions.values_mut() {
            position.offset -= dead;
        }
        info!(dir = %self.dir.display(), dropped_bytes = dead, kept_bytes = live,
            "raft log file compacted");
        Ok(())
    }
}

/// Reads the records of `file` from the start; returns the live positions and the end of the
/// last valid record.
fn scan(
    file: &mut File,
    file_len: u64,
    purged: Option<LogId>,
) -> io::Result<(BTreeMap<u64, Position>, u64)> {
    file.seek(SeekFrom::Start(0))?;
    let mut reader = BufReader::with_capacity(1 << 20, &*file);
    let mut positions = BTreeMap::new();
    let mut offset = 0;
    while let Some(payload) = read_record(&mut reader, offset, file_len)? {
        let entry: Entry<TypeConfig> = bincode::deserialize(&payload)
            .map_err(|e| invalid_data(format!("undecodable log entry at offset {offset}: {e}")))?;
        let log_id = entry.log_id;
        let len = HEADER_LEN + payload.len() as u64;
        let dead = positions.is_empty() && purged.is_some_and(|p| log_id.index <= p.index);
        if !dead {
            let last = last_log_id(&positions).or(purged);
            if last.is_some_and(|last| log_id.index <= last.index) {
                let msg = format!("raft log goes back from {last:?} to {log_id}");
                return Err(invalid_data(msg));
            }
            let position = Position {
                log_id,
                offset,
                len,
            };
            positions.insert(log_id.index, position);
        }
        offset += len;
    }
    Ok((positions, offset))
}

fn last_log_id(positions: &BTreeMap<u64, Position>) -> Option<LogId> {
    positions.values().next_back().map(|p| p.log_id)
}

/// The payload of the record at `offset`, or `None` if it is torn or corrupt.
fn read_record(reader: &mut impl Read, offset: u64, file_len: u64) -> io::Result<Option<Vec<u8>>> {
    if offset + HEADER_LEN > file_len {
        return Ok(None);
    }
    let mut header = [0u8; HEADER_LEN as usize];
    reader.read_exact(&mut header)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    // A zero length is a zero-filled tail (the crc of nothing is 0), never a record.
    if len == 0 || len > MAX_RECORD_LEN || offset + HEADER_LEN + u64::from(len) > file_len {
        return Ok(None);
    }
    let mut payload = vec![0; len as usize];
    reader.read_exact(&mut payload)?;
    Ok((crc32fast::hash(&payload) == crc).then_some(payload))
}

fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    bincode::serialize(value).map_err(io::Error::other)
}

/// Reads a small file holding bincode of `Option<T>`; a missing file is `None`.
fn read_small<T: DeserializeOwned>(dir: &Path, name: &str) -> io::Result<Option<T>> {
    match fs::read(dir.join(name)) {
        Ok(bytes) => bincode::deserialize(&bytes)
            .map_err(|e| invalid_data(format!("{}: {e}", dir.join(name).display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes `*.tmp` files left by a crash in the middle of [`write_atomic`] or a compaction.
pub(crate) fn remove_temp_files(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "tmp") {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Replaces `dir/name` with `bytes` atomically: a reader sees the old or the new content, never
/// a mix. With `durable`, the new content is also on disk when this returns.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8], durable: bool) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    if durable {
        file.sync_all()?;
    }
    drop(file);
    fs::rename(&tmp, dir.join(name))?;
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Makes renames and creations in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        let range = (range.start_bound().cloned(), range.end_bound().cloned());
        self.blocking(move |inner| inner.entries(range))
            .await
            .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Read, e))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let inner =
            lock(&self.inner).map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        Ok(inner.log_state())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        let vote = *vote;
        self.blocking(move |inner| {
            write_atomic(&inner.dir, VOTE_FILE, &encode(&Some(vote))?, true)?;
            inner.vote = Some(vote);
            Ok(())
        })
        .await
        .map_err(|e| storage_error(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        let inner =
            lock(&self.inner).map_err(|e| storage_error(ErrorSubject::Vote, ErrorVerb::Read, e))?;
        Ok(inner.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError<u64>> {
        // Kept in memory only: openraft treats it as optional, and persisting it would cost a
        // file write (and a hop to the blocking pool) per commit. After a restart the entries
        // after the last snapshot are applied once the leader commits again.
        lock(&self.inner)
            .map_err(|e| storage_error(ErrorSubject::Store, ErrorVerb::Write, e))?
            .committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError<u64>> {
        let inner = lock(&self.inner)
            .map_err(|e| storage_error(ErrorSubject::Store, ErrorVerb::Read, e))?;
        Ok(inner.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        match self.append_durably(entries.into_iter().collect()).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                Err(storage_error(ErrorSubject::Logs, ErrorVerb::Write, e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError<u64>> {
        self.blocking(move |inner| inner.truncate(log_id.index))
            .await
            .map_err(|e| storage_error(ErrorSubject::Log(log_id), ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError<u64>> {
        self.blocking(move |inner| inner.purge(log_id))
            .await
            .map_err(|e| storage_error(ErrorSubject::Log(log_id), ErrorVerb::Delete, e))
    }
}

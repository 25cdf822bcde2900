//! The metadata state machine: openraft's `RaftStateMachine` over [`MetaState`], with snapshots
//! on disk.
//!
//! The state lives in memory behind an `Arc<RwLock<MetaState>>` that the rest of the master
//! reads; only [`RaftStateMachine::apply`] and snapshot installation write it. It is made durable
//! by the Raft log plus snapshots: a snapshot is `dir/snapshot-<term>-<index>.bin` holding bincode
//! of `(last_applied, membership, MetaState)`, written to a temp file, fsynced and renamed. On
//! start the latest snapshot is loaded and openraft re-applies the log after it.
//!
//! The snapshot builder is a frozen copy of the store taken between two applies, so the snapshot
//! is consistent with its `last_applied` while applying goes on.

use std::fs;
use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StoredMembership,
};
use tracing::{debug, info};

use super::command::Response;
use super::log_store::{remove_temp_files, sync_dir, write_atomic};
use super::state::MetaState;
use super::type_config::{LogId, TypeConfig};

type Membership = StoredMembership<u64, BasicNode>;
/// What identifies a snapshot file: the `(term, index)` of its last applied log id.
type SnapshotKey = Option<(u64, u64)>;

/// The masters' state machine: applies committed commands to [`MetaState`] and keeps snapshots
/// under a directory.
pub struct StateMachineStore {
    /// Where the snapshots are.
    dir: PathBuf,
    /// The last entry applied: openraft resumes applying after it.
    last_applied: Option<LogId>,
    /// The last membership applied, which a snapshot must carry.
    last_membership: Membership,
    /// The application state, shared with readers in the rest of the master.
    state: Arc<RwLock<MetaState>>,
}

impl StateMachineStore {
    /// Opens the snapshot directory `dir` (creating it) and loads the latest snapshot, if any.
    ///
    /// # Errors
    /// An I/O error, or `InvalidData` if the latest snapshot cannot be decoded.
    pub fn open(dir: &Path) -> io::Result<StateMachineStore> {
        fs::create_dir_all(dir)?;
        remove_temp_files(dir)?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        let mut store = StateMachineStore {
            dir: dir.to_path_buf(),
            last_applied: None,
            last_membership: Membership::default(),
            state: Arc::new(RwLock::new(MetaState::default())),
        };
        if let Some((key, path)) = latest_snapshot(dir)? {
            let bytes = fs::read(&path)?;
            let (last_applied, membership, state): (Option<LogId>, Membership, MetaState) =
                bincode::deserialize(&bytes).map_err(|e| invalid_data(&path, e))?;
            info!(path = %path.display(), ?last_applied, jobs = state.jobs.len(),
                "metadata snapshot loaded");
            store.last_applied = last_applied;
            store.last_membership = membership;
            store.state = Arc::new(RwLock::new(state));
            remove_older_snapshots(dir, key)?;
        }
        Ok(store)
    }

    /// The applied state, shared: readers take the read lock; only this store writes it.
    pub fn state(&self) -> Arc<RwLock<MetaState>> {
        Arc::clone(&self.state)
    }

    /// The last log id applied (or loaded from a snapshot).
    pub fn last_applied(&self) -> Option<LogId> {
        self.last_applied
    }

    fn meta(&self) -> SnapshotMeta<u64, BasicNode> {
        snapshot_meta(self.last_applied, self.last_membership.clone())
    }
}

fn snapshot_meta(
    last_applied: Option<LogId>,
    membership: Membership,
) -> SnapshotMeta<u64, BasicNode> {
    let snapshot_id = match key_of(last_applied) {
        Some((term, index)) => format!("{term}-{index}"),
        None => "none".to_string(),
    };
    SnapshotMeta {
        last_log_id: last_applied,
        last_membership: membership,
        snapshot_id,
    }
}

fn key_of(log_id: Option<LogId>) -> SnapshotKey {
    log_id.map(|id| (id.leader_id.term, id.index))
}

fn file_name(key: SnapshotKey) -> String {
    match key {
        Some((term, index)) => format!("snapshot-{term}-{index}.bin"),
        None => "snapshot-none.bin".to_string(),
    }
}

fn parse_file_name(name: &str) -> Option<SnapshotKey> {
    let stem = name.strip_prefix("snapshot-")?.strip_suffix(".bin")?;
    if stem == "none" {
        return Some(None);
    }
    let (term, index) = stem.split_once('-')?;
    Some(Some((term.parse().ok()?, index.parse().ok()?)))
}

/// The snapshot files in `dir`, with their keys.
fn snapshot_files(dir: &Path) -> io::Result<Vec<(SnapshotKey, PathBuf)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(key) = entry.file_name().to_str().and_then(parse_file_name) {
            files.push((key, entry.path()));
        }
    }
    Ok(files)
}

fn latest_snapshot(dir: &Path) -> io::Result<Option<(SnapshotKey, PathBuf)>> {
    Ok(snapshot_files(dir)?.into_iter().max_by_key(|(key, _)| *key))
}

/// Removes the snapshots older than `key` (a newer one written concurrently stays).
fn remove_older_snapshots(dir: &Path, key: SnapshotKey) -> io::Result<()> {
    for (old, path) in snapshot_files(dir)? {
        if old < key {
            match fs::remove_file(&path) {
                // Another writer (a build racing an install) removed it first.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                result => result?,
            }
            debug!(path = %path.display(), "old metadata snapshot removed");
        }
    }
    sync_dir(dir)
}

/// Writes a snapshot file durably and removes the older ones.
fn write_snapshot(dir: &Path, key: SnapshotKey, bytes: &[u8]) -> io::Result<()> {
    write_atomic(dir, &file_name(key), bytes, true)?;
    remove_older_snapshots(dir, key)?;
    info!(dir = %dir.display(), ?key, bytes = bytes.len(), "metadata snapshot written");
    Ok(())
}

/// Reads the latest snapshot file; its meta is decoded from the file's head.
fn read_latest(dir: &Path) -> io::Result<Option<Snapshot<TypeConfig>>> {
    // A newer snapshot may replace the latest between listing and reading: list again.
    let mut attempts = 0;
    let (path, bytes) = loop {
        let Some((_, path)) = latest_snapshot(dir)? else {
            return Ok(None);
        };
        match fs::read(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 3 => attempts += 1,
            result => break (path, result?),
        }
    };
    // bincode 1 reads a tuple's leading fields and ignores the rest (trailing bytes allowed).
    let (last_applied, membership): (Option<LogId>, Membership) =
        bincode::deserialize(&bytes).map_err(|e| invalid_data(&path, e))?;
    Ok(Some(Snapshot {
        meta: snapshot_meta(last_applied, membership),
        snapshot: Box::new(Cursor::new(bytes)),
    }))
}

fn invalid_data(path: &Path, e: impl std::fmt::Display) -> io::Error {
    let msg = format!("{}: {e}", path.display());
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn poisoned() -> io::Error {
    io::Error::other("the metadata state lock is poisoned")
}

fn sm_error(verb: ErrorVerb, e: io::Error) -> StorageError<u64> {
    StorageError::from_io_error(ErrorSubject::StateMachine, verb, e)
}

fn snapshot_error(verb: ErrorVerb, e: io::Error) -> StorageError<u64> {
    StorageError::from_io_error(ErrorSubject::Snapshot(None), verb, e)
}

async fn blocking<T, F>(f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let bytes = {
            let state = self.state.read().map_err(|_| poisoned());
            let state = state.map_err(|e| snapshot_error(ErrorVerb::Read, e))?;
            bincode::serialize(&(&self.last_applied, &self.last_membership, &*state))
                .map_err(|e| snapshot_error(ErrorVerb::Write, io::Error::other(e)))?
        };
        let (dir, key) = (self.dir.clone(), key_of(self.last_applied));
        let bytes = blocking(move || write_snapshot(&dir, key, &bytes).map(|()| bytes))
            .await
            .map_err(|e| snapshot_error(ErrorVerb::Write, e))?;
        Ok(Snapshot {
            meta: self.meta(),
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError<u64>> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<u64>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut state = self
            .state
            .write()
            .map_err(|_| sm_error(ErrorVerb::Write, poisoned()))?;
        let mut responses = Vec::new();
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Response::default(),
                EntryPayload::Normal(request) => Response {
                    results: request.commands.iter().map(|c| state.apply(c)).collect(),
                },
                EntryPayload::Membership(membership) => {
                    self.last_membership = Membership::new(Some(entry.log_id), membership);
                    Response::default()
                }
            };
            responses.push(response);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // The lock is poisoned only if `MetaState::apply` panicked, which stops the Raft node; a
        // snapshot taken from the copy would then never be used.
        let state = self
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        StateMachineStore {
            dir: self.dir.clone(),
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
            state: Arc::new(RwLock::new(state)),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let bytes = snapshot.into_inner();
        let decoded: Result<(Option<LogId>, Membership, MetaState), _> =
            bincode::deserialize(&bytes);
        let (last_applied, membership, state) =
            decoded.map_err(|e| snapshot_error(ErrorVerb::Read, invalid_data(&self.dir, e)))?;
        if last_applied != meta.last_log_id || membership != meta.last_membership {
            let e = invalid_data(&self.dir, format!("snapshot data does not match {meta}"));
            return Err(snapshot_error(ErrorVerb::Read, e));
        }
        let (dir, key) = (self.dir.clone(), key_of(last_applied));
        blocking(move || write_snapshot(&dir, key, &bytes))
            .await
            .map_err(|e| snapshot_error(ErrorVerb::Write, e))?;
        *self
            .state
            .write()
            .map_err(|_| sm_error(ErrorVerb::Write, poisoned()))? = state;
        self.last_applied = last_applied;
        self.last_membership = membership;
        info!(?last_applied, "metadata snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let dir = self.dir.clone();
        blocking(move || read_latest(&dir))
            .await
            .map_err(|e| snapshot_error(ErrorVerb::Read, e))
    }
}

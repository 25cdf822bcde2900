//! Tests of the metadata group: openraft's storage conformance suite against [`LogStore`] and
//! [`StateMachineStore`], crash recovery of the log, and [`Meta`] end to end (restart, snapshot,
//! batching).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jobs::{JobId, JobSpec, TaskId, WorkerId};
use openraft::storage::RaftLogStorage;
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, RaftLogReader, StorageError, Vote,
};
use tempfile::TempDir;

use super::command::{Command, CommandResult, Request, TaskPlan};
use super::log_store::LogStore;
use super::node::{Meta, MetaError};
use super::state_machine::StateMachineStore;
use super::type_config::{LogId, TypeConfig};

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

/// Builds the stores under test: the log exactly as long as its records, or preallocated (what
/// a master uses).
struct Builder {
    preallocated: bool,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<u64>> {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("log");
        let log = if self.preallocated {
            LogStore::open_preallocated(&path)
        } else {
            LogStore::open(&path)
        };
        let sm = StateMachineStore::open(&dir.path().join("snapshots")).unwrap();
        Ok((dir, log.unwrap(), sm))
    }
}

#[test]
fn storage_conformance() {
    Suite::test_all(Builder {
        preallocated: false,
    })
    .unwrap();
}

#[test]
fn preallocated_storage_conformance() {
    Suite::test_all(Builder { preallocated: true }).unwrap();
}

pub(super) fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

pub(super) fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
    let commands = vec![Command::ReserveIds { until_ms: index }];
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Request { commands }),
    }
}

fn entries(range: std::ops::RangeInclusive<u64>) -> Vec<Entry<TypeConfig>> {
    range.map(|i| entry(1, i)).collect()
}

async fn indexes(log: &mut LogStore) -> Vec<u64> {
    let all = log.try_get_log_entries(..).await.unwrap();
    all.iter().map(|e| e.log_id.index).collect()
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    let mut file = OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(bytes).unwrap();
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

#[tokio::test]
async fn torn_tail_is_dropped_on_reopen() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("log.bin");
    let log = LogStore::open(dir.path()).unwrap();
    log.append_durably(entries(0..=4)).await.unwrap();
    let whole = file_len(&path);
    drop(log);

    // Garbage after the last record: a length that runs past the end of the file.
    append_bytes(&path, &[200, 1, 0, 0, 9, 9, 9, 9, 1, 2, 3]);
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&mut log).await, vec![0, 1, 2, 3, 4]);
    assert_eq!(file_len(&path), whole, "the torn tail is cut off");
    log.append_durably(entries(5..=5)).await.unwrap();
    drop(log);

    // A record cut in the middle (a crash during the write).
    let cut = file_len(&path) - 3;
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&mut log).await, vec![0, 1, 2, 3, 4]);
    drop(log);

    // A zero-filled tail (size updated, data never written), then a flipped payload byte.
    append_bytes(&path, &[0; 64]);
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&mut log).await.len(), 5);
    drop(log);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(
        indexes(&mut log).await,
        vec![0, 1, 2, 3],
        "crc mismatch ends the log"
    );
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(1, 3)));
}

#[tokio::test]
async fn entries_vote_and_purge_survive_reopen() {
    let dir = TempDir::new().unwrap();
    let mut log = LogStore::open(dir.path()).unwrap();
    assert!(log.is_pristine().unwrap());
    let vote = Vote::new_committed(3, 1);
    log.save_vote(&vote).await.unwrap();
    log.append_durably(entries(0..=9)).await.unwrap();
    log.purge(log_id(1, 3)).await.unwrap();
    log.truncate(log_id(1, 8)).await.unwrap();
    log.save_committed(Some(log_id(1, 6))).await.unwrap();
    drop(log);

    let mut log = LogStore::open(dir.path()).unwrap();
    assert!(!log.is_pristine().unwrap());
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    assert_eq!(
        log.read_committed().await.unwrap(),
        None,
        "the committed id is not persisted"
    );
    assert_eq!(indexes(&mut log).await, vec![4, 5, 6, 7]);
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 3)));
    assert_eq!(state.last_log_id, Some(log_id(1, 7)));
    let read = log.try_get_log_entries(5..7).await.unwrap();
    assert_eq!(read.len(), 2);
    assert_eq!(
        read[0].payload,
        entry(1, 5).payload,
        "entries decode as written"
    );
    assert!(
        log.append_durably(entries(7..=7)).await.is_err(),
        "no overwrite without a truncate"
    );
    log.append_durably(vec![entry(2, 8)]).await.unwrap();
    drop(log);

    let mut log = LogStore::open(dir.path()).unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(2, 8)));
}

#[tokio::test]
async fn purge_compacts_the_file() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("log.bin");
    let mut log = LogStore::open_with(dir.path(), 1).unwrap();
    log.append_durably(entries(0..=9)).await.unwrap();
    let before = file_len(&path);
    log.purge(log_id(1, 6)).await.unwrap();
    assert!(
        file_len(&path) < before / 2,
        "the purged prefix is rewritten away"
    );
    assert_eq!(indexes(&mut log).await, vec![7, 8, 9]);
    log.append_durably(entries(10..=10)).await.unwrap();
    drop(log);

    let mut log = LogStore::open_with(dir.path(), 1).unwrap();
    assert_eq!(indexes(&mut log).await, vec![7, 8, 9, 10]);
    // Purging past the end (a snapshot from the leader) empties the log.
    log.purge(log_id(2, 20)).await.unwrap();
    assert_eq!(file_len(&path), 0);
    drop(log);
    let mut log = LogStore::open(dir.path()).unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(2, 20)));
    log.append_durably(vec![entry(2, 21)]).await.unwrap();
    assert_eq!(indexes(&mut log).await, vec![21]);
}

fn register(name: &str) -> Command {
    Command::RegisterWorker {
        name: name.to_string(),
        rpc_addr: format!("{name}:1"),
        slots: 2,
        jobs: vec![],
    }
}

fn submit(id: u64) -> Command {
    let spec = JobSpec::from_json(r#"{"kind":"task","job":"echo","payload":{"n":1}}"#).unwrap();
    Command::SubmitJob {
        id: JobId(id),
        spec,
        at_ms: 1,
        tasks: vec![TaskPlan::Run { id: TaskId(id + 1) }],
        parent: None,
    }
}

async fn start(dir: &Path) -> Meta {
    let members = BTreeMap::from([(1, BasicNode::new("127.0.0.1:0"))]);
    let meta = Meta::start(1, members, Arc::from("secret"), dir)
        .await
        .unwrap();
    assert_eq!(meta.metrics().current_leader, Some(1));
    meta
}

fn worker_names(meta: &Meta) -> BTreeSet<String> {
    meta.state()
        .read()
        .unwrap()
        .workers
        .keys()
        .cloned()
        .collect()
}

/// On a current-thread runtime, as under actix.
#[tokio::test]
async fn state_survives_restart_snapshot_and_purge() {
    let dir = TempDir::new().unwrap();
    let meta = start(dir.path()).await;
    assert_eq!(
        meta.propose(register("a")).await.unwrap(),
        CommandResult::Worker(WorkerId(1))
    );
    let results = meta
        .propose_all(vec![register("b"), submit(10)])
        .await
        .unwrap();
    assert_eq!(
        results,
        vec![CommandResult::Worker(WorkerId(2)), CommandResult::Applied]
    );
    meta.shutdown().await.unwrap();
    assert!(matches!(
        meta.propose(register("x")).await,
        Err(MetaError::Closed)
    ));
    drop(meta);

    let meta = start(dir.path()).await;
    assert_eq!(
        worker_names(&meta),
        BTreeSet::from(["a".into(), "b".into()])
    );
    assert!(meta.state().read().unwrap().jobs.contains_key(&JobId(10)));
    assert_eq!(
        meta.propose(register("a")).await.unwrap(),
        CommandResult::Worker(WorkerId(1))
    );
    assert_eq!(
        meta.propose(register("c")).await.unwrap(),
        CommandResult::Worker(WorkerId(3))
    );

    // Snapshot, purge the whole log, then one more entry after the snapshot.
    let last = meta.metrics().last_applied.unwrap();
    meta.raft().trigger().snapshot().await.unwrap();
    meta.raft()
        .wait(WAIT)
        .snapshot(last, "snapshot")
        .await
        .unwrap();
    meta.raft().trigger().purge_log(last.index).await.unwrap();
    meta.raft()
        .wait(WAIT)
        .purged(Some(last), "purged")
        .await
        .unwrap();
    assert_eq!(
        meta.propose(submit(20)).await.unwrap(),
        CommandResult::Applied
    );
    let expected = meta.state().read().unwrap().clone();
    meta.shutdown().await.unwrap();
    drop(meta);

    let meta = start(dir.path()).await;
    let metrics = meta.metrics();
    assert_eq!(metrics.snapshot, Some(last));
    assert_eq!(
        metrics.purged,
        Some(last),
        "the state came from the snapshot"
    );
    assert_eq!(*meta.state().read().unwrap(), expected);
    assert_eq!(
        meta.propose(register("d")).await.unwrap(),
        CommandResult::Worker(WorkerId(4))
    );
    meta.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_proposals_share_entries() {
    let dir = TempDir::new().unwrap();
    let meta = start(dir.path()).await;
    let before = meta.metrics().last_log_index.unwrap();
    let started = Instant::now();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let meta = meta.clone();
            tokio::spawn(async move {
                let name = format!("w{i}");
                (name.clone(), meta.propose(register(&name)).await.unwrap())
            })
        })
        .collect();
    let mut ids = BTreeSet::new();
    for task in tasks {
        let (name, result) = task.await.unwrap();
        let CommandResult::Worker(id) = result else {
            panic!("unexpected result {result:?}");
        };
        assert_eq!(meta.state().read().unwrap().workers[&name].id, id);
        ids.insert(id);
    }
    assert_eq!(ids.len(), 200, "every proposal got its own result");
    let entries = meta.metrics().last_log_index.unwrap() - before;
    assert!(entries <= 40, "200 proposals took {entries} log entries");
    tracing::info!(entries, elapsed = ?started.elapsed(), "200 concurrent proposals");

    // Fire-and-forget proposals are ordered with the others.
    meta.propose_nowait(submit(100));
    let start = Command::StartJob {
        id: JobId(100),
        at_ms: 2,
    };
    assert_eq!(meta.propose(start).await.unwrap(), CommandResult::Applied);
    meta.shutdown().await.unwrap();
}

/// A quick local measurement: `cargo test -p master --lib meta::tests::throughput -- --ignored
/// --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput() {
    for proposers in [1usize, 16, 64] {
        let dir = TempDir::new().unwrap();
        let meta = start(dir.path()).await;
        let per_proposer = 4000 / proposers;
        let before = meta.metrics().last_log_index.unwrap();
        let started = Instant::now();
        let tasks: Vec<_> = (0..proposers)
            .map(|p| {
                let meta = meta.clone();
                tokio::spawn(async move {
                    for i in 0..per_proposer {
                        let command = Command::ReserveIds {
                            until_ms: (p * per_proposer + i) as u64,
                        };
                        meta.propose(command).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let elapsed = started.elapsed();
        let total = proposers * per_proposer;
        let entries = meta.metrics().last_log_index.unwrap() - before;
        eprintln!(
            "{proposers:>3} proposers: {total} proposals in {elapsed:?} = {:.0}/s, {entries} entries",
            total as f64 / elapsed.as_secs_f64()
        );
        meta.shutdown().await.unwrap();
    }
}

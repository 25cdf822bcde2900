//! Tests of a real multi-master metadata group in one process: every [`Meta`] node has its own
//! directory and its own authenticated tarpc listener on 127.0.0.1:0, routed by the selector
//! byte as the master's listener does. Waits are bounded polls, never fixed sleeps.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{BasicNode, Config, SnapshotPolicy};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::command::{Command, CommandResult};
use super::node::{raft_config, Meta, MetaError};
use super::raft_rpc::{read_selector, serve_raft_connection, SELECT_RAFT};
use super::state::MetaState;
use super::type_config::Raft;

/// The bound on every wait in these tests.
const WAIT: Duration = Duration::from_secs(15);
/// How often a wait polls.
const POLL: Duration = Duration::from_millis(5);

/// Polls `condition` until it holds; panics after [`WAIT`].
async fn await_condition<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

fn register(name: &str) -> Command {
    Command::RegisterWorker {
        name: name.to_string(),
        rpc_addr: format!("{name}:1"),
        slots: 1,
        jobs: vec![],
    }
}

/// One master's Raft listener: the handshake, the selector byte, then the Raft service.
struct Listener {
    /// Set to stop accepting and to drop every open connection at once.
    kill: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Listener {
    fn serve(listener: TcpListener, secret: Arc<str>, raft: Raft) -> Listener {
        let (kill, killed) = watch::channel(false);
        let on_kill = |mut killed: watch::Receiver<bool>| async move {
            let _ = killed.wait_for(|k| *k).await;
        };
        let connections = killed.clone();
        let serve_connection = move |mut stream: tokio::net::TcpStream| {
            let (raft, killed) = (raft.clone(), connections.clone());
            async move {
                let serve = async move {
                    match read_selector(&mut stream).await {
                        Ok(SELECT_RAFT) => serve_raft_connection(stream, raft).await,
                        other => panic!("unexpected selector {other:?}"),
                    }
                };
                tokio::select! {
                    () = serve => {}
                    () = on_kill(killed) => {}
                }
            }
        };
        let task = tokio::spawn(jobs::auth::accept_loop(
            listener,
            secret,
            serve_connection,
            on_kill(killed),
        ));
        Listener { kill, task }
    }

    /// Closes the listener and every connection, abruptly.
    async fn kill(self) {
        let _ = self.kill.send(true);
        self.task.await.unwrap();
    }
}

struct Node {
    meta: Meta,
    listener: Listener,
}

/// A group of masters on loopback.
struct Cluster {
    root: TempDir,
    secret: Arc<str>,
    members: BTreeMap<u64, BasicNode>,
    config: Config,
    /// The running nodes.
    nodes: BTreeMap<u64, Node>,
}

impl Cluster {
    /// Binds `n` listeners, then starts masters 1..=n with all of them as members.
    async fn start(n: u64, config: Config) -> Cluster {
        let mut listeners = BTreeMap::new();
        for id in 1..=n {
            listeners.insert(id, TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let members = listeners
            .iter()
            .map(|(id, l)| (*id, BasicNode::new(l.local_addr().unwrap().to_string())))
            .collect();
        let mut cluster = Cluster {
            root: TempDir::new().unwrap(),
            secret: Arc::from("cluster-secret"),
            members,
            config,
            nodes: BTreeMap::new(),
        };
        for (id, listener) in listeners {
            cluster.run(id, listener).await;
        }
        cluster
    }

    fn dir(&self, id: u64) -> PathBuf {
        self.root.path().join(format!("master-{id}"))
    }

    fn addr(&self, id: u64) -> SocketAddr {
        self.members[&id].addr.parse().unwrap()
    }

    async fn run(&mut self, id: u64, listener: TcpListener) {
        let meta = Meta::start_with(
            id,
            self.members.clone(),
            self.secret.clone(),
            &self.dir(id),
            self.config.clone(),
        )
        .await
        .unwrap();
        let listener = Listener::serve(listener, self.secret.clone(), meta.raft().clone());
        self.nodes.insert(id, Node { meta, listener });
    }

    fn meta(&self, id: u64) -> &Meta {
        &self.nodes[&id].meta
    }

    /// Starts master `id` again, from its directory, on its address.
    async fn restart(&mut self, id: u64) {
        let addr = self.addr(id);
        let deadline = Instant::now() + WAIT;
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(e) => assert!(Instant::now() < deadline, "cannot bind {addr} again: {e}"),
            }
            tokio::time::sleep(POLL).await;
        };
        self.run(id, listener).await;
    }

    /// Stops master `id` in order: the Raft node first, then its listener.
    async fn stop(&mut self, id: u64) {
        let node = self.nodes.remove(&id).unwrap();
        node.meta.shutdown().await.unwrap();
        node.listener.kill().await;
    }

    /// Simulates a kill -9 of master `id`: its listener and every connection to it drop at
    /// once, in the middle of whatever they were doing, then its Raft node stops.
    async fn crash(&mut self, id: u64) {
        let node = self.nodes.remove(&id).unwrap();
        node.listener.kill().await;
        node.meta.shutdown().await.unwrap();
    }

    /// The running node that leads and is ready, once there is one.
    async fn leader(&self) -> u64 {
        let mut found = None;
        await_condition("a ready leader", || {
            found = self
                .nodes
                .iter()
                .find(|(_, n)| n.meta.leadership().ready)
                .map(|(id, _)| *id);
            std::future::ready(found.is_some())
        })
        .await;
        found.unwrap()
    }

    /// Proposes `command` on whichever node leads until it succeeds; returns the result.
    async fn write(&self, command: Command) -> CommandResult {
        let deadline = Instant::now() + WAIT;
        loop {
            for node in self.nodes.values() {
                if node.meta.is_leader() {
                    match node.meta.propose(command.clone()).await {
                        Ok(result) => return result,
                        Err(MetaError::NotLeader { .. } | MetaError::NoQuorum { .. }) => {}
                        Err(MetaError::Timeout { .. }) => {}
                        Err(e) => panic!("unexpected write error: {e}"),
                    }
                }
            }
            assert!(Instant::now() < deadline, "no write succeeded in {WAIT:?}");
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until every running node's state equals `expected`.
    async fn await_state(&self, expected: &MetaState) {
        await_condition("every node to apply the same state", || {
            let same = self
                .nodes
                .values()
                .all(|n| *n.meta.state().read().unwrap() == *expected);
            std::future::ready(same)
        })
        .await;
    }

    async fn shutdown(mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }
}

fn state_of(meta: &Meta) -> MetaState {
    meta.state().read().unwrap().clone()
}

fn worker_id(result: CommandResult) -> u64 {
    match result {
        CommandResult::Worker(id) => id.0,
        other => panic!("unexpected result {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_masters_replicate_and_followers_refuse_writes() {
    let cluster = Cluster::start(3, raft_config()).await;
    for node in cluster.nodes.values() {
        assert!(node.meta.wait_for_leader(WAIT).await.is_some());
    }
    let leader = cluster.leader().await;
    let meta = cluster.meta(leader);
    assert_eq!(worker_id(meta.propose(register("a")).await.unwrap()), 1);
    let results = meta
        .propose_all(vec![register("b"), register("c")])
        .await
        .unwrap();
    assert_eq!(results.len(), 2);
    let expected = state_of(meta);
    assert_eq!(expected.workers.len(), 3);
    cluster.await_state(&expected).await;
    meta.ensure_linearizable().await.unwrap();
    assert_eq!(meta.members(), cluster.members);

    for (id, node) in &cluster.nodes {
        if *id == leader {
            continue;
        }
        let follower = &node.meta;
        assert!(!follower.is_leader());
        let (leader_id, leader_node) = follower.leader().unwrap();
        assert_eq!(leader_id, leader);
        assert_eq!(
            leader_node, cluster.members[&leader],
            "the leader's address"
        );
        let started = Instant::now();
        match follower.propose(register("x")).await {
            Err(MetaError::NotLeader { leader: named }) => assert_eq!(named, Some(leader)),
            other => panic!("a follower took a write: {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "refused at once"
        );
        match follower.ensure_linearizable().await {
            Err(MetaError::NotLeader { leader: named }) => assert_eq!(named, Some(leader)),
            other => panic!("a follower confirmed a read: {other:?}"),
        }
    }
    // Fire-and-forget proposals on the leader reach everyone too.
    meta.propose_nowait(register("d"));
    let leader_meta = meta.clone();
    await_condition("the nowait proposal", || {
        let has = leader_meta
            .state()
            .read()
            .unwrap()
            .workers
            .contains_key("d");
        std::future::ready(has)
    })
    .await;
    cluster.await_state(&state_of(meta)).await;
    cluster.shutdown().await;
}

/// Kills the leader (in order, or abruptly), checks that the others elect a new one that takes
/// writes and kept every committed change; returns the time from the kill to the first write.
async fn fail_over(cluster: &mut Cluster, abrupt: bool, name: &str) -> Duration {
    let old = cluster.leader().await;
    let committed = state_of(cluster.meta(old));
    let term = cluster.meta(old).leadership().term;
    let survivor = *cluster.nodes.keys().find(|id| **id != old).unwrap();
    let mut changes = cluster.meta(survivor).subscribe_leadership();
    let killed = Instant::now();
    if abrupt {
        cluster.crash(old).await;
    } else {
        cluster.stop(old).await;
    }
    let result = cluster.write(register(name)).await;
    let elapsed = killed.elapsed();
    let new = cluster.leader().await;
    assert_ne!(new, old);
    assert!(cluster.meta(new).leadership().term > term);
    assert!(
        changes.has_changed().unwrap(),
        "subscribers hear of the election"
    );
    await_condition("the survivor to know the new leader", || {
        let known = changes
            .borrow_and_update()
            .leader
            .as_ref()
            .map(|(id, _)| *id);
        std::future::ready(known == Some(new))
    })
    .await;
    let state = state_of(cluster.meta(new));
    assert_eq!(worker_id(result), committed.last_worker_id + 1);
    for (name, worker) in &committed.workers {
        assert_eq!(state.workers[name], *worker, "committed state survives");
    }
    // The old leader rejoins as a follower and catches up.
    cluster.restart(old).await;
    cluster.await_state(&state).await;
    assert!(!cluster.meta(old).is_leader());
    elapsed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_takes_over_after_the_leader_stops_or_crashes() {
    let mut cluster = Cluster::start(3, raft_config()).await;
    for name in ["a", "b", "c"] {
        cluster.write(register(name)).await;
    }
    let stopped = fail_over(&mut cluster, false, "after-stop").await;
    let crashed = fail_over(&mut cluster, true, "after-crash").await;
    eprintln!("failover: leader stopped -> first write {stopped:?}, crashed -> {crashed:?}");
    for limit in [stopped, crashed] {
        assert!(limit < Duration::from_secs(5), "failover took {limit:?}");
    }
    let leader = cluster.leader().await;
    assert_eq!(
        cluster.meta(leader).state().read().unwrap().workers.len(),
        5
    );
    cluster.shutdown().await;
}

/// The failover time, median of several crashes of the leader: `cargo test -p master --lib
/// meta::cluster_tests::failover_time -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn failover_time() {
    let mut cluster = Cluster::start(3, raft_config()).await;
    cluster.write(register("first")).await;
    let mut times = Vec::new();
    for round in 0..10 {
        let time = fail_over(&mut cluster, true, &format!("round-{round}")).await;
        eprintln!("round {round}: {time:?}");
        times.push(time);
    }
    times.sort();
    eprintln!(
        "failover (kill of the leader -> first successful write): median {:?}, min {:?}, max {:?}",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_purged_log_catches_up_from_a_snapshot() {
    let config = Config {
        snapshot_policy: SnapshotPolicy::LogsSinceLast(5),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..raft_config()
    };
    let mut cluster = Cluster::start(3, config).await;
    let leader = cluster.leader().await;
    cluster.write(register("before")).await;
    let follower = *cluster.nodes.keys().find(|id| **id != leader).unwrap();
    cluster.await_state(&state_of(cluster.meta(leader))).await;
    let behind = cluster.meta(follower).metrics().last_log_index.unwrap();
    cluster.stop(follower).await;

    for i in 0..40 {
        cluster.write(register(&format!("w{i}"))).await;
    }
    let leader_meta = cluster.meta(leader).clone();
    await_condition("the leader to purge its log", || {
        let purged = leader_meta.metrics().purged.map(|p| p.index);
        std::future::ready(purged.is_some_and(|p| p > behind + 10))
    })
    .await;

    cluster.restart(follower).await;
    let expected = state_of(&leader_meta);
    cluster.await_state(&expected).await;
    let metrics = cluster.meta(follower).metrics();
    let snapshot = metrics.snapshot.expect("the follower holds a snapshot");
    assert!(
        snapshot.index > behind,
        "the follower got a snapshot of the leader's purged log"
    );
    // And it keeps following afterwards.
    cluster.write(register("after")).await;
    cluster.await_state(&state_of(&leader_meta)).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_masters_restart_with_their_state() {
    let mut cluster = Cluster::start(3, raft_config()).await;
    for i in 0..10 {
        cluster.write(register(&format!("w{i}"))).await;
    }
    let leader = cluster.leader().await;
    let expected = state_of(cluster.meta(leader));
    cluster.await_state(&expected).await;
    for id in [1, 2, 3] {
        cluster.stop(id).await;
    }
    // In reverse order: no master waits for a particular one.
    for id in [3, 2, 1] {
        cluster.restart(id).await;
    }
    cluster.leader().await;
    cluster.await_state(&expected).await;
    assert_eq!(worker_id(cluster.write(register("new")).await), 11);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_takes_no_writes_and_says_so() {
    let mut cluster = Cluster::start(3, raft_config()).await;
    cluster.write(register("a")).await;
    let leader = cluster.leader().await;
    let followers: Vec<u64> = cluster
        .nodes
        .keys()
        .copied()
        .filter(|id| *id != leader)
        .collect();
    let mut holes = Vec::new();
    for id in followers {
        let addr = cluster.addr(id);
        cluster.stop(id).await;
        // A listener that never answers: connections hang in the handshake until they time out.
        holes.push(TcpListener::bind(addr).await.unwrap());
    }
    let meta = cluster.meta(leader).clone();
    // Until the leader notices that its majority is gone, a write waits for its commit, but
    // not for long.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let started = Instant::now();
        let result = meta.propose(register("x")).await;
        let took = started.elapsed();
        assert!(took < Duration::from_secs(3), "a write hung for {took:?}");
        match result {
            Err(MetaError::Timeout { .. } | MetaError::NoQuorum { .. }) => {}
            Err(MetaError::NotLeader { .. }) => {}
            other => panic!("the minority took a write: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Then it refuses at once.
    let started = Instant::now();
    match meta.propose(register("y")).await {
        Err(MetaError::NoQuorum { .. } | MetaError::NotLeader { .. }) => {}
        other => panic!("expected a fast refusal: {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    match meta.ensure_linearizable().await {
        Err(MetaError::Unconfirmed { .. } | MetaError::NotLeader { .. }) => {}
        other => panic!("a minority confirmed a read: {other:?}"),
    }
    assert!(!state_of(&meta).workers.contains_key("x"));
    drop(holes);
    cluster.shutdown().await;
}

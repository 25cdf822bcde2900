//! `bench commit`: how many metadata commands a 3-master Raft group commits per second, and
//! how long one commit takes, with 64, 16 and 1 concurrent writers.
//!
//! Three `master::meta::node::Meta` nodes run in this process, exactly as in a master: each
//! with its own directory (`log/` with an fsync per appended batch, `snapshots/`) and its own
//! authenticated tarpc listener on a loopback port, talking to the others over real TCP. Each
//! writer proposes `ReserveIds` (a cheap real command: the leader's id reservation) on the
//! leader and waits until it is committed by a majority and applied, then proposes the next.
//! Concurrent proposals share log entries (the batcher), as etcd batches concurrent puts. So
//! this is etcd's `benchmark put` against a 3-member cluster on one machine, minus the client
//! protocol (etcd's numbers include its gRPC hop; ours start at the proposal).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use master::meta::command::Command;
use master::meta::membership::MemberAddrs;
use master::meta::node::Meta;
use master::meta::raft_rpc::{read_selector, serve_raft_connection, SELECT_RAFT};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{fresh, percentile, round1, round3};

/// Masters in the group.
const MASTERS: u64 = 3;
/// How long the group gets to elect its first leader.
const ELECTION_WAIT: Duration = Duration::from_secs(15);
/// The writer counts measured, in order.
const WRITERS: [usize; 3] = [64, 16, 1];

/// etcd 3.4, 3 members on this machine (`benchmark put`): puts/s with 64 and 16 clients,
/// p50 and p99 with 64, and one sequential put.
const ETCD_64_PER_S: f64 = 5_290.0;
const ETCD_64_P50_MS: f64 = 11.2;
const ETCD_64_P99_MS: f64 = 33.0;
const ETCD_16_PER_S: f64 = 2_850.0;
const ETCD_SEQUENTIAL_MS: f64 = 1.42;

/// One master of the group: its node and its Raft listener.
struct Node {
    meta: Meta,
    stop: watch::Sender<bool>,
    listener: JoinHandle<()>,
}

/// The figures of one phase.
struct Phase {
    writers: usize,
    commits: usize,
    seconds: f64,
    latencies_ms: Vec<f64>,
}

/// Runs the benchmark: `seconds` of measurement per writer count, after `warmup_s`.
///
/// # Errors
/// If the group cannot start or a commit fails.
pub fn run(dir: &Path, seconds: f64, warmup_s: f64) -> Result<()> {
    let run = dir.join("commit");
    fresh(&run)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let nodes = start_group(&run).await?;
        let result = measure(&nodes, seconds, warmup_s).await;
        for node in nodes {
            node.meta.shutdown().await?;
            let _ = node.stop.send(true);
            let _ = node.listener.await;
        }
        let phases = result?;
        let figure = |n: usize| phases.iter().find(|p| p.writers == n);
        let mut out = json!({
            "bench": "commit",
            "masters": MASTERS,
            "how": "in-process Meta nodes, real loopback TCP, on-disk logs with fsync; ReserveIds proposals on the leader",
            "seconds_per_phase": seconds,
        });
        for phase in &phases {
            let mut sorted = phase.latencies_ms.clone();
            sorted.sort_by(f64::total_cmp);
            let n = phase.writers;
            out[format!("commits_per_s_{n}")] = json!(round1(phase.commits as f64 / phase.seconds));
            out[format!("p50_ms_{n}")] = json!(round3(percentile(&sorted, 0.5)));
            out[format!("p99_ms_{n}")] = json!(round3(percentile(&sorted, 0.99)));
        }
        if let (Some(p64), Some(p16)) = (figure(64), figure(16)) {
            out["vs_etcd_64"] = json!(round3(p64.commits as f64 / p64.seconds / ETCD_64_PER_S));
            out["vs_etcd_16"] = json!(round3(p16.commits as f64 / p16.seconds / ETCD_16_PER_S));
        }
        out["etcd_3_4_reference"] = json!({
            "puts_per_s_64": ETCD_64_PER_S, "p50_ms_64": ETCD_64_P50_MS, "p99_ms_64": ETCD_64_P99_MS,
            "puts_per_s_16": ETCD_16_PER_S, "sequential_put_ms": ETCD_SEQUENTIAL_MS,
        });
        println!("{out}");
        Ok(())
    })
}

/// Binds the listeners, starts the masters and waits for a ready leader.
async fn start_group(dir: &Path) -> Result<Vec<Node>> {
    let secret: Arc<str> = Arc::from("bench-secret");
    let mut listeners = Vec::new();
    for _ in 0..MASTERS {
        listeners.push(TcpListener::bind("127.0.0.1:0").await?);
    }
    let members: BTreeMap<u64, _> = listeners
        .iter()
        .zip(1..)
        .map(|(l, id)| {
            let rpc = l.local_addr().map(|a| a.to_string());
            rpc.map(|rpc| (id, MemberAddrs { rpc, http: None }.node()))
        })
        .collect::<std::io::Result<_>>()?;
    let mut nodes = Vec::new();
    for (listener, id) in listeners.into_iter().zip(1..) {
        let node_dir = dir.join(format!("master-{id}"));
        let meta = Meta::start(id, members.clone(), secret.clone(), &node_dir).await?;
        let (stop, stopped) = watch::channel(false);
        let raft = meta.raft().clone();
        let serve = move |mut stream: tokio::net::TcpStream| {
            let raft = raft.clone();
            async move {
                if let Ok(SELECT_RAFT) = read_selector(&mut stream).await {
                    serve_raft_connection(stream, raft).await;
                }
            }
        };
        let shutdown = async move {
            let mut stopped = stopped;
            let _ = stopped.wait_for(|s| *s).await;
        };
        let listener = tokio::spawn(jobs::auth::accept_loop(
            listener,
            secret.clone(),
            serve,
            shutdown,
        ));
        nodes.push(Node {
            meta,
            stop,
            listener,
        });
    }
    let deadline = Instant::now() + ELECTION_WAIT;
    while !nodes.iter().any(|n| n.meta.leadership().ready) {
        if Instant::now() > deadline {
            bail!("no leader after {ELECTION_WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(nodes)
}

/// Each writer count in turn: a warm-up, then `seconds` of measurement.
async fn measure(nodes: &[Node], seconds: f64, warmup_s: f64) -> Result<Vec<Phase>> {
    let leader = nodes
        .iter()
        .find(|n| n.meta.leadership().ready)
        .context("no leader")?
        .meta
        .clone();
    let mut phases = Vec::new();
    for writers in WRITERS {
        eprintln!("{writers} writers: {warmup_s} s warm-up, {seconds} s measured...");
        let _ = write_for(&leader, writers, Duration::from_secs_f64(warmup_s)).await?;
        let started = Instant::now();
        let latencies_ms = write_for(&leader, writers, Duration::from_secs_f64(seconds)).await?;
        phases.push(Phase {
            writers,
            commits: latencies_ms.len(),
            seconds: started.elapsed().as_secs_f64(),
            latencies_ms,
        });
    }
    Ok(phases)
}

/// `writers` tasks propose one command after another for `duration`; returns every commit's
/// latency in ms.
async fn write_for(leader: &Meta, writers: usize, duration: Duration) -> Result<Vec<f64>> {
    let until = Instant::now() + duration;
    let tasks: Vec<JoinHandle<Result<Vec<f64>>>> = (0..writers)
        .map(|_| {
            let leader = leader.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = 0u64;
                while Instant::now() < until {
                    n += 1;
                    let start = Instant::now();
                    leader
                        .propose(Command::ReserveIds { until_ms: n })
                        .await
                        .context("a commit failed")?;
                    latencies.push(start.elapsed().as_secs_f64() * 1000.0);
                }
                Ok(latencies)
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(all)
}

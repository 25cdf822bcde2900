//! `bench locks`: the lock service through the HTTP API on a 3-master cluster, next to etcd 3.4's
//! figures on this machine (3 members).
//!
//! 1. One client, sequential acquire+release pairs on one lock: p50/p99 of a pair.
//! 2. 16 clients, each on its own lock: pairs/s and p50/p99 (uncontended).
//! 3. 16 clients on one lock, each acquiring with a wait and releasing: hand-offs/s.
//!
//! Every grant and release is a command committed by a majority (fsynced) before it answers.
//! Clients talk to the leader, keeping their connections alive.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use examples::local_cluster::LocalCluster;
use serde_json::{json, Value};

use crate::{fresh, percentile, round1, round3};

/// etcd 3.4, 3 members, this machine: lock+unlock p50 of one client (ms).
const ETCD_PAIR_P50_MS: f64 = 3.08;
/// etcd: pairs/s for one client.
const ETCD_ONE_CLIENT_PER_S: f64 = 297.0;
/// etcd: pairs/s for 16 clients on distinct locks.
const ETCD_16_DISTINCT_PER_S: f64 = 1045.0;
/// etcd: hand-offs/s with 16 clients on one lock.
const ETCD_HANDOFFS_PER_S: f64 = 160.0;

/// One client: an HTTP agent with keep-alive, talking to the leader.
struct Client {
    agent: ureq::Agent,
    base: String,
    auth: String,
}

impl Client {
    fn new(base: &str, secret: &str) -> Client {
        Client {
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(60))
                .build(),
            base: base.to_string(),
            auth: format!("Bearer {secret}"),
        }
    }

    fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let response = self
            .agent
            .post(&url)
            .set("Authorization", &self.auth)
            .send_string(&body.to_string())
            .with_context(|| format!("POST {path}"))?;
        Ok(response.into_json()?)
    }

    /// Acquires (waiting up to `wait_ms`) and releases `name`; returns the token.
    fn pair(&self, name: &str, owner: &str, wait_ms: u64) -> Result<u64> {
        let grant = self.post(
            &format!("/api/locks/{name}/acquire"),
            &json!({"owner": owner, "ttl_ms": 10_000, "wait_ms": wait_ms}),
        )?;
        let token = grant["token"].as_u64().context("no token")?;
        self.post(
            &format!("/api/locks/{name}/release"),
            &json!({"owner": owner, "token": token}),
        )?;
        Ok(token)
    }
}

/// Runs `clients` threads doing `pairs` pairs in all; lock `name_of(client)`; returns the pair
/// latencies in ms (sorted), the elapsed seconds, and the tokens each client saw.
fn run_clients(
    base: &str,
    secret: &str,
    clients: usize,
    pairs: usize,
    name_of: impl Fn(usize) -> String,
    wait_ms: u64,
) -> Result<(Vec<f64>, f64, Vec<Vec<u64>>)> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|i| {
            let client = Client::new(base, secret);
            let name = name_of(i);
            let next = next.clone();
            std::thread::spawn(move || -> Result<(Vec<f64>, Vec<u64>)> {
                let owner = format!("bench-{i}");
                let mut latencies = Vec::new();
                let mut tokens = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < pairs {
                    let t = Instant::now();
                    tokens.push(client.pair(&name, &owner, wait_ms)?);
                    latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                Ok((latencies, tokens))
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(pairs);
    let mut tokens = Vec::new();
    for handle in handles {
        let (l, t) = handle
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
        latencies.extend(l);
        tokens.push(t);
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    Ok((latencies, elapsed, tokens))
}

/// `bench locks`.
pub fn run(dir: &Path, pairs: usize, clients: usize, handoffs: usize) -> Result<()> {
    let run = dir.join("locks-cluster");
    fresh(&run)?;
    let mut cluster = LocalCluster::start_with_masters(&run, 3, &[("w1", 1)], None)?;
    let leader = cluster.wait_for_leader(Duration::from_secs(30))?;
    cluster.use_master(leader)?;
    let base = cluster.url.clone();
    let secret = cluster.secret.clone();

    // Warm-up: connections, the leader's first commits.
    run_clients(&base, &secret, 1, 200, |_| "warm".into(), 0)?;

    eprintln!("one client, {pairs} sequential acquire+release pairs...");
    let (one, one_s, _) = run_clients(&base, &secret, 1, pairs, |_| "solo".into(), 0)?;

    let many = pairs * 4;
    eprintln!("{clients} clients on distinct locks, {many} pairs...");
    let (distinct, distinct_s, _) =
        run_clients(&base, &secret, clients, many, |i| format!("own-{i}"), 0)?;

    eprintln!("{clients} clients on one lock, {handoffs} hand-offs...");
    let (shared, shared_s, tokens) = run_clients(
        &base,
        &secret,
        clients,
        handoffs,
        |_| "shared".into(),
        30_000,
    )?;
    // Each client's grants of the shared lock come in rising token order, and no token is
    // granted twice.
    let mut all: Vec<u64> = tokens.iter().flatten().copied().collect();
    if tokens.iter().any(|t| t.windows(2).any(|p| p[0] >= p[1])) {
        bail!("a client saw tokens that do not rise");
    }
    all.sort_unstable();
    all.dedup();
    if all.len() != shared.len() {
        bail!("{} grants but {} distinct tokens", shared.len(), all.len());
    }

    let one_p50 = percentile(&one, 0.5);
    let distinct_per_s = distinct.len() as f64 / distinct_s;
    let handoffs_per_s = shared.len() as f64 / shared_s;
    let result = json!({
        "bench": "locks",
        "masters": 3,
        "one_client_pairs": one.len(),
        "one_client_pairs_per_s": round1(one.len() as f64 / one_s),
        "one_client_pair_p50_ms": round3(one_p50),
        "one_client_pair_p99_ms": round3(percentile(&one, 0.99)),
        "distinct_clients": clients,
        "distinct_pairs": distinct.len(),
        "distinct_pairs_per_s": round1(distinct_per_s),
        "distinct_pair_p50_ms": round3(percentile(&distinct, 0.5)),
        "distinct_pair_p99_ms": round3(percentile(&distinct, 0.99)),
        "handoffs": shared.len(),
        "handoffs_per_s": round1(handoffs_per_s),
        "handoff_pair_p50_ms": round3(percentile(&shared, 0.5)),
        "etcd_pair_p50_ms": ETCD_PAIR_P50_MS,
        "etcd_one_client_per_s": ETCD_ONE_CLIENT_PER_S,
        "etcd_16_distinct_per_s": ETCD_16_DISTINCT_PER_S,
        "etcd_handoffs_per_s": ETCD_HANDOFFS_PER_S,
        "p50_vs_etcd": round3(one_p50 / ETCD_PAIR_P50_MS),
        "distinct_vs_etcd": round3(distinct_per_s / ETCD_16_DISTINCT_PER_S),
        "handoffs_vs_etcd": round3(handoffs_per_s / ETCD_HANDOFFS_PER_S),
    });
    println!("{result}");
    Ok(())
}

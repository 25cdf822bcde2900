//! Benchmarks of the cluster, each printing its figures as one JSON line at the end.
//!
//! - `bench wordcount [--total-mb 1024] [--files 16]`: word count over a generated Zipf corpus
//!   on a local cluster (one master, two workers), and in the same run a single-process rayon
//!   word count over the same files with 2 threads; reports both throughputs and their ratio.
//! - `bench dispatch [--tasks 20000] [--clients 16]`: `echo` tasks submitted by concurrent HTTP
//!   clients, each waiting for its task to finish before submitting the next (one
//!   `POST /api/jobs?wait_ms=` per task: submit-and-wait), for tasks/s end to end; then
//!   submit-to-finish latency of single tasks at low load (p50/p99).
//! - `bench ring [--workers 10] [--vnodes 100]`: placement-ring lookups/s (module `ring`).
//! - `bench ids [--ids 8192000]`: Snowflake ids/s, 1 and 2 threads, vs. 4,096,000/s (`ids`).
//! - `bench commit [--seconds 5]`: metadata commits/s and commit latency of a 3-master Raft
//!   group with 64, 16 and 1 writers, vs. etcd 3.4 (module `commit`).
//! - `bench failover [--rounds 10]`: kill -9 of the leader of 3 masters to the new leader, the
//!   first committed write and the first accepted job, vs. etcd 3.4 (module `failover`).
//! - `bench locks [--pairs 2000] [--clients 16] [--handoffs 2000]`: lock acquire+release
//!   pairs through the HTTP API on 3 masters (1 client; 16 clients on distinct locks) and
//!   hand-offs/s with 16 clients on one lock, vs. etcd 3.4 (module `locks`).
//!
//! Build first with `cargo build --release --workspace`; run from the repository root.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use examples::corpus;
use examples::local_cluster::LocalCluster;
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use serde_json::json;

mod commit;
mod failover;
mod ids;
mod locks;
mod ring;

#[derive(Parser)]
#[command(about = "Cluster benchmarks; each prints one JSON line of figures at the end")]
struct Cli {
    /// Where corpora, cluster state and outputs go.
    #[arg(long, default_value = "target/bench")]
    dir: PathBuf,
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Lock acquire+release pairs and hand-offs through the HTTP API, 3 masters.
    Locks {
        /// Pairs of the one-client phase (the 16-client phase does 4× as many).
        #[arg(long, default_value_t = 2000)]
        pairs: usize,
        /// Clients of the concurrent phases.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Hand-offs of the shared-lock phase.
        #[arg(long, default_value_t = 2000)]
        handoffs: usize,
    },
    /// Metadata commits per second and commit latency of 3 masters (64, 16, 1 writers).
    Commit {
        /// Measured seconds per writer count.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Warm-up seconds before each measurement.
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
    },
    /// Kill -9 of the leader of 3 masters to the first write and job, several rounds.
    Failover {
        /// Leader kills.
        #[arg(long, default_value_t = 10)]
        rounds: usize,
    },
    /// Cluster word count vs. a 2-thread rayon word count on the same corpus.
    Wordcount {
        /// Corpus size in MiB.
        #[arg(long, default_value_t = 1024)]
        total_mb: u64,
        /// Number of files.
        #[arg(long, default_value_t = 16)]
        files: usize,
        /// Slots per worker (two workers).
        #[arg(long, default_value_t = 1)]
        slots: u32,
        /// Reduce partitions.
        #[arg(long, default_value_t = 4)]
        reducers: u32,
    },
    /// Echo-task dispatch throughput and latency.
    Dispatch {
        /// Tasks in the throughput phase.
        #[arg(long, default_value_t = 20_000)]
        tasks: usize,
        /// Concurrent clients in the throughput phase.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Single tasks in the latency phase.
        #[arg(long, default_value_t = 500)]
        samples: usize,
        /// Slots per worker (two workers).
        #[arg(long, default_value_t = 8)]
        slots: u32,
    },
    /// Placement-ring lookups per second (single thread, no cluster).
    Ring {
        /// Workers on the ring (one slot each).
        #[arg(long, default_value_t = 10)]
        workers: u64,
        /// Virtual nodes per worker.
        #[arg(long, default_value_t = 100)]
        vnodes: usize,
        /// Lookups of each kind.
        #[arg(long, default_value_t = 2_000_000)]
        lookups: usize,
    },
    /// Snowflake ids per second from the master's generator (no cluster).
    Ids {
        /// Ids per phase (one thread, then two threads).
        #[arg(long, default_value_t = 8_192_000)]
        ids: usize,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    std::fs::create_dir_all(&cli.dir)?;
    let dir = std::path::absolute(&cli.dir)?;
    match cli.command {
        Bench::Locks {
            pairs,
            clients,
            handoffs,
        } => locks::run(&dir, pairs, clients, handoffs),
        Bench::Commit { seconds, warmup } => commit::run(&dir, seconds, warmup),
        Bench::Failover { rounds } => failover::run(&dir, rounds),
        Bench::Wordcount {
            total_mb,
            files,
            slots,
            reducers,
        } => wordcount(&dir, total_mb, files, slots, reducers),
        Bench::Dispatch {
            tasks,
            clients,
            samples,
            slots,
        } => dispatch(&dir, tasks, clients, samples, slots),
        Bench::Ring {
            workers,
            vnodes,
            lookups,
        } => ring::run(workers, vnodes, lookups),
        Bench::Ids { ids } => ids::run(ids),
    }
}

fn fresh(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    Ok(())
}

/// The single-process baseline: 2 rayon threads, one FxHashMap per file (the hasher the
/// cluster's map side uses too), merged and sorted.
fn rayon_wordcount(paths: &[PathBuf]) -> Result<usize> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build()?;
    let counts = pool.install(|| {
        paths
            .par_iter()
            .map(|path| -> Result<FxHashMap<String, u64>> {
                let bytes = std::fs::read(path)?;
                let text = String::from_utf8_lossy(&bytes);
                let mut counts: FxHashMap<String, u64> = FxHashMap::default();
                for line in text.lines() {
                    jobs::builtin::for_each_word(line, |w| match counts.get_mut(w) {
                        Some(n) => *n += 1,
                        None => {
                            counts.insert(w.to_string(), 1);
                        }
                    });
                }
                Ok(counts)
            })
            .try_reduce(FxHashMap::default, |mut a, b| {
                for (k, v) in b {
                    *a.entry(k).or_default() += v;
                }
                Ok(a)
            })
    })?;
    let mut keys: Vec<(&String, &u64)> = counts.iter().collect();
    keys.sort_unstable();
    Ok(keys.len())
}

fn wordcount(dir: &Path, total_mb: u64, files: usize, slots: u32, reducers: u32) -> Result<()> {
    let corpus_dir = dir.join(format!("corpus-{total_mb}m-{files}"));
    eprintln!(
        "generating {total_mb} MiB in {files} files under {} (reused if present)",
        corpus_dir.display()
    );
    let paths = corpus::generate(&corpus_dir, files, (total_mb << 20) / files as u64, 2024)?;
    let bytes: u64 = paths
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    let mb = bytes as f64 / 1e6;

    // Warm the page cache so both sides read from memory.
    for p in &paths {
        let _ = std::fs::read(p)?;
    }
    eprintln!("rayon baseline (2 threads)...");
    let start = Instant::now();
    let distinct = rayon_wordcount(&paths)?;
    let rayon_s = start.elapsed().as_secs_f64();

    let run = dir.join("wordcount-cluster");
    fresh(&run)?;
    let cluster = LocalCluster::start(&run, &[("w1", slots), ("w2", slots)], None)?;
    let agent = ureq::AgentBuilder::new().build();
    let spec = json!({
        "kind": "mapreduce", "job": "wordcount", "reducers": reducers,
        "input": [format!("{}/*.txt", corpus_dir.display())],
        "output": run.join("out").to_string_lossy(),
    });
    eprintln!(
        "cluster word count ({} slots per worker, {reducers} reducers)...",
        slots
    );
    let start = Instant::now();
    let id = cluster.submit(&agent, &spec)?;
    let job = cluster.wait(&agent, &id, Duration::from_secs(3600))?;
    let cluster_s = start.elapsed().as_secs_f64();
    if job["state"] != "succeeded" {
        bail!("the cluster job did not succeed: {job}");
    }
    let lines: usize = (0..reducers)
        .map(|r| {
            std::fs::read(run.join("out").join(format!("part-r-{r:05}")))
                .map(|b| b.iter().filter(|c| **c == b'\n').count())
        })
        .sum::<std::io::Result<usize>>()?;
    if lines != distinct {
        bail!("the cluster found {lines} distinct words, the baseline {distinct}");
    }
    let result = json!({
        "bench": "wordcount",
        "input_mb": (mb * 10.0).round() / 10.0,
        "files": files,
        "distinct_words": distinct,
        "rayon_2_threads_s": round3(rayon_s),
        "rayon_mb_s": round1(mb / rayon_s),
        "cluster_s": round3(cluster_s),
        "cluster_mb_s": round1(mb / cluster_s),
        "cluster_vs_rayon": round3(rayon_s / cluster_s),
        "workers": 2,
        "slots_per_worker": slots,
        "reducers": reducers,
    });
    println!("{result}");
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn dispatch(dir: &Path, tasks: usize, clients: usize, samples: usize, slots: u32) -> Result<()> {
    let run = dir.join("dispatch-cluster");
    fresh(&run)?;
    let cluster = Arc::new(LocalCluster::start(
        &run,
        &[("w1", slots), ("w2", slots)],
        None,
    )?);
    let spec = json!({"kind": "task", "job": "echo", "payload": {"n": 1}});

    // Warm-up: connections, allocations.
    let agent = ureq::AgentBuilder::new().build();
    for _ in 0..200 {
        cluster.run(&agent, &spec, Duration::from_secs(30))?;
    }

    eprintln!("throughput: {tasks} echo tasks from {clients} clients...");
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let cluster = cluster.clone();
            let next = next.clone();
            let spec = spec.clone();
            std::thread::spawn(move || -> Result<usize> {
                let agent = ureq::AgentBuilder::new().build();
                let mut done = 0;
                while next.fetch_add(1, Ordering::Relaxed) < tasks {
                    let (id, state) = cluster.run(&agent, &spec, Duration::from_secs(60))?;
                    if state != "succeeded" {
                        bail!("task {id} ended {state}");
                    }
                    done += 1;
                }
                Ok(done)
            })
        })
        .collect();
    let mut done = 0;
    for handle in handles {
        done += handle
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
    }
    let elapsed = start.elapsed().as_secs_f64();

    eprintln!("latency: {samples} single tasks at low load...");
    let mut latencies = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        let (id, state) = cluster.run(&agent, &spec, Duration::from_secs(30))?;
        latencies.push(start.elapsed().as_secs_f64() * 1000.0);
        if state != "succeeded" {
            bail!("task {id} ended {state}");
        }
    }
    latencies.sort_by(f64::total_cmp);
    let result = json!({
        "bench": "dispatch",
        "tasks": done,
        "clients": clients,
        "elapsed_s": round3(elapsed),
        "tasks_per_s": round1(done as f64 / elapsed),
        "latency_samples": samples,
        "latency_p50_ms": round3(percentile(&latencies, 0.5)),
        "latency_p99_ms": round3(percentile(&latencies, 0.99)),
        "latency_min_ms": round3(latencies.first().copied().unwrap_or(0.0)),
        "workers": 2,
        "slots_per_worker": slots,
    });
    println!("{result}");
    Ok(())
}

//! `bench ring`: lookups per second on the master's placement ring
//! ([`master::placement::Placement`], a `consistent_hash::StaticHashRing`), single-threaded:
//! the owner of random string keys, then the first two candidates (owner and failover), plus
//! the time to rebuild the ring (done on every worker join or loss) and its balance.

use std::hint::black_box;
use std::time::Instant;

use anyhow::{bail, Result};
use jobs::WorkerId;
use master::placement::Placement;
use rand::{Rng, SeedableRng};
use serde_json::json;

/// Distinct keys looked up in turn (a working set larger than the CPU caches' worth of ring).
const KEYS: usize = 100_000;

/// Runs the benchmark: `workers` workers of one slot with `vnodes` virtual nodes each, and
/// `lookups` lookups of each kind. Prints one JSON line.
pub fn run(workers: u64, vnodes: usize, lookups: usize) -> Result<()> {
    if workers == 0 || vnodes == 0 || lookups == 0 {
        bail!("--workers, --vnodes and --lookups must be positive");
    }
    let members: Vec<(WorkerId, u32)> = (1..=workers).map(|id| (WorkerId(id), 1)).collect();
    let start = Instant::now();
    let rebuilds = 20;
    for _ in 0..rebuilds {
        black_box(Placement::with_vnodes_per_slot(
            black_box(members.clone()),
            vnodes,
        ));
    }
    let rebuild_ms = start.elapsed().as_secs_f64() * 1000.0 / f64::from(rebuilds);
    let ring = Placement::with_vnodes_per_slot(members, vnodes);

    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let keys: Vec<String> = (0..KEYS)
        .map(|_| format!("key-{:016x}", rng.gen::<u64>()))
        .collect();
    // Warm-up (and the observed spread of keys over workers).
    let mut owned = vec![0u64; workers as usize + 1];
    for key in &keys {
        match ring.owner(key) {
            Some(WorkerId(id)) => owned[id as usize] += 1,
            None => bail!("no owner for {key}"),
        }
    }

    eprintln!("ring: {lookups} owner lookups over {workers} workers × {vnodes} vnodes...");
    let start = Instant::now();
    let mut sum = 0u64;
    for i in 0..lookups {
        let key = &keys[i % KEYS];
        sum = sum.wrapping_add(black_box(ring.owner(key)).map_or(0, |w| w.0));
    }
    let owner_s = start.elapsed().as_secs_f64();
    black_box(sum);

    eprintln!("ring: {lookups} two-candidate lookups...");
    let start = Instant::now();
    let mut sum = 0u64;
    for i in 0..lookups {
        let key = &keys[i % KEYS];
        for worker in ring.candidates(key).take(2) {
            sum = sum.wrapping_add(worker.0);
        }
    }
    let two_s = start.elapsed().as_secs_f64();
    black_box(sum);

    let mean = 1.0 / workers as f64;
    let max_share = ring.shares().values().copied().fold(0.0, f64::max);
    let max_keys = owned.iter().copied().max().unwrap_or(0) as f64 / KEYS as f64;
    let result = json!({
        "bench": "ring",
        "workers": workers,
        "vnodes_per_worker": vnodes,
        "lookups": lookups,
        "distinct_keys": KEYS,
        "owner_lookups_per_s": (lookups as f64 / owner_s).round() as u64,
        "owner_ns_per_lookup": round1(owner_s * 1e9 / lookups as f64),
        "two_candidate_lookups_per_s": (lookups as f64 / two_s).round() as u64,
        "rebuild_ms": round3(rebuild_ms),
        "max_over_mean_share": round3(max_share / mean),
        "max_over_mean_keys": round3(max_keys / mean),
    });
    println!("{result}");
    Ok(())
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

//! `bench ids`: Snowflake ids per second from the master's generator
//! ([`master::ids::IdGenerator`]), from one thread and from two threads sharing it, next to the
//! format's ceiling (4,096 sequence numbers per millisecond per node id: 4,096,000/s). Checks
//! that every id of the run is unique, that each thread's ids increase, and that the
//! two-thread phase's ids are all above the single-thread phase's.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use master::ids::IdGenerator;
use serde_json::json;

/// Ids per second one node id can issue: 4,096 (12 sequence bits) per millisecond.
const LIMIT_PER_S: u64 = 4_096_000;

/// Runs the benchmark: `ids` ids from one thread, then `ids` from two threads (half each).
/// Prints one JSON line.
pub fn run(ids: usize) -> Result<()> {
    if ids < 2 {
        bail!("--ids must be at least 2");
    }
    let generator = Arc::new(IdGenerator::new(1));
    // Warm-up: the first call reads the clock and sets up the state.
    let warm = generator.next();

    eprintln!("ids: {ids} from one thread...");
    let start = Instant::now();
    let single: Vec<u64> = (0..ids).map(|_| generator.next()).collect();
    let single_s = start.elapsed().as_secs_f64();
    if !increasing(&single) || single[0] <= warm {
        bail!("single-thread ids do not strictly increase");
    }

    eprintln!("ids: {ids} from two threads sharing the generator...");
    let start = Instant::now();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let generator = generator.clone();
            std::thread::spawn(move || (0..ids / 2).map(|_| generator.next()).collect::<Vec<u64>>())
        })
        .collect();
    let mut batches = Vec::new();
    for handle in handles {
        batches.push(
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("an id thread panicked"))?,
        );
    }
    let two_s = start.elapsed().as_secs_f64();
    let two_count: usize = batches.iter().map(Vec::len).sum();
    let last_single = single[single.len() - 1];
    for batch in &batches {
        if !increasing(batch) {
            bail!("one thread's ids do not strictly increase");
        }
        if batch.first().is_some_and(|&first| first <= last_single) {
            bail!("a two-thread id is not above the single-thread ones");
        }
    }
    let mut all: Vec<u64> = single;
    all.extend(batches.into_iter().flatten());
    let total = all.len();
    all.sort_unstable();
    all.dedup();
    if all.len() != total {
        bail!("{} duplicate ids among {total}", total - all.len());
    }

    let single_rate = ids as f64 / single_s;
    let two_rate = two_count as f64 / two_s;
    let result = json!({
        "bench": "ids",
        "ids_single_thread": ids,
        "single_thread_ids_per_s": single_rate.round() as u64,
        "ids_two_threads": two_count,
        "two_threads_ids_per_s": two_rate.round() as u64,
        "limit_per_s_per_node": LIMIT_PER_S,
        "single_thread_vs_limit": round3(single_rate / LIMIT_PER_S as f64),
        "two_threads_vs_limit": round3(two_rate / LIMIT_PER_S as f64),
        "ids_checked": total,
        "distinct_ids": all.len(),
    });
    println!("{result}");
    Ok(())
}

fn increasing(ids: &[u64]) -> bool {
    ids.windows(2).all(|w| w[0] < w[1])
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

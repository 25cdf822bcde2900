//! Snowflake ids for jobs and tasks: 41 bits of milliseconds since [`EPOCH_MS`], 10 bits of
//! node id, 12 bits of sequence. Ids from one generator strictly increase; ids from different
//! nodes differ in the node bits. A clock that steps back is waited out (never an id repeated);
//! a step back longer than [`MAX_CLOCK_WAIT`] is bridged by issuing on the last time seen
//! (borrowing sequence numbers from the future) instead of stalling the master.

use std::sync::Mutex;
use std::time::Duration;

/// The Snowflake epoch: 2024-01-01T00:00:00Z, in ms since the Unix epoch.
pub const EPOCH_MS: u64 = 1_704_067_200_000;
/// Node ids must be below this (10 bits).
pub const MAX_NODE: u64 = 1 << NODE_BITS;
/// The longest clock step back that is waited out rather than bridged.
pub const MAX_CLOCK_WAIT: Duration = Duration::from_secs(1);

const NODE_BITS: u32 = 10;
const SEQ_BITS: u32 = 12;
const MAX_SEQ: u64 = (1 << SEQ_BITS) - 1;
const WAIT_STEP: Duration = Duration::from_micros(200);

/// A source of wall-clock milliseconds since the Unix epoch (replaceable in tests).
pub type Clock = Box<dyn Fn() -> u64 + Send>;

pub use jobs::now_ms;

struct State {
    clock: Clock,
    last_ms: u64,
    seq: u64,
    /// Issuing ahead of a clock that is behind `last_ms` (after a long step back or a
    /// reservation), rather than waiting for it.
    bridging: bool,
}

/// A thread-safe Snowflake generator for one node.
pub struct IdGenerator {
    node: u64,
    state: Mutex<State>,
}

impl std::fmt::Debug for IdGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdGenerator")
            .field("node", &self.node)
            .finish()
    }
}

impl IdGenerator {
    /// A generator for `node` (taken modulo 1024) on the system clock.
    pub fn new(node: u64) -> IdGenerator {
        IdGenerator::with_clock(node, Box::new(now_ms))
    }

    /// A generator on a custom clock.
    pub fn with_clock(node: u64, clock: Clock) -> IdGenerator {
        IdGenerator {
            node: node % MAX_NODE,
            state: Mutex::new(State {
                clock,
                last_ms: 0,
                seq: 0,
                bridging: false,
            }),
        }
    }

    /// Never issue ids at or below Snowflake time `ms` (e.g. time reserved by an earlier
    /// leader). Ids are issued above it at once, even while the clock is behind it.
    pub fn advance_to(&self, ms: u64) {
        let mut state = self.lock();
        if state.last_ms < ms {
            state.last_ms = ms;
            state.seq = MAX_SEQ; // the next id moves on to the next millisecond
            state.bridging = true;
        }
    }

    /// The next id.
    pub fn next(&self) -> u64 {
        let mut state = self.lock();
        let mut waited = Duration::ZERO;
        loop {
            let now = ((state.clock)()).saturating_sub(EPOCH_MS);
            if now > state.last_ms {
                state.last_ms = now;
                state.seq = 0;
                state.bridging = false;
                break;
            }
            if now < state.last_ms && !state.bridging {
                if waited < MAX_CLOCK_WAIT {
                    // The clock stepped back: wait it out.
                    std::thread::sleep(WAIT_STEP);
                    waited += WAIT_STEP;
                    continue;
                }
                tracing::warn!(
                    behind_ms = state.last_ms - now,
                    "clock far behind the last id; issuing ids ahead of it"
                );
                state.bridging = true;
            }
            if state.seq < MAX_SEQ {
                state.seq += 1;
                break;
            }
            if state.bridging {
                state.last_ms += 1;
                state.seq = 0;
                break;
            }
            // This millisecond's sequence is used up: wait for the next one.
            std::thread::sleep(WAIT_STEP);
        }
        (state.last_ms << (NODE_BITS + SEQ_BITS)) | (self.node << SEQ_BITS) | state.seq
    }

    /// The Snowflake time (ms since [`EPOCH_MS`]) of the last id issued.
    pub fn last_ms(&self) -> u64 {
        self.lock().last_ms
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state inconsistent (every write is
        // a plain assignment), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The Snowflake time part of an id, in ms since the Unix epoch.
pub fn id_time_ms(id: u64) -> u64 {
    (id >> (NODE_BITS + SEQ_BITS)) + EPOCH_MS
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::*;

    #[test]
    fn ids_are_unique_across_threads_and_increase_per_thread() {
        let ids = Arc::new(IdGenerator::new(7));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let ids = ids.clone();
                std::thread::spawn(move || {
                    let batch: Vec<u64> = (0..20_000).map(|_| ids.next()).collect();
                    assert!(
                        batch.windows(2).all(|w| w[0] < w[1]),
                        "ids from one thread increase"
                    );
                    batch
                })
            })
            .collect();
        let mut all = HashSet::new();
        for handle in handles {
            for id in handle.join().unwrap() {
                assert!(all.insert(id), "duplicate id {id}");
                assert_eq!((id >> SEQ_BITS) & (MAX_NODE - 1), 7);
            }
        }
        assert_eq!(all.len(), 80_000);
    }

    #[test]
    fn sequence_overflow_moves_to_the_next_millisecond() {
        // The clock reads 1_000 for its first 5_000 calls, then 1_001.
        let calls = AtomicU64::new(0);
        let clock =
            move || EPOCH_MS + 1_000 + u64::from(calls.fetch_add(1, Ordering::SeqCst) >= 5_000);
        let ids = IdGenerator::with_clock(1, Box::new(clock));
        // 4096 ids fit in one millisecond; the 4097th waits for the next one.
        let batch: Vec<u64> = (0..5000).map(|_| ids.next()).collect();
        assert!(batch.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(id_time_ms(batch[0]), EPOCH_MS + 1_000);
        assert_eq!(id_time_ms(batch[4999]), EPOCH_MS + 1_001);
    }

    #[test]
    fn a_clock_step_back_never_repeats_or_decreases_ids() {
        let now = Arc::new(AtomicU64::new(EPOCH_MS + 50_000));
        let clock = now.clone();
        let ids = IdGenerator::with_clock(3, Box::new(move || clock.load(Ordering::SeqCst)));
        let before: Vec<u64> = (0..10).map(|_| ids.next()).collect();
        // A short step back is waited out: move the clock forward again from another thread.
        now.store(EPOCH_MS + 49_990, Ordering::SeqCst);
        let mover = {
            let now = now.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                now.store(EPOCH_MS + 50_001, Ordering::SeqCst);
            })
        };
        let after = ids.next();
        mover.join().unwrap();
        assert!(after > *before.last().unwrap());
        assert_eq!(id_time_ms(after), EPOCH_MS + 50_001);
        // A long step back is bridged on the last time seen.
        now.store(EPOCH_MS + 10_000, Ordering::SeqCst);
        let bridged = ids.next();
        assert!(bridged > after);
    }

    #[test]
    fn advance_to_skips_reserved_time() {
        let ids = IdGenerator::with_clock(1, Box::new(|| EPOCH_MS + 100));
        ids.advance_to(500);
        let id = ids.next();
        assert!(id_time_ms(id) > EPOCH_MS + 500 - 1);
        assert!(id > (500 << (NODE_BITS + SEQ_BITS)));
    }
}

//! Built-in task handlers: `echo` (result = payload) and `sleep` (payload `{"ms": n}`).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::task::{Task, TaskContext};

/// The longest `sleep` sleeps between checks for cancellation.
const SLEEP_TICK: Duration = Duration::from_millis(20);

/// Returns its payload.
#[derive(Debug, Default)]
pub struct Echo;

impl Task for Echo {
    fn run(&self, _ctx: &TaskContext, payload: &Value) -> Result<Value, String> {
        Ok(payload.clone())
    }

    fn is_instant(&self) -> bool {
        true
    }
}

/// Sleeps `payload.ms` milliseconds (stopping early if cancelled); result `{"slept_ms": n}`.
#[derive(Debug, Default)]
pub struct Sleep;

impl Task for Sleep {
    fn run(&self, ctx: &TaskContext, payload: &Value) -> Result<Value, String> {
        let ms = payload
            .get("ms")
            .and_then(Value::as_u64)
            .ok_or("sleep needs payload {\"ms\": n}")?;
        let start = Instant::now();
        let until = start + Duration::from_millis(ms);
        while Instant::now() < until {
            if ctx.is_cancelled() {
                return Err("cancelled".into());
            }
            std::thread::sleep(SLEEP_TICK.min(until.saturating_duration_since(Instant::now())));
        }
        Ok(json!({ "slept_ms": start.elapsed().as_millis() as u64 }))
    }
}

crate::register_task!("echo", Echo);
crate::register_task!("sleep", Sleep);

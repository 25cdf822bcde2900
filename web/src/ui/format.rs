//! Small pieces of markup and text shared by the pages: state badges, progress bars, times,
//! durations and byte counts.

use chrono::{DateTime, Utc};
use maud::{html, Markup};

use crate::api::Progress;
use crate::json::rfc3339_ms;

pub use jobs::now_ms;

/// A coloured badge for a state or role name; the CSS colours `s-<name>`.
pub fn badge(name: &str) -> Markup {
    html! { span class={ "badge s-" (name) } { (name) } }
}

/// A small tag naming a job kind (`mapreduce`, `task`), coloured per kind.
pub fn kind_tag(kind: &str) -> Markup {
    html! { span class={ "tag k-" (kind) } { (kind) } }
}

/// A thin bar showing `used` of `total` (a worker's busy slots).
pub fn meter(used: u64, total: u64) -> Markup {
    let percent = used
        .saturating_mul(100)
        .checked_div(total)
        .unwrap_or(0)
        .min(100);
    html! { span.meter title={ (used) " of " (total) } { span style={ "width:" (percent) "%" } {} } }
}

/// A progress bar with `done/total` beside it, coloured by the job's `state`.
pub fn progress_bar(progress: Progress, state: &str) -> Markup {
    let percent = progress
        .done
        .saturating_mul(100)
        .checked_div(progress.total)
        .unwrap_or(0)
        .min(100);
    html! {
        span.progress title={ (percent) "%" } {
            span.track { span class={ "fill s-" (state) } style={ "width:" (percent) "%" } {} }
            span.count { (progress.done) "/" (progress.total) }
        }
    }
}

/// A `<time>` element showing a UTC time to the second, or a dash if it has not happened.
pub fn time(ms: Option<u64>) -> Markup {
    let shown = ms.and_then(|ms| {
        let ms = i64::try_from(ms).ok()?;
        DateTime::<Utc>::from_timestamp_millis(ms)
    });
    match (ms.and_then(rfc3339_ms), shown) {
        (Some(machine), Some(time)) => html! {
            time datetime=(machine) title=(machine) { (time.format("%Y-%m-%d %H:%M:%S")) }
        },
        _ => html! { span.muted { "—" } },
    }
}

/// A `<time>` showing only the UTC time of day (`14:03:07`), or a dash.
pub fn time_of_day(ms: Option<u64>) -> Markup {
    let shown = ms.and_then(|ms| DateTime::<Utc>::from_timestamp_millis(i64::try_from(ms).ok()?));
    match (ms.and_then(rfc3339_ms), shown) {
        (Some(machine), Some(time)) => html! {
            time datetime=(machine) title=(machine) { (time.format("%H:%M:%S")) }
        },
        _ => html! { span.muted { "—" } },
    }
}

/// The UTC date of `ms` (`2024-05-01 UTC`), or "not yet".
pub fn date_utc(ms: Option<u64>) -> String {
    ms.and_then(|ms| DateTime::<Utc>::from_timestamp_millis(i64::try_from(ms).ok()?))
        .map_or_else(
            || "not yet".to_string(),
            |t| t.format("%Y-%m-%d UTC").to_string(),
        )
}

/// How long something ran: from `start` to `end`, or to `now` while it runs; empty if it has
/// not started.
pub fn duration(start: Option<u64>, end: Option<u64>, now: u64) -> String {
    match start {
        Some(start) => human_ms(end.unwrap_or(now).saturating_sub(start)),
        None => String::new(),
    }
}

/// How long ago `ms` was, as "3 s ago", or "never".
pub fn ago(ms: Option<u64>, now: u64) -> String {
    match ms {
        Some(ms) => format!("{} ago", human_ms(now.saturating_sub(ms))),
        None => "never".to_string(),
    }
}

/// A duration in words a person reads at a glance: `850 ms`, `12.3 s`, `4m 05s`, `2h 03m`,
/// `3d 04h`.
pub fn human_ms(ms: u64) -> String {
    let secs = ms / 1000;
    if ms < 1000 {
        format!("{ms} ms")
    } else if secs < 60 {
        format!("{}.{} s", secs, (ms % 1000) / 100)
    } else if secs < 3600 {
        format!("{}m {:02}s", secs / 60, secs % 60)
    } else if secs < 86_400 {
        format!("{}h {:02}m", secs / 3600, (secs % 3600) / 60)
    } else {
        format!("{}d {:02}h", secs / 86_400, (secs % 86_400) / 3600)
    }
}

/// A byte count with a binary unit: `512 B`, `1.5 KiB`, `3.0 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The `q`-quantile (0.0..=1.0) of sorted values, by the nearest-rank method; `None` if empty.
pub fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied()
}

/// A JSON value, pretty-printed for a `<pre>`.
pub fn pretty_json(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_naturally() {
        assert_eq!(human_ms(850), "850 ms");
        assert_eq!(human_ms(12_345), "12.3 s");
        assert_eq!(human_ms(245_000), "4m 05s");
        assert_eq!(human_ms(7_380_000), "2h 03m");
        assert_eq!(human_ms(273_600_000), "3d 04h");
        assert_eq!(duration(Some(1_000), Some(3_500), 9_999), "2.5 s");
        assert_eq!(duration(Some(1_000), None, 1_400), "400 ms");
        assert_eq!(duration(None, None, 1_400), "");
        assert_eq!(ago(None, 5), "never");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let values = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert_eq!(quantile(&values, 0.0), Some(1));
        assert_eq!(quantile(&values, 0.5), Some(5));
        assert_eq!(quantile(&values, 0.75), Some(8));
        assert_eq!(quantile(&values, 1.0), Some(10));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[7], 0.25), Some(7));
    }

    #[test]
    fn progress_bars_stay_within_bounds() {
        let empty = progress_bar(Progress { done: 0, total: 0 }, "queued").into_string();
        assert!(empty.contains("width:0%"), "{empty}");
        let over = progress_bar(Progress { done: 5, total: 4 }, "running").into_string();
        assert!(over.contains("width:100%"), "{over}");
        let half = progress_bar(Progress { done: 1, total: 2 }, "failed").into_string();
        assert!(half.contains("width:50%") && half.contains("1/2"), "{half}");
        assert!(half.contains("fill s-failed"), "{half}");
        assert!(meter(3, 4).into_string().contains("width:75%"));
        assert!(meter(1, 0).into_string().contains("width:0%"));
    }
}

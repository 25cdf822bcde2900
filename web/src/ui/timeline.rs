//! The task timeline of a job page, drawn as inline SVG: one lane per worker, a bar per
//! attempt from its launch to its end (or to now while it runs), coloured by how it ended, so
//! failures, lost attempts and stragglers stand out. Attempts that overlap on one worker (it
//! has several slots) are stacked in rows within the worker's lane. Each bar's `<title>` is its
//! tooltip. Also the per-phase summary of attempt durations (min, quartiles, max), as Spark's
//! stage page shows them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use maud::{html, Markup, PreEscaped};

use crate::api::{AttemptView, TaskView};
use crate::ui::format::{human_ms, quantile};

/// The most attempts drawn; a larger job's timeline shows the first ones and says so.
pub const MAX_BARS: usize = 5000;
/// The most rows one worker's lane stacks; further overlapping attempts share the last row.
pub const MAX_ROWS: usize = 12;
/// The SVG's user-space width; it scales to the page (with a minimum width on phones).
const WIDTH: f64 = 1000.0;
/// Room for the worker names on the left.
const GUTTER: f64 = 120.0;
const RIGHT_PAD: f64 = 12.0;
const AXIS: f64 = 22.0;
const ROW: f64 = 14.0;
const BAR: f64 = 10.0;
const LANE_PAD: f64 = 5.0;
const TICKS: u32 = 5;

/// An attempt placed on the timeline.
struct Bar<'a> {
    task: &'a TaskView,
    attempt: &'a AttemptView,
    start: u64,
    end: u64,
}

/// Escapes text for SVG (XML) content and attributes.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The attempt's state as a class name: one of a known set, so a surprising value cannot
/// break out of the attribute or pick an unrelated style.
fn state_class(state: &str) -> &'static str {
    match state {
        "succeeded" => "succeeded",
        "failed" => "failed",
        "lost" => "lost",
        "running" => "running",
        _ => "superseded",
    }
}

/// The timeline of `tasks`, with running attempts drawn up to `now` (or up to `end`, the job's
/// end, if it has ended). `None` if no attempt has started.
pub fn timeline(tasks: &[TaskView], end: Option<u64>, now: u64) -> Option<Markup> {
    let mut bars: Vec<Bar<'_>> = tasks
        .iter()
        .flat_map(|task| task.attempts.iter().map(move |attempt| (task, attempt)))
        .filter_map(|(task, attempt)| {
            let start = attempt.started_ms?;
            let stop = attempt.finished_ms.or(end).unwrap_or(now).max(start);
            Some(Bar {
                task,
                attempt,
                start,
                end: stop,
            })
        })
        .collect();
    if bars.is_empty() {
        return None;
    }
    let total_bars = bars.len();
    bars.sort_by_key(|b| (b.start, b.end));
    bars.truncate(MAX_BARS);
    let t0 = bars.iter().map(|b| b.start).min().unwrap_or(0);
    let t1 = bars.iter().map(|b| b.end).max().unwrap_or(t0).max(t0 + 1);
    let span = (t1 - t0) as f64;
    let plot = WIDTH - GUTTER - RIGHT_PAD;
    let x = |ms: u64| GUTTER + (ms.saturating_sub(t0)) as f64 / span * plot;

    // Lanes: one per worker, sorted by name; rows within a lane by greedy interval packing.
    let mut lanes: BTreeMap<&str, Vec<(usize, &Bar<'_>)>> = BTreeMap::new();
    let mut row_ends: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for bar in &bars {
        let ends = row_ends.entry(bar.attempt.worker.as_str()).or_default();
        let row = match ends.iter().position(|&e| e <= bar.start) {
            Some(row) => row,
            None if ends.len() < MAX_ROWS => {
                ends.push(0);
                ends.len() - 1
            }
            None => ends.len() - 1,
        };
        ends[row] = ends[row].max(bar.end);
        lanes
            .entry(bar.attempt.worker.as_str())
            .or_default()
            .push((row, bar));
    }

    let mut height = AXIS;
    let mut svg = String::new();
    for (i, (worker, placed)) in lanes.iter().enumerate() {
        let rows = row_ends.get(worker).map_or(1, Vec::len).max(1);
        let lane_height = rows as f64 * ROW + 2.0 * LANE_PAD;
        let top = height;
        let _ = write!(
            svg,
            r#"<g class="lane" data-worker="{w}"><rect class="lane-bg" x="0" y="{top}" width="{WIDTH}" height="{lane_height}" opacity="{o}"/><text class="worker" x="8" y="{ty}">{w}</text>"#,
            w = xml(worker),
            o = if i % 2 == 0 { 1.0 } else { 0.0 },
            ty = top + lane_height / 2.0 + 4.0,
        );
        for (row, bar) in placed {
            let bx = x(bar.start);
            let width = (x(bar.end) - bx).max(2.0);
            let by = top + LANE_PAD + *row as f64 * ROW + (ROW - BAR) / 2.0;
            let state = state_class(&bar.attempt.state);
            let mut tip = format!(
                "{} {} · attempt #{} on {} · {} · {}",
                bar.task.kind,
                bar.task.index,
                bar.attempt.attempt,
                bar.attempt.worker,
                human_ms(bar.end - bar.start),
                bar.attempt.state
            );
            if let Some(error) = &bar.attempt.error {
                let _ = write!(tip, ": {error}");
            }
            let _ = write!(
                svg,
                r#"<rect class="a a-{state}" x="{bx:.1}" y="{by:.1}" width="{width:.1}" height="{BAR}"><title>{}</title></rect>"#,
                xml(&tip)
            );
        }
        svg.push_str("</g>");
        height += lane_height;
    }
    // The time axis: ticks relative to the first launch, with grid lines through the lanes.
    let mut axis = String::new();
    for tick in 0..=TICKS {
        let ms = t0 + (t1 - t0) * u64::from(tick) / u64::from(TICKS);
        let tx = x(ms);
        let anchor = match tick {
            0 => "start",
            TICKS => "end",
            _ => "middle",
        };
        let label = if tick == 0 {
            "0".to_string()
        } else {
            format!("+{}", human_ms(ms - t0))
        };
        let _ = write!(
            axis,
            r#"<line class="grid" x1="{tx:.1}" y1="{}" x2="{tx:.1}" y2="{height}"/><text x="{tx:.1}" y="14" text-anchor="{anchor}">{label}</text>"#,
            AXIS - 4.0
        );
    }
    let drawn = bars.len();
    Some(html! {
        div.timeline-wrap {
            svg.timeline xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (WIDTH) " " (height) }
                role="img" aria-label={ "Task timeline: " (drawn) " attempts on " (lanes.len()) " workers" } {
                (PreEscaped(axis))
                (PreEscaped(svg))
            }
        }
        div.legend {
            @for (state, var) in [("succeeded", "--ok"), ("failed", "--bad"), ("lost", "--lost"),
                                  ("running", "--run"), ("superseded", "--off")] {
                span { i style={ "--c:var(" (var) ")" } {} (state) }
            }
            span { "· hover a bar for its task, worker, duration and error" }
            @if total_bars > drawn { span { "· showing the first " (drawn) " of " (total_bars) " attempts" } }
        }
    })
}

/// Per phase (`map`, `reduce`, `run`): how many attempts succeeded and the min, 25th, median,
/// 75th percentile and max of their durations. `None` if none has.
pub fn duration_summary(tasks: &[TaskView]) -> Option<Markup> {
    let mut phases: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for task in tasks {
        for attempt in &task.attempts {
            if let (Some(start), Some(end), "succeeded") = (
                attempt.started_ms,
                attempt.finished_ms,
                attempt.state.as_str(),
            ) {
                phases
                    .entry(task.kind.as_str())
                    .or_default()
                    .push(end.saturating_sub(start));
            }
        }
    }
    if phases.is_empty() {
        return None;
    }
    let order = |k: &str| match k {
        "map" => 0,
        "reduce" => 1,
        _ => 2,
    };
    let mut phases: Vec<(&str, Vec<u64>)> = phases.into_iter().collect();
    phases.sort_by_key(|(k, _)| order(k));
    for (_, values) in &mut phases {
        values.sort_unstable();
    }
    let cell = |values: &[u64], q: f64| quantile(values, q).map(human_ms).unwrap_or_default();
    Some(html! {
        div.table {
            table.summary {
                thead {
                    tr {
                        th { "Phase" } th.num { "Attempts" } th.num { "Min" } th.num { "25th" }
                        th.num { "Median" } th.num { "75th" } th.num { "Max" }
                    }
                }
                tbody {
                    @for (phase, values) in &phases {
                        tr {
                            td { (phase) }
                            td.num { (values.len()) }
                            td.num { (cell(values, 0.0)) }
                            td.num { (cell(values, 0.25)) }
                            td.num { (cell(values, 0.5)) }
                            td.num { (cell(values, 0.75)) }
                            td.num { (cell(values, 1.0)) }
                        }
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use jobs::{TaskId, TaskState};

    use super::*;

    fn attempt(n: u32, worker: &str, start: u64, end: Option<u64>, state: &str) -> AttemptView {
        AttemptView {
            attempt: n,
            worker: worker.into(),
            started_ms: Some(start),
            finished_ms: end,
            state: state.into(),
            error: (state == "failed").then(|| "boom <&> \"quoted\"".into()),
        }
    }

    fn task(index: u32, attempts: Vec<AttemptView>) -> TaskView {
        TaskView {
            id: TaskId(100 + u64::from(index)),
            kind: "map".into(),
            index,
            state: TaskState::Succeeded,
            attempts,
        }
    }

    #[test]
    fn one_lane_per_worker_with_overlaps_stacked_and_failures_coloured() {
        let tasks = vec![
            task(
                0,
                vec![
                    attempt(1, "w1", 1_000, Some(2_000), "failed"),
                    attempt(2, "w2", 2_100, Some(3_000), "succeeded"),
                ],
            ),
            task(
                1,
                vec![
                    attempt(1, "w1", 1_200, Some(2_500), "lost"),
                    attempt(2, "w3", 2_600, None, "running"),
                ],
            ),
            task(2, vec![attempt(1, "w2", 1_000, Some(1_900), "succeeded")]),
        ];
        let svg = timeline(&tasks, None, 4_000).unwrap().into_string();
        assert_eq!(svg.matches(r#"<g class="lane""#).count(), 3, "{svg}");
        for worker in ["w1", "w2", "w3"] {
            assert!(svg.contains(&format!(r#"data-worker="{worker}""#)));
        }
        assert_eq!(svg.matches(r#"class="a a-"#).count(), 5);
        assert!(svg.contains("a-failed") && svg.contains("a-lost") && svg.contains("a-running"));
        // the error is in the tooltip, escaped once
        assert!(
            svg.contains("boom &lt;&amp;&gt; &quot;quoted&quot;"),
            "{svg}"
        );
        // w1's two attempts overlap: its lane has two rows, so it is taller than w3's
        let lane_height = |w: &str| {
            let at = svg.find(&format!(r#"data-worker="{w}""#)).unwrap();
            let rest = &svg[at..];
            let h = rest.split("height=\"").nth(1).unwrap();
            h[..h.find('"').unwrap()].parse::<f64>().unwrap()
        };
        assert!(lane_height("w1") > lane_height("w3"));
        // the axis runs from the first launch to now (3 s)
        assert!(svg.contains(">+3.0 s<"), "{svg}");
    }

    #[test]
    fn no_attempt_no_timeline() {
        assert!(timeline(&[task(0, vec![])], None, 5).is_none());
    }

    #[test]
    fn worker_names_are_escaped() {
        let tasks = vec![task(0, vec![attempt(1, "<w>", 1, Some(5), "weird\"state")])];
        let svg = timeline(&tasks, None, 9).unwrap().into_string();
        assert!(!svg.contains("<w>"), "{svg}");
        assert!(svg.contains("&lt;w&gt;"));
        assert!(
            svg.contains("a-superseded"),
            "unknown states get a neutral class"
        );
    }

    #[test]
    fn summaries_give_quantiles_per_phase() {
        let mut reduce = task(0, vec![attempt(1, "w1", 0, Some(4_000), "succeeded")]);
        reduce.kind = "reduce".into();
        let tasks = vec![
            task(0, vec![attempt(1, "w1", 0, Some(1_000), "succeeded")]),
            task(
                1,
                vec![
                    attempt(1, "w1", 0, Some(2_000), "succeeded"),
                    attempt(2, "w1", 0, Some(9_000), "failed"),
                ],
            ),
            reduce,
        ];
        let table = duration_summary(&tasks).unwrap().into_string();
        assert!(table.find("<td>map</td>").unwrap() < table.find("<td>reduce</td>").unwrap());
        assert!(
            table.contains(r#"<td class="num">2</td><td class="num">1.0 s</td>"#),
            "{table}"
        );
        assert!(
            !table.contains("9.0 s"),
            "failed attempts are not in the summary"
        );
        assert!(duration_summary(&[]).is_none());
    }
}

//! The web UI end to end, in a real browser: a real cluster (the `master` and `worker`
//! binaries, started by [`examples::local_cluster::LocalCluster`]) and Debian's headless
//! Chromium driven through `chromedriver` (see `webdriver/mod.rs`).
//!
//! The test logs in with the cluster secret, submits a word count through the submit form,
//! watches the job page (which updates itself, without a reload) reach `succeeded`, opens the
//! output files from the page's links and checks the counts, looks at a job that failed (a
//! map that panics on every attempt: its error in full, its failed attempts in red on the
//! timeline), and saves screenshots of the pages under `target/ui-screenshots/` (`job.png` is
//! the job page at 1280 px; the others are for people reviewing the UI: overview, jobs,
//! cluster, submit, the failed job, and the job page and overview on a phone).
//!
//! It needs `chromium` and `chromium-driver` (CI's `.ci/run` installs them) and the workspace's
//! binaries (`cargo build --workspace --bins`); it fails, never skips, without them.

#![allow(clippy::unwrap_used)]

mod webdriver;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use examples::local_cluster::{bin_dir, LocalCluster};
use serde_json::json;
use webdriver::Browser;

/// How long the word count may take from submission to `succeeded`.
const JOB_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a page may take to show what is expected.
const PAGE_TIMEOUT: Duration = Duration::from_secs(20);

const TEXT: &str = "The cat and the hat.\nThe end, the END!\nÉté et été\n";

/// `target/ui-screenshots`: next to the profile directory the binaries are in.
fn screenshot_dir() -> PathBuf {
    let bins = bin_dir().unwrap();
    bins.parent().unwrap_or(&bins).join("ui-screenshots")
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn log_in_submit_a_word_count_watch_it_succeed_and_open_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let result = run(dir.path());
    if let Err(error) = result {
        let kept = dir.keep();
        let mut logs = String::new();
        for log in [
            "cluster/logs/master-1.log",
            "cluster/logs/w1.log",
            "cluster/logs/w2.log",
            "logs/chromedriver.log",
        ] {
            logs.push_str(&format!("\n--- {log} ---\n{}", tail(&kept.join(log), 40)));
        }
        panic!("{error:#}\n(kept {}){logs}", kept.display());
    }
}

fn run(dir: &Path) -> Result<()> {
    let input = dir.join("input");
    std::fs::create_dir_all(&input)?;
    std::fs::write(input.join("words.txt"), TEXT)?;
    let output = dir.join("out").join("wc");
    // Two workers running the example job crate (it has `crash-test`, a job that panics).
    let worker_bin = bin_dir()?.join("example-worker");
    let cluster = LocalCluster::start(
        &dir.join("cluster"),
        &[("w1", 2), ("w2", 1)],
        Some(&worker_bin),
    )?;
    std::fs::create_dir_all(dir.join("logs"))?;
    let browser = Browser::start(
        &dir.join("profile"),
        &dir.join("logs").join("chromedriver.log"),
        1280,
        900,
    )?;
    let shots = screenshot_dir();

    // A job from the API too, so the lists have more than one row.
    let agent = ureq::Agent::new();
    let echo = cluster.submit(
        &agent,
        &json!({"kind": "task", "job": "echo", "payload": {"hello": "ui"}}),
    )?;
    cluster.wait(&agent, &echo, JOB_TIMEOUT)?;

    // Log in: the form takes the secret and comes back to the submit page.
    browser.goto(&format!("{}/login?next=/submit", cluster.url))?;
    browser.find("#secret")?.type_text(&cluster.secret)?;
    browser.find("form.form button[type=submit]")?.click()?;
    browser.wait_for("the submit page after logging in", PAGE_TIMEOUT, |b| {
        Ok(b.url()?.ends_with("/submit").then_some(()))
    })?;
    let page = browser.text()?;
    if page.contains("Log in first") || !page.contains("Log out") {
        bail!("not logged in after the login form:\n{page}");
    }

    // Submit a word count through the form; its job list comes from the live worker. First
    // with an input that matches nothing: the master's refusal shows next to the input field,
    // and what was typed stays.
    browser
        .find(r#"select#job option[value="wordcount"]"#)?
        .click()?;
    browser
        .find("#input")?
        .type_text(&dir.join("nothing").join("*.txt").to_string_lossy())?;
    browser
        .find("#output")?
        .type_text(&output.to_string_lossy())?;
    let reducers = browser.find("#reducers")?;
    reducers.clear()?;
    reducers.type_text("2")?;
    browser.find("#submit-job")?.click()?;
    let refusal = browser.wait_for("the refusal next to the input", PAGE_TIMEOUT, |b| {
        let text = b.find("#field-input .error")?.text()?;
        Ok(text.contains("matches no readable file").then_some(text))
    })?;
    if !refusal.contains("nothing") {
        bail!("the refusal does not name the input: {refusal}");
    }
    browser.screenshot_full(&shots.join("submit-error.png"), 4000)?;
    let input_field = browser.find("#input")?;
    input_field.clear()?;
    input_field.type_text(&input.join("*.txt").to_string_lossy())?;
    browser.screenshot(&shots.join("submit.png"))?;
    browser.find("#submit-job")?.click()?;
    let job_url = browser.wait_for("the new job's page", PAGE_TIMEOUT, |b| {
        let url = b.url()?;
        let id = url.rsplit("/jobs/").next().unwrap_or_default();
        Ok(
            (url.contains("/jobs/") && !id.is_empty() && id.bytes().all(|c| c.is_ascii_digit()))
                .then_some(url),
        )
    })?;

    // The page updates itself: no reload here, only reads of what the page shows.
    let state = browser.wait_for("the job to end", JOB_TIMEOUT, |b| {
        let state = b.find("#job h1 .badge")?.text()?;
        Ok(matches!(state.as_str(), "succeeded" | "failed" | "cancelled").then_some(state))
    })?;
    if state != "succeeded" {
        bail!("the job ended {state}:\n{}", browser.text()?);
    }
    let page = browser.text()?;
    for expected in [
        "part-r-00000",
        "part-r-00001",
        "_SUCCESS",
        "Timeline",
        "no failures",
    ] {
        if !page.contains(expected) {
            bail!("the finished job page lacks `{expected}`:\n{page}");
        }
    }
    // One timeline lane per worker that ran an attempt, as the API reports them.
    let id = job_url.rsplit('/').next().unwrap_or_default();
    let job = cluster.get(&format!("/api/jobs/{id}"))?;
    let mut workers: Vec<&str> = job["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["attempts"].as_array().into_iter().flatten())
        .filter_map(|a| a["worker"].as_str())
        .collect();
    workers.sort_unstable();
    workers.dedup();
    let lanes = browser.execute(
        "return Array.from(document.querySelectorAll('svg.timeline g.lane')).map(g => g.dataset.worker);",
        vec![],
    )?;
    if lanes != json!(workers) {
        bail!("timeline lanes {lanes}, but attempts ran on {workers:?}");
    }
    browser.screenshot_full(&shots.join("job.png"), 4000)?;

    // Open the output files from their links and check the counts.
    let mut counts = String::new();
    for n in 0..2 {
        browser.goto(&job_url)?;
        browser
            .find(&format!(r#"a[href$="/output/{n}"]"#))?
            .click()?;
        let text = browser.wait_for("an output file", PAGE_TIMEOUT, |b| {
            b.url()?.contains("/output/").then(|| b.text()).transpose()
        })?;
        counts.push_str(&text);
        counts.push('\n');
    }
    let mut lines: Vec<&str> = counts.lines().filter(|l| !l.is_empty()).collect();
    lines.sort_unstable();
    let expected = [
        "and\t1", "cat\t1", "end\t2", "et\t1", "hat\t1", "the\t4", "été\t2",
    ];
    if lines != expected {
        bail!("the output files hold {lines:?}, expected {expected:?}");
    }

    // A job that fails: a map panics on every attempt. Its page shows the panic in full and
    // the failed attempts in the failure colour.
    std::fs::write(input.join("boom.txt"), "fine\nthis line goes BOOM\n")?;
    let crash = cluster.submit(
        &agent,
        &json!({"kind": "mapreduce", "job": "crash-test", "input": [input.join("boom.txt")],
                "output": dir.join("out").join("crash"), "reducers": 1,
                "params": {"panic_on": "BOOM"}, "max_attempts": 2}),
    )?;
    browser.goto(&format!("{}/jobs/{crash}", cluster.url))?;
    browser.wait_for("the crash-test job to fail", JOB_TIMEOUT, |b| {
        Ok((b.find("#job h1 .badge")?.text()? == "failed").then_some(()))
    })?;
    let error = browser.find("#job-error")?.text()?;
    if !error.contains("crash-test found \"BOOM\"") {
        bail!("the failed job's error is not shown in full: {error}");
    }
    let failed_bars = browser.execute(
        "return document.querySelectorAll('svg.timeline rect.a-failed').length;",
        vec![],
    )?;
    if failed_bars != json!(2) {
        bail!("expected 2 failed attempts on the timeline, found {failed_bars}");
    }
    browser.screenshot_full(&shots.join("job-failed.png"), 4000)?;

    // A held lock, for the locks page.
    ureq::post(&format!("{}/api/locks/nightly-report/acquire", cluster.url))
        .set("Authorization", &format!("Bearer {}", cluster.secret))
        .send_string(r#"{"owner": "browser-test", "ttl_ms": 600000}"#)
        .context("acquiring a lock")?;

    // The other pages, for review; each must show what it is about.
    for (path, file, needle) in [
        ("/", "overview.png", "Recent jobs"),
        ("/jobs", "jobs.png", "wordcount"),
        ("/cluster", "cluster.png", "w1"),
        ("/locks", "locks.png", "browser-test"),
    ] {
        browser.goto(&format!("{}{path}", cluster.url))?;
        browser.wait_for(needle, PAGE_TIMEOUT, |b| {
            Ok(b.text()?.contains(needle).then_some(()))
        })?;
        browser.screenshot(&shots.join(file))?;
    }
    browser.resize(390, 844)?;
    browser.goto(&job_url)?;
    browser.wait_for("the job page on a phone", PAGE_TIMEOUT, |b| {
        Ok(b.text()?.contains("succeeded").then_some(()))
    })?;
    browser.screenshot_full(&shots.join("job-phone.png"), 6000)?;
    browser.goto(&format!("{}/", cluster.url))?;
    browser.wait_for("the overview on a phone", PAGE_TIMEOUT, |b| {
        Ok(b.text()?.contains("Recent jobs").then_some(()))
    })?;
    browser.screenshot_full(&shots.join("overview-phone.png"), 6000)?;
    let job_png = shots.join("job.png");
    let size = std::fs::metadata(&job_png)
        .with_context(|| format!("{} was not written", job_png.display()))?
        .len();
    if size < 10_000 {
        bail!("{} is only {size} bytes", job_png.display());
    }
    Ok(())
}

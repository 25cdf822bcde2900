//! `master submit`: the command-line client of the HTTP API (CONTRACT.md, "HTTP API").
//!
//! [`submit`] reads a job spec, makes a MapReduce spec's relative paths absolute against the
//! submitter's directory ([`absolutize_spec`]), and posts it to the masters in a random
//! (Fisher–Yates) order: an unreachable master passes the request to the next one, and 503/421
//! ("no leader yet") is retried with a bounded backoff. With `--wait` it long-polls the job,
//! drawing progress on stderr, and switches masters when the one it polls goes away.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use jobs::config::ClusterConfig;
use jobs::JobState;
use rand::seq::SliceRandom;
use serde::Deserialize;
use serde_json::Value;
use tracing::{debug, warn};

use crate::launcher::base_url;
use web::api::Progress;

/// How long the server holds a `GET /api/jobs/{id}` long-poll.
const WAIT_MS: u64 = 1000;
/// Connect timeout for every request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Whole-request timeout of a submission.
const POST_TIMEOUT: Duration = Duration::from_secs(15);
/// Whole-request timeout of a long-poll: the hold plus slack.
const POLL_TIMEOUT: Duration = Duration::from_millis(WAIT_MS + 10_000);
/// Without a terminal, a plain progress line is printed at most this often (and on state changes).
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Width of the progress bar, in characters.
const BAR_WIDTH: usize = 30;
/// Retry and pacing used by [`submit`].
const TIMING: Timing = Timing {
    rounds: 8,
    first_backoff: Duration::from_millis(200),
    max_backoff: Duration::from_secs(3),
    budget: Duration::from_secs(30),
    min_poll: Duration::from_millis(250),
    max_poll_failures: 10,
};

/// Why a submission did not end with a succeeded job.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The spec file (or stdin) could not be read.
    #[error("cannot read job spec {path}: {source}")]
    ReadSpec {
        /// The path given, or `stdin`.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The spec is not JSON at all (its fields are checked by the server).
    #[error("job spec {path} is not valid JSON: {source}")]
    InvalidSpec {
        /// The path given, or `stdin`.
        path: String,
        /// The parser's message, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// The current directory, needed to make relative paths absolute, is unknown.
    #[error("cannot determine the current directory: {source}")]
    CurrentDir {
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No master accepted a connection.
    #[error("no master reachable (tried {})", tried.join(", "))]
    NoMasterReachable {
        /// The HTTP addresses tried.
        tried: Vec<String>,
    },
    /// The masters kept answering that there is no leader (503/421) for the whole retry budget.
    #[error("no leader elected after {waited:?} (masters {})", tried.join(", "))]
    NoLeader {
        /// The HTTP addresses tried.
        tried: Vec<String>,
        /// How long the client retried.
        waited: Duration,
    },
    /// The server refused the request (bad spec, bad secret, unknown id, ...).
    #[error("rejected by the server ({status}): {message}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The server's `error` message, or the body.
        message: String,
    },
    /// The connection failed after the request may have been delivered, so it is not retried
    /// elsewhere (the job might exist): check `GET /api/jobs`.
    #[error("request to {master} failed: {source}")]
    Transport {
        /// The master's HTTP address.
        master: String,
        /// The transport error.
        #[source]
        source: Box<ureq::Transport>,
    },
    /// A 2xx answer that is not the JSON it should be.
    #[error("unexpected response from {master}: {reason}")]
    BadResponse {
        /// The master's HTTP address.
        master: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The job ended `failed` or `cancelled`.
    #[error("job {id} {state}: {}", error.as_deref().unwrap_or("no error message"))]
    JobFailed {
        /// The job id.
        id: String,
        /// The final state.
        state: JobState,
        /// The job's error message.
        error: Option<String>,
    },
}

/// A submission that was accepted (and, with `--wait`, succeeded).
#[derive(Clone, Debug, PartialEq)]
pub struct SubmitOutcome {
    /// The job id the cluster assigned.
    pub id: String,
    /// The HTTP address of the master that accepted it.
    pub master: String,
    /// The final job, when waited for.
    pub job: Option<JobView>,
}

/// The fields of the API's job JSON that the client shows.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct JobView {
    /// The job id.
    pub id: String,
    /// Where it is in its lifecycle.
    pub state: JobState,
    /// Tasks done and total.
    #[serde(default)]
    pub progress: Progress,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
    /// Output files, when the job writes any.
    #[serde(default)]
    pub output: Option<Vec<String>>,
    /// What a task job returned.
    #[serde(default)]
    pub result: Option<Value>,
    /// RFC 3339 times, null until they happen.
    #[serde(default)]
    pub submitted_at: Option<String>,
    /// When it started running.
    #[serde(default)]
    pub started_at: Option<String>,
    /// When it reached a final state.
    #[serde(default)]
    pub finished_at: Option<String>,
}

/// Submits the spec read from `spec_source` (a path, or `-` for stdin) to the cluster, prints
/// the job id on stdout and, if `wait`, shows progress on stderr until the job ends.
///
/// # Errors
/// See [`ClientError`]; with `wait`, a job that does not succeed is [`ClientError::JobFailed`].
pub fn submit(
    config: &ClusterConfig,
    spec_source: &str,
    wait: bool,
) -> Result<SubmitOutcome, ClientError> {
    let (path, text) = match spec_source {
        "-" => {
            let mut text = String::new();
            let read = std::io::stdin().read_to_string(&mut text);
            ("stdin".to_string(), read.map(|_| text))
        }
        path => (path.to_string(), std::fs::read_to_string(path)),
    };
    let text = text.map_err(|source| ClientError::ReadSpec {
        path: path.clone(),
        source,
    })?;
    let mut spec: Value =
        serde_json::from_str(&text).map_err(|source| ClientError::InvalidSpec { path, source })?;
    let cwd = std::env::current_dir().map_err(|source| ClientError::CurrentDir { source })?;
    absolutize_spec(&mut spec, &cwd);

    let masters = shuffled_masters(config, &mut rand::thread_rng());
    let http = Http::new(&config.secret, TIMING);
    let (index, id) = http.post_job(&masters, &spec.to_string())?;
    println!("{id}");
    let master = masters[index].clone();
    let mut outcome = SubmitOutcome {
        id,
        master,
        job: None,
    };
    if !wait {
        return Ok(outcome);
    }
    let started = Instant::now();
    let mut display = ProgressDisplay::new(std::io::stderr().is_terminal());
    let job = http.wait_for_job(&masters, index, &outcome.id, &mut |j| display.update(j));
    display.finish();
    let job = job?;
    let spec_output = spec.get("output").and_then(Value::as_str);
    eprintln!("{}", summary_line(&job, started.elapsed(), spec_output));
    if job.state != JobState::Succeeded {
        let (id, state, error) = (outcome.id, job.state, job.error);
        return Err(ClientError::JobFailed { id, state, error });
    }
    outcome.job = Some(job);
    Ok(outcome)
}

/// Makes the relative `input` entries and `output` of a `"kind": "mapreduce"` spec absolute
/// against `cwd` (the server does not know the submitter's directory). Absolute paths, other
/// fields and other kinds are left alone. Inputs are globs, so `cwd` is glob-escaped in them.
pub fn absolutize_spec(spec: &mut Value, cwd: &Path) {
    if spec.get("kind").and_then(Value::as_str) != Some("mapreduce") {
        return;
    }
    let escaped_cwd = glob::Pattern::escape(&cwd.to_string_lossy());
    let absolute = |base: &str, value: &mut Value| {
        if let Some(path) = value.as_str().filter(|p| !Path::new(p).is_absolute()) {
            *value = Value::String(Path::new(base).join(path).to_string_lossy().into_owned());
        }
    };
    match spec.get_mut("input") {
        Some(Value::Array(inputs)) => inputs.iter_mut().for_each(|i| absolute(&escaped_cwd, i)),
        Some(input) => absolute(&escaped_cwd, input),
        None => {}
    }
    if let Some(output) = spec.get_mut("output") {
        absolute(&cwd.to_string_lossy(), output);
    }
}

/// The masters' HTTP addresses in a uniformly random order (Fisher–Yates), so that clients
/// spread over the masters.
fn shuffled_masters(config: &ClusterConfig, rng: &mut impl rand::Rng) -> Vec<String> {
    let mut masters: Vec<String> = config.masters.iter().map(|m| m.http.clone()).collect();
    masters.shuffle(rng);
    masters
}

/// Bounds on retries and polling.
#[derive(Clone, Copy, Debug)]
struct Timing {
    /// Rounds over all masters while they answer "no leader".
    rounds: u32,
    first_backoff: Duration,
    max_backoff: Duration,
    /// Total time spent retrying "no leader".
    budget: Duration,
    /// Least time between two polls of a job (guards against a server that does not hold).
    min_poll: Duration,
    /// Consecutive failed polls before giving up on the wait.
    max_poll_failures: u32,
}

/// A blocking HTTP client of the masters.
struct Http {
    agent: ureq::Agent,
    auth: String,
    timing: Timing,
}

impl Http {
    fn new(secret: &str, timing: Timing) -> Http {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(CONNECT_TIMEOUT)
            .build();
        Http {
            agent,
            auth: format!("Bearer {secret}"),
            timing,
        }
    }

    /// Posts the spec to the first master that takes it; returns its index and the job id.
    fn post_job(&self, masters: &[String], body: &str) -> Result<(usize, String), ClientError> {
        let start = Instant::now();
        let mut backoff = self.timing.first_backoff;
        for round in 1..=self.timing.rounds {
            let mut no_leader = false;
            for (index, master) in masters.iter().enumerate() {
                let response = (self.agent.post(&format!("{}api/jobs", base_url(master))))
                    .timeout(POST_TIMEOUT)
                    .set("Authorization", &self.auth)
                    .set("Content-Type", "application/json")
                    .send_string(body);
                match response {
                    Ok(response) => return Ok((index, parse_created(master, response)?)),
                    Err(ureq::Error::Status(421 | 503, _)) => no_leader = true,
                    Err(ureq::Error::Status(status, response)) => {
                        return Err(rejected(status, response))
                    }
                    Err(ureq::Error::Transport(t)) if never_sent(&t) => {
                        debug!(%master, error = %t, "master unreachable, trying the next");
                    }
                    Err(ureq::Error::Transport(t)) => {
                        let source = Box::new(t);
                        return Err(ClientError::Transport {
                            master: master.clone(),
                            source,
                        });
                    }
                }
            }
            if !no_leader {
                return Err(ClientError::NoMasterReachable {
                    tried: masters.to_vec(),
                });
            }
            if round == self.timing.rounds || start.elapsed() + backoff > self.timing.budget {
                break;
            }
            warn!(?backoff, "no leader yet; retrying");
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(self.timing.max_backoff);
        }
        Err(ClientError::NoLeader {
            tried: masters.to_vec(),
            waited: start.elapsed(),
        })
    }

    /// Long-polls job `id`, starting at `masters[index]`, until it is final; every answer is
    /// shown to `on_update`. A failing master hands over to the next one, up to
    /// `max_poll_failures` failures in a row.
    fn wait_for_job(
        &self,
        masters: &[String],
        mut index: usize,
        id: &str,
        on_update: &mut dyn FnMut(&JobView),
    ) -> Result<JobView, ClientError> {
        let mut failures = 0;
        let mut backoff = self.timing.first_backoff;
        loop {
            let master = &masters[index % masters.len()];
            let url = format!("{}api/jobs/{id}?wait_ms={WAIT_MS}", base_url(master));
            let asked = Instant::now();
            let last_error = match self.agent.get(&url).timeout(POLL_TIMEOUT).call() {
                Ok(response) => {
                    let job: JobView = parse_json(master, response)?;
                    on_update(&job);
                    if job.state.is_final() {
                        return Ok(job);
                    }
                    (failures, backoff) = (0, self.timing.first_backoff);
                    std::thread::sleep(self.timing.min_poll.saturating_sub(asked.elapsed()));
                    continue;
                }
                // 404: a lagging follower may not know the job yet; 5xx: leader change.
                Err(ureq::Error::Status(status, response)) if status == 404 || status >= 500 => {
                    rejected(status, response)
                }
                Err(ureq::Error::Status(status, response)) => {
                    return Err(rejected(status, response))
                }
                Err(ureq::Error::Transport(t)) => {
                    let source = Box::new(t);
                    ClientError::Transport {
                        master: master.clone(),
                        source,
                    }
                }
            };
            failures += 1;
            warn!(%master, error = %last_error, failures, "polling the job failed; trying another master");
            if failures >= self.timing.max_poll_failures {
                return Err(match last_error {
                    ClientError::Transport { .. } => ClientError::NoMasterReachable {
                        tried: masters.to_vec(),
                    },
                    other => other,
                });
            }
            index += 1;
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(self.timing.max_backoff);
        }
    }
}

/// Whether a transport error happened before the request could reach the server.
fn never_sent(t: &ureq::Transport) -> bool {
    matches!(
        t.kind(),
        ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns
    )
}

fn parse_json<T: serde::de::DeserializeOwned>(
    master: &str,
    response: ureq::Response,
) -> Result<T, ClientError> {
    let bad = |reason: String| ClientError::BadResponse {
        master: master.into(),
        reason,
    };
    let body = response.into_string().map_err(|e| bad(e.to_string()))?;
    serde_json::from_str(&body).map_err(|e| bad(format!("{e} in {body:.200}")))
}

fn parse_created(master: &str, response: ureq::Response) -> Result<String, ClientError> {
    let body: Value = parse_json(master, response)?;
    match body.get("id") {
        Some(Value::String(id)) => Ok(id.clone()),
        Some(Value::Number(id)) => Ok(id.to_string()),
        _ => Err(ClientError::BadResponse {
            master: master.into(),
            reason: format!("no job id in {body}"),
        }),
    }
}

/// [`ClientError::Rejected`] with the server's `{"error": ...}` message, or its body.
fn rejected(status: u16, response: ureq::Response) -> ClientError {
    let body = response.into_string().unwrap_or_default();
    let json = serde_json::from_str::<Value>(&body).ok();
    let message = match json
        .as_ref()
        .and_then(|j| j.get("error"))
        .and_then(Value::as_str)
    {
        Some(message) => message.to_string(),
        None if body.trim().is_empty() => "(no message)".into(),
        None => format!("{:.500}", body.trim()),
    };
    ClientError::Rejected { status, message }
}

/// Draws the progress of a job on stderr: a redrawn bar on a terminal, otherwise a plain line on
/// each state change and every [`PLAIN_PROGRESS_EVERY`].
struct ProgressDisplay {
    tty: bool,
    started: Instant,
    last: Option<(Instant, JobState)>,
}

impl ProgressDisplay {
    fn new(tty: bool) -> ProgressDisplay {
        ProgressDisplay {
            tty,
            started: Instant::now(),
            last: None,
        }
    }

    fn update(&mut self, job: &JobView) {
        let line = progress_line(job, self.started.elapsed(), self.tty);
        let mut stderr = std::io::stderr().lock();
        let due = self
            .last
            .is_none_or(|(at, state)| state != job.state || at.elapsed() >= PLAIN_PROGRESS_EVERY);
        // Progress is best effort: a closed stderr must not fail the job.
        if self.tty {
            let _ = write!(stderr, "\r{line}\x1b[K").and_then(|()| stderr.flush());
        } else if due {
            let _ = writeln!(stderr, "{line}");
        }
        if self.tty || due {
            self.last = Some((Instant::now(), job.state));
        }
    }

    fn finish(&mut self) {
        if self.tty && self.last.is_some() {
            eprintln!();
        }
    }
}

/// `job ID [#####-----] done/total state 12s` (the bar only when `bar`).
fn progress_line(job: &JobView, elapsed: Duration, bar: bool) -> String {
    let Progress { done, total } = job.progress;
    let bar = if bar {
        let filled = (done.min(total) * BAR_WIDTH as u64)
            .checked_div(total)
            .unwrap_or(0) as usize;
        format!(
            "[{}{}] ",
            "#".repeat(filled),
            "-".repeat(BAR_WIDTH - filled)
        )
    } else {
        String::new()
    };
    format!(
        "job {} {bar}{done}/{total} {} {}s",
        job.id,
        job.state,
        elapsed.as_secs()
    )
}

/// The line printed when the job is final: state, duration, and output, result or error.
fn summary_line(job: &JobView, waited: Duration, spec_output: Option<&str>) -> String {
    let time = |t: &Option<String>| {
        t.as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    };
    let from = time(&job.started_at).or_else(|| time(&job.submitted_at));
    let took = match (from, time(&job.finished_at)) {
        (Some(from), Some(to)) => (to - from).to_std().unwrap_or(waited),
        _ => waited,
    };
    let mut line = format!("job {} {} in {:.1}s", job.id, job.state, took.as_secs_f64());
    if let Some(error) = &job.error {
        line += &format!(": {error}");
    } else if let Some(dir) = spec_output {
        line += &format!("; output {dir}");
    } else if let Some(files) = job.output.as_ref().filter(|f| !f.is_empty()) {
        line += &format!("; output {}", files.join(", "));
    } else if let Some(result) = job.result.as_ref().filter(|r| !r.is_null()) {
        line += &format!("; result {:.500}", result.to_string());
    }
    line
}

#[cfg(test)]
mod tests {
    use std::io::BufRead;
    use std::net::TcpListener;
    use std::sync::mpsc;

    use rand::SeedableRng;
    use serde_json::json;

    use super::*;

    const FAST: Timing = Timing {
        rounds: 3,
        first_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
        budget: Duration::from_secs(5),
        min_poll: Duration::ZERO,
        max_poll_failures: 3,
    };

    /// Serves `responses` (status, body) one per connection on 127.0.0.1:0; every request read
    /// (head and body) goes to the channel.
    fn serve(responses: Vec<(u16, String)>) -> (String, mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for (status, body) in responses {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = std::io::BufReader::new(stream);
                let (mut request, mut length) = (String::new(), 0);
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    request += &line;
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                }
                let mut body_in = vec![0; length];
                reader.read_exact(&mut body_in).unwrap();
                request += &String::from_utf8_lossy(&body_in);
                let _ = tx.send(request);
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let mut stream = reader.into_inner();
                stream.write_all(head.as_bytes()).unwrap();
                stream.write_all(body.as_bytes()).unwrap();
            }
        });
        (addr, rx)
    }

    /// An address nothing listens on (bound, then closed).
    fn refused() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    }

    fn job(state: &str, done: u64) -> (u16, String) {
        let body = json!({"id": "42", "state": state, "progress": {"done": done, "total": 2}});
        (200, body.to_string())
    }

    #[test]
    fn relative_mapreduce_paths_become_absolute() {
        let mut spec = json!({"kind": "mapreduce", "job": "wordcount",
            "input": ["data/*.txt", "/abs/x.txt"], "output": "out", "reducers": 2});
        absolutize_spec(&mut spec, Path::new("/home/u"));
        assert_eq!(spec["input"], json!(["/home/u/data/*.txt", "/abs/x.txt"]));
        assert_eq!(spec["output"], json!("/home/u/out"));
        assert_eq!(spec["reducers"], json!(2));

        // The cwd is literal text inside a glob, the output is not a glob.
        let mut spec = json!({"kind": "mapreduce", "input": ["a*"], "output": "o"});
        absolutize_spec(&mut spec, Path::new("/x[1]"));
        assert_eq!(spec["input"], json!(["/x[[]1[]]/a*"]));
        assert_eq!(spec["output"], json!("/x[1]/o"));

        let crawl = json!({"kind": "crawl", "job": "links", "output": "out"});
        let mut same = crawl.clone();
        absolutize_spec(&mut same, Path::new("/home/u"));
        assert_eq!(same, crawl);
    }

    #[test]
    fn shuffling_puts_every_master_first_sometimes() {
        let master = |id| jobs::config::MasterEntry {
            id,
            rpc: "-".into(),
            http: format!("h{id}"),
        };
        let config = ClusterConfig {
            path: "/c.toml".into(),
            data_dir: "/d".into(),
            secret: "s".into(),
            masters: (1..=3).map(master).collect(),
            workers: vec![],
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut firsts = std::collections::BTreeSet::new();
        for _ in 0..60 {
            let mut order = shuffled_masters(&config, &mut rng);
            firsts.insert(order[0].clone());
            order.sort();
            assert_eq!(order, ["h1", "h2", "h3"]);
        }
        assert_eq!(firsts.len(), 3, "{firsts:?}");
    }

    #[test]
    fn job_json_and_states_parse() {
        let text = r#"{"id": "7", "kind": "task", "job": "echo", "state": "failed",
            "submitted_at": "2024-01-01T00:00:00.000Z", "started_at": "2024-01-01T00:00:01.000Z",
            "finished_at": "2024-01-01T00:00:03.500Z", "progress": {"done": 1, "total": 3},
            "error": "boom", "output": [], "result": null}"#;
        let job: JobView = serde_json::from_str(text).unwrap();
        assert_eq!(job.state, JobState::Failed);
        assert!(job.state.is_final());
        assert_eq!(job.progress, Progress { done: 1, total: 3 });
        assert_eq!(job.error.as_deref(), Some("boom"));
        let summary = summary_line(&job, Duration::from_secs(99), None);
        assert_eq!(summary, "job 7 failed in 2.5s: boom");
        let line = progress_line(&job, Duration::from_secs(4), true);
        assert_eq!(
            line,
            format!("job 7 [{}{}] 1/3 failed 4s", "#".repeat(10), "-".repeat(20))
        );

        assert!(serde_json::from_str::<JobView>(r#"{"id": "8", "state": "paused"}"#).is_err());
    }

    #[test]
    fn bad_request_becomes_rejected_with_the_servers_message() {
        let (addr, requests) = serve(vec![(400, r#"{"error":"x"}"#.into())]);
        let err = Http::new("sekrit", FAST)
            .post_job(&[addr], r#"{"kind":"task"}"#)
            .unwrap_err();
        assert!(
            matches!(&err, ClientError::Rejected { status: 400, message } if message == "x"),
            "{err:?}"
        );
        let request = requests.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(request.starts_with("POST /api/jobs "), "{request}");
        assert!(
            request.contains("Authorization: Bearer sekrit\r\n"),
            "{request}"
        );
        assert!(request.ends_with(r#"{"kind":"task"}"#), "{request}");
    }

    #[test]
    fn refused_master_falls_through_and_no_leader_is_retried() {
        let (addr, _requests) = serve(vec![
            (503, r#"{"error":"no leader"}"#.into()),
            (201, r#"{"id":"123"}"#.into()),
        ]);
        let masters = [refused(), addr];
        let (index, id) = Http::new("s", FAST).post_job(&masters, "{}").unwrap();
        assert_eq!((index, id.as_str()), (1, "123"));

        let err = Http::new("s", FAST)
            .post_job(&[refused()], "{}")
            .unwrap_err();
        assert!(matches!(err, ClientError::NoMasterReachable { ref tried } if tried.len() == 1));
    }

    #[test]
    fn waiting_follows_the_job_to_its_end_across_masters() {
        let (addr, requests) = serve(vec![job("running", 1), job("succeeded", 2)]);
        let masters = [refused(), addr];
        let mut seen = Vec::new();
        let done = Http::new("s", FAST)
            .wait_for_job(&masters, 0, "42", &mut |j| {
                seen.push((j.state, j.progress.done))
            })
            .unwrap();
        assert_eq!(done.state, JobState::Succeeded);
        assert_eq!(seen, [(JobState::Running, 1), (JobState::Succeeded, 2)]);
        let request = requests.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(
            request.starts_with("GET /api/jobs/42?wait_ms=1000 "),
            "{request}"
        );

        let (addr, _requests) = serve(vec![(404, r#"{"error":"no job 9"}"#.into()); 3]);
        let err = Http::new("s", FAST)
            .wait_for_job(&[addr], 0, "9", &mut |_| {})
            .unwrap_err();
        assert!(
            matches!(err, ClientError::Rejected { status: 404, .. }),
            "{err:?}"
        );
    }
}

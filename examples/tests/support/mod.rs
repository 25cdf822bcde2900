//! The multi-process cluster harness: [`Cluster`] runs the real `master` binary and the
//! `example-worker` binary on loopback, each with its own temporary directory, cluster file,
//! ports and logs; plus a deterministic input generator ([`generate_corpus`]), sequential
//! reference implementations of the built-in jobs ([`reference_wordcount`],
//! [`reference_index`]) and a strict reader of MapReduce output directories ([`read_output`]).
//!
//! Rules (STYLE.md, "Tests"): no fixed ports (the master's two ports are found by binding port
//! 0; workers bind port 0 themselves and report their address when they register), no fixed
//! sleeps (everything waits with [`await_condition`], which polls), every loop bounded in count
//! and time, and every child killed in `Drop`, which prints the children's logs when the test
//! is failing.

// Each test crate that includes this module uses a different part of it.
#![allow(dead_code)]

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

/// How often [`await_condition`] re-checks.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long a master gets to become leader, and workers to register.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a process gets to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How many lines of each log a failure shows.
pub const LOG_TAIL_LINES: usize = 60;
/// The secret of every test cluster.
pub const SECRET: &str = "test-secret-0123";
/// Set this environment variable to keep each cluster's directory (logs, data) after the test.
pub const KEEP_ENV: &str = "CLUSTER_TEST_KEEP";
/// How long the server holds one long poll of [`Cluster::wait_job`].
const WAIT_MS: u64 = 1000;

/// Polls `condition` every [`POLL_INTERVAL`] until it holds; panics with `what` after
/// `timeout`. The loop is bounded in time and in count.
pub fn await_condition(what: &str, timeout: Duration, condition: impl FnMut() -> bool) {
    if !poll(timeout, condition) {
        panic!("timed out after {timeout:?} waiting for {what}");
    }
}

/// Whether `condition` came true within `timeout` (checked at least once).
fn poll(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let max_rounds = timeout.as_millis() / POLL_INTERVAL.as_millis() + 2;
    for _ in 0..max_rounds {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    condition()
}

/// A free loopback port: bound to port 0, then released (the master needs a known address).
pub fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener
        .local_addr()
        .expect("local_addr of a bound listener")
}

/// `target/<profile>/<name>`: the test executable lives in `target/<profile>/deps/`, and cargo
/// puts the workspace's binaries one directory up (ripgrep's tests find `rg` the same way).
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let mut dir = exe
        .parent()
        .expect("the test executable's directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} does not exist: build the binaries first: cargo build --workspace --bins",
        path.display()
    );
    path
}

/// The `master` binary.
pub fn master_bin() -> PathBuf {
    workspace_binary("master")
}

/// The worker binary that serves the built-in jobs and this crate's example jobs.
pub fn worker_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_example-worker"))
}

/// `method url` with an optional JSON body and extra headers, through `agent`; `None` on a
/// transport error (connection refused, timeout). Error statuses are answers too:
/// `(status, body)`, the body parsed as JSON or, if it is not JSON, as a JSON string.
pub fn http_request(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Option<(u16, Value)> {
    let mut request = agent.request(method, url);
    for (name, value) in headers {
        request = request.set(name, value);
    }
    let result = match body {
        Some(body) => request
            .set("Content-Type", "application/json")
            .send_string(body),
        None => request.call(),
    };
    let response = match result {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response,
        Err(ureq::Error::Transport(_)) => return None,
    };
    let status = response.status();
    let text = response.into_string().ok()?;
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Some((status, value))
}

/// The last `lines` lines of a log, with ANSI colour codes removed.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = read_log(path);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A whole log, with ANSI colour codes removed (empty if it does not exist).
pub fn read_log(path: &Path) -> String {
    let bytes = fs::read(path).unwrap_or_default();
    strip_ansi(&String::from_utf8_lossy(&bytes))
}

/// Removes `ESC [ ... <letter>` sequences.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Sends SIGTERM to a process (through the `kill` command, so no libc binding is needed).
pub fn sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run `kill`");
    assert!(status.success(), "kill -TERM {pid} failed: {status}");
}

/// Whether a process with this id exists (and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Field 3 is the state; after the `(comm)` field, which may contain spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Waits for a child to exit, at most `timeout`.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let mut status = None;
    poll(timeout, || {
        status = child.try_wait().expect("try_wait on a child");
        status.is_some()
    });
    status
}

/// What a test cluster looks like.
#[derive(Clone, Debug)]
pub struct ClusterOpts {
    /// How many workers, named `w1`, `w2`, ...
    pub workers: usize,
    /// Task slots of each worker.
    pub slots: u32,
    /// How many masters (1, 3 or 5), with ids 1, 2, ...
    pub masters: u64,
}

impl Default for ClusterOpts {
    fn default() -> Self {
        ClusterOpts {
            workers: 2,
            slots: 2,
            masters: 1,
        }
    }
}

impl ClusterOpts {
    /// `workers` workers with `slots` slots each.
    pub fn new(workers: usize, slots: u32) -> ClusterOpts {
        ClusterOpts {
            workers,
            slots,
            masters: 1,
        }
    }

    /// With `masters` masters instead of one.
    pub fn with_masters(mut self, masters: u64) -> ClusterOpts {
        self.masters = masters;
        self
    }
}

/// One child process of the harness.
struct Node {
    /// `master-1`, `worker-w1`, or a test's own name.
    name: String,
    /// The program and its arguments, to restart it.
    program: PathBuf,
    args: Vec<String>,
    /// Where its stdout and stderr are appended.
    log: PathBuf,
    /// The running process, if any.
    child: Option<Child>,
}

/// A running cluster of real processes on loopback. Dropping it kills them all.
pub struct Cluster {
    // Dropped last (fields drop after `Drop::drop`), so logs survive until they are printed.
    dir: tempfile::TempDir,
    /// The cluster file.
    pub config_path: PathBuf,
    /// Master 1's tarpc address.
    pub master_rpc: SocketAddr,
    /// Master 1's HTTP address.
    pub master_http: SocketAddr,
    /// Every master: (id, rpc, http).
    pub masters: Vec<(u64, SocketAddr, SocketAddr)>,
    /// The master HTTP requests go to (the leader, once known).
    target: Cell<SocketAddr>,
    /// The workers' names.
    pub workers: Vec<String>,
    nodes: Vec<Node>,
    agent: ureq::Agent,
    /// Set once a failure has printed the logs, so `Drop` does not print them twice.
    logs_shown: Cell<bool>,
}

impl Cluster {
    /// Writes a cluster file into a new temporary directory, starts one master and
    /// `opts.workers` workers, and waits until the master is leader and every worker is alive.
    pub fn start(opts: ClusterOpts) -> Cluster {
        let cluster = Cluster::configure(opts);
        cluster.start_all()
    }

    /// Writes the cluster file but starts nothing.
    pub fn configure(opts: ClusterOpts) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("cluster-test-")
            .disable_cleanup(std::env::var_os(KEEP_ENV).is_some())
            .tempdir()
            .expect("create a temporary directory");
        let mut taken = std::collections::HashSet::new();
        let mut port = || loop {
            let addr = free_port();
            if taken.insert(addr) {
                break addr;
            }
        };
        let masters: Vec<(u64, SocketAddr, SocketAddr)> =
            (1..=opts.masters).map(|id| (id, port(), port())).collect();
        let (master_rpc, master_http) = (masters[0].1, masters[0].2);
        let workers: Vec<String> = (1..=opts.workers).map(|i| format!("w{i}")).collect();
        let config_path = dir.path().join("cluster.toml");
        fs::write(
            &config_path,
            cluster_toml(SECRET, &masters, &workers, opts.slots, None),
        )
        .expect("write cluster.toml");
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(2))
            .timeout(Duration::from_millis(WAIT_MS + 15_000))
            .build();
        let mut cluster = Cluster {
            config_path: config_path.clone(),
            master_rpc,
            master_http,
            target: Cell::new(master_http),
            masters: masters.clone(),
            workers: workers.clone(),
            nodes: Vec::new(),
            agent,
            logs_shown: Cell::new(false),
            dir,
        };
        let config = config_path.to_string_lossy().into_owned();
        for (id, _, _) in &masters {
            cluster.add_node(
                &format!("master-{id}"),
                master_bin(),
                vec![
                    "run".into(),
                    "--config".into(),
                    config.clone(),
                    "--id".into(),
                    id.to_string(),
                ],
            );
        }
        for name in &workers {
            cluster.add_node(
                &format!("worker-{name}"),
                worker_bin(),
                vec![
                    "--config".into(),
                    config.clone(),
                    "--name".into(),
                    name.clone(),
                ],
            );
        }
        cluster
    }

    fn start_all(mut self) -> Cluster {
        for (id, _, _) in self.masters.clone() {
            self.spawn(&format!("master-{id}"));
        }
        self.await_leader();
        for name in self.workers.clone() {
            self.spawn(&format!("worker-{name}"));
        }
        let names = self.workers.clone();
        self.await_condition(
            "every worker to register and be alive",
            STARTUP_TIMEOUT,
            || names.iter().all(|name| self.worker_alive(name)),
        );
        self
    }

    /// The temporary directory everything lives in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A fresh directory inside the cluster's directory.
    pub fn mkdir(&self, name: &str) -> PathBuf {
        let path = self.dir().join(name);
        fs::create_dir_all(&path).expect("create a directory");
        path
    }

    /// Registers a process the harness should own (start, kill, log, kill on drop).
    pub fn add_node(&mut self, name: &str, program: PathBuf, args: Vec<String>) {
        assert!(
            self.nodes.iter().all(|n| n.name != name),
            "node {name} twice"
        );
        let log = self.dir().join(format!("{name}.log"));
        self.nodes.push(Node {
            name: name.to_string(),
            program,
            args,
            log,
            child: None,
        });
    }

    fn node(&mut self, name: &str) -> &mut Node {
        let known: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name} (have {known:?})"))
    }

    /// Starts a registered node (again); its output is appended to its log.
    pub fn spawn(&mut self, name: &str) {
        let dir = self.dir().to_path_buf();
        let node = self.node(name);
        assert!(node.child.is_none(), "{name} is already running");
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("open a log file");
        writeln!(log, "--- harness: starting {name} ---").expect("write a log file");
        let stderr = log.try_clone().expect("clone a log file handle");
        let child = Command::new(&node.program)
            .args(&node.args)
            .current_dir(&dir)
            .env(
                "RUST_LOG",
                std::env::var("CLUSTER_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", node.program.display()));
        node.child = Some(child);
    }

    /// The process id of a running node.
    pub fn pid(&mut self, name: &str) -> u32 {
        self.node(name)
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("{name} is not running"))
            .id()
    }

    /// A node's whole log so far.
    pub fn log(&self, name: &str) -> String {
        let node = self.nodes.iter().find(|n| n.name == name);
        read_log(&node.unwrap_or_else(|| panic!("no node {name}")).log)
    }

    /// The master's whole log so far.
    pub fn master_log(&self) -> String {
        self.log("master-1")
    }

    /// The tail of every node's log.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let _ = writeln!(
                out,
                "===== {} ({}) =====\n{}",
                node.name,
                node.log.display(),
                log_tail(&node.log, LOG_TAIL_LINES)
            );
        }
        out
    }

    /// Like [`await_condition`], but the panic shows the tail of every log.
    pub fn await_condition(&self, what: &str, timeout: Duration, condition: impl FnMut() -> bool) {
        if !poll(timeout, condition) {
            self.logs_shown.set(true);
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                self.log_tails()
            );
        }
    }

    /// Waits until some master answers `/api/health` as leader, and sends requests there.
    fn await_leader(&self) {
        self.await_condition("a master to lead", STARTUP_TIMEOUT, || {
            self.find_leader().is_some()
        });
    }

    /// The id of the master that says it leads (among the running ones); HTTP requests go to
    /// it from now on.
    pub fn find_leader(&self) -> Option<u64> {
        for (id, _, http) in &self.masters {
            let url = format!("http://{http}/api/health");
            let Ok(response) = self.agent.get(&url).timeout(Duration::from_secs(2)).call() else {
                continue;
            };
            let Ok(body) = response.into_json::<Value>() else {
                continue;
            };
            if body["role"] == "leader" {
                self.target.set(*http);
                return Some(*id);
            }
        }
        None
    }

    /// Sends HTTP requests to master `id` from now on.
    pub fn use_master(&self, id: u64) {
        let (_, _, http) = self
            .masters
            .iter()
            .find(|m| m.0 == id)
            .expect("a configured master");
        self.target.set(*http);
    }

    /// SIGKILLs master `id` and reaps it.
    pub fn kill_master(&mut self, id: u64) {
        let node = self.node(&format!("master-{id}"));
        let mut child = node.child.take().expect("the master is running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGKILLs a worker (`w1`) and reaps it.
    pub fn kill_worker(&mut self, name: &str) {
        let node = self.node(&format!("worker-{name}"));
        let mut child = node
            .child
            .take()
            .unwrap_or_else(|| panic!("{name} is not running"));
        child.kill().expect("kill -9 a worker");
        child.wait().expect("reap a killed worker");
    }

    /// Starts a worker again and waits until the master shows it alive.
    pub fn start_worker(&mut self, name: &str) {
        self.spawn(&format!("worker-{name}"));
        self.await_condition(
            &format!("worker {name} to be alive"),
            STARTUP_TIMEOUT,
            || self.worker_alive(name),
        );
    }

    /// Stops a node with SIGTERM and waits for it; panics if it does not exit in time or exits
    /// with a failure (every node must stop cleanly on SIGTERM).
    pub fn stop_node(&mut self, name: &str) -> ExitStatus {
        let node = self.node(name);
        let mut child = node
            .child
            .take()
            .unwrap_or_else(|| panic!("{name} is not running"));
        sigterm(child.id());
        let status = wait_exit(&mut child, STOP_TIMEOUT);
        let Some(status) = status else {
            let _ = child.kill();
            let _ = child.wait();
            self.logs_shown.set(true);
            panic!(
                "{name} did not exit within {STOP_TIMEOUT:?} of SIGTERM\n{}",
                self.log_tails()
            );
        };
        if !status.success() {
            self.logs_shown.set(true);
            panic!(
                "{name} exited with {status} after SIGTERM\n{}",
                self.log_tails()
            );
        }
        status
    }

    /// Stops every master with SIGTERM and waits for each to exit.
    pub fn stop_master(&mut self) {
        for (id, _, _) in self.masters.clone() {
            self.stop_node(&format!("master-{id}"));
        }
    }

    /// Starts every master again (same config, same data dirs) and waits until one leads.
    pub fn start_master(&mut self) {
        for (id, _, _) in self.masters.clone() {
            self.spawn(&format!("master-{id}"));
        }
        self.await_leader();
    }

    /// Starts master `id` again (same config and data dir), without waiting.
    pub fn restart_master(&mut self, id: u64) {
        self.spawn(&format!("master-{id}"));
    }

    /// Master `id`'s own metrics (`/metrics` is answered locally, never forwarded).
    pub fn local_metrics(&self, id: u64) -> Option<String> {
        let (_, _, http) = self.masters.iter().find(|m| m.0 == id)?;
        let response = self
            .agent
            .get(&format!("http://{http}/metrics"))
            .call()
            .ok()?;
        response.into_string().ok()
    }

    // ----- HTTP -----

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.target.get())
    }

    /// Sends a request; `None` on a transport error (connection refused, timeout).
    /// Error statuses are answers too: `(status, body)`, the body parsed as JSON or, if it is
    /// not JSON, as a JSON string.
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        auth: Option<&str>,
    ) -> Option<(u16, Value)> {
        let bearer = auth.map(|secret| format!("Bearer {secret}"));
        let headers: Vec<(&str, &str)> = bearer
            .iter()
            .map(|b| ("Authorization", b.as_str()))
            .collect();
        http_request(&self.agent, method, &self.url(path), body, &headers)
    }

    /// Like [`Cluster::try_request`], but a transport error panics.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        auth: Option<&str>,
    ) -> (u16, Value) {
        self.try_request(method, path, body, auth)
            .unwrap_or_else(|| {
                self.logs_shown.set(true);
                panic!(
                    "{method} {path}: no answer from the master\n{}",
                    self.log_tails()
                )
            })
    }

    /// `GET path`, `None` on a transport error.
    pub fn try_get(&self, path: &str) -> Option<(u16, Value)> {
        self.try_request("GET", path, None, None)
    }

    /// `GET path` → `(status, body)`.
    pub fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, None, None)
    }

    /// `POST /api/jobs` with the secret → `(status, body)`.
    pub fn submit(&self, spec: &Value) -> (u16, Value) {
        self.submit_raw(&spec.to_string(), Some(SECRET))
    }

    /// `POST /api/jobs` with any body and any (or no) bearer token.
    pub fn submit_raw(&self, body: &str, auth: Option<&str>) -> (u16, Value) {
        self.request("POST", "/api/jobs", Some(body), auth)
    }

    /// Submits a spec that must be accepted (201) and returns the job id.
    pub fn submit_ok(&self, spec: &Value) -> String {
        let (status, body) = self.submit(spec);
        assert_eq!(status, 201, "submitting {spec} answered {body}");
        body["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no string id in {body}"))
            .to_string()
    }

    /// `POST /api/jobs/{id}/cancel` with the secret.
    pub fn cancel(&self, id: &str) -> (u16, Value) {
        self.request(
            "POST",
            &format!("/api/jobs/{id}/cancel"),
            Some(""),
            Some(SECRET),
        )
    }

    /// `GET /api/jobs/{id}`, which must answer 200.
    pub fn job(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/api/jobs/{id}"));
        assert_eq!(status, 200, "GET /api/jobs/{id}: {body}");
        body
    }

    /// Long-polls a job until it is `succeeded`, `failed` or `cancelled`, at most `timeout`.
    pub fn wait_job(&self, id: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        // Each round either holds for up to WAIT_MS or sleeps POLL_INTERVAL: the deadline ends
        // the loop, the count only bounds it.
        let rounds = timeout.as_millis() / POLL_INTERVAL.as_millis() + 20;
        let mut last = Value::Null;
        for _ in 0..rounds {
            if let Some((200, job)) = self.try_get(&format!("/api/jobs/{id}?wait_ms={WAIT_MS}")) {
                if is_final(&job) {
                    return job;
                }
                last = job;
            } else {
                // The master is restarting or the answer was not 200: do not spin.
                std::thread::sleep(POLL_INTERVAL);
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        self.logs_shown.set(true);
        panic!(
            "job {id} did not end within {timeout:?}; last seen: {last:#}\n{}",
            self.log_tails()
        );
    }

    /// Waits for a job that must succeed, and returns it.
    pub fn wait_success(&self, id: &str, timeout: Duration) -> Value {
        let job = self.wait_job(id, timeout);
        if job["state"] != "succeeded" {
            self.logs_shown.set(true);
            panic!("job {id} did not succeed: {job:#}\n{}", self.log_tails());
        }
        job
    }

    /// `GET /api/cluster`'s worker entry of this name, if the master lists it.
    pub fn worker_view(&self, name: &str) -> Option<Value> {
        let (status, body) = self.try_get("/api/cluster")?;
        if status != 200 {
            return None;
        }
        body["workers"]
            .as_array()?
            .iter()
            .find(|w| w["name"] == name)
            .cloned()
    }

    /// Whether the master lists this worker as alive.
    pub fn worker_alive(&self, name: &str) -> bool {
        self.worker_view(name).is_some_and(|w| w["alive"] == true)
    }

    /// Writes a job spec to a file in the cluster's directory, for `master submit`.
    pub fn write_spec(&self, name: &str, spec: &Value) -> PathBuf {
        let path = self.dir().join(name);
        fs::write(
            &path,
            serde_json::to_string_pretty(spec).expect("serialize a spec"),
        )
        .expect("write a spec");
        path
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::env::var_os(KEEP_ENV).is_some() {
            eprintln!("kept cluster directory {}", self.dir().display());
        }
        if std::thread::panicking() && !self.logs_shown.get() {
            eprintln!(
                "cluster directory: {}\n{}",
                self.dir().display(),
                self.log_tails()
            );
        }
    }
}

/// The text of a cluster file: one master, these workers (binding any port), an optional
/// worker `bin`.
pub fn cluster_toml(
    secret: &str,
    masters: &[(u64, SocketAddr, SocketAddr)],
    workers: &[String],
    slots: u32,
    worker_bin: Option<&Path>,
) -> String {
    let mut text = format!("[cluster]\ndata_dir = \"data\"\nsecret = \"{secret}\"\n");
    for (id, rpc, http) in masters {
        let _ = write!(
            text,
            "\n[[master]]\nid = {id}\nrpc = \"{rpc}\"\nhttp = \"{http}\"\n"
        );
    }
    for name in workers {
        let _ = write!(
            text,
            "\n[[worker]]\nname = \"{name}\"\nrpc = \"127.0.0.1:0\"\nslots = {slots}\n"
        );
        if let Some(bin) = worker_bin {
            let _ = writeln!(text, "bin = {:?}", bin.to_string_lossy());
        }
    }
    text
}

/// Whether a job view is in a final state.
pub fn is_final(job: &Value) -> bool {
    matches!(
        job["state"].as_str(),
        Some("succeeded" | "failed" | "cancelled")
    )
}

/// The tasks of a job view of this kind (`map`, `reduce`, `run`).
pub fn tasks_of_kind<'a>(job: &'a Value, kind: &str) -> Vec<&'a Value> {
    job["tasks"]
        .as_array()
        .unwrap_or_else(|| panic!("no tasks in {job:#}"))
        .iter()
        .filter(|t| t["kind"] == kind)
        .collect()
}

/// Every attempt of every task of this kind.
pub fn attempts_of_kind<'a>(job: &'a Value, kind: &str) -> Vec<&'a Value> {
    tasks_of_kind(job, kind)
        .into_iter()
        .flat_map(|t| t["attempts"].as_array().into_iter().flatten())
        .collect()
}

/// Milliseconds since the epoch of an RFC 3339 UTC time (`2024-05-01T12:00:00.250Z`).
pub fn rfc3339_ms(text: &str) -> i64 {
    parse_rfc3339_ms(text).unwrap_or_else(|| panic!("`{text}` is not an RFC 3339 UTC time"))
}

fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let rest = text.strip_suffix('Z')?;
    let (date, time) = rest.split_once('T')?;
    let fields = |s: &str, sep: char| -> Option<Vec<i64>> {
        s.split(sep).map(|f| f.parse::<i64>().ok()).collect()
    };
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let (date, hms) = (fields(date, '-')?, fields(hms, ':')?);
    let (&[y, m, day], &[h, min, s]) = (&date[..], &hms[..]) else {
        return None;
    };
    let millis: i64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + min) * 60_000 + s * 1000 + millis)
}

// ----- input -----

/// Words of the generated corpus, most frequent first (Zipf-ish: weight 1/rank). Non-ASCII
/// words are spread over the ranks: German ß, French accents, a diaeresis, CJK, Greek (with a
/// final sigma when lowercased), a titlecase digraph, and the Turkish dotted capital I (whose
/// lowercase is two chars).
const WORDS: &[&str] = &[
    "the",
    "and",
    "Straße",
    "of",
    "to",
    "map",
    "ÉTÉ",
    "reduce",
    "naïve",
    "a",
    "日本語",
    "in",
    "Ωμέγα",
    "worker",
    "ǅemal",
    "master",
    "ΟΔΟΣ",
    "shuffle",
    "İstanbul",
    "key",
    "value",
    "café",
    "résumé",
    "Ærø",
    "cluster",
    "Łódź",
    "job",
    "task",
    "слово",
    "Mañana",
    "spill",
    "merge",
    "sort",
    "Ünïcödé",
    "partition",
    "kölsch",
    "split",
    "テキスト",
    "raft",
    "leader",
    "ﬁnance",
    "heartbeat",
    "Ǆungla",
    "ΣΊΣΥΦΟΣ",
    "output",
    "input",
];

/// Separators between words: spaces, punctuation, digits (not alphabetic, so they split
/// words), an underscore, a tab, and a non-ASCII punctuation mark.
const SEPARATORS: &[&str] = &[
    " ", " ", " ", " ", ", ", ". ", "; ", " - ", "'", "-", "\t", " 42 ", "7", "_", " (", ") ", "…",
    " «", "» ", "/",
];

/// A word of the corpus: a frequent word from [`WORDS`] or a rarer synthetic one, in mixed case.
fn random_word(rng: &mut StdRng, cumulative: &[f64]) -> String {
    let total = cumulative.last().copied().unwrap_or(1.0);
    let x = rng.gen_range(0.0..total);
    let rank = cumulative.partition_point(|&c| c <= x);
    let base = if rank < WORDS.len() {
        WORDS[rank].to_string()
    } else {
        // The long tail: a synthetic word per rank.
        const SYLLABLES: &[&str] = &["ka", "lo", "mi", "ne", "ru", "ta", "shi", "vo", "zé", "ä"];
        let mut n = rank;
        let mut word = String::new();
        loop {
            word.push_str(SYLLABLES[n % SYLLABLES.len()]);
            n /= SYLLABLES.len();
            if n == 0 {
                break;
            }
        }
        word
    };
    match rng.gen_range(0..20) {
        0..=12 => base,
        13..=16 => {
            let mut chars = base.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect(),
                None => base,
            }
        }
        17..=18 => base.to_uppercase(),
        _ => base
            .chars()
            .enumerate()
            .flat_map(|(i, c)| -> Vec<char> {
                if i % 2 == 0 {
                    c.to_uppercase().collect()
                } else {
                    c.to_lowercase().collect()
                }
            })
            .collect(),
    }
}

/// Writes `files` text files `input/part-NN.txt` of `lines` lines each under `dir`, from
/// `seed`. Lines end in `\n` or sometimes `\r\n`; some are empty; the last line of each file
/// has no newline. With `invalid_utf8`, the first file also holds invalid UTF-8 bytes between
/// words and inside ASCII words. Returns the files (absolute), sorted.
pub fn generate_corpus(
    dir: &Path,
    seed: u64,
    files: usize,
    lines: usize,
    invalid_utf8: bool,
) -> Vec<PathBuf> {
    let mut rng = StdRng::seed_from_u64(seed);
    let vocabulary = WORDS.len() + 400;
    let mut cumulative = Vec::with_capacity(vocabulary);
    let mut sum = 0.0;
    for rank in 0..vocabulary {
        sum += 1.0 / (rank as f64 + 1.0);
        cumulative.push(sum);
    }
    fs::create_dir_all(dir).expect("create the input directory");
    let mut paths = Vec::with_capacity(files);
    for file in 0..files {
        let mut bytes: Vec<u8> = Vec::new();
        for line in 0..lines {
            let words = rng.gen_range(0..14);
            for w in 0..words {
                if w > 0 {
                    let sep = SEPARATORS[rng.gen_range(0..SEPARATORS.len())];
                    bytes.extend_from_slice(sep.as_bytes());
                }
                let word = random_word(&mut rng, &cumulative);
                if invalid_utf8 && file == 0 && rng.gen_range(0..25) == 0 {
                    // Invalid bytes split words (each becomes U+FFFD, which is not alphabetic).
                    let junk: &[u8] =
                        [&b"\xff"[..], b"\xc3", b"\x80\x80", b"\xe6\x97"][rng.gen_range(0..4)];
                    if word.is_ascii() && word.len() > 2 {
                        bytes.extend_from_slice(&word.as_bytes()[..1]);
                        bytes.extend_from_slice(junk);
                        bytes.extend_from_slice(&word.as_bytes()[1..]);
                    } else {
                        bytes.extend_from_slice(junk);
                        bytes.extend_from_slice(word.as_bytes());
                    }
                } else {
                    bytes.extend_from_slice(word.as_bytes());
                }
            }
            if line + 1 < lines {
                let ending: &[u8] = if rng.gen_range(0..10) == 0 {
                    b"\r\n"
                } else {
                    b"\n"
                };
                bytes.extend_from_slice(ending);
            }
        }
        let path = dir.join(format!("part-{file:02}.txt"));
        fs::write(&path, &bytes).expect("write an input file");
        paths.push(std::path::absolute(&path).expect("an absolute path"));
    }
    paths.sort();
    paths
}

// ----- the sequential reference -----

/// The words of a text, as CONTRACT.md "Built-in jobs" defines them: maximal runs of
/// `char::is_alphabetic` characters, each lowercased with `str::to_lowercase`.
pub fn reference_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphabetic())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// A file read as UTF-8 with invalid bytes replaced by U+FFFD.
fn read_lossy(path: &Path) -> String {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `wordcount` computed sequentially: word → count in decimal.
pub fn reference_wordcount(files: &[PathBuf]) -> BTreeMap<String, String> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for file in files {
        for word in reference_words(&read_lossy(file)) {
            *counts.entry(word).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect()
}

/// `index` computed sequentially: word → `<n> <file1>,<file2>,...`, the distinct files (as
/// given, which must be the paths as the job's globs expand) sorted.
pub fn reference_index(files: &[PathBuf]) -> BTreeMap<String, String> {
    let mut index: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let name = file.to_string_lossy().into_owned();
        for word in reference_words(&read_lossy(file)) {
            index.entry(word).or_default().insert(name.clone());
        }
    }
    index
        .into_iter()
        .map(|(word, files)| {
            let list: Vec<String> = files.into_iter().collect();
            (word, format!("{} {}", list.len(), list.join(",")))
        })
        .collect()
}

// ----- output -----

/// Reads a finished MapReduce output directory, checking its format strictly (CONTRACT.md
/// "Outputs"): exactly `part-r-00000` … `part-r-<reducers-1>` and an empty `_SUCCESS`; every
/// line `key<TAB>value\n`; keys sorted bytewise (and distinct) within each file; every key in
/// exactly one file. Returns every pair.
pub fn read_output(dir: &Path, reducers: u32) -> BTreeMap<String, String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read output directory {}: {e}", dir.display()))
        .map(|entry| {
            entry
                .expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    let mut expected: Vec<String> = (0..reducers).map(|r| format!("part-r-{r:05}")).collect();
    expected.push("_SUCCESS".into());
    expected.sort();
    assert_eq!(names, expected, "files of {}", dir.display());
    let success = fs::metadata(dir.join("_SUCCESS")).expect("stat _SUCCESS");
    assert_eq!(success.len(), 0, "_SUCCESS must be empty");

    let mut all: BTreeMap<String, String> = BTreeMap::new();
    let mut owner: BTreeMap<String, u32> = BTreeMap::new();
    for r in 0..reducers {
        let path = dir.join(format!("part-r-{r:05}"));
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let text = String::from_utf8(bytes)
            .unwrap_or_else(|e| panic!("{} is not UTF-8: {e}", path.display()));
        if text.is_empty() {
            continue;
        }
        assert!(
            text.ends_with('\n'),
            "{} does not end with a newline",
            path.display()
        );
        let mut previous: Option<&str> = None;
        for (number, line) in text[..text.len() - 1].split('\n').enumerate() {
            let (key, value) = line
                .split_once('\t')
                .unwrap_or_else(|| panic!("{}:{}: no tab in {line:?}", path.display(), number + 1));
            assert!(
                !value.contains('\t') && !key.is_empty(),
                "{}:{}: not `key<TAB>value`: {line:?}",
                path.display(),
                number + 1
            );
            if let Some(previous) = previous {
                assert!(
                    previous.as_bytes() < key.as_bytes(),
                    "{}:{}: keys not sorted bytewise: {previous:?} then {key:?}",
                    path.display(),
                    number + 1
                );
            }
            previous = Some(key);
            if let Some(other) = owner.insert(key.to_string(), r) {
                panic!("key {key:?} is in part {other} and part {r}");
            }
            all.insert(key.to_string(), value.to_string());
        }
    }
    all
}

/// [`read_output`] as a sorted list of pairs.
pub fn read_output_pairs(dir: &Path, reducers: u32) -> Vec<(String, String)> {
    read_output(dir, reducers).into_iter().collect()
}

/// Asserts that an output directory is well-formed and holds exactly `expected`; a mismatch
/// lists the first differences instead of both maps.
pub fn assert_output_eq(dir: &Path, reducers: u32, expected: &BTreeMap<String, String>) {
    let actual = read_output(dir, reducers);
    if &actual == expected {
        return;
    }
    let mut report = String::new();
    let keys: BTreeSet<&String> = actual.keys().chain(expected.keys()).collect();
    let mut shown = 0;
    for key in keys {
        let (a, e) = (actual.get(key), expected.get(key));
        if a != e {
            let _ = writeln!(report, "  {key:?}: output {a:?}, expected {e:?}");
            shown += 1;
            if shown == 20 {
                report.push_str("  ...\n");
                break;
            }
        }
    }
    panic!(
        "output of {} differs from the sequential reference ({} keys vs {} expected):\n{report}",
        dir.display(),
        actual.len(),
        expected.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parses() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), 0);
        assert_eq!(rfc3339_ms("1970-01-01T00:00:01.5Z"), 1500);
        assert_eq!(rfc3339_ms("2024-05-01T12:00:00.250Z"), 1_714_564_800_250);
    }

    #[test]
    fn reference_words_follow_the_contract() {
        assert_eq!(
            reference_words("Hello, wörld! 42x ÉTÉ ΟΔΟΣ a_b"),
            ["hello", "wörld", "x", "été", "οδος", "a", "b"]
        );
    }
}

//! `master up`: starts every node of a cluster file on this host as child processes.
//!
//! [`plan`] turns the config into [`ChildSpec`]s (program, arguments, log file), a pure step.
//! [`up`] then starts the masters, waits until each answers `GET /api/health`, starts the
//! workers, and watches them until its `shutdown` future resolves: a node that exits is logged
//! and left down (nothing is restarted). On shutdown the workers are stopped first (SIGTERM, then
//! SIGKILL after [`STOP_GRACE`]) so that they can drain while the masters still answer, then the
//! masters the same way.
//!
//! Children run in their own process group, so a Ctrl-C in the terminal reaches only the
//! launcher, which then stops them in that order. Their stdout and stderr are appended to
//! `data_dir/logs/<node>.log`.

use std::ffi::OsString;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use jobs::config::ClusterConfig;
use tokio::process::{Child, Command};
use tracing::{info, warn};

/// How often a starting master's health is polled.
const HEALTH_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long the masters get to answer their health check.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of one health request.
const HEALTH_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// How often running children are checked for an exit.
const CHILD_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How long each group of nodes (workers, then masters) gets to stop after SIGTERM.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// How many lines of a failed master's log are shown.
const LOG_TAIL_LINES: usize = 20;

/// Why the cluster could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LauncherError {
    /// The path of the running executable is unknown.
    #[error("cannot locate the running executable: {source}")]
    CurrentExe {
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A binary to start does not exist.
    #[error("{what} not found at {}; build it with `cargo build --release --workspace`", path.display())]
    BinaryMissing {
        /// Which binary (`worker binary`, `master binary`, ...).
        what: String,
        /// Where it was expected.
        path: PathBuf,
    },
    /// The log directory or a log file could not be created.
    #[error("cannot create log file {}: {source}", path.display())]
    LogFile {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A node's process could not be started.
    #[error("cannot start {node} ({}): {source}", program.display())]
    Spawn {
        /// The node (`master-1`, `worker-w1`).
        node: String,
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A master exited before it answered its health check.
    #[error("{node} exited during startup ({status}); last lines of {}:\n{tail}", log.display())]
    ExitedDuringStartup {
        /// The node.
        node: String,
        /// Its exit status.
        status: ExitStatus,
        /// Its log file.
        log: PathBuf,
        /// The end of its log.
        tail: String,
    },
    /// A master did not answer its health check in time.
    #[error("{node} did not answer {url} within {timeout:?}; see {}", log.display())]
    HealthTimeout {
        /// The node.
        node: String,
        /// The health URL polled.
        url: String,
        /// How long it was given.
        timeout: Duration,
        /// Its log file.
        log: PathBuf,
    },
}

/// What a child process is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeRole {
    /// A `[[master]]`.
    Master {
        /// Its Raft id.
        id: u64,
        /// Its tarpc address.
        rpc: String,
        /// Its HTTP address (polled for health).
        http: String,
    },
    /// A `[[worker]]`.
    Worker {
        /// Its name.
        name: String,
        /// Its tarpc address.
        rpc: String,
        /// Its task slots.
        slots: u32,
    },
}

/// One child process to start: the pure result of [`plan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildSpec {
    /// What the node is.
    pub role: NodeRole,
    /// The binary.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

impl ChildSpec {
    /// The node's name in logs and messages: `master-<id>` or `worker-<name>`.
    pub fn node(&self) -> String {
        match &self.role {
            NodeRole::Master { id, .. } => format!("master-{id}"),
            NodeRole::Worker { name, .. } => format!("worker-{name}"),
        }
    }

    /// The line printed for the started node.
    fn describe(&self, pid: Option<u32>) -> String {
        let pid = pid.map_or_else(|| "?".to_string(), |p| p.to_string());
        let log = self.log.display();
        match &self.role {
            NodeRole::Master { id, rpc, http } => {
                format!("master {id}  rpc {rpc}  http {http}  pid {pid}  log {log}")
            }
            NodeRole::Worker { name, rpc, slots } => {
                format!("worker {name}  rpc {rpc}  slots {slots}  pid {pid}  log {log}")
            }
        }
    }
}

/// The child processes of `config`, masters first, in file order: `master_bin run --config FILE
/// --id N` and `<bin or default_worker_bin> --config FILE --name NAME`, logging to
/// `data_dir/logs/<node>.log`.
pub fn plan(
    config: &ClusterConfig,
    master_bin: &Path,
    default_worker_bin: &Path,
) -> Vec<ChildSpec> {
    let log_dir = config.data_dir.join("logs");
    let file = config.path.clone().into_os_string();
    let arg = |s: &str| OsString::from(s);
    let masters = config.masters.iter().map(|m| ChildSpec {
        role: NodeRole::Master {
            id: m.id,
            rpc: m.rpc.clone(),
            http: m.http.clone(),
        },
        program: master_bin.to_path_buf(),
        args: vec![
            arg("run"),
            arg("--config"),
            file.clone(),
            arg("--id"),
            arg(&m.id.to_string()),
        ],
        log: log_dir.join(format!("master-{}.log", m.id)),
    });
    let workers = config.workers.iter().map(|w| ChildSpec {
        role: NodeRole::Worker {
            name: w.name.clone(),
            rpc: w.rpc.clone(),
            slots: w.slots,
        },
        program: w
            .bin
            .clone()
            .unwrap_or_else(|| default_worker_bin.to_path_buf()),
        args: vec![arg("--config"), file.clone(), arg("--name"), arg(&w.name)],
        log: log_dir.join(format!("worker-{}.log", w.name)),
    });
    masters.chain(workers).collect()
}

/// The binary `name` in the directory of the running executable (where cargo puts all of a
/// workspace's binaries).
///
/// # Errors
/// [`LauncherError::BinaryMissing`] if it is not there, [`LauncherError::CurrentExe`] if the
/// running executable cannot be located.
pub fn sibling_binary(name: &str) -> Result<PathBuf, LauncherError> {
    let exe = std::env::current_exe().map_err(|source| LauncherError::CurrentExe { source })?;
    let path = exe.with_file_name(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if path.is_file() {
        Ok(path)
    } else {
        Err(LauncherError::BinaryMissing {
            what: format!("{name} binary"),
            path,
        })
    }
}

/// `http://ADDR/` for a listen address, with an unspecified IP (`0.0.0.0`, `::`) replaced by
/// loopback so that the URL can be connected to.
pub fn base_url(addr: &str) -> String {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(mut sa) if sa.ip().is_unspecified() => {
            sa.set_ip(match sa {
                std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
            format!("http://{sa}/")
        }
        _ => format!("http://{addr}/"),
    }
}

/// Starts every master and worker of `config` as child processes, prints each node and the UI
/// URL, and runs until `shutdown` resolves, then stops all children and returns. Restarts
/// nothing: a child that exits is logged (warn) and the others keep running.
///
/// # Errors
/// A missing binary, a node that cannot be started, or a master that exits or stays silent
/// during startup; the nodes already started are stopped first.
pub async fn up(
    config: &ClusterConfig,
    master_bin: &Path,
    default_worker_bin: &Path,
    shutdown: impl Future<Output = ()>,
) -> Result<(), LauncherError> {
    let specs = plan(config, master_bin, default_worker_bin);
    for spec in &specs {
        if !spec.program.is_file() {
            let what = format!("{} binary", spec.node());
            return Err(LauncherError::BinaryMissing {
                what,
                path: spec.program.clone(),
            });
        }
    }
    let log_dir = config.data_dir.join("logs");
    std::fs::create_dir_all(&log_dir).map_err(|source| LauncherError::LogFile {
        path: log_dir.clone(),
        source,
    })?;
    println!("logs: {}", log_dir.display());

    tokio::pin!(shutdown);
    let mut children = Vec::with_capacity(specs.len());
    let started = start(&specs, &mut children, shutdown.as_mut()).await;
    if let Ok(true) = started {
        if let Some(first) = config.masters.first() {
            println!("UI: {}", base_url(&first.http));
        }
        info!(nodes = children.len(), "cluster started");
        supervise(&mut children, shutdown.as_mut()).await;
    }
    info!("stopping the cluster");
    stop(&mut children, |s| matches!(s.role, NodeRole::Worker { .. })).await;
    stop(&mut children, |s| matches!(s.role, NodeRole::Master { .. })).await;
    started.map(|_| ())
}

/// A started child.
struct Running {
    spec: ChildSpec,
    child: Child,
    /// Set once it has been seen to exit.
    exited: Option<ExitStatus>,
}

/// Starts the masters, waits for their health, then starts the workers. `Ok(false)`: shutdown
/// came first.
async fn start<F: Future<Output = ()>>(
    specs: &[ChildSpec],
    children: &mut Vec<Running>,
    mut shutdown: Pin<&mut F>,
) -> Result<bool, LauncherError> {
    let (masters, workers): (Vec<_>, Vec<_>) = specs
        .iter()
        .partition(|s| matches!(s.role, NodeRole::Master { .. }));
    for spec in masters {
        children.push(spawn(spec)?);
    }
    let agent = ureq::AgentBuilder::new()
        .timeout(HEALTH_REQUEST_TIMEOUT)
        .build();
    let deadline = Instant::now() + HEALTH_TIMEOUT;
    // (child index, health URL) of the masters not yet healthy, the first master last.
    let mut pending: Vec<(usize, String)> = (children.iter().enumerate().rev())
        .filter_map(|(i, r)| match &r.spec.role {
            NodeRole::Master { http, .. } => Some((i, format!("{}api/health", base_url(http)))),
            NodeRole::Worker { .. } => None,
        })
        .collect();
    while let Some((index, url)) = pending.last().cloned() {
        for r in children.iter_mut() {
            if let Ok(Some(status)) = r.child.try_wait() {
                let (node, log) = (r.spec.node(), r.spec.log.clone());
                let tail = log_tail(&log, LOG_TAIL_LINES);
                return Err(LauncherError::ExitedDuringStartup {
                    node,
                    status,
                    log,
                    tail,
                });
            }
        }
        let (get, probe) = (agent.clone(), url.clone());
        let healthy = tokio::task::spawn_blocking(move || get.get(&probe).call().is_ok());
        if healthy.await.unwrap_or(false) {
            pending.pop();
            continue;
        }
        if Instant::now() >= deadline {
            let (node, log) = (
                children[index].spec.node(),
                children[index].spec.log.clone(),
            );
            return Err(LauncherError::HealthTimeout {
                node,
                url,
                timeout: HEALTH_TIMEOUT,
                log,
            });
        }
        tokio::select! {
            () = shutdown.as_mut() => return Ok(false),
            () = tokio::time::sleep(HEALTH_POLL_INTERVAL) => {}
        }
    }
    for spec in workers {
        children.push(spawn(spec)?);
    }
    Ok(true)
}

/// Starts one child, its output appended to its log, and prints its line.
fn spawn(spec: &ChildSpec) -> Result<Running, LauncherError> {
    let log_error = |source| LauncherError::LogFile {
        path: spec.log.clone(),
        source,
    };
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .map_err(log_error)?;
    let stamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    writeln!(
        log,
        "--- master up: starting {} at {stamp} ---",
        spec.node()
    )
    .map_err(log_error)?;
    let stdout = log.try_clone().map_err(log_error)?;
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(log)
        .kill_on_drop(true);
    #[cfg(unix)]
    command.process_group(0);
    let child = command.spawn().map_err(|source| LauncherError::Spawn {
        node: spec.node(),
        program: spec.program.clone(),
        source,
    })?;
    println!("{}", spec.describe(child.id()));
    info!(node = %spec.node(), pid = child.id(), "node started");
    Ok(Running {
        spec: spec.clone(),
        child,
        exited: None,
    })
}

/// Watches the children until `shutdown` resolves, logging each one that exits.
async fn supervise<F: Future<Output = ()>>(children: &mut [Running], mut shutdown: Pin<&mut F>) {
    let mut tick = tokio::time::interval(CHILD_POLL_INTERVAL);
    loop {
        tokio::select! {
            () = shutdown.as_mut() => return,
            _ = tick.tick() => {}
        }
        for r in children.iter_mut().filter(|r| r.exited.is_none()) {
            match r.child.try_wait() {
                Ok(Some(status)) => {
                    warn!(node = %r.spec.node(), %status, log = %r.spec.log.display(), "node exited; it is not restarted");
                    r.exited = Some(status);
                }
                Ok(None) => {}
                Err(error) => warn!(node = %r.spec.node(), %error, "cannot check node"),
            }
        }
    }
}

/// Stops the children that `select` picks: SIGTERM to all, then SIGKILL to those still running
/// after [`STOP_GRACE`].
async fn stop(children: &mut [Running], select: impl Fn(&ChildSpec) -> bool) {
    let mut group: Vec<&mut Running> = children
        .iter_mut()
        .filter(|r| r.exited.is_none() && select(&r.spec))
        .collect();
    for r in &mut group {
        if let Err(error) = terminate(&mut r.child) {
            warn!(node = %r.spec.node(), %error, "cannot signal node");
        }
    }
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    for r in group {
        let status = match tokio::time::timeout_at(deadline, r.child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                warn!(node = %r.spec.node(), grace = ?STOP_GRACE, "node did not stop; killing it");
                let _ = r.child.start_kill();
                r.child.wait().await
            }
        };
        match status {
            Ok(status) => info!(node = %r.spec.node(), %status, "node stopped"),
            Err(error) => warn!(node = %r.spec.node(), %error, "cannot wait for node"),
        }
    }
}

/// Sends SIGTERM (elsewhere: kills).
#[cfg(unix)]
fn terminate(child: &mut Child) -> std::io::Result<()> {
    // None: already reaped, nothing to signal.
    let Some(pid) = child.id() else { return Ok(()) };
    let pid = libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
    // SAFETY: kill(2) touches no memory of ours. `pid` is our child and not yet reaped (tokio
    // forgets the id once it reaps), so it cannot name a recycled process.
    if unsafe { libc::kill(pid, libc::SIGTERM) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(unix))]
fn terminate(child: &mut Child) -> std::io::Result<()> {
    child.start_kill()
}

/// The last `lines` lines of a log (reading at most its last 64 KiB).
fn log_tail(path: &Path, lines: usize) -> String {
    let mut text = Vec::new();
    let read = std::fs::File::open(path).and_then(|mut f| {
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))?;
        f.read_to_end(&mut text)
    });
    if let Err(error) = read {
        return format!("(cannot read the log: {error})");
    }
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use jobs::config::{MasterEntry, WorkerEntry};

    use super::*;

    fn config(dir: &Path, http: &str) -> ClusterConfig {
        let worker = |name: &str, bin: Option<PathBuf>| WorkerEntry {
            name: name.into(),
            rpc: "127.0.0.1:0".into(),
            slots: 2,
            bin,
        };
        ClusterConfig {
            path: dir.join("cluster.toml"),
            data_dir: dir.join("data"),
            secret: "s".into(),
            masters: vec![MasterEntry {
                id: 1,
                rpc: "127.0.0.1:0".into(),
                http: http.into(),
            }],
            workers: vec![worker("w1", None), worker("w2", Some(dir.join("custom")))],
        }
    }

    #[test]
    fn plan_starts_masters_first_with_the_contract_arguments() {
        let dir = Path::new("/srv/c");
        let specs = plan(
            &config(dir, "127.0.0.1:8080"),
            Path::new("/b/master"),
            Path::new("/b/worker"),
        );
        let line = |s: &ChildSpec| {
            let args: Vec<_> = s.args.iter().map(|a| a.to_string_lossy()).collect();
            format!(
                "{} {} > {}",
                s.program.display(),
                args.join(" "),
                s.log.display()
            )
        };
        let lines: Vec<String> = specs.iter().map(line).collect();
        assert_eq!(lines, [
            "/b/master run --config /srv/c/cluster.toml --id 1 > /srv/c/data/logs/master-1.log",
            "/b/worker --config /srv/c/cluster.toml --name w1 > /srv/c/data/logs/worker-w1.log",
            "/srv/c/custom --config /srv/c/cluster.toml --name w2 > /srv/c/data/logs/worker-w2.log",
        ]);
        assert_eq!(
            specs[1].describe(Some(9)),
            "worker w1  rpc 127.0.0.1:0  slots 2  pid 9  log /srv/c/data/logs/worker-w1.log"
        );
    }

    #[test]
    fn helpers_find_urls_binaries_and_log_tails() {
        assert_eq!(base_url("0.0.0.0:8080"), "http://127.0.0.1:8080/");
        assert_eq!(base_url("[::]:8080"), "http://[::1]:8080/");
        assert_eq!(base_url("10.0.0.1:80"), "http://10.0.0.1:80/");

        let err = sibling_binary("no-such-binary").unwrap_err().to_string();
        assert!(
            err.contains("no-such-binary") && err.contains("cargo build --release"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        std::fs::write(&log, "1\n2\n3\n4\n").unwrap();
        assert_eq!(log_tail(&log, 2), "3\n4");
    }

    /// Serializes the tests that exec scripts: a script being written while another test forks
    /// can fail to exec with ETXTBSY.
    #[cfg(unix)]
    static SCRIPTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    #[cfg(unix)]
    fn script(path: &Path, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.to_path_buf()
    }

    /// A script that logs its arguments, then on SIGTERM appends `role` to `order` and exits.
    #[cfg(unix)]
    fn node_script(dir: &Path, role: &str) -> PathBuf {
        let order = dir.join("order").display().to_string();
        let body = format!(
            "trap 'echo {role} >> {order}; kill $pid; exit 0' TERM\n\
             echo \"started $*\"\nsleep 60 & pid=$!\nwait $pid"
        );
        script(&dir.join(role), &body)
    }

    /// Answers every connection with 200 `{}` (a healthy master).
    fn healthy_server() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut head = Vec::new();
                let mut byte = [0];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
                    head.push(byte[0]);
                }
                let reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        addr
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn up_starts_every_node_and_stops_workers_then_masters_with_sigterm() {
        let _serial = SCRIPTS.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let (master, worker) = (
            node_script(dir.path(), "master"),
            node_script(dir.path(), "worker"),
        );
        script(
            &dir.path().join("custom"),
            "exec sh \"$(dirname \"$0\")/worker\" \"$@\"",
        );
        let config = config(dir.path(), &healthy_server());
        let logs = config.data_dir.join("logs");
        let started = |log: &str| {
            std::fs::read_to_string(logs.join(log)).is_ok_and(|t| t.contains("started"))
        };
        let shutdown = async {
            for _ in 0..1000 {
                if ["master-1.log", "worker-w1.log", "worker-w2.log"].map(started) == [true; 3] {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("the nodes never started");
        };
        let run = up(&config, &master, &worker, shutdown);
        tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .unwrap()
            .unwrap();

        let master_log = std::fs::read_to_string(logs.join("master-1.log")).unwrap();
        let file = config.path.display();
        assert!(
            master_log.contains(&format!("started run --config {file} --id 1")),
            "{master_log}"
        );
        let order = std::fs::read_to_string(dir.path().join("order")).unwrap();
        assert_eq!(order, "worker\nworker\nmaster\n");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_master_exiting_during_startup_fails_with_its_log() {
        let _serial = SCRIPTS.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let master = script(&dir.path().join("master"), "echo \"boom $1\" >&2; exit 3");
        let worker = node_script(dir.path(), "worker");
        script(&dir.path().join("custom"), "exit 0");
        // Nothing answers health there: only the exit can end the startup.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let config = config(dir.path(), &closed.to_string());
        let run = up(&config, &master, &worker, std::future::pending());
        let err = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(&err, LauncherError::ExitedDuringStartup { node, tail, .. }
                if node == "master-1" && tail.contains("boom run")),
            "{err}"
        );
        assert!(!config.data_dir.join("logs/worker-w1.log").exists());
    }
}

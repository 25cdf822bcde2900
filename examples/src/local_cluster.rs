//! `LocalCluster`: masters and workers started as real processes on 127.0.0.1 from a cluster
//! file written into a directory, for benchmarks and tests. Ports are picked free; the
//! children are killed when it drops.
//!
//! One master ([`LocalCluster::start`]) or several ([`LocalCluster::start_with_masters`]: a
//! Raft group; any master's HTTP API works, followers forward to the leader). With several,
//! [`LocalCluster::leader`] finds the leader, [`LocalCluster::kill_master`] kills one with
//! SIGKILL, [`LocalCluster::restart_master`] starts it again from its data, and
//! [`LocalCluster::wait_caught_up`] waits until it has applied the leader's log.

use std::collections::HashSet;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// How long startup may take.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How often waits poll.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How long one health check of one master may take.
const HEALTH_TIMEOUT: Duration = Duration::from_millis(500);

/// One master of a [`LocalCluster`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalMaster {
    /// Its Raft node id (1, 2, ...).
    pub id: u64,
    /// Its tarpc address (`127.0.0.1:port`).
    pub rpc: String,
    /// Its HTTP base URL (`http://127.0.0.1:port`).
    pub url: String,
}

/// A child process the cluster owns: how to start it again, and the running process.
struct Proc {
    name: String,
    bin: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

/// A running cluster.
pub struct LocalCluster {
    /// The cluster file.
    pub config: PathBuf,
    /// The HTTP base URL requests go to (`http://127.0.0.1:port`): master 1's. With several
    /// masters any one works (followers forward to the leader); point it at another with
    /// [`LocalCluster::use_master`] after killing master 1.
    pub url: String,
    /// The cluster secret.
    pub secret: String,
    /// Every master, by id.
    pub masters: Vec<LocalMaster>,
    dir: PathBuf,
    procs: Vec<Proc>,
    /// For health checks: short timeouts.
    probe: ureq::Agent,
}

/// A free TCP port on 127.0.0.1 (bound, then released).
///
/// # Errors
/// If no port can be bound.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The directory of the running executable's profile (`target/release` for a bench, or the
/// parent of `deps/` for a test), where `master` and `worker` are built.
///
/// # Errors
/// If the current executable's path is unknown.
pub fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe
        .parent()
        .context("executable has no directory")?
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

impl LocalCluster {
    /// Writes `dir/cluster.toml` (one master, the given workers as `(name, slots)`) and starts
    /// every node with the binaries in [`bin_dir`] (`worker_bin` overrides the worker binary),
    /// logging to `dir/logs/`. Returns once the master leads and every worker is alive.
    ///
    /// # Errors
    /// If a binary is missing, a process cannot start, or the cluster is not up in time.
    pub fn start(
        dir: &Path,
        workers: &[(&str, u32)],
        worker_bin: Option<&Path>,
    ) -> Result<LocalCluster> {
        LocalCluster::start_with_masters(dir, 1, workers, worker_bin)
    }

    /// [`LocalCluster::start`] with `masters` masters (ids 1..=masters) forming one Raft
    /// group. Returns once one of them leads and every worker is alive.
    ///
    /// # Errors
    /// As [`LocalCluster::start`]; also if `masters` is 0.
    pub fn start_with_masters(
        dir: &Path,
        masters: u64,
        workers: &[(&str, u32)],
        worker_bin: Option<&Path>,
    ) -> Result<LocalCluster> {
        if masters == 0 {
            bail!("a cluster needs at least one master");
        }
        let bins = bin_dir()?;
        let master_bin = bins.join("master");
        let worker_bin = worker_bin.map_or_else(|| bins.join("worker"), Path::to_path_buf);
        for bin in [&master_bin, &worker_bin] {
            if !bin.exists() {
                bail!(
                    "{} not found: build it first (cargo build --release --workspace)",
                    bin.display()
                );
            }
        }
        fs::create_dir_all(dir.join("logs"))?;
        let secret = "bench-secret".to_string();
        let mut taken = HashSet::new();
        let mut port = || -> Result<u16> {
            loop {
                let port = free_port()?;
                if taken.insert(port) {
                    return Ok(port);
                }
            }
        };
        let mut toml = format!("[cluster]\ndata_dir = \"data\"\nsecret = \"{secret}\"\n");
        let mut local = Vec::new();
        for id in 1..=masters {
            let (rpc, http) = (port()?, port()?);
            toml.push_str(&format!(
                "\n[[master]]\nid = {id}\nrpc = \"127.0.0.1:{rpc}\"\nhttp = \"127.0.0.1:{http}\"\n"
            ));
            local.push(LocalMaster {
                id,
                rpc: format!("127.0.0.1:{rpc}"),
                url: format!("http://127.0.0.1:{http}"),
            });
        }
        for (name, slots) in workers {
            toml.push_str(&format!(
                "\n[[worker]]\nname = \"{name}\"\nrpc = \"127.0.0.1:0\"\nslots = {slots}\n"
            ));
        }
        let config = dir.join("cluster.toml");
        fs::write(&config, toml)?;
        let config_arg = config.to_string_lossy().into_owned();
        let mut cluster = LocalCluster {
            config,
            url: local[0].url.clone(),
            secret,
            masters: local,
            dir: dir.to_path_buf(),
            procs: Vec::new(),
            probe: ureq::AgentBuilder::new()
                .timeout_connect(HEALTH_TIMEOUT)
                .timeout(HEALTH_TIMEOUT)
                .build(),
        };
        for id in 1..=masters {
            let args = ["run", "--config", &config_arg, "--id", &id.to_string()].map(String::from);
            cluster.add(&format!("master-{id}"), &master_bin, args.to_vec());
            cluster.spawn(&format!("master-{id}"))?;
        }
        cluster.wait_for("a master to lead", |c| c.leader().is_some())?;
        for (name, _) in workers {
            let args = ["--config", &config_arg, "--name", name].map(String::from);
            cluster.add(name, &worker_bin, args.to_vec());
            cluster.spawn(name)?;
        }
        let expected = workers.len();
        cluster.wait_for("every worker to register", |c| {
            c.get("/api/cluster").is_ok_and(|v| {
                v["workers"]
                    .as_array()
                    .is_some_and(|w| w.iter().filter(|w| w["alive"] == true).count() == expected)
            })
        })?;
        Ok(cluster)
    }

    fn add(&mut self, name: &str, bin: &Path, args: Vec<String>) {
        self.procs.push(Proc {
            name: name.to_string(),
            bin: bin.to_path_buf(),
            args,
            child: None,
        });
    }

    fn proc(&mut self, name: &str) -> Result<&mut Proc> {
        self.procs
            .iter_mut()
            .find(|p| p.name == name)
            .with_context(|| format!("no process {name}"))
    }

    /// Starts a registered process; its output is appended to `logs/<name>.log`.
    fn spawn(&mut self, name: &str) -> Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("logs").join(format!("{name}.log")))?;
        let proc = self.proc(name)?;
        if proc.child.is_some() {
            bail!("{name} is running already");
        }
        let child = Command::new(&proc.bin)
            .args(&proc.args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", proc.bin.display()))?;
        proc.child = Some(child);
        Ok(())
    }

    fn wait_for(&mut self, what: &str, mut ready: impl FnMut(&LocalCluster) -> bool) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if ready(self) {
                return Ok(());
            }
            for proc in &mut self.procs {
                if let Some(child) = &mut proc.child {
                    if let Some(status) = child.try_wait()? {
                        bail!(
                            "{} exited during startup ({status}); see its log",
                            proc.name
                        );
                    }
                }
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        bail!("timed out waiting for {what}")
    }

    /// Master `id`.
    ///
    /// # Errors
    /// If there is no such master.
    pub fn master(&self, id: u64) -> Result<&LocalMaster> {
        self.masters
            .iter()
            .find(|m| m.id == id)
            .with_context(|| format!("no master {id}"))
    }

    /// Sends requests to master `id` from now on.
    ///
    /// # Errors
    /// If there is no such master.
    pub fn use_master(&mut self, id: u64) -> Result<()> {
        self.url = self.master(id)?.url.clone();
        Ok(())
    }

    /// Master `id`'s own `GET /api/health` (answered locally, never forwarded), within half a
    /// second.
    ///
    /// # Errors
    /// If it does not answer in time.
    pub fn health(&self, id: u64) -> Result<Value> {
        let url = format!("{}/api/health", self.master(id)?.url);
        Ok(self.probe.get(&url).call()?.into_json()?)
    }

    /// The master that says it leads, if one does now.
    pub fn leader(&self) -> Option<u64> {
        self.masters.iter().map(|m| m.id).find(|id| {
            self.health(*id)
                .is_ok_and(|h| h["role"] == "leader" && h["id"] == *id)
        })
    }

    /// Waits until a master says it leads, at most `timeout`; returns its id.
    ///
    /// # Errors
    /// If none does in time.
    pub fn wait_for_leader(&self, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(id) = self.leader() {
                return Ok(id);
            }
            if Instant::now() >= deadline {
                bail!("no master leads after {timeout:?}");
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Whether master `id`'s process is running.
    pub fn master_running(&mut self, id: u64) -> bool {
        self.proc(&format!("master-{id}")).is_ok_and(|p| {
            p.child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
        })
    }

    /// Kills master `id` with SIGKILL and reaps it.
    ///
    /// # Errors
    /// If it is not running.
    pub fn kill_master(&mut self, id: u64) -> Result<()> {
        let proc = self.proc(&format!("master-{id}"))?;
        let mut child = proc
            .child
            .take()
            .with_context(|| format!("master {id} is not running"))?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Starts master `id` again, from its data directory, without waiting for it.
    ///
    /// # Errors
    /// If it is running or cannot be started.
    pub fn restart_master(&mut self, id: u64) -> Result<()> {
        self.spawn(&format!("master-{id}"))
    }

    /// Waits until master `id` answers and has applied the leader's log as of now (the
    /// leader's last log index when the wait starts), at most `timeout`.
    ///
    /// # Errors
    /// If there is no leader or it has not caught up in time.
    pub fn wait_caught_up(&self, id: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let leader = self.wait_for_leader(timeout)?;
        let target = self.health(leader)?["last_log_index"]
            .as_u64()
            .context("the leader reports no last_log_index")?;
        loop {
            let applied = self
                .health(id)
                .ok()
                .and_then(|h| h["last_applied"].as_u64());
            if applied.is_some_and(|a| a >= target) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("master {id} applied {applied:?} of {target} after {timeout:?}");
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// `GET path` as JSON.
    ///
    /// # Errors
    /// On a transport error or a non-2xx status.
    pub fn get(&self, path: &str) -> Result<serde_json::Value> {
        Ok(ureq::get(&format!("{}{path}", self.url))
            .timeout(Duration::from_secs(70))
            .call()?
            .into_json()?)
    }

    /// `POST /api/jobs` with `spec`; returns the job id.
    ///
    /// # Errors
    /// On a transport error or a rejection.
    pub fn submit(&self, agent: &ureq::Agent, spec: &serde_json::Value) -> Result<String> {
        let response: serde_json::Value = agent
            .post(&format!("{}/api/jobs", self.url))
            .set("Authorization", &format!("Bearer {}", self.secret))
            .send_json(spec)?
            .into_json()?;
        response["id"]
            .as_str()
            .map(str::to_string)
            .context("no id in the reply")
    }

    /// Submits `spec` and waits for it in one round trip (`POST /api/jobs?wait_ms=`), long-
    /// polling further if it has not ended by then; returns the job's id and final state.
    ///
    /// # Errors
    /// On a transport error, a rejection, or after `timeout`.
    pub fn run(
        &self,
        agent: &ureq::Agent,
        spec: &serde_json::Value,
        timeout: Duration,
    ) -> Result<(String, String)> {
        /// The two fields a runner needs (parsing the whole job would cost the client more).
        #[derive(serde::Deserialize)]
        struct Brief {
            id: String,
            state: String,
        }
        let wait_ms = timeout.as_millis().min(60_000);
        let brief: Brief = agent
            .post(&format!("{}/api/jobs?wait_ms={wait_ms}", self.url))
            .set("Authorization", &format!("Bearer {}", self.secret))
            .send_json(spec)?
            .into_json()?;
        if matches!(brief.state.as_str(), "succeeded" | "failed" | "cancelled") {
            return Ok((brief.id, brief.state));
        }
        let job = self.wait(agent, &brief.id, timeout)?;
        Ok((
            brief.id,
            job["state"].as_str().unwrap_or_default().to_string(),
        ))
    }

    /// Waits (long-polling) until job `id` has ended; returns the job.
    ///
    /// # Errors
    /// On a transport error or after `timeout`.
    pub fn wait(
        &self,
        agent: &ureq::Agent,
        id: &str,
        timeout: Duration,
    ) -> Result<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let job: serde_json::Value = agent
                .get(&format!("{}/api/jobs/{id}?wait_ms=1000", self.url))
                .call()?
                .into_json()?;
            if matches!(
                job["state"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            ) {
                return Ok(job);
            }
        }
        bail!("job {id} did not end within {timeout:?}")
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // Workers first, so the masters do not log them as lost while they stop.
        for proc in self.procs.iter_mut().rev() {
            if let Some(mut child) = proc.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

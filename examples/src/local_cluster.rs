//! `LocalCluster`: a master and workers started as real processes on 127.0.0.1 from a cluster
//! file written into a directory, for benchmarks and tests. Ports are picked free; the
//! children are killed when it drops.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long startup may take.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running cluster.
pub struct LocalCluster {
    /// The cluster file.
    pub config: PathBuf,
    /// The master's HTTP base URL (`http://127.0.0.1:port`).
    pub url: String,
    /// The cluster secret.
    pub secret: String,
    children: Vec<(String, Child)>,
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
        let http = free_port()?;
        let mut toml = format!(
            "[cluster]\ndata_dir = \"data\"\nsecret = \"{secret}\"\n\n[[master]]\nid = 1\nrpc = \"127.0.0.1:{}\"\nhttp = \"127.0.0.1:{http}\"\n",
            free_port()?
        );
        for (name, slots) in workers {
            toml.push_str(&format!(
                "\n[[worker]]\nname = \"{name}\"\nrpc = \"127.0.0.1:0\"\nslots = {slots}\n"
            ));
        }
        let config = dir.join("cluster.toml");
        fs::write(&config, toml)?;
        let mut cluster = LocalCluster {
            config: config.clone(),
            url: format!("http://127.0.0.1:{http}"),
            secret,
            children: Vec::new(),
        };
        cluster.spawn(
            "master-1",
            &master_bin,
            &["run", "--config", &config.to_string_lossy(), "--id", "1"],
            dir,
        )?;
        cluster.wait_for("the master to lead", |c| {
            c.get("/api/health").is_ok_and(|h| h["role"] == "leader")
        })?;
        for (name, _) in workers {
            cluster.spawn(
                name,
                &worker_bin,
                &["--config", &config.to_string_lossy(), "--name", name],
                dir,
            )?;
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

    fn spawn(&mut self, name: &str, bin: &Path, args: &[&str], dir: &Path) -> Result<()> {
        let log = fs::File::create(dir.join("logs").join(format!("{name}.log")))?;
        let child = Command::new(bin)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        self.children.push((name.to_string(), child));
        Ok(())
    }

    fn wait_for(&mut self, what: &str, mut ready: impl FnMut(&LocalCluster) -> bool) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if ready(self) {
                return Ok(());
            }
            for (name, child) in &mut self.children {
                if let Some(status) = child.try_wait()? {
                    bail!("{name} exited during startup ({status}); see its log");
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("timed out waiting for {what}")
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
        // Workers first, so the master does not log them as lost while it stops.
        for (_, child) in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

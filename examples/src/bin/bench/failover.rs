//! `bench failover`: how long the cluster takes writes again after its leader is killed.
//!
//! Real processes: three masters and one worker ([`LocalCluster::start_with_masters`]). Each
//! round kills the leader with SIGKILL and measures from the kill, on three threads at once:
//! - until a surviving master says it leads (its `/api/health`);
//! - until the first successful metadata write: a lock acquire (`POST
//!   /api/locks/{name}/acquire`, a fresh lock each round, 200 once the grant is committed by a
//!   majority), the counterpart of etcd's put;
//! - until the first accepted job: an `echo` task submitted (201 once the job is committed).
//!   This one also needs the worker registered with the new leader (it finds the leader by
//!   itself), as every submission does.
//!
//! Each is retried every 5 ms against the surviving masters in turn (each attempt with a 1 s
//! timeout). Then the killed master is restarted and the round waits until it has caught up
//! with the leader's log.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use examples::local_cluster::LocalCluster;
use serde_json::json;

use crate::{fresh, percentile, round3};

/// Masters in the cluster.
const MASTERS: u64 = 3;
/// How often a write (and the leader check) is retried.
const RETRY: Duration = Duration::from_millis(5);
/// The longest one failover may take before the round fails.
const ROUND_LIMIT: Duration = Duration::from_secs(30);
/// etcd 3.4 on this machine, 3 members: median time from a kill of the leader to the first
/// successful put.
const ETCD_MEDIAN_S: f64 = 1.1;
/// The target median.
const TARGET_MEDIAN_S: f64 = 1.0;

/// What one round measured, in seconds from the kill.
struct Round {
    leader: f64,
    write: f64,
    job: f64,
}

/// Runs `rounds` rounds and prints one JSON line.
///
/// # Errors
/// If the cluster does not start, or a round does not recover within [`ROUND_LIMIT`].
pub fn run(dir: &Path, rounds: usize) -> Result<()> {
    let run = dir.join("failover");
    fresh(&run)?;
    let mut cluster = LocalCluster::start_with_masters(&run, MASTERS, &[("w1", 2)], None)?;
    let echo = json!({"kind": "task", "job": "echo", "payload": "failover"}).to_string();
    let mut measured = Vec::new();
    for round in 0..rounds {
        let leader = cluster.wait_for_leader(ROUND_LIMIT)?;
        let everyone: Vec<u64> = cluster.masters.iter().map(|m| m.id).collect();
        let survivors: Vec<u64> = everyone
            .iter()
            .copied()
            .filter(|id| *id != leader)
            .collect();
        let lock = |n: &str, masters: &[u64]| -> Result<Writes> {
            let body = json!({"owner": "bench", "ttl_ms": 1000, "wait_ms": 0}).to_string();
            Writes::new(
                &cluster,
                masters,
                &format!("/api/locks/failover-{round}-{n}/acquire"),
                body,
                200,
            )
        };
        // The cluster takes writes and jobs before the kill (the last round's master is back).
        lock("before", &everyone)?.first_success(Instant::now())?;
        Writes::new(&cluster, &everyone, "/api/jobs", echo.clone(), 201)?
            .first_success(Instant::now())?;

        let write = lock("after", &survivors)?;
        let job = Writes::new(&cluster, &survivors, "/api/jobs", echo.clone(), 201)?;
        let health: Vec<(u64, String)> = survivors
            .iter()
            .map(|id| {
                cluster
                    .master(*id)
                    .map(|m| (m.id, format!("{}/api/health", m.url)))
            })
            .collect::<Result<_>>()?;
        let killed = Instant::now();
        cluster.kill_master(leader)?;
        let elected = std::thread::spawn(move || new_leader(&health, killed));
        let written = std::thread::spawn(move || write.first_success(killed));
        let accepted = job.first_success(killed)?;
        let join = |what| anyhow::anyhow!("the {what} thread panicked");
        let written = written.join().map_err(|_| join("write"))??;
        let elected = elected.join().map_err(|_| join("election"))??;
        let round_figures = Round {
            leader: elected.as_secs_f64(),
            write: written.as_secs_f64(),
            job: accepted.as_secs_f64(),
        };
        eprintln!(
            "round {round}: killed master {leader}; new leader {:.3} s, first write {:.3} s, first job {:.3} s",
            round_figures.leader, round_figures.write, round_figures.job
        );
        measured.push(round_figures);
        cluster.restart_master(leader)?;
        cluster
            .wait_caught_up(leader, ROUND_LIMIT)
            .with_context(|| format!("master {leader} did not catch up after its restart"))?;
    }
    let sorted = |f: fn(&Round) -> f64| {
        let mut v: Vec<f64> = measured.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let (leaders, writes, jobs) = (sorted(|r| r.leader), sorted(|r| r.write), sorted(|r| r.job));
    let max = |v: &[f64]| round3(v.last().copied().unwrap_or(0.0));
    let out = json!({
        "bench": "failover",
        "masters": MASTERS,
        "rounds": rounds,
        "kill_to_first_write_median_s": round3(percentile(&writes, 0.5)),
        "kill_to_first_write_p90_s": round3(percentile(&writes, 0.9)),
        "kill_to_first_write_max_s": max(&writes),
        "kill_to_new_leader_median_s": round3(percentile(&leaders, 0.5)),
        "kill_to_new_leader_max_s": max(&leaders),
        "kill_to_first_job_median_s": round3(percentile(&jobs, 0.5)),
        "kill_to_first_job_p90_s": round3(percentile(&jobs, 0.9)),
        "kill_to_first_job_max_s": max(&jobs),
        "target_median_s": TARGET_MEDIAN_S,
        "etcd_3_4_median_s": ETCD_MEDIAN_S,
        "write": "lock acquire (POST /api/locks/<fresh>/acquire); job: POST /api/jobs echo; retried every 5 ms on the survivors",
    });
    println!("{out}");
    Ok(())
}

/// One kind of write, to be retried against some masters until it succeeds.
struct Writes {
    urls: Vec<String>,
    body: String,
    bearer: String,
    status: u16,
    agent: ureq::Agent,
}

impl Writes {
    fn new(
        cluster: &LocalCluster,
        masters: &[u64],
        path: &str,
        body: String,
        status: u16,
    ) -> Result<Writes> {
        let urls = masters
            .iter()
            .map(|id| cluster.master(*id).map(|m| format!("{}{path}", m.url)))
            .collect::<Result<_>>()?;
        Ok(Writes {
            urls,
            body,
            bearer: format!("Bearer {}", cluster.secret),
            status,
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_millis(200))
                .timeout(Duration::from_secs(1))
                .build(),
        })
    }

    /// POSTs the body to the masters in turn every [`RETRY`] until one answers the expected
    /// status; returns the time since `since`.
    fn first_success(&self, since: Instant) -> Result<Duration> {
        for url in self.urls.iter().cycle() {
            let answer = self
                .agent
                .post(url)
                .set("Authorization", &self.bearer)
                .set("Content-Type", "application/json")
                .send_string(&self.body);
            let last = match answer {
                Ok(response) if response.status() == self.status => return Ok(since.elapsed()),
                Ok(response) => response.status().to_string(),
                Err(error) => error.to_string(),
            };
            if since.elapsed() > ROUND_LIMIT {
                bail!("POST {url} did not succeed within {ROUND_LIMIT:?}; last answer: {last}");
            }
            std::thread::sleep(RETRY);
        }
        bail!("no master to write to")
    }
}

/// Polls the masters' health until one says it leads; returns the time since `since`.
fn new_leader(health: &[(u64, String)], since: Instant) -> Result<Duration> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_millis(500))
        .build();
    loop {
        for (id, url) in health {
            let answer: Option<serde_json::Value> =
                agent.get(url).call().ok().and_then(|r| r.into_json().ok());
            if answer.is_some_and(|h| h["role"] == "leader" && h["id"] == *id) {
                return Ok(since.elapsed());
            }
        }
        if since.elapsed() > ROUND_LIMIT {
            bail!("no new leader within {ROUND_LIMIT:?}");
        }
        std::thread::sleep(RETRY);
    }
}

//! Consistent-hash placement on a real cluster (one master, three workers, real processes):
//! keyed `task` jobs stay on their key's worker, move to the key's next candidate when that
//! worker is killed, and stay there; `GET /api/cluster` shows each worker's share of the ring.
//!
//! Build the binaries first: `cargo build --workspace --bins`.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jobs::WorkerId;
use master::placement::Placement;
use serde_json::{json, Value};

use support::{tasks_of_kind, Cluster, ClusterOpts};

/// The longest a keyed echo task may take, including a worker's death being noticed (3 s).
const JOB_TIMEOUT: Duration = Duration::from_secs(60);

/// Submits an echo task with `key`, waits for it to succeed, checks its result, and returns the
/// name of the worker whose attempt succeeded.
fn run_keyed(cluster: &Cluster, key: &str, payload: u64) -> String {
    let spec = json!({"kind": "task", "job": "echo", "payload": payload, "key": key});
    let id = cluster.submit_ok(&spec);
    let job = cluster.wait_success(&id, JOB_TIMEOUT);
    assert_eq!(job["result"], json!(payload), "{job:#}");
    let runs = tasks_of_kind(&job, "run");
    assert_eq!(runs.len(), 1, "{job:#}");
    let succeeded: Vec<&Value> = runs[0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["state"] == "succeeded")
        .collect();
    assert_eq!(succeeded.len(), 1, "one attempt succeeded: {job:#}");
    succeeded[0]["worker"].as_str().unwrap().to_string()
}

/// `GET /api/cluster`'s workers by name.
fn workers(cluster: &Cluster) -> BTreeMap<String, Value> {
    let (status, body) = cluster.get("/api/cluster");
    assert_eq!(status, 200, "{body}");
    body["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["name"].as_str().unwrap().to_string(), w.clone()))
        .collect()
}

fn worker_id(view: &Value) -> WorkerId {
    WorkerId(view["id"].as_str().unwrap().parse().unwrap())
}

/// The ring the master should have over the live workers (every worker has `slots` slots).
fn expected_ring(views: &BTreeMap<String, Value>, slots: u32) -> Placement {
    Placement::new(
        views
            .values()
            .filter(|w| w["alive"] == true)
            .map(|w| (worker_id(w), slots)),
    )
}

/// Whether the view's ring shares are the expected ring's: live workers own what the ring gives
/// them (summing to 1), dead ones nothing.
fn check_shares(views: &BTreeMap<String, Value>, slots: u32) -> Result<(), String> {
    let ring = expected_ring(views, slots);
    let mut total = 0.0;
    for (name, view) in views {
        let share = view["ring_share"]
            .as_f64()
            .ok_or_else(|| format!("no ring_share: {view}"))?;
        let expected = if view["alive"] == true {
            ring.share(worker_id(view))
        } else {
            0.0
        };
        if (share - expected).abs() > 1e-9 {
            return Err(format!("{name} owns {share}, expected {expected}: {view}"));
        }
        total += share;
    }
    if (total - 1.0).abs() > 1e-6 {
        return Err(format!("shares sum to {total}"));
    }
    Ok(())
}

/// Waits (bounded) until `GET /api/cluster` shows the ring over the live workers (the scheduler
/// hears of a joined or lost worker just after the registry), and returns the workers.
fn await_shares(cluster: &Cluster, slots: u32) -> BTreeMap<String, Value> {
    cluster.await_condition("ring shares over the live workers", JOB_TIMEOUT, || {
        check_shares(&workers(cluster), slots).is_ok()
    });
    let views = workers(cluster);
    check_shares(&views, slots).unwrap_or_else(|e| panic!("{e}"));
    for (name, view) in &views {
        if view["alive"] == true {
            let share = view["ring_share"].as_f64().unwrap();
            assert!(share > 0.05, "{name} owns only {share}");
        }
    }
    views
}

#[test]
fn keyed_tasks_stay_on_their_worker_and_fail_over_to_the_next_candidate() {
    let slots = 2;
    let mut cluster = Cluster::start(ClusterOpts::new(3, slots));
    let views = await_shares(&cluster, slots);
    let ring = expected_ring(&views, slots);
    let name_of = |id: WorkerId| -> String {
        views
            .iter()
            .find(|(_, v)| worker_id(v) == id)
            .map(|(name, _)| name.clone())
            .unwrap()
    };

    // The same key runs on the same worker, the ring's owner of the key.
    let owner = run_keyed(&cluster, "k1", 0);
    for payload in 1..4 {
        assert_eq!(run_keyed(&cluster, "k1", payload), owner, "k1 moved");
    }
    let candidates: Vec<WorkerId> = ring.candidates("k1").collect();
    assert_eq!(owner, name_of(candidates[0]), "k1 runs on its ring owner");
    // Other keys spread over the workers.
    let spread: BTreeSet<String> = (2..10)
        .map(|k| run_keyed(&cluster, &format!("k{k}"), k))
        .collect();
    assert!(spread.len() >= 2, "8 keys all ran on {spread:?}");

    // The owner dies (kill -9). The key's next task runs on the key's next candidate, once
    // the master has noticed, and succeeds; later ones stay there.
    cluster.kill_worker(&owner);
    let next = run_keyed(&cluster, "k1", 10);
    assert_ne!(next, owner);
    assert_eq!(
        next,
        name_of(candidates[1]),
        "k1 went to its next candidate"
    );
    for payload in 11..14 {
        assert_eq!(run_keyed(&cluster, "k1", payload), next, "k1 moved again");
    }

    // The cluster view shows the ring without the dead worker.
    cluster.await_condition("the killed worker to be listed dead", JOB_TIMEOUT, || {
        !cluster.worker_alive(&owner)
    });
    let views = await_shares(&cluster, slots);
    assert_eq!(views[&owner]["ring_share"], json!(0.0));
}

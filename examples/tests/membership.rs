//! Membership of the masters' Raft group at runtime, with real processes (see
//! `support/mod.rs`): a master started later joins through `POST /api/masters` (learner, then
//! voter, with every earlier job), a master leaves through `DELETE /api/masters/{id}` and the
//! group keeps taking writes, also after its leader is killed; a fresh master with the
//! smallest id joins instead of founding a group of its own; bad requests get 400/404/401.
//!
//! Build the binaries first: `cargo build --workspace --bins`.
#![allow(clippy::unwrap_used)]

mod support;

use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use support::{free_port, master_bin, Cluster, ClusterOpts, POLL_INTERVAL, SECRET};

/// The longest a job or a membership change of these tests may take.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Marks a request as forwarded, so a follower answers it from its own state.
const FORWARDED_HEADER: &str = "x-mrcluster-forwarded";

fn echo(payload: Value) -> Value {
    json!({"kind": "task", "job": "echo", "payload": payload})
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(2))
        .timeout(Duration::from_secs(30))
        .build()
}

fn http_of(cluster: &Cluster, id: u64) -> SocketAddr {
    cluster.masters.iter().find(|m| m.0 == id).unwrap().2
}

/// `method url` with an optional body and headers; `None` on a transport error.
fn call(
    method: &str,
    url: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Option<(u16, Value)> {
    support::http_request(&agent(), method, url, body, headers)
}

/// Master `id`'s own `/api/health`, if it answers.
fn health(cluster: &Cluster, id: u64) -> Option<Value> {
    let url = format!("http://{}/api/health", http_of(cluster, id));
    match call("GET", &url, None, &[])? {
        (200, health) => Some(health),
        _ => None,
    }
}

/// Job `job` as master `id` has it in its own state (the forwarded header keeps a follower from
/// forwarding the read to the leader).
fn local_job(cluster: &Cluster, id: u64, job: &str) -> Option<Value> {
    let url = format!("http://{}/api/jobs/{job}", http_of(cluster, id));
    match call("GET", &url, None, &[(FORWARDED_HEADER, "1")])? {
        (200, job) => Some(job),
        _ => None,
    }
}

/// `method /api/masters...` on master `id`, with the secret.
fn masters_call(
    cluster: &Cluster,
    id: u64,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let url = format!("http://{}{path}", http_of(cluster, id));
    let bearer = format!("Bearer {SECRET}");
    call(method, &url, body, &[("Authorization", &bearer)]).unwrap_or_else(|| {
        panic!(
            "{method} {path} on master {id}: no answer\n{}",
            cluster.log_tails()
        )
    })
}

/// The member ids and their membership in a `/api/masters` answer.
fn members(view: &Value) -> Vec<(u64, String)> {
    view["masters"]
        .as_array()
        .unwrap_or_else(|| panic!("no masters in {view}"))
        .iter()
        .map(|m| {
            (
                m["id"].as_u64().unwrap(),
                m["membership"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Adds a `[[master]]` entry with free ports to the cluster file (as an operator would) and
/// registers its process with the harness; returns its addresses.
fn add_master_entry(cluster: &mut Cluster, id: u64) -> (SocketAddr, SocketAddr) {
    let (rpc, http) = (free_port(), free_port());
    let mut file = OpenOptions::new()
        .append(true)
        .open(&cluster.config_path)
        .unwrap();
    write!(
        file,
        "\n[[master]]\nid = {id}\nrpc = \"{rpc}\"\nhttp = \"{http}\"\n"
    )
    .unwrap();
    cluster.masters.push((id, rpc, http));
    let config = cluster.config_path.to_string_lossy().into_owned();
    let args = ["run", "--config", &config, "--id", &id.to_string()].map(String::from);
    cluster.add_node(&format!("master-{id}"), master_bin(), args.to_vec());
    (rpc, http)
}

/// Submits `spec` to the running masters in turn until one accepts it (bounded by
/// [`TIMEOUT`]); returns the job id.
fn submit_anywhere(cluster: &Cluster, masters: &[u64], spec: &Value) -> String {
    let deadline = Instant::now() + TIMEOUT;
    let mut last = None;
    for _ in 0..(TIMEOUT.as_millis() / POLL_INTERVAL.as_millis()) {
        for id in masters {
            let url = format!("http://{}/api/jobs", http_of(cluster, *id));
            let bearer = format!("Bearer {SECRET}");
            match call(
                "POST",
                &url,
                Some(&spec.to_string()),
                &[("Authorization", &bearer)],
            ) {
                Some((201, body)) => return body["id"].as_str().unwrap().to_string(),
                other => last = other,
            }
        }
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    panic!(
        "no master took {spec} within {TIMEOUT:?}; last answer {last:?}\n{}",
        cluster.log_tails()
    );
}

#[test]
fn a_master_joins_as_a_voter_and_the_group_survives_a_removal_and_a_leader_kill() {
    let mut cluster = Cluster::start(ClusterOpts::new(1, 2).with_masters(3));
    let before: Vec<String> = (0..3).map(|i| cluster.submit_ok(&echo(json!(i)))).collect();
    for id in &before {
        cluster.wait_success(id, TIMEOUT);
    }

    // A fourth master, started by the operator: it waits to be added.
    let (rpc, http) = add_master_entry(&mut cluster, 4);
    cluster.spawn("master-4");
    let mut waiting = None;
    cluster.await_condition("master 4 to answer", TIMEOUT, || {
        waiting = health(&cluster, 4);
        waiting.is_some()
    });
    let waiting = waiting.unwrap();
    assert_eq!(waiting["membership"], "none", "{waiting}");
    assert_ne!(waiting["role"], "leader", "{waiting}");
    assert!(
        waiting["last_log_index"].is_null(),
        "no group of its own: {waiting}"
    );

    // Added through a follower, which forwards to the leader.
    let leader = cluster.find_leader().unwrap();
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let body = json!({"id": 4, "rpc": rpc.to_string(), "http": http.to_string()}).to_string();
    let (status, view) = masters_call(&cluster, follower, "POST", "/api/masters", Some(&body));
    assert_eq!(status, 200, "{view}\n{}", cluster.log_tails());
    assert_eq!(
        members(&view),
        [(1, "voter"), (2, "voter"), (3, "voter"), (4, "voter")].map(|(id, m)| (id, m.to_string()))
    );
    let four = view["masters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == 4)
        .unwrap();
    assert_eq!(four["http"], http.to_string());

    // It says so itself, the cluster view says so, and it has the earlier jobs.
    cluster.await_condition("master 4 to know it votes", TIMEOUT, || {
        health(&cluster, 4).is_some_and(|h| h["membership"] == "voter" && h["leader"] == leader)
    });
    for id in &before {
        let job = local_job(&cluster, 4, id).unwrap_or_else(|| panic!("master 4 lacks job {id}"));
        assert_eq!(job["state"], "succeeded");
    }
    // The serving master asks every member with a short timeout: on a loaded machine one
    // answer may be late, so poll until a view shows all four.
    let mut view = Value::Null;
    cluster.await_condition("the cluster view to show 4 voters", TIMEOUT, || {
        view = cluster.get("/api/cluster").1;
        view["masters"].as_array().is_some_and(|listed| {
            listed.len() == 4
                && listed.iter().all(|m| {
                    m["reachable"] == true
                        && m["membership"] == "voter"
                        && m["last_applied"].as_u64().is_some()
                })
        })
    });
    let listed = view["masters"].as_array().unwrap();
    let four = listed.iter().find(|m| m["id"] == 4).unwrap();
    assert_eq!(four["role"], "follower", "{four}");

    // A new job replicates to it.
    let after = submit_anywhere(&cluster, &[4], &echo(json!("after")));
    cluster.wait_success(&after, TIMEOUT);
    cluster.await_condition("the new job on master 4", TIMEOUT, || {
        local_job(&cluster, 4, &after).is_some_and(|j| j["state"] == "succeeded")
    });

    // Remove a follower (one of the first three); it keeps running, disturbing nothing.
    let leader = cluster.find_leader().unwrap();
    let removed = (1..=3).find(|id| *id != leader).unwrap();
    let (status, view) = masters_call(
        &cluster,
        leader,
        "DELETE",
        &format!("/api/masters/{removed}"),
        None,
    );
    assert_eq!(status, 200, "{view}");
    let left: Vec<u64> = members(&view).into_iter().map(|(id, _)| id).collect();
    assert_eq!(left.len(), 3);
    assert!(!left.contains(&removed));
    let remaining: Vec<u64> = left.clone();
    for i in 0..5 {
        let id = submit_anywhere(&cluster, &remaining, &echo(json!({"after_removal": i})));
        cluster.wait_success(&id, TIMEOUT);
    }
    let (_, view) = masters_call(&cluster, leader, "GET", "/api/masters", None);
    assert_eq!(members(&view).len(), 3, "{view}");
    let (_, view) = cluster.get("/api/cluster");
    let gone = view["masters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == removed)
        .unwrap();
    assert_eq!(
        gone["membership"], "none",
        "still in the file, not a member: {gone}"
    );
    assert_ne!(cluster.find_leader(), Some(removed));

    // Kill the leader: two of the three members are left, a majority.
    let leader = cluster.find_leader().unwrap();
    cluster.kill_master(leader);
    let survivors: Vec<u64> = remaining
        .iter()
        .copied()
        .filter(|id| *id != leader)
        .collect();
    let id = submit_anywhere(&cluster, &survivors, &echo(json!("after the kill")));
    cluster.await_condition("a new leader among the members", TIMEOUT, || {
        cluster
            .find_leader()
            .is_some_and(|new| survivors.contains(&new))
    });
    cluster.wait_success(&id, TIMEOUT);
}

#[test]
fn a_fresh_master_with_the_smallest_id_joins_instead_of_founding_a_group() {
    let mut cluster = Cluster::start(ClusterOpts::new(1, 1).with_masters(3));
    let job = cluster.submit_ok(&echo(json!("kept")));
    cluster.wait_success(&job, TIMEOUT);
    // Master 1 leaves the group, and comes back with an empty data directory (a replaced disk):
    // it is the smallest id of the file, but the others are a group already.
    let leader = cluster.find_leader().unwrap();
    let other = (2..=3).find(|id| *id != leader).unwrap();
    let (status, view) = masters_call(&cluster, other, "DELETE", "/api/masters/1", None);
    assert_eq!(status, 200, "{view}");
    assert_eq!(members(&view).len(), 2);
    cluster.await_condition("a leader among masters 2 and 3", TIMEOUT, || {
        cluster.find_leader().is_some_and(|id| id != 1)
    });
    cluster.kill_master(1);
    std::fs::remove_dir_all(cluster.dir().join("data").join("master-1")).unwrap();
    cluster.restart_master(1);
    let mut fresh = None;
    cluster.await_condition("master 1 to answer", TIMEOUT, || {
        fresh = health(&cluster, 1);
        fresh.is_some()
    });
    let fresh = fresh.unwrap();
    assert_eq!(
        fresh["membership"], "none",
        "it must not initialise a group: {fresh}"
    );
    assert!(fresh["last_log_index"].is_null(), "{fresh}");
    assert!(cluster
        .log("master-1")
        .contains("already belongs to a group"));

    let (_, rpc, http) = *cluster.masters.iter().find(|m| m.0 == 1).unwrap();
    let body = json!({"id": 1, "rpc": rpc.to_string(), "http": http.to_string()}).to_string();
    let (status, view) = masters_call(&cluster, other, "POST", "/api/masters", Some(&body));
    assert_eq!(status, 200, "{view}\n{}", cluster.log_tails());
    assert_eq!(members(&view).len(), 3);
    cluster.await_condition("master 1 to have the job again", TIMEOUT, || {
        local_job(&cluster, 1, &job).is_some_and(|j| j["state"] == "succeeded")
    });
    assert_eq!(health(&cluster, 1).unwrap()["membership"], "voter");
}

#[test]
fn bad_membership_requests_are_refused() {
    let cluster = Cluster::start(ClusterOpts::new(1, 1));
    let rpc1 = cluster.masters[0].1;
    let free = || free_port().to_string();
    let good = json!({"id": 2, "rpc": free(), "http": free()}).to_string();

    // No secret, wrong secret: 401, and nothing changes.
    let (status, _) = cluster.request("POST", "/api/masters", Some(&good), None);
    assert_eq!(status, 401);
    let (status, _) = cluster.request("DELETE", "/api/masters/1", None, Some("wrong"));
    assert_eq!(status, 401);

    for (body, needle) in [
        (
            json!({"id": 0, "rpc": free(), "http": free()}).to_string(),
            "start at 1",
        ),
        (
            json!({"id": 1, "rpc": free(), "http": free()}).to_string(),
            "already a voter",
        ),
        (
            json!({"id": 5, "rpc": rpc1.to_string(), "http": free()}).to_string(),
            "already belongs to master 1",
        ),
        (
            json!({"id": 5, "rpc": "nowhere", "http": free()}).to_string(),
            "`rpc`",
        ),
        (r#"{"id": 5"#.to_string(), "invalid master"),
    ] {
        let (status, error) = cluster.request("POST", "/api/masters", Some(&body), Some(SECRET));
        assert_eq!(status, 400, "{body}: {error}");
        assert!(
            error["error"].as_str().unwrap().contains(needle),
            "{body}: {error}"
        );
    }
    let (status, error) = cluster.request("DELETE", "/api/masters/9", None, Some(SECRET));
    assert_eq!(status, 404, "{error}");
    let (status, error) = cluster.request("DELETE", "/api/masters/1", None, Some(SECRET));
    assert_eq!(status, 400, "{error}");
    assert!(
        error["error"].as_str().unwrap().contains("last voter"),
        "{error}"
    );
    let (status, _) = cluster.request("DELETE", "/api/masters/one", None, Some(SECRET));
    assert_eq!(status, 400);

    // A master that is not running cannot catch up: 503 after the bounded wait, and it stays a
    // learner until it is removed.
    let (status, error) = cluster.request("POST", "/api/masters", Some(&good), Some(SECRET));
    assert_eq!(status, 503, "{error}");
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("has not caught up"),
        "{error}"
    );
    let (status, view) = cluster.get("/api/masters");
    assert_eq!(status, 200);
    assert_eq!(
        members(&view),
        [(1, "voter".to_string()), (2, "learner".to_string())]
    );
    let (status, view) = cluster.request("DELETE", "/api/masters/2", None, Some(SECRET));
    assert_eq!(status, 200, "{view}");
    assert_eq!(members(&view), [(1, "voter".to_string())]);
    // The master still takes jobs.
    let job = cluster.submit_ok(&echo(json!("still here")));
    cluster.wait_success(&job, TIMEOUT);
}

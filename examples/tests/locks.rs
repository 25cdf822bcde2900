//! Distributed locks with real master and worker processes on loopback: the HTTP API's
//! answers, leases that run out, FIFO hand-offs, fencing tokens, a leader killed while eight
//! clients increment a counter under one lock, and job code taking a lock from its task
//! context.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{Cluster, ClusterOpts, SECRET};

/// A lock call through the harness: `(status, body)`.
fn lock_call(cluster: &Cluster, name: &str, op: &str, body: Value) -> (u16, Value) {
    cluster.request(
        "POST",
        &format!("/api/locks/{name}/{op}"),
        Some(&body.to_string()),
        Some(SECRET),
    )
}

fn acquire(cluster: &Cluster, name: &str, owner: &str, ttl_ms: u64, wait_ms: u64) -> (u16, Value) {
    lock_call(
        cluster,
        name,
        "acquire",
        json!({"owner": owner, "ttl_ms": ttl_ms, "wait_ms": wait_ms}),
    )
}

fn token_of(answer: &(u16, Value)) -> u64 {
    assert_eq!(answer.0, 200, "expected a grant, got {answer:?}");
    answer.1["token"]
        .as_u64()
        .unwrap_or_else(|| panic!("no token in {answer:?}"))
}

fn listed(cluster: &Cluster, name: &str) -> Option<Value> {
    let (status, body) = cluster.get("/api/locks");
    assert_eq!(status, 200, "{body}");
    body["locks"]
        .as_array()
        .and_then(|locks| locks.iter().find(|l| l["name"] == name).cloned())
}

#[test]
fn try_conflicts_leases_expire_and_stale_holders_are_refused() {
    let cluster = Cluster::start(ClusterOpts::new(1, 1));

    let first = token_of(&acquire(&cluster, "db", "alice", 60_000, 0));
    // A try on a held lock answers 409 at once, naming the holder.
    let started = Instant::now();
    let refused = acquire(&cluster, "db", "bob", 60_000, 0);
    assert_eq!(refused.0, 409, "{refused:?}");
    assert!(
        refused.1["error"].as_str().unwrap_or("").contains("alice"),
        "{refused:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a try never waits"
    );
    // The holder asking again keeps the lock under a new grant; the old token is stale.
    let again = token_of(&acquire(&cluster, "db", "alice", 60_000, 0));
    assert!(again > first);
    let old = json!({"owner": "alice", "token": first});
    assert_eq!(lock_call(&cluster, "db", "keepalive", old).0, 409);
    let first = again;
    let shown = listed(&cluster, "db").expect("GET /api/locks lists a held lock");
    assert_eq!(shown["owner"], "alice");
    assert_eq!(shown["token"], first);

    // A keepalive and a release with a wrong token are refused; the lock stays.
    let stale = json!({"owner": "alice", "token": first + 100});
    assert_eq!(lock_call(&cluster, "db", "keepalive", stale.clone()).0, 409);
    assert_eq!(lock_call(&cluster, "db", "release", stale).0, 409);
    let keep = json!({"owner": "alice", "token": first});
    assert_eq!(lock_call(&cluster, "db", "keepalive", keep.clone()).0, 200);
    assert_eq!(lock_call(&cluster, "db", "release", keep.clone()).0, 200);
    assert!(listed(&cluster, "db").is_none(), "a released lock is free");
    // Releasing twice: the second is stale.
    assert_eq!(lock_call(&cluster, "db", "release", keep).0, 409);

    // A lease that nobody keeps alive runs out and the lock passes to the waiter, with a
    // higher token; the paused holder's release is then refused.
    // (Timed from before carol asks: her lease starts later than that on the master.)
    let asked = Instant::now();
    let paused = token_of(&acquire(&cluster, "db", "carol", 300, 0));
    assert!(paused > first);
    let next = token_of(&acquire(&cluster, "db", "dave", 60_000, 20_000));
    assert!(next > paused, "{next} after {paused}");
    assert!(
        asked.elapsed() >= Duration::from_millis(300),
        "the lease was cut short: granted after {:?}",
        asked.elapsed()
    );
    let late = lock_call(
        &cluster,
        "db",
        "release",
        json!({"owner": "carol", "token": paused}),
    );
    assert_eq!(late.0, 409, "{late:?}");
    assert!(
        late.1["error"].as_str().unwrap_or("").contains("dave"),
        "{late:?}"
    );
    // A lease kept alive outlives its TTL (2 s, kept alive every 0.5 s for 3 s).
    let kept = token_of(&acquire(&cluster, "kept", "erin", 2_000, 0));
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(500));
        let answer = lock_call(
            &cluster,
            "kept",
            "keepalive",
            json!({"owner": "erin", "token": kept}),
        );
        assert_eq!(answer.0, 200, "keepalive of a live lease: {answer:?}");
    }
    assert_eq!(acquire(&cluster, "kept", "frank", 1000, 0).0, 409);

    // A waiting acquire that is not granted in time answers 409.
    let timed_out = acquire(&cluster, "db", "gina", 60_000, 200);
    assert_eq!(timed_out.0, 409, "{timed_out:?}");
    assert!(listed(&cluster, "db").is_some_and(|l| l["waiters"] == json!([])));

    // Bad input: 400 with a message, no secret: 401.
    for (body, what) in [
        (json!({"ttl_ms": 1000}), "owner"),
        (json!({"owner": "x", "ttl_ms": 5}), "ttl_ms"),
        (json!({"owner": "x", "wait_ms": 10_000_000}), "wait_ms"),
        (json!({"owner": "", "ttl_ms": 1000}), "owner"),
        (json!({"owner": "x", "colour": 1}), "colour"),
    ] {
        let (status, answer) = lock_call(&cluster, "db", "acquire", body.clone());
        assert_eq!(status, 400, "{body} → {answer}");
        assert!(
            answer["error"].as_str().unwrap_or("").contains(what),
            "{body} → {answer}"
        );
    }
    let (status, _) = cluster.request(
        "POST",
        "/api/locks/db/acquire",
        Some(r#"{"owner":"x"}"#),
        None,
    );
    assert_eq!(status, 401);
}

#[test]
fn waiters_are_served_first_come_first_served() {
    let cluster = Cluster::start(ClusterOpts::new(1, 1));
    let http = cluster.masters[0].2;
    let holder = token_of(&acquire(&cluster, "q", "holder", 60_000, 0));
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for i in 0..4 {
        let order = order.clone();
        threads.push(std::thread::spawn(move || {
            let owner = format!("w{i}");
            let answer = post(
                http,
                "/api/locks/q/acquire",
                &json!({"owner": owner, "ttl_ms": 60_000, "wait_ms": 30_000}),
            )
            .expect("a waiting acquire answers");
            let token = token_of(&answer);
            order.lock().unwrap().push((owner.clone(), token));
            let release = json!({"owner": owner, "token": token});
            assert_eq!(
                post(http, "/api/locks/q/release", &release).map(|a| a.0),
                Some(200)
            );
        }));
        // Queue them one after the other: each is in line before the next asks.
        cluster.await_condition("the waiter to queue", Duration::from_secs(10), || {
            listed(&cluster, "q")
                .is_some_and(|l| l["waiters"].as_array().is_some_and(|w| w.len() == i + 1))
        });
    }
    let release = json!({"owner": "holder", "token": holder});
    assert_eq!(lock_call(&cluster, "q", "release", release).0, 200);
    for thread in threads {
        thread.join().expect("a waiter thread");
    }
    let order = order.lock().unwrap().clone();
    let owners: Vec<&str> = order.iter().map(|(o, _)| o.as_str()).collect();
    assert_eq!(owners, ["w0", "w1", "w2", "w3"]);
    assert!(order.windows(2).all(|p| p[0].1 < p[1].1), "{order:?}");
}

/// `POST path` to one master with the secret; `None` on a transport error.
fn post(http: SocketAddr, path: &str, body: &Value) -> Option<(u16, Value)> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(40))
        .build();
    let bearer = format!("Bearer {SECRET}");
    support::http_request(
        &agent,
        "POST",
        &format!("http://{http}{path}"),
        Some(&body.to_string()),
        &[("Authorization", &bearer)],
    )
}

/// The shared resource of the increment test: a counter that takes a write only with a token
/// at least as new as the last one (fencing), and logs the tokens of the writes it took.
#[derive(Default)]
struct Resource {
    value: u64,
    last_token: u64,
    writes: Vec<u64>,
    refused: Vec<(u64, u64)>,
}

/// One client's loop: `rounds` times acquire, read, write `value + 1` fenced by the token,
/// release. Any master will do (followers forward); a transport error or a 503 (a failover)
/// sends the same request to the next master after a short pause.
fn increment_client(
    index: usize,
    owner: String,
    masters: Vec<SocketAddr>,
    rounds: usize,
    resource: Arc<Mutex<Resource>>,
    done: Arc<AtomicUsize>,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut next_master = index;
    let mut call = |path: &str, body: &Value| -> (u16, Value) {
        for _ in 0..2000 {
            if Instant::now() > deadline {
                break;
            }
            let http = masters[next_master % masters.len()];
            match post(http, path, body) {
                Some(answer) if answer.0 != 503 => return answer,
                _ => {
                    next_master += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        (0, json!({"error": "no master answered in time"}))
    };
    for round in 0..rounds {
        let acquire = json!({"owner": owner, "ttl_ms": 10_000, "wait_ms": 20_000});
        let token = loop {
            let answer = call("/api/locks/counter/acquire", &acquire);
            match answer.0 {
                200 => break answer.1["token"].as_u64().ok_or("no token")?,
                // Not granted in time (the queue was dropped by a failover): ask again.
                409 => continue,
                _ => return Err(format!("{owner} round {round}: acquire {answer:?}")),
            }
        };
        let read = resource.lock().expect("the resource").value;
        std::thread::sleep(Duration::from_millis(1));
        {
            let mut r = resource.lock().expect("the resource");
            if token < r.last_token {
                let last = r.last_token;
                r.refused.push((token, last));
            } else {
                r.value = read + 1;
                r.last_token = token;
                r.writes.push(token);
            }
        }
        let release = json!({"owner": owner, "token": token});
        let answer = call("/api/locks/counter/release", &release);
        // A release whose first answer a failover swallowed may find the lock already moved on.
        if answer.0 != 200 && answer.0 != 409 {
            return Err(format!("{owner} round {round}: release {answer:?}"));
        }
        done.fetch_add(1, Ordering::SeqCst);
    }
    Ok(())
}

#[test]
fn eight_clients_lose_no_update_when_the_leader_is_killed() {
    const CLIENTS: usize = 8;
    const ROUNDS: usize = 40;
    let mut cluster = Cluster::start(ClusterOpts::new(1, 1).with_masters(3));
    let masters: Vec<SocketAddr> = cluster.masters.iter().map(|m| m.2).collect();
    let leader = cluster.find_leader().expect("a leader");

    // A lock held across the failover keeps its grant: the new leader restarts its lease.
    let survivor = token_of(&acquire(&cluster, "survivor", "keeper", 600_000, 0));

    let resource = Arc::new(Mutex::new(Resource::default()));
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (masters, resource, done, failed) = (
                masters.clone(),
                resource.clone(),
                done.clone(),
                failed.clone(),
            );
            std::thread::spawn(move || {
                let result =
                    increment_client(i, format!("client-{i}"), masters, ROUNDS, resource, done);
                if result.is_err() {
                    failed.store(true, Ordering::SeqCst);
                }
                result
            })
        })
        .collect();

    cluster.await_condition("a third of the increments", Duration::from_secs(60), || {
        done.load(Ordering::SeqCst) >= CLIENTS * ROUNDS / 3 || failed.load(Ordering::SeqCst)
    });
    cluster.kill_master(leader);
    let at_kill = done.load(Ordering::SeqCst);
    assert!(at_kill < CLIENTS * ROUNDS, "the leader must die mid-run");
    cluster.await_condition("a new leader", Duration::from_secs(20), || {
        cluster.find_leader().is_some_and(|l| l != leader)
    });
    let errors: Vec<String> = threads
        .into_iter()
        .filter_map(|t| t.join().expect("a client thread").err())
        .collect();
    assert!(errors.is_empty(), "clients failed: {errors:?}");
    eprintln!(
        "{at_kill} of {} increments were done when the leader died",
        CLIENTS * ROUNDS
    );

    let r = resource.lock().unwrap();
    assert!(
        r.refused.is_empty(),
        "stale writes were attempted: {:?}",
        r.refused
    );
    assert_eq!(r.value, (CLIENTS * ROUNDS) as u64, "an update was lost");
    assert_eq!(r.writes.len(), CLIENTS * ROUNDS);
    assert!(
        r.writes.windows(2).all(|p| p[0] < p[1]),
        "tokens must strictly increase in grant order: {:?}",
        r.writes
    );
    drop(r);

    // The grant made before the failover is still the holder's.
    let keep = json!({"owner": "keeper", "token": survivor});
    assert_eq!(
        lock_call(&cluster, "survivor", "keepalive", keep.clone()).0,
        200
    );
    assert_eq!(acquire(&cluster, "survivor", "thief", 1000, 0).0, 409);
    assert_eq!(lock_call(&cluster, "survivor", "release", keep).0, 200);
}

#[test]
fn job_code_takes_a_lock_and_fences_with_its_token() {
    const JOBS: usize = 12;
    let cluster = Cluster::start(ClusterOpts::new(2, 4));
    let counter = cluster.dir().join("counter");
    let ids: Vec<String> = (0..JOBS)
        .map(|_| {
            cluster.submit_ok(&json!({
                "kind": "task",
                "job": "locked-counter",
                "payload": {"counter": counter, "lock": "counter-lock", "hold_ms": 20},
            }))
        })
        .collect();
    let mut results: Vec<(u64, u64)> = ids
        .iter()
        .map(|id| {
            let job = cluster.wait_success(id, Duration::from_secs(60));
            let result = &job["result"];
            (
                result["value"].as_u64().expect("a value"),
                result["token"].as_u64().expect("a token"),
            )
        })
        .collect();
    results.sort();
    let values: Vec<u64> = results.iter().map(|r| r.0).collect();
    assert_eq!(
        values,
        (1..=JOBS as u64).collect::<Vec<_>>(),
        "no lost update"
    );
    assert!(
        results.windows(2).all(|p| p[0].1 < p[1].1),
        "later values carry later tokens: {results:?}"
    );
    let text = std::fs::read_to_string(&counter).expect("the counter file");
    assert!(text.starts_with(&format!("{JOBS} ")), "{text}");
    assert!(
        listed(&cluster, "counter-lock").is_none(),
        "every job released"
    );
}

//! Multi-process cluster tests: each test starts its own cluster of the real `master` binary
//! and `example-worker` binaries on loopback (see `support/mod.rs`), drives it through the
//! public interface (HTTP API, `master submit`, `master up`, signals), and checks what
//! CONTRACT.md promises.
//!
//! Build the binaries first: `cargo build -p master -p worker -p examples --bins`.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use support::{
    assert_output_eq, attempts_of_kind, await_condition, cluster_toml, free_port, generate_corpus,
    is_final, master_bin, process_alive, read_output, read_output_pairs, reference_index,
    reference_wordcount, rfc3339_ms, tasks_of_kind, wait_exit, worker_bin, Cluster, ClusterOpts,
    SECRET,
};

/// The longest any job of these tests may take (they take a few seconds).
const JOB_TIMEOUT: Duration = Duration::from_secs(90);

/// A MapReduce spec.
fn mapreduce(job: &str, input: &[String], output: &Path, reducers: u32, params: Value) -> Value {
    json!({
        "kind": "mapreduce",
        "job": job,
        "input": input,
        "output": output,
        "reducers": reducers,
        "params": params,
    })
}

/// `<dir>/*.txt`.
fn glob_txt(dir: &Path) -> String {
    format!("{}/*.txt", dir.display())
}

/// Asserts that a succeeded MapReduce job lists every part file it wrote in `output`.
fn assert_lists_parts(job: &Value, dir: &Path, reducers: u32) {
    let listed: Vec<&str> = job["output"]
        .as_array()
        .unwrap_or_else(|| panic!("no output list in {job:#}"))
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for r in 0..reducers {
        let part = dir.join(format!("part-r-{r:05}"));
        let part = part.to_str().unwrap();
        assert!(
            listed.contains(&part),
            "{part} not in the job's output {listed:?}"
        );
    }
}

/// The `[started_at, finished_at]` of an attempt in ms, if it has both.
fn interval(attempt: &Value) -> Option<(i64, i64)> {
    let start = rfc3339_ms(attempt["started_at"].as_str()?);
    let end = rfc3339_ms(attempt["finished_at"].as_str()?);
    Some((start, end))
}

#[test]
fn wordcount_matches_sequential_reference() {
    let cluster = Cluster::start(ClusterOpts::new(2, 2));
    let input = cluster.mkdir("input");
    let files = generate_corpus(&input, 1, 5, 400, true);
    let output = cluster.dir().join("out");
    let spec = mapreduce("wordcount", &[glob_txt(&input)], &output, 3, Value::Null);
    let id = cluster.submit_ok(&spec);
    let job = cluster.wait_success(&id, JOB_TIMEOUT);

    let expected = reference_wordcount(&files);
    for word in ["straße", "été", "naïve", "日本語", "ωμέγα", "ǆemal", "οδος"] {
        assert!(expected.contains_key(word), "the corpus lacks {word}");
    }
    assert_output_eq(&output, 3, &expected);
    assert_lists_parts(&job, &output, 3);
    assert_eq!(job["kind"], "mapreduce");
    assert!(job["error"].is_null(), "{job:#}");
}

#[test]
fn index_matches_sequential_reference() {
    let cluster = Cluster::start(ClusterOpts::new(2, 2));
    let input = cluster.mkdir("input");
    let mut files = generate_corpus(&input, 2, 4, 300, true);
    // An empty file holds no words; overlapping globs must not list a file twice.
    let empty = input.join("zz-empty.txt");
    std::fs::write(&empty, "").unwrap();
    files.push(empty);
    let output = cluster.dir().join("index-out");
    let globs = [glob_txt(&input), format!("{}/part-0*.txt", input.display())];
    let id = cluster.submit_ok(&mapreduce("index", &globs, &output, 3, Value::Null));
    let job = cluster.wait_success(&id, JOB_TIMEOUT);

    let expected = reference_index(&files);
    assert!(
        expected.values().any(|v| v.starts_with("4 ")),
        "some word should be in every non-empty file"
    );
    assert_output_eq(&output, 3, &expected);
    assert_lists_parts(&job, &output, 3);
}

#[test]
fn every_map_runs_exactly_once_without_faults() {
    let cluster = Cluster::start(ClusterOpts::new(2, 2));
    let input = cluster.mkdir("input");
    let files = generate_corpus(&input, 3, 6, 200, false);
    let output = cluster.dir().join("out");
    let id = cluster.submit_ok(&mapreduce(
        "wordcount",
        &[glob_txt(&input)],
        &output,
        2,
        json!({}),
    ));
    let job = cluster.wait_success(&id, JOB_TIMEOUT);

    let maps = tasks_of_kind(&job, "map");
    assert_eq!(maps.len(), files.len(), "one map per small file: {job:#}");
    for map in maps {
        let attempts = map["attempts"].as_array().unwrap();
        assert_eq!(
            attempts.len(),
            1,
            "map {} ran more than once: {map:#}",
            map["index"]
        );
        assert_eq!(map["state"], "succeeded", "{map:#}");
        assert_eq!(attempts[0]["state"], "succeeded", "{map:#}");
        let worker = attempts[0]["worker"].as_str().unwrap();
        assert!(
            cluster.workers.iter().any(|w| w == worker),
            "unknown worker {worker}"
        );
        let (start, end) = interval(&attempts[0]).unwrap();
        assert!(start <= end, "{map:#}");
    }
    assert_output_eq(&output, 2, &reference_wordcount(&files));
}

#[test]
fn two_workers_run_maps_concurrently() {
    let cluster = Cluster::start(ClusterOpts::new(2, 1));
    let input = cluster.mkdir("input");
    // 40 lines at 10 ms each: every map takes at least 400 ms.
    let files = generate_corpus(&input, 4, 6, 40, false);
    let output = cluster.dir().join("out");
    let params = json!({"line_delay_us": 10_000});
    let spec = mapreduce("slow-wordcount", &[glob_txt(&input)], &output, 2, params);
    let id = cluster.submit_ok(&spec);
    let job = cluster.wait_success(&id, JOB_TIMEOUT);

    let attempts: Vec<(&str, (i64, i64))> = attempts_of_kind(&job, "map")
        .into_iter()
        .filter(|a| a["state"] == "succeeded")
        .map(|a| (a["worker"].as_str().unwrap(), interval(a).unwrap()))
        .collect();
    for (_, (start, end)) in &attempts {
        assert!(end - start >= 300, "a map took under 300 ms: {job:#}");
    }
    let overlapping = attempts.iter().any(|(w1, (s1, e1))| {
        attempts
            .iter()
            .any(|(w2, (s2, e2))| w1 != w2 && s1 < e2 && s2 < e1)
    });
    assert!(
        overlapping,
        "no two map attempts on different workers overlap in time: {attempts:?}"
    );
    assert_output_eq(&output, 2, &reference_wordcount(&files));
}

/// Submits a `slow-wordcount` over 8 generated files (8 maps of 50 lines at 20 ms: about 1 s
/// each, 4 s per worker), long enough to kill something in the middle. Returns the job id, the
/// input dir, the files and the output dir.
fn submit_slow_wordcount(cluster: &Cluster, seed: u64) -> (String, PathBuf, Vec<PathBuf>, PathBuf) {
    let input = cluster.mkdir("input");
    let files = generate_corpus(&input, seed, 8, 50, false);
    let output = cluster.dir().join("out");
    let params = json!({"line_delay_us": 20_000});
    let spec = mapreduce("slow-wordcount", &[glob_txt(&input)], &output, 2, params);
    (cluster.submit_ok(&spec), input, files, output)
}

#[test]
fn kill_9_worker_mid_job_still_gives_exact_output() {
    let mut cluster = Cluster::start(ClusterOpts::new(2, 1));
    let (id, input, files, output) = submit_slow_wordcount(&cluster, 5);

    // Kill w1 once it has finished a map (whose output only w1 holds) and runs another.
    cluster.await_condition("w1 to finish one map and run another", JOB_TIMEOUT, || {
        let job = cluster.job(&id);
        assert!(
            !is_final(&job),
            "the job ended before w1 could be killed: {job:#}"
        );
        let on_w1: Vec<&Value> = attempts_of_kind(&job, "map")
            .into_iter()
            .filter(|a| a["worker"] == "w1")
            .collect();
        on_w1.iter().any(|a| a["state"] == "running")
            && on_w1.iter().any(|a| a["state"] == "succeeded")
    });
    cluster.kill_worker("w1");

    let job = cluster.wait_success(&id, JOB_TIMEOUT);
    assert_output_eq(&output, 2, &reference_wordcount(&files));
    let maps = tasks_of_kind(&job, "map");
    let lost_on_w1 = attempts_of_kind(&job, "map")
        .iter()
        .any(|a| a["worker"] == "w1" && a["state"] == "lost");
    let rerun = maps
        .iter()
        .any(|t| t["attempts"].as_array().unwrap().len() > 1);
    assert!(
        lost_on_w1 || rerun,
        "the job view shows no lost attempt on w1 and no re-run map: {job:#}"
    );
    for map in maps {
        assert_eq!(map["state"], "succeeded", "{map:#}");
    }
    assert!(
        !cluster.worker_alive("w1"),
        "w1 was killed but is listed alive"
    );

    // The crashed worker comes back under its name and takes work again.
    cluster.start_worker("w1");
    let output = cluster.dir().join("out-again");
    let spec = mapreduce("wordcount", &[glob_txt(&input)], &output, 4, json!({}));
    let id = cluster.submit_ok(&spec);
    let job = cluster.wait_success(&id, JOB_TIMEOUT);
    assert_output_eq(&output, 4, &reference_wordcount(&files));
    let workers: std::collections::BTreeSet<&str> = attempts_of_kind(&job, "map")
        .into_iter()
        .chain(attempts_of_kind(&job, "reduce"))
        .filter_map(|a| a["worker"].as_str())
        .collect();
    assert!(
        workers.contains("w1"),
        "the restarted w1 got no work: {job:#}"
    );
}

#[test]
fn panicking_map_fails_the_job_with_the_panic_message_and_cluster_keeps_serving() {
    let cluster = Cluster::start(ClusterOpts::new(2, 2));
    let input = cluster.mkdir("input");
    let mut files = generate_corpus(&input, 6, 3, 50, false);
    let marker = "KABOOM-7";
    let bad = input.join("bad.txt");
    std::fs::write(
        &bad,
        format!("fine line\nhere is {marker} in a line\nmore\n"),
    )
    .unwrap();
    files.push(bad);
    let spec = json!({
        "kind": "mapreduce",
        "job": "crash-test",
        "input": [glob_txt(&input)],
        "output": cluster.dir().join("crash-out"),
        "reducers": 1,
        "params": {"panic_on": marker},
        "max_attempts": 2,
    });
    let id = cluster.submit_ok(&spec);
    let job = cluster.wait_job(&id, JOB_TIMEOUT);
    assert_eq!(job["state"], "failed", "{job:#}");
    let error = job["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {job:#}"));
    assert!(
        error.contains(marker),
        "the error does not name the marker: {error}"
    );
    assert!(
        error.contains("panicked"),
        "the error does not say it panicked: {error}"
    );
    let failed: Vec<&Value> = tasks_of_kind(&job, "map")
        .into_iter()
        .filter(|t| t["state"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "one map should fail: {job:#}");
    let attempts = failed[0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "max_attempts is 2: {job:#}");
    assert!(attempts.iter().all(|a| a["state"] == "failed"), "{job:#}");

    // The workers survived the panic and the cluster runs the next job.
    let output = cluster.dir().join("out");
    let id = cluster.submit_ok(&mapreduce(
        "wordcount",
        &[glob_txt(&input)],
        &output,
        2,
        json!({}),
    ));
    cluster.wait_success(&id, JOB_TIMEOUT);
    assert_output_eq(&output, 2, &reference_wordcount(&files));
    for worker in &cluster.workers {
        assert!(
            cluster.worker_alive(worker),
            "{worker} is not alive after the panic"
        );
    }
}

#[test]
fn bad_specs_get_4xx_with_a_message() {
    let cluster = Cluster::start(ClusterOpts::new(1, 1));
    let input = cluster.mkdir("input");
    generate_corpus(&input, 7, 1, 5, false);
    let out = |name: &str| cluster.dir().join(name);
    let good = mapreduce("wordcount", &[glob_txt(&input)], &out("o1"), 1, json!({}));

    let check = |what: &str, (status, body): (u16, Value), expected: u16, needle: &str| {
        assert_eq!(status, expected, "{what}: {body}");
        let error = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no \"error\" string in {body}"));
        assert!(!error.trim().is_empty(), "{what}: empty error");
        assert!(
            error.contains(needle),
            "{what}: {error:?} does not mention {needle:?}"
        );
    };

    let unknown = mapreduce(
        "no-such-job-xyz",
        &[glob_txt(&input)],
        &out("o2"),
        1,
        json!({}),
    );
    check(
        "unknown job",
        cluster.submit(&unknown),
        400,
        "no-such-job-xyz",
    );
    let missing = format!("{}/nothing-here-*.txt", input.display());
    let no_input = mapreduce("wordcount", &[missing], &out("o3"), 1, json!({}));
    check(
        "missing input",
        cluster.submit(&no_input),
        400,
        "nothing-here-",
    );
    let zero = mapreduce("wordcount", &[glob_txt(&input)], &out("o4"), 0, json!({}));
    check("zero reducers", cluster.submit(&zero), 400, "reducers");
    check(
        "malformed JSON",
        cluster.submit_raw("{\"kind\": \"mapreduce\", ", Some(SECRET)),
        400,
        "",
    );
    check(
        "no secret",
        cluster.submit_raw(&good.to_string(), None),
        401,
        "",
    );
    check(
        "wrong secret",
        cluster.submit_raw(&good.to_string(), Some("not-the-secret")),
        401,
        "",
    );
    check(
        "unknown job id",
        cluster.get("/api/jobs/4242424242"),
        404,
        "",
    );
    check(
        "cancel an unknown job id",
        cluster.cancel("4242424242"),
        404,
        "",
    );
    check(
        "a job id that is not a number",
        cluster.get("/api/jobs/abc"),
        400,
        "abc",
    );
    let mut typo = good.clone();
    typo["reducer"] = json!(2);
    check("a misspelt key", cluster.submit(&typo), 400, "reducer");
    let used = cluster.mkdir("used");
    std::fs::write(used.join("part-r-00000"), "x\t1\n").unwrap();
    let reuse = mapreduce("wordcount", &[glob_txt(&input)], &used, 1, json!({}));
    check(
        "an output directory in use",
        cluster.submit(&reuse),
        400,
        "used",
    );

    let (status, list) = cluster.get("/api/jobs");
    assert_eq!(status, 200);
    assert_eq!(
        list["jobs"],
        json!([]),
        "a refused spec created a job: {list:#}"
    );
    // The same spec with the right secret is fine.
    let id = cluster.submit_ok(&good);
    cluster.wait_success(&id, JOB_TIMEOUT);
}

#[test]
fn task_jobs_echo_and_reverse() {
    let cluster = Cluster::start(ClusterOpts::new(1, 2));
    let payload = json!({"text": "Straße", "n": [1, 2, 3], "nested": {"ok": true}});
    let id = cluster.submit_ok(&json!({"kind": "task", "job": "echo", "payload": payload}));
    let job = cluster.wait_success(&id, JOB_TIMEOUT);
    assert_eq!(job["result"], payload, "{job:#}");
    assert_eq!(job["kind"], "task");

    let id =
        cluster.submit_ok(&json!({"kind": "task", "job": "reverse", "payload": "Straße 日本"}));
    let job = cluster.wait_success(&id, JOB_TIMEOUT);
    assert_eq!(job["result"], "本日 eßartS", "{job:#}");

    // Only the worker knows what a handler accepts: the job is taken, and fails with the
    // handler's message.
    let id = cluster.submit_ok(&json!({"kind": "task", "job": "reverse", "payload": 7}));
    let job = cluster.wait_job(&id, JOB_TIMEOUT);
    assert_eq!(job["state"], "failed", "{job:#}");
    let error = job["error"].as_str().unwrap_or_default();
    assert!(error.contains("string payload"), "{job:#}");
}

#[test]
fn a_task_past_its_timeout_fails_with_a_timeout_message() {
    let cluster = Cluster::start(ClusterOpts::new(1, 1));
    let sleep = json!({
        "kind": "task", "job": "sleep", "payload": {"ms": 20_000},
        "timeout_ms": 300, "max_attempts": 1,
    });
    let id = cluster.submit_ok(&sleep);
    let job = cluster.wait_job(&id, JOB_TIMEOUT);
    assert_eq!(job["state"], "failed", "{job:#}");
    let error = job["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {job:#}"));
    assert!(
        error.contains("timed out") || error.contains("timeout"),
        "the error does not say it timed out: {error}"
    );
    let took = rfc3339_ms(job["finished_at"].as_str().unwrap())
        - rfc3339_ms(job["submitted_at"].as_str().unwrap());
    assert!(
        took < 10_000,
        "the timeout did not cut the sleep short: {took} ms"
    );
}

#[test]
fn worker_with_wrong_secret_is_refused() {
    let mut cluster = Cluster::start(ClusterOpts::new(1, 1));
    let intruder_config = cluster.dir().join("intruder.toml");
    std::fs::write(
        &intruder_config,
        cluster_toml(
            "not-the-cluster-secret",
            &cluster.masters,
            &["intruder".to_string()],
            1,
            None,
        ),
    )
    .unwrap();
    let config = intruder_config.to_string_lossy().into_owned();
    cluster.add_node(
        "intruder",
        worker_bin(),
        vec![
            "--config".into(),
            config,
            "--name".into(),
            "intruder".into(),
        ],
    );
    cluster.spawn("intruder");

    cluster.await_condition(
        "the master to refuse the intruder twice, and the intruder to say why",
        Duration::from_secs(30),
        || {
            cluster.master_log().matches("wrong cluster secret").count() >= 2
                && cluster
                    .log("intruder")
                    .matches("registration failed")
                    .count()
                    >= 2
        },
    );
    let master_log = cluster.master_log();
    assert!(
        master_log.contains("refused an RPC connection"),
        "{master_log}"
    );
    let intruder_log = cluster.log("intruder");
    assert!(
        intruder_log.contains("secret"),
        "the intruder's log does not say the secret is the problem:\n{intruder_log}"
    );
    let (status, view) = cluster.get("/api/cluster");
    assert_eq!(status, 200);
    let names: Vec<&str> = view["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["w1"], "{view:#}");
    assert!(cluster.worker_alive("w1"));
}

/// Reads from `stream` until the peer closes it; panics if it stays open for `timeout`.
fn assert_closed_by_peer(stream: &mut TcpStream, timeout: Duration, what: &str) {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 4096];
    // The peer may send a little (its greeting) before closing: bounded.
    for _ in 0..64 {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                ) =>
            {
                return
            }
            Err(e) => panic!("{what}: the master did not close the connection: {e}"),
        }
    }
    panic!("{what}: the master keeps sending data");
}

#[test]
fn garbage_on_rpc_port_is_dropped() {
    let cluster = Cluster::start(ClusterOpts::new(1, 1));
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);

    // Random bytes, more than any greeting, then a huge fake length prefix.
    let mut stream = TcpStream::connect(cluster.master_rpc).unwrap();
    let mut junk = vec![0u8; 512];
    rng.fill(&mut junk[..]);
    junk.extend_from_slice(&[0xff, 0xff, 0xff, 0xf0]);
    // The master may close before everything is written.
    let _ = stream.write_all(&junk);
    assert_closed_by_peer(&mut stream, Duration::from_secs(15), "random bytes");

    // A few bytes and then silence: the master must not wait forever.
    let mut stream = TcpStream::connect(cluster.master_rpc).unwrap();
    let _ = stream.write_all(&[0xff, 0xff, 0xff, 0xf0]);
    assert_closed_by_peer(&mut stream, Duration::from_secs(20), "a stalled peer");

    // An authenticated peer that announces a 4 GiB frame.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stream = runtime.block_on(async {
        jobs::auth::dial(
            &cluster.master_rpc.to_string(),
            SECRET,
            Duration::from_secs(5),
        )
        .await
        .unwrap()
        .into_std()
        .unwrap()
    });
    let mut stream = stream;
    stream.set_nonblocking(false).unwrap();
    // Select the worker-facing service, then announce a 4 GiB frame.
    let _ = stream.write_all(&[jobs::rpc::SELECT_MASTER_SERVICE]);
    let _ = stream.write_all(&[0xff, 0xff, 0xff, 0xf0, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert_closed_by_peer(&mut stream, Duration::from_secs(15), "a huge frame");

    assert!(cluster.master_log().contains("refused an RPC connection"));
    let (status, health) = cluster.get("/api/health");
    assert_eq!((status, health["role"].as_str()), (200, Some("leader")));
    let id = cluster.submit_ok(&json!({"kind": "task", "job": "echo", "payload": "still here"}));
    let job = cluster.wait_success(&id, JOB_TIMEOUT);
    assert_eq!(job["result"], "still here");
    assert!(cluster.worker_alive("w1"));
}

/// Runs `master submit --config FILE <args>` with `stdin`, in `cwd`, at most 90 s.
fn run_submit(
    cluster: &Cluster,
    args: &[&str],
    stdin: Option<&str>,
    cwd: &Path,
) -> (ExitStatus, String, String) {
    let n = rand::random::<u32>();
    let out_path = cluster.dir().join(format!("submit-{n}.out"));
    let err_path = cluster.dir().join(format!("submit-{n}.err"));
    let mut child = Command::new(master_bin())
        .arg("submit")
        .arg("--config")
        .arg(&cluster.config_path)
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(text.as_bytes()).unwrap();
    }
    let status = wait_exit(&mut child, Duration::from_secs(90));
    let status = status.unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("master submit {args:?} did not exit within 90 s");
    });
    let stdout = std::fs::read_to_string(out_path).unwrap();
    let stderr = std::fs::read_to_string(err_path).unwrap();
    (status, stdout, stderr)
}

#[test]
fn master_submit_wait_reports_success_and_failure() {
    let cluster = Cluster::start(ClusterOpts::new(2, 2));
    let input = cluster.mkdir("input");
    let files = generate_corpus(&input, 10, 3, 100, false);

    // A spec file with absolute paths.
    let output = cluster.dir().join("out-file");
    let spec = mapreduce("wordcount", &[glob_txt(&input)], &output, 2, json!({}));
    let spec_path = cluster.write_spec("wordcount.json", &spec);
    let (status, stdout, stderr) = run_submit(
        &cluster,
        &[spec_path.to_str().unwrap(), "--wait"],
        None,
        cluster.dir(),
    );
    assert!(
        status.success(),
        "{status}\nstdout: {stdout}\nstderr: {stderr}"
    );
    let id = stdout
        .split_whitespace()
        .find(|w| w.len() > 3 && w.chars().all(|c| c.is_ascii_digit()))
        .unwrap_or_else(|| panic!("no job id on stdout: {stdout:?}"));
    assert_eq!(cluster.job(id)["state"], "succeeded");
    assert_output_eq(&output, 2, &reference_wordcount(&files));

    // `-`: the spec on stdin, with paths relative to the submitter's directory.
    let spec = json!({
        "kind": "mapreduce", "job": "wordcount", "input": ["*.txt"],
        "output": "../out-stdin", "reducers": 1,
    });
    let (status, stdout, stderr) =
        run_submit(&cluster, &["-", "--wait"], Some(&spec.to_string()), &input);
    assert!(
        status.success(),
        "{status}\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stdout.chars().any(|c| c.is_ascii_digit()),
        "no job id: {stdout:?}"
    );
    assert_output_eq(
        &cluster.dir().join("out-stdin"),
        1,
        &reference_wordcount(&files),
    );

    // A job that fails: non-zero, with the job's error on stderr.
    std::fs::write(input.join("bomb.txt"), "tick\nBOOM-11\n").unwrap();
    let spec = json!({
        "kind": "mapreduce", "job": "crash-test", "input": [glob_txt(&input)],
        "output": cluster.dir().join("out-crash"), "reducers": 1,
        "params": {"panic_on": "BOOM-11"}, "max_attempts": 1,
    });
    let spec_path = cluster.write_spec("crash.json", &spec);
    let (status, stdout, stderr) = run_submit(
        &cluster,
        &[spec_path.to_str().unwrap(), "--wait"],
        None,
        cluster.dir(),
    );
    assert!(
        !status.success(),
        "a failed job exited 0\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stderr.contains("BOOM-11") && stderr.contains("failed"),
        "stderr does not say why the job failed: {stderr}"
    );

    // A spec the server refuses: non-zero, with the server's message.
    let spec = json!({"kind": "task", "job": "no-such-task-q", "payload": 1});
    let (status, stdout, stderr) = run_submit(
        &cluster,
        &["-", "--wait"],
        Some(&spec.to_string()),
        cluster.dir(),
    );
    assert!(
        !status.success(),
        "a refused spec exited 0\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stderr.contains("no-such-task-q"),
        "stderr lacks the server's message: {stderr}"
    );
}

#[test]
fn jobs_survive_a_master_restart() {
    let mut cluster = Cluster::start(ClusterOpts::new(2, 2));
    let input = cluster.mkdir("input");
    let files = generate_corpus(&input, 11, 3, 100, false);
    let output = cluster.dir().join("out-1");
    let id = cluster.submit_ok(&mapreduce(
        "wordcount",
        &[glob_txt(&input)],
        &output,
        2,
        json!({}),
    ));
    let before = cluster.wait_success(&id, JOB_TIMEOUT);
    let expected = reference_wordcount(&files);
    assert_output_eq(&output, 2, &expected);

    cluster.stop_master();
    cluster.start_master();

    let (status, list) = cluster.get("/api/jobs");
    assert_eq!(status, 200, "{list}");
    let listed = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == id.as_str())
        .unwrap_or_else(|| panic!("job {id} is gone after the restart: {list:#}"));
    assert_eq!(listed["state"], "succeeded", "{listed:#}");
    assert_eq!(listed["output"], before["output"], "{listed:#}");
    let after = cluster.job(&id);
    assert_eq!(after["state"], "succeeded");
    assert_eq!(after["finished_at"], before["finished_at"]);

    let names = cluster.workers.clone();
    cluster.await_condition(
        "the workers to re-register with the restarted master",
        Duration::from_secs(30),
        || names.iter().all(|w| cluster.worker_alive(w)),
    );
    let output2 = cluster.dir().join("out-2");
    let id2 = cluster.submit_ok(&mapreduce(
        "wordcount",
        &[glob_txt(&input)],
        &output2,
        3,
        json!({}),
    ));
    assert_ne!(id2, id);
    cluster.wait_success(&id2, JOB_TIMEOUT);
    assert_output_eq(&output2, 3, &expected);
    assert_eq!(
        read_output(&output, 2),
        expected,
        "the first output changed"
    );
}

#[test]
fn cancel_stops_a_running_job() {
    let cluster = Cluster::start(ClusterOpts::new(2, 1));
    let input = cluster.mkdir("input");
    // 4 maps of 100 lines at 20 ms: 2 s each.
    generate_corpus(&input, 12, 4, 100, false);
    let output = cluster.dir().join("out");
    let params = json!({"line_delay_us": 20_000});
    let id = cluster.submit_ok(&mapreduce(
        "slow-wordcount",
        &[glob_txt(&input)],
        &output,
        2,
        params,
    ));
    cluster.await_condition("a map attempt to run", JOB_TIMEOUT, || {
        let job = cluster.job(&id);
        assert!(
            !is_final(&job),
            "the job ended before it could be cancelled: {job:#}"
        );
        job["state"] == "running"
            && attempts_of_kind(&job, "map")
                .iter()
                .any(|a| a["state"] == "running")
    });

    let path = format!("/api/jobs/{id}/cancel");
    let (status, body) = cluster.request("POST", &path, Some(""), None);
    assert_eq!(status, 401, "a cancel without the secret: {body}");
    let (status, body) = cluster.cancel(&id);
    assert_eq!(status, 200, "{body}");
    let job = cluster.wait_job(&id, JOB_TIMEOUT);
    assert_eq!(job["state"], "cancelled", "{job:#}");
    assert!(job["finished_at"].is_string(), "{job:#}");

    // Attempts still running when the cancel came must not revive the job.
    let workers = cluster.workers.clone();
    cluster.await_condition("the workers to run nothing", JOB_TIMEOUT, || {
        workers
            .iter()
            .all(|w| cluster.worker_view(w).is_some_and(|v| v["running"] == 0))
    });
    let job = cluster.job(&id);
    assert_eq!(job["state"], "cancelled", "{job:#}");
    assert!(
        !output.join("_SUCCESS").exists(),
        "a cancelled job wrote _SUCCESS"
    );
}

/// Kills (SIGKILL) every process `master up` reported starting, on drop: `master up` puts its
/// children in their own process group, so killing it alone would leave them running.
struct KillReportedPids(PathBuf);

fn reported_pids(log: &Path) -> Vec<u32> {
    let text = support::read_log(log);
    text.lines()
        .filter(|l| l.starts_with("master ") || l.starts_with("worker "))
        .filter_map(|l| {
            l.split("  pid ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

impl Drop for KillReportedPids {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let dir = self.0.parent().unwrap();
            let mut logs = vec![self.0.clone(), dir.join("up.err")];
            if let Ok(entries) = std::fs::read_dir(dir.join("data/logs")) {
                logs.extend(entries.flatten().map(|e| e.path()));
            }
            for log in logs {
                let tail = support::log_tail(&log, support::LOG_TAIL_LINES);
                eprintln!("===== {} =====\n{tail}", log.display());
            }
        }
        for pid in reported_pids(&self.0) {
            if process_alive(pid) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

#[test]
fn master_up_starts_the_whole_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (rpc, http) = (free_port(), free_port());
    let workers = ["w1".to_string(), "w2".to_string()];
    let config = dir.path().join("cluster.toml");
    let text = cluster_toml(SECRET, &[(1, rpc, http)], &workers, 1, Some(&worker_bin()));
    std::fs::write(&config, text).unwrap();
    let up_log = dir.path().join("up.log");
    let _guard = KillReportedPids(up_log.clone());
    let mut up = Command::new(master_bin())
        .args(["up", "--config", config.to_str().unwrap()])
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&up_log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("up.err")).unwrap())
        .spawn()
        .unwrap();
    struct KillOnDrop<'a>(&'a mut std::process::Child);
    impl Drop for KillOnDrop<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let up_pid = up.id();
    let up = KillOnDrop(&mut up);

    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .build();
    let get = |path: &str| -> Option<Value> {
        agent
            .get(&format!("http://{http}{path}"))
            .call()
            .ok()?
            .into_json()
            .ok()
    };
    await_condition(
        "master up to start a leader",
        Duration::from_secs(30),
        || get("/api/health").is_some_and(|h| h["role"] == "leader"),
    );
    await_condition(
        "master up to start both workers",
        Duration::from_secs(30),
        || {
            get("/api/cluster").is_some_and(|c| {
                let alive = c["workers"].as_array().map_or(0, |ws| {
                    ws.iter()
                        .filter(|w| w["alive"] == true)
                        .filter(|w| {
                            w["jobs"]
                                .as_array()
                                .unwrap()
                                .contains(&json!("slow-wordcount"))
                        })
                        .count()
                });
                alive == 2
            })
        },
    );
    let pids = reported_pids(&up_log);
    assert_eq!(pids.len(), 3, "master up should report 3 nodes with pids");

    let input = dir.path().join("input");
    let files = generate_corpus(&input, 13, 2, 50, false);
    let output = dir.path().join("out");
    let spec = mapreduce("wordcount", &[glob_txt(&input)], &output, 2, json!({}));
    let created: Value = agent
        .post(&format!("http://{http}/api/jobs"))
        .set("Authorization", &format!("Bearer {SECRET}"))
        .send_string(&spec.to_string())
        .unwrap()
        .into_json()
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let mut job = Value::Null;
    await_condition("the job to end", JOB_TIMEOUT, || {
        job = get(&format!("/api/jobs/{id}?wait_ms=1000")).unwrap_or(Value::Null);
        is_final(&job)
    });
    assert_eq!(job["state"], "succeeded", "{job:#}");
    assert_eq!(
        read_output_pairs(&output, 2),
        reference_wordcount(&files).into_iter().collect::<Vec<_>>()
    );

    support::sigterm(up_pid);
    let status =
        wait_exit(&mut *up.0, Duration::from_secs(40)).expect("master up exits after SIGTERM");
    assert!(status.success(), "master up exited with {status}");
    for pid in pids {
        assert!(
            !process_alive(pid),
            "node pid {pid} still runs after master up stopped"
        );
    }
}

#[test]
fn a_job_running_during_a_master_restart_still_succeeds() {
    let mut cluster = Cluster::start(ClusterOpts::new(2, 1));
    let input = cluster.mkdir("input");
    let files = generate_corpus(&input, 14, 6, 50, false);
    let output = cluster.dir().join("out");
    let params = json!({"line_delay_us": 20_000});
    let id = cluster.submit_ok(&mapreduce(
        "slow-wordcount",
        &[glob_txt(&input)],
        &output,
        2,
        params,
    ));
    cluster.await_condition("a map to succeed", JOB_TIMEOUT, || {
        let job = cluster.job(&id);
        assert!(!is_final(&job), "{job:#}");
        attempts_of_kind(&job, "map")
            .iter()
            .any(|a| a["state"] == "succeeded")
    });
    cluster.stop_master();
    cluster.start_master();
    cluster.wait_success(&id, JOB_TIMEOUT);
    assert_output_eq(&output, 2, &reference_wordcount(&files));
}

#[test]
fn kill_9_leader_mid_job_still_gives_exact_output() {
    let mut cluster = Cluster::start(ClusterOpts::new(2, 1).with_masters(3));
    let leader = cluster.find_leader().expect("a leader");
    let (id, _, files, output) = submit_slow_wordcount(&cluster, 7);

    // Kill the leader once some maps have finished and others run.
    cluster.await_condition("a map to finish while others run", JOB_TIMEOUT, || {
        let job = cluster.job(&id);
        assert!(
            !is_final(&job),
            "the job ended before the leader could be killed: {job:#}"
        );
        let maps = tasks_of_kind(&job, "map");
        maps.iter().any(|t| t["state"] == "succeeded")
            && maps.iter().any(|t| t["state"] != "succeeded")
    });
    cluster.kill_master(leader);

    // A new leader is elected among the other two, picks the job up and finishes it.
    cluster.await_condition("a new leader", Duration::from_secs(15), || {
        cluster.find_leader().is_some_and(|new| new != leader)
    });
    let job = cluster.wait_success(&id, JOB_TIMEOUT);
    assert_output_eq(&output, 2, &reference_wordcount(&files));
    for task in tasks_of_kind(&job, "map")
        .into_iter()
        .chain(tasks_of_kind(&job, "reduce"))
    {
        assert_eq!(task["state"], "succeeded", "{task:#}");
    }
    // The cluster keeps serving on the new leader: a new job succeeds too.
    let spec = json!({"kind": "task", "job": "echo", "payload": "after failover"});
    let id = cluster.submit_ok(&spec);
    assert_eq!(
        cluster.wait_success(&id, JOB_TIMEOUT)["result"],
        "after failover"
    );
}

#[test]
fn a_follower_forwards_api_calls_to_the_leader() {
    let cluster = Cluster::start(ClusterOpts::new(1, 1).with_masters(3));
    let leader = cluster.find_leader().expect("a leader");
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    cluster.use_master(follower);
    let (status, health) = cluster.get("/api/health");
    assert_eq!(status, 200);
    assert_eq!(
        health["role"], "follower",
        "health is answered by the follower itself: {health}"
    );
    assert_eq!(health["leader"], leader);
    // A write through the follower reaches the leader, and so does a read of the job.
    let id =
        cluster.submit_ok(&json!({"kind": "task", "job": "echo", "payload": "via a follower"}));
    let job = cluster.wait_success(&id, JOB_TIMEOUT);
    assert_eq!(job["result"], "via a follower");
    // A forwarded write still needs the secret (the leader checks it).
    let (status, _) = cluster.submit_raw(r#"{"kind":"task","job":"echo"}"#, None);
    assert_eq!(status, 401);
    let (status, body) = cluster.submit_raw("{bad", Some(SECRET));
    assert_eq!(status, 400, "{body}");
    cluster.use_master(leader);
    assert_eq!(cluster.job(&id)["state"], "succeeded");
}

/// The `mrcluster_jobs` sample for succeeded task jobs in a metrics text.
fn succeeded_tasks(metrics: &str) -> Option<u64> {
    metrics
        .lines()
        .find(|l| l.starts_with("mrcluster_jobs{kind=\"task\",state=\"succeeded\"}"))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

#[test]
fn a_killed_follower_catches_up_after_a_restart() {
    let mut cluster = Cluster::start(ClusterOpts::new(1, 2).with_masters(3));
    let leader = cluster.find_leader().expect("a leader");
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    cluster.kill_master(follower);
    // Nothing visible happens: the other two are a majority.
    let ids: Vec<String> = (0..10)
        .map(|i| cluster.submit_ok(&json!({"kind": "task", "job": "echo", "payload": i})))
        .collect();
    for id in &ids {
        cluster.wait_success(id, JOB_TIMEOUT);
    }
    assert_eq!(
        cluster.local_metrics(follower),
        None,
        "the follower is down"
    );
    cluster.restart_master(follower);
    cluster.await_condition("the restarted follower to catch up", JOB_TIMEOUT, || {
        cluster
            .local_metrics(follower)
            .is_some_and(|m| succeeded_tasks(&m) == Some(10))
    });
}

#[test]
fn three_masters_stopped_and_restarted_keep_every_job() {
    let mut cluster = Cluster::start(ClusterOpts::new(1, 1).with_masters(3));
    let id = cluster.submit_ok(&json!({"kind": "task", "job": "echo", "payload": "kept"}));
    cluster.wait_success(&id, JOB_TIMEOUT);
    cluster.stop_master();
    cluster.start_master();
    let job = cluster.job(&id);
    assert_eq!(job["state"], "succeeded", "{job:#}");
    assert_eq!(job["result"], "kept");
    // The worker finds the new leader by itself and the cluster runs jobs again.
    cluster.await_condition("the worker to re-register", JOB_TIMEOUT, || {
        cluster.worker_alive("w1")
    });
    let id = cluster.submit_ok(&json!({"kind": "task", "job": "echo", "payload": "again"}));
    assert_eq!(cluster.wait_success(&id, JOB_TIMEOUT)["result"], "again");
}

#[test]
fn ids_never_repeat_or_decrease_across_leader_changes() {
    let mut cluster = Cluster::start(ClusterOpts::new(1, 4).with_masters(3));
    let mut ids: Vec<u64> = Vec::new();
    let spec = json!({"kind": "task", "job": "echo", "payload": 1});
    for _ in 0..5 {
        let leader = cluster.find_leader().expect("a leader");
        for _ in 0..20 {
            ids.push(cluster.submit_ok(&spec).parse().unwrap());
        }
        cluster.kill_master(leader);
        cluster.await_condition("a new leader", Duration::from_secs(15), || {
            cluster.find_leader().is_some_and(|new| new != leader)
        });
        // Bring the old leader back so that the next kill still leaves a majority.
        cluster.restart_master(leader);
        cluster.await_condition("the worker on the new leader", JOB_TIMEOUT, || {
            cluster.worker_alive("w1")
        });
    }
    ids.push(cluster.submit_ok(&spec).parse().unwrap());
    for pair in ids.windows(2) {
        assert!(
            pair[0] < pair[1],
            "ids went backwards or repeated: {} then {}",
            pair[0],
            pair[1]
        );
    }
}

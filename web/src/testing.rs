//! Test support: an in-memory [`ClusterApi`] that records what the handlers asked of it, sample
//! views, and the app built the way [`crate::serve`] builds it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::body::BoxBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::{test, App};
use futures::future::{self, BoxFuture, FutureExt};
use jobs::rpc::Counters;
use jobs::{JobId, JobSpec, JobState, TaskId, TaskState, WorkerId};
use serde_json::json;

use crate::api::{MemberView, MembersView, Membership, NewMaster};

use jobs::lock::{LockError, LockOp, LockRequest};

use crate::api::{
    ApiError, AttemptView, ClusterApi, ClusterView, Health, JobCount, JobCounts, JobPage, JobQuery,
    JobView, LockView, MasterView, PhaseCounters, Progress, Role, ServedJob, TaskView, WorkerView,
};

/// The secret the fake cluster expects.
pub const SECRET: &str = "test-secret";

/// What the fake holds and what it was asked.
#[derive(Default)]
pub struct FakeState {
    /// The jobs, in any order.
    pub jobs: Vec<JobView>,
    /// Specs received by `submit`.
    pub submitted: Vec<JobSpec>,
    /// The last query `list_jobs` received.
    pub last_query: Option<JobQuery>,
    /// The last `wait` `job` received.
    pub last_wait: Option<Option<Duration>>,
    /// Ids received by `cancel`.
    pub cancelled: Vec<JobId>,
    /// If set, `cluster`, `list_jobs` and `job_counts` fail with this.
    pub failure: Option<ApiError>,
    /// If set, `submit` refuses every spec with this message (as the master's checks do).
    pub reject: Option<String>,
    /// The members of the metadata group ([`sample_members`] to begin with).
    pub members: Vec<MemberView>,
    /// Masters received by `add_master`.
    pub added: Vec<NewMaster>,
    /// Ids received by `remove_master`.
    pub removed: Vec<u64>,
    /// Held locks: name → (owner, token), granted like the master does, without queues.
    pub locks: std::collections::BTreeMap<String, (String, u64)>,
    /// The last token granted.
    pub last_token: u64,
    /// Lock requests received.
    pub lock_requests: Vec<LockRequest>,
}

/// An in-memory cluster.
#[derive(Clone, Default)]
pub struct FakeCluster {
    /// Shared with the test so it can look at what happened.
    pub state: Arc<Mutex<FakeState>>,
}

impl FakeCluster {
    /// An empty cluster.
    pub fn new() -> FakeCluster {
        let fake = FakeCluster::default();
        fake.state().members = sample_members();
        fake
    }

    /// A cluster holding `jobs`.
    pub fn with_jobs(jobs: Vec<JobView>) -> FakeCluster {
        let fake = FakeCluster::new();
        fake.state.lock().unwrap().jobs = jobs;
        fake
    }

    /// Locks the state.
    pub fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap()
    }
}

impl ClusterApi for FakeCluster {
    fn secret(&self) -> &str {
        SECRET
    }

    fn health(&self) -> BoxFuture<'static, Health> {
        future::ready(Health {
            id: 1,
            role: Role::Leader,
            leader: Some(1),
            term: 3,
            last_log_index: Some(17),
            last_applied: Some(16),
            membership: Membership::Voter,
        })
        .boxed()
    }

    fn cluster(&self) -> BoxFuture<'static, Result<ClusterView, ApiError>> {
        let result = match self.state().failure.clone() {
            Some(error) => Err(error),
            None => Ok(sample_cluster()),
        };
        future::ready(result).boxed()
    }

    fn submit(&self, spec: JobSpec) -> BoxFuture<'static, Result<JobId, ApiError>> {
        let mut state = self.state();
        if let Some(reason) = state.reject.clone() {
            return future::ready(Err(ApiError::BadRequest(reason))).boxed();
        }
        state.submitted.push(spec);
        let id = JobId(7_000_000_000_000_000_000 + state.submitted.len() as u64);
        // Submitted jobs can be read back (and waited for), as on a real master.
        state.jobs.push(sample_job(id.0, JobState::Queued));
        future::ready(Ok(id)).boxed()
    }

    fn list_jobs(&self, query: JobQuery) -> BoxFuture<'static, Result<JobPage, ApiError>> {
        let mut state = self.state();
        state.last_query = Some(query.clone());
        if let Some(error) = state.failure.clone() {
            return future::ready(Err(error)).boxed();
        }
        let mut matching: Vec<JobView> = state
            .jobs
            .iter()
            .filter(|job| query.state.is_none_or(|s| job.state == s))
            .filter(|job| query.kind.as_ref().is_none_or(|k| &job.kind == k))
            .cloned()
            .collect();
        matching.sort_by_key(|job| std::cmp::Reverse(job.id));
        let total = matching.len() as u64;
        let mut jobs: Vec<JobView> = matching
            .into_iter()
            .filter(|job| query.before.is_none_or(|before| job.id < before))
            .collect();
        let more = jobs.len() > query.limit;
        jobs.truncate(query.limit);
        for job in &mut jobs {
            job.tasks = None;
        }
        let next_before = if more {
            jobs.last().map(|j| j.id)
        } else {
            None
        };
        future::ready(Ok(JobPage {
            jobs,
            next_before,
            total,
        }))
        .boxed()
    }

    fn job(
        &self,
        id: JobId,
        wait: Option<Duration>,
    ) -> BoxFuture<'static, Result<JobView, ApiError>> {
        let mut state = self.state();
        state.last_wait = Some(wait);
        let found = state.jobs.iter().find(|job| job.id == id).cloned();
        future::ready(found.ok_or_else(|| ApiError::NotFound(format!("no job {id}")))).boxed()
    }

    fn cancel(&self, id: JobId) -> BoxFuture<'static, Result<(), ApiError>> {
        let mut state = self.state();
        let result = match state.jobs.iter().find(|job| job.id == id) {
            None => Err(ApiError::NotFound(format!("no job {id}"))),
            Some(job) if job.state.is_final() => {
                Err(ApiError::Conflict(format!("job {id} already ended")))
            }
            Some(_) => {
                state.cancelled.push(id);
                Ok(())
            }
        };
        future::ready(result).boxed()
    }

    fn job_counts(&self) -> BoxFuture<'static, Result<JobCounts, ApiError>> {
        let state = self.state();
        if let Some(error) = state.failure.clone() {
            return future::ready(Err(error)).boxed();
        }
        let mut counts: Vec<JobCount> = Vec::new();
        for job in &state.jobs {
            match counts
                .iter_mut()
                .find(|c| c.kind == job.kind && c.state == job.state)
            {
                Some(count) => count.jobs += 1,
                None => counts.push(JobCount {
                    kind: job.kind.clone(),
                    state: job.state,
                    jobs: 1,
                }),
            }
        }
        future::ready(Ok(JobCounts { counts })).boxed()
    }

    fn lock(&self, request: LockRequest) -> BoxFuture<'static, Result<u64, LockError>> {
        let mut state = self.state();
        state.lock_requests.push(request.clone());
        let LockRequest { name, owner, op } = request;
        let held = state.locks.get(&name).cloned();
        let result = match op {
            LockOp::Acquire { .. } => match held {
                Some((holder, _)) if holder == owner => {
                    state.last_token += 1;
                    let token = state.last_token;
                    state.locks.insert(name, (owner, token));
                    Ok(token)
                }
                Some((holder, _)) => Err(LockError::Held { name, holder }),
                None => {
                    state.last_token += 1;
                    let token = state.last_token;
                    state.locks.insert(name, (owner, token));
                    Ok(token)
                }
            },
            LockOp::Keepalive { token } | LockOp::Release { token } => {
                if held.as_ref() != Some(&(owner.clone(), token)) {
                    Err(LockError::Stale {
                        name,
                        owner,
                        token,
                        holder: held,
                    })
                } else {
                    if matches!(op, LockOp::Release { .. }) {
                        state.locks.remove(&name);
                    }
                    Ok(token)
                }
            }
        };
        future::ready(result).boxed()
    }

    fn locks(&self) -> BoxFuture<'static, Result<Vec<LockView>, ApiError>> {
        let locks = self
            .state()
            .locks
            .iter()
            .map(|(name, (owner, token))| LockView {
                name: name.clone(),
                owner: Some(owner.clone()),
                token: Some(*token),
                ttl_ms: Some(10_000),
                granted_ms: Some(1_700_000_000_000),
                expires_in_ms: Some(9_000),
                waiters: Vec::new(),
            })
            .collect();
        future::ready(Ok(locks)).boxed()
    }

    fn metrics(&self) -> BoxFuture<'static, Result<String, ApiError>> {
        future::ready(Ok(
            "# TYPE cluster_jobs_total counter\ncluster_jobs_total 3\n".to_string(),
        ))
        .boxed()
    }

    fn masters(&self) -> BoxFuture<'static, Result<MembersView, ApiError>> {
        let state = self.state();
        let result = match state.failure.clone() {
            Some(error) => Err(error),
            None => Ok(MembersView {
                leader: Some(1),
                masters: state.members.clone(),
            }),
        };
        future::ready(result).boxed()
    }

    fn add_master(&self, master: NewMaster) -> BoxFuture<'static, Result<MembersView, ApiError>> {
        let mut state = self.state();
        if let Some(error) = state.failure.clone() {
            return future::ready(Err(error)).boxed();
        }
        if state.members.iter().any(|m| m.id == master.id) {
            let error = ApiError::BadRequest(format!("master {} is already a voter", master.id));
            return future::ready(Err(error)).boxed();
        }
        state.members.push(MemberView {
            id: master.id,
            rpc: master.rpc.clone(),
            http: Some(master.http.clone()),
            membership: Membership::Voter,
        });
        state.members.sort_by_key(|m| m.id);
        state.added.push(master);
        let view = MembersView {
            leader: Some(1),
            masters: state.members.clone(),
        };
        future::ready(Ok(view)).boxed()
    }

    fn remove_master(&self, id: u64) -> BoxFuture<'static, Result<MembersView, ApiError>> {
        let mut state = self.state();
        let voters = state
            .members
            .iter()
            .filter(|m| m.membership == Membership::Voter);
        let result = match state.members.iter().find(|m| m.id == id) {
            None => Err(ApiError::NotFound(format!("master {id} is not a member"))),
            Some(m) if m.membership == Membership::Voter && voters.count() == 1 => Err(
                ApiError::BadRequest(format!("master {id} is the last voter")),
            ),
            Some(_) => {
                state.members.retain(|m| m.id != id);
                state.removed.push(id);
                Ok(MembersView {
                    leader: Some(1),
                    masters: state.members.clone(),
                })
            }
        };
        future::ready(result).boxed()
    }
}

/// Masters 1 (the leader) and 2, both voters.
pub fn sample_members() -> Vec<MemberView> {
    [(1, 7001, 8080), (2, 7002, 8081)]
        .into_iter()
        .map(|(id, rpc, http)| MemberView {
            id,
            rpc: format!("127.0.0.1:{rpc}"),
            http: Some(format!("127.0.0.1:{http}")),
            membership: Membership::Voter,
        })
        .collect()
}

/// The app as `serve` builds it, around `fake`.
pub async fn app(
    fake: FakeCluster,
) -> impl Service<actix_http::Request, Response = ServiceResponse<BoxBody>, Error = actix_web::Error>
{
    let api: Arc<dyn ClusterApi> = Arc::new(fake);
    test::init_service(App::new().configure(crate::configure(api))).await
}

/// A `Cookie` header value of a valid UI session under [`SECRET`].
pub fn login_cookie() -> String {
    let set = crate::auth::login_cookie(SECRET, false);
    set.split(';').next().unwrap_or_default().to_string()
}

/// A job with id `id` in `state`, submitted at 2024-05-01T12:00:00.250Z.
pub fn sample_job(id: u64, state: JobState) -> JobView {
    JobView {
        id: JobId(id),
        kind: "mapreduce".into(),
        job: "wordcount".into(),
        state,
        submitted_ms: 1_714_564_800_250,
        started_ms: Some(1_714_564_801_000),
        finished_ms: state.is_final().then_some(1_714_564_803_500),
        progress: Progress { done: 1, total: 3 },
        error: None,
        output: vec![],
        result: None,
        parent: None,
        spec: json!({"kind": "mapreduce", "job": "wordcount", "input": ["in/*.txt"],
                     "output": "out", "reducers": 2, "max_attempts": 4}),
        counters: PhaseCounters {
            map: Counters {
                records_in: 10,
                bytes_in: 100,
                records_out: 20,
                bytes_out: 200,
            },
            reduce: Counters::default(),
        },
        tasks: None,
    }
}

/// A map task with one failed and one running attempt.
pub fn sample_task() -> TaskView {
    TaskView {
        id: TaskId(900),
        kind: "map".into(),
        index: 0,
        state: TaskState::Running,
        attempts: vec![
            AttemptView {
                attempt: 1,
                worker: "w1".into(),
                started_ms: Some(1_714_564_801_000),
                finished_ms: Some(1_714_564_801_400),
                state: "failed".into(),
                error: Some("disk full".into()),
            },
            AttemptView {
                attempt: 2,
                worker: "w2".into(),
                started_ms: Some(1_714_564_801_500),
                finished_ms: None,
                state: "running".into(),
                error: None,
            },
        ],
    }
}

/// One leader and two workers, one of them dead.
pub fn sample_cluster() -> ClusterView {
    ClusterView {
        leader: Some(1),
        masters: vec![
            MasterView {
                id: 1,
                rpc: "127.0.0.1:7001".into(),
                http: "127.0.0.1:8080".into(),
                role: Some(Role::Leader),
                term: Some(3),
                last_log_index: Some(17),
                last_applied: Some(17),
                membership: Membership::Voter,
                reachable: true,
                error: None,
            },
            MasterView {
                id: 2,
                rpc: "127.0.0.1:7002".into(),
                http: "127.0.0.1:8081".into(),
                role: None,
                term: None,
                last_log_index: None,
                last_applied: None,
                membership: Membership::Voter,
                reachable: false,
                error: Some("connection refused".into()),
            },
            MasterView {
                id: 4,
                rpc: "127.0.0.1:7004".into(),
                http: "127.0.0.1:8083".into(),
                role: Some(Role::Learner),
                term: Some(3),
                last_log_index: Some(12),
                last_applied: Some(11),
                membership: Membership::Learner,
                reachable: true,
                error: None,
            },
        ],
        workers: vec![
            WorkerView {
                id: WorkerId(11),
                name: "w1".into(),
                rpc: "127.0.0.1:7101".into(),
                slots: 2,
                running: 1,
                alive: true,
                last_heartbeat_ms: Some(1_714_564_800_250),
                jobs: vec!["wordcount".into(), "echo".into()],
                served: vec![
                    ServedJob {
                        kind: "mapreduce".into(),
                        name: "wordcount".into(),
                    },
                    ServedJob {
                        kind: "task".into(),
                        name: "echo".into(),
                    },
                ],
                ring_share: 0.625,
            },
            WorkerView {
                id: WorkerId(12),
                name: "w2".into(),
                rpc: "127.0.0.1:7102".into(),
                slots: 4,
                running: 0,
                alive: false,
                last_heartbeat_ms: None,
                jobs: vec!["sleep".into()],
                served: vec![ServedJob {
                    kind: "task".into(),
                    name: "sleep".into(),
                }],
                ring_share: 0.0,
            },
        ],
    }
}

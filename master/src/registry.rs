//! `WorkerRegistry`: which workers are alive. Workers register (their id is allocated through
//! the log, so a name keeps its id) and heartbeat; one that misses heartbeats for
//! [`WORKER_TIMEOUT`] is declared lost and the scheduler re-runs its work elsewhere.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use jobs::registry::JobName;
use jobs::rpc::{
    HeartbeatRequest, HeartbeatResponse, RegisterWorkerRequest, RegisterWorkerResponse, RemoteError,
};
use jobs::WorkerId;
use tracing::{info, warn};

use crate::ids::now_ms;
use crate::meta::command::{Command, CommandResult};
use crate::meta::node::Meta;
use crate::scheduler::{LeadershipChanged, Reconcile, Scheduler, WorkerJoined, WorkerLost};

/// How often workers heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);
/// A worker silent for this long is dead.
pub const WORKER_TIMEOUT: Duration = Duration::from_secs(3);
/// How often liveness is checked.
const CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// A worker as last heard from.
#[derive(Clone, Debug)]
pub struct WorkerInfo {
    /// Its id.
    pub id: WorkerId,
    /// Its name.
    pub name: String,
    /// Its RPC address.
    pub addr: String,
    /// Its slots.
    pub slots: u32,
    /// The jobs it serves.
    pub jobs: Vec<JobName>,
    /// Whether it heartbeats.
    pub alive: bool,
    /// Its last heartbeat (ms since the Unix epoch).
    pub last_heartbeat_ms: u64,
}

#[derive(Debug)]
struct Entry {
    info: WorkerInfo,
    incarnation: u64,
    last_seen: Instant,
}

/// The registry actor.
pub struct WorkerRegistry {
    meta: Meta,
    scheduler: Addr<Scheduler>,
    workers: HashMap<WorkerId, Entry>,
    timeout: Duration,
    /// This master is the ready leader: only the leader registers and tracks workers.
    leading: bool,
}

impl WorkerRegistry {
    /// A registry that reports to `scheduler`.
    pub fn new(meta: Meta, scheduler: Addr<Scheduler>) -> WorkerRegistry {
        WorkerRegistry {
            meta,
            scheduler,
            workers: HashMap::new(),
            timeout: WORKER_TIMEOUT,
            leading: false,
        }
    }

    /// Workers that reached a follower are sent to the leader.
    fn not_leader(&self) -> RemoteError {
        RemoteError::NotLeader {
            leader: self.meta.leader().map(|(_, node)| node.addr),
        }
    }

    fn check(&mut self) {
        if !self.leading {
            return;
        }
        let now = Instant::now();
        for entry in self.workers.values_mut() {
            if entry.info.alive && now.duration_since(entry.last_seen) > self.timeout {
                entry.info.alive = false;
                warn!(worker_id = %entry.info.id, name = %entry.info.name, "worker missed its heartbeats");
                self.scheduler.do_send(WorkerLost {
                    worker_id: entry.info.id,
                });
            }
        }
    }
}

impl Actor for WorkerRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(CHECK_INTERVAL, |act, _| act.check());
    }
}

/// `register_worker`.
#[derive(Debug, Message)]
#[rtype(result = "Result<RegisterWorkerResponse, RemoteError>")]
pub struct Register(pub RegisterWorkerRequest);

impl Handler<Register> for WorkerRegistry {
    type Result = ResponseActFuture<Self, Result<RegisterWorkerResponse, RemoteError>>;

    fn handle(&mut self, msg: Register, _ctx: &mut Context<Self>) -> Self::Result {
        if !self.leading {
            return Box::pin(fut::ready(Err(self.not_leader())));
        }
        let request = msg.0;
        let meta = self.meta.clone();
        let command = Command::RegisterWorker {
            name: request.name.clone(),
            rpc_addr: request.rpc_addr.clone(),
            slots: request.slots,
            jobs: request.jobs.clone(),
        };
        Box::pin(
            async move { meta.propose(command).await }.into_actor(self).map(move |result, act, _ctx| {
                let worker_id = match result {
                    Ok(CommandResult::Worker(id)) => id,
                    Ok(other) => {
                        return Err(RemoteError::Unavailable { reason: format!("unexpected result {other:?}") })
                    }
                    Err(e) => return Err(RemoteError::Unavailable { reason: e.to_string() }),
                };
                let restarted = act
                    .workers
                    .get(&worker_id)
                    .is_some_and(|e| e.info.alive && e.incarnation != request.incarnation);
                info!(%worker_id, name = %request.name, addr = %request.rpc_addr, slots = request.slots, restarted, "worker registered");
                let info = WorkerInfo {
                    id: worker_id,
                    name: request.name.clone(),
                    addr: request.rpc_addr.clone(),
                    slots: request.slots,
                    jobs: request.jobs.clone(),
                    alive: true,
                    last_heartbeat_ms: now_ms(),
                };
                act.workers.insert(worker_id, Entry { info, incarnation: request.incarnation, last_seen: Instant::now() });
                act.scheduler.do_send(WorkerJoined {
                    worker_id,
                    name: request.name,
                    addr: request.rpc_addr,
                    slots: request.slots,
                    jobs: request.jobs,
                    restarted,
                });
                Ok(RegisterWorkerResponse { worker_id, heartbeat_interval_ms: HEARTBEAT_INTERVAL.as_millis() as u64 })
            }),
        )
    }
}

/// `heartbeat`.
#[derive(Debug, Message)]
#[rtype(result = "Result<HeartbeatResponse, RemoteError>")]
pub struct Heartbeat(pub HeartbeatRequest);

impl Handler<Heartbeat> for WorkerRegistry {
    type Result = ResponseFuture<Result<HeartbeatResponse, RemoteError>>;

    fn handle(&mut self, msg: Heartbeat, _ctx: &mut Context<Self>) -> Self::Result {
        if !self.leading {
            let not_leader = self.not_leader();
            return Box::pin(async move { Err(not_leader) });
        }
        let request = msg.0;
        let unknown = RemoteError::UnknownWorker {
            worker_id: request.worker_id,
        };
        let Some(entry) = self.workers.get_mut(&request.worker_id) else {
            return Box::pin(async move { Err(unknown) });
        };
        if !entry.info.alive || entry.incarnation != request.incarnation {
            // Declared dead (its work was given away) or replaced: it must register again.
            return Box::pin(async move { Err(unknown) });
        }
        entry.last_seen = Instant::now();
        entry.info.last_heartbeat_ms = now_ms();
        if request.draining {
            entry.info.alive = false;
            info!(worker_id = %request.worker_id, "worker is draining");
            self.scheduler.do_send(WorkerLost {
                worker_id: request.worker_id,
            });
        }
        let reconcile = self.scheduler.send(Reconcile {
            worker_id: request.worker_id,
            running: request.running,
        });
        Box::pin(async move {
            let cancel = reconcile.await.map_err(|e| RemoteError::Unavailable {
                reason: e.to_string(),
            })?;
            Ok(HeartbeatResponse { cancel })
        })
    }
}

impl Handler<LeadershipChanged> for WorkerRegistry {
    type Result = ();
    fn handle(&mut self, msg: LeadershipChanged, _ctx: &mut Context<Self>) {
        if msg.ready != self.leading {
            // Either way, start empty: a new leader hears every worker register again.
            self.leading = msg.ready;
            self.workers.clear();
        }
    }
}

/// Every worker heard from since this master became the leader.
#[derive(Debug, Message)]
#[rtype(result = "Vec<WorkerInfo>")]
pub struct ListWorkers;

impl Handler<ListWorkers> for WorkerRegistry {
    type Result = MessageResult<ListWorkers>;
    fn handle(&mut self, _: ListWorkers, _ctx: &mut Context<Self>) -> Self::Result {
        let mut workers: Vec<WorkerInfo> = self.workers.values().map(|e| e.info.clone()).collect();
        workers.sort_by(|a, b| a.name.cmp(&b.name));
        MessageResult(workers)
    }
}

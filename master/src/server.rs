//! `run`: one master node — the metadata Raft node, the `Scheduler` and `WorkerRegistry` actors,
//! the tarpc service for workers, and the HTTP API and UI — until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use actix::Actor;
use tracing::{info, warn};

use crate::api::MasterApi;
use crate::config::MasterConfig;
use crate::error::Result;
use crate::ids::IdGenerator;
use crate::locks::Locks;
use crate::meta::membership::MemberAddrs;
use crate::meta::node::Meta;
use crate::registry::WorkerRegistry;
use crate::scheduler::{LeadershipChanged, Scheduler};
use crate::worker_client::WorkerClients;

/// HTTP server threads.
const HTTP_WORKERS: usize = 2;

/// The addresses a running master actually bound (port 0 resolved).
#[derive(Clone, Copy, Debug)]
pub struct BoundAddrs {
    /// The tarpc service.
    pub rpc: SocketAddr,
    /// The HTTP API and UI.
    pub http: SocketAddr,
}

/// Runs a master until `shutdown` resolves. Must be called inside an actix `System`.
/// `on_ready` is called once both listeners are bound.
///
/// # Errors
/// If a listener cannot be bound or the metadata store cannot be opened.
pub async fn run(
    config: MasterConfig,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(BoundAddrs),
) -> Result<()> {
    std::fs::create_dir_all(&config.data_dir)?;
    let listed = config.cluster.masters.len();
    if listed.is_multiple_of(2) {
        warn!(
            masters = listed,
            "the cluster file lists an even number of masters: a group of {listed} tolerates no more \
             failures than one of {}; use 1, 3 or 5 (an even count is meant only while a master \
             is being added or removed)",
            listed - 1
        );
    }
    let rpc_listener = tokio::net::TcpListener::bind(config.rpc_addr).await?;
    let http_listener = std::net::TcpListener::bind(config.http_addr)?;
    let bound = BoundAddrs {
        rpc: rpc_listener.local_addr()?,
        http: http_listener.local_addr()?,
    };

    // The initial members, if this master initialises the group: every master of the file with
    // both addresses (followers forward to the leader's `http`); this node's own entry uses the
    // addresses it actually bound (which differ only when the file says port 0). Members added
    // later come with theirs (see `meta::membership`).
    let members = config
        .cluster
        .masters
        .iter()
        .map(|m| {
            let addrs = if m.id == config.id {
                MemberAddrs::new(bound.rpc.to_string(), bound.http.to_string())
            } else {
                MemberAddrs::new(m.rpc.clone(), m.http.clone())
            };
            (m.id, addrs.node())
        })
        .collect();
    let secret: Arc<str> = Arc::from(config.secret.as_str());
    let meta = Meta::start(
        config.id,
        members,
        secret.clone(),
        &config.data_dir.join("meta"),
    )
    .await?;
    // Ids start above earlier leaders' reservations once this master takes over (the
    // scheduler reserves them then, from a state that is complete only at that point).
    let ids = Arc::new(IdGenerator::new(config.id));
    let launcher = Arc::new(WorkerClients::new(secret.clone()));
    let scheduler = Scheduler::new(meta.clone(), ids, launcher, config.base_dir.clone()).start();
    let registry = WorkerRegistry::new(meta.clone(), scheduler.clone()).start();
    let locks = Locks::start(meta.clone());

    // The scheduler and the registry act only while this master is the ready leader.
    let mut leadership = meta.subscribe_leadership();
    let (to_scheduler, to_registry) = (scheduler.clone(), registry.clone());
    actix::spawn(async move {
        let mut last = None;
        loop {
            let ready = leadership.borrow_and_update().ready;
            if last != Some(ready) {
                last = Some(ready);
                to_scheduler.do_send(LeadershipChanged { ready });
                to_registry.do_send(LeadershipChanged { ready });
            }
            if leadership.changed().await.is_err() {
                break;
            }
        }
    });
    let (stop_rpc, rpc_stopped) = tokio::sync::oneshot::channel::<()>();
    let rpc = tokio::spawn(crate::rpc_server::run(
        rpc_listener,
        secret.clone(),
        meta.raft().clone(),
        registry.clone(),
        scheduler.clone(),
        locks.clone(),
        async {
            let _ = rpc_stopped.await;
        },
    ));

    let api = MasterApi::new(
        config.id,
        secret,
        meta.clone(),
        scheduler,
        registry,
        locks,
        config.cluster.masters.clone(),
    );
    let http = web::serve(http_listener, Arc::new(api), HTTP_WORKERS)?;
    let http_handle = http.handle();
    let http_task = tokio::spawn(http);

    info!(id = config.id, rpc = %bound.rpc, http = %bound.http, "master ready");
    on_ready(bound);
    shutdown.await;
    info!("master shutting down");
    http_handle.stop(true).await;
    let _ = http_task.await;
    let _ = stop_rpc.send(());
    let _ = rpc.await;
    meta.shutdown().await?;
    Ok(())
}

//! The masters as they describe themselves, for the cluster view (`GET /api/cluster` and the
//! cluster page): the serving master asks every other master's `GET /api/health` concurrently,
//! each with a short timeout, and lists each one's own role, term and log indices, with its
//! membership as the serving master's log says. One that does not answer is listed as
//! unreachable, with why, rather than with a guess.
//!
//! The masters listed are the members of the group and the masters of the serving master's
//! cluster file (a master of the file that is not a member shows as such: one waiting to be
//! added, or one removed). A member's HTTP address comes from the membership, or for members of
//! groups initialised before the membership carried it, from the cluster file.

use std::sync::OnceLock;
use std::time::Duration;

use jobs::config::MasterEntry;
use web::api::{Health, MasterView, Membership};

use crate::meta::membership::Member;

/// How long one master may take to answer its health check.
pub const HEALTH_TIMEOUT: Duration = Duration::from_millis(500);

/// Why a master's health could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// Its HTTP address is unknown (a member whose node carries none and that is not in the
    /// cluster file).
    #[error("its HTTP address is unknown")]
    NoAddress,
    /// The request failed: refused, timed out, or an error status.
    #[error("{0}")]
    Http(#[from] Box<ureq::Error>),
    /// The answer was not a health report.
    #[error("bad answer: {0}")]
    Body(#[from] std::io::Error),
    /// The blocking task that made the request failed.
    #[error("the request task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// One HTTP agent for every health check, so connections to the masters are reused.
fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::AgentBuilder::new()
            .timeout_connect(HEALTH_TIMEOUT)
            .timeout(HEALTH_TIMEOUT)
            .build()
    })
}

/// `GET http://<http>/api/health`, within [`HEALTH_TIMEOUT`].
///
/// # Errors
/// [`PeerError`] if it does not answer in time with a health report.
pub async fn health(http: String) -> Result<Health, PeerError> {
    let asked = tokio::task::spawn_blocking(move || -> Result<Health, PeerError> {
        let response = agent()
            .get(&format!("http://{http}/api/health"))
            .call()
            .map_err(Box::new)?;
        Ok(response.into_json::<Health>()?)
    });
    asked.await?
}

/// The HTTP address of master `id`: from its membership entry, else from the cluster file.
pub fn http_of(id: u64, members: &[Member], configured: &[MasterEntry]) -> Option<String> {
    members
        .iter()
        .find(|m| m.id == id)
        .and_then(|m| m.addrs.http.clone())
        .or_else(|| {
            configured
                .iter()
                .find(|m| m.id == id)
                .map(|m| m.http.clone())
        })
}

/// A member's place in the membership.
pub fn membership_of(id: u64, members: &[Member]) -> Membership {
    match members.iter().find(|m| m.id == id) {
        Some(member) if member.voter => Membership::Voter,
        Some(_) => Membership::Learner,
        None => Membership::NotMember,
    }
}

/// Every member of `members` and every master of `configured`, by id, each as it describes
/// itself: `own` is the serving master's (`me`) health, read locally; the others are asked
/// over HTTP, all at once.
pub async fn master_views(
    me: u64,
    own: Health,
    members: &[Member],
    configured: &[MasterEntry],
) -> Vec<MasterView> {
    let mut ids: Vec<u64> = members
        .iter()
        .map(|m| m.id)
        .chain(configured.iter().map(|m| m.id))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let views = ids.into_iter().map(|id| {
        let rpc = members
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.addrs.rpc.clone())
            .or_else(|| {
                configured
                    .iter()
                    .find(|m| m.id == id)
                    .map(|m| m.rpc.clone())
            })
            .unwrap_or_default();
        let http = http_of(id, members, configured);
        let membership = membership_of(id, members);
        let own = (id == me).then(|| own.clone());
        async move {
            let health = match (own, &http) {
                (Some(own), _) => Ok(own),
                (None, Some(http)) => health(http.clone()).await,
                (None, None) => Err(PeerError::NoAddress),
            };
            let mut view = MasterView {
                id,
                rpc,
                http: http.unwrap_or_default(),
                role: None,
                term: None,
                last_log_index: None,
                last_applied: None,
                membership,
                reachable: false,
                error: None,
            };
            match health {
                // A master answering on another's address (a stale file) is not that master.
                Ok(health) if health.id != id => {
                    view.error = Some(format!("master {} answers on this address", health.id));
                }
                Ok(health) => {
                    view.role = Some(health.role);
                    view.term = Some(health.term);
                    view.last_log_index = health.last_log_index;
                    view.last_applied = health.last_applied;
                    view.reachable = true;
                }
                Err(error) => view.error = Some(error.to_string()),
            }
            view
        }
    });
    futures::future::join_all(views).await
}

#[cfg(test)]
mod tests {
    use web::api::Role;

    use super::*;
    use crate::meta::membership::MemberAddrs;

    fn own(id: u64) -> Health {
        Health {
            id,
            role: Role::Leader,
            leader: Some(id),
            term: 7,
            last_log_index: Some(40),
            last_applied: Some(39),
            membership: Membership::Voter,
        }
    }

    #[tokio::test]
    async fn members_and_configured_masters_are_listed_unreachable_ones_marked() {
        // A port that refuses connections: bound, then closed.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = closed.local_addr().unwrap().to_string();
        drop(closed);
        let members = vec![
            Member {
                id: 1,
                addrs: MemberAddrs {
                    rpc: "127.0.0.1:7001".into(),
                    http: None,
                },
                voter: true,
            },
            Member {
                id: 4,
                addrs: MemberAddrs::new("127.0.0.1:7004", dead.clone()),
                voter: false,
            },
        ];
        let configured = vec![
            MasterEntry {
                id: 1,
                rpc: "127.0.0.1:7001".into(),
                http: "127.0.0.1:8080".into(),
            },
            MasterEntry {
                id: 3,
                rpc: "127.0.0.1:7003".into(),
                http: dead.clone(),
            },
        ];
        let views = master_views(1, own(1), &members, &configured).await;
        let ids: Vec<u64> = views.iter().map(|v| v.id).collect();
        assert_eq!(ids, [1, 3, 4]);
        let me = &views[0];
        assert!(me.reachable);
        assert_eq!(me.http, "127.0.0.1:8080", "from the file");
        assert_eq!(
            (me.role, me.term, me.last_applied),
            (Some(Role::Leader), Some(7), Some(39))
        );
        assert_eq!(views[1].membership, Membership::NotMember);
        let learner = &views[2];
        assert_eq!(learner.membership, Membership::Learner);
        assert_eq!(learner.http, dead, "from the membership");
        assert!(!learner.reachable);
        assert_eq!(learner.role, None);
        assert!(learner.error.is_some());
    }
}

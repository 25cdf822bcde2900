//! The cluster page, `GET /cluster`: the masters with their roles, membership, terms and log
//! indices (unreachable ones marked), and the workers with their slots, load and last
//! heartbeat; it refreshes itself from `GET /fragments/cluster`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use maud::{html, Markup};

use crate::api::{ClusterApi, ClusterView, Health, Membership};
use crate::auth::Session;
use crate::error::Error;
use crate::ui::format::{ago, badge, kind_tag, meter, now_ms};
use crate::ui::layout::{html_response, page, Nav};

/// `GET /cluster`: masters and workers.
pub async fn cluster_page(api: web::Data<dyn ClusterApi>, session: Session) -> HttpResponse {
    html_response(
        StatusCode::OK,
        page(
            "Cluster",
            Nav::Cluster,
            session,
            cluster_section(&api).await,
        ),
    )
}

/// `GET /fragments/cluster`: the cluster page's body alone, for the refresh script.
pub async fn cluster_fragment(api: web::Data<dyn ClusterApi>) -> HttpResponse {
    html_response(StatusCode::OK, cluster_section(&api).await)
}

async fn cluster_section(api: &web::Data<dyn ClusterApi>) -> Markup {
    let (health, cluster) = futures::join!(api.health(), api.cluster());
    html! {
        section #cluster data-refresh="/fragments/cluster" {
            h1 { "Cluster" }
            p.subtitle {
                "Served by master " (health.id) " (" (health.role.as_str()) ", term " (health.term)
                "). Workers heartbeat every half second; one silent for 3 s is dead and its work runs elsewhere."
            }
            @match &cluster {
                Ok(cluster) => (tables(cluster, &health)),
                Err(error) => div.flash.bad { "Cluster state unavailable: " (Error::from(error.clone()).to_string()) },
            }
        }
    }
}

fn tables(cluster: &ClusterView, health: &Health) -> Markup {
    let now = now_ms();
    let alive = cluster.workers.iter().filter(|w| w.alive).count();
    let slots: u32 = cluster
        .workers
        .iter()
        .filter(|w| w.alive)
        .map(|w| w.slots)
        .sum();
    let running: u32 = cluster
        .workers
        .iter()
        .filter(|w| w.alive)
        .map(|w| w.running)
        .sum();
    html! {
        h2 { "Masters" span.hint { @match cluster.leader {
            Some(id) => { "leader: master " (id) },
            None => "no leader elected",
        } } }
        (masters_table(cluster, health))
        h2 { "Workers" span.hint { (alive) " of " (cluster.workers.len()) " alive · "
            (running) " of " (slots) " slots busy" } }
        @if cluster.workers.is_empty() {
            div.notice #no-workers {
                p { strong { "No worker has registered yet." } }
                p { "Start one with " code { "worker --config cluster.toml --name w1" }
                    " (or " code { "master up" } ", which starts every node of the file)." }
            }
        } @else {
            div.table {
                table.workers {
                    thead {
                        tr {
                            th { "Worker" } th { "Status" } th.num { "Running / slots" }
                            th.num title="Its share of the placement ring: about this fraction of keyed tasks and reduce partitions goes to it" { "Ring share" }
                            th { "Last heartbeat" } th.opt { "RPC" } th { "Jobs served" }
                        }
                    }
                    tbody {
                        @for worker in &cluster.workers {
                            tr {
                                td { strong { (worker.name) } span.sub.mono { (worker.id) } }
                                td { (badge(if worker.alive { "alive" } else { "dead" })) }
                                td.num { (worker.running) " / " (worker.slots)
                                    (meter(u64::from(worker.running), u64::from(worker.slots))) }
                                td.num.ring-share { (format!("{:.1}%", worker.ring_share * 100.0)) }
                                td { (ago(worker.last_heartbeat_ms, now)) }
                                td.opt { code { (worker.rpc) } }
                                td.wrap {
                                    @if worker.served.is_empty() {
                                        @for name in &worker.jobs { span.tag { (name) } }
                                    } @else {
                                        @for job in &worker.served {
                                            span class={ "tag k-" (job.kind) } title=(job.kind) { (job.name) }
                                        }
                                    }
                                    @if worker.jobs.is_empty() && worker.served.is_empty() { span.muted { "none" } }
                                }
                            }
                        }
                    }
                }
            }
            div.legend { span { "Job kinds: " (kind_tag("mapreduce")) (kind_tag("task")) } }
        }
    }
}

/// The masters: each one's role, term and log indices as it reported them just now (the
/// serving master asked each one's `/api/health`), and its membership as the leader's log says.
fn masters_table(cluster: &ClusterView, health: &Health) -> Markup {
    let number = |n: Option<u64>| {
        html! { @match n { Some(n) => (n), None => span.muted { "–" } } }
    };
    html! {
        div.table {
            table.masters {
                thead {
                    tr {
                        th.num { "Id" } th { "Role" } th { "Membership" } th.num { "Term" }
                        th.num { "Last log index" } th.num { "Applied" } th.opt { "RPC" } th { "HTTP" }
                    }
                }
                tbody {
                    @for master in &cluster.masters {
                        tr {
                            td.num { (master.id) @if master.id == health.id { span.sub { "this one" } } }
                            td {
                                @match (master.reachable, master.role) {
                                    (true, Some(role)) => (badge(role.as_str())),
                                    _ => span.badge.s-dead title=[master.error.as_deref()] { "unreachable" },
                                }
                            }
                            td { @match master.membership {
                                Membership::NotMember => span.muted { "not a member" },
                                other => (other.as_str()),
                            } }
                            td.num { (number(master.term)) }
                            td.num { (number(master.last_log_index)) }
                            td.num { (number(master.last_applied)) }
                            td.opt { code { (master.rpc) } }
                            td { @if master.http.is_empty() { span.muted { "unknown" } }
                                 @else { a href={ "http://" (master.http) "/" } { (master.http) } } }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test;

    use crate::testing::{app, FakeCluster};

    #[actix_web::test]
    async fn the_cluster_page_lists_masters_and_workers() {
        let app = app(FakeCluster::new()).await;
        let req = test::TestRequest::get().uri("/cluster").to_request();
        let res = test::call_service(&app, req).await;
        assert!(res.status().is_success());
        let page = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
        assert!(page.contains(r#"class="badge s-leader""#), "{page}");
        assert!(page.contains("127.0.0.1:7001"));
        // Master 2 did not answer its health check; master 4 is a learner catching up.
        assert!(
            page.contains(
                r#"<span class="badge s-dead" title="connection refused">unreachable</span>"#
            ),
            "{page}"
        );
        assert!(page.contains(r#"<span class="badge s-learner">learner</span>"#));
        assert!(page.contains("<td>learner</td>"), "{page}");
        assert!(
            page.contains(r#"<td class="num">11</td>"#),
            "applied index of master 4"
        );
        assert!(page.contains(r#"class="badge s-alive""#));
        assert!(page.contains(r#"class="badge s-dead""#));
        assert!(page.contains("1 / 2"));
        assert!(page.contains("never"));
        assert!(
            page.contains(r#"<span class="tag k-mapreduce" title="mapreduce">wordcount</span>"#),
            "{page}"
        );
        assert!(page.contains(r#"<span class="tag k-task" title="task">echo</span>"#));
        assert!(page.contains("1 of 2 alive"));
        assert!(page.contains(r#"<a href="/cluster" class="active">"#));
        assert!(page.contains(r#"data-refresh="/fragments/cluster""#));
    }

    #[actix_web::test]
    async fn the_cluster_fragment_is_the_section_alone_and_failures_show() {
        let fake = FakeCluster::new();
        let app = app(fake.clone()).await;
        let req = test::TestRequest::get()
            .uri("/fragments/cluster")
            .to_request();
        let body = String::from_utf8(test::call_and_read_body(&app, req).await.to_vec()).unwrap();
        assert!(body.starts_with(r#"<section id="cluster""#), "{body}");
        assert!(!body.contains("<html"));
        fake.state().failure = Some(crate::api::ApiError::Unavailable("no leader".into()));
        let req = test::TestRequest::get().uri("/cluster").to_request();
        let body = String::from_utf8(test::call_and_read_body(&app, req).await.to_vec()).unwrap();
        assert!(
            body.contains("Cluster state unavailable: no leader"),
            "{body}"
        );
    }

    #[actix_web::test]
    async fn workers_show_their_share_of_the_ring() {
        let app = app(FakeCluster::new()).await;
        let req = test::TestRequest::get().uri("/cluster").to_request();
        let page = String::from_utf8(test::call_and_read_body(&app, req).await.to_vec()).unwrap();
        assert!(page.contains(">Ring share</th>"), "{page}");
        assert!(
            page.contains(r#"<td class="num ring-share">62.5%"#),
            "{page}"
        );
        assert!(
            page.contains(r#"<td class="num ring-share">0.0%"#),
            "{page}"
        );
    }
}

//! The cluster page, `GET /cluster`: the masters with their roles and terms, and the workers
//! with their slots, load and last heartbeat; it refreshes itself from `GET /fragments/cluster`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use maud::{html, Markup};

use crate::api::{ClusterApi, ClusterView};
use crate::ui::format::{ago, badge, now_ms};
use crate::ui::layout::{html_response, page, Nav};

/// `GET /cluster`: masters and workers.
pub async fn cluster_page(api: web::Data<dyn ClusterApi>) -> HttpResponse {
    html_response(
        StatusCode::OK,
        page("Cluster", Nav::Cluster, cluster_section(&api).await),
    )
}

/// `GET /fragments/cluster`: the cluster page's body alone, for the refresh script.
pub async fn cluster_fragment(api: web::Data<dyn ClusterApi>) -> HttpResponse {
    html_response(StatusCode::OK, cluster_section(&api).await)
}

async fn cluster_section(api: &web::Data<dyn ClusterApi>) -> Markup {
    let health = api.health().await;
    let cluster = api.cluster().await;
    html! {
        section #cluster data-refresh="/fragments/cluster" {
            h1 { "Cluster" }
            p.muted {
                "This page is served by master " (health.id) " (" (health.role.as_str())
                ", term " (health.term) ")."
            }
            @match &cluster {
                Ok(cluster) => (tables(cluster)),
                Err(error) => p.notice { "Cluster state unavailable: " (error.to_string()) },
            }
        }
    }
}

fn tables(cluster: &ClusterView) -> Markup {
    let now = now_ms();
    html! {
        h2 { "Masters" }
        div.table {
            table {
                thead {
                    tr {
                        th.num { "Id" } th { "Role" } th.num { "Term" } th.num { "Last log index" }
                        th { "RPC" } th { "HTTP" }
                    }
                }
                tbody {
                    @for master in &cluster.masters {
                        tr {
                            td.num { (master.id) }
                            td { (badge(master.role.as_str())) }
                            td.num { (master.term) }
                            td.num { @if let Some(index) = master.last_log_index { (index) } }
                            td { code { (master.rpc) } }
                            td { a href={ "http://" (master.http) "/" } { (master.http) } }
                        }
                    }
                }
            }
        }
        h2 { "Workers" }
        @if cluster.workers.is_empty() {
            p.notice { "No worker has registered yet." }
        } @else {
            div.table {
                table {
                    thead {
                        tr {
                            th { "Name" } th { "Status" } th.num { "Running / slots" }
                            th { "Last heartbeat" } th { "RPC" } th { "Jobs" }
                        }
                    }
                    tbody {
                        @for worker in &cluster.workers {
                            tr {
                                td { (worker.name) " " span.muted { "(" (worker.id) ")" } }
                                td { (badge(if worker.alive { "alive" } else { "dead" })) }
                                td.num { (worker.running) " / " (worker.slots) }
                                td { (ago(worker.last_heartbeat_ms, now)) }
                                td { code { (worker.rpc) } }
                                td.wrap { (worker.jobs.join(", ")) }
                            }
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
        assert!(page.contains(r#"class="badge s-alive""#));
        assert!(page.contains(r#"class="badge s-dead""#));
        assert!(page.contains("1 / 2"));
        assert!(page.contains("never"));
        assert!(page.contains("wordcount, echo"));
        assert!(page.contains(r#"class="active""#));
    }
}

//! The first page, `GET /`: the cluster at a glance (leader, term, workers, slots, jobs by
//! state) and the most recent jobs, each a fragment that refreshes itself
//! (`GET /fragments/glance`, `GET /fragments/recent`).

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use jobs::JobState;
use maud::{html, Markup};

use crate::api::{ClusterApi, ClusterView, Health, JobCounts, JobQuery};
use crate::auth::Session;
use crate::error::Error;
use crate::ui::format::now_ms;
use crate::ui::job_list::jobs_table;
use crate::ui::layout::{html_response, page, Nav};

/// How many jobs the first page shows.
pub const RECENT_JOBS: usize = 15;

/// `GET /`: the cluster at a glance and the most recent jobs.
pub async fn index(api: web::Data<dyn ClusterApi>, session: Session) -> HttpResponse {
    let (glance, jobs) = futures::join!(glance(&api), recent_section(&api));
    html_response(
        StatusCode::OK,
        page(
            "Overview",
            Nav::Overview,
            session,
            html! {
                div.titlebar {
                    div {
                        h1 { "Overview" }
                        p.subtitle { "The cluster at a glance and its latest jobs." }
                    }
                    a.btn.primary href="/submit" { "Submit a job" }
                }
                (glance)
                (jobs)
            },
        ),
    )
}

/// `GET /fragments/glance`: the summary cards alone, for the refresh script.
pub async fn glance_fragment(api: web::Data<dyn ClusterApi>) -> HttpResponse {
    html_response(StatusCode::OK, glance(&api).await)
}

/// `GET /fragments/recent`: the recent jobs table alone, for the refresh script.
pub async fn recent_fragment(api: web::Data<dyn ClusterApi>) -> HttpResponse {
    html_response(StatusCode::OK, recent_section(&api).await)
}

async fn glance(api: &web::Data<dyn ClusterApi>) -> Markup {
    let (health, cluster, counts) = futures::join!(api.health(), api.cluster(), api.job_counts());
    let cluster = cluster.map_err(Error::from);
    html! {
        section #glance data-refresh="/fragments/glance" {
            (glance_cards(&health, cluster.as_ref().ok(), counts.as_ref().ok()))
            @if let Err(error) = &cluster {
                div.flash.bad { "Cluster state unavailable: " (error.to_string()) }
            }
        }
    }
}

fn glance_cards(
    health: &Health,
    cluster: Option<&ClusterView>,
    counts: Option<&JobCounts>,
) -> Markup {
    let leader = cluster.and_then(|c| c.leader).or(health.leader);
    let workers = cluster.map(|c| c.workers.as_slice()).unwrap_or_default();
    let alive: Vec<_> = workers.iter().filter(|w| w.alive).collect();
    let slots: u32 = alive.iter().map(|w| w.slots).sum();
    let busy: u32 = alive.iter().map(|w| w.running).sum();
    let card = |label: &str, href: &str, value: Markup, sub: Markup| {
        html! {
            a.card href=(href) {
                div.label { (label) } div.value { (value) } div.sub { (sub) }
            }
        }
    };
    let jobs = |state: JobState| counts.map(|c| c.matching(Some(state), None));
    let count = |n: Option<u64>| match n {
        Some(n) => html! { (n) },
        None => html! { span.muted { "?" } },
    };
    html! {
        div.cards {
            (card("Leader", "/cluster", html! {
                @match leader {
                    Some(id) => { "master " (id) }
                    None => span.muted { "none" },
                }
            }, html! { "term " (health.term) }))
            (card("Workers alive", "/cluster",
                html! { (alive.len()) span.count { " / " (workers.len()) } },
                html! { @if alive.len() < workers.len() { (workers.len() - alive.len()) " dead" } @else { "all heartbeating" } }))
            (card("Slots busy", "/cluster",
                html! { (busy) span.count { " / " (slots) } },
                html! { "task attempts running" }))
            (card("Running", "/jobs?state=running", count(jobs(JobState::Running)),
                html! { "jobs" }))
            (card("Queued", "/jobs?state=queued", count(jobs(JobState::Queued)),
                html! { "jobs waiting for slots" }))
            (card("Failed", "/jobs?state=failed", count(jobs(JobState::Failed)),
                html! { "of " (counts.map_or(0, |c| c.matching(None, None))) " jobs" }))
        }
    }
}

async fn recent_section(api: &web::Data<dyn ClusterApi>) -> Markup {
    let query = JobQuery {
        limit: RECENT_JOBS,
        ..JobQuery::default()
    };
    let page = api.list_jobs(query).await.map_err(Error::from);
    html! {
        section #recent data-refresh="/fragments/recent" {
            h2 { "Recent jobs" a.hint href="/jobs" { "All jobs »" } }
            @match &page {
                Ok(page) => {
                    (jobs_table(&page.jobs, now_ms(), false))
                    @if page.total > page.jobs.len() as u64 {
                        p.muted { "The " (page.jobs.len()) " newest of " (page.total) " jobs. "
                            a href="/jobs" { "See them all" } "." }
                    }
                }
                Err(error) => div.flash.bad { "Jobs unavailable: " (error.to_string()) },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test;
    use jobs::JobState;

    use crate::api::ApiError;
    use crate::testing::{app, sample_job, FakeCluster};

    async fn get_text(fake: FakeCluster, uri: &str) -> String {
        let app = app(fake).await;
        let res = test::call_service(&app, test::TestRequest::get().uri(uri).to_request()).await;
        assert!(res.status().is_success(), "{}", res.status());
        String::from_utf8(test::read_body(res).await.to_vec()).unwrap()
    }

    #[actix_web::test]
    async fn the_first_page_lists_jobs_with_state_and_progress() {
        let mut job = sample_job(41, JobState::Failed);
        job.job = "grep".into();
        let fake = FakeCluster::with_jobs(vec![job, sample_job(42, JobState::Running)]);
        let page = get_text(fake, "/").await;
        assert!(page.contains(r#"href="/jobs/41""#), "{page}");
        assert!(page.contains(r#"href="/jobs/42""#));
        assert!(page.contains("grep"));
        assert!(page.contains(r#"class="badge s-failed""#));
        assert!(page.contains(r#"class="badge s-running""#));
        assert!(page.contains("1/3"));
        assert!(page.contains("2024-05-01 12:00:00"));
        assert!(page.contains("2.5 s"), "duration of the failed job");
        assert!(page.contains(r#"data-refresh="/fragments/recent""#));
        assert!(page.contains(r#"data-refresh="/fragments/glance""#));
        assert!(!page.contains("No jobs here yet"));
        // the newest job comes first
        assert!(page.find("/jobs/42").unwrap() < page.find("/jobs/41").unwrap());
        // the glance: leader 1, one of two workers alive with 2 slots, 1 busy; job counts
        assert!(page.contains("master 1"));
        assert!(
            page.contains("1<span class=\"count\"> / 2</span>"),
            "{page}"
        );
        assert!(page.contains(r#"<a class="card" href="/jobs?state=failed"><div class="label">Failed</div><div class="value">1</div>"#), "{page}");
    }

    #[actix_web::test]
    async fn the_first_page_has_an_empty_state() {
        let page = get_text(FakeCluster::new(), "/").await;
        assert!(page.contains("No jobs here yet"), "{page}");
        assert!(page.contains(r#"href="/submit""#));
        assert!(!page.contains("<table"));
    }

    #[actix_web::test]
    async fn the_fragments_are_their_sections_alone() {
        let fake = FakeCluster::with_jobs(vec![sample_job(42, JobState::Queued)]);
        let fragment = get_text(fake.clone(), "/fragments/recent").await;
        assert!(fragment.starts_with("<section id=\"recent\""), "{fragment}");
        assert!(fragment.contains(r#"href="/jobs/42""#));
        assert!(!fragment.contains("<html"));
        let glance = get_text(fake, "/fragments/glance").await;
        assert!(glance.starts_with("<section id=\"glance\""), "{glance}");
        assert!(
            glance.contains("Queued</div><div class=\"value\">1<"),
            "{glance}"
        );
        assert!(!glance.contains("<html"));
    }

    #[actix_web::test]
    async fn an_unavailable_cluster_is_shown_not_fatal() {
        let fake = FakeCluster::new();
        fake.state().failure = Some(ApiError::Unavailable("no leader elected".into()));
        let page = get_text(fake, "/").await;
        assert!(
            page.contains("Cluster state unavailable: no leader elected"),
            "{page}"
        );
        assert!(page.contains("Jobs unavailable: no leader elected"));
    }

    #[actix_web::test]
    async fn job_names_are_escaped_in_lists() {
        let mut job = sample_job(9, JobState::Queued);
        job.job = "<img src=x onerror=alert(1)>".into();
        let page = get_text(FakeCluster::with_jobs(vec![job]), "/").await;
        assert!(!page.contains("<img src=x"), "{page}");
        assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"));
    }
}

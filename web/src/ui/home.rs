//! The first page, `GET /`: the cluster at a glance and the recent jobs, each a fragment that
//! refreshes itself (`GET /fragments/glance`, `GET /fragments/jobs`).

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use maud::{html, Markup};

use crate::api::{ClusterApi, ClusterView, Health, JobPage, JobQuery, JobView};
use crate::error::Error;
use crate::ui::format::{badge, duration, now_ms, progress_bar, time};
use crate::ui::layout::{html_response, page, Nav};

/// How many jobs the first page shows.
pub const RECENT_JOBS: usize = 50;

/// `GET /`: the cluster at a glance and the most recent jobs.
pub async fn index(api: web::Data<dyn ClusterApi>) -> HttpResponse {
    let glance = glance(&api).await;
    let jobs = jobs_section(&api).await;
    html_response(
        StatusCode::OK,
        page(
            "Jobs",
            Nav::Jobs,
            html! {
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

/// `GET /fragments/jobs`: the jobs table alone, for the refresh script.
pub async fn jobs_fragment(api: web::Data<dyn ClusterApi>) -> HttpResponse {
    html_response(StatusCode::OK, jobs_section(&api).await)
}

async fn glance(api: &web::Data<dyn ClusterApi>) -> Markup {
    let health = api.health().await;
    let cluster = api.cluster().await.map_err(Error::from);
    html! {
        section #glance data-refresh="/fragments/glance" {
            (glance_cards(&health, cluster.as_ref().ok()))
            @if let Err(error) = &cluster {
                p.notice { "Cluster state unavailable: " (error.to_string()) }
            }
        }
    }
}

fn glance_cards(health: &Health, cluster: Option<&ClusterView>) -> Markup {
    let leader = cluster.and_then(|c| c.leader).or(health.leader);
    let workers = cluster.map(|c| c.workers.as_slice()).unwrap_or_default();
    let alive: Vec<_> = workers.iter().filter(|w| w.alive).collect();
    let slots: u32 = alive.iter().map(|w| w.slots).sum();
    let busy: u32 = alive.iter().map(|w| w.running).sum();
    let card = |label: &str, value: Markup| {
        html! { div.card { div.label { (label) } div.value { (value) } } }
    };
    html! {
        div.cards {
            (card("Leader", html! {
                @match leader {
                    Some(id) => { "master " (id) }
                    None => span.muted { "none" },
                }
            }))
            (card("Term", html! { (health.term) }))
            (card("Workers alive", html! { (alive.len()) span.count { " / " (workers.len()) } }))
            (card("Slots busy", html! { (busy) span.count { " / " (slots) } }))
        }
    }
}

async fn jobs_section(api: &web::Data<dyn ClusterApi>) -> Markup {
    let query = JobQuery {
        limit: RECENT_JOBS,
        ..JobQuery::default()
    };
    let page = api.list_jobs(query).await.map_err(Error::from);
    html! {
        section #jobs data-refresh="/fragments/jobs" {
            h2 { "Recent jobs" }
            @match &page {
                Ok(page) => (jobs_table(page)),
                Err(error) => p.notice { "Jobs unavailable: " (error.to_string()) },
            }
        }
    }
}

fn jobs_table(page: &JobPage) -> Markup {
    if page.jobs.is_empty() {
        return html! {
            div.notice #no-jobs {
                p { "No jobs yet." }
                p {
                    "Submit one with " code { "master submit --config cluster.toml spec.json" }
                    " or " code { "POST /api/jobs" } "."
                }
            }
        };
    }
    let now = now_ms();
    html! {
        div.table {
            table {
                thead {
                    tr {
                        th { "Id" } th { "Kind" } th { "Job" } th { "State" }
                        th { "Progress" } th { "Submitted (UTC)" } th.num { "Duration" }
                    }
                }
                tbody {
                    @for job in &page.jobs { (job_row(job, now)) }
                }
            }
        }
        @if page.total > page.jobs.len() as u64 {
            p.muted { "Showing the " (page.jobs.len()) " newest of " (page.total) " jobs." }
        }
    }
}

fn job_row(job: &JobView, now: u64) -> Markup {
    html! {
        tr {
            td { a href={ "/jobs/" (job.id) } { (job.id) } }
            td { (job.kind) }
            td { (job.job) }
            td { (badge(job.state.as_str())) }
            td { (progress_bar(job.progress)) }
            td { (time(Some(job.submitted_ms))) }
            td.num { (duration(job.started_ms, job.finished_ms, now)) }
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
        assert!(page.contains(r#"data-refresh="/fragments/jobs""#));
        assert!(!page.contains("No jobs yet"));
        // the newest job comes first
        assert!(page.find("/jobs/42").unwrap() < page.find("/jobs/41").unwrap());
        // the glance: leader 1, one of two workers alive with 2 slots, 1 busy
        assert!(page.contains("master 1"));
        assert!(
            page.contains("1<span class=\"count\"> / 2</span>"),
            "{page}"
        );
    }

    #[actix_web::test]
    async fn the_first_page_has_an_empty_state() {
        let page = get_text(FakeCluster::new(), "/").await;
        assert!(page.contains("No jobs yet"), "{page}");
        assert!(!page.contains("<table"));
    }

    #[actix_web::test]
    async fn the_jobs_fragment_is_the_table_alone() {
        let fake = FakeCluster::with_jobs(vec![sample_job(42, JobState::Queued)]);
        let fragment = get_text(fake, "/fragments/jobs").await;
        assert!(fragment.starts_with("<section id=\"jobs\""), "{fragment}");
        assert!(fragment.contains(r#"href="/jobs/42""#));
        assert!(!fragment.contains("<html"));
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
}

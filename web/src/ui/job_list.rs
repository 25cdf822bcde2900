//! The jobs page, `GET /jobs?state=&kind=&before=&limit=`: every job, newest first, with
//! filter tabs by state (with counts), a kind filter, and paging by `before` (the id of the
//! last job of the previous page, as `GET /api/jobs` pages). The list refreshes itself from
//! `GET /fragments/jobs` with the same query. Also the jobs table the first page reuses.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use jobs::JobState;
use maud::{html, Markup};

use crate::api::{ClusterApi, JobCounts, JobPage, JobQuery, JobView, DEFAULT_LIMIT};
use crate::auth::Session;
use crate::error::Error;
use crate::jobs::ListParams;
use crate::ui::format::{badge, duration, human_ms, kind_tag, now_ms, progress_bar, time};
use crate::ui::layout::{error_page, html_response, page, Nav};

/// The kinds always offered by the kind filter, whether or not a job of that kind exists.
pub const KINDS: [&str; 2] = ["mapreduce", "task"];

/// `GET /jobs`: the filtered, paged list of jobs.
pub async fn jobs_page(
    api: web::Data<dyn ClusterApi>,
    session: Session,
    req: HttpRequest,
) -> HttpResponse {
    match parse(&req) {
        Ok(query) => {
            let body = list_section(&api, &query).await;
            html_response(StatusCode::OK, page("Jobs", Nav::Jobs, session, body))
        }
        Err(error) => error_page(&error, session),
    }
}

/// `GET /fragments/jobs?...`: the list section alone, for the refresh script.
///
/// # Errors
/// 400 for a bad query parameter.
pub async fn jobs_fragment(
    api: web::Data<dyn ClusterApi>,
    req: HttpRequest,
) -> Result<HttpResponse, Error> {
    let query = parse(&req)?;
    Ok(html_response(
        StatusCode::OK,
        list_section(&api, &query).await,
    ))
}

/// The query string as `GET /api/jobs` reads it (unknown parameters are an error there too).
fn parse(req: &HttpRequest) -> Result<JobQuery, Error> {
    let params = web::Query::<ListParams>::from_query(req.query_string()).map_err(|e| {
        Error::BadRequest {
            reason: format!("invalid query string: {e}"),
        }
    })?;
    params.into_inner().into_query()
}

/// Percent-encodes a query value (everything but RFC 3986's unreserved characters).
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The query string of a jobs list: only the parameters that differ from the defaults.
pub fn list_query(query: &JobQuery) -> String {
    let mut pairs = Vec::new();
    if let Some(state) = query.state {
        pairs.push(format!("state={}", state.as_str()));
    }
    if let Some(kind) = &query.kind {
        pairs.push(format!("kind={}", encode(kind)));
    }
    if query.limit != DEFAULT_LIMIT {
        pairs.push(format!("limit={}", query.limit));
    }
    if let Some(before) = query.before {
        pairs.push(format!("before={before}"));
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", pairs.join("&"))
    }
}

async fn list_section(api: &web::Data<dyn ClusterApi>, query: &JobQuery) -> Markup {
    let (page, counts) = futures::join!(api.list_jobs(query.clone()), api.job_counts());
    let counts = counts.unwrap_or_default();
    let refresh = format!("/fragments/jobs{}", list_query(query));
    html! {
        section #joblist data-refresh=(refresh) {
            div.titlebar {
                div {
                    h1 { "Jobs" }
                    p.subtitle { "Newest first. " (counts.matching(None, None)) " jobs in all." }
                }
                a.btn.primary href="/submit" { "Submit a job" }
            }
            (filters(query, &counts))
            @match &page {
                Ok(page) => {
                    (jobs_table(&page.jobs, now_ms(), true))
                    (pager(query, page))
                }
                Err(error) => div.flash.bad { "Jobs unavailable: " (Error::from(error.clone()).to_string()) },
            }
        }
    }
}

fn filters(query: &JobQuery, counts: &JobCounts) -> Markup {
    let kind = query.kind.as_deref();
    let tab = |state: Option<JobState>, label: &str| {
        let target = JobQuery {
            state,
            before: None,
            ..query.clone()
        };
        let active = query.state == state;
        html! {
            a class=[active.then_some("active")] href={ "/jobs" (list_query(&target)) } {
                (label) span.n { (counts.matching(state, kind)) }
            }
        }
    };
    let mut kinds: Vec<&str> = KINDS.to_vec();
    kinds.extend(counts.kinds());
    kinds.extend(kind);
    kinds.sort_unstable();
    kinds.dedup();
    html! {
        div.filters {
            nav.tabs aria-label="Filter by state" {
                (tab(None, "All"))
                @for state in JobState::ALL {
                    @if state != JobState::Scheduled || counts.matching(Some(state), None) > 0 {
                        (tab(Some(state), state.as_str()))
                    }
                }
            }
            form method="get" action="/jobs" {
                @if let Some(state) = query.state {
                    input type="hidden" name="state" value=(state.as_str());
                }
                @if query.limit != DEFAULT_LIMIT {
                    input type="hidden" name="limit" value=(query.limit);
                }
                label.muted for="kind-filter" { "Kind " }
                select #kind-filter name="kind" data-autosubmit {
                    option value="" selected[kind.is_none()] { "all kinds" }
                    @for k in &kinds {
                        option value=(k) selected[kind == Some(*k)] { (k) }
                    }
                }
                noscript { " " button type="submit" { "Apply" } }
            }
        }
    }
}

fn pager(query: &JobQuery, page: &JobPage) -> Markup {
    let newest = JobQuery {
        before: None,
        ..query.clone()
    };
    let older = page.next_before.map(|before| JobQuery {
        before: Some(before),
        ..query.clone()
    });
    html! {
        div.pager {
            span {
                @if page.jobs.is_empty() {
                    "No jobs on this page."
                } @else {
                    (page.jobs.len()) " shown of " (page.total) " matching"
                    @if query.before.is_some() { " (older page)" }
                }
            }
            span.links {
                @if query.before.is_some() {
                    a.btn href={ "/jobs" (list_query(&newest)) } { "« Newest" }
                }
                @if let Some(older) = older {
                    a.btn rel="next" href={ "/jobs" (list_query(&older)) } { "Older »" }
                }
            }
        }
    }
}

/// The table of jobs used by the first page and the jobs page, or its empty state.
/// `full` adds the columns only the jobs page has room for.
pub fn jobs_table(jobs: &[JobView], now: u64, full: bool) -> Markup {
    if jobs.is_empty() {
        return html! {
            div.notice #no-jobs {
                p { strong { "No jobs here yet." } }
                p {
                    a href="/submit" { "Submit one from the form" } ", with "
                    code { "master submit --config cluster.toml spec.json" } " or "
                    code { "POST /api/jobs" } "."
                }
            }
        };
    }
    html! {
        div.table {
            table.jobs {
                thead {
                    tr {
                        th { "Job" } th.opt { "Kind" } th { "State" } th { "Progress" }
                        th.opt { "Submitted (UTC)" } th.num { "Duration" }
                        @if full { th.opt { "Error" } }
                    }
                }
                tbody {
                    @for job in jobs {
                        tr {
                            td {
                                a href={ "/jobs/" (job.id) } { strong { (job.job) } }
                                " " span.mono.muted.small.opt { (job.id) }
                            }
                            td.opt { (kind_tag(&job.kind)) }
                            td { (badge(job.state.as_str())) }
                            td { (progress_bar(job.progress, job.state.as_str())) }
                            td.opt { (time(Some(job.submitted_ms))) }
                            td.num {
                                @if job.started_ms.is_none() && !job.state.is_final() {
                                    span.muted title="waiting since it was submitted" {
                                        "waiting " (human_ms(now.saturating_sub(job.submitted_ms)))
                                    }
                                } @else {
                                    (duration(job.started_ms, job.finished_ms, now))
                                }
                            }
                            @if full {
                                td.opt.wrap.muted {
                                    @if let Some(error) = &job.error { (first_line(error, 90)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The first line of `text`, cut to about `max` characters.
pub fn first_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    match line.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None if text.lines().nth(1).is_some() => format!("{line} …"),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::StatusCode;
    use actix_web::test;
    use jobs::{JobId, JobState};

    use super::*;
    use crate::testing::{app, sample_job, FakeCluster};

    async fn get(fake: &FakeCluster, uri: &str) -> (StatusCode, String) {
        let app = app(fake.clone()).await;
        let res = test::call_service(&app, test::TestRequest::get().uri(uri).to_request()).await;
        let status = res.status();
        (
            status,
            String::from_utf8(test::read_body(res).await.to_vec()).unwrap(),
        )
    }

    fn many_jobs() -> FakeCluster {
        let jobs = (1..=120)
            .map(|i| {
                let state = if i % 3 == 0 {
                    JobState::Failed
                } else {
                    JobState::Succeeded
                };
                let mut job = sample_job(i, state);
                if i % 2 == 0 {
                    job.kind = "task".into();
                    job.job = "echo".into();
                }
                job
            })
            .collect();
        FakeCluster::with_jobs(jobs)
    }

    #[actix_web::test]
    async fn the_jobs_page_lists_newest_first_with_counts_and_a_next_page() {
        let fake = many_jobs();
        let (status, page) = get(&fake, "/jobs").await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains(r#"href="/jobs/120""#), "{page}");
        assert!(!page.contains(r#"href="/jobs/70""#), "only the first 50");
        assert!(page.find("/jobs/120\"").unwrap() < page.find("/jobs/119\"").unwrap());
        // tabs with counts: 40 failed, 80 succeeded
        assert!(
            page.contains(r#"failed<span class="n">40</span>"#),
            "{page}"
        );
        assert!(page.contains(r#"succeeded<span class="n">80</span>"#));
        assert!(page.contains("50 shown of 120 matching"));
        assert!(
            page.contains(r#"href="/jobs?before=71""#),
            "the older page link: {page}"
        );
        assert!(page.contains(r#"data-refresh="/fragments/jobs""#));
        assert_eq!(fake.state().last_query, Some(JobQuery::default()));
    }

    #[actix_web::test]
    async fn filters_and_paging_pass_through_to_the_api_and_the_links() {
        let fake = many_jobs();
        let (status, page) = get(&fake, "/jobs?state=failed&kind=task&before=100&limit=5").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            fake.state().last_query,
            Some(JobQuery {
                state: Some(JobState::Failed),
                kind: Some("task".into()),
                limit: 5,
                before: Some(JobId(100)),
            })
        );
        // ids below 100 divisible by 6: 96, 90, 84, 78, 72
        assert!(page.contains(r#"href="/jobs/96""#) && page.contains(r#"href="/jobs/72""#));
        assert!(!page.contains(r#"href="/jobs/102""#) && !page.contains(r#"href="/jobs/95""#));
        assert!(
            page.contains(r#"href="/jobs?state=failed&amp;kind=task&amp;limit=5&amp;before=72""#),
            "{page}"
        );
        assert!(
            page.contains(r#"href="/jobs?state=failed&amp;kind=task&amp;limit=5""#),
            "newest"
        );
        assert!(page.contains(r#"data-refresh="/fragments/jobs?state=failed&amp;kind=task&amp;limit=5&amp;before=100""#));
        // the state tabs keep the kind; their counts are for that kind
        assert!(page.contains(r#"<a class="active" href="/jobs?state=failed&amp;kind=task&amp;limit=5">failed<span class="n">20</span>"#), "{page}");
        assert!(page.contains(r#"<option value="task" selected>"#));
    }

    #[actix_web::test]
    async fn the_jobs_fragment_is_the_list_alone_and_checks_its_query() {
        let fake = many_jobs();
        let (status, fragment) = get(&fake, "/fragments/jobs?state=succeeded").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            fragment.starts_with(r#"<section id="joblist""#),
            "{fragment}"
        );
        assert!(!fragment.contains("<html"));
        assert!(
            fragment.contains(r#"href="/jobs/119""#) && !fragment.contains(r#"href="/jobs/120""#)
        );
        let (status, _) = get(&fake, "/fragments/jobs?state=nope").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, page) = get(&fake, "/jobs?stat=failed").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            page.contains("<html") && page.contains("unknown field `stat`"),
            "{page}"
        );
    }

    #[actix_web::test]
    async fn queued_jobs_show_how_long_they_have_waited() {
        let mut job = sample_job(5, JobState::Queued);
        job.started_ms = None;
        let (_, page) = get(&FakeCluster::with_jobs(vec![job]), "/jobs").await;
        assert!(page.contains("waiting "), "{page}");
        assert!(page.contains(r#"<span class="mono muted small opt">5</span>"#));
    }

    #[actix_web::test]
    async fn an_empty_list_says_so_and_an_unknown_kind_is_echoed_escaped() {
        let (_, page) = get(&FakeCluster::new(), "/jobs?kind=%3Cb%3E").await;
        assert!(page.contains("No jobs here yet"), "{page}");
        assert!(!page.contains("<b>"));
        assert!(
            page.contains(r#"<option value="&lt;b&gt;" selected>"#),
            "{page}"
        );
        assert!(page.contains("kind=%3Cb%3E"));
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn first_lines_are_cut() {
        assert_eq!(first_line("short", 10), "short");
        assert_eq!(first_line("two\nlines", 10), "two …");
        assert_eq!(first_line("ééééé", 3), "ééé…");
    }
}

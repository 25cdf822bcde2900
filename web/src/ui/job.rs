//! The job page, `GET /jobs/{id}`: state, progress, the error in full, result, output files,
//! counters, the task table and the spec. While the job runs, its body refreshes itself from
//! `GET /fragments/jobs/{id}`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use maud::{html, Markup};

use crate::api::{ClusterApi, JobView, TaskView};
use crate::error::Error;
use crate::jobs::parse_job_id;
use crate::ui::format::{badge, bytes, duration, now_ms, pretty_json, progress_bar, time};
use crate::ui::layout::{error_page, html_response, page, Nav};

/// The most task rows one page shows; a huge job's page stays usable in a browser.
pub const MAX_TASK_ROWS: usize = 1000;

/// `GET /jobs/{id}`: one job in full.
pub async fn job_page(api: web::Data<dyn ClusterApi>, id: web::Path<String>) -> HttpResponse {
    match load(&api, &id).await {
        Ok(job) => html_response(
            StatusCode::OK,
            page(&format!("Job {}", job.id), Nav::Jobs, job_body(&job)),
        ),
        Err(error) => error_page(&error),
    }
}

/// `GET /fragments/jobs/{id}`: the job page's body alone, for the refresh script.
///
/// # Errors
/// As `GET /api/jobs/{id}`; the script keeps the old body on an error.
pub async fn job_fragment(
    api: web::Data<dyn ClusterApi>,
    id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let job = load(&api, &id).await?;
    Ok(html_response(StatusCode::OK, job_body(&job)))
}

async fn load(api: &web::Data<dyn ClusterApi>, id: &str) -> Result<JobView, Error> {
    let id = parse_job_id(id)?;
    Ok(api.job(id, None).await?)
}

fn job_body(job: &JobView) -> Markup {
    let now = now_ms();
    let refresh = (!job.state.is_final()).then(|| format!("/fragments/jobs/{}", job.id));
    html! {
        section #job data-refresh=[refresh] {
            h1 { "Job " (job.id) (badge(job.state.as_str())) }
            dl.facts {
                dt { "Kind" } dd { (job.kind) }
                dt { "Job" } dd { (job.job) }
                dt { "Progress" } dd { (progress_bar(job.progress)) }
                dt { "Submitted" } dd { (time(Some(job.submitted_ms))) }
                dt { "Started" } dd { (time(job.started_ms)) }
                dt { "Finished" } dd { (time(job.finished_ms)) }
                dt { "Duration" } dd { (duration(job.started_ms, job.finished_ms, now)) }
                @if let Some(parent) = job.parent {
                    dt { "Fired by" } dd { a href={ "/jobs/" (parent) } { "job " (parent) } }
                }
            }
            @if let Some(error) = &job.error {
                h2 { "Error" }
                pre.error { (error) }
            }
            @if let Some(result) = &job.result {
                h2 { "Result" }
                pre { (pretty_json(result)) }
            }
            h2 { "Output" }
            @if job.output.is_empty() {
                p.muted { "No output files yet." }
            } @else {
                ul.output { @for path in &job.output { li { code { (path) } } } }
            }
            h2 { "Counters" }
            (counters(job))
            h2 { "Tasks" }
            (tasks(job.tasks.as_deref().unwrap_or_default(), now))
            h2 { "Spec" }
            pre { (pretty_json(&job.spec)) }
        }
    }
}

fn counters(job: &JobView) -> Markup {
    html! {
        div.table {
            table {
                thead {
                    tr {
                        th { "Phase" } th.num { "Records in" } th.num { "Bytes in" }
                        th.num { "Records out" } th.num { "Bytes out" }
                    }
                }
                tbody {
                    @for (phase, c) in [("map", &job.counters.map), ("reduce", &job.counters.reduce)] {
                        tr {
                            td { (phase) }
                            td.num { (c.records_in) }
                            td.num title={ (c.bytes_in) " bytes" } { (bytes(c.bytes_in)) }
                            td.num { (c.records_out) }
                            td.num title={ (c.bytes_out) " bytes" } { (bytes(c.bytes_out)) }
                        }
                    }
                }
            }
        }
    }
}

/// One row per attempt, the task's own cells spanning its attempts.
fn tasks(tasks: &[TaskView], now: u64) -> Markup {
    if tasks.is_empty() {
        return html! { p.muted { "No tasks yet." } };
    }
    let shown = &tasks[..tasks.len().min(MAX_TASK_ROWS)];
    html! {
        div.table {
            table.tasks {
                thead {
                    tr {
                        th { "Task" } th { "Kind" } th { "State" } th { "Attempt" }
                        th { "Worker" } th.num { "Duration" } th { "Attempt state" } th { "Error" }
                    }
                }
                tbody {
                    @for task in shown {
                        @let span = task.attempts.len().max(1);
                        tr {
                            td rowspan=(span) { (task.index) " " span.muted { "(" (task.id) ")" } }
                            td rowspan=(span) { (task.kind) }
                            td rowspan=(span) { (badge(task.state.as_str())) }
                            @match task.attempts.first() {
                                Some(first) => (attempt_cells(first, now)),
                                None => td colspan="5" .muted { "not launched yet" },
                            }
                        }
                        @for attempt in task.attempts.iter().skip(1) {
                            tr { (attempt_cells(attempt, now)) }
                        }
                    }
                }
            }
        }
        @if tasks.len() > shown.len() {
            p.muted { "Showing the first " (shown.len()) " of " (tasks.len()) " tasks." }
        }
    }
}

fn attempt_cells(attempt: &crate::api::AttemptView, now: u64) -> Markup {
    html! {
        td { "#" (attempt.attempt) }
        td { (attempt.worker) }
        td.num { (duration(attempt.started_ms, attempt.finished_ms, now)) }
        td { (badge(&attempt.state)) }
        td.wrap { @if let Some(error) = &attempt.error { (error) } }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::StatusCode;
    use actix_web::test;
    use jobs::JobState;

    use crate::api::JobView;
    use crate::testing::{app, sample_job, sample_task, FakeCluster};

    async fn get(fake: FakeCluster, uri: &str) -> (StatusCode, String) {
        let app = app(fake).await;
        let res = test::call_service(&app, test::TestRequest::get().uri(uri).to_request()).await;
        let status = res.status();
        (
            status,
            String::from_utf8(test::read_body(res).await.to_vec()).unwrap(),
        )
    }

    fn failed_job() -> JobView {
        let mut job = sample_job(77, JobState::Failed);
        job.error = Some("<script>alert('x')</script> & more".into());
        job.output = vec!["out/part-r-00000".into()];
        job.tasks = Some(vec![sample_task()]);
        job
    }

    #[actix_web::test]
    async fn the_job_page_shows_tasks_and_escapes_the_error() {
        let (status, page) = get(FakeCluster::with_jobs(vec![failed_job()]), "/jobs/77").await;
        assert_eq!(status, StatusCode::OK);
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(page.contains("&lt;script&gt;alert('x')&lt;/script&gt; &amp; more"));
        assert!(page.contains("out/part-r-00000"));
        // the task with both attempts: worker, state, error, duration
        assert!(page.contains("(900)"));
        assert!(page.contains("<td>w1</td>") && page.contains("<td>w2</td>"));
        assert!(page.contains("disk full"));
        assert!(page.contains(r#"class="badge s-failed""#));
        assert!(page.contains("400 ms"));
        assert!(page.contains("rowspan=\"2\""));
        // counters and spec
        assert!(page.contains("Records in") && page.contains("100 B"));
        assert!(
            page.contains("&quot;reducers&quot;: 2"),
            "the spec, pretty-printed"
        );
        // a finished job does not poll
        assert!(!page.contains("data-refresh=\""), "{page}");
    }

    #[actix_web::test]
    async fn a_running_job_page_refreshes_itself() {
        let fake = FakeCluster::with_jobs(vec![sample_job(78, JobState::Running)]);
        let (_, page) = get(fake.clone(), "/jobs/78").await;
        assert!(
            page.contains(r#"data-refresh="/fragments/jobs/78""#),
            "{page}"
        );
        assert!(page.contains("No tasks yet"));
        let (status, fragment) = get(fake, "/fragments/jobs/78").await;
        assert_eq!(status, StatusCode::OK);
        assert!(fragment.starts_with("<section id=\"job\""), "{fragment}");
    }

    #[actix_web::test]
    async fn unknown_and_malformed_ids_get_error_pages() {
        let (status, page) = get(FakeCluster::new(), "/jobs/5").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(
            page.contains("no job 5") && page.contains("<html"),
            "{page}"
        );
        let (status, page) = get(FakeCluster::new(), "/jobs/%3Cb%3E").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(page.contains("invalid job id `&lt;b&gt;`"), "{page}");
    }
}

//! The job page, `GET /jobs/{id}`: state and progress, the cancel button, the error in full,
//! the result, output files with links, counters per phase, the task timeline, the duration
//! summary, the task table with every attempt, and the spec. While the job runs, its body
//! refreshes itself from `GET /fragments/jobs/{id}`.
//!
//! `POST /jobs/{id}/cancel` is the cancel button's form (login cookie or bearer, checked by the
//! middleware). `GET /jobs/{id}/output/{n}` serves the job's `n`th output file: the path comes
//! from the job's own `output` list, never from the request, so nothing else on the disk can be
//! reached through it.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use futures::stream;
use maud::{html, Markup};
use serde::Deserialize;
use tokio::io::AsyncReadExt;

use crate::api::{AttemptView, ClusterApi, JobView, TaskView};
use crate::auth::Session;
use crate::error::Error;
use crate::jobs::parse_job_id;
use crate::ui::format::{
    badge, bytes, date_utc, duration, kind_tag, now_ms, pretty_json, progress_bar, time,
    time_of_day,
};
use crate::ui::job_list::encode;
use crate::ui::layout::{error_page, html_response, page, secure_headers, see_other, Nav};
use crate::ui::timeline::{duration_summary, timeline};

/// The most task rows one page shows; a huge job's page stays usable in a browser (the JSON
/// API has them all).
pub const MAX_TASK_ROWS: usize = 500;
/// The size of the chunks an output file is streamed in.
const CHUNK: usize = 64 * 1024;

/// `GET /jobs/{id}`: one job in full.
pub async fn job_page(
    api: web::Data<dyn ClusterApi>,
    session: Session,
    id: web::Path<String>,
) -> HttpResponse {
    match load(&api, &id).await {
        Ok(job) => {
            let sizes = output_sizes(&job).await;
            let body = html! {
                div.crumbs { a href="/jobs" { "Jobs" } " / " span.mono { (job.id) } }
                (job_section(&job, session, &sizes))
                details {
                    summary { "Spec" }
                    pre { (pretty_json(&job.spec)) }
                }
                p.muted { "As JSON: " a href={ "/api/jobs/" (job.id) } { "/api/jobs/" (job.id) } }
            };
            html_response(
                StatusCode::OK,
                page(&format!("{} {}", job.job, job.id), Nav::Jobs, session, body),
            )
        }
        Err(error) => error_page(&error, session),
    }
}

/// `GET /fragments/jobs/{id}`: the job's live section alone, for the refresh script.
///
/// # Errors
/// As `GET /api/jobs/{id}`; the script keeps the old section on an error.
pub async fn job_fragment(
    api: web::Data<dyn ClusterApi>,
    session: Session,
    id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let job = load(&api, &id).await?;
    let sizes = output_sizes(&job).await;
    Ok(html_response(
        StatusCode::OK,
        job_section(&job, session, &sizes),
    ))
}

/// `POST /jobs/{id}/cancel`: cancels the job and goes back to its page.
pub async fn cancel(
    api: web::Data<dyn ClusterApi>,
    session: Session,
    id: web::Path<String>,
) -> HttpResponse {
    let id = match parse_job_id(&id) {
        Ok(id) => id,
        Err(error) => return error_page(&error, session),
    };
    match api.cancel(id).await {
        Ok(()) => {
            tracing::info!(job_id = %id, "job cancel requested from the UI");
            see_other(&format!("/jobs/{id}"))
        }
        Err(error) => error_page(&Error::from(error), session),
    }
}

/// The query of an output file: `?download=1` asks the browser to save it.
#[derive(Debug, Deserialize)]
pub struct OutputParams {
    download: Option<String>,
}

/// `GET /jobs/{id}/output/{n}`: the job's `n`th output file (0-based, as listed), as UTF-8
/// text shown in the browser, or as an attachment with `?download=1`. An error page (400 for a
/// malformed id or index, 404 for an unknown job, an index past its outputs, or a listed file
/// that is gone or not a regular file) otherwise.
pub async fn output_file(
    api: web::Data<dyn ClusterApi>,
    session: Session,
    path: web::Path<(String, String)>,
    params: web::Query<OutputParams>,
) -> HttpResponse {
    let (id, index) = path.into_inner();
    let download = params
        .download
        .as_deref()
        .is_some_and(|d| !d.is_empty() && d != "0");
    match serve_output(&api, &id, &index, download).await {
        Ok(response) => response,
        Err(error) => error_page(&error, session),
    }
}

async fn serve_output(
    api: &web::Data<dyn ClusterApi>,
    id: &str,
    index: &str,
    download: bool,
) -> Result<HttpResponse, Error> {
    let job = load(api, id).await?;
    let index: usize = index.parse().map_err(|_| Error::InvalidParam {
        name: "n",
        reason: format!("`{index}` is not an output file number"),
    })?;
    let not_found = |what: String| Error::Api(crate::api::ApiError::NotFound(what));
    let file = job
        .output
        .get(index)
        .ok_or_else(|| not_found(format!("job {} has no output file {index}", job.id)))?;
    let opened = tokio::fs::File::open(file).await;
    let (file_handle, len) = match opened {
        Ok(f) => match f.metadata().await {
            Ok(meta) if meta.is_file() => (f, meta.len()),
            _ => {
                return Err(not_found(format!(
                    "output file {index} of job {} is not a file",
                    job.id
                )))
            }
        },
        Err(e) => {
            return Err(not_found(format!(
                "output file {index} of job {} cannot be opened: {}",
                job.id,
                e.kind()
            )))
        }
    };
    let name = file_name(file);
    let disposition = if download { "attachment" } else { "inline" };
    let body = stream::unfold(Some(file_handle), |state| async move {
        let mut f = state?;
        let mut buf = vec![0u8; CHUNK];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(web::Bytes::from(buf)), Some(f)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    let mut response = HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!(
                "{disposition}; filename=\"{}\"; filename*=UTF-8''{}",
                ascii_name(&name),
                encode(&name)
            ),
        ))
        .no_chunking(len)
        .streaming(body);
    secure_headers(&mut response);
    // A file is data, never a page: no script in it may run, even if it holds HTML.
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    Ok(response)
}

/// The last component of a path, for display and for `Content-Disposition`.
pub fn file_name(path: &str) -> String {
    std::path::Path::new(path)
        .file_name()
        .map_or_else(|| path.to_string(), |n| n.to_string_lossy().into_owned())
}

/// A name safe inside a quoted header parameter.
fn ascii_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

async fn load(api: &web::Data<dyn ClusterApi>, id: &str) -> Result<JobView, Error> {
    let id = parse_job_id(id)?;
    Ok(api.job(id, None).await?)
}

/// The sizes of the job's output files, `None` for one that cannot be read.
async fn output_sizes(job: &JobView) -> Vec<Option<u64>> {
    let mut sizes = Vec::with_capacity(job.output.len());
    for path in &job.output {
        sizes.push(
            tokio::fs::metadata(path)
                .await
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len()),
        );
    }
    sizes
}

fn job_section(job: &JobView, session: Session, sizes: &[Option<u64>]) -> Markup {
    let now = now_ms();
    let refresh = (!job.state.is_final()).then(|| format!("/fragments/jobs/{}", job.id));
    let tasks = job.tasks.as_deref().unwrap_or_default();
    let attempts: Vec<&AttemptView> = tasks.iter().flat_map(|t| &t.attempts).collect();
    let failed = attempts.iter().filter(|a| a.state == "failed").count();
    let lost = attempts.iter().filter(|a| a.state == "lost").count();
    html! {
        section #job data-refresh=[refresh] {
            div.titlebar {
                h1 { (job.job) " " (badge(job.state.as_str())) span.id { (job.id) } }
                @if !job.state.is_final() {
                    @if session.logged_in {
                        form.inline method="post" action={ "/jobs/" (job.id) "/cancel" }
                            data-confirm={ "Cancel job " (job.id) "?" } {
                            button.danger type="submit" { "Cancel job" }
                        }
                    } @else {
                        a.btn href={ "/login?next=/jobs/" (job.id) } { "Log in to cancel" }
                    }
                }
            }
            p.subtitle {
                (kind_tag(&job.kind)) " submitted " (time(Some(job.submitted_ms))) " UTC"
                @if let Some(parent) = job.parent {
                    " · fired by " a href={ "/jobs/" (parent) } { "job " (parent) }
                }
            }
            div.cards {
                div.card { div.label { "Progress" }
                    div.value { (progress_bar(job.progress, job.state.as_str())) }
                    div.sub { "tasks done / known" } }
                div.card { div.label { "Duration" }
                    div.value { @match job.started_ms {
                        Some(_) => (duration(job.started_ms, job.finished_ms, now)),
                        None => span.muted { "not started" },
                    } }
                    div.sub { "started " (time(job.started_ms)) } }
                div.card { div.label { "Finished" }
                    div.value { (time_of_day(job.finished_ms)) }
                    div.sub { (date_utc(job.finished_ms)) } }
                div.card { div.label { "Attempts" }
                    div.value { (attempts.len()) }
                    div.sub {
                        @if failed + lost == 0 { "no failures" }
                        @else { (failed) " failed · " (lost) " lost" }
                    } }
            }
            @if let Some(error) = &job.error {
                h2 { "Error" }
                pre.error #job-error { (error) }
            }
            @if let Some(result) = &job.result {
                h2 { "Result" }
                pre #job-result { (pretty_json(result)) }
            }
            @if job.kind != "task" || !job.output.is_empty() {
                h2 { "Output" }
                (outputs(job, sizes))
            }
            h2 { "Counters" }
            (counters(job))
            h2 { "Timeline" span.hint { "one lane per worker, a bar per attempt" } }
            @match timeline(tasks, job.finished_ms, now) {
                Some(svg) => (svg),
                None => div.notice { "No attempt has started yet." },
            }
            @if let Some(summary) = duration_summary(tasks) {
                h2 { "Attempt durations" span.hint { "succeeded attempts, per phase" } }
                (summary)
            }
            h2 { "Tasks" span.hint { (tasks.len()) " tasks, " (attempts.len()) " attempts" } }
            (task_table(tasks, now))
        }
    }
}

fn outputs(job: &JobView, sizes: &[Option<u64>]) -> Markup {
    if job.output.is_empty() {
        return html! {
            p.muted {
                @if job.state.is_final() { "This job wrote no output files." }
                @else { "Output files are listed here once the job has succeeded." }
            }
        };
    }
    html! {
        div.table {
            table.outputs {
                thead { tr { th { "File" } th.num { "Size" } th.opt { "Path" } th {} } }
                tbody {
                    @for (n, path) in job.output.iter().enumerate() {
                        tr {
                            td { a href={ "/jobs/" (job.id) "/output/" (n) } { (file_name(path)) } }
                            td.num { @match sizes.get(n).copied().flatten() {
                                Some(size) => (bytes(size)),
                                None => span.muted { "missing" },
                            } }
                            td.opt.mono.muted.wrap { (path) }
                            td { a href={ "/jobs/" (job.id) "/output/" (n) "?download=1" } { "download" } }
                        }
                    }
                }
            }
        }
    }
}

fn counters(job: &JobView) -> Markup {
    let phases: &[(&str, &jobs::rpc::Counters)] = if job.kind == "task" {
        &[("run", &job.counters.map)]
    } else {
        &[("map", &job.counters.map), ("reduce", &job.counters.reduce)]
    };
    html! {
        div.table {
            table.counters {
                thead {
                    tr {
                        th { "Phase" } th.num { "Records in" } th.num { "Bytes in" }
                        th.num { "Records out" } th.num { "Bytes out" }
                    }
                }
                tbody {
                    @for (phase, c) in phases {
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
fn task_table(tasks: &[TaskView], now: u64) -> Markup {
    if tasks.is_empty() {
        return html! { div.notice { "No tasks planned yet." } };
    }
    let shown = &tasks[..tasks.len().min(MAX_TASK_ROWS)];
    html! {
        div.table {
            table.tasks {
                thead {
                    tr {
                        th { "Task" } th { "State" } th.num { "Attempt" }
                        th { "Worker" } th.opt { "Started (UTC)" } th.num { "Duration" }
                        th { "Attempt state" } th { "Error" }
                    }
                }
                tbody {
                    @for task in shown {
                        @let span = task.attempts.len().max(1);
                        tr {
                            td rowspan=(span) { (task.kind) " " (task.index)
                                span.sub.mono { (task.id) } }
                            td rowspan=(span) { (badge(task.state.as_str())) }
                            @match task.attempts.first() {
                                Some(first) => (attempt_cells(first, now)),
                                None => td.muted colspan="6" { "not launched yet" },
                            }
                        }
                        @for attempt in task.attempts.iter().skip(1) {
                            tr.attempt { (attempt_cells(attempt, now)) }
                        }
                    }
                }
            }
        }
        @if tasks.len() > shown.len() {
            p.muted { "Showing the first " (shown.len()) " of " (tasks.len())
                " tasks; the JSON API lists them all." }
        }
    }
}

fn attempt_cells(attempt: &AttemptView, now: u64) -> Markup {
    html! {
        td.num { "#" (attempt.attempt) }
        td { (attempt.worker) }
        td.opt { (time(attempt.started_ms)) }
        td.num { (duration(attempt.started_ms, attempt.finished_ms, now)) }
        td { (badge(&attempt.state)) }
        td.err { @if let Some(error) = &attempt.error { (error) } }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::{header, StatusCode};
    use actix_web::test;
    use jobs::{JobId, JobState};

    use crate::api::JobView;
    use crate::testing::{app, login_cookie, sample_job, sample_task, FakeCluster, SECRET};

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
        job.error = Some("<script>alert('x')</script> & more\nsecond line of the trace".into());
        job.output = vec!["out/part-r-00000".into()];
        job.tasks = Some(vec![sample_task()]);
        job
    }

    #[actix_web::test]
    async fn the_job_page_shows_tasks_and_escapes_the_error_in_full() {
        let (status, page) = get(FakeCluster::with_jobs(vec![failed_job()]), "/jobs/77").await;
        assert_eq!(status, StatusCode::OK);
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(page.contains(
            "&lt;script&gt;alert('x')&lt;/script&gt; &amp; more\nsecond line of the trace"
        ));
        // the task with both attempts: worker, state, error, duration
        assert!(
            page.contains("<span class=\"sub mono\">900</span>"),
            "{page}"
        );
        assert!(page.contains("<td>w1</td>") && page.contains("<td>w2</td>"));
        assert!(page.contains("disk full"));
        assert!(page.contains(r#"class="badge s-failed""#));
        assert!(page.contains("400 ms"));
        assert!(page.contains("rowspan=\"2\""));
        assert!(page.contains("1 failed · 0 lost"));
        // counters and spec
        assert!(page.contains("Records in") && page.contains("100 B"));
        assert!(
            page.contains("&quot;reducers&quot;: 2"),
            "the spec, pretty-printed"
        );
        // the timeline: one lane per worker of the attempts
        assert_eq!(page.matches(r#"<g class="lane""#).count(), 2);
        // a finished job neither polls nor offers to cancel
        assert!(!page.contains("data-refresh=\""), "{page}");
        assert!(!page.contains("Cancel job") && !page.contains("Log in to cancel"));
    }

    #[actix_web::test]
    async fn output_files_are_linked_by_index() {
        let (_, page) = get(FakeCluster::with_jobs(vec![failed_job()]), "/jobs/77").await;
        assert!(
            page.contains(r#"<a href="/jobs/77/output/0">part-r-00000</a>"#),
            "{page}"
        );
        assert!(page.contains(r#"href="/jobs/77/output/0?download=1""#));
        assert!(page.contains("missing"), "the file does not exist here");
    }

    #[actix_web::test]
    async fn a_running_job_page_refreshes_itself_and_offers_cancel_to_those_logged_in() {
        let fake = FakeCluster::with_jobs(vec![sample_job(78, JobState::Running)]);
        let (_, page) = get(fake.clone(), "/jobs/78").await;
        assert!(
            page.contains(r#"data-refresh="/fragments/jobs/78""#),
            "{page}"
        );
        assert!(page.contains("No tasks planned yet"));
        assert!(page.contains("No attempt has started yet"));
        assert!(page.contains(r#"href="/login?next=/jobs/78""#), "{page}");
        assert!(!page.contains(r#"action="/jobs/78/cancel""#));

        let app = app(fake.clone()).await;
        let req = test::TestRequest::get()
            .uri("/fragments/jobs/78")
            .insert_header((header::COOKIE, login_cookie()))
            .to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::OK);
        let fragment = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
        assert!(fragment.starts_with("<section id=\"job\""), "{fragment}");
        assert!(
            fragment.contains(r#"action="/jobs/78/cancel""#),
            "{fragment}"
        );
        assert!(!fragment.contains("<html"));
    }

    #[actix_web::test]
    async fn the_cancel_form_needs_a_login_and_then_cancels() {
        let fake = FakeCluster::with_jobs(vec![sample_job(78, JobState::Running)]);
        let app = app(fake.clone()).await;
        let bare = test::TestRequest::post()
            .uri("/jobs/78/cancel")
            .to_request();
        let res = test::call_service(&app, bare).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        let body = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
        assert!(body.contains(r#"href="/login"#), "a way to log in: {body}");
        assert!(fake.state().cancelled.is_empty());

        let with_cookie = test::TestRequest::post()
            .uri("/jobs/78/cancel")
            .insert_header((header::COOKIE, login_cookie()))
            .to_request();
        let res = test::call_service(&app, with_cookie).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(res.headers().get(header::LOCATION).unwrap(), "/jobs/78");
        assert_eq!(fake.state().cancelled, [JobId(78)]);

        // the bearer header works on the form route too; a cookie from another origin does not
        let bearer = test::TestRequest::post()
            .uri("/jobs/78/cancel")
            .insert_header((header::AUTHORIZATION, format!("Bearer {SECRET}")))
            .to_request();
        assert_eq!(
            test::call_service(&app, bearer).await.status(),
            StatusCode::SEE_OTHER
        );
        let foreign = test::TestRequest::post()
            .uri("/jobs/78/cancel")
            .insert_header((header::HOST, "127.0.0.1:8080"))
            .insert_header((header::ORIGIN, "http://127.0.0.1:9999"))
            .insert_header((header::COOKIE, login_cookie()))
            .to_request();
        assert_eq!(
            test::call_service(&app, foreign).await.status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(fake.state().cancelled.len(), 2);
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
        let (status, _) = get(FakeCluster::new(), "/fragments/jobs/5").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[actix_web::test]
    async fn output_files_are_served_only_from_the_jobs_own_list() {
        let dir = std::env::temp_dir().join(format!("web-output-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let part = dir.join("part-r-00000");
        std::fs::write(&part, "apple\t3\n<b>bold</b>\t1\n").unwrap();
        let secret = dir.join("secret.txt");
        std::fs::write(&secret, "do not serve").unwrap();
        let mut job = sample_job(80, JobState::Succeeded);
        job.output = vec![
            part.to_string_lossy().into_owned(),
            dir.to_string_lossy().into_owned(),
        ];
        let fake = FakeCluster::with_jobs(vec![job]);
        let app = app(fake).await;
        let fetch = |uri: &str| test::TestRequest::get().uri(uri).to_request();

        let res = test::call_service(&app, fetch("/jobs/80/output/0")).await;
        assert_eq!(res.status(), StatusCode::OK);
        let headers = res.headers().clone();
        assert_eq!(
            headers.get(header::CONTENT_TYPE).unwrap(),
            "text/plain; charset=utf-8"
        );
        assert_eq!(
            headers.get(header::X_CONTENT_TYPE_OPTIONS).unwrap(),
            "nosniff"
        );
        assert!(headers
            .get(header::CONTENT_SECURITY_POLICY)
            .unwrap()
            .to_str()
            .unwrap()
            .contains("sandbox"));
        assert!(headers
            .get(header::CONTENT_DISPOSITION)
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("inline; filename=\"part-r-00000\""));
        let body = test::read_body(res).await;
        assert_eq!(&body[..], b"apple\t3\n<b>bold</b>\t1\n");

        let res = test::call_service(&app, fetch("/jobs/80/output/0?download=1")).await;
        assert!(res
            .headers()
            .get(header::CONTENT_DISPOSITION)
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("attachment"));

        // past the list, a listed path that is a directory, paths and junk instead of an index
        for (uri, status) in [
            ("/jobs/80/output/2", StatusCode::NOT_FOUND),
            ("/jobs/80/output/1", StatusCode::NOT_FOUND),
            ("/jobs/80/output/..%2Fsecret.txt", StatusCode::BAD_REQUEST),
            ("/jobs/80/output/%2Ftmp", StatusCode::BAD_REQUEST),
            ("/jobs/80/output/-1", StatusCode::BAD_REQUEST),
            ("/jobs/81/output/0", StatusCode::NOT_FOUND),
        ] {
            let res = test::call_service(&app, fetch(uri)).await;
            assert_eq!(res.status(), status, "{uri}");
            let body = test::read_body(res).await;
            assert!(
                !String::from_utf8_lossy(&body).contains("do not serve"),
                "{uri}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! The submit page, `GET /submit?kind=mapreduce|task`: a form per job kind whose job names
//! are those the live workers registered, and `POST /submit`, which turns the form into a
//! spec, validates it as `POST /api/jobs` does (`JobSpec::from_json`, then the master's own
//! checks: a job some worker serves, inputs that exist, a free output directory) and goes to
//! the new job's page, or shows the form again with each message next to the field it is about.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use jobs::JobSpec;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::api::{ApiError, ClusterApi, ClusterView};
use crate::auth::Session;
use crate::error::Error;
use crate::ui::layout::{html_response, page, see_other, Nav};

/// The kinds the form offers, with their tab labels.
pub const FORM_KINDS: [(&str, &str); 2] = [("mapreduce", "MapReduce"), ("task", "Task")];

/// The query of `GET /submit`.
#[derive(Debug, Default, Deserialize)]
pub struct SubmitQuery {
    kind: Option<String>,
    job: Option<String>,
}

/// The fields of both forms; each kind uses its own.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SubmitForm {
    kind: Option<String>,
    job: Option<String>,
    input: Option<String>,
    output: Option<String>,
    reducers: Option<String>,
    params: Option<String>,
    payload: Option<String>,
    key: Option<String>,
    max_attempts: Option<String>,
    timeout_ms: Option<String>,
}

/// What went wrong with a submission: messages by field name, and one for the whole form.
#[derive(Debug, Default)]
pub struct Problems {
    fields: BTreeMap<&'static str, String>,
    general: Option<String>,
}

impl Problems {
    fn field(&mut self, name: &'static str, message: impl Into<String>) {
        self.fields.entry(name).or_insert_with(|| message.into());
    }

    fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.general.is_none()
    }

    /// Files a message from the spec parser or the master under the field it names.
    fn add(&mut self, message: String) {
        match field_of(&message) {
            Some(field) => self.field(field, message),
            None => self.general = Some(message),
        }
    }
}

const FIELDS: [&str; 9] = [
    "params",
    "payload",
    "reducers",
    "input",
    "output",
    "max_attempts",
    "timeout_ms",
    "key",
    "job",
];

/// Which form field a validation message is about, if any: a field named in backticks, or
/// the wording of the master's checks (`input `x` matches no readable file`, `output
/// directory ... is not empty`, `invalid params for ...`, `unknown mapreduce job ...`).
pub fn field_of(message: &str) -> Option<&'static str> {
    if let Some(field) = FIELDS.iter().find(|f| message.contains(&format!("`{f}`"))) {
        return Some(field);
    }
    let lower = message.to_ascii_lowercase();
    if lower.starts_with("unknown field") || lower.starts_with("malformed") {
        None
    } else if lower.starts_with("input") || lower.contains("the input") {
        Some("input")
    } else if lower.contains("output") {
        Some("output")
    } else if lower.contains("params") {
        Some("params")
    } else if lower.contains(" job `") || lower.contains("no live worker") {
        Some("job")
    } else {
        None
    }
}

fn kind_of(kind: Option<&str>) -> &'static str {
    match kind {
        Some("task") => "task",
        _ => "mapreduce",
    }
}

/// `GET /submit`: the form of one kind.
pub async fn submit_page(
    api: web::Data<dyn ClusterApi>,
    session: Session,
    query: web::Query<SubmitQuery>,
) -> HttpResponse {
    let kind = kind_of(query.kind.as_deref());
    let form = SubmitForm {
        kind: Some(kind.to_string()),
        job: query.job.clone(),
        reducers: Some("2".into()),
        params: Some("{}".into()),
        payload: Some("{}".into()),
        ..SubmitForm::default()
    };
    let cluster = api.cluster().await;
    html_response(
        StatusCode::OK,
        submit_body(session, kind, &form, &Problems::default(), cluster.as_ref()),
    )
}

/// `POST /submit`: submits the form's spec and goes to the job, or shows the problems (400).
pub async fn submit(
    api: web::Data<dyn ClusterApi>,
    session: Session,
    form: web::Form<SubmitForm>,
) -> HttpResponse {
    let form = form.into_inner();
    let kind = kind_of(form.kind.as_deref());
    let mut problems = Problems::default();
    if let Some(spec) = build_spec(kind, &form, &mut problems) {
        match JobSpec::from_value(spec.clone()) {
            Err(error) => problems.add(error.to_string()),
            Ok(spec) => match api.submit(spec).await {
                Ok(id) => {
                    tracing::info!(job_id = %id, "job submitted from the UI");
                    return see_other(&format!("/jobs/{id}"));
                }
                Err(ApiError::BadRequest(message)) => problems.add(message),
                Err(other) => problems.general = Some(Error::from(other).to_string()),
            },
        }
    }
    let cluster = api.cluster().await;
    html_response(
        StatusCode::BAD_REQUEST,
        submit_body(session, kind, &form, &problems, cluster.as_ref()),
    )
}

fn text(value: &Option<String>) -> &str {
    value.as_deref().map(str::trim).unwrap_or_default()
}

/// The spec the form describes, or `None` with the problems found before asking anyone.
fn build_spec(kind: &str, form: &SubmitForm, problems: &mut Problems) -> Option<Value> {
    let mut spec = Map::new();
    spec.insert("kind".into(), Value::from(kind));
    let job = text(&form.job);
    if job.is_empty() {
        problems.field("job", "Choose a job.");
    }
    spec.insert("job".into(), Value::from(job));
    let json_field = |name: &'static str, value: &Option<String>, problems: &mut Problems| {
        let raw = text(value);
        if raw.is_empty() {
            return Some(Value::Null);
        }
        match serde_json::from_str::<Value>(raw) {
            Ok(value) => Some(value),
            Err(e) => {
                problems.field(name, format!("This is not valid JSON: {e}."));
                None
            }
        }
    };
    let number_field = |name: &'static str, value: &Option<String>, problems: &mut Problems| {
        let raw = text(value);
        if raw.is_empty() {
            return None;
        }
        match raw.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                problems.field(name, format!("`{raw}` is not a whole number."));
                None
            }
        }
    };
    if kind == "mapreduce" {
        let input: Vec<Value> = text(&form.input)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(Value::from)
            .collect();
        if input.is_empty() {
            problems.field("input", "Give at least one input path or glob.");
        }
        spec.insert("input".into(), Value::Array(input));
        let output = text(&form.output);
        if output.is_empty() {
            problems.field("output", "Give an output directory.");
        }
        spec.insert("output".into(), Value::from(output));
        match number_field("reducers", &form.reducers, problems) {
            Some(n) => {
                spec.insert("reducers".into(), Value::from(n));
            }
            None if text(&form.reducers).is_empty() => {
                problems.field("reducers", "Give the number of reducers.");
            }
            None => {}
        }
        match json_field("params", &form.params, problems) {
            Some(Value::Null) => {}
            Some(params) => {
                spec.insert("params".into(), params);
            }
            None => {}
        }
    } else {
        if let Some(payload) = json_field("payload", &form.payload, problems) {
            spec.insert("payload".into(), payload);
        }
        let key = text(&form.key);
        if !key.is_empty() {
            spec.insert("key".into(), Value::from(key));
        }
    }
    if let Some(n) = number_field("max_attempts", &form.max_attempts, problems) {
        spec.insert("max_attempts".into(), Value::from(n));
    }
    if let Some(n) = number_field("timeout_ms", &form.timeout_ms, problems) {
        spec.insert("timeout_ms".into(), Value::from(n));
    }
    problems.is_empty().then_some(Value::Object(spec))
}

/// The job names of `kind` that live workers serve, sorted.
pub fn served_names(cluster: &ClusterView, kind: &str) -> Vec<String> {
    let mut names: Vec<String> = cluster
        .workers
        .iter()
        .filter(|w| w.alive)
        .flat_map(|w| {
            // An older master sends names without kinds: offer them for every kind.
            let typed = w
                .served
                .iter()
                .filter(|s| s.kind == kind)
                .map(|s| s.name.clone());
            let untyped = w
                .served
                .is_empty()
                .then(|| w.jobs.clone())
                .into_iter()
                .flatten();
            typed.chain(untyped).collect::<Vec<_>>()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

fn submit_body(
    session: Session,
    kind: &str,
    form: &SubmitForm,
    problems: &Problems,
    cluster: Result<&ClusterView, &ApiError>,
) -> Markup {
    let names = cluster.map(|c| served_names(c, kind)).unwrap_or_default();
    let field = |name: &'static str, label: &str, control: Markup, help: &str| {
        let error = problems.fields.get(name);
        html! {
            div.field.invalid[error.is_some()] #{ "field-" (name) } {
                label for=(name) { (label) }
                (control)
                @if let Some(error) = error { div.error role="alert" { (error) } }
                @if !help.is_empty() { div.help { (help) } }
            }
        }
    };
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    let chosen = text(&form.job).to_string();
    let job_control = if names.is_empty() {
        html! { input #job type="text" name="job" value=(chosen) required; }
    } else {
        html! {
            select #job name="job" required {
                @for name in &names {
                    option value=(name) selected[*name == chosen] { (name) }
                }
                @if !chosen.is_empty() && !names.contains(&chosen) {
                    option value=(chosen) selected { (chosen) " (no live worker serves it)" }
                }
            }
        }
    };
    let job_help = match cluster {
        Ok(_) if names.is_empty() => "No live worker serves a job of this kind right now.",
        Ok(_) => "The jobs that live workers serve.",
        Err(_) => "The cluster cannot be asked which jobs workers serve right now.",
    };
    page(
        "Submit a job",
        Nav::Submit,
        session,
        html! {
            h1 { "Submit a job" }
            p.subtitle { "The same checks as " code { "POST /api/jobs" } "; problems show next to their field." }
            @if !session.logged_in {
                div.flash.bad {
                    "Submitting takes the cluster secret. "
                    a href={ "/login?next=" (crate::ui::job_list::encode(&format!("/submit?kind={kind}"))) } { "Log in first" } "."
                }
            }
            nav.tabs aria-label="Job kind" style="margin-bottom:1rem" {
                @for (k, label) in FORM_KINDS {
                    a class=[(k == kind).then_some("active")] href={ "/submit?kind=" (k) } { (label) }
                }
            }
            @if let Some(general) = &problems.general {
                div.flash.bad role="alert" #form-error { (general) }
            }
            @if let Err(error) = cluster {
                div.flash.bad { "Cluster state unavailable: " (Error::from(error.clone()).to_string()) }
            }
            form.form #submit-form method="post" action="/submit" {
                input type="hidden" name="kind" value=(kind);
                (field("job", "Job", job_control, job_help))
                @if kind == "mapreduce" {
                    (field("input", "Input", html! {
                        textarea #input name="input" rows="3" placeholder="examples/data/*.txt" required { (value(&form.input)) }
                    }, "One path or glob per line: absolute, or relative to the directory the master runs in."))
                    (field("output", "Output directory", html! {
                        input #output type="text" name="output" value=(value(&form.output)) placeholder="data/out/wordcount" required;
                    }, "Must not exist yet, or be empty. Each reducer writes one part-r-NNNNN file there."))
                    div.row2 {
                        (field("reducers", "Reducers", html! {
                            input #reducers type="number" name="reducers" min="1" value=(value(&form.reducers)) required;
                        }, ""))
                        (field("max_attempts", "Max attempts per task", html! {
                            input #max_attempts type="number" name="max_attempts" min="1" placeholder="4" value=(value(&form.max_attempts));
                        }, ""))
                    }
                    (field("params", "Params (JSON object)", html! {
                        textarea #params name="params" rows="3" { (value(&form.params)) }
                    }, "Job-specific parameters, e.g. {\"pattern\": \"ERROR\"} for grep."))
                } @else {
                    (field("payload", "Payload (JSON)", html! {
                        textarea #payload name="payload" rows="5" { (value(&form.payload)) }
                    }, "What the task handler is given; its result shows on the job page."))
                    div.row2 {
                        (field("key", "Routing key", html! {
                            input #key type="text" name="key" value=(value(&form.key));
                        }, "Optional: tasks with the same key go to the same worker."))
                        (field("max_attempts", "Max attempts", html! {
                            input #max_attempts type="number" name="max_attempts" min="1" placeholder="4" value=(value(&form.max_attempts));
                        }, ""))
                    }
                }
                (field("timeout_ms", "Timeout per attempt (ms)", html! {
                    input #timeout_ms type="number" name="timeout_ms" min="1" placeholder="none" value=(value(&form.timeout_ms));
                }, ""))
                div.actions {
                    button.primary #submit-job type="submit" { "Submit" }
                    a href="/jobs" { "Cancel" }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use actix_web::http::{header, StatusCode};
    use actix_web::test;

    use crate::testing::{app, login_cookie, FakeCluster};

    async fn post_form(
        fake: &FakeCluster,
        fields: &[(&str, &str)],
    ) -> (StatusCode, Option<String>, String) {
        let app = app(fake.clone()).await;
        let req = test::TestRequest::post()
            .uri("/submit")
            .insert_header((header::COOKIE, login_cookie()))
            .set_form(fields)
            .to_request();
        let res = test::call_service(&app, req).await;
        let status = res.status();
        let location = res
            .headers()
            .get(header::LOCATION)
            .map(|l| l.to_str().unwrap().to_string());
        (
            status,
            location,
            String::from_utf8(test::read_body(res).await.to_vec()).unwrap(),
        )
    }

    async fn get(uri: &str, cookie: bool) -> String {
        let app = app(FakeCluster::new()).await;
        let mut req = test::TestRequest::get().uri(uri);
        if cookie {
            req = req.insert_header((header::COOKIE, login_cookie()));
        }
        String::from_utf8(
            test::call_and_read_body(&app, req.to_request())
                .await
                .to_vec(),
        )
        .unwrap()
    }

    #[actix_web::test]
    async fn each_form_offers_the_names_live_workers_serve_for_its_kind() {
        let page = get("/submit", true).await;
        assert!(page.contains(r#"<option value="wordcount">"#), "{page}");
        assert!(!page.contains(r#"<option value="echo">"#), "echo is a task");
        assert!(
            !page.contains(r#"<option value="sleep">"#),
            "only the dead worker serves sleep"
        );
        assert!(page.contains(r#"name="input""#) && page.contains(r#"name="reducers""#));
        assert!(!page.contains("Log in first"));
        let page = get("/submit?kind=task", true).await;
        assert!(page.contains(r#"<option value="echo">"#), "{page}");
        assert!(!page.contains(r#"<option value="wordcount">"#));
        assert!(page.contains(r#"name="payload""#) && !page.contains(r#"name="input""#));
        assert!(page.contains(r#"<a class="active" href="/submit?kind=task">"#));
    }

    #[actix_web::test]
    async fn logged_out_visitors_are_asked_to_log_in() {
        let page = get("/submit", false).await;
        assert!(page.contains("Log in first"), "{page}");
        assert!(
            page.contains(r#"href="/login?next=%2Fsubmit%3Fkind%3Dmapreduce""#),
            "{page}"
        );
    }

    #[actix_web::test]
    async fn a_valid_form_submits_the_spec_and_goes_to_the_job() {
        let fake = FakeCluster::new();
        let (status, location, _) = post_form(
            &fake,
            &[
                ("kind", "mapreduce"),
                ("job", "wordcount"),
                ("input", "in/a.txt\n\n in/*.md \n"),
                ("output", "out/wc"),
                ("reducers", "3"),
                ("params", ""),
                ("max_attempts", "2"),
                ("timeout_ms", ""),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(location.as_deref(), Some("/jobs/7000000000000000001"));
        let spec = fake.state().submitted[0].to_json();
        assert_eq!(spec["input"], serde_json::json!(["in/a.txt", "in/*.md"]));
        assert_eq!(spec["reducers"], serde_json::json!(3));
        assert_eq!(spec["max_attempts"], serde_json::json!(2));

        let (status, _, _) = post_form(
            &fake,
            &[
                ("kind", "task"),
                ("job", "echo"),
                ("payload", r#"{"x": [1, 2]}"#),
                ("key", "k1"),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let spec = fake.state().submitted[1].to_json();
        assert_eq!(spec["payload"], serde_json::json!({"x": [1, 2]}));
        assert_eq!(spec["key"], serde_json::json!("k1"));
    }

    #[actix_web::test]
    async fn problems_show_next_to_their_fields_with_the_values_kept() {
        let fake = FakeCluster::new();
        let (status, _, page) = post_form(
            &fake,
            &[
                ("kind", "mapreduce"),
                ("job", "wordcount"),
                ("input", ""),
                ("output", "out/<x>"),
                ("reducers", "two"),
                ("params", "{not json"),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(fake.state().submitted.is_empty());
        let error_in = |field: &str| {
            let at = page
                .find(&format!(r#"id="field-{field}""#))
                .unwrap_or_else(|| panic!("{field}: {page}"));
            let rest = &page[at..];
            let end = rest[1..].find("id=\"field-").map_or(rest.len(), |e| e + 1);
            rest[..end].to_string()
        };
        assert!(error_in("input").contains("at least one input"), "{page}");
        assert!(error_in("reducers").contains("`two` is not a whole number"));
        assert!(error_in("params").contains("not valid JSON"));
        assert!(page.contains(r#"class="field invalid" id="field-params""#));
        // what was typed stays, escaped
        assert!(page.contains(r#"value="out/&lt;x&gt;""#), "{page}");
        assert!(page.contains(">{not json</textarea>"));
    }

    #[actix_web::test]
    async fn the_masters_refusals_land_on_their_field() {
        let fake = FakeCluster::new();
        fake.state().reject = Some("input `nope/*.txt` matches no readable file".into());
        let (status, _, page) = post_form(
            &fake,
            &[
                ("kind", "mapreduce"),
                ("job", "wordcount"),
                ("input", "nope/*.txt"),
                ("output", "out"),
                ("reducers", "1"),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let at = page.find(r#"id="field-input""#).unwrap();
        let next = page.find(r#"id="field-output""#).unwrap();
        assert!(
            page[at..next].contains("matches no readable file"),
            "{page}"
        );
        // a spec error from the parser: zero reducers
        let (_, _, page) = post_form(
            &FakeCluster::new(),
            &[
                ("kind", "mapreduce"),
                ("job", "wordcount"),
                ("input", "a"),
                ("output", "o"),
                ("reducers", "0"),
            ],
        )
        .await;
        let at = page.find(r#"id="field-reducers""#).unwrap();
        assert!(page[at..].contains("`reducers`"), "{page}");
    }

    #[actix_web::test]
    async fn submitting_without_a_login_is_refused() {
        let fake = FakeCluster::new();
        let app = app(fake.clone()).await;
        let req = test::TestRequest::post()
            .uri("/submit")
            .set_form([("kind", "task"), ("job", "echo"), ("payload", "1")])
            .to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert!(fake.state().submitted.is_empty());
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn messages_find_their_fields() {
        for (message, field) in [
            (
                "`reducers` must be a non-negative integer",
                Some("reducers"),
            ),
            ("input `x/*.txt` matches no readable file", Some("input")),
            (
                "output directory `/o` exists and is not empty",
                Some("output"),
            ),
            ("invalid params for `grep`: missing pattern", Some("params")),
            (
                "unknown mapreduce job `nope`: no live worker serves it (served: wordcount)",
                Some("job"),
            ),
            ("unknown field `paylod` in a task spec", None),
            ("malformed JSON: eof", None),
            ("the input needs more than 100000 map tasks", Some("input")),
        ] {
            assert_eq!(field_of(message), field, "{message}");
        }
    }
}

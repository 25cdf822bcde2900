//! The jobs API: submit, list, look up (with long polling) and cancel.
//!
//! Inputs are validated here so the master only sees well-formed requests: the spec is parsed
//! with `JobSpec::from_json` from the raw body whatever its content type, ids in the path must
//! be decimal numbers, and unknown query parameters are refused (a typo must not silently widen
//! a filter).

use std::time::Duration;

use actix_web::{web, HttpResponse};
use futures::StreamExt;
use jobs::{JobId, JobSpec, JobState};
use serde::{Deserialize, Serialize};

use crate::api::{ClusterApi, JobQuery, DEFAULT_LIMIT, MAX_LIMIT};
use crate::error::{Error, Result};
use crate::json;

/// The largest request body accepted (a job spec is a few hundred bytes).
pub const MAX_BODY: usize = 1 << 20;
/// The longest a `GET /api/jobs/{id}?wait_ms=` long poll may wait.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// The body of `201 Created` after a submit, and of a cancel.
#[derive(Debug, Serialize, Deserialize)]
pub struct JobRef {
    /// The job's id, as a decimal string.
    #[serde(with = "json::id")]
    pub id: JobId,
}

/// The query string of `GET /api/jobs`; every value is checked by hand for a precise message.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    state: Option<String>,
    kind: Option<String>,
    limit: Option<String>,
    before: Option<String>,
}

/// The query string of `GET /api/jobs/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobParams {
    wait_ms: Option<String>,
}

/// Parses a job id from a path segment.
///
/// # Errors
/// [`Error::InvalidId`] if it is not a decimal number.
pub fn parse_job_id(text: &str) -> Result<JobId> {
    text.parse().map_err(|_| Error::InvalidId {
        text: text.to_string(),
    })
}

impl ListParams {
    /// Turns the query string into a [`JobQuery`].
    ///
    /// # Errors
    /// [`Error::InvalidParam`] naming the first bad value.
    pub fn into_query(self) -> Result<JobQuery> {
        let state = match self.state.as_deref() {
            None | Some("") => None,
            Some(text) => Some(
                text.parse::<JobState>()
                    .map_err(|reason| Error::InvalidParam {
                        name: "state",
                        reason: format!(
                            "{reason}; expected one of {}",
                            JobState::ALL.map(JobState::as_str).join(", ")
                        ),
                    })?,
            ),
        };
        let limit = match self.limit.as_deref() {
            None | Some("") => DEFAULT_LIMIT,
            Some(text) => match text.parse::<usize>() {
                Ok(0) | Err(_) => {
                    return Err(Error::InvalidParam {
                        name: "limit",
                        reason: format!("`{text}` is not a positive integer"),
                    })
                }
                Ok(n) => n.min(MAX_LIMIT),
            },
        };
        let before = match self.before.as_deref() {
            None | Some("") => None,
            Some(text) => Some(text.parse().map_err(|_| Error::InvalidParam {
                name: "before",
                reason: format!("`{text}` is not a job id"),
            })?),
        };
        Ok(JobQuery {
            state,
            kind: self.kind.filter(|kind| !kind.is_empty()),
            limit,
            before,
        })
    }
}

/// Reads a request body of at most `limit` bytes.
async fn read_body(mut payload: web::Payload, limit: usize) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| match e {
            actix_web::error::PayloadError::Overflow => Error::PayloadTooLarge { limit },
            other => Error::Payload {
                reason: other.to_string(),
            },
        })?;
        if body.len() + chunk.len() > limit {
            return Err(Error::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `POST /api/jobs` with a job spec → 201 `{"id": "..."}`. With `?wait_ms=N` it also waits
/// (like `GET /api/jobs/{id}?wait_ms=N`) and answers 201 with the whole job, which has ended
/// unless N ms passed first: submit-and-wait in one round trip.
///
/// # Errors
/// 400 naming what is wrong with the spec, 413 for a body over [`MAX_BODY`], or what the master
/// answers.
pub async fn submit_job(
    api: web::Data<dyn ClusterApi>,
    params: web::Query<JobParams>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let wait = params.wait()?;
    let body = read_body(payload, MAX_BODY).await?;
    let text = std::str::from_utf8(&body).map_err(|e| {
        Error::InvalidSpec(jobs::Error::InvalidSpec {
            reason: format!("malformed JSON: the body is not UTF-8 ({e})"),
        })
    })?;
    let spec = JobSpec::from_json(text).map_err(Error::InvalidSpec)?;
    let id = api.submit(spec).await?;
    tracing::debug!(job_id = %id, "job submitted");
    match wait {
        Some(wait) => Ok(HttpResponse::Created().json(api.job(id, Some(wait)).await?)),
        None => Ok(HttpResponse::Created().json(JobRef { id })),
    }
}

/// `GET /api/jobs?state=&kind=&limit=&before=` → `{"jobs": [...], "next_before", "total"}`,
/// newest first.
///
/// # Errors
/// 400 for a bad parameter, or what the master answers.
pub async fn list_jobs(
    api: web::Data<dyn ClusterApi>,
    params: web::Query<ListParams>,
) -> Result<HttpResponse> {
    let query = params.into_inner().into_query()?;
    Ok(HttpResponse::Ok().json(api.list_jobs(query).await?))
}

/// `GET /api/jobs/{id}?wait_ms=N` → the job with its tasks; with `wait_ms`, answers once the job
/// has ended or after N ms (at most [`MAX_WAIT`]).
///
/// # Errors
/// 400 for a non-numeric id or `wait_ms`, 404 for an unknown job, or what the master answers.
pub async fn get_job(
    api: web::Data<dyn ClusterApi>,
    id: web::Path<String>,
    params: web::Query<JobParams>,
) -> Result<HttpResponse> {
    let id = parse_job_id(&id)?;
    Ok(HttpResponse::Ok().json(api.job(id, params.wait()?).await?))
}

impl JobParams {
    /// The `wait_ms` parameter as a duration (`None` for absent or 0), capped at [`MAX_WAIT`].
    ///
    /// # Errors
    /// [`Error::InvalidParam`] if it is not a number.
    pub fn wait(&self) -> Result<Option<Duration>> {
        match self.wait_ms.as_deref() {
            None | Some("") => Ok(None),
            Some(text) => match text.parse::<u64>() {
                Ok(0) => Ok(None),
                Ok(ms) => Ok(Some(Duration::from_millis(ms).min(MAX_WAIT))),
                Err(_) => Err(Error::InvalidParam {
                    name: "wait_ms",
                    reason: format!("`{text}` is not a number of milliseconds"),
                }),
            },
        }
    }
}

/// `POST /api/jobs/{id}/cancel` → 200 `{"id": "..."}`.
///
/// # Errors
/// 400 for a non-numeric id, 404 for an unknown job, 409 if it already ended.
pub async fn cancel_job(
    api: web::Data<dyn ClusterApi>,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    let id = parse_job_id(&id)?;
    api.cancel(id).await?;
    tracing::info!(job_id = %id, "job cancel requested");
    Ok(HttpResponse::Ok().json(JobRef { id }))
}

#[cfg(test)]
mod tests {
    use actix_web::http::{header, StatusCode};
    use actix_web::test;
    use serde_json::{json, Value};

    use crate::testing::{app, sample_job, FakeCluster, SECRET};

    use super::*;

    const ECHO: &str = r#"{"kind": "task", "job": "echo", "payload": {"x": 1}}"#;

    async fn send(fake: &FakeCluster, req: test::TestRequest) -> (StatusCode, Value) {
        let app = app(fake.clone()).await;
        let res = test::call_service(&app, req.to_request()).await;
        let status = res.status();
        let body = test::read_body(res).await;
        let value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {body:?}"));
        (status, value)
    }

    fn post(uri: &str, body: &str) -> test::TestRequest {
        test::TestRequest::post()
            .uri(uri)
            .insert_header((header::AUTHORIZATION, format!("Bearer {SECRET}")))
            .set_payload(body.to_string())
    }

    fn error_of(body: &Value) -> &str {
        body["error"].as_str().expect("an error message")
    }

    #[actix_web::test]
    async fn submitting_needs_the_secret() {
        let fake = FakeCluster::new();
        let bare = test::TestRequest::post().uri("/api/jobs").set_payload(ECHO);
        let (status, body) = send(&fake, bare).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(error_of(&body).contains("missing cluster secret"), "{body}");
        let wrong = test::TestRequest::post()
            .uri("/api/jobs")
            .insert_header((header::AUTHORIZATION, "Bearer nope"))
            .set_payload(ECHO);
        let (status, body) = send(&fake, wrong).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(error_of(&body).contains("wrong cluster secret"), "{body}");
        assert!(fake.state().submitted.is_empty());
    }

    #[actix_web::test]
    async fn submit_and_wait_answers_with_the_job() {
        let fake = FakeCluster::new();
        let request = test::TestRequest::post()
            .uri("/api/jobs?wait_ms=500")
            .insert_header((header::AUTHORIZATION, format!("Bearer {SECRET}")))
            .set_payload(ECHO);
        let (status, body) = send(&fake, request).await;
        assert_eq!(status, StatusCode::CREATED);
        assert!(body["id"].is_string(), "{body}");
        assert!(
            body["state"].is_string() && body["progress"].is_object(),
            "the whole job: {body}"
        );
        let bad = test::TestRequest::post()
            .uri("/api/jobs?wait_ms=soon")
            .insert_header((header::AUTHORIZATION, format!("Bearer {SECRET}")))
            .set_payload(ECHO);
        let (status, body) = send(&fake, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(error_of(&body).contains("wait_ms"), "{body}");
    }

    #[actix_web::test]
    async fn a_valid_spec_is_created_with_a_string_id() {
        let fake = FakeCluster::new();
        // no content type: the body is parsed as a spec whatever it is labelled
        let (status, body) = send(&fake, post("/api/jobs", ECHO)).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(body, json!({"id": "7000000000000000001"}));
        let submitted = &fake.state().submitted;
        assert_eq!(submitted.len(), 1);
        assert_eq!(submitted[0].job, "echo");
    }

    #[actix_web::test]
    async fn bad_specs_are_400_with_the_reason() {
        let fake = FakeCluster::new();
        let (status, body) = send(&fake, post("/api/jobs", "{\"kind\": ")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(error_of(&body).contains("malformed"), "{body}");
        let typo = r#"{"kind": "task", "job": "echo", "paylod": 1}"#;
        let (status, body) = send(&fake, post("/api/jobs", typo)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(error_of(&body).contains("`paylod`"), "{body}");
        assert!(fake.state().submitted.is_empty());
    }

    #[actix_web::test]
    async fn an_oversized_body_is_refused_with_json() {
        let fake = FakeCluster::new();
        let huge = format!(
            r#"{{"kind": "task", "job": "echo", "payload": "{}"}}"#,
            "x".repeat(MAX_BODY)
        );
        let (status, body) = send(&fake, post("/api/jobs", &huge)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(error_of(&body).contains("limit"), "{body}");
    }

    #[actix_web::test]
    async fn job_ids_in_paths_are_checked() {
        let fake = FakeCluster::with_jobs(vec![sample_job(5, JobState::Running)]);
        let get = |uri: &str| test::TestRequest::get().uri(uri);
        let (status, body) = send(&fake, get("/api/jobs/6")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(error_of(&body).contains("no job 6"));
        let (status, body) = send(&fake, get("/api/jobs/abc")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(error_of(&body).contains("invalid job id `abc`"), "{body}");
        let (status, body) = send(&fake, get("/api/jobs/5")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["id"], json!("5"));
        assert_eq!(body["submitted_at"], json!("2024-05-01T12:00:00.250Z"));
        assert_eq!(body["finished_at"], json!(null));
    }

    #[actix_web::test]
    async fn long_polls_pass_a_capped_wait() {
        let fake = FakeCluster::with_jobs(vec![sample_job(5, JobState::Running)]);
        let get = |uri: &str| test::TestRequest::get().uri(uri);
        send(&fake, get("/api/jobs/5?wait_ms=1500")).await;
        assert_eq!(
            fake.state().last_wait,
            Some(Some(Duration::from_millis(1500)))
        );
        send(&fake, get("/api/jobs/5?wait_ms=999999")).await;
        assert_eq!(fake.state().last_wait, Some(Some(MAX_WAIT)));
        send(&fake, get("/api/jobs/5")).await;
        assert_eq!(fake.state().last_wait, Some(None));
        let (status, body) = send(&fake, get("/api/jobs/5?wait_ms=soon")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(error_of(&body).contains("wait_ms"), "{body}");
    }

    #[actix_web::test]
    async fn lists_page_newest_first_and_pass_filters_through() {
        let jobs = (1..=5).map(|i| sample_job(i, JobState::Queued)).collect();
        let fake = FakeCluster::with_jobs(jobs);
        let get = |uri: &str| test::TestRequest::get().uri(uri);
        let (status, body) = send(&fake, get("/api/jobs?limit=2")).await;
        assert_eq!(status, StatusCode::OK);
        let ids: Vec<_> = body["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].clone())
            .collect();
        assert_eq!(ids, [json!("5"), json!("4")]);
        assert_eq!(body["next_before"], json!("4"));
        assert_eq!(body["total"], json!(5));
        assert!(body["jobs"][0].get("tasks").is_none());
        let (_, body) = send(&fake, get("/api/jobs?limit=2&before=2")).await;
        assert_eq!(body["jobs"].as_array().unwrap().len(), 1);
        assert_eq!(body["next_before"], json!(null));

        send(
            &fake,
            get("/api/jobs?state=failed&kind=task&limit=5000&before=77"),
        )
        .await;
        let query = fake.state().last_query.clone().unwrap();
        assert_eq!(
            query,
            JobQuery {
                state: Some(JobState::Failed),
                kind: Some("task".into()),
                limit: MAX_LIMIT,
                before: Some(JobId(77)),
            }
        );
        send(&fake, get("/api/jobs")).await;
        assert_eq!(fake.state().last_query, Some(JobQuery::default()));
    }

    #[actix_web::test]
    async fn bad_list_parameters_are_400_json() {
        let fake = FakeCluster::new();
        let get = |uri: &str| test::TestRequest::get().uri(uri);
        for (uri, needle) in [
            ("/api/jobs?state=done", "unknown job state `done`"),
            ("/api/jobs?limit=0", "`limit`"),
            ("/api/jobs?limit=-1", "`limit`"),
            ("/api/jobs?before=x", "`before`"),
            ("/api/jobs?stat=failed", "unknown field `stat`"),
        ] {
            let (status, body) = send(&fake, get(uri)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
            assert!(error_of(&body).contains(needle), "{uri}: {body}");
        }
        assert!(fake.state().last_query.is_none());
    }

    #[actix_web::test]
    async fn cancelling_needs_the_secret_and_a_live_job() {
        let fake = FakeCluster::with_jobs(vec![
            sample_job(5, JobState::Running),
            sample_job(6, JobState::Succeeded),
        ]);
        let bare = test::TestRequest::post().uri("/api/jobs/5/cancel");
        let (status, _) = send(&fake, bare).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(fake.state().cancelled.is_empty());
        let (status, body) = send(&fake, post("/api/jobs/5/cancel", "")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, json!({"id": "5"}));
        assert_eq!(fake.state().cancelled, [JobId(5)]);
        let (status, _) = send(&fake, post("/api/jobs/6/cancel", "")).await;
        assert_eq!(status, StatusCode::CONFLICT);
        let (status, _) = send(&fake, post("/api/jobs/9/cancel", "")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}

//! The HTTP layer of a master: the JSON API of CONTRACT.md, Prometheus metrics and the web UI.
//!
//! This crate holds no scheduling logic and no cluster state. It is written against the
//! [`ClusterApi`] trait, which the `master` crate implements (so `master` depends on `web`,
//! never the other way), and tests plug in an in-memory fake.
//!
//! # Layout
//! - [`api`]: the [`ClusterApi`] trait and the view types it answers with, whose serde impls are
//!   the JSON shapes of the API (ids as decimal strings, times as RFC 3339).
//! - [`json`]: serde helpers for those ids and times.
//! - [`health`], [`cluster`], [`jobs`], [`locks`], [`metrics`]: the handlers of
//!   `/api/health`, `/api/cluster`, `/api/jobs...`, `/api/locks...` and `/metrics`.
//! - [`auth`]: the cluster secret that every mutating call must present (a bearer token, or
//!   the UI's login cookie on the UI's own forms).
//! - [`forward`]: a follower proxies JSON API calls to the Raft leader.
//! - [`masters`]: `/api/masters...`, the masters of the Raft group: list, add, remove.
//! - [`error`]: the error type and its mapping to a status and a JSON `{"error"}` body.
//! - [`ui`]: the server-rendered HTML pages and the fragments they refresh from.
//!
//! [`serve`] runs the server on a bound listener; [`configure`] registers every route on an
//! actix `App`, for `serve` and for tests.

pub mod api;
pub mod auth;
pub mod cluster;
pub mod error;
pub mod forward;
pub mod health;
pub mod jobs;
pub mod json;
pub mod locks;
pub mod masters;
pub mod metrics;
pub mod ui;

#[cfg(test)]
mod testing;

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer, ResponseError};

pub use crate::api::{
    ApiError, AttemptView, ClusterApi, ClusterView, Health, JobCount, JobCounts, JobPage, JobQuery,
    JobView, MasterView, PhaseCounters, Progress, Role, ServedJob, TaskView, WorkerView,
};
pub use crate::api::{MemberView, MembersView, Membership, NewMaster};
pub use crate::error::{Error, Result};

/// How long a graceful stop waits for requests in flight (long polls are cut short after this).
pub const SHUTDOWN_TIMEOUT_SECS: u64 = 5;

/// Starts the HTTP server on an already-bound listener (port 0 works); returns the running
/// server handle. The caller awaits or spawns the [`Server`] and stops it with
/// `server.handle().stop(true)`: signals are left to the master, which owns the process.
///
/// # Errors
/// If the listener cannot be registered with the server (for example it is not a TCP socket
/// that can be made non-blocking).
pub fn serve(
    listener: TcpListener,
    api: Arc<dyn ClusterApi>,
    workers: usize,
) -> std::io::Result<Server> {
    let addr = listener.local_addr()?;
    let server = HttpServer::new(move || {
        App::new()
            .wrap(from_fn(forward::to_leader))
            .configure(configure(api.clone()))
    })
    .workers(workers.max(1))
    .disable_signals()
    .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
    .listen(listener)?
    .run();
    tracing::info!(%addr, "http server listening");
    Ok(server)
}

/// Registers every route, the shared [`ClusterApi`], the secret check on mutating calls, the
/// body size limit and JSON error handlers for actix's own extractors. Used by [`serve`] and by
/// tests (`App::new().configure(configure(api))`).
pub fn configure(api: Arc<dyn ClusterApi>) -> impl FnOnce(&mut web::ServiceConfig) {
    use crate::jobs as job_api;
    use crate::ui::{cluster as cluster_ui, home, job as job_ui, job_list, layout, login, submit};
    move |cfg| {
        cfg.app_data(web::Data::from(api))
            .app_data(web::QueryConfig::default().error_handler(query_error))
            .app_data(web::PathConfig::default().error_handler(path_error))
            .app_data(
                web::JsonConfig::default()
                    .limit(job_api::MAX_BODY)
                    .error_handler(json_error),
            )
            .app_data(web::PayloadConfig::new(job_api::MAX_BODY))
            .app_data(
                web::FormConfig::default()
                    .limit(job_api::MAX_BODY)
                    .error_handler(form_error),
            )
            // JSON API and metrics
            .service(resource("/api/health").get(health::get_health))
            .service(resource("/api/cluster").get(cluster::get_cluster))
            .service(
                resource("/api/jobs")
                    .get(job_api::list_jobs)
                    .post(job_api::submit_job),
            )
            .service(resource("/api/jobs/{id}").get(job_api::get_job))
            .service(resource("/api/jobs/{id}/cancel").post(job_api::cancel_job))
            .service(resource("/api/locks").get(crate::locks::list))
            .service(resource("/api/locks/{name}/{op}").post(crate::locks::post))
            .service(
                resource("/api/masters")
                    .get(masters::list_masters)
                    .post(masters::add_master),
            )
            .service(resource("/api/masters/{id}").delete(masters::remove_master))
            .service(resource("/metrics").get(metrics::get_metrics))
            // UI pages and the fragments they refresh from
            .service(resource("/").get(home::index))
            .service(resource("/jobs").get(job_list::jobs_page))
            .service(resource("/jobs/{id}").get(job_ui::job_page))
            .service(resource("/jobs/{id}/cancel").post(job_ui::cancel))
            .service(resource("/jobs/{id}/output/{n}").get(job_ui::output_file))
            .service(
                resource("/submit")
                    .get(submit::submit_page)
                    .post(submit::submit),
            )
            .service(resource("/cluster").get(cluster_ui::cluster_page))
            .service(resource("/locks").get(crate::ui::locks::locks_page))
            .service(resource("/login").get(login::login_page).post(login::login))
            .service(resource("/logout").post(login::logout))
            .service(resource("/fragments/glance").get(home::glance_fragment))
            .service(resource("/fragments/recent").get(home::recent_fragment))
            .service(resource("/fragments/jobs").get(job_list::jobs_fragment))
            .service(resource("/fragments/jobs/{id}").get(job_ui::job_fragment))
            .service(resource("/fragments/cluster").get(cluster_ui::cluster_fragment))
            .service(resource("/fragments/locks").get(crate::ui::locks::locks_fragment))
            .service(resource("/assets/app.css").get(layout::stylesheet))
            .service(resource("/assets/app.js").get(layout::script))
            .default_service(web::to(no_route));
    }
}

/// Every route is made here: the secret check wraps it (so a new mutating endpoint cannot
/// forget it), and a method it has no route for gets 405 with a JSON error.
fn resource(
    path: &str,
) -> actix_web::Resource<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    web::resource(path)
        .default_service(web::to(method_not_allowed))
        .wrap(from_fn(auth::require_secret))
}

async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    Error::MethodNotAllowed {
        method: req.method().to_string(),
        path: req.path().to_string(),
    }
    .error_response()
}

/// Unknown paths: a JSON 404 under `/api`, an HTML page elsewhere.
async fn no_route(req: HttpRequest) -> HttpResponse {
    let error = Error::NoRoute {
        method: req.method().to_string(),
        path: req.path().to_string(),
    };
    if auth::is_api(req.path()) {
        error.error_response()
    } else {
        ui::layout::error_page(&error, auth::Session::of(&req))
    }
}

fn query_error(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let reason = match err {
        QueryPayloadError::Deserialize(e) => format!("invalid query string: {e}"),
        other => format!("invalid query string: {other}"),
    };
    Error::BadRequest { reason }.into()
}

fn form_error(err: actix_web::error::UrlencodedError, _req: &HttpRequest) -> actix_web::Error {
    Error::BadRequest {
        reason: format!("invalid form: {err}"),
    }
    .into()
}

fn path_error(err: PathError, _req: &HttpRequest) -> actix_web::Error {
    Error::BadRequest {
        reason: format!("invalid path: {err}"),
    }
    .into()
}

fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    match err {
        JsonPayloadError::Overflow { limit }
        | JsonPayloadError::OverflowKnownLength { limit, .. } => {
            Error::PayloadTooLarge { limit }.into()
        }
        other if other.status_code() == StatusCode::PAYLOAD_TOO_LARGE => Error::PayloadTooLarge {
            limit: crate::jobs::MAX_BODY,
        }
        .into(),
        other => Error::BadRequest {
            reason: format!("malformed JSON body: {other}"),
        }
        .into(),
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::{header, StatusCode};
    use actix_web::test;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::testing::{app, FakeCluster, SECRET};

    #[actix_web::test]
    async fn serve_answers_on_port_zero_and_stops_on_request() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = serve(listener, Arc::new(FakeCluster::new()), 1).unwrap();
        let handle = server.handle();
        let running = actix_web::rt::spawn(server);

        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /api/health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains(r#""role":"leader""#), "{response}");

        handle.stop(true).await;
        running.await.unwrap().unwrap();
    }

    async fn call(req: test::TestRequest) -> (StatusCode, Option<String>, String) {
        let app = app(FakeCluster::new()).await;
        let res = test::call_service(&app, req.to_request()).await;
        let status = res.status();
        let content_type = res
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string());
        let body = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
        (status, content_type, body)
    }

    fn json_error(body: &str) -> String {
        let value: serde_json::Value = serde_json::from_str(body).unwrap();
        value["error"].as_str().unwrap().to_string()
    }

    #[actix_web::test]
    async fn unknown_api_paths_and_methods_are_json_errors() {
        let (status, ctype, body) = call(test::TestRequest::get().uri("/api/nope")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(ctype.as_deref(), Some("application/json"));
        assert!(json_error(&body).contains("GET /api/nope"));

        let delete = test::TestRequest::delete()
            .uri("/api/health")
            .insert_header((header::AUTHORIZATION, format!("Bearer {SECRET}")));
        let (status, _, body) = call(delete).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(json_error(&body).contains("DELETE"), "{body}");
    }

    #[actix_web::test]
    async fn every_route_checks_the_secret_before_anything_else() {
        // even a method the route does not serve is refused for want of the secret first
        let (status, _, body) = call(test::TestRequest::post().uri("/api/health")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(json_error(&body).contains("secret"));
        let (status, _, _) = call(test::TestRequest::post().uri("/")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[actix_web::test]
    async fn unknown_pages_are_html() {
        let (status, ctype, body) = call(test::TestRequest::get().uri("/nope")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(ctype.as_deref(), Some("text/html; charset=utf-8"));
        assert!(body.contains("no such endpoint: GET /nope"), "{body}");
    }
}

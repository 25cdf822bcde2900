//! Forwarding to the leader: a master that is not the Raft leader proxies JSON API calls
//! (`/api/*`, except its own `/api/health`) to the leader's HTTP address, so writes work on any
//! master and reads of job state come from the leader and never go backwards for a client.
//! A forwarded request carries [`FORWARDED_HEADER`]; a master never forwards such a request again
//! (if leadership moved meanwhile it answers itself, with 503 if it cannot serve it).

use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use futures::StreamExt;

use crate::api::ClusterApi;
use crate::jobs::{MAX_BODY, MAX_WAIT};

/// Marks a request a follower forwarded.
pub const FORWARDED_HEADER: &str = "x-mrcluster-forwarded";
/// How long a forwarded call may take: the longest wait a call may ask for (a job long poll,
/// a lock acquire) plus slack.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(
    if MAX_WAIT.as_secs() > jobs::lock::limits::MAX_WAIT_MS / 1000 {
        MAX_WAIT.as_secs()
    } else {
        jobs::lock::limits::MAX_WAIT_MS / 1000
    } + 15,
);

fn error(status: StatusCode, message: String) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({ "error": message }))
}

/// The middleware (wrap the app with `actix_web::middleware::from_fn(forward::to_leader)`).
///
/// # Errors
/// Whatever the wrapped service returns; forwarding failures are answered as 503 responses.
pub async fn to_leader(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let path = req.path();
    let eligible = path.starts_with("/api/")
        && path != "/api/health"
        && !req.headers().contains_key(FORWARDED_HEADER);
    let leader = if eligible {
        req.app_data::<web::Data<dyn ClusterApi>>()
            .and_then(|api| api.leader_http())
    } else {
        None
    };
    let Some(leader) = leader else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let (request, mut payload) = req.into_parts();
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > MAX_BODY {
            let response = error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {MAX_BODY} bytes"),
            );
            return Ok(ServiceResponse::new(request, response).map_into_right_body());
        }
        body.extend_from_slice(&chunk);
    }
    let method = request.method().as_str().to_string();
    let target = format!(
        "http://{leader}{}",
        request
            .uri()
            .path_and_query()
            .map_or(request.path(), |p| p.as_str())
    );
    let copy = |name: header::HeaderName| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (authorization, content_type) = (copy(header::AUTHORIZATION), copy(header::CONTENT_TYPE));
    let body = body.freeze();
    let forwarded = web::block(move || {
        let mut call = ureq::request(&method, &target)
            .timeout(FORWARD_TIMEOUT)
            .set(FORWARDED_HEADER, "1");
        if let Some(value) = &authorization {
            call = call.set("Authorization", value);
        }
        if let Some(value) = &content_type {
            call = call.set("Content-Type", value);
        }
        let response = match if body.is_empty() {
            call.call()
        } else {
            call.send_bytes(&body)
        } {
            Ok(response) | Err(ureq::Error::Status(_, response)) => response,
            Err(ureq::Error::Transport(e)) => return Err(e.to_string()),
        };
        let status = response.status();
        let content_type = response.content_type().to_string();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut response.into_reader(), &mut bytes)
            .map_err(|e| e.to_string())?;
        Ok((status, content_type, bytes))
    })
    .await;
    let response = match forwarded {
        Ok(Ok((status, content_type, bytes))) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            HttpResponse::build(status)
                .content_type(content_type)
                .body(bytes)
        }
        Ok(Err(reason)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the leader at {leader} did not answer: {reason}"),
        ),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("could not forward to the leader: {e}"),
        ),
    };
    Ok(ServiceResponse::new(request, response).map_into_right_body())
}

//! The locks API: `POST /api/locks/{name}/acquire|keepalive|release` and `GET /api/locks`.
//!
//! Bodies are JSON whatever the content type (as for job specs), with unknown fields refused.
//! A lock that is not granted, and a keepalive or release whose token is stale, answer 409.

use actix_web::{web, HttpResponse};
use jobs::lock::{LockOp, LockRequest};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::api::{ClusterApi, LockView};
use crate::error::{Error, Result};

/// The lease TTL of an acquire that names none.
pub const DEFAULT_TTL_MS: u64 = 10_000;

/// The body of `POST /api/locks/{name}/acquire`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AcquireBody {
    owner: String,
    #[serde(default = "default_ttl")]
    ttl_ms: u64,
    #[serde(default)]
    wait_ms: u64,
}

fn default_ttl() -> u64 {
    DEFAULT_TTL_MS
}

/// The body of a keepalive or a release.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    owner: String,
    token: u64,
}

/// The answer to every successful lock call.
#[derive(Debug, Serialize, Deserialize)]
pub struct TokenBody {
    /// The grant's fencing token.
    pub token: u64,
}

/// The body of `GET /api/locks`.
#[derive(Debug, Serialize, Deserialize)]
pub struct LockList {
    /// Held or awaited locks, by name.
    pub locks: Vec<LockView>,
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Error::BadRequest {
        reason: format!("invalid lock request body: {e}"),
    })
}

/// `POST /api/locks/{name}/{op}`:
/// - `acquire` `{"owner", "ttl_ms" (default 10 s), "wait_ms" (default 0: try once)}`;
/// - `keepalive` `{"owner", "token"}`: restarts the lease's clock;
/// - `release` `{"owner", "token"}`.
///
/// Each answers `{"token": n}` (the grant's fencing token), or 409 if the lock was not granted
/// within `wait_ms` or the token is not the current grant.
pub async fn post(
    api: web::Data<dyn ClusterApi>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse> {
    let (name, op) = path.into_inner();
    let (owner, op) = match op.as_str() {
        "acquire" => {
            let body: AcquireBody = parse(&body)?;
            let op = LockOp::Acquire {
                ttl_ms: body.ttl_ms,
                wait_ms: body.wait_ms,
            };
            (body.owner, op)
        }
        "keepalive" => {
            let body: GrantBody = parse(&body)?;
            (body.owner, LockOp::Keepalive { token: body.token })
        }
        "release" => {
            let body: GrantBody = parse(&body)?;
            (body.owner, LockOp::Release { token: body.token })
        }
        _ => {
            return Err(Error::NoRoute {
                method: "POST".into(),
                path: format!("/api/locks/{name}/{op}"),
            })
        }
    };
    let token = api.lock(LockRequest { name, owner, op }).await?;
    Ok(HttpResponse::Ok().json(TokenBody { token }))
}

/// `GET /api/locks` → `{"locks": [...]}`.
pub async fn list(api: web::Data<dyn ClusterApi>) -> Result<HttpResponse> {
    let locks = api.locks().await?;
    Ok(HttpResponse::Ok().json(LockList { locks }))
}

#[cfg(test)]
mod tests {
    use actix_web::http::{header, StatusCode};
    use actix_web::test;
    use serde_json::{json, Value};

    use crate::testing::{app, FakeCluster, SECRET};

    use super::*;

    async fn post(fake: &FakeCluster, path: &str, body: &str) -> (StatusCode, Value) {
        let app = app(fake.clone()).await;
        let req = test::TestRequest::post()
            .uri(path)
            .insert_header((header::AUTHORIZATION, format!("Bearer {SECRET}")))
            .set_payload(body.to_string())
            .to_request();
        let res = test::call_service(&app, req).await;
        let status = res.status();
        (status, test::read_body_json(res).await)
    }

    #[actix_web::test]
    async fn acquire_defaults_and_conflicts() {
        let fake = FakeCluster::new();
        // No content type needed, as with job specs; the TTL defaults, the wait is 0.
        let (status, body) = post(&fake, "/api/locks/a/acquire", r#"{"owner":"o1"}"#).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, json!({"token": 1}));
        assert_eq!(
            fake.state().lock_requests[0].op,
            LockOp::Acquire {
                ttl_ms: DEFAULT_TTL_MS,
                wait_ms: 0
            }
        );
        let (status, body) = post(&fake, "/api/locks/a/acquire", r#"{"owner":"o2"}"#).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["error"], "lock `a` is held by `o1`");
        let (status, body) =
            post(&fake, "/api/locks/a/release", r#"{"owner":"o1","token":9}"#).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("held by `o1` with token 1"),
            "{body}"
        );
        let (status, _) = post(
            &fake,
            "/api/locks/a/keepalive",
            r#"{"owner":"o1","token":1}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = post(&fake, "/api/locks/a/release", r#"{"owner":"o1","token":1}"#).await;
        assert_eq!(status, StatusCode::OK);
        let app = app(fake.clone()).await;
        let req = test::TestRequest::get().uri("/api/locks").to_request();
        let list: Value = test::call_and_read_body_json(&app, req).await;
        assert_eq!(list, json!({"locks": []}));
    }

    #[actix_web::test]
    async fn bad_bodies_are_400_and_need_the_secret() {
        let fake = FakeCluster::new();
        for (body, says) in [
            ("not json", "invalid lock request body"),
            (r#"{"owner":"o","ttl":5}"#, "unknown field `ttl`"),
            (r#"{"owner":"o","ttl_ms":-1}"#, "expected u64"),
            (r#"{"ttl_ms":5}"#, "missing field `owner`"),
        ] {
            let (status, answer) = post(&fake, "/api/locks/a/acquire", body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert!(
                answer["error"].as_str().unwrap().contains(says),
                "{body}: {answer}"
            );
        }
        let (status, answer) = post(&fake, "/api/locks/a/release", r#"{"owner":"o"}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(answer["error"].as_str().unwrap().contains("token"));
        assert!(fake.state().lock_requests.is_empty());
        let (status, answer) = post(&fake, "/api/locks/a/steal", r#"{"owner":"o"}"#).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
        let app = app(fake.clone()).await;
        let req = test::TestRequest::post()
            .uri("/api/locks/a/acquire")
            .set_payload(r#"{"owner":"o"}"#)
            .to_request();
        assert_eq!(
            test::call_service(&app, req).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
}

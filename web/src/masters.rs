//! The membership API: list, add and remove the masters of the metadata group at runtime.
//!
//! - `GET /api/masters` → `{"leader": 1, "masters": [{"id", "rpc", "http", "membership"}]}`.
//! - `POST /api/masters` `{"id": 4, "rpc": "127.0.0.1:7004", "http": "127.0.0.1:8083"}` adds a
//!   master, already started with `master run --config FILE --id 4` (its `[[master]]` entry
//!   added to the file): it joins as a learner, catches up, then becomes a voter; 200 with the
//!   members. If it does not catch up in time (it is not running?) the answer is a 503 saying
//!   so and it stays a learner: the same call again finishes the job, a `DELETE` undoes it.
//! - `DELETE /api/masters/{id}` removes a master from the group; 200 with the members left.
//!
//! Both changes need the secret (as every mutating call) and run on the leader (followers
//! forward them). Bad input is a 400 (id 0, an address that is not `ip:port`, an id that is
//! already a voter, removing the last voter), an unknown id a 404.

use std::net::SocketAddr;

use actix_web::{web, HttpResponse};

use crate::api::{ClusterApi, NewMaster};
use crate::error::{Error, Result};

/// `GET /api/masters`: the members of the group.
///
/// # Errors
/// Whatever the master answers.
pub async fn list_masters(api: web::Data<dyn ClusterApi>) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(api.masters().await?))
}

/// Parses and checks the body of `POST /api/masters` (read whatever its content type, as a
/// spec is, so `curl -d` works).
///
/// # Errors
/// [`Error::BadRequest`] naming what is wrong.
pub fn parse_new_master(body: &[u8]) -> Result<NewMaster> {
    let bad = |reason: String| Error::BadRequest { reason };
    let master: NewMaster = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "invalid master: {e} (expected {{\"id\", \"rpc\", \"http\"}})"
        ))
    })?;
    if master.id == 0 {
        return Err(bad("master ids start at 1".into()));
    }
    for (name, addr) in [("rpc", &master.rpc), ("http", &master.http)] {
        if addr.parse::<SocketAddr>().is_err() {
            return Err(bad(format!("`{name}`: `{addr}` is not an ip:port address")));
        }
    }
    if master.rpc == master.http {
        return Err(bad("`rpc` and `http` must be different addresses".into()));
    }
    Ok(master)
}

/// `POST /api/masters`: adds a master.
///
/// # Errors
/// 400 for a bad body or a master that cannot be added, 503 if it did not catch up in time or
/// there is no leader.
pub async fn add_master(api: web::Data<dyn ClusterApi>, body: web::Bytes) -> Result<HttpResponse> {
    let master = parse_new_master(&body)?;
    Ok(HttpResponse::Ok().json(api.add_master(master).await?))
}

/// `DELETE /api/masters/{id}`: removes a master.
///
/// # Errors
/// 400 for an id that is not a number or the last voter, 404 for one that is not a member.
pub async fn remove_master(
    api: web::Data<dyn ClusterApi>,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let text = path.into_inner();
    let id = text.parse::<u64>().map_err(|_| Error::BadRequest {
        reason: format!("invalid master id `{text}`: expected a decimal number"),
    })?;
    Ok(HttpResponse::Ok().json(api.remove_master(id).await?))
}

#[cfg(test)]
mod tests {
    use actix_web::http::{header, StatusCode};
    use actix_web::test;
    use serde_json::{json, Value};

    use crate::testing::{app, FakeCluster, SECRET};

    fn bearer() -> (header::HeaderName, String) {
        (header::AUTHORIZATION, format!("Bearer {SECRET}"))
    }

    async fn call(fake: &FakeCluster, req: test::TestRequest) -> (StatusCode, Value) {
        let app = app(fake.clone()).await;
        let res = test::call_service(&app, req.to_request()).await;
        let status = res.status();
        let body = test::read_body(res).await;
        (status, serde_json::from_slice(&body).unwrap())
    }

    fn add(body: &str) -> test::TestRequest {
        test::TestRequest::post()
            .uri("/api/masters")
            .insert_header(bearer())
            .set_payload(body.to_string())
    }

    #[actix_web::test]
    async fn a_master_is_added_as_a_voter_and_listed() {
        let fake = FakeCluster::new();
        let body = r#"{"id": 4, "rpc": "127.0.0.1:7004", "http": "127.0.0.1:8083"}"#;
        // no content type: read as JSON anyway
        let (status, members) = call(&fake, add(body)).await;
        assert_eq!(status, StatusCode::OK, "{members}");
        assert_eq!(members["leader"], json!(1));
        let ids: Vec<u64> = members["masters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_u64().unwrap())
            .collect();
        assert_eq!(ids, [1, 2, 4]);
        assert_eq!(
            members["masters"][2],
            json!({"id": 4, "rpc": "127.0.0.1:7004", "http": "127.0.0.1:8083",
                   "membership": "voter"})
        );
        let (status, listed) = call(&fake, test::TestRequest::get().uri("/api/masters")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(listed, members);
        assert_eq!(fake.state().added.len(), 1);
    }

    #[actix_web::test]
    async fn bad_additions_are_400_with_a_reason() {
        let fake = FakeCluster::new();
        for (body, needle) in [
            (
                r#"{"id": 0, "rpc": "127.0.0.1:7004", "http": "127.0.0.1:8083"}"#,
                "start at 1",
            ),
            (
                r#"{"id": 4, "rpc": "localhost", "http": "127.0.0.1:8083"}"#,
                "`rpc`",
            ),
            (
                r#"{"id": 4, "rpc": "127.0.0.1:7004", "http": "x:1"}"#,
                "`http`",
            ),
            (
                r#"{"id": 4, "rpc": "127.0.0.1:7004"}"#,
                "missing field `http`",
            ),
            (
                r#"{"id": 4, "rpc": "127.0.0.1:1", "http": "127.0.0.1:1"}"#,
                "different",
            ),
            (
                r#"{"id": 4, "rpc": "127.0.0.1:7004", "http": "127.0.0.1:8083", "x": 1}"#,
                "unknown field",
            ),
            (r#"{"id": -4}"#, "invalid master"),
            ("not json", "invalid master"),
            // the fake refuses a member twice, as the master does
            (
                r#"{"id": 1, "rpc": "127.0.0.1:7009", "http": "127.0.0.1:8089"}"#,
                "already a voter",
            ),
        ] {
            let (status, error) = call(&fake, add(body)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
            let message = error["error"].as_str().unwrap();
            assert!(message.contains(needle), "{body}: {message}");
        }
        assert!(fake.state().added.is_empty());
    }

    #[actix_web::test]
    async fn membership_changes_need_the_secret() {
        let fake = FakeCluster::new();
        let body = r#"{"id": 4, "rpc": "127.0.0.1:7004", "http": "127.0.0.1:8083"}"#;
        let no_secret = test::TestRequest::post()
            .uri("/api/masters")
            .set_payload(body);
        assert_eq!(call(&fake, no_secret).await.0, StatusCode::UNAUTHORIZED);
        let wrong = test::TestRequest::delete()
            .uri("/api/masters/2")
            .insert_header((header::AUTHORIZATION, "Bearer nope"));
        assert_eq!(call(&fake, wrong).await.0, StatusCode::UNAUTHORIZED);
        let state = fake.state();
        assert!(state.added.is_empty() && state.removed.is_empty());
    }

    #[actix_web::test]
    async fn removing_answers_the_members_left_404_for_strangers_400_for_the_last_voter() {
        let fake = FakeCluster::new();
        let remove = |id: &str| {
            test::TestRequest::delete()
                .uri(&format!("/api/masters/{id}"))
                .insert_header(bearer())
        };
        let (status, members) = call(&fake, remove("2")).await;
        assert_eq!(status, StatusCode::OK, "{members}");
        assert_eq!(members["masters"].as_array().unwrap().len(), 1);
        assert_eq!(fake.state().removed, [2]);

        let (status, error) = call(&fake, remove("9")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(error["error"].as_str().unwrap().contains("master 9"));
        let (status, error) = call(&fake, remove("1")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(error["error"].as_str().unwrap().contains("last voter"));
        let (status, error) = call(&fake, remove("one")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(error["error"].as_str().unwrap().contains("`one`"));
        // A GET on a member is not a route.
        let get = test::TestRequest::get().uri("/api/masters/1");
        assert_eq!(call(&fake, get).await.0, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[actix_web::test]
    async fn an_unavailable_leader_is_503() {
        let fake = FakeCluster::new();
        fake.state().failure = Some(crate::api::ApiError::Unavailable("no leader".into()));
        let body = r#"{"id": 4, "rpc": "127.0.0.1:7004", "http": "127.0.0.1:8083"}"#;
        let (status, error) = call(&fake, add(body)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error["error"], json!("no leader"));
    }
}

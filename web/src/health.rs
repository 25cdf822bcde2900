//! `GET /api/health`: this master's own view of the Raft group, answered without the leader.

use actix_web::{web, HttpResponse};

use crate::api::ClusterApi;

/// `GET /api/health` → `{"id": 1, "role": "leader", "leader": 1, "term": 3, "last_log_index":
/// 42, "last_applied": 42, "membership": "voter"}`.
pub async fn get_health(api: web::Data<dyn ClusterApi>) -> HttpResponse {
    HttpResponse::Ok().json(api.health().await)
}

#[cfg(test)]
mod tests {
    use actix_web::test;
    use serde_json::json;

    use crate::testing::{app, FakeCluster};

    #[actix_web::test]
    async fn health_has_the_contract_shape() {
        let app = app(FakeCluster::new()).await;
        let req = test::TestRequest::get().uri("/api/health").to_request();
        let body: serde_json::Value = test::call_and_read_body_json(&app, req).await;
        assert_eq!(
            body,
            json!({"id": 1, "role": "leader", "leader": 1, "term": 3,
                   "last_log_index": 17, "last_applied": 16, "membership": "voter"})
        );
        // The fields CONTRACT.md documents are read by older clients without the new ones.
        let old: crate::api::Health =
            serde_json::from_value(json!({"id": 2, "role": "follower", "leader": 1, "term": 3}))
                .unwrap();
        assert_eq!(old.membership, crate::api::Membership::NotMember);
    }
}

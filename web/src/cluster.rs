//! `GET /api/cluster`: the masters and workers as the leader knows them.

use actix_web::{web, HttpResponse};

use crate::api::ClusterApi;
use crate::error::Result;

/// `GET /api/cluster` → `{"leader": 1, "masters": [...], "workers": [...]}`.
///
/// # Errors
/// Whatever the master answers (503 without a leader).
pub async fn get_cluster(api: web::Data<dyn ClusterApi>) -> Result<HttpResponse> {
    Ok(HttpResponse::Ok().json(api.cluster().await?))
}

#[cfg(test)]
mod tests {
    use actix_web::test;
    use serde_json::json;

    use crate::testing::{app, FakeCluster};

    #[actix_web::test]
    async fn cluster_lists_masters_and_workers_with_string_worker_ids() {
        let app = app(FakeCluster::new()).await;
        let req = test::TestRequest::get().uri("/api/cluster").to_request();
        let body: serde_json::Value = test::call_and_read_body_json(&app, req).await;
        assert_eq!(body["leader"], json!(1));
        assert_eq!(body["masters"][0]["role"], json!("leader"));
        assert_eq!(body["workers"][0]["id"], json!("11"));
        assert_eq!(body["workers"][0]["name"], json!("w1"));
        assert_eq!(body["workers"][0]["jobs"], json!(["wordcount", "echo"]));
    }
}

//! `GET /metrics`: Prometheus text exposition format, built by the master.

use actix_web::{web, HttpResponse};

use crate::api::ClusterApi;
use crate::error::Result;

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics` → the master's metrics as Prometheus text.
///
/// # Errors
/// Whatever the master answers.
pub async fn get_metrics(api: web::Data<dyn ClusterApi>) -> Result<HttpResponse> {
    let text = api.metrics().await?;
    Ok(HttpResponse::Ok().content_type(CONTENT_TYPE).body(text))
}

#[cfg(test)]
mod tests {
    use actix_web::http::header;
    use actix_web::test;

    use crate::testing::{app, FakeCluster};

    #[actix_web::test]
    async fn metrics_are_prometheus_text() {
        let app = app(FakeCluster::new()).await;
        let req = test::TestRequest::get().uri("/metrics").to_request();
        let res = test::call_service(&app, req).await;
        assert!(res.status().is_success());
        assert_eq!(
            res.headers().get(header::CONTENT_TYPE).unwrap(),
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let body = test::read_body(res).await;
        assert!(std::str::from_utf8(&body)
            .unwrap()
            .contains("cluster_jobs_total"));
    }
}

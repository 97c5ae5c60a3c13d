//! HTTP edge pieces shared by every router: problem+json errors, health and the API document.
//!
//! The same axum Routers run inside Lambda (through `lambda_http`) and in `serve`.

pub mod problem;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

pub use problem::Problem;

/// `GET /healthz` (the API document is served by the HTTP trigger API's router).
pub fn health_router() -> Router {
    Router::new().route("/healthz", get(healthz))
}

/// Adds problem+json answers for unknown routes (404) and wrong methods (405).
pub fn with_problem_fallbacks(router: Router) -> Router {
    router
        .fallback(|| async { Problem::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            )
            .with_detail("this route does not accept that method")
        })
}

async fn healthz() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(serde_json::json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") })),
    )
}

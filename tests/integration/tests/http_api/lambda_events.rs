//! The router behind `lambda_http`, as the `http` Lambda runs it: real API Gateway HTTP API
//! (payload format 2.0) and Function URL events from `functions/http/fixtures/` are
//! deserialised as `lambda_http` does, converted into an `http::Request`, answered by the
//! router, and the answer converted back with `lambda_http`'s response conversion.
//!
//! The fixtures follow the documented shapes; the test fills in `${AUTHORIZATION}` (a
//! minted key) and `${TRIGGER_ID}`. Function URL events use the same 2.0 format with
//! `routeKey: "$default"` and no `pathParameters`, so the router must read the path itself.

use std::path::PathBuf;

use lambda_http::request::LambdaRequest;
use lambda_http::{Body as LambdaBody, IntoResponse};
use serde_json::Value;
use tower::ServiceExt;

use crate::harness::Harness;

fn fixture(name: &str, authorization: &str, trigger_id: &str) -> LambdaRequest {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../functions/http/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .replace("${AUTHORIZATION}", authorization)
        .replace("${TRIGGER_ID}", trigger_id);
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{name}: {error}"))
}

struct LambdaAnswer {
    status: u16,
    content_type: String,
    headers: http::HeaderMap,
    body: Value,
}

/// One invocation, converted both ways by `lambda_http`.
async fn invoke(h: &Harness, event: LambdaRequest) -> LambdaAnswer {
    // The router the `http` function's main.rs runs.
    let router = shared::triggers::http::function_router(h.api.clone());
    let request: lambda_http::Request = event.into();
    let response = router.oneshot(request).await.unwrap();
    let response = response.into_response().await;
    let (parts, body) = response.into_parts();
    let text = match body {
        LambdaBody::Text(text) => text,
        LambdaBody::Empty => String::new(),
        LambdaBody::Binary(bytes) => panic!(
            "JSON answers must go back as text, not base64 ({} bytes)",
            bytes.len()
        ),
        _ => panic!("unexpected body kind"),
    };
    LambdaAnswer {
        status: parts.status.as_u16(),
        content_type: parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned(),
        headers: parts.headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_gateway_and_function_url_events_reach_the_router() {
    let h = Harness::start().await;
    let authorization = format!("Bearer {}", h.keys.bot);

    let created = invoke(
        &h,
        fixture("apigw-v2-post-endpoint.json", &authorization, ""),
    )
    .await;
    assert_eq!(created.status, 202, "{}", created.body);
    assert_eq!(created.content_type, "application/json");
    assert_eq!(created.body["branch"], "release/2.0");
    assert_eq!(created.body["parameters"]["dry_run"], true);
    assert_eq!(created.body["idempotency_key"], "lambda-release-2.0.0");
    let id = created.body["id"].as_str().unwrap().to_owned();
    let pipelines = h.sim.pipelines();
    assert_eq!(pipelines.len(), 1);
    assert_eq!(pipelines[0].parameters["version"], "2.0.0");

    // The same request through a Function URL (text body, charset) is a replay.
    let replay = invoke(
        &h,
        fixture("function-url-post-endpoint.json", &authorization, ""),
    )
    .await;
    assert_eq!(replay.status, 202, "{}", replay.body);
    assert_eq!(replay.body["id"], id.as_str());
    assert_eq!(
        replay
            .headers
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    assert_eq!(h.pipelines(), 1);

    let read = invoke(
        &h,
        fixture("apigw-v2-get-trigger.json", &authorization, &id),
    )
    .await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.body["id"], id.as_str());

    let listed = invoke(
        &h,
        fixture("apigw-v2-list-triggers.json", &authorization, ""),
    )
    .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed.body["items"][0]["id"], id.as_str());
}

/// The template routes `GET /healthz` to the `http` function too; it used to answer 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_health_route_answers_through_the_http_function() {
    let h = Harness::start().await;
    let health = invoke(&h, fixture("apigw-v2-get-healthz.json", "", "")).await;
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(health.body["status"], "ok");
    assert_eq!(
        health
            .headers
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_through_lambda_events_are_problems_and_recorded() {
    let h = Harness::start().await;
    let authorization = format!("Bearer {}", h.keys.bot);

    let invalid = invoke(
        &h,
        fixture("function-url-post-invalid-utf8.json", &authorization, ""),
    )
    .await;
    assert_eq!(invalid.status, 400, "{}", invalid.body);
    assert_eq!(invalid.content_type, "application/problem+json");
    assert!(
        invalid.body["type"]
            .as_str()
            .unwrap()
            .ends_with("/malformed-request")
    );
    let audit: shared::store::TriggerId = invalid.body["trigger_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        h.record(audit).await.status,
        shared::store::TriggerStatus::Rejected
    );

    let method = invoke(
        &h,
        fixture("function-url-get-endpoint.json", &authorization, ""),
    )
    .await;
    assert_eq!(method.status, 405);
    assert_eq!(method.content_type, "application/problem+json");
    assert_eq!(
        method.headers.get("allow").and_then(|v| v.to_str().ok()),
        Some("POST")
    );

    let stranger = invoke(
        &h,
        fixture("apigw-v2-post-endpoint.json", "Bearer someone.else", ""),
    )
    .await;
    assert_eq!(stranger.status, 401);
    assert_eq!(h.pipelines(), 0);
}

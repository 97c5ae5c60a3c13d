//! The axum routes of the HTTP trigger API.
//!
//! Checks run cheapest and least revealing first: authentication (401, the same answer for
//! an unknown client and a wrong key), the endpoint (404), the client's scope (403), its
//! request rate (429), the media type (415), the body size (413), the body itself (400,
//! 422). Every `POST` of an authenticated client that is refused leaves a `rejected`
//! trigger record; the presented key never reaches a record or a log.
//!
//! **Unauthenticated requests cost nothing durable.** A request without a valid key (and a
//! 405 on an endpoint, answered before authentication) writes no record and stores none of
//! its text (Idempotency-Key, body, endpoint name): it counts in the `ApiAuthFailures`
//! metric, and at most a few log lines a minute describe such requests, each with the
//! number left out before it. Otherwise anyone could fill the history (and the bill) and
//! plant text that clients and operators later read.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use serde::Deserialize;

use super::auth::{AuthFailure, authenticate};
use super::catalog::Client;
use super::problem::ProblemDoc;
use super::rate::Admission;
use super::request::{BodyError, FieldError, TriggerRequestBody, parse_body};
use super::view::{TriggerPage, TriggerView};
use super::{
    ApiError, Call, CallError, Caller, Rejection, TriggerApi, check_idempotency_key, history,
};
use crate::store::{SourceKind, TriggerId, TriggerStatus};

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The routes of the HTTP trigger API, including `GET /v1/openapi.json`.
///
/// Compose it with `shared::http::with_problem_fallbacks` (404/405 as problem+json for
/// every other route); `serve` merges it with the webhook router.
/// Everything the `http` function serves — the API, `GET /healthz` and problem+json for
/// unknown routes and methods — composed once, so the Lambda and its tests run the same
/// router (a route the template sends here cannot be forgotten in one of them).
pub fn function_router(api: TriggerApi) -> Router {
    crate::http::with_problem_fallbacks(api_router(api).merge(crate::http::health_router()))
}

pub fn api_router(api: TriggerApi) -> Router {
    Router::new()
        .route(
            "/v1/endpoints/{name}",
            post(fire_endpoint).fallback(endpoint_method_not_allowed),
        )
        .route(
            "/v1/schedules/{name}/runs",
            post(super::operator::run_schedule).fallback(endpoint_method_not_allowed),
        )
        .route("/v1/status", get(super::operator::status_page))
        .route("/v1/triggers", get(list_triggers))
        .route("/v1/triggers/{id}", get(get_trigger))
        .route("/v1/openapi.json", get(openapi_json))
        .with_state(api)
}

/// The Idempotency-Key header: `Ok(None)` when absent.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, FieldError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| {
        FieldError::header(
            "Idempotency-Key",
            "may only contain visible ASCII characters",
        )
    })?;
    check_idempotency_key(text)?;
    Ok(Some(text.to_owned()))
}

/// The metric counting requests refused for their key (missing, unknown client, wrong key).
pub const AUTH_FAILURE_METRIC: &str = "ApiAuthFailures";

/// Notes a failed authentication without writing anything durable: the metric, and a
/// sampled log line (never the presented key; a client name only when it is configured).
pub(super) fn unauthenticated(api: &TriggerApi, failure: &AuthFailure, route: &'static str) {
    let claimed = match failure {
        AuthFailure::Missing => None,
        AuthFailure::Rejected { claimed } => claimed.as_deref(),
        // Our own failures (secrets unreadable) are logged by `auth_error`.
        AuthFailure::Unavailable(_) | AuthFailure::Misconfigured(_) => return,
    };
    crate::telemetry::emit_metric(AUTH_FAILURE_METRIC, 1.0, &[]);
    if let Some(left_out) = api.sample_unauthenticated_log() {
        tracing::warn!(
            route,
            key = match failure {
                AuthFailure::Missing => "missing",
                _ => "rejected",
            },
            claimed_client = claimed.unwrap_or(""),
            left_out,
            "unauthenticated request refused (nothing recorded)"
        );
    }
}

/// The calling client, or the answer to send when the request does not authenticate (the
/// failure noted by [`unauthenticated`], nothing recorded).
pub(super) async fn client_or_refusal<'a>(
    api: &'a TriggerApi,
    headers: &HeaderMap,
    route: &'static str,
) -> Result<&'a Client, Response> {
    authenticate(api.catalog(), api.secrets(), headers)
        .await
        .map_err(|failure| {
            unauthenticated(api, &failure, route);
            respond(&auth_error(failure), None)
        })
}

/// The answer to a failed authentication.
pub(super) fn auth_error(failure: AuthFailure) -> ApiError {
    match failure {
        AuthFailure::Missing | AuthFailure::Rejected { .. } => {
            ApiError::Call(CallError::Unauthorized)
        }
        AuthFailure::Unavailable(error) => {
            tracing::warn!(%error, "client keys unavailable");
            ApiError::Call(CallError::Unavailable {
                reason: "client keys cannot be read right now".into(),
                retry_after: Duration::from_secs(5),
            })
        }
        AuthFailure::Misconfigured(error) => {
            tracing::error!(%error, "client keys secret misconfigured");
            ApiError::Call(CallError::Internal {
                reason: error.to_string(),
            })
        }
    }
}

pub(super) fn respond(error: &ApiError, audit: Option<TriggerId>) -> Response {
    let mut response = error.response(audit);
    if matches!(error, ApiError::Call(CallError::Unauthorized)) {
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

pub(super) async fn admit(api: &TriggerApi, client: &Client) -> Result<(), ApiError> {
    let Some(rate) = client.rate else {
        return Ok(());
    };
    match api.rate_limiter().admit(client.name(), rate).await {
        Ok(Admission::Admitted) => Ok(()),
        Ok(Admission::Limited { retry_after }) => {
            Err(ApiError::Call(CallError::RateLimited { retry_after }))
        }
        Err(error) => Err(super::store_error(error).into()),
    }
}

/// Whether the media type is JSON (`application/json`, optionally `charset=utf-8`).
fn is_json(value: &HeaderValue) -> bool {
    let Ok(text) = value.to_str() else {
        return false;
    };
    let mut parts = text.split(';').map(str::trim);
    let essence_ok = parts
        .next()
        .is_some_and(|essence| essence.eq_ignore_ascii_case("application/json"));
    essence_ok
        && parts.all(|parameter| match parameter.split_once('=') {
            Some((name, value)) if name.trim().eq_ignore_ascii_case("charset") => {
                value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
            }
            _ => true,
        })
}

/// Reads at most `limit` bytes; `None` when the body is larger.
pub(super) async fn read_limited(body: Body, limit: usize) -> Result<Option<Vec<u8>>, ApiError> {
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|error| ApiError::Malformed {
            reason: format!("the body could not be read: {error}"),
        })?;
        if bytes.len() + chunk.len() > limit {
            return Ok(None);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Some(bytes))
}

/// Start the endpoint's action.
///
/// The body is optional; without `Idempotency-Key` every call is its own trigger.
#[utoipa::path(
    post,
    path = "/v1/endpoints/{name}",
    tag = "triggers",
    operation_id = "triggerEndpoint",
    params(
        ("name" = String, Path, description = "The endpoint's name from the triggers file"),
        ("Idempotency-Key" = Option<String>, Header, nullable = false,
            min_length = 1, max_length = 255, pattern = "^[!-~]+$",
            description = "1 to 255 visible ASCII characters. The same key with the same request returns the stored answer; with another request, 422; while the first is still running, 409 with Retry-After."),
    ),
    request_body(content = Option<TriggerRequestBody>, content_type = "application/json",
        description = "What to start: a branch or tag the endpoint allows, declared parameters, and for approve/rerun/cancel the workflow to act on."),
    responses(
        (status = 202, description = "Done on CircleCI (a pipeline was created, a job approved, a workflow rerun or canceled)", body = TriggerView,
            headers(("Location" = String, description = "The trigger's URL"), ("Idempotent-Replayed" = bool, description = "`true` when this is the stored answer of an earlier call with the same key"))),
        (status = 200, description = "Decided without acting, e.g. CircleCI started nothing (`not_triggered`)", body = TriggerView),
        (status = 400, description = "The body is not JSON", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "No valid client key", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The client may not call this endpoint", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 405, description = "Only POST", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "`request-in-progress`: the first request with this key is still running (Retry-After); `workflow-not-actionable`: no single workflow to act on", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than 64 KiB", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "The body is not `application/json`", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`invalid-request` (every violated rule in `errors`) or `idempotency-key-reused`", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "`rate-limited` (this client's rate) or `circleci-rate-limited` (CircleCI still limiting at the deadline); see Retry-After", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 500, description = "Internal error or misconfiguration (logged); nothing was triggered", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 502, description = "`circleci-unavailable` or `circleci-rejected` (nothing was triggered), or `outcome-unknown`: the request was sent and CircleCI may have acted (its answer was ambiguous, or ours could not be recorded); `trigger_id` names the trigger, the reconciler finds the pipeline, retry only with the same Idempotency-Key", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "A dependency of ours is unavailable; nothing was triggered", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 504, description = "`circleci-timeout`", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("client_key" = [])),
)]
pub(crate) async fn fire_endpoint(
    State(api): State<TriggerApi>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let requested = path.ok().map(|Path(name)| name);
    let key = idempotency_key(&headers);
    let audit_key: Option<String> = key.as_ref().ok().cloned().flatten();
    // Only an authenticated request is recorded when refused.
    let client = match client_or_refusal(&api, &headers, "POST /v1/endpoints/{name}").await {
        Ok(client) => client,
        Err(refusal) => return refusal,
    };
    let audit_client = Some(client.name().to_owned());
    macro_rules! refuse {
        ($error:expr) => {{
            let error = ApiError::from($error);
            let audit = api
                .audit_rejection(Rejection {
                    kind: SourceKind::Http,
                    endpoint: requested.as_deref(),
                    client: audit_client.as_deref(),
                    idempotency_key: audit_key.as_deref(),
                    error: &error,
                })
                .await;
            tracing::info!(
                endpoint = requested.as_deref().unwrap_or(""),
                status = error.status().as_u16(),
                problem = error.kind(),
                "trigger request refused"
            );
            return respond(&error, audit);
        }};
    }

    let Some(name) = requested.as_deref() else {
        refuse!(ApiError::Call(CallError::EndpointNotFound))
    };
    if api.catalog().endpoint(name).is_none() {
        refuse!(ApiError::Call(CallError::EndpointNotFound))
    }
    if !client.may_call(name) {
        refuse!(ApiError::Call(CallError::Forbidden {
            endpoint: name.to_owned()
        }))
    }
    if let Err(error) = admit(&api, client).await {
        refuse!(error)
    }
    let idempotency_key = match key {
        Ok(key) => key,
        Err(error) => refuse!(ApiError::Call(CallError::Invalid {
            errors: vec![error]
        })),
    };
    if let Some(content_type) = headers.get(CONTENT_TYPE)
        && !is_json(content_type)
    {
        refuse!(ApiError::UnsupportedMediaType)
    }
    let limit = api.settings().body_limit;
    let declared_length = headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<u64>().ok());
    if declared_length.is_some_and(|length| length > limit as u64) {
        refuse!(ApiError::PayloadTooLarge { limit })
    }
    let bytes = match read_limited(body, limit).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => refuse!(ApiError::PayloadTooLarge { limit }),
        Err(error) => refuse!(error),
    };
    if !bytes.is_empty() && headers.get(CONTENT_TYPE).is_none() {
        refuse!(ApiError::UnsupportedMediaType)
    }
    let input = match parse_body(&bytes) {
        Ok(input) => input,
        Err(BodyError::Malformed(reason)) => refuse!(ApiError::Malformed { reason }),
        Err(BodyError::Invalid(errors)) => refuse!(ApiError::Call(CallError::Invalid { errors })),
    };

    let call = Call {
        endpoint: name.to_owned(),
        caller: Caller::Client(client.name().to_owned()),
        idempotency_key: idempotency_key.clone(),
        input,
    };
    match api.call(call).await.map_err(ApiError::from) {
        Ok(called) => {
            let status = match called.record.status {
                TriggerStatus::Triggered => StatusCode::ACCEPTED,
                _ => StatusCode::OK,
            };
            tracing::info!(
                endpoint = name,
                client = client.name(),
                trigger_id = %called.record.id,
                status = %called.record.status,
                replayed = called.replayed,
                "trigger request answered"
            );
            let view = api.view(&called.record);
            let mut response = (status, axum::Json(view)).into_response();
            let headers = response.headers_mut();
            if let Ok(location) =
                HeaderValue::from_str(&format!("/v1/triggers/{}", called.record.id))
            {
                headers.insert(LOCATION, location);
            }
            headers.insert(
                IDEMPOTENT_REPLAYED,
                HeaderValue::from_static(if called.replayed { "true" } else { "false" }),
            );
            response
        }
        // Decided and recorded by the engine: its record is the story.
        Err(error @ ApiError::Call(CallError::Outcome { .. })) => {
            tracing::info!(
                endpoint = name,
                status = error.status().as_u16(),
                problem = error.kind(),
                "trigger failed"
            );
            respond(&error, None)
        }
        // A duplicate of a request still running: that request has the record.
        Err(error @ ApiError::Call(CallError::InProgress { .. })) => respond(&error, None),
        Err(error) => refuse!(error),
    }
}

/// Any method but POST on an endpoint: 405, answered before authentication, so nothing
/// is recorded (see the module documentation).
async fn endpoint_method_not_allowed() -> Response {
    respond(&ApiError::MethodNotAllowed { allow: "POST" }, None)
}

/// The client a GET request comes from, admitted by its rate.
async fn reader(
    api: &TriggerApi,
    headers: &HeaderMap,
    route: &'static str,
) -> Result<String, ApiError> {
    let client = match authenticate(api.catalog(), api.secrets(), headers).await {
        Ok(client) => client,
        Err(failure) => {
            unauthenticated(api, &failure, route);
            return Err(auth_error(failure));
        }
    };
    admit(api, client).await?;
    Ok(client.name().to_owned())
}

/// One of this client's own calls, refreshed from CircleCI while its pipeline
/// is not final.
#[utoipa::path(
    get,
    path = "/v1/triggers/{id}",
    tag = "triggers",
    operation_id = "getTrigger",
    params(("id" = uuid::Uuid, Path, description = "The trigger id (as answered by the trigger call)")),
    responses(
        (status = 200, description = "The trigger", body = TriggerView),
        (status = 401, description = "No valid client key", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No trigger of that id among this client's own calls", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "This client's rate is used up", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 500, description = "Internal error or misconfiguration (logged); nothing was triggered", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Temporarily unavailable", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("client_key" = [])),
)]
pub(crate) async fn get_trigger(
    State(api): State<TriggerApi>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let client = match reader(&api, &headers, "GET /v1/triggers/{id}").await {
        Ok(client) => client,
        Err(error) => return respond(&error, None),
    };
    let Some(id) = path
        .ok()
        .and_then(|Path(text)| text.parse::<TriggerId>().ok())
    else {
        return respond(&ApiError::Call(CallError::TriggerNotFound), None);
    };
    match api.trigger(id, &Caller::Client(client)).await {
        Ok(record) => axum::Json(api.view(&record)).into_response(),
        Err(error) => respond(&error.into(), None),
    }
}

/// Query of `GET /v1/triggers`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only this endpoint (one the client may call).
    #[param(nullable = false)]
    source: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100, nullable = false)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(nullable = false, min_length = 1, max_length = 8192)]
    cursor: Option<String>,
}

/// This client's own calls of its endpoints (never another client's), newest first.
#[utoipa::path(
    get,
    path = "/v1/triggers",
    tag = "triggers",
    operation_id = "listTriggers",
    params(ListQuery),
    responses(
        (status = 200, description = "One page", body = TriggerPage),
        (status = 400, description = "Unreadable query string", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "No valid client key", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`source` is not one of this client's endpoints", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Bad `limit` or `cursor`", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "This client's rate is used up", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 500, description = "Internal error or misconfiguration (logged); nothing was triggered", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Temporarily unavailable", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("client_key" = [])),
)]
pub(crate) async fn list_triggers(
    State(api): State<TriggerApi>,
    query: Result<Query<ListQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let client = match reader(&api, &headers, "GET /v1/triggers").await {
        Ok(client) => client,
        Err(error) => return respond(&error, None),
    };
    let Ok(Query(query)) = query else {
        return respond(
            &ApiError::Malformed {
                reason: "the query string cannot be read".into(),
            },
            None,
        );
    };
    let settings = api.settings();
    let limit = match query.limit.as_deref().map(str::parse::<u32>) {
        None => settings.default_page_size,
        Some(Ok(limit)) if (1..=settings.max_page_size).contains(&limit) => limit,
        Some(_) => {
            return respond(
                &ApiError::Call(CallError::Invalid {
                    errors: vec![FieldError::query(
                        "limit",
                        format!(
                            "must be a whole number from 1 to {}",
                            settings.max_page_size
                        ),
                    )],
                }),
                None,
            );
        }
    };
    let result = async {
        let sources = history::client_sources(&api, &client, query.source.as_deref())?;
        history::list(&api, &client, &sources, limit, query.cursor.as_deref()).await
    }
    .await;
    match result {
        Ok((records, next_cursor)) => {
            let page = TriggerPage {
                items: records.iter().map(|record| api.view(record)).collect(),
                next_cursor,
            };
            axum::Json(page).into_response()
        }
        Err(error) => respond(&error.into(), None),
    }
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "meta",
    operation_id = "getOpenApi",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)),
)]
pub(crate) async fn openapi_json() -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        super::openapi::document_json(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_json_in_utf8_is_accepted() {
        for good in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
        ] {
            assert!(is_json(&HeaderValue::from_static(good)), "{good}");
        }
        for bad in [
            "text/plain",
            "application/jsonp",
            "application/json; charset=latin1",
            "multipart/form-data",
        ] {
            assert!(!is_json(&HeaderValue::from_static(bad)), "{bad}");
        }
    }
}

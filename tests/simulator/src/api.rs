//! The HTTP face of the simulator: one fallback handler that records the request, applies
//! faults and dispatches on the decoded path (so `gh%2Forg%2Frepo` and `gh/org/repo` route
//! alike, as CircleCI's `allowReserved` slugs do).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::Inner;
use crate::faults::RateDecision;
use crate::render;
use crate::slug::Provider;
use crate::state::{ApiError, Caller, CreateRequest, RerunPlan, State, WebhookRec, parse_git_ref};
use crate::views::{GitRef, RecordedRequest, TriggerEndpoint};

/// Body of the 200 answer to a trigger CircleCI ignores because of a CI-skip directive.
pub const CI_SKIP_MESSAGE: &str =
    "Ignoring pipeline due to CI skip directive in the commit message.";
/// Body message of 401 answers (CircleCI's wording).
pub const UNAUTHORIZED_MESSAGE: &str = "You must log in first.";

const API_PREFIX: &str = "/api/v2";
const MAX_BODY_BYTES: usize = 1 << 20;
const BAD_GATEWAY_HTML: &str =
    "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>";

pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new().fallback(handle).with_state(inner)
}

/// A response before headers are attached.
enum Reply {
    Json(u16, Value),
    Html(u16, String),
}

impl Reply {
    fn status(&self) -> u16 {
        match self {
            Reply::Json(status, _) | Reply::Html(status, _) => *status,
        }
    }
}

impl From<ApiError> for Reply {
    fn from(error: ApiError) -> Self {
        Reply::Json(error.status, json!({ "message": error.message }))
    }
}

/// CircleCI finishes a request it has received even when the caller stops waiting (a client
/// timeout): the work runs in its own task, so a dropped connection does not cancel it and a
/// slow create still makes its pipeline, as a real one would.
async fn handle(state: AxumState<Arc<Inner>>, request: Request) -> Response {
    match tokio::spawn(handle_received(state, request)).await {
        Ok(response) => response,
        Err(_) => build_response(
            Reply::Json(500, json!({ "message": "simulator task failed" })),
            None,
            false,
        ),
    }
}

async fn handle_received(AxumState(inner): AxumState<Arc<Inner>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .unwrap_or_else(|_| Bytes::new());
    let method = parts.method.as_str().to_ascii_uppercase();
    let raw_path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(str::to_owned);
    let presented = presented_token(&parts.headers);
    let body_json: Option<Value> = if bytes.is_empty() {
        None
    } else {
        serde_json::from_slice(&bytes).ok()
    };
    let body_is_invalid_json = !bytes.is_empty() && body_json.is_none();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter(|(name, _)| *name != "circle-token" && *name != header::AUTHORIZATION)
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();

    // Phase 1: rate limit and injected failures, decided before the request has any effect.
    let (token, rate, early, latency, retry_after_header) = {
        let mut st = inner.lock();
        st.counters.requests += 1;
        st.in_flight += 1;
        st.counters.most_in_flight = st.counters.most_in_flight.max(st.in_flight);
        let token = presented.as_deref().and_then(|value| st.token_index(value));
        let key = token.map_or_else(|| "anonymous".to_owned(), |t| st.tokens[t].name.clone());
        let rate = st
            .faults
            .rate_limit
            .map(|limit| st.limiter.check(&key, limit, tokio::time::Instant::now()));
        let early = if rate.is_some_and(|r| r.retry_after_secs.is_some()) {
            st.counters.rate_limited += 1;
            Some(Reply::Json(429, json!({"message": "Rate limit exceeded."})))
        } else if should_inject_failure(&mut st, &method, &raw_path) {
            st.counters.injected_failures += 1;
            Some(failure_reply(st.faults.fail_status))
        } else {
            None
        };
        (
            token,
            rate,
            early,
            st.faults.latency,
            st.faults.retry_after_header,
        )
    };
    if !latency.is_zero() && early.as_ref().is_none_or(|r| r.status() != 429) {
        tokio::time::sleep(latency).await;
    }

    // Phase 2: the request itself.
    let (reply, deliveries_pending) = {
        let mut st = inner.lock();
        st.in_flight = st.in_flight.saturating_sub(1);
        let caller = token.map(|t| Caller {
            user: st.tokens[t].user,
            token: t,
        });
        let reply = match early {
            Some(reply) => reply,
            None => match caller {
                None => Reply::Json(401, json!({ "message": UNAUTHORIZED_MESSAGE })),
                Some(_) if body_is_invalid_json => {
                    ApiError::bad_request("Unexpected request body provided.").into()
                }
                Some(caller) => {
                    let ctx = Ctx {
                        method: &method,
                        query: query.as_deref(),
                        body: body_json.as_ref(),
                        caller,
                    };
                    match decoded_segments(&raw_path) {
                        Some(segments) => {
                            dispatch(&mut st, &ctx, &segments).unwrap_or_else(Reply::from)
                        }
                        None => ApiError::not_found("Not found.").into(),
                    }
                }
            },
        };
        let (user, token_name) = match token {
            Some(t) => (
                Some(st.users[st.tokens[t].user].login.clone()),
                Some(st.tokens[t].name.clone()),
            ),
            None => (None, None),
        };
        let at = st.now();
        st.record_request(RecordedRequest {
            method: method.clone(),
            path: raw_path.clone(),
            query: query.clone(),
            body: body_json.clone(),
            user,
            token_name,
            headers,
            status: reply.status(),
            at,
        });
        tracing::debug!(
            method = %method,
            path = %raw_path,
            status = reply.status(),
            token = token.map_or("-", |t| st.tokens[t].name.as_str()),
            "circleci-sim request"
        );
        (reply, !st.pending.is_empty())
    };
    if deliveries_pending {
        let inner = Arc::clone(&inner);
        tokio::spawn(async move { crate::deliver_pending(&inner).await });
    }
    build_response(reply, rate, retry_after_header)
}

fn build_response(reply: Reply, rate: Option<RateDecision>, retry_after_header: bool) -> Response {
    let mut response = match reply {
        Reply::Json(status, body) => (status_code(status), axum::Json(body)).into_response(),
        Reply::Html(status, body) => (
            status_code(status),
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
    };
    if let Some(rate) = rate {
        let headers = response.headers_mut();
        for (name, value) in [
            ("ratelimit-limit", rate.limit.to_string()),
            ("ratelimit-remaining", rate.remaining.to_string()),
            ("ratelimit-reset", rate.reset_secs.to_string()),
            ("x-ratelimit-limit", rate.limit.to_string()),
            ("x-ratelimit-remaining", rate.remaining.to_string()),
            ("x-ratelimit-reset", rate.reset_secs.to_string()),
        ] {
            insert_header(headers, name, &value);
        }
        if let Some(retry_after) = rate.retry_after_secs.filter(|_| retry_after_header) {
            insert_header(headers, "retry-after", &retry_after.to_string());
        }
    }
    response
}

fn insert_header(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn failure_reply(status: u16) -> Reply {
    if status >= 502 {
        // Gateways in front of CircleCI answer with HTML, not JSON.
        Reply::Html(
            status,
            BAD_GATEWAY_HTML.replace("502 Bad Gateway", &format!("{status} Error")),
        )
    } else {
        Reply::Json(status, json!({"message": "Internal server error."}))
    }
}

fn should_inject_failure(st: &mut State, method: &str, path: &str) -> bool {
    let faults = &st.faults;
    let method_ok = faults.fail_methods.is_empty()
        || faults
            .fail_methods
            .iter()
            .any(|m| m.eq_ignore_ascii_case(method));
    let path_ok = faults
        .fail_path_contains
        .as_deref()
        .is_none_or(|needle| path.contains(needle));
    if !method_ok || !path_ok {
        return false;
    }
    if st.faults.fail_next > 0 {
        st.faults.fail_next -= 1;
        return true;
    }
    if let Some(ratio) = st.faults.failure_ratio {
        return st.failure_rng.next_unit() < ratio.ratio;
    }
    false
}

/// `Circle-Token`, else `Authorization: Basic base64(token:)`, else `Authorization: Bearer`.
fn presented_token(headers: &HeaderMap) -> Option<String> {
    if let Some(value) = headers.get("circle-token").and_then(|v| v.to_str().ok()) {
        return Some(value.trim().to_owned());
    }
    let authorization = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = authorization.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.trim().to_owned());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        return Some(
            text.split_once(':')
                .map_or(text.as_str(), |(user, _)| user)
                .to_owned(),
        );
    }
    None
}

/// Path segments after `/api/v2`, each percent-decoded; encoded `/` become separators.
fn decoded_segments(raw_path: &str) -> Option<Vec<String>> {
    let rest = raw_path.strip_prefix(API_PREFIX)?;
    let mut segments = Vec::new();
    for raw in rest.split('/').filter(|s| !s.is_empty()) {
        let decoded = percent_decode_str(raw).decode_utf8().ok()?;
        segments.extend(
            decoded
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
    }
    Some(segments)
}

struct Ctx<'a> {
    method: &'a str,
    query: Option<&'a str>,
    body: Option<&'a Value>,
    caller: Caller,
}

impl Ctx<'_> {
    fn query_param(&self, name: &str) -> Option<String> {
        let query = self.query?;
        url_pairs(query)
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}

fn dispatch(st: &mut State, ctx: &Ctx<'_>, segments: &[String]) -> Result<Reply, ApiError> {
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (ctx.method, s.as_slice()) {
        ("GET", ["me"]) => Ok(Reply::Json(200, render::user(st, ctx.caller.user))),
        ("GET", ["project", p, o, r]) => {
            let project = st.project_for(&format!("{p}/{o}/{r}"), ctx.caller, false)?;
            Ok(Reply::Json(200, render::project(st, project)))
        }
        ("POST", ["project", p, o, r, "pipeline"]) => {
            trigger_legacy(st, ctx, &format!("{p}/{o}/{r}"))
        }
        ("GET", ["project", p, o, r, "pipeline"]) => {
            list_project_pipelines(st, ctx, &format!("{p}/{o}/{r}"))
        }
        ("POST", ["project", p, o, r, "pipeline", "run"]) => {
            trigger_run(st, ctx, &format!("{p}/{o}/{r}"))
        }
        ("GET", ["pipeline", id]) => {
            let pipeline = visible_pipeline(st, ctx, id)?;
            Ok(Reply::Json(200, render::pipeline(st, pipeline)))
        }
        ("GET", ["pipeline", id, "workflow"]) => {
            let pipeline = visible_pipeline(st, ctx, id)?;
            let items: Vec<usize> = (0..st.workflows.len())
                .filter(|w| st.workflows[*w].pipeline == pipeline)
                .collect();
            let (page, next) = paginate_offset(
                &items,
                ctx.query_param("page-token").as_deref(),
                st.page_size,
            )?;
            let items: Vec<Value> = page.iter().map(|w| render::workflow(st, *w)).collect();
            Ok(Reply::Json(
                200,
                json!({"items": items, "next_page_token": next}),
            ))
        }
        ("GET", ["workflow", id]) => {
            let workflow = visible_workflow(st, ctx, id, false)?;
            Ok(Reply::Json(200, render::workflow(st, workflow)))
        }
        ("GET", ["workflow", id, "job"]) => {
            let workflow = visible_workflow(st, ctx, id, false)?;
            let items: Vec<Value> = (0..st.workflows[workflow].jobs.len())
                .map(|j| render::job(st, workflow, j))
                .collect();
            Ok(Reply::Json(
                200,
                json!({"items": items, "next_page_token": Value::Null}),
            ))
        }
        ("POST", ["workflow", id, "rerun"]) => {
            let workflow = visible_workflow(st, ctx, id, true)?;
            let plan = rerun_plan(ctx.body)?;
            let new = st.rerun(workflow, plan, ctx.caller)?;
            Ok(Reply::Json(
                202,
                json!({"workflow_id": st.workflows[new].id}),
            ))
        }
        ("POST", ["workflow", id, "approve", approval]) => {
            let workflow = visible_workflow(st, ctx, id, true)?;
            let approval = parse_uuid(approval, "approval_request_id")?;
            st.approve(workflow, approval, ctx.caller)?;
            Ok(Reply::Json(202, json!({"message": "Accepted."})))
        }
        ("POST", ["workflow", id, "cancel"]) => {
            let workflow = visible_workflow(st, ctx, id, true)?;
            st.cancel(workflow, ctx.caller);
            Ok(Reply::Json(202, json!({"message": "Accepted."})))
        }
        ("POST", ["webhook"]) => create_webhook(st, ctx),
        ("GET", ["webhook"]) => list_webhooks(st, ctx),
        ("GET", ["webhook", id]) => {
            let hook = visible_webhook(st, ctx, id, false)?;
            Ok(Reply::Json(200, render::webhook(&st.webhooks[hook])))
        }
        ("PUT", ["webhook", id]) => update_webhook(st, ctx, id),
        ("DELETE", ["webhook", id]) => {
            let hook = visible_webhook(st, ctx, id, true)?;
            st.webhooks.remove(hook);
            Ok(Reply::Json(200, json!({"message": "Webhook deleted."})))
        }
        _ => Err(ApiError::not_found("Not found.")),
    }
}

fn parse_uuid(text: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text)
        .map_err(|_| ApiError::bad_request(format!("Invalid {what}: must be a UUID.")))
}

fn visible_pipeline(st: &State, ctx: &Ctx<'_>, id: &str) -> Result<usize, ApiError> {
    let id = parse_uuid(id, "pipeline-id")?;
    let not_found = || ApiError::not_found("Pipeline not found");
    let pipeline = st.find_pipeline(id).ok_or_else(not_found)?;
    if !st.can_see(st.pipelines[pipeline].project, ctx.caller.user) {
        return Err(not_found());
    }
    Ok(pipeline)
}

fn visible_workflow(st: &State, ctx: &Ctx<'_>, id: &str, write: bool) -> Result<usize, ApiError> {
    let id = parse_uuid(id, "workflow id")?;
    let not_found = || ApiError::not_found("Workflow not found");
    let workflow = st.find_workflow(id).ok_or_else(not_found)?;
    let project = st.workflows[workflow].project;
    if !st.can_see(project, ctx.caller.user) {
        return Err(not_found());
    }
    if write && !st.can_write(project, ctx.caller.user) {
        return Err(ApiError::forbidden());
    }
    Ok(workflow)
}

fn visible_webhook(st: &State, ctx: &Ctx<'_>, id: &str, write: bool) -> Result<usize, ApiError> {
    let id = parse_uuid(id, "webhook-id")?;
    let not_found = || ApiError::not_found("Webhook not found");
    let hook = st
        .webhooks
        .iter()
        .position(|h| h.id == id)
        .ok_or_else(not_found)?;
    let project = st
        .projects
        .iter()
        .position(|p| p.spec.id == st.webhooks[hook].scope_id)
        .ok_or_else(not_found)?;
    if !st.can_see(project, ctx.caller.user) {
        return Err(not_found());
    }
    if write && !st.can_write(project, ctx.caller.user) {
        return Err(ApiError::forbidden());
    }
    Ok(hook)
}

// ----- pagination ------------------------------------------------------------------------------

fn encode_token(kind: &str, value: i64) -> String {
    hex::encode(format!("{kind}:{value}"))
}

fn decode_token(token: &str, kind: &str) -> Result<i64, ApiError> {
    let invalid = || ApiError::bad_request("Invalid page-token.");
    let bytes = hex::decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (found, value) = text.split_once(':').ok_or_else(invalid)?;
    if found != kind {
        return Err(invalid());
    }
    value.parse().map_err(|_| invalid())
}

/// Offset pagination, for lists that only grow at the end.
fn paginate_offset<'a, T>(
    items: &'a [T],
    token: Option<&str>,
    size: usize,
) -> Result<(&'a [T], Option<String>), ApiError> {
    let start = match token.filter(|t| !t.is_empty()) {
        None => 0,
        Some(token) => usize::try_from(decode_token(token, "offset")?)
            .map_err(|_| ApiError::bad_request("Invalid page-token."))?,
    };
    let start = start.min(items.len());
    let end = start.saturating_add(size).min(items.len());
    let next =
        (end < items.len()).then(|| encode_token("offset", i64::try_from(end).unwrap_or(i64::MAX)));
    Ok((&items[start..end], next))
}

fn list_project_pipelines(st: &State, ctx: &Ctx<'_>, slug: &str) -> Result<Reply, ApiError> {
    let project = st.project_for(slug, ctx.caller, false)?;
    let branch = ctx.query_param("branch").filter(|b| !b.is_empty());
    let before = match ctx.query_param("page-token").filter(|t| !t.is_empty()) {
        None => i64::MAX,
        Some(token) => decode_token(&token, "before")?,
    };
    let mut matching: Vec<usize> = (0..st.pipelines.len())
        .filter(|p| {
            let rec = &st.pipelines[*p];
            rec.project == project
                && rec.number < before
                && branch
                    .as_ref()
                    .is_none_or(|b| rec.branch.as_ref() == Some(b))
        })
        .collect();
    matching.sort_by_key(|p| std::cmp::Reverse(st.pipelines[*p].number));
    let page: Vec<usize> = matching.iter().take(st.page_size).copied().collect();
    let next = (matching.len() > page.len())
        .then(|| {
            page.last()
                .map(|p| encode_token("before", st.pipelines[*p].number))
        })
        .flatten();
    let items: Vec<Value> = page.iter().map(|p| render::pipeline(st, *p)).collect();
    Ok(Reply::Json(
        200,
        json!({"items": items, "next_page_token": next}),
    ))
}

// ----- triggers ----------------------------------------------------------------------------------

fn body_object<'a>(ctx: &'a Ctx<'_>) -> Result<Option<&'a Map<String, Value>>, ApiError> {
    match ctx.body {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(object)) => Ok(Some(object)),
        Some(_) => Err(ApiError::bad_request("Unexpected request body provided.")),
    }
}

fn parameters_of(body: Option<&Map<String, Value>>) -> Result<Map<String, Value>, ApiError> {
    let parameters = match body.and_then(|b| b.get("parameters")) {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(parameters)) => parameters.clone(),
        Some(_) => return Err(ApiError::bad_request("parameters must be an object.")),
    };
    State::check_parameter_limits(&parameters)?;
    Ok(parameters)
}

fn finish_create(
    st: &mut State,
    project: usize,
    ctx: &Ctx<'_>,
    request: CreateRequest,
    state: &str,
) -> Reply {
    if st.faults.ci_skip_next > 0 {
        st.faults.ci_skip_next -= 1;
        return Reply::Json(200, json!({ "message": CI_SKIP_MESSAGE }));
    }
    let pipeline = st.create_pipeline(project, ctx.caller, request);
    if st.faults.create_then_502 > 0 {
        st.faults.create_then_502 -= 1;
        st.counters.injected_failures += 1;
        return Reply::Html(502, BAD_GATEWAY_HTML.to_owned());
    }
    let p = &st.pipelines[pipeline];
    Reply::Json(
        201,
        json!({"id": p.id, "state": state, "number": p.number, "created_at": render::ts(p.created_at)}),
    )
}

fn trigger_legacy(st: &mut State, ctx: &Ctx<'_>, slug: &str) -> Result<Reply, ApiError> {
    let project = st.project_for(slug, ctx.caller, true)?;
    if st.projects[project].slug.provider == Provider::CircleCi {
        return Err(ApiError::bad_request(
            "This endpoint does not support GitHub App or GitLab projects; use /pipeline/run instead.",
        ));
    }
    let body = body_object(ctx)?;
    if let Some(key) = body.and_then(|b| {
        b.keys()
            .find(|k| !matches!(k.as_str(), "branch" | "tag" | "parameters"))
    }) {
        return Err(ApiError::bad_request(format!(
            "Unexpected request body provided: unknown field {key}."
        )));
    }
    let text = |key: &str| -> Result<Option<String>, ApiError> {
        match body.and_then(|b| b.get(key)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::bad_request(format!("{key} must be a string."))),
        }
    };
    let (branch, tag) = (text("branch")?, text("tag")?);
    if branch.is_some() && tag.is_some() {
        return Err(ApiError::bad_request(
            "Only one of branch or tag may be given.",
        ));
    }
    let parameters = parameters_of(body)?;
    let request = CreateRequest {
        branch,
        tag,
        parameters,
        endpoint: TriggerEndpoint::Legacy,
    };
    Ok(finish_create(st, project, ctx, request, "pending"))
}

fn trigger_run(st: &mut State, ctx: &Ctx<'_>, slug: &str) -> Result<Reply, ApiError> {
    let project = st.project_for(slug, ctx.caller, true)?;
    let body = body_object(ctx)?;
    if let Some(key) = body.and_then(|b| {
        b.keys().find(|k| {
            !matches!(
                k.as_str(),
                "definition_id" | "config" | "checkout" | "parameters"
            )
        })
    }) {
        return Err(ApiError::bad_request(format!(
            "Unexpected request body provided: unknown field {key}."
        )));
    }
    let definitions = &st.projects[project].definitions;
    let definition_id = match body.and_then(|b| b.get("definition_id")) {
        None | Some(Value::Null) => definitions[0],
        Some(Value::String(text)) => {
            let id = parse_uuid(text, "definition_id")?;
            if !definitions.contains(&id) {
                return Err(ApiError::not_found("Pipeline definition not found"));
            }
            id
        }
        Some(_) => return Err(ApiError::bad_request("definition_id must be a string.")),
    };
    let config = parse_git_ref(body.and_then(|b| b.get("config")), "config")?;
    let checkout = parse_git_ref(body.and_then(|b| b.get("checkout")), "checkout")?;
    let (branch, tag) = match checkout.as_ref().or(config.as_ref()) {
        Some(GitRef::Branch(branch)) => (Some(branch.clone()), None),
        Some(GitRef::Tag(tag)) => (None, Some(tag.clone())),
        None => (None, None),
    };
    let parameters = parameters_of(body)?;
    let request = CreateRequest {
        branch,
        tag,
        parameters,
        endpoint: TriggerEndpoint::Run {
            definition_id,
            config,
            checkout,
        },
    };
    Ok(finish_create(st, project, ctx, request, "created"))
}

fn rerun_plan(body: Option<&Value>) -> Result<RerunPlan, ApiError> {
    let Some(Value::Object(body)) = body else {
        return Ok(RerunPlan::All);
    };
    let from_failed = match body.get("from_failed") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::bad_request("from_failed must be a boolean.")),
    };
    let jobs = match body.get("jobs") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .ok_or_else(|| ApiError::bad_request("jobs must be job ids."))
                    .and_then(|s| parse_uuid(s, "job id"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ApiError::bad_request("jobs must be an array of job ids.")),
    };
    if body.get("sparse_tree").and_then(Value::as_bool) == Some(true) && jobs.is_empty() {
        return Err(ApiError::bad_request("sparse_tree requires jobs."));
    }
    match (from_failed, jobs.is_empty()) {
        (true, false) => Err(ApiError::bad_request(
            "from_failed and jobs cannot be used together.",
        )),
        (true, true) => Ok(RerunPlan::FromFailed),
        (false, false) => Ok(RerunPlan::Jobs(jobs)),
        (false, true) => Ok(RerunPlan::All),
    }
}

// ----- webhooks ----------------------------------------------------------------------------------

const WEBHOOK_EVENTS: [&str; 2] = [
    crate::webhook::WORKFLOW_COMPLETED,
    crate::webhook::JOB_COMPLETED,
];

fn check_url(url: &str) -> Result<(), ApiError> {
    let parsed =
        reqwest::Url::parse(url).map_err(|_| ApiError::bad_request("url must be a valid URL."))?;
    let loopback = matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    match parsed.scheme() {
        "https" => Ok(()),
        // Real CircleCI only accepts https; plain http to a local receiver keeps tests simple.
        "http" if loopback => Ok(()),
        _ => Err(ApiError::bad_request("url must use https.")),
    }
}

fn check_events(value: &Value) -> Result<Vec<String>, ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "events must be a non-empty array of workflow-completed and job-completed.",
        )
    };
    let items = value
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or_else(invalid)?;
    let mut events = Vec::new();
    for item in items {
        let event = item
            .as_str()
            .filter(|e| WEBHOOK_EVENTS.contains(e))
            .ok_or_else(invalid)?;
        if !events.iter().any(|e: &String| e == event) {
            events.push(event.to_owned());
        }
    }
    Ok(events)
}

fn create_webhook(st: &mut State, ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let body =
        body_object(ctx)?.ok_or_else(|| ApiError::bad_request("A request body is required."))?;
    let field = |key: &str| {
        body.get(key)
            .ok_or_else(|| ApiError::bad_request(format!("{key} is required.")))
    };
    let string = |key: &str| -> Result<String, ApiError> {
        field(key)?
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ApiError::bad_request(format!("{key} must be a string.")))
    };
    let name = string("name")?;
    let url = string("url")?;
    let secret = string("signing-secret")?;
    let verify_tls = field("verify-tls")?
        .as_bool()
        .ok_or_else(|| ApiError::bad_request("verify-tls must be a boolean."))?;
    let events = check_events(field("events")?)?;
    let scope = field("scope")?
        .as_object()
        .ok_or_else(|| ApiError::bad_request("scope must be an object."))?;
    if scope.get("type").and_then(Value::as_str) != Some("project") {
        return Err(ApiError::bad_request("scope.type must be project."));
    }
    let scope_id = parse_uuid(
        scope.get("id").and_then(Value::as_str).unwrap_or_default(),
        "scope.id",
    )?;
    if name.trim().is_empty() {
        return Err(ApiError::bad_request("name must not be empty."));
    }
    check_url(&url)?;
    let project = st
        .projects
        .iter()
        .position(|p| p.spec.id == scope_id)
        .filter(|p| st.can_see(*p, ctx.caller.user))
        .ok_or_else(|| ApiError::not_found("Project not found"))?;
    if !st.can_write(project, ctx.caller.user) {
        return Err(ApiError::forbidden());
    }
    let existing = st
        .webhooks
        .iter()
        .filter(|h| h.scope_id == scope_id)
        .count();
    if existing >= st.max_webhooks {
        return Err(ApiError::bad_request(format!(
            "A project can have at most {} webhooks; delete one before creating another.",
            st.max_webhooks
        )));
    }
    let now = st.now();
    let hook = WebhookRec {
        id: Uuid::new_v4(),
        name,
        url,
        secret,
        events,
        verify_tls,
        scope_id,
        created_at: now,
        updated_at: now,
    };
    let reply = render::webhook(&hook);
    st.webhooks.push(hook);
    Ok(Reply::Json(201, reply))
}

fn list_webhooks(st: &State, ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let scope_type = ctx.query_param("scope-type");
    if scope_type.as_deref() != Some("project") {
        return Err(ApiError::bad_request("scope-type must be project."));
    }
    let scope_id = parse_uuid(&ctx.query_param("scope-id").unwrap_or_default(), "scope-id")?;
    let project = st
        .projects
        .iter()
        .position(|p| p.spec.id == scope_id)
        .filter(|p| st.can_see(*p, ctx.caller.user))
        .ok_or_else(|| ApiError::not_found("Project not found"))?;
    let project_id = st.projects[project].spec.id;
    let items: Vec<Value> = st
        .webhooks
        .iter()
        .filter(|h| h.scope_id == project_id)
        .map(render::webhook)
        .collect();
    Ok(Reply::Json(
        200,
        json!({"items": items, "next_page_token": Value::Null}),
    ))
}

fn update_webhook(st: &mut State, ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    let hook = visible_webhook(st, ctx, id, true)?;
    let body =
        body_object(ctx)?.ok_or_else(|| ApiError::bad_request("A request body is required."))?;
    if let Some(key) = body.keys().find(|k| {
        !matches!(
            k.as_str(),
            "name" | "events" | "url" | "signing-secret" | "verify-tls"
        )
    }) {
        return Err(ApiError::bad_request(format!(
            "Unexpected request body provided: unknown field {key}."
        )));
    }
    let mut updated = st.webhooks[hook].clone();
    let string = |key: &str| -> Result<Option<String>, ApiError> {
        match body.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::bad_request(format!("{key} must be a string."))),
        }
    };
    if let Some(name) = string("name")? {
        updated.name = name;
    }
    if let Some(url) = string("url")? {
        check_url(&url)?;
        updated.url = url;
    }
    if let Some(secret) = string("signing-secret")? {
        updated.secret = secret;
    }
    if let Some(value) = body.get("verify-tls") {
        updated.verify_tls = value
            .as_bool()
            .ok_or_else(|| ApiError::bad_request("verify-tls must be a boolean."))?;
    }
    if let Some(events) = body.get("events") {
        updated.events = check_events(events)?;
    }
    updated.updated_at = st.now();
    let reply = render::webhook(&updated);
    st.webhooks[hook] = updated;
    Ok(Reply::Json(200, reply))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn encoded_slashes_split_like_plain_ones() {
        assert_eq!(
            decoded_segments("/api/v2/project/gh%2Facme%2Fapi/pipeline"),
            decoded_segments("/api/v2/project/gh/acme/api/pipeline")
        );
        assert_eq!(decoded_segments("/api/v2/me").unwrap(), vec!["me"]);
        assert!(decoded_segments("/v1/me").is_none());
    }

    #[test]
    fn basic_auth_uses_the_user_part() {
        let mut headers = HeaderMap::new();
        let encoded = base64::engine::general_purpose::STANDARD.encode("tok123:");
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {encoded}")).unwrap(),
        );
        assert_eq!(presented_token(&headers).as_deref(), Some("tok123"));
    }

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        let items: Vec<u32> = (0..5).collect();
        let (first, next) = paginate_offset(&items, None, 2).unwrap();
        assert_eq!(first, &[0, 1]);
        let (second, _) = paginate_offset(&items, next.as_deref(), 2).unwrap();
        assert_eq!(second, &[2, 3]);
        assert!(paginate_offset(&items, Some("zz"), 2).is_err());
        assert!(paginate_offset(&items, Some(&encode_token("before", 3)), 2).is_err());
    }
}

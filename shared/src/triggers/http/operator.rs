//! `POST /v1/schedules/{name}/runs`: an operator runs a schedule now or at one of its slots
//! ([`crate::triggers::scheduled::Scheduler::run`]), on the `http` function and under
//! `serve` alike.
//!
//! Only clients with `operator = true` may call it; the client's name is the operator's
//! identity on the record (`detail.operator`). Exactly once per slot comes from the slot's
//! claim key: a slot that already fired is answered with its record (`replayed`), nothing
//! sent. A paused schedule is refused (409 `schedule-paused`) unless the body says
//! `"ignore_pause": true`, which is written on the record. Refusals decide nothing and are
//! not recorded (the answer and a log line say why).

use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::problem::ProblemDoc;
use super::view::TriggerView;
use super::{ApiError, CallError, TriggerApi};
use crate::http::Problem;
use crate::triggers::scheduled::{RunReport, RunRequest, SchedulerError};

/// The `type` suffix of a run refused because the schedule is paused.
pub const SCHEDULE_PAUSED: &str = "schedule-paused";
/// Longest `run_id` accepted.
pub const MAX_RUN_ID_LEN: usize = 128;

/// What to run.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRunBody {
    /// One of the schedule's slots, as its UTC instant (RFC 3339). A slot fires at most
    /// once, whoever asks (the tick, a run, a backfill). Absent: run now, outside the cron.
    #[serde(default)]
    pub at: Option<DateTime<Utc>>,
    /// Without `at`: repeating a request with the same id replays its answer.
    #[serde(default)]
    pub run_id: Option<String>,
    /// Run even though the schedule is paused; the override is recorded.
    #[serde(default)]
    pub ignore_pause: bool,
}

/// What a run did: one trigger per target of the schedule.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScheduleRunView {
    pub schedule: String,
    /// The slot: its UTC instant, or `manual:<run id>` for a run now.
    pub slot: String,
    /// The instant the schedule's parameter templates were rendered for.
    pub at: DateTime<Utc>,
    /// Targets decided by this request.
    pub fired: u32,
    /// Targets decided before (the slot already fired): nothing was sent.
    pub replayed: u32,
    /// Targets held by another invocation right now.
    pub in_progress: u32,
    /// The pause this run overrode (`ignore_pause`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub ignored_pause: Option<String>,
    pub triggers: Vec<TriggerView>,
}

impl ScheduleRunView {
    fn of(report: &RunReport, api: &TriggerApi) -> Self {
        let performed = report
            .targets
            .iter()
            .filter(|t| t.outcome == "performed")
            .count();
        Self {
            schedule: report.schedule.clone(),
            slot: report.slot.clone(),
            at: report.at,
            fired: u32::try_from(performed).unwrap_or(u32::MAX),
            replayed: report.counts.duplicates,
            in_progress: report.counts.in_progress,
            ignored_pause: report.ignored_pause.clone(),
            triggers: report
                .targets
                .iter()
                .filter_map(|t| t.record.as_ref())
                .map(|record| api.view(record))
                .collect(),
        }
    }
}

fn problem(status: StatusCode, kind: &str, title: &str, detail: impl Into<String>) -> Response {
    Problem::new(status, kind, title)
        .with_detail(detail)
        .into_response()
}

/// 403 for a client without `operator = true`; `what` needs it.
fn not_an_operator(what: &str) -> Response {
    problem(
        StatusCode::FORBIDDEN,
        super::problem::kinds::FORBIDDEN,
        "Not allowed for this client",
        format!("{what} needs a client with `operator = true`"),
    )
}

fn refused(name: &str, client: &str, response: Response) -> Response {
    tracing::info!(
        schedule = name,
        client,
        status = response.status().as_u16(),
        "schedule run refused (nothing recorded)"
    );
    response
}

/// Run a schedule now or at one of its slots (operator clients only).
#[utoipa::path(
    post,
    path = "/v1/schedules/{name}/runs",
    tag = "operator",
    operation_id = "runSchedule",
    params(("name" = String, Path, description = "The schedule's name, as in its `[[schedule]]` entry")),
    request_body(content = Option<ScheduleRunBody>, content_type = "application/json",
        description = "Which slot (`at`), or now; `ignore_pause` to run a paused schedule."),
    responses(
        (status = 202, description = "Run: at least one target was decided by this request", body = ScheduleRunView),
        (status = 200, description = "The slot had already fired (or is being fired): its triggers, nothing sent", body = ScheduleRunView),
        (status = 400, description = "The body is not JSON of this shape", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "No valid client key", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The client has no `operator` scope", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such schedule", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 405, description = "Only POST", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "`schedule-paused`: the schedule is paused and `ignore_pause` is not set", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than 64 KiB", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`invalid-request`: `at` is not a slot of the schedule, or in the future; a bad `run_id`", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "This client's rate is used up", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 500, description = "Internal error or misconfiguration (logged)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is unavailable; retry the same request", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("client_key" = [])),
)]
pub(crate) async fn run_schedule(
    State(api): State<TriggerApi>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let client =
        match super::handlers::client_or_refusal(&api, &headers, "POST /v1/schedules/{name}/runs")
            .await
        {
            Ok(client) => client,
            Err(refusal) => return refusal,
        };
    let name = path.map(|Path(name)| name).unwrap_or_default();
    let client_name = client.name().to_owned();
    if !client.spec.operator {
        return refused(&name, &client_name, not_an_operator("running schedules"));
    }
    if let Err(error) = super::handlers::admit(&api, client).await {
        return super::handlers::respond(&error, None);
    }
    let limit = api.settings().body_limit;
    let bytes = match super::handlers::read_limited(body, limit).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return super::handlers::respond(&ApiError::PayloadTooLarge { limit }, None),
        Err(error) => return super::handlers::respond(&error, None),
    };
    let run: ScheduleRunBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        ScheduleRunBody::default()
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(run) => run,
            Err(error) => {
                // serde's message names the field, never more than a short excerpt.
                let reason = error.to_string().chars().take(200).collect::<String>();
                return super::handlers::respond(&ApiError::Malformed { reason }, None);
            }
        }
    };
    if let Some(id) = &run.run_id
        && (id.is_empty() || id.len() > MAX_RUN_ID_LEN || !id.bytes().all(|b| b.is_ascii_graphic()))
    {
        return refused(
            &name,
            &client_name,
            problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                super::problem::kinds::INVALID_REQUEST,
                "Invalid request",
                format!("`run_id` must be 1 to {MAX_RUN_ID_LEN} visible ASCII characters"),
            ),
        );
    }
    let request = RunRequest {
        schedule: name.clone(),
        at: run.at,
        run_id: run.run_id,
        operator: client_name.clone(),
        ignore_pause: run.ignore_pause,
    };
    let now = api.engine().clock().now();
    match api.scheduler().run(&request, now).await {
        Ok(report) => {
            let view = ScheduleRunView::of(&report, &api);
            let status = if view.fired > 0 {
                StatusCode::ACCEPTED
            } else {
                StatusCode::OK
            };
            (status, axum::Json(view)).into_response()
        }
        Err(error) => refused(&name, &client_name, scheduler_problem(&error)),
    }
}

fn scheduler_problem(error: &SchedulerError) -> Response {
    use super::problem::kinds;
    let detail = error.to_string();
    match error {
        SchedulerError::UnknownSchedule { .. } => {
            problem(StatusCode::NOT_FOUND, kinds::NOT_FOUND, "Not found", detail)
        }
        SchedulerError::Paused { .. } => problem(
            StatusCode::CONFLICT,
            SCHEDULE_PAUSED,
            "The schedule is paused",
            detail.replace("--ignore-pause", "`\"ignore_pause\": true`"),
        ),
        SchedulerError::NotASlot { .. }
        | SchedulerError::FutureSlot { .. }
        | SchedulerError::InvalidRange(_)
        | SchedulerError::FutureTick { .. } => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            kinds::INVALID_REQUEST,
            "Invalid request",
            detail,
        ),
        SchedulerError::Definition { .. } => {
            tracing::error!(%error, "schedule definition");
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                kinds::INTERNAL,
                "Internal error",
                detail,
            )
        }
        SchedulerError::Engine(engine) if engine.is_retryable() => {
            tracing::warn!(%error, "schedule run: unavailable");
            let api_error = ApiError::Call(CallError::Unavailable {
                reason: "a dependency is unavailable".into(),
                retry_after: Duration::from_secs(1),
            });
            super::handlers::respond(&api_error, None)
        }
        SchedulerError::Engine(_) => {
            tracing::error!(%error, "schedule run failed");
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                kinds::INTERNAL,
                "Internal error",
                "the run could not be completed; see the logs",
            )
        }
    }
}

/// The status page (`shared::console::page`) for operator clients: schedules, what needs
/// attention, recent triggers as origin trees, chain rules. Other clients see only their
/// own calls (`GET /v1/triggers`), so the page, which shows every trigger, is theirs only
/// with `operator = true`.
#[utoipa::path(
    get,
    path = "/v1/status",
    tag = "operator",
    operation_id = "statusPage",
    responses(
        (status = 200, description = "The status page (read-only HTML)", body = String, content_type = "text/html"),
        (status = 401, description = "No valid client key", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The client has no `operator` scope", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "This client's rate is used up", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 500, description = "Internal error or misconfiguration (logged)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is unavailable; retry the same request", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("client_key" = [])),
)]
pub(crate) async fn status_page(State(api): State<TriggerApi>, headers: HeaderMap) -> Response {
    let client = match super::handlers::client_or_refusal(&api, &headers, "GET /v1/status").await {
        Ok(client) => client,
        Err(refusal) => return refusal,
    };
    if !client.spec.operator {
        return not_an_operator("the status page");
    }
    if let Err(error) = super::handlers::admit(&api, client).await {
        return super::handlers::respond(&error, None);
    }
    let page = crate::console::page::StatusPage {
        triggers: api.scheduler().shared_triggers(),
        store: api.engine().store().clone(),
        clock: api.engine().clock().clone(),
    };
    crate::console::page::respond(&page).await
}

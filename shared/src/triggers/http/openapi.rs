//! The OpenAPI document of the HTTP trigger API, generated from the handlers and types
//! (utoipa). `docs/openapi.json` in the repository is this document; a test keeps them equal.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::handlers;
use super::operator::{self, ScheduleRunBody, ScheduleRunView};
use super::problem::ProblemDoc;
use super::request::{FieldError, TriggerRequestBody};
use super::view::{PipelineView, TriggerPage, TriggerState, TriggerView, WorkflowView};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "circleci-triggers HTTP API",
        description = "Start CircleCI pipelines, approvals, reruns and cancels through named endpoints, \
                       with keys scoped to them, a declared parameter contract and idempotent calls.\n\n\
                       Authenticate with `Authorization: Bearer <client>.<secret>`. Errors are \
                       `application/problem+json` (RFC 9457) with a stable `type` per kind of error.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        handlers::fire_endpoint,
        handlers::get_trigger,
        handlers::list_triggers,
        handlers::openapi_json,
        operator::run_schedule,
        operator::status_page,
    ),
    components(schemas(
        TriggerRequestBody,
        TriggerView,
        TriggerState,
        PipelineView,
        WorkflowView,
        TriggerPage,
        ProblemDoc,
        FieldError,
        ScheduleRunBody,
        ScheduleRunView,
    )),
    modifiers(&ClientKeyScheme),
    tags(
        (name = "triggers", description = "Call endpoints and read their history"),
        (name = "operator", description = "Run schedules and read the status page (clients with `operator = true`)"),
        (name = "meta", description = "This document"),
    ),
)]
struct ApiDoc;

/// Declares the `client_key` bearer scheme the operations refer to.
struct ClientKeyScheme;

impl Modify for ClientKeyScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "client_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("<client>.<secret>")
                    .description(Some(
                        "A key minted with `circleci-triggers mint-key CLIENT`; only its SHA-256 is stored.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as committed in `docs/openapi.json`: pretty JSON with a final newline.
pub fn document_json() -> String {
    let mut text = document()
        .to_pretty_json()
        .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"));
    text.push('\n');
    text
}

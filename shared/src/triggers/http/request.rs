//! What a caller asks an endpoint for, and its validation against the endpoint's contract:
//! the parameter schema, the branch policy and the workflow selection.
//!
//! Every violated rule is reported (not only the first), each with where it is: a JSON
//! pointer into the body, a header or a query parameter. Names and values that come from
//! the caller are quoted shortened, so an error answer cannot echo a large input back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use super::catalog::Endpoint;
use crate::circleci::GitRef;
use crate::config::endpoint::{EndpointSelect, ParameterType};
use crate::config::rules::{MAX_PARAMETER_NAME_LEN, MAX_PARAMETERS, check_git_ref};
use crate::config::{ActionKind, ParameterValue};
use crate::store::{Fingerprint, TriggerId};

/// Most field errors listed in one answer; the rest are summarised in a last entry.
pub const MAX_FIELD_ERRORS: usize = 50;
/// Longest caller-supplied text quoted back in an error.
const QUOTE_LEN: usize = 64;
/// Longest `select` value.
const MAX_SELECT_LEN: usize = 128;

/// One violated rule, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// JSON pointer into the request body (RFC 6901), e.g. `/parameters/version`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub pointer: Option<String>,
    /// The request header at fault, e.g. `Idempotency-Key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub header: Option<String>,
    /// The query parameter at fault, e.g. `limit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub parameter: Option<String>,
    /// What is wrong.
    pub detail: String,
}

impl FieldError {
    pub fn body(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            pointer: Some(pointer.into()),
            header: None,
            parameter: None,
            detail: detail.into(),
        }
    }

    pub fn header(name: &str, detail: impl Into<String>) -> Self {
        Self {
            pointer: None,
            header: Some(name.to_owned()),
            parameter: None,
            detail: detail.into(),
        }
    }

    pub fn query(name: &str, detail: impl Into<String>) -> Self {
        Self {
            pointer: None,
            header: None,
            parameter: Some(name.to_owned()),
            detail: detail.into(),
        }
    }

    /// `pointer: detail` (or `header ...`), for logs and audit reasons.
    pub fn summary(&self) -> String {
        let place = self
            .pointer
            .as_deref()
            .map(|p| {
                if p.is_empty() {
                    "body".to_owned()
                } else {
                    p.to_owned()
                }
            })
            .or_else(|| self.header.as_ref().map(|h| format!("header {h}")))
            .or_else(|| self.parameter.as_ref().map(|q| format!("query {q}")))
            .unwrap_or_default();
        format!("{place}: {}", self.detail)
    }
}

/// Caps a list of errors at [`MAX_FIELD_ERRORS`], noting how many were left out.
pub fn capped(mut errors: Vec<FieldError>) -> Vec<FieldError> {
    if errors.len() > MAX_FIELD_ERRORS {
        let left_out = errors.len() - (MAX_FIELD_ERRORS - 1);
        errors.truncate(MAX_FIELD_ERRORS - 1);
        errors.push(FieldError::body(
            "",
            format!("{left_out} more problems not listed"),
        ));
    }
    errors
}

/// Caller text shortened for quoting in an error.
pub(crate) fn quote(text: &str) -> String {
    let mut quoted: String = text.chars().take(QUOTE_LEN).collect();
    if text.chars().count() > QUOTE_LEN {
        quoted.push('…');
    }
    quoted.escape_debug().to_string()
}

/// RFC 6901 escaping of one reference token (shortened like [`quote`]).
fn pointer_token(name: &str) -> String {
    let mut token: String = name.chars().take(QUOTE_LEN).collect();
    if name.chars().count() > QUOTE_LEN {
        token.push('…');
    }
    token.replace('~', "~0").replace('/', "~1")
}

fn parameter_pointer(name: &str) -> String {
    format!("/parameters/{}", pointer_token(name))
}

// Documentation shape: bodies are read by `parse_body`, which reports every problem at once.
/// What to start: every member is optional; an empty body is an empty object.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TriggerRequest)]
pub struct TriggerRequestBody {
    /// A branch the endpoint's policy allows (default: its fixed branch, if any).
    #[schema(min_length = 1, max_length = 255, example = "release/1.4")]
    pub branch: Option<String>,
    /// A tag the endpoint's policy allows (instead of a branch).
    #[schema(min_length = 1, max_length = 255)]
    pub tag: Option<String>,
    /// Values of the endpoint's declared parameters (strings, integers, booleans).
    #[schema(value_type = Option<Object>, example = json!({"version": "1.4.2"}))]
    pub parameters: Option<Map<String, Value>>,
    /// Approve, rerun and cancel endpoints: the workflow to act on. `trigger:<id>` (a trigger
    /// of ours: the pipelines it started), `pipeline:<id>`, `revision:<sha>`, `latest` (if the
    /// endpoint allows it); a bare UUID is a trigger id if we know one, else a pipeline id; a
    /// bare hex string is a revision.
    #[schema(
        min_length = 1,
        max_length = 128,
        example = "trigger:0190b8c2-6c0e-7d4e-8a51-1f0e4c3b2a19"
    )]
    pub select: Option<String>,
}

/// What a caller asks for, from the HTTP body or the CLI's flags.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallInput {
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub parameters: Map<String, Value>,
    pub select: Option<String>,
}

/// Why a body could not be read as a request at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON (or not UTF-8).
    Malformed(String),
    /// JSON, but not the request's shape.
    Invalid(Vec<FieldError>),
}

/// Reads a request body: empty means "no choices"; otherwise a JSON object with only the
/// documented members, each of its documented type.
pub fn parse_body(body: &[u8]) -> Result<CallInput, BodyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(CallInput::default());
    }
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        // serde_json's message names the line and column, never the input itself.
        BodyError::Malformed(format!("the body is not valid JSON: {error}"))
    })?;
    let Value::Object(object) = value else {
        return Err(BodyError::Invalid(vec![FieldError::body(
            "",
            "the body must be a JSON object",
        )]));
    };
    let mut input = CallInput::default();
    let mut errors = Vec::new();
    for (key, value) in object {
        let pointer = format!("/{}", pointer_token(&key));
        let text = |value: Value, errors: &mut Vec<FieldError>| match value {
            Value::Null => None,
            Value::String(text) => Some(text),
            _ => {
                errors.push(FieldError::body(&pointer, "must be a string"));
                None
            }
        };
        match key.as_str() {
            "branch" => input.branch = text(value, &mut errors),
            "tag" => input.tag = text(value, &mut errors),
            "select" => input.select = text(value, &mut errors),
            "parameters" => match value {
                Value::Null => {}
                Value::Object(parameters) => input.parameters = parameters,
                _ => errors.push(FieldError::body(
                    &pointer,
                    "must be an object of parameter names to values",
                )),
            },
            _ => errors.push(FieldError::body(
                &pointer,
                format!(
                    "unknown member `{}` (allowed: branch, tag, parameters, select)",
                    quote(&key)
                ),
            )),
        }
    }
    if errors.is_empty() {
        Ok(input)
    } else {
        Err(BodyError::Invalid(errors))
    }
}

/// How the workflow of an approve / rerun / cancel is named by a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectSpec {
    /// The pipelines a trigger of ours started (and those chained from it, on the project).
    Trigger(TriggerId),
    Pipeline(Uuid),
    /// A bare UUID: a trigger id when one is recorded, else a pipeline id.
    TriggerOrPipeline(Uuid),
    Revision(String),
    /// The newest pipeline on the branch (only where the endpoint allows it).
    Latest,
}

impl SelectSpec {
    /// The canonical spelling (part of the idempotency fingerprint).
    pub fn canonical(&self) -> String {
        match self {
            SelectSpec::Trigger(id) => format!("trigger:{id}"),
            SelectSpec::Pipeline(id) => format!("pipeline:{id}"),
            SelectSpec::TriggerOrPipeline(id) => id.to_string(),
            SelectSpec::Revision(sha) => format!("revision:{sha}"),
            SelectSpec::Latest => "latest".to_owned(),
        }
    }

    fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() || text.len() > MAX_SELECT_LEN {
            return Err(format!("must be 1 to {MAX_SELECT_LEN} characters"));
        }
        let uuid = |value: &str, what: &str| {
            Uuid::parse_str(value).map_err(|_| format!("`{}` is not a {what} id", quote(value)))
        };
        let revision = |value: &str| {
            let valid =
                (7..=64).contains(&value.len()) && value.chars().all(|c| c.is_ascii_hexdigit());
            if valid {
                Ok(SelectSpec::Revision(value.to_ascii_lowercase()))
            } else {
                Err(format!(
                    "`{}` is not a revision (7 to 64 hex digits)",
                    quote(value)
                ))
            }
        };
        if text == "latest" {
            return Ok(SelectSpec::Latest);
        }
        match text.split_once(':') {
            Some(("trigger", id)) => uuid(id, "trigger").map(|u| SelectSpec::Trigger(TriggerId::from_uuid(u))),
            Some(("pipeline", id)) => uuid(id, "pipeline").map(SelectSpec::Pipeline),
            Some(("revision", sha)) => revision(sha),
            Some(_) => Err(
                "expected `trigger:<id>`, `pipeline:<id>`, `revision:<sha>`, `latest`, a UUID or a revision"
                    .to_owned(),
            ),
            None => match Uuid::parse_str(text) {
                Ok(id) => Ok(SelectSpec::TriggerOrPipeline(id)),
                Err(_) => revision(text),
            },
        }
    }
}

/// A request that satisfies the endpoint's contract.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidCall {
    /// The ref to use: the caller's (allowed by the policy) or the endpoint's fixed one;
    /// `None`: the project's default branch.
    pub git_ref: Option<GitRef>,
    /// The declared parameters, defaults applied (fixed ones are added by the target).
    pub parameters: BTreeMap<String, ParameterValue>,
    pub select: Option<SelectSpec>,
}

impl ValidCall {
    /// The canonical form of the request for idempotency: the same key with another
    /// fingerprint is a different request.
    pub fn fingerprint(&self, endpoint: &Endpoint) -> Fingerprint {
        let git_ref = match &self.git_ref {
            Some(GitRef::Branch(name)) => serde_json::json!({ "branch": name }),
            Some(GitRef::Tag(name)) => serde_json::json!({ "tag": name }),
            None => Value::Null,
        };
        let parameters: Map<String, Value> = self
            .parameters
            .iter()
            .map(|(name, value)| (name.clone(), parameter_json(value)))
            .collect();
        Fingerprint::of_json(&serde_json::json!({
            "endpoint": endpoint.name(),
            "action": endpoint.spec.action.as_str(),
            "ref": git_ref,
            "parameters": parameters,
            "select": self.select.as_ref().map(SelectSpec::canonical),
        }))
    }
}

pub(crate) fn parameter_json(value: &ParameterValue) -> Value {
    match value {
        ParameterValue::String(text) => Value::String(text.clone()),
        ParameterValue::Integer(number) => Value::from(*number),
        ParameterValue::Boolean(flag) => Value::Bool(*flag),
    }
}

/// Checks a request against the endpoint: parameters (closed schema, defaults), branch
/// policy and selection. Returns every violation.
pub fn validate(endpoint: &Endpoint, input: &CallInput) -> Result<ValidCall, Vec<FieldError>> {
    let mut errors = Vec::new();
    let parameters = validate_parameters(endpoint, &input.parameters, &mut errors);
    let git_ref = validate_ref(endpoint, input, &mut errors);
    let select = validate_select(endpoint, input, git_ref.as_ref(), &mut errors);
    if errors.is_empty() {
        Ok(ValidCall {
            git_ref,
            parameters,
            select,
        })
    } else {
        Err(capped(errors))
    }
}

fn validate_parameters(
    endpoint: &Endpoint,
    given: &Map<String, Value>,
    errors: &mut Vec<FieldError>,
) -> BTreeMap<String, ParameterValue> {
    if given.len() > MAX_PARAMETERS {
        errors.push(FieldError::body(
            "/parameters",
            format!(
                "{} parameters; at most {MAX_PARAMETERS} are accepted",
                given.len()
            ),
        ));
        // Listing a hundred undeclared names would not help anyone.
        return BTreeMap::new();
    }
    let declared: Vec<&str> = endpoint.parameters.keys().map(String::as_str).collect();
    let mut accepted = BTreeMap::new();
    for (name, value) in given {
        let pointer = parameter_pointer(name);
        let Some(schema) = endpoint.parameters.get(name) else {
            let detail = if name.chars().count() > MAX_PARAMETER_NAME_LEN {
                format!(
                    "parameter names are at most {MAX_PARAMETER_NAME_LEN} characters, and this endpoint declares no such parameter"
                )
            } else if declared.is_empty() {
                "not declared: this endpoint takes no parameters".to_owned()
            } else {
                format!(
                    "not declared by this endpoint (declared: {})",
                    declared.join(", ")
                )
            };
            errors.push(FieldError::body(pointer, detail));
            continue;
        };
        let typed = match value {
            Value::String(text) => ParameterValue::String(text.clone()),
            Value::Bool(flag) => ParameterValue::Boolean(*flag),
            Value::Number(number) => match number.as_i64() {
                Some(integer) => ParameterValue::Integer(integer),
                None => {
                    errors.push(FieldError::body(
                        pointer,
                        format!(
                            "must be {}; numbers must be 64-bit integers",
                            type_text(schema.schema.kind)
                        ),
                    ));
                    continue;
                }
            },
            Value::Null | Value::Array(_) | Value::Object(_) => {
                errors.push(FieldError::body(
                    pointer,
                    format!("must be {}", type_text(schema.schema.kind)),
                ));
                continue;
            }
        };
        let violations = schema.violations(&typed);
        if violations.is_empty() {
            accepted.insert(name.clone(), typed);
        } else {
            for violation in violations {
                errors.push(FieldError::body(&pointer, violation));
            }
        }
    }
    for (name, schema) in &endpoint.parameters {
        if given.contains_key(name) {
            continue;
        }
        match &schema.schema.default {
            Some(default) => {
                accepted.insert(name.clone(), default.clone());
            }
            None if schema.schema.required => {
                errors.push(FieldError::body(
                    parameter_pointer(name),
                    format!("required ({})", type_text(schema.schema.kind)),
                ));
            }
            None => {}
        }
    }
    accepted
}

fn type_text(kind: ParameterType) -> &'static str {
    match kind {
        ParameterType::String => "a string",
        ParameterType::Integer => "an integer",
        ParameterType::Boolean => "a boolean",
    }
}

fn validate_ref(
    endpoint: &Endpoint,
    input: &CallInput,
    errors: &mut Vec<FieldError>,
) -> Option<GitRef> {
    let target = &endpoint.spec.target;
    let before = errors.len();
    let checked = |field: &str, value: &Option<String>, errors: &mut Vec<FieldError>| {
        let value = value.as_ref()?;
        match check_git_ref(value) {
            Ok(()) => Some(value.clone()),
            Err(reason) => {
                errors.push(FieldError::body(
                    format!("/{field}"),
                    format!("`{}` is not a valid {field} name: {reason}", quote(value)),
                ));
                None
            }
        }
    };
    let branch = checked("branch", &input.branch, errors);
    let tag = checked("tag", &input.tag, errors);
    if errors.len() > before {
        return None;
    }
    match (branch, tag) {
        (Some(_), Some(_)) => {
            errors.push(FieldError::body("/tag", "give a branch or a tag, not both"));
            None
        }
        (Some(branch), None) => {
            let allowed = target.branch.as_deref() == Some(branch.as_str())
                || endpoint.branches.iter().any(|p| p.matches(&branch));
            if allowed {
                Some(GitRef::Branch(branch))
            } else {
                errors.push(FieldError::body(
                    "/branch",
                    policy_text(
                        "branch",
                        &branch,
                        target.branch.as_deref(),
                        &target.branches,
                    ),
                ));
                None
            }
        }
        (None, Some(tag)) => {
            let allowed = target.tag.as_deref() == Some(tag.as_str())
                || endpoint.tags.iter().any(|p| p.matches(&tag));
            if allowed {
                Some(GitRef::Tag(tag))
            } else {
                errors.push(FieldError::body(
                    "/tag",
                    policy_text("tag", &tag, target.tag.as_deref(), &target.tags),
                ));
                None
            }
        }
        (None, None) => match (&target.branch, &target.tag) {
            (Some(branch), _) => Some(GitRef::Branch(branch.clone())),
            (None, Some(tag)) => Some(GitRef::Tag(tag.clone())),
            (None, None) if !target.branches.is_empty() || !target.tags.is_empty() => {
                let what = if target.branches.is_empty() {
                    "tag"
                } else {
                    "branch"
                };
                errors.push(FieldError::body(
                    format!("/{what}"),
                    format!("required: this endpoint has no default {what}; choose one it allows"),
                ));
                None
            }
            (None, None) => None,
        },
    }
}

fn policy_text(kind: &str, value: &str, fixed: Option<&str>, allowed: &[String]) -> String {
    let value = quote(value);
    match (fixed, allowed.is_empty()) {
        (_, false) => format!(
            "{kind} `{value}` is not allowed by this endpoint (allowed: {})",
            allowed.join(", ")
        ),
        (Some(fixed), true) => {
            format!("this endpoint always uses {kind} `{fixed}`; `{value}` cannot be chosen")
        }
        (None, true) => format!("this endpoint does not let callers choose a {kind}"),
    }
}

fn validate_select(
    endpoint: &Endpoint,
    input: &CallInput,
    git_ref: Option<&GitRef>,
    errors: &mut Vec<FieldError>,
) -> Option<SelectSpec> {
    if endpoint.spec.action == ActionKind::Pipeline {
        if input.select.is_some() {
            errors.push(FieldError::body(
                "/select",
                "this endpoint starts a new pipeline; `select` applies to approve, rerun and cancel endpoints",
            ));
        }
        return None;
    }
    let select = match &input.select {
        Some(text) => match SelectSpec::parse(text) {
            Ok(select) => select,
            Err(reason) => {
                errors.push(FieldError::body("/select", reason));
                return None;
            }
        },
        None if endpoint.spec.select == EndpointSelect::Latest => SelectSpec::Latest,
        None => {
            errors.push(FieldError::body(
                "/select",
                "required: name the workflow to act on (`trigger:<id>`, `pipeline:<id>` or `revision:<sha>`)",
            ));
            return None;
        }
    };
    if select == SelectSpec::Latest {
        if endpoint.spec.select != EndpointSelect::Latest {
            errors.push(FieldError::body(
                "/select",
                "this endpoint needs an exact selection (`trigger:<id>`, `pipeline:<id>` or `revision:<sha>`), not `latest`",
            ));
            return None;
        }
        if git_ref.is_none() {
            errors.push(FieldError::body(
                "/branch",
                "`latest` needs a branch or tag (the newest pipeline on which ref?)",
            ));
            return None;
        }
    }
    Some(select)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::triggers::http::catalog::Catalog;

    fn catalog(source: &str) -> Catalog {
        Catalog::new(&crate::config::parse_str(source, "t.toml").unwrap()).unwrap()
    }

    const FILE: &str = r#"
[[endpoint]]
name = "deploy"
target = { project = "gh/acme/deploy", branch = "main", branches = ["release/*"] }
parameters.version = { type = "string", pattern = '^\d+\.\d+\.\d+$', required = true }
parameters.dry_run = { type = "boolean", default = false }
parameters.shards = { type = "integer", minimum = 1, maximum = 8 }

[[endpoint]]
name = "approve"
action = "approve"
job = "hold"
target = { project = "gh/acme/deploy", branch = "main" }

[[endpoint]]
name = "approve-latest"
action = "approve"
job = "hold"
select = "latest"
target = { project = "gh/acme/deploy", branches = ["main"] }
"#;

    fn input(body: Value) -> CallInput {
        parse_body(body.to_string().as_bytes()).unwrap()
    }

    fn details(errors: &[FieldError]) -> Vec<String> {
        errors.iter().map(FieldError::summary).collect()
    }

    #[test]
    fn defaults_fill_in_and_the_fixed_branch_is_the_default() {
        let catalog = catalog(FILE);
        let deploy = catalog.endpoint("deploy").unwrap();
        let valid = validate(
            deploy,
            &input(serde_json::json!({"parameters": {"version": "1.4.2"}})),
        )
        .unwrap();
        assert_eq!(valid.git_ref, Some(GitRef::Branch("main".into())));
        assert_eq!(valid.parameters.len(), 2, "{valid:?}");
        assert_eq!(valid.parameters["dry_run"], ParameterValue::Boolean(false));
        let chosen = validate(
            deploy,
            &input(serde_json::json!({"branch": "release/1.4", "parameters": {"version": "1.4.2", "shards": 4}})),
        )
        .unwrap();
        assert_eq!(chosen.git_ref, Some(GitRef::Branch("release/1.4".into())));
        assert_ne!(chosen.fingerprint(deploy), valid.fingerprint(deploy));
        // Spelling the default out is the same request.
        let explicit = validate(
            deploy,
            &input(serde_json::json!({"branch": "main", "parameters": {"version": "1.4.2", "dry_run": false}})),
        )
        .unwrap();
        assert_eq!(explicit.fingerprint(deploy), valid.fingerprint(deploy));
    }

    #[test]
    fn every_violation_is_listed_with_its_pointer() {
        let catalog = catalog(FILE);
        let deploy = catalog.endpoint("deploy").unwrap();
        let errors = validate(
            deploy,
            &input(serde_json::json!({
                "branch": "feature/x",
                "parameters": {"dry_run": "yes", "shards": 9, "extra/~": 1, "float": 1.5}
            })),
        )
        .unwrap_err();
        let found = details(&errors);
        for expected in [
            "/parameters/dry_run: must be a boolean, not a string",
            "/parameters/shards: must be at most 8",
            "/parameters/extra~1~0: not declared by this endpoint (declared: dry_run, shards, version)",
            "/parameters/float: not declared",
            "/parameters/version: required (a string)",
            "/branch: branch `feature/x` is not allowed by this endpoint (allowed: release/*)",
        ] {
            assert!(
                found.iter().any(|f| f.starts_with(expected)),
                "{expected}\nin {found:#?}"
            );
        }
        assert_eq!(found.len(), 6, "{found:#?}");
    }

    #[test]
    fn hostile_refs_and_sizes_are_refused() {
        let catalog = catalog(FILE);
        let deploy = catalog.endpoint("deploy").unwrap();
        for branch in ["../etc/passwd", "release/\u{0}x", "release/..", "a\nb"] {
            let errors = validate(
                deploy,
                &input(serde_json::json!({"branch": branch, "parameters": {"version": "1.0.0"}})),
            )
            .unwrap_err();
            assert_eq!(errors.len(), 1, "{branch:?}: {errors:?}");
            assert_eq!(errors[0].pointer.as_deref(), Some("/branch"));
        }
        let many: Map<String, Value> = (0..101)
            .map(|i| (format!("p{i}"), Value::from(i)))
            .collect();
        let errors = validate(deploy, &input(serde_json::json!({"parameters": many}))).unwrap_err();
        assert!(
            details(&errors)
                .iter()
                .any(|d| d.contains("101 parameters")),
            "{errors:?}"
        );
        assert!(
            errors.len() <= 2,
            "no per-name list for an oversized map: {errors:?}"
        );
        let errors = validate(
            deploy,
            &input(serde_json::json!({"parameters": {"version": "x".repeat(513)}})),
        )
        .unwrap_err();
        assert!(errors[0].detail.contains("513 characters"), "{errors:?}");
        let long_name = "n".repeat(10_000);
        let errors = validate(
            deploy,
            &input(serde_json::json!({"parameters": {long_name: 1, "version": "1.0.0"}})),
        )
        .unwrap_err();
        assert!(
            errors[0].pointer.as_ref().unwrap().len() < 100,
            "names are shortened in pointers"
        );
    }

    #[test]
    fn bodies_must_be_json_objects_with_known_members() {
        assert_eq!(parse_body(b"").unwrap(), CallInput::default());
        assert_eq!(parse_body(b" \n").unwrap(), CallInput::default());
        assert!(matches!(
            parse_body(b"{\"branch\": \"\xff\"}"),
            Err(BodyError::Malformed(_))
        ));
        assert!(matches!(parse_body(b"{nope"), Err(BodyError::Malformed(_))));
        let Err(BodyError::Invalid(errors)) = parse_body(b"[1]") else {
            panic!()
        };
        assert_eq!(errors[0].pointer.as_deref(), Some(""));
        let Err(BodyError::Invalid(errors)) =
            parse_body(br#"{"branch": 1, "parameters": [], "unknown": true}"#)
        else {
            panic!()
        };
        assert_eq!(errors.len(), 3, "{errors:?}");
    }

    #[test]
    fn selections_parse_and_follow_the_endpoint_policy() {
        let catalog = catalog(FILE);
        let approve = catalog.endpoint("approve").unwrap();
        let id = Uuid::from_u128(7);
        for (text, expected) in [
            (
                format!("trigger:{id}"),
                SelectSpec::Trigger(TriggerId::from_uuid(id)),
            ),
            (format!("pipeline:{id}"), SelectSpec::Pipeline(id)),
            (id.to_string(), SelectSpec::TriggerOrPipeline(id)),
            ("ABCDEF1".to_owned(), SelectSpec::Revision("abcdef1".into())),
            (
                "revision:0123456789abcdef0123456789abcdef01234567".to_owned(),
                SelectSpec::Revision("0123456789abcdef0123456789abcdef01234567".into()),
            ),
        ] {
            let valid = validate(approve, &input(serde_json::json!({"select": text}))).unwrap();
            assert_eq!(valid.select, Some(expected), "{text}");
        }
        for bad in ["latest", "trigger:nope", "abc", "other:1", ""] {
            let errors = validate(approve, &input(serde_json::json!({"select": bad}))).unwrap_err();
            assert_eq!(errors[0].pointer.as_deref(), Some("/select"), "{bad}");
        }
        let errors = validate(approve, &input(serde_json::json!({}))).unwrap_err();
        assert!(errors[0].detail.starts_with("required"));
        let errors = validate(
            approve,
            &input(serde_json::json!({"parameters": {"x": 1}, "select": "latest"})),
        )
        .unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.detail.contains("takes no parameters")),
            "{errors:?}"
        );

        let latest = catalog.endpoint("approve-latest").unwrap();
        let errors = validate(latest, &input(serde_json::json!({}))).unwrap_err();
        assert_eq!(errors[0].pointer.as_deref(), Some("/branch"), "{errors:?}");
        let valid = validate(latest, &input(serde_json::json!({"branch": "main"}))).unwrap();
        assert_eq!(valid.select, Some(SelectSpec::Latest));

        let deploy = catalog.endpoint("deploy").unwrap();
        let errors = validate(
            deploy,
            &input(serde_json::json!({"select": "latest", "parameters": {"version": "1.0.0"}})),
        )
        .unwrap_err();
        assert!(errors[0].detail.contains("starts a new pipeline"));
    }
}

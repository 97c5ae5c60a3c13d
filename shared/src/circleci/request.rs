//! What the client sends: request values, their checks, their JSON bodies and URL paths.
//!
//! Everything here is checked *before* a request leaves: a request CircleCI would reject for
//! its shape (too many parameters, a parameter too long, a slug that is not one) is refused
//! locally with [`CircleCiError::InvalidRequest`] and nothing is sent.

use std::collections::BTreeMap;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::error::CircleCiError;
use super::model::{Rerun, WebhookEvent};
use crate::config::rules::{
    MAX_PARAMETER_NAME_LEN, MAX_PARAMETER_VALUE_LEN, MAX_PARAMETERS, check_git_ref,
};
use crate::config::{ParameterValue, ProjectSlug, Vcs};

/// A branch or a tag: CircleCI takes exactly one of them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GitRef {
    Branch(String),
    Tag(String),
}

impl GitRef {
    fn check(&self, field: &str) -> Result<(), CircleCiError> {
        let (kind, name) = match self {
            GitRef::Branch(name) => ("branch", name),
            GitRef::Tag(name) => ("tag", name),
        };
        check_git_ref(name).map_err(|reason| {
            CircleCiError::invalid(format!(
                "{field}: `{}` is not a valid {kind} name: {reason}",
                name.escape_debug()
            ))
        })
    }

    fn to_json(&self) -> Value {
        match self {
            GitRef::Branch(name) => json!({ "branch": name }),
            GitRef::Tag(name) => json!({ "tag": name }),
        }
    }
}

/// The `pipeline/run` options (the endpoint CircleCI recommends; required for
/// `circleci/...` projects).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOptions {
    pub definition_id: Option<Uuid>,
    /// Where the config is read from (default: the request's ref).
    pub config: Option<GitRef>,
    /// What is checked out (default: the request's ref).
    pub checkout: Option<GitRef>,
}

/// Start a pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineRequest {
    pub project: ProjectSlug,
    /// The branch or tag; `None` means the project's default branch.
    pub git_ref: Option<GitRef>,
    pub parameters: BTreeMap<String, ParameterValue>,
    /// `Some` → `POST /project/{provider}/{org}/{project}/pipeline/run`;
    /// `None` → the legacy `POST /project/{slug}/pipeline`.
    pub run: Option<RunOptions>,
}

impl PipelineRequest {
    /// A legacy-endpoint request on a branch, without parameters.
    pub fn on_branch(project: ProjectSlug, branch: impl Into<String>) -> Self {
        Self {
            project,
            git_ref: Some(GitRef::Branch(branch.into())),
            parameters: BTreeMap::new(),
            run: None,
        }
    }

    pub fn with_parameter(mut self, name: impl Into<String>, value: ParameterValue) -> Self {
        self.parameters.insert(name.into(), value);
        self
    }

    pub fn with_run(mut self, run: RunOptions) -> Self {
        self.run = Some(run);
        self
    }

    /// Everything CircleCI documents as a limit, checked locally.
    pub fn validate(&self) -> Result<(), CircleCiError> {
        project_path(&self.project)?;
        if self.run.is_none() && self.project.vcs == Vcs::CircleCi {
            return Err(CircleCiError::invalid(format!(
                "{}: the legacy trigger endpoint does not support `circleci/...` projects (GitHub App); use pipeline/run (set definition_id)",
                self.project
            )));
        }
        if let Some(git_ref) = &self.git_ref {
            git_ref.check("ref")?;
        }
        if let Some(run) = &self.run {
            if let Some(config) = &run.config {
                config.check("config")?;
            }
            if let Some(checkout) = &run.checkout {
                checkout.check("checkout")?;
            }
        }
        check_parameters(&self.parameters)
    }

    /// The JSON body the client sends, exactly (used by the contract tests as well).
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        match &self.run {
            None => match &self.git_ref {
                Some(GitRef::Branch(branch)) => {
                    body.insert("branch".into(), json!(branch));
                }
                Some(GitRef::Tag(tag)) => {
                    body.insert("tag".into(), json!(tag));
                }
                None => {}
            },
            Some(run) => {
                if let Some(definition_id) = run.definition_id {
                    body.insert("definition_id".into(), json!(definition_id));
                }
                if let Some(config) = run.config.as_ref().or(self.git_ref.as_ref()) {
                    body.insert("config".into(), config.to_json());
                }
                if let Some(checkout) = run.checkout.as_ref().or(self.git_ref.as_ref()) {
                    body.insert("checkout".into(), checkout.to_json());
                }
            }
        }
        if !self.parameters.is_empty() {
            let parameters: Map<String, Value> = self
                .parameters
                .iter()
                .map(|(name, value)| (name.clone(), parameter_json(value)))
                .collect();
            body.insert("parameters".into(), Value::Object(parameters));
        }
        Value::Object(body)
    }

    /// The URL path below the API base.
    pub fn path(&self) -> Result<String, CircleCiError> {
        let project = project_path(&self.project)?;
        Ok(match self.run {
            None => format!("/project/{project}/pipeline"),
            Some(_) => format!("/project/{project}/pipeline/run"),
        })
    }
}

fn parameter_json(value: &ParameterValue) -> Value {
    match value {
        ParameterValue::Boolean(flag) => Value::Bool(*flag),
        ParameterValue::Integer(number) => Value::from(*number),
        ParameterValue::String(text) => Value::String(text.clone()),
    }
}

/// CircleCI's parameter limits: at most 100, names of at most 128 characters that start
/// with a letter, values of at most 512 characters.
pub fn check_parameters(
    parameters: &BTreeMap<String, ParameterValue>,
) -> Result<(), CircleCiError> {
    if parameters.len() > MAX_PARAMETERS {
        return Err(CircleCiError::invalid(format!(
            "{} pipeline parameters; CircleCI accepts at most {MAX_PARAMETERS}",
            parameters.len()
        )));
    }
    for (name, value) in parameters {
        let length = name.chars().count();
        if length == 0 || length > MAX_PARAMETER_NAME_LEN {
            return Err(CircleCiError::invalid(format!(
                "pipeline parameter name `{}` must be 1 to {MAX_PARAMETER_NAME_LEN} characters (it has {length})",
                shorten(name)
            )));
        }
        let well_formed = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !well_formed {
            return Err(CircleCiError::invalid(format!(
                "`{}` is not a pipeline parameter name (a letter, then letters, digits, `-` or `_`)",
                name.escape_debug()
            )));
        }
        if let ParameterValue::String(text) = value {
            let length = text.chars().count();
            if length > MAX_PARAMETER_VALUE_LEN {
                return Err(CircleCiError::invalid(format!(
                    "pipeline parameter `{name}` is {length} characters long; CircleCI accepts at most {MAX_PARAMETER_VALUE_LEN}"
                )));
            }
        }
    }
    Ok(())
}

/// Pipeline parameters from untyped JSON (e.g. an HTTP caller's body): only booleans,
/// 64-bit integers and strings are pipeline parameter values; limits are checked too.
pub fn parameters_from_json(
    object: &Map<String, Value>,
) -> Result<BTreeMap<String, ParameterValue>, CircleCiError> {
    let mut parameters = BTreeMap::new();
    for (name, value) in object {
        let typed = match value {
            Value::Bool(flag) => ParameterValue::Boolean(*flag),
            Value::String(text) => ParameterValue::String(text.clone()),
            Value::Number(number) => match number.as_i64() {
                Some(integer) => ParameterValue::Integer(integer),
                None => {
                    return Err(CircleCiError::invalid(format!(
                        "pipeline parameter `{}` is {number}; numbers must be 64-bit integers",
                        shorten(name)
                    )));
                }
            },
            Value::Null | Value::Array(_) | Value::Object(_) => {
                return Err(CircleCiError::invalid(format!(
                    "pipeline parameter `{}` must be a boolean, an integer or a string",
                    shorten(name)
                )));
            }
        };
        parameters.insert(name.clone(), typed);
    }
    check_parameters(&parameters)?;
    Ok(parameters)
}

fn shorten(text: &str) -> String {
    const SHOWN: usize = 40;
    if text.chars().count() <= SHOWN {
        text.escape_debug().to_string()
    } else {
        let head: String = text.chars().take(SHOWN).collect();
        format!("{}…", head.escape_debug())
    }
}

/// Everything but RFC 3986 "unreserved" characters is encoded in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes one path segment (so `/`, `?`, `#`, `%` can never change the path).
pub fn encode_segment(segment: &str) -> String {
    utf8_percent_encode(segment, SEGMENT).to_string()
}

/// `gh/acme/api` → `gh/acme/api` with each segment encoded separately, after re-checking
/// the slug (its fields are public, so a value built by hand may not be a slug at all).
pub fn project_path(project: &ProjectSlug) -> Result<String, CircleCiError> {
    let reparsed: ProjectSlug = project
        .canonical()
        .parse()
        .map_err(|error| CircleCiError::invalid(format!("{error}")))?;
    if &reparsed != project {
        return Err(CircleCiError::invalid(format!(
            "`{}` is not a project slug",
            project.canonical().escape_debug()
        )));
    }
    let [vcs, org, repo] = project.segments();
    Ok(format!(
        "{}/{}/{}",
        encode_segment(vcs),
        encode_segment(org),
        encode_segment(repo)
    ))
}

/// The body of `POST /workflow/{id}/rerun`.
pub fn rerun_body(rerun: &Rerun) -> Result<Value, CircleCiError> {
    match rerun {
        Rerun::Workflow => Ok(json!({})),
        Rerun::FromFailed => Ok(json!({ "from_failed": true })),
        Rerun::Jobs(jobs) if jobs.is_empty() => Err(CircleCiError::invalid(
            "a rerun of named jobs needs at least one job id",
        )),
        Rerun::Jobs(jobs) => Ok(json!({ "jobs": jobs })),
    }
}

/// Create an outbound webhook on a project.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub name: String,
    pub url: String,
    pub events: Vec<WebhookEvent>,
    pub verify_tls: bool,
    pub signing_secret: SecretString,
    /// The project's id (from [`super::CircleCi::get_project`]), not its slug.
    pub project_id: Uuid,
}

impl NewWebhook {
    pub fn validate(&self) -> Result<(), CircleCiError> {
        check_webhook_fields(
            Some(&self.name),
            Some(&self.url),
            Some(&self.events),
            Some(&self.signing_secret),
        )
    }

    /// The JSON body (it carries the signing secret: never log it).
    pub fn body(&self) -> Value {
        json!({
            "name": self.name,
            "url": self.url,
            "events": self.events,
            "verify-tls": self.verify_tls,
            "signing-secret": self.signing_secret.expose_secret(),
            "scope": { "id": self.project_id, "type": "project" },
        })
    }
}

/// Change an existing webhook; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct WebhookUpdate {
    pub name: Option<String>,
    pub url: Option<String>,
    pub events: Option<Vec<WebhookEvent>>,
    pub verify_tls: Option<bool>,
    /// Rotating the secret: the only way to set it, since listing masks it.
    pub signing_secret: Option<SecretString>,
}

impl WebhookUpdate {
    pub fn validate(&self) -> Result<(), CircleCiError> {
        check_webhook_fields(
            self.name.as_ref(),
            self.url.as_ref(),
            self.events.as_ref(),
            self.signing_secret.as_ref(),
        )
    }

    /// The JSON body (it may carry the signing secret: never log it).
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        if let Some(name) = &self.name {
            body.insert("name".into(), json!(name));
        }
        if let Some(url) = &self.url {
            body.insert("url".into(), json!(url));
        }
        if let Some(events) = &self.events {
            body.insert("events".into(), json!(events));
        }
        if let Some(verify_tls) = self.verify_tls {
            body.insert("verify-tls".into(), json!(verify_tls));
        }
        if let Some(secret) = &self.signing_secret {
            body.insert("signing-secret".into(), json!(secret.expose_secret()));
        }
        Value::Object(body)
    }
}

fn check_webhook_fields(
    name: Option<&String>,
    url: Option<&String>,
    events: Option<&Vec<WebhookEvent>>,
    secret: Option<&SecretString>,
) -> Result<(), CircleCiError> {
    if name.is_some_and(|name| name.trim().is_empty()) {
        return Err(CircleCiError::invalid("a webhook needs a name"));
    }
    if let Some(url) = url {
        // CircleCI delivers to https only; plain http is allowed for loopback (tests, serve).
        let loopback = ["http://localhost", "http://127.0.0.1", "http://[::1]"]
            .iter()
            .any(|prefix| {
                url.strip_prefix(prefix)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/']))
            });
        if !url.starts_with("https://") && !loopback {
            return Err(CircleCiError::invalid(format!(
                "webhook URL `{}` must be https",
                shorten(url)
            )));
        }
    }
    if events.is_some_and(|events| events.is_empty()) {
        return Err(CircleCiError::invalid("a webhook needs at least one event"));
    }
    if secret.is_some_and(|secret| secret.expose_secret().is_empty()) {
        return Err(CircleCiError::invalid(
            "a webhook signing secret cannot be empty",
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn slug(text: &str) -> ProjectSlug {
        text.parse().unwrap()
    }

    #[test]
    fn legacy_body_has_the_ref_and_typed_parameters() {
        let request = PipelineRequest::on_branch(slug("gh/acme/api"), "main")
            .with_parameter("deploy", ParameterValue::Boolean(true))
            .with_parameter("shards", ParameterValue::Integer(4))
            .with_parameter("env", ParameterValue::String("prod".into()));
        assert_eq!(
            request.body(),
            json!({"branch": "main", "parameters": {"deploy": true, "shards": 4, "env": "prod"}})
        );
        assert_eq!(request.path().unwrap(), "/project/gh/acme/api/pipeline");
    }

    #[test]
    fn run_body_defaults_config_and_checkout_to_the_ref() {
        let definition = Uuid::from_u128(7);
        let request = PipelineRequest {
            project: slug("github/acme/api"),
            git_ref: Some(GitRef::Tag("v1.2.0".into())),
            parameters: BTreeMap::new(),
            run: Some(RunOptions {
                definition_id: Some(definition),
                config: Some(GitRef::Branch("main".into())),
                checkout: None,
            }),
        };
        assert_eq!(
            request.body(),
            json!({
                "definition_id": definition,
                "config": {"branch": "main"},
                "checkout": {"tag": "v1.2.0"},
            })
        );
        assert_eq!(request.path().unwrap(), "/project/gh/acme/api/pipeline/run");
    }

    #[test]
    fn parameter_limits_are_enforced_at_the_boundaries() {
        let base = PipelineRequest::on_branch(slug("gh/acme/api"), "main");

        let mut hundred = base.clone();
        for index in 0..MAX_PARAMETERS {
            hundred
                .parameters
                .insert(format!("p{index}"), ParameterValue::Integer(1));
        }
        assert!(hundred.validate().is_ok());
        hundred
            .parameters
            .insert("one_more".into(), ParameterValue::Integer(1));
        assert!(matches!(
            hundred.validate(),
            Err(CircleCiError::InvalidRequest { .. })
        ));

        let longest_name = "n".repeat(MAX_PARAMETER_NAME_LEN);
        let ok = base
            .clone()
            .with_parameter(&longest_name, ParameterValue::Boolean(true));
        assert!(ok.validate().is_ok());
        let too_long_name = base
            .clone()
            .with_parameter(format!("{longest_name}x"), ParameterValue::Boolean(true));
        assert!(too_long_name.validate().is_err());

        let longest_value = "é".repeat(MAX_PARAMETER_VALUE_LEN);
        let ok = base
            .clone()
            .with_parameter("v", ParameterValue::String(longest_value.clone()));
        assert!(
            ok.validate().is_ok(),
            "the limit counts characters, not bytes"
        );
        let too_long_value =
            base.with_parameter("v", ParameterValue::String(format!("{longest_value}x")));
        let error = too_long_value.validate().unwrap_err().to_string();
        assert!(error.contains("513 characters"), "{error}");
    }

    #[test]
    fn parameter_names_must_look_like_circleci_names() {
        for bad in ["", "1st", "with space", "dot.ted", "ünï"] {
            let request = PipelineRequest::on_branch(slug("gh/acme/api"), "main")
                .with_parameter(bad, ParameterValue::Boolean(true));
            assert!(request.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn untyped_json_parameters_accept_only_circleci_types() {
        let ok = json!({"a": true, "b": 3, "c": "x"});
        let parsed = parameters_from_json(ok.as_object().unwrap()).unwrap();
        assert_eq!(parsed["b"], ParameterValue::Integer(3));
        for bad in [
            json!({"f": 1.5}),
            json!({"n": null}),
            json!({"l": [1]}),
            json!({"o": {}}),
            json!({"u": u64::MAX}),
        ] {
            assert!(
                parameters_from_json(bad.as_object().unwrap()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn hand_built_slugs_are_rechecked_and_segments_are_encoded() {
        let sneaky = ProjectSlug {
            vcs: Vcs::GitHub,
            org: "acme/../../me".into(),
            repo: "api".into(),
        };
        assert!(project_path(&sneaky).is_err());
        let dots = ProjectSlug {
            vcs: Vcs::GitHub,
            org: "..".into(),
            repo: "api".into(),
        };
        assert!(project_path(&dots).is_err());
        assert_eq!(encode_segment("a/b?c#d%e f"), "a%2Fb%3Fc%23d%25e%20f");
        assert_eq!(encode_segment("My-Org_1.x~"), "My-Org_1.x~");
        let opaque = slug("circleci/43G3lM5RtfFE7v5sa4nWAU/44n9wujWcTnVZ2b5S8Fnat");
        assert_eq!(
            project_path(&opaque).unwrap(),
            "circleci/43G3lM5RtfFE7v5sa4nWAU/44n9wujWcTnVZ2b5S8Fnat"
        );
    }

    #[test]
    fn legacy_endpoint_refuses_github_app_projects() {
        let opaque = slug("circleci/43G3lM5RtfFE7v5sa4nWAU/44n9wujWcTnVZ2b5S8Fnat");
        let legacy = PipelineRequest::on_branch(opaque.clone(), "main");
        assert!(legacy.validate().is_err());
        let run = PipelineRequest::on_branch(opaque, "main").with_run(RunOptions::default());
        assert!(run.validate().is_ok());
    }

    #[test]
    fn bad_refs_are_refused() {
        let request = PipelineRequest::on_branch(slug("gh/acme/api"), "../etc");
        assert!(request.validate().is_err());
        let request =
            PipelineRequest::on_branch(slug("gh/acme/api"), "main").with_run(RunOptions {
                config: Some(GitRef::Tag("bad tag".into())),
                ..RunOptions::default()
            });
        assert!(request.validate().is_err());
    }

    #[test]
    fn rerun_and_webhook_bodies() {
        assert_eq!(
            rerun_body(&Rerun::FromFailed).unwrap(),
            json!({"from_failed": true})
        );
        assert_eq!(rerun_body(&Rerun::Workflow).unwrap(), json!({}));
        let job = Uuid::from_u128(1);
        assert_eq!(
            rerun_body(&Rerun::Jobs(vec![job])).unwrap(),
            json!({"jobs": [job]})
        );
        assert!(rerun_body(&Rerun::Jobs(vec![])).is_err());

        let hook = NewWebhook {
            name: "circleci-triggers".into(),
            url: "https://example.com/hooks/circleci".into(),
            events: vec![WebhookEvent::WorkflowCompleted],
            verify_tls: true,
            signing_secret: SecretString::from("s3cret"),
            project_id: Uuid::from_u128(9),
        };
        assert!(hook.validate().is_ok());
        assert_eq!(hook.body()["events"], json!(["workflow-completed"]));
        assert_eq!(hook.body()["scope"]["type"], json!("project"));
        assert!(
            !format!("{hook:?}").contains("s3cret"),
            "Debug must not show the secret"
        );

        let plain_http = NewWebhook {
            url: "http://example.com/hook".into(),
            ..hook.clone()
        };
        assert!(plain_http.validate().is_err());
        let loopback = NewWebhook {
            url: "http://127.0.0.1:8080/hook".into(),
            ..hook
        };
        assert!(loopback.validate().is_ok());

        let update = WebhookUpdate {
            url: Some("https://example.com/v2".into()),
            ..WebhookUpdate::default()
        };
        assert_eq!(update.body(), json!({"url": "https://example.com/v2"}));
    }
}

//! `[[endpoint]]` and `[[client]]`: named HTTP triggers for external systems, and who may
//! call which of them.
//!
//! ```toml
//! [[endpoint]]
//! name = "deploy-staging"
//! action = "pipeline"
//! target = { project = "gh/acme/deploy", branches = ["main", "release/*"] }
//! parameters.version = { type = "string", pattern = '^\d+\.\d+\.\d+$', required = true }
//! parameters.dry_run = { type = "boolean", default = false }
//!
//! [[client]]
//! name = "release-bot"
//! endpoints = ["deploy-staging"]
//! rate_limit = "30/1m"
//! ```
//!
//! The file holds no key material: the client keys secret maps each client name to the
//! SHA-256 hashes of its keys (several during a rotation).
//!
//! **Parameters** are a closed schema: a caller may set only declared parameters, each
//! checked for type, `enum`, `pattern` (unanchored, like JSON Schema: write `^...$`),
//! `max_length`, `minimum` / `maximum`; defaults fill what the caller leaves out. Values
//! fixed in `target.parameters` are always sent and cannot be set by a caller. A string
//! parameter with neither `pattern` nor `enum` accepts only plain text
//! ([`check_plain_text`]): a caller's value is data, never shell syntax, whatever the
//! downstream `config.yml` does with it. Declare a `pattern` to accept more.
//!
//! **Branch policy**: `target.branch` / `target.tag` fix the ref (a caller may repeat it but
//! not change it); `target.branches` / `target.tags` let the caller choose from a glob
//! allowlist (`*` stays within one `/` segment, `**` crosses them), with the fixed value,
//! if any, as the default. Neither: the project's default branch, and callers choose nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use regex::{Regex, RegexBuilder};
use serde::Deserialize;

use crate::action::ActionFields;
use crate::chain::NamePattern;
use crate::circleci::CircleCiSettings;
use crate::error::Problems;
use crate::path::FieldPath;
use crate::rules;
use crate::target::{ActionKind, GitRefSpec, ParameterValue, TargetSpec};

/// Endpoint names appear in URLs (`/v1/endpoints/{name}`) and claim keys: short and plain.
pub const MAX_ENDPOINT_NAME_LEN: usize = 64;
/// Longest `pattern` accepted.
pub const MAX_PATTERN_LEN: usize = 1024;
/// Compiled size bound of a `pattern` (regex's own limit is 10 MiB; ours is far below).
const PATTERN_SIZE_LIMIT: usize = 256 * 1024;
/// Most requests a client's `rate_limit` may allow per window (each admitted request is
/// one ticket of the window in the store).
pub const MAX_RATE_REQUESTS: u32 = 500;
pub const MIN_RATE_WINDOW: Duration = Duration::from_secs(1);
pub const MAX_RATE_WINDOW: Duration = Duration::from_secs(86_400);
/// Longest description kept (documentation only).
const MAX_DESCRIPTION_LEN: usize = 1024;

/// One `[[endpoint]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// Unique; the URL is `/v1/endpoints/<name>`.
    pub name: String,
    pub description: Option<String>,
    #[serde(default)]
    pub action: ActionKind,
    pub target: EndpointTarget,
    /// What a caller may set (pipeline endpoints only).
    #[serde(default)]
    pub parameters: BTreeMap<String, ParameterSchema>,
    /// Approve: the approval job's name.
    pub job: Option<String>,
    /// Rerun: these jobs (by name).
    pub jobs: Option<Vec<String>>,
    /// Rerun: from the failed jobs.
    pub from_failed: Option<bool>,
    /// Approve/rerun/cancel: how the workflow is found when the caller names none.
    #[serde(default)]
    pub select: EndpointSelect,
}

/// How an approve/rerun/cancel endpoint finds the workflow to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointSelect {
    /// The caller must name it (`select`: a trigger id, a pipeline id or a revision).
    #[default]
    Caller,
    /// The caller may name it; otherwise the newest pipeline on the branch is used.
    Latest,
}

impl EndpointSelect {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointSelect::Caller => "caller",
            EndpointSelect::Latest => "latest",
        }
    }
}

/// Where an endpoint acts, with its branch policy. The fields besides the policy mean what
/// they mean in every other target (see [`TargetSpec`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointTarget {
    pub project: String,
    /// Fixed branch (or the default when `branches` lets the caller choose).
    pub branch: Option<String>,
    /// Branches a caller may choose (globs).
    #[serde(default)]
    pub branches: Vec<String>,
    /// Fixed tag (or the default when `tags` lets the caller choose).
    pub tag: Option<String>,
    /// Tags a caller may choose (globs).
    #[serde(default)]
    pub tags: Vec<String>,
    pub workflow: Option<String>,
    /// Always sent; a caller cannot change them.
    #[serde(default)]
    pub parameters: BTreeMap<String, ParameterValue>,
    pub definition_id: Option<String>,
    pub config: Option<GitRefSpec>,
    pub checkout: Option<GitRefSpec>,
    pub token: Option<String>,
}

impl EndpointTarget {
    /// The target with its fixed (default) ref, as every other trigger kind writes it.
    pub fn base_spec(&self) -> TargetSpec {
        TargetSpec {
            project: self.project.clone(),
            branch: self.branch.clone(),
            tag: self.tag.clone(),
            workflow: self.workflow.clone(),
            parameters: self.parameters.clone(),
            definition_id: self.definition_id.clone(),
            config: self.config.clone(),
            checkout: self.checkout.clone(),
            token: self.token.clone(),
        }
    }
}

/// The type of a declared parameter (CircleCI's three).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParameterType {
    String,
    Integer,
    Boolean,
}

impl ParameterType {
    pub fn as_str(self) -> &'static str {
        match self {
            ParameterType::String => "string",
            ParameterType::Integer => "integer",
            ParameterType::Boolean => "boolean",
        }
    }

    pub fn of(value: &ParameterValue) -> Self {
        match value {
            ParameterValue::String(_) => ParameterType::String,
            ParameterValue::Integer(_) => ParameterType::Integer,
            ParameterValue::Boolean(_) => ParameterType::Boolean,
        }
    }

    /// Reads a value given as text (a CLI `--param k=v`) as this type.
    pub fn parse_text(self, text: &str) -> Result<ParameterValue, String> {
        match self {
            ParameterType::String => Ok(ParameterValue::String(text.to_owned())),
            ParameterType::Integer => text
                .trim()
                .parse::<i64>()
                .map(ParameterValue::Integer)
                .map_err(|_| format!("`{}` is not an integer", text.escape_debug())),
            ParameterType::Boolean => match text.trim() {
                "true" => Ok(ParameterValue::Boolean(true)),
                "false" => Ok(ParameterValue::Boolean(false)),
                _ => Err(format!(
                    "`{}` is not a boolean (true or false)",
                    text.escape_debug()
                )),
            },
        }
    }
}

/// One declared parameter: `parameters.<name> = { type = "string", ... }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParameterSchema {
    #[serde(rename = "type")]
    pub kind: ParameterType,
    #[serde(default)]
    pub required: bool,
    /// Sent when the caller leaves the parameter out.
    pub default: Option<ParameterValue>,
    /// The only values accepted.
    #[serde(rename = "enum")]
    pub allowed: Option<Vec<ParameterValue>>,
    /// Strings: a regular expression the value must match somewhere (anchor it with `^...$`).
    pub pattern: Option<String>,
    /// Strings: most characters (CircleCI's own limit, 512, always applies).
    pub max_length: Option<usize>,
    /// Integers: bounds, inclusive.
    pub minimum: Option<i64>,
    pub maximum: Option<i64>,
    pub description: Option<String>,
}

impl ParameterSchema {
    /// The schema with its pattern compiled; fails only for a schema `check` rejects.
    pub fn compile(&self) -> Result<CompiledParameter, String> {
        let pattern = self.pattern.as_deref().map(compile_pattern).transpose()?;
        Ok(CompiledParameter {
            schema: self.clone(),
            pattern,
        })
    }
}

fn compile_pattern(pattern: &str) -> Result<Regex, String> {
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(format!("longer than {MAX_PATTERN_LEN} characters"));
    }
    RegexBuilder::new(pattern)
        .size_limit(PATTERN_SIZE_LIMIT)
        .build()
        .map_err(|error| match error {
            regex::Error::CompiledTooBig(_) => "the pattern is too complex".to_owned(),
            // regex's syntax errors span several lines (they draw the position); keep the gist.
            other => other
                .to_string()
                .lines()
                .rev()
                .find(|line| line.starts_with("error:"))
                .map_or_else(|| "invalid regular expression".to_owned(), str::to_owned),
        })
}

/// A declared parameter ready to check values.
#[derive(Debug, Clone)]
pub struct CompiledParameter {
    pub schema: ParameterSchema,
    pattern: Option<Regex>,
}

impl CompiledParameter {
    /// Every rule `value` breaks (empty: accepted). Messages quote no more of the value
    /// than needed, so an error answer cannot be used to echo large input.
    pub fn violations(&self, value: &ParameterValue) -> Vec<String> {
        let schema = &self.schema;
        let kind = ParameterType::of(value);
        if kind != schema.kind {
            return vec![format!(
                "must be {} {}, not {} {}",
                article(schema.kind),
                schema.kind.as_str(),
                article(kind),
                kind.as_str()
            )];
        }
        let mut found = Vec::new();
        if let Some(allowed) = &schema.allowed
            && !allowed.contains(value)
        {
            let list: Vec<String> = allowed.iter().map(display_value).collect();
            found.push(format!("must be one of {}", list.join(", ")));
        }
        match value {
            ParameterValue::String(text) => {
                let length = text.chars().count();
                let limit = schema
                    .max_length
                    .unwrap_or(rules::MAX_PARAMETER_VALUE_LEN)
                    .min(rules::MAX_PARAMETER_VALUE_LEN);
                if length > limit {
                    found.push(format!("{length} characters; at most {limit} are allowed"));
                } else if let Some(pattern) = &self.pattern {
                    if !pattern.is_match(text) {
                        found.push(format!("does not match the pattern `{}`", pattern.as_str()));
                    }
                } else if schema.allowed.is_none()
                    && let Err(reason) = check_plain_text(text)
                {
                    found.push(format!(
                        "{reason} (the rule for a string parameter without `pattern`)"
                    ));
                }
            }
            ParameterValue::Integer(number) => {
                if let Some(minimum) = schema.minimum
                    && *number < minimum
                {
                    found.push(format!("must be at least {minimum}"));
                }
                if let Some(maximum) = schema.maximum
                    && *number > maximum
                {
                    found.push(format!("must be at most {maximum}"));
                }
            }
            ParameterValue::Boolean(_) => {}
        }
        found
    }
}

/// The characters besides ASCII letters and digits that [`check_plain_text`] accepts.
pub const PLAIN_TEXT_PUNCTUATION: &str = "._/:@+=,-";

/// The default class of a string parameter without `pattern` or `enum`: ASCII letters,
/// digits and `. _ / : @ + = , -`, not starting with `-` (empty is allowed). No spaces,
/// quotes, `$`, backticks, `;`, `&`, `|`, `<`, `>`, brackets, `*`, `?`, `\`, `#`, `!`, `~`,
/// `%`, control characters or non-ASCII look-alikes: what reaches a shell through
/// `<< pipeline.parameters.x >>` is one plain word. The reason never quotes the value.
pub fn check_plain_text(value: &str) -> Result<(), &'static str> {
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || PLAIN_TEXT_PUNCTUATION.contains(c))
    {
        return Err(
            "may only contain ASCII letters, digits and `. _ / : @ + = , -` (no spaces or shell metacharacters)",
        );
    }
    if value.starts_with('-') {
        return Err("must not start with `-`");
    }
    Ok(())
}

fn article(kind: ParameterType) -> &'static str {
    match kind {
        ParameterType::Integer => "an",
        _ => "a",
    }
}

fn display_value(value: &ParameterValue) -> String {
    match value {
        ParameterValue::String(text) => format!("\"{}\"", text.escape_debug()),
        ParameterValue::Integer(number) => number.to_string(),
        ParameterValue::Boolean(flag) => flag.to_string(),
    }
}

/// One `[[client]]`: a caller of the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSpec {
    /// The part before the `.` of its keys, and its entry in the client keys secret.
    pub name: String,
    pub description: Option<String>,
    /// The endpoints it may call (and whose history it may read).
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// The `operator` scope: may run schedules (`POST /v1/schedules/{name}/runs`, what
    /// `circleci-triggers run` / `backfill --api` send); recorded with this client's name.
    #[serde(default)]
    pub operator: bool,
    /// At most this many requests per window, e.g. `"30/1m"`, `"1000/1d"`, `"5/s"`.
    pub rate_limit: Option<String>,
}

impl ClientSpec {
    /// The parsed rate limit, when set and valid.
    pub fn rate(&self) -> Option<RateLimit> {
        self.rate_limit
            .as_deref()
            .and_then(|text| RateLimit::parse(text).ok())
    }

    pub fn may_call(&self, endpoint: &str) -> bool {
        self.endpoints.iter().any(|name| name == endpoint)
    }
}

/// `requests` per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub window: Duration,
}

impl RateLimit {
    /// `"<count>/<duration>"`; the duration may be a bare unit (`"10/m"` = 10 per minute).
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some((count, window)) = text.split_once('/') else {
            return Err(format!(
                "`{}` is not a rate (write `<requests>/<window>`, e.g. \"30/1m\")",
                text.escape_debug()
            ));
        };
        let requests: u32 = count.trim().parse().map_err(|_| {
            format!(
                "`{}`: the request count must be a whole number",
                text.escape_debug()
            )
        })?;
        let window = window.trim();
        let window = if window.len() == 1 {
            rules::parse_duration(&format!("1{window}"))?
        } else {
            rules::parse_duration(window)?
        };
        if requests == 0 || requests > MAX_RATE_REQUESTS {
            return Err(format!(
                "the request count must be between 1 and {MAX_RATE_REQUESTS}"
            ));
        }
        if !(MIN_RATE_WINDOW..=MAX_RATE_WINDOW).contains(&window) {
            return Err("the window must be between 1s and 1d".to_owned());
        }
        Ok(Self { requests, window })
    }
}

// ---------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------

/// Validates every `[[endpoint]]` and `[[client]]` and how they refer to each other.
pub fn validate_all(
    endpoints: &[EndpointSpec],
    clients: &[ClientSpec],
    settings: &CircleCiSettings,
    problems: &mut Problems,
) {
    let endpoint_path = FieldPath::root().key("endpoint");
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for (index, endpoint) in endpoints.iter().enumerate() {
        let path = endpoint_path.index(index);
        if let Some(first) = names.get(endpoint.name.as_str()) {
            problems.add(
                &path.key("name"),
                format!(
                    "duplicate endpoint name `{}` (also endpoint[{first}])",
                    endpoint.name
                ),
            );
        } else {
            names.insert(&endpoint.name, index);
        }
        endpoint.validate(&path, settings, problems);
    }

    let client_path = FieldPath::root().key("client");
    let mut client_names: BTreeMap<&str, usize> = BTreeMap::new();
    for (index, client) in clients.iter().enumerate() {
        let path = client_path.index(index);
        if let Some(first) = client_names.get(client.name.as_str()) {
            problems.add(
                &path.key("name"),
                format!(
                    "duplicate client name `{}` (also client[{first}])",
                    client.name
                ),
            );
        } else {
            client_names.insert(&client.name, index);
        }
        client.validate(&path, &names, problems);
    }
}

fn endpoint_name(name: &str, path: &FieldPath, problems: &mut Problems) {
    if name.is_empty() || name.len() > MAX_ENDPOINT_NAME_LEN {
        problems.add(
            path,
            format!("must be 1 to {MAX_ENDPOINT_NAME_LEN} characters"),
        );
    } else if name.starts_with('.')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        problems.add(
            path,
            format!(
                "`{}` may only contain letters, digits, `-`, `_` and `.` (not first): it is part of the URL",
                name.escape_debug()
            ),
        );
    }
}

fn description(text: &Option<String>, path: &FieldPath, problems: &mut Problems) {
    if text
        .as_ref()
        .is_some_and(|text| text.chars().count() > MAX_DESCRIPTION_LEN)
    {
        problems.add(
            path,
            format!("longer than {MAX_DESCRIPTION_LEN} characters"),
        );
    }
}

/// A job name as written in config.yml.
impl EndpointSpec {
    /// The action fields as written, for [`ActionFields::read`].
    pub fn action_fields(&self) -> ActionFields<'_> {
        ActionFields::new(self.action, &self.job, &self.jobs, self.from_failed)
    }

    fn validate(&self, path: &FieldPath, settings: &CircleCiSettings, problems: &mut Problems) {
        endpoint_name(&self.name, &path.key("name"), problems);
        description(&self.description, &path.key("description"), problems);
        let is_pipeline = self.action == ActionKind::Pipeline;
        self.target
            .validate(&path.key("target"), is_pipeline, problems);

        let parameters_path = path.key("parameters");
        if !is_pipeline && !self.parameters.is_empty() {
            problems.add(
                &parameters_path,
                format!(
                    "action = \"{}\" starts no pipeline, so it takes no parameters",
                    self.action.as_str()
                ),
            );
        }
        let sugar = self
            .target
            .workflow
            .as_ref()
            .map(|_| settings.workflow_parameter.as_str());
        for (name, schema) in &self.parameters {
            let field = parameters_path.key(name);
            rules::parameter_name(name, &field, problems);
            if self.target.parameters.contains_key(name) {
                problems.add(
                    &field,
                    format!(
                        "`{name}` is fixed in `target.parameters`; a caller cannot set it as well"
                    ),
                );
            }
            if sugar == Some(name.as_str()) {
                problems.add(
                    &field,
                    format!("`{name}` is set by `target.workflow` (the workflow parameter); a caller cannot set it"),
                );
            }
            schema.validate(&field, problems);
        }
        let total =
            self.parameters.len() + self.target.parameters.len() + usize::from(sugar.is_some());
        if total > rules::MAX_PARAMETERS {
            problems.add(
                &parameters_path,
                format!(
                    "{total} parameters in all (declared, fixed and the workflow parameter); CircleCI accepts at most {}",
                    rules::MAX_PARAMETERS
                ),
            );
        }

        let not_for = |problems: &mut Problems, field: &str, why: &str| {
            problems.add(
                &path.key(field),
                format!(
                    "`{field}` does not apply to action = \"{}\" ({why})",
                    self.action.as_str()
                ),
            );
        };
        self.action_fields().read(path, problems);
        if self.action == ActionKind::Pipeline && self.select != EndpointSelect::default() {
            not_for(problems, "select", "it acts on an existing workflow");
        }
        if self.select == EndpointSelect::Latest
            && self.target.branch.is_none()
            && self.target.branches.is_empty()
            && self.target.tag.is_none()
            && self.target.tags.is_empty()
        {
            problems.add(
                &path.key("select"),
                "select = \"latest\" needs a branch or tag policy in `target` (the newest pipeline on which ref?)",
            );
        }
    }
}

impl EndpointTarget {
    fn validate(&self, path: &FieldPath, is_pipeline: bool, problems: &mut Problems) {
        // The fixed parts go through the same checks as every other target.
        self.base_spec().validate(path, problems);
        for (field, patterns) in [("branches", &self.branches), ("tags", &self.tags)] {
            let field_path = path.key(field);
            for (index, pattern) in patterns.iter().enumerate() {
                if let Err(error) = NamePattern::parse(pattern) {
                    problems.add(&field_path.index(index), error.to_string());
                }
            }
            let unique: BTreeSet<&String> = patterns.iter().collect();
            if unique.len() != patterns.len() {
                problems.add(&field_path, "lists a pattern twice");
            }
        }
        if !is_pipeline {
            for (field, set) in [
                ("parameters", !self.parameters.is_empty()),
                ("definition_id", self.definition_id.is_some()),
                ("config", self.config.is_some()),
                ("checkout", self.checkout.is_some()),
            ] {
                if set {
                    problems.add(
                        &path.key(field),
                        format!("`{field}` applies only to action = \"pipeline\" (only a new pipeline takes it)"),
                    );
                }
            }
        }
    }
}

impl ParameterSchema {
    fn validate(&self, path: &FieldPath, problems: &mut Problems) {
        let kind = self.kind.as_str();
        description(&self.description, &path.key("description"), problems);
        let only_for = |problems: &mut Problems, field: &str, types: &str| {
            problems.add(
                &path.key(field),
                format!("`{field}` applies to {types} parameters, and this one is {kind}"),
            );
        };
        if self.kind != ParameterType::String {
            if self.pattern.is_some() {
                only_for(problems, "pattern", "string");
            }
            if self.max_length.is_some() {
                only_for(problems, "max_length", "string");
            }
        }
        if self.kind != ParameterType::Integer {
            if self.minimum.is_some() {
                only_for(problems, "minimum", "integer");
            }
            if self.maximum.is_some() {
                only_for(problems, "maximum", "integer");
            }
        }
        if let (Some(minimum), Some(maximum)) = (self.minimum, self.maximum)
            && minimum > maximum
        {
            problems.add(
                &path.key("minimum"),
                format!("minimum {minimum} is above maximum {maximum}"),
            );
        }
        if let Some(max_length) = self.max_length
            && !(1..=rules::MAX_PARAMETER_VALUE_LEN).contains(&max_length)
        {
            problems.add(
                &path.key("max_length"),
                format!(
                    "must be between 1 and {} (CircleCI's limit)",
                    rules::MAX_PARAMETER_VALUE_LEN
                ),
            );
        }
        let compiled = match self.pattern.as_deref().map(compile_pattern).transpose() {
            Ok(pattern) => Some(CompiledParameter {
                schema: self.clone(),
                pattern,
            }),
            Err(reason) => {
                problems.add(&path.key("pattern"), reason);
                None
            }
        };
        if self.required && self.default.is_some() {
            problems.add(
                &path.key("default"),
                "a required parameter never uses its default: drop `default` or `required`",
            );
        }
        if let Some(allowed) = &self.allowed {
            let enum_path = path.key("enum");
            if allowed.is_empty() {
                problems.add(&enum_path, "an empty list accepts nothing");
            }
            for (index, value) in allowed.iter().enumerate() {
                if let Some(compiled) = &compiled {
                    // A value is trivially one of the list: only its own rules can fail.
                    for reason in compiled.violations(value) {
                        problems.add(
                            &enum_path.index(index),
                            format!("can never be accepted: {reason}"),
                        );
                    }
                }
            }
        }
        if let (Some(default), Some(compiled)) = (&self.default, &compiled) {
            for reason in compiled.violations(default) {
                problems.add(
                    &path.key("default"),
                    format!("the default breaks its own rules: {reason}"),
                );
            }
        }
    }
}

impl ClientSpec {
    fn validate(
        &self,
        path: &FieldPath,
        endpoints: &BTreeMap<&str, usize>,
        problems: &mut Problems,
    ) {
        rules::secret_name(&self.name, &path.key("name"), problems);
        description(&self.description, &path.key("description"), problems);
        let endpoints_path = path.key("endpoints");
        if self.endpoints.is_empty() && !self.operator {
            problems.add(
                &endpoints_path,
                "a client needs at least one endpoint it may call (or `operator = true`)",
            );
        }
        let mut seen = BTreeSet::new();
        for (index, name) in self.endpoints.iter().enumerate() {
            let field = endpoints_path.index(index);
            if !seen.insert(name.as_str()) {
                problems.add(&field, format!("`{name}` is listed twice"));
            } else if !endpoints.contains_key(name.as_str()) {
                let known: Vec<&str> = endpoints.keys().copied().collect();
                problems.add(
                    &field,
                    if known.is_empty() {
                        format!("no endpoint named `{name}` (the file defines none)")
                    } else {
                        format!("no endpoint named `{name}` (defined: {})", known.join(", "))
                    },
                );
            }
        }
        if let Some(rate) = &self.rate_limit
            && let Err(reason) = RateLimit::parse(rate)
        {
            problems.add(&path.key("rate_limit"), reason);
        }
    }
}

#[cfg(test)]
impl ParameterSchema {
    /// A schema of `kind` that declares nothing else (tests).
    pub(crate) fn bare(kind: ParameterType, required: bool) -> Self {
        Self {
            kind,
            required,
            default: None,
            allowed: None,
            pattern: None,
            max_length: None,
            minimum: None,
            maximum: None,
            description: None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn schema(kind: ParameterType) -> ParameterSchema {
        ParameterSchema::bare(kind, false)
    }

    #[test]
    fn rates_parse_with_bare_units_and_bounds() {
        assert_eq!(
            RateLimit::parse("30/1m").unwrap(),
            RateLimit {
                requests: 30,
                window: Duration::from_secs(60)
            }
        );
        assert_eq!(
            RateLimit::parse("5/s").unwrap().window,
            Duration::from_secs(1)
        );
        assert_eq!(
            RateLimit::parse(" 100 / 1h ").unwrap().window,
            Duration::from_secs(3600)
        );
        for bad in [
            "30", "0/1m", "501/1m", "x/1m", "5/0s", "5/2d", "5/1y", "-1/m",
        ] {
            assert!(RateLimit::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_are_checked_against_every_rule() {
        let mut version = schema(ParameterType::String);
        version.pattern = Some(r"^\d+\.\d+\.\d+$".into());
        version.max_length = Some(8);
        let compiled = version.compile().unwrap();
        assert!(
            compiled
                .violations(&ParameterValue::String("1.4.2".into()))
                .is_empty()
        );
        let wrong = compiled.violations(&ParameterValue::String("1.4".into()));
        assert_eq!(wrong.len(), 1);
        assert!(wrong[0].contains("pattern"), "{wrong:?}");
        let long = compiled.violations(&ParameterValue::String("10.20.300".into()));
        assert!(long[0].contains("at most 8"), "{long:?}");
        let typed = compiled.violations(&ParameterValue::Integer(1));
        assert_eq!(typed, vec!["must be a string, not an integer".to_owned()]);

        let mut shards = schema(ParameterType::Integer);
        shards.minimum = Some(1);
        shards.maximum = Some(8);
        shards.allowed = Some(vec![ParameterValue::Integer(2), ParameterValue::Integer(4)]);
        let compiled = shards.compile().unwrap();
        assert!(compiled.violations(&ParameterValue::Integer(4)).is_empty());
        assert_eq!(compiled.violations(&ParameterValue::Integer(9)).len(), 2);
        assert!(compiled.violations(&ParameterValue::Integer(3))[0].contains("one of 2, 4"));
    }

    #[test]
    fn the_circleci_length_limit_applies_without_max_length() {
        let mut any = schema(ParameterType::String);
        any.pattern = Some(".*".into());
        let compiled = any.compile().unwrap();
        assert!(
            compiled
                .violations(&ParameterValue::String("é".repeat(512)))
                .is_empty(),
            "512 characters (not bytes) are fine"
        );
        let found = compiled.violations(&ParameterValue::String("x".repeat(513)));
        assert!(found[0].contains("at most 512"), "{found:?}");
    }

    #[test]
    fn strings_without_a_pattern_are_plain_text_only() {
        let plain = schema(ParameterType::String).compile().unwrap();
        for good in [
            "",
            "1.4.2",
            "release/1.4",
            "user@example.com",
            "a=b,c:d+e",
            "x_y-z",
        ] {
            assert!(
                plain
                    .violations(&ParameterValue::String(good.into()))
                    .is_empty(),
                "{good:?}"
            );
        }
        for hostile in [
            "$(id)",
            "`id`",
            "a;id",
            "a\nid",
            "a b",
            "it's",
            "\"q\"",
            "a|b",
            "a&b",
            "a>b",
            "${HOME}",
            "-rf",
            "ma\u{0456}n",
            "\u{ff11}",
        ] {
            let found = plain.violations(&ParameterValue::String(hostile.into()));
            assert_eq!(found.len(), 1, "{hostile:?}: {found:?}");
            assert!(found[0].contains("without `pattern`"), "{found:?}");
            assert!(
                !found[0].contains(hostile),
                "the value is not echoed: {found:?}"
            );
        }
        let huge = plain.violations(&ParameterValue::String("a".repeat(10 * 1024)));
        assert!(huge[0].contains("at most 512"), "{huge:?}");
        // A pattern or an enum is the author's class instead.
        let mut spaced = schema(ParameterType::String);
        spaced.pattern = Some("^[a-z ]+$".into());
        let spaced = spaced.compile().unwrap();
        assert!(
            spaced
                .violations(&ParameterValue::String("two words".into()))
                .is_empty()
        );
        let mut listed = schema(ParameterType::String);
        listed.allowed = Some(vec![ParameterValue::String("eu west".into())]);
        let listed = listed.compile().unwrap();
        assert!(
            listed
                .violations(&ParameterValue::String("eu west".into()))
                .is_empty()
        );
        assert_eq!(
            listed
                .violations(&ParameterValue::String("$(id)".into()))
                .len(),
            1
        );
    }

    #[test]
    fn text_values_are_read_as_the_declared_type() {
        assert_eq!(
            ParameterType::Integer.parse_text("42").unwrap(),
            ParameterValue::Integer(42)
        );
        assert_eq!(
            ParameterType::Boolean.parse_text("true").unwrap(),
            ParameterValue::Boolean(true)
        );
        assert!(ParameterType::Boolean.parse_text("yes").is_err());
        assert!(ParameterType::Integer.parse_text("4.2").is_err());
        assert_eq!(
            ParameterType::String.parse_text(" a ").unwrap(),
            ParameterValue::String(" a ".into())
        );
    }

    #[test]
    fn patterns_that_do_not_compile_or_are_huge_are_refused() {
        assert!(
            compile_pattern("(unclosed")
                .unwrap_err()
                .starts_with("error:")
        );
        assert!(compile_pattern(&"a".repeat(MAX_PATTERN_LEN + 1)).is_err());
        assert_eq!(
            compile_pattern("(?:a{1000}){1000}").unwrap_err(),
            "the pattern is too complex"
        );
    }
}

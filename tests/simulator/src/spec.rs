//! Contract checks against CircleCI's OpenAPI document.
//!
//! [`Spec::load`] reads the document from `$CIRCLECI_OPENAPI`, else
//! `<workspace root>/../shared/circleci/openapi.json`, and fails loudly when it is absent.
//! The validator covers the subset of JSON Schema the document uses: `$ref`, `type`,
//! `properties`, `required`, `additionalProperties`, `items`, `enum`, `allOf` / `oneOf` /
//! `anyOf`, `minimum`, `minLength` / `maxLength`, `pattern`, the `uuid` and `date-time`
//! formats, and nullability written either way (`nullable: true` or Swagger 2's
//! `x-nullable: true`). Where CircleCI's real answers differ from the document, the
//! [`ERRATA`] relax the check (documented in `tests/simulator/ERRATA.md`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Environment variable naming the OpenAPI document.
pub const SPEC_ENV: &str = "CIRCLECI_OPENAPI";

/// How an erratum relaxes a property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relaxation {
    /// The property may be `null` although the spec does not say so.
    Nullable,
    /// The property may be absent although the spec requires it.
    Optional,
    /// Both.
    NullableOrAbsent,
}

/// A place where CircleCI's answers differ from its spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Erratum {
    /// `title` of the enclosing schema (e.g. `Job`), or `*` for any schema.
    pub schema: &'static str,
    /// Property name.
    pub property: &'static str,
    /// What is relaxed.
    pub relaxation: Relaxation,
    /// Why.
    pub reason: &'static str,
}

/// A response CircleCI sends that the spec does not document for that operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseErratum {
    /// Lower-case method.
    pub method: &'static str,
    /// Path template as in the spec.
    pub path: &'static str,
    /// Status code.
    pub status: u16,
    /// Name of the component schema of the body.
    pub schema: &'static str,
    /// Why.
    pub reason: &'static str,
}

/// Property-level errata, applied by the validator.
pub const ERRATA: &[Erratum] = &[
    Erratum {
        schema: "*",
        property: "next_page_token",
        relaxation: Relaxation::Nullable,
        reason: "The last page of every list carries `next_page_token: null`, including lists whose schema \
                 forgets x-nullable.",
    },
    Erratum {
        schema: "Job",
        property: "started_at",
        relaxation: Relaxation::NullableOrAbsent,
        reason: "Jobs that have not started (blocked, queued, not_run) and approval jobs (on_hold or approved) \
                 have no start time: CircleCI sends null.",
    },
];

/// Response-level errata.
pub const RESPONSE_ERRATA: &[ResponseErratum] = &[ResponseErratum {
    method: "post",
    path: "/project/{project-slug}/pipeline",
    status: 200,
    schema: "pipelineNotTriggeredResponse",
    reason: "Like pipeline/run, the legacy trigger answers 200 {\"message\": ...} when a CI-skip directive \
             stops the pipeline; only pipeline/run documents it.",
}];

/// One way a document fails its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON path of the offending value, e.g. `$.items[0].started_at`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a check could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The document was not found.
    #[error("CircleCI OpenAPI document not found at {path} (set ${SPEC_ENV} to its location)")]
    Missing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// Reading failed.
    #[error("reading {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Not JSON.
    #[error("parsing {path}: {source}")]
    Json {
        /// File.
        path: PathBuf,
        /// Cause.
        source: serde_json::Error,
    },
    /// No component schema or titled schema has that name.
    #[error("no schema named {0:?} in the spec")]
    UnknownSchema(String),
    /// No operation matches.
    #[error("no operation {method} {path} in the spec")]
    UnknownOperation {
        /// Method.
        method: String,
        /// Path.
        path: String,
    },
    /// The operation documents no schema for that status (nor `default`).
    #[error("{method} {path} documents no JSON body for status {status}")]
    NoSchema {
        /// Method.
        method: String,
        /// Path template.
        path: String,
        /// Status.
        status: u16,
    },
    /// A `$ref` that does not resolve.
    #[error("unresolvable $ref {0}")]
    BadRef(String),
}

/// A loaded OpenAPI document, ready to validate values.
#[derive(Debug, Clone)]
pub struct Spec {
    doc: Value,
    /// Schema name (component key or `title`) → JSON pointer.
    names: BTreeMap<String, String>,
}

impl Spec {
    /// The default location: `<workspace root>/../shared/circleci/openapi.json`.
    pub fn default_path() -> PathBuf {
        // This crate lives at <workspace root>/tests/simulator.
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/circleci/openapi.json")
    }

    /// Loads from `$CIRCLECI_OPENAPI`, else [`Spec::default_path`].
    pub fn load() -> Result<Spec, SpecError> {
        let path = std::env::var_os(SPEC_ENV).map_or_else(Self::default_path, PathBuf::from);
        Self::load_from(&path)
    }

    /// Loads a document from `path`.
    pub fn load_from(path: &Path) -> Result<Spec, SpecError> {
        if !path.exists() {
            return Err(SpecError::Missing {
                path: path.to_owned(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Io {
            path: path.to_owned(),
            source,
        })?;
        let doc = serde_json::from_str(&text).map_err(|source| SpecError::Json {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self::from_value(doc))
    }

    /// Wraps an already parsed document.
    pub fn from_value(doc: Value) -> Spec {
        let mut names = BTreeMap::new();
        if let Some(schemas) = doc
            .pointer("/components/schemas")
            .and_then(Value::as_object)
        {
            for key in schemas.keys() {
                names.insert(
                    key.clone(),
                    format!("/components/schemas/{}", escape_pointer(key)),
                );
            }
        }
        let mut titled = Vec::new();
        collect_titles(&doc, String::new(), &mut titled);
        for (title, pointer) in titled {
            names.entry(title).or_insert(pointer);
        }
        Spec { doc, names }
    }

    /// Names accepted by [`Spec::validate`]: component schema keys and schema `title`s
    /// (the first occurrence wins; CircleCI repeats identical inline schemas).
    pub fn schema_names(&self) -> impl Iterator<Item = &str> {
        self.names.keys().map(String::as_str)
    }

    /// The schema known as `name`.
    pub fn schema(&self, name: &str) -> Result<&Value, SpecError> {
        let pointer = self
            .names
            .get(name)
            .ok_or_else(|| SpecError::UnknownSchema(name.to_owned()))?;
        self.doc
            .pointer(pointer)
            .ok_or_else(|| SpecError::UnknownSchema(name.to_owned()))
    }

    /// Validates `value` against the schema known as `name`; an empty list means valid.
    pub fn validate(&self, name: &str, value: &Value) -> Result<Vec<Violation>, SpecError> {
        let schema = self.schema(name)?;
        self.validate_against(schema, value)
    }

    /// Validates against an arbitrary schema value (which may contain `$ref`s into the doc).
    pub fn validate_against(
        &self,
        schema: &Value,
        value: &Value,
    ) -> Result<Vec<Violation>, SpecError> {
        let mut out = Vec::new();
        self.check(schema, value, "$", None, &mut out, 0)?;
        Ok(out)
    }

    /// Validates a response body of `method path` (a template such as
    /// `/pipeline/{pipeline-id}` or a concrete path) answered with `status`.
    pub fn validate_response(
        &self,
        method: &str,
        path: &str,
        status: u16,
        value: &Value,
    ) -> Result<Vec<Violation>, SpecError> {
        let schema = self.response_schema(method, path, status)?;
        self.validate_against(&schema, value)
    }

    /// Validates a JSON request body of `method path`.
    pub fn validate_request(
        &self,
        method: &str,
        path: &str,
        value: &Value,
    ) -> Result<Vec<Violation>, SpecError> {
        let (template, operation) = self.operation(method, path)?;
        let schema = operation
            .pointer("/requestBody/content/application~1json/schema")
            .ok_or_else(|| SpecError::NoSchema {
                method: method.to_owned(),
                path: template.clone(),
                status: 0,
            })?
            .clone();
        self.validate_against(&schema, value)
    }

    /// The response schema of an operation for a status (falling back to `default`), with
    /// [`RESPONSE_ERRATA`] applied.
    pub fn response_schema(
        &self,
        method: &str,
        path: &str,
        status: u16,
    ) -> Result<Value, SpecError> {
        let (template, operation) = self.operation(method, path)?;
        let method = method.to_ascii_lowercase();
        if let Some(erratum) = RESPONSE_ERRATA
            .iter()
            .find(|e| e.method == method && e.path == template && e.status == status)
        {
            return self.schema(erratum.schema).cloned();
        }
        let responses = operation.get("responses").and_then(Value::as_object);
        let status_key = status.to_string();
        let wildcard = format!("{}XX", status / 100);
        let response = responses
            .and_then(|r| {
                r.get(&status_key)
                    .or_else(|| r.get(&wildcard))
                    .or_else(|| r.get("default"))
            })
            .ok_or_else(|| SpecError::NoSchema {
                method: method.clone(),
                path: template.clone(),
                status,
            })?;
        let response = self.resolve(response)?;
        response
            .pointer("/content/application~1json/schema")
            .cloned()
            .ok_or(SpecError::NoSchema {
                method,
                path: template,
                status,
            })
    }

    /// Finds an operation by exact template or by matching a concrete path against the
    /// templates (a `{param}` matches one or more segments, since slugs contain `/`).
    fn operation(&self, method: &str, path: &str) -> Result<(String, &Value), SpecError> {
        let method_key = method.to_ascii_lowercase();
        let unknown = || SpecError::UnknownOperation {
            method: method.to_owned(),
            path: path.to_owned(),
        };
        let paths = self
            .doc
            .get("paths")
            .and_then(Value::as_object)
            .ok_or_else(unknown)?;
        if let Some(operation) = paths.get(path).and_then(|p| p.get(&method_key)) {
            return Ok((path.to_owned(), operation));
        }
        let concrete: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        // Prefer templates with more literal segments (`/pipeline/run` over `/{project}`).
        let mut candidates: Vec<(&String, &Value)> = paths
            .iter()
            .filter(|(template, item)| {
                item.get(&method_key).is_some() && {
                    let parts: Vec<&str> = template.split('/').filter(|s| !s.is_empty()).collect();
                    segments_match(&parts, &concrete)
                }
            })
            .collect();
        candidates.sort_by_key(|(template, _)| {
            std::cmp::Reverse(template.split('/').filter(|s| !s.starts_with('{')).count())
        });
        let (template, item) = candidates.first().ok_or_else(unknown)?;
        let operation = item.get(&method_key).ok_or_else(unknown)?;
        Ok(((*template).clone(), operation))
    }

    fn resolve<'a>(&'a self, mut schema: &'a Value) -> Result<&'a Value, SpecError> {
        for _ in 0..32 {
            match schema.get("$ref").and_then(Value::as_str) {
                None => return Ok(schema),
                Some(reference) => {
                    let pointer = reference
                        .strip_prefix('#')
                        .ok_or_else(|| SpecError::BadRef(reference.to_owned()))?;
                    schema = self
                        .doc
                        .pointer(pointer)
                        .ok_or_else(|| SpecError::BadRef(reference.to_owned()))?;
                }
            }
        }
        Err(SpecError::BadRef("$ref chain too long".to_owned()))
    }

    fn check(
        &self,
        schema: &Value,
        value: &Value,
        path: &str,
        title: Option<&str>,
        out: &mut Vec<Violation>,
        depth: usize,
    ) -> Result<(), SpecError> {
        if depth > 64 {
            return Ok(());
        }
        let schema = self.resolve(schema)?;
        let Some(schema_object) = schema.as_object() else {
            return Ok(());
        };
        let title = schema_object.get("title").and_then(Value::as_str).or(title);
        let mut push = |message: String| {
            out.push(Violation {
                path: path.to_owned(),
                message,
            })
        };

        if value.is_null() {
            if is_nullable(schema)
                || (schema_object.get("type").is_none() && !has_combinator(schema))
            {
                return Ok(());
            }
            push("null is not allowed (not nullable)".to_owned());
            return Ok(());
        }

        if let Some(all) = schema_object.get("allOf").and_then(Value::as_array) {
            for sub in all {
                self.check(sub, value, path, title, out, depth + 1)?;
            }
        }
        for (keyword, exactly_one) in [("anyOf", false), ("oneOf", true)] {
            if let Some(options) = schema_object.get(keyword).and_then(Value::as_array) {
                let mut matching = 0;
                for sub in options {
                    let mut scratch = Vec::new();
                    self.check(sub, value, path, title, &mut scratch, depth + 1)?;
                    if scratch.is_empty() {
                        matching += 1;
                    }
                }
                let ok = if exactly_one {
                    matching == 1
                } else {
                    matching >= 1
                };
                if !ok {
                    out.push(Violation {
                        path: path.to_owned(),
                        message: format!(
                            "matches {matching} of the {} {keyword} alternatives",
                            options.len()
                        ),
                    });
                }
            }
        }
        let mut push = |message: String| {
            out.push(Violation {
                path: path.to_owned(),
                message,
            })
        };

        if let Some(allowed) = schema_object.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            push(format!(
                "{value} is not one of {}",
                Value::Array(allowed.clone())
            ));
        }
        if let Some(expected) = schema_object.get("type").and_then(Value::as_str) {
            let ok = match expected {
                "string" => value.is_string(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                "boolean" => value.is_boolean(),
                "object" => value.is_object(),
                "array" => value.is_array(),
                _ => true,
            };
            if !ok {
                push(format!("expected {expected}, got {}", json_type(value)));
                return Ok(());
            }
        }
        if let Some(text) = value.as_str() {
            if let Some(format) = schema_object.get("format").and_then(Value::as_str) {
                let ok = match format {
                    "uuid" => uuid::Uuid::parse_str(text).is_ok(),
                    "date-time" => chrono::DateTime::parse_from_rfc3339(text).is_ok(),
                    _ => true,
                };
                if !ok {
                    push(format!("{text:?} is not a valid {format}"));
                }
            }
            let length = u64::try_from(text.chars().count()).unwrap_or(u64::MAX);
            if let Some(min) = schema_object.get("minLength").and_then(Value::as_u64)
                && length < min
            {
                push(format!("shorter than {min}"));
            }
            if let Some(max) = schema_object.get("maxLength").and_then(Value::as_u64)
                && length > max
            {
                push(format!("longer than {max}"));
            }
            if let Some(pattern) = schema_object.get("pattern").and_then(Value::as_str)
                && let Ok(re) = regex::Regex::new(pattern)
                && !re.is_match(text)
            {
                push(format!("{text:?} does not match {pattern}"));
            }
        }
        if let Some(minimum) = schema_object.get("minimum").and_then(Value::as_f64)
            && let Some(number) = value.as_f64()
            && number < minimum
        {
            push(format!("{number} is below the minimum {minimum}"));
        }
        if let Some(items) = value.as_array()
            && let Some(item_schema) = schema_object.get("items")
        {
            for (index, item) in items.iter().enumerate() {
                self.check(
                    item_schema,
                    item,
                    &format!("{path}[{index}]"),
                    None,
                    out,
                    depth + 1,
                )?;
            }
        }
        if let Some(object) = value.as_object() {
            self.check_object(schema_object, object, path, title, out, depth)?;
        }
        Ok(())
    }

    fn check_object(
        &self,
        schema: &serde_json::Map<String, Value>,
        object: &serde_json::Map<String, Value>,
        path: &str,
        title: Option<&str>,
        out: &mut Vec<Violation>,
        depth: usize,
    ) -> Result<(), SpecError> {
        let properties = schema.get("properties").and_then(Value::as_object);
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                if !object.contains_key(name)
                    && !erratum(title, name).is_some_and(|r| r != Relaxation::Nullable)
                {
                    out.push(Violation {
                        path: path.to_owned(),
                        message: format!("missing required property {name:?}"),
                    });
                }
            }
        }
        for (name, value) in object {
            let child = format!("{path}.{name}");
            match properties.and_then(|p| p.get(name)) {
                Some(property_schema) => {
                    if value.is_null()
                        && erratum(title, name).is_some_and(|r| r != Relaxation::Optional)
                    {
                        continue;
                    }
                    self.check(property_schema, value, &child, None, out, depth + 1)?;
                }
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => out.push(Violation {
                        path: child,
                        message: "property not allowed by the schema".to_owned(),
                    }),
                    Some(extra) if extra.is_object() => {
                        self.check(extra, value, &child, None, out, depth + 1)?
                    }
                    _ => {}
                },
            }
        }
        Ok(())
    }
}

fn erratum(title: Option<&str>, property: &str) -> Option<Relaxation> {
    ERRATA
        .iter()
        .find(|e| e.property == property && (e.schema == "*" || Some(e.schema) == title))
        .map(|e| e.relaxation)
}

fn is_nullable(schema: &Value) -> bool {
    schema.get("nullable").and_then(Value::as_bool) == Some(true)
        || schema.get("x-nullable").and_then(Value::as_bool) == Some(true)
}

fn has_combinator(schema: &Value) -> bool {
    ["allOf", "anyOf", "oneOf", "enum", "properties"]
        .iter()
        .any(|k| schema.get(*k).is_some())
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn escape_pointer(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Every schema with a `title`, depth first in document order, with its JSON pointer.
fn collect_titles(value: &Value, pointer: String, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(object) => {
            if let Some(title) = object.get("title").and_then(Value::as_str) {
                let is_schema = object.contains_key("type") || object.contains_key("properties");
                if is_schema {
                    out.push((title.to_owned(), pointer.clone()));
                }
            }
            for (key, child) in object {
                if matches!(key.as_str(), "example" | "examples" | "x-codeSamples") {
                    continue;
                }
                collect_titles(child, format!("{pointer}/{}", escape_pointer(key)), out);
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                collect_titles(child, format!("{pointer}/{index}"), out);
            }
        }
        _ => {}
    }
}

/// Matches template segments against concrete ones; `{param}` takes one or more segments.
fn segments_match(template: &[&str], concrete: &[&str]) -> bool {
    match (template.split_first(), concrete.split_first()) {
        (None, None) => true,
        (None, Some(_)) | (Some(_), None) => false,
        (Some((head, rest)), Some((first, tail))) => {
            if head.starts_with('{') && head.ends_with('}') {
                (1..=concrete.len()).any(|taken| segments_match(rest, &concrete[taken..]))
            } else {
                head == first && segments_match(rest, tail)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn tiny() -> Spec {
        Spec::from_value(json!({
            "paths": {
                "/thing/{id}": {"get": {"responses": {"200": {"content": {"application/json": {"schema": {
                    "$ref": "#/components/schemas/Thing"}}}}}}},
                "/project/{slug}/pipeline": {"post": {"responses": {"default": {"content": {"application/json": {"schema": {
                    "type": "object", "properties": {"message": {"type": "string"}}}}}}}}},
                "/project/{slug}/pipeline/run": {"post": {"responses": {"201": {"content": {"application/json": {"schema": {
                    "type": "object", "title": "Run", "properties": {"id": {"type": "string"}}}}}}}}}
            },
            "components": {"schemas": {"Thing": {
                "type": "object",
                "title": "Job",
                "additionalProperties": false,
                "required": ["id", "started_at", "kind"],
                "properties": {
                    "id": {"type": "string", "format": "uuid"},
                    "started_at": {"type": "string", "format": "date-time"},
                    "stopped_at": {"type": "string", "format": "date-time", "x-nullable": true},
                    "kind": {"type": "string", "enum": ["a", "b"]},
                    "n": {"type": "integer", "minimum": 1},
                    "tags": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}
                }
            }}}
        }))
    }

    #[test]
    fn reports_every_violation_with_its_path() {
        let spec = tiny();
        let bad = json!({"id": "nope", "kind": "c", "n": 0, "tags": ["x", true], "extra": 1, "stopped_at": null});
        let violations = spec.validate("Thing", &bad).unwrap();
        let paths: Vec<&str> = violations.iter().map(|v| v.path.as_str()).collect();
        assert!(paths.contains(&"$.id"), "{violations:?}");
        assert!(paths.contains(&"$.kind"));
        assert!(paths.contains(&"$.n"));
        assert!(paths.contains(&"$.tags[1]"));
        assert!(paths.contains(&"$.extra"));
        // started_at is absent but the Job erratum makes it optional.
        assert!(
            !violations.iter().any(|v| v.message.contains("started_at")),
            "{violations:?}"
        );
        assert_eq!(violations.len(), 5, "{violations:?}");
    }

    #[test]
    fn errata_allow_null_started_at_only_on_jobs() {
        let spec = tiny();
        let ok = json!({"id": uuid::Uuid::new_v4(), "kind": "a", "started_at": null});
        assert!(spec.validate("Thing", &ok).unwrap().is_empty());
        assert!(
            spec.validate("Job", &ok).unwrap().is_empty(),
            "titles are names too"
        );
        let wrong_type = json!({"id": uuid::Uuid::new_v4(), "kind": "a", "started_at": 5});
        assert_eq!(spec.validate("Thing", &wrong_type).unwrap().len(), 1);
    }

    #[test]
    fn concrete_paths_find_their_operation() {
        let spec = tiny();
        let id = uuid::Uuid::new_v4();
        let body = json!({"id": id, "kind": "b", "started_at": "2024-01-01T00:00:00.000Z"});
        assert!(
            spec.validate_response("GET", &format!("/thing/{id}"), 200, &body)
                .unwrap()
                .is_empty()
        );
        // A slug spans three segments; the longer literal template wins.
        let schema = spec
            .response_schema("post", "/project/gh/acme/api/pipeline/run", 201)
            .unwrap();
        assert_eq!(schema["title"], "Run");
        let fallback = spec
            .response_schema("post", "/project/gh/acme/api/pipeline", 500)
            .unwrap();
        assert!(fallback["properties"]["message"].is_object());
        assert!(matches!(
            spec.response_schema("get", "/nothing", 200),
            Err(SpecError::UnknownOperation { .. })
        ));
    }

    #[test]
    fn a_missing_document_is_an_error() {
        let err = Spec::load_from(Path::new("/definitely/not/here.json")).unwrap_err();
        assert!(matches!(err, SpecError::Missing { .. }));
    }
}

//! The OpenAPI document of the HTTP API: generated from the code, committed as
//! `docs/openapi.json`, and a valid OpenAPI 3.1 document by an independent parser.
//!
//! After changing the API, regenerate the committed file with
//! `CIRCLECI_TRIGGERS_BLESS=1 cargo test -p http-function --test openapi`.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;

use serde_json::Value;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

#[test]
fn the_committed_document_is_the_generated_one() {
    let generated = shared::triggers::http::openapi::document_json();
    let path = committed_path();
    if std::env::var_os("CIRCLECI_TRIGGERS_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "{}: {error}; generate it with CIRCLECI_TRIGGERS_BLESS=1 cargo test -p http-function --test openapi",
            path.display()
        )
    });
    assert!(
        committed == generated,
        "docs/openapi.json differs from the API's generated document; regenerate it with \
         CIRCLECI_TRIGGERS_BLESS=1 cargo test -p http-function --test openapi"
    );
}

#[test]
fn the_document_is_valid_openapi_3_1_and_every_reference_resolves() {
    let text = shared::triggers::http::openapi::document_json();
    let spec = oas3::from_json(&text).unwrap();
    let version = spec.validate_version().unwrap();
    assert_eq!((version.major, version.minor), (3, 1));

    let mut operation_ids = HashSet::new();
    let mut routes = BTreeSet::new();
    for (path, method, operation) in spec.operations() {
        routes.insert(format!("{method} {path}"));
        let id = operation.operation_id.clone().unwrap();
        assert!(
            operation_ids.insert(id.clone()),
            "duplicate operationId {id}"
        );
        operation.parameters(&spec).unwrap();
        if let Some(body) = operation.request_body(&spec).unwrap() {
            for (media, content) in &body.content {
                content
                    .schema(&spec)
                    .unwrap_or_else(|e| panic!("{id} request {media}: {e}"))
                    .unwrap();
            }
        }
        // `responses(&spec)` drops what it cannot resolve: compare with what is declared.
        let declared = operation.responses.as_ref().map_or(0, |r| r.len());
        let responses = operation.responses(&spec);
        assert_eq!(
            responses.len(),
            declared,
            "{id}: a response does not resolve"
        );
        assert!(!responses.is_empty(), "{id} documents no response");
        for (status, response) in responses {
            assert!(
                response.content.len() == 1,
                "{id} {status}: one media type per response"
            );
            for (media, content) in &response.content {
                let schema = content
                    .schema(&spec)
                    .unwrap_or_else(|e| panic!("{id} {status} {media}: {e}"));
                assert!(schema.is_some(), "{id} {status} {media}: no schema");
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(media, "application/problem+json", "{id} {status}");
                }
            }
        }
    }
    assert_eq!(
        routes.into_iter().collect::<Vec<_>>(),
        [
            "GET /v1/openapi.json",
            "GET /v1/status",
            "GET /v1/triggers",
            "GET /v1/triggers/{id}",
            "POST /v1/endpoints/{name}",
            "POST /v1/schedules/{name}/runs",
        ]
    );

    // Every `$ref` anywhere points at something that exists.
    let raw: Value = serde_json::from_str(&text).unwrap();
    let mut references = Vec::new();
    collect_refs(&raw, &mut references);
    assert!(!references.is_empty());
    for reference in references {
        let pointer = reference.strip_prefix('#').unwrap();
        assert!(raw.pointer(pointer).is_some(), "dangling $ref {reference}");
    }
    // The security scheme the operations name is declared.
    assert_eq!(
        raw.pointer("/components/securitySchemes/client_key/scheme"),
        Some(&Value::from("bearer"))
    );
}

fn collect_refs(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match (key.as_str(), child) {
                    ("$ref", Value::String(reference)) => found.push(reference.clone()),
                    _ => collect_refs(child, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_refs(item, found)),
        _ => {}
    }
}

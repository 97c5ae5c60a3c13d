//! Signatures against CircleCI's vectors, and every payload family parsed and normalised:
//! CircleCI's documented samples (read from ../shared, never copied) and our own.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use secrecy::SecretString;
use serde_json::{Value, json};
use triggers_config::chain::{CompletionStatus, EventKind};
use triggers_config::template::Template;

use super::*;

/// CircleCI's samples: `$CIRCLECI_FIXTURES`, else `<workspace>/../shared/fixtures/circleci-webhooks`.
fn circleci_fixtures() -> PathBuf {
    let dir = std::env::var_os("CIRCLECI_FIXTURES").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/circleci-webhooks"),
        PathBuf::from,
    );
    assert!(
        dir.join("signature-vectors.json").is_file(),
        "CircleCI webhook fixtures not found at {} (set CIRCLECI_FIXTURES)",
        dir.display()
    );
    dir
}

/// Our own samples, written for end-to-end tests.
fn own_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/integration/fixtures/webhooks")
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    let path = dir.join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn secret(text: &str) -> SecretString {
    SecretString::from(text.to_owned())
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

// ----- signatures -------------------------------------------------------------------------

#[derive(serde::Deserialize)]
struct Vector {
    body: String,
    secret: String,
    header: String,
}

fn vectors() -> Vec<Vector> {
    serde_json::from_slice(&read(&circleci_fixtures(), "signature-vectors.json")).unwrap()
}

#[test]
fn every_circleci_vector_verifies_and_is_reproduced() {
    let vectors = vectors();
    assert!(
        vectors.len() >= 4,
        "expected CircleCI's vectors, got {}",
        vectors.len()
    );
    for vector in &vectors {
        let key = secret(&vector.secret);
        assert_eq!(
            verify_signature(
                Some(&vector.header),
                vector.body.as_bytes(),
                std::slice::from_ref(&key)
            ),
            Ok(()),
            "vector for body {:?}",
            vector.body
        );
        assert_eq!(sign_v1(vector.body.as_bytes(), &key), vector.header);
    }
}

#[test]
fn a_wrong_secret_or_a_changed_body_is_a_mismatch() {
    for vector in vectors() {
        let wrong = [secret(&format!("{}x", vector.secret))];
        assert_eq!(
            verify_signature(Some(&vector.header), vector.body.as_bytes(), &wrong),
            Err(SignatureError::Mismatch)
        );
        let right = [secret(&vector.secret)];
        let tampered = format!("{} ", vector.body);
        assert_eq!(
            verify_signature(Some(&vector.header), tampered.as_bytes(), &right),
            Err(SignatureError::Mismatch)
        );
    }
}

#[test]
fn header_shapes() {
    let key = [secret("secret")];
    let body = b"hello world";
    let good = "734cc62f32841568f45715aeb9f4d7891324e6d948e4c6c60c0621cdac48623a";
    let check = |header: Option<&str>| verify_signature(header, body, &key);

    assert_eq!(check(None), Err(SignatureError::Missing));
    assert_eq!(check(Some("")), Err(SignatureError::Malformed));
    assert_eq!(check(Some("v1")), Err(SignatureError::Malformed));
    assert_eq!(check(Some("v1=zz")), Err(SignatureError::Malformed));
    assert_eq!(
        check(Some(&format!("v1={}", &good[..62]))),
        Err(SignatureError::Malformed)
    );
    assert_eq!(
        check(Some(&format!("v1={good}00"))),
        Err(SignatureError::Malformed)
    );
    assert_eq!(
        check(Some(&format!("v1={good},garbage"))),
        Err(SignatureError::Malformed)
    );
    assert_eq!(
        check(Some(&format!("v1={}", "a".repeat(4096)))),
        Err(SignatureError::Malformed)
    );
    // v2 only: there is nothing we verify.
    assert_eq!(
        check(Some(&format!("v2={good}"))),
        Err(SignatureError::NoV1)
    );
    // v1 next to other schemes, in any order, with spaces, in upper case.
    assert_eq!(check(Some(&format!("v1={good},v2=whatever"))), Ok(()));
    assert_eq!(
        check(Some(&format!("v2=whatever, v1={}", good.to_uppercase()))),
        Ok(())
    );
    // Several v1 values: any one matching is enough.
    assert_eq!(
        check(Some(&format!("v1={},v1={good}", "0".repeat(64)))),
        Ok(())
    );
    assert_eq!(
        check(Some(&format!("v1={}", "0".repeat(64)))),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn any_configured_secret_verifies_during_rotation() {
    let body = br#"{"type":"workflow-completed"}"#;
    let old = secret("previous-secret");
    let new = secret("current-secret");
    let both = [new.clone(), old.clone()];
    assert_eq!(
        verify_signature(Some(&sign_v1(body, &old)), body, &both),
        Ok(())
    );
    assert_eq!(
        verify_signature(Some(&sign_v1(body, &new)), body, &both),
        Ok(())
    );
    let retired = secret("retired-secret");
    assert_eq!(
        verify_signature(Some(&sign_v1(body, &retired)), body, &both),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        verify_signature(Some(&sign_v1(body, &new)), body, &[]),
        Err(SignatureError::NoSecrets)
    );
}

#[test]
fn signature_errors_reveal_nothing() {
    let key = [secret("hunter123")];
    let header = sign_v1(b"other", &key[0]);
    let error = verify_signature(Some(&header), b"body", &key).unwrap_err();
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains("hunter123"), "{shown}");
    assert!(!shown.contains(&header[3..]), "{shown}");
}

// ----- CircleCI's samples -----------------------------------------------------------------

fn parse_fixture(dir: &Path, name: &str) -> WebhookEvent {
    parse_event(&read(dir, name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn oauth_workflow_completed_normalises() {
    let event = parse_fixture(&circleci_fixtures(), "workflow-completed.oauth.json");
    assert_eq!(event.kind(), EventKind::WorkflowCompleted);
    assert_eq!(event.id(), "3888f21b-eaa7-38e3-8f3d-75a63bba8895");
    assert_eq!(event.happened_at(), at("2021-09-01T22:49:34.317Z"));
    assert_eq!(
        event.project_slug().canonical(),
        "gh/circleci/webhook-service"
    );
    assert_eq!(event.project().name.as_deref(), Some("webhook-service"));
    assert_eq!(event.pipeline().id, "1285fe1d-d3a6-44fc-8886-8979558254c4");
    assert_eq!(event.pipeline().number, 130);
    assert_eq!(event.pipeline().trigger_type.as_deref(), Some("webhook"));
    assert_eq!(
        event.revision(),
        Some("1dc6aa69429bff4806ad6afe58d3d8f57e25973e")
    );
    assert_eq!(event.branch(), Some("main"));
    assert_eq!(event.tag(), None);
    assert_eq!(event.git().source, GitSource::Vcs);
    let workflow = event.workflow().unwrap();
    assert_eq!(workflow.name, "build-test-deploy");
    assert_eq!(workflow.id, "fda08377-fe7e-46b1-8992-3a7aaecac9c3");
    assert_eq!(event.status().known(), Some(CompletionStatus::Success));
    assert!(event.job().is_none());
    assert_eq!(event.raw()["organization"]["name"], "circleci");
}

#[test]
fn app_workflow_completed_reads_git_from_trigger_parameters() {
    let event = parse_fixture(&circleci_fixtures(), "workflow-completed.app.json");
    assert_eq!(event.kind(), EventKind::WorkflowCompleted);
    assert_eq!(event.id(), "cbabbb40-6084-4f91-8311-a326c0f4963a");
    assert_eq!(
        event.project_slug().canonical(),
        "circleci/DdaVtNusHqi24D4YT3X4eu/6EkDPZoN4ZdMKKZtBkRodt"
    );
    assert_eq!(event.pipeline().number, 1);
    assert_eq!(event.pipeline().trigger_type.as_deref(), Some("gitlab"));
    assert_eq!(event.git().source, GitSource::TriggerParameters);
    assert_eq!(
        event.revision(),
        Some("850a1519f25d14e968649cc420d1bd381715c05c")
    );
    assert_eq!(event.branch(), Some("main"));
    assert_eq!(event.tag(), None, "an empty `git.tag` means no tag");
    assert_eq!(event.workflow().unwrap().name, "build");
    assert_eq!(event.status().as_str(), "failed");
    assert_eq!(event.status().known(), Some(CompletionStatus::Failed));
}

#[test]
fn oauth_job_completed_has_a_workflow_without_status() {
    let event = parse_fixture(&circleci_fixtures(), "job-completed.oauth.json");
    assert_eq!(event.kind(), EventKind::JobCompleted);
    assert_eq!(event.id(), "8bd71c28-4969-3677-8940-3e3a61c46660");
    let job = event.job().unwrap();
    assert_eq!(job.name, "test");
    assert_eq!(job.id, "8b91f9a8-7975-4e60-916c-f0152ccbc937");
    assert_eq!(job.number, Some(136));
    let workflow = event.workflow().unwrap();
    assert_eq!(workflow.name, "welcome");
    assert_eq!(workflow.status, None);
    assert_eq!(
        event.status().known(),
        Some(CompletionStatus::Success),
        "the job's status"
    );
    assert_eq!(
        event.revision(),
        Some("1dc6aa69429bff4806ad6afe58d3d8f57e25973e")
    );
    assert_eq!(event.branch(), Some("main"));
}

#[test]
fn app_job_completed_has_no_workflow() {
    let event = parse_fixture(&circleci_fixtures(), "job-completed.app.json");
    assert_eq!(event.kind(), EventKind::JobCompleted);
    assert_eq!(event.id(), "47a497be-4498-4da0-a4e8-2dabd889af0f");
    assert!(event.workflow().is_none());
    assert_eq!(event.job().unwrap().name, "say-hello");
    assert_eq!(event.pipeline().id, "37c74cb7-d64d-4032-8731-1cb95bfef921");
    assert_eq!(
        event.revision(),
        Some("850a1519f25d14e968649cc420d1bd381715c05c")
    );
    assert_eq!(event.branch(), Some("main"));
    assert_eq!(event.status().known(), Some(CompletionStatus::Success));
}

// ----- our own samples --------------------------------------------------------------------

#[test]
fn own_samples_parse_to_their_documented_values() {
    let dir = own_fixtures();
    // (file, kind, slug, status, branch, tag, revision prefix, workflow, job)
    let expected = [
        (
            "workflow-completed.oauth.json",
            EventKind::WorkflowCompleted,
            "gh/acme/api",
            "success",
            Some("main"),
            None,
            "3f2a9c1d",
            Some("build"),
            None,
        ),
        (
            "workflow-completed.oauth-tag.json",
            EventKind::WorkflowCompleted,
            "gh/acme/api",
            "failed",
            None,
            Some("v2.0.0"),
            "3f2a9c1d",
            Some("release"),
            None,
        ),
        (
            "job-completed.oauth.json",
            EventKind::JobCompleted,
            "gh/acme/api",
            "failed",
            Some("main"),
            None,
            "3f2a9c1d",
            Some("build"),
            Some("lint"),
        ),
        (
            "workflow-completed.app.json",
            EventKind::WorkflowCompleted,
            "circleci/Hq7Rt2WxYz3AbCdEfGhJk9/Mn4Pq8RsTuVw2XyZaBcDe6",
            "success",
            Some("main"),
            None,
            "9e8d7c6b",
            Some("e2e"),
            None,
        ),
        (
            "job-completed.app.json",
            EventKind::JobCompleted,
            "circleci/Hq7Rt2WxYz3AbCdEfGhJk9/Qr5St9UvWx3YzAbCdEfGh7",
            "success",
            None,
            Some("v1.4.2"),
            "0f1e2d3c",
            None,
            Some("publish"),
        ),
    ];
    for (file, kind, slug, status, branch, tag, revision, workflow, job) in expected {
        let event = parse_fixture(&dir, file);
        assert_eq!(event.kind(), kind, "{file}");
        assert_eq!(event.project_slug().canonical(), slug, "{file}");
        assert_eq!(event.status().as_str(), status, "{file}");
        assert_eq!(event.branch(), branch, "{file}");
        assert_eq!(event.tag(), tag, "{file}");
        assert!(event.revision().unwrap().starts_with(revision), "{file}");
        assert_eq!(
            event.workflow().map(|w| w.name.as_str()),
            workflow,
            "{file}"
        );
        assert_eq!(event.job().map(|j| j.name.as_str()), job, "{file}");
    }
}

// ----- malformed bodies -------------------------------------------------------------------

fn oauth_workflow() -> Value {
    serde_json::from_slice(&read(&circleci_fixtures(), "workflow-completed.oauth.json")).unwrap()
}

fn app_workflow() -> Value {
    serde_json::from_slice(&read(&circleci_fixtures(), "workflow-completed.app.json")).unwrap()
}

fn oauth_job() -> Value {
    serde_json::from_slice(&read(&circleci_fixtures(), "job-completed.oauth.json")).unwrap()
}

/// `body` with the value at `pointer` replaced (or removed for `None`).
fn edited(mut body: Value, pointer: &str, value: Option<Value>) -> Vec<u8> {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let parent = body.pointer_mut(parent).unwrap().as_object_mut().unwrap();
    match value {
        Some(value) => parent.insert(key.to_owned(), value),
        None => parent.remove(key),
    };
    serde_json::to_vec(&body).unwrap()
}

fn field_error(body: &[u8]) -> (String, FieldProblem) {
    match parse_event(body) {
        Err(EventError::Field { path, problem }) => (path, problem),
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn unknown_fields_and_nulls_are_tolerated() {
    let mut body = oauth_workflow();
    body["brand_new_top_level"] = json!({"x": [1, 2, 3]});
    body["pipeline"]["vcs"]["something_else"] = json!(42);
    body["workflow"]["tags"] = json!(["a"]);
    body["organization"] = json!(null);
    body["project"]["name"] = json!(null);
    let event = parse_event(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(event.branch(), Some("main"));
    assert_eq!(event.project().name, None);
    assert_eq!(event.raw()["brand_new_top_level"]["x"][2], 3);
}

#[test]
fn truncated_or_non_object_bodies_are_rejected() {
    let full = read(&circleci_fixtures(), "workflow-completed.oauth.json");
    let error = parse_event(&full[..full.len() / 2]).unwrap_err();
    assert!(
        matches!(&error, EventError::Json { reason } if reason.contains("line")),
        "{error:?}"
    );
    assert!(matches!(parse_event(b""), Err(EventError::Json { .. })));
    assert_eq!(field_error(b"[1, 2]").0, "(body)");
    assert_eq!(field_error(b"\"workflow-completed\"").0, "(body)");
}

#[test]
fn missing_fields_are_named_by_path() {
    for (pointer, path) in [
        ("/id", "id"),
        ("/type", "type"),
        ("/happened_at", "happened_at"),
        ("/project", "project"),
        ("/project/slug", "project.slug"),
        ("/pipeline", "pipeline"),
        ("/pipeline/id", "pipeline.id"),
        ("/pipeline/number", "pipeline.number"),
        ("/workflow", "workflow"),
        ("/workflow/status", "workflow.status"),
        ("/workflow/name", "workflow.name"),
    ] {
        let (found, problem) = field_error(&edited(oauth_workflow(), pointer, None));
        assert_eq!(
            (found.as_str(), &problem),
            (path, &FieldProblem::Missing),
            "removing {pointer}"
        );
    }
    for (pointer, path) in [
        ("/job", "job"),
        ("/job/status", "job.status"),
        ("/workflow/id", "workflow.id"),
    ] {
        let (found, problem) = field_error(&edited(oauth_job(), pointer, None));
        assert_eq!(
            (found.as_str(), &problem),
            (path, &FieldProblem::Missing),
            "removing {pointer}"
        );
    }
    let (found, problem) = field_error(&edited(oauth_workflow(), "/id", Some(json!(""))));
    assert_eq!((found.as_str(), problem), ("id", FieldProblem::Empty));
}

#[test]
fn wrong_types_are_named_by_path() {
    let cases = [
        (
            oauth_workflow(),
            "/pipeline/number",
            json!("130"),
            "pipeline.number",
        ),
        (
            oauth_workflow(),
            "/pipeline/number",
            json!(-1),
            "pipeline.number",
        ),
        (oauth_workflow(), "/pipeline/id", json!(7), "pipeline.id"),
        (
            oauth_workflow(),
            "/workflow/name",
            json!(["build"]),
            "workflow.name",
        ),
        (
            oauth_workflow(),
            "/pipeline/vcs",
            json!("main"),
            "pipeline.vcs",
        ),
        (
            oauth_workflow(),
            "/pipeline/vcs/branch",
            json!(true),
            "pipeline.vcs.branch",
        ),
        (oauth_workflow(), "/project", json!([]), "project"),
        (oauth_job(), "/job/number", json!(1.5), "job.number"),
        (
            app_workflow(),
            "/pipeline/trigger_parameters/git/checkout_sha",
            json!(12),
            "pipeline.trigger_parameters.git.checkout_sha",
        ),
        (
            app_workflow(),
            "/pipeline/trigger_parameters/git/ref",
            json!({}),
            "pipeline.trigger_parameters.git.ref",
        ),
    ];
    for (body, pointer, value, path) in cases {
        let (found, problem) = field_error(&edited(body, pointer, Some(value.clone())));
        assert_eq!(found, path, "{pointer} = {value}");
        assert!(
            matches!(problem, FieldProblem::WrongType { .. }),
            "{pointer}: {problem:?}"
        );
    }
}

#[test]
fn invalid_values_are_named_by_path() {
    let cases = [
        ("/happened_at", json!("yesterday"), "happened_at"),
        ("/project/slug", json!("github/acme"), "project.slug"),
        ("/project/slug", json!("svn/acme/api"), "project.slug"),
        (
            "/pipeline/vcs/revision",
            json!("not-a-sha"),
            "pipeline.vcs.revision",
        ),
    ];
    for (pointer, value, path) in cases {
        let (found, problem) = field_error(&edited(oauth_workflow(), pointer, Some(value)));
        assert_eq!(found, path);
        assert!(matches!(problem, FieldProblem::Invalid(_)), "{problem:?}");
    }
    let error = parse_event(&edited(oauth_workflow(), "/type", Some(json!("ping")))).unwrap_err();
    assert_eq!(error, EventError::UnsupportedType("ping".into()));
    let message = parse_event(&edited(
        oauth_workflow(),
        "/pipeline/number",
        Some(json!("x")),
    ))
    .unwrap_err()
    .to_string();
    assert_eq!(
        message,
        "`pipeline.number` should be a non-negative integer"
    );
}

#[test]
fn oversized_strings_and_bodies_are_rejected() {
    let cases = [
        (
            "/pipeline/vcs/branch",
            "b".repeat(256),
            "pipeline.vcs.branch",
        ),
        ("/id", "i".repeat(129), "id"),
        ("/workflow/name", "w".repeat(1025), "workflow.name"),
        ("/type", "t".repeat(5000), "type"),
    ];
    for (pointer, value, path) in cases {
        let (found, problem) = field_error(&edited(oauth_workflow(), pointer, Some(json!(value))));
        assert_eq!(found, path);
        assert!(
            matches!(problem, FieldProblem::TooLong { .. }),
            "{problem:?}"
        );
    }
    // Long unused fields are fine (commit bodies can be long) up to the body limit.
    let mut body = oauth_workflow();
    body["pipeline"]["vcs"]["commit"]["body"] = json!("x".repeat(100_000));
    assert!(parse_event(&serde_json::to_vec(&body).unwrap()).is_ok());
    body["pipeline"]["vcs"]["commit"]["body"] = json!("x".repeat(MAX_BODY_BYTES));
    let error = parse_event(&serde_json::to_vec(&body).unwrap()).unwrap_err();
    assert!(
        matches!(
            error,
            EventError::TooLarge {
                limit: MAX_BODY_BYTES,
                ..
            }
        ),
        "{error:?}"
    );
    // An unsupported type is echoed only in part.
    let error = parse_event(&edited(
        oauth_workflow(),
        "/type",
        Some(json!("p".repeat(500))),
    ))
    .unwrap_err();
    assert!(error.to_string().len() < 200);
}

#[test]
fn app_refs_fall_back_to_ref_and_provider_block() {
    let mut body = app_workflow();
    let parameters = &mut body["pipeline"]["trigger_parameters"];
    parameters["git"] = json!({ "ref": "refs/tags/v3.1.0", "branch": "" });
    let event = parse_event(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(event.tag(), Some("v3.1.0"));
    assert_eq!(event.branch(), Some("main"), "from the gitlab block");
    assert_eq!(
        event.revision(),
        Some("850a1519f25d14e968649cc420d1bd381715c05c"),
        "from the gitlab block"
    );

    let mut body = app_workflow();
    body["pipeline"]["trigger_parameters"] = json!({ "git": { "ref": "refs/heads/feature/x" } });
    body["pipeline"]["trigger"] = json!({ "type": "api" });
    let event = parse_event(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(event.branch(), Some("feature/x"));
    assert_eq!(event.revision(), None);

    let mut body = app_workflow();
    body["pipeline"]
        .as_object_mut()
        .unwrap()
        .remove("trigger_parameters");
    let event = parse_event(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(event.git().source, GitSource::None);
    assert_eq!(
        (event.branch(), event.tag(), event.revision()),
        (None, None, None)
    );
}

// ----- replay window, templates, the whole receive path -------------------------------------

#[test]
fn replay_window_uses_the_injected_clock() {
    let event = parse_fixture(&circleci_fixtures(), "workflow-completed.oauth.json");
    let happened = event.happened_at();
    let window = ReplayWindow {
        max_age: Duration::hours(1),
        max_skew: Duration::minutes(5),
    };
    assert_eq!(event.check_replay_window(happened, &window), Ok(()));
    assert_eq!(
        event.check_replay_window(happened + Duration::hours(1), &window),
        Ok(())
    );
    assert_eq!(
        event.check_replay_window(happened + Duration::hours(2), &window),
        Err(ReplayError::TooOld {
            age_seconds: 7_200,
            max_age_seconds: 3_600
        })
    );
    assert_eq!(
        event.check_replay_window(happened - Duration::minutes(4), &window),
        Ok(())
    );
    assert_eq!(
        event.check_replay_window(happened - Duration::minutes(10), &window),
        Err(ReplayError::FromTheFuture { ahead_seconds: 600 })
    );
}

#[test]
fn templates_render_from_the_normalised_event() {
    let render = |event: &WebhookEvent, text: &str| Template::parse(text).unwrap().render(event);
    let oauth = parse_fixture(&own_fixtures(), "workflow-completed.oauth.json");
    assert_eq!(
        render(&oauth, "{{ project.slug }}#{{ pipeline.number }}@{{ revision }} on {{ branch }}: {{ workflow.name }} {{ status }}").unwrap(),
        "gh/acme/api#412@3f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a39 on main: build success"
    );
    assert_eq!(
        render(&oauth, "{{ pipeline.id }}").unwrap(),
        "c4d5e6f7-0819-4a2b-9c3d-444444444444"
    );
    assert_eq!(
        render(&oauth, "{{ workflow.id }}").unwrap(),
        "a0b1c2d3-e4f5-4a6b-8c7d-333333333333"
    );
    assert!(render(&oauth, "{{ tag }}").is_err());
    assert!(render(&oauth, "{{ job.name }}").is_err());

    let app_job = parse_fixture(&own_fixtures(), "job-completed.app.json");
    assert_eq!(
        render(&app_job, "{{ job.name }}:{{ tag }}:{{ status }}").unwrap(),
        "publish:v1.4.2:success"
    );
    assert!(
        render(&app_job, "{{ workflow.name }}").is_err(),
        "App-style job events have no workflow"
    );
    assert!(
        render(&app_job, "{{ branch }}").is_err(),
        "a tag pipeline has no branch"
    );
}

#[test]
fn receive_checks_signature_then_body_then_age() {
    let body = read(&own_fixtures(), "workflow-completed.oauth.json");
    let key = secret("current");
    let header = sign_v1(&body, &key);
    let secrets = [key];
    let now = at("2026-11-28T09:20:00Z");
    let window = ReplayWindow::default();

    let event = receive(Some(&header), &body, &secrets, now, &window).unwrap();
    assert_eq!(event.id(), "5f6e0c1a-1b2c-4d3e-8f40-0a1b2c3d4e5f");

    // Garbage with a bad signature is a signature error: it is never parsed.
    assert_eq!(
        receive(Some(&header), b"{not json", &secrets, now, &window),
        Err(WebhookError::Signature(SignatureError::Mismatch))
    );
    assert_eq!(
        receive(None, &body, &secrets, now, &window),
        Err(WebhookError::Signature(SignatureError::Missing))
    );
    // Garbage correctly signed reaches the parser.
    let garbage = b"{not json";
    let signed = sign_v1(garbage, &secrets[0]);
    assert!(matches!(
        receive(Some(&signed), garbage, &secrets, now, &window),
        Err(WebhookError::Event(EventError::Json { .. }))
    ));
    // A replay a day later.
    assert!(matches!(
        receive(
            Some(&header),
            &body,
            &secrets,
            now + Duration::days(1),
            &window
        ),
        Err(WebhookError::Replay(ReplayError::TooOld { .. }))
    ));
}

//! `webhook_router()` over real HTTP: signature checks (CircleCI's vectors, good / bad /
//! missing / v2-only signatures, rotated secrets), CircleCI's documented payloads in both
//! families, redelivered and stale events, malformed and oversized bodies. Actions land in
//! the CircleCI simulator; decisions are read back from trigger history.
#![allow(clippy::unwrap_used)]

mod chained_support;

use std::sync::Arc;
use std::time::Duration;

use chained_support::{Harness, OLD_SECRET, Options, SECRET, WorkflowEvent, fixture, fixtures_dir};
use chrono::{DateTime, Utc};
use circleci_sim::{JobSpec, ParameterSpec, ProjectSpec, Simulator, WorkflowSpec};
use serde_json::{Value, json};
use shared::clock::ManualClock;
use shared::store::{SourceKind, TriggerStatus};
use shared::triggers::chained::{AcceptorSettings, Disposition};

const DEPLOY: &str = "gh/acme/deploy";
const APP_PROJECT: &str = "circleci/DdaVtNusHqi24D4YT3X4eu/6EkDPZoN4ZdMKKZtBkRodt";

/// Rules matching each of CircleCI's documented samples, all starting a `gh/acme/deploy`
/// pipeline whose parameters say which sample caused it.
fn fixture_rules() -> String {
    format!(
        r#"
[[chain]]
name = "oauth-workflow"
when = {{ project = "gh/circleci/webhook-service", workflow = "build-test-deploy", branch = "main" }}
[[chain.then]]
action = "pipeline"
project = "{DEPLOY}"
branch = "main"
parameters = {{ upstream_sha = "{{{{ revision }}}}", upstream = "{{{{ project.slug }}}}#{{{{ pipeline.number }}}}" }}

[[chain]]
name = "oauth-job"
when = {{ project = "gh/circleci/webhook-service", job = "test", branch = "main" }}
[[chain.then]]
action = "pipeline"
project = "{DEPLOY}"
branch = "main"
parameters = {{ upstream_sha = "{{{{ revision }}}}", upstream = "job {{{{ job.name }}}} in {{{{ workflow.name }}}}" }}

[[chain]]
name = "app-workflow-failed"
when = {{ project = "{APP_PROJECT}", workflow = "build", branch = "main", status = ["failed"] }}
[[chain.then]]
action = "pipeline"
project = "{DEPLOY}"
branch = "{{{{ branch }}}}"
parameters = {{ upstream_sha = "{{{{ revision }}}}", upstream = "build {{{{ status }}}}" }}

[[chain]]
name = "app-job"
when = {{ project = "{APP_PROJECT}", job = "say-hello", branch = "main" }}
[[chain.then]]
action = "pipeline"
project = "{DEPLOY}"
branch = "main"
parameters = {{ upstream_sha = "{{{{ revision }}}}", upstream = "job {{{{ job.name }}}}" }}
"#
    )
}

fn deploy_project() -> ProjectSpec {
    ProjectSpec::new(DEPLOY)
        .parameter(ParameterSpec::string("upstream_sha", ""))
        .parameter(ParameterSpec::string("upstream", ""))
        .workflow(WorkflowSpec::new("deploy").job(JobSpec::new("ship")))
}

fn happened_at(event: &Value) -> DateTime<Utc> {
    event["happened_at"].as_str().unwrap().parse().unwrap()
}

async fn fixture_harness(options: Options) -> (Simulator, Harness, Arc<ManualClock>) {
    let sim = Simulator::start().await.unwrap();
    sim.add_user("alice", chained_support::ALICE_TOKEN);
    sim.add_project(deploy_project());
    let clock = options
        .clock
        .clone()
        .unwrap_or_else(|| Arc::new(ManualClock::new(Utc::now())));
    let harness = Harness::start_with(
        &sim,
        &fixture_rules(),
        Options {
            clock: Some(clock.clone()),
            ..options
        },
    )
    .await;
    (sim, harness, clock)
}

#[tokio::test]
async fn circleci_documented_payloads_trigger_their_rules_in_both_families() {
    let (sim, harness, clock) = fixture_harness(Options::default()).await;
    let cases = [
        (
            "workflow-completed.oauth.json",
            "oauth-workflow",
            "1dc6aa69429bff4806ad6afe58d3d8f57e25973e",
            "gh/circleci/webhook-service#130",
        ),
        (
            "job-completed.oauth.json",
            "oauth-job",
            "1dc6aa69429bff4806ad6afe58d3d8f57e25973e",
            "job test in welcome",
        ),
        (
            "workflow-completed.app.json",
            "app-workflow-failed",
            "850a1519f25d14e968649cc420d1bd381715c05c",
            "build failed",
        ),
        (
            "job-completed.app.json",
            "app-job",
            "850a1519f25d14e968649cc420d1bd381715c05c",
            "job say-hello",
        ),
    ];
    for (file, rule, sha, upstream) in cases {
        let event = fixture(file);
        clock.set(happened_at(&event) + chrono::Duration::seconds(30));
        let answer = harness.post_signed(&event).await;
        assert_eq!(answer.status, 200, "{file}: {:?}", answer.body);
        let actions = answer.body["actions"].as_array().unwrap();
        assert_eq!(
            actions.len(),
            1,
            "{file}: exactly one rule matches: {:?}",
            answer.body
        );
        assert_eq!(actions[0]["rule"], rule);
        assert_eq!(
            actions[0]["status"], "triggered",
            "{file}: {:?}",
            actions[0]
        );

        let records = harness.rule_records(rule).await;
        assert_eq!(records.len(), 1);
        let record = &records[0];
        assert_eq!(record.source.kind, SourceKind::Chain);
        assert_eq!(record.status, TriggerStatus::Triggered);
        let upstream_ref = record.upstream.as_ref().unwrap();
        assert_eq!(upstream_ref.event_id.as_deref(), event["id"].as_str());
        assert_eq!(
            upstream_ref.pipeline_id,
            event["pipeline"]["id"].as_str().unwrap()
        );
        assert_eq!(upstream_ref.revision.as_deref(), Some(sha));
        // Nothing of ours started the upstream: the chained trigger is its own origin.
        assert_eq!(record.origin, record.id);

        let pipeline_id = record.pipeline.as_ref().unwrap().id.parse().unwrap();
        let created = sim.pipeline(pipeline_id).unwrap();
        assert_eq!(created.project_slug, DEPLOY);
        assert_eq!(created.branch.as_deref(), Some("main"));
        assert_eq!(created.parameters["upstream_sha"], sha);
        assert_eq!(created.parameters["upstream"], upstream);
    }
    assert_eq!(sim.pipelines().len(), 4);
}

#[tokio::test]
async fn signature_vectors_pass_the_router_and_tampering_is_refused() {
    #[derive(serde::Deserialize)]
    struct Vector {
        body: String,
        secret: String,
        header: String,
    }
    let text = std::fs::read_to_string(fixtures_dir().join("signature-vectors.json")).unwrap();
    let vectors: Vec<Vector> = serde_json::from_str(&text).unwrap();
    assert!(vectors.len() >= 3);
    let mut secrets: Vec<String> = vectors.iter().map(|v| v.secret.clone()).collect();
    secrets.dedup();
    let (_sim, harness, _clock) = fixture_harness(Options {
        webhook_secrets: secrets,
        ..Options::default()
    })
    .await;
    for vector in &vectors {
        // A valid signature gets past the check; the body is not an event, so it is the
        // parser that answers (400), never the signature check (401).
        let answer = harness
            .post_raw(
                vector.body.clone().into_bytes(),
                &[("circleci-signature", &vector.header)],
            )
            .await;
        assert_eq!(answer.status, 400, "{}: {:?}", vector.body, answer.body);
        assert_eq!(
            answer.body["type"],
            "https://circleci-triggers.dev/problems/invalid-event"
        );

        let mut tampered = vector.body.clone();
        tampered.push(' ');
        let answer = harness
            .post_raw(
                tampered.into_bytes(),
                &[("circleci-signature", &vector.header)],
            )
            .await;
        assert_eq!(answer.status, 401, "a changed body fails");
    }
}

#[tokio::test]
async fn good_bad_missing_and_v2_only_signatures() {
    let (sim, harness, clock) = fixture_harness(Options::default()).await;
    let event = fixture("workflow-completed.oauth.json");
    clock.set(happened_at(&event) + chrono::Duration::seconds(5));
    let body = serde_json::to_vec(&event).unwrap();
    let good = circleci_sim::signature_header(SECRET, &body);
    let hex = good.trim_start_matches("v1=");

    let unauthorized: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("missing", vec![]),
        (
            "wrong secret",
            vec![(
                "circleci-signature",
                circleci_sim::signature_header("nope", &body),
            )],
        ),
        ("v2 only", vec![("circleci-signature", format!("v2={hex}"))]),
        (
            "not hex",
            vec![("circleci-signature", "v1=zzzz".to_owned())],
        ),
        ("empty", vec![("circleci-signature", String::new())]),
        (
            "truncated",
            vec![("circleci-signature", format!("v1={}", &hex[..40]))],
        ),
    ];
    for (case, headers) in unauthorized {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let answer = harness.post_raw(body.clone(), &headers).await;
        assert_eq!(answer.status, 401, "{case}");
        assert!(answer.is_problem(), "{case}: {}", answer.content_type);
        // No hint about which check failed.
        assert!(
            answer.body.get("detail").is_none(),
            "{case}: {:?}",
            answer.body
        );
    }
    assert!(
        sim.pipelines().is_empty(),
        "nothing is triggered by a refused delivery"
    );
    assert!(
        harness.records().await.is_empty(),
        "and nothing is recorded"
    );

    // v1 next to a v2 the receiver does not check, in either order.
    for header in [format!("{good},v2=abcdef"), format!("v2=abcdef,{good}")] {
        let answer = harness
            .post_raw(body.clone(), &[("circleci-signature", &header)])
            .await;
        assert_eq!(answer.status, 200, "{header}: {:?}", answer.body);
    }
    assert_eq!(
        sim.pipelines().len(),
        1,
        "the second delivery of the same event is a duplicate"
    );
}

#[tokio::test]
async fn a_rotated_secret_is_accepted_at_once_and_a_retired_one_after_the_next_read() {
    let settings = AcceptorSettings {
        secret_refresh_interval: Duration::ZERO,
        ..AcceptorSettings::default()
    };
    let (_sim, harness, clock) = fixture_harness(Options {
        webhook_secrets: vec![OLD_SECRET.to_owned()],
        settings,
        ..Options::default()
    })
    .await;
    let event = |id: &str| {
        let mut event = fixture("workflow-completed.oauth.json");
        event["id"] = json!(id);
        event
    };
    clock.set(happened_at(&event("x")) + chrono::Duration::seconds(5));
    assert_eq!(
        harness
            .post_signed_with(&event("e-1"), OLD_SECRET)
            .await
            .status,
        200
    );

    // Rotation, step 1: the new secret is added in the secrets store (the receiver's cached
    // copy still has only the old one), then CircleCI starts signing with it.
    harness
        .secrets
        .write_webhook_secrets(&[SECRET.to_owned(), OLD_SECRET.to_owned()]);
    assert_eq!(
        harness.post_signed_with(&event("e-2"), SECRET).await.status,
        200
    );
    assert_eq!(
        harness
            .post_signed_with(&event("e-3"), OLD_SECRET)
            .await
            .status,
        200,
        "both are valid during the rotation"
    );

    // Step 2: the old secret is retired. The cached copy still holds it until the secrets
    // are next read (cache expiry, or a signature that matches nothing).
    harness.secrets.write_webhook_secrets(&[SECRET.to_owned()]);
    assert_eq!(
        harness
            .post_signed_with(&event("e-4"), OLD_SECRET)
            .await
            .status,
        200
    );
    assert_eq!(
        harness
            .post_signed_with(&event("e-5"), "forged")
            .await
            .status,
        401
    );
    assert_eq!(
        harness
            .post_signed_with(&event("e-6"), OLD_SECRET)
            .await
            .status,
        401
    );
    assert_eq!(
        harness.post_signed_with(&event("e-7"), SECRET).await.status,
        200
    );
}

#[tokio::test]
async fn forged_signatures_do_not_make_the_receiver_reread_secrets_each_time() {
    // With the default interval, a mismatch re-reads the secrets at most once a minute: a
    // secret added after that read is not seen by the next forged or new-secret request.
    let (_sim, harness, clock) = fixture_harness(Options {
        webhook_secrets: vec![OLD_SECRET.to_owned()],
        ..Options::default()
    })
    .await;
    let event = fixture("workflow-completed.oauth.json");
    clock.set(happened_at(&event) + chrono::Duration::seconds(5));
    assert_eq!(harness.post_signed_with(&event, "forged").await.status, 401);
    harness.secrets.write_webhook_secrets(&[SECRET.to_owned()]);
    assert_eq!(
        harness.post_signed_with(&event, SECRET).await.status,
        401,
        "the refresh was spent on the forged request"
    );
    assert_eq!(
        harness.post_signed_with(&event, OLD_SECRET).await.status,
        200,
        "the cached secret still works"
    );
}

#[tokio::test]
async fn a_redelivered_event_answers_2xx_and_does_nothing_new() {
    let (sim, harness, clock) = fixture_harness(Options::default()).await;
    let event = fixture("workflow-completed.oauth.json");
    clock.set(happened_at(&event) + chrono::Duration::seconds(5));
    let first = harness.post_signed(&event).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body["actions"][0]["disposition"], "decided");
    for _ in 0..3 {
        let again = harness.post_signed(&event).await;
        assert_eq!(again.status, 200);
        assert_eq!(again.body["actions"][0]["disposition"], "replayed");
        assert_eq!(
            again.body["actions"][0]["trigger_id"],
            first.body["actions"][0]["trigger_id"]
        );
    }
    assert_eq!(sim.pipelines().len(), 1);
    assert_eq!(harness.records().await.len(), 1);
}

#[tokio::test]
async fn stale_and_future_events_are_rejected_and_recorded() {
    let (sim, harness, clock) = fixture_harness(Options::default()).await;
    let event = fixture("workflow-completed.oauth.json");
    // Two hours late: outside the default one-hour window.
    clock.set(happened_at(&event) + chrono::Duration::hours(2));
    let answer = harness.post_signed(&event).await;
    assert_eq!(answer.status, 400, "{:?}", answer.body);
    assert!(answer.is_problem());
    assert_eq!(
        answer.body["type"],
        "https://circleci-triggers.dev/problems/stale-event"
    );
    assert!(
        answer.body["detail"]
            .as_str()
            .unwrap()
            .contains("older than 3600 s")
    );
    assert!(sim.pipelines().is_empty());

    let records = harness.rule_records("oauth-workflow").await;
    assert_eq!(records.len(), 1, "the refusal is in history");
    assert_eq!(records[0].status, TriggerStatus::Rejected);
    assert!(
        records[0].reason.as_deref().unwrap().contains("older than"),
        "{:?}",
        records[0].reason
    );
    assert_eq!(records[0].target.project, DEPLOY);

    // Delivered again: refused again, and its rejected row is the one already recorded.
    let again = harness.post_signed(&event).await;
    assert_eq!(again.status, 400, "{:?}", again.body);
    assert_eq!(harness.records().await.len(), 1);

    // An event dated ten minutes ahead of our clock (beyond the five-minute skew).
    let mut future = fixture("workflow-completed.oauth.json");
    future["id"] = json!("future-event");
    clock.set(happened_at(&future) - chrono::Duration::minutes(10));
    let answer = harness.post_signed(&future).await;
    assert_eq!(answer.status, 400);
    assert!(
        answer.body["detail"]
            .as_str()
            .unwrap()
            .contains("in the future")
    );
    assert!(sim.pipelines().is_empty());
}

#[tokio::test]
async fn a_stale_event_that_matches_nothing_is_refused_without_a_row() {
    let (_sim, harness, clock) = fixture_harness(Options::default()).await;
    let event = WorkflowEvent::new("gh/acme/unrelated", "build", "success", Utc::now()).json();
    clock.set(Utc::now() + chrono::Duration::hours(3));
    let answer = harness.post_signed(&event).await;
    assert_eq!(answer.status, 400);
    assert!(harness.records().await.is_empty());
}

#[tokio::test]
async fn malformed_events_get_a_400_naming_the_problem() {
    let (sim, harness, clock) = fixture_harness(Options::default()).await;
    let base = fixture("workflow-completed.oauth.json");
    clock.set(happened_at(&base) + chrono::Duration::seconds(5));

    let mut no_pipeline_id = base.clone();
    no_pipeline_id["pipeline"]
        .as_object_mut()
        .unwrap()
        .remove("id");
    let mut wrong_type = base.clone();
    wrong_type["pipeline"]["number"] = json!("one hundred");
    let mut unsupported = base.clone();
    unsupported["type"] = json!("ping");
    let mut bad_time = base.clone();
    bad_time["happened_at"] = json!("yesterday");

    for (case, event, field) in [
        ("missing id", no_pipeline_id, Some("pipeline.id")),
        ("wrong type", wrong_type, Some("pipeline.number")),
        ("unsupported type", unsupported, None),
        ("bad time", bad_time, Some("happened_at")),
    ] {
        let answer = harness.post_signed(&event).await;
        assert_eq!(answer.status, 400, "{case}: {:?}", answer.body);
        assert!(answer.is_problem());
        if let Some(field) = field {
            assert_eq!(answer.body["field"], field, "{case}: {:?}", answer.body);
            assert!(answer.body["detail"].as_str().unwrap().contains(field));
        }
    }
    // Signed garbage.
    let body = b"{not json".to_vec();
    let signature = circleci_sim::signature_header(SECRET, &body);
    let answer = harness
        .post_raw(body, &[("circleci-signature", &signature)])
        .await;
    assert_eq!(answer.status, 400);
    assert!(
        answer.body["detail"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    assert!(sim.pipelines().is_empty());
    assert!(harness.records().await.is_empty());
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413_before_anything_else() {
    let (_sim, harness, _clock) = fixture_harness(Options::default()).await;
    let body = vec![b' '; shared::triggers::chained::webhook::MAX_BODY_BYTES + 1];
    let answer = harness.post_raw(body, &[]).await;
    assert_eq!(answer.status, 413);
    assert!(answer.is_problem(), "{}", answer.content_type);
    assert_eq!(
        answer.body["type"],
        "https://circleci-triggers.dev/problems/payload-too-large"
    );
}

#[tokio::test]
async fn other_methods_and_routes_answer_problem_json() {
    let (_sim, harness, _clock) = fixture_harness(Options::default()).await;
    let get = harness.http.get(&harness.url).send().await.unwrap();
    assert_eq!(get.status(), 405);
    assert_eq!(get.headers()["content-type"], "application/problem+json");
    let other = harness
        .http
        .post(harness.url.replace("/circleci", "/github"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}

#[tokio::test]
async fn an_unmatched_event_answers_200_and_records_nothing() {
    let (sim, harness, clock) = fixture_harness(Options::default()).await;
    let now = Utc::now();
    clock.set(now);
    let event = WorkflowEvent::new("gh/acme/unrelated", "build", "success", now).json();
    let answer = harness.post_signed(&event).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["actions"], json!([]));
    assert!(sim.pipelines().is_empty());
    assert!(harness.records().await.is_empty());
}

#[tokio::test]
async fn a_slow_circleci_delays_nothing_the_acceptor_answers_and_the_worker_decides_once() {
    let (sim, harness, clock) = fixture_harness(Options::default()).await;
    // CircleCI is slow today: every answer takes a second.
    sim.set_faults(circleci_sim::Faults {
        latency: Duration::from_secs(1),
        ..circleci_sim::Faults::default()
    });
    let event = fixture("workflow-completed.oauth.json");
    clock.set(happened_at(&event) + chrono::Duration::seconds(5));
    // The production acceptor, without the tests' settle-before-answering layer.
    let router = harness.webhooks.accepting_router(
        harness.secrets.port(),
        harness.clock.clone(),
        AcceptorSettings::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}{}",
        listener.local_addr().unwrap(),
        shared::triggers::chained::WEBHOOK_PATH
    );
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let post = || async {
        let body = serde_json::to_vec(&event).unwrap();
        harness
            .http
            .post(&url)
            .header("content-type", "application/json")
            .header(
                "circleci-signature",
                circleci_sim::signature_header(SECRET, &body),
            )
            .body(body)
            .send()
            .await
            .unwrap()
    };

    // Accepted before any CircleCI call: no record, no pipeline, one queued delivery.
    let accepted = post().await;
    assert_eq!(accepted.status(), 202);
    let accepted: serde_json::Value = accepted.json().await.unwrap();
    assert_eq!(accepted["event_type"], "workflow-completed");
    assert!(harness.records().await.is_empty());
    assert!(sim.pipelines().is_empty());
    assert_eq!(harness.webhooks.queue.pending().await.unwrap(), 1);

    // CircleCI redelivers (it may); the worker settles both: one pipeline.
    assert_eq!(post().await.status(), 202);
    let settled = harness.webhooks.worker.drain().await.unwrap();
    assert_eq!(settled.len(), 2);
    assert!(
        settled
            .iter()
            .all(|(_, settlement)| settlement.is_settled())
    );
    // Identical deliveries in one batch are settled once and share the outcome.
    let dispositions: Vec<_> = settled
        .iter()
        .map(|(_, settlement)| settlement.report().unwrap().actions[0].disposition)
        .collect();
    assert_eq!(
        dispositions,
        vec![Disposition::Decided, Disposition::Decided]
    );
    // A third delivery, later: replayed.
    assert_eq!(post().await.status(), 202);
    let later = harness.webhooks.worker.drain().await.unwrap();
    assert_eq!(
        later[0].1.report().unwrap().actions[0].disposition,
        Disposition::Replayed
    );
    assert_eq!(sim.pipelines().len(), 1);
    assert_eq!(harness.webhooks.queue.pending().await.unwrap(), 0);
    server.abort();
}

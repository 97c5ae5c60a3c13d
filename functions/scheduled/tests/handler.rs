//! The `scheduled` function's handler (`shared::triggers::scheduled::lambda::handle`, what `main.rs`
//! runs) driven with the committed EventBridge Scheduler Input
//! (`fixtures/scheduler-input.json`, the template's Input with a concrete time), against the
//! CircleCI simulator and a real store.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use circleci_sim::{JobSpec, ParameterSpec, ProjectSpec, When, WorkflowSpec};
use integration_tests::moto::sdk_config_for;
use integration_tests::scheduled_support::{Backend, Harness};
use serde_json::{Value, json};
use shared::engine::{Engine, EngineSettings};
use shared::store::DynamoStore;
use shared::triggers::scheduled::Scheduler;
use shared::triggers::scheduled::lambda::handle;

/// 03:00 in Berlin is 02:00 UTC in November: the fixture's scheduled time.
const TRIGGERS: &str = r#"
[[schedule]]
name = "nightly"
cron = "0 3 * * *"
timezone = "Europe/Berlin"
target = { project = "gh/acme/api", branch = "main", workflow = "nightly" }
"#;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/scheduler-input.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn harness() -> Harness {
    let at = fixture()["scheduled_time"].as_str().unwrap().to_owned();
    Harness::builder(Backend::Sqlite)
        .start_at(&at)
        .project(
            ProjectSpec::new("gh/acme/api")
                .parameter(ParameterSpec::string("run-workflow", ""))
                .workflow(
                    WorkflowSpec::new("nightly")
                        .when(When::equals("run-workflow", "nightly"))
                        .job(JobSpec::new("build")),
                ),
        )
        .build(TRIGGERS)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_input_ticks_at_its_scheduled_time_once() {
    let h = harness().await;
    let input = fixture();
    assert_eq!(input["source"], "circleci-triggers.tick");

    let answer = handle(&h.scheduler, input.clone()).await.unwrap();
    assert_eq!(answer["outcome"], "ticked");
    assert_eq!(answer["metrics"], json!(["TickSucceeded"]));
    assert_eq!(answer["report"]["at"], "2026-11-28T02:00:00Z");
    assert_eq!(answer["report"]["schedules"][0]["schedule"], "nightly");
    assert_eq!(answer["report"]["schedules"][0]["fired"], 1);
    let pipelines = h.sim.pipelines();
    assert_eq!(pipelines.len(), 1);
    assert_eq!(pipelines[0].parameters["run-workflow"], "nightly");
    assert_eq!(pipelines[0].branch.as_deref(), Some("main"));

    // The same event again (a duplicate delivery): answered, nothing more triggered.
    let again = handle(&h.scheduler, input).await.unwrap();
    assert_eq!(again["outcome"], "ticked");
    // The first one saved the scheduler state through this instant: the repeat is idle.
    assert_eq!(again["report"]["schedules"], json!([]));
    assert_eq!(h.sim.pipelines().len(), 1);
    let history = h.history("nightly").await;
    assert_eq!(history.len(), 1);
    assert_eq!(
        history[0].detail.slot.as_deref(),
        Some("2026-11-28T02:00:00Z")
    );
    assert_eq!(
        history[0].detail.slot_local.as_deref(),
        Some("2026-11-28 03:00:00")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_run_is_answered_without_the_tick_metric() {
    let h = harness().await;
    let answer = handle(
        &h.scheduler,
        json!({"schedule": "nightly", "run_id": "CHG-1"}),
    )
    .await
    .unwrap();
    assert_eq!(answer["outcome"], "ran");
    assert_eq!(answer["metrics"], json!([]));
    assert_eq!(answer["report"]["schedules"][0]["fired"], 1);
    assert_eq!(h.sim.pipelines().len(), 1);
    assert!(h.history("nightly").await[0].detail.manual);
}

/// Inputs that can never succeed are answered `Ok` (an error would only make Lambda retry
/// them) with the reason, and trigger nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_that_cannot_succeed_are_rejected_without_an_error() {
    let h = harness().await;
    let cases = [
        (
            json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}),
            "not valid JSON of the expected shape",
        ),
        (
            json!({"source": "circleci-triggers.tick", "scheduled_time": "<aws.scheduler.scheduled-time>"}),
            "not valid JSON of the expected shape",
        ),
        (json!({"source": "circleci-triggers.tick"}), "names neither"),
        (
            json!({"schedule": "nigthly"}),
            "no schedule named `nigthly` (known: nightly)",
        ),
        (
            json!("2026-11-28T02:00:00Z"),
            "not valid JSON of the expected shape",
        ),
    ];
    for (input, reason) in cases {
        let answer = handle(&h.scheduler, input.clone()).await.unwrap();
        assert_eq!(answer["outcome"], "rejected", "{input}");
        let text = answer["reason"].as_str().unwrap();
        assert!(text.contains(reason), "{input}: {text}");
    }
    assert!(h.sim.pipelines().is_empty());
    assert!(h.history("nightly").await.is_empty());
}

/// The store is unreachable: nothing can be decided or recorded, so the invocation fails
/// (the function's error alarm sees it; the next tick redoes the work).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_fails_the_invocation() {
    let h = harness().await;
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let config = sdk_config_for(&format!("http://127.0.0.1:{closed_port}")).await;
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&config)
            .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
            .build(),
    );
    let engine = h.scheduler.engine();
    let unreachable = Engine::new(
        Arc::new(DynamoStore::new(client, "triggers", engine.clock().clone())),
        Arc::new(engine.actions().clone()),
        engine.clock().clone(),
        EngineSettings::default(),
    );
    let scheduler = Scheduler::new(unreachable, Arc::new(h.scheduler.triggers().clone()));
    let error = handle(&scheduler, fixture()).await.unwrap_err();
    assert!(error.0.is_retryable(), "{error:?}");
    assert!(error.to_string().contains("unavailable"), "{error}");
    assert!(h.sim.pipelines().is_empty());
}

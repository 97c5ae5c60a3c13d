//! What a scheduler tick costs in DynamoDB requests, and how a changed triggers file is
//! noticed without reading per-schedule state on every tick.
//!
//! The idle tick reads one small state item and runs the sweep's one retry-index query,
//! whatever the number of schedules, and writes nothing. Requests are recorded on the real
//! AWS SDK against moto_server; read and write units are computed from item sizes
//! (`integration_tests::capacity`), because moto's `ConsumedCapacity` is not DynamoDB's.
#![allow(clippy::unwrap_used)]

use circleci_sim::{JobSpec, ParameterSpec, ProjectSpec, When, WorkflowSpec};
use integration_tests::request_cost::{DynamoRecorder, idle_tick_costs};
use integration_tests::scheduled_support::{Backend, Harness};
use shared::store::{PauseScope, TriggerStatus};

integration_tests::on_both_stores!(a_changed_triggers_file_is_noticed_through_the_digest);

const API: &str = "gh/acme/api";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_tick_costs_the_same_for_1_10_and_1000_schedules() {
    let mut idle = Vec::new();
    for schedules in [1, 10, 1000] {
        let costs = idle_tick_costs(schedules, None).await.unwrap();
        eprintln!(
            "{schedules} schedules: first tick {:?}; idle tick {:?}",
            costs.first, costs.idle
        );
        assert_eq!(
            costs.idle.write_requests(),
            0,
            "{schedules}: {:?}",
            costs.idle
        );
        assert_eq!(costs.idle.write_units, 0.0);
        idle.push(costs.idle);
    }
    // One consistent GetItem of the state item (< 4 KB: 1 RRU) and the sweep's Query of
    // each of the retry index's 8 shards (eventually consistent, nothing due: 0.5 RRU each).
    assert_eq!(idle[0].requests, 9, "{:?}", idle[0]);
    assert_eq!(idle[0].operations.get("GetItem"), Some(&1));
    assert_eq!(idle[0].operations.get("Query"), Some(&8));
    assert_eq!(idle[0].read_units, 5.0);
    assert!(idle[0].largest_item_read < 4096);
    for cost in &idle[1..] {
        assert_eq!(
            (&cost.operations, cost.read_units, cost.write_units),
            (&idle[0].operations, idle[0].read_units, idle[0].write_units),
            "the idle tick's cost does not depend on the number of schedules"
        );
        assert_eq!(cost.largest_item_read, idle[0].largest_item_read);
    }
}

/// A due tick reads every pause flag in one Query, not one GetItem per schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_due_tick_reads_the_pause_flags_in_one_query() {
    let toml: String = (0..10)
        .map(|i| {
            format!(
                "[[schedule]]\nname = \"nightly-{i}\"\ncron = \"0 2 * * *\"\ntimezone = \"UTC\"\n\
                 target = {{ project = \"{API}\", branch = \"main\", workflow = \"w{i}\" }}\n\n"
            )
        })
        .collect();
    let recorder = DynamoRecorder::default();
    let h = Harness::builder(Backend::Dynamo)
        .start_at("2026-11-28T01:59:00Z")
        .project(ProjectSpec::new(API).parameter(ParameterSpec::string("run-workflow", "")))
        .record_dynamo(recorder.clone())
        .build(&toml)
        .await;
    h.tick().await;
    h.store
        .pause(&PauseScope::All, Some("freeze"), Some("ops"))
        .await
        .unwrap();
    h.advance_to("2026-11-28T02:00:00Z").await;
    recorder.take();
    let due = h.tick().await;
    assert_eq!(due.totals().skipped, 10, "{due:?}");
    let requests = recorder.take();
    let names_flags = |body: &serde_json::Value| body.to_string().contains("\"FLAGS\"");
    let flag_queries = requests
        .iter()
        .filter(|r| r.operation == "Query" && names_flags(&r.body))
        .count();
    let flag_gets = requests
        .iter()
        .filter(|r| r.operation == "GetItem" && names_flags(&r.body))
        .count();
    assert_eq!((flag_queries, flag_gets), (1, 0));
    assert!(h.sim.pipelines().is_empty());
}

/// A manual run (`POST /v1/schedules/{name}/runs`, `run --now`) checks the global flag and
/// the schedule's own in one Query, then opens and settles its trigger: three round trips,
/// the settle and the binding side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_manual_run_checks_the_pause_flags_in_one_query() {
    let recorder = DynamoRecorder::default();
    let h = Harness::builder(Backend::Dynamo)
        .start_at("2026-11-28T10:00:00Z")
        .project(project())
        .record_dynamo(recorder.clone())
        .build(&schedule("a", "0 2 * * *", ""))
        .await;
    h.tick().await;
    let now = integration_tests::scheduled_support::utc("2026-11-28T10:00:30Z");
    let request = |id: &str| shared::triggers::scheduled::RunRequest {
        schedule: "a".into(),
        at: None,
        run_id: Some(id.into()),
        operator: "alice".into(),
        ignore_pause: false,
    };
    // The first run of a source in a process also registers it (once): not measured.
    h.scheduler.run(&request("manual-0"), now).await.unwrap();
    recorder.take();
    let report = h.scheduler.run(&request("manual-1"), now).await.unwrap();
    assert_eq!(h.sim.pipelines().len(), 2, "{report:?}");
    let operations = recorder.take_operations();
    assert_eq!(
        operations.iter().filter(|op| *op == "GetItem").count(),
        0,
        "no flag read by key: {operations:?}"
    );
    assert_eq!(operations[0], "Query", "{operations:?}");
    assert_eq!(
        operations.len(),
        4,
        "flags, open, settle + binding: {operations:?}"
    );
}

fn schedule(name: &str, cron: &str, extra: &str) -> String {
    format!(
        "[[schedule]]\nname = \"{name}\"\ncron = \"{cron}\"\ntimezone = \"UTC\"\n{extra}\n\
         target = {{ project = \"{API}\", branch = \"main\", workflow = \"{name}\" }}\n\n"
    )
}

fn project() -> ProjectSpec {
    let mut spec = ProjectSpec::new(API).parameter(ParameterSpec::string("run-workflow", ""));
    for workflow in ["a", "b", "c"] {
        spec = spec.workflow(
            WorkflowSpec::new(workflow)
                .when(When::equals("run-workflow", workflow))
                .job(JobSpec::new("test")),
        );
    }
    spec
}

/// Adding, editing, disabling, enabling and removing a schedule are each noticed on the
/// next tick through the stored digest; an added, edited or re-enabled schedule starts from
/// then (no backfill, no firing under its old cron), and unchanged ones keep their slots.
async fn a_changed_triggers_file_is_noticed_through_the_digest(backend: Backend) {
    let a = schedule("a", "0 * * * *", "");
    let b = schedule("b", "0 2 * * *", "");
    let c = schedule("c", "30 * * * *", "");
    let h = Harness::builder(backend)
        .start_at("2026-11-28T10:00:00Z")
        .project(project())
        .build(&format!("{a}{b}"))
        .await;
    let first = h.tick().await;
    assert_eq!(
        first.totals().fired,
        1,
        "a is new and due at its first tick"
    );
    let idle = h.tick_at("2026-11-28T10:01:00Z").await;
    assert!(
        idle.schedules.is_empty(),
        "nothing due, nothing changed: {idle:?}"
    );

    // Added: noticed, starts from now (no backfill of c's 09:30).
    let v2 = h.scheduler_for(&format!("{a}{b}{c}"));
    h.advance_to("2026-11-28T10:02:00Z").await;
    let added = v2.tick(h.now()).await.unwrap();
    assert_eq!(added.schedules.len(), 3, "{added:?}");
    assert_eq!(added.totals().fired, 0);
    h.advance_to("2026-11-28T10:03:00Z").await;
    assert!(v2.tick(h.now()).await.unwrap().schedules.is_empty());
    h.advance_to("2026-11-28T10:30:00Z").await;
    assert_eq!(
        v2.tick(h.now()).await.unwrap().totals().fired,
        1,
        "c at 10:30"
    );

    // Edited: a moves from minute 0 to minute 15; it does not fire at 11:00.
    let edited_a = schedule("a", "15 * * * *", "");
    let v3 = h.scheduler_for(&format!("{edited_a}{b}{c}"));
    h.advance_to("2026-11-28T10:31:00Z").await;
    let edited = v3.tick(h.now()).await.unwrap();
    assert_eq!(edited.schedules.len(), 3, "{edited:?}");
    h.advance_to("2026-11-28T11:00:00Z").await;
    let at_eleven = v3.tick(h.now()).await.unwrap();
    assert!(
        at_eleven.schedules.is_empty(),
        "nothing is due at 11:00 any more"
    );
    h.advance_to("2026-11-28T11:15:00Z").await;
    assert_eq!(
        v3.tick(h.now()).await.unwrap().totals().fired,
        1,
        "a at 11:15"
    );

    // Disabled: c does not fire at 11:30, and is not what makes ticks evaluate.
    let disabled_c = schedule("c", "30 * * * *", "enabled = false");
    let v4 = h.scheduler_for(&format!("{edited_a}{b}{disabled_c}"));
    h.advance_to("2026-11-28T11:16:00Z").await;
    assert_eq!(v4.tick(h.now()).await.unwrap().schedules.len(), 3);
    h.advance_to("2026-11-28T11:30:00Z").await;
    assert!(v4.tick(h.now()).await.unwrap().schedules.is_empty());

    // Enabled again at 11:45: from then on; 11:30 is not caught up, 12:30 fires.
    let v5 = h.scheduler_for(&format!("{edited_a}{b}{c}"));
    h.advance_to("2026-11-28T11:45:00Z").await;
    let enabled = v5.tick(h.now()).await.unwrap();
    assert_eq!((enabled.schedules.len(), enabled.totals().fired), (3, 0));

    // Removed: b is gone; the next tick notices, the one after is idle again.
    let v6 = h.scheduler_for(&format!("{edited_a}{c}"));
    h.advance_to("2026-11-28T11:46:00Z").await;
    assert_eq!(v6.tick(h.now()).await.unwrap().schedules.len(), 2);
    h.advance_to("2026-11-28T11:47:00Z").await;
    assert!(v6.tick(h.now()).await.unwrap().schedules.is_empty());
    h.advance_to("2026-11-28T12:15:00Z").await;
    assert_eq!(
        v6.tick(h.now()).await.unwrap().totals().fired,
        1,
        "a at 12:15"
    );
    h.advance_to("2026-11-28T12:30:00Z").await;
    assert_eq!(
        v6.tick(h.now()).await.unwrap().totals().fired,
        1,
        "c at 12:30"
    );

    assert_eq!(
        h.slots("c", TriggerStatus::Triggered).await,
        ["2026-11-28T10:30:00Z", "2026-11-28T12:30:00Z"]
    );
    assert_eq!(
        h.slots("a", TriggerStatus::Triggered).await,
        [
            "2026-11-28T10:00:00Z",
            "2026-11-28T11:15:00Z",
            "2026-11-28T12:15:00Z"
        ]
    );
    assert!(h.slots("c", TriggerStatus::Skipped).await.is_empty());
}

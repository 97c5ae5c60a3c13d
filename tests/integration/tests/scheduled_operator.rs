//! Operator runs of a schedule (`Scheduler::run`, `Scheduler::backfill`) end to end: the real
//! engine and CircleCI client against the simulator over HTTP, on both stores, on a manual
//! clock. Exactly once per slot: a run at a slot, a backfill and the tick share the slot's
//! claim key.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Utc};
use circleci_sim::{JobSpec, ParameterSpec, ProjectSpec, When, WorkflowSpec};
use integration_tests::scheduled_support::{Backend, Harness, utc};
use shared::store::{PauseScope, TriggerStatus};
use shared::triggers::scheduled::{BackfillRequest, RunRequest, SchedulerError};

integration_tests::on_both_stores!(
    run_at_a_slot_twice_starts_one_pipeline_and_the_tick_replays_it,
    a_paused_schedule_is_refused_unless_overridden_and_a_skipped_slot_runs_once,
    backfill_over_a_dst_week_fires_exactly_the_unfired_slots_and_resumes_after_a_kill,
);

const API: &str = "gh/acme/api";

/// A project whose workflows run when `run-workflow` names them, declaring the slot
/// parameters the schedules below send.
fn project(workflows: &[&str]) -> ProjectSpec {
    let mut spec = ProjectSpec::new(API)
        .parameter(ParameterSpec::string("run-workflow", ""))
        .parameter(ParameterSpec::string("day", ""))
        .parameter(ParameterSpec::string("local", ""))
        .parameter(ParameterSpec::string("utc", ""));
    for workflow in workflows {
        spec = spec.workflow(
            WorkflowSpec::new(workflow)
                .when(When::equals("run-workflow", *workflow))
                .job(JobSpec::new("test")),
        );
    }
    spec
}

fn run_at(at: &str) -> RunRequest {
    RunRequest {
        schedule: "nightly".into(),
        at: Some(utc(at)),
        run_id: None,
        operator: "alice".into(),
        ignore_pause: false,
    }
}

const HOURLY: &str = r#"
[[schedule]]
name = "nightly"
cron = "0 * * * *"
timezone = "UTC"
target = { project = "gh/acme/api", branch = "main", workflow = "nightly" }
"#;

async fn run_at_a_slot_twice_starts_one_pipeline_and_the_tick_replays_it(backend: Backend) {
    let h = Harness::builder(backend)
        .start_at("2026-11-28T10:00:00Z")
        .project(project(&["nightly"]))
        .build(HOURLY)
        .await;
    // The tick fires 10:00; a run at 10:00 afterwards replays it.
    assert_eq!(h.tick().await.totals().fired, 1);
    h.advance_to("2026-11-28T10:20:00Z").await;
    let replay = h
        .scheduler
        .run(&run_at("2026-11-28T10:00:00Z"), h.now())
        .await
        .unwrap();
    assert_eq!((replay.counts.fired, replay.counts.duplicates), (0, 1));
    assert_eq!(replay.targets[0].outcome, "replayed");

    // 11:00 has not come: refused. 10:30 is no slot: refused, with the slots around it.
    let future = h
        .scheduler
        .run(&run_at("2026-11-28T11:00:00Z"), h.now())
        .await
        .unwrap_err();
    assert!(
        matches!(future, SchedulerError::FutureSlot { .. }),
        "{future}"
    );
    let off = h
        .scheduler
        .run(&run_at("2026-11-28T10:30:00Z"), h.now())
        .await
        .unwrap_err();
    assert_eq!(
        off.to_string(),
        "2026-11-28T10:30:00Z is not a slot of schedule `nightly` (0 * * * * in UTC); previous slot 2026-11-28T10:00:00Z, next slot 2026-11-28T11:00:00Z"
    );

    // An operator fires 11:00 before the tick does, twice: one pipeline; the tick then
    // finds the slot decided and sends nothing.
    h.advance_to("2026-11-28T11:00:05Z").await;
    let first = h
        .scheduler
        .run(&run_at("2026-11-28T11:00:00Z"), h.now())
        .await
        .unwrap();
    let second = h
        .scheduler
        .run(&run_at("2026-11-28T11:00:00Z"), h.now())
        .await
        .unwrap();
    assert_eq!(
        (
            first.counts.fired,
            second.counts.fired,
            second.counts.duplicates
        ),
        (1, 0, 1)
    );
    let tick = h.tick_at("2026-11-28T11:00:30Z").await;
    assert_eq!((tick.totals().fired, tick.totals().duplicates), (0, 1));
    assert_eq!(h.pipelines_for("nightly").len(), 2);

    let record = h.record("nightly", "2026-11-28T11:00:00Z").await;
    assert_eq!(record.status, TriggerStatus::Triggered);
    assert!(record.detail.manual);
    assert_eq!(record.detail.operator.as_deref(), Some("alice"));
    assert_eq!(
        record.detail.slot_local.as_deref(),
        Some("2026-11-28 11:00:00")
    );
}

async fn a_paused_schedule_is_refused_unless_overridden_and_a_skipped_slot_runs_once(
    backend: Backend,
) {
    let h = Harness::builder(backend)
        .start_at("2026-11-28T10:00:00Z")
        .project(project(&["nightly"]))
        .build(HOURLY)
        .await;
    h.store
        .pause(
            &PauseScope::Schedule("nightly".into()),
            Some("db migration"),
            Some("ops"),
        )
        .await
        .unwrap();
    // The paused tick records 10:00 as skipped.
    assert_eq!(h.tick().await.totals().skipped, 1);
    h.advance_to("2026-11-28T10:10:00Z").await;
    let refused = h
        .scheduler
        .run(&run_at("2026-11-28T10:00:00Z"), h.now())
        .await
        .unwrap_err();
    assert_eq!(
        refused.to_string(),
        "schedule `nightly` is paused (schedule:nightly paused: db migration); nothing was run. \
         Resume it, or run it anyway with --ignore-pause (recorded on the run)"
    );
    assert!(!refused.is_retryable());
    assert_eq!(h.history("nightly").await.len(), 1);

    // Overridden: the slot the tick skipped runs, once, under its own `#run` key.
    let request = RunRequest {
        ignore_pause: true,
        ..run_at("2026-11-28T10:00:00Z")
    };
    let ran = h.scheduler.run(&request, h.now()).await.unwrap();
    assert_eq!(ran.counts.fired, 1);
    let again = h.scheduler.run(&request, h.now()).await.unwrap();
    assert_eq!((again.counts.fired, again.counts.duplicates), (0, 1));
    assert_eq!(h.pipelines_for("nightly").len(), 1);
    let record = h.record("nightly", "2026-11-28T10:00:00Z#run").await;
    assert_eq!(record.status, TriggerStatus::Triggered);
    assert_eq!(
        record.detail.ignored_pause.as_deref(),
        Some("schedule:nightly paused: db migration; run anyway by alice")
    );
    // The skipped row stays: both decisions are history.
    assert_eq!(
        h.record("nightly", "2026-11-28T10:00:00Z").await.status,
        TriggerStatus::Skipped
    );
}

/// A week across Europe/Berlin's spring-forward (2026-03-29, 02:00 CET → 03:00 CEST):
/// `report` is fixed-time (`30 2 * * *`: on the 29th it fires once at the transition,
/// 03:00 CEST = 01:00 UTC) and `sweep` follows the wall clock (`*/30 2 * * *`: 02:00 and
/// 02:30 do not exist on the 29th, so that day has no slot). The tick fired the first
/// slots, then the scheduler was down for the rest of the week.
const DST_WEEK: &str = r#"
[[schedule]]
name = "report"
cron = "30 2 * * *"
timezone = "Europe/Berlin"
target = { project = "gh/acme/api", branch = "main", workflow = "report", parameters = { day = "{{ slot.date }}", local = "{{ slot.local }}", utc = "{{ slot.utc }}" } }

[[schedule]]
name = "sweep"
cron = "*/30 2 * * *"
timezone = "Europe/Berlin"
target = { project = "gh/acme/api", branch = "main", workflow = "sweep", parameters = { local = "{{ slot.local }}" } }
"#;

async fn backfill_over_a_dst_week_fires_exactly_the_unfired_slots_and_resumes_after_a_kill(
    backend: Backend,
) {
    let h = Harness::builder(backend)
        .start_at("2026-03-25T00:00:00Z")
        .project(project(&["report", "sweep"]))
        .build(DST_WEEK)
        .await;
    h.tick().await;
    h.tick_at("2026-03-25T01:00:00Z").await; // sweep 02:00 CET
    h.tick_at("2026-03-25T01:30:00Z").await; // report and sweep 02:30 CET
    assert_eq!(h.pipelines_for("report").len(), 1);
    assert_eq!(h.pipelines_for("sweep").len(), 2);
    h.advance_to("2026-04-01T00:00:00Z").await;

    let (from, to) = (utc("2026-03-25T00:00:00Z"), utc("2026-03-31T23:59:59Z"));
    let plan = |name: &str| {
        h.scheduler
            .backfill_plan(name, from, to, h.now(), 500)
            .unwrap()
    };
    let report_plan = plan("report");
    let expected_report = [
        "2026-03-25T01:30:00Z",
        "2026-03-26T01:30:00Z",
        "2026-03-27T01:30:00Z",
        "2026-03-28T01:30:00Z",
        "2026-03-29T01:00:00Z", // 02:30 does not exist: fired at the transition
        "2026-03-30T00:30:00Z", // CEST from here on
        "2026-03-31T00:30:00Z",
    ];
    assert_eq!(ids(&report_plan.slots), expected_report);
    let sweep_plan = plan("sweep");
    assert_eq!(sweep_plan.slots.len(), 12, "{:?}", ids(&sweep_plan.slots));
    assert!(
        !ids(&sweep_plan.slots)
            .iter()
            .any(|s| s.starts_with("2026-03-29"))
    );
    // Over the cap: refused before anything runs.
    let capped = h
        .scheduler
        .backfill_plan("sweep", from, to, h.now(), 5)
        .unwrap_err();
    assert!(
        capped.to_string().contains("12 slots of `sweep`"),
        "{capped}"
    );

    let backfill = |plan: shared::triggers::scheduled::BackfillPlan, stop_after| BackfillRequest {
        plan,
        operator: "alice".into(),
        ignore_pause: false,
        stop_after,
    };
    // Killed after 3 slots (the first of which the tick had fired).
    let mut seen = Vec::new();
    let partial = h
        .scheduler
        .backfill(&backfill(report_plan.clone(), Some(3)), |step| {
            seen.push(step.index)
        })
        .await
        .unwrap();
    assert_eq!(seen, [1, 2, 3]);
    assert_eq!(
        (partial.fired, partial.replayed, partial.remaining),
        (2, 1, 4)
    );
    assert_eq!(h.pipelines_for("report").len(), 3);

    // Re-running the same backfill continues: the three done replay, four fire.
    let rest = h
        .scheduler
        .backfill(&backfill(report_plan, None), |_| {})
        .await
        .unwrap();
    assert_eq!((rest.fired, rest.replayed, rest.remaining), (4, 3, 0));
    let sweep = h
        .scheduler
        .backfill(&backfill(sweep_plan, None), |_| {})
        .await
        .unwrap();
    assert_eq!((sweep.fired, sweep.replayed), (10, 2));

    // Exactly one pipeline per slot, with the slot's values rendered in Berlin.
    let report = h.pipelines_for("report");
    assert_eq!(report.len(), 7);
    let mut days: Vec<(String, String, String)> = report
        .iter()
        .map(|p| {
            let text = |name: &str| p.parameters[name].as_str().unwrap().to_owned();
            (text("utc"), text("day"), text("local"))
        })
        .collect();
    days.sort();
    assert_eq!(
        days[0],
        (
            "2026-03-25T01:30:00Z".into(),
            "2026-03-25".into(),
            "2026-03-25T02:30:00+01:00".into()
        )
    );
    assert_eq!(
        days[4],
        (
            "2026-03-29T01:00:00Z".into(),
            "2026-03-29".into(),
            "2026-03-29T03:00:00+02:00".into()
        )
    );
    assert_eq!(
        days[6],
        (
            "2026-03-31T00:30:00Z".into(),
            "2026-03-31".into(),
            "2026-03-31T02:30:00+02:00".into()
        )
    );
    assert_eq!(h.pipelines_for("sweep").len(), 12);

    // The scheduler comes back at 2026-04-01T00:00Z: the missed slots it would catch up
    // are decided (duplicates); only sweep's on-time 02:00 CEST slot of April 1st fires.
    let tick = h.tick().await;
    let fired: Vec<(String, u32)> = tick
        .schedules
        .iter()
        .map(|s| (s.schedule.clone(), s.fired))
        .collect();
    assert_eq!(fired, [("report".to_owned(), 0), ("sweep".to_owned(), 1)]);
    assert_eq!(h.pipelines_for("report").len(), 7);
    assert_eq!(h.pipelines_for("sweep").len(), 13);
    assert_eq!(h.count("report", TriggerStatus::Triggered).await, 7);
}

fn ids(slots: &[DateTime<Utc>]) -> Vec<String> {
    slots
        .iter()
        .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .collect()
}

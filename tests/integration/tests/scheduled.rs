//! The scheduler tick (`shared::triggers::scheduled`) end to end: the real engine, actions and CircleCI
//! client against the simulator over HTTP, on both store adapters (SQLite on a temp file,
//! DynamoDB on moto_server), with one manual clock shared by the engine, the store and the
//! simulator. Every case counts pipelines in the simulator and rows in history.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chrono::TimeDelta;
use circleci_sim::{
    Faults, JobSpec, ParameterSpec, ProjectSpec, When, WorkflowSpec, WorkflowStatus,
};
use integration_tests::scheduled_support::{
    Backend, HangControl, Harness, default_client_options, utc,
};
use shared::circleci::ClientOptions;
use shared::store::{ClaimState, PauseScope, TriggerStatus};
use shared::triggers::scheduled::{MAX_SKIPPED_ROWS, TickRequest, slot_key};

integration_tests::on_both_stores!(
    duplicate_and_concurrent_ticks_trigger_each_slot_once,
    a_tick_that_dies_mid_slot_is_finished_by_later_ticks_without_duplicates,
    a_three_hour_outage_obeys_each_catch_up_policy,
    a_long_gap_records_the_newest_skips_and_one_summary,
    a_cursor_older_than_the_scan_limit_is_summarised,
    forbid_skips_while_the_previous_pipeline_runs_until_it_is_stale,
    replace_cancels_the_previous_pipelines_workflows,
    a_429_storm_delays_but_loses_no_slot,
    paused_slots_are_recorded_as_skipped_until_resumed,
    repeated_local_times_follow_the_dst_rules,
    a_manual_run_is_recorded_as_manual_and_runs_once_per_run_id,
    schedules_due_in_the_same_tick_fire_side_by_side,
);

const API: &str = "gh/acme/api";
const WEB: &str = "gh/acme/web";
const DEPLOY: &str = "gh/acme/deploy";

/// A project whose pipelines run `workflow` (one 10 s job) when `run-workflow` names it —
/// the documented `workflow = "x"` convention.
fn project(slug: &str, workflows: &[&str]) -> ProjectSpec {
    let mut spec = ProjectSpec::new(slug).parameter(ParameterSpec::string("run-workflow", ""));
    for workflow in workflows {
        spec = spec.workflow(
            WorkflowSpec::new(workflow)
                .when(When::equals("run-workflow", *workflow))
                .job(JobSpec::new("test")),
        );
    }
    spec
}

fn hourly(name: &str, project: &str, workflow: &str, extra: &str) -> String {
    utc_schedule(name, "0 * * * *", project, workflow, extra)
}

/// A `[[schedule]]` in UTC on one target's main branch, with `extra` lines (its policies).
fn utc_schedule(name: &str, cron: &str, project: &str, workflow: &str, extra: &str) -> String {
    format!(
        r#"
[[schedule]]
name = "{name}"
cron = "{cron}"
timezone = "UTC"
target = {{ project = "{project}", branch = "main", workflow = "{workflow}" }}
{extra}
"#
    )
}

async fn duplicate_and_concurrent_ticks_trigger_each_slot_once(backend: Backend) {
    let h = Harness::builder(backend)
        .project(project(API, &["hourly"]))
        .build(&hourly("hourly", API, "hourly", ""))
        .await;

    // A new schedule fires the slot at exactly its first tick's instant, then repeats of
    // that tick (a redelivered invocation) find nothing left to do.
    let first = h.tick().await;
    assert_eq!(first.totals().fired, 1);
    for _ in 0..3 {
        let again = h.tick().await;
        assert_eq!(again.totals().fired, 0);
    }
    assert_eq!(h.pipelines_for("hourly").len(), 1);

    // Three slots, each ticked by eight invocations at once (two of them late).
    for (slot, late) in [
        ("2026-11-28T11:00:00Z", "2026-11-28T11:00:40Z"),
        ("2026-11-28T12:00:00Z", "2026-11-28T12:01:10Z"),
        ("2026-11-28T13:00:00Z", "2026-11-28T13:00:01Z"),
    ] {
        h.advance_to(slot).await;
        let ticks = (0..8).map(|i| {
            let scheduler = h.scheduler.clone();
            let at = if i < 6 { utc(slot) } else { utc(late) };
            tokio::spawn(async move { scheduler.tick(at).await.unwrap() })
        });
        let mut fired = 0;
        for tick in ticks.collect::<Vec<_>>() {
            fired += tick.await.unwrap().totals().fired;
        }
        assert_eq!(fired, 1, "exactly one of the concurrent ticks fires {slot}");
    }
    let pipelines = h.pipelines_for("hourly");
    assert_eq!(pipelines.len(), 4, "one pipeline per slot");
    assert_eq!(
        h.slots("hourly", TriggerStatus::Triggered).await,
        [
            "2026-11-28T10:00:00Z",
            "2026-11-28T11:00:00Z",
            "2026-11-28T12:00:00Z",
            "2026-11-28T13:00:00Z"
        ]
    );
    assert_eq!(h.history("hourly").await.len(), 4, "no other rows");
    // Each record points at its own pipeline.
    let mut recorded: Vec<String> = h
        .history("hourly")
        .await
        .iter()
        .map(|r| r.pipeline.as_ref().unwrap().id.clone())
        .collect();
    recorded.sort();
    let mut created: Vec<String> = pipelines.iter().map(|p| p.id.to_string()).collect();
    created.sort();
    assert_eq!(recorded, created);
}

/// A tick dies after sending one target's create (the answer never comes); a tick during its
/// lease replays the finished target and leaves the held one alone; once the lease is over
/// the sweep adopts the created pipeline instead of sending again.
async fn a_tick_that_dies_mid_slot_is_finished_by_later_ticks_without_duplicates(backend: Backend) {
    let hang = HangControl::new();
    let toml = format!(
        r#"
[[schedule]]
name = "both"
cron = "0 * * * *"
timezone = "UTC"
targets = [
  {{ project = "{API}", branch = "main", workflow = "both" }},
  {{ project = "{WEB}", branch = "main", workflow = "both" }},
]
"#
    );
    let h = Harness::builder(backend)
        .start_at("2026-11-28T09:59:00Z")
        .project(project(API, &["both"]))
        .project(project(WEB, &["both"]))
        .wrap_client(hang.wrap())
        .build(&toml)
        .await;
    h.tick().await; // The schedule's cursor starts at 09:59.

    h.advance_to("2026-11-28T10:00:00Z").await;
    hang.hang_on(WEB);
    let scheduler = h.scheduler.clone();
    let dying = tokio::spawn(async move { scheduler.tick(utc("2026-11-28T10:00:00Z")).await });
    hang.sent().await;
    // The slot's targets fire side by side: the API target finishes (its claim completed)
    // while WEB hangs.
    let api_key = slot_key(
        "both",
        "2026-11-28T10:00:00Z",
        &format!("{API}@branch:main/both"),
    );
    tokio::time::timeout(Duration::from_secs(30), async {
        while !h
            .store
            .claim_snapshot(&api_key)
            .await
            .unwrap()
            .is_some_and(|claim| claim.state == ClaimState::Completed)
        {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the API target finished while WEB hung");
    dying.abort();
    let _ = dying.await;
    hang.release();
    assert_eq!(h.sim.pipelines().len(), 2, "both creates reached CircleCI");

    let during_lease = h.tick_at("2026-11-28T10:00:30Z").await;
    let totals = during_lease.totals();
    assert_eq!(
        (totals.fired, totals.duplicates, totals.in_progress),
        (0, 1, 1)
    );
    assert_eq!(during_lease.rechecked, 0, "the lease is still live");
    assert_eq!(h.count("both", TriggerStatus::Received).await, 1);

    let after_lease = h.tick_at("2026-11-28T10:03:00Z").await;
    // The sweep's reconciler reaches the record left `sending` first (the stale-claim
    // recheck would have, too): once, by one of them.
    assert_eq!(
        after_lease.sweep.attempted + after_lease.rechecked,
        1,
        "{after_lease:?}"
    );
    assert_eq!(h.sim.pipelines().len(), 2, "nothing was sent again");
    let records = h.history("both").await;
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r.status == TriggerStatus::Triggered));
    let web = records.iter().find(|r| r.target.project == WEB).unwrap();
    let web_pipeline = h
        .sim
        .pipelines()
        .into_iter()
        .find(|p| p.project_slug == WEB)
        .unwrap();
    assert_eq!(
        web.pipeline.as_ref().unwrap().id,
        web_pipeline.id.to_string()
    );
    assert!(
        web.reason.as_deref().unwrap().contains("adopted"),
        "{web:?}"
    );
    assert_eq!(h.tick_at("2026-11-28T10:04:00Z").await.rechecked, 0);
}

/// Four every-15-minutes schedules, one per catch-up policy; the scheduler is down from
/// 10:00 to 12:58 (11 missed slots, 10:15 … 12:45), then back for good.
async fn a_three_hour_outage_obeys_each_catch_up_policy(backend: Backend) {
    let schedule = |name: &str, extra: &str| utc_schedule(name, "*/15 * * * *", API, name, extra);
    let toml = [
        schedule("cu-skip", "catch_up = \"skip\""),
        schedule("cu-latest", "catch_up = \"latest\""),
        schedule("cu-all", "catch_up = \"all\"\nmax_catch_up = 5"),
        schedule(
            "cu-aged",
            "catch_up = \"all\"\nmax_catch_up = 10\nmax_catch_up_age = \"1h\"",
        ),
    ]
    .concat();
    let h = Harness::builder(backend)
        .project(project(API, &[]))
        .build(&toml)
        .await;
    assert_eq!(h.tick().await.totals().fired, 4, "10:00 fires everywhere");

    let back = h.tick_at("2026-11-28T12:58:00Z").await;
    let by_name = |name: &str| {
        back.schedules
            .iter()
            .find(|s| s.schedule == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        (by_name("cu-skip").fired, by_name("cu-skip").skipped),
        (0, 11)
    );
    assert_eq!(
        (by_name("cu-latest").fired, by_name("cu-latest").skipped),
        (1, 10)
    );
    assert_eq!((by_name("cu-all").fired, by_name("cu-all").skipped), (5, 6));
    assert_eq!(
        (by_name("cu-aged").fired, by_name("cu-aged").skipped),
        (4, 7)
    );
    h.tick_at("2026-11-28T13:00:10Z").await;

    for (name, triggered, skipped) in [
        ("cu-skip", 2, 11),
        ("cu-latest", 3, 10),
        ("cu-all", 7, 6),
        ("cu-aged", 6, 7),
    ] {
        assert_eq!(
            h.count(name, TriggerStatus::Triggered).await,
            triggered,
            "{name}"
        );
        assert_eq!(
            h.count(name, TriggerStatus::Skipped).await,
            skipped,
            "{name}"
        );
        assert_eq!(h.pipelines_for(name).len(), triggered, "{name}");
    }
    assert_eq!(
        h.slots("cu-latest", TriggerStatus::Triggered).await,
        [
            "2026-11-28T10:00:00Z",
            "2026-11-28T12:45:00Z",
            "2026-11-28T13:00:00Z"
        ]
    );
    assert_eq!(
        h.slots("cu-all", TriggerStatus::Triggered).await[1..6],
        [
            "2026-11-28T11:45:00Z",
            "2026-11-28T12:00:00Z",
            "2026-11-28T12:15:00Z",
            "2026-11-28T12:30:00Z",
            "2026-11-28T12:45:00Z"
        ]
    );
    // Every skipped row says why.
    let reason = |record: &shared::store::TriggerRecord| record.reason.clone().unwrap();
    let expectations = [
        ("cu-skip", "catch_up = \"skip\""),
        (
            "cu-latest",
            "superseded by the slot at 2026-11-28T12:45:00Z",
        ),
        ("cu-all", "more than max_catch_up (5)"),
        ("cu-aged", "max_catch_up_age (3600s)"),
    ];
    for (name, why) in expectations {
        let skipped: Vec<_> = h
            .history(name)
            .await
            .into_iter()
            .filter(|r| r.status == TriggerStatus::Skipped)
            .collect();
        assert!(
            skipped.iter().all(|r| reason(r).contains(why)),
            "{name}: {:?}",
            skipped.iter().map(reason).collect::<Vec<_>>()
        );
    }
}

/// An every-minute schedule after three hours down: the newest 100 skipped slots get a row
/// each, the 79 older ones one summary row; the on-time slot still fires.
async fn a_long_gap_records_the_newest_skips_and_one_summary(backend: Backend) {
    let toml = format!(
        r#"
[[schedule]]
name = "minutely"
cron = "* * * * *"
timezone = "UTC"
catch_up = "skip"
target = {{ project = "{API}", branch = "main", workflow = "minutely" }}
"#
    );
    let h = Harness::builder(backend)
        .project(project(API, &[]))
        .build(&toml)
        .await;
    h.tick().await;
    let back = h.tick_at("2026-11-28T13:00:00Z").await;
    // 10:01 … 12:59 missed (179), 13:00 on time.
    assert_eq!(back.totals().fired, 1);
    assert_eq!(back.totals().skipped, 101);
    let history = h.history("minutely").await;
    let summary: Vec<_> = history
        .iter()
        .filter(|r| r.detail.missed.is_some())
        .collect();
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0].status, TriggerStatus::Skipped);
    let missed = summary[0].detail.missed.as_ref().unwrap();
    assert_eq!(missed.count, 79);
    assert_eq!(missed.from, utc("2026-11-28T10:01:00Z"));
    assert_eq!(missed.to, utc("2026-11-28T11:19:00Z"));
    assert_eq!(
        summary[0].reason.as_deref(),
        Some(
            "79 missed slot(s) from 2026-11-28T10:01:00Z to 2026-11-28T11:19:00Z not fired and \
             not recorded one by one: missed slot; catch_up = \"skip\""
        )
    );
    let single = h.slots("minutely", TriggerStatus::Skipped).await;
    assert_eq!(single.len(), 101);
    assert!(single.contains(&"2026-11-28T11:20:00Z".to_owned()));
    assert!(single.contains(&"2026-11-28T12:59:00Z".to_owned()));
    assert!(!single.contains(&"2026-11-28T11:19:00Z".to_owned()));
    assert_eq!(h.pipelines_for("minutely").len(), 2);
}

/// A daily schedule not evaluated for 40 days: the last 31 days are evaluated slot by slot,
/// the part before is one summary row.
async fn a_cursor_older_than_the_scan_limit_is_summarised(backend: Backend) {
    let toml = format!(
        r#"
[[schedule]]
name = "daily"
cron = "0 4 * * *"
timezone = "UTC"
catch_up = "skip"
target = {{ project = "{API}", branch = "main", workflow = "daily" }}
"#
    );
    let h = Harness::builder(backend)
        .project(project(API, &[]))
        .build(&toml)
        .await;
    h.tick().await;
    let back = h.tick_at("2027-01-07T10:00:00Z").await;
    assert_eq!((back.totals().fired, back.totals().skipped), (0, 32));
    let single = h.slots("daily", TriggerStatus::Skipped).await;
    assert_eq!(single.first().unwrap(), "2026-12-08T04:00:00Z");
    assert_eq!(single[30], "2027-01-07T04:00:00Z");
    let summary = h
        .record("daily", "missed:2026-11-28T10:00:00Z..2026-12-07T10:00:00Z")
        .await;
    let missed = summary.detail.missed.as_ref().unwrap();
    assert_eq!(missed.count, 0);
    assert_eq!(missed.evaluated_from, Some(utc("2026-12-07T10:00:00Z")));
    assert_eq!(
        summary.reason.as_deref(),
        Some(
            "slots between 2026-11-28T10:00:00Z and 2026-12-07T10:00:00Z were not evaluated \
             (more than 31 days since the last evaluation)"
        )
    );
    assert!(h.sim.pipelines().is_empty());
}

/// `forbid`: a pipeline waiting on an approval counts as running; after `stale_after` it no
/// longer blocks, and the record says so. A previous pipeline that finished never blocks.
async fn forbid_skips_while_the_previous_pipeline_runs_until_it_is_stale(backend: Backend) {
    let release = ProjectSpec::new(DEPLOY)
        .parameter(ParameterSpec::string("run-workflow", ""))
        .workflow(
            WorkflowSpec::new("release")
                .when(When::equals("run-workflow", "release"))
                .job(JobSpec::new("build"))
                .job(JobSpec::approval("hold").requires(["build"]))
                .job(JobSpec::new("ship").requires(["hold"])),
        );
    let toml = [
        hourly(
            "release",
            DEPLOY,
            "release",
            "concurrency = \"forbid\"\nstale_after = \"3h\"",
        ),
        hourly("quick", API, "quick", "concurrency = \"forbid\""),
    ]
    .concat();
    let h = Harness::builder(backend)
        .project(release)
        .project(project(API, &["quick"]))
        .build(&toml)
        .await;
    h.tick().await;
    let held = h.pipelines_for("release")[0].id;
    let first = h.record("release", "2026-11-28T10:00:00Z").await;

    for hour in ["11", "12", "13"] {
        let report = h.tick_at(&format!("2026-11-28T{hour}:00:00Z")).await;
        let release = report
            .schedules
            .iter()
            .find(|s| s.schedule == "release")
            .unwrap();
        assert_eq!((release.fired, release.skipped), (0, 1), "{hour}:00");
        let skipped = h
            .record("release", &format!("2026-11-28T{hour}:00:00Z"))
            .await;
        assert_eq!(skipped.status, TriggerStatus::Skipped);
        let reason = skipped.reason.unwrap();
        assert!(
            reason.contains("on_hold") && reason.contains("forbid"),
            "{reason}"
        );
        assert_eq!(skipped.detail.blocked_by, Some(first.id));
    }
    assert_eq!(h.sim.workflows(held)[0].status, WorkflowStatus::OnHold);

    // 14:00: the held pipeline is 4 h old, past stale_after = 3h.
    h.tick_at("2026-11-28T14:00:00Z").await;
    let fired = h.record("release", "2026-11-28T14:00:00Z").await;
    assert_eq!(fired.status, TriggerStatus::Triggered);
    let previous = fired.detail.previous_pipeline.as_ref().unwrap();
    assert_eq!(previous.state, "stale");
    assert_eq!(previous.pipeline, Some(held.to_string()));
    assert_eq!(previous.age_seconds, Some(4 * 3600));
    assert_eq!(h.pipelines_for("release").len(), 2);
    assert_eq!(h.count("release", TriggerStatus::Skipped).await, 3);
    assert_eq!(
        h.sim.workflows(held)[0].status,
        WorkflowStatus::OnHold,
        "forbid never touches the previous pipeline"
    );

    // `quick` finishes within the hour: every slot fired, each noting its finished predecessor.
    assert_eq!(h.pipelines_for("quick").len(), 5);
    assert_eq!(h.count("quick", TriggerStatus::Triggered).await, 5);
    let later = h.record("quick", "2026-11-28T11:00:00Z").await;
    assert_eq!(
        later.detail.previous_pipeline.as_ref().unwrap().state,
        "finished"
    );
}

/// `replace`: the previous pipeline's running workflows are canceled, then the slot fires.
async fn replace_cancels_the_previous_pipelines_workflows(backend: Backend) {
    let soak = ProjectSpec::new(API)
        .parameter(ParameterSpec::string("run-workflow", ""))
        .workflow(
            WorkflowSpec::new("soak")
                .when(When::equals("run-workflow", "soak"))
                .job(JobSpec::new("soak").duration(Duration::from_secs(2 * 3600))),
        );
    let h = Harness::builder(backend)
        .project(soak)
        .build(&hourly("soak", API, "soak", "concurrency = \"replace\""))
        .await;
    h.tick().await;
    let first = h.pipelines_for("soak")[0].id;
    let first_workflow = h.sim.workflows(first)[0].id;
    assert_eq!(h.sim.workflows(first)[0].status, WorkflowStatus::Running);

    h.tick_at("2026-11-28T11:00:00Z").await;
    assert_eq!(
        h.sim.workflow(first_workflow).unwrap().status,
        WorkflowStatus::Canceled
    );
    let pipelines = h.pipelines_for("soak");
    assert_eq!(pipelines.len(), 2);
    let second = pipelines.iter().find(|p| p.id != first).unwrap().id;
    assert_eq!(h.sim.workflows(second)[0].status, WorkflowStatus::Running);
    let record = h.record("soak", "2026-11-28T11:00:00Z").await;
    assert_eq!(record.status, TriggerStatus::Triggered);
    let replaced = record.detail.replaced.as_ref().unwrap();
    assert_eq!(replaced.pipeline, first.to_string());
    assert_eq!(replaced.canceled_workflows, [first_workflow.to_string()]);
}

/// CircleCI answers 429 to every create for a while: the slot's record fails with a retry
/// time; the sweeps of later ticks retry it on schedule and, once the storm is over, it
/// fires — exactly one pipeline, no slot lost. A `Retry-After` longer than the backoff is
/// honoured.
async fn a_429_storm_delays_but_loses_no_slot(backend: Backend) {
    let h = Harness::builder(backend)
        .project(project(API, &["storm"]))
        .client_options(ClientOptions {
            max_attempts: 2,
            backoff_base: Duration::from_millis(5),
            backoff_cap: Duration::from_millis(20),
            deadline: Duration::from_secs(3),
            ..default_client_options()
        })
        .build(&hourly("storm", API, "storm", ""))
        .await;
    h.sim.set_faults(Faults {
        fail_methods: vec!["POST".into()],
        ..Faults::fail_next(1000, 429)
    });

    let report = h.tick().await;
    assert_eq!(report.totals().failed, 1);
    let failed = h.record("storm", "2026-11-28T10:00:00Z").await;
    assert_eq!(failed.status, TriggerStatus::Failed);
    assert_eq!(
        failed.retry_at,
        Some(utc("2026-11-28T10:01:00Z")),
        "60 s backoff"
    );
    assert_eq!(h.pipelines_for("storm").len(), 0);

    let still_storming = h.tick_at("2026-11-28T10:01:00Z").await;
    assert_eq!(still_storming.sweep.attempted, 1);
    assert_eq!(still_storming.sweep.succeeded, 0);
    let failed = h.record("storm", "2026-11-28T10:00:00Z").await;
    assert_eq!(
        (failed.attempts, failed.retry_at),
        (2, Some(utc("2026-11-28T10:03:00Z")))
    );

    h.sim.set_faults(Faults::default());
    let not_yet = h.tick_at("2026-11-28T10:02:00Z").await;
    assert_eq!(not_yet.sweep.attempted, 0, "not due before its retry time");
    let retried = h.tick_at("2026-11-28T10:03:00Z").await;
    assert_eq!((retried.sweep.attempted, retried.sweep.succeeded), (1, 1));
    let done = h.record("storm", "2026-11-28T10:00:00Z").await;
    assert_eq!(done.status, TriggerStatus::Triggered);
    assert_eq!(done.attempts, 3);
    assert_eq!(done.retry_at, None);
    h.tick_at("2026-11-28T10:04:00Z").await;
    assert_eq!(
        h.pipelines_for("storm").len(),
        1,
        "exactly one pipeline for 10:00"
    );

    // A real rate limit: the token's bucket is empty and CircleCI says when it refills.
    h.sim.set_faults(Faults::rate_limited(0.001, 1));
    h.advance_to("2026-11-28T11:00:00Z").await;
    // Another client of the same token spends the bucket's only request (ours does not see
    // the headers of that answer, so it sends and meets the 429).
    let other = reqwest::Client::new()
        .get(format!("{}/me", h.sim.base_url()))
        .header("Circle-Token", integration_tests::scheduled_support::TOKEN)
        .send()
        .await
        .unwrap();
    assert!(other.status().is_success());
    h.tick().await;
    let limited = h.record("storm", "2026-11-28T11:00:00Z").await;
    assert_eq!(limited.status, TriggerStatus::Failed, "{limited:?}");
    let retry_at = limited.retry_at.unwrap();
    assert!(
        retry_at > utc("2026-11-28T11:01:00Z"),
        "Retry-After beyond the 60 s backoff is honoured: {retry_at} {:?}",
        limited.reason
    );
    h.sim.set_faults(Faults::default());
    h.advance_to_instant(retry_at).await;
    // Our client still paces the token by the real-time Retry-After it was given; the next
    // invocation here is a fresh process.
    let mut h = h;
    h.scheduler = h.new_scheduler(None);
    assert_eq!(h.tick().await.sweep.succeeded, 1);
    assert_eq!(h.pipelines_for("storm").len(), 2);
    assert_eq!(h.count("storm", TriggerStatus::Triggered).await, 2);
}

/// Schedules due at the same instant are evaluated side by side: with CircleCI answering
/// slowly, their creates overlap instead of queueing behind each other (a hundred nightly
/// schedules one after another would outlast the function's timeout). Each still fires
/// once, and a paused one is still skipped (the pause flags are read once, shared).
async fn schedules_due_in_the_same_tick_fire_side_by_side(backend: Backend) {
    // Each schedule runs its own workflow, so its pipelines can be told apart.
    let names = ["nightly-a", "nightly-b", "nightly-c", "nightly-d"];
    let file: String = names
        .iter()
        .map(|name| hourly(name, API, name, ""))
        .collect();
    let h = Harness::builder(backend)
        .project(project(API, &names))
        .build(&file)
        .await;
    h.store
        .pause(
            &PauseScope::Schedule("nightly-d".into()),
            Some("frozen"),
            None,
        )
        .await
        .unwrap();
    h.sim.set_faults(Faults {
        latency: Duration::from_millis(300),
        ..Faults::default()
    });
    h.sim.clear_requests();

    let report = h.tick().await;
    assert_eq!(report.totals().fired, 3, "{report:?}");
    assert_eq!(report.totals().skipped, 1, "{report:?}");
    let overlapped = h.sim.counters().most_in_flight;
    assert!(
        overlapped >= 2,
        "the creates of schedules due together went one at a time ({overlapped} at most)"
    );
    for name in &names[..3] {
        assert_eq!(h.pipelines_for(name).len(), 1, "{name}");
    }
    assert!(h.pipelines_for("nightly-d").is_empty());
    h.sim.set_faults(Faults::default());
    assert_eq!(
        h.tick().await.totals().fired,
        0,
        "a repeated tick fires nothing"
    );
}

/// `pause NAME` is a store flag the tick honours (no redeploy): its slots are recorded as
/// skipped, with the operator's reason; `all` pauses every schedule; resuming fires again.
async fn paused_slots_are_recorded_as_skipped_until_resumed(backend: Backend) {
    let h = Harness::builder(backend)
        .project(project(API, &["nightly"]))
        .build(&hourly("nightly", API, "nightly", ""))
        .await;
    h.store
        .pause(
            &PauseScope::Schedule("nightly".into()),
            Some("database migration"),
            Some("ops"),
        )
        .await
        .unwrap();
    assert_eq!(h.tick().await.totals().skipped, 1);
    h.tick_at("2026-11-28T11:00:00Z").await;
    let paused = h.record("nightly", "2026-11-28T11:00:00Z").await;
    assert_eq!(paused.status, TriggerStatus::Skipped);
    assert_eq!(
        paused.reason.as_deref(),
        Some("schedule:nightly paused: database migration")
    );
    assert!(
        h.store
            .resume(&PauseScope::Schedule("nightly".into()))
            .await
            .unwrap()
    );
    assert_eq!(h.tick_at("2026-11-28T12:00:00Z").await.totals().fired, 1);

    h.store.pause(&PauseScope::All, None, None).await.unwrap();
    h.tick_at("2026-11-28T13:00:00Z").await;
    let all = h.record("nightly", "2026-11-28T13:00:00Z").await;
    assert_eq!(all.reason.as_deref(), Some("all paused"));
    h.store.resume(&PauseScope::All).await.unwrap();
    h.tick_at("2026-11-28T14:00:00Z").await;

    assert_eq!(h.pipelines_for("nightly").len(), 2);
    assert_eq!(
        h.slots("nightly", TriggerStatus::Skipped).await,
        [
            "2026-11-28T10:00:00Z",
            "2026-11-28T11:00:00Z",
            "2026-11-28T13:00:00Z"
        ]
    );
    assert_eq!(
        h.slots("nightly", TriggerStatus::Triggered).await,
        ["2026-11-28T12:00:00Z", "2026-11-28T14:00:00Z"]
    );
    // A paused slot stays decided: resuming does not fire it late.
    h.tick_at("2026-11-28T14:00:30Z").await;
    assert_eq!(h.pipelines_for("nightly").len(), 2);
}

/// Europe/Berlin falls back on 2026-10-25 (03:00 CEST → 02:00 CET, 01:00 UTC): a wildcard
/// schedule fires the repeated 02:00 and 02:30 twice (distinct UTC slots), a fixed-time
/// one once.
async fn repeated_local_times_follow_the_dst_rules(backend: Backend) {
    let toml = format!(
        r#"
[[schedule]]
name = "half-hourly"
cron = "*/30 * * * *"
timezone = "Europe/Berlin"
target = {{ project = "{API}", branch = "main", workflow = "half-hourly" }}

[[schedule]]
name = "at-0230"
cron = "30 2 * * *"
timezone = "Europe/Berlin"
target = {{ project = "{API}", branch = "main", workflow = "at-0230" }}
"#
    );
    let h = Harness::builder(backend)
        .start_at("2026-10-24T23:45:00Z")
        .project(project(API, &[]))
        .build(&toml)
        .await;
    h.tick().await;
    for at in [
        "2026-10-25T00:00:00Z",
        "2026-10-25T00:30:00Z",
        "2026-10-25T01:00:00Z",
        "2026-10-25T01:30:00Z",
        "2026-10-25T02:00:00Z",
    ] {
        h.tick_at(at).await;
    }
    assert_eq!(
        h.slots("half-hourly", TriggerStatus::Triggered).await,
        [
            "2026-10-25T00:00:00Z",
            "2026-10-25T00:30:00Z",
            "2026-10-25T01:00:00Z",
            "2026-10-25T01:30:00Z",
            "2026-10-25T02:00:00Z"
        ]
    );
    assert_eq!(h.pipelines_for("half-hourly").len(), 5);
    let second = h.record("half-hourly", "2026-10-25T01:00:00Z").await;
    assert_eq!(
        second.detail.slot_local.as_deref(),
        Some("2026-10-25 02:00:00")
    );
    assert_eq!(
        second.detail.dst.as_deref(),
        Some("repeated hour: second occurrence")
    );
    assert_eq!(
        h.slots("at-0230", TriggerStatus::Triggered).await,
        ["2026-10-25T00:30:00Z"]
    );
    assert_eq!(h.pipelines_for("at-0230").len(), 1);
}

/// `{"schedule": NAME}` runs it now, recorded as manual; the same `run_id` runs once.
async fn a_manual_run_is_recorded_as_manual_and_runs_once_per_run_id(backend: Backend) {
    let h = Harness::builder(backend)
        .start_at("2026-11-28T10:30:00Z")
        .project(project(API, &["nightly"]))
        .build(&hourly("nightly", API, "nightly", ""))
        .await;
    let run = |run_id: Option<&str>| TickRequest::RunSchedule {
        schedule: "nightly".into(),
        run_id: run_id.map(str::to_owned),
    };
    let report = h.scheduler.handle(run(Some("CHG-42"))).await.unwrap();
    assert_eq!(report.totals().fired, 1);
    let again = h.scheduler.handle(run(Some("CHG-42"))).await.unwrap();
    assert_eq!((again.totals().fired, again.totals().duplicates), (0, 1));
    h.advance(TimeDelta::seconds(5)).await;
    h.scheduler.handle(run(None)).await.unwrap();
    assert_eq!(h.pipelines_for("nightly").len(), 2);
    let records = h.history("nightly").await;
    assert!(records.iter().all(|r| r.detail.manual));
    assert!(
        records
            .iter()
            .any(|r| r.detail.slot.as_deref() == Some("manual:CHG-42"))
    );

    let unknown = h
        .scheduler
        .handle(TickRequest::RunSchedule {
            schedule: "nightlly".into(),
            run_id: None,
        })
        .await
        .unwrap_err();
    assert!(!unknown.is_retryable());
    assert_eq!(
        unknown.to_string(),
        "no schedule named `nightlly` (known: nightly)"
    );
    // Manual runs are not slots: the regular 11:00 slot still fires.
    assert_eq!(h.tick_at("2026-11-28T11:00:00Z").await.totals().fired, 1);
    assert_eq!(h.pipelines_for("nightly").len(), 3);
}

/// What one schedule of the outage table does on the tick after the outage.
struct Outcome {
    /// Slots that fire (HH:MM on 2026-11-28), ascending; the last one is on time, the others
    /// are caught up.
    fired: &'static [&'static str],
    /// Missed slots recorded as skipped, as an inclusive HH:MM range, or none.
    skipped: Option<(&'static str, &'static str)>,
    /// Part of every skipped row's reason.
    reason: &'static str,
}

const fn fires(fired: &'static [&'static str]) -> Outcome {
    Outcome {
        fired,
        skipped: None,
        reason: "",
    }
}

const fn skips(
    fired: &'static [&'static str],
    from: &'static str,
    to: &'static str,
    reason: &'static str,
) -> Outcome {
    Outcome {
        fired,
        skipped: Some((from, to)),
        reason,
    }
}

const SKIPPED: &str = "missed slot; catch_up = \"skip\"";
const OVER_LIMIT: &str = "more than max_catch_up (2) missed slots";
const TOO_OLD: &str = "missed by more than max_catch_up_age (300s)";

fn at_minute(hh_mm: &str) -> chrono::DateTime<chrono::Utc> {
    utc(&format!("2026-11-28T{hh_mm}:00Z"))
}

fn slot_id(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The README's catch-up table (section "Schedules", "Outages and catch-up"), row by row: four
/// every-minute schedules in UTC, one per policy; the scheduler ticks at 12:00:00, stops at
/// 12:00:45 and is back after the outage, when its first tick (serve's start-up tick) runs.
/// Every slot in between either fires — the newest on time, the others caught up and marked
/// so — or is recorded as skipped with its reason (the newest 100 one by one, the older ones
/// in one summary row). SQLite only: the decisions are the store-independent part, and the
/// store paths are covered on both adapters above.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outages_fire_exactly_what_the_readme_table_says() {
    // (outage, first tick after it, [skip, latest, all with max_catch_up = 2, all with
    // max_catch_up_age = "5m"])
    let table: [(&str, &str, [Outcome; 4]); 4] = [
        (
            "30 s",
            "2026-11-28T12:01:15Z",
            [
                fires(&["12:01"]),
                fires(&["12:01"]),
                fires(&["12:01"]),
                fires(&["12:01"]),
            ],
        ),
        (
            "3 min",
            "2026-11-28T12:03:45Z",
            [
                skips(&["12:03"], "12:01", "12:02", SKIPPED),
                skips(
                    &["12:03"],
                    "12:01",
                    "12:02",
                    "superseded by the slot at 2026-11-28T12:03:00Z",
                ),
                fires(&["12:01", "12:02", "12:03"]),
                fires(&["12:01", "12:02", "12:03"]),
            ],
        ),
        (
            "8 min",
            "2026-11-28T12:08:45Z",
            [
                skips(&["12:08"], "12:01", "12:07", SKIPPED),
                skips(
                    &["12:08"],
                    "12:01",
                    "12:07",
                    "superseded by the slot at 2026-11-28T12:08:00Z",
                ),
                skips(&["12:06", "12:07", "12:08"], "12:01", "12:05", OVER_LIMIT),
                skips(
                    &["12:04", "12:05", "12:06", "12:07", "12:08"],
                    "12:01",
                    "12:03",
                    TOO_OLD,
                ),
            ],
        ),
        (
            "3 h",
            "2026-11-28T15:00:45Z",
            [
                skips(&["15:00"], "12:01", "14:59", SKIPPED),
                skips(
                    &["15:00"],
                    "12:01",
                    "14:59",
                    "superseded by the slot at 2026-11-28T15:00:00Z",
                ),
                skips(&["14:58", "14:59", "15:00"], "12:01", "14:57", OVER_LIMIT),
                skips(
                    &["14:56", "14:57", "14:58", "14:59", "15:00"],
                    "12:01",
                    "14:55",
                    TOO_OLD,
                ),
            ],
        ),
    ];
    let policies = [
        ("skip", "catch_up = \"skip\""),
        ("latest", "catch_up = \"latest\""),
        ("all-2", "catch_up = \"all\"\nmax_catch_up = 2"),
        ("all-5m", "catch_up = \"all\"\nmax_catch_up_age = \"5m\""),
    ];
    let toml: String = policies
        .iter()
        .map(|(name, policy)| utc_schedule(name, "* * * * *", API, name, policy))
        .collect();

    for (outage, back, outcomes) in table {
        let h = Harness::builder(Backend::Sqlite)
            .start_at("2026-11-28T12:00:00Z")
            .project(project(API, &[]))
            .build(&toml)
            .await;
        assert_eq!(h.tick().await.totals().fired, 4, "{outage}: 12:00 fires");
        let report = h.tick_at(back).await;

        for ((name, _), expected) in policies.iter().zip(outcomes) {
            let case = format!("{outage} outage, {name}");
            let history = h.history(name).await;
            let tick = report
                .schedules
                .iter()
                .find(|s| s.schedule == *name)
                .unwrap();

            // Fired: exactly the expected slots (besides 12:00), one pipeline each; all but
            // the newest were caught up.
            let mut fired: Vec<_> = history
                .iter()
                .filter(|r| r.status == TriggerStatus::Triggered)
                .filter(|r| r.detail.slot.as_deref() != Some("2026-11-28T12:00:00Z"))
                .collect();
            fired.sort_by_key(|r| r.detail.slot.clone().unwrap());
            let fired_ids: Vec<&str> = fired
                .iter()
                .map(|r| r.detail.slot.as_deref().unwrap())
                .collect();
            let expected_ids: Vec<String> = expected
                .fired
                .iter()
                .map(|m| slot_id(at_minute(m)))
                .collect();
            assert_eq!(fired_ids, expected_ids, "{case}");
            assert_eq!(
                h.pipelines_for(name).len(),
                expected.fired.len() + 1,
                "{case}"
            );
            assert_eq!(tick.fired as usize, expected.fired.len(), "{case}");
            let (on_time, caught_up) = fired.split_last().unwrap();
            assert!(!on_time.detail.caught_up, "{case}: {on_time:?}");
            assert!(caught_up.iter().all(|r| r.detail.caught_up), "{case}");

            // Skipped: every slot of the range, each with the reason, one row each for the
            // newest 100 and one summary row for the rest.
            let skipped: Vec<_> = history
                .iter()
                .filter(|r| r.status == TriggerStatus::Skipped)
                .collect();
            assert!(
                skipped
                    .iter()
                    .all(|r| r.reason.as_deref().unwrap().contains(expected.reason)),
                "{case}: {:?}",
                skipped.iter().map(|r| r.reason.clone()).collect::<Vec<_>>()
            );
            let Some((from, to)) = expected.skipped else {
                assert!(skipped.is_empty(), "{case}");
                assert_eq!(
                    history.len(),
                    expected.fired.len() + 1,
                    "{case}: no other rows"
                );
                continue;
            };
            let (from, to) = (at_minute(from), at_minute(to));
            let count = usize::try_from((to - from).num_minutes() + 1).unwrap();
            let one_by_one = count.min(MAX_SKIPPED_ROWS);
            let newest_rows: Vec<String> = (0..one_by_one)
                .rev()
                .map(|back| slot_id(to - TimeDelta::minutes(i64::try_from(back).unwrap())))
                .collect();
            let mut row_ids: Vec<String> = skipped
                .iter()
                .filter(|r| r.detail.missed.is_none())
                .map(|r| r.detail.slot.clone().unwrap())
                .collect();
            row_ids.sort();
            assert_eq!(row_ids, newest_rows, "{case}");
            let summaries: Vec<_> = skipped
                .iter()
                .filter(|r| r.detail.missed.is_some())
                .collect();
            let summarised = count - one_by_one;
            if summarised == 0 {
                assert!(summaries.is_empty(), "{case}");
            } else {
                assert_eq!(summaries.len(), 1, "{case}");
                let missed = summaries[0].detail.missed.as_ref().unwrap();
                assert_eq!(missed.count, summarised, "{case}");
                assert_eq!(missed.from, from, "{case}");
                let last_summarised = to - TimeDelta::minutes(i64::try_from(one_by_one).unwrap());
                assert_eq!(missed.to, last_summarised, "{case}");
            }
            assert_eq!(tick.skipped as usize, skipped.len(), "{case}");
            assert_eq!(
                history.len(),
                expected.fired.len() + 1 + skipped.len(),
                "{case}: no other rows"
            );
        }
    }
}

/// `grace` is per schedule and measured from the tick's instant: a tick the scheduler
/// delivers late (a retry carries the original scheduled time) is on time; a restart that
/// comes later than the grace after a slot makes it missed, and the policy decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_grace_is_per_schedule_and_counts_from_the_ticks_instant() {
    let schedule = |name: &str, extra: &str| hourly(name, API, name, extra);
    let toml = [
        schedule("default-grace", "catch_up = \"skip\""),
        schedule("five-minutes", "catch_up = \"skip\"\ngrace = \"5m\""),
        schedule("strict", "catch_up = \"skip\"\ngrace = \"0s\""),
        schedule("latest", "catch_up = \"latest\""),
    ]
    .concat();
    let h = Harness::builder(Backend::Sqlite)
        .start_at("2026-11-28T12:00:00Z")
        .project(project(API, &[]))
        .build(&toml)
        .await;
    assert_eq!(h.tick().await.totals().fired, 4);

    // The 13:00 tick delivered 90 s late (EventBridge Scheduler's retry): its instant is
    // still 13:00, so 13:00 is on time everywhere, even with no grace at all.
    h.advance_to("2026-11-28T13:01:30Z").await;
    let retried = h.scheduler.tick(utc("2026-11-28T13:00:00Z")).await.unwrap();
    assert_eq!(retried.totals().fired, 4);

    // serve started again 90 s after 14:00: within the default grace, not within none.
    let after_90s = h.tick_at("2026-11-28T14:01:30Z").await;
    // serve started again 3 minutes after 15:00: only the 5-minute grace covers that.
    let after_3m = h.tick_at("2026-11-28T15:03:00Z").await;

    let fired_and_skipped = |report: &shared::triggers::scheduled::TickReport, name: &str| {
        let tick = report
            .schedules
            .iter()
            .find(|s| s.schedule == name)
            .unwrap();
        (tick.fired, tick.skipped)
    };
    for (name, at_14, at_15) in [
        ("default-grace", (1, 0), (0, 1)),
        ("five-minutes", (1, 0), (1, 0)),
        ("strict", (0, 1), (0, 1)),
        ("latest", (1, 0), (1, 0)),
    ] {
        assert_eq!(
            fired_and_skipped(&after_90s, name),
            at_14,
            "{name} at 14:01:30"
        );
        assert_eq!(fired_and_skipped(&after_3m, name), at_15, "{name} at 15:03");
    }
    let strict = h.record("strict", "2026-11-28T14:00:00Z").await;
    assert_eq!(strict.status, TriggerStatus::Skipped);
    assert_eq!(
        strict.reason.as_deref(),
        Some("missed slot; catch_up = \"skip\"")
    );
    // `latest` catches the missed 15:00 up, and the record says it was caught up.
    let caught_up = h.record("latest", "2026-11-28T15:00:00Z").await;
    assert_eq!(caught_up.status, TriggerStatus::Triggered);
    assert!(caught_up.detail.caught_up);
    let on_time = h.record("latest", "2026-11-28T14:00:00Z").await;
    assert!(!on_time.detail.caught_up, "{on_time:?}");
}

/// Europe/Berlin springs forward on 2026-03-29 (02:00 CET → 03:00 CEST, 01:00 UTC): 02:00,
/// 02:30 and 03:00 of `0,30 2,3 * * *` are one instant, so one run, recorded as shifted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_spring_forward_merge_fires_once_and_is_recorded_as_shifted() {
    let toml = format!(
        r#"
[[schedule]]
name = "gap"
cron = "0,30 2,3 * * *"
timezone = "Europe/Berlin"
target = {{ project = "{API}", branch = "main", workflow = "gap" }}
"#
    );
    let h = Harness::builder(Backend::Sqlite)
        .start_at("2026-03-29T00:30:00Z")
        .project(project(API, &[]))
        .build(&toml)
        .await;
    h.tick().await;
    h.tick_at("2026-03-29T01:00:00Z").await;
    h.tick_at("2026-03-29T01:30:00Z").await;
    assert_eq!(
        h.slots("gap", TriggerStatus::Triggered).await,
        ["2026-03-29T01:00:00Z", "2026-03-29T01:30:00Z"]
    );
    assert_eq!(h.pipelines_for("gap").len(), 2);
    let merged = h.record("gap", "2026-03-29T01:00:00Z").await;
    assert_eq!(
        merged.detail.slot_local.as_deref(),
        Some("2026-03-29 02:00:00")
    );
    assert_eq!(
        merged.detail.dst.as_deref(),
        Some("skipped local time: fired at transition")
    );
    let normal = h.record("gap", "2026-03-29T01:30:00Z").await;
    assert!(normal.detail.dst.is_none(), "{normal:?}");
}

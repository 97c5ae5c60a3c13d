//! The scheduler tick under CircleCI faults.

use std::time::Duration;

use chrono::TimeDelta;
use circleci_sim::Faults;
use integration_tests::faults_support::{API, System};
use integration_tests::scheduled_support::{Backend, default_client_options, utc};
use shared::circleci::ClientOptions;
use shared::store::{SourceKind, TriggerStatus};

use super::{assert_one_row_each_and_no_stray_pipeline, candidates, http_503_on, slow_down};

fn hourly(name: &str, concurrency: &str) -> String {
    format!(
        r#"
[[schedule]]
name = "{name}"
cron = "0 * * * *"
timezone = "UTC"
concurrency = "{concurrency}"
target = {{ project = "{API}", branch = "main", workflow = "nightly" }}
"#
    )
}

/// `forbid` reads the previous slot's pipeline from CircleCI before firing. A short 5xx
/// burst on those reads is retried inside the call and the slot fires on time; a burst
/// longer than the client's attempts leaves the slot undecided (no row, no pipeline, the
/// cursor does not move) and the next tick decides it. One pipeline and one row per slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_5xx_burst_on_the_concurrency_reads_is_retried_and_every_slot_fires_once() {
    let sys = System::builder(Backend::Sqlite)
        .schedules(&hourly("guarded", "forbid"))
        .build()
        .await;
    assert_eq!(sys.tick().await.totals().fired, 1, "10:00");

    sys.advance_to(utc("2026-11-28T11:00:00Z")).await;
    sys.sim.clear_requests();
    sys.sim.set_faults(http_503_on("GET", 3));
    let report = sys.tick().await;
    assert_eq!(
        report.totals().fired,
        1,
        "11:00 despite the burst: {report:?}"
    );
    assert_eq!(sys.sim.counters().injected_failures, 3);

    sys.advance_to(utc("2026-11-28T12:00:00Z")).await;
    sys.sim.set_faults(http_503_on("GET", 1_000));
    let report = sys.tick().await;
    assert_eq!(report.totals().fired, 0);
    assert_eq!(report.errors().count(), 1, "12:00 undecided: {report:?}");
    assert_eq!(sys.records(SourceKind::Schedule, "guarded").await.len(), 2);

    sys.sim.set_faults(Faults::default());
    sys.advance(TimeDelta::seconds(30)).await;
    let report = sys.tick().await;
    assert_eq!(
        report.totals().fired,
        1,
        "the next tick decides 12:00: {report:?}"
    );
    sys.advance(TimeDelta::seconds(30)).await;
    assert_eq!(sys.tick().await.totals().fired, 0);

    let records =
        assert_one_row_each_and_no_stray_pipeline(&sys, SourceKind::Schedule, "guarded", API, 3)
            .await;
    assert!(records.iter().all(|r| r.status == TriggerStatus::Triggered));
}

/// The create reaches CircleCI, which creates the pipeline and answers 502; reconciling it
/// meets a 5xx burst on its reads, which are retried. The slot adopts the one pipeline it
/// made — on both stores — and repeated ticks never send another create.
async fn create_then_502_is_adopted_not_resent(backend: Backend) {
    let sys = System::builder(backend)
        .schedules(&hourly("hourly", "allow"))
        .build()
        .await;
    sys.sim.set_faults(Faults {
        create_then_502: 1,
        ..http_503_on("GET", 2)
    });
    let report = sys.tick().await;
    assert_eq!(report.totals().fired, 1, "{report:?}");
    assert_eq!(sys.sim.counters().injected_failures, 3);
    for minutes in [1, 2, 3] {
        sys.advance_to(utc("2026-11-28T10:00:00Z") + TimeDelta::minutes(minutes))
            .await;
        assert_eq!(sys.tick().await.totals().fired, 0);
    }
    assert_eq!(sys.creates_sent(), 1, "never sent twice");
    let records =
        assert_one_row_each_and_no_stray_pipeline(&sys, SourceKind::Schedule, "hourly", API, 1)
            .await;
    assert_eq!(records[0].status, TriggerStatus::Triggered);
    assert!(
        records[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("adopted pipeline"),
        "{:?}",
        records[0].reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_then_502_is_adopted_not_resent_on_sqlite() {
    create_then_502_is_adopted_not_resent(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_then_502_is_adopted_not_resent_on_dynamodb() {
    create_then_502_is_adopted_not_resent(Backend::Dynamo).await;
}

/// The create makes its pipeline and answers 502, and CircleCI stays down for every read
/// of the reconciliation: the engine cannot look, so the slot is `ambiguous` awaiting a
/// recheck (no alarm yet, no resend). When CircleCI is back, the sweep after the window
/// looks again and adopts the pipeline the first create made: still one create, one row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_create_that_cannot_be_reconciled_yet_is_rechecked_and_adopted_not_resent() {
    let sys = System::builder(Backend::Sqlite)
        .schedules(&hourly("hourly", "allow"))
        .build()
        .await;
    sys.sim.set_faults(Faults {
        create_then_502: 1,
        ..http_503_on("GET", 1000)
    });
    sys.tick().await;
    let records = sys.records(SourceKind::Schedule, "hourly").await;
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].status,
        TriggerStatus::Ambiguous,
        "{:#?}",
        records[0]
    );
    let reason = records[0].reason.clone().unwrap_or_default();
    assert!(reason.contains("reconciliation failed"), "{reason}");
    let recheck_at = records[0].retry_at.expect("a recheck is planned");
    assert_eq!(sys.pipelines_on(API).len(), 1, "the 502 create made it");

    sys.sim.set_faults(Faults::default());
    sys.advance_to(recheck_at).await;
    sys.tick().await;
    assert_eq!(sys.creates_sent(), 1, "adopted, never resent");
    let records =
        assert_one_row_each_and_no_stray_pipeline(&sys, SourceKind::Schedule, "hourly", API, 1)
            .await;
    assert_eq!(
        records[0].status,
        TriggerStatus::Triggered,
        "{:#?}",
        records[0]
    );
    assert!(
        records[0]
            .reason
            .as_deref()
            .is_some_and(|reason| reason.contains("adopted pipeline")),
        "{:?}",
        records[0].reason
    );
    assert_eq!(records[0].retry_at, None);
}

/// CircleCI is slower than the client's timeout: the create times out (ambiguous: it was
/// sent), and the reconciliation's reads time out too and are retried until CircleCI
/// answers again. By then the slow create has made its pipeline: it is adopted, not resent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_create_that_times_out_is_reconciled_after_the_slow_reads_recover() {
    let sys = System::builder(Backend::Sqlite)
        .schedules(&hourly("hourly", "allow"))
        .client_options(ClientOptions {
            request_timeout: Duration::from_millis(250),
            connect_timeout: Duration::from_millis(200),
            deadline: Duration::from_secs(6),
            max_attempts: 12,
            backoff_base: Duration::from_millis(10),
            backoff_cap: Duration::from_millis(50),
            ..default_client_options()
        })
        .build()
        .await;
    slow_down(&sys, Duration::from_millis(700));
    let scheduler = sys.instance().scheduler.clone();
    let now = sys.now();
    let tick = tokio::spawn(async move { scheduler.tick(now).await.unwrap() });
    // The slow create makes its pipeline after its latency, though its caller gave up.
    let made = tokio::time::timeout(Duration::from_secs(5), async {
        while sys.pipelines_on(API).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let timed_out_reads_meanwhile = sys.sim.counters().requests;
    sys.sim.set_faults(Faults::default());
    assert!(made.is_ok(), "the slow create never made its pipeline");
    let report = tick.await.unwrap();
    assert_eq!(report.totals().fired, 1, "{report:?}");
    assert!(
        timed_out_reads_meanwhile >= 2,
        "the reconciliation's reads met the latency too"
    );
    sys.advance(TimeDelta::minutes(1)).await;
    assert_eq!(sys.tick().await.totals().fired, 0);
    assert_eq!(sys.creates_sent(), 1, "never resent");
    let records =
        assert_one_row_each_and_no_stray_pipeline(&sys, SourceKind::Schedule, "hourly", API, 1)
            .await;
    assert!(
        records[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("adopted pipeline"),
        "{:?}",
        records[0].reason
    );
}

/// A live holder's create is slower than its lease. Meanwhile another invocation (a fresh
/// process) ticks the same slot: the claim is SENDING past its lease, so it is adopted and
/// reconciled — nothing is resent, and as the pipeline does not exist yet the row says
/// `ambiguous`. Then the slow create answers 201 and the holder records it: one pipeline,
/// one row, `triggered` with that pipeline.
async fn a_slow_holder_outlived_by_its_lease_never_causes_a_second_create(backend: Backend) {
    let sys = System::builder(backend)
        .schedules(&hourly("hourly", "allow"))
        .build()
        .await;
    slow_down(&sys, Duration::from_millis(1_500));
    let holder = sys.instance().scheduler.clone();
    let slot = sys.now();
    let held = tokio::spawn(async move { holder.tick(slot).await.unwrap() });
    sys.requests_received(1).await;
    // Only the create in flight is slow; the lease (120 s) runs out on the test clock.
    sys.sim.set_faults(Faults::default());
    sys.clock.set(slot + TimeDelta::seconds(121));
    let other = sys.fresh_instance().await;
    let report = other.scheduler.tick(sys.now()).await.unwrap();
    let meanwhile = sys.records(SourceKind::Schedule, "hourly").await;
    assert_eq!(meanwhile.len(), 1, "{meanwhile:#?}");
    assert_eq!(
        (meanwhile[0].status, candidates(&meanwhile[0]).len()),
        (TriggerStatus::Ambiguous, 0),
        "adopted and reconciled, nothing found yet: {report:?} {meanwhile:#?}"
    );
    assert!(
        sys.pipelines_on(API).is_empty(),
        "the other tick sent nothing"
    );

    let report = held.await.unwrap();
    assert_eq!(report.totals().fired, 1, "{report:?}");
    sys.advance_to(slot + TimeDelta::minutes(5)).await;
    let later = sys.tick().await;
    assert_eq!((later.totals().fired, later.rechecked), (0, 0));
    assert_eq!(sys.creates_sent(), 1, "never resent");
    let records =
        assert_one_row_each_and_no_stray_pipeline(&sys, SourceKind::Schedule, "hourly", API, 1)
            .await;
    assert_eq!(records[0].status, TriggerStatus::Triggered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_holder_outlived_by_its_lease_never_causes_a_second_create_on_sqlite() {
    a_slow_holder_outlived_by_its_lease_never_causes_a_second_create(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_holder_outlived_by_its_lease_never_causes_a_second_create_on_dynamodb() {
    a_slow_holder_outlived_by_its_lease_never_causes_a_second_create(Backend::Dynamo).await;
}

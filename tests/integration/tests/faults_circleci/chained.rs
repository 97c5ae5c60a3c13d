//! The webhook receiver (chained triggers) under CircleCI faults. Redeliveries are the
//! same signed body posted again, as CircleCI resends it.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use circleci_sim::Faults;
use integration_tests::faults_support::{DEPLOY, RULE, System};
use integration_tests::scheduled_support::Backend;
use shared::actions::Actions;
use shared::circleci::CircleCiError;
use shared::circleci::intercept::{Call, Forward, Intercepted, Interceptor};
use shared::clock::Clock;
use shared::engine::{Engine, EngineSettings};
use shared::store::{SourceKind, TriggerStatus};
use shared::triggers::chained::Receiver;
use shared::triggers::chained::webhook::event::parse_event;

use super::{
    another_tool_creates, assert_one_row_each_and_no_stray_pipeline, candidates, http_503_on,
    one_second_deadline, slow_down, spend_the_rate_limit,
};

/// A 5xx answer to the create itself: the client cannot know whether CircleCI acted, so it
/// does not resend at once. Reconciliation finds no pipeline, so the row is `ambiguous`
/// awaiting a recheck at the end of the reconciliation window; redeliveries before then
/// replay it and send nothing. The sweep after the window looks again, still finds nothing
/// (CircleCI never received it) and sends: one pipeline, one row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_5xx_on_the_create_is_rechecked_and_sent_once_by_the_sweep() {
    let sys = System::builder(Backend::Sqlite).build().await;
    sys.sim.set_faults(http_503_on("POST", 1));
    let event = sys.upstream_build_succeeded();
    let answer = sys.deliver(&event).await;
    assert_eq!(answer.status, 200, "{:#}", answer.body);
    assert_eq!(answer.body["actions"][0]["status"], "ambiguous");
    for _ in 0..2 {
        let again = sys.deliver(&event).await;
        assert_eq!(again.status, 200, "{:#}", again.body);
        assert_eq!(again.body["actions"][0]["disposition"], "replayed");
    }
    assert_eq!(sys.creates_sent(), 1, "not resent before the recheck");
    let records =
        assert_one_row_each_and_no_stray_pipeline(&sys, SourceKind::Chain, RULE, DEPLOY, 1).await;
    assert_eq!(records[0].status, TriggerStatus::Ambiguous);
    assert!(candidates(&records[0]).is_empty());
    let recheck_at = records[0].retry_at.expect("a recheck is planned");
    assert!(recheck_at > sys.now(), "{recheck_at}");
    // Nothing is due before the window ends.
    let early = sys.instance().context.engine.sweep(100).await.unwrap();
    assert_eq!(early.attempted, 0, "{early:?}");
    assert!(sys.pipelines_on(DEPLOY).is_empty());

    sys.advance_to(recheck_at).await;
    let sweep = sys.instance().context.engine.sweep(100).await.unwrap();
    assert_eq!((sweep.attempted, sweep.succeeded), (1, 1), "{sweep:?}");
    assert_eq!(sys.creates_sent(), 2, "sent once more, after the recheck");
    let records =
        assert_one_row_each_and_no_stray_pipeline(&sys, SourceKind::Chain, RULE, DEPLOY, 1).await;
    assert_eq!(
        records[0].status,
        TriggerStatus::Triggered,
        "{:#?}",
        records[0]
    );
    assert_eq!(records[0].retry_at, None);
    assert_eq!(sys.pipelines_on(DEPLOY).len(), 1);
    // A late redelivery replays the triggered row.
    let late = sys.deliver(&event).await;
    assert_eq!(late.body["actions"][0]["disposition"], "replayed");
    assert_eq!(sys.creates_sent(), 2);
}

/// The create makes its pipeline and answers 502; the reconciliation's reads meet a 5xx
/// burst and are retried; the one pipeline is adopted. Duplicate deliveries replay it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_then_502_with_a_5xx_burst_on_the_reads_is_adopted_once() {
    let sys = System::builder(Backend::Sqlite).build().await;
    sys.sim.set_faults(Faults {
        create_then_502: 1,
        ..http_503_on("GET", 3)
    });
    let event = sys.upstream_build_succeeded();
    let answer = sys.deliver(&event).await;
    assert_eq!(answer.status, 200, "{:#}", answer.body);
    assert_eq!(answer.body["actions"][0]["status"], "triggered");
    assert_eq!(sys.sim.counters().injected_failures, 4);
    for _ in 0..3 {
        let again = sys.deliver(&event).await;
        assert_eq!(again.body["actions"][0]["disposition"], "replayed");
    }
    assert_eq!(sys.creates_sent(), 1, "never resent");
    let records =
        assert_one_row_each_and_no_stray_pipeline(&sys, SourceKind::Chain, RULE, DEPLOY, 1).await;
    assert_eq!(records[0].status, TriggerStatus::Triggered);
    assert!(
        records[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("adopted pipeline")
    );
}

/// CircleCI rate limits past the deadline: nothing was started, the row is `failed` with a
/// retry time and the delivery is answered 503 + Retry-After. A redelivery before that time
/// sends nothing; the redelivery after it (to a fresh instance: the first one still honours
/// the real-time Retry-After) performs attempt 2 — and the sweep then has nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_429_past_the_deadline_is_retryable_and_the_redelivery_finishes_it() {
    let mut sys = System::builder(Backend::Sqlite)
        .client_options(one_second_deadline())
        .build()
        .await;
    spend_the_rate_limit(&sys).await;
    let event = sys.upstream_build_succeeded();
    let answer = sys.deliver(&event).await;
    assert_eq!(answer.status, 503, "{:#}", answer.body);
    assert!(answer.retry_after.is_some_and(|s| s >= 60), "{answer:?}");
    let failed = sys.records(SourceKind::Chain, RULE).await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].status, TriggerStatus::Failed);
    let retry_at = failed[0].retry_at.expect("retryable: it has a retry time");
    assert!(retry_at > sys.now());

    sys.advance(TimeDelta::seconds(10)).await;
    let early = sys.deliver(&event).await;
    assert_eq!(early.status, 503, "not due yet: {:#}", early.body);
    assert_eq!(sys.creates_sent(), 1, "only the refused one");

    sys.sim.set_faults(Faults::default());
    sys.advance_to(retry_at).await;
    sys.restart().await;
    let due = sys.deliver(&event).await;
    assert_eq!(due.status, 200, "{:#}", due.body);
    assert_eq!(due.body["actions"][0]["status"], "triggered");
    let sweep = sys.instance().context.engine.sweep(100).await.unwrap();
    assert_eq!(sweep.attempted, 0, "{sweep:?}");
    let again = sys.deliver(&event).await;
    assert_eq!(again.body["actions"][0]["disposition"], "replayed");

    let records =
        assert_one_row_each_and_no_stray_pipeline(&sys, SourceKind::Chain, RULE, DEPLOY, 1).await;
    assert_eq!(
        (records[0].status, records[0].attempts, records[0].retry_at),
        (TriggerStatus::Triggered, 2, None)
    );
}

/// A delivery's create is slower than the claim's lease; CircleCI redelivers (to another
/// instance) after the lease ran out. The redelivery adopts the SENDING claim and reconciles
/// instead of resending; the slow create then answers and its holder records the pipeline.
/// On DynamoDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redelivery_past_a_slow_holders_lease_adopts_instead_of_resending_on_dynamodb() {
    let sys = System::builder(Backend::Dynamo).build().await;
    slow_down(&sys, Duration::from_millis(1_500));
    let event = sys.upstream_build_succeeded();
    let first = {
        let url = sys.instance().webhook_url.clone();
        let body = serde_json::to_vec(&event).unwrap();
        let signature = circleci_sim::signature_header(
            integration_tests::faults_support::WEBHOOK_SECRET,
            &body,
        );
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(url)
                .header("content-type", "application/json")
                .header("circleci-signature", signature)
                .header("circleci-event-type", "workflow-completed")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    sys.requests_received(1).await;
    sys.sim.set_faults(Faults::default());
    sys.clock.set(sys.now() + TimeDelta::seconds(121));
    let mut sys = sys;
    sys.restart().await;
    let redelivered = sys.deliver(&event).await;
    assert_eq!(redelivered.status, 200, "{:#}", redelivered.body);
    assert_eq!(
        redelivered.body["actions"][0]["status"], "ambiguous",
        "adopted and reconciled before the slow create made anything: {:#}",
        redelivered.body
    );
    assert!(sys.pipelines_on(DEPLOY).is_empty());

    assert_eq!(first.await.unwrap(), 200);
    let again = sys.deliver(&event).await;
    assert_eq!(again.body["actions"][0]["disposition"], "replayed");
    assert_eq!(sys.creates_sent(), 1, "never resent");
    let records =
        assert_one_row_each_and_no_stray_pipeline(&sys, SourceKind::Chain, RULE, DEPLOY, 1).await;
    assert_eq!(records[0].status, TriggerStatus::Triggered);
}

/// Seeded random 5xx on 40 % of every request while ten upstream builds finish, each event
/// delivered twice. Each create is sent exactly once: the ones answered 5xx are left
/// `ambiguous` (never resent), reads are retried, the rest trigger — and the pipelines are
/// exactly the triggered rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_5xx_on_every_request_never_duplicates_and_every_event_has_its_row() {
    let sys = System::builder(Backend::Sqlite).build().await;
    sys.sim.clear_requests();
    sys.sim.set_faults(Faults {
        failure_ratio: Some(circleci_sim::FailureRatio {
            ratio: 0.4,
            seed: 13,
        }),
        ..Faults::default()
    });
    let events: Vec<_> = (0..10).map(|_| sys.upstream_build_succeeded()).collect();
    for event in &events {
        let answer = sys.deliver(event).await;
        assert_eq!(answer.status, 200, "{:#}", answer.body);
        sys.advance(TimeDelta::seconds(1)).await;
    }
    for event in &events {
        let again = sys.deliver(event).await;
        assert_eq!(again.body["actions"][0]["disposition"], "replayed");
    }
    assert!(sys.sim.counters().injected_failures > 0);
    assert_eq!(sys.creates_sent(), 10, "one create per event, none resent");
    let records =
        assert_one_row_each_and_no_stray_pipeline(&sys, SourceKind::Chain, RULE, DEPLOY, 10).await;
    let triggered = records
        .iter()
        .filter(|r| r.status == TriggerStatus::Triggered)
        .count();
    let ambiguous = records
        .iter()
        .filter(|r| r.status == TriggerStatus::Ambiguous)
        .count();
    assert_eq!(triggered + ambiguous, 10, "{records:#?}");
    assert!(triggered > 0 && ambiguous > 0, "the seed exercises both");
}

/// Our create is answered 503 (CircleCI never acted); another tool on the same token starts
/// a pipeline on the same branch 90 s later, after our send's deadline, before the recheck.
/// The recheck must not adopt it (the old ±120 s window did, and ours was never sent): it
/// finds nothing it can attribute and sends ours. Two pipelines, ours recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_tools_pipeline_created_after_the_send_deadline_is_never_adopted() {
    let sys = System::builder(Backend::Sqlite).build().await;
    sys.sim.set_faults(http_503_on("POST", 1));
    let event = sys.upstream_build_succeeded();
    let answer = sys.deliver(&event).await;
    assert_eq!(
        answer.body["actions"][0]["status"], "ambiguous",
        "{:#}",
        answer.body
    );
    sys.advance(TimeDelta::seconds(90)).await;
    let theirs = another_tool_creates(&sys, DEPLOY, "main").await;
    let records = sys.records(SourceKind::Chain, RULE).await;
    let recheck_at = records[0].retry_at.expect("a recheck is planned");
    sys.advance_to(recheck_at).await;
    let sweep = sys.instance().context.engine.sweep(100).await.unwrap();
    assert_eq!(sweep.attempted, 1, "{sweep:?}");
    let records = sys.records(SourceKind::Chain, RULE).await;
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(
        records[0].status,
        TriggerStatus::Triggered,
        "{:#?}",
        records[0]
    );
    let ours = records[0].pipeline.as_ref().unwrap().id.clone();
    assert_ne!(
        ours, theirs,
        "their pipeline was adopted: ours was never sent"
    );
    let mut ids = sys.pipeline_ids_on(DEPLOY);
    ids.sort();
    let mut expected = vec![ours, theirs];
    expected.sort();
    assert_eq!(ids, expected);
}

/// Holds the first create (after `mark_sending`, before the client sends it) until
/// released: a Lambda environment frozen mid-send, thawed later.
#[derive(Clone, Default)]
struct FreezeFirstCreate(Arc<Freezer>);

#[derive(Default)]
struct Freezer {
    frozen: std::sync::atomic::AtomicBool,
    entered: tokio::sync::Notify,
    thaw: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl Interceptor for FreezeFirstCreate {
    async fn around<'a, T: Send + 'a>(
        &'a self,
        call: Call<'a>,
        forward: Forward<'a, T>,
    ) -> Result<T, CircleCiError> {
        if matches!(call, Call::TriggerPipeline(_))
            && !self
                .0
                .frozen
                .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            self.0.entered.notify_one();
            self.0.thaw.notified().await;
        }
        forward.await
    }
}

/// Finding 4 of #18: a holder marks its claim sending and freezes before its create leaves
/// (the Lambda environment is suspended after the receiver answered 503 at 8 s). Its lease
/// runs out on the test clock; CircleCI's redelivery adopts the claim, finds nothing, and
/// the sweep's recheck sends the create. Then the first holder thaws. Its send is past the
/// action's deadline, so the client never starts it, and its writes are refused by the
/// fence: exactly one pipeline, and the adopter's record is left as it wrote it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_holder_frozen_past_its_lease_neither_sends_nor_overwrites_the_adopter() {
    let sys = System::builder(Backend::Sqlite).build().await;
    let event = sys.upstream_build_succeeded();
    let freeze = FreezeFirstCreate::default();
    let frozen = {
        let context = &sys.instance().context;
        let circleci = Arc::new(Intercepted::new(context.circleci.clone(), freeze.clone()));
        let clock: Arc<dyn Clock> = sys.clock.clone();
        let engine = Engine::new(
            sys.store.clone(),
            Arc::new(Actions::new(circleci)),
            clock,
            EngineSettings::default(),
        );
        let receiver = Receiver::new(engine, &context.triggers).unwrap();
        let parsed = parse_event(&serde_json::to_vec(&event).unwrap()).unwrap();
        tokio::spawn(async move { receiver.process(&parsed).await })
    };
    freeze.0.entered.notified().await;
    assert!(sys.pipelines_on(DEPLOY).is_empty());

    // Frozen past the lease (120 s): the redelivery adopts the sending claim.
    sys.advance(TimeDelta::seconds(121)).await;
    let redelivered = sys.deliver(&event).await;
    assert_eq!(
        redelivered.body["actions"][0]["status"], "ambiguous",
        "{:#}",
        redelivered.body
    );
    let records = sys.records(SourceKind::Chain, RULE).await;
    let recheck_at = records[0].retry_at.expect("a recheck is planned");
    sys.advance_to(recheck_at).await;
    let sweep = sys.instance().context.engine.sweep(100).await.unwrap();
    assert_eq!((sweep.attempted, sweep.succeeded), (1, 1), "{sweep:?}");
    let adopters = sys.records(SourceKind::Chain, RULE).await;
    assert_eq!(adopters[0].status, TriggerStatus::Triggered);
    assert_eq!(sys.pipelines_on(DEPLOY).len(), 1);

    // The first holder thaws.
    freeze.0.thaw.notify_one();
    let _ = frozen.await.unwrap();
    assert_eq!(
        sys.pipelines_on(DEPLOY).len(),
        1,
        "the thawed holder sent its create after its lease"
    );
    let after = sys.records(SourceKind::Chain, RULE).await;
    assert_eq!(after, adopters, "the thawed holder's writes were merged in");
    assert_one_row_each_and_no_stray_pipeline(&sys, SourceKind::Chain, RULE, DEPLOY, 1).await;
}

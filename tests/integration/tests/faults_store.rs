//! Fault tests: the DynamoDB store becomes unreachable in the middle of a run.
//!
//! Each test starts its own moto_server and puts a [`SwitchableProxy`] between the store's
//! SDK client and it. A [`CutAtRequest`] interceptor cuts the proxy right before the n-th
//! DynamoDB request of an entry point (a scheduled tick, an HTTP call, a webhook delivery),
//! for every n the entry point makes, so the outage lands between every pair of store
//! writes. Each case checks the outcome, not the timing:
//! - while the store is cut: a retryable error (the Lambda tick fails, HTTP and the
//!   webhook receiver answer 503), and no pipeline whose claim was not marked sending;
//! - after the store is back and the entry point is run again (next tick, same
//!   Idempotency-Key, CircleCI's redelivery): pipelines in the simulator == logical
//!   triggers, each with exactly one history row that names it.
//!
//! The same sweep runs with the answer of the n-th request lost instead (the write takes
//! effect, the caller never learns it). Nothing is ever duplicated. A lost answer to
//! `mark_sending` leaves a claim `sending` though nothing was sent: after its lease the
//! claim is adopted and reconciled, finds no pipeline, and the engine rechecks at the end of
//! the reconciliation window and sends then — a schedule or a chain still fires exactly once
//! (the next ticks' sweep). An HTTP call is not swept (its caller owns retries): it is left
//! `ambiguous` and answered 502 `outcome-unknown` (see [`check_outcome`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use integration_tests::faults_support::{API, DEPLOY, ENDPOINT, RULE, System, every_five_minutes};
use integration_tests::moto_process::{CutAtRequest, MotoProcess, fast_failing_sdk_config};
use integration_tests::scheduled_support::{Backend, utc};
use integration_tests::tcp_proxy::SwitchableProxy;
use shared::store::{ClaimState, DynamoStore, SourceKind, TriggerRecord, TriggerStatus};
use shared::triggers::scheduled::{slot_key, target_identity};

const SCHEDULE: &str = "every-five";
/// Longer than the engine's default claim lease (120 s): an abandoned claim is taken over.
const PAST_LEASE: TimeDelta = TimeDelta::seconds(150);

/// The whole system (`integration_tests::faults_support`) over a DynamoDB store whose SDK
/// client reaches moto through a switchable proxy, cut by `cutter`.
struct Rig {
    sys: System,
    proxy: SwitchableProxy,
    cutter: CutAtRequest,
}

impl std::ops::Deref for Rig {
    type Target = System;

    fn deref(&self) -> &System {
        &self.sys
    }
}

impl Rig {
    async fn start(moto: &MotoProcess, start: &str) -> Rig {
        let proxy = SwitchableProxy::in_front_of(&moto.url()).await.unwrap();
        let cutter = CutAtRequest::new(proxy.switch());
        let config = fast_failing_sdk_config(&proxy.url()).await;
        let dynamo = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&config)
                .interceptor(cutter.clone())
                .build(),
        );
        let table = integration_tests::moto::unique_name("faults");
        shared::store::dynamo::create_table(&dynamo, &table)
            .await
            .unwrap();
        let sys = System::builder(Backend::Dynamo)
            .start(utc(start))
            .schedules(&every_five_minutes(SCHEDULE))
            .store(move |clock| Arc::new(DynamoStore::new(dynamo, table, clock)))
            .build()
            .await;
        Rig { sys, proxy, cutter }
    }

    /// Cuts the store at its `n`-th request from now on (`None`: never).
    fn arm(&self, fault: Option<Fault>) {
        match fault {
            Some(Fault::CutBefore(n)) => self.cutter.arm(n),
            Some(Fault::AnswerLost(n)) => self.cutter.arm_lost_answer(n),
            None => self.cutter.disarm(),
        }
    }

    fn restore(&self) {
        self.cutter.disarm();
        self.proxy.restore();
    }

    /// `rounds` times: every lease runs out, then the sweep runs (each tick runs it).
    async fn sweep_past_leases(&self, rounds: usize) {
        for _ in 0..rounds {
            self.advance(PAST_LEASE).await;
            self.instance()
                .scheduler
                .engine()
                .sweep(100)
                .await
                .expect("the sweep");
        }
    }
}

/// Where the store goes away, counted in DynamoDB requests of the entry point.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Request `n` never reaches DynamoDB, nor does any later one.
    CutBefore(usize),
    /// Request `n` takes effect but its answer is lost; later ones never reach DynamoDB.
    AnswerLost(usize),
}

impl Fault {
    fn at(self) -> usize {
        match self {
            Fault::CutBefore(n) | Fault::AnswerLost(n) => n,
        }
    }
}

/// The cut points to try out of `total` requests: all of them, thinned to at most `most`
/// (always keeping the first and the last) so the file stays fast.
fn cut_points(total: usize, most: usize) -> Vec<usize> {
    assert!(total > 0, "the entry point made no store request");
    let step = total.div_ceil(most).max(1);
    let mut points: Vec<usize> = (0..total).step_by(step).collect();
    if points.last() != Some(&(total - 1)) {
        points.push(total - 1);
    }
    points
}

/// The reason the engine records when an adopted `sending` claim has no pipeline on CircleCI.
const NO_CANDIDATE: &str = "reconciliation found no pipeline";

/// Checks the end state of one entry point that owes `expected` logical triggers, after
/// `fault` and the recovery: one row per trigger, no duplicate pipeline, every pipeline
/// named by exactly one row, every row triggered — except for one case, returned as a
/// count: when the answer to `mark_sending` is lost, the claim is `sending` though nothing
/// was sent; after its lease the claim is adopted as ambiguous and reconciliation finds no
/// pipeline. Schedules and chains are rechecked and sent by the sweep; an HTTP call stays
/// `ambiguous` (never resent by us, so never duplicated; its caller was told the outcome is
/// unknown). Only a lost answer may produce it.
fn check_outcome(
    records: &[TriggerRecord],
    pipelines: &[String],
    expected: usize,
    fault: Option<Fault>,
    context: &str,
) -> usize {
    assert_eq!(records.len(), expected, "{context}: {records:#?}");
    let mut ambiguous = 0;
    for record in records {
        match record.status {
            TriggerStatus::Triggered => {
                assert!(record.pipeline.is_some(), "{context}: {record:#?}");
            }
            TriggerStatus::Ambiguous
                if matches!(fault, Some(Fault::AnswerLost(_)))
                    && record.pipeline.is_none()
                    && record
                        .reason
                        .as_deref()
                        .is_some_and(|reason| reason.contains(NO_CANDIDATE)) =>
            {
                ambiguous += 1;
            }
            _ => panic!("{context}: not triggered exactly once: {record:#?}"),
        }
    }
    assert_eq!(
        pipelines.len(),
        expected - ambiguous,
        "{context}: {pipelines:?}"
    );
    assert_one_row_per_pipeline(records, pipelines, context);
    ambiguous
}

/// Every record names a distinct pipeline, and those are exactly `pipelines`.
fn assert_one_row_per_pipeline(records: &[TriggerRecord], pipelines: &[String], context: &str) {
    let recorded: BTreeSet<String> = records
        .iter()
        .filter_map(|r| r.pipeline.as_ref().map(|p| p.id.clone()))
        .collect();
    let created: BTreeSet<String> = pipelines.iter().cloned().collect();
    assert_eq!(created.len(), pipelines.len(), "{context}: duplicate ids");
    assert_eq!(recorded, created, "{context}: history vs simulator");
}

// ------------------------------------------------------------------- scheduled tick

const TICK_START: &str = "2026-11-28T10:00:30Z";
/// Three slots (10:05, 10:10, 10:15) are due at once after the first tick.
const TICK_DUE: &str = "2026-11-28T10:16:00Z";
const DUE_SLOTS: [&str; 3] = [
    "2026-11-28T10:05:00Z",
    "2026-11-28T10:10:00Z",
    "2026-11-28T10:15:00Z",
];

/// A tick with three due slots and the store failing at `cut_at`; then the
/// store comes back and the next ticks run. Returns how many store requests the cut tick
/// made (for the calibration run without a cut).
async fn tick_with_store_cut(moto: &MotoProcess, cut_at: Option<Fault>) -> (usize, usize) {
    let rig = Rig::start(moto, TICK_START).await;
    // The first tick sets the schedule's cursor (a new schedule does not backfill).
    rig.lambda_tick().await.expect("first tick");
    rig.advance_to(utc(TICK_DUE)).await;
    rig.arm(cut_at);
    let outcome = rig.lambda_tick().await;
    let requests = rig.cutter.sent();
    let context = format!("{cut_at:?} of the tick's store requests");

    let during_cut = rig.pipeline_ids_on(API);
    if let Some(fault) = cut_at {
        assert!(
            fault.at() < requests,
            "{context}: the tick made only {requests} requests"
        );
        // The Lambda answers an error (so the error alarm sees it) and says it is retryable.
        let failed = outcome.expect_err(&context);
        assert!(failed.0.is_retryable(), "{context}: {failed}");
        assert!(
            failed.to_string().contains("unavailable"),
            "{context}: {failed}"
        );
        rig.restore();
        // Nothing fired without a claim: every pipeline created during the cut run has a
        // slot claim that was marked sending before it was sent.
        let schedule = &rig.instance().scheduler.triggers().schedule[0];
        let target = schedule.targets()[0];
        let mut sent_claims = 0;
        for slot in DUE_SLOTS {
            let key = slot_key(SCHEDULE, slot, &target_identity(target));
            if let Some(claim) = rig.store.claim_snapshot(&key).await.unwrap()
                && matches!(claim.state, ClaimState::Sending | ClaimState::Completed)
            {
                assert!(claim.sending_since.is_some(), "{context}: {claim:?}");
                sent_claims += 1;
            }
        }
        assert!(
            during_cut.len() <= sent_claims,
            "{context}: {} pipelines but only {sent_claims} claims marked sending",
            during_cut.len()
        );
        // The next tick comes after the dead invocation's leases ran out.
        rig.advance(PAST_LEASE).await;
        let report = rig
            .lambda_tick()
            .await
            .expect("the tick after the store is back");
        assert_eq!(report["outcome"], "ticked", "{context}: {report}");
        // A slot whose claim was adopted with nothing sent is rechecked at the end of the
        // reconciliation window: the sweep (each tick runs it) sends it then.
        rig.sweep_past_leases(1).await;
    } else {
        let report = outcome.expect("tick without a cut");
        assert_eq!(report["report"]["schedules"][0]["fired"], 3, "{report}");
    }

    // Exactly once: three slots, three rows, a pipeline per triggered row.
    let pipelines = rig.pipeline_ids_on(API);
    let records = rig.records(SourceKind::Schedule, SCHEDULE).await;
    let slots: BTreeSet<&str> = records
        .iter()
        .filter_map(|r| r.detail.slot.as_deref())
        .collect();
    assert_eq!(slots, DUE_SLOTS.into_iter().collect(), "{context}");
    let ambiguous = check_outcome(&records, &pipelines, 3, cut_at, &context);
    for record in &records {
        let claim = rig
            .store
            .claim_snapshot(record.claim_key.as_ref().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claim.state, ClaimState::Completed, "{context}: {claim:?}");
    }
    (requests, ambiguous)
}

/// Starts a moto_server, runs `scenario` on it without a fault (counting the store
/// requests it makes), then once per cut point with `fault(n)`; returns how many runs ended
/// with an ambiguous row.
async fn sweep_faults(
    name: &str,
    most: usize,
    fault: fn(usize) -> Fault,
    scenario: impl AsyncFn(&MotoProcess, Option<Fault>) -> (usize, usize),
) -> usize {
    let moto = MotoProcess::start().await;
    let (total, _) = scenario(&moto, None).await;
    let points = cut_points(total, most);
    let mut ambiguous = 0;
    for n in &points {
        ambiguous += scenario(&moto, Some(fault(*n))).await.1;
    }
    // Shown with --no-capture: what the sweep covered and observed.
    eprintln!(
        "{name}: {total} store requests, faults at {points:?}, {ambiguous} trigger(s) left ambiguous"
    );
    ambiguous
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_cut_off_from_the_store_fires_every_slot_exactly_once() {
    let ambiguous = sweep_faults("tick, cut", 12, Fault::CutBefore, tick_with_store_cut).await;
    assert_eq!(ambiguous, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_whose_store_answers_are_lost_never_fires_a_slot_twice() {
    let ambiguous = sweep_faults(
        "tick, answer lost",
        12,
        Fault::AnswerLost,
        tick_with_store_cut,
    )
    .await;
    // The lost answer to `mark_sending` is rechecked and sent by the sweep: every slot fired.
    assert_eq!(ambiguous, 0);
}

// ------------------------------------------------------------------- HTTP endpoint

/// One endpoint call with the store failing at `cut_at`, then the caller's
/// retries with the same Idempotency-Key after the store is back.
async fn call_with_store_cut(moto: &MotoProcess, cut_at: Option<Fault>) -> (usize, usize) {
    let rig = Rig::start(moto, "2026-11-28T12:00:00Z").await;
    rig.arm(cut_at);
    let first = rig.call("release-1.2.3", "1.2.3").await;
    let requests = rig.cutter.sent();
    let context = format!("{cut_at:?} of the call's store requests");
    let mut answer = first;
    if let Some(fault) = cut_at {
        assert!(
            fault.at() < requests,
            "{context}: the call made only {requests} requests"
        );
        assert_truthful(&answer, !rig.pipeline_ids_on(DEPLOY).is_empty(), &context);
        rig.restore();
        // The caller retries with the same key until it gets an answer that is not 409
        // (the dead attempt's claim is leased): the trigger, performed or replayed.
        for _ in 0..3 {
            answer = rig.call("release-1.2.3", "1.2.3").await;
            if answer.status != 409 {
                break;
            }
            rig.advance(PAST_LEASE).await;
        }
    }
    let pipelines = rig.pipeline_ids_on(DEPLOY);
    let records = rig.records(SourceKind::Http, ENDPOINT).await;
    let ambiguous = check_outcome(&records, &pipelines, 1, cut_at, &context);
    if ambiguous == 0 {
        assert!(
            answer.status == 202 || answer.status == 200,
            "{context}: {answer:?}"
        );
    } else {
        // The caller is told the outcome is unknown and not to retry with a new key.
        assert_eq!(answer.status, 502, "{context}: {answer:?}");
        assert!(
            answer.problem_type().ends_with("outcome-unknown"),
            "{answer:?}"
        );
        assert_eq!(answer.body["retry_with_new_key"], false, "{answer:?}");
    }
    assert_eq!(
        answer.body["trigger_id"]
            .as_str()
            .or(answer.body["id"].as_str()),
        Some(records[0].id.to_string().as_str()),
        "{context}: {answer:?}"
    );
    (requests, ambiguous)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_call_cut_off_from_the_store_answers_503_and_its_retry_fires_once() {
    let ambiguous = sweep_faults(
        "endpoint call, cut",
        10,
        Fault::CutBefore,
        call_with_store_cut,
    )
    .await;
    assert_eq!(ambiguous, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_call_whose_store_answers_are_lost_never_fires_twice() {
    let ambiguous = sweep_faults(
        "endpoint call, answer lost",
        10,
        Fault::AnswerLost,
        call_with_store_cut,
    )
    .await;
    // Not swept: the lost answer to `mark_sending` leaves the call `ambiguous` (502
    // `outcome-unknown` to its caller), never a second pipeline.
    assert!(ambiguous <= 1, "{ambiguous}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_store_times_out_into_503_without_firing() {
    let moto = MotoProcess::start().await;
    let rig = Rig::start(&moto, "2026-11-28T12:00:00Z").await;
    rig.proxy.blackhole();
    let started = std::time::Instant::now();
    let answer = rig.call("release-blackholed", "1.2.3").await;
    // The SDK's attempt timeout (2 s) ends the wait, not a hang.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    answer.assert_unavailable("blackholed store");
    assert!(rig.pipeline_ids_on(DEPLOY).is_empty());
    rig.restore();
    let mut answer = rig.call("release-blackholed", "1.2.3").await;
    if answer.status == 409 {
        rig.advance(PAST_LEASE).await;
        answer = rig.call("release-blackholed", "1.2.3").await;
    }
    assert_eq!(answer.status, 202, "{answer:?}");
    let pipelines = rig.pipeline_ids_on(DEPLOY);
    let records = rig.records(SourceKind::Http, ENDPOINT).await;
    check_outcome(&records, &pipelines, 1, None, "blackholed store");
}

/// The answer to a call the store failed under never says "nothing happened" when
/// something did: with a pipeline on CircleCI it is 502 `outcome-unknown` (do not retry with
/// a new key; the same key, or the reconciler, finds the pipeline); without one, 503.
fn assert_truthful(answer: &integration_tests::faults_support::Answer, sent: bool, context: &str) {
    if sent && answer.status == 202 {
        // The outcome was recorded before the store went away (only completing the claim
        // failed): the record is the truth, and the answer says it.
        assert_eq!(answer.body["status"], "triggered", "{context}: {answer:?}");
        assert!(answer.body["pipeline"]["id"].is_string(), "{answer:?}");
    } else if sent {
        assert_eq!(
            (answer.status, answer.problem_type().rsplit('/').next()),
            (502, Some("outcome-unknown")),
            "{context}: a pipeline exists, yet the answer was {answer:?}"
        );
        assert_eq!(answer.body["retry_with_new_key"], false, "{answer:?}");
        assert!(answer.body["trigger_id"].is_string(), "{answer:?}");
    } else {
        answer.assert_unavailable(context);
    }
}

/// One endpoint call with the store failing at `cut_at`; the caller never retries. The
/// store comes back, and the reconciler (the sweep every tick runs) decides what the call
/// left behind: a pipeline that exists is recorded, nothing is left `received` or
/// `sending`, and nothing is sent that the call did not send.
async fn call_with_store_cut_and_no_retry(
    moto: &MotoProcess,
    cut_at: Option<Fault>,
) -> (usize, usize) {
    let rig = Rig::start(moto, "2026-11-28T12:00:00Z").await;
    rig.arm(cut_at);
    let answer = rig.call("release-once", "1.2.3").await;
    let requests = rig.cutter.sent();
    let context = format!("{cut_at:?} of the call's store requests, no retry");
    let sent = rig.pipeline_ids_on(DEPLOY);
    if cut_at.is_some() {
        assert_truthful(&answer, !sent.is_empty(), &context);
    }
    rig.restore();
    rig.sweep_past_leases(3).await;
    let pipelines = rig.pipeline_ids_on(DEPLOY);
    assert_eq!(pipelines, sent, "{context}: the reconciler never sends");
    let records = rig.records(SourceKind::Http, ENDPOINT).await;
    assert!(records.len() <= 1, "{context}: {records:#?}");
    let mut ambiguous = 0;
    for record in &records {
        match record.status {
            TriggerStatus::Triggered => {}
            // Nothing was sent: the caller was told so (503).
            TriggerStatus::Failed if pipelines.is_empty() => {}
            TriggerStatus::Ambiguous
                if matches!(cut_at, Some(Fault::AnswerLost(_))) && pipelines.is_empty() =>
            {
                ambiguous += 1;
            }
            _ => panic!("{context}: left undecided: {record:#?}"),
        }
        let claim = rig
            .store
            .claim_snapshot(record.claim_key.as_ref().unwrap())
            .await
            .unwrap();
        // A claim may stay `sending` only when its record already holds the outcome (the
        // store went away between the record and completing the claim): a repeated request
        // adopts it and completes it from the record.
        assert!(
            !claim
                .as_ref()
                .is_some_and(|c| c.state == ClaimState::Sending)
                || (record.status == TriggerStatus::Triggered && record.pipeline.is_some()),
            "{context}: claim left sending: {claim:?}"
        );
    }
    assert_one_row_per_pipeline(&records, &pipelines, &context);
    (requests, ambiguous)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_call_cut_off_from_the_store_is_reconciled_without_the_callers_retry() {
    sweep_faults(
        "endpoint call, cut, no retry",
        10,
        Fault::CutBefore,
        call_with_store_cut_and_no_retry,
    )
    .await;
}

// ------------------------------------------------------------------- webhook delivery

/// One webhook delivery with the store failing at `cut_at`, and CircleCI never redelivers:
/// the delivery stays queued, and the queue's next receives (after its visibility timeout,
/// past the dead holder's lease) finish what it recorded — a chain record left `received`
/// is sent once, one left `sending` is adopted and reconciled — with the sweep only for
/// the rechecks that reconciliation plans. A chain record does not enter the reconciler's
/// index when it is opened (`SourceKind::redelivered`), so the sweep alone must not be
/// what finishes it; a delivery that recorded nothing sent nothing.
async fn deliver_with_store_cut_and_no_redelivery(
    moto: &MotoProcess,
    cut_at: Option<Fault>,
) -> (usize, usize) {
    let mut rig = Rig::start(moto, "2026-11-28T14:00:00Z").await;
    let event = rig.upstream_build_succeeded();
    rig.arm(cut_at);
    let answer = rig.deliver(&event).await;
    let requests = rig.cutter.sent();
    let context = format!("{cut_at:?} of the delivery's store requests, no redelivery");
    if cut_at.is_none() {
        assert_eq!(answer.status, 200, "{context}: {answer:?}");
    }
    rig.restore();
    // The sweep alone: a chain record opened by the cut delivery is not in its index.
    rig.sweep_past_leases(1).await;
    let opened = rig.records(SourceKind::Chain, RULE).await;
    if answer.status != 200 {
        for record in &opened {
            assert!(
                record.status != TriggerStatus::Received || record.retry_at.is_none(),
                "{context}: a chain record opened with a reconciler time: {record:#?}"
            );
        }
    }
    // The queue hands the delivery out again until it is settled (a new process here:
    // the one that was cut off may be gone; the queue is not).
    let mut settled = answer.status == 200;
    for _ in 0..4 {
        if settled {
            break;
        }
        rig.advance(PAST_LEASE).await;
        rig.sys.restart().await;
        let (received, done) = rig.receive_queued().await;
        assert!(
            received > 0,
            "{context}: the delivery left the queue unsettled"
        );
        settled = done == received;
    }
    assert!(settled, "{context}: the queue never settled the delivery");
    // What reconciliation planned (a recheck at the end of its window) is the sweep's.
    rig.sweep_past_leases(2).await;
    let pipelines = rig.pipeline_ids_on(DEPLOY);
    let records = rig.records(SourceKind::Chain, RULE).await;
    if records.is_empty() {
        assert!(
            pipelines.is_empty(),
            "{context}: a pipeline without a record"
        );
        return (requests, 0);
    }
    let ambiguous = check_outcome(&records, &pipelines, 1, cut_at, &context);
    (requests, ambiguous)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_cut_off_from_the_store_is_finished_by_the_queue_without_a_redelivery() {
    let ambiguous = sweep_faults(
        "webhook delivery, cut, no redelivery",
        10,
        Fault::CutBefore,
        deliver_with_store_cut_and_no_redelivery,
    )
    .await;
    assert_eq!(ambiguous, 0);
}

/// One webhook delivery with the store failing at `cut_at`, then CircleCI's
/// redeliveries of the same body after the store is back.
async fn deliver_with_store_cut(moto: &MotoProcess, cut_at: Option<Fault>) -> (usize, usize) {
    let rig = Rig::start(moto, "2026-11-28T14:00:00Z").await;
    let event = rig.upstream_build_succeeded();
    rig.arm(cut_at);
    let mut answer = rig.deliver(&event).await;
    let requests = rig.cutter.sent();
    let context = format!("{cut_at:?} of the delivery's store requests");
    if let Some(fault) = cut_at {
        assert!(
            fault.at() < requests,
            "{context}: the delivery made only {requests} requests"
        );
        rig.restore();
        if answer.status == 200 {
            // Only completing the claim failed: the outcome is recorded, and said.
            let records = rig.records(SourceKind::Chain, RULE).await;
            assert_eq!(
                answer.body["actions"][0]["status"], "triggered",
                "{context}"
            );
            assert_eq!(records[0].status, TriggerStatus::Triggered, "{context}");
        } else {
            // 503: CircleCI redelivers.
            answer.assert_unavailable(&context);
        }
        for _ in 0..3 {
            answer = rig.deliver(&event).await;
            if answer.status != 503 {
                break;
            }
            rig.advance(PAST_LEASE).await;
        }
        // CircleCI does not redeliver a 200: a trigger awaiting its recheck is the sweep's
        // (the scheduled function's tick), at the end of the reconciliation window.
        rig.sweep_past_leases(1).await;
    }
    assert_eq!(answer.status, 200, "{context}: {answer:?}");
    let pipelines = rig.pipeline_ids_on(DEPLOY);
    let records = rig.records(SourceKind::Chain, RULE).await;
    let ambiguous = check_outcome(&records, &pipelines, 1, cut_at, &context);
    (requests, ambiguous)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_cut_off_from_the_store_answers_503_and_its_redelivery_fires_once() {
    let ambiguous = sweep_faults(
        "webhook delivery, cut",
        10,
        Fault::CutBefore,
        deliver_with_store_cut,
    )
    .await;
    assert_eq!(ambiguous, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_whose_store_answers_are_lost_never_fires_twice() {
    let ambiguous = sweep_faults(
        "webhook delivery, answer lost",
        10,
        Fault::AnswerLost,
        deliver_with_store_cut,
    )
    .await;
    // The lost answer to `mark_sending` is rechecked and sent by the sweep.
    assert_eq!(ambiguous, 0);
}

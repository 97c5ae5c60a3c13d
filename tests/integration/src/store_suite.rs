//! The `TriggerStore` conformance suite, written once and run against every adapter
//! (tests/store_conformance.rs instantiates it for SQLite and for DynamoDB on moto_server).
//!
//! Each case takes a [`StoreUnderTest`] and builds its own fresh store (its own SQLite file
//! or its own DynamoDB table) on a [`ManualClock`], so leases, windows and retention are
//! moved by the test, never by sleeping.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use shared::clock::{Clock as _, ManualClock};
use shared::config::{ActionKind, HistorySettings};
use shared::store::{
    ClaimKey, ClaimKind, ClaimOutcome, ClaimResult, ClaimState, DynamoStore, Fingerprint,
    JoinArrival, JoinOutcome, JoinStatus, PageRequest, PauseScope, PipelineRef, RateTicket,
    ScheduleDefinitions, ScheduleEntry, SchedulerState, SourceKind, SqliteStore, StoreError,
    StoreSettings, TriggerId, TriggerRecord, TriggerSource, TriggerStatus, TriggerStore,
    TriggerTarget, WorkflowOutcome, modify_record,
};

use crate::moto::unique_name;

/// Spawns every future on the (multi-threaded) runtime at once and collects the results.
async fn join_all<T, F>(futures: impl IntoIterator<Item = F>) -> Vec<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = T> + Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut results = Vec::with_capacity(handles.len());
    for handle in handles {
        results.push(handle.await.unwrap());
    }
    results
}

/// A store under test, its clock, and whatever must live as long as it (a temp dir).
pub struct Fixture {
    pub store: Arc<dyn TriggerStore>,
    pub clock: Arc<ManualClock>,
    _keep_alive: Option<Box<dyn Any + Send + Sync>>,
}

impl Fixture {
    /// For suites that wrap an adapter (e.g. an IAM audit around `DynamoStore`).
    pub fn new(
        store: Arc<dyn TriggerStore>,
        clock: Arc<ManualClock>,
        keep_alive: Option<Box<dyn Any + Send + Sync>>,
    ) -> Self {
        Self {
            store,
            clock,
            _keep_alive: keep_alive,
        }
    }
}

/// SDK configuration for moto_server behind a fresh [`serial_proxy`]; keep the proxy alive
/// as long as clients built from the configuration are used.
pub async fn serialized_moto() -> (aws_config::SdkConfig, serial_proxy::SerialProxy) {
    let proxy = serial_proxy::start(crate::moto::endpoint()).await;
    let config = crate::moto::sdk_config_for(&proxy.url).await;
    (config, proxy)
}

/// An adapter the suite can build fresh stores of.
#[async_trait]
pub trait StoreUnderTest: Send + Sync {
    async fn fixture_with(&self, settings: StoreSettings) -> Fixture;

    async fn fixture(&self) -> Fixture {
        self.fixture_with(StoreSettings::default()).await
    }
}

/// 23:50 on the last day of a month, so listings in the suite cross a month boundary.
pub fn start_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 23, 50, 0).unwrap()
}

/// SQLite on a file in a fresh temp dir (WAL mode, as `serve` runs it).
pub struct Sqlite;

#[async_trait]
impl StoreUnderTest for Sqlite {
    async fn fixture_with(&self, settings: StoreSettings) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(start_time()));
        let store = SqliteStore::open_in_dir(dir.path(), clock.clone())
            .unwrap()
            .with_settings(settings);
        Fixture {
            store: Arc::new(store),
            clock,
            _keep_alive: Some(Box::new(dir)),
        }
    }
}

/// DynamoDB on moto_server through the real SDK, one new table per fixture, every
/// request through a [`serial_proxy`] (see there for why).
pub struct Dynamo;

#[async_trait]
impl StoreUnderTest for Dynamo {
    async fn fixture_with(&self, settings: StoreSettings) -> Fixture {
        let (config, proxy) = serialized_moto().await;
        let client = aws_sdk_dynamodb::Client::new(&config);
        let table = unique_name("triggers");
        shared::store::dynamo::create_table(&client, &table)
            .await
            .unwrap();
        let clock = Arc::new(ManualClock::new(start_time()));
        let store = DynamoStore::new(client, table, clock.clone()).with_settings(settings);
        Fixture {
            store: Arc::new(store),
            clock,
            _keep_alive: Some(Box::new(proxy)),
        }
    }
}

const LEASE: Duration = Duration::from_secs(60);

fn key(name: &str) -> ClaimKey {
    ClaimKey::new(
        ClaimKind::Schedule,
        &[name, "2026-11-30T02:00:00Z", "gh/acme/api@main"],
    )
}

fn fingerprint(text: &str) -> Fingerprint {
    Fingerprint::of(text.as_bytes())
}

fn won(outcome: &ClaimOutcome) -> shared::store::OwnerToken {
    match outcome {
        ClaimOutcome::Won(grant) => grant.owner,
        other => panic!("expected to win the claim, got {other:?}"),
    }
}

fn result(value: &str) -> ClaimResult {
    ClaimResult {
        trigger_id: None,
        value: serde_json::json!({ "answer": value }),
    }
}

fn record(fixture: &Fixture, kind: SourceKind, source: &str, project: &str) -> TriggerRecord {
    use shared::clock::Clock;
    TriggerRecord::new(
        TriggerSource::new(kind, source),
        TriggerTarget::project(project),
        ActionKind::Pipeline,
        fixture.clock.now(),
    )
}

fn arrival(key: &ClaimKey, upstream: &str, succeeded: bool) -> JoinArrival {
    JoinArrival {
        key: key.clone(),
        expected: BTreeSet::from(["api".to_owned(), "web".to_owned()]),
        upstream: upstream.to_owned(),
        succeeded,
        pipeline_id: Some(format!("pipeline-{upstream}")),
        trigger_id: None,
        window: Duration::from_secs(3_600),
    }
}

// ---------------------------------------------------------------------------------------
// Claims
// ---------------------------------------------------------------------------------------

/// 50 concurrent claims of one key: exactly one wins; after completion all 50 replays agree.
pub async fn concurrent_claims_have_exactly_one_winner(adapter: &dyn StoreUnderTest) {
    let f = adapter.fixture().await;
    let key = key("nightly");
    let fp = fingerprint("request");
    let outcomes = join_all((0..50).map(|_| {
        let store = f.store.clone();
        let (key, fp) = (key.clone(), fp.clone());
        async move { store.claim(&key, &fp, LEASE).await.unwrap() }
    }))
    .await;
    let winners: Vec<_> = outcomes
        .iter()
        .filter_map(|o| match o {
            ClaimOutcome::Won(grant) => Some(grant.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    assert!(
        outcomes.iter().all(|o| matches!(
            o,
            ClaimOutcome::Won(_)
                | ClaimOutcome::InProgress {
                    state: ClaimState::InProgress,
                    ..
                }
        )),
        "{outcomes:?}"
    );
    let winner = &winners[0];
    assert_eq!(winner.attempt, 1);
    assert!(!winner.taken_over);

    f.store.mark_sending(&key, winner.owner).await.unwrap();
    f.store
        .complete(&key, winner.owner, &result("one"))
        .await
        .unwrap();
    let replays = join_all((0..50).map(|_| {
        let store = f.store.clone();
        let (key, fp) = (key.clone(), fp.clone());
        async move { store.claim(&key, &fp, LEASE).await.unwrap() }
    }))
    .await;
    for replay in replays {
        match replay {
            ClaimOutcome::Completed { result: stored, .. } => assert_eq!(stored, result("one")),
            other => panic!("a replay after completion must see the result, got {other:?}"),
        }
    }
}

/// The same key with a different request is a conflict, while running and once done.
pub async fn a_different_fingerprint_conflicts(adapter: &dyn StoreUnderTest) {
    let f = adapter.fixture().await;
    let key = ClaimKey::new(ClaimKind::Client, &["release-bot", "idem-1"]);
    let owner = won(&f
        .store
        .claim(&key, &fingerprint("body A"), LEASE)
        .await
        .unwrap());
    assert_eq!(
        f.store
            .claim(&key, &fingerprint("body B"), LEASE)
            .await
            .unwrap(),
        ClaimOutcome::Conflict
    );
    f.store.complete(&key, owner, &result("A")).await.unwrap();
    assert_eq!(
        f.store
            .claim(&key, &fingerprint("body B"), LEASE)
            .await
            .unwrap(),
        ClaimOutcome::Conflict
    );
    assert!(matches!(
        f.store
            .claim(&key, &fingerprint("body A"), LEASE)
            .await
            .unwrap(),
        ClaimOutcome::Completed { .. }
    ));
    // Conflicts must survive an expired lease too: the key stays bound to its request.
    f.clock.advance(TimeDelta::hours(2));
    assert_eq!(
        f.store
            .claim(&key, &fingerprint("body B"), LEASE)
            .await
            .unwrap(),
        ClaimOutcome::Conflict
    );
}

/// An expired lease that never reached `sending` is taken over; the old holder is fenced out.
pub async fn an_expired_lease_is_taken_over_before_sending(adapter: &dyn StoreUnderTest) {
    let f = adapter.fixture().await;
    let key = key("takeover");
    let fp = fingerprint("request");
    let first = won(&f.store.claim(&key, &fp, LEASE).await.unwrap());

    f.clock.advance(TimeDelta::seconds(59));
    assert!(matches!(
        f.store.claim(&key, &fp, LEASE).await.unwrap(),
        ClaimOutcome::InProgress {
            state: ClaimState::InProgress,
            ..
        }
    ));

    f.clock.advance(TimeDelta::seconds(2));
    let second = match f.store.claim(&key, &fp, LEASE).await.unwrap() {
        ClaimOutcome::Won(grant) => {
            assert!(grant.taken_over);
            assert_eq!(grant.attempt, 2);
            grant.owner
        }
        other => panic!("an expired lease must be taken over, got {other:?}"),
    };
    assert_ne!(first, second);
    for error in [
        f.store.mark_sending(&key, first).await.unwrap_err(),
        f.store
            .complete(&key, first, &result("stale"))
            .await
            .unwrap_err(),
        f.store.release(&key, first).await.unwrap_err(),
        f.store.renew(&key, first, LEASE).await.unwrap_err(),
    ] {
        assert!(matches!(error, StoreError::LostClaim { .. }), "{error:?}");
        assert!(!error.is_retryable());
    }
    f.store.mark_sending(&key, second).await.unwrap();
    f.store
        .complete(&key, second, &result("second"))
        .await
        .unwrap();
    match f.store.claim(&key, &fp, LEASE).await.unwrap() {
        ClaimOutcome::Completed { result: stored, .. } => assert_eq!(stored, result("second")),
        other => panic!("{other:?}"),
    }
}

/// Once marked sending, a claim is never released or taken over: after its lease it is
/// ambiguous, and only an adopting reconciler (or the original holder) can complete it.
pub async fn a_sending_claim_is_never_taken_over(adapter: &dyn StoreUnderTest) {
    let f = adapter.fixture().await;
    let key = key("sending");
    let fp = fingerprint("request");
    let holder = won(&f.store.claim(&key, &fp, LEASE).await.unwrap());
    f.store.mark_sending(&key, holder).await.unwrap();
    // Repeating it (a retry after a lost response) is harmless.
    f.store.mark_sending(&key, holder).await.unwrap();
    let error = f.store.release(&key, holder).await.unwrap_err();
    assert!(
        matches!(error, StoreError::ClaimSending { .. }),
        "{error:?}"
    );

    f.clock.advance(TimeDelta::seconds(30));
    assert!(matches!(
        f.store.claim(&key, &fp, LEASE).await.unwrap(),
        ClaimOutcome::InProgress {
            state: ClaimState::Sending,
            ..
        }
    ));
    let error = f.store.adopt_ambiguous(&key, LEASE).await.unwrap_err();
    assert!(
        matches!(error, StoreError::NotAmbiguous { .. }),
        "{error:?}"
    );

    f.clock.advance(TimeDelta::minutes(10));
    let sending_since = match f.store.claim(&key, &fp, LEASE).await.unwrap() {
        ClaimOutcome::Ambiguous {
            sending_since,
            attempts,
        } => {
            assert_eq!(attempts, 1);
            sending_since
        }
        other => panic!("an expired sending claim must be ambiguous, got {other:?}"),
    };
    assert_eq!(sending_since, start_time());
    let snapshot = f.store.claim_snapshot(&key).await.unwrap().unwrap();
    assert_eq!(snapshot.state, ClaimState::Sending);

    let reconciler = f.store.adopt_ambiguous(&key, LEASE).await.unwrap();
    assert_eq!(reconciler.attempt, 2);
    // Adopted claims stay sending: the reconciler cannot release (and so resend) either.
    let error = f.store.release(&key, reconciler.owner).await.unwrap_err();
    assert!(
        matches!(error, StoreError::ClaimSending { .. }),
        "{error:?}"
    );
    let error = f
        .store
        .complete(&key, holder, &result("late"))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::LostClaim { .. }), "{error:?}");
    f.store
        .complete(&key, reconciler.owner, &result("reconciled"))
        .await
        .unwrap();
    match f.store.claim(&key, &fp, LEASE).await.unwrap() {
        ClaimOutcome::Completed { result: stored, .. } => assert_eq!(stored, result("reconciled")),
        other => panic!("{other:?}"),
    }
    let error = f.store.adopt_ambiguous(&key, LEASE).await.unwrap_err();
    assert!(
        matches!(error, StoreError::NotAmbiguous { .. }),
        "{error:?}"
    );
    let missing = f
        .store
        .adopt_ambiguous(&ClaimKey::new(ClaimKind::Schedule, &["nope"]), LEASE)
        .await
        .unwrap_err();
    assert!(
        matches!(missing, StoreError::ClaimNotFound { .. }),
        "{missing:?}"
    );
}

/// `mark_sending` needs a live lease, not only the owner token: a holder that was frozen
/// (a Lambda environment suspended mid-invocation) past its lease must not start a send
/// that a takeover may already be making. Nobody took the claim over here, yet the late
/// holder is refused; the claim stays `in_progress`, so the next claimant takes it over.
pub async fn mark_sending_requires_an_unexpired_lease(adapter: &dyn StoreUnderTest) {
    let f = adapter.fixture().await;
    let key = key("frozen");
    let fp = fingerprint("request");
    let holder = won(&f.store.claim(&key, &fp, LEASE).await.unwrap());
    f.clock.advance(TimeDelta::seconds(61));
    let error = f.store.mark_sending(&key, holder).await.unwrap_err();
    assert!(matches!(error, StoreError::LostClaim { .. }), "{error:?}");
    assert!(!error.is_retryable());
    let snapshot = f.store.claim_snapshot(&key).await.unwrap().unwrap();
    assert_eq!(snapshot.state, ClaimState::InProgress, "{snapshot:?}");
    match f.store.claim(&key, &fp, LEASE).await.unwrap() {
        ClaimOutcome::Won(grant) => {
            assert!(grant.taken_over);
            f.store.mark_sending(&key, grant.owner).await.unwrap();
        }
        other => panic!("an unsent expired lease is taken over, got {other:?}"),
    }
}

/// A slow holder whose lease ran out after sending may still complete, as long as no
/// reconciler adopted the claim; its result is what replays then see.
pub async fn a_slow_sending_holder_still_completes(adapter: &dyn StoreUnderTest) {
    let f = adapter.fixture().await;
    let key = key("slow");
    let fp = fingerprint("request");
    let holder = won(&f.store.claim(&key, &fp, LEASE).await.unwrap());
    f.store.mark_sending(&key, holder).await.unwrap();
    f.clock.advance(TimeDelta::minutes(5));
    f.store
        .complete(&key, holder, &result("slow"))
        .await
        .unwrap();
    match f.store.claim(&key, &fp, LEASE).await.unwrap() {
        ClaimOutcome::Completed {
            result: stored,
            completed_at,
        } => {
            assert_eq!(stored, result("slow"));
            assert_eq!(completed_at, start_time() + TimeDelta::minutes(5));
        }
        other => panic!("{other:?}"),
    }
}

/// A stale owner's `complete` is refused and does not overwrite the real result.
pub async fn a_stale_owner_cannot_complete(adapter: &dyn StoreUnderTest) {
    let f = adapter.fixture().await;
    let key = key("stale");
    let fp = fingerprint("request");
    let stale = won(&f.store.claim(&key, &fp, LEASE).await.unwrap());
    f.clock.advance(TimeDelta::seconds(61));
    let fresh = won(&f.store.claim(&key, &fp, LEASE).await.unwrap());
    f.store
        .complete(&key, fresh, &result("fresh"))
        .await
        .unwrap();
    let error = f
        .store
        .complete(&key, stale, &result("stale"))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::LostClaim { .. }), "{error:?}");
    match f.store.claim(&key, &fp, LEASE).await.unwrap() {
        ClaimOutcome::Completed { result: stored, .. } => assert_eq!(stored, result("fresh")),
        other => panic!("{other:?}"),
    }
}

/// Completion is final: replays (even much later) get the stored result; a repeated
/// `complete` by the same holder is harmless and does not change it.
pub async fn a_replay_after_completion_returns_the_stored_result(adapter: &dyn StoreUnderTest) {
    let f = adapter.fixture().await;
    let key = ClaimKey::new(ClaimKind::Webhook, &["event-1", "deploy-after-build", "0"]);
    let fp = fingerprint("event body");
    let owner = won(&f.store.claim(&key, &fp, LEASE).await.unwrap());
    let trigger_id = TriggerId::generate(start_time());
    let stored = ClaimResult {
        trigger_id: Some(trigger_id),
        value: serde_json::json!({"status": 201, "body": {"id": "p-1", "number": 7}}),
    };
    f.store.complete(&key, owner, &stored).await.unwrap();
    f.store.complete(&key, owner, &stored).await.unwrap();
    let error = f.store.mark_sending(&key, owner).await.unwrap_err();
    assert!(matches!(error, StoreError::LostClaim { .. }), "{error:?}");
    f.clock.advance(TimeDelta::days(1));
    match f.store.claim(&key, &fp, LEASE).await.unwrap() {
        ClaimOutcome::Completed {
            result,
            completed_at,
        } => {
            assert_eq!(result, stored);
            assert_eq!(completed_at, start_time());
        }
        other => panic!("{other:?}"),
    }
    let snapshot = f.store.claim_snapshot(&key).await.unwrap().unwrap();
    assert_eq!(snapshot.state, ClaimState::Completed);
    assert_eq!(snapshot.result, Some(stored));
}

/// Releasing (before sending) lets the next attempt win a fresh claim; a second release
/// with the same token is refused.
pub async fn release_lets_the_next_attempt_win(adapter: &dyn StoreUnderTest) {
    let f = adapter.fixture().await;
    let key = key("release");
    let fp = fingerprint("request");
    let first = won(&f.store.claim(&key, &fp, LEASE).await.unwrap());
    let renewed = f
        .store
        .renew(&key, first, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(renewed, start_time() + TimeDelta::seconds(120));
    f.store.release(&key, first).await.unwrap();
    assert!(f.store.claim_snapshot(&key).await.unwrap().is_none());
    let error = f.store.release(&key, first).await.unwrap_err();
    assert!(matches!(error, StoreError::LostClaim { .. }), "{error:?}");
    match f.store.claim(&key, &fp, LEASE).await.unwrap() {
        ClaimOutcome::Won(grant) => {
            assert_ne!(grant.owner, first);
            assert!(!grant.taken_over);
        }
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Joins
// ---------------------------------------------------------------------------------------

/// 20 concurrent, duplicated arrivals of both upstreams: the join fires exactly once.
pub async fn a_join_fires_once_under_concurrent_duplicates(adapter: &dyn StoreUnderTest) {
    let f = adapter.fixture().await;
    let key = ClaimKey::new(ClaimKind::Join, &["e2e-after-api-and-web", "origin-1"]);
    let outcomes = join_all((0..20).map(|i| {
        let store = f.store.clone();
        let arrival = arrival(&key, if i % 2 == 0 { "api" } else { "web" }, true);
        async move { store.join_arrive(&arrival).await.unwrap() }
    }))
    .await;
    let fired = outcomes
        .iter()
        .filter(|o| {
            matches!(
                o,
                JoinOutcome::Complete {
                    fired_now: true,
                    ..
                }
            )
        })
        .count();
    assert_eq!(fired, 1, "{outcomes:#?}");
    assert!(
        outcomes
            .iter()
            .all(|o| !matches!(o, JoinOutcome::Closed { .. })),
        "{outcomes:#?}"
    );
    let state = f.store.join_state(&key).await.unwrap().unwrap();
    assert_eq!(state.status, JoinStatus::Complete);
    assert_eq!(state.generation, 1);
    let arrived: Vec<&str> = state.arrived.iter().map(|a| a.upstream.as_str()).collect();
    assert_eq!(arrived, ["api", "web"]);
    assert_eq!(
        state.arrived[0].pipeline_id.as_deref(),
        Some("pipeline-api")
    );
    // A late redelivery reports the completed join without firing again.
    match f
        .store
        .join_arrive(&arrival(&key, "web", true))
        .await
        .unwrap()
    {
        JoinOutcome::Complete { fired_now, .. } => assert!(!fired_now),
        other => panic!("{other:?}"),
    }
}

/// A failed upstream closes the join: nothing fires, even when the other succeeds later.
pub async fn a_failed_upstream_closes_the_join(adapter: &dyn StoreUnderTest) {
    let f = adapter.fixture().await;
    let key = ClaimKey::new(ClaimKind::Join, &["e2e", "main"]);
    match f
        .store
        .join_arrive(&arrival(&key, "api", true))
        .await
        .unwrap()
    {
        JoinOutcome::Waiting { state, duplicate } => {
            assert!(!duplicate);
            assert_eq!(state.missing(), BTreeSet::from(["web".to_owned()]));
        }
        other => panic!("{other:?}"),
    }
    match f
        .store
        .join_arrive(&arrival(&key, "api", true))
        .await
        .unwrap()
    {
        JoinOutcome::Waiting { duplicate, .. } => assert!(duplicate),
        other => panic!("{other:?}"),
    }
    match f
        .store
        .join_arrive(&arrival(&key, "web", false))
        .await
        .unwrap()
    {
        JoinOutcome::Closed { state, closed_now } => {
            assert!(closed_now);
            assert_eq!(state.closed_by.as_deref(), Some("web"));
        }
        other => panic!("{other:?}"),
    }
    // The rerun of web succeeds: still closed, still not fired.
    let mut rerun = arrival(&key, "web", true);
    rerun.pipeline_id = Some("pipeline-web-rerun".into());
    match f.store.join_arrive(&rerun).await.unwrap() {
        JoinOutcome::Closed { closed_now, .. } => assert!(!closed_now),
        other => panic!("{other:?}"),
    }
    let state = f.store.join_state(&key).await.unwrap().unwrap();
    assert_eq!(state.status, JoinStatus::Closed);
    assert_eq!(state.finished_at, Some(start_time()));
}

/// After the window a correlation value (e.g. a branch) starts a fresh generation.
pub async fn a_join_window_expiry_opens_a_new_generation(adapter: &dyn StoreUnderTest) {
    let f = adapter.fixture().await;
    let key = ClaimKey::new(ClaimKind::Join, &["e2e", "main"]);
    f.store
        .join_arrive(&arrival(&key, "api", true))
        .await
        .unwrap();
    f.clock.advance(TimeDelta::hours(2));
    match f
        .store
        .join_arrive(&arrival(&key, "web", true))
        .await
        .unwrap()
    {
        JoinOutcome::Waiting { state, .. } => {
            assert_eq!(state.generation, 2);
            assert_eq!(state.missing(), BTreeSet::from(["api".to_owned()]));
        }
        other => panic!("yesterday's api must not complete today's join: {other:?}"),
    }
    let error = f
        .store
        .join_arrive(&arrival(&key, "mobile", true))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Invalid { .. }), "{error:?}");
}

// ---------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------

/// Records past the retention are invisible to every read and are purged; claims past
/// it no longer block a new request under the same key.
pub async fn retention_hides_and_purges_expired_items(adapter: &dyn StoreUnderTest) {
    let history = HistorySettings {
        retention: "2d".into(),
        ..HistorySettings::default()
    };
    let f = adapter
        .fixture_with(StoreSettings::from_history(&history))
        .await;
    let mut old = record(&f, SourceKind::Schedule, "nightly", "gh/acme/api");
    old.pipeline = Some(PipelineRef {
        id: "p-old".into(),
        number: Some(1),
        url: None,
    });
    old.status = TriggerStatus::Failed;
    old.retry_at = Some(start_time());
    let old = f.store.create_record(old).await.unwrap();
    assert_eq!(old.expires_at, start_time() + TimeDelta::days(2));
    let key = key("retention");
    let owner = won(&f
        .store
        .claim(&key, &fingerprint("old"), LEASE)
        .await
        .unwrap());
    f.store.complete(&key, owner, &result("old")).await.unwrap();

    f.clock.advance(TimeDelta::days(2) + TimeDelta::seconds(1));
    let fresh = f
        .store
        .create_record(record(&f, SourceKind::Schedule, "nightly", "gh/acme/api"))
        .await
        .unwrap();

    assert!(f.store.get_record(old.id).await.unwrap().is_none());
    assert!(f.store.find_by_pipeline("p-old").await.unwrap().is_none());
    assert!(f.store.pipeline_recorded("p-old").await.unwrap().is_none());
    assert!(f.store.due_for_retry(10).await.unwrap().is_empty());
    let source = TriggerSource::new(SourceKind::Schedule, "nightly");
    let listed = f
        .store
        .list_by_source(&source, PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(ids(&listed.items), [fresh.id]);
    let listed = f.store.list_recent(PageRequest::first(10)).await.unwrap();
    assert_eq!(ids(&listed.items), [fresh.id]);
    let listed = f
        .store
        .list_by_origin(old.origin, None, PageRequest::first(10))
        .await
        .unwrap();
    assert!(listed.items.is_empty());
    let error = f.store.update_record(old.clone()).await.unwrap_err();
    assert!(
        matches!(error, StoreError::RecordNotFound { .. }),
        "{error:?}"
    );
    assert!(f.store.claim_snapshot(&key).await.unwrap().is_none());
    // The key is free again, even for a different request.
    assert!(matches!(
        f.store
            .claim(&key, &fingerprint("new"), LEASE)
            .await
            .unwrap(),
        ClaimOutcome::Won(_)
    ));

    let purged = f.store.purge_expired(1_000).await.unwrap();
    assert!(purged >= 2, "purged {purged}");
    assert_eq!(f.store.purge_expired(1_000).await.unwrap(), 0);
    assert!(f.store.get_record(fresh.id).await.unwrap().is_some());
    // The pipeline id of a purged record may be bound again.
    let mut reuse = record(&f, SourceKind::Schedule, "nightly", "gh/acme/api");
    reuse.pipeline = Some(PipelineRef {
        id: "p-old".into(),
        number: None,
        url: None,
    });
    let reuse = f.store.create_record(reuse).await.unwrap();
    assert_eq!(
        f.store.pipeline_recorded("p-old").await.unwrap(),
        Some(reuse.id)
    );
}

fn ids(records: &[TriggerRecord]) -> Vec<TriggerId> {
    records.iter().map(|r| r.id).collect()
}

/// Reads every page of a listing, asserting each page respects the limit.
async fn all_pages<F, Fut>(limit: u32, mut list: F) -> Vec<TriggerId>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: std::future::Future<Output = Result<shared::store::Page<TriggerRecord>, StoreError>>,
{
    let mut seen = Vec::new();
    let mut request = PageRequest::first(limit);
    for _ in 0..100 {
        let page = list(request.clone()).await.unwrap();
        assert!(page.items.len() <= limit as usize);
        seen.extend(ids(&page.items));
        match page.next {
            Some(cursor) => request = PageRequest::after(limit, cursor),
            None => return seen,
        }
    }
    panic!("pagination did not end");
}

/// Listings by source, project and everything are newest first, page by cursor without
/// gaps or repeats (across a month boundary), and refuse a cursor from another listing.
pub async fn listings_are_newest_first_and_paged(adapter: &dyn StoreUnderTest) {
    let f = adapter.fixture().await;
    let mut nightly = Vec::new();
    let mut all = Vec::new();
    for i in 0..7 {
        let project = if i % 2 == 0 {
            "gh/acme/api"
        } else {
            "github/acme/api"
        };
        let created = f
            .store
            .create_record(record(&f, SourceKind::Schedule, "nightly", project))
            .await
            .unwrap();
        nightly.push(created.id);
        all.push(created.id);
        f.clock.advance(TimeDelta::minutes(3));
    }
    for _ in 0..2 {
        let created = f
            .store
            .create_record(record(
                &f,
                SourceKind::Http,
                "deploy-staging",
                "gh/acme/web",
            ))
            .await
            .unwrap();
        all.push(created.id);
        f.clock.advance(TimeDelta::minutes(3));
    }
    nightly.reverse();
    all.reverse();
    let store = f.store.clone();
    let source = TriggerSource::new(SourceKind::Schedule, "nightly");
    let by_source = all_pages(3, |page| {
        let (store, source) = (store.clone(), source.clone());
        async move { store.list_by_source(&source, page).await }
    })
    .await;
    assert_eq!(by_source, nightly);
    let by_project = all_pages(2, |page| {
        let store = store.clone();
        async move { store.list_by_project("gh/acme/api", page).await }
    })
    .await;
    assert_eq!(
        by_project, nightly,
        "gh/ and github/ spellings are one project"
    );
    let recent = all_pages(4, |page| {
        let store = store.clone();
        async move { store.list_recent(page).await }
    })
    .await;
    assert_eq!(recent, all, "the listing spans November and December");
    let first_page = f
        .store
        .list_by_source(&source, PageRequest::first(3))
        .await
        .unwrap();
    let foreign = first_page.next.unwrap();
    let error = f
        .store
        .list_by_project("gh/acme/api", PageRequest::after(3, foreign))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::InvalidCursor), "{error:?}");
    let error = f
        .store
        .list_recent(PageRequest::after(
            3,
            shared::store::Cursor::from_token("garbage"),
        ))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::InvalidCursor), "{error:?}");
    let empty = f
        .store
        .list_by_source(
            &TriggerSource::new(SourceKind::Chain, "none"),
            PageRequest::first(5),
        )
        .await
        .unwrap();
    assert!(empty.items.is_empty() && empty.next.is_none());
}

/// Origin (optionally per project) and pipeline id find the right records; a pipeline id
/// is bound to exactly one record.
pub async fn origin_and_pipeline_lookups(adapter: &dyn StoreUnderTest) {
    let f = adapter.fixture().await;
    let mut root = record(&f, SourceKind::Schedule, "nightly", "gh/acme/api");
    root.status = TriggerStatus::Triggered;
    root.pipeline = Some(PipelineRef {
        id: "p-root".into(),
        number: Some(41),
        url: Some("https://app.circleci.com/pipelines/gh/acme/api/41".into()),
    });
    let root = f.store.create_record(root).await.unwrap();
    assert_eq!(root.origin, root.id);
    f.clock.advance(TimeDelta::seconds(1));
    let deploy = f
        .store
        .create_record(
            record(&f, SourceKind::Chain, "deploy", "gh/acme/deploy").with_origin(root.id),
        )
        .await
        .unwrap();
    f.clock.advance(TimeDelta::seconds(1));
    let web = f
        .store
        .create_record(record(&f, SourceKind::Chain, "web", "gh/acme/web").with_origin(root.id))
        .await
        .unwrap();
    let other = f
        .store
        .create_record(record(&f, SourceKind::Chain, "deploy", "gh/acme/deploy"))
        .await
        .unwrap();

    let on_deploy = f
        .store
        .list_by_origin(root.id, Some("github/acme/deploy"), PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(ids(&on_deploy.items), [deploy.id]);
    let everything = f
        .store
        .list_by_origin(root.id, None, PageRequest::first(10))
        .await
        .unwrap();
    let found: HashSet<TriggerId> = ids(&everything.items).into_iter().collect();
    assert_eq!(found, HashSet::from([root.id, deploy.id, web.id]));
    assert!(!found.contains(&other.id));

    let by_pipeline = f.store.find_by_pipeline("p-root").await.unwrap().unwrap();
    assert_eq!(by_pipeline.id, root.id);
    assert_eq!(
        by_pipeline.pipeline.as_ref().and_then(|p| p.number),
        Some(41)
    );
    assert_eq!(
        f.store.pipeline_recorded("p-root").await.unwrap(),
        Some(root.id)
    );
    assert!(
        f.store
            .pipeline_recorded("p-unknown")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        f.store
            .find_by_pipeline("p-unknown")
            .await
            .unwrap()
            .is_none()
    );

    let mut thief = f.store.get_record(web.id).await.unwrap().unwrap();
    thief.pipeline = Some(PipelineRef {
        id: "p-root".into(),
        number: None,
        url: None,
    });
    let error = f.store.update_record(thief).await.unwrap_err();
    match error {
        StoreError::PipelineAlreadyRecorded {
            pipeline_id,
            trigger_id,
        } => {
            assert_eq!(pipeline_id, "p-root");
            assert_eq!(trigger_id, root.id);
        }
        other => panic!("{other:?}"),
    }
    // The refused write changed nothing.
    let unchanged = f.store.get_record(web.id).await.unwrap().unwrap();
    assert!(unchanged.pipeline.is_none());
    assert_eq!(unchanged.version, 1);
    // Binding a pipeline later (the usual flow: create `received`, then record the pipeline).
    let mut later = unchanged;
    later.pipeline = Some(PipelineRef {
        id: "p-web".into(),
        number: Some(9),
        url: None,
    });
    later.status = TriggerStatus::Triggered;
    f.store.update_record(later).await.unwrap();
    assert_eq!(
        f.store.find_by_pipeline("p-web").await.unwrap().unwrap().id,
        web.id
    );
}

/// Updates are conditional on the version read; `modify_record` retries lost races.
pub async fn record_updates_are_versioned(adapter: &dyn StoreUnderTest) {
    let f = adapter.fixture().await;
    let created = f
        .store
        .create_record(record(
            &f,
            SourceKind::Http,
            "deploy-staging",
            "gh/acme/api",
        ))
        .await
        .unwrap();
    assert_eq!(created.version, 1);
    // Creating exactly the stored record again is a repeat (an SDK retry whose first answer
    // was lost looks like this); creating something else under the same id is refused.
    let mut again = created.clone();
    again.version = 0;
    assert_eq!(f.store.create_record(again.clone()).await.unwrap(), created);
    again.status = TriggerStatus::Skipped;
    let error = f.store.create_record(again).await.unwrap_err();
    assert!(
        matches!(error, StoreError::RecordExists { .. }),
        "{error:?}"
    );

    let mut first = created.clone();
    first.status = TriggerStatus::Triggered;
    f.clock.advance(TimeDelta::seconds(5));
    let first = f.store.update_record(first).await.unwrap();
    assert_eq!(first.version, 2);
    assert_eq!(first.updated_at, start_time() + TimeDelta::seconds(5));
    // Repeating the very same update is harmless; another update of the old version is stale.
    let mut repeat = created.clone();
    repeat.status = TriggerStatus::Triggered;
    assert_eq!(f.store.update_record(repeat).await.unwrap(), first);
    let mut stale = created.clone();
    stale.status = TriggerStatus::Failed;
    let error = f.store.update_record(stale).await.unwrap_err();
    assert!(matches!(error, StoreError::StaleRecord { .. }), "{error:?}");
    assert!(!error.is_retryable());
    let stored = f.store.get_record(created.id).await.unwrap().unwrap();
    assert_eq!(stored.status, TriggerStatus::Triggered);
    assert_eq!(stored, first);

    let mut ghost = record(&f, SourceKind::Http, "x", "gh/acme/api");
    ghost.version = 1;
    let error = f.store.update_record(ghost).await.unwrap_err();
    assert!(
        matches!(error, StoreError::RecordNotFound { .. }),
        "{error:?}"
    );

    // Ten closed-loop updates racing on one record: none is lost.
    let updates = join_all((0..10).map(|i| {
        let store = f.store.clone();
        let id = created.id;
        async move {
            modify_record(store.as_ref(), id, |record| {
                record.upsert_workflow(WorkflowOutcome {
                    id: format!("wf-{i}"),
                    name: format!("workflow-{i}"),
                    status: "success".into(),
                    stopped_at: None,
                });
            })
            .await
            .unwrap()
        }
    }))
    .await;
    assert_eq!(updates.len(), 10);
    let stored = f.store.get_record(created.id).await.unwrap().unwrap();
    assert_eq!(stored.workflows.len(), 10, "{:?}", stored.workflows);
    assert_eq!(stored.version, 12);
}

/// The sweep sees schedule and chain records whose retry time has come, oldest first.
pub async fn the_sweep_finds_due_schedule_and_chain_records(adapter: &dyn StoreUnderTest) {
    let f = adapter.fixture().await;
    let now = start_time();
    let make = |kind: SourceKind, name: &str, retry_in: Option<i64>| {
        let mut r = record(&f, kind, name, "gh/acme/api");
        r.status = TriggerStatus::Failed;
        r.retry_at = retry_in.map(|minutes| now + TimeDelta::minutes(minutes));
        r
    };
    let later = make(SourceKind::Schedule, "nightly", Some(5));
    let due = make(SourceKind::Chain, "deploy", Some(-1));
    let http = make(SourceKind::Http, "deploy-staging", Some(-10));
    let never = make(SourceKind::Schedule, "hourly", None);
    for r in [&later, &due, &http, &never] {
        f.store.create_record(r.clone()).await.unwrap();
    }
    assert_eq!(ids(&f.store.due_for_retry(10).await.unwrap()), [due.id]);
    f.clock.advance(TimeDelta::minutes(10));
    // The limit first: a record handed out while due for over 5 minutes goes to the back
    // of its DynamoDB shard's line (its entry moves to now, so that it cannot hold the
    // sweep's cursor), so after the next call the oldest of a shard is no longer first.
    assert_eq!(ids(&f.store.due_for_retry(1).await.unwrap()), [due.id]);
    assert_eq!(
        ids(&f.store.due_for_retry(10).await.unwrap()),
        [due.id, later.id],
        "oldest due first; HTTP records are never swept"
    );
    let mut done = f.store.get_record(due.id).await.unwrap().unwrap();
    done.status = TriggerStatus::Triggered;
    done.retry_at = None;
    done.attempts = 2;
    f.store.update_record(done).await.unwrap();
    assert_eq!(ids(&f.store.due_for_retry(10).await.unwrap()), [later.id]);
}

/// Parameters whose names the history settings mark are redacted before they are stored.
pub async fn secret_parameters_are_redacted(adapter: &dyn StoreUnderTest) {
    let history = HistorySettings {
        redact_parameters: vec!["*token*".into(), "password".into()],
        ..HistorySettings::default()
    };
    let f = adapter
        .fixture_with(StoreSettings::from_history(&history))
        .await;
    let mut r = record(&f, SourceKind::Http, "release", "gh/acme/api");
    r.parameters = BTreeMap::from([
        ("deploy_token".to_owned(), serde_json::json!("s3cr3t-value")),
        ("PASSWORD".to_owned(), serde_json::json!("hunter2")),
        ("environment".to_owned(), serde_json::json!("staging")),
    ]);
    let created = f.store.create_record(r).await.unwrap();
    let stored = f.store.get_record(created.id).await.unwrap().unwrap();
    assert_eq!(stored.parameters["deploy_token"], "[redacted]");
    assert_eq!(stored.parameters["PASSWORD"], "[redacted]");
    assert_eq!(stored.parameters["environment"], "staging");
    let mut updated = stored;
    updated
        .parameters
        .insert("api_token".into(), serde_json::json!("another-secret"));
    f.store.update_record(updated).await.unwrap();
    let stored = f.store.get_record(created.id).await.unwrap().unwrap();
    assert_eq!(stored.parameters["api_token"], "[redacted]");
    let text = serde_json::to_string(&stored).unwrap();
    assert!(
        !text.contains("s3cr3t") && !text.contains("hunter2") && !text.contains("another-secret")
    );
}

// ---------------------------------------------------------------------------------------
// Schedule state, pause flags, invalid requests
// ---------------------------------------------------------------------------------------

fn scheduler_state(digest: &str, through: DateTime<Utc>, behind: bool) -> SchedulerState {
    SchedulerState {
        digest: digest.to_owned(),
        evaluated_through: through,
        next_due: Some(through + TimeDelta::hours(1)),
        behind,
        updated_at: through,
    }
}

/// The scheduler's state item never moves backwards: a save for an instant at or before
/// the stored one writes nothing (a late tick after a newer one).
pub async fn scheduler_state_only_moves_forward(adapter: &dyn StoreUnderTest) {
    let f = adapter.fixture().await;
    assert!(f.store.scheduler_state().await.unwrap().is_none());
    assert!(f.store.schedule_definitions().await.unwrap().is_none());
    let t1 = start_time();
    let first = scheduler_state("digest-1", t1, false);
    assert!(f.store.save_scheduler_state(&first, None).await.unwrap());
    assert!(!f.store.save_scheduler_state(&first, None).await.unwrap());
    let older = scheduler_state("digest-0", t1 - TimeDelta::hours(1), true);
    assert!(!f.store.save_scheduler_state(&older, None).await.unwrap());
    let stored = f.store.scheduler_state().await.unwrap().unwrap();
    assert_eq!(
        (
            stored.digest.as_str(),
            stored.evaluated_through,
            stored.next_due,
            stored.behind
        ),
        ("digest-1", t1, Some(t1 + TimeDelta::hours(1)), false)
    );
    let t2 = t1 + TimeDelta::minutes(1);
    let never = SchedulerState {
        next_due: None,
        ..scheduler_state("digest-2", t2, true)
    };
    assert!(f.store.save_scheduler_state(&never, None).await.unwrap());
    let stored = f.store.scheduler_state().await.unwrap().unwrap();
    assert_eq!(
        (
            stored.digest.as_str(),
            stored.evaluated_through,
            stored.next_due,
            stored.behind
        ),
        ("digest-2", t2, None, true)
    );
}

/// The per-schedule definitions are written together with the state (or not at all), read
/// back exactly (instants to the millisecond), and hold a thousand schedules in one item.
pub async fn schedule_definitions_are_saved_with_their_state(adapter: &dyn StoreUnderTest) {
    let f = adapter.fixture().await;
    let t1 = start_time();
    let lagging = t1 - TimeDelta::minutes(5) + TimeDelta::milliseconds(7);
    let mut entries = BTreeMap::new();
    for i in 0..1000 {
        entries.insert(
            format!("schedule-{i:04}"),
            ScheduleEntry {
                fingerprint: format!("{} * * * * Europe/Berlin", i % 60),
                evaluated_through: (i == 7).then_some(lagging),
            },
        );
    }
    let definitions = ScheduleDefinitions::new(entries);
    assert!(definitions.has_own_instants());
    let state = scheduler_state(&definitions.digest, t1, true);
    assert!(
        f.store
            .save_scheduler_state(&state, Some(&definitions))
            .await
            .unwrap()
    );
    let stored = f.store.schedule_definitions().await.unwrap().unwrap();
    assert_eq!(stored, definitions);
    assert_eq!(
        stored.schedules["schedule-0007"].evaluated_through,
        Some(lagging)
    );
    assert_eq!(
        f.store.scheduler_state().await.unwrap().unwrap().digest,
        definitions.digest
    );

    // A refused save (not after the stored instant) writes neither item.
    let other = ScheduleDefinitions::new(BTreeMap::from([(
        "only".to_owned(),
        ScheduleEntry {
            fingerprint: "0 2 * * * UTC".to_owned(),
            evaluated_through: None,
        },
    )]));
    let late = scheduler_state(&other.digest, t1, false);
    assert!(
        !f.store
            .save_scheduler_state(&late, Some(&other))
            .await
            .unwrap()
    );
    assert_eq!(
        f.store.schedule_definitions().await.unwrap().unwrap(),
        definitions
    );

    // A later save without definitions keeps the stored ones; with them, replaces them.
    let t2 = t1 + TimeDelta::minutes(1);
    assert!(
        f.store
            .save_scheduler_state(&scheduler_state(&definitions.digest, t2, true), None)
            .await
            .unwrap()
    );
    assert_eq!(
        f.store.schedule_definitions().await.unwrap().unwrap(),
        definitions
    );
    let t3 = t2 + TimeDelta::minutes(1);
    assert!(
        f.store
            .save_scheduler_state(&scheduler_state(&other.digest, t3, false), Some(&other))
            .await
            .unwrap()
    );
    assert_eq!(
        f.store.schedule_definitions().await.unwrap().unwrap(),
        other
    );
    assert_ne!(other.digest, definitions.digest);
}

/// A client's rate window admits `limit` requests, each one conditional write, then
/// refuses until the next window; clients count apart; concurrent requests never overrun.
pub async fn rate_tickets_are_counted_per_window(adapter: &dyn StoreUnderTest) {
    let f = adapter.fixture().await;
    let window = Duration::from_secs(60);
    let ticket = |client: &str| RateTicket::at(client, f.clock.now(), window, 3);
    for _ in 0..3 {
        assert!(f.store.take_rate_ticket(&ticket("bot")).await.unwrap());
    }
    assert!(!f.store.take_rate_ticket(&ticket("bot")).await.unwrap());
    assert!(f.store.take_rate_ticket(&ticket("cms")).await.unwrap());
    let current = ticket("bot");
    assert_eq!(
        current.window_ends_at - current.window_start,
        TimeDelta::seconds(60)
    );
    f.clock.set(current.window_ends_at);
    assert!(f.store.take_rate_ticket(&ticket("bot")).await.unwrap());

    let racing: Vec<_> = (0..10)
        .map(|_| {
            let store = f.store.clone();
            let ticket = RateTicket::at("racer", f.clock.now(), window, 4);
            tokio::spawn(async move { store.take_rate_ticket(&ticket).await.unwrap() })
        })
        .collect();
    let mut admitted = 0;
    for task in racing {
        admitted += usize::from(task.await.unwrap());
    }
    assert_eq!(admitted, 4);
}

pub async fn pause_flags_are_set_listed_and_cleared(adapter: &dyn StoreUnderTest) {
    let f = adapter.fixture().await;
    let nightly = PauseScope::Schedule("nightly".into());
    assert!(f.store.pause_flag(&nightly).await.unwrap().is_none());
    let flag = f
        .store
        .pause(&nightly, Some("freeze"), Some("ops"))
        .await
        .unwrap();
    assert_eq!(flag.paused_at, start_time());
    f.store.pause(&PauseScope::All, None, None).await.unwrap();
    let stored = f.store.pause_flag(&nightly).await.unwrap().unwrap();
    assert_eq!(stored, flag);
    let scopes: Vec<String> = f
        .store
        .pause_flags()
        .await
        .unwrap()
        .into_iter()
        .map(|flag| flag.scope.to_string())
        .collect();
    assert_eq!(scopes, ["all", "schedule:nightly"]);
    assert!(f.store.resume(&nightly).await.unwrap());
    assert!(!f.store.resume(&nightly).await.unwrap());
    assert!(f.store.pause_flag(&nightly).await.unwrap().is_none());
}

pub async fn invalid_requests_are_refused_without_retry(adapter: &dyn StoreUnderTest) {
    let f = adapter.fixture().await;
    let key = key("invalid");
    for lease in [Duration::ZERO, Duration::from_secs(3 * 86_400)] {
        let error = f
            .store
            .claim(&key, &fingerprint("x"), lease)
            .await
            .unwrap_err();
        assert!(matches!(error, StoreError::Invalid { .. }), "{error:?}");
        assert!(!error.is_retryable());
    }
    let mut stored_twice = record(&f, SourceKind::Schedule, "nightly", "gh/acme/api");
    stored_twice.version = 3;
    let error = f.store.create_record(stored_twice).await.unwrap_err();
    assert!(matches!(error, StoreError::Invalid { .. }), "{error:?}");
    let nameless = record(&f, SourceKind::Schedule, " ", "gh/acme/api");
    let error = f.store.create_record(nameless).await.unwrap_err();
    assert!(matches!(error, StoreError::Invalid { .. }), "{error:?}");
    // Nothing was written by the refused claim.
    assert!(f.store.claim_snapshot(&key).await.unwrap().is_none());
}

/// A loopback HTTP proxy that forwards one request at a time to moto_server.
///
/// DynamoDB applies each conditional write atomically per item; moto does not: its
/// `put_item`/`update_item` read the current item, evaluate the condition and then store,
/// with nothing stopping another server thread in between. Under load two racing
/// conditional puts can both "succeed" there, which real DynamoDB never allows. Forwarding
/// one request at a time restores the per-request atomicity the adapter relies on, while
/// the store still issues its requests concurrently (50 claims are in flight at once).
pub mod serial_proxy {
    use std::sync::Arc;

    use axum::body::to_bytes;
    use axum::extract::{Request, State};
    use axum::response::Response;
    use tokio::sync::Mutex;

    pub struct SerialProxy {
        pub url: String,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for SerialProxy {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    struct Upstream {
        base: String,
        client: reqwest::Client,
        turn: Mutex<()>,
    }

    pub async fn start(upstream: String) -> SerialProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Upstream {
            base: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::new(),
            turn: Mutex::new(()),
        });
        let app = axum::Router::new().fallback(forward).with_state(state);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        SerialProxy { url, task }
    }

    async fn forward(State(upstream): State<Arc<Upstream>>, request: Request) -> Response {
        let (parts, body) = request.into_parts();
        let body = to_bytes(body, usize::MAX).await.unwrap();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let url = format!("{}{path}", upstream.base);
        let _turn = upstream.turn.lock().await;
        crate::http_forward::forward(&upstream.client, parts.method, url, &parts.headers, body)
            .await
    }
}

// ---------------------------------------------------------------------------------------
// The trigger ledger: claim and record together
// ---------------------------------------------------------------------------------------

/// The record a claim key stands for, as the engine builds it.
fn keyed_record(fixture: &Fixture, key: &ClaimKey) -> TriggerRecord {
    let mut record = record(fixture, SourceKind::Schedule, "nightly", "gh/acme/api");
    record.id = key.record_id();
    record.origin = record.id;
    record.claim_key = Some(key.clone());
    record
}

/// Opens `key`'s trigger with its record (fingerprint of `request`).
async fn open(
    f: &Fixture,
    key: &ClaimKey,
    request: &str,
    sending: bool,
) -> shared::store::OpenedTrigger {
    f.store
        .open_trigger(
            key,
            &fingerprint(request),
            LEASE,
            keyed_record(f, key),
            sending,
        )
        .await
        .unwrap()
}

/// `open_trigger` claims and creates the record at once; `settle_trigger` writes the
/// decision, binds the new pipeline and completes the claim; a replay then finds both.
pub async fn a_trigger_is_opened_and_settled_with_its_claim(adapter: &dyn StoreUnderTest) {
    let f = adapter.fixture().await;
    let key = key("ledger");
    let opened = open(&f, &key, "a", true).await;
    let owner = won(&opened.outcome);
    let record = opened.record.expect("the new record");
    assert_eq!((record.id, record.version), (key.record_id(), 1));
    assert_eq!(record.status, TriggerStatus::Received);
    assert_eq!(
        f.store.get_record(record.id).await.unwrap(),
        Some(record.clone())
    );
    let snapshot = f.store.claim_snapshot(&key).await.unwrap().unwrap();
    let expected_state = if opened.marked_sending {
        ClaimState::Sending
    } else {
        ClaimState::InProgress
    };
    assert_eq!(snapshot.state, expected_state);
    // A duplicate while the holder works: in progress, nothing written.
    let duplicate = open(&f, &key, "a", true).await;
    assert!(
        matches!(duplicate.outcome, ClaimOutcome::InProgress { .. }),
        "{:?}",
        duplicate.outcome
    );

    let mut decided = record.clone();
    decided.status = TriggerStatus::Triggered;
    decided.pipeline = Some(PipelineRef {
        id: "11111111-2222-4333-8444-555555555555".into(),
        number: Some(7),
        url: None,
    });
    let saved = f
        .store
        .settle_trigger(&key, owner, LEASE, decided)
        .await
        .unwrap();
    assert_eq!(saved.version, 2);
    assert_eq!(
        f.store
            .pipeline_recorded("11111111-2222-4333-8444-555555555555")
            .await
            .unwrap(),
        Some(record.id)
    );
    let snapshot = f.store.claim_snapshot(&key).await.unwrap().unwrap();
    assert_eq!(snapshot.state, ClaimState::Completed);
    let replay = open(&f, &key, "a", true).await;
    match replay.outcome {
        ClaimOutcome::Completed { result, .. } => assert_eq!(result.trigger_id, Some(record.id)),
        other => panic!("expected the completed claim, got {other:?}"),
    }
    if let Some(found) = replay.record {
        assert_eq!(found, saved, "a replay's record is the decided one");
    }
    assert_eq!(f.store.get_record(record.id).await.unwrap(), Some(saved));
    let conflict = open(&f, &key, "b", true).await;
    assert_eq!(conflict.outcome, ClaimOutcome::Conflict);
}

/// A holder whose lease ran out before it sent anything is taken over: the new holder
/// finds the record the first one created, and the first holder's settle is refused
/// without writing.
pub async fn a_taken_over_holder_cannot_settle(adapter: &dyn StoreUnderTest) {
    let f = adapter.fixture().await;
    let key = key("ledger-takeover");
    let first = open(&f, &key, "a", false).await;
    let first_owner = won(&first.outcome);
    let created = first.record.unwrap();
    f.clock.advance(TimeDelta::seconds(61));
    let second = open(&f, &key, "a", false).await;
    let second_owner = match &second.outcome {
        ClaimOutcome::Won(grant) => {
            assert!(grant.taken_over && grant.attempt == 2, "{grant:?}");
            grant.owner
        }
        other => panic!("expected a takeover, got {other:?}"),
    };
    assert_eq!(
        second.record.as_ref(),
        Some(&created),
        "the first holder's record"
    );
    let mut late = created.clone();
    late.status = TriggerStatus::Failed;
    let refused = f
        .store
        .settle_trigger(&key, first_owner, LEASE, late)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::LostClaim { .. }),
        "{refused:?}"
    );
    assert_eq!(
        f.store.get_record(created.id).await.unwrap(),
        Some(created.clone())
    );
    let mut decided = created.clone();
    decided.status = TriggerStatus::Skipped;
    let saved = f
        .store
        .settle_trigger(&key, second_owner, LEASE, decided)
        .await
        .unwrap();
    assert_eq!(saved.status, TriggerStatus::Skipped);
}

/// A record changed since the holder read it (the closed loop) is not overwritten: the
/// settle is refused as stale and the claim stays open for a re-read.
pub async fn a_settle_on_a_changed_record_is_stale(adapter: &dyn StoreUnderTest) {
    let f = adapter.fixture().await;
    let key = key("ledger-stale");
    let opened = open(&f, &key, "a", false).await;
    let owner = won(&opened.outcome);
    let read = opened.record.unwrap();
    let mut other = read.clone();
    other.reason = Some("someone else was here".into());
    f.store.update_record(other).await.unwrap();
    let mut ours = read.clone();
    ours.status = TriggerStatus::Triggered;
    let error = f
        .store
        .settle_trigger(&key, owner, LEASE, ours)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::StaleRecord { .. }), "{error:?}");
    let snapshot = f.store.claim_snapshot(&key).await.unwrap().unwrap();
    assert_ne!(snapshot.state, ClaimState::Completed);
    let stored = f.store.get_record(read.id).await.unwrap().unwrap();
    assert_eq!(stored.reason.as_deref(), Some("someone else was here"));
}

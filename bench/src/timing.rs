//! Timing decorators for the two ports whose time is not ours: the store (a wrapper
//! implementing the store traits) and the CircleCI client (an interceptor of
//! `shared::circleci::intercept`). Each adds the time spent inside every call to a
//! [`Meter`], so "our code" = end to end − store time − CircleCI time.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use shared::circleci::intercept::{Call, Forward, Intercepted, Interceptor};
use shared::circleci::{CircleCi, CircleCiError};
use shared::store::{
    ClaimGrant, ClaimKey, ClaimOutcome, ClaimResult, ClaimSnapshot, ClaimStore, Fingerprint,
    FlagStore, HistoryStore, JoinArrival, JoinOutcome, JoinState, JoinStore, OpenedTrigger,
    OwnerToken, Page, PageRequest, PauseFlag, PauseScope, RateTicket, ScheduleDefinitions,
    ScheduleStateStore, SchedulerState, SharedStore, StoreResult, TriggerId, TriggerLedger,
    TriggerRecord, TriggerSource,
};

/// Calls made and time spent inside them (summed; the measured paths call one at a time).
/// Also when the first call began and the last one ended (the span a burst's CircleCI
/// calls took).
#[derive(Debug, Default)]
pub struct Meter {
    calls: AtomicU64,
    nanos: AtomicU64,
    span: Mutex<(Option<Instant>, Option<Instant>)>,
}

impl Meter {
    async fn time<T>(&self, call: impl Future<Output = T>) -> T {
        let began = Instant::now();
        let out = call.await;
        let ended = Instant::now();
        let spent = u64::try_from(ended.duration_since(began).as_nanos()).unwrap_or(u64::MAX);
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.nanos.fetch_add(spent, Ordering::Relaxed);
        let mut span = self.span.lock().unwrap_or_else(PoisonError::into_inner);
        span.0 = Some(span.0.map_or(began, |first| first.min(began)));
        span.1 = Some(span.1.map_or(ended, |last| last.max(ended)));
        out
    }

    /// When the first call began and the last one ended.
    pub fn span(&self) -> Option<(Instant, Instant)> {
        let span = self.span.lock().unwrap_or_else(PoisonError::into_inner);
        span.0.zip(span.1)
    }

    /// (calls, time) so far.
    pub fn read(&self) -> (u64, Duration) {
        (
            self.calls.load(Ordering::Relaxed),
            Duration::from_nanos(self.nanos.load(Ordering::Relaxed)),
        )
    }
}

/// A store that times every call to the store it wraps.
pub struct TimedStore {
    inner: SharedStore,
    meter: Arc<Meter>,
}

impl TimedStore {
    pub fn wrap(inner: SharedStore, meter: Arc<Meter>) -> SharedStore {
        Arc::new(Self { inner, meter })
    }
}

#[async_trait]
impl ClaimStore for TimedStore {
    async fn claim(
        &self,
        key: &ClaimKey,
        fingerprint: &Fingerprint,
        lease: Duration,
    ) -> StoreResult<ClaimOutcome> {
        self.meter
            .time(self.inner.claim(key, fingerprint, lease))
            .await
    }
    async fn renew(
        &self,
        key: &ClaimKey,
        owner: OwnerToken,
        lease: Duration,
    ) -> StoreResult<DateTime<Utc>> {
        self.meter.time(self.inner.renew(key, owner, lease)).await
    }
    async fn mark_sending(&self, key: &ClaimKey, owner: OwnerToken) -> StoreResult<()> {
        self.meter.time(self.inner.mark_sending(key, owner)).await
    }
    async fn complete(
        &self,
        key: &ClaimKey,
        owner: OwnerToken,
        result: &ClaimResult,
    ) -> StoreResult<()> {
        self.meter
            .time(self.inner.complete(key, owner, result))
            .await
    }
    async fn release(&self, key: &ClaimKey, owner: OwnerToken) -> StoreResult<()> {
        self.meter.time(self.inner.release(key, owner)).await
    }
    async fn adopt_ambiguous(&self, key: &ClaimKey, lease: Duration) -> StoreResult<ClaimGrant> {
        self.meter
            .time(self.inner.adopt_ambiguous(key, lease))
            .await
    }
    async fn claim_snapshot(&self, key: &ClaimKey) -> StoreResult<Option<ClaimSnapshot>> {
        self.meter.time(self.inner.claim_snapshot(key)).await
    }
}

#[async_trait]
impl HistoryStore for TimedStore {
    async fn create_record(&self, record: TriggerRecord) -> StoreResult<TriggerRecord> {
        self.meter.time(self.inner.create_record(record)).await
    }
    async fn update_record(&self, record: TriggerRecord) -> StoreResult<TriggerRecord> {
        self.meter.time(self.inner.update_record(record)).await
    }
    async fn get_record(&self, id: TriggerId) -> StoreResult<Option<TriggerRecord>> {
        self.meter.time(self.inner.get_record(id)).await
    }
    async fn list_by_source(
        &self,
        source: &TriggerSource,
        page: PageRequest,
    ) -> StoreResult<Page<TriggerRecord>> {
        self.meter
            .time(self.inner.list_by_source(source, page))
            .await
    }
    async fn list_by_project(
        &self,
        project: &str,
        page: PageRequest,
    ) -> StoreResult<Page<TriggerRecord>> {
        self.meter
            .time(self.inner.list_by_project(project, page))
            .await
    }
    async fn list_by_origin(
        &self,
        origin: TriggerId,
        project: Option<&str>,
        page: PageRequest,
    ) -> StoreResult<Page<TriggerRecord>> {
        self.meter
            .time(self.inner.list_by_origin(origin, project, page))
            .await
    }
    async fn list_recent(&self, page: PageRequest) -> StoreResult<Page<TriggerRecord>> {
        self.meter.time(self.inner.list_recent(page)).await
    }
    async fn find_by_pipeline(&self, pipeline_id: &str) -> StoreResult<Option<TriggerRecord>> {
        self.meter
            .time(self.inner.find_by_pipeline(pipeline_id))
            .await
    }
    async fn pipeline_recorded(&self, pipeline_id: &str) -> StoreResult<Option<TriggerId>> {
        self.meter
            .time(self.inner.pipeline_recorded(pipeline_id))
            .await
    }
    async fn due_for_retry(&self, limit: u32) -> StoreResult<Vec<TriggerRecord>> {
        self.meter.time(self.inner.due_for_retry(limit)).await
    }
    async fn purge_expired(&self, limit: u32) -> StoreResult<u64> {
        self.meter.time(self.inner.purge_expired(limit)).await
    }
}

#[async_trait]
impl ScheduleStateStore for TimedStore {
    async fn scheduler_state(&self) -> StoreResult<Option<SchedulerState>> {
        self.meter.time(self.inner.scheduler_state()).await
    }
    async fn schedule_definitions(&self) -> StoreResult<Option<ScheduleDefinitions>> {
        self.meter.time(self.inner.schedule_definitions()).await
    }
    async fn save_scheduler_state(
        &self,
        state: &SchedulerState,
        definitions: Option<&ScheduleDefinitions>,
    ) -> StoreResult<bool> {
        self.meter
            .time(self.inner.save_scheduler_state(state, definitions))
            .await
    }
}

#[async_trait]
impl JoinStore for TimedStore {
    async fn join_arrive(&self, arrival: &JoinArrival) -> StoreResult<JoinOutcome> {
        self.meter.time(self.inner.join_arrive(arrival)).await
    }
    async fn join_state(&self, key: &ClaimKey) -> StoreResult<Option<JoinState>> {
        self.meter.time(self.inner.join_state(key)).await
    }
    async fn take_rate_ticket(&self, ticket: &RateTicket) -> StoreResult<bool> {
        self.meter.time(self.inner.take_rate_ticket(ticket)).await
    }
}

#[async_trait]
impl TriggerLedger for TimedStore {
    async fn open_trigger(
        &self,
        key: &ClaimKey,
        fingerprint: &Fingerprint,
        lease: Duration,
        record: TriggerRecord,
        sending: bool,
    ) -> StoreResult<OpenedTrigger> {
        self.meter
            .time(
                self.inner
                    .open_trigger(key, fingerprint, lease, record, sending),
            )
            .await
    }
    async fn settle_trigger(
        &self,
        key: &ClaimKey,
        owner: OwnerToken,
        lease: Duration,
        record: TriggerRecord,
    ) -> StoreResult<TriggerRecord> {
        self.meter
            .time(self.inner.settle_trigger(key, owner, lease, record))
            .await
    }
}

#[async_trait]
impl FlagStore for TimedStore {
    async fn pause(
        &self,
        scope: &PauseScope,
        reason: Option<&str>,
        paused_by: Option<&str>,
    ) -> StoreResult<PauseFlag> {
        self.meter
            .time(self.inner.pause(scope, reason, paused_by))
            .await
    }
    async fn resume(&self, scope: &PauseScope) -> StoreResult<bool> {
        self.meter.time(self.inner.resume(scope)).await
    }
    async fn pause_flag(&self, scope: &PauseScope) -> StoreResult<Option<PauseFlag>> {
        self.meter.time(self.inner.pause_flag(scope)).await
    }
    async fn pause_flags(&self) -> StoreResult<Vec<PauseFlag>> {
        self.meter.time(self.inner.pause_flags()).await
    }
}

/// Times every call to the CircleCI client it wraps (the HTTP round trip and the
/// simulator's handling are inside).
pub struct TimedCircleCi(Arc<Meter>);

impl TimedCircleCi {
    pub fn wrap(inner: Arc<dyn CircleCi>, meter: Arc<Meter>) -> Arc<dyn CircleCi> {
        Arc::new(Intercepted::new(inner, Self(meter)))
    }
}

#[async_trait]
impl Interceptor for TimedCircleCi {
    async fn around<'a, T: Send + 'a>(
        &'a self,
        _call: Call<'a>,
        forward: Forward<'a, T>,
    ) -> Result<T, CircleCiError> {
        self.0.time(forward).await
    }
}

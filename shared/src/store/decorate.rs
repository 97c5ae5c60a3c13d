//! One home for store decorators. A type that wraps a store to see, time or label every
//! port call implements [`StoreDecorator`]; the port's traits come from the blanket impls
//! here, which hand each method's call on [`StoreDecorator::inner`] to
//! [`StoreDecorator::around`], labelled with its [`StoreOperation`]. A new port method is
//! forwarded here once (and named in [`StoreOperation`]), not in every decorator.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use super::{
    ClaimGrant, ClaimKey, ClaimOutcome, ClaimResult, ClaimSnapshot, ClaimStore, Fingerprint,
    FlagStore, HistoryStore, JoinArrival, JoinOutcome, JoinState, JoinStore, OpenedTrigger,
    OwnerToken, Page, PageRequest, PauseFlag, PauseScope, RateTicket, ScheduleDefinitions,
    ScheduleStateStore, SchedulerState, StoreResult, TriggerId, TriggerLedger, TriggerRecord,
    TriggerSource, TriggerStore,
};

/// Every method of the store port ([`crate::store::TriggerStore`]), named as in the traits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StoreOperation {
    Claim,
    Renew,
    MarkSending,
    Complete,
    Release,
    AdoptAmbiguous,
    ClaimSnapshot,
    OpenTrigger,
    SettleTrigger,
    CreateRecord,
    UpdateRecord,
    GetRecord,
    ListBySource,
    ListByProject,
    ListByOrigin,
    ListRecent,
    FindByPipeline,
    PipelineRecorded,
    DueForRetry,
    PurgeExpired,
    SchedulerState,
    ScheduleDefinitions,
    SaveSchedulerState,
    JoinArrive,
    JoinState,
    Pause,
    Resume,
    PauseFlag,
    PauseFlags,
    TakeRateTicket,
}

impl StoreOperation {
    pub const ALL: [StoreOperation; 30] = [
        StoreOperation::Claim,
        StoreOperation::Renew,
        StoreOperation::MarkSending,
        StoreOperation::Complete,
        StoreOperation::Release,
        StoreOperation::AdoptAmbiguous,
        StoreOperation::ClaimSnapshot,
        StoreOperation::OpenTrigger,
        StoreOperation::SettleTrigger,
        StoreOperation::CreateRecord,
        StoreOperation::UpdateRecord,
        StoreOperation::GetRecord,
        StoreOperation::ListBySource,
        StoreOperation::ListByProject,
        StoreOperation::ListByOrigin,
        StoreOperation::ListRecent,
        StoreOperation::FindByPipeline,
        StoreOperation::PipelineRecorded,
        StoreOperation::DueForRetry,
        StoreOperation::PurgeExpired,
        StoreOperation::SchedulerState,
        StoreOperation::ScheduleDefinitions,
        StoreOperation::SaveSchedulerState,
        StoreOperation::JoinArrive,
        StoreOperation::JoinState,
        StoreOperation::Pause,
        StoreOperation::Resume,
        StoreOperation::PauseFlag,
        StoreOperation::PauseFlags,
        StoreOperation::TakeRateTicket,
    ];

    /// The trait method's name.
    pub fn name(self) -> &'static str {
        match self {
            StoreOperation::Claim => "claim",
            StoreOperation::Renew => "renew",
            StoreOperation::MarkSending => "mark_sending",
            StoreOperation::Complete => "complete",
            StoreOperation::Release => "release",
            StoreOperation::AdoptAmbiguous => "adopt_ambiguous",
            StoreOperation::ClaimSnapshot => "claim_snapshot",
            StoreOperation::OpenTrigger => "open_trigger",
            StoreOperation::SettleTrigger => "settle_trigger",
            StoreOperation::CreateRecord => "create_record",
            StoreOperation::UpdateRecord => "update_record",
            StoreOperation::GetRecord => "get_record",
            StoreOperation::ListBySource => "list_by_source",
            StoreOperation::ListByProject => "list_by_project",
            StoreOperation::ListByOrigin => "list_by_origin",
            StoreOperation::ListRecent => "list_recent",
            StoreOperation::FindByPipeline => "find_by_pipeline",
            StoreOperation::PipelineRecorded => "pipeline_recorded",
            StoreOperation::DueForRetry => "due_for_retry",
            StoreOperation::PurgeExpired => "purge_expired",
            StoreOperation::SchedulerState => "scheduler_state",
            StoreOperation::ScheduleDefinitions => "schedule_definitions",
            StoreOperation::SaveSchedulerState => "save_scheduler_state",
            StoreOperation::JoinArrive => "join_arrive",
            StoreOperation::JoinState => "join_state",
            StoreOperation::Pause => "pause",
            StoreOperation::Resume => "resume",
            StoreOperation::PauseFlag => "pause_flag",
            StoreOperation::PauseFlags => "pause_flags",
            StoreOperation::TakeRateTicket => "take_rate_ticket",
        }
    }
}

/// A store wrapped around another (see the module's docs).
pub trait StoreDecorator: Send + Sync {
    /// The store every call goes to.
    fn inner(&self) -> &dyn TriggerStore;

    /// Runs one call of the inner store; by default as it is.
    fn around<'a, T: Send + 'a>(
        &'a self,
        operation: StoreOperation,
        call: BoxFuture<'a, StoreResult<T>>,
    ) -> BoxFuture<'a, StoreResult<T>> {
        let _ = operation;
        call
    }

    /// Sees each record a write returned (`create_record`, `update_record`,
    /// `settle_trigger`), after `around`; by default nothing.
    fn record_written<'a>(&'a self, record: &'a TriggerRecord) -> BoxFuture<'a, ()> {
        let _ = record;
        Box::pin(async {})
    }
}

/// A record write through `decorator`, shown to [`StoreDecorator::record_written`] when it
/// succeeded.
async fn written<D: StoreDecorator>(
    decorator: &D,
    result: StoreResult<TriggerRecord>,
) -> StoreResult<TriggerRecord> {
    if let Ok(record) = &result {
        decorator.record_written(record).await;
    }
    result
}

#[async_trait]
impl<D: StoreDecorator> ClaimStore for D {
    async fn claim(
        &self,
        key: &ClaimKey,
        fingerprint: &Fingerprint,
        lease: Duration,
    ) -> StoreResult<ClaimOutcome> {
        let call = self.inner().claim(key, fingerprint, lease);
        self.around(StoreOperation::Claim, call).await
    }

    async fn renew(
        &self,
        key: &ClaimKey,
        owner: OwnerToken,
        lease: Duration,
    ) -> StoreResult<DateTime<Utc>> {
        let call = self.inner().renew(key, owner, lease);
        self.around(StoreOperation::Renew, call).await
    }

    async fn mark_sending(&self, key: &ClaimKey, owner: OwnerToken) -> StoreResult<()> {
        let call = self.inner().mark_sending(key, owner);
        self.around(StoreOperation::MarkSending, call).await
    }

    async fn complete(
        &self,
        key: &ClaimKey,
        owner: OwnerToken,
        result: &ClaimResult,
    ) -> StoreResult<()> {
        let call = self.inner().complete(key, owner, result);
        self.around(StoreOperation::Complete, call).await
    }

    async fn release(&self, key: &ClaimKey, owner: OwnerToken) -> StoreResult<()> {
        let call = self.inner().release(key, owner);
        self.around(StoreOperation::Release, call).await
    }

    async fn adopt_ambiguous(&self, key: &ClaimKey, lease: Duration) -> StoreResult<ClaimGrant> {
        let call = self.inner().adopt_ambiguous(key, lease);
        self.around(StoreOperation::AdoptAmbiguous, call).await
    }

    async fn claim_snapshot(&self, key: &ClaimKey) -> StoreResult<Option<ClaimSnapshot>> {
        let call = self.inner().claim_snapshot(key);
        self.around(StoreOperation::ClaimSnapshot, call).await
    }
}

#[async_trait]
impl<D: StoreDecorator> HistoryStore for D {
    async fn create_record(&self, record: TriggerRecord) -> StoreResult<TriggerRecord> {
        let call = self.inner().create_record(record);
        let result = self.around(StoreOperation::CreateRecord, call).await;
        written(self, result).await
    }

    async fn update_record(&self, record: TriggerRecord) -> StoreResult<TriggerRecord> {
        let call = self.inner().update_record(record);
        let result = self.around(StoreOperation::UpdateRecord, call).await;
        written(self, result).await
    }

    async fn get_record(&self, id: TriggerId) -> StoreResult<Option<TriggerRecord>> {
        let call = self.inner().get_record(id);
        self.around(StoreOperation::GetRecord, call).await
    }

    async fn list_by_source(
        &self,
        source: &TriggerSource,
        page: PageRequest,
    ) -> StoreResult<Page<TriggerRecord>> {
        let call = self.inner().list_by_source(source, page);
        self.around(StoreOperation::ListBySource, call).await
    }

    async fn list_by_project(
        &self,
        project: &str,
        page: PageRequest,
    ) -> StoreResult<Page<TriggerRecord>> {
        let call = self.inner().list_by_project(project, page);
        self.around(StoreOperation::ListByProject, call).await
    }

    async fn list_by_origin(
        &self,
        origin: TriggerId,
        project: Option<&str>,
        page: PageRequest,
    ) -> StoreResult<Page<TriggerRecord>> {
        let call = self.inner().list_by_origin(origin, project, page);
        self.around(StoreOperation::ListByOrigin, call).await
    }

    async fn list_recent(&self, page: PageRequest) -> StoreResult<Page<TriggerRecord>> {
        let call = self.inner().list_recent(page);
        self.around(StoreOperation::ListRecent, call).await
    }

    async fn find_by_pipeline(&self, pipeline_id: &str) -> StoreResult<Option<TriggerRecord>> {
        let call = self.inner().find_by_pipeline(pipeline_id);
        self.around(StoreOperation::FindByPipeline, call).await
    }

    async fn pipeline_recorded(&self, pipeline_id: &str) -> StoreResult<Option<TriggerId>> {
        let call = self.inner().pipeline_recorded(pipeline_id);
        self.around(StoreOperation::PipelineRecorded, call).await
    }

    async fn due_for_retry(&self, limit: u32) -> StoreResult<Vec<TriggerRecord>> {
        let call = self.inner().due_for_retry(limit);
        self.around(StoreOperation::DueForRetry, call).await
    }

    async fn purge_expired(&self, limit: u32) -> StoreResult<u64> {
        let call = self.inner().purge_expired(limit);
        self.around(StoreOperation::PurgeExpired, call).await
    }
}

#[async_trait]
impl<D: StoreDecorator> TriggerLedger for D {
    async fn open_trigger(
        &self,
        key: &ClaimKey,
        fingerprint: &Fingerprint,
        lease: Duration,
        record: TriggerRecord,
        sending: bool,
    ) -> StoreResult<OpenedTrigger> {
        let call = self
            .inner()
            .open_trigger(key, fingerprint, lease, record, sending);
        self.around(StoreOperation::OpenTrigger, call).await
    }

    async fn settle_trigger(
        &self,
        key: &ClaimKey,
        owner: OwnerToken,
        lease: Duration,
        record: TriggerRecord,
    ) -> StoreResult<TriggerRecord> {
        let call = self.inner().settle_trigger(key, owner, lease, record);
        let result = self.around(StoreOperation::SettleTrigger, call).await;
        written(self, result).await
    }
}

#[async_trait]
impl<D: StoreDecorator> ScheduleStateStore for D {
    async fn scheduler_state(&self) -> StoreResult<Option<SchedulerState>> {
        let call = self.inner().scheduler_state();
        self.around(StoreOperation::SchedulerState, call).await
    }

    async fn schedule_definitions(&self) -> StoreResult<Option<ScheduleDefinitions>> {
        let call = self.inner().schedule_definitions();
        self.around(StoreOperation::ScheduleDefinitions, call).await
    }

    async fn save_scheduler_state(
        &self,
        state: &SchedulerState,
        definitions: Option<&ScheduleDefinitions>,
    ) -> StoreResult<bool> {
        let call = self.inner().save_scheduler_state(state, definitions);
        self.around(StoreOperation::SaveSchedulerState, call).await
    }
}

#[async_trait]
impl<D: StoreDecorator> JoinStore for D {
    async fn join_arrive(&self, arrival: &JoinArrival) -> StoreResult<JoinOutcome> {
        let call = self.inner().join_arrive(arrival);
        self.around(StoreOperation::JoinArrive, call).await
    }

    async fn join_state(&self, key: &ClaimKey) -> StoreResult<Option<JoinState>> {
        let call = self.inner().join_state(key);
        self.around(StoreOperation::JoinState, call).await
    }

    async fn take_rate_ticket(&self, ticket: &RateTicket) -> StoreResult<bool> {
        let call = self.inner().take_rate_ticket(ticket);
        self.around(StoreOperation::TakeRateTicket, call).await
    }
}

#[async_trait]
impl<D: StoreDecorator> FlagStore for D {
    async fn pause(
        &self,
        scope: &PauseScope,
        reason: Option<&str>,
        paused_by: Option<&str>,
    ) -> StoreResult<PauseFlag> {
        let call = self.inner().pause(scope, reason, paused_by);
        self.around(StoreOperation::Pause, call).await
    }

    async fn resume(&self, scope: &PauseScope) -> StoreResult<bool> {
        let call = self.inner().resume(scope);
        self.around(StoreOperation::Resume, call).await
    }

    async fn pause_flag(&self, scope: &PauseScope) -> StoreResult<Option<PauseFlag>> {
        let call = self.inner().pause_flag(scope);
        self.around(StoreOperation::PauseFlag, call).await
    }

    async fn pause_flags(&self) -> StoreResult<Vec<PauseFlag>> {
        let call = self.inner().pause_flags();
        self.around(StoreOperation::PauseFlags, call).await
    }
}

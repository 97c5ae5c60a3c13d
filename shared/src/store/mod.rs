//! Trigger history and exactly-once claims: the port [`TriggerStore`] and its adapters,
//! [`DynamoStore`] (cloud) and [`SqliteStore`] (local `serve`, the embedded default).
//!
//! The port is split into narrow traits — [`ClaimStore`], [`HistoryStore`],
//! [`ScheduleStateStore`], [`JoinStore`], [`FlagStore`] — so a component can ask for only
//! what it uses; [`TriggerLedger`] is a trigger's claim and record written together (the
//! hot path), and [`TriggerStore`] is all of them, usable as `Arc<dyn TriggerStore>`.
//!
//! Both adapters take their notion of "now" from an injected [`Clock`]: leases, retention
//! and join windows are compared against it in code (never against DynamoDB TTL deletion,
//! which lags by days).

mod cursor;
mod decorate;
mod detail;
pub mod dynamo;
mod logic;
mod model;
pub mod sqlite;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use triggers_config::HistorySettings;

use crate::clock::Clock;

pub use decorate::{StoreDecorator, StoreOperation};
pub use detail::*;
pub use dynamo::DynamoStore;
pub use model::*;
pub use sqlite::SqliteStore;

/// Why a store operation failed. [`StoreError::is_retryable`] tells a caller whether the
/// same operation may succeed later (the sweep or an HTTP 503 + Retry-After) or never will.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Throttled, unreachable, timed out, busy: try again later.
    #[error("the trigger store is unavailable (retryable): {message}")]
    Unavailable { message: String },
    /// The table/database is missing, access is denied, or a request was malformed.
    #[error("the trigger store is misconfigured: {message}")]
    Misconfigured { message: String },
    /// A stored item could not be read back (written by a newer release, or damaged).
    #[error("stored {what} is unreadable: {reason}")]
    Corrupt { what: String, reason: String },
    /// The caller's owner token no longer holds the claim (taken over, completed or released).
    #[error("claim `{key}` is no longer held by this owner")]
    LostClaim { key: ClaimKey },
    /// A claim marked sending can only be completed: releasing it could lead to a resend.
    #[error("claim `{key}` was marked sending and cannot be released")]
    ClaimSending { key: ClaimKey },
    #[error("claim `{key}` does not exist")]
    ClaimNotFound { key: ClaimKey },
    /// `adopt_ambiguous` on a claim that is not sending-with-an-expired-lease.
    #[error("claim `{key}` is not ambiguous")]
    NotAmbiguous { key: ClaimKey },
    #[error("trigger record {id} already exists")]
    RecordExists { id: TriggerId },
    #[error("trigger record {id} does not exist")]
    RecordNotFound { id: TriggerId },
    /// Someone else wrote the record since it was read: re-read and re-apply.
    #[error("trigger record {id} was changed concurrently")]
    StaleRecord { id: TriggerId },
    /// Each CircleCI pipeline belongs to exactly one trigger record.
    #[error("pipeline {pipeline_id} is already recorded for trigger {trigger_id}")]
    PipelineAlreadyRecorded {
        pipeline_id: String,
        trigger_id: TriggerId,
    },
    #[error("the page cursor is not valid for this query")]
    InvalidCursor,
    #[error("invalid store request: {reason}")]
    Invalid { reason: String },
    /// Anything else the backend reported; not expected to heal by itself.
    #[error("the trigger store failed: {message}")]
    Internal { message: String },
}

impl StoreError {
    /// Whether trying the same operation again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        StoreError::Invalid {
            reason: reason.into(),
        }
    }

    pub(crate) fn corrupt(what: impl Into<String>, reason: impl Into<String>) -> Self {
        StoreError::Corrupt {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Exactly-once claims. Every transition after [`claim`](ClaimStore::claim) is conditional
/// on the owner token it returned.
#[async_trait]
pub trait ClaimStore: Send + Sync {
    /// Takes the claim on `key` for `lease`, or reports why not. An expired lease is taken
    /// over only when its holder never marked it sending.
    async fn claim(
        &self,
        key: &ClaimKey,
        fingerprint: &Fingerprint,
        lease: Duration,
    ) -> StoreResult<ClaimOutcome>;

    /// Extends the holder's lease to now + `lease`; returns the new expiry.
    async fn renew(
        &self,
        key: &ClaimKey,
        owner: OwnerToken,
        lease: Duration,
    ) -> StoreResult<DateTime<Utc>>;

    /// Records that a create request is about to be sent. Must succeed before sending;
    /// if it fails, send nothing. Repeating it for the same owner is harmless.
    async fn mark_sending(&self, key: &ClaimKey, owner: OwnerToken) -> StoreResult<()>;

    /// Finishes the claim; replays get `result`. Repeating it for the same owner is harmless.
    async fn complete(
        &self,
        key: &ClaimKey,
        owner: OwnerToken,
        result: &ClaimResult,
    ) -> StoreResult<()>;

    /// Gives the claim up so a later attempt can take it; refused once marked sending.
    async fn release(&self, key: &ClaimKey, owner: OwnerToken) -> StoreResult<()>;

    /// Takes over an ambiguous claim (sending, lease expired) to reconcile it. It stays
    /// sending: the new holder can only complete it (with what reconciliation found).
    async fn adopt_ambiguous(&self, key: &ClaimKey, lease: Duration) -> StoreResult<ClaimGrant>;

    /// The claim as it stands, if it exists and has not expired.
    async fn claim_snapshot(&self, key: &ClaimKey) -> StoreResult<Option<ClaimSnapshot>>;
}

/// Trigger history.
#[async_trait]
pub trait HistoryStore: Send + Sync {
    /// Stores a new record (version 0 in, 1 out). The store redacts parameters, sets the
    /// schema version and the expiry; a pipeline, if set, is bound to this record.
    async fn create_record(&self, record: TriggerRecord) -> StoreResult<TriggerRecord>;

    /// Replaces a record if its stored version is still `record.version`; returns the
    /// stored form (version + 1). A newly set pipeline id is bound to this record, or the
    /// write fails with [`StoreError::PipelineAlreadyRecorded`].
    async fn update_record(&self, record: TriggerRecord) -> StoreResult<TriggerRecord>;

    /// A record by id (strongly consistent).
    async fn get_record(&self, id: TriggerId) -> StoreResult<Option<TriggerRecord>>;

    /// Records of one schedule/rule/endpoint, newest first.
    async fn list_by_source(
        &self,
        source: &TriggerSource,
        page: PageRequest,
    ) -> StoreResult<Page<TriggerRecord>>;

    /// Records targeting one project, newest first.
    async fn list_by_project(
        &self,
        project: &str,
        page: PageRequest,
    ) -> StoreResult<Page<TriggerRecord>>;

    /// Records sharing an origin (optionally on one project), newest first: action
    /// selection and fan-in.
    async fn list_by_origin(
        &self,
        origin: TriggerId,
        project: Option<&str>,
        page: PageRequest,
    ) -> StoreResult<Page<TriggerRecord>>;

    /// Every record, newest first.
    async fn list_recent(&self, page: PageRequest) -> StoreResult<Page<TriggerRecord>>;

    /// The record that created or acted on a CircleCI pipeline (closed loop; strongly consistent).
    async fn find_by_pipeline(&self, pipeline_id: &str) -> StoreResult<Option<TriggerRecord>>;

    /// Which record a pipeline id is bound to, if any (reconciliation; strongly consistent).
    async fn pipeline_recorded(&self, pipeline_id: &str) -> StoreResult<Option<TriggerId>>;

    /// Records whose `retry_at` has come (a schedule or chain retry or recheck; a record of
    /// any source still `received` past its claim's lease), oldest due first — except
    /// that, within `limit`, one already handed out while due for over 5 minutes may come
    /// after younger ones (DynamoDB moves its index entry to the present so that it cannot
    /// hold the sweep's cursor back; it is still returned, once it is reached).
    async fn due_for_retry(&self, limit: u32) -> StoreResult<Vec<TriggerRecord>>;

    /// Deletes up to `limit` expired items; returns how many. Reads never return expired
    /// items whether or not they were purged.
    async fn purge_expired(&self, limit: u32) -> StoreResult<u64>;
}

/// How far the schedules have been evaluated: one small state item every tick reads, and
/// the per-schedule definitions read only when something is due or changed.
#[async_trait]
pub trait ScheduleStateStore: Send + Sync {
    /// The scheduler's state (one strongly consistent read of one small item).
    async fn scheduler_state(&self) -> StoreResult<Option<SchedulerState>>;

    /// The per-schedule definitions and instants (strongly consistent).
    async fn schedule_definitions(&self) -> StoreResult<Option<ScheduleDefinitions>>;

    /// Saves the state, and with it (atomically) the definitions when given, if the stored
    /// state's `evaluated_through` is before `state.evaluated_through` (or there is none).
    /// `false`: nothing was written (a later tick got there first). Never moves backwards.
    async fn save_scheduler_state(
        &self,
        state: &SchedulerState,
        definitions: Option<&ScheduleDefinitions>,
    ) -> StoreResult<bool>;
}

/// Fan-in joins.
#[async_trait]
pub trait JoinStore: Send + Sync {
    /// Records an upstream's arrival and reports whether the join is waiting, complete
    /// (fired by exactly one arrival) or closed (by a failed upstream).
    async fn join_arrive(&self, arrival: &JoinArrival) -> StoreResult<JoinOutcome>;

    /// The join's current generation, if any.
    async fn join_state(&self, key: &ClaimKey) -> StoreResult<Option<JoinState>>;

    /// Takes one ticket of a client's rate window: one conditional write that counts the
    /// request unless the window's `limit` is reached. `Ok(false)`: none left.
    async fn take_rate_ticket(&self, ticket: &RateTicket) -> StoreResult<bool>;
}

/// Pause flags (operators pausing a schedule, a rule, an endpoint, or everything).
#[async_trait]
pub trait FlagStore: Send + Sync {
    async fn pause(
        &self,
        scope: &PauseScope,
        reason: Option<&str>,
        paused_by: Option<&str>,
    ) -> StoreResult<PauseFlag>;

    /// `true` if the scope was paused.
    async fn resume(&self, scope: &PauseScope) -> StoreResult<bool>;

    async fn pause_flag(&self, scope: &PauseScope) -> StoreResult<Option<PauseFlag>>;

    /// Every paused scope, sorted.
    async fn pause_flags(&self) -> StoreResult<Vec<PauseFlag>>;
}

/// What [`TriggerLedger::open_trigger`] found or made.
#[derive(Debug, Clone)]
pub struct OpenedTrigger {
    pub outcome: ClaimOutcome,
    /// The key's record: the one just created, the one a takeover found, or the decided one
    /// a completed claim's replay repeats (`None` when the store does not have it at hand).
    pub record: Option<TriggerRecord>,
    /// The claim was written already marked sending (see `sending` below).
    pub marked_sending: bool,
}

/// A trigger's claim and its record together: the write path of every trigger, as few
/// writes as the adapter can make it. The DynamoDB adapter keeps claim and record in one
/// item and makes each step one write; the SQLite adapter makes each one transaction. Each
/// must behave as the narrow traits composed would (claim, create or find the record; renew
/// as the fence, update the record, complete): the conformance suite holds both to it.
#[async_trait]
pub trait TriggerLedger: ClaimStore + HistoryStore {
    /// Claims `key` and, when this call wins, creates `record` with it (its id is
    /// [`ClaimKey::record_id`]) — or, after a takeover, finds the record the previous holder
    /// created. `sending`: the caller's next step is the side-effecting request, so the
    /// claim may start out marked sending (the adapter says whether it did: if not, the
    /// caller marks it itself). A claim that starts sending and whose holder dies before
    /// sending anything is ambiguous like any other: it is reconciled, never resent blindly.
    async fn open_trigger(
        &self,
        key: &ClaimKey,
        fingerprint: &Fingerprint,
        lease: Duration,
        record: TriggerRecord,
        sending: bool,
    ) -> StoreResult<OpenedTrigger>;

    /// Writes the holder's decision (`record`, at its read `version`) and completes the
    /// claim with it, fenced by the claim: [`StoreError::LostClaim`] when another owner
    /// holds it now (the write is not made), [`StoreError::StaleRecord`] when the record
    /// changed since it was read. A pipeline `record` newly names must be the one this
    /// holder's own create returned (nobody else can have it): it is bound without waiting
    /// for the record (reconciliation, which adopts pipelines it did not create, uses
    /// [`HistoryStore::update_record`], which binds first).
    async fn settle_trigger(
        &self,
        key: &ClaimKey,
        owner: OwnerToken,
        lease: Duration,
        record: TriggerRecord,
    ) -> StoreResult<TriggerRecord>;
}

/// Everything the domain asks of storage.
pub trait TriggerStore:
    ClaimStore + HistoryStore + TriggerLedger + ScheduleStateStore + JoinStore + FlagStore
{
}

impl<T> TriggerStore for T where
    T: ClaimStore + HistoryStore + TriggerLedger + ScheduleStateStore + JoinStore + FlagStore
{
}

/// What both adapters are configured with.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// How long records and claims are kept.
    pub retention: Duration,
    pub history: HistorySettings,
}

impl StoreSettings {
    pub fn from_history(history: &HistorySettings) -> Self {
        Self {
            retention: history.retention(),
            history: history.clone(),
        }
    }
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self::from_history(&HistorySettings::default())
    }
}

/// Replaces the value of every parameter whose name the history settings redact.
pub fn redact_parameters(
    settings: &HistorySettings,
    parameters: &mut BTreeMap<String, serde_json::Value>,
) {
    for (name, value) in parameters.iter_mut() {
        if settings.is_redacted(name) {
            *value = serde_json::Value::String(triggers_config::history::REDACTED.to_owned());
        }
    }
}

/// Reads a record, applies `change`, writes it back; re-reads and re-applies when another
/// writer got there first (bounded). For the closed loop and the sweep, which both update
/// records they did not create.
pub async fn modify_record<F>(
    store: &dyn HistoryStore,
    id: TriggerId,
    mut change: F,
) -> StoreResult<TriggerRecord>
where
    F: FnMut(&mut TriggerRecord) + Send,
{
    // Each lost race means another writer's update landed after our read, so with N
    // concurrent writers a writer loses at most N - 1 times: 16 covers the handful of
    // webhooks that can update one record at once (one per workflow), with room to spare.
    const ATTEMPTS: usize = 16;
    for _ in 0..ATTEMPTS {
        let mut record = store
            .get_record(id)
            .await?
            .ok_or(StoreError::RecordNotFound { id })?;
        change(&mut record);
        match store.update_record(record).await {
            Err(StoreError::StaleRecord { .. }) => continue,
            other => return other,
        }
    }
    // Sixteen lost races in a row: unusual contention, which passes; try again later.
    Err(StoreError::Unavailable {
        message: format!("trigger record {id} kept changing under concurrent writers"),
    })
}

/// How many records one origin lookup reads (an origin's tree is small: a slot's targets,
/// the chains they start, their fan-ins).
pub const ORIGIN_LOOKUP: u32 = 100;

/// The CircleCI pipelines recorded under `origin` in `project` — those the origin trigger
/// and every trigger it caused started or acted on — newest record first, without
/// repeats. The one definition of "the pipelines of the same origin" that chain rules
/// (`select = "origin"`) and HTTP callers (`select = <trigger id>`) select from.
pub async fn origin_pipelines(
    store: &dyn HistoryStore,
    origin: TriggerId,
    project: &str,
) -> StoreResult<Vec<uuid::Uuid>> {
    let page = store
        .list_by_origin(origin, Some(project), PageRequest::first(ORIGIN_LOOKUP))
        .await?;
    let mut pipelines = Vec::new();
    for id in page.items.iter().flat_map(TriggerRecord::pipelines) {
        if !pipelines.contains(&id) {
            pipelines.push(id);
        }
    }
    Ok(pipelines)
}

/// Convenience for wiring: an adapter behind the port.
pub type SharedStore = Arc<dyn TriggerStore>;

pub(crate) type SharedClock = Arc<dyn Clock>;

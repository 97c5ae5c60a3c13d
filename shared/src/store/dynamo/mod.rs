//! The cloud store: one DynamoDB table (design and access patterns in ARCHITECTURE.md,
//! "Storage"; definition in [`table_definition`]).
//!
//! Every claim and join transition is a conditional write. Expiry (leases, retention, join
//! windows) is compared in code against the injected clock, never left to TTL deletion.
//! Reads that must be exact (claims, records by id, pipeline bindings, join state) are
//! strongly consistent reads of the main table; GSIs (eventually consistent on AWS) serve
//! only listings, never a read-your-write.

mod item;
pub mod permissions;
mod table;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, KeysAndAttributes, Put, ReturnValue,
    ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;

use self::item::{
    Item, Reader, classify, from_ttl_seconds, key_to_strings, n, n_u64, s, sort_time,
    strings_to_key, ttl_seconds,
};
pub use self::table::{
    BY_ORIGIN, BY_SOURCE, CREATED_KEY, IndexDefinition, IndexProjection, ORIGIN_KEY, PARTITION_KEY,
    RETRY_DUE, RETRY_SHARD_KEY, RETRY_TIME_KEY, SORT_KEY, SOURCE_KEY, TTL_ATTRIBUTE,
    TableDefinition, create_table, table_definition,
};
use super::logic::{self, ClaimDecision, HolderOp, HolderPlan, JoinStep, StoredClaim, millis};
use super::{
    ArrivedUpstream, ClaimGrant, ClaimKey, ClaimOutcome, ClaimResult, ClaimSnapshot, ClaimState,
    ClaimStore, Fingerprint, FlagStore, HistoryStore, InvalidPauseScope, JoinArrival, JoinOutcome,
    JoinState, JoinStatus, JoinStore, OpenedTrigger, OwnerToken, Page, PageRequest, PauseFlag,
    PauseScope, RateTicket, SCHEMA_VERSION, ScheduleDefinitions, ScheduleStateStore,
    SchedulerState, SharedClock, StoreError, StoreResult, StoreSettings, TriggerId, TriggerLedger,
    TriggerRecord, TriggerSource, cursor,
};
use crate::clock::Clock;

/// Environment variable naming the table (Lambda configuration, CLI `--table`).
pub const TABLE_ENV: &str = "TRIGGERS_TABLE";

/// DynamoDB refuses items over 400 KB; records stay well below by construction, and one
/// that does not is refused here with a clear reason rather than by the service.
const MAX_RECORD_BYTES: usize = 350 * 1024;

/// How often a conditional write that lost a race is re-evaluated before giving up.
const RACE_ATTEMPTS: usize = 8;

const FLAGS_PARTITION: &str = "FLAGS";
/// `retry_due` is spread over this many partitions (`RETRY#<n>`): every trigger enters it
/// when opened (1 WRU) and one partition takes 1,000 WRU/s, so one shard would cap the
/// whole deployment near 1,000 triggers/s; eight allow ~8,000. The sweep queries each
/// shard (an idle tick's 8 Queries, 0.5 RRU each).
const RETRY_SHARDS: u32 = 8;
/// The sweep's place in each `retry_due` shard: `SCHEDULER` / `SWEEP`, one attribute per
/// shard (`c<n>`: the last entry key it has read and dealt with).
///
/// Why a cursor: a trigger's entry is never taken out of the index when it is decided
/// (that removal was a write unit on every trigger). Entries of decided records stay
/// behind the cursor, read once; the sweep reads only what came due since it last read.
const SWEEP_SK: &str = "SWEEP";
/// How far behind the time it reads up to the sweep's cursor stays: an entry written a
/// little late (clock skew between functions, the index's propagation) is still ahead of
/// it. Entry keys are never earlier than their writer's clock (`retry_entry_key`).
const SWEEP_MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(30);
/// How long a record may stay due, holding the sweep's cursor back in its shard, before
/// its entry is moved to the present (its claim held, its attempts failing transiently):
/// the cursor stops at the oldest entry still due so that no due record is passed over,
/// and this bounds what it makes the next sweeps read again.
const STUCK_AFTER: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// The key the sweep's cursor never passes at `now`: every entry key of
/// `now - SWEEP_MARGIN` sorts after it.
fn sweep_floor(now: DateTime<Utc>) -> String {
    sort_time(now - SWEEP_MARGIN)
}

fn retry_shard(id: TriggerId) -> u32 {
    u32::try_from(id.as_uuid().as_u128() % u128::from(RETRY_SHARDS)).unwrap_or(0)
}

fn retry_shard_pk(shard: u32) -> String {
    format!("R{shard}")
}
/// One item per source that has records (`sk` = its `by_source` key): what `list_recent` merges.
const SOURCES_PARTITION: &str = "SOURCES";
/// A `by_origin` page cursor meaning "only the root record is left".
const ROOT_CURSOR: &str = "root";

fn trigger_pk(id: TriggerId) -> String {
    format!("TRIGGER#{id}")
}
fn pipeline_pk(pipeline_id: &str) -> String {
    format!("PIPELINE#{pipeline_id}")
}
/// The scheduler's partition: `STATE` (read every tick) and `DEFINITIONS`.
const SCHEDULER_PK: &str = "SCHEDULER";
const SCHEDULER_STATE_SK: &str = "STATE";
const SCHEDULER_DEFINITIONS_SK: &str = "DEFINITIONS";
fn join_pk(key: &ClaimKey) -> String {
    format!("JOIN#{key}")
}
fn arrival_prefix(generation: u64) -> String {
    format!("ARRIVAL#{generation:020}#")
}
fn source_pk(source: &TriggerSource) -> String {
    format!("S#{}#{}", source.kind, source.name)
}
fn origin_pk(origin: TriggerId) -> String {
    format!("O#{}", origin.as_uuid().simple())
}

/// The [`TriggerStore`](super::TriggerStore) on a DynamoDB table.
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    clock: SharedClock,
    settings: Arc<StoreSettings>,
    /// Sources this process has registered, and when (see [`DynamoStore::register_source`]).
    sources_seen: Arc<std::sync::Mutex<HashMap<String, DateTime<Utc>>>>,
    /// The sweep's cursors as this process last read or wrote them (see [`SWEEP_SK`]).
    sweep_cursors: Arc<std::sync::Mutex<Option<Vec<String>>>>,
}

/// What the sweep read of one `retry_due` shard.
#[derive(Default)]
struct ShardRead {
    due: Vec<TriggerRecord>,
    /// The last entry key read, if any.
    last: Option<String>,
    /// The key of the first entry read whose record is still due (and not moved).
    first_due: Option<String>,
    /// Whether every entry up to now was read.
    exhausted: bool,
}

impl std::fmt::Debug for DynamoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoStore")
            .field("table", &self.table)
            .field("retention", &self.settings.retention)
            .finish_non_exhaustive()
    }
}

impl DynamoStore {
    pub fn new(client: Client, table_name: impl Into<String>, clock: Arc<dyn Clock>) -> Self {
        Self {
            client,
            table: table_name.into(),
            clock,
            settings: Arc::new(StoreSettings::default()),
            sources_seen: Arc::default(),
            sweep_cursors: Arc::default(),
        }
    }

    /// A client from the default AWS configuration chain (Lambda role, profile, env).
    pub async fn from_environment(table_name: impl Into<String>, clock: Arc<dyn Clock>) -> Self {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::new(Client::new(&config), table_name, clock)
    }

    /// Retention and redaction from the triggers file's `[history]`.
    pub fn with_settings(mut self, settings: StoreSettings) -> Self {
        self.settings = Arc::new(settings);
        self
    }

    pub fn table_name(&self) -> &str {
        &self.table
    }

    async fn get(&self, pk: String, sk: &str) -> StoreResult<Option<Item>> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PARTITION_KEY, s(pk))
            .key(SORT_KEY, s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| classify("GetItem", &error))?;
        Ok(output.item)
    }
}

/// The item of a failed conditional write (returned with ALL_OLD), if the service sent it.
fn conditional_failure<E>(error: &SdkError<E, HttpResponse>) -> Option<Option<Item>>
where
    E: ConditionalFailure,
{
    match error {
        SdkError::ServiceError(context) => context.err().conditional_item(),
        _ => None,
    }
}

/// Operation errors that can report a failed condition.
trait ConditionalFailure {
    /// `Some(old item or None)` when this is a ConditionalCheckFailedException.
    fn conditional_item(&self) -> Option<Option<Item>>;
}

macro_rules! conditional_failure {
    ($($error:ty),* $(,)?) => {$(
        impl ConditionalFailure for $error {
            fn conditional_item(&self) -> Option<Option<Item>> {
                match self {
                    Self::ConditionalCheckFailedException(failure) => Some(failure.item().cloned()),
                    _ => None,
                }
            }
        }
    )*};
}

conditional_failure!(
    aws_sdk_dynamodb::operation::put_item::PutItemError,
    aws_sdk_dynamodb::operation::update_item::UpdateItemError,
    aws_sdk_dynamodb::operation::delete_item::DeleteItemError,
);

/// What a cancelled transaction's items reported, in request order (`None`: no failure).
fn cancellation_codes(
    error: &SdkError<TransactWriteItemsError, HttpResponse>,
) -> Option<Vec<Option<String>>> {
    match error {
        SdkError::ServiceError(context) => match context.err() {
            TransactWriteItemsError::TransactionCanceledException(cancelled) => Some(
                cancelled
                    .cancellation_reasons()
                    .iter()
                    .map(|reason| {
                        reason
                            .code()
                            .filter(|code| *code != "None")
                            .map(str::to_owned)
                    })
                    .collect(),
            ),
            _ => None,
        },
        _ => None,
    }
}

/// Cancellation reasons that say "try again": a concurrent transaction on the same item
/// (two fan-in arrivals at once) or throttling. DynamoDB reports them inside a
/// `TransactionCanceledException`, whose own code says nothing about retrying.
const RETRYABLE_CANCELLATIONS: &[&str] = &[
    "TransactionConflict",
    "ThrottlingError",
    "ProvisionedThroughputExceeded",
    "RequestLimitExceeded",
];

/// A failed transaction that no caller decided on: retryable when any item was cancelled
/// for a reason that passes, otherwise as any other error.
fn classify_transaction(error: &SdkError<TransactWriteItemsError, HttpResponse>) -> StoreError {
    let codes = cancellation_codes(error).unwrap_or_default();
    match codes
        .iter()
        .flatten()
        .find(|code| RETRYABLE_CANCELLATIONS.contains(&code.as_str()))
    {
        Some(code) => StoreError::Unavailable {
            message: format!("TransactWriteItems: cancelled ({code}); try again"),
        },
        None => classify("TransactWriteItems", error),
    }
}

fn failed_condition(codes: &[Option<String>], index: usize) -> bool {
    codes
        .get(index)
        .and_then(|code| code.as_deref())
        .is_some_and(|code| code == "ConditionalCheckFailed")
}

// ---------------------------------------------------------------------------------------
// Claims
// ---------------------------------------------------------------------------------------

/// A claim lives in its record's item (`TRIGGER#<key.record_id()>`): claim and record are
/// created by one write and decided by one write on the hot path.
fn claim_item_key(key: &ClaimKey) -> Item {
    HashMap::from([
        (PARTITION_KEY.to_owned(), s(trigger_pk(key.record_id()))),
        (SORT_KEY.to_owned(), s("TRIGGER")),
    ])
}

/// The claim attributes (everything but the keys, the record and its index keys).
const CLAIM_ATTRIBUTES: &[&str] = &[
    "fp",
    "state",
    "owner",
    "lease",
    "attempts",
    "since",
    "result",
    "completed_at",
    "created_at",
];

/// The claim stored in `item`, if the item holds one (a record of a rejected call, or a
/// record whose claim was released, holds none).
fn claim_from_item(key: &ClaimKey, item: &Item) -> StoreResult<Option<StoredClaim>> {
    if !item.contains_key("state") {
        return Ok(None);
    }
    let what = format!("claim `{key}`");
    let r = Reader::new(item, &what);
    let state = ClaimState::parse(r.s("state")?)
        .ok_or_else(|| StoreError::corrupt(&what, "unknown state"))?;
    let owner = OwnerToken::parse(r.s("owner")?)
        .ok_or_else(|| StoreError::corrupt(&what, "unreadable owner token"))?;
    let mut result = r
        .opt_s("result")?
        .map(serde_json::from_str::<ClaimResult>)
        .transpose()
        .map_err(|error| StoreError::corrupt(&what, error.to_string()))?;
    let updated_at = r.time("updated_at")?;
    let mut completed_at = r.opt_time("completed_at")?;
    if state == ClaimState::Completed && result.is_none() {
        // Settled with its own record (`settle_trigger` writes neither: every byte of this
        // item is paid for on each of its writes): the result names this item's record,
        // and the completion is the last update.
        result = Some(ClaimResult::trigger(key.record_id()));
        completed_at = completed_at.or(Some(updated_at));
    }
    Ok(Some(StoredClaim {
        key: key.clone(),
        fingerprint: stored_fingerprint(item, &what)?,
        state,
        owner,
        lease_expires_at: r.time("lease")?,
        attempts: u32::try_from(r.n("attempts")?).unwrap_or(u32::MAX),
        sending_since: r.opt_time("since")?,
        result,
        completed_at,
        created_at: r.time("created_at")?,
        updated_at,
        expires_at: from_ttl_seconds(r.n(TTL_ATTRIBUTE)?)?,
        revision: u64::try_from(r.n("revision")?).unwrap_or(0),
    }))
}

/// A fingerprint (a SHA-256, hex) as 32 bytes: half the size in an item whose every byte
/// is paid for on each write; any other text is kept as it is.
fn fingerprint_value(fingerprint: &Fingerprint) -> AttributeValue {
    match hex::decode(fingerprint.as_str()) {
        // Only text that reads back identically (lowercase hex, as `Fingerprint::of` writes).
        Ok(bytes) if hex::encode(&bytes) == fingerprint.as_str() => {
            AttributeValue::B(aws_smithy_types::Blob::new(bytes))
        }
        _ => s(fingerprint.as_str()),
    }
}

fn stored_fingerprint(item: &Item, what: &str) -> StoreResult<Fingerprint> {
    match item.get("fp") {
        Some(AttributeValue::B(bytes)) => Ok(Fingerprint::from_stored(hex::encode(bytes.as_ref()))),
        Some(AttributeValue::S(text)) => Ok(Fingerprint::from_stored(text)),
        _ => Err(StoreError::corrupt(what, "attribute `fp` is missing")),
    }
}

/// How [`DynamoStore::claim_with`] won a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WonBy {
    /// A fresh item (with the record, when one was given).
    FreshItem,
    /// An expired lease taken over, or a claim set on an item that holds only a record.
    ExistingItem,
}

/// A fresh claim's attributes.
struct FreshClaim<'a> {
    fingerprint: &'a Fingerprint,
    owner: OwnerToken,
    lease_expires_at: DateTime<Utc>,
    /// Start marked sending (the caller's next step is the side-effecting request).
    sending: bool,
}

impl DynamoStore {
    async fn read_claim(&self, key: &ClaimKey) -> StoreResult<Option<StoredClaim>> {
        match self.get(trigger_pk(key.record_id()), "TRIGGER").await? {
            Some(item) => claim_from_item(key, &item),
            None => Ok(None),
        }
    }

    /// Writes a fresh item (claim, and `record` if given) unless a live one exists;
    /// `Err(item)` carries the live one.
    async fn put_fresh_claim(
        &self,
        key: &ClaimKey,
        fresh: &FreshClaim<'_>,
        record: Option<&Item>,
        now: DateTime<Utc>,
    ) -> StoreResult<Result<(), Option<Item>>> {
        let mut item = record.cloned().unwrap_or_default();
        item.extend(claim_item_key(key));
        let state = if fresh.sending {
            item.insert("since".to_owned(), n(millis(now)));
            ClaimState::Sending
        } else {
            ClaimState::InProgress
        };
        let claim_expiry = ttl_seconds(logic::retention_end(now, &self.settings));
        // The record's own expiry when it is in the item (within a second of the claim's).
        item.entry(TTL_ATTRIBUTE.to_owned())
            .or_insert_with(|| n(claim_expiry));
        item.extend([
            ("fp".to_owned(), fingerprint_value(fresh.fingerprint)),
            ("state".to_owned(), s(state.as_str())),
            ("owner".to_owned(), s(fresh.owner.to_string())),
            ("lease".to_owned(), n(millis(fresh.lease_expires_at))),
            ("attempts".to_owned(), n(1)),
            ("created_at".to_owned(), n(millis(now))),
            ("updated_at".to_owned(), n(millis(now))),
            ("revision".to_owned(), n(1)),
        ]);
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            // An item past its retention is as good as absent.
            .condition_expression("attribute_not_exists(pk) OR #ttl <= :now_s")
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":now_s", n(now.timestamp()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Ok(())),
            Err(error) => match conditional_failure(&error) {
                Some(old) => Ok(Err(old)),
                None => Err(classify("PutItem", &error)),
            },
        }
    }

    /// Sets a fresh claim on a live item that holds none (a record whose claim was
    /// released); `false` when a claim appeared meanwhile.
    async fn claim_existing_item(
        &self,
        key: &ClaimKey,
        fresh: &FreshClaim<'_>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(claim_item_key(key)))
            .update_expression(
                "SET fp = :fp, #state = :state, #owner = :owner, \
                 lease = :lease, attempts = :one, created_at = :now, \
                 updated_at = :now ADD #rev :one",
            )
            .condition_expression(
                "attribute_exists(pk) AND attribute_not_exists(#state) AND #ttl > :now_s",
            )
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#rev", "revision")
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":fp", fingerprint_value(fresh.fingerprint))
            .expression_attribute_values(":state", s(ClaimState::InProgress.as_str()))
            .expression_attribute_values(":owner", s(fresh.owner.to_string()))
            .expression_attribute_values(":lease", n(millis(fresh.lease_expires_at)))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":now", n(millis(now)))
            .expression_attribute_values(":now_s", n(now.timestamp()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(error) if conditional_failure(&error).is_some() => Ok(false),
            Err(error) => Err(classify("UpdateItem", &error)),
        }
    }

    /// [`ClaimStore::claim`], optionally creating `record` (its item attributes) in the
    /// same write, and starting out sending. Answers how it was won and the item it found
    /// (for a takeover's or a replay's record).
    async fn claim_with(
        &self,
        key: &ClaimKey,
        fingerprint: &Fingerprint,
        lease: Duration,
        record: Option<&Item>,
        sending: bool,
    ) -> StoreResult<(ClaimOutcome, Option<WonBy>, Option<Item>)> {
        let now = self.clock.now();
        let lease_expires_at = logic::lease_end(now, lease)?;
        // One token for every try: if the SDK retried a write whose answer was lost, the
        // stored claim carries this token and is recognised as ours below.
        let fresh = FreshClaim {
            fingerprint,
            owner: OwnerToken::generate(),
            lease_expires_at,
            sending,
        };
        let owner = fresh.owner;
        for _ in 0..RACE_ATTEMPTS {
            let old = match self.put_fresh_claim(key, &fresh, record, now).await? {
                Ok(()) => {
                    let grant = ClaimGrant {
                        owner,
                        attempt: 1,
                        lease_expires_at,
                        taken_over: false,
                    };
                    return Ok((ClaimOutcome::Won(grant), Some(WonBy::FreshItem), None));
                }
                Err(Some(item)) => item,
                Err(None) => match self.get(trigger_pk(key.record_id()), "TRIGGER").await? {
                    Some(item) => item,
                    None => continue, // purged in between: try again
                },
            };
            let Some(existing) = claim_from_item(key, &old)? else {
                // A live item without a claim: a record whose claim was released.
                if self.claim_existing_item(key, &fresh, now).await? {
                    let grant = ClaimGrant {
                        owner,
                        attempt: 1,
                        lease_expires_at,
                        taken_over: false,
                    };
                    return Ok((
                        ClaimOutcome::Won(grant),
                        Some(WonBy::ExistingItem),
                        Some(old),
                    ));
                }
                continue;
            };
            if existing.owner == owner && existing.state != ClaimState::Completed {
                // Our own write landed although its answer was lost (SDK retry).
                let grant = ClaimGrant {
                    owner,
                    attempt: existing.attempts,
                    lease_expires_at: existing.lease_expires_at,
                    taken_over: existing.attempts > 1,
                };
                let by = if existing.attempts > 1 {
                    WonBy::ExistingItem
                } else {
                    WonBy::FreshItem
                };
                return Ok((ClaimOutcome::Won(grant), Some(by), Some(old)));
            }
            match logic::assess_claim(&existing, fingerprint, now)? {
                ClaimDecision::Answer(outcome) => return Ok((outcome, None, Some(old))),
                ClaimDecision::Vacant => continue,
                ClaimDecision::TakeOver => {
                    let attempt = existing.attempts + 1;
                    let result = self
                        .client
                        .update_item()
                        .table_name(&self.table)
                        .set_key(Some(claim_item_key(key)))
                        .update_expression(
                            "SET #owner = :owner, lease = :lease, attempts = :attempt, \
                             updated_at = :now, #rev = :next",
                        )
                        // Exactly the claim we judged expired: any write since bumped the revision.
                        .condition_expression("#rev = :seen AND #state = :in_progress")
                        .expression_attribute_names("#owner", "owner")
                        .expression_attribute_names("#rev", "revision")
                        .expression_attribute_names("#state", "state")
                        .expression_attribute_values(":owner", s(owner.to_string()))
                        .expression_attribute_values(":lease", n(millis(lease_expires_at)))
                        .expression_attribute_values(":attempt", n(i64::from(attempt)))
                        .expression_attribute_values(":now", n(millis(now)))
                        .expression_attribute_values(":seen", n_u64(existing.revision))
                        .expression_attribute_values(":next", n_u64(existing.revision + 1))
                        .expression_attribute_values(
                            ":in_progress",
                            s(ClaimState::InProgress.as_str()),
                        )
                        .send()
                        .await;
                    match result {
                        Ok(_) => {
                            let grant = ClaimGrant {
                                owner,
                                attempt,
                                lease_expires_at,
                                taken_over: true,
                            };
                            return Ok((
                                ClaimOutcome::Won(grant),
                                Some(WonBy::ExistingItem),
                                Some(old),
                            ));
                        }
                        Err(error) if conditional_failure(&error).is_some() => continue,
                        Err(error) => return Err(classify("UpdateItem", &error)),
                    }
                }
            }
        }
        Err(StoreError::Unavailable {
            message: format!("claim `{key}` kept changing under concurrent writers"),
        })
    }

    /// A holder transition as one conditional update (or delete, for release); when the
    /// condition fails, the stored claim decides which error (or "already done") it is.
    async fn holder_update(
        &self,
        op: HolderOp,
        key: &ClaimKey,
        owner: OwnerToken,
        update: Option<(&str, Vec<(&str, AttributeValue)>)>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let allowed_states: &[ClaimState] = match op {
            HolderOp::Renew | HolderOp::MarkSending | HolderOp::Complete => {
                &[ClaimState::InProgress, ClaimState::Sending]
            }
            HolderOp::Release => &[ClaimState::InProgress],
        };
        let state_list: Vec<String> = (0..allowed_states.len())
            .map(|i| format!(":st{i}"))
            .collect();
        let mut condition = format!(
            "#owner = :owner AND #state IN ({}) AND #ttl > :now_s",
            state_list.join(", ")
        );
        if op == HolderOp::MarkSending {
            // A send needs a live lease (see `logic::check_holder`).
            condition.push_str(" AND #lease > :now_ms");
        }
        let mut values: HashMap<String, AttributeValue> = HashMap::from([
            (":owner".to_owned(), s(owner.to_string())),
            (":now_s".to_owned(), n(now.timestamp())),
        ]);
        for (name, state) in state_list.iter().zip(allowed_states) {
            values.insert(name.clone(), s(state.as_str()));
        }
        let mut names: HashMap<String, String> = HashMap::from([
            ("#owner".to_owned(), "owner".to_owned()),
            ("#state".to_owned(), "state".to_owned()),
            ("#ttl".to_owned(), TTL_ATTRIBUTE.to_owned()),
        ]);
        if op == HolderOp::MarkSending {
            names.insert("#lease".to_owned(), "lease".to_owned());
            values.insert(":now_ms".to_owned(), n(millis(now)));
        }
        let key_item = claim_item_key(key);
        let expression = match update {
            Some((expression, extra)) => {
                for (name, value) in extra {
                    values.insert(name.to_owned(), value);
                }
                if expression.contains("#result") {
                    names.insert("#result".to_owned(), "result".to_owned());
                }
                format!("{expression}, #updated = :now ADD #rev :one")
            }
            None => {
                // Release: the claim's attributes go, the record (if any) stays.
                names.insert("#result".to_owned(), "result".to_owned());
                let remove = CLAIM_ATTRIBUTES
                    .iter()
                    .map(|name| match *name {
                        "state" => "#state",
                        "owner" => "#owner",
                        "result" => "#result",
                        other => other,
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("REMOVE {remove} SET #updated = :now ADD #rev :one")
            }
        };
        names.insert("#rev".to_owned(), "revision".to_owned());
        names.insert("#updated".to_owned(), "updated_at".to_owned());
        values.insert(":one".to_owned(), n(1));
        values.insert(":now".to_owned(), n(millis(now)));
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_item))
            .update_expression(expression)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let failure = match result {
            Ok(_) => return Ok(()),
            Err(error) => {
                conditional_failure(&error).ok_or_else(|| classify("UpdateItem", &error))?
            }
        };
        let stored = match failure {
            Some(item) => claim_from_item(key, &item)?,
            None => self.read_claim(key).await?,
        };
        match logic::check_holder(op, key, stored.as_ref(), owner, now)? {
            HolderPlan::AlreadyDone => Ok(()),
            // The condition failed yet the claim now allows it: it changed under us, and
            // only this owner can change it while holding, so this cannot loop.
            HolderPlan::Apply => Err(StoreError::LostClaim { key: key.clone() }),
        }
    }
}

#[async_trait]
impl ClaimStore for DynamoStore {
    async fn claim(
        &self,
        key: &ClaimKey,
        fingerprint: &Fingerprint,
        lease: Duration,
    ) -> StoreResult<ClaimOutcome> {
        let (outcome, _, _) = self
            .claim_with(key, fingerprint, lease, None, false)
            .await?;
        Ok(outcome)
    }

    async fn renew(
        &self,
        key: &ClaimKey,
        owner: OwnerToken,
        lease: Duration,
    ) -> StoreResult<DateTime<Utc>> {
        let now = self.clock.now();
        let lease_expires_at = logic::lease_end(now, lease)?;
        self.holder_update(
            HolderOp::Renew,
            key,
            owner,
            Some((
                "SET lease = :lease",
                vec![(":lease", n(millis(lease_expires_at)))],
            )),
            now,
        )
        .await?;
        Ok(lease_expires_at)
    }

    async fn mark_sending(&self, key: &ClaimKey, owner: OwnerToken) -> StoreResult<()> {
        let now = self.clock.now();
        self.holder_update(
            HolderOp::MarkSending,
            key,
            owner,
            Some((
                "SET #state = :sending, since = if_not_exists(since, :since)",
                vec![
                    (":sending", s(ClaimState::Sending.as_str())),
                    (":since", n(millis(now))),
                ],
            )),
            now,
        )
        .await
    }

    async fn complete(
        &self,
        key: &ClaimKey,
        owner: OwnerToken,
        result: &ClaimResult,
    ) -> StoreResult<()> {
        let now = self.clock.now();
        let result = serde_json::to_string(result).map_err(|error| {
            StoreError::invalid(format!("unserialisable claim result: {error}"))
        })?;
        self.holder_update(
            HolderOp::Complete,
            key,
            owner,
            Some((
                "SET #state = :completed, #result = :result, completed_at = :now",
                vec![
                    (":completed", s(ClaimState::Completed.as_str())),
                    (":result", s(result)),
                ],
            )),
            now,
        )
        .await
    }

    async fn release(&self, key: &ClaimKey, owner: OwnerToken) -> StoreResult<()> {
        let now = self.clock.now();
        self.holder_update(HolderOp::Release, key, owner, None, now)
            .await
    }

    async fn adopt_ambiguous(&self, key: &ClaimKey, lease: Duration) -> StoreResult<ClaimGrant> {
        let now = self.clock.now();
        let lease_expires_at = logic::lease_end(now, lease)?;
        let owner = OwnerToken::generate();
        for _ in 0..RACE_ATTEMPTS {
            let stored = self.read_claim(key).await?;
            if let Some(stored) = stored.as_ref().filter(|s| s.owner == owner) {
                // Our adoption landed although its answer was lost (SDK retry).
                return Ok(ClaimGrant {
                    owner,
                    attempt: stored.attempts,
                    lease_expires_at: stored.lease_expires_at,
                    taken_over: true,
                });
            }
            logic::check_adoptable(key, stored.as_ref(), now)?;
            let Some(stored) = stored else { continue };
            let attempt = stored.attempts + 1;
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(claim_item_key(key)))
                .update_expression(
                    "SET #owner = :owner, lease = :lease, attempts = :attempt, \
                     updated_at = :now, #rev = :next",
                )
                .condition_expression("#rev = :seen AND #state = :sending")
                .expression_attribute_names("#owner", "owner")
                .expression_attribute_names("#rev", "revision")
                .expression_attribute_names("#state", "state")
                .expression_attribute_values(":owner", s(owner.to_string()))
                .expression_attribute_values(":lease", n(millis(lease_expires_at)))
                .expression_attribute_values(":attempt", n(i64::from(attempt)))
                .expression_attribute_values(":now", n(millis(now)))
                .expression_attribute_values(":seen", n_u64(stored.revision))
                .expression_attribute_values(":next", n_u64(stored.revision + 1))
                .expression_attribute_values(":sending", s(ClaimState::Sending.as_str()))
                .send()
                .await;
            match result {
                Ok(_) => {
                    return Ok(ClaimGrant {
                        owner,
                        attempt,
                        lease_expires_at,
                        taken_over: true,
                    });
                }
                Err(error) if conditional_failure(&error).is_some() => continue,
                Err(error) => return Err(classify("UpdateItem", &error)),
            }
        }
        Err(StoreError::Unavailable {
            message: format!("claim `{key}` kept changing under concurrent writers"),
        })
    }

    async fn claim_snapshot(&self, key: &ClaimKey) -> StoreResult<Option<ClaimSnapshot>> {
        let now = self.clock.now();
        Ok(self
            .read_claim(key)
            .await?
            .filter(|claim| !claim.is_expired(now))
            .map(|claim| claim.snapshot()))
    }
}

/// Claim and record in one item: a trigger is opened by one `PutItem` (claim + record, and
/// the claim already `sending` for a create) and decided by one fenced `UpdateItem` (record
/// + completion), with its new pipeline's binding put alongside.
#[async_trait]
impl TriggerLedger for DynamoStore {
    async fn open_trigger(
        &self,
        key: &ClaimKey,
        fingerprint: &Fingerprint,
        lease: Duration,
        record: TriggerRecord,
        sending: bool,
    ) -> StoreResult<OpenedTrigger> {
        let now = self.clock.now();
        if record.id != key.record_id() {
            return Err(StoreError::invalid(format!(
                "record {} is not the record of claim `{key}`",
                record.id
            )));
        }
        let record = logic::prepare_create(record, &self.settings, now)?;
        let attributes = record_item(&record, now)?;
        // Concurrent: the (once per process) source registration costs no round trip.
        let (claimed, registered) = futures::join!(
            self.claim_with(key, fingerprint, lease, Some(&attributes), sending),
            self.register_source(&record.source, now)
        );
        let (outcome, won_by, old) = claimed?;
        registered?;
        let found = old.as_ref().map(record_in_item).transpose()?.flatten();
        let opened = match (&outcome, won_by) {
            (ClaimOutcome::Won(_), Some(WonBy::FreshItem)) => OpenedTrigger {
                outcome,
                // A lost answer retried by the SDK: the stored record is ours.
                record: Some(found.unwrap_or(record)),
                marked_sending: sending,
            },
            (ClaimOutcome::Won(_), _) => {
                let record = match found {
                    Some(existing) => existing,
                    // A claim-only item (e.g. a claim whose holder died before it could
                    // write a record through the narrow traits): create it now.
                    None => match self.create_record(record.clone()).await {
                        Ok(created) => created,
                        Err(StoreError::RecordExists { id }) => self
                            .get_record(id)
                            .await?
                            .ok_or(StoreError::RecordNotFound { id })?,
                        Err(error) => return Err(error),
                    },
                };
                OpenedTrigger {
                    outcome,
                    record: Some(record),
                    marked_sending: false,
                }
            }
            _ => OpenedTrigger {
                outcome,
                record: found.filter(|record| record.expires_at > now),
                marked_sending: false,
            },
        };
        Ok(opened)
    }

    async fn settle_trigger(
        &self,
        key: &ClaimKey,
        owner: OwnerToken,
        lease: Duration,
        record: TriggerRecord,
    ) -> StoreResult<TriggerRecord> {
        let now = self.clock.now();
        if record.id != key.record_id() {
            // A retry attempt's claim lives apart from the record it decides.
            self.renew(key, owner, lease).await?;
            let saved = self.update_record(record).await?;
            self.complete(key, owner, &ClaimResult::trigger(saved.id))
                .await
                .or_else(|error| match error {
                    StoreError::LostClaim { .. } => Ok(()),
                    other => Err(other),
                })?;
            return Ok(saved);
        }
        let (record, expected) = logic::prepare_update(record, &self.settings, now)?;
        let mut update = RecordUpdate::of(&record_item(&record, now)?, RecordWrite::Update);
        // No `result` and no `completed_at`: a completed claim without them names its own
        // record and was completed at its last update (`claim_from_item`).
        update.also_set("#state = :completed, updated_at = :now, #rev = #rev + :one");
        update.names.insert("#state".to_owned(), "state".to_owned());
        update.names.insert("#owner".to_owned(), "owner".to_owned());
        update
            .names
            .insert("#rev".to_owned(), "revision".to_owned());
        update.value(":completed", s(ClaimState::Completed.as_str()));
        update.value(":now", n(millis(now)));
        update.value(":one", n(1));
        update.value(":owner", s(owner.to_string()));
        update.value(":in_progress", s(ClaimState::InProgress.as_str()));
        update.value(":sending", s(ClaimState::Sending.as_str()));
        update.value(":expected", n_u64(expected));
        update.value(":now_s", n(now.timestamp()));
        let write = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(claim_item_key(key)))
            .update_expression(update.expression())
            // The fence: still this owner's claim, still undecided, and the record as read.
            .condition_expression(
                "#owner = :owner AND #state IN (:in_progress, :sending) AND #ttl > :now_s \
                 AND #ver = :expected",
            )
            .set_expression_attribute_names(Some(update.names))
            .set_expression_attribute_values(Some(update.values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send();
        // The pipeline is this holder's own create's answer: nobody else can hold it, so
        // its binding need not precede the record.
        let binding = async {
            match &record.pipeline {
                Some(pipeline) => self.bind_pipeline(&pipeline.id, &record, now).await,
                None => Ok(()),
            }
        };
        let (written, bound) = futures::join!(write, binding);
        bound?;
        let old = match written {
            Ok(_) => return Ok(record),
            Err(error) => {
                conditional_failure(&error).ok_or_else(|| classify("UpdateItem", &error))?
            }
        };
        let old = match old {
            Some(old) => Some(old),
            None => self.get(trigger_pk(record.id), "TRIGGER").await?,
        };
        let claim = old
            .as_ref()
            .map(|item| claim_from_item(key, item))
            .transpose()?
            .flatten();
        let stored = old.as_ref().map(record_in_item).transpose()?.flatten();
        match claim {
            // The SDK retried a write whose answer was lost: it is done, and it was ours.
            Some(claim)
                if claim.owner == owner
                    && claim.state == ClaimState::Completed
                    && stored.as_ref() == Some(&record) =>
            {
                Ok(record)
            }
            Some(claim)
                if claim.owner == owner
                    && claim.state != ClaimState::Completed
                    && !claim.is_expired(now) =>
            {
                Err(StoreError::StaleRecord { id: record.id })
            }
            _ => Err(StoreError::LostClaim { key: key.clone() }),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Trigger records
// ---------------------------------------------------------------------------------------

/// The record's attribute: its JSON, deflated (a scheduled record of ~1.2 KB of JSON
/// is ~500 bytes), so the item stays under the 1 KB of one write unit.
const RECORD_BODY: &str = "r";
/// The record's optimistic-concurrency version (conditions compare it).
const RECORD_VERSION: &str = "ver";

fn deflate(json: &[u8]) -> StoreResult<Vec<u8>> {
    use std::io::Write as _;
    let mut encoder = flate2::write::DeflateEncoder::new(
        Vec::with_capacity(json.len() / 2),
        flate2::Compression::best(),
    );
    encoder
        .write_all(json)
        .and_then(|()| encoder.finish())
        .map_err(|error| StoreError::invalid(format!("cannot compress a record: {error}")))
}

fn inflate(bytes: &[u8]) -> StoreResult<Vec<u8>> {
    use std::io::Read as _;
    let mut json = Vec::with_capacity(bytes.len() * 3);
    flate2::read::DeflateDecoder::new(bytes)
        .take(MAX_RECORD_BYTES as u64 * 4)
        .read_to_end(&mut json)
        .map_err(|error| StoreError::corrupt("trigger record", error.to_string()))?;
    Ok(json)
}

/// Record fields the item says anyway (`id` in the key, `version` in `ver`) or whose
/// defaults are restored on reading: left out of the stored body, where every byte is paid
/// for on each write.
fn stored_body(record: &TriggerRecord) -> StoreResult<Vec<u8>> {
    let mut value = serde_json::to_value(record)
        .map_err(|error| StoreError::invalid(format!("unserialisable record: {error}")))?;
    if let Some(fields) = value.as_object_mut() {
        fields.remove("id");
        fields.remove("version");
        if fields.get("schema_version") == Some(&serde_json::json!(SCHEMA_VERSION)) {
            fields.remove("schema_version");
        }
        if fields.get("workflows") == Some(&serde_json::json!([])) {
            fields.remove("workflows");
        }
        if fields.get("pipeline_final") == Some(&serde_json::json!(false)) {
            fields.remove("pipeline_final");
        }
    }
    serde_json::to_vec(&value)
        .map_err(|error| StoreError::invalid(format!("unserialisable record: {error}")))
}

/// A record's `retry_due` sort key: its due time, never earlier than `now` (the writer's
/// clock), so that the sweep's cursor, which stays [`SWEEP_MARGIN`] behind its reader's
/// clock, is never already past an entry when it is written.
fn retry_entry_key(due: DateTime<Utc>, now: DateTime<Utc>) -> String {
    sort_time(due.max(now))
}

/// The item of `record` as written at `now`. A record in the retry index has its entry
/// keys; one that is not leaves whatever entry it had in place (see [`SWEEP_SK`]).
fn record_item(record: &TriggerRecord, now: DateTime<Utc>) -> StoreResult<Item> {
    let json = stored_body(record)?;
    let body = deflate(&json)?;
    if body.len() > MAX_RECORD_BYTES {
        return Err(StoreError::invalid(format!(
            "record {} is {} bytes compressed; the limit is {MAX_RECORD_BYTES}",
            record.id,
            body.len()
        )));
    }
    let created = created_sort_key(record);
    // Only keys and the body: every attribute is paid for on every write of the item.
    let mut item: Item = HashMap::from([
        (PARTITION_KEY.to_owned(), s(trigger_pk(record.id))),
        (SORT_KEY.to_owned(), s("TRIGGER")),
        (RECORD_VERSION.to_owned(), n_u64(record.version)),
        (
            RECORD_BODY.to_owned(),
            AttributeValue::B(aws_smithy_types::Blob::new(body)),
        ),
        (TTL_ATTRIBUTE.to_owned(), n(ttl_seconds(record.expires_at))),
        (SOURCE_KEY.to_owned(), s(source_pk(&record.source))),
        (CREATED_KEY.to_owned(), s(created.clone())),
    ]);
    // Sparse: a root trigger is found by its id, so only descendants enter `by_origin`.
    if record.origin != record.id {
        item.insert(ORIGIN_KEY.to_owned(), s(origin_pk(record.origin)));
    }
    if let Some(retry_at) = record.retry_at.filter(|_| record.in_retry_index()) {
        item.insert(
            RETRY_SHARD_KEY.to_owned(),
            s(retry_shard_pk(retry_shard(record.id))),
        );
        item.insert(RETRY_TIME_KEY.to_owned(), s(retry_entry_key(retry_at, now)));
    }
    Ok(item)
}

/// A record's attributes as one `UpdateItem` (`SET` each), leaving any claim attributes of
/// the item alone. Names are `#r`, `#ver`, `#ttl` and `#a<n>`; values `:a<n>`.
struct RecordUpdate {
    set: Vec<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

/// Index keys fixed when the record is created (its source, creation time and origin never
/// change): an update of a stored record does not send them again.
const CREATION_KEYS: [&str; 3] = [SOURCE_KEY, CREATED_KEY, ORIGIN_KEY];

/// Whether the `UpdateItem` creates the record in its item or updates the stored one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RecordWrite {
    Create,
    Update,
}

impl RecordUpdate {
    fn of(item: &Item, write: RecordWrite) -> Self {
        let mut update = RecordUpdate {
            set: Vec::new(),
            names: HashMap::from([
                ("#r".to_owned(), RECORD_BODY.to_owned()),
                ("#ver".to_owned(), RECORD_VERSION.to_owned()),
                ("#ttl".to_owned(), TTL_ATTRIBUTE.to_owned()),
            ]),
            values: HashMap::new(),
        };
        let mut attributes: Vec<(&String, &AttributeValue)> = item
            .iter()
            .filter(|(name, _)| *name != PARTITION_KEY && *name != SORT_KEY)
            .filter(|(name, _)| {
                write == RecordWrite::Create || !CREATION_KEYS.contains(&name.as_str())
            })
            .collect();
        attributes.sort_by(|a, b| a.0.cmp(b.0));
        for (i, (name, value)) in attributes.into_iter().enumerate() {
            let placeholder = match name.as_str() {
                RECORD_BODY => "#r".to_owned(),
                RECORD_VERSION => "#ver".to_owned(),
                TTL_ATTRIBUTE => "#ttl".to_owned(),
                _ => {
                    let placeholder = format!("#a{i}");
                    update.names.insert(placeholder.clone(), name.clone());
                    placeholder
                }
            };
            update.set.push(format!("{placeholder} = :a{i}"));
            update.values.insert(format!(":a{i}"), value.clone());
        }
        update
    }

    fn value(&mut self, name: &str, value: AttributeValue) {
        self.values.insert(name.to_owned(), value);
    }

    /// Adds `SET` clauses (e.g. the claim's completion).
    fn also_set(&mut self, clause: &str) {
        self.set.push(clause.to_owned());
    }

    fn expression(&self) -> String {
        format!("SET {}", self.set.join(", "))
    }
}

/// The record in `item`, if it holds one (an item may hold only a claim).
fn record_in_item(item: &Item) -> StoreResult<Option<TriggerRecord>> {
    if item.contains_key(RECORD_BODY) {
        record_from_item(item).map(Some)
    } else {
        Ok(None)
    }
}

fn record_from_item(item: &Item) -> StoreResult<TriggerRecord> {
    let body = match item.get(RECORD_BODY) {
        Some(AttributeValue::B(blob)) => blob.as_ref(),
        _ => {
            return Err(StoreError::corrupt(
                "trigger record",
                format!("attribute `{RECORD_BODY}` is not binary"),
            ));
        }
    };
    let corrupt =
        |error: serde_json::Error| StoreError::corrupt("trigger record", error.to_string());
    let mut value: serde_json::Value = serde_json::from_slice(&inflate(body)?).map_err(corrupt)?;
    let r = Reader::new(item, "trigger record");
    let id = r
        .s(PARTITION_KEY)?
        .strip_prefix("TRIGGER#")
        .ok_or_else(|| StoreError::corrupt("trigger record", "not a trigger record's key"))?
        .to_owned();
    let version = r.n(RECORD_VERSION)?;
    if let Some(fields) = value.as_object_mut() {
        fields.insert("id".to_owned(), serde_json::Value::String(id));
        fields.insert("version".to_owned(), serde_json::json!(version));
        fields
            .entry("schema_version")
            .or_insert(serde_json::json!(SCHEMA_VERSION));
    }
    serde_json::from_value(value).map_err(corrupt)
}

/// `created_sk`: a record's creation, sortable, then its id — compact (fixed-width hex
/// microseconds since the epoch, the id without dashes: 46 characters) because it is
/// stored twice in a chained record's item and every byte of the item is paid for on each
/// of its writes.
fn created_sort_key(record: &TriggerRecord) -> String {
    format!(
        "{}#{}",
        sort_time(record.created_at),
        record.id.as_uuid().simple()
    )
}

/// The all-history listing's cursor scope.
const RECENT_SCOPE: &str = "recent";

/// An all-history cursor that continues after `last` (its `created_sk`).
fn recent_cursor(last: &TriggerRecord) -> StoreResult<super::Cursor> {
    cursor::encode(RECENT_SCOPE, &created_sort_key(last))
}

/// One newest-first Query on a GSI; `condition` uses `:pk` (and optionally `:prefix`).
struct IndexQuery {
    index: &'static str,
    condition: &'static str,
    values: Vec<(&'static str, String)>,
}

impl DynamoStore {
    /// Records that `source` has records (one tiny item per source in the `SOURCES`
    /// partition, which [`list_recent`](HistoryStore::list_recent) walks). Written once per
    /// source per process and again each half retention (its expiry outlives the records
    /// it lists), so a warm trigger never pays for it.
    async fn register_source(&self, source: &TriggerSource, now: DateTime<Utc>) -> StoreResult<()> {
        let sk = source_pk(source);
        let refresh_after = logic::to_delta(self.settings.retention / 2);
        let fresh = self
            .sources_seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&sk)
            .is_some_and(|at| now - *at < refresh_after);
        if fresh {
            return Ok(());
        }
        let expires =
            logic::retention_end(now, &self.settings) + logic::to_delta(self.settings.retention);
        self.client
            .put_item()
            .table_name(&self.table)
            .item(PARTITION_KEY, s(SOURCES_PARTITION))
            .item(SORT_KEY, s(sk.clone()))
            .item(TTL_ATTRIBUTE, n(ttl_seconds(expires)))
            .send()
            .await
            .map_err(|error| classify("PutItem", &error))?;
        self.sources_seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(sk, now);
        Ok(())
    }

    /// Every item of one small partition (consistent, all pages), optionally only the sort
    /// keys starting with `prefix`: pause flags, sources, a join generation's arrivals.
    async fn whole_partition(&self, pk: &str, prefix: Option<&str>) -> StoreResult<Vec<Item>> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression(match prefix {
                    Some(_) => "pk = :pk AND begins_with(sk, :prefix)",
                    None => "pk = :pk",
                })
                .expression_attribute_values(":pk", s(pk))
                .consistent_read(true)
                .set_exclusive_start_key(start.take());
            if let Some(prefix) = prefix {
                query = query.expression_attribute_values(":prefix", s(prefix));
            }
            let output = query
                .send()
                .await
                .map_err(|error| classify("Query", &error))?;
            items.extend(output.items.unwrap_or_default());
            start = output.last_evaluated_key;
            if start.is_none() {
                return Ok(items);
            }
        }
    }

    /// Every registered source's `by_source` partition key.
    async fn registered_sources(&self) -> StoreResult<Vec<String>> {
        let now = self.clock.now();
        let mut sources = Vec::new();
        for item in self.whole_partition(SOURCES_PARTITION, None).await? {
            let r = Reader::new(&item, "source registration");
            if from_ttl_seconds(r.n(TTL_ATTRIBUTE)?)? > now {
                sources.push(r.s(SORT_KEY)?.to_owned());
            }
        }
        Ok(sources)
    }

    /// Reads up to `limit` live records from `query`, starting after `start`; returns
    /// them and where the next read starts (`None`: the partition is exhausted).
    async fn query_records(
        &self,
        query: &IndexQuery,
        mut start: Option<Item>,
        limit: usize,
        now: DateTime<Utc>,
        records: &mut Vec<TriggerRecord>,
    ) -> StoreResult<Option<Item>> {
        loop {
            let remaining = limit.saturating_sub(records.len());
            let mut request = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(query.index)
                .key_condition_expression(query.condition)
                .scan_index_forward(false)
                .limit(i32::try_from(remaining).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take());
            for (name, value) in &query.values {
                request = request.expression_attribute_values(*name, s(value.clone()));
            }
            let output = request
                .send()
                .await
                .map_err(|error| classify("Query", &error))?;
            // The indexes hold keys only: the records are read from the table, in the
            // index's order.
            for record in self.get_records(output.items()).await? {
                // TTL deletion lags; expiry is decided here.
                if record.expires_at > now {
                    records.push(record);
                }
            }
            start = output.last_evaluated_key;
            if start.is_none() || records.len() >= limit {
                return Ok(start);
            }
        }
    }

    /// Up to `limit` records of one `retry_due` shard whose retry has come, oldest first,
    /// reading the entries from `cursor` (the shard's cursor, `""` before the first sweep)
    /// up to `now`. Says where the first record still due is, which the cursor may not
    /// pass; a record due for longer than [`STUCK_AFTER`] has its entry moved to `now`
    /// instead (its record is not rewritten).
    async fn due_in_shard(
        &self,
        shard: u32,
        cursor: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<ShardRead> {
        let stuck = sort_time(now - STUCK_AFTER);
        let mut read = ShardRead::default();
        let mut start: Option<Item> = None;
        // Oldest due first. Entry keys are times only (the entry names its item anyway) and
        // need not be unique: both bounds are inclusive, so a cursor on a shared key re-reads
        // its equals rather than skipping one.
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(RETRY_DUE)
                .expression_attribute_values(":pk", s(retry_shard_pk(shard)))
                .expression_attribute_values(":due", s(sort_time(now)));
            // A key condition's value may not be empty: no cursor yet is no lower bound.
            query = if cursor.is_empty() {
                query.key_condition_expression("rp = :pk AND rs <= :due")
            } else {
                query
                    .key_condition_expression("rp = :pk AND rs BETWEEN :from AND :due")
                    .expression_attribute_values(":from", s(cursor))
            };
            let output = query
                .set_exclusive_start_key(start.take())
                .limit(i32::try_from(limit).unwrap_or(i32::MAX))
                .send()
                .await
                .map_err(|error| classify("Query", &error))?;
            // By item key: an entry names its item.
            let mut records: HashMap<String, TriggerRecord> = self
                .get_records(output.items())
                .await?
                .into_iter()
                .map(|record| (trigger_pk(record.id), record))
                .collect();
            let mut moves = Vec::new();
            for entry in output.items() {
                let Some(AttributeValue::S(entry_key)) = entry.get(RETRY_TIME_KEY) else {
                    continue;
                };
                read.last = Some(entry_key.clone());
                let Some(record) = entry
                    .get(PARTITION_KEY)
                    .and_then(|pk| pk.as_s().ok())
                    .and_then(|pk| records.remove(pk))
                else {
                    continue;
                };
                // The index is eventually consistent and keeps decided records' entries:
                // the record says whether it is due.
                let still_due =
                    record.retry_at.is_some_and(|at| at <= now) && record.in_retry_index();
                if still_due && record.expires_at > now {
                    // A due record beyond `limit` is not returned now: it holds the cursor
                    // like any other that stays due.
                    let taken = read.due.len() < limit;
                    if taken && *entry_key < stuck {
                        moves.push((record.id, record.version));
                    } else if read.first_due.is_none() {
                        read.first_due = Some(entry_key.clone());
                    }
                    if taken {
                        read.due.push(record);
                    }
                }
            }
            futures::future::try_join_all(
                moves
                    .into_iter()
                    .map(|(id, version)| self.move_retry_entry(id, version, now)),
            )
            .await?;
            start = output.last_evaluated_key;
            if start.is_none() {
                read.exhausted = true;
                return Ok(read);
            }
            if read.due.len() >= limit {
                return Ok(read);
            }
        }
    }

    /// Moves a due record's `retry_due` entry to `now`, unless the record has changed since
    /// it was read (its writer placed the entry).
    async fn move_retry_entry(
        &self,
        id: TriggerId,
        version: u64,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PARTITION_KEY, s(trigger_pk(id)))
            .key(SORT_KEY, s("TRIGGER"))
            .update_expression("SET rs = :key")
            .condition_expression("#ver = :version")
            .expression_attribute_names("#ver", RECORD_VERSION)
            .expression_attribute_values(":key", s(sort_time(now)))
            .expression_attribute_values(":version", n_u64(version))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if conditional_failure(&error).is_some() => Ok(()),
            Err(error) => Err(classify("UpdateItem", &error)),
        }
    }

    /// The sweep's cursors, one per `retry_due` shard (remembered by the process; read
    /// from `SCHEDULER` / `SWEEP` when it has none).
    async fn sweep_cursors(&self) -> StoreResult<Vec<String>> {
        let known = self
            .sweep_cursors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        if let Some(cursors) = known {
            return Ok(cursors);
        }
        let item = self.get(SCHEDULER_PK.to_owned(), SWEEP_SK).await?;
        let cursors: Vec<String> = (0..RETRY_SHARDS)
            .map(|shard| {
                match item
                    .as_ref()
                    .and_then(|item| item.get(&format!("c{shard}")))
                {
                    Some(AttributeValue::S(cursor)) => cursor.clone(),
                    _ => String::new(),
                }
            })
            .collect();
        // Remembered even when there is no item yet: an idle sweep reads it once a process.
        *self
            .sweep_cursors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(cursors.clone());
        Ok(cursors)
    }

    /// Saves the sweep's cursors. Unconditional: two sweeps racing may move a cursor back,
    /// which only means entries are read again, never that one is skipped.
    async fn save_sweep_cursors(&self, cursors: Vec<String>) -> StoreResult<()> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(PARTITION_KEY, s(SCHEDULER_PK))
            .item(SORT_KEY, s(SWEEP_SK));
        for (shard, cursor) in cursors.iter().enumerate() {
            put = put.item(format!("c{shard}"), s(cursor));
        }
        put.send()
            .await
            .map_err(|error| classify("PutItem", &error))?;
        *self
            .sweep_cursors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(cursors);
        Ok(())
    }

    /// The records behind index entries (keys only), in the entries' order, by
    /// `BatchGetItem` (strongly consistent, up to 100 keys a call); entries whose item is
    /// gone (TTL, purge) are left out.
    async fn get_records(&self, entries: &[Item]) -> StoreResult<Vec<TriggerRecord>> {
        let keys: Vec<Item> = entries
            .iter()
            .filter_map(|entry| {
                Some(HashMap::from([
                    (PARTITION_KEY.to_owned(), entry.get(PARTITION_KEY)?.clone()),
                    (SORT_KEY.to_owned(), entry.get(SORT_KEY)?.clone()),
                ]))
            })
            .collect();
        let mut found: HashMap<String, TriggerRecord> = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(100) {
            let mut pending = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(chunk.to_vec()))
                    .consistent_read(true)
                    .build()
                    .map_err(|error| StoreError::Internal {
                        message: error.to_string(),
                    })?,
            );
            // Unprocessed keys (throttling) are asked again, a bounded number of times.
            for _ in 0..RACE_ATTEMPTS {
                let Some(request) = pending.take() else { break };
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|error| classify("BatchGetItem", &error))?;
                for item in output
                    .responses
                    .as_ref()
                    .and_then(|r| r.get(&self.table))
                    .into_iter()
                    .flatten()
                {
                    let pk = Reader::new(item, "trigger record").s(PARTITION_KEY)?;
                    if let Some(record) = record_in_item(item)? {
                        found.insert(pk.to_owned(), record);
                    }
                }
                pending = output
                    .unprocessed_keys
                    .and_then(|mut left| left.remove(&self.table))
                    .filter(|left| !left.keys().is_empty());
            }
            if pending.is_some() {
                return Err(StoreError::Unavailable {
                    message: "BatchGetItem kept leaving keys unprocessed".into(),
                });
            }
        }
        Ok(keys
            .iter()
            .filter_map(|key| match key.get(PARTITION_KEY) {
                Some(AttributeValue::S(pk)) => found.remove(pk),
                _ => None,
            })
            .collect())
    }

    async fn list_index(
        &self,
        scope: &str,
        query: IndexQuery,
        page: PageRequest,
    ) -> StoreResult<Page<TriggerRecord>> {
        let now = self.clock.now();
        let limit = page.clamped_limit();
        let start = page
            .cursor
            .as_ref()
            .map(|c| cursor::decode::<BTreeMap<String, String>>(scope, c))
            .transpose()?
            .map(strings_to_key);
        let mut items = Vec::with_capacity(limit);
        let next = self
            .query_records(&query, start, limit, now, &mut items)
            .await?;
        let next = next
            .map(|key| cursor::encode(scope, &key_to_strings(&key)?))
            .transpose()?;
        Ok(Page { items, next })
    }

    /// Writes a record, conditional on its version. A newly named pipeline is bound to the
    /// record first, by a conditional put of its binding (a pipeline can never be attributed
    /// to two records); no transaction: a binding whose record write then fails still names
    /// the trigger that created the pipeline, and the retried write finds it already bound.
    async fn write_record(
        &self,
        record: &TriggerRecord,
        expected_version: Option<u64>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let write = match expected_version {
            None => RecordWrite::Create,
            Some(_) => RecordWrite::Update,
        };
        let mut update = RecordUpdate::of(&record_item(record, now)?, write);
        // An update, not a put: the item may hold the record's claim, which stays.
        let condition = match expected_version {
            None => "attribute_not_exists(#r)".to_owned(),
            Some(version) => {
                update.value(":expected", n_u64(version));
                update.value(":now_s", n(now.timestamp()));
                "#ver = :expected AND #ttl > :now_s".to_owned()
            }
        };
        if let Some(pipeline) = &record.pipeline {
            self.bind_pipeline(&pipeline.id, record, now).await?;
        }
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PARTITION_KEY, s(trigger_pk(record.id)))
            .key(SORT_KEY, s("TRIGGER"))
            .update_expression(update.expression())
            .condition_expression(condition)
            .set_expression_attribute_names(Some(update.names))
            .set_expression_attribute_values(Some(update.values))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if conditional_failure(&error).is_some() => {
                self.record_write_refused(record, expected_version, now)
                    .await
            }
            Err(error) => Err(classify("UpdateItem", &error)),
        }
    }

    /// Binds `pipeline_id` to `record` unless another live record holds it.
    async fn bind_pipeline(
        &self,
        pipeline_id: &str,
        record: &TriggerRecord,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(PARTITION_KEY, s(pipeline_pk(pipeline_id)))
            .item(SORT_KEY, s("PIPELINE"))
            .item("trigger_id", s(record.id.to_string()))
            .item(TTL_ATTRIBUTE, n(ttl_seconds(record.expires_at)))
            .condition_expression("attribute_not_exists(pk) OR trigger_id = :id OR #ttl <= :now_s")
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":id", s(record.id.to_string()))
            .expression_attribute_values(":now_s", n(now.timestamp()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if conditional_failure(&error).is_some() => {
                match self.pipeline_recorded(pipeline_id).await? {
                    Some(trigger_id) if trigger_id != record.id => {
                        Err(StoreError::PipelineAlreadyRecorded {
                            pipeline_id: pipeline_id.to_owned(),
                            trigger_id,
                        })
                    }
                    _ => Err(StoreError::Unavailable {
                        message: format!("pipeline {pipeline_id} binding changed concurrently"),
                    }),
                }
            }
            Err(error) => Err(classify("PutItem", &error)),
        }
    }

    /// Why a record write's condition failed: it exists (create), or it is gone or newer
    /// (update) — unless the stored record is exactly ours, i.e. the SDK retried a write
    /// whose answer was lost, which is success.
    async fn record_write_refused(
        &self,
        record: &TriggerRecord,
        expected_version: Option<u64>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let id = record.id;
        match self.get_record_at(id, now).await? {
            Some(stored) if stored == *record => Ok(()),
            Some(_) if expected_version.is_none() => Err(StoreError::RecordExists { id }),
            Some(_) => Err(StoreError::StaleRecord { id }),
            None if expected_version.is_none() => Err(StoreError::RecordExists { id }),
            None => Err(StoreError::RecordNotFound { id }),
        }
    }

    async fn get_record_at(
        &self,
        id: TriggerId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<TriggerRecord>> {
        let Some(item) = self.get(trigger_pk(id), "TRIGGER").await? else {
            return Ok(None);
        };
        Ok(record_in_item(&item)?.filter(|record| record.expires_at > now))
    }
}

#[async_trait]
impl HistoryStore for DynamoStore {
    async fn create_record(&self, record: TriggerRecord) -> StoreResult<TriggerRecord> {
        let now = self.clock.now();
        let record = logic::prepare_create(record, &self.settings, now)?;
        // Concurrent: the registration costs no round trip of its own.
        let (written, registered) = futures::join!(
            self.write_record(&record, None, now),
            self.register_source(&record.source, now)
        );
        written?;
        registered?;
        Ok(record)
    }

    async fn update_record(&self, record: TriggerRecord) -> StoreResult<TriggerRecord> {
        let now = self.clock.now();
        let (record, expected) = logic::prepare_update(record, &self.settings, now)?;
        self.write_record(&record, Some(expected), now).await?;
        Ok(record)
    }

    async fn get_record(&self, id: TriggerId) -> StoreResult<Option<TriggerRecord>> {
        self.get_record_at(id, self.clock.now()).await
    }

    async fn list_by_source(
        &self,
        source: &TriggerSource,
        page: PageRequest,
    ) -> StoreResult<Page<TriggerRecord>> {
        let pk = source_pk(source);
        let query = IndexQuery {
            index: BY_SOURCE,
            condition: "sp = :pk",
            values: vec![(":pk", pk.clone())],
        };
        self.list_index(&pk, query, page).await
    }

    /// No index: a CLI filter, served by walking the recent listing (a project's records
    /// are a subset of it) so that no write pays for it.
    async fn list_by_project(
        &self,
        project: &str,
        page: PageRequest,
    ) -> StoreResult<Page<TriggerRecord>> {
        let wanted = logic::canonical_project(project);
        let limit = page.clamped_limit();
        let mut cursor = page.cursor;
        let mut items = Vec::with_capacity(limit);
        loop {
            let recent = self
                .list_recent(PageRequest {
                    limit: super::MAX_PAGE_SIZE,
                    cursor: cursor.take(),
                })
                .await?;
            for record in recent.items {
                if logic::canonical_project(&record.target.project) == wanted {
                    items.push(record);
                    if items.len() == limit {
                        // Continue after the last one returned, not after the page read.
                        let next = match items.last() {
                            Some(last) => Some(recent_cursor(last)?),
                            None => None,
                        };
                        return Ok(Page { items, next });
                    }
                }
            }
            match recent.next {
                Some(next) => cursor = Some(next),
                None => return Ok(Page { items, next: None }),
            }
        }
    }

    /// `by_origin` holds descendants by creation (its sort key is `created_sk`, stored once
    /// for both indexes); a project is filtered here (an origin's tree is small), and the
    /// root, not in the sparse index, comes last, read by id.
    async fn list_by_origin(
        &self,
        origin: TriggerId,
        project: Option<&str>,
        page: PageRequest,
    ) -> StoreResult<Page<TriggerRecord>> {
        let now = self.clock.now();
        let pk = origin_pk(origin);
        let wanted = project.map(logic::canonical_project);
        let scope = match &wanted {
            Some(project) => format!("{pk}#{project}"),
            None => pk.clone(),
        };
        let limit = page.clamped_limit();
        let position = page
            .cursor
            .as_ref()
            .map(|c| cursor::decode::<BTreeMap<String, String>>(&scope, c))
            .transpose()?;
        let matches = |record: &TriggerRecord| {
            record.expires_at > now
                && wanted
                    .as_deref()
                    .is_none_or(|p| logic::canonical_project(&record.target.project) == p)
        };
        let mut items = Vec::with_capacity(limit);
        if !position
            .as_ref()
            .is_some_and(|p| p.contains_key(ROOT_CURSOR))
        {
            let mut start = position.map(strings_to_key);
            loop {
                let output = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .index_name(BY_ORIGIN)
                    .key_condition_expression("op = :pk")
                    .expression_attribute_values(":pk", s(pk.clone()))
                    .scan_index_forward(false)
                    .limit(i32::try_from(limit).unwrap_or(i32::MAX))
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(|error| classify("Query", &error))?;
                for record in self.get_records(output.items()).await? {
                    if !matches(&record) {
                        continue;
                    }
                    let key = HashMap::from([
                        (PARTITION_KEY.to_owned(), s(trigger_pk(record.id))),
                        (SORT_KEY.to_owned(), s("TRIGGER")),
                        (ORIGIN_KEY.to_owned(), s(pk.clone())),
                        (CREATED_KEY.to_owned(), s(created_sort_key(&record))),
                    ]);
                    items.push(record);
                    if items.len() >= limit {
                        // Continue after the last one returned, not after the page read.
                        let next = cursor::encode(&scope, &key_to_strings(&key)?)?;
                        return Ok(Page {
                            items,
                            next: Some(next),
                        });
                    }
                }
                start = output.last_evaluated_key;
                if start.is_none() {
                    break;
                }
            }
        }
        if items.len() >= limit {
            let position = BTreeMap::from([(ROOT_CURSOR.to_owned(), String::new())]);
            return Ok(Page {
                items,
                next: Some(cursor::encode(&scope, &position)?),
            });
        }
        if let Some(root) = self.get_record(origin).await?
            && root.origin == root.id
            && matches(&root)
        {
            items.push(root);
        }
        Ok(Page { items, next: None })
    }

    /// Newest first across every source: each registered source's `by_source` partition
    /// read from the same boundary and merged. No index is shared by all records (it
    /// would be one hot partition); the price is one Query per source per page, paid by
    /// the reader (console, CLI), never by a trigger.
    async fn list_recent(&self, page: PageRequest) -> StoreResult<Page<TriggerRecord>> {
        let now = self.clock.now();
        let limit = page.clamped_limit();
        let before: Option<String> = page
            .cursor
            .as_ref()
            .map(|c| cursor::decode::<String>(RECENT_SCOPE, c))
            .transpose()?;
        let sources = self.registered_sources().await?;
        let mut reads = futures::stream::iter(sources.into_iter().map(|source_pk| {
            let before = before.clone();
            async move {
                let (condition, mut values) = match &before {
                    Some(_) => ("sp = :pk AND cs < :before", vec![(":pk", source_pk)]),
                    None => ("sp = :pk", vec![(":pk", source_pk)]),
                };
                if let Some(before) = before {
                    values.push((":before", before));
                }
                let query = IndexQuery {
                    index: BY_SOURCE,
                    condition,
                    values,
                };
                let mut records = Vec::new();
                let more = self
                    .query_records(&query, None, limit, now, &mut records)
                    .await?;
                StoreResult::Ok((records, more.is_some()))
            }
        }))
        .buffer_unordered(16);
        let mut items = Vec::new();
        let mut more = false;
        while let Some(read) = reads.next().await {
            let (records, partial) = read?;
            more |= partial;
            items.extend(records);
        }
        items.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.id.to_string().cmp(&a.id.to_string()))
        });
        if items.len() > limit {
            items.truncate(limit);
            more = true;
        }
        let next = match items.last() {
            Some(last) if more => Some(recent_cursor(last)?),
            _ => None,
        };
        Ok(Page { items, next })
    }

    async fn find_by_pipeline(&self, pipeline_id: &str) -> StoreResult<Option<TriggerRecord>> {
        match self.pipeline_recorded(pipeline_id).await? {
            Some(id) => self.get_record(id).await,
            None => Ok(None),
        }
    }

    async fn pipeline_recorded(&self, pipeline_id: &str) -> StoreResult<Option<TriggerId>> {
        let now = self.clock.now();
        let Some(item) = self.get(pipeline_pk(pipeline_id), "PIPELINE").await? else {
            return Ok(None);
        };
        let r = Reader::new(&item, "pipeline binding");
        if from_ttl_seconds(r.n(TTL_ATTRIBUTE)?)? <= now {
            return Ok(None);
        }
        r.s("trigger_id")?
            .parse()
            .map(Some)
            .map_err(|_| StoreError::corrupt("pipeline binding", "unreadable trigger id"))
    }

    /// Every shard of `retry_due` at once, each oldest due first, merged; each shard read
    /// from its cursor, which then moves up to what was read, never past a record still due
    /// nor closer than [`SWEEP_MARGIN`] to now. Nothing is written when it does not move.
    async fn due_for_retry(&self, limit: u32) -> StoreResult<Vec<TriggerRecord>> {
        let now = self.clock.now();
        let limit = limit.clamp(1, super::MAX_PAGE_SIZE) as usize;
        let cursors = self.sweep_cursors().await?;
        let shards = cursors
            .iter()
            .zip(0..RETRY_SHARDS)
            .map(|(cursor, shard)| self.due_in_shard(shard, cursor, now, limit));
        let reads = futures::future::try_join_all(shards).await?;
        let floor = sweep_floor(now);
        let mut moved = false;
        let mut next = Vec::with_capacity(cursors.len());
        for (cursor, read) in cursors.iter().zip(&reads) {
            let read_to = match (&read.last, read.exhausted) {
                (None, _) => cursor.clone(),
                (Some(_), true) => floor.clone(),
                (Some(last), false) => last.clone(),
            };
            let reached = [Some(read_to), read.first_due.clone(), Some(floor.clone())]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or_default();
            let advanced = reached > *cursor;
            moved |= advanced;
            next.push(if advanced { reached } else { cursor.clone() });
        }
        if moved {
            self.save_sweep_cursors(next).await?;
        }
        let mut due: Vec<TriggerRecord> = reads.into_iter().flat_map(|read| read.due).collect();
        due.sort_by(|a, b| a.retry_at.cmp(&b.retry_at).then(a.id.cmp(&b.id)));
        due.truncate(limit);
        Ok(due)
    }

    async fn purge_expired(&self, limit: u32) -> StoreResult<u64> {
        // Production relies on TTL for deletion (reads already ignore expired items); this
        // bounded scan is for local tables and tests, where TTL never runs.
        let now = self.clock.now();
        let mut purged = 0_u64;
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("#ttl <= :now_s")
                .projection_expression("pk, sk")
                .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
                .expression_attribute_values(":now_s", n(now.timestamp()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|error| classify("Scan", &error))?;
            for key in output.items() {
                if purged >= u64::from(limit) {
                    return Ok(purged);
                }
                let result = self
                    .client
                    .delete_item()
                    .table_name(&self.table)
                    .set_key(Some(key.clone()))
                    // Only if still expired: it may have been rewritten since the scan.
                    .condition_expression("#ttl <= :now_s")
                    .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
                    .expression_attribute_values(":now_s", n(now.timestamp()))
                    .send()
                    .await;
                match result {
                    Ok(_) => purged += 1,
                    Err(error) if conditional_failure(&error).is_some() => {}
                    Err(error) => return Err(classify("DeleteItem", &error)),
                }
            }
            start = output.last_evaluated_key;
            if start.is_none() {
                return Ok(purged);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Schedule state
// ---------------------------------------------------------------------------------------

#[async_trait]
impl ScheduleStateStore for DynamoStore {
    async fn scheduler_state(&self) -> StoreResult<Option<SchedulerState>> {
        let Some(item) = self
            .get(SCHEDULER_PK.to_owned(), SCHEDULER_STATE_SK)
            .await?
        else {
            return Ok(None);
        };
        let r = Reader::new(&item, "scheduler state");
        Ok(Some(SchedulerState {
            digest: r.s("digest")?.to_owned(),
            evaluated_through: r.time("evaluated_through")?,
            next_due: r.opt_time("next_due")?,
            behind: r.bool("behind")?,
            updated_at: r.time("updated_at")?,
        }))
    }

    async fn schedule_definitions(&self) -> StoreResult<Option<ScheduleDefinitions>> {
        let Some(item) = self
            .get(SCHEDULER_PK.to_owned(), SCHEDULER_DEFINITIONS_SK)
            .await?
        else {
            return Ok(None);
        };
        let r = Reader::new(&item, "schedule definitions");
        ScheduleDefinitions::from_stored(r.s("digest")?.to_owned(), r.s("schedules")?)
            .map(Some)
            .map_err(|reason| StoreError::corrupt("schedule definitions", reason))
    }

    async fn save_scheduler_state(
        &self,
        state: &SchedulerState,
        definitions: Option<&ScheduleDefinitions>,
    ) -> StoreResult<bool> {
        let now = self.clock.now();
        let mut item: Item = HashMap::from([
            (PARTITION_KEY.to_owned(), s(SCHEDULER_PK)),
            (SORT_KEY.to_owned(), s(SCHEDULER_STATE_SK)),
            ("type".to_owned(), s("scheduler_state")),
            ("digest".to_owned(), s(&state.digest)),
            (
                "evaluated_through".to_owned(),
                n(millis(state.evaluated_through)),
            ),
            ("behind".to_owned(), AttributeValue::Bool(state.behind)),
            ("updated_at".to_owned(), n(millis(now))),
            ("schema_version".to_owned(), n(i64::from(SCHEMA_VERSION))),
        ]);
        if let Some(next_due) = state.next_due {
            item.insert("next_due".to_owned(), n(millis(next_due)));
        }
        const NEVER_BACKWARDS: &str = "attribute_not_exists(pk) OR evaluated_through < :through";
        let through = n(millis(state.evaluated_through));
        let Some(definitions) = definitions else {
            // The usual due tick: only the small item changes.
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression(NEVER_BACKWARDS)
                .expression_attribute_values(":through", through)
                .send()
                .await;
            return match result {
                Ok(_) => Ok(true),
                Err(error) if conditional_failure(&error).is_some() => Ok(false),
                Err(error) => Err(classify("PutItem", &error)),
            };
        };
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(NEVER_BACKWARDS)
            .expression_attribute_values(":through", through)
            .build()
            .map_err(|error| StoreError::Internal {
                message: error.to_string(),
            })?;
        let entries = Put::builder()
            .table_name(&self.table)
            .item(PARTITION_KEY, s(SCHEDULER_PK))
            .item(SORT_KEY, s(SCHEDULER_DEFINITIONS_SK))
            .item("type", s("schedule_definitions"))
            .item("digest", s(&definitions.digest))
            .item("schedules", s(definitions.entries_json()))
            .item("updated_at", n(millis(now)))
            .item("schema_version", n(i64::from(SCHEMA_VERSION)))
            .build()
            .map_err(|error| StoreError::Internal {
                message: error.to_string(),
            })?;
        // One transaction: the state never names a digest whose definitions are not stored.
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put).build())
            .transact_items(TransactWriteItem::builder().put(entries).build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(error) => match cancellation_codes(&error) {
                Some(codes) if failed_condition(&codes, 0) => Ok(false),
                _ => Err(classify_transaction(&error)),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------
// Joins
// ---------------------------------------------------------------------------------------

impl DynamoStore {
    /// The join's state item and, for its generation, the arrivals (consistent reads).
    async fn read_join(&self, key: &ClaimKey) -> StoreResult<Option<JoinState>> {
        let Some(item) = self.get(join_pk(key), "STATE").await? else {
            return Ok(None);
        };
        let what = format!("join `{key}`");
        let r = Reader::new(&item, &what);
        let generation = u64::try_from(r.n("generation")?).unwrap_or(0);
        let status = JoinStatus::parse(r.s("status")?)
            .ok_or_else(|| StoreError::corrupt(&what, "unknown status"))?;
        let mut state = JoinState {
            key: key.clone(),
            generation,
            status,
            expected: r.string_set("expected")?,
            arrived: Vec::new(),
            opened_at: r.time("opened_at")?,
            window_ends_at: r.time("window_ends_at")?,
            closed_by: r.opt_s("closed_by")?.map(str::to_owned),
            finished_at: r.opt_time("finished_at")?,
        };
        state.arrived = self.read_arrivals(key, generation).await?;
        Ok(Some(state))
    }

    async fn read_arrivals(
        &self,
        key: &ClaimKey,
        generation: u64,
    ) -> StoreResult<Vec<ArrivedUpstream>> {
        let what = format!("join `{key}` arrival");
        let items = self
            .whole_partition(&join_pk(key), Some(&arrival_prefix(generation)))
            .await?;
        let mut arrived = Vec::with_capacity(items.len());
        for item in &items {
            let r = Reader::new(item, &what);
            arrived.push(ArrivedUpstream {
                upstream: r.s("upstream")?.to_owned(),
                succeeded: r.bool("succeeded")?,
                pipeline_id: r.opt_s("pipeline_id")?.map(str::to_owned),
                trigger_id: r
                    .opt_s("trigger_id")?
                    .map(|id| {
                        id.parse()
                            .map_err(|_| StoreError::corrupt(&what, "unreadable trigger id"))
                    })
                    .transpose()?,
                arrived_at: r.time("arrived_at")?,
            });
        }
        arrived.sort_by(|a, b| a.upstream.cmp(&b.upstream));
        Ok(arrived)
    }

    /// Opens generation `previous + 1` unless someone else moved the join first.
    async fn open_generation(
        &self,
        arrival: &JoinArrival,
        previous: Option<u64>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let generation = previous.map_or(1, |g| g + 1);
        let window_ends_at = now + logic::to_delta(arrival.window);
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(PARTITION_KEY, s(join_pk(&arrival.key)))
            .item(SORT_KEY, s("STATE"))
            .item("type", s("join"))
            .item("generation", n_u64(generation))
            .item("status", s(JoinStatus::Open.as_str()))
            .item(
                "expected",
                AttributeValue::Ss(arrival.expected.iter().cloned().collect()),
            )
            .item("opened_at", n(millis(now)))
            .item("window_ends_at", n(millis(window_ends_at)))
            .item(
                TTL_ATTRIBUTE,
                n(ttl_seconds(logic::retention_end(
                    window_ends_at,
                    &self.settings,
                ))),
            )
            .item("schema_version", n(i64::from(SCHEMA_VERSION)));
        request = match previous {
            None => request.condition_expression("attribute_not_exists(pk)"),
            Some(previous) => request
                .condition_expression("generation = :previous")
                .expression_attribute_values(":previous", n_u64(previous)),
        };
        match request.send().await {
            Ok(_) => Ok(true),
            Err(error) if conditional_failure(&error).is_some() => Ok(false),
            Err(error) => Err(classify("PutItem", &error)),
        }
    }

    /// Records the arrival in generation `state.generation` if that generation is still
    /// open; `Ok(None)` when it no longer is, `Ok(Some(duplicate))` otherwise.
    async fn put_arrival(
        &self,
        arrival: &JoinArrival,
        state: &JoinState,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<bool>> {
        let pk = join_pk(&arrival.key);
        let still_open = ConditionCheck::builder()
            .table_name(&self.table)
            .key(PARTITION_KEY, s(pk.clone()))
            .key(SORT_KEY, s("STATE"))
            .condition_expression("generation = :generation AND #status = :open")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":generation", n_u64(state.generation))
            .expression_attribute_values(":open", s(JoinStatus::Open.as_str()))
            .build()
            .map_err(|error| StoreError::Internal {
                message: error.to_string(),
            })?;
        let mut put = Put::builder()
            .table_name(&self.table)
            .item(PARTITION_KEY, s(pk))
            .item(
                SORT_KEY,
                s(format!(
                    "{}{}",
                    arrival_prefix(state.generation),
                    arrival.upstream
                )),
            )
            .item("type", s("join_arrival"))
            .item("upstream", s(arrival.upstream.clone()))
            .item("succeeded", AttributeValue::Bool(arrival.succeeded))
            .item("arrived_at", n(millis(now)))
            .item(
                TTL_ATTRIBUTE,
                n(ttl_seconds(logic::retention_end(
                    state.window_ends_at,
                    &self.settings,
                ))),
            )
            .item("schema_version", n(i64::from(SCHEMA_VERSION)))
            .condition_expression("attribute_not_exists(pk)");
        if let Some(pipeline_id) = &arrival.pipeline_id {
            put = put.item("pipeline_id", s(pipeline_id.clone()));
        }
        if let Some(trigger_id) = arrival.trigger_id {
            put = put.item("trigger_id", s(trigger_id.to_string()));
        }
        let put = put.build().map_err(|error| StoreError::Internal {
            message: error.to_string(),
        })?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(
                TransactWriteItem::builder()
                    .condition_check(still_open)
                    .build(),
            )
            .transact_items(TransactWriteItem::builder().put(put).build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(Some(false)),
            Err(error) => match cancellation_codes(&error) {
                Some(codes) if failed_condition(&codes, 0) => Ok(None),
                Some(codes) if failed_condition(&codes, 1) => Ok(Some(true)),
                _ => Err(classify_transaction(&error)),
            },
        }
    }

    /// Moves an open generation to complete or closed; `false` if it was no longer open.
    async fn settle_join(
        &self,
        key: &ClaimKey,
        generation: u64,
        status: JoinStatus,
        closed_by: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PARTITION_KEY, s(join_pk(key)))
            .key(SORT_KEY, s("STATE"))
            .condition_expression("generation = :generation AND #status = :open")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":generation", n_u64(generation))
            .expression_attribute_values(":open", s(JoinStatus::Open.as_str()))
            .expression_attribute_values(":status", s(status.as_str()))
            .expression_attribute_values(":now", n(millis(now)))
            .return_values(ReturnValue::None);
        request = match closed_by {
            Some(by) => request
                .update_expression("SET #status = :status, finished_at = :now, closed_by = :by")
                .expression_attribute_values(":by", s(by)),
            None => request.update_expression("SET #status = :status, finished_at = :now"),
        };
        match request.send().await {
            Ok(_) => Ok(true),
            Err(error) if conditional_failure(&error).is_some() => Ok(false),
            Err(error) => Err(classify("UpdateItem", &error)),
        }
    }
}

#[async_trait]
impl JoinStore for DynamoStore {
    async fn join_arrive(&self, arrival: &JoinArrival) -> StoreResult<JoinOutcome> {
        logic::validate_arrival(arrival)?;
        let now = self.clock.now();
        for _ in 0..RACE_ATTEMPTS {
            let stored = self.read_join(&arrival.key).await?;
            let state = match stored {
                Some(state) if logic::join_generation_current(&state, now) => state,
                other => {
                    // No join, or its window has passed: open the next generation.
                    self.open_generation(arrival, other.map(|s| s.generation), now)
                        .await?;
                    continue;
                }
            };
            match state.status {
                JoinStatus::Complete => {
                    return Ok(JoinOutcome::Complete {
                        state,
                        fired_now: false,
                    });
                }
                JoinStatus::Closed => {
                    return Ok(JoinOutcome::Closed {
                        state,
                        closed_now: false,
                    });
                }
                JoinStatus::Open => {}
            }
            let Some(duplicate) = self.put_arrival(arrival, &state, now).await? else {
                continue; // settled or replaced meanwhile: look again
            };
            let mut state = state;
            state.arrived = self.read_arrivals(&arrival.key, state.generation).await?;
            let (status, closed_by) = match logic::join_step(&state, &state.arrived) {
                JoinStep::Wait => return Ok(JoinOutcome::Waiting { state, duplicate }),
                JoinStep::Complete => (JoinStatus::Complete, None),
                JoinStep::Close { by } => (JoinStatus::Closed, Some(by)),
            };
            if !self
                .settle_join(
                    &arrival.key,
                    state.generation,
                    status,
                    closed_by.as_deref(),
                    now,
                )
                .await?
            {
                // Another arrival settled it first: report what it decided.
                continue;
            }
            let state = JoinState {
                status,
                closed_by,
                finished_at: Some(now),
                ..state
            };
            return Ok(match status {
                JoinStatus::Closed => JoinOutcome::Closed {
                    state,
                    closed_now: true,
                },
                _ => JoinOutcome::Complete {
                    state,
                    fired_now: true,
                },
            });
        }
        Err(StoreError::Unavailable {
            message: format!(
                "join `{}` kept changing under concurrent arrivals",
                arrival.key
            ),
        })
    }

    async fn join_state(&self, key: &ClaimKey) -> StoreResult<Option<JoinState>> {
        self.read_join(key).await
    }

    /// One `UpdateItem` on `RATE#<client>` / `<window start>`: `ADD used 1` on condition
    /// that the window has room. The item has no index attributes (no GSI write), is
    /// < 100 bytes (1 WRU) and expires with its window.
    async fn take_rate_ticket(&self, ticket: &RateTicket) -> StoreResult<bool> {
        if ticket.limit == 0 {
            return Ok(false);
        }
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PARTITION_KEY, s(format!("RATE#{}", ticket.client)))
            .key(SORT_KEY, s(millis(ticket.window_start).to_string()))
            .update_expression("ADD used :one SET #ttl = :ttl")
            .condition_expression("attribute_not_exists(used) OR used < :limit")
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":limit", n(i64::from(ticket.limit)))
            .expression_attribute_values(":ttl", n(ttl_seconds(ticket.window_ends_at)))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(error) if conditional_failure(&error).is_some() => Ok(false),
            Err(error) => Err(classify("UpdateItem", &error)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Pause flags
// ---------------------------------------------------------------------------------------

fn flag_from_item(item: &Item) -> StoreResult<PauseFlag> {
    let r = Reader::new(item, "pause flag");
    Ok(PauseFlag {
        scope: r
            .s(SORT_KEY)?
            .parse()
            .map_err(|e: InvalidPauseScope| StoreError::corrupt("pause flag", e.to_string()))?,
        reason: r.opt_s("reason")?.map(str::to_owned),
        paused_by: r.opt_s("paused_by")?.map(str::to_owned),
        paused_at: r.time("paused_at")?,
    })
}

#[async_trait]
impl FlagStore for DynamoStore {
    async fn pause(
        &self,
        scope: &PauseScope,
        reason: Option<&str>,
        paused_by: Option<&str>,
    ) -> StoreResult<PauseFlag> {
        let now = self.clock.now();
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(PARTITION_KEY, s(FLAGS_PARTITION))
            .item(SORT_KEY, s(scope.to_string()))
            .item("type", s("pause_flag"))
            .item("paused_at", n(millis(now)))
            .item("schema_version", n(i64::from(SCHEMA_VERSION)));
        if let Some(reason) = reason {
            request = request.item("reason", s(reason));
        }
        if let Some(by) = paused_by {
            request = request.item("paused_by", s(by));
        }
        request
            .send()
            .await
            .map_err(|error| classify("PutItem", &error))?;
        Ok(PauseFlag {
            scope: scope.clone(),
            reason: reason.map(str::to_owned),
            paused_by: paused_by.map(str::to_owned),
            paused_at: now,
        })
    }

    async fn resume(&self, scope: &PauseScope) -> StoreResult<bool> {
        let output = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(PARTITION_KEY, s(FLAGS_PARTITION))
            .key(SORT_KEY, s(scope.to_string()))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|error| classify("DeleteItem", &error))?;
        Ok(output.attributes.is_some_and(|old| !old.is_empty()))
    }

    async fn pause_flag(&self, scope: &PauseScope) -> StoreResult<Option<PauseFlag>> {
        self.get(FLAGS_PARTITION.to_owned(), &scope.to_string())
            .await?
            .map(|item| flag_from_item(&item))
            .transpose()
    }

    async fn pause_flags(&self) -> StoreResult<Vec<PauseFlag>> {
        self.whole_partition(FLAGS_PARTITION, None)
            .await?
            .iter()
            .map(flag_from_item)
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use aws_sdk_dynamodb::error::ErrorMetadata;
    use aws_sdk_dynamodb::types::CancellationReason;
    use aws_sdk_dynamodb::types::error::TransactionCanceledException;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;

    use super::*;

    /// A `TransactionCanceledException` as DynamoDB answers it (HTTP 400), with one
    /// cancellation code per item (`None` for an item that was fine).
    fn cancelled(codes: &[&str]) -> SdkError<TransactWriteItemsError, HttpResponse> {
        let reasons = codes
            .iter()
            .map(|code| CancellationReason::builder().code(*code).build())
            .collect();
        let exception = TransactionCanceledException::builder()
            .message(
                "Transaction cancelled, please refer cancellation reasons for specific reasons",
            )
            .set_cancellation_reasons(Some(reasons))
            .meta(
                ErrorMetadata::builder()
                    .code("TransactionCanceledException")
                    .build(),
            )
            .build();
        SdkError::service_error(
            TransactWriteItemsError::TransactionCanceledException(exception),
            HttpResponse::new(StatusCode::try_from(400).unwrap(), SdkBody::empty()),
        )
    }

    #[test]
    fn a_transaction_conflict_is_retryable_not_internal() {
        // Two fan-in arrivals writing the same join at once: DynamoDB cancels one of them.
        for codes in [
            &["None", "TransactionConflict"][..],
            &["ThrottlingError", "None"][..],
        ] {
            let error = classify_transaction(&cancelled(codes));
            assert!(
                matches!(error, StoreError::Unavailable { .. }),
                "{codes:?}: {error:?}"
            );
            assert!(error.is_retryable());
        }
    }

    #[test]
    fn other_cancellations_keep_their_meaning() {
        // A validation error inside a transaction does not heal by retrying.
        let error = classify_transaction(&cancelled(&["None", "ValidationError"]));
        assert!(!error.is_retryable(), "{error:?}");
    }
}

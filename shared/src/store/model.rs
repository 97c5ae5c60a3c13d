//! What the trigger store keeps: claims, trigger records, schedule state, joins, pause flags.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use triggers_config::ActionKind;
use uuid::Uuid;

use super::detail::RecordDetail;

/// Version of the stored shapes; every item and row carries it so later releases can
/// migrate or refuse what they do not understand.
pub const SCHEMA_VERSION: u32 = 1;

/// Longest claim key stored verbatim; longer keys (caller-supplied idempotency keys can be
/// long) are replaced by a hash so they always fit a DynamoDB partition key.
const MAX_VERBATIM_KEY_LEN: usize = 512;

// ---------------------------------------------------------------------------------------
// Claims
// ---------------------------------------------------------------------------------------

/// What a claim deduplicates. The kind is the prefix of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClaimKind {
    /// One schedule slot for one target: `schedule#<name>#<slot UTC>#<target>`.
    Schedule,
    /// One action of one chain rule for one webhook event: `webhook#<event>#<rule>#<action>`.
    Webhook,
    /// One HTTP call: `client#<client>#<Idempotency-Key>`.
    Client,
    /// The single firing of a fan-in: `join#<rule>#<correlation>`.
    Join,
    /// A store-internal or caller-defined kind (kept for keys read back from storage).
    Other,
}

impl ClaimKind {
    pub fn prefix(self) -> &'static str {
        match self {
            ClaimKind::Schedule => "schedule",
            ClaimKind::Webhook => "webhook",
            ClaimKind::Client => "client",
            ClaimKind::Join => "join",
            ClaimKind::Other => "other",
        }
    }
}

/// The deduplication key of one logical trigger. Opaque to the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClaimKey(String);

/// Namespace of the record ids derived from claim keys (UUIDv5).
const RECORD_ID_NAMESPACE: Uuid = Uuid::from_u128(0x5c1c_7a1e_0b0e_4c2a_9d3e_7f00_c1c1_7219);

impl ClaimKey {
    /// The id of the record this key stands for (stable across holders and attempts): the
    /// DynamoDB adapter keeps a claim and its record in one item under this id.
    pub fn record_id(&self) -> TriggerId {
        TriggerId::from_uuid(Uuid::new_v5(&RECORD_ID_NAMESPACE, self.as_str().as_bytes()))
    }

    /// Joins `parts` under the kind's prefix. `#` and `%` inside a part are escaped, so
    /// `("a#b", "c")` and `("a", "b#c")` never collide; overlong keys become a SHA-256.
    pub fn new(kind: ClaimKind, parts: &[&str]) -> Self {
        let mut key = String::from(kind.prefix());
        for part in parts {
            key.push('#');
            for c in part.chars() {
                match c {
                    '%' => key.push_str("%25"),
                    '#' => key.push_str("%23"),
                    other => key.push(other),
                }
            }
        }
        if key.len() > MAX_VERBATIM_KEY_LEN {
            let digest = hex::encode(Sha256::digest(key.as_bytes()));
            key = format!("{}#sha256:{digest}", kind.prefix());
        }
        Self(key)
    }

    /// A key exactly as stored (read back from a record or typed by an operator).
    pub fn from_stored(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn kind(&self) -> ClaimKind {
        match self.0.split('#').next() {
            Some("schedule") => ClaimKind::Schedule,
            Some("webhook") => ClaimKind::Webhook,
            Some("client") => ClaimKind::Client,
            Some("join") => ClaimKind::Join,
            _ => ClaimKind::Other,
        }
    }
}

impl fmt::Display for ClaimKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A digest of the request a claim stands for: the same key with a different fingerprint
/// is a conflict (e.g. an `Idempotency-Key` reused for another body).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// SHA-256 (hex) of the given bytes.
    pub fn of(bytes: &[u8]) -> Self {
        Self(hex::encode(Sha256::digest(bytes)))
    }

    /// SHA-256 of the JSON text; serde_json orders object keys, so equal values hash equally.
    pub fn of_json(value: &serde_json::Value) -> Self {
        Self::of(value.to_string().as_bytes())
    }

    /// A fingerprint as stored.
    pub fn from_stored(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Proof of holding a claim; every later transition must present it (fencing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OwnerToken(Uuid);

impl OwnerToken {
    pub(crate) fn generate() -> Self {
        Self(Uuid::new_v4())
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        Uuid::parse_str(text).ok().map(Self)
    }
}

impl fmt::Display for OwnerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// Where a claim is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimState {
    /// Held under a lease; nothing has been sent yet. Released or taken over when it expires.
    InProgress,
    /// The holder is about to send (or has sent) a create request: never released or taken
    /// over; it completes, or after its lease it is ambiguous and must be reconciled.
    Sending,
    /// Finished; the stored result answers every replay.
    Completed,
}

impl ClaimState {
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimState::InProgress => "in_progress",
            ClaimState::Sending => "sending",
            ClaimState::Completed => "completed",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "in_progress" => Some(ClaimState::InProgress),
            "sending" => Some(ClaimState::Sending),
            "completed" => Some(ClaimState::Completed),
            _ => None,
        }
    }
}

/// What a completed claim answers to replays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimResult {
    /// The trigger record that holds the full story, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_id: Option<TriggerId>,
    /// Opaque to the store, e.g. the HTTP response body an idempotent replay must repeat.
    #[serde(default)]
    pub value: serde_json::Value,
}

impl ClaimResult {
    pub fn trigger(trigger_id: TriggerId) -> Self {
        Self {
            trigger_id: Some(trigger_id),
            value: serde_json::Value::Null,
        }
    }
}

/// A won claim: the caller now holds it until the lease ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimGrant {
    pub owner: OwnerToken,
    /// 1 for a fresh claim; higher after takeovers of expired leases.
    pub attempt: u32,
    pub lease_expires_at: DateTime<Utc>,
    /// The previous holder's lease expired before it reached `sending`.
    pub taken_over: bool,
}

/// The answer to [`ClaimStore::claim`](super::ClaimStore::claim).
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimOutcome {
    /// The caller holds the claim and must complete or release it.
    Won(ClaimGrant),
    /// Already done; repeat this answer, do nothing else.
    Completed {
        result: ClaimResult,
        completed_at: DateTime<Utc>,
    },
    /// Someone else holds a live lease; try again later (or answer "in progress").
    InProgress {
        state: ClaimState,
        lease_expires_at: DateTime<Utc>,
    },
    /// The holder marked it sending and its lease ran out: a request may or may not have
    /// reached CircleCI. Never resend; reconcile ([`ClaimStore::adopt_ambiguous`](super::ClaimStore::adopt_ambiguous)).
    Ambiguous {
        sending_since: DateTime<Utc>,
        attempts: u32,
    },
    /// The key is taken by a different request (fingerprint mismatch).
    Conflict,
}

/// A claim as an operator or reconciler sees it (no owner token: that is the holder's alone).
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimSnapshot {
    pub key: ClaimKey,
    pub fingerprint: Fingerprint,
    pub state: ClaimState,
    pub attempts: u32,
    pub lease_expires_at: DateTime<Utc>,
    pub sending_since: Option<DateTime<Utc>>,
    pub result: Option<ClaimResult>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

// ---------------------------------------------------------------------------------------
// Trigger records
// ---------------------------------------------------------------------------------------

/// The id of one trigger record (UUIDv7: ids sort roughly by creation time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TriggerId(Uuid);

impl TriggerId {
    /// A fresh id stamped with `now` (from the injected clock).
    pub fn generate(now: DateTime<Utc>) -> Self {
        let seconds = u64::try_from(now.timestamp()).unwrap_or(0);
        let timestamp =
            uuid::Timestamp::from_unix(uuid::NoContext, seconds, now.timestamp_subsec_nanos());
        Self(Uuid::new_v7(timestamp))
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    /// An id chosen by the caller (e.g. derived from a claim key, so every holder of the
    /// claim works on the same record).
    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

impl fmt::Display for TriggerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for TriggerId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// What kind of thing started a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Schedule,
    Chain,
    Http,
    /// `circleci-triggers trigger` run by an operator.
    Cli,
}

impl SourceKind {
    pub const ALL: [SourceKind; 4] = [
        SourceKind::Schedule,
        SourceKind::Chain,
        SourceKind::Http,
        SourceKind::Cli,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Schedule => "schedule",
            SourceKind::Chain => "chain",
            SourceKind::Http => "http",
            SourceKind::Cli => "cli",
        }
    }

    /// Only schedule and chain records are retried by the sweep; an HTTP caller owns its
    /// retries and an operator re-runs the CLI.
    pub fn swept(self) -> bool {
        matches!(self, SourceKind::Schedule | SourceKind::Chain)
    }

    /// Whether what starts its triggers is handed out again until every trigger it caused
    /// is decided: a chain trigger comes from a queued webhook delivery (SQS in AWS, the
    /// embedded queue in `serve`), received again after its visibility timeout until it is
    /// settled, then dead-lettered where an alarm sees it. Such a trigger's holder dying is
    /// recovered by the next receive (it adopts the claim), so its record does not enter
    /// the reconciler's index when it is opened — only when a retry or recheck is planned.
    pub fn redelivered(self) -> bool {
        matches!(self, SourceKind::Chain)
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SourceKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SourceKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| {
                format!("unknown source kind `{s}` (expected schedule, chain, http or cli)")
            })
    }
}

/// The named schedule, chain rule, endpoint or CLI invocation that caused a trigger.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TriggerSource {
    pub kind: SourceKind,
    pub name: String,
}

impl TriggerSource {
    pub fn new(kind: SourceKind, name: impl Into<String>) -> Self {
        Self {
            kind,
            name: name.into(),
        }
    }
}

impl fmt::Display for TriggerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.name)
    }
}

/// What was decided about a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerStatus {
    /// Recorded before anything was decided (a crash leaves this behind for the sweep).
    Received,
    /// The action was performed (pipeline created, job approved, ...).
    Triggered,
    /// Deliberately not performed (paused, concurrency policy, no match).
    Skipped,
    /// Refused: bad input, not authorised, policy violation.
    Rejected,
    /// Tried and failed; `retry_at` says whether and when it is retried.
    Failed,
    /// A create request may or may not have reached CircleCI; being reconciled.
    Ambiguous,
    /// Reconciliation established that nothing was created.
    NotTriggered,
}

impl TriggerStatus {
    pub const ALL: [TriggerStatus; 7] = [
        TriggerStatus::Received,
        TriggerStatus::Triggered,
        TriggerStatus::Skipped,
        TriggerStatus::Rejected,
        TriggerStatus::Failed,
        TriggerStatus::Ambiguous,
        TriggerStatus::NotTriggered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TriggerStatus::Received => "received",
            TriggerStatus::Triggered => "triggered",
            TriggerStatus::Skipped => "skipped",
            TriggerStatus::Rejected => "rejected",
            TriggerStatus::Failed => "failed",
            TriggerStatus::Ambiguous => "ambiguous",
            TriggerStatus::NotTriggered => "not_triggered",
        }
    }
}

impl fmt::Display for TriggerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an action is aimed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerTarget {
    /// Project slug (`gh/org/repo`); the store keeps the canonical spelling.
    pub project: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The workflow name (sugar parameter, or the workflow an approve/rerun/cancel acts on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// The approval job an `approve` action names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition_id: Option<String>,
}

impl TriggerTarget {
    pub fn project(project: impl Into<String>) -> Self {
        Self {
            project: project.into(),
            ..Self::default()
        }
    }
}

/// The upstream pipeline that caused a chained trigger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upstream {
    pub project: String,
    pub pipeline_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The webhook event that reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// The upstream pipeline's own trigger record, when one of ours started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_id: Option<TriggerId>,
}

/// The CircleCI pipeline a trigger created or acted on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineRef {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// One workflow of the pipeline, as the closed loop last heard of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowOutcome {
    pub id: String,
    pub name: String,
    /// CircleCI's workflow status (`success`, `failed`, `on_hold`, `canceled`, ...).
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<DateTime<Utc>>,
}

/// One row of trigger history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerRecord {
    pub id: TriggerId,
    pub source: TriggerSource,
    /// The root trigger: this record's own id for a schedule, HTTP or CLI trigger; for a
    /// chained trigger, the origin of the upstream pipeline that caused it.
    pub origin: TriggerId,
    pub target: TriggerTarget,
    #[serde(serialize_with = "serialize_action")]
    pub action: ActionKind,
    /// Pipeline parameters as sent, with redacted names replaced (the store enforces it).
    #[serde(default)]
    pub parameters: BTreeMap<String, serde_json::Value>,
    pub status: TriggerStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Attempts made to perform the action.
    #[serde(default)]
    pub attempts: u32,
    /// When the sweep should try again; `None` means not retried. Only schedule and chain
    /// records are swept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<DateTime<Utc>>,
    /// The claim that makes this trigger happen once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_key: Option<ClaimKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Upstream>,
    /// Fan-in correlation value (origin id, tag, branch or revision) when a join fired it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<String>,
    /// The git revision the created pipeline built, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<PipelineRef>,
    #[serde(default)]
    pub workflows: Vec<WorkflowOutcome>,
    /// Every workflow of the pipeline has reached a final status.
    #[serde(default)]
    pub pipeline_final: bool,
    /// Source-specific facts (schedule slot, event id, client name, reconciliation notes).
    /// Boxed: records and intents travel through deep async call chains by value.
    #[serde(default, skip_serializing_if = "RecordDetail::is_empty")]
    pub detail: Box<RecordDetail>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Set by the store on write.
    #[serde(default)]
    pub schema_version: u32,
    /// Set by the store on create: `created_at` + the history retention.
    pub expires_at: DateTime<Utc>,
    /// Optimistic-concurrency version: 0 before the first write; every write adds one and is
    /// refused when the stored version differs.
    #[serde(default)]
    pub version: u64,
}

fn serialize_action<S: serde::Serializer>(
    action: &ActionKind,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(action.as_str())
}

impl TriggerRecord {
    /// Whether the sweep's retry index holds this record: a schedule or chain record with
    /// `retry_at` (retries, rechecks), or any record still `received` with `retry_at` (the
    /// reconciler's time, set when the record is created and cleared when it is decided).
    pub fn in_retry_index(&self) -> bool {
        self.retry_at.is_some()
            && (self.source.kind.swept() || self.status == TriggerStatus::Received)
    }

    /// A new root trigger (its own origin), `received`, not yet stored.
    pub fn new(
        source: TriggerSource,
        target: TriggerTarget,
        action: ActionKind,
        now: DateTime<Utc>,
    ) -> Self {
        let id = TriggerId::generate(now);
        Self {
            id,
            source,
            origin: id,
            target,
            action,
            parameters: BTreeMap::new(),
            status: TriggerStatus::Received,
            reason: None,
            attempts: 0,
            retry_at: None,
            claim_key: None,
            upstream: None,
            correlation: None,
            revision: None,
            pipeline: None,
            workflows: Vec::new(),
            pipeline_final: false,
            detail: Box::default(),
            created_at: now,
            updated_at: now,
            schema_version: SCHEMA_VERSION,
            expires_at: now,
            version: 0,
        }
    }

    /// The CircleCI pipelines this trigger started or acted on.
    pub fn pipelines(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.pipeline
            .as_ref()
            .and_then(|pipeline| pipeline.id.parse::<Uuid>().ok())
            .into_iter()
            .chain(self.detail.acted_on_pipeline)
    }

    /// Marks this trigger as caused by something that belongs to `origin`.
    pub fn with_origin(mut self, origin: TriggerId) -> Self {
        self.origin = origin;
        self
    }

    /// Inserts or replaces the outcome of one workflow (matched by id).
    pub fn upsert_workflow(&mut self, outcome: WorkflowOutcome) {
        match self.workflows.iter_mut().find(|w| w.id == outcome.id) {
            Some(existing) => *existing = outcome,
            None => self.workflows.push(outcome),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Paging
// ---------------------------------------------------------------------------------------

/// Where the next page starts. Opaque: only the store that issued it can read it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cursor(pub(crate) String);

impl Cursor {
    /// A cursor received from outside (CLI argument, query string).
    pub fn from_token(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    pub fn as_token(&self) -> &str {
        &self.0
    }
}

/// Largest page a store returns.
pub const MAX_PAGE_SIZE: u32 = 500;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Clamped to 1..=[`MAX_PAGE_SIZE`].
    pub limit: u32,
    pub cursor: Option<Cursor>,
}

impl PageRequest {
    pub fn first(limit: u32) -> Self {
        Self {
            limit,
            cursor: None,
        }
    }

    pub fn after(limit: u32, cursor: Cursor) -> Self {
        Self {
            limit,
            cursor: Some(cursor),
        }
    }

    pub(crate) fn clamped_limit(&self) -> usize {
        self.limit.clamp(1, MAX_PAGE_SIZE) as usize
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// `None` on the last page.
    pub next: Option<Cursor>,
}

// ---------------------------------------------------------------------------------------
// Schedule state, joins, pause flags
// ---------------------------------------------------------------------------------------

/// The scheduler's one small item, read by every tick (`SCHEDULER/STATE`): enough to tell
/// an idle tick (nothing due, nothing changed) from one that must evaluate schedules,
/// whatever the number of schedules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerState {
    /// [`ScheduleDefinitions::digest`] of the definitions this state was computed for.
    pub digest: String,
    /// The instant of the last tick that evaluated the schedules: every schedule without its
    /// own instant in [`ScheduleDefinitions`] has handled every slot up to it.
    pub evaluated_through: DateTime<Utc>,
    /// The earliest slot after that over every enabled schedule (`None`: none ever again).
    pub next_due: Option<DateTime<Utc>>,
    /// Some schedule lags behind `evaluated_through` (its evaluation failed): the next tick
    /// reads the definitions and evaluates, due or not.
    pub behind: bool,
    pub updated_at: DateTime<Utc>,
}

/// Per-schedule detail (`SCHEDULER/DEFINITIONS`), read only when the triggers file's digest
/// differs from the stored one, when a slot is due, or when the last tick fell behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScheduleDefinitions {
    /// A digest over every entry (name and fingerprint): equal digests, equal definitions.
    pub digest: String,
    pub schedules: BTreeMap<String, ScheduleEntry>,
}

/// One schedule as the scheduler last evaluated it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleEntry {
    /// The timing's fingerprint (cron and zone; disabled schedules are marked): a changed
    /// schedule starts from now instead of catching up under the old definition.
    pub fingerprint: String,
    /// Set only when it differs from [`SchedulerState::evaluated_through`] (a schedule whose
    /// evaluation failed keeps its older instant).
    pub evaluated_through: Option<DateTime<Utc>>,
}

impl ScheduleDefinitions {
    /// The definitions of these entries, with their digest.
    pub fn new(schedules: BTreeMap<String, ScheduleEntry>) -> Self {
        let digest = Self::digest_of(
            schedules
                .iter()
                .map(|(name, entry)| (name.as_str(), entry.fingerprint.as_str())),
        );
        Self { digest, schedules }
    }

    /// The digest of (name, fingerprint) pairs, in name order; evaluation instants are not
    /// part of it.
    pub fn digest_of<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
        let mut sorted: Vec<(&str, &str)> = entries.into_iter().collect();
        sorted.sort_unstable();
        let mut hasher = Sha256::new();
        for (name, fingerprint) in sorted {
            // Lengths first, so no two lists of pairs hash alike.
            hasher.update((name.len() as u64).to_be_bytes());
            hasher.update(name.as_bytes());
            hasher.update((fingerprint.len() as u64).to_be_bytes());
            hasher.update(fingerprint.as_bytes());
        }
        hex::encode(&hasher.finalize()[..16])
    }

    /// Whether any schedule has its own instant (lags or leads the state's).
    pub fn has_own_instants(&self) -> bool {
        self.schedules
            .values()
            .any(|entry| entry.evaluated_through.is_some())
    }

    /// The entries as stored: compact JSON, `{"<name>": {"f": "<fingerprint>", "t": <ms>}}`.
    pub fn entries_json(&self) -> String {
        let stored: BTreeMap<&str, StoredEntry> = self
            .schedules
            .iter()
            .map(|(name, entry)| {
                (
                    name.as_str(),
                    StoredEntry {
                        f: entry.fingerprint.clone(),
                        t: entry.evaluated_through.map(|at| at.timestamp_millis()),
                    },
                )
            })
            .collect();
        serde_json::to_string(&stored).unwrap_or_else(|_| "{}".to_owned())
    }

    /// Reads [`ScheduleDefinitions::entries_json`] back.
    pub fn from_stored(digest: String, entries_json: &str) -> Result<Self, String> {
        let stored: BTreeMap<String, StoredEntry> =
            serde_json::from_str(entries_json).map_err(|e| e.to_string())?;
        let mut schedules = BTreeMap::new();
        for (name, entry) in stored {
            let evaluated_through = match entry.t {
                Some(ms) => Some(
                    DateTime::<Utc>::from_timestamp_millis(ms)
                        .ok_or_else(|| format!("schedule `{name}`: instant {ms} out of range"))?,
                ),
                None => None,
            };
            schedules.insert(
                name,
                ScheduleEntry {
                    fingerprint: entry.f,
                    evaluated_through,
                },
            );
        }
        Ok(Self { digest, schedules })
    }
}

#[derive(Serialize, Deserialize)]
struct StoredEntry {
    f: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    t: Option<i64>,
}

/// One request counted against a client's `[[client]].rate_limit`: a fixed window,
/// aligned to multiples of its length since the Unix epoch, holding `limit` tickets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateTicket {
    pub client: String,
    pub window_start: DateTime<Utc>,
    /// When the window's counter may be forgotten (its end).
    pub window_ends_at: DateTime<Utc>,
    pub limit: u32,
}

impl RateTicket {
    /// The ticket `now` takes in `client`'s window of `window`.
    pub fn at(client: &str, now: DateTime<Utc>, window: Duration, limit: u32) -> Self {
        let length = i64::try_from(window.as_millis()).unwrap_or(i64::MAX).max(1);
        let start_ms = now.timestamp_millis().div_euclid(length) * length;
        let window_start = DateTime::from_timestamp_millis(start_ms).unwrap_or(now);
        let window_ends_at =
            DateTime::from_timestamp_millis(start_ms.saturating_add(length)).unwrap_or(now);
        Self {
            client: client.to_owned(),
            window_start,
            window_ends_at,
            limit,
        }
    }
}

/// One upstream pipeline reaching a fan-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinArrival {
    /// `join#<rule>#<correlation>` (use [`ClaimKey::new`] with [`ClaimKind::Join`]).
    pub key: ClaimKey,
    /// Every upstream name the join waits for (used when this arrival opens the join).
    pub expected: BTreeSet<String>,
    /// Which upstream this is; must be one of `expected`.
    pub upstream: String,
    pub succeeded: bool,
    pub pipeline_id: Option<String>,
    pub trigger_id: Option<TriggerId>,
    /// How long the join stays open after its first arrival.
    pub window: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinStatus {
    Open,
    /// Every upstream succeeded; the join fired (once).
    Complete,
    /// An upstream failed; the join will not fire.
    Closed,
}

impl JoinStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JoinStatus::Open => "open",
            JoinStatus::Complete => "complete",
            JoinStatus::Closed => "closed",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "open" => Some(JoinStatus::Open),
            "complete" => Some(JoinStatus::Complete),
            "closed" => Some(JoinStatus::Closed),
            _ => None,
        }
    }
}

/// An upstream that has arrived at a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrivedUpstream {
    pub upstream: String,
    pub succeeded: bool,
    pub pipeline_id: Option<String>,
    pub trigger_id: Option<TriggerId>,
    pub arrived_at: DateTime<Utc>,
}

/// A join as stored: one generation per window (a correlation such as a branch name is
/// reused day after day; each window is a fresh generation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinState {
    pub key: ClaimKey,
    pub generation: u64,
    pub status: JoinStatus,
    pub expected: BTreeSet<String>,
    /// Sorted by upstream name.
    pub arrived: Vec<ArrivedUpstream>,
    pub opened_at: DateTime<Utc>,
    pub window_ends_at: DateTime<Utc>,
    /// The failed upstream that closed the join.
    pub closed_by: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl JoinState {
    pub fn missing(&self) -> BTreeSet<String> {
        let arrived: BTreeSet<&str> = self.arrived.iter().map(|a| a.upstream.as_str()).collect();
        self.expected
            .iter()
            .filter(|name| !arrived.contains(name.as_str()))
            .cloned()
            .collect()
    }
}

/// What an arrival did to its join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    /// Still waiting for other upstreams. `duplicate`: this upstream had already arrived.
    Waiting { state: JoinState, duplicate: bool },
    /// All upstreams succeeded. `fired_now` is true for exactly one arrival — the one whose
    /// transition completed the join; it should fire (through a `join#` claim, so a crash
    /// before firing is recovered by the next arrival or the sweep).
    Complete { state: JoinState, fired_now: bool },
    /// A failed upstream closed the join; nothing fires. `closed_now` for the arrival that closed it.
    Closed { state: JoinState, closed_now: bool },
}

impl JoinOutcome {
    pub fn state(&self) -> &JoinState {
        match self {
            JoinOutcome::Waiting { state, .. }
            | JoinOutcome::Complete { state, .. }
            | JoinOutcome::Closed { state, .. } => state,
        }
    }
}

/// What a pause flag stops: every trigger, one schedule, or one chain rule. Stored as its
/// text (`all`, `schedule:<name>`, `chain:<name>`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PauseScope {
    All,
    Schedule(String),
    Chain(String),
}

impl fmt::Display for PauseScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PauseScope::All => f.write_str("all"),
            PauseScope::Schedule(name) => write!(f, "schedule:{name}"),
            PauseScope::Chain(rule) => write!(f, "chain:{rule}"),
        }
    }
}

/// Text that names no pause scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a pause scope (all, schedule:<name>, chain:<rule>)")]
pub struct InvalidPauseScope(pub String);

impl FromStr for PauseScope {
    type Err = InvalidPauseScope;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let named = |name: &str| (!name.is_empty()).then(|| name.to_owned());
        match text.split_once(':') {
            None if text == "all" => Some(PauseScope::All),
            Some(("schedule", name)) => named(name).map(PauseScope::Schedule),
            Some(("chain", rule)) => named(rule).map(PauseScope::Chain),
            _ => None,
        }
        .ok_or_else(|| InvalidPauseScope(text.to_owned()))
    }
}

/// An operator's pause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseFlag {
    pub scope: PauseScope,
    pub reason: Option<String>,
    pub paused_by: Option<String>,
    pub paused_at: DateTime<Utc>,
}

impl PauseFlag {
    /// The flag that holds `schedule` among `flags` (every flag, as
    /// [`FlagStore::pause_flags`](super::FlagStore::pause_flags) reads them): the global
    /// one first, then the schedule's own.
    pub fn for_schedule(flags: &[PauseFlag], schedule: &str) -> Option<PauseFlag> {
        let find = |scope: &PauseScope| flags.iter().find(|flag| flag.scope == *scope).cloned();
        find(&PauseScope::All).or_else(|| find(&PauseScope::Schedule(schedule.to_owned())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_scopes_read_back_what_they_write_and_refuse_the_rest() {
        for scope in [
            PauseScope::All,
            PauseScope::Schedule("nightly".into()),
            PauseScope::Chain("deploy-after-build".into()),
        ] {
            assert_eq!(scope.to_string().parse::<PauseScope>(), Ok(scope));
        }
        for text in [
            "",
            "everything",
            "schedule:",
            "chain:",
            "endpoint:deploy",
            "ALL",
        ] {
            assert!(text.parse::<PauseScope>().is_err(), "{text:?}");
        }
    }
}

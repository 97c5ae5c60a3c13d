//! The embedded store for `serve`: one SQLite file (WAL), one connection.
//!
//! rusqlite is synchronous: every operation runs on tokio's blocking pool
//! ([`tokio::task::spawn_blocking`]) behind a mutex, so the async runtime never blocks and
//! operations are serialised. Each operation that reads and then writes does both inside
//! one `BEGIN IMMEDIATE` transaction, which is what makes claims and joins exact here (other
//! processes on the same file, e.g. `circleci-triggers history`, wait on `busy_timeout`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::logic::{
    self, ClaimDecision, HolderOp, HolderPlan, JoinStep, StoredClaim, from_millis, millis,
};
use super::{
    ArrivedUpstream, ClaimGrant, ClaimKey, ClaimOutcome, ClaimResult, ClaimSnapshot, ClaimState,
    ClaimStore, Fingerprint, FlagStore, HistoryStore, InvalidPauseScope, JoinArrival, JoinOutcome,
    JoinState, JoinStatus, JoinStore, OpenedTrigger, OwnerToken, Page, PageRequest, PauseFlag,
    PauseScope, RateTicket, SCHEMA_VERSION, ScheduleDefinitions, ScheduleStateStore,
    SchedulerState, SharedClock, StoreError, StoreResult, StoreSettings, TriggerId, TriggerLedger,
    TriggerRecord, TriggerSource, cursor,
};
use crate::clock::Clock;

/// File name of the store inside `serve`'s data directory.
pub const DEFAULT_FILE_NAME: &str = "triggers.sqlite3";

/// How long a write waits for another process holding the database lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = r#"
CREATE TABLE claims (
    key              TEXT PRIMARY KEY,
    fingerprint      TEXT NOT NULL,
    state            TEXT NOT NULL,
    owner            TEXT NOT NULL,
    lease_expires_at INTEGER NOT NULL,
    attempts         INTEGER NOT NULL,
    sending_since    INTEGER,
    result           TEXT,
    completed_at     INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    revision         INTEGER NOT NULL,
    schema_version   INTEGER NOT NULL
);
CREATE INDEX claims_expiry ON claims (expires_at);

CREATE TABLE records (
    id             TEXT PRIMARY KEY,
    source_kind    TEXT NOT NULL,
    source_name    TEXT NOT NULL,
    project        TEXT NOT NULL,
    origin         TEXT NOT NULL,
    pipeline_id    TEXT,
    status         TEXT NOT NULL,
    retry_at       INTEGER,
    swept          INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    version        INTEGER NOT NULL,
    schema_version INTEGER NOT NULL,
    body           TEXT NOT NULL
);
CREATE INDEX records_by_source  ON records (source_kind, source_name, created_at, id);
CREATE INDEX records_by_project ON records (project, created_at, id);
CREATE INDEX records_by_origin  ON records (origin, project, created_at, id);
CREATE INDEX records_by_created ON records (created_at, id);
CREATE INDEX records_retry_due  ON records (retry_at, id) WHERE retry_at IS NOT NULL AND swept = 1;
CREATE INDEX records_expiry     ON records (expires_at);

CREATE TABLE pipelines (
    pipeline_id TEXT PRIMARY KEY,
    trigger_id  TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
);

CREATE TABLE joins (
    key            TEXT PRIMARY KEY,
    generation     INTEGER NOT NULL,
    status         TEXT NOT NULL,
    expected       TEXT NOT NULL,
    opened_at      INTEGER NOT NULL,
    window_ends_at INTEGER NOT NULL,
    closed_by      TEXT,
    finished_at    INTEGER,
    expires_at     INTEGER NOT NULL
);

CREATE TABLE join_arrivals (
    key         TEXT NOT NULL,
    generation  INTEGER NOT NULL,
    upstream    TEXT NOT NULL,
    succeeded   INTEGER NOT NULL,
    pipeline_id TEXT,
    trigger_id  TEXT,
    arrived_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (key, generation, upstream)
);

CREATE TABLE pause_flags (
    scope     TEXT PRIMARY KEY,
    reason    TEXT,
    paused_by TEXT,
    paused_at INTEGER NOT NULL
);
"#;

/// The embedded [`TriggerStore`](super::TriggerStore).
#[derive(Clone)]
pub struct SqliteStore {
    connection: Arc<Mutex<Connection>>,
    clock: SharedClock,
    settings: Arc<StoreSettings>,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("retention", &self.settings.retention)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`, in WAL mode.
    pub fn open(path: &Path, clock: Arc<dyn Clock>) -> StoreResult<Self> {
        let connection = Connection::open(path).map_err(|error| StoreError::Misconfigured {
            message: format!("cannot open {}: {error}", path.display()),
        })?;
        Self::prepare(connection, clock, Some(path.to_owned()))
    }

    /// `DEFAULT_FILE_NAME` inside `directory` (which must exist).
    pub fn open_in_dir(directory: &Path, clock: Arc<dyn Clock>) -> StoreResult<Self> {
        Self::open(&directory.join(DEFAULT_FILE_NAME), clock)
    }

    /// A private in-memory database (tests, dry runs).
    pub fn in_memory(clock: Arc<dyn Clock>) -> StoreResult<Self> {
        let connection = Connection::open_in_memory().map_err(sql_error)?;
        Self::prepare(connection, clock, None)
    }

    /// Retention and redaction from the triggers file's `[history]`.
    pub fn with_settings(mut self, settings: StoreSettings) -> Self {
        self.settings = Arc::new(settings);
        self
    }

    fn prepare(
        connection: Connection,
        clock: Arc<dyn Clock>,
        path: Option<PathBuf>,
    ) -> StoreResult<Self> {
        connection.busy_timeout(BUSY_TIMEOUT).map_err(sql_error)?;
        if path.is_some() {
            let mode: String = connection
                .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
                .map_err(sql_error)?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StoreError::Misconfigured {
                    message: format!("SQLite refused WAL mode (journal_mode is {mode})"),
                });
            }
        }
        // FULL: a claim that says "sending" must survive a power cut, not just a crash.
        connection
            .pragma_update(None, "synchronous", "FULL")
            .map_err(sql_error)?;
        migrate(&connection)?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
            clock,
            settings: Arc::new(StoreSettings::default()),
            path,
        })
    }

    /// Runs `work` on the blocking pool with the connection, the current time and settings.
    async fn run<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, DateTime<Utc>, &StoreSettings) -> StoreResult<T>
            + Send
            + 'static,
    {
        let connection = Arc::clone(&self.connection);
        let settings = Arc::clone(&self.settings);
        let now = self.clock.now();
        tokio::task::spawn_blocking(move || {
            let mut guard = connection
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            work(&mut guard, now, &settings)
        })
        .await
        .map_err(|error| StoreError::Internal {
            message: format!("a store task did not finish: {error}"),
        })?
    }
}

/// Tables added without a schema change (created where missing, on every open).
const ADDITIONS: &str = r#"
CREATE TABLE IF NOT EXISTS rate_windows (
    client       TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    used         INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    PRIMARY KEY (client, window_start)
);

-- The scheduler's two items, as on DynamoDB: 'state' (read every tick) and 'definitions'
-- (per-schedule fingerprints and instants, JSON).
CREATE TABLE IF NOT EXISTS scheduler (
    item              TEXT PRIMARY KEY CHECK (item IN ('state', 'definitions')),
    digest            TEXT NOT NULL,
    evaluated_through INTEGER,
    next_due          INTEGER,
    behind            INTEGER,
    schedules         TEXT,
    updated_at        INTEGER NOT NULL
);
"#;

fn migrate(connection: &Connection) -> StoreResult<()> {
    create_versioned_schema(connection)?;
    connection.execute_batch(ADDITIONS).map_err(sql_error)
}

fn create_versioned_schema(connection: &Connection) -> StoreResult<()> {
    let version: i64 = connection
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sql_error)?;
    match version {
        0 => {
            connection
                .execute_batch(&format!(
                    "BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
                ))
                .map_err(sql_error)?;
            Ok(())
        }
        v if v == i64::from(SCHEMA_VERSION) => Ok(()),
        other => Err(StoreError::Misconfigured {
            message: format!(
                "the database has schema version {other}; this release understands {SCHEMA_VERSION}"
            ),
        }),
    }
}

fn sql_error(error: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match &error {
        rusqlite::Error::SqliteFailure(failure, _) => match failure.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::DiskFull => {
                StoreError::Unavailable {
                    message: error.to_string(),
                }
            }
            ErrorCode::SystemIoFailure | ErrorCode::OutOfMemory => StoreError::Unavailable {
                message: error.to_string(),
            },
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => StoreError::Corrupt {
                what: "database".into(),
                reason: error.to_string(),
            },
            ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::ReadOnly => {
                StoreError::Misconfigured {
                    message: error.to_string(),
                }
            }
            _ => StoreError::Internal {
                message: error.to_string(),
            },
        },
        _ => StoreError::Internal {
            message: error.to_string(),
        },
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u32(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// Claims
// ---------------------------------------------------------------------------------------

struct ClaimRow {
    key: String,
    fingerprint: String,
    state: String,
    owner: String,
    lease_expires_at: i64,
    attempts: i64,
    sending_since: Option<i64>,
    result: Option<String>,
    completed_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
    expires_at: i64,
    revision: i64,
}

const CLAIM_COLUMNS: &str = "key, fingerprint, state, owner, lease_expires_at, attempts, sending_since, \
     result, completed_at, created_at, updated_at, expires_at, revision";

impl ClaimRow {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            key: row.get(0)?,
            fingerprint: row.get(1)?,
            state: row.get(2)?,
            owner: row.get(3)?,
            lease_expires_at: row.get(4)?,
            attempts: row.get(5)?,
            sending_since: row.get(6)?,
            result: row.get(7)?,
            completed_at: row.get(8)?,
            created_at: row.get(9)?,
            updated_at: row.get(10)?,
            expires_at: row.get(11)?,
            revision: row.get(12)?,
        })
    }

    fn into_stored(self) -> StoreResult<StoredClaim> {
        let what = || format!("claim `{}`", self.key);
        let state = ClaimState::parse(&self.state).ok_or_else(|| {
            StoreError::corrupt(what(), format!("unknown state `{}`", self.state))
        })?;
        let owner = OwnerToken::parse(&self.owner)
            .ok_or_else(|| StoreError::corrupt(what(), "unreadable owner token"))?;
        let result = self
            .result
            .as_deref()
            .map(serde_json::from_str::<ClaimResult>)
            .transpose()
            .map_err(|error| StoreError::corrupt(what(), error.to_string()))?;
        Ok(StoredClaim {
            key: ClaimKey::from_stored(self.key.clone()),
            fingerprint: Fingerprint::from_stored(self.fingerprint),
            state,
            owner,
            lease_expires_at: from_millis(self.lease_expires_at)?,
            attempts: to_u32(self.attempts),
            sending_since: self.sending_since.map(from_millis).transpose()?,
            result,
            completed_at: self.completed_at.map(from_millis).transpose()?,
            created_at: from_millis(self.created_at)?,
            updated_at: from_millis(self.updated_at)?,
            expires_at: from_millis(self.expires_at)?,
            revision: to_u64(self.revision),
        })
    }
}

fn read_claim(connection: &Connection, key: &ClaimKey) -> StoreResult<Option<StoredClaim>> {
    connection
        .query_row(
            &format!("SELECT {CLAIM_COLUMNS} FROM claims WHERE key = ?1"),
            params![key.as_str()],
            ClaimRow::from_row,
        )
        .optional()
        .map_err(sql_error)?
        .map(ClaimRow::into_stored)
        .transpose()
}

/// `create_record` of a prepared record, in the caller's (immediate) transaction.
fn create_record_in(
    tx: &Connection,
    record: TriggerRecord,
    now: DateTime<Utc>,
) -> StoreResult<TriggerRecord> {
    if let Some(stored) = read_record_body(tx, record.id)? {
        // Creating exactly what is stored is a repeat, not a conflict (the DynamoDB
        // adapter must treat an SDK retry that way; both adapters agree).
        return if record_from_body(&stored)? == record {
            Ok(record)
        } else {
            Err(StoreError::RecordExists { id: record.id })
        };
    }
    bind_and_write(tx, &record, now, true)?;
    Ok(record)
}

/// Writes `record` (`new`: inserted), binding the pipeline it names first: a pipeline can
/// never be attributed to two records.
fn bind_and_write(
    tx: &Connection,
    record: &TriggerRecord,
    now: DateTime<Utc>,
    new: bool,
) -> StoreResult<()> {
    if let Some(pipeline) = &record.pipeline {
        bind_pipeline(tx, &pipeline.id, record.id, record.expires_at, now)?;
    }
    write_record(tx, record, new)
}

/// `update_record` of a prepared record expected at `expected`, in the caller's
/// (immediate) transaction.
fn update_record_in(
    tx: &Connection,
    record: TriggerRecord,
    expected: u64,
    now: DateTime<Utc>,
) -> StoreResult<TriggerRecord> {
    let stored: Option<(i64, i64, String)> = tx
        .query_row(
            "SELECT version, expires_at, body FROM records WHERE id = ?1",
            params![record.id.to_string()],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .optional()
        .map_err(sql_error)?;
    match stored {
        None => return Err(StoreError::RecordNotFound { id: record.id }),
        Some((_, expires_at, _)) if expires_at <= millis(now) => {
            return Err(StoreError::RecordNotFound { id: record.id });
        }
        Some((version, _, body)) if version != to_i64(expected) => {
            return if record_from_body(&body)? == record {
                Ok(record) // this very write, repeated
            } else {
                Err(StoreError::StaleRecord { id: record.id })
            };
        }
        Some(_) => {}
    }
    bind_and_write(tx, &record, now, false)?;
    Ok(record)
}

/// Gives a claim to a new owner (a takeover of an expired lease, an adoption for
/// reconciliation): its `attempts`-th holder, until `lease_expires_at`.
fn hand_claim_to(
    tx: &Connection,
    key: &ClaimKey,
    owner: OwnerToken,
    lease_expires_at: DateTime<Utc>,
    attempts: u32,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    tx.execute(
        "UPDATE claims SET owner = ?2, lease_expires_at = ?3, attempts = ?4, updated_at = ?5, \
         revision = revision + 1 WHERE key = ?1",
        params![
            key.as_str(),
            owner.to_string(),
            millis(lease_expires_at),
            attempts,
            millis(now)
        ],
    )
    .map(drop)
    .map_err(sql_error)
}

/// A write transaction that takes the database's write lock at once (`BEGIN IMMEDIATE`):
/// every read it makes is already serialised against other writers.
fn immediate(connection: &mut Connection) -> StoreResult<rusqlite::Transaction<'_>> {
    connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_error)
}

/// `claim`'s decision and its write, in the caller's (immediate) transaction.
fn claim_in(
    tx: &Connection,
    key: &ClaimKey,
    fingerprint: &Fingerprint,
    lease: Duration,
    now: DateTime<Utc>,
    settings: &StoreSettings,
) -> StoreResult<ClaimOutcome> {
    let lease_expires_at = logic::lease_end(now, lease)?;
    let existing = read_claim(tx, key)?;
    let decision = match &existing {
        None => ClaimDecision::Vacant,
        Some(existing) => logic::assess_claim(existing, fingerprint, now)?,
    };
    let owner = OwnerToken::generate();
    let outcome = match decision {
        ClaimDecision::Answer(outcome) => return Ok(outcome),
        ClaimDecision::Vacant => {
            tx.execute(
                    "INSERT OR REPLACE INTO claims (key, fingerprint, state, owner, lease_expires_at, \
                     attempts, sending_since, result, completed_at, created_at, updated_at, expires_at, \
                     revision, schema_version) \
                     VALUES (?1, ?2, 'in_progress', ?3, ?4, 1, NULL, NULL, NULL, ?5, ?5, ?6, 1, ?7)",
                    params![
                        key.as_str(),
                        fingerprint.as_str(),
                        owner.to_string(),
                        millis(lease_expires_at),
                        millis(now),
                        millis(logic::retention_end(now, settings)),
                        SCHEMA_VERSION,
                    ],
                )
                .map_err(sql_error)?;
            ClaimOutcome::Won(ClaimGrant {
                owner,
                attempt: 1,
                lease_expires_at,
                taken_over: false,
            })
        }
        ClaimDecision::TakeOver => {
            let attempts = existing.as_ref().map_or(1, |e| e.attempts + 1);
            hand_claim_to(tx, key, owner, lease_expires_at, attempts, now)?;
            ClaimOutcome::Won(ClaimGrant {
                owner,
                attempt: attempts,
                lease_expires_at,
                taken_over: true,
            })
        }
    };
    Ok(outcome)
}

/// Runs a holder transition inside one transaction: check, then `apply` when allowed.
fn holder_transition(
    connection: &mut Connection,
    op: HolderOp,
    key: &ClaimKey,
    owner: OwnerToken,
    now: DateTime<Utc>,
    apply: impl FnOnce(&Connection, &StoredClaim) -> StoreResult<()>,
) -> StoreResult<()> {
    let tx = immediate(connection)?;
    let stored = read_claim(&tx, key)?;
    let plan = logic::check_holder(op, key, stored.as_ref(), owner, now)?;
    if let (HolderPlan::Apply, Some(stored)) = (plan, stored.as_ref()) {
        apply(&tx, stored)?;
    }
    tx.commit().map_err(sql_error)
}

#[async_trait]
impl ClaimStore for SqliteStore {
    async fn claim(
        &self,
        key: &ClaimKey,
        fingerprint: &Fingerprint,
        lease: Duration,
    ) -> StoreResult<ClaimOutcome> {
        let key = key.clone();
        let fingerprint = fingerprint.clone();
        self.run(move |connection, now, settings| {
            let tx = immediate(connection)?;
            let outcome = claim_in(&tx, &key, &fingerprint, lease, now, settings)?;
            tx.commit().map_err(sql_error)?;
            Ok(outcome)
        })
        .await
    }

    async fn renew(
        &self,
        key: &ClaimKey,
        owner: OwnerToken,
        lease: Duration,
    ) -> StoreResult<DateTime<Utc>> {
        let key = key.clone();
        self.run(move |connection, now, _| {
            let lease_expires_at = logic::lease_end(now, lease)?;
            holder_transition(connection, HolderOp::Renew, &key, owner, now, |tx, _| {
                tx.execute(
                    "UPDATE claims SET lease_expires_at = ?2, updated_at = ?3, revision = revision + 1 \
                     WHERE key = ?1",
                    params![key.as_str(), millis(lease_expires_at), millis(now)],
                )
                .map(drop)
                .map_err(sql_error)
            })?;
            Ok(lease_expires_at)
        })
        .await
    }

    async fn mark_sending(&self, key: &ClaimKey, owner: OwnerToken) -> StoreResult<()> {
        let key = key.clone();
        self.run(move |connection, now, _| {
            holder_transition(
                connection,
                HolderOp::MarkSending,
                &key,
                owner,
                now,
                |tx, _| {
                    tx.execute(
                        "UPDATE claims SET state = 'sending', sending_since = ?2, updated_at = ?2, \
                     revision = revision + 1 WHERE key = ?1",
                        params![key.as_str(), millis(now)],
                    )
                    .map(drop)
                    .map_err(sql_error)
                },
            )
        })
        .await
    }

    async fn complete(
        &self,
        key: &ClaimKey,
        owner: OwnerToken,
        result: &ClaimResult,
    ) -> StoreResult<()> {
        let key = key.clone();
        let result = serde_json::to_string(result).map_err(|error| {
            StoreError::invalid(format!("unserialisable claim result: {error}"))
        })?;
        self.run(move |connection, now, _| {
            holder_transition(connection, HolderOp::Complete, &key, owner, now, |tx, _| {
                tx.execute(
                    "UPDATE claims SET state = 'completed', result = ?2, completed_at = ?3, \
                     updated_at = ?3, revision = revision + 1 WHERE key = ?1",
                    params![key.as_str(), result, millis(now)],
                )
                .map(drop)
                .map_err(sql_error)
            })
        })
        .await
    }

    async fn release(&self, key: &ClaimKey, owner: OwnerToken) -> StoreResult<()> {
        let key = key.clone();
        self.run(move |connection, now, _| {
            holder_transition(connection, HolderOp::Release, &key, owner, now, |tx, _| {
                tx.execute("DELETE FROM claims WHERE key = ?1", params![key.as_str()])
                    .map(drop)
                    .map_err(sql_error)
            })
        })
        .await
    }

    async fn adopt_ambiguous(&self, key: &ClaimKey, lease: Duration) -> StoreResult<ClaimGrant> {
        let key = key.clone();
        self.run(move |connection, now, _| {
            let lease_expires_at = logic::lease_end(now, lease)?;
            let tx = immediate(connection)?;
            let stored = read_claim(&tx, &key)?;
            logic::check_adoptable(&key, stored.as_ref(), now)?;
            let attempts = stored.as_ref().map_or(1, |s| s.attempts + 1);
            let owner = OwnerToken::generate();
            hand_claim_to(&tx, &key, owner, lease_expires_at, attempts, now)?;
            tx.commit().map_err(sql_error)?;
            Ok(ClaimGrant {
                owner,
                attempt: attempts,
                lease_expires_at,
                taken_over: true,
            })
        })
        .await
    }

    async fn claim_snapshot(&self, key: &ClaimKey) -> StoreResult<Option<ClaimSnapshot>> {
        let key = key.clone();
        self.run(move |connection, now, _| {
            Ok(read_claim(connection, &key)?
                .filter(|claim| !claim.is_expired(now))
                .map(|claim| claim.snapshot()))
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------
// Trigger records
// ---------------------------------------------------------------------------------------

fn record_from_body(body: &str) -> StoreResult<TriggerRecord> {
    serde_json::from_str(body)
        .map_err(|error| StoreError::corrupt("trigger record", error.to_string()))
}

fn read_record_body(connection: &Connection, id: TriggerId) -> StoreResult<Option<String>> {
    connection
        .query_row(
            "SELECT body FROM records WHERE id = ?1",
            params![id.to_string()],
            |row| row.get(0),
        )
        .optional()
        .map_err(sql_error)
}

/// Binds `pipeline_id` to `trigger_id` unless a live binding to another trigger exists.
fn bind_pipeline(
    tx: &Connection,
    pipeline_id: &str,
    trigger_id: TriggerId,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let existing: Option<(String, i64)> = tx
        .query_row(
            "SELECT trigger_id, expires_at FROM pipelines WHERE pipeline_id = ?1",
            params![pipeline_id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .map_err(sql_error)?;
    if let Some((bound, bound_expires)) = existing
        && bound != trigger_id.to_string()
        && bound_expires > millis(now)
    {
        let trigger_id = bound
            .parse()
            .map_err(|_| StoreError::corrupt("pipeline binding", "unreadable trigger id"))?;
        return Err(StoreError::PipelineAlreadyRecorded {
            pipeline_id: pipeline_id.to_owned(),
            trigger_id,
        });
    }
    tx.execute(
        "INSERT OR REPLACE INTO pipelines (pipeline_id, trigger_id, expires_at) VALUES (?1, ?2, ?3)",
        params![pipeline_id, trigger_id.to_string(), millis(expires_at)],
    )
    .map_err(sql_error)?;
    Ok(())
}

fn write_record(tx: &Connection, record: &TriggerRecord, insert: bool) -> StoreResult<()> {
    let body = serde_json::to_string(record)
        .map_err(|error| StoreError::invalid(format!("unserialisable record: {error}")))?;
    let sql = if insert {
        "INSERT INTO records (id, source_kind, source_name, project, origin, pipeline_id, status, \
         retry_at, swept, created_at, expires_at, version, schema_version, body) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
    } else {
        "UPDATE records SET source_kind = ?2, source_name = ?3, project = ?4, origin = ?5, \
         pipeline_id = ?6, status = ?7, retry_at = ?8, swept = ?9, created_at = ?10, \
         expires_at = ?11, version = ?12, schema_version = ?13, body = ?14 WHERE id = ?1"
    };
    tx.execute(
        sql,
        params![
            record.id.to_string(),
            record.source.kind.as_str(),
            record.source.name,
            record.target.project,
            record.origin.to_string(),
            record.pipeline.as_ref().map(|p| p.id.as_str()),
            record.status.as_str(),
            record.retry_at.map(millis),
            // The column says "in the retry index" (see `TriggerRecord::in_retry_index`).
            record.in_retry_index(),
            millis(record.created_at),
            millis(record.expires_at),
            to_i64(record.version),
            record.schema_version,
            body,
        ],
    )
    .map_err(sql_error)?;
    Ok(())
}

/// A newest-first listing: `filter` is a SQL condition over `records` with `?1`.. params.
struct Listing {
    scope: String,
    filter: &'static str,
    params: Vec<String>,
}

fn list_page(
    connection: &Connection,
    listing: &Listing,
    page: &PageRequest,
    now: DateTime<Utc>,
) -> StoreResult<Page<TriggerRecord>> {
    let limit = page.clamped_limit();
    let after: Option<(i64, String)> = page
        .cursor
        .as_ref()
        .map(|c| cursor::decode(&listing.scope, c))
        .transpose()?;
    let n = listing.params.len();
    let (before_created, before_id) = after.unwrap_or((i64::MAX, String::new()));
    // With no cursor, `id < ''` never holds but `created_at < i64::MAX` always does.
    let sql = format!(
        "SELECT body, created_at, id FROM records WHERE {filter} AND expires_at > ?{p_now} \
         AND (created_at < ?{p_created} OR (created_at = ?{p_created} AND id < ?{p_id})) \
         ORDER BY created_at DESC, id DESC LIMIT ?{p_limit}",
        filter = listing.filter,
        p_now = n + 1,
        p_created = n + 2,
        p_id = n + 3,
        p_limit = n + 4,
    );
    let mut values: Vec<rusqlite::types::Value> = listing
        .params
        .iter()
        .map(|p| rusqlite::types::Value::Text(p.clone()))
        .collect();
    values.push(millis(now).into());
    values.push(before_created.into());
    values.push(before_id.into());
    values.push(i64::try_from(limit + 1).unwrap_or(i64::MAX).into());
    let mut statement = connection.prepare(&sql).map_err(sql_error)?;
    let rows = statement
        .query_map(rusqlite::params_from_iter(values), |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
            ))
        })
        .map_err(sql_error)?;
    let mut items = Vec::with_capacity(limit);
    let mut last: Option<(i64, String)> = None;
    let mut more = false;
    for row in rows {
        let (body, created_at, id) = row.map_err(sql_error)?;
        if items.len() == limit {
            more = true;
            break;
        }
        items.push(record_from_body(&body)?);
        last = Some((created_at, id));
    }
    let next = match (more, last) {
        (true, Some(position)) => Some(cursor::encode(&listing.scope, &position)?),
        _ => None,
    };
    Ok(Page { items, next })
}

/// The composed defaults: each step is already one SQLite transaction, and a local disk
/// bills nothing per write.
/// The trigger's write path as DynamoDB runs it, each step one local transaction: opening
/// claims and creates the record (the claim already `sending` for a create), settling
/// checks the holder, writes the record and completes the claim.
#[async_trait]
impl TriggerLedger for SqliteStore {
    async fn open_trigger(
        &self,
        key: &ClaimKey,
        fingerprint: &Fingerprint,
        lease: Duration,
        record: TriggerRecord,
        sending: bool,
    ) -> StoreResult<OpenedTrigger> {
        let key = key.clone();
        let fingerprint = fingerprint.clone();
        self.run(move |connection, now, settings| {
            let tx = immediate(connection)?;
            let outcome = claim_in(&tx, &key, &fingerprint, lease, now, settings)?;
            let ClaimOutcome::Won(grant) = &outcome else {
                return Ok(OpenedTrigger {
                    outcome,
                    record: None,
                    marked_sending: false,
                });
            };
            let fresh = !grant.taken_over && grant.attempt == 1;
            let id = record.id;
            let existing = match fresh {
                true => None,
                false => tx
                    .query_row(
                        "SELECT body FROM records WHERE id = ?1 AND expires_at > ?2",
                        params![id.to_string(), millis(now)],
                        |row| row.get::<_, String>(0),
                    )
                    .optional()
                    .map_err(sql_error)?
                    .map(|body| record_from_body(&body))
                    .transpose()?,
            };
            let record = match existing {
                Some(existing) => existing,
                None => {
                    let prepared = logic::prepare_create(record, settings, now)?;
                    match create_record_in(&tx, prepared, now) {
                        Ok(created) => created,
                        Err(StoreError::RecordExists { .. }) => read_record_body(&tx, id)?
                            .map(|body| record_from_body(&body))
                            .transpose()?
                            .ok_or(StoreError::RecordNotFound { id })?,
                        Err(error) => return Err(error),
                    }
                }
            };
            // A fresh claim for a create starts out sending, as on DynamoDB (no
            // `mark_sending` step); a takeover is marked by its holder after its checks.
            let marked_sending = sending && fresh;
            if marked_sending {
                tx.execute(
                    "UPDATE claims SET state = 'sending', sending_since = ?2, updated_at = ?2 \
                     WHERE key = ?1",
                    params![key.as_str(), millis(now)],
                )
                .map_err(sql_error)?;
            }
            tx.commit().map_err(sql_error)?;
            Ok(OpenedTrigger {
                outcome,
                record: Some(record),
                marked_sending,
            })
        })
        .await
    }

    async fn settle_trigger(
        &self,
        key: &ClaimKey,
        owner: OwnerToken,
        _lease: Duration,
        record: TriggerRecord,
    ) -> StoreResult<TriggerRecord> {
        let key = key.clone();
        self.run(move |connection, now, settings| {
            let (record, expected) = logic::prepare_update(record, settings, now)?;
            let result =
                serde_json::to_string(&ClaimResult::trigger(record.id)).map_err(|error| {
                    StoreError::invalid(format!("unserialisable claim result: {error}"))
                })?;
            let tx = immediate(connection)?;
            // The fence: still this holder's live, undecided claim (no lease to extend:
            // the claim is completed in the same transaction).
            let stored = read_claim(&tx, &key)?;
            logic::check_holder(HolderOp::Renew, &key, stored.as_ref(), owner, now)?;
            let saved = update_record_in(&tx, record, expected, now)?;
            tx.execute(
                "UPDATE claims SET state = 'completed', result = ?2, completed_at = ?3, \
                 updated_at = ?3, revision = revision + 1 WHERE key = ?1",
                params![key.as_str(), result, millis(now)],
            )
            .map_err(sql_error)?;
            tx.commit().map_err(sql_error)?;
            Ok(saved)
        })
        .await
    }
}

#[async_trait]
impl HistoryStore for SqliteStore {
    async fn create_record(&self, record: TriggerRecord) -> StoreResult<TriggerRecord> {
        self.run(move |connection, now, settings| {
            let record = logic::prepare_create(record, settings, now)?;
            let tx = immediate(connection)?;
            let created = create_record_in(&tx, record, now)?;
            tx.commit().map_err(sql_error)?;
            Ok(created)
        })
        .await
    }

    async fn update_record(&self, record: TriggerRecord) -> StoreResult<TriggerRecord> {
        self.run(move |connection, now, settings| {
            let (record, expected) = logic::prepare_update(record, settings, now)?;
            let tx = immediate(connection)?;
            let saved = update_record_in(&tx, record, expected, now)?;
            tx.commit().map_err(sql_error)?;
            Ok(saved)
        })
        .await
    }

    async fn get_record(&self, id: TriggerId) -> StoreResult<Option<TriggerRecord>> {
        self.run(move |connection, now, _| {
            connection
                .query_row(
                    "SELECT body FROM records WHERE id = ?1 AND expires_at > ?2",
                    params![id.to_string(), millis(now)],
                    |row| row.get::<_, String>(0),
                )
                .optional()
                .map_err(sql_error)?
                .map(|body| record_from_body(&body))
                .transpose()
        })
        .await
    }

    async fn list_by_source(
        &self,
        source: &TriggerSource,
        page: PageRequest,
    ) -> StoreResult<Page<TriggerRecord>> {
        let listing = Listing {
            scope: format!("source#{}#{}", source.kind, source.name),
            filter: "source_kind = ?1 AND source_name = ?2",
            params: vec![source.kind.as_str().to_owned(), source.name.clone()],
        };
        self.run(move |connection, now, _| list_page(connection, &listing, &page, now))
            .await
    }

    async fn list_by_project(
        &self,
        project: &str,
        page: PageRequest,
    ) -> StoreResult<Page<TriggerRecord>> {
        let project = logic::canonical_project(project);
        let listing = Listing {
            scope: format!("project#{project}"),
            filter: "project = ?1",
            params: vec![project],
        };
        self.run(move |connection, now, _| list_page(connection, &listing, &page, now))
            .await
    }

    async fn list_by_origin(
        &self,
        origin: TriggerId,
        project: Option<&str>,
        page: PageRequest,
    ) -> StoreResult<Page<TriggerRecord>> {
        let listing = match project.map(logic::canonical_project) {
            Some(project) => Listing {
                scope: format!("origin#{origin}#{project}"),
                filter: "origin = ?1 AND project = ?2",
                params: vec![origin.to_string(), project],
            },
            None => Listing {
                scope: format!("origin#{origin}"),
                filter: "origin = ?1",
                params: vec![origin.to_string()],
            },
        };
        self.run(move |connection, now, _| list_page(connection, &listing, &page, now))
            .await
    }

    async fn list_recent(&self, page: PageRequest) -> StoreResult<Page<TriggerRecord>> {
        let listing = Listing {
            scope: "recent".into(),
            filter: "1 = 1",
            params: Vec::new(),
        };
        self.run(move |connection, now, _| list_page(connection, &listing, &page, now))
            .await
    }

    async fn find_by_pipeline(&self, pipeline_id: &str) -> StoreResult<Option<TriggerRecord>> {
        let pipeline_id = pipeline_id.to_owned();
        self.run(move |connection, now, _| {
            connection
                .query_row(
                    "SELECT r.body FROM pipelines p JOIN records r ON r.id = p.trigger_id \
                     WHERE p.pipeline_id = ?1 AND p.expires_at > ?2 AND r.expires_at > ?2",
                    params![pipeline_id, millis(now)],
                    |row| row.get::<_, String>(0),
                )
                .optional()
                .map_err(sql_error)?
                .map(|body| record_from_body(&body))
                .transpose()
        })
        .await
    }

    async fn pipeline_recorded(&self, pipeline_id: &str) -> StoreResult<Option<TriggerId>> {
        let pipeline_id = pipeline_id.to_owned();
        self.run(move |connection, now, _| {
            connection
                .query_row(
                    "SELECT trigger_id FROM pipelines WHERE pipeline_id = ?1 AND expires_at > ?2",
                    params![pipeline_id, millis(now)],
                    |row| row.get::<_, String>(0),
                )
                .optional()
                .map_err(sql_error)?
                .map(|id| {
                    id.parse().map_err(|_| {
                        StoreError::corrupt("pipeline binding", "unreadable trigger id")
                    })
                })
                .transpose()
        })
        .await
    }

    async fn due_for_retry(&self, limit: u32) -> StoreResult<Vec<TriggerRecord>> {
        let limit = i64::from(limit.clamp(1, super::MAX_PAGE_SIZE));
        self.run(move |connection, now, _| {
            let mut statement = connection
                .prepare(
                    "SELECT body FROM records WHERE swept = 1 AND retry_at IS NOT NULL \
                     AND retry_at <= ?1 AND expires_at > ?1 ORDER BY retry_at, id LIMIT ?2",
                )
                .map_err(sql_error)?;
            let rows = statement
                .query_map(params![millis(now), limit], |row| row.get::<_, String>(0))
                .map_err(sql_error)?;
            rows.map(|row| record_from_body(&row.map_err(sql_error)?))
                .collect()
        })
        .await
    }

    async fn purge_expired(&self, limit: u32) -> StoreResult<u64> {
        self.run(move |connection, now, _| {
            let tx = immediate(connection)?;
            let mut budget = i64::from(limit);
            let mut purged = 0_u64;
            for (table, key) in [
                ("records", "id"),
                ("pipelines", "pipeline_id"),
                ("claims", "key"),
                ("joins", "key"),
                ("join_arrivals", "rowid"),
                ("rate_windows", "rowid"),
            ] {
                if budget <= 0 {
                    break;
                }
                let deleted = tx
                    .execute(
                        &format!(
                            "DELETE FROM {table} WHERE {key} IN \
                             (SELECT {key} FROM {table} WHERE expires_at <= ?1 LIMIT ?2)"
                        ),
                        params![millis(now), budget],
                    )
                    .map_err(sql_error)?;
                budget -= i64::try_from(deleted).unwrap_or(i64::MAX);
                purged += deleted as u64;
            }
            tx.commit().map_err(sql_error)?;
            Ok(purged)
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------
// Schedule state
// ---------------------------------------------------------------------------------------

#[async_trait]
impl ScheduleStateStore for SqliteStore {
    async fn scheduler_state(&self) -> StoreResult<Option<SchedulerState>> {
        self.run(move |connection, _, _| {
            let row: Option<(String, Option<i64>, Option<i64>, Option<bool>, i64)> = connection
                .query_row(
                    "SELECT digest, evaluated_through, next_due, behind, updated_at \
                     FROM scheduler WHERE item = 'state'",
                    [],
                    |row| {
                        Ok((
                            row.get(0)?,
                            row.get(1)?,
                            row.get(2)?,
                            row.get(3)?,
                            row.get(4)?,
                        ))
                    },
                )
                .optional()
                .map_err(sql_error)?;
            row.map(|(digest, through, next_due, behind, updated)| {
                let through = through.ok_or_else(|| {
                    StoreError::corrupt("scheduler state", "no evaluated_through")
                })?;
                Ok(SchedulerState {
                    digest,
                    evaluated_through: from_millis(through)?,
                    next_due: next_due.map(from_millis).transpose()?,
                    behind: behind.unwrap_or(false),
                    updated_at: from_millis(updated)?,
                })
            })
            .transpose()
        })
        .await
    }

    async fn schedule_definitions(&self) -> StoreResult<Option<ScheduleDefinitions>> {
        self.run(move |connection, _, _| {
            let row: Option<(String, Option<String>)> = connection
                .query_row(
                    "SELECT digest, schedules FROM scheduler WHERE item = 'definitions'",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(sql_error)?;
            row.map(|(digest, schedules)| {
                ScheduleDefinitions::from_stored(digest, schedules.as_deref().unwrap_or("{}"))
                    .map_err(|reason| StoreError::corrupt("schedule definitions", reason))
            })
            .transpose()
        })
        .await
    }

    async fn save_scheduler_state(
        &self,
        state: &SchedulerState,
        definitions: Option<&ScheduleDefinitions>,
    ) -> StoreResult<bool> {
        let state = state.clone();
        let definitions = definitions.map(|d| (d.digest.clone(), d.entries_json()));
        self.run(move |connection, now, _| {
            let transaction = immediate(connection)?;
            let stored: Option<Option<i64>> = transaction
                .query_row(
                    "SELECT evaluated_through FROM scheduler WHERE item = 'state'",
                    [],
                    |row| row.get(0),
                )
                .optional()
                .map_err(sql_error)?;
            let through = millis(state.evaluated_through);
            if stored.flatten().is_some_and(|stored| stored >= through) {
                return Ok(false); // never backwards; the transaction rolls back on drop
            }
            transaction
                .execute(
                    "INSERT OR REPLACE INTO scheduler \
                     (item, digest, evaluated_through, next_due, behind, schedules, updated_at) \
                     VALUES ('state', ?1, ?2, ?3, ?4, NULL, ?5)",
                    params![
                        state.digest,
                        through,
                        state.next_due.map(millis),
                        state.behind,
                        millis(now)
                    ],
                )
                .map_err(sql_error)?;
            if let Some((digest, schedules)) = definitions {
                transaction
                    .execute(
                        "INSERT OR REPLACE INTO scheduler \
                         (item, digest, evaluated_through, next_due, behind, schedules, updated_at) \
                         VALUES ('definitions', ?1, NULL, NULL, NULL, ?2, ?3)",
                        params![digest, schedules, millis(now)],
                    )
                    .map_err(sql_error)?;
            }
            transaction.commit().map_err(sql_error)?;
            Ok(true)
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------
// Joins
// ---------------------------------------------------------------------------------------

fn read_join(connection: &Connection, key: &ClaimKey) -> StoreResult<Option<JoinState>> {
    let row = connection
        .query_row(
            "SELECT generation, status, expected, opened_at, window_ends_at, closed_by, finished_at \
             FROM joins WHERE key = ?1",
            params![key.as_str()],
            |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, i64>(4)?,
                    row.get::<_, Option<String>>(5)?,
                    row.get::<_, Option<i64>>(6)?,
                ))
            },
        )
        .optional()
        .map_err(sql_error)?;
    let Some((generation, status, expected, opened_at, window_ends_at, closed_by, finished_at)) =
        row
    else {
        return Ok(None);
    };
    let what = || format!("join `{key}`");
    let status = JoinStatus::parse(&status)
        .ok_or_else(|| StoreError::corrupt(what(), format!("unknown status `{status}`")))?;
    let expected: BTreeSet<String> = serde_json::from_str(&expected)
        .map_err(|error| StoreError::corrupt(what(), error.to_string()))?;
    let generation = to_u64(generation);
    let mut statement = connection
        .prepare(
            "SELECT upstream, succeeded, pipeline_id, trigger_id, arrived_at FROM join_arrivals \
             WHERE key = ?1 AND generation = ?2 ORDER BY upstream",
        )
        .map_err(sql_error)?;
    let arrived = statement
        .query_map(params![key.as_str(), to_i64(generation)], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, bool>(1)?,
                row.get::<_, Option<String>>(2)?,
                row.get::<_, Option<String>>(3)?,
                row.get::<_, i64>(4)?,
            ))
        })
        .map_err(sql_error)?
        .map(|row| {
            let (upstream, succeeded, pipeline_id, trigger_id, arrived_at) =
                row.map_err(sql_error)?;
            Ok(ArrivedUpstream {
                upstream,
                succeeded,
                pipeline_id,
                trigger_id: trigger_id
                    .map(|id| {
                        id.parse()
                            .map_err(|_| StoreError::corrupt(what(), "unreadable trigger id"))
                    })
                    .transpose()?,
                arrived_at: from_millis(arrived_at)?,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(Some(JoinState {
        key: key.clone(),
        generation,
        status,
        expected,
        arrived,
        opened_at: from_millis(opened_at)?,
        window_ends_at: from_millis(window_ends_at)?,
        closed_by,
        finished_at: finished_at.map(from_millis).transpose()?,
    }))
}

#[async_trait]
impl JoinStore for SqliteStore {
    async fn join_arrive(&self, arrival: &JoinArrival) -> StoreResult<JoinOutcome> {
        logic::validate_arrival(arrival)?;
        let arrival = arrival.clone();
        self.run(move |connection, now, settings| {
            let tx = immediate(connection)?;
            let key = &arrival.key;
            let current = read_join(&tx, key)?.filter(|state| logic::join_generation_current(state, now));
            let state = match current {
                Some(state) => state,
                None => {
                    // No join, or its window has passed: open the next generation.
                    let generation: i64 = tx
                        .query_row(
                            "SELECT generation FROM joins WHERE key = ?1",
                            params![key.as_str()],
                            |row| row.get(0),
                        )
                        .optional()
                        .map_err(sql_error)?
                        .map_or(1, |g: i64| g + 1);
                    let window_ends_at = now + logic::to_delta(arrival.window);
                    let expected = serde_json::to_string(&arrival.expected)
                        .map_err(|error| StoreError::invalid(error.to_string()))?;
                    tx.execute("DELETE FROM join_arrivals WHERE key = ?1", params![key.as_str()])
                        .map_err(sql_error)?;
                    tx.execute(
                        "INSERT OR REPLACE INTO joins (key, generation, status, expected, opened_at, \
                         window_ends_at, closed_by, finished_at, expires_at) \
                         VALUES (?1, ?2, 'open', ?3, ?4, ?5, NULL, NULL, ?6)",
                        params![
                            key.as_str(),
                            generation,
                            expected,
                            millis(now),
                            millis(window_ends_at),
                            millis(logic::retention_end(window_ends_at, settings)),
                        ],
                    )
                    .map_err(sql_error)?;
                    read_join(&tx, key)?.ok_or_else(|| StoreError::Internal {
                        message: "a join written in this transaction is missing".into(),
                    })?
                }
            };
            let outcome = match state.status {
                JoinStatus::Complete => JoinOutcome::Complete {
                    state,
                    fired_now: false,
                },
                JoinStatus::Closed => JoinOutcome::Closed {
                    state,
                    closed_now: false,
                },
                JoinStatus::Open => {
                    let inserted = tx
                        .execute(
                            "INSERT OR IGNORE INTO join_arrivals (key, generation, upstream, succeeded, \
                             pipeline_id, trigger_id, arrived_at, expires_at) \
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                            params![
                                key.as_str(),
                                to_i64(state.generation),
                                arrival.upstream,
                                arrival.succeeded,
                                arrival.pipeline_id,
                                arrival.trigger_id.map(|id| id.to_string()),
                                millis(now),
                                millis(logic::retention_end(state.window_ends_at, settings)),
                            ],
                        )
                        .map_err(sql_error)?;
                    let state = read_join(&tx, key)?.unwrap_or(state);
                    match logic::join_step(&state, &state.arrived) {
                        JoinStep::Wait => JoinOutcome::Waiting {
                            state,
                            duplicate: inserted == 0,
                        },
                        JoinStep::Complete => {
                            tx.execute(
                                "UPDATE joins SET status = 'complete', finished_at = ?2 WHERE key = ?1",
                                params![key.as_str(), millis(now)],
                            )
                            .map_err(sql_error)?;
                            JoinOutcome::Complete {
                                state: JoinState {
                                    status: JoinStatus::Complete,
                                    finished_at: Some(now),
                                    ..state
                                },
                                fired_now: true,
                            }
                        }
                        JoinStep::Close { by } => {
                            tx.execute(
                                "UPDATE joins SET status = 'closed', closed_by = ?2, finished_at = ?3 \
                                 WHERE key = ?1",
                                params![key.as_str(), by, millis(now)],
                            )
                            .map_err(sql_error)?;
                            JoinOutcome::Closed {
                                state: JoinState {
                                    status: JoinStatus::Closed,
                                    closed_by: Some(by),
                                    finished_at: Some(now),
                                    ..state
                                },
                                closed_now: true,
                            }
                        }
                    }
                }
            };
            tx.commit().map_err(sql_error)?;
            Ok(outcome)
        })
        .await
    }

    async fn join_state(&self, key: &ClaimKey) -> StoreResult<Option<JoinState>> {
        let key = key.clone();
        self.run(move |connection, _, _| read_join(connection, &key))
            .await
    }

    async fn take_rate_ticket(&self, ticket: &RateTicket) -> StoreResult<bool> {
        let ticket = ticket.clone();
        self.run(move |connection, _, _| {
            // One statement: the first request opens the window, later ones count while
            // it has room (the WHERE makes a full window a no-op).
            let changed = connection
                .execute(
                    "INSERT INTO rate_windows (client, window_start, used, expires_at) \
                     VALUES (?1, ?2, 1, ?3) \
                     ON CONFLICT (client, window_start) DO UPDATE SET used = used + 1 \
                     WHERE used < ?4",
                    params![
                        ticket.client,
                        millis(ticket.window_start),
                        millis(ticket.window_ends_at),
                        i64::from(ticket.limit)
                    ],
                )
                .map_err(sql_error)?;
            Ok(changed == 1 && ticket.limit > 0)
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------
// Pause flags
// ---------------------------------------------------------------------------------------

fn flag_from_row(row: &Row<'_>) -> rusqlite::Result<(String, Option<String>, Option<String>, i64)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
}

fn to_flag(
    (scope, reason, paused_by, paused_at): (String, Option<String>, Option<String>, i64),
) -> StoreResult<PauseFlag> {
    Ok(PauseFlag {
        scope: scope
            .parse()
            .map_err(|e: InvalidPauseScope| StoreError::corrupt("pause flag", e.to_string()))?,
        reason,
        paused_by,
        paused_at: from_millis(paused_at)?,
    })
}

#[async_trait]
impl FlagStore for SqliteStore {
    async fn pause(
        &self,
        scope: &PauseScope,
        reason: Option<&str>,
        paused_by: Option<&str>,
    ) -> StoreResult<PauseFlag> {
        let flag = PauseFlag {
            scope: scope.clone(),
            reason: reason.map(str::to_owned),
            paused_by: paused_by.map(str::to_owned),
            paused_at: self.clock.now(),
        };
        let stored = flag.clone();
        self.run(move |connection, _, _| {
            connection
                .execute(
                    "INSERT OR REPLACE INTO pause_flags (scope, reason, paused_by, paused_at) \
                     VALUES (?1, ?2, ?3, ?4)",
                    params![
                        stored.scope.to_string(),
                        stored.reason,
                        stored.paused_by,
                        millis(stored.paused_at)
                    ],
                )
                .map_err(sql_error)?;
            Ok(())
        })
        .await?;
        Ok(flag)
    }

    async fn resume(&self, scope: &PauseScope) -> StoreResult<bool> {
        let scope = scope.to_string();
        self.run(move |connection, _, _| {
            let deleted = connection
                .execute("DELETE FROM pause_flags WHERE scope = ?1", params![scope])
                .map_err(sql_error)?;
            Ok(deleted > 0)
        })
        .await
    }

    async fn pause_flag(&self, scope: &PauseScope) -> StoreResult<Option<PauseFlag>> {
        let scope = scope.to_string();
        self.run(move |connection, _, _| {
            connection
                .query_row(
                    "SELECT scope, reason, paused_by, paused_at FROM pause_flags WHERE scope = ?1",
                    params![scope],
                    flag_from_row,
                )
                .optional()
                .map_err(sql_error)?
                .map(to_flag)
                .transpose()
        })
        .await
    }

    async fn pause_flags(&self) -> StoreResult<Vec<PauseFlag>> {
        self.run(move |connection, _, _| {
            let mut statement = connection
                .prepare(
                    "SELECT scope, reason, paused_by, paused_at FROM pause_flags ORDER BY scope",
                )
                .map_err(sql_error)?;
            let rows = statement.query_map([], flag_from_row).map_err(sql_error)?;
            rows.map(|row| to_flag(row.map_err(sql_error)?)).collect()
        })
        .await
    }
}

//! Decisions both adapters share, so SQLite and DynamoDB cannot drift apart in semantics:
//! what an existing claim means to a new claimant, which holder transitions are allowed,
//! how a record is prepared for writing, and when a join completes or closes.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use triggers_config::ProjectSlug;

use super::{
    ArrivedUpstream, ClaimKey, ClaimOutcome, ClaimResult, ClaimSnapshot, ClaimState, Fingerprint,
    JoinState, OwnerToken, SCHEMA_VERSION, StoreError, StoreResult, StoreSettings, TriggerRecord,
    redact_parameters,
};

/// Longest lease a claim may ask for: longer than any Lambda timeout, shorter than the
/// shortest retention, so a lease always ends before its claim could be forgotten.
pub(crate) const MAX_LEASE: Duration = Duration::from_secs(86_400);

/// A claim as both adapters store it.
#[derive(Debug, Clone)]
pub(crate) struct StoredClaim {
    pub key: ClaimKey,
    pub fingerprint: Fingerprint,
    pub state: ClaimState,
    pub owner: OwnerToken,
    pub lease_expires_at: DateTime<Utc>,
    pub attempts: u32,
    pub sending_since: Option<DateTime<Utc>>,
    pub result: Option<ClaimResult>,
    pub completed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Bumped by every write; takeovers are conditional on the revision they observed.
    pub revision: u64,
}

impl StoredClaim {
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at <= now
    }

    pub fn snapshot(&self) -> ClaimSnapshot {
        ClaimSnapshot {
            key: self.key.clone(),
            fingerprint: self.fingerprint.clone(),
            state: self.state,
            attempts: self.attempts,
            lease_expires_at: self.lease_expires_at,
            sending_since: self.sending_since,
            result: self.result.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            expires_at: self.expires_at,
        }
    }
}

/// What an existing claim means for a new `claim` call.
#[derive(Debug)]
pub(crate) enum ClaimDecision {
    /// Past retention: as good as absent; overwrite it.
    Vacant,
    /// The lease ran out before sending: take it over (conditional on the observed revision).
    TakeOver,
    /// Answer without writing.
    Answer(ClaimOutcome),
}

pub(crate) fn assess_claim(
    existing: &StoredClaim,
    fingerprint: &Fingerprint,
    now: DateTime<Utc>,
) -> StoreResult<ClaimDecision> {
    if existing.is_expired(now) {
        return Ok(ClaimDecision::Vacant);
    }
    if existing.fingerprint != *fingerprint {
        return Ok(ClaimDecision::Answer(ClaimOutcome::Conflict));
    }
    let live = existing.lease_expires_at > now;
    Ok(match existing.state {
        ClaimState::Completed => {
            let result = existing.result.clone().ok_or_else(|| {
                StoreError::corrupt(
                    format!("claim `{}`", existing.key),
                    "completed without a result",
                )
            })?;
            ClaimDecision::Answer(ClaimOutcome::Completed {
                result,
                completed_at: existing.completed_at.unwrap_or(existing.updated_at),
            })
        }
        ClaimState::InProgress if live => ClaimDecision::Answer(ClaimOutcome::InProgress {
            state: ClaimState::InProgress,
            lease_expires_at: existing.lease_expires_at,
        }),
        ClaimState::InProgress => ClaimDecision::TakeOver,
        ClaimState::Sending if live => ClaimDecision::Answer(ClaimOutcome::InProgress {
            state: ClaimState::Sending,
            lease_expires_at: existing.lease_expires_at,
        }),
        ClaimState::Sending => ClaimDecision::Answer(ClaimOutcome::Ambiguous {
            sending_since: existing.sending_since.unwrap_or(existing.updated_at),
            attempts: existing.attempts,
        }),
    })
}

/// A transition only the holder may make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HolderOp {
    Renew,
    MarkSending,
    Complete,
    Release,
}

/// Whether the holder's transition applies or was already made by the same holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HolderPlan {
    Apply,
    AlreadyDone,
}

/// Checks a holder transition against the stored claim (fencing on the owner token).
pub(crate) fn check_holder(
    op: HolderOp,
    key: &ClaimKey,
    stored: Option<&StoredClaim>,
    owner: OwnerToken,
    now: DateTime<Utc>,
) -> StoreResult<HolderPlan> {
    let lost = || StoreError::LostClaim { key: key.clone() };
    let Some(stored) = stored.filter(|s| !s.is_expired(now)) else {
        return Err(lost());
    };
    if stored.owner != owner {
        return Err(lost());
    }
    match (op, stored.state) {
        (HolderOp::Renew, ClaimState::InProgress | ClaimState::Sending) => Ok(HolderPlan::Apply),
        // A send needs a live lease: a holder frozen past it may be overtaken at any moment.
        (HolderOp::MarkSending, ClaimState::InProgress) if stored.lease_expires_at <= now => {
            Err(lost())
        }
        (HolderOp::MarkSending, ClaimState::InProgress) => Ok(HolderPlan::Apply),
        (HolderOp::MarkSending, ClaimState::Sending) => Ok(HolderPlan::AlreadyDone),
        (HolderOp::Complete, ClaimState::InProgress | ClaimState::Sending) => Ok(HolderPlan::Apply),
        (HolderOp::Complete, ClaimState::Completed) => Ok(HolderPlan::AlreadyDone),
        (HolderOp::Release, ClaimState::InProgress) => Ok(HolderPlan::Apply),
        (HolderOp::Release, ClaimState::Sending) => {
            Err(StoreError::ClaimSending { key: key.clone() })
        }
        (HolderOp::Renew | HolderOp::MarkSending | HolderOp::Release, ClaimState::Completed) => {
            Err(lost())
        }
    }
}

/// Whether a stored claim may be adopted for reconciliation.
pub(crate) fn check_adoptable(
    key: &ClaimKey,
    stored: Option<&StoredClaim>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    match stored.filter(|s| !s.is_expired(now)) {
        None => Err(StoreError::ClaimNotFound { key: key.clone() }),
        Some(s) if s.state == ClaimState::Sending && s.lease_expires_at <= now => Ok(()),
        Some(_) => Err(StoreError::NotAmbiguous { key: key.clone() }),
    }
}

pub(crate) fn lease_end(now: DateTime<Utc>, lease: Duration) -> StoreResult<DateTime<Utc>> {
    if lease.is_zero() || lease > MAX_LEASE {
        return Err(StoreError::invalid(format!(
            "a lease must be between 1ms and {}s (got {}ms)",
            MAX_LEASE.as_secs(),
            lease.as_millis()
        )));
    }
    Ok(now + to_delta(lease))
}

pub(crate) fn retention_end(now: DateTime<Utc>, settings: &StoreSettings) -> DateTime<Utc> {
    now + to_delta(settings.retention)
}

pub(crate) fn to_delta(duration: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(duration).unwrap_or(chrono::TimeDelta::MAX)
}

/// The canonical spelling of a project slug (`github/x/y` and `gh/x/y` are one project).
pub(crate) fn canonical_project(project: &str) -> String {
    project
        .parse::<ProjectSlug>()
        .map_or_else(|_| project.trim().to_owned(), |slug| slug.canonical())
}

fn normalize(
    record: &mut TriggerRecord,
    settings: &StoreSettings,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    if record.source.name.trim().is_empty() {
        return Err(StoreError::invalid("a trigger record needs a source name"));
    }
    if record.pipeline.as_ref().is_some_and(|p| p.id.is_empty()) {
        return Err(StoreError::invalid("a pipeline reference needs an id"));
    }
    record.target.project = canonical_project(&record.target.project);
    redact_parameters(&settings.history, &mut record.parameters);
    record.schema_version = SCHEMA_VERSION;
    record.updated_at = now;
    Ok(())
}

/// The form a new record is stored in: version 1, redacted, expiring after the retention.
pub(crate) fn prepare_create(
    mut record: TriggerRecord,
    settings: &StoreSettings,
    now: DateTime<Utc>,
) -> StoreResult<TriggerRecord> {
    if record.version != 0 {
        return Err(StoreError::invalid(format!(
            "record {} has version {}: only a record never stored can be created",
            record.id, record.version
        )));
    }
    normalize(&mut record, settings, now)?;
    record.expires_at = retention_end(record.created_at.max(now), settings);
    record.version = 1;
    Ok(record)
}

/// The form an updated record is stored in, and the version the stored one must still have.
pub(crate) fn prepare_update(
    mut record: TriggerRecord,
    settings: &StoreSettings,
    now: DateTime<Utc>,
) -> StoreResult<(TriggerRecord, u64)> {
    let expected = record.version;
    if expected == 0 {
        return Err(StoreError::invalid(format!(
            "record {} was never stored: create it first",
            record.id
        )));
    }
    normalize(&mut record, settings, now)?;
    record.version = expected + 1;
    Ok((record, expected))
}

/// What the arrivals of a join generation call for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JoinStep {
    Wait,
    Complete,
    Close { by: String },
}

pub(crate) fn join_step(state: &JoinState, arrived: &[ArrivedUpstream]) -> JoinStep {
    if let Some(failed) = arrived.iter().find(|a| !a.succeeded) {
        return JoinStep::Close {
            by: failed.upstream.clone(),
        };
    }
    let all_arrived = state
        .expected
        .iter()
        .all(|name| arrived.iter().any(|a| &a.upstream == name));
    if all_arrived {
        JoinStep::Complete
    } else {
        JoinStep::Wait
    }
}

/// Whether an arrival at `now` belongs to the stored generation or opens a new one.
pub(crate) fn join_generation_current(state: &JoinState, now: DateTime<Utc>) -> bool {
    state.window_ends_at > now
}

pub(crate) fn validate_arrival(arrival: &super::JoinArrival) -> StoreResult<()> {
    if arrival.expected.is_empty() {
        return Err(StoreError::invalid(
            "a join needs at least one expected upstream",
        ));
    }
    if !arrival.expected.contains(&arrival.upstream) {
        return Err(StoreError::invalid(format!(
            "upstream `{}` is not one the join waits for",
            arrival.upstream
        )));
    }
    if arrival.window.is_zero() {
        return Err(StoreError::invalid(
            "a join window must be longer than zero",
        ));
    }
    Ok(())
}

pub(crate) fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

pub(crate) fn from_millis(ms: i64) -> StoreResult<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| StoreError::corrupt("timestamp", format!("{ms} is out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(state: ClaimState, lease_secs: i64, now: DateTime<Utc>) -> StoredClaim {
        StoredClaim {
            key: ClaimKey::from_stored("schedule#x"),
            fingerprint: Fingerprint::of(b"a"),
            state,
            owner: OwnerToken::generate(),
            lease_expires_at: now + chrono::TimeDelta::seconds(lease_secs),
            attempts: 1,
            sending_since: None,
            result: Some(ClaimResult::default_for_tests()),
            completed_at: None,
            created_at: now,
            updated_at: now,
            expires_at: now + chrono::TimeDelta::days(3),
            revision: 1,
        }
    }

    impl ClaimResult {
        fn default_for_tests() -> Self {
            ClaimResult {
                trigger_id: None,
                value: serde_json::json!({"ok": true}),
            }
        }
    }

    #[test]
    fn expired_leases_are_taken_over_only_before_sending() {
        let now = Utc::now();
        let fp = Fingerprint::of(b"a");
        let decision = assess_claim(&claim(ClaimState::InProgress, -1, now), &fp, now).unwrap();
        assert!(matches!(decision, ClaimDecision::TakeOver));
        let decision = assess_claim(&claim(ClaimState::Sending, -1, now), &fp, now).unwrap();
        assert!(matches!(
            decision,
            ClaimDecision::Answer(ClaimOutcome::Ambiguous { .. })
        ));
        let decision = assess_claim(&claim(ClaimState::Sending, 10, now), &fp, now).unwrap();
        assert!(matches!(
            decision,
            ClaimDecision::Answer(ClaimOutcome::InProgress {
                state: ClaimState::Sending,
                ..
            })
        ));
    }

    #[test]
    fn holders_cannot_release_after_sending_and_strangers_cannot_do_anything() {
        let now = Utc::now();
        let sending = claim(ClaimState::Sending, 10, now);
        let key = sending.key.clone();
        assert!(matches!(
            check_holder(HolderOp::Release, &key, Some(&sending), sending.owner, now),
            Err(StoreError::ClaimSending { .. })
        ));
        for op in [
            HolderOp::Renew,
            HolderOp::MarkSending,
            HolderOp::Complete,
            HolderOp::Release,
        ] {
            assert!(matches!(
                check_holder(op, &key, Some(&sending), OwnerToken::generate(), now),
                Err(StoreError::LostClaim { .. })
            ));
        }
        assert_eq!(
            check_holder(
                HolderOp::MarkSending,
                &key,
                Some(&sending),
                sending.owner,
                now
            )
            .unwrap(),
            HolderPlan::AlreadyDone
        );
    }

    #[test]
    fn leases_are_bounded() {
        let now = Utc::now();
        assert!(lease_end(now, Duration::ZERO).is_err());
        assert!(lease_end(now, MAX_LEASE + Duration::from_secs(1)).is_err());
        assert_eq!(
            lease_end(now, Duration::from_secs(90)).unwrap(),
            now + chrono::TimeDelta::seconds(90)
        );
    }

    #[test]
    fn project_slugs_are_canonicalised() {
        assert_eq!(canonical_project("github/acme/api"), "gh/acme/api");
        assert_eq!(canonical_project("gh/acme/api"), "gh/acme/api");
        assert_eq!(canonical_project(" not a slug "), "not a slug");
    }
}

//! Trigger history for clients: one record (refreshed from CircleCI while its pipeline
//! runs) and pages of the records of the client's endpoints, newest first.
//!
//! A client sees only its own calls: the records of its endpoints whose `detail.client` is
//! its name (another client of the same endpoint never sees its Idempotency-Keys or
//! parameters). Its history is the merge of one listing per endpoint, filtered. The page
//! cursor holds, per endpoint, the store cursor where its last page started and how many of
//! that page were already consumed (shown, or skipped as another client's), so a page can
//! stop in the middle of one endpoint's page and the next continues exactly there.
//!
//! Filtering means a store page may hold few of the client's records. The merge therefore
//! never shows a record older than the oldest one read from an endpoint that has more
//! (its *horizon*): what lies beyond it is unread. A page is filled over a few rounds of
//! reads; when it is not full after them, it is shorter and `next_cursor` continues.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{CallError, TriggerApi, store_error};
use crate::circleci::PipelineState;
use crate::store::{
    Cursor, MAX_PAGE_SIZE, PageRequest, SourceKind, TriggerRecord, TriggerSource, TriggerStatus,
    modify_record,
};
use crate::triggers::outcome::{WorkflowReport, outcome_of, record_workflows};

/// Longest cursor accepted (a merged cursor over many endpoints stays far below).
const MAX_CURSOR_LEN: usize = 8 * 1024;

/// Where one endpoint's listing stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Position {
    /// The store cursor of the page being consumed (`None`: the first page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<String>,
    /// Items of that page already shown.
    #[serde(default, skip_serializing_if = "is_zero")]
    k: u32,
    /// Nothing left.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    d: bool,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

#[derive(Debug, Serialize, Deserialize)]
struct ListCursor {
    /// Digest of the query (client and endpoints): a cursor only continues its own listing.
    q: String,
    p: Vec<Position>,
}

fn query_tag(client: &str, sources: &[TriggerSource]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(client.as_bytes());
    for source in sources {
        hasher.update(b"\n");
        hasher.update(source.to_string().as_bytes());
    }
    hex::encode(&hasher.finalize()[..8])
}

fn invalid_cursor() -> CallError {
    CallError::Invalid {
        errors: vec![super::FieldError::query(
            "cursor",
            "not a cursor of this listing (pass `next_cursor` of the previous page unchanged)",
        )],
    }
}

/// Rounds of store reads one listing page may take to fill itself.
const MAX_ROUNDS: usize = 4;
/// Records read per endpoint and round at least: other clients' calls are skipped in bulk.
const READ_AHEAD: u32 = 100;

/// How many records a round reads past an endpoint's position to show `wanted`.
fn read_size(wanted: u32) -> u32 {
    wanted.clamp(READ_AHEAD, MAX_PAGE_SIZE / 2)
}

/// Where a record sorts in a listing: newest first is largest first.
type SortKey = (chrono::DateTime<chrono::Utc>, crate::store::TriggerId);

fn sort_key(record: &TriggerRecord) -> SortKey {
    (record.created_at, record.id)
}

/// Whether `record` is one of `client`'s own calls.
pub fn is_own(record: &TriggerRecord, client: &str) -> bool {
    record.source.kind == SourceKind::Http && record.detail.client.as_deref() == Some(client)
}

/// One endpoint's store page, from the listing's position on.
struct Fetched {
    /// The page's records after those already consumed.
    raw: Vec<TriggerRecord>,
    /// Indices into `raw` of the client's own records.
    own: Vec<usize>,
    next: Option<Cursor>,
}

impl Fetched {
    /// Nothing of this endpoint older than this was read (it has more pages); `None`: all read.
    /// A page that returned nothing while promising more bounds nothing: it blocks the merge.
    fn horizon(&self) -> Option<Option<SortKey>> {
        self.next.as_ref().map(|_| self.raw.last().map(sort_key))
    }
}

/// One page of the history of `sources`, newest first, as `client` may see it (its own
/// calls only).
pub async fn list(
    api: &TriggerApi,
    client: &str,
    sources: &[TriggerSource],
    limit: u32,
    cursor: Option<&str>,
) -> Result<(Vec<TriggerRecord>, Option<String>), CallError> {
    let tag = query_tag(client, sources);
    let mut positions = match cursor {
        None => vec![Position::default(); sources.len()],
        Some(text) => {
            if text.len() > MAX_CURSOR_LEN {
                return Err(invalid_cursor());
            }
            let bytes = URL_SAFE_NO_PAD
                .decode(text.as_bytes())
                .map_err(|_| invalid_cursor())?;
            let parsed: ListCursor =
                serde_json::from_slice(&bytes).map_err(|_| invalid_cursor())?;
            if parsed.q != tag || parsed.p.len() != sources.len() {
                return Err(invalid_cursor());
            }
            parsed.p
        }
    };
    let limit = limit.clamp(1, MAX_PAGE_SIZE / 2) as usize;
    let mut shown = Vec::new();
    for _ in 0..MAX_ROUNDS {
        if shown.len() >= limit || positions.iter().all(|p| p.d) {
            break;
        }
        let wanted = u32::try_from(limit - shown.len()).unwrap_or(u32::MAX);
        shown.extend(round(api, client, sources, &mut positions, wanted).await?);
    }
    let next = if positions.iter().all(|p| p.d) {
        None
    } else {
        let cursor = ListCursor {
            q: tag,
            p: positions,
        };
        let json = serde_json::to_vec(&cursor).map_err(|error| CallError::Internal {
            reason: format!("cannot encode a cursor: {error}"),
        })?;
        Some(URL_SAFE_NO_PAD.encode(json))
    };
    Ok((shown, next))
}

/// One read of every endpoint's listing, merged: at most `wanted` of the client's records,
/// newest first, and every position moved past what this round consumed.
async fn round(
    api: &TriggerApi,
    client: &str,
    sources: &[TriggerSource],
    positions: &mut [Position],
    wanted: u32,
) -> Result<Vec<TriggerRecord>, CallError> {
    let store = api.engine().store();
    let mut pages: Vec<Option<Fetched>> = Vec::with_capacity(sources.len());
    for (source, position) in sources.iter().zip(positions.iter()) {
        if position.d {
            pages.push(None);
            continue;
        }
        let request = PageRequest {
            limit: position.k + read_size(wanted),
            cursor: position.c.clone().map(Cursor::from_token),
        };
        let page = store
            .list_by_source(source, request)
            .await
            .map_err(|error| match error {
                crate::store::StoreError::InvalidCursor => invalid_cursor(),
                other => store_error(other),
            })?;
        let mut raw = page.items;
        raw.drain(..(position.k as usize).min(raw.len()));
        let own = (0..raw.len())
            .filter(|&i| is_own(&raw[i], client))
            .collect();
        pages.push(Some(Fetched {
            raw,
            own,
            next: page.next,
        }));
    }

    // Nothing older than the newest horizon may be shown: an endpoint with more to read
    // may hold newer records of the client beyond its page.
    let horizons: Vec<Option<SortKey>> = pages
        .iter()
        .flatten()
        .filter_map(Fetched::horizon)
        .collect();
    let blocked = horizons.iter().any(Option::is_none);
    let horizon = horizons.into_iter().flatten().max();
    let mut heads = vec![0_usize; pages.len()];
    let mut merged: Vec<TriggerRecord> = Vec::new();
    while merged.len() < wanted as usize && !blocked {
        let newest = pages
            .iter()
            .enumerate()
            .filter_map(|(index, page)| {
                let page = page.as_ref()?;
                page.own.get(heads[index]).map(|&i| (index, &page.raw[i]))
            })
            .max_by_key(|(_, record)| sort_key(record));
        let Some((index, record)) = newest else { break };
        if horizon.is_some_and(|h| sort_key(record) < h) {
            break;
        }
        merged.push(record.clone());
        heads[index] += 1;
    }
    // What this round consumed: every record at or above the boundary was shown (if the
    // client's) or skipped. Blocked: only the page that returned nothing moves on.
    let consumed_from = |raw: &[TriggerRecord]| -> usize {
        let boundary = if merged.len() == wanted as usize {
            merged.last().map(sort_key)
        } else if blocked {
            return 0;
        } else {
            horizon
        };
        match boundary {
            Some(boundary) => raw.iter().take_while(|r| sort_key(r) >= boundary).count(),
            None => raw.len(),
        }
    };
    for (index, page) in pages.iter().enumerate() {
        let Some(page) = page else { continue };
        let position = &mut positions[index];
        let consumed = consumed_from(&page.raw);
        if consumed == page.raw.len() {
            match &page.next {
                Some(next) => {
                    position.c = Some(next.as_token().to_owned());
                    position.k = 0;
                }
                None => position.d = true,
            }
        } else {
            position.k += u32::try_from(consumed).unwrap_or(u32::MAX);
        }
        normalise(api, &sources[index], position, wanted).await?;
    }
    Ok(merged)
}

/// Keeps the next request's page within the store's maximum: a position deep into a page
/// moves to the page that starts there.
async fn normalise(
    api: &TriggerApi,
    source: &TriggerSource,
    position: &mut Position,
    wanted: u32,
) -> Result<(), CallError> {
    if position.d || position.k + read_size(wanted) <= MAX_PAGE_SIZE {
        return Ok(());
    }
    let skipped = api
        .engine()
        .store()
        .list_by_source(
            source,
            PageRequest {
                limit: position.k,
                cursor: position.c.clone().map(Cursor::from_token),
            },
        )
        .await
        .map_err(store_error)?;
    match skipped.next {
        Some(next) => {
            position.c = Some(next.as_token().to_owned());
            position.k = 0;
        }
        None => position.d = true,
    }
    Ok(())
}

/// The HTTP sources a client may read: all its endpoints, or the one it names.
pub fn client_sources(
    api: &TriggerApi,
    client: &str,
    only: Option<&str>,
) -> Result<Vec<TriggerSource>, CallError> {
    let Some(client) = api.catalog().client(client) else {
        return Err(CallError::Unauthorized);
    };
    match only {
        Some(name) if client.may_call(name) => Ok(vec![TriggerSource::new(SourceKind::Http, name)]),
        Some(name) => Err(CallError::Forbidden {
            endpoint: super::request::quote(name),
        }),
        None => {
            // Sorted and unique, so the cursor's positions line up on every request.
            let names: std::collections::BTreeSet<&String> = client.spec.endpoints.iter().collect();
            Ok(names
                .into_iter()
                .map(|name| TriggerSource::new(SourceKind::Http, name.as_str()))
                .collect())
        }
    }
}

/// Asks CircleCI where the record's pipeline is, when it may have moved on; any failure
/// leaves the stored record as it is (logged).
pub async fn refresh(api: &TriggerApi, record: TriggerRecord) -> TriggerRecord {
    let now = api.engine().clock().now();
    let Some(pipeline) = &record.pipeline else {
        return record;
    };
    let recently = chrono::TimeDelta::from_std(api.settings().refresh_interval).unwrap_or_default();
    if record.status != TriggerStatus::Triggered
        || record.pipeline_final
        || now - record.updated_at < recently
    {
        return record;
    }
    let Ok(pipeline_id) = Uuid::parse_str(&pipeline.id) else {
        return record;
    };
    let token = api
        .catalog()
        .endpoint(&record.source.name)
        .and_then(|endpoint| endpoint.spec.target.token.clone())
        .unwrap_or_else(|| api.catalog().circleci.token.clone());
    let circleci = &api.inner.circleci;
    let fetched = async {
        let pipeline = circleci.get_pipeline(&token, pipeline_id).await?;
        let workflows = circleci
            .list_pipeline_workflows(&token, pipeline_id)
            .await?;
        Ok::<_, crate::circleci::CircleCiError>((pipeline, workflows))
    };
    let (pipeline, workflows) = match tokio::time::timeout(Duration::from_secs(10), fetched).await {
        Ok(Ok(found)) => found,
        Ok(Err(error)) => {
            tracing::warn!(trigger_id = %record.id, %error, "could not refresh the trigger from CircleCI");
            return record;
        }
        Err(_) => {
            tracing::warn!(trigger_id = %record.id, "refreshing the trigger from CircleCI timed out");
            return record;
        }
    };
    let report = WorkflowReport {
        listed: Some(workflows.iter().map(outcome_of).collect()),
        reported: None,
        errored: pipeline.state == PipelineState::Errored,
    };
    let revision = pipeline.revision().map(str::to_owned);
    let errors: BTreeMap<String, String> = pipeline
        .errors
        .iter()
        .map(|e| (e.kind.clone(), e.message.clone()))
        .collect();
    let id = record.id;
    let result = modify_record(api.engine().store().as_ref(), id, |stored| {
        record_workflows(stored, &report);
        if stored.revision.is_none() {
            stored.revision = revision.clone();
        }
        if report.errored {
            stored.detail.pipeline_state = Some("errored".to_owned());
            stored.detail.pipeline_errors = Some(errors.clone());
        }
        stored.updated_at = now;
    })
    .await;
    match result {
        Ok(updated) => updated,
        Err(error) => {
            tracing::warn!(trigger_id = %id, %error, "could not store the refreshed trigger");
            record
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::config::ActionKind;
    use crate::secrets::{CachedSecrets, LocalSecretSource};
    use crate::store::{SqliteStore, TriggerTarget};
    use crate::triggers::http::{ApiSettings, Caller};

    const FILE: &str = r#"
[[endpoint]]
name = "a"
target = { project = "gh/acme/a" }
[[endpoint]]
name = "b"
target = { project = "gh/acme/b" }
[[endpoint]]
name = "c"
target = { project = "gh/acme/c" }
[[endpoint]]
name = "hidden"
target = { project = "gh/acme/h" }
[[client]]
name = "bot"
endpoints = ["c", "a", "b"]
[[client]]
name = "other"
endpoints = ["a", "b"]
"#;

    /// Records of two clients on the same endpoints, interleaved, with long runs of the
    /// other client's calls (a store page of them holds none of bot's). Returns the ids each
    /// client may list, newest first.
    async fn api_with_records() -> (TriggerApi, BTreeMap<&'static str, Vec<String>>) {
        let clock = Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap(),
        ));
        let store: crate::store::SharedStore =
            Arc::new(SqliteStore::in_memory(clock.clone()).unwrap());
        let file = crate::config::parse_str(FILE, "t.toml").unwrap();
        let secrets: Arc<dyn crate::secrets::Secrets> = Arc::new(CachedSecrets::new(
            LocalSecretSource::from_vars(Vec::<(String, String)>::new(), "default"),
            Duration::from_secs(60),
        ));
        let context = crate::wiring::assemble(
            file,
            clock.clone(),
            store.clone(),
            secrets,
            crate::wiring::ContextOptions::default(),
        )
        .unwrap();
        let api = TriggerApi::from_context(&context, ApiSettings::default()).unwrap();
        let mut order: Vec<(&str, &str)> = vec![
            ("a", "bot"),
            ("b", "bot"),
            ("a", "other"),
            ("hidden", "bot"),
            ("a", "bot"),
        ];
        order.extend(std::iter::repeat_n(("a", "other"), 130));
        order.extend([
            ("b", "other"),
            ("a", "bot"),
            ("b", "bot"),
            ("a", "bot"),
            ("hidden", "bot"),
            ("c", "bot"),
        ]);
        order.extend(std::iter::repeat_n(("b", "other"), 7));
        order.extend([("a", "bot"), ("b", "bot"), ("a", "bot"), ("a", "bot")]);
        let mut visible: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
        for (name, client) in order {
            clock.advance(chrono::Duration::seconds(1));
            let mut record = TriggerRecord::new(
                TriggerSource::new(SourceKind::Http, name),
                TriggerTarget::project(format!("gh/acme/{name}")),
                ActionKind::Pipeline,
                clock.now(),
            );
            record.detail.client = Some(client.to_owned());
            record.detail.idempotency_key = Some(format!("{client}-secret-plan"));
            let record = store.create_record(record).await.unwrap();
            let (reader, may_read) = match client {
                "bot" => ("bot", name != "hidden"),
                _ => ("other", name == "a" || name == "b"),
            };
            if may_read {
                visible
                    .entry(reader)
                    .or_default()
                    .push(record.id.to_string());
            }
        }
        for ids in visible.values_mut() {
            ids.reverse();
        }
        (api, visible)
    }

    /// Every page of `client`'s listing of `sources`.
    async fn list_all(
        api: &TriggerApi,
        client: &str,
        sources: &[TriggerSource],
        limit: u32,
    ) -> Vec<String> {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..1_000 {
            let (records, next) = list(api, client, sources, limit, cursor.as_deref())
                .await
                .unwrap();
            assert!(records.len() <= limit as usize);
            assert!(
                records.iter().all(|r| is_own(r, client)),
                "only {client}'s own"
            );
            seen.extend(records.iter().map(|r| r.id.to_string()));
            match next {
                Some(next) => cursor = Some(next),
                None => return seen,
            }
        }
        panic!("the listing never ended");
    }

    #[tokio::test]
    async fn pages_merge_every_endpoint_newest_first_without_gaps_or_repeats() {
        let (api, expected) = api_with_records().await;
        let sources = client_sources(&api, "bot", None).unwrap();
        assert_eq!(sources.len(), 3);
        for limit in [1, 2, 3, 5, 100] {
            assert_eq!(
                list_all(&api, "bot", &sources, limit).await,
                expected["bot"],
                "limit {limit}"
            );
        }
        let others = client_sources(&api, "other", None).unwrap();
        assert_eq!(
            list_all(&api, "other", &others, 20).await,
            expected["other"]
        );
        assert_eq!(expected["other"].len(), 139);
        // Behind the other client's long run a page comes back short, never out of order:
        // what it shows is the start of the listing, and its cursor continues it.
        let (first, next) = list(&api, "bot", &sources, 10, None).await.unwrap();
        let first: Vec<String> = first.iter().map(|r| r.id.to_string()).collect();
        assert!(!first.is_empty(), "{}", first.len());
        assert_eq!(first[..], expected["bot"][..first.len()]);
        assert!(next.is_some());

        let caller = Caller::Client("bot".into());
        let hidden = api
            .engine()
            .store()
            .list_by_source(
                &TriggerSource::new(SourceKind::Http, "hidden"),
                PageRequest::first(1),
            )
            .await
            .unwrap()
            .items
            .remove(0);
        assert!(!api.visible_to(&hidden, &caller));
        assert!(matches!(
            client_sources(&api, "bot", Some("hidden")),
            Err(CallError::Forbidden { .. })
        ));
    }

    #[tokio::test]
    async fn a_client_never_sees_another_clients_call_of_the_same_endpoint() {
        let (api, _) = api_with_records().await;
        let a = TriggerSource::new(SourceKind::Http, "a");
        let page = api
            .engine()
            .store()
            .list_by_source(&a, PageRequest::first(100))
            .await
            .unwrap();
        let (mine, theirs): (Vec<_>, Vec<_>) = page.items.iter().partition(|r| is_own(r, "bot"));
        assert!(!mine.is_empty() && !theirs.is_empty());
        let bot = Caller::Client("bot".into());
        let other = Caller::Client("other".into());
        assert!(
            mine.iter()
                .all(|r| api.visible_to(r, &bot) && !api.visible_to(r, &other))
        );
        assert!(
            theirs
                .iter()
                .all(|r| api.visible_to(r, &other) && !api.visible_to(r, &bot))
        );
        for record in &theirs {
            assert!(matches!(
                api.trigger(record.id, &bot).await,
                Err(CallError::TriggerNotFound)
            ));
        }
        let operator = Caller::Cli { user: "ops".into() };
        assert!(theirs.iter().all(|r| api.visible_to(r, &operator)));
    }

    #[tokio::test]
    async fn a_cursor_only_continues_its_own_listing() {
        let (api, _) = api_with_records().await;
        let all = client_sources(&api, "bot", None).unwrap();
        let (_, next) = list(&api, "bot", &all, 2, None).await.unwrap();
        let next = next.unwrap();
        let only_a = client_sources(&api, "bot", Some("a")).unwrap();
        assert!(matches!(
            list(&api, "bot", &only_a, 2, Some(&next)).await,
            Err(CallError::Invalid { .. })
        ));
        for garbage in ["", "!!", "e30", &"A".repeat(MAX_CURSOR_LEN + 1)] {
            assert!(
                list(&api, "bot", &all, 2, Some(garbage)).await.is_err(),
                "{garbage:.10}"
            );
        }
    }
}

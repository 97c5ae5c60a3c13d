//! Trigger history for clients: one record (refreshed from CircleCI while its pipeline
//! runs) and pages of the records of the client's endpoints, newest first.
//!
//! A client may call several endpoints; its history is the merge of one listing per
//! endpoint. The page cursor holds, per endpoint, the store cursor where its last page
//! started and how many of that page were already shown, so a page can stop in the middle
//! of one endpoint's page and the next continues exactly there.

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

/// One page of the history of `sources`, newest first, as `client` may see it.
pub async fn list(
    api: &TriggerApi,
    client: &str,
    sources: &[TriggerSource],
    limit: u32,
    cursor: Option<&str>,
) -> Result<(Vec<TriggerRecord>, Option<String>), CallError> {
    let store = api.engine().store();
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
    let limit = limit.clamp(1, MAX_PAGE_SIZE / 2);

    // One page per endpoint, enough to fill this page from any of them.
    let mut pages: Vec<(Vec<TriggerRecord>, Option<Cursor>)> = Vec::with_capacity(sources.len());
    for (source, position) in sources.iter().zip(&positions) {
        if position.d {
            pages.push((Vec::new(), None));
            continue;
        }
        let request = PageRequest {
            limit: position.k + limit,
            cursor: position.c.clone().map(Cursor::from_token),
        };
        let page = store
            .list_by_source(source, request)
            .await
            .map_err(|error| match error {
                crate::store::StoreError::InvalidCursor => invalid_cursor(),
                other => store_error(other),
            })?;
        let skip = (position.k as usize).min(page.items.len());
        let mut items = page.items;
        items.drain(..skip);
        pages.push((items, page.next));
    }

    // Merge, newest first, keeping each endpoint's own order.
    let mut heads = vec![0_usize; pages.len()];
    let mut merged = Vec::new();
    while merged.len() < limit as usize {
        let newest = pages
            .iter()
            .enumerate()
            .filter_map(|(index, (items, _))| items.get(heads[index]).map(|item| (index, item)))
            .max_by(|(_, a), (_, b)| (a.created_at, a.id).cmp(&(b.created_at, b.id)))
            .map(|(index, _)| index);
        let Some(index) = newest else { break };
        merged.push(pages[index].0[heads[index]].clone());
        heads[index] += 1;
    }

    // Advance each endpoint's position past what was shown.
    for (index, (items, next)) in pages.iter().enumerate() {
        let position = &mut positions[index];
        if position.d {
            continue;
        }
        let shown = heads[index];
        if shown == items.len() {
            match next {
                Some(next) => {
                    position.c = Some(next.as_token().to_owned());
                    position.k = 0;
                }
                None => position.d = true,
            }
        } else {
            position.k += u32::try_from(shown).unwrap_or(u32::MAX);
        }
        // Keep the next request's page within the store's maximum.
        if position.k + limit > MAX_PAGE_SIZE {
            let skipped = store
                .list_by_source(
                    &sources[index],
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
        }
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
    Ok((merged, next))
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
"#;

    async fn api_with_records() -> (TriggerApi, Vec<String>) {
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
        // Uneven and interleaved: a has 9 records, b 3, c none, hidden 2.
        let order = [
            "a", "b", "a", "hidden", "a", "a", "b", "a", "a", "hidden", "a", "b", "a", "a",
        ];
        let mut visible = Vec::new();
        for name in order {
            clock.advance(chrono::Duration::seconds(1));
            let record = TriggerRecord::new(
                TriggerSource::new(SourceKind::Http, name),
                TriggerTarget::project(format!("gh/acme/{name}")),
                ActionKind::Pipeline,
                clock.now(),
            );
            let record = store.create_record(record).await.unwrap();
            if name != "hidden" {
                visible.push(record.id.to_string());
            }
        }
        visible.reverse();
        (api, visible)
    }

    #[tokio::test]
    async fn pages_merge_every_endpoint_newest_first_without_gaps_or_repeats() {
        let (api, expected) = api_with_records().await;
        let sources = client_sources(&api, "bot", None).unwrap();
        assert_eq!(sources.len(), 3);
        for limit in [1, 2, 3, 5, 100] {
            let mut seen = Vec::new();
            let mut cursor: Option<String> = None;
            for _ in 0..20 {
                let (records, next) = list(&api, "bot", &sources, limit, cursor.as_deref())
                    .await
                    .unwrap();
                assert!(records.len() <= limit as usize);
                seen.extend(records.iter().map(|r| r.id.to_string()));
                match next {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            assert_eq!(seen, expected, "limit {limit}");
        }
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

//! Fault tests: Secrets Manager becomes unreachable.
//!
//! Each test starts its own moto_server; the secrets are created on it directly, and the
//! adapter under test ([`CachedSecrets`] over [`SecretsManagerSource`]) reads them through a
//! [`SwitchableProxy`] the test cuts. The cache's TTL is zero, so every read really asks
//! Secrets Manager: what the tests see while the proxy is cut is the fallback, not a
//! fresh cache hit. The store is SQLite (not under test here).
//!
//! - a token read before the outage keeps triggers firing during it;
//! - without a cached copy, the trigger fails with an error naming the secret (never its
//!   value), nothing reaches CircleCI, the decision is a history row, and the retry after
//!   the outage fires it once; the webhook receiver answers 503 so CircleCI redelivers.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use integration_tests::faults_support::{
    API, Answer, CLIENT, DEPLOY, ENDPOINT, RULE, System, TOKEN, WEBHOOK_SECRET, every_five_minutes,
};
use integration_tests::moto::unique_name;
use integration_tests::moto_process::{MotoProcess, fast_failing_sdk_config};
use integration_tests::scheduled_support::{Backend, utc};
use integration_tests::tcp_proxy::SwitchableProxy;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use shared::secrets::{
    CachedSecrets, SecretIds, SecretKind, Secrets, SecretsError, SecretsManagerSource,
};
use shared::store::{SourceKind, TriggerRecord, TriggerStatus};
use shared::triggers::http::mint_key;

const SCHEDULE: &str = "every-five";

/// The whole system (`integration_tests::faults_support`) over secrets read through a
/// switchable proxy.
struct Rig {
    sys: System,
    secrets: Arc<CachedSecrets<SecretsManagerSource>>,
    proxy: SwitchableProxy,
}

impl std::ops::Deref for Rig {
    type Target = System;

    fn deref(&self) -> &System {
        &self.sys
    }
}

impl Rig {
    async fn start(moto: &MotoProcess, start: &str) -> Rig {
        // The secrets exist on moto; only the adapter's path to it goes through the proxy.
        let admin = aws_sdk_secretsmanager::Client::new(
            &integration_tests::moto::sdk_config_for(&moto.url()).await,
        );
        let tokens_id = unique_name("circleci-tokens");
        let webhook_id = unique_name("webhook-secrets");
        let keys_id = unique_name("client-keys");
        let minted = mint_key(CLIENT);
        for (id, value) in [
            (&tokens_id, json!({ "default": TOKEN })),
            (&webhook_id, json!([WEBHOOK_SECRET])),
            (&keys_id, json!({ CLIENT: [minted.hash.to_hex()] })),
        ] {
            admin
                .create_secret()
                .name(id)
                .secret_string(value.to_string())
                .send()
                .await
                .unwrap();
        }
        let proxy = SwitchableProxy::in_front_of(&moto.url()).await.unwrap();
        let source = SecretsManagerSource::new(
            aws_sdk_secretsmanager::Client::new(&fast_failing_sdk_config(&proxy.url()).await),
            SecretIds {
                circleci_tokens: Some(tokens_id),
                webhook_signing_secrets: Some(webhook_id),
                client_key_hashes: Some(keys_id),
                notify_secrets: None,
            },
        );
        // TTL zero: every read asks Secrets Manager; only an outage falls back to the copy.
        let secrets = Arc::new(CachedSecrets::new(source, Duration::ZERO));
        let port: Arc<dyn Secrets> = secrets.clone();
        // The store is not under test here.
        let sys = System::builder(Backend::Sqlite)
            .start(utc(start))
            .schedules(&every_five_minutes(SCHEDULE))
            .secrets(port, minted.key.expose_secret().to_owned())
            .build()
            .await;
        Rig {
            sys,
            secrets,
            proxy,
        }
    }

    /// One invocation of the `scheduled` Lambda's handler at the clock's now.
    async fn tick(&self) -> Value {
        self.lambda_tick()
            .await
            .expect("a secrets outage does not fail the tick: it is a failed trigger")
    }
}

/// Every record names a distinct pipeline, and those are exactly `pipelines`.
fn assert_one_row_per_pipeline(records: &[TriggerRecord], pipelines: &[String]) {
    let recorded: BTreeSet<String> = records
        .iter()
        .filter_map(|r| r.pipeline.as_ref().map(|p| p.id.clone()))
        .collect();
    let created: BTreeSet<String> = pipelines.iter().cloned().collect();
    assert_eq!(created.len(), pipelines.len(), "duplicate pipeline ids");
    assert_eq!(recorded, created, "history vs simulator");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_token_keeps_triggers_firing_while_secrets_manager_is_down() {
    let moto = MotoProcess::start().await;
    let rig = Rig::start(&moto, "2026-11-28T10:00:30Z").await;
    rig.tick().await;
    // 10:05 fires with a token read from Secrets Manager (now cached).
    rig.advance_to(utc("2026-11-28T10:05:00Z")).await;
    let report = rig.tick().await;
    assert_eq!(report["report"]["schedules"][0]["fired"], 1, "{report}");
    assert_eq!(rig.proxy.forwarded_connections(), 1);

    rig.proxy.cut();
    rig.advance_to(utc("2026-11-28T10:10:00Z")).await;
    let report = rig.tick().await;
    assert_eq!(report["report"]["schedules"][0]["fired"], 1, "{report}");
    // Secrets Manager was asked (the copy had expired) and could not be reached.
    assert!(rig.proxy.refused_connections() >= 1);

    let pipelines = rig.pipeline_ids_on(API);
    assert_eq!(pipelines.len(), 2, "{pipelines:?}");
    let records = rig.records(SourceKind::Schedule, SCHEDULE).await;
    assert_eq!(records.len(), 2, "{records:#?}");
    assert!(
        records
            .iter()
            .all(|r| r.status == TriggerStatus::Triggered && r.attempts == 1),
        "{records:#?}"
    );
    assert_one_row_per_pipeline(&records, &pipelines);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cached_token_the_trigger_fails_naming_the_secret_and_fires_after_the_outage() {
    let moto = MotoProcess::start().await;
    let rig = Rig::start(&moto, "2026-11-28T10:00:30Z").await;
    rig.tick().await;
    rig.proxy.cut();

    // The port says which secret could not be read, and that it is worth retrying.
    let error = rig.secrets.circleci_token("default").await.unwrap_err();
    assert!(
        matches!(
            error,
            SecretsError::Unavailable {
                kind: SecretKind::CircleCiTokens,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.is_retryable());

    rig.advance_to(utc("2026-11-28T10:05:00Z")).await;
    let report = rig.tick().await;
    assert_eq!(report["report"]["schedules"][0]["failed"], 1, "{report}");
    assert!(rig.pipeline_ids_on(API).is_empty(), "nothing may fire");

    // The decision is a history row: failed, retryable, naming the secret but not its value.
    let records = rig.records(SourceKind::Schedule, SCHEDULE).await;
    assert_eq!(records.len(), 1, "{records:#?}");
    let failed = &records[0];
    assert_eq!(failed.status, TriggerStatus::Failed, "{failed:#?}");
    let reason = failed.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("circleci-tokens") && reason.contains("could not be read"),
        "{reason}"
    );
    let row = serde_json::to_string(failed).unwrap();
    assert!(!row.contains(TOKEN), "the token leaked into history: {row}");
    let retry_at = failed.retry_at.expect("a retryable failure is retried");

    // Secrets Manager is back: the sweep of the next tick after retry_at fires it, once.
    rig.proxy.restore();
    rig.advance_to(retry_at + TimeDelta::seconds(1)).await;
    let report = rig.tick().await;
    assert_eq!(report["report"]["sweep"]["succeeded"], 1, "{report}");
    let pipelines = rig.pipeline_ids_on(API);
    assert_eq!(pipelines.len(), 1, "{pipelines:?}");
    let records = rig.records(SourceKind::Schedule, SCHEDULE).await;
    assert_eq!(records.len(), 1, "one row per decision: {records:#?}");
    assert_eq!(records[0].id, failed.id);
    assert_eq!(records[0].status, TriggerStatus::Triggered);
    assert_eq!(records[0].attempts, 2);
    assert_one_row_per_pipeline(&records, &pipelines);

    // A later tick does not fire it again.
    rig.advance_to(retry_at + TimeDelta::seconds(90)).await;
    rig.tick().await;
    assert_eq!(rig.pipeline_ids_on(API).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cached_signing_secrets_a_webhook_gets_503_and_its_redelivery_fires_once() {
    let moto = MotoProcess::start().await;
    let rig = Rig::start(&moto, "2026-11-28T14:00:00Z").await;
    let event = rig.upstream_build_succeeded();

    rig.proxy.cut();
    let Answer {
        status,
        body: problem,
        ..
    } = rig.deliver(&event).await;
    assert_eq!(status, 503, "{problem}");
    let text = problem.to_string();
    assert!(
        text.contains("webhook-signing-secrets") || text.contains("secret"),
        "{problem}"
    );
    assert!(!text.contains(WEBHOOK_SECRET), "{problem}");
    assert!(rig.pipeline_ids_on(DEPLOY).is_empty());
    // The delivery was refused before it was verified: nothing was decided, nothing recorded.
    assert!(rig.records(SourceKind::Chain, RULE).await.is_empty());

    rig.proxy.restore();
    let Answer {
        status,
        body: report,
        ..
    } = rig.deliver(&event).await;
    assert_eq!(status, 200, "{report}");
    let Answer {
        status,
        body: report,
        ..
    } = rig.deliver(&event).await;
    assert_eq!(status, 200, "a duplicate redelivery: {report}");
    let pipelines = rig.pipeline_ids_on(DEPLOY);
    assert_eq!(pipelines.len(), 1, "{pipelines:?}");
    let records = rig.records(SourceKind::Chain, RULE).await;
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0].status, TriggerStatus::Triggered);
    assert_one_row_per_pipeline(&records, &pipelines);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cached_client_keys_an_endpoint_call_gets_503_and_its_retry_fires_once() {
    let moto = MotoProcess::start().await;
    let rig = Rig::start(&moto, "2026-11-28T12:00:00Z").await;

    rig.proxy.cut();
    let Answer {
        status,
        body: problem,
        ..
    } = rig.call("release-1", "1.2.3").await;
    // The caller's key cannot be checked: 503 + retry, nothing decided or fired.
    assert_eq!(status, 503, "{problem}");
    assert!(
        problem["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("service-unavailable")),
        "{problem}"
    );
    assert!(!problem.to_string().contains(&rig.client_key), "{problem}");
    assert!(rig.pipeline_ids_on(DEPLOY).is_empty());
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("client keys cannot be read")),
        "{problem}"
    );
    // Nobody was authenticated, so nothing durable is written (anyone could send it during
    // an outage): no row, nothing claimed.
    let refused = rig.records(SourceKind::Http, ENDPOINT).await;
    assert!(refused.is_empty(), "{refused:#?}");

    rig.proxy.restore();
    let Answer {
        status,
        body: answer,
        ..
    } = rig.call("release-1", "1.2.3").await;
    assert_eq!(status, 202, "{answer}");
    let Answer {
        status,
        body: replay,
        ..
    } = rig.call("release-1", "1.2.3").await;
    assert!(status == 202 || status == 200, "{replay}");
    assert_eq!(
        replay["id"], answer["id"],
        "the same Idempotency-Key replays the trigger"
    );
    let pipelines = rig.pipeline_ids_on(DEPLOY);
    assert_eq!(pipelines.len(), 1, "{pipelines:?}");
    // One decision, one row: the trigger.
    let records = rig.records(SourceKind::Http, ENDPOINT).await;
    assert_eq!(records.len(), 1, "{records:#?}");
    let triggered: Vec<_> = records
        .iter()
        .filter(|r| r.status == TriggerStatus::Triggered)
        .collect();
    assert_eq!(triggered.len(), 1, "{records:#?}");
    assert_eq!(
        answer["id"].as_str().or(answer["trigger_id"].as_str()),
        Some(triggered[0].id.to_string().as_str()),
        "{answer}"
    );
    assert_one_row_per_pipeline(&records, &pipelines);
}

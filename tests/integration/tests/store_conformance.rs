//! The `TriggerStore` conformance suite (tests/integration/src/store_suite.rs) against both
//! adapters: SQLite on a temp file, and DynamoDB on moto_server through the real AWS SDK
//! (each case on its own table). Plus the failure classes only one adapter can show.

use std::sync::Arc;
use std::time::Duration;

use integration_tests::moto::{RequestCounter, sdk_config, sdk_config_for, unique_name};
use integration_tests::store_suite::start_time;
use shared::clock::{Clock as _, ManualClock};
use shared::store::{
    ClaimKey, ClaimKind, ClaimOutcome, ClaimResult, ClaimStore, DynamoStore, Fingerprint,
    HistoryStore, JoinStore, RateTicket, SqliteStore, StoreError, TriggerStore,
};

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    integration_tests::store_suite::$case(&integration_tests::store_suite::Sqlite).await;
                }
            )*
        }
        mod dynamodb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    integration_tests::store_suite::$case(&integration_tests::store_suite::Dynamo).await;
                }
            )*
        }
    };
}

conformance!(
    a_trigger_is_opened_and_settled_with_its_claim,
    a_taken_over_holder_cannot_settle,
    a_settle_on_a_changed_record_is_stale,
    concurrent_claims_have_exactly_one_winner,
    a_different_fingerprint_conflicts,
    an_expired_lease_is_taken_over_before_sending,
    a_sending_claim_is_never_taken_over,
    a_slow_sending_holder_still_completes,
    mark_sending_requires_an_unexpired_lease,
    a_stale_owner_cannot_complete,
    a_replay_after_completion_returns_the_stored_result,
    release_lets_the_next_attempt_win,
    a_join_fires_once_under_concurrent_duplicates,
    a_failed_upstream_closes_the_join,
    a_join_window_expiry_opens_a_new_generation,
    retention_hides_and_purges_expired_items,
    listings_are_newest_first_and_paged,
    origin_and_pipeline_lookups,
    record_updates_are_versioned,
    the_sweep_finds_due_schedule_and_chain_records,
    secret_parameters_are_redacted,
    scheduler_state_only_moves_forward,
    schedule_definitions_are_saved_with_their_state,
    pause_flags_are_set_listed_and_cleared,
    rate_tickets_are_counted_per_window,
    invalid_requests_are_refused_without_retry,
);

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(start_time()))
}

fn claim_key() -> ClaimKey {
    ClaimKey::new(ClaimKind::Client, &["release-bot", "idem-42"])
}

/// A DynamoDB outage (nothing listening) is a retryable error, not a decision.
#[tokio::test]
async fn dynamodb_unreachable_is_retryable() {
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let config = sdk_config_for(&format!("http://127.0.0.1:{closed_port}")).await;
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&config)
            .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
            .build(),
    );
    let store = DynamoStore::new(client, "triggers", clock());
    let error = store
        .claim(
            &claim_key(),
            &Fingerprint::of(b"x"),
            Duration::from_secs(60),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Unavailable { .. }), "{error:?}");
    assert!(error.is_retryable());
}

/// A missing table is a deployment error: not retryable, and it says which operation failed.
#[tokio::test]
async fn dynamodb_missing_table_is_not_retryable() {
    let client = aws_sdk_dynamodb::Client::new(&sdk_config().await);
    let store = DynamoStore::new(client, unique_name("missing"), clock());
    let error = store
        .claim(
            &claim_key(),
            &Fingerprint::of(b"x"),
            Duration::from_secs(60),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::Misconfigured { .. }),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert!(
        error.to_string().contains("ResourceNotFoundException"),
        "{error}"
    );
    let error = store
        .list_recent(shared::store::PageRequest::first(5))
        .await
        .unwrap_err();
    assert!(!error.is_retryable(), "{error:?}");
}

/// A fresh table on moto_server: an admin client, its name, and a client whose requests
/// are counted.
async fn counted_table() -> (
    aws_sdk_dynamodb::Client,
    String,
    aws_sdk_dynamodb::Client,
    RequestCounter,
) {
    let counter = RequestCounter::default();
    let config = sdk_config().await;
    let admin = aws_sdk_dynamodb::Client::new(&config);
    let table = unique_name("triggers");
    shared::store::dynamo::create_table(&admin, &table)
        .await
        .unwrap();
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&config)
            .interceptor(counter.clone())
            .build(),
    );
    (admin, table, client, counter)
}

/// The request cost of the exactly-once path, counted with an SDK interceptor: a fresh
/// claim is one write, sending and completing one each, a replay one conditional write.
#[tokio::test]
async fn dynamodb_claim_path_request_counts() {
    let (_, table, client, counter) = counted_table().await;
    let store = DynamoStore::new(client, table, clock());
    let key = claim_key();
    let fingerprint = Fingerprint::of(b"body");
    let mut steps = Vec::new();
    let before = counter.count();
    let owner = match store
        .claim(&key, &fingerprint, Duration::from_secs(60))
        .await
        .unwrap()
    {
        ClaimOutcome::Won(grant) => grant.owner,
        other => panic!("{other:?}"),
    };
    steps.push(("claim (fresh)", counter.count() - before));
    let before = counter.count();
    store.mark_sending(&key, owner).await.unwrap();
    steps.push(("mark_sending", counter.count() - before));
    let before = counter.count();
    store
        .complete(
            &key,
            owner,
            &ClaimResult {
                trigger_id: None,
                value: serde_json::json!({"status": 201}),
            },
        )
        .await
        .unwrap();
    steps.push(("complete", counter.count() - before));
    let before = counter.count();
    assert!(matches!(
        store
            .claim(&key, &fingerprint, Duration::from_secs(60))
            .await
            .unwrap(),
        ClaimOutcome::Completed { .. }
    ));
    steps.push(("claim (replay)", counter.count() - before));
    println!("DynamoDB requests per step: {steps:?}");
    assert_eq!(
        steps.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
        [1, 1, 1, 1],
        "{steps:?}"
    );
}

/// The per-client rate limit costs one request per call (#20: it was a fan-in join of
/// tickets, 4–6 requests, ~4 WRU + 3 RRU): an admitted call and a refused one alike. The
/// item is ~80 bytes with no index attributes, so each request is 1 WRU and no GSI write.
#[tokio::test]
async fn dynamodb_rate_limit_is_one_conditional_update_per_request() {
    let (admin, table, client, counter) = counted_table().await;
    let clock = clock();
    let store = DynamoStore::new(client, table.clone(), clock.clone());
    let ticket = RateTicket::at("bot", clock.now(), Duration::from_secs(60), 2);
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(store.take_rate_ticket(&ticket).await.unwrap());
    }
    assert_eq!(answers, [true, true, false]);
    assert_eq!(counter.count(), 3, "one request per call");
    // The counter item: its window, its count and its expiry, nothing an index keys on.
    let item = admin
        .get_item()
        .table_name(&table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("RATE#bot".into()),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S(
                ticket.window_start.timestamp_millis().to_string(),
            ),
        )
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let mut names: Vec<&str> = item.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["expires_at", "pk", "sk", "used"]);
}

/// The embedded store keeps claims and records across a restart of `serve`.
#[tokio::test]
async fn sqlite_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let key = claim_key();
    let fingerprint = Fingerprint::of(b"body");
    let id = {
        let store = SqliteStore::open_in_dir(dir.path(), clock()).unwrap();
        let owner = match store
            .claim(&key, &fingerprint, Duration::from_secs(60))
            .await
            .unwrap()
        {
            ClaimOutcome::Won(grant) => grant.owner,
            other => panic!("{other:?}"),
        };
        store.mark_sending(&key, owner).await.unwrap();
        let record = shared::store::TriggerRecord::new(
            shared::store::TriggerSource::new(shared::store::SourceKind::Http, "release"),
            shared::store::TriggerTarget::project("gh/acme/api"),
            shared::config::ActionKind::Pipeline,
            start_time(),
        );
        store.create_record(record).await.unwrap().id
    };
    let reopened: Arc<dyn TriggerStore> =
        Arc::new(SqliteStore::open_in_dir(dir.path(), clock()).unwrap());
    assert!(reopened.get_record(id).await.unwrap().is_some());
    // Still sending after the restart: never handed to a new claimant.
    assert!(matches!(
        reopened
            .claim(&key, &fingerprint, Duration::from_secs(60))
            .await
            .unwrap(),
        ClaimOutcome::InProgress { .. }
    ));
}

/// A store path that cannot be a database is a configuration error, reported at open.
#[tokio::test]
async fn sqlite_unopenable_path_is_misconfigured() {
    let dir = tempfile::tempdir().unwrap();
    let error = SqliteStore::open(dir.path(), clock()).unwrap_err();
    assert!(
        matches!(error, StoreError::Misconfigured { .. }),
        "{error:?}"
    );
    assert!(!error.is_retryable());
}

//! 10,000 unauthenticated requests against the HTTP API router, in process (tower
//! `oneshot`) on the embedded SQLite store: not one history row, none of their text stored,
//! the store's size unchanged; the `ApiAuthFailures` metric counts every one and only a
//! few log lines describe them.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use http::Request;
use secrecy::ExposeSecret;
use shared::clock::SystemClock;
use shared::secrets::{CachedSecrets, LocalSecretSource, env_names};
use shared::store::{SharedStore, SqliteStore};
use shared::triggers::http::{ApiSettings, TriggerApi, function_router, mint_key};
use tower::ServiceExt;
use tracing_subscriber::fmt::MakeWriter;

const REQUESTS: usize = 10_000;
/// Text an attacker would like to see stored and shown back.
const MARKER: &str = "planted-by-an-attacker-7f3a";

const TRIGGERS: &str = r#"
[circleci]
api_url = "http://127.0.0.1:9/api/v2"

[[endpoint]]
name = "deploy"
target = { project = "gh/acme/deploy", branch = "main" }
parameters.version = { type = "string", pattern = '^\d+\.\d+\.\d+$' }

[[client]]
name = "bot"
endpoints = ["deploy"]
"#;

/// Log output, captured.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Rows per table, and the bytes of the database and its write-ahead log.
fn footprint(dir: &Path) -> (Vec<(String, i64)>, u64) {
    let db = dir.join("triggers.sqlite3");
    let connection = rusqlite::Connection::open(&db).unwrap();
    let tables: Vec<String> = connection
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let rows = tables
        .into_iter()
        .map(|table| {
            let count = connection
                .query_row(&format!("SELECT COUNT(*) FROM \"{table}\""), [], |row| {
                    row.get(0)
                })
                .unwrap();
            (table, count)
        })
        .collect();
    let bytes = ["triggers.sqlite3", "triggers.sqlite3-wal"]
        .iter()
        .filter_map(|name| std::fs::metadata(dir.join(name)).ok())
        .map(|meta| meta.len())
        .sum();
    (rows, bytes)
}

/// Every stored byte of the database files, for a search.
fn stored_bytes(dir: &Path) -> Vec<u8> {
    ["triggers.sqlite3", "triggers.sqlite3-wal"]
        .iter()
        .filter_map(|name| std::fs::read(dir.join(name)).ok())
        .flatten()
        .collect()
}

/// The `i`-th hostile request: every route, every way of not being authenticated.
fn hostile(i: usize, secret: &str) -> Request<Body> {
    let authorization = match i % 5 {
        0 => None,
        1 => Some(format!("Bearer bot.{MARKER}{i}")),
        2 => Some(format!("Bearer {MARKER}.{secret}")),
        3 => Some(format!("Basic {MARKER}")),
        _ => Some(format!("Bearer {MARKER}")),
    };
    let mut builder = match i % 4 {
        0 | 1 => Request::post("/v1/endpoints/deploy")
            .header("content-type", "application/json")
            .header("idempotency-key", format!("{MARKER}-{i}")),
        2 => Request::get(format!("/v1/triggers?source={MARKER}")),
        _ => Request::get("/v1/triggers/0190b8c2-6c0e-7d4e-8a51-1f0e4c3b2a19"),
    };
    if let Some(value) = authorization {
        builder = builder.header("authorization", value);
    }
    let body = if i % 4 < 2 {
        Body::from(format!(
            r#"{{"parameters": {{"version": "1.0.0"}}, "note": "{MARKER}"}}"#
        ))
    } else {
        Body::empty()
    };
    builder.body(body).unwrap()
}

#[test]
fn ten_thousand_unauthenticated_requests_leave_nothing_durable() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    // A current-thread runtime: every handler runs on this thread, under this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let minted = mint_key("bot");
    let secret = minted
        .key
        .expose_secret()
        .split_once('.')
        .unwrap()
        .1
        .to_owned();

    runtime.block_on(async {
        let clock = Arc::new(SystemClock);
        let store: SharedStore =
            Arc::new(SqliteStore::open_in_dir(dir.path(), clock.clone()).unwrap());
        let secrets = Arc::new(CachedSecrets::new(
            LocalSecretSource::from_vars(
                [(
                    env_names::CLIENT_KEYS.to_owned(),
                    format!(r#"{{"bot": ["{}"]}}"#, minted.hash.to_hex()),
                )],
                "default",
            ),
            Duration::from_secs(3600),
        ));
        let file = shared::config::parse_str(TRIGGERS, "t.toml").unwrap();
        let context = shared::wiring::assemble(
            file,
            clock,
            store,
            secrets,
            shared::wiring::ContextOptions::default(),
        )
        .unwrap();
        let api = TriggerApi::from_context(&context, ApiSettings::default()).unwrap();
        let router = function_router(api);

        // One refusal of an authenticated client first: the store is not trivially empty.
        let refused = router
            .clone()
            .oneshot(
                Request::post("/v1/endpoints/deploy")
                    .header(
                        "authorization",
                        format!("Bearer {}", minted.key.expose_secret()),
                    )
                    .header("content-type", "application/json")
                    .body(Body::from(r#"{"parameters": {"version": "x"}}"#))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(refused.status(), 422);
        let before = footprint(dir.path());
        assert!(
            before
                .0
                .iter()
                .any(|(table, rows)| table == "records" && *rows == 1),
            "{before:?}"
        );

        let mut statuses = std::collections::BTreeMap::new();
        for i in 0..REQUESTS {
            let response = router.clone().oneshot(hostile(i, &secret)).await.unwrap();
            *statuses.entry(response.status().as_u16()).or_insert(0) += 1;
            let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            assert!(
                !String::from_utf8_lossy(&body).contains(MARKER),
                "request {i}: the answer echoes caller text"
            );
        }
        assert_eq!(statuses.get(&401), Some(&REQUESTS), "{statuses:?}");
        // Another method on an endpoint is answered before authentication: nothing either.
        for i in 0..100 {
            let request = Request::get("/v1/endpoints/deploy")
                .header("idempotency-key", format!("{MARKER}-{i}"))
                .body(Body::empty())
                .unwrap();
            let response = router.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), 405);
        }

        let after = footprint(dir.path());
        assert_eq!(after, before, "no row and no byte was added");
        let stored = stored_bytes(dir.path());
        assert!(!stored.is_empty());
        assert!(
            !stored
                .windows(MARKER.len())
                .any(|window| window == MARKER.as_bytes()),
            "no caller text is stored"
        );
    });

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let metrics = text
        .lines()
        .filter(|l| l.contains("ApiAuthFailures"))
        .count();
    assert_eq!(metrics, REQUESTS, "the metric counts every refusal");
    let described = text
        .lines()
        .filter(|l| l.contains("unauthenticated request refused"))
        .count();
    assert!(
        (1..=20).contains(&described),
        "{described} log lines for {REQUESTS} requests"
    );
    assert!(!text.contains(MARKER), "no caller text is logged");
    assert!(
        !text.contains(&secret),
        "the presented secret is never logged"
    );
}

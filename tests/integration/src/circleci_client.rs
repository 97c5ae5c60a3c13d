//! Helpers for testing the CircleCI client against the simulator over real HTTP.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use circleci_sim::spec::Spec;
use circleci_sim::{RecordedRequest, Simulator};
use shared::circleci::{CircleCiClient, ClientOptions};
use shared::secrets::{CachedSecrets, LocalSecretSource, Secrets, env_names};
use tempfile::TempDir;

/// The CircleCI tokens secret as a file (`CIRCLECI_TOKENS_FILE`), read through the real
/// local secrets adapter; rewriting it simulates a rotation.
pub struct TokenFile {
    _dir: TempDir,
    path: PathBuf,
}

impl TokenFile {
    /// `tokens`: (name, value) pairs, e.g. `[("default", "tok-alice")]`.
    pub fn new(tokens: &[(&str, &str)]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let file = Self {
            path: dir.path().join("circleci-tokens.json"),
            _dir: dir,
        };
        file.write(tokens)?;
        Ok(file)
    }

    pub fn write(&self, tokens: &[(&str, &str)]) -> anyhow::Result<()> {
        let map: BTreeMap<&str, &str> = tokens.iter().copied().collect();
        std::fs::write(&self.path, serde_json::to_string(&map)?)?;
        Ok(())
    }

    /// A secrets port over this file that caches for an hour: only an explicit refresh
    /// (the client's re-read after a 401) sees a rewrite.
    pub fn secrets(&self) -> Arc<dyn Secrets> {
        let source = LocalSecretSource::from_vars(
            [(
                env_names::CIRCLECI_TOKENS_FILE.to_owned(),
                self.path.display().to_string(),
            )],
            "default",
        );
        Arc::new(CachedSecrets::new(source, Duration::from_secs(3600)))
    }
}

/// Short backoffs and a generous deadline, so tests are quick but retries still happen.
pub fn test_options() -> ClientOptions {
    ClientOptions {
        deadline: Duration::from_secs(20),
        request_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(1),
        max_attempts: 6,
        backoff_base: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(400),
        ..ClientOptions::default()
    }
}

pub fn client_for(
    sim: &Simulator,
    secrets: Arc<dyn Secrets>,
    options: ClientOptions,
) -> anyhow::Result<CircleCiClient> {
    Ok(CircleCiClient::new(&sim.base_url(), secrets, options)?)
}

/// CircleCI's OpenAPI document, loaded once; a missing document fails the test loudly.
pub fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| match Spec::load() {
        Ok(spec) => spec,
        Err(error) => panic!("{error}"),
    })
}

/// Request paths with ids replaced, e.g. `GET /workflow/{id}/job`.
pub fn operation_of(request: &RecordedRequest) -> String {
    let path = request
        .path
        .strip_prefix("/api/v2")
        .unwrap_or(&request.path);
    let templated: Vec<String> = path
        .split('/')
        .map(|segment| {
            if uuid::Uuid::parse_str(segment).is_ok() {
                "{id}".to_owned()
            } else {
                segment.to_owned()
            }
        })
        .collect();
    format!("{} {}", request.method, templated.join("/"))
}

/// How many requests the simulator received per operation.
pub fn requests_per_operation(requests: &[RecordedRequest]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for request in requests {
        *counts.entry(operation_of(request)).or_insert(0) += 1;
    }
    counts
}

/// Every JSON body the simulator received validates against its operation's request schema.
pub fn assert_recorded_bodies_conform(requests: &[RecordedRequest]) {
    for request in requests {
        let Some(body) = &request.body else { continue };
        let path = request
            .path
            .strip_prefix("/api/v2")
            .unwrap_or(&request.path);
        let violations = spec()
            .validate_request(&request.method, path, body)
            .unwrap_or_else(|error| panic!("{} {path}: {error}", request.method));
        assert!(
            violations.is_empty(),
            "{} {path} sent a body the spec rejects: {violations:#?}\nbody: {body:#}",
            request.method
        );
    }
}

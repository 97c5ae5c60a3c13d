//! The system under measurement: the simulator on loopback, SQLite in a temp dir, and the
//! engine assembled by `shared::wiring::assemble` exactly as `serve` and the Lambdas do.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use circleci_sim::{
    JobSpec, ParameterSpec, ProjectSpec, SimOptions, Simulator, When, WorkflowSpec,
};
use shared::clock::{Clock, ManualClock};
use shared::secrets::{CachedSecrets, LocalSecretSource, Secrets, env_names};
use shared::store::{SharedStore, SqliteStore};
use shared::wiring::{ContextOptions, LambdaContext, assemble};

/// The token every target uses (named `default`, the triggers file's default).
pub const TOKEN: &str = "tok-bench-alice-0123456789";
/// The one project every scenario triggers.
pub const PROJECT: &str = "gh/acme/api";
/// The project the storm's chain rule starts (a chain back into `PROJECT` would loop).
pub const DOWNSTREAM: &str = "gh/acme/deploy";
/// The HMAC secret of the webhook receiver.
pub const WEBHOOK_SECRET: &str = "whsec-bench-0123456789abcdef";

/// The limit the simulator advertises where pacing is not under test. Without `RateLimit`
/// headers the client keeps its conservative default (10 req/s) as it would before
/// CircleCI's first answer; a real CircleCI always sends them.
pub const UNCONSTRAINED_RATE: f64 = 1000.0;

/// A running system; dropping it stops the simulator and removes the database.
pub struct System {
    pub sim: Simulator,
    pub context: LambdaContext,
    _dir: tempfile::TempDir,
}

/// `triggers_body` is the triggers file without its `[circleci]` table (added here, pointing
/// at the simulator).
pub async fn system(
    start: DateTime<Utc>,
    triggers_body: &str,
    options: ContextOptions,
) -> anyhow::Result<System> {
    let sim = Simulator::start_with(SimOptions {
        start_time: Some(start),
        ..SimOptions::default()
    })
    .await?;
    sim.add_user("alice", TOKEN);
    sim.add_project(
        ProjectSpec::new(PROJECT)
            .parameter(ParameterSpec::string("run-workflow", ""))
            .workflow(
                WorkflowSpec::new("build")
                    .when(When::equals("run-workflow", "build"))
                    .job(JobSpec::new("test")),
            )
            .workflow(
                WorkflowSpec::new("deploy")
                    .when(When::equals("run-workflow", "deploy"))
                    .job(JobSpec::new("ship")),
            ),
    );
    sim.add_project(
        ProjectSpec::new(DOWNSTREAM).workflow(WorkflowSpec::new("ship").job(JobSpec::new("ship"))),
    );
    let toml = format!(
        "[circleci]\napi_url = \"{}\"\n\n{triggers_body}",
        sim.base_url()
    );
    let triggers = shared::config::parse_str(&toml, "bench.toml")?;
    let clock = Arc::new(ManualClock::new(start));
    let dir = tempfile::tempdir()?;
    let store: SharedStore = Arc::new(SqliteStore::open_in_dir(dir.path(), clock.clone())?);
    let source = LocalSecretSource::from_vars(
        [
            (env_names::CIRCLECI_TOKEN.to_owned(), TOKEN.to_owned()),
            (
                env_names::WEBHOOK_SECRETS.to_owned(),
                WEBHOOK_SECRET.to_owned(),
            ),
        ],
        &triggers.circleci.token,
    );
    let secrets: Arc<dyn Secrets> = Arc::new(CachedSecrets::new(
        source,
        std::time::Duration::from_secs(3600),
    ));
    let shared_clock: Arc<dyn Clock> = clock.clone();
    let context = assemble(triggers, shared_clock, store, secrets, options)?;
    Ok(System {
        sim,
        context,
        _dir: dir,
    })
}

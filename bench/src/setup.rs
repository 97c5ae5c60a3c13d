//! The system under measurement: the simulator on loopback, SQLite in a temp dir, and the
//! engine assembled by `shared::wiring::assemble` exactly as `serve` and the Lambdas do.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use circleci_sim::{
    JobSpec, ParameterSpec, ProjectSpec, SimOptions, Simulator, When, WorkflowSpec,
};
use shared::actions::Actions;
use shared::clock::{Clock, ManualClock};
use shared::engine::{Engine, EngineSettings};
use shared::secrets::{CachedSecrets, LocalSecretSource, Secrets, env_names};
use shared::store::{DynamoStore, SharedStore, SqliteStore, StoreSettings};
use shared::wiring::{ContextOptions, LambdaContext, assemble};

use crate::timing::{Meter, TimedCircleCi, TimedStore};

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

/// How a system differs from the default one (SQLite, no timing, no client keys).
#[derive(Default)]
pub struct Variant {
    /// DynamoDB (client, table) instead of SQLite.
    pub dynamo: Option<(aws_sdk_dynamodb::Client, String)>,
    /// Times every store call.
    pub store_meter: Option<Arc<Meter>>,
    /// Times every CircleCI call.
    pub circleci_meter: Option<Arc<Meter>>,
    /// More secret variables (`shared::secrets::env_names`), e.g. client keys.
    pub secret_vars: Vec<(String, String)>,
}

/// `triggers_body` is the triggers file without its `[circleci]` table (added here, pointing
/// at the simulator).
pub async fn system(
    start: DateTime<Utc>,
    triggers_body: &str,
    options: ContextOptions,
) -> anyhow::Result<System> {
    system_with(start, triggers_body, options, Variant::default()).await
}

pub async fn system_with(
    start: DateTime<Utc>,
    triggers_body: &str,
    options: ContextOptions,
    variant: Variant,
) -> anyhow::Result<System> {
    let sim = Simulator::start_with(SimOptions {
        start_time: Some(start),
        ..SimOptions::default()
    })
    .await?;
    add_projects(&sim);
    let toml = format!(
        "[circleci]\napi_url = \"{}\"\n\n{triggers_body}",
        sim.base_url()
    );
    let triggers = shared::config::parse_str(&toml, "bench.toml")?;
    let clock = Arc::new(ManualClock::new(start));
    let dir = tempfile::tempdir()?;
    let mut store: SharedStore = match variant.dynamo {
        Some((client, table)) => Arc::new(
            DynamoStore::new(client, table, clock.clone())
                .with_settings(StoreSettings::from_history(&triggers.history)),
        ),
        None => Arc::new(SqliteStore::open_in_dir(dir.path(), clock.clone())?),
    };
    if let Some(meter) = &variant.store_meter {
        store = TimedStore::wrap(store, meter.clone());
    }
    let mut vars = vec![
        (env_names::CIRCLECI_TOKEN.to_owned(), TOKEN.to_owned()),
        (
            env_names::WEBHOOK_SECRETS.to_owned(),
            WEBHOOK_SECRET.to_owned(),
        ),
    ];
    vars.extend(variant.secret_vars);
    let source = LocalSecretSource::from_vars(vars, &triggers.circleci.token);
    let secrets: Arc<dyn Secrets> = Arc::new(CachedSecrets::new(
        source,
        std::time::Duration::from_secs(3600),
    ));
    let shared_clock: Arc<dyn Clock> = clock.clone();
    let engine_settings = options.engine.clone();
    let mut context = assemble(triggers, shared_clock, store, secrets, options)?;
    if let Some(meter) = &variant.circleci_meter {
        // The same engine over a timed CircleCI port (assemble builds the client itself).
        context.circleci = TimedCircleCi::wrap(context.circleci.clone(), meter.clone());
        context.engine = Engine::new(
            context.store.clone(),
            Arc::new(Actions::new(context.circleci.clone())),
            context.clock.clone(),
            EngineSettings {
                history: context.triggers.history.clone(),
                ..engine_settings
            },
        );
    }
    Ok(System {
        sim,
        context,
        _dir: dir,
    })
}

/// The user and projects every scenario uses.
pub fn add_projects(sim: &Simulator) {
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
}

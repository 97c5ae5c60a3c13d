//! Helpers for the scheduler tests (`tests/scheduled*.rs`): a [`Harness`] wiring the real
//! scheduler, engine, actions and CircleCI client to the simulator over HTTP and to a real
//! store (SQLite on a temp file, or DynamoDB on moto_server), on one [`ManualClock`] that
//! moves in lockstep with the simulator's clock.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use circleci_sim::{PipelineView, ProjectSpec, SimOptions, Simulator};
use shared::actions::Actions;
use shared::circleci::intercept::{Call, Forward, Intercepted, Interceptor};
use shared::circleci::{CircleCi, CircleCiError, ClientOptions, RateDefaults};
use shared::clock::{Clock, ManualClock};
use shared::config::TriggersFile;
use shared::engine::{Engine, EngineSettings};
use shared::store::{
    DynamoStore, PageRequest, SharedStore, SourceKind, SqliteStore, TriggerRecord, TriggerSource,
    TriggerStatus,
};
use shared::triggers::scheduled::{Scheduler, TickReport};
use tokio::sync::Notify;

use crate::circleci_client::{TokenFile, client_for, test_options};
use crate::moto::{sdk_config, sdk_config_for, unique_name};
use crate::request_cost::DynamoRecorder;

/// The token (named `default`) every schedule uses.
pub const TOKEN: &str = "tok-scheduler-alice-0123456789";

/// Which store adapter a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Dynamo,
}

/// Wraps the real CircleCI client (e.g. to lose an answer).
pub type Wrap = Box<dyn FnOnce(Arc<dyn CircleCi>) -> Arc<dyn CircleCi> + Send>;

/// How to build a [`Harness`].
pub struct HarnessBuilder {
    backend: Backend,
    start: DateTime<Utc>,
    projects: Vec<ProjectSpec>,
    client: ClientOptions,
    engine: EngineSettings,
    wrap: Option<Wrap>,
    recorder: Option<DynamoRecorder>,
    endpoint: Option<String>,
}

impl HarnessBuilder {
    /// DynamoDB at this endpoint instead of `AWS_ENDPOINT_URL`'s.
    pub fn dynamo_endpoint(mut self, endpoint: &str) -> Self {
        self.endpoint = Some(endpoint.to_owned());
        self
    }

    /// Records every DynamoDB request the store sends (DynamoDB backend only).
    pub fn record_dynamo(mut self, recorder: DynamoRecorder) -> Self {
        self.recorder = Some(recorder);
        self
    }

    pub fn start_at(mut self, at: &str) -> Self {
        self.start = utc(at);
        self
    }

    pub fn project(mut self, project: ProjectSpec) -> Self {
        self.projects.push(project);
        self
    }

    pub fn client_options(mut self, options: ClientOptions) -> Self {
        self.client = options;
        self
    }

    pub fn wrap_client(mut self, wrap: Wrap) -> Self {
        self.wrap = Some(wrap);
        self
    }

    /// Starts the simulator and the store and builds the scheduler over `triggers_toml`.
    pub async fn build(self, triggers_toml: &str) -> Harness {
        let sim = Simulator::start_with(SimOptions {
            start_time: Some(self.start),
            ..SimOptions::default()
        })
        .await
        .unwrap();
        sim.add_user("alice", TOKEN);
        for project in self.projects {
            sim.add_project(project);
        }
        let clock = Arc::new(ManualClock::new(self.start));
        let mut dynamo = None;
        let (store, dir): (SharedStore, _) = match self.backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let store = SqliteStore::open_in_dir(dir.path(), clock.clone()).unwrap();
                (Arc::new(store), Some(dir))
            }
            Backend::Dynamo => {
                let config = match &self.endpoint {
                    Some(endpoint) => sdk_config_for(endpoint).await,
                    None => sdk_config().await,
                };
                let client = aws_sdk_dynamodb::Client::new(&config);
                let table = unique_name("scheduler");
                shared::store::dynamo::create_table(&client, &table)
                    .await
                    .unwrap();
                dynamo = Some((client.clone(), table.clone()));
                let client = match self.recorder {
                    Some(recorder) => aws_sdk_dynamodb::Client::from_conf(
                        aws_sdk_dynamodb::config::Builder::from(&config)
                            .interceptor(recorder)
                            .build(),
                    ),
                    None => client,
                };
                (
                    Arc::new(DynamoStore::new(client, table, clock.clone())),
                    None,
                )
            }
        };
        let tokens = TokenFile::new(&[("default", TOKEN)]).unwrap();
        let triggers =
            Arc::new(shared::config::parse_str(triggers_toml, "scheduled-test.toml").unwrap());
        let scheduler = scheduler_over(
            &sim,
            &tokens,
            &self.client,
            &store,
            &clock,
            &self.engine,
            &triggers,
            self.wrap,
        );
        Harness {
            scheduler,
            sim,
            clock,
            store,
            triggers,
            dynamo,
            client_options: self.client,
            engine_settings: self.engine,
            _tokens: tokens,
            _dir: dir,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn scheduler_over(
    sim: &Simulator,
    tokens: &TokenFile,
    options: &ClientOptions,
    store: &SharedStore,
    clock: &Arc<ManualClock>,
    settings: &EngineSettings,
    triggers: &Arc<TriggersFile>,
    wrap: Option<Wrap>,
) -> Scheduler {
    let client: Arc<dyn CircleCi> =
        Arc::new(client_for(sim, tokens.secrets(), options.clone()).unwrap());
    let circleci = match wrap {
        Some(wrap) => wrap(client),
        None => client,
    };
    let engine = Engine::new(
        store.clone(),
        Arc::new(Actions::new(circleci)),
        clock.clone(),
        settings.clone(),
    );
    Scheduler::new(engine, triggers.clone())
}

/// The scheduler over a real store and the simulator, on one manual clock.
pub struct Harness {
    pub sim: Simulator,
    pub clock: Arc<ManualClock>,
    pub store: SharedStore,
    pub scheduler: Scheduler,
    /// The DynamoDB backend's table and a client that records nothing.
    pub dynamo: Option<(aws_sdk_dynamodb::Client, String)>,
    triggers: Arc<TriggersFile>,
    client_options: ClientOptions,
    engine_settings: EngineSettings,
    _tokens: TokenFile,
    _dir: Option<tempfile::TempDir>,
}

impl Harness {
    /// A scheduler as a new process (or a fresh Lambda instance) builds it: a new CircleCI
    /// client (no pacing memory), over the same store, clock and triggers file.
    pub fn new_scheduler(&self, wrap: Option<Wrap>) -> Scheduler {
        scheduler_over(
            &self.sim,
            &self._tokens,
            &self.client_options,
            &self.store,
            &self.clock,
            &self.engine_settings,
            &self.triggers,
            wrap,
        )
    }

    /// A scheduler over another triggers file (a redeploy with a changed file), on the same
    /// store, clock and simulator.
    pub fn scheduler_for(&self, triggers_toml: &str) -> Scheduler {
        let triggers =
            Arc::new(shared::config::parse_str(triggers_toml, "scheduled-test.toml").unwrap());
        scheduler_over(
            &self.sim,
            &self._tokens,
            &self.client_options,
            &self.store,
            &self.clock,
            &self.engine_settings,
            &triggers,
            None,
        )
    }

    /// Defaults: 2026-11-28T10:00:00Z, [`default_client_options`], the engine's defaults.
    pub fn builder(backend: Backend) -> HarnessBuilder {
        HarnessBuilder {
            backend,
            start: utc("2026-11-28T10:00:00Z"),
            projects: Vec::new(),
            client: default_client_options(),
            engine: EngineSettings::default(),
            wrap: None,
            recorder: None,
            endpoint: None,
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Moves both clocks to `at` (never backwards); the simulator runs its jobs meanwhile.
    pub async fn advance_to(&self, at: &str) {
        self.advance_to_instant(utc(at)).await;
    }

    pub async fn advance_to_instant(&self, at: DateTime<Utc>) {
        assert!(at >= self.clock.now(), "the test clock only moves forward");
        self.clock.set(at);
        let behind = (at - self.sim.now()).to_std().unwrap_or_default();
        self.sim.advance(behind).await;
    }

    pub async fn advance(&self, by: TimeDelta) {
        self.advance_to_instant(self.clock.now() + by).await;
    }

    /// One tick at the clock's now.
    pub async fn tick(&self) -> TickReport {
        self.scheduler.tick(self.clock.now()).await.unwrap()
    }

    /// Moves to `at`, then ticks there.
    pub async fn tick_at(&self, at: &str) -> TickReport {
        self.advance_to(at).await;
        self.tick().await
    }

    /// Every record of a schedule, newest first.
    pub async fn history(&self, schedule: &str) -> Vec<TriggerRecord> {
        let source = TriggerSource::new(SourceKind::Schedule, schedule);
        let mut records = Vec::new();
        let mut request = PageRequest::first(100);
        loop {
            let page = self.store.list_by_source(&source, request).await.unwrap();
            records.extend(page.items);
            match page.next {
                Some(cursor) => request = PageRequest::after(100, cursor),
                None => return records,
            }
        }
    }

    /// How many records of a schedule have `status`.
    pub async fn count(&self, schedule: &str, status: TriggerStatus) -> usize {
        self.history(schedule)
            .await
            .iter()
            .filter(|r| r.status == status)
            .count()
    }

    /// The slot ids (`detail.slot`) of a schedule's records with `status`, ascending.
    pub async fn slots(&self, schedule: &str, status: TriggerStatus) -> Vec<String> {
        let mut slots: Vec<String> = self
            .history(schedule)
            .await
            .iter()
            .filter(|r| r.status == status)
            .map(|r| r.detail.slot.clone().unwrap_or_default())
            .collect();
        slots.sort();
        slots
    }

    /// The record of one slot of a schedule (single target).
    pub async fn record(&self, schedule: &str, slot: &str) -> TriggerRecord {
        let records = self.history(schedule).await;
        let matching: Vec<_> = records
            .into_iter()
            .filter(|r| r.detail.slot.as_deref() == Some(slot))
            .collect();
        assert_eq!(matching.len(), 1, "one record for {schedule} {slot}");
        matching.into_iter().next().unwrap()
    }

    /// Pipelines the simulator created whose `run-workflow` parameter is `workflow`.
    pub fn pipelines_for(&self, workflow: &str) -> Vec<PipelineView> {
        self.sim
            .pipelines()
            .into_iter()
            .filter(|p| p.parameters.get("run-workflow").and_then(|v| v.as_str()) == Some(workflow))
            .collect()
    }
}

/// The test client options (fast backoff) with pacing well above what a test needs.
pub fn default_client_options() -> ClientOptions {
    ClientOptions {
        rate: RateDefaults {
            burst: 100,
            per_second: 100.0,
        },
        ..test_options()
    }
}

pub fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

/// Makes the pipeline creates of one project reach CircleCI (the simulator creates the
/// pipeline) and then never answer: the invocation that sent it is stuck until it is killed,
/// as a Lambda timing out mid-request would be.
#[derive(Default)]
pub struct HangControl {
    project: Mutex<Option<String>>,
    sent: Notify,
}

impl HangControl {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Creates on `project` (canonical slug, e.g. `gh/acme/web`) hang after sending.
    pub fn hang_on(&self, project: &str) {
        *self.project.lock().unwrap() = Some(project.to_owned());
    }

    /// Creates go through again.
    pub fn release(&self) {
        *self.project.lock().unwrap() = None;
    }

    /// Resolves once a hung create has reached CircleCI.
    pub async fn sent(&self) {
        self.sent.notified().await;
    }

    /// The wrapper to give [`HarnessBuilder::wrap_client`].
    pub fn wrap(self: &Arc<Self>) -> Wrap {
        let control = Arc::clone(self);
        Box::new(move |inner| Arc::new(Intercepted::new(inner, HangsAfterSending(control))))
    }
}

struct HangsAfterSending(Arc<HangControl>);

#[async_trait]
impl Interceptor for HangsAfterSending {
    async fn around<'a, T: Send + 'a>(
        &'a self,
        call: Call<'a>,
        forward: Forward<'a, T>,
    ) -> Result<T, CircleCiError> {
        let result = forward.await;
        if let Call::TriggerPipeline(request) = call {
            let hang = self.0.project.lock().unwrap().as_deref()
                == Some(request.project.canonical().as_str());
            if hang {
                self.0.sent.notify_one();
                std::future::pending::<()>().await;
            }
        }
        result
    }
}

/// One `#[tokio::test]` per case and store: `mod sqlite { fn case() }` and
/// `mod dynamodb { fn case() }`, each calling `case(Backend)` of the invoking module.
#[macro_export]
macro_rules! on_both_stores {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case($crate::scheduled_support::Backend::Sqlite).await;
                }
            )*
        }
        mod dynamodb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case($crate::scheduled_support::Backend::Dynamo).await;
                }
            )*
        }
    };
}

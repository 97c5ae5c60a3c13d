//! `circleci-sim`: a CircleCI API v2 simulator that speaks real HTTP, for tests and the
//! local sandbox. Never linked into the Lambdas.
//!
//! It knows users and their tokens, projects with declared pipeline parameters and
//! workflows (with `when:` conditions, `requires`, approval jobs, per-attempt outcomes),
//! creates pipelines through both trigger endpoints, moves jobs forward on a clock the test
//! controls, sends signed `workflow-completed` / `job-completed` webhooks to registered
//! URLs, and injects faults (rate limits, 5xx, latency, ambiguous creates, CI skips,
//! duplicate deliveries). Its responses validate against CircleCI's OpenAPI document
//! (see [`spec`] and `tests/spec_contract.rs`).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use circleci_sim::{JobSpec, ProjectSpec, Simulator, WorkflowSpec};
//! let sim = Simulator::start().await?;
//! sim.add_user("alice", "token-a");
//! sim.add_project(
//!     ProjectSpec::new("gh/acme/api")
//!         .workflow(WorkflowSpec::new("build").job(JobSpec::new("test"))),
//! );
//! // ... point the client at sim.base_url(), trigger, then:
//! sim.run_until_idle().await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod api;
mod faults;
mod model;
mod render;
pub mod slug;
pub mod spec;
mod state;
mod views;
mod webhook;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use api::{CI_SKIP_MESSAGE, UNAUTHORIZED_MESSAGE};
pub use faults::{FailureRatio, Faults, RateLimit};
pub use model::{
    JobKind, JobOutcome, JobSpec, ParameterSpec, ParameterType, PayloadStyle, ProjectSpec,
    SimConfig, TokenSpec, UserSpec, When, WorkflowSpec,
};
pub use state::{MAX_PARAMETER_KEY_LEN, MAX_PARAMETER_VALUE_LEN, MAX_PARAMETERS};
pub use views::{
    Counters, DeliveryRecord, GitRef, JobStatus, JobView, PipelineState, PipelineView,
    RecordedRequest, TriggerEndpoint, WebhookView, WorkflowStatus, WorkflowView,
};
pub use webhook::{JOB_COMPLETED, WORKFLOW_COMPLETED, signature_header};

use state::{State, WebhookRec};

/// How to start a simulator.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Address to listen on; default `127.0.0.1:0` (a free port).
    pub listen: SocketAddr,
    /// Page size of paginated lists (CircleCI uses 20); small values exercise pagination.
    pub page_size: usize,
    /// Real-time mode: every `tick` of real time, advance the simulated clock by the real
    /// time elapsed times `time_scale`. `None` (default): the clock moves only through
    /// [`Simulator::advance`] / [`Simulator::run_until_idle`].
    pub auto_advance: Option<Duration>,
    /// Speed-up of the real-time mode (2.0 = jobs run twice as fast).
    pub time_scale: f64,
    /// Simulated time at start; default: the real time at start.
    pub start_time: Option<DateTime<Utc>>,
    /// Timeout of one webhook delivery attempt.
    pub delivery_timeout: Duration,
    /// Webhooks allowed per project (CircleCI: 5).
    pub max_webhooks_per_project: usize,
    /// Most recent requests and deliveries kept in the logs (unbounded by default; the
    /// long-running binary bounds it).
    pub log_capacity: usize,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            page_size: 20,
            auto_advance: None,
            time_scale: 1.0,
            start_time: None,
            delivery_timeout: Duration::from_secs(2),
            max_webhooks_per_project: 5,
            log_capacity: usize::MAX,
        }
    }
}

/// Shared state behind every clone of a [`Simulator`] and the server task.
pub(crate) struct Inner {
    state: Mutex<State>,
    http: reqwest::Client,
    /// For webhooks registered with `verify-tls: false`.
    http_unverified: reqwest::Client,
    /// Serialises delivery runs so `advance` returns only after earlier deliveries finish.
    delivery_lock: tokio::sync::Mutex<()>,
    addr: SocketAddr,
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough data for a test double.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Stops the server and the auto-advance task when the last `Simulator` clone drops.
struct ShutdownGuard(tokio::sync::watch::Sender<bool>);

impl Drop for ShutdownGuard {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

/// A running simulator. Cheap to clone; the server stops when the last clone drops.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
    _shutdown: Arc<ShutdownGuard>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Starts on `127.0.0.1:0` with default options; the server runs on a spawned task.
    pub async fn start() -> anyhow::Result<Simulator> {
        Self::start_with(SimOptions::default()).await
    }

    /// Starts with `options`.
    pub async fn start_with(options: SimOptions) -> anyhow::Result<Simulator> {
        let listener = tokio::net::TcpListener::bind(options.listen).await?;
        let addr = listener.local_addr()?;
        let user_agent = "CircleCI-Webhook/1.0 (circleci-sim)";
        let http = reqwest::Client::builder()
            .timeout(options.delivery_timeout)
            .user_agent(user_agent)
            .build()?;
        let http_unverified = reqwest::Client::builder()
            .timeout(options.delivery_timeout)
            .user_agent(user_agent)
            .tls_danger_accept_invalid_certs(true)
            .build()?;
        let epoch = options.start_time.unwrap_or_else(Utc::now);
        let mut state = State::new(epoch, options.page_size, options.max_webhooks_per_project);
        state.log_capacity = options.log_capacity.max(1);
        let inner = Arc::new(Inner {
            state: Mutex::new(state),
            http,
            http_unverified,
            delivery_lock: tokio::sync::Mutex::new(()),
            addr,
        });
        let (tx, rx) = tokio::sync::watch::channel(false);
        let app = api::router(Arc::clone(&inner));
        let mut server_rx = rx.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = server_rx.wait_for(|stop| *stop).await;
            };
            if let Err(error) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(%error, "circleci-sim server stopped");
            }
        });
        let sim = Simulator {
            inner,
            _shutdown: Arc::new(ShutdownGuard(tx)),
        };
        if let Some(tick) = options.auto_advance {
            spawn_auto_advance(Arc::clone(&sim.inner), tick, options.time_scale, rx);
        }
        Ok(sim)
    }

    /// `http://127.0.0.1:PORT/api/v2`.
    pub fn base_url(&self) -> String {
        format!("http://{}/api/v2", self.inner.addr)
    }

    /// The bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Adds a user (or finds it by login) and gives it `token`, named after the login.
    /// Returns the user id (`GET /me` `id`).
    pub fn add_user(&self, login: &str, token: &str) -> Uuid {
        self.add_token(login, login, token)
    }

    /// Adds a named token for `login` (creating the user if needed). Requests made with it
    /// are logged under `token_name`. Returns the user id.
    pub fn add_token(&self, login: &str, token_name: &str, token: &str) -> Uuid {
        let mut st = self.inner.lock();
        let user = st.add_user(login);
        st.add_token(user, token_name, token);
        st.users[user].id
    }

    /// The id of a user, by login.
    pub fn user_id(&self, login: &str) -> Option<Uuid> {
        self.inner
            .lock()
            .users
            .iter()
            .find(|u| u.login == login)
            .map(|u| u.id)
    }

    /// Adds a project; returns its id (the webhook scope id).
    ///
    /// # Panics
    /// If the slug is not a valid project slug or the project already exists; use
    /// [`Simulator::try_add_project`] to handle that.
    pub fn add_project(&self, project: ProjectSpec) -> Uuid {
        match self.try_add_project(project) {
            Ok(id) => id,
            Err(error) => panic!("circleci-sim: {error}"),
        }
    }

    /// Adds a project, reporting an invalid or duplicate slug as an error.
    pub fn try_add_project(&self, project: ProjectSpec) -> anyhow::Result<Uuid> {
        let id = project.id;
        self.inner.lock().add_project(project)?;
        Ok(id)
    }

    /// Loads users and projects from a [`SimConfig`].
    pub fn load_config(&self, config: SimConfig) -> anyhow::Result<()> {
        for user in config.users {
            for token in &user.tokens {
                self.add_token(
                    &user.login,
                    token.name.as_deref().unwrap_or(&user.login),
                    &token.token,
                );
            }
            if user.tokens.is_empty() {
                self.inner.lock().add_user(&user.login);
            }
        }
        for project in config.projects {
            self.try_add_project(project)?;
        }
        Ok(())
    }

    /// The id of a project, by any spelling of its slug.
    pub fn project_id(&self, slug: &str) -> Option<Uuid> {
        let parsed = slug::Slug::parse(slug)?;
        let st = self.inner.lock();
        st.find_project(&parsed).map(|p| st.projects[p].spec.id)
    }

    /// Pins the SHA a branch or tag resolves to for new pipelines (simulates a push).
    pub fn set_revision(&self, slug: &str, reference: &str, sha: &str) -> anyhow::Result<()> {
        let parsed =
            slug::Slug::parse(slug).ok_or_else(|| anyhow::anyhow!("invalid slug {slug:?}"))?;
        let mut st = self.inner.lock();
        let project = st
            .find_project(&parsed)
            .ok_or_else(|| anyhow::anyhow!("unknown project {slug}"))?;
        st.projects[project]
            .spec
            .revisions
            .insert(reference.to_owned(), sha.to_owned());
        Ok(())
    }

    /// Registers a webhook directly (as if through `POST /webhook`); returns its id.
    pub fn add_webhook(
        &self,
        slug: &str,
        url: &str,
        secret: &str,
        events: &[&str],
    ) -> anyhow::Result<Uuid> {
        let parsed =
            slug::Slug::parse(slug).ok_or_else(|| anyhow::anyhow!("invalid slug {slug:?}"))?;
        let mut st = self.inner.lock();
        let project = st
            .find_project(&parsed)
            .ok_or_else(|| anyhow::anyhow!("unknown project {slug}"))?;
        let now = st.now();
        let id = Uuid::new_v4();
        let scope_id = st.projects[project].spec.id;
        st.webhooks.push(WebhookRec {
            id,
            name: format!("webhook {id}"),
            url: url.to_owned(),
            secret: secret.to_owned(),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            verify_tls: true,
            scope_id,
            created_at: now,
            updated_at: now,
        });
        Ok(id)
    }

    /// Webhooks registered on a project (any slug spelling), secrets unmasked.
    pub fn webhooks(&self, slug: &str) -> Vec<WebhookView> {
        let Some(project_id) = self.project_id(slug) else {
            return Vec::new();
        };
        self.inner
            .lock()
            .webhooks
            .iter()
            .filter(|h| h.scope_id == project_id)
            .map(|h| WebhookView {
                id: h.id,
                name: h.name.clone(),
                url: h.url.clone(),
                events: h.events.clone(),
                signing_secret: h.secret.clone(),
                verify_tls: h.verify_tls,
                project_id: h.scope_id,
            })
            .collect()
    }

    /// Replaces the fault configuration (and resets rate-limit buckets and the failure RNG).
    pub fn set_faults(&self, faults: Faults) {
        self.inner.lock().set_faults(faults);
    }

    /// The current fault configuration (counters such as `fail_next` count down as used).
    pub fn faults(&self) -> Faults {
        self.inner.lock().faults.clone()
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.lock().requests.clone()
    }

    /// Forgets recorded requests and resets the counters.
    pub fn clear_requests(&self) {
        let mut st = self.inner.lock();
        st.requests.clear();
        st.counters = Counters::default();
    }

    /// Counters (requests, 429s, injected failures, pipelines, deliveries).
    pub fn counters(&self) -> Counters {
        self.inner.lock().counters
    }

    /// Every pipeline created, oldest first.
    pub fn pipelines(&self) -> Vec<PipelineView> {
        let st = self.inner.lock();
        (0..st.pipelines.len())
            .map(|p| st.pipeline_view(p))
            .collect()
    }

    /// One pipeline.
    pub fn pipeline(&self, id: Uuid) -> Option<PipelineView> {
        let st = self.inner.lock();
        st.find_pipeline(id).map(|p| st.pipeline_view(p))
    }

    /// The workflows of a pipeline (reruns included), oldest first.
    pub fn workflows(&self, pipeline_id: Uuid) -> Vec<WorkflowView> {
        let st = self.inner.lock();
        (0..st.workflows.len())
            .filter(|w| st.pipelines[st.workflows[*w].pipeline].id == pipeline_id)
            .map(|w| st.workflow_view(w))
            .collect()
    }

    /// One workflow.
    pub fn workflow(&self, id: Uuid) -> Option<WorkflowView> {
        let st = self.inner.lock();
        st.find_workflow(id).map(|w| st.workflow_view(w))
    }

    /// Whether every workflow of the pipeline is final (CircleCI's "pipeline finished").
    pub fn pipeline_is_final(&self, pipeline_id: Uuid) -> bool {
        self.workflows(pipeline_id)
            .iter()
            .all(|w| w.status.is_final())
    }

    /// Simulated "now".
    pub fn now(&self) -> DateTime<Utc> {
        self.inner.lock().now()
    }

    /// Moves the simulated clock forward, completing and starting jobs in time order, then
    /// delivers the resulting webhooks (awaiting every delivery).
    pub async fn advance(&self, by: Duration) {
        self.inner.lock().advance(by);
        deliver_pending(&self.inner).await;
    }

    /// Advances the simulated clock to the real time if it is behind (never backwards),
    /// so `created_at` of new pipelines is close to a client's wall clock again.
    pub async fn catch_up_to_wall_clock(&self) {
        let behind = (Utc::now() - self.now()).to_std().unwrap_or_default();
        self.advance(behind).await;
    }

    /// Advances until no job is running (workflows on hold stay on hold), then delivers.
    pub async fn run_until_idle(&self) {
        {
            let mut st = self.inner.lock();
            while let Some(next) = st.next_completion() {
                let by = next.saturating_sub(st.elapsed);
                st.advance(by);
            }
        }
        deliver_pending(&self.inner).await;
    }

    /// Sends every queued webhook event and waits for deliveries already in flight.
    pub async fn flush_deliveries(&self) {
        deliver_pending(&self.inner).await;
    }

    /// Every delivery attempt so far, in order.
    pub fn deliveries(&self) -> Vec<DeliveryRecord> {
        self.inner.lock().deliveries.clone()
    }

    /// Forgets recorded deliveries.
    pub fn clear_deliveries(&self) {
        self.inner.lock().deliveries.clear();
    }
}

// The simulator is shared across tasks and threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Simulator>();
};

fn spawn_auto_advance(
    inner: Arc<Inner>,
    tick: Duration,
    scale: f64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let scale = if scale.is_finite() && scale > 0.0 {
        scale
    } else {
        1.0
    };
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(tick.max(Duration::from_millis(1)));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = interval.tick() => {
                    let now = tokio::time::Instant::now();
                    let by = now.saturating_duration_since(last).mul_f64(scale);
                    last = now;
                    inner.lock().advance(by);
                    deliver_pending(&inner).await;
                }
                _ = stop.changed() => break,
            }
        }
    });
}

/// Sends queued deliveries in order; concurrent callers wait for each other so that a
/// caller returns only after every earlier event was delivered.
pub(crate) async fn deliver_pending(inner: &Inner) {
    let _running = inner.delivery_lock.lock().await;
    loop {
        let Some(delivery) = inner.lock().pending.pop_front() else {
            break;
        };
        let body: serde_json::Value = serde_json::from_slice(&delivery.body).unwrap_or_default();
        let mut attempt = 0;
        for _copy in 0..delivery.copies {
            let mut tries_left = delivery.retries + 1;
            while tries_left > 0 {
                tries_left -= 1;
                attempt += 1;
                let http = if delivery.verify_tls {
                    &inner.http
                } else {
                    &inner.http_unverified
                };
                let result = http
                    .post(&delivery.url)
                    .header("content-type", "application/json")
                    .header("circleci-event-type", delivery.event_type)
                    .header("circleci-signature", &delivery.signature)
                    .body(delivery.body.clone())
                    .send()
                    .await;
                let (status, error) = match result {
                    Ok(response) => (Some(response.status().as_u16()), None),
                    Err(error) => (None, Some(error.to_string())),
                };
                let delivered = status.is_some_and(|s| (200..300).contains(&s));
                let mut st = inner.lock();
                st.record_delivery(DeliveryRecord {
                    webhook_id: delivery.webhook_id,
                    url: delivery.url.clone(),
                    event_type: delivery.event_type.to_owned(),
                    event_id: delivery.event_id,
                    body: body.clone(),
                    signature: delivery.signature.clone(),
                    status,
                    error,
                    attempt,
                });
                if delivered {
                    break;
                }
            }
        }
    }
}

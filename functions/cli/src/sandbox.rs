//! `serve --sandbox`: the CircleCI simulator in this process, shaped after the triggers
//! file, so schedules fire, chains cascade and history fills without a CircleCI account.
//!
//! Every project the file names literally (schedule and endpoint targets, chain upstreams
//! and actions) exists in the simulator, declares the `[circleci].workflow_parameter`
//! string parameter and the parameters the targets send, and has one workflow per name the
//! file uses (each a `build` job then a `test` job, a few seconds of real time). Tokens, the
//! webhook signing secret and one key per `[[client]]` are generated for this run only; the
//! simulator's webhooks point back at this server's `/webhooks/circleci`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use circleci_sim::{
    Faults, JobSpec, ParameterSpec, ProjectSpec, SimOptions, Simulator, WORKFLOW_COMPLETED, When,
    WorkflowSpec,
};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use shared::config::endpoint::{EndpointSelect, EndpointSpec, ParameterType};
use shared::config::example;
use shared::config::{ActionKind, ParameterValue, TargetSpec, TriggersFile};
use shared::http::Problem;
use shared::secrets::LocalSecretSource;
use shared::secrets::env_names;
use shared::triggers::chained::WEBHOOK_PATH;
use shared::triggers::http::mint_key;
use shared::triggers::scheduled::{RunRequest, Scheduler, SchedulerError, TickReport};

/// Login of the simulator's only user.
const SANDBOX_USER: &str = "sandbox";
/// How long each sandbox job runs, in real seconds at speed 1.
const BUILD_SECONDS: u64 = 3;
const TEST_SECONDS: u64 = 4;
/// Workflow of projects the file names no workflow for.
const DEFAULT_WORKFLOW: &str = "build";
/// The build jobs of every sandbox workflow, in order.
const SANDBOX_JOBS: [&str; 2] = ["build", "test"];

/// What the triggers file asks of CircleCI: the projects, workflows and parameters the
/// simulator must know, and the token names it must accept.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SandboxShape {
    pub projects: BTreeSet<String>,
    /// Workflows the targets select through the workflow parameter.
    pub selected_workflows: BTreeSet<String>,
    /// Workflows only chains wait for (they run in every pipeline).
    pub upstream_workflows: BTreeSet<String>,
    pub parameters: BTreeMap<String, ParameterType>,
    pub tokens: BTreeSet<String>,
    /// Approval jobs the file's `approve` actions name, per project: each workflow of the
    /// project holds on them after its tests, as a real release gate would.
    pub approvals: BTreeMap<String, BTreeSet<String>>,
}

/// A name used as is, not a glob or a template (those name no one project or workflow).
fn literal(name: &str) -> bool {
    !name.is_empty() && !name.contains(['*', '?', '[', '{', '}', '<'])
}

impl SandboxShape {
    pub fn of(triggers: &TriggersFile) -> Self {
        let mut shape = SandboxShape::default();
        shape.tokens.insert(triggers.circleci.token.clone());
        let targets = triggers.schedule.iter().flat_map(|schedule| {
            schedule
                .target
                .iter()
                .chain(schedule.targets.iter().flatten())
        });
        for schedule in &triggers.schedule {
            for target in schedule
                .target
                .iter()
                .chain(schedule.targets.iter().flatten())
            {
                if schedule.action == ActionKind::Approve {
                    shape.add_approval(&target.project, schedule.job.as_deref());
                }
            }
        }
        for target in targets {
            shape.add_target(target);
        }
        for chain in &triggers.chain {
            for matcher in chain.when.iter().chain(&chain.after) {
                shape
                    .projects
                    .extend(matcher.project.iter().filter(|p| literal(p)).cloned());
                if let Some(workflows) = &matcher.workflow {
                    shape
                        .upstream_workflows
                        .extend(workflows.iter().filter(|w| literal(w)).cloned());
                }
            }
            for action in &chain.then {
                if action.action == ActionKind::Approve {
                    shape.add_approval(&action.project, action.job.as_deref());
                }
                shape.add(
                    &action.project,
                    action.workflow.as_deref(),
                    &action.parameters,
                    action.token.as_deref(),
                );
            }
        }
        for endpoint in &triggers.endpoint {
            let target = &endpoint.target;
            if endpoint.action == ActionKind::Approve {
                shape.add_approval(&target.project, endpoint.job.as_deref());
            }
            shape.add(
                &target.project,
                target.workflow.as_deref(),
                &target.parameters,
                target.token.as_deref(),
            );
            for (name, schema) in &endpoint.parameters {
                shape.parameters.entry(name.clone()).or_insert(schema.kind);
            }
        }
        shape
            .parameters
            .remove(&triggers.circleci.workflow_parameter);
        let selected = shape.selected_workflows.clone();
        shape.upstream_workflows.retain(|w| !selected.contains(w));
        shape
    }

    fn add_approval(&mut self, project: &str, job: Option<&str>) {
        if let Some(job) = job.filter(|j| literal(j) && literal(project)) {
            self.approvals
                .entry(project.to_owned())
                .or_default()
                .insert(job.to_owned());
        }
    }

    fn add_target(&mut self, target: &TargetSpec) {
        self.add(
            &target.project,
            target.workflow.as_deref(),
            &target.parameters,
            target.token.as_deref(),
        );
    }

    fn add(
        &mut self,
        project: &str,
        workflow: Option<&str>,
        parameters: &BTreeMap<String, ParameterValue>,
        token: Option<&str>,
    ) {
        if literal(project) {
            self.projects.insert(project.to_owned());
        }
        if let Some(workflow) = workflow.filter(|w| literal(w)) {
            self.selected_workflows.insert(workflow.to_owned());
        }
        for (name, value) in parameters {
            self.parameters
                .entry(name.clone())
                .or_insert(ParameterType::of(value));
        }
        if let Some(token) = token {
            self.tokens.insert(token.to_owned());
        }
    }

    /// The simulator project for `slug`; `failing` names its jobs whose first attempt fails.
    pub fn project(
        &self,
        slug: &str,
        workflow_parameter: &str,
        job_scale: f64,
        failing: &[&str],
    ) -> ProjectSpec {
        let seconds = |s: u64| Duration::from_secs(s).div_f64(job_scale);
        let job = |name: &str, duration: u64| {
            let job = JobSpec::new(name).duration(seconds(duration));
            if failing.contains(&name) {
                job.fails_then_succeeds()
            } else {
                job
            }
        };
        let approvals = self.approvals.get(slug);
        // Approval jobs gate the workflows a pipeline chooses (or its default one), not the
        // always-running upstream ones: one approval per pipeline, as in a real release gate.
        let jobs = |workflow: WorkflowSpec, gated: bool| {
            let mut workflow = workflow
                .job(job(SANDBOX_JOBS[0], BUILD_SECONDS))
                .job(job(SANDBOX_JOBS[1], TEST_SECONDS).requires([SANDBOX_JOBS[0]]));
            for approval in approvals.into_iter().flatten().filter(|_| gated) {
                workflow = workflow.job(JobSpec::approval(approval).requires(["test"]));
            }
            workflow
        };
        let mut project =
            ProjectSpec::new(slug).parameter(ParameterSpec::string(workflow_parameter, ""));
        for (name, kind) in &self.parameters {
            project = project.parameter(match kind {
                ParameterType::String => ParameterSpec::string(name, ""),
                ParameterType::Integer => ParameterSpec::integer(name, 0),
                ParameterType::Boolean => ParameterSpec::boolean(name, false),
            });
        }
        // A selected workflow runs when chosen; a pipeline that chooses none runs the
        // default workflow; the workflows only chains wait for run in every pipeline.
        let chosen = |name: &str| When::equals(workflow_parameter, name);
        let unchosen = || When::equals(workflow_parameter, "");
        for name in &self.selected_workflows {
            let when = if name == DEFAULT_WORKFLOW {
                When::Or(vec![chosen(name), unchosen()])
            } else {
                chosen(name)
            };
            project = project.workflow(jobs(WorkflowSpec::new(name).when(when), true));
        }
        for name in &self.upstream_workflows {
            let default = name == DEFAULT_WORKFLOW;
            project = project.workflow(jobs(WorkflowSpec::new(name), default));
        }
        if !self.selected_workflows.contains(DEFAULT_WORKFLOW)
            && !self.upstream_workflows.contains(DEFAULT_WORKFLOW)
        {
            project = project.workflow(jobs(
                WorkflowSpec::new(DEFAULT_WORKFLOW).when(unchosen()),
                true,
            ));
        }
        project
    }
}

/// Where the sandbox runs a schedule now, outside its cron (sandbox only: a real server
/// exposes no unauthenticated way to start pipelines).
pub const RUN_SCHEDULE_PATH: &str = "/sandbox/schedules/{name}/run";

/// `POST /sandbox/schedules/{name}/run[?ignore_pause=true]`: the schedule's targets fire
/// now, through the same scheduler as its cron slots (recorded as a manual run by
/// `sandbox`); answers the tick report. A paused schedule is refused (409) unless
/// `ignore_pause=true`, which is recorded — as `circleci-triggers run` does.
pub fn sandbox_router(scheduler: Scheduler) -> Router {
    Router::new()
        .route(RUN_SCHEDULE_PATH, post(run_schedule))
        .with_state(scheduler)
}

#[derive(Debug, Default, serde::Deserialize)]
struct RunQuery {
    #[serde(default)]
    ignore_pause: bool,
}

async fn run_schedule(
    State(scheduler): State<Scheduler>,
    Path(name): Path<String>,
    Query(query): Query<RunQuery>,
) -> Response {
    let request = RunRequest {
        schedule: name.clone(),
        at: None,
        run_id: None,
        operator: "sandbox".to_owned(),
        ignore_pause: query.ignore_pause,
    };
    let now = scheduler.engine().clock().now();
    match scheduler.run(&request, now).await {
        Ok(report) => Json(TickReport {
            at: Some(now),
            schedules: vec![report.counts],
            ..TickReport::default()
        })
        .into_response(),
        Err(error @ SchedulerError::Paused { .. }) => Problem::new(
            StatusCode::CONFLICT,
            "schedule-paused",
            "The schedule is paused",
        )
        .with_detail(
            error
                .to_string()
                .replace("--ignore-pause", "?ignore_pause=true"),
        )
        .into_response(),
        Err(SchedulerError::UnknownSchedule { known, .. }) => {
            Problem::not_found(&format!("no schedule named `{name}` (defined: {known})"))
                .into_response()
        }
        Err(error) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "schedule-run-failed",
            "The schedule could not run",
        )
        .with_detail(error.to_string())
        .into_response(),
    }
}

/// A request body for `endpoint` that it accepts as is: a branch when it has no fixed one
/// and a value for each required parameter without a default, all generated from the
/// endpoint's own declarations (`triggers_config::example`). `None` when the endpoint
/// cannot be called without knowing something only a run produces (an approve, rerun or
/// cancel whose caller must select the workflow), or when no accepted value is derivable.
fn example_body(endpoint: &EndpointSpec) -> Option<String> {
    if endpoint.action != ActionKind::Pipeline && endpoint.select == EndpointSelect::Caller {
        return None;
    }
    let mut body = serde_json::Map::new();
    if let Some(branch) = example::example_branch(endpoint) {
        body.insert("branch".into(), branch.into());
    }
    let parameters: serde_json::Map<String, serde_json::Value> =
        example::example_parameters(endpoint)
            .ok()?
            .into_iter()
            .map(|(name, value)| (name, json_value(value)))
            .collect();
    if !parameters.is_empty() {
        body.insert("parameters".into(), parameters.into());
    }
    Some(serde_json::Value::Object(body).to_string())
}

fn json_value(value: ParameterValue) -> serde_json::Value {
    match value {
        ParameterValue::String(text) => text.into(),
        ParameterValue::Integer(number) => number.into(),
        ParameterValue::Boolean(flag) => flag.into(),
    }
}

/// `--sandbox-fail PROJECT:JOB`: the job's first attempt in every workflow of the project
/// ends `failed` (reruns succeed), so failure paths and rerun-from-failed can be tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailingJob {
    pub project: String,
    pub job: String,
}

impl std::str::FromStr for FailingJob {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (project, job) = text
            .rsplit_once(':')
            .filter(|(p, j)| !p.is_empty() && !j.is_empty())
            .ok_or_else(|| format!("`{text}` is not PROJECT:JOB (e.g. gh/acme/e2e:test)"))?;
        if !SANDBOX_JOBS.contains(&job) {
            return Err(format!(
                "sandbox jobs are {}; `{job}` is not one of them",
                SANDBOX_JOBS.join(" and ")
            ));
        }
        Ok(Self {
            project: project.to_owned(),
            job: job.to_owned(),
        })
    }
}

/// A running sandbox: the simulator and this run's secrets.
pub struct Sandbox {
    simulator: Simulator,
    shape: SandboxShape,
    token: SecretString,
    webhook_secret: SecretString,
    client_keys: Vec<SandboxClient>,
    schedules: Vec<String>,
}

/// A generated key of one `[[client]]`.
struct SandboxClient {
    name: String,
    key: SecretString,
    hash_hex: String,
    /// An endpoint it may call and a request body for it, for the banner's example.
    example: Option<(String, String)>,
}

fn random_secret(prefix: &str) -> SecretString {
    let mut bytes = [0_u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    SecretString::from(format!("{prefix}{}", hex::encode(bytes)))
}

impl Sandbox {
    /// Starts the simulator (real-time, jobs `speed` times faster than nominal) with the
    /// file's projects, and generates this run's secrets.
    /// A `--sandbox-fail` naming a project the file does not name is refused.
    pub async fn start(
        triggers: &TriggersFile,
        speed: f64,
        failing: &[FailingJob],
    ) -> anyhow::Result<Self> {
        let speed = if speed.is_finite() && speed > 0.0 {
            speed
        } else {
            1.0
        };
        let simulator = Simulator::start_with(SimOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            auto_advance: Some(Duration::from_millis(200)),
            delivery_timeout: Duration::from_secs(10),
            log_capacity: 1000,
            ..SimOptions::default()
        })
        .await
        .context("cannot start the CircleCI simulator")?;
        let shape = SandboxShape::of(triggers);
        if let Some(unknown) = failing
            .iter()
            .find(|f| !shape.projects.contains(&f.project))
        {
            anyhow::bail!(
                "--sandbox-fail {}:{}: the triggers file names no such project (sandbox projects: {})",
                unknown.project,
                unknown.job,
                shape
                    .projects
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let token = random_secret("sandbox-token-");
        for name in &shape.tokens {
            simulator.add_token(SANDBOX_USER, name, token.expose_secret());
        }
        for slug in &shape.projects {
            let jobs: Vec<&str> = failing
                .iter()
                .filter(|f| &f.project == slug)
                .map(|f| f.job.as_str())
                .collect();
            let project = shape.project(slug, &triggers.circleci.workflow_parameter, speed, &jobs);
            if let Err(error) = simulator.try_add_project(project) {
                tracing::warn!(project = %slug, %error, "sandbox: project not simulated");
            }
        }
        let client_keys = triggers
            .client
            .iter()
            .map(|client| {
                let minted = mint_key(&client.name);
                SandboxClient {
                    name: client.name.clone(),
                    key: minted.key,
                    hash_hex: minted.hash.to_hex(),
                    example: client.endpoints.iter().find_map(|name| {
                        let endpoint = triggers.endpoint.iter().find(|e| &e.name == name)?;
                        Some((name.clone(), example_body(endpoint)?))
                    }),
                }
            })
            .collect();
        Ok(Self {
            simulator,
            shape,
            token,
            webhook_secret: random_secret("sandbox-webhook-"),
            client_keys,
            schedules: triggers.schedule.iter().map(|s| s.name.clone()).collect(),
        })
    }

    /// Delays every simulated CircleCI response by `latency`; `duplicate_webhooks` makes
    /// the simulator deliver every webhook event twice (CircleCI's redeliveries).
    pub fn set_faults(&self, latency: Duration, duplicate_webhooks: bool) {
        self.simulator.set_faults(Faults {
            latency,
            duplicate_deliveries: duplicate_webhooks,
            ..Faults::default()
        });
    }

    /// The simulator's API base URL (replaces `[circleci].api_url`).
    pub fn api_url(&self) -> String {
        self.simulator.base_url()
    }

    /// Points every simulated project's webhooks at this server.
    pub fn register_webhooks(&self, server: SocketAddr) -> anyhow::Result<()> {
        let url = format!("http://{server}{WEBHOOK_PATH}");
        for slug in &self.shape.projects {
            if self.simulator.project_id(slug).is_none() {
                continue;
            }
            self.simulator.add_webhook(
                slug,
                &url,
                self.webhook_secret.expose_secret(),
                &[WORKFLOW_COMPLETED, circleci_sim::JOB_COMPLETED],
            )?;
        }
        Ok(())
    }

    /// The secrets of this run, as `serve` would read them from the environment.
    pub fn secret_source(&self, default_token_name: &str) -> LocalSecretSource {
        let tokens: serde_json::Map<String, serde_json::Value> = self
            .shape
            .tokens
            .iter()
            .map(|name| (name.clone(), self.token.expose_secret().into()))
            .collect();
        let keys: serde_json::Map<String, serde_json::Value> = self
            .client_keys
            .iter()
            .map(|client| (client.name.clone(), serde_json::json!([client.hash_hex])))
            .collect();
        LocalSecretSource::from_vars(
            [
                (
                    env_names::CIRCLECI_TOKENS.to_owned(),
                    serde_json::Value::Object(tokens).to_string(),
                ),
                (
                    env_names::WEBHOOK_SECRETS.to_owned(),
                    serde_json::json!([self.webhook_secret.expose_secret()]).to_string(),
                ),
                (
                    env_names::CLIENT_KEYS.to_owned(),
                    serde_json::Value::Object(keys).to_string(),
                ),
            ]
            .into_iter()
            // `[[notify]]` sinks are real receivers: their URLs and keys come from the
            // environment even in the sandbox.
            .chain(std::env::vars().filter(|(name, _)| {
                name == env_names::NOTIFY_SECRETS || name == env_names::NOTIFY_SECRETS_FILE
            })),
            default_token_name,
        )
    }

    /// The banner: loud, with this run's (throwaway) credentials.
    pub fn banner(&self, listen: SocketAddr) -> String {
        let rule = "=".repeat(72);
        let mut text = format!(
            "{rule}\n  SANDBOX MODE: nothing here talks to CircleCI.\n  \
             Pipelines run in an in-process simulator at {api}; secrets below are\n  \
             generated for this run only and are worthless elsewhere.\n{rule}\n",
            api = self.api_url()
        );
        text.push_str(&format!(
            "sandbox projects: {}\n",
            self.shape
                .projects
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ));
        text.push_str(&format!(
            "sandbox CircleCI token: {}\n",
            self.token.expose_secret()
        ));
        text.push_str(&format!(
            "sandbox webhook signing secret: {}\n",
            self.webhook_secret.expose_secret()
        ));
        for client in &self.client_keys {
            let key = &client.key;
            text.push_str(&format!(
                "sandbox client key {}: {}\n",
                client.name,
                key.expose_secret()
            ));
            if let Some((endpoint, body)) = &client.example {
                text.push_str(&format!(
                    "  try: curl -X POST -H 'Authorization: Bearer {}' -H 'Content-Type: application/json' -d '{body}' http://{listen}/v1/endpoints/{endpoint}\n",
                    key.expose_secret()
                ));
            }
        }
        if !self.schedules.is_empty() {
            text.push_str(&format!(
                "run a schedule now: curl -X POST http://{listen}/sandbox/schedules/{}/run\n",
                self.schedules[0]
            ));
        }
        text.push_str(&rule);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[circleci]
workflow_parameter = "run-workflow"

[[schedule]]
name = "nightly"
cron = "0 3 * * *"
timezone = "UTC"
target = { project = "gh/acme/api", workflow = "nightly", parameters = { retries = 2 } }

[[chain]]
name = "deploy-after-build"
when = { project = ["gh/acme/api", "gh/other/*"], workflow = "ci" }
then = [{ project = "gh/acme/deploy", branch = "main", token = "deployer" }]

[[endpoint]]
name = "approve-deploy"
action = "approve"
job = "hold"
target = { project = "gh/acme/deploy", branch = "main" }

[[endpoint]]
name = "release"
target = { project = "gh/acme/web", branches = ["main", "release/*"] }
parameters = { version = { type = "string", required = true } }
"#;

    #[test]
    fn the_shape_names_every_literal_project_workflow_parameter_and_token() {
        let triggers = shared::config::parse_str(FILE, "t.toml").unwrap();
        let shape = SandboxShape::of(&triggers);
        assert_eq!(
            shape.projects.iter().collect::<Vec<_>>(),
            ["gh/acme/api", "gh/acme/deploy", "gh/acme/web"]
        );
        assert_eq!(
            shape.selected_workflows.iter().collect::<Vec<_>>(),
            ["nightly"]
        );
        assert_eq!(shape.upstream_workflows.iter().collect::<Vec<_>>(), ["ci"]);
        assert_eq!(
            shape.parameters.get("retries"),
            Some(&ParameterType::Integer)
        );
        assert_eq!(
            shape.parameters.get("version"),
            Some(&ParameterType::String)
        );
        assert!(shape.tokens.contains("deployer") && shape.tokens.contains("default"));
        assert_eq!(
            shape
                .approvals
                .get("gh/acme/deploy")
                .map(|j| j.iter().map(String::as_str).collect::<Vec<_>>()),
            Some(vec!["hold"])
        );
        let deploy = shape.project("gh/acme/deploy", "run-workflow", 1.0, &[]);
        // The approval gates the default workflow, not the one chains wait for.
        assert_eq!(deploy.workflows[1].name, "ci");
        assert_eq!(deploy.workflows[1].jobs.len(), 2);
        assert_eq!(deploy.workflows[2].name, "build");
        let jobs: Vec<&str> = deploy.workflows[2]
            .jobs
            .iter()
            .map(|j| j.name.as_str())
            .collect();
        assert_eq!(jobs, ["build", "test", "hold"]);
        let project = shape.project("gh/acme/api", "run-workflow", 1.0, &["test"]);
        let test = &project.workflows[0].jobs[1];
        assert_eq!(test.name, "test");
        assert_eq!(test.outcome_for(0), circleci_sim::JobOutcome::Failed);
        assert_eq!(test.outcome_for(1), circleci_sim::JobOutcome::Success);
        assert_eq!(
            project.workflows[0].jobs[0].outcome_for(0),
            circleci_sim::JobOutcome::Success
        );
        let names: Vec<&str> = project.workflows.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["nightly", "ci", "build"]);
        assert_eq!(project.parameters[0].name, "run-workflow");
        let release = triggers
            .endpoint
            .iter()
            .find(|e| e.name == "release")
            .unwrap();
        assert_eq!(
            example_body(release).as_deref(),
            Some(r#"{"branch":"main","parameters":{"version":"example"}}"#)
        );
        let approve = triggers
            .endpoint
            .iter()
            .find(|e| e.name == "approve-deploy")
            .unwrap();
        // The caller must select the workflow: nothing to show before a run.
        assert_eq!(example_body(approve), None);
    }

    #[test]
    fn sandbox_fail_names_a_project_and_one_of_the_sandbox_jobs() {
        let failing: FailingJob = "gh/acme/e2e:test".parse().unwrap();
        assert_eq!(
            failing,
            FailingJob {
                project: "gh/acme/e2e".into(),
                job: "test".into()
            }
        );
        assert!("gh/acme/e2e".parse::<FailingJob>().is_err());
        assert!(
            "gh/acme/e2e:deploy"
                .parse::<FailingJob>()
                .unwrap_err()
                .contains("build and test")
        );
    }
}

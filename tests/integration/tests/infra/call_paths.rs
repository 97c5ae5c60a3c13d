//! Each role against what its function really sends.
//!
//! moto_server ignores IAM, so a role that misses an action passes every other test here and
//! fails in AWS with AccessDenied. This test deploys the four functions the way their
//! `main.rs` does (`wiring::assemble` over DynamoDB, Secrets Manager and SQS on moto_server,
//! each function with only the secret ids its template environment sets), with an SDK
//! interceptor on each function's clients that records every request as the IAM grant it
//! needs (`dynamodb:<Action> on table | index/<name>`, transactions item by item,
//! `secretsmanager:GetSecretValue on <secret parameter>`, `sqs:<Action> on
//! WebhookDeliveryQueue`). Webhooks go the deployed way: `webhooks` sends each verified
//! delivery to a queue on moto; an emulated event source mapping, with `chained`'s client
//! (AWS uses the function's role for it), reads the queue's attributes, receives batches,
//! hands them to the worker (which shortens a retry's visibility) and deletes what settled. It then drives every request path
//! of each function against the CircleCI simulator: ticks and the sweep (a retryable failure,
//! an ambiguous create), every chain rule kind (pipeline, fan-in, approve selecting by
//! origin, the closed loop), every API route (a rate-limited client, listing, a trigger,
//! an approve selecting `trigger:<id>`), and the rare path each function takes when the store
//! refuses `mark_sending` (it gives the claim back).
//!
//! The role must grant exactly what was recorded: a recorded grant the role lacks would be
//! AccessDenied in AWS; a granted action no path sent is more than the function needs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use circleci_sim::{Faults, JobSpec, ParameterSpec, ProjectSpec, Simulator, When, WorkflowSpec};
use integration_tests::circleci_client::test_options;
use integration_tests::moto::unique_name;
use integration_tests::store_suite;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use shared::circleci::{ClientOptions, RateDefaults};
use shared::clock::Clock;
use shared::config::parse_str;
use shared::secrets::{CachedSecrets, SecretIds, SecretKind, SecretsManagerSource};
use shared::store::StoreOperation;
use shared::store::dynamo::create_table;
use shared::store::dynamo::permissions::LambdaFunction;
use shared::store::{DynamoStore, SharedStore, StoreSettings};
use shared::triggers::chained::queue::sqs::{SqsDeliveryQueue, handle_batch};
use shared::triggers::chained::{AcceptorSettings, Receiver, WEBHOOK_PATH, WebhookAcceptor};
use shared::triggers::http::{ApiSettings, TriggerApi, mint_key};
use shared::triggers::scheduled::Scheduler;
use shared::wiring::{ContextOptions, LambdaContext, assemble, cloud_notifications};

use super::{
    AuditedStore, IamAudit, SecretsAudit, StoreFaults, function_properties, grants_of_role, like,
    logical_id, secret_wiring,
};

const TOKEN: &str = "tok-iam-call-paths-0123456789";
const WEBHOOK_SECRET: &str = "whsec-iam-call-paths";
const API: &str = "gh/acme/api";
const WEB: &str = "gh/acme/web";
const E2E: &str = "gh/acme/e2e";
const DEPLOY: &str = "gh/acme/deploy";

/// Every feature whose requests differ: both schedule concurrency policies that read
/// history, a plain chain, a fan-in, an approve that selects by origin (and requires the
/// upstream to be ours: the closed loop), a rate-limited client and an approve endpoint.
fn triggers_file(api_url: &str) -> String {
    format!(
        r#"
[circleci]
api_url = "{api_url}"
token = "default"
workflow_parameter = "run-workflow"

[[schedule]]
name = "nightly"
cron = "* * * * *"
timezone = "Europe/Berlin"
concurrency = "forbid"
targets = [
  {{ project = "{API}", branch = "main", workflow = "nightly" }},
  {{ project = "{WEB}", branch = "main", workflow = "nightly" }},
]

[[chain]]
name = "deploy-after-api"
when = {{ project = "{API}", workflow = "nightly", branch = "main", status = ["success"] }}
[[chain.then]]
action = "pipeline"
project = "{DEPLOY}"
branch = "main"
workflow = "deploy"

[[chain]]
name = "e2e-when-both-built"
after = [{{ project = "{API}", workflow = "nightly" }}, {{ project = "{WEB}", workflow = "nightly" }}]
correlate = "origin"
window = "2h"
[[chain.then]]
action = "pipeline"
project = "{E2E}"
branch = "main"
workflow = "e2e"

[[chain]]
name = "release-gate"
when = {{ project = "{E2E}", workflow = "e2e", branch = "main", upstream = "ours", status = ["success"] }}
[[chain.then]]
action = "approve"
project = "{DEPLOY}"
job = "hold-release"
select = "origin"

[[endpoint]]
name = "deploy-staging"
target = {{ project = "{DEPLOY}", branch = "main", workflow = "deploy" }}

[[endpoint]]
name = "approve-release"
action = "approve"
job = "hold-release"
target = {{ project = "{DEPLOY}", branch = "main" }}

[[client]]
name = "release-bot"
endpoints = ["deploy-staging", "approve-release"]
rate_limit = "30/1m"

[[client]]
name = "ops"
operator = true

[[notify]]
name = "ops-hook"
kind = "webhook"
on = ["failed", "ambiguous", "rejected", "workflow_failed"]
url_secret = "ops-hook-url"
signing_key_secret = "ops-hook-key"
"#
    )
}

/// The simulator's time line for every function (webhooks are dated on it).
struct SimClock(Simulator);

impl Clock for SimClock {
    fn now(&self) -> DateTime<Utc> {
        self.0.now()
    }
}

/// One function as deployed: its own clients, audits and store faults.
struct Deployed {
    dynamo: IamAudit,
    secrets: SecretsAudit,
    /// The function's SQS requests (the event source mapping's included for `chained`: AWS
    /// makes them with the function's role).
    sqs: SecretsAudit,
    sqs_client: aws_sdk_sqs::Client,
    /// The template parameter holding each secret id.
    secret_parameters: BTreeMap<String, &'static str>,
    faults: StoreFaults,
    context: LambdaContext,
}

impl Deployed {
    /// What the function sent, as IAM grants.
    fn observed(&self) -> BTreeSet<String> {
        let mut observed: BTreeSet<String> = self
            .dynamo
            .observed
            .lock()
            .unwrap()
            .values()
            .flatten()
            .cloned()
            .collect();
        observed.extend(self.dynamo.outside.lock().unwrap().iter().cloned());
        for (target, id) in self.secrets.0.lock().unwrap().iter() {
            let action = target.strip_prefix("secretsmanager.").unwrap_or(target);
            let secret = self
                .secret_parameters
                .get(id)
                .copied()
                .unwrap_or("an unknown secret");
            observed.insert(format!("secretsmanager:{action} on {secret}"));
        }
        for (target, _) in self.sqs.0.lock().unwrap().iter() {
            let action = target.strip_prefix("AmazonSQS.").unwrap_or(target);
            observed.insert(format!("sqs:{action} on WebhookDeliveryQueue"));
        }
        observed
    }
}

struct World {
    sim: Simulator,
    aws: aws_config::SdkConfig,
    table: String,
    /// Secret ARNs by the template parameter that holds them.
    secret_ids: BTreeMap<&'static str, String>,
    bot_key: String,
    ops_key: String,
    _proxy: store_suite::serial_proxy::SerialProxy,
}

impl World {
    async fn start() -> World {
        let sim = Simulator::start().await.unwrap();
        sim.add_user("alice", TOKEN);
        let select = |name: &str| When::equals("run-workflow", name);
        let build = || JobSpec::new("build").duration(Duration::from_secs(60));
        for project in [API, WEB] {
            sim.add_project(
                ProjectSpec::new(project)
                    .parameter(ParameterSpec::string("run-workflow", ""))
                    .workflow(
                        WorkflowSpec::new("nightly")
                            .when(select("nightly"))
                            .job(build()),
                    ),
            );
        }
        sim.add_project(
            ProjectSpec::new(E2E)
                .parameter(ParameterSpec::string("run-workflow", ""))
                .workflow(WorkflowSpec::new("e2e").when(select("e2e")).job(build())),
        );
        sim.add_project(
            ProjectSpec::new(DEPLOY)
                .parameter(ParameterSpec::string("run-workflow", ""))
                .workflow(
                    WorkflowSpec::new("deploy")
                        .when(select("deploy"))
                        .job(build())
                        .job(JobSpec::approval("hold-release").requires(["build"]))
                        .job(JobSpec::new("ship").requires(["hold-release"])),
                ),
        );

        // moto applies conditional writes without a lock; the proxy serialises them.
        let (aws, proxy) = store_suite::serialized_moto().await;
        let table = unique_name("iam-call-paths");
        create_table(&aws_sdk_dynamodb::Client::new(&aws), &table)
            .await
            .unwrap();
        let bot = mint_key("release-bot");
        let ops = mint_key("ops");
        let admin = aws_sdk_secretsmanager::Client::new(&aws);
        let mut secret_ids = BTreeMap::new();
        for (kind, value) in [
            (SecretKind::CircleCiTokens, json!({ "default": TOKEN })),
            (SecretKind::WebhookSigningSecrets, json!([WEBHOOK_SECRET])),
            (
                SecretKind::ClientKeyHashes,
                json!({ "release-bot": [bot.hash.to_hex()], "ops": [ops.hash.to_hex()] }),
            ),
            // Nothing listens there: each send fails and is rescheduled, which is what the
            // sweep's requests are (a delivered one only adds its `DeleteItem`).
            (
                SecretKind::NotifySecrets,
                json!({ "ops-hook-url": "http://127.0.0.1:9/hook", "ops-hook-key": "k" }),
            ),
        ] {
            let created = admin
                .create_secret()
                .name(unique_name(&format!("iam-paths-{kind}")))
                .secret_string(value.to_string())
                .send()
                .await
                .unwrap();
            secret_ids.insert(secret_wiring(kind).0, created.arn().unwrap().to_owned());
        }
        World {
            sim,
            aws,
            table,
            secret_ids,
            bot_key: bot.key.expose_secret().to_owned(),
            ops_key: ops.key.expose_secret().to_owned(),
            _proxy: proxy,
        }
    }

    /// The function as its `main.rs` builds it, with the secret ids its template
    /// environment sets and nothing else.
    fn deploy(&self, function: LambdaFunction, options: ContextOptions) -> Deployed {
        let triggers = parse_str(&triggers_file(&self.sim.base_url()), "triggers.toml").unwrap();
        let clock: Arc<dyn Clock> = Arc::new(SimClock(self.sim.clone()));

        let dynamo = IamAudit::default();
        let client = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&self.aws)
                .interceptor(dynamo.clone())
                .build(),
        );
        let faults = StoreFaults::default();
        let store: SharedStore = Arc::new(AuditedStore(
            DynamoStore::new(client.clone(), self.table.clone(), clock.clone())
                .with_settings(StoreSettings::from_history(&triggers.history)),
            faults.clone(),
        ));

        let environment = &function_properties(function)["Environment"]["Variables"];
        let id_for = |kind: SecretKind| {
            let (_, variable) = secret_wiring(kind);
            environment
                .get(variable)
                .map(|_| self.secret_ids[secret_wiring(kind).0].clone())
        };
        let ids = SecretIds {
            circleci_tokens: id_for(SecretKind::CircleCiTokens),
            webhook_signing_secrets: id_for(SecretKind::WebhookSigningSecrets),
            client_key_hashes: id_for(SecretKind::ClientKeyHashes),
            notify_secrets: id_for(SecretKind::NotifySecrets),
        };
        let secrets = SecretsAudit::default();
        let secret_parameters = self
            .secret_ids
            .iter()
            .map(|(parameter, id)| (id.clone(), *parameter))
            .collect();
        let secrets_client = aws_sdk_secretsmanager::Client::from_conf(
            aws_sdk_secretsmanager::config::Builder::from(&self.aws)
                .interceptor(secrets.clone())
                .build(),
        );
        let source = SecretsManagerSource::new(secrets_client, ids);
        let port = Arc::new(CachedSecrets::new(source, options.secrets_ttl));
        // The function's own deadline, with the tests' quick backoff and generous pacing.
        let options = ContextOptions {
            circleci: ClientOptions {
                deadline: options.circleci.deadline,
                rate: RateDefaults {
                    burst: 200,
                    per_second: 200.0,
                },
                ..test_options()
            },
            ..options
        };
        // As `wiring::lambda_context` does: with `[[notify]]`, decisions queue notifications
        // in the table's outbox (through the same audited client) and the tick sends them.
        let port: Arc<dyn shared::secrets::Secrets> = port;
        let (store, notifications) =
            cloud_notifications(store, &triggers, client, &self.table, &port, &clock).unwrap();
        let mut context = assemble(triggers, clock, store, port, options).unwrap();
        context.notifications = notifications;
        let sqs = SecretsAudit::default();
        let sqs_client = aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(&self.aws)
                .interceptor(sqs.clone())
                .build(),
        );
        Deployed {
            dynamo,
            secrets,
            sqs,
            sqs_client,
            secret_parameters,
            faults,
            context,
        }
    }
}

/// What the SQS event source mapping does with the function's role: reads the queue's
/// attributes when created, then receives batches of up to 10, invokes the worker with
/// them, and deletes the messages its answer does not name in `batchItemFailures`.
#[derive(Clone)]
struct EventSourceMapping {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    worker: Arc<Receiver>,
    /// One poller at a time, as one mapping with concurrency 1.
    polling: Arc<tokio::sync::Mutex<()>>,
}

impl EventSourceMapping {
    async fn create(client: aws_sdk_sqs::Client, queue_url: String, worker: Arc<Receiver>) -> Self {
        client
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
            .send()
            .await
            .unwrap();
        Self {
            client,
            queue_url,
            worker,
            polling: Arc::default(),
        }
    }

    /// Polls until no message is visible.
    async fn drain(&self) {
        let _one = self.polling.lock().await;
        let queue = SqsDeliveryQueue::new(self.client.clone(), &self.queue_url);
        loop {
            let received = self
                .client
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .message_attribute_names("All")
                .send()
                .await
                .unwrap();
            let messages = received.messages();
            if messages.is_empty() {
                return;
            }
            let records: Vec<Value> = messages
                .iter()
                .map(|message| {
                    let attributes: serde_json::Map<String, Value> = message
                        .message_attributes()
                        .into_iter()
                        .flatten()
                        .map(|(name, value)| {
                            let value = json!({
                                "stringValue": value.string_value(),
                                "dataType": value.data_type(),
                            });
                            (name.clone(), value)
                        })
                        .collect();
                    json!({
                        "messageId": message.message_id(),
                        "receiptHandle": message.receipt_handle(),
                        "body": message.body(),
                        "messageAttributes": attributes,
                        "eventSource": "aws:sqs",
                    })
                })
                .collect();
            let answer = handle_batch(&self.worker, Some(&queue), json!({ "Records": records }))
                .await
                .unwrap();
            let failed: BTreeSet<&str> = answer["batchItemFailures"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|failure| failure["itemIdentifier"].as_str())
                .collect();
            for message in messages {
                if !failed.contains(message.message_id().unwrap_or_default()) {
                    self.client
                        .delete_message()
                        .queue_url(&self.queue_url)
                        .receipt_handle(message.receipt_handle().unwrap())
                        .send()
                        .await
                        .unwrap();
                }
            }
        }
    }

    async fn after_each_delivery(
        axum::extract::State(mapping): axum::extract::State<EventSourceMapping>,
        request: axum::extract::Request,
        next: axum::middleware::Next,
    ) -> axum::response::Response {
        let answer = next.run(request).await;
        mapping.drain().await;
        answer
    }
}

/// Serves `router` on a loopback port; the task ends with the test.
async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    url
}

/// The EventBridge Scheduler input of the template, at `at`.
fn tick_input(at: DateTime<Utc>) -> Value {
    json!({
        "source": "circleci-triggers.tick",
        "scheduled_time": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

/// Runs jobs and delivers their webhooks until nothing new starts (chains start pipelines,
/// whose completions are delivered in turn).
async fn settle(sim: &Simulator) {
    for _ in 0..6 {
        let before = sim.pipelines().len();
        sim.run_until_idle().await;
        if sim.pipelines().len() == before {
            return;
        }
    }
}

/// The role's grants the test can record: DynamoDB and Secrets Manager (logs, KMS and the
/// failure destination are checked against the template's own wiring in `main.rs`).
fn role_grants(function: LambdaFunction) -> BTreeSet<String> {
    let props = function_properties(function);
    let role_id = props["Role"]["Fn::GetAtt"][0]
        .as_str()
        .unwrap_or_else(|| panic!("{} has a role of its own", logical_id(function)));
    grants_of_role(role_id)
        .into_iter()
        .filter(|grant| {
            grant.starts_with("dynamodb:")
                || grant.starts_with("secretsmanager:")
                || grant.ends_with(" on WebhookDeliveryQueue")
        })
        .collect()
}

fn assert_role_matches(function: LambdaFunction, deployed: &Deployed) {
    let called: BTreeSet<StoreOperation> = deployed
        .dynamo
        .observed
        .lock()
        .unwrap()
        .keys()
        .copied()
        .collect();
    let declared: BTreeSet<StoreOperation> = function.store_operations().iter().copied().collect();
    // Declared but not reached here (AdoptAmbiguous, and PipelineRecorded / JoinState
    // outside the tick) are rare paths whose actions other paths already need; the
    // conformance-suite audit in `main.rs` checks each one's requests.
    let undeclared: Vec<_> = called.difference(&declared).collect();
    assert!(
        undeclared.is_empty(),
        "{function:?} calls store operations permissions.rs does not declare for it: \
         {undeclared:?}"
    );
    let keys = deployed.dynamo.leading_keys.lock().unwrap().clone();
    let patterns = function.leading_keys();
    let outside: Vec<_> = keys
        .iter()
        .filter(|key| !patterns.iter().any(|pattern| like(pattern, key)))
        .collect();
    let unmatched: Vec<_> = patterns
        .iter()
        .filter(|pattern| !keys.iter().any(|key| like(pattern, key)))
        .collect();
    assert!(
        outside.is_empty() && unmatched.is_empty(),
        "{function:?}'s dynamodb:LeadingKeys (permissions.rs) do not match its requests:\n  \
         keys outside every pattern (AccessDenied in AWS): {outside:#?}\n  \
         patterns no request needed: {unmatched:#?}"
    );

    let observed = deployed.observed();
    let granted = role_grants(function);
    let missing: Vec<_> = observed.difference(&granted).collect();
    let unused: Vec<_> = granted.difference(&observed).collect();
    assert!(
        missing.is_empty() && unused.is_empty(),
        "{}'s role in infra/template.yaml does not match its call paths:\n  \
         sent but not granted (AccessDenied in AWS): {missing:#?}\n  \
         granted but never sent: {unused:#?}",
        logical_id(function)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_role_grants_exactly_what_its_functions_call_paths_send() {
    let world = World::start().await;
    let sim = &world.sim;

    let scheduled = world.deploy(LambdaFunction::Scheduled, ContextOptions::default());
    let webhooks = world.deploy(LambdaFunction::Webhooks, ContextOptions::default());
    let chained = world.deploy(LambdaFunction::Chained, ContextOptions::default());
    let http = world.deploy(LambdaFunction::Http, ContextOptions::for_http());

    let scheduler = Scheduler::new(
        scheduled.context.engine.clone(),
        scheduled.context.triggers.clone(),
    )
    .sending(scheduled.context.notifications.clone());
    // The webhook path as deployed: the acceptor (the `webhooks` function's secrets and SQS
    // client) sends to a queue on moto; an event source mapping emulated with the `chained`
    // function's client receives, hands batches to the worker and deletes what it settled,
    // before each answer goes back (so the simulator's cascade sees the outcomes).
    let (_, queue_url) = integration_tests::moto::create_queue("iam-deliveries").await;
    let mapping = EventSourceMapping::create(
        chained.sqs_client.clone(),
        queue_url.clone(),
        Arc::new(shared::triggers::chained::Receiver::from_context(&chained.context).unwrap()),
    )
    .await;
    let acceptor = WebhookAcceptor::new(
        webhooks.context.secrets.clone(),
        Arc::new(SqsDeliveryQueue::new(
            webhooks.sqs_client.clone(),
            &queue_url,
        )),
        webhooks.context.clock.clone(),
    )
    .with_settings(AcceptorSettings::default());
    let router = shared::triggers::chained::function_router(Arc::new(acceptor)).layer(
        axum::middleware::from_fn_with_state(mapping, EventSourceMapping::after_each_delivery),
    );
    let webhook_url = format!("{}{WEBHOOK_PATH}", serve(router).await);
    for project in [API, WEB, E2E, DEPLOY] {
        sim.add_webhook(
            project,
            &webhook_url,
            WEBHOOK_SECRET,
            &[
                circleci_sim::WORKFLOW_COMPLETED,
                circleci_sim::JOB_COMPLETED,
            ],
        )
        .unwrap();
    }
    let api = TriggerApi::from_context(
        &http.context,
        ApiSettings {
            refresh_interval: Duration::ZERO,
            ..ApiSettings::default()
        },
    )
    .unwrap();
    let api_url = serve(shared::triggers::http::function_router(api)).await;
    let tick = |at: DateTime<Utc>| {
        let scheduler = scheduler.clone();
        async move { shared::triggers::scheduled::lambda::handle(&scheduler, tick_input(at)).await }
    };
    let ticked = |answer: Result<Value, _>| {
        let answer = answer.unwrap();
        assert_eq!(answer["outcome"], "ticked", "{answer}");
    };

    // ---- scheduled: the first tick records where the schedule starts.
    ticked(tick(sim.now()).await);
    sim.advance(Duration::from_secs(60)).await;
    // The slot this tick stands for (an operator replays it below).
    let scheduled_slot = {
        let now = sim.now();
        now - chrono::TimeDelta::seconds(i64::from(chrono::Timelike::second(&now)))
            - chrono::TimeDelta::nanoseconds(i64::from(chrono::Timelike::nanosecond(&now)))
    };
    // A slot whose creates fail (retryable: the next tick's sweep retries them)...
    sim.set_faults(Faults {
        fail_next: 2,
        fail_methods: vec!["POST".into()],
        fail_path_contains: Some("/pipeline".into()),
        ..Faults::default()
    });
    ticked(tick(sim.now()).await);
    // ...a slot with an ambiguous create (reconciled against CircleCI and the history)...
    sim.set_faults(Faults {
        create_then_502: 1,
        ..Faults::default()
    });
    sim.advance(Duration::from_secs(60)).await;
    ticked(tick(sim.now()).await);
    sim.set_faults(Faults::default());
    // ...and one whose claim the store refuses to write (nothing is claimed or sent).
    scheduled.faults.fail_next_open();
    sim.advance(Duration::from_secs(60)).await;
    // An invocation error: Lambda retries the async invocation, the next tick redoes it.
    assert!(tick(sim.now()).await.is_err());
    sim.advance(Duration::from_secs(60)).await;
    ticked(tick(sim.now()).await);
    let scheduled_pipelines = sim.pipelines().len();
    assert!(
        scheduled_pipelines >= 4,
        "the ticks fired: {scheduled_pipelines}"
    );

    // ---- chained: the nightly runs complete; deploy-after-api, the fan-in and then the
    // release gate's approval follow as the simulator delivers the webhooks.
    settle(sim).await;
    let e2e_runs = sim
        .pipelines()
        .iter()
        .filter(|pipeline| pipeline.project_slug == E2E)
        .count();
    assert!(e2e_runs >= 1, "the fan-in started e2e");

    // ---- http
    let client = reqwest::Client::new();
    let post = |endpoint: &str, body: Value| {
        client
            .post(format!("{api_url}/v1/endpoints/{endpoint}"))
            .bearer_auth(&world.bot_key)
            .json(&body)
            .send()
    };
    let answer = post("deploy-staging", json!({})).await.unwrap();
    assert_eq!(answer.status(), 202, "{:?}", answer.text().await);
    let trigger: Value = answer.json().await.unwrap();
    let trigger_id = trigger["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no trigger id in {trigger}"))
        .to_owned();
    settle(sim).await;
    let approve = post(
        "approve-release",
        json!({ "select": format!("trigger:{trigger_id}") }),
    )
    .await
    .unwrap();
    assert_eq!(approve.status(), 202, "{:?}", approve.text().await);
    for path in [
        "/v1/triggers".to_owned(),
        format!("/v1/triggers/{trigger_id}"),
    ] {
        let answer = client
            .get(format!("{api_url}{path}"))
            .bearer_auth(&world.bot_key)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{path}");
    }
    // An operator reads the status page (recent triggers, pause flags).
    let status = client
        .get(format!("{api_url}/v1/status"))
        .bearer_auth(&world.ops_key)
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 200, "{:?}", status.text().await);
    // An operator runs the schedule now, then replays a slot the tick fired.
    let fired_slot = scheduled_slot.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for body in [json!({}), json!({ "at": fired_slot })] {
        let run = client
            .post(format!("{api_url}/v1/schedules/nightly/runs"))
            .bearer_auth(&world.ops_key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(run.status().is_success(), "{body}: {:?}", run.text().await);
    }
    http.faults.fail_next_open();
    let refused = post("deploy-staging", json!({})).await.unwrap();
    assert_eq!(refused.status(), 503, "{:?}", refused.text().await);
    // A call the API refuses is recorded `rejected`: the `[[notify]]` sink wants it queued.
    let unknown = post("no-such-endpoint", json!({})).await.unwrap();
    assert_eq!(unknown.status(), 404, "{:?}", unknown.text().await);

    // ---- chained: an e2e run that is not ours cannot open the release gate (`upstream =
    // "ours"`): its delivery is recorded `rejected`, and a notification queued.
    let foreign = shared::circleci::PipelineRequest::on_branch(E2E.parse().unwrap(), "main");
    chained
        .context
        .circleci
        .trigger_pipeline("default", &foreign)
        .await
        .unwrap();
    settle(sim).await;
    // ---- chained: a delivery whose claim the store refuses to write.
    chained.faults.fail_next_open();
    sim.advance(Duration::from_secs(60)).await;
    ticked(tick(sim.now()).await);
    settle(sim).await;

    for (function, deployed) in [
        (LambdaFunction::Scheduled, &scheduled),
        (LambdaFunction::Webhooks, &webhooks),
        (LambdaFunction::Chained, &chained),
        (LambdaFunction::Http, &http),
    ] {
        assert_role_matches(function, deployed);
    }
}

//! The CircleCI client (`shared::circleci`) against the CircleCI simulator over real HTTP:
//! every operation, CircleCI's error answers, pacing and retries, ambiguous creates, and the
//! request bodies checked against CircleCI's OpenAPI document.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use circleci_sim::{
    CI_SKIP_MESSAGE, Faults, JobSpec, ParameterSpec, ProjectSpec, RateLimit, SimOptions, Simulator,
    TriggerEndpoint, UNAUTHORIZED_MESSAGE, When, WorkflowSpec,
};
use integration_tests::circleci_client::{
    TokenFile, assert_recorded_bodies_conform, client_for, operation_of, requests_per_operation,
    spec, test_options,
};
use secrecy::SecretString;
use serde_json::json;
use shared::circleci::{
    CircleCi, CircleCiClient, CircleCiError, ClientOptions, GitRef, JobKind, JobStatus, NewWebhook,
    PipelineQuery, PipelineRequest, PipelineState, RateDefaults, Rerun, RunOptions, WebhookEvent,
    WebhookUpdate, WorkflowStatus, rerun_body,
};
use shared::config::{ParameterValue, ProjectSlug, Vcs};
use uuid::Uuid;

const ALICE_TOKEN: &str = "tok-alice-0123456789";
const BOB_TOKEN: &str = "tok-bob-0123456789";
const SLUG: &str = "gh/acme/api";

struct Fixture {
    sim: Simulator,
    tokens: TokenFile,
    client: CircleCiClient,
    project_id: Uuid,
    definition_id: Uuid,
}

/// A project with a `build` workflow (one job fails on its first attempt) and a `deploy`
/// workflow gated on the `deploy` parameter with an approval job; alice may write, bob
/// may only read. The client's `default` token is alice's, `bob` is bob's.
async fn fixture_with(options: SimOptions, client_options: ClientOptions) -> Fixture {
    let sim = Simulator::start_with(options).await.unwrap();
    sim.add_user("alice", ALICE_TOKEN);
    sim.add_user("bob", BOB_TOKEN);
    let definition_id = Uuid::new_v4();
    let project_id = sim.add_project(
        ProjectSpec::new(SLUG)
            .parameter(ParameterSpec::boolean("deploy", false))
            .definition(definition_id)
            .read_only(["bob"])
            .workflow(
                WorkflowSpec::new("build")
                    .job(JobSpec::new("test"))
                    .job(JobSpec::new("flaky").fails_then_succeeds()),
            )
            .workflow(
                WorkflowSpec::new("deploy")
                    .when(When::truthy("deploy"))
                    .job(JobSpec::approval("hold"))
                    .job(JobSpec::new("ship").requires(["hold"])),
            ),
    );
    let tokens = TokenFile::new(&[("default", ALICE_TOKEN), ("bob", BOB_TOKEN)]).unwrap();
    let client = client_for(&sim, tokens.secrets(), client_options).unwrap();
    Fixture {
        sim,
        tokens,
        client,
        project_id,
        definition_id,
    }
}

async fn fixture() -> Fixture {
    fixture_with(SimOptions::default(), test_options()).await
}

fn slug() -> ProjectSlug {
    SLUG.parse().unwrap()
}

fn on_main() -> PipelineRequest {
    PipelineRequest::on_branch(slug(), "main")
}

fn hook(project_id: Uuid, url: &str) -> NewWebhook {
    NewWebhook {
        name: "circleci-triggers".into(),
        url: url.into(),
        events: vec![WebhookEvent::WorkflowCompleted, WebhookEvent::JobCompleted],
        verify_tls: true,
        signing_secret: SecretString::from("whsec-current"),
        project_id,
    }
}

#[tokio::test]
async fn every_operation_works_against_the_simulator_with_one_request_each() {
    let Fixture {
        sim,
        client,
        project_id,
        definition_id,
        tokens: _tokens,
        ..
    } = fixture().await;

    let me = client.me("default").await.unwrap();
    assert_eq!(me.login, "alice");
    assert_eq!(Some(me.id), sim.user_id("alice"));

    let project = client.get_project("default", &slug()).await.unwrap();
    assert_eq!(project.id, project_id);
    assert_eq!(project.slug, SLUG);
    assert_eq!(project.vcs_info.default_branch, "main");
    // gh and github name the same project.
    let long: ProjectSlug = "github/acme/api".parse().unwrap();
    assert_eq!(
        client.get_project("default", &long).await.unwrap().id,
        project_id
    );

    // Legacy endpoint.
    let legacy = client
        .trigger_pipeline(
            "default",
            &on_main().with_parameter("deploy", ParameterValue::Boolean(true)),
        )
        .await
        .unwrap();
    let pipeline = client.get_pipeline("default", legacy.id).await.unwrap();
    assert_eq!(pipeline.number, legacy.number);
    assert_eq!(pipeline.state, PipelineState::Created);
    assert_eq!(pipeline.branch(), Some("main"));
    assert_eq!(pipeline.trigger.actor.login, "alice");
    assert!(pipeline.errors.is_empty());
    assert_eq!(pipeline.project(), Some(slug()));

    // pipeline/run with a definition and separate config / checkout refs.
    let run = client
        .trigger_pipeline(
            "default",
            &PipelineRequest {
                git_ref: Some(GitRef::Branch("main".into())),
                run: Some(RunOptions {
                    definition_id: Some(definition_id),
                    config: Some(GitRef::Branch("ci-config".into())),
                    checkout: None,
                }),
                ..on_main()
            },
        )
        .await
        .unwrap();
    match sim.pipeline(run.id).unwrap().endpoint {
        TriggerEndpoint::Run {
            definition_id: used,
            config,
            checkout,
        } => {
            assert_eq!(used, definition_id);
            assert_eq!(
                config,
                Some(circleci_sim::GitRef::Branch("ci-config".into()))
            );
            assert_eq!(checkout, Some(circleci_sim::GitRef::Branch("main".into())));
        }
        other => panic!("expected pipeline/run, got {other:?}"),
    }

    // Workflows and jobs.
    let workflows = client
        .list_pipeline_workflows("default", legacy.id)
        .await
        .unwrap();
    let names: Vec<&str> = workflows.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["build", "deploy"]);
    let (build, deploy) = (workflows[0].id, workflows[1].id);
    sim.run_until_idle().await;
    assert_eq!(
        client.get_workflow("default", build).await.unwrap().status,
        WorkflowStatus::Failed
    );
    assert_eq!(
        client.get_workflow("default", deploy).await.unwrap().status,
        WorkflowStatus::OnHold
    );

    let jobs = client.list_workflow_jobs("default", deploy).await.unwrap();
    let hold = jobs.iter().find(|job| job.name == "hold").unwrap();
    assert_eq!(hold.kind, JobKind::Approval);
    assert_eq!(hold.status, JobStatus::OnHold);
    let approval = hold.approval_request_id.unwrap();
    client
        .approve_job("default", deploy, approval)
        .await
        .unwrap();
    sim.run_until_idle().await;
    assert_eq!(
        client.get_workflow("default", deploy).await.unwrap().status,
        WorkflowStatus::Success
    );

    // Reruns: from failed, then one named job.
    let from_failed = client
        .rerun_workflow("default", build, &Rerun::FromFailed)
        .await
        .unwrap();
    sim.run_until_idle().await;
    assert_eq!(sim.workflow(from_failed).unwrap().rerun_of, Some(build));
    assert_eq!(
        client
            .get_workflow("default", from_failed)
            .await
            .unwrap()
            .status,
        WorkflowStatus::Success
    );
    let build_jobs = client.list_workflow_jobs("default", build).await.unwrap();
    let flaky = build_jobs.iter().find(|job| job.name == "flaky").unwrap();
    let named = client
        .rerun_workflow("default", build, &Rerun::Jobs(vec![flaky.id]))
        .await
        .unwrap();
    assert_ne!(named, from_failed);
    let rerun_jobs: Vec<String> = sim
        .workflow(named)
        .unwrap()
        .jobs
        .iter()
        .map(|job| job.name.clone())
        .collect();
    assert!(rerun_jobs.contains(&"flaky".to_owned()));

    // Cancel a running workflow of a third pipeline.
    let third = client
        .trigger_pipeline("default", &on_main())
        .await
        .unwrap();
    let running = client
        .list_pipeline_workflows("default", third.id)
        .await
        .unwrap();
    assert_eq!(running.len(), 1, "deploy is gated off by default");
    client
        .cancel_workflow("default", running[0].id)
        .await
        .unwrap();
    assert_eq!(
        client
            .get_workflow("default", running[0].id)
            .await
            .unwrap()
            .status,
        WorkflowStatus::Canceled
    );

    // The project's pipelines on main, newest first.
    let listed = client
        .list_project_pipelines(
            "default",
            &slug(),
            &PipelineQuery {
                branch: Some("main".into()),
                ..PipelineQuery::default()
            },
        )
        .await
        .unwrap();
    let numbers: Vec<i64> = listed.iter().map(|p| p.number).collect();
    assert_eq!(numbers, [third.number, run.number, legacy.number]);

    // Webhooks: create, list, rotate the secret and move the URL.
    let created = client
        .create_webhook(
            "default",
            &hook(project_id, "https://hooks.example.com/circleci"),
        )
        .await
        .unwrap();
    assert_eq!(created.scope.id, project_id);
    let listed_hooks = client.list_webhooks("default", project_id).await.unwrap();
    assert_eq!(listed_hooks.len(), 1);
    assert_eq!(listed_hooks[0].id, created.id);
    assert_eq!(
        listed_hooks[0].events,
        [WebhookEvent::WorkflowCompleted, WebhookEvent::JobCompleted]
    );
    let updated = client
        .update_webhook(
            "default",
            created.id,
            &WebhookUpdate {
                url: Some("https://hooks.example.com/circleci/v2".into()),
                signing_secret: Some(SecretString::from("whsec-next")),
                ..WebhookUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.url, "https://hooks.example.com/circleci/v2");
    assert_eq!(
        client.list_webhooks("default", project_id).await.unwrap()[0].url,
        "https://hooks.example.com/circleci/v2"
    );

    // Measured: requests per operation on a healthy API (no retries, one page each).
    let requests = sim.requests();
    let counts = requests_per_operation(&requests);
    println!("requests per operation: {counts:#?}");
    let expected: BTreeMap<String, usize> = [
        ("GET /me", 1),
        // `github/acme/api` is sent in its canonical spelling.
        ("GET /project/gh/acme/api", 2),
        ("POST /project/gh/acme/api/pipeline", 2),
        ("POST /project/gh/acme/api/pipeline/run", 1),
        ("GET /pipeline/{id}", 1),
        ("GET /pipeline/{id}/workflow", 2),
        ("GET /workflow/{id}", 5),
        ("GET /workflow/{id}/job", 2),
        ("POST /workflow/{id}/approve/{id}", 1),
        ("POST /workflow/{id}/rerun", 2),
        ("POST /workflow/{id}/cancel", 1),
        ("GET /project/gh/acme/api/pipeline", 1),
        ("POST /webhook", 1),
        ("GET /webhook", 2),
        ("PUT /webhook/{id}", 1),
    ]
    .into_iter()
    .map(|(operation, count)| (operation.to_owned(), count))
    .collect();
    assert_eq!(counts, expected);
    assert!(requests.iter().all(|r| (200..300).contains(&r.status)));
    assert!(
        requests
            .iter()
            .all(|r| r.token_name.as_deref() == Some("alice"))
    );
    assert_recorded_bodies_conform(&requests);
}

#[tokio::test]
async fn lists_read_every_page_and_stop_at_created_since() {
    let Fixture {
        sim,
        client,
        tokens: _tokens,
        ..
    } = fixture_with(
        SimOptions {
            page_size: 2,
            ..SimOptions::default()
        },
        test_options(),
    )
    .await;
    let mut created = Vec::new();
    for _ in 0..5 {
        created.push(
            client
                .trigger_pipeline("default", &on_main())
                .await
                .unwrap(),
        );
        sim.advance(Duration::from_secs(60)).await;
    }
    let other_branch = PipelineRequest::on_branch(slug(), "feature/x");
    client
        .trigger_pipeline("default", &other_branch)
        .await
        .unwrap();
    sim.clear_requests();

    let main_only = PipelineQuery {
        branch: Some("main".into()),
        ..PipelineQuery::default()
    };
    let all = client
        .list_project_pipelines("default", &slug(), &main_only)
        .await
        .unwrap();
    let numbers: Vec<i64> = all.iter().map(|p| p.number).collect();
    let expected: Vec<i64> = created.iter().rev().map(|p| p.number).collect();
    assert_eq!(numbers, expected);
    assert_eq!(sim.requests().len(), 3, "5 pipelines at 2 per page");
    assert!(
        sim.requests()[0]
            .query
            .as_deref()
            .unwrap()
            .contains("branch=main")
    );
    assert!(
        sim.requests()[2]
            .query
            .as_deref()
            .unwrap()
            .contains("page-token=")
    );

    // Since the third pipeline: the second page already reaches past it, so no third page.
    sim.clear_requests();
    let recent = client
        .list_project_pipelines(
            "default",
            &slug(),
            &PipelineQuery {
                created_since: Some(created[2].created_at),
                ..main_only.clone()
            },
        )
        .await
        .unwrap();
    let numbers: Vec<i64> = recent.iter().map(|p| p.number).collect();
    assert_eq!(
        numbers,
        [created[4].number, created[3].number, created[2].number]
    );
    assert_eq!(sim.requests().len(), 2);

    // A page limit cuts a long list short instead of reading forever.
    sim.clear_requests();
    let capped = client
        .list_project_pipelines(
            "default",
            &slug(),
            &PipelineQuery {
                max_pages: Some(1),
                ..main_only
            },
        )
        .await
        .unwrap();
    assert_eq!(capped.len(), 2);
    assert_eq!(sim.requests().len(), 1);
}

#[tokio::test]
async fn workflow_lists_follow_pages() {
    let sim = Simulator::start_with(SimOptions {
        page_size: 2,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    sim.add_user("alice", ALICE_TOKEN);
    let mut project = ProjectSpec::new("bb/acme/many");
    for name in ["one", "two", "three", "four", "five"] {
        project = project.workflow(WorkflowSpec::new(name).job(JobSpec::new("job")));
    }
    sim.add_project(project);
    let tokens = TokenFile::new(&[("default", ALICE_TOKEN)]).unwrap();
    let client = client_for(&sim, tokens.secrets(), test_options()).unwrap();
    let bb: ProjectSlug = "bitbucket/acme/many".parse().unwrap();
    let pipeline = client
        .trigger_pipeline("default", &PipelineRequest::on_branch(bb, "main"))
        .await
        .unwrap();
    sim.clear_requests();
    let workflows = client
        .list_pipeline_workflows("default", pipeline.id)
        .await
        .unwrap();
    assert_eq!(workflows.len(), 5);
    assert_eq!(sim.requests().len(), 3);
}

#[tokio::test]
async fn circleci_rejections_become_typed_errors_with_circleci_messages() {
    let Fixture {
        sim,
        client,
        project_id,
        tokens: _tokens,
        ..
    } = fixture().await;

    // 403: bob may read the project but not trigger.
    let forbidden = client
        .trigger_pipeline("bob", &on_main())
        .await
        .unwrap_err();
    assert!(
        matches!(&forbidden, CircleCiError::Forbidden { message } if message == "Permission denied."),
        "{forbidden:?}"
    );
    assert!(!forbidden.is_ambiguous() && !forbidden.is_retryable());
    assert!(client.get_project("bob", &slug()).await.is_ok());

    // 404: unknown project, unknown pipeline.
    let missing: ProjectSlug = "gh/acme/nope".parse().unwrap();
    let not_found = client.get_project("default", &missing).await.unwrap_err();
    assert!(
        matches!(&not_found, CircleCiError::NotFound { message } if message == "Project not found"),
        "{not_found:?}"
    );
    let not_found = client
        .get_pipeline("default", Uuid::new_v4())
        .await
        .unwrap_err();
    assert!(
        matches!(not_found, CircleCiError::NotFound { .. }),
        "{not_found:?}"
    );
    let not_found = client
        .trigger_pipeline("default", &PipelineRequest::on_branch(missing, "main"))
        .await
        .unwrap_err();
    assert!(matches!(not_found, CircleCiError::NotFound { .. }));

    // 400: approving a job that is no longer on hold; a sixth webhook.
    let pipeline = client
        .trigger_pipeline(
            "default",
            &on_main().with_parameter("deploy", ParameterValue::Boolean(true)),
        )
        .await
        .unwrap();
    let deploy = client
        .list_pipeline_workflows("default", pipeline.id)
        .await
        .unwrap()
        .into_iter()
        .find(|w| w.name == "deploy")
        .unwrap();
    let hold = client
        .list_workflow_jobs("default", deploy.id)
        .await
        .unwrap()
        .into_iter()
        .find(|j| j.name == "hold")
        .unwrap();
    let approval = hold.approval_request_id.unwrap();
    client
        .approve_job("default", deploy.id, approval)
        .await
        .unwrap();
    let twice = client
        .approve_job("default", deploy.id, approval)
        .await
        .unwrap_err();
    assert!(
        matches!(&twice, CircleCiError::BadRequest { status: 400, message } if message == "Job is not on hold; it cannot be approved."),
        "{twice:?}"
    );
    assert!(!twice.is_ambiguous());

    for index in 0..5 {
        let url = format!("https://hooks.example.com/{index}");
        client
            .create_webhook("default", &hook(project_id, &url))
            .await
            .unwrap();
    }
    let sixth = client
        .create_webhook("default", &hook(project_id, "https://hooks.example.com/6"))
        .await
        .unwrap_err();
    assert!(
        matches!(&sixth, CircleCiError::BadRequest { status: 400, message } if message.contains("at most 5 webhooks")),
        "{sixth:?}"
    );

    // 401: a token CircleCI does not know.
    let stranger = TokenFile::new(&[("default", "tok-unknown-0123456789")]).unwrap();
    let stranger = client_for(&sim, stranger.secrets(), test_options()).unwrap();
    let unauthorized = stranger.me("default").await.unwrap_err();
    assert!(
        matches!(&unauthorized, CircleCiError::Unauthorized { token, message } if token == "default" && message == UNAUTHORIZED_MESSAGE),
        "{unauthorized:?}"
    );
    let shown = format!("{unauthorized} {unauthorized:?}");
    assert!(!shown.contains("tok-unknown"), "the token leaked: {shown}");

    // Not one of these was retried: each rejection cost exactly one request.
    let rejected: Vec<u16> = sim
        .requests()
        .iter()
        .map(|r| r.status)
        .filter(|status| *status >= 400)
        .collect();
    assert_eq!(rejected, [403, 404, 404, 404, 400, 400, 401]);
}

#[tokio::test]
async fn a_401_rereads_the_token_once_and_resends_only_when_it_changed() {
    let sim = Simulator::start().await.unwrap();
    sim.add_user("alice", ALICE_TOKEN);
    let tokens = TokenFile::new(&[("default", "tok-revoked-0123456789")]).unwrap();
    let client = client_for(&sim, tokens.secrets(), test_options()).unwrap();

    // Re-reading gives the same (revoked) token: one request, no resend.
    let error = client.me("default").await.unwrap_err();
    assert!(
        matches!(error, CircleCiError::Unauthorized { .. }),
        "{error:?}"
    );
    assert_eq!(sim.requests().len(), 1);

    // The secret is rotated; the client still holds the old one in its cache.
    tokens.write(&[("default", ALICE_TOKEN)]).unwrap();
    let me = client.me("default").await.unwrap();
    assert_eq!(me.login, "alice");
    let requests = sim.requests();
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [401, 401, 200]);
    assert_eq!(requests[2].token_name.as_deref(), Some("alice"));

    // The re-read token stays cached: the next call goes straight through.
    client.me("default").await.unwrap();
    assert_eq!(sim.requests().len(), 4);

    // A token name the secret does not have is a token error, not a request.
    let unknown = client.me("nobody").await.unwrap_err();
    assert!(
        matches!(unknown, CircleCiError::Token { .. }),
        "{unknown:?}"
    );
    assert_eq!(sim.requests().len(), 4);
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_and_the_create_resent() {
    let Fixture {
        sim,
        tokens,
        client,
        ..
    } = fixture().await;
    sim.set_faults(Faults::rate_limited(1.0, 1));
    // Another process (its own pacer) uses the same token first.
    let other = client_for(&sim, tokens.secrets(), test_options()).unwrap();
    other.trigger_pipeline("default", &on_main()).await.unwrap();

    let created = client
        .trigger_pipeline("default", &on_main())
        .await
        .unwrap();
    let statuses: Vec<u16> = sim.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [201, 429, 201]);
    assert_eq!(sim.counters().rate_limited, 1);
    // The 429 had no effect and the resend created exactly one pipeline.
    let pipelines = sim.pipelines();
    assert_eq!(pipelines.len(), 2);
    assert_eq!(pipelines[1].id, created.id);
}

#[tokio::test]
async fn a_429_whose_retry_after_passes_the_deadline_is_returned_without_waiting() {
    let Fixture { sim, tokens, .. } = fixture().await;
    // One request every 20 s: the 429 asks for a 20 s wait.
    sim.set_faults(Faults::rate_limited(0.05, 1));
    let other = client_for(&sim, tokens.secrets(), test_options()).unwrap();
    other.me("default").await.unwrap();

    let hurried = client_for(
        &sim,
        tokens.secrets(),
        ClientOptions {
            deadline: Duration::from_secs(3),
            ..test_options()
        },
    )
    .unwrap();
    let error = hurried
        .trigger_pipeline("default", &on_main())
        .await
        .unwrap_err();
    match error {
        CircleCiError::RateLimited { retry_after } => {
            assert_eq!(retry_after, Some(Duration::from_secs(20)));
        }
        other => panic!("expected rate limited, got {other:?}"),
    }
    assert_eq!(sim.requests().len(), 2, "not resent within the deadline");
    assert!(sim.pipelines().is_empty());

    // While CircleCI holds the token, further calls do not even go out.
    let again = hurried.me("default").await.unwrap_err();
    assert!(
        matches!(again, CircleCiError::RateLimited { .. }),
        "{again:?}"
    );
    assert!(again.is_retryable());
    assert_eq!(sim.requests().len(), 2);
}

#[tokio::test]
async fn a_429_without_retry_after_backs_off_until_it_passes() {
    let Fixture {
        sim,
        tokens,
        client,
        ..
    } = fixture().await;
    sim.set_faults(Faults {
        retry_after_header: false,
        ..Faults::rate_limited(4.0, 1)
    });
    let other = client_for(&sim, tokens.secrets(), test_options()).unwrap();
    other.me("default").await.unwrap();

    let created = client
        .trigger_pipeline("default", &on_main())
        .await
        .unwrap();
    let requests = sim.requests();
    assert!(sim.counters().rate_limited >= 1);
    assert!(
        requests
            .iter()
            .filter(|r| r.status == 429)
            .all(|r| !r.headers.iter().any(|(name, _)| name == "retry-after")),
        "the simulator sent no Retry-After"
    );
    assert_eq!(requests.last().unwrap().status, 201);
    assert_eq!(sim.pipelines().len(), 1);
    assert_eq!(sim.pipelines()[0].id, created.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_creates_is_paced_to_the_limit_without_a_429_storm() {
    const BURST: usize = 100;
    let Fixture {
        sim,
        client,
        tokens: _tokens,
        ..
    } = fixture().await;
    // CircleCI-like limit for one token: 10 at once, 40 per second sustained.
    sim.set_faults(Faults {
        rate_limit: Some(RateLimit {
            per_second: 40.0,
            burst: 10,
        }),
        ..Faults::default()
    });
    let started = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..BURST {
        let client = client.clone();
        tasks.spawn(async move { client.trigger_pipeline("default", &on_main()).await });
    }
    let mut created = 0;
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
        created += 1;
    }
    let elapsed = started.elapsed();
    let counters = sim.counters();
    println!(
        "burst of {BURST} creates at 40/s (burst 10), pacing on: {} requests, {} answered 429, {:.2} s, pacing now {:?}",
        counters.requests,
        counters.rate_limited,
        elapsed.as_secs_f64(),
        client.pacing("default"),
    );
    assert_eq!(created, BURST);
    assert_eq!(
        sim.pipelines().len(),
        BURST,
        "every create happened exactly once"
    );
    assert!(
        counters.rate_limited <= 3,
        "{} of {} requests bounced off the limit",
        counters.rate_limited,
        counters.requests
    );
}

#[tokio::test]
async fn without_pacing_the_same_burst_bounces_off_the_limit() {
    // The counterpart of the paced burst: a client that believes in a huge budget sends
    // everything at once, and the 429s (then Retry-After) do the pacing.
    const BURST: usize = 30;
    let Fixture { sim, tokens, .. } = fixture().await;
    sim.set_faults(Faults {
        rate_limit: Some(RateLimit {
            per_second: 40.0,
            burst: 10,
        }),
        ..Faults::default()
    });
    let unpaced = client_for(
        &sim,
        tokens.secrets(),
        ClientOptions {
            rate: RateDefaults {
                burst: 1000,
                per_second: 1000.0,
            },
            max_attempts: 20,
            ..test_options()
        },
    )
    .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..BURST {
        let client = unpaced.clone();
        tasks.spawn(async move { client.trigger_pipeline("default", &on_main()).await });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }
    let counters = sim.counters();
    println!(
        "burst of {BURST} creates with a 1000/s client budget: {} requests, {} answered 429",
        counters.requests, counters.rate_limited
    );
    assert_eq!(sim.pipelines().len(), BURST);
    assert!(counters.rate_limited >= 10, "{counters:?}");
}

#[tokio::test]
async fn a_5xx_on_a_read_is_retried_and_a_lasting_one_is_reported() {
    let Fixture {
        sim,
        client,
        tokens: _tokens,
        ..
    } = fixture().await;
    sim.set_faults(Faults {
        fail_methods: vec!["GET".into()],
        ..Faults::fail_next(2, 503)
    });
    let me = client.me("default").await.unwrap();
    assert_eq!(me.login, "alice");
    let statuses: Vec<u16> = sim.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 503, 200]);

    sim.clear_requests();
    sim.set_faults(Faults {
        fail_methods: vec!["GET".into()],
        ..Faults::fail_next(100, 502)
    });
    let error = client.me("default").await.unwrap_err();
    assert!(
        matches!(&error, CircleCiError::Server { status: 502, .. }),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert_eq!(
        sim.requests().len(),
        usize::try_from(test_options().max_attempts).unwrap()
    );
}

#[tokio::test]
async fn a_create_answered_502_after_it_happened_is_ambiguous_and_not_resent() {
    let Fixture {
        sim,
        client,
        tokens: _tokens,
        ..
    } = fixture().await;
    sim.set_faults(Faults {
        create_then_502: 1,
        ..Faults::default()
    });
    let error = client
        .trigger_pipeline("default", &on_main())
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            CircleCiError::Ambiguous {
                status: Some(502),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.is_ambiguous() && !error.is_retryable());
    assert_eq!(sim.requests().len(), 1, "never resent");
    assert_eq!(sim.pipelines().len(), 1, "it did happen");

    // A 5xx before any effect looks the same from outside: still ambiguous, still not resent.
    sim.clear_requests();
    sim.set_faults(Faults {
        fail_methods: vec!["POST".into()],
        ..Faults::fail_next(1, 503)
    });
    let error = client
        .trigger_pipeline("default", &on_main())
        .await
        .unwrap_err();
    assert!(error.is_ambiguous(), "{error:?}");
    assert_eq!(sim.requests().len(), 1);
    assert_eq!(sim.pipelines().len(), 1, "this one did not happen");
}

#[tokio::test]
async fn a_create_without_an_answer_in_time_is_ambiguous_and_a_read_is_a_timeout() {
    let Fixture { sim, tokens, .. } = fixture().await;
    sim.set_faults(Faults {
        latency: Duration::from_secs(3),
        ..Faults::default()
    });
    let impatient = client_for(
        &sim,
        tokens.secrets(),
        ClientOptions {
            request_timeout: Duration::from_millis(200),
            deadline: Duration::from_millis(700),
            ..test_options()
        },
    )
    .unwrap();
    let error = impatient
        .trigger_pipeline("default", &on_main())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, CircleCiError::Ambiguous { status: None, .. }),
        "{error:?}"
    );

    let error = impatient.me("default").await.unwrap_err();
    assert!(matches!(error, CircleCiError::Timeout { .. }), "{error:?}");
    assert!(error.is_retryable());
}

#[tokio::test]
async fn a_refused_connection_is_never_sent_so_even_a_create_is_retried() {
    // A port nobody listens on: bind, read the port, close.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let tokens = TokenFile::new(&[("default", ALICE_TOKEN)]).unwrap();
    let client = CircleCiClient::new(
        &format!("http://127.0.0.1:{port}/api/v2"),
        tokens.secrets(),
        ClientOptions {
            max_attempts: 3,
            ..test_options()
        },
    )
    .unwrap();
    let error = client
        .trigger_pipeline("default", &on_main())
        .await
        .unwrap_err();
    assert!(
        matches!(error, CircleCiError::Transport { .. }),
        "{error:?}"
    );
    assert!(!error.is_ambiguous(), "nothing reached a server");
    assert!(error.is_retryable());
}

#[tokio::test]
async fn a_ci_skip_answer_is_not_triggered() {
    let Fixture {
        sim,
        client,
        definition_id,
        tokens: _tokens,
        ..
    } = fixture().await;
    sim.set_faults(Faults {
        ci_skip_next: 1,
        ..Faults::default()
    });
    let run = on_main().with_run(RunOptions {
        definition_id: Some(definition_id),
        ..RunOptions::default()
    });
    let error = client.trigger_pipeline("default", &run).await.unwrap_err();
    assert!(
        matches!(&error, CircleCiError::NotTriggered { message } if message == CI_SKIP_MESSAGE),
        "{error:?}"
    );
    assert!(!error.is_retryable() && !error.is_ambiguous());
    assert!(sim.pipelines().is_empty());
    assert_eq!(sim.requests().len(), 1);
}

#[tokio::test]
async fn an_undeclared_parameter_creates_an_errored_pipeline_visible_when_read_back() {
    let Fixture {
        sim,
        client,
        tokens: _tokens,
        ..
    } = fixture().await;
    let created = client
        .trigger_pipeline(
            "default",
            &on_main().with_parameter("not_declared", ParameterValue::String("x".into())),
        )
        .await
        .unwrap();
    let pipeline = client.get_pipeline("default", created.id).await.unwrap();
    assert_eq!(pipeline.state, PipelineState::Errored);
    assert!(
        pipeline
            .errors
            .iter()
            .any(|e| e.kind == "config" && e.message.contains("not_declared")),
        "{:?}",
        pipeline.errors
    );
    assert!(
        client
            .list_pipeline_workflows("default", created.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(sim.pipelines().len(), 1);
}

#[tokio::test]
async fn invalid_requests_are_refused_before_anything_is_sent() {
    let Fixture {
        sim,
        client,
        project_id,
        tokens: _tokens,
        ..
    } = fixture().await;
    let mut too_many = on_main();
    for index in 0..=100 {
        too_many
            .parameters
            .insert(format!("p{index}"), ParameterValue::Integer(index));
    }
    let opaque: ProjectSlug = "circleci/43G3lM5RtfFE7v5sa4nWAU/44n9wujWcTnVZ2b5S8Fnat"
        .parse()
        .unwrap();
    let requests = [
        (
            "a hand-built slug with a path in it",
            PipelineRequest::on_branch(
                ProjectSlug {
                    vcs: Vcs::GitHub,
                    org: "acme/../../admin".into(),
                    repo: "api".into(),
                },
                "main",
            ),
        ),
        ("101 parameters", too_many),
        (
            "a 129-character parameter name",
            on_main().with_parameter("k".repeat(129), ParameterValue::Boolean(true)),
        ),
        (
            "a 513-character value",
            on_main().with_parameter("v", ParameterValue::String("x".repeat(513))),
        ),
        (
            "a branch that is not a git ref",
            PipelineRequest::on_branch(slug(), "../../etc"),
        ),
        (
            "the legacy endpoint for a GitHub App project",
            PipelineRequest::on_branch(opaque, "main"),
        ),
    ];
    for (what, request) in requests {
        let error = client
            .trigger_pipeline("default", &request)
            .await
            .unwrap_err();
        assert!(
            matches!(error, CircleCiError::InvalidRequest { .. }),
            "{what}: {error:?}"
        );
    }
    let webhook = client
        .create_webhook(
            "default",
            &hook(project_id, "http://hooks.example.com/plain"),
        )
        .await
        .unwrap_err();
    assert!(matches!(webhook, CircleCiError::InvalidRequest { .. }));
    let nothing = client
        .update_webhook("default", Uuid::new_v4(), &WebhookUpdate::default())
        .await
        .unwrap_err();
    assert!(matches!(nothing, CircleCiError::InvalidRequest { .. }));
    let rerun = client
        .rerun_workflow("default", Uuid::new_v4(), &Rerun::Jobs(Vec::new()))
        .await
        .unwrap_err();
    assert!(matches!(rerun, CircleCiError::InvalidRequest { .. }));
    assert!(sim.requests().is_empty(), "{:?}", sim.requests());

    // At the limits exactly, the same request goes out and is accepted.
    let mut hundred = on_main();
    for index in 0..100 {
        hundred
            .parameters
            .insert(format!("p{index}"), ParameterValue::Integer(index));
    }
    client.trigger_pipeline("default", &hundred).await.unwrap();
    assert_eq!(sim.requests().len(), 1);
}

#[tokio::test]
async fn a_deadline_already_passed_sends_nothing() {
    let Fixture {
        sim,
        client,
        tokens: _tokens,
        ..
    } = fixture().await;
    let late = client.with_deadline(tokio::time::Instant::now());
    let error = late
        .trigger_pipeline("default", &on_main())
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            CircleCiError::Timeout { .. } | CircleCiError::RateLimited { .. }
        ),
        "{error:?}"
    );
    assert!(!error.is_ambiguous());
    assert!(sim.requests().is_empty());
}

#[tokio::test]
async fn named_tokens_act_as_their_own_users() {
    let Fixture {
        sim,
        client,
        tokens: _tokens,
        ..
    } = fixture().await;
    assert_eq!(client.me("bob").await.unwrap().login, "bob");
    let requests = sim.requests();
    assert_eq!(requests[0].token_name.as_deref(), Some("bob"));
    assert_eq!(operation_of(&requests[0]), "GET /me");
}

/// Client half of the contract: every body the client can build validates against the
/// request schemas of CircleCI's OpenAPI document (`x-nullable` read as nullable).
#[test]
fn request_bodies_conform_to_the_circleci_spec() {
    let spec = spec();
    let definition_id = Some(Uuid::from_u128(0x2338_d0ae_5541_4bbf_88a2_55e9_f728_1f80));
    let legacy_variants = [
        on_main(),
        PipelineRequest {
            git_ref: Some(GitRef::Tag("v1.2.3".into())),
            ..on_main()
        },
        PipelineRequest {
            git_ref: None,
            ..on_main()
        },
        on_main()
            .with_parameter("deploy", ParameterValue::Boolean(true))
            .with_parameter("shards", ParameterValue::Integer(-4))
            .with_parameter("env", ParameterValue::String("prod".into())),
    ];
    for request in &legacy_variants {
        let body = request.body();
        let violations = spec
            .validate_request("POST", "/project/gh/acme/api/pipeline", &body)
            .unwrap();
        assert!(violations.is_empty(), "{body}: {violations:?}");
        let violations = spec.validate("TriggerPipelineParameters", &body).unwrap();
        assert!(violations.is_empty(), "{body}: {violations:?}");
    }
    let run_variants = [
        RunOptions::default(),
        RunOptions {
            definition_id,
            ..RunOptions::default()
        },
        RunOptions {
            definition_id,
            config: Some(GitRef::Branch("main".into())),
            checkout: Some(GitRef::Tag("v2".into())),
        },
    ];
    for run in run_variants {
        for base in &legacy_variants {
            let body = base.clone().with_run(run.clone()).body();
            let violations = spec.validate("pipelineRequest", &body).unwrap();
            assert!(violations.is_empty(), "{body}: {violations:?}");
        }
    }
    for rerun in [
        Rerun::FromFailed,
        Rerun::Jobs(vec![Uuid::new_v4(), Uuid::new_v4()]),
    ] {
        let body = rerun_body(&rerun).unwrap();
        let violations = spec
            .validate_request(
                "POST",
                &format!("/workflow/{}/rerun", Uuid::new_v4()),
                &body,
            )
            .unwrap();
        assert!(violations.is_empty(), "{body}: {violations:?}");
    }
    let body = hook(Uuid::new_v4(), "https://hooks.example.com/x").body();
    let violations = spec.validate_request("POST", "/webhook", &body).unwrap();
    assert!(violations.is_empty(), "{violations:?}");
    let update = WebhookUpdate {
        name: Some("renamed".into()),
        url: Some("https://hooks.example.com/y".into()),
        events: Some(vec![WebhookEvent::JobCompleted]),
        verify_tls: Some(false),
        signing_secret: Some(SecretString::from("next")),
    };
    let violations = spec
        .validate_request(
            "PUT",
            &format!("/webhook/{}", Uuid::new_v4()),
            &update.body(),
        )
        .unwrap();
    assert!(violations.is_empty(), "{violations:?}");

    // The check can fail: the legacy body's `branch` is not a pipeline/run field.
    let wrong = json!({"branch": "main", "definition_id": "not-a-uuid"});
    assert!(!spec.validate("pipelineRequest", &wrong).unwrap().is_empty());
}

#[test]
fn the_client_refuses_a_base_url_that_would_send_the_token_in_clear() {
    let tokens = TokenFile::new(&[("default", ALICE_TOKEN)]).unwrap();
    for base in [
        "http://circleci.example.com/api/v2",
        "ftp://x/api/v2",
        "not a url",
    ] {
        let error =
            CircleCiClient::new(base, tokens.secrets(), ClientOptions::default()).unwrap_err();
        assert!(
            matches!(error, CircleCiError::Configuration { .. }),
            "{base}: {error:?}"
        );
    }
    assert!(
        CircleCiClient::new(
            "https://circleci.com/api/v2/",
            tokens.secrets(),
            ClientOptions::default()
        )
        .is_ok()
    );
    let _: Arc<dyn CircleCi> = Arc::new(
        CircleCiClient::new(
            "http://127.0.0.1:1/api/v2",
            tokens.secrets(),
            ClientOptions::default(),
        )
        .unwrap(),
    );
}

//! `setup-webhooks` (`shared::operator::setup_webhooks`) against the simulator over HTTP: the first
//! run creates our webhook on every project the file names, the second changes nothing,
//! a rotated secret updates them, CircleCI's limit of 5 is reported clearly, and a dry run
//! sends nothing. Finally the registered webhook delivers to the receiver and is accepted.
#![allow(clippy::unwrap_used)]

mod chained_support;

use chained_support::{ALICE_TOKEN, Harness, OLD_SECRET, SECRET};
use circleci_sim::{JobSpec, ProjectSpec, Simulator, WorkflowSpec};
use secrecy::SecretString;
use shared::circleci::WebhookEvent;
use shared::operator::setup_webhooks::{
    Change, SetupRequest, apply, describe, plan, webhook_name, webhook_projects,
};

const RULES: &str = r#"
[[schedule]]
name = "nightly"
cron = "0 2 * * *"
timezone = "Europe/Berlin"
target = { project = "gh/acme/nightly", branch = "main" }

[[chain]]
name = "deploy-after-build"
when = { project = "gh/acme/api", workflow = "build", branch = "main" }
[[chain.then]]
action = "pipeline"
project = "gh/acme/deploy"
branch = "main"

[[chain]]
name = "notify-on-lint"
when = { project = "gh/acme/web", job = "lint", status = ["failed"] }
[[chain.then]]
action = "pipeline"
project = "gh/acme/deploy"
branch = "main"

[[chain]]
name = "any-service"
when = { project = "gh/acme/svc-*", workflow = "build" }
[[chain.then]]
action = "pipeline"
project = "gh/acme/deploy"
branch = "main"
"#;

const PROJECTS: [&str; 4] = [
    "gh/acme/api",
    "gh/acme/deploy",
    "gh/acme/nightly",
    "gh/acme/web",
];

async fn simulator() -> Simulator {
    let sim = Simulator::start().await.unwrap();
    sim.add_user("alice", ALICE_TOKEN);
    for project in PROJECTS {
        sim.add_project(
            ProjectSpec::new(project)
                .workflow(WorkflowSpec::new("build").job(JobSpec::new("compile"))),
        );
    }
    sim
}

fn request(harness: &Harness, secret: &str) -> SetupRequest {
    SetupRequest {
        url: harness.url.clone(),
        token: "default".into(),
        secret: SecretString::from(secret.to_owned()),
        verify_tls: true,
    }
}

fn writes(sim: &Simulator) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.method == "POST" || r.method == "PUT" || r.method == "DELETE")
        .count()
}

#[tokio::test]
async fn projects_come_from_rules_and_targets_with_the_events_they_need() {
    let sim = simulator().await;
    let harness = Harness::start(&sim, RULES).await;
    let projects = webhook_projects(&harness.triggers);
    let names: Vec<&str> = projects.projects.keys().map(String::as_str).collect();
    assert_eq!(names, PROJECTS);
    assert_eq!(
        projects.projects["gh/acme/api"],
        vec![WebhookEvent::WorkflowCompleted]
    );
    assert_eq!(
        projects.projects["gh/acme/web"],
        vec![WebhookEvent::JobCompleted]
    );
    assert_eq!(
        projects.projects["gh/acme/nightly"],
        vec![WebhookEvent::WorkflowCompleted],
        "closed loop"
    );
    assert_eq!(projects.patterns, vec!["gh/acme/svc-*".to_owned()]);
}

#[tokio::test]
async fn create_then_nothing_then_update_when_the_secret_rotates() {
    let sim = simulator().await;
    let harness = Harness::start(&sim, RULES).await;
    let projects = webhook_projects(&harness.triggers);
    let circleci = harness.circleci.as_ref();

    // Dry run: reads only.
    let first = request(&harness, OLD_SECRET);
    sim.clear_requests();
    let planned = plan(circleci, &first, &projects).await;
    assert_eq!(writes(&sim), 0, "planning sends nothing");
    assert!(
        planned
            .iter()
            .all(|p| matches!(p.change, Change::Create { .. })),
        "{planned:?}"
    );
    assert!(describe(&planned[0]).contains("create `circleci-triggers v"));
    for project in PROJECTS {
        assert!(sim.webhooks(project).is_empty());
    }

    // First run creates one webhook per project, signed with the secret, named after it.
    let applied = apply(circleci, &first, &planned).await;
    assert!(
        applied
            .iter()
            .all(|a| a.result.as_ref().is_ok_and(|r| r.starts_with("created"))),
        "{applied:?}"
    );
    let old_name = webhook_name(&first.secret);
    for project in PROJECTS {
        let hooks = sim.webhooks(project);
        assert_eq!(hooks.len(), 1, "{project}");
        assert_eq!(hooks[0].url, harness.url);
        assert_eq!(hooks[0].name, old_name);
        assert_eq!(hooks[0].signing_secret, OLD_SECRET);
    }
    assert_eq!(
        sim.webhooks("gh/acme/web")[0].events,
        vec!["job-completed".to_owned()]
    );

    // Second run: nothing to do, nothing sent.
    sim.clear_requests();
    let again = plan(circleci, &first, &projects).await;
    assert!(
        again
            .iter()
            .all(|p| matches!(p.change, Change::Unchanged { .. })),
        "{again:?}"
    );
    apply(circleci, &first, &again).await;
    assert_eq!(writes(&sim), 0);

    // Rotation: the current secret changed; every webhook is updated in place.
    let rotated = request(&harness, SECRET);
    let planned = plan(circleci, &rotated, &projects).await;
    for p in &planned {
        match &p.change {
            Change::Update { differences, .. } => {
                assert_eq!(differences, &vec!["name/secret".to_owned()])
            }
            other => panic!("{}: {other:?}", p.project),
        }
    }
    sim.clear_requests();
    let applied = apply(circleci, &rotated, &planned).await;
    assert!(applied.iter().all(|a| a.result.is_ok()), "{applied:?}");
    assert_eq!(writes(&sim), PROJECTS.len(), "one update each, no creates");
    for project in PROJECTS {
        let hooks = sim.webhooks(project);
        assert_eq!(hooks.len(), 1);
        assert_eq!(hooks[0].signing_secret, SECRET);
        assert_eq!(hooks[0].name, webhook_name(&rotated.secret));
        assert_ne!(hooks[0].name, old_name);
    }
}

#[tokio::test]
async fn changed_events_update_the_existing_webhook() {
    let sim = simulator().await;
    let harness = Harness::start(&sim, RULES).await;
    let setup = request(&harness, SECRET);
    // A webhook with our URL, registered by hand for the wrong events.
    sim.add_webhook("gh/acme/api", &harness.url, SECRET, &["job-completed"])
        .unwrap();
    let projects = webhook_projects(&harness.triggers);
    let planned = plan(harness.circleci.as_ref(), &setup, &projects).await;
    let api = planned.iter().find(|p| p.project == "gh/acme/api").unwrap();
    match &api.change {
        Change::Update { differences, .. } => {
            assert!(differences.contains(&"events".to_owned()));
            assert!(
                differences.contains(&"name/secret".to_owned()),
                "its name says nothing about its secret"
            );
        }
        other => panic!("{other:?}"),
    }
    apply(harness.circleci.as_ref(), &setup, &planned).await;
    let hooks = sim.webhooks("gh/acme/api");
    assert_eq!(hooks.len(), 1, "updated, not duplicated");
    assert_eq!(hooks[0].events, vec!["workflow-completed".to_owned()]);
}

#[tokio::test]
async fn a_project_at_circlecis_limit_of_five_is_reported_and_left_alone() {
    let sim = simulator().await;
    let harness = Harness::start(&sim, RULES).await;
    for n in 0..5 {
        sim.add_webhook(
            "gh/acme/api",
            &format!("https://hooks.example.com/{n}"),
            "x",
            &["workflow-completed"],
        )
        .unwrap();
    }
    let setup = request(&harness, SECRET);
    let projects = webhook_projects(&harness.triggers);
    let planned = plan(harness.circleci.as_ref(), &setup, &projects).await;
    let api = planned.iter().find(|p| p.project == "gh/acme/api").unwrap();
    assert!(api.is_blocked());
    let text = describe(api);
    assert!(
        text.contains("already has 5 webhooks, CircleCI's limit is 5"),
        "{text}"
    );
    let applied = apply(harness.circleci.as_ref(), &setup, &planned).await;
    let api_result = applied.iter().find(|a| a.project == "gh/acme/api").unwrap();
    assert!(api_result.result.is_err());
    assert_eq!(sim.webhooks("gh/acme/api").len(), 5, "untouched");
    assert_eq!(
        applied.iter().filter(|a| a.result.is_ok()).count(),
        PROJECTS.len() - 1,
        "the other projects are set up"
    );
}

#[tokio::test]
async fn an_unknown_project_is_reported_not_fatal() {
    let sim = Simulator::start().await.unwrap();
    sim.add_user("alice", ALICE_TOKEN);
    sim.add_project(
        ProjectSpec::new("gh/acme/api").workflow(WorkflowSpec::new("build").job(JobSpec::new("c"))),
    );
    let harness = Harness::start(&sim, RULES).await;
    let planned = plan(
        harness.circleci.as_ref(),
        &request(&harness, SECRET),
        &webhook_projects(&harness.triggers),
    )
    .await;
    let deploy = planned
        .iter()
        .find(|p| p.project == "gh/acme/deploy")
        .unwrap();
    assert!(
        describe(deploy).contains("cannot read the project"),
        "{}",
        describe(deploy)
    );
    let api = planned.iter().find(|p| p.project == "gh/acme/api").unwrap();
    assert!(matches!(api.change, Change::Create { .. }));
}

#[tokio::test]
async fn the_registered_webhook_delivers_to_the_receiver() {
    let sim = simulator().await;
    let harness = Harness::start(&sim, RULES).await;
    let setup = request(&harness, SECRET);
    let projects = webhook_projects(&harness.triggers);
    let planned = plan(harness.circleci.as_ref(), &setup, &projects).await;
    apply(harness.circleci.as_ref(), &setup, &planned).await;
    let request =
        shared::circleci::PipelineRequest::on_branch("gh/acme/api".parse().unwrap(), "main");
    harness
        .circleci
        .trigger_pipeline("default", &request)
        .await
        .unwrap();
    sim.run_until_idle().await;
    let deliveries = sim.deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(
        deliveries[0].status,
        Some(200),
        "signed with the secret the receiver holds"
    );
    let records = harness.rule_records("deploy-after-build").await;
    assert_eq!(records.len(), 1);
}

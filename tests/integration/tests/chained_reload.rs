//! Rules change between a delivery and its redelivery (a redeploy, a `serve` reload): an
//! action is identified by what it does, not by its position in `then`, so inserting an
//! action neither repeats one that was performed nor skips the new one.
#![allow(clippy::unwrap_used)]

mod chained_support;

use chained_support::{ALICE_TOKEN, Harness, WorkflowEvent};
use circleci_sim::{JobSpec, ProjectSpec, Simulator, WorkflowSpec};

const API: &str = "gh/acme/api";
const DEPLOY: &str = "gh/acme/deploy";
const E2E: &str = "gh/acme/e2e";

const BEFORE: &str = r#"
[[chain]]
name = "after-build"
when = { project = "gh/acme/api", workflow = "build", branch = "main" }
[[chain.then]]
project = "gh/acme/deploy"
branch = "main"
"#;

/// The same rule with an action inserted before the one that already ran.
const AFTER: &str = r#"
[[chain]]
name = "after-build"
when = { project = "gh/acme/api", workflow = "build", branch = "main" }
[[chain.then]]
project = "gh/acme/e2e"
branch = "main"
[[chain.then]]
project = "gh/acme/deploy"
branch = "main"
"#;

async fn simulator() -> Simulator {
    let sim = Simulator::start().await.unwrap();
    sim.add_user("alice", ALICE_TOKEN);
    for (project, workflow) in [(API, "build"), (DEPLOY, "deploy"), (E2E, "e2e")] {
        sim.add_project(
            ProjectSpec::new(project)
                .workflow(WorkflowSpec::new(workflow).job(JobSpec::new("run"))),
        );
    }
    sim
}

fn pipelines_on(sim: &Simulator, project: &str) -> usize {
    sim.pipelines()
        .iter()
        .filter(|p| p.project_slug == project)
        .count()
}

#[tokio::test]
async fn a_redelivery_after_an_action_is_inserted_runs_the_new_one_and_repeats_none() {
    let sim = simulator().await;
    let mut harness = Harness::start(&sim, BEFORE).await;
    let event = WorkflowEvent::new(API, "build", "success", sim.now())
        .branch(Some("main"))
        .json();
    let first = harness.post_signed(&event).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(pipelines_on(&sim, DEPLOY), 1, "{:?}", first.body);

    harness.reload(AFTER).await;
    // CircleCI delivers the same event again (its first answer was lost, say).
    let again = harness.post_signed(&event).await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(
        pipelines_on(&sim, DEPLOY),
        1,
        "the performed action is not repeated"
    );
    assert_eq!(pipelines_on(&sim, E2E), 1, "the inserted action runs once");

    // And a third copy changes nothing.
    harness.post_signed(&event).await;
    assert_eq!(pipelines_on(&sim, DEPLOY), 1);
    assert_eq!(pipelines_on(&sim, E2E), 1);
    let records = harness.rule_records("after-build").await;
    assert_eq!(records.len(), 2, "{records:#?}");
}

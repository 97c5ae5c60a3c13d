//! Rules from real TOML (through the validating loader) against real payloads: CircleCI's
//! samples (read from ../shared) and our own.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use triggers_config::chain::Correlation;
use triggers_config::template::{RenderError, Variable};
use triggers_config::{ActionKind, ActionSpec, ParameterValue, RerunJobs, TargetSpec, parse_str};

use super::*;
use crate::triggers::chained::webhook::{WebhookEvent, parse_event};

fn circleci_fixture(name: &str) -> WebhookEvent {
    let dir = std::env::var_os("CIRCLECI_FIXTURES").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/circleci-webhooks"),
        PathBuf::from,
    );
    let path = dir.join(name);
    let body = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "CircleCI webhook fixture {} not found ({e}); set CIRCLECI_FIXTURES",
            path.display()
        )
    });
    parse_event(&body).unwrap()
}

fn own_fixture(name: &str) -> WebhookEvent {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/integration/fixtures/webhooks")
        .join(name);
    parse_event(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap()
}

/// Rules from TOML, validated by the real loader first.
fn rules(toml: &str) -> ChainRules {
    let file = parse_str(toml, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    ChainRules::from_file(&file).unwrap()
}

fn one_action(rules: &ChainRules, event: &WebhookEvent) -> MatchedAction {
    let mut matched = rules.matching(event);
    assert_eq!(matched.len(), 1, "{matched:#?}");
    matched.remove(0)
}

fn ready(action: &MatchedAction) -> &ActionRequest {
    action
        .plan
        .ready()
        .unwrap_or_else(|| panic!("expected a ready plan, got {:?}", action.plan))
}

fn pipeline(action: &MatchedAction) -> &TargetSpec {
    match ready(action) {
        ActionRequest::Pipeline(target) => target,
        other => panic!("expected a pipeline, got {other:?}"),
    }
}

/// The target an approve/rerun/cancel resolves: project, branch (for `latest`), token.
fn target_on(project: &str, branch: Option<&str>, token: Option<&str>) -> TargetSpec {
    TargetSpec {
        project: project.into(),
        branch: branch.map(Into::into),
        tag: None,
        workflow: None,
        parameters: Default::default(),
        definition_id: None,
        config: None,
        checkout: None,
        token: token.map(Into::into),
    }
}

/// Our OAuth-style `workflow-completed` sample (gh/acme/api, build) on another branch.
fn event_on(branch: &str) -> WebhookEvent {
    let mut body = own_fixture("workflow-completed.oauth.json").raw().clone();
    body["pipeline"]["vcs"]["branch"] = json!(branch);
    parse_event(&serde_json::to_vec(&body).unwrap()).unwrap()
}

fn mismatches(rules: &ChainRules, event: &WebhookEvent) -> Vec<Mismatch> {
    rules
        .evaluate(event)
        .into_iter()
        .flat_map(|evaluation| match evaluation.verdict {
            Verdict::NotMatched(reasons) => reasons,
            other => panic!("expected no match, got {other:?}"),
        })
        .collect()
}

const DEPLOY_AFTER_BUILD: &str = r#"
[[chain]]
name = "deploy-after-build"
when = { project = "gh/acme/api", workflow = "build", branch = "main", status = ["success"] }
[[chain.then]]
action = "pipeline"
project = "gh/acme/deploy"
branch = "main"
workflow = "deploy"
parameters = { api_sha = "{{ revision }}", upstream = "{{ project.slug }}#{{ pipeline.number }}", dry_run = false, replicas = 3 }
"#;

#[test]
fn the_design_example_starts_a_rendered_pipeline() {
    let event = own_fixture("workflow-completed.oauth.json");
    let action = one_action(&rules(DEPLOY_AFTER_BUILD), &event);
    assert_eq!(
        (action.rule.as_str(), action.action_index, action.kind),
        ("deploy-after-build", 0, ActionKind::Pipeline)
    );
    assert_eq!(
        action.dedupe_key(event.id()),
        format!(
            "5f6e0c1a-1b2c-4d3e-8f40-0a1b2c3d4e5f#deploy-after-build#{}",
            action.action_id
        )
    );
    let target = pipeline(&action);
    assert_eq!(target.project, "gh/acme/deploy");
    assert_eq!(target.branch.as_deref(), Some("main"));
    assert_eq!(target.workflow.as_deref(), Some("deploy"));
    assert_eq!(
        target.parameters.get("api_sha"),
        Some(&ParameterValue::String(
            "3f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a39".into()
        ))
    );
    assert_eq!(
        target.parameters.get("upstream"),
        Some(&ParameterValue::String("gh/acme/api#412".into()))
    );
    assert_eq!(
        target.parameters.get("dry_run"),
        Some(&ParameterValue::Boolean(false))
    );
    assert_eq!(
        target.parameters.get("replicas"),
        Some(&ParameterValue::Integer(3))
    );
    // The same free function, for one-off use.
    let file = parse_str(DEPLOY_AFTER_BUILD, "t.toml").unwrap();
    assert_eq!(rules_matching(&file.chain, &event).unwrap(), vec![action]);
}

#[test]
fn the_same_rule_ignores_other_workflows_branches_and_statuses() {
    let rules = rules(DEPLOY_AFTER_BUILD);
    // CircleCI's OAuth sample: another project entirely.
    assert_eq!(
        mismatches(&rules, &circleci_fixture("workflow-completed.oauth.json")),
        [Mismatch::Project {
            actual: "gh/circleci/webhook-service".into()
        }]
    );
    // Our tag sample: right project, wrong workflow.
    assert_eq!(
        mismatches(&rules, &own_fixture("workflow-completed.oauth-tag.json")),
        [Mismatch::Workflow {
            actual: Some("release".into())
        }]
    );
    // A job event never matches a workflow rule.
    assert_eq!(
        mismatches(&rules, &own_fixture("job-completed.oauth.json")),
        [Mismatch::EventType {
            expected: EventKind::WorkflowCompleted,
            actual: EventKind::JobCompleted
        }]
    );
}

#[test]
fn gh_and_github_and_capitalisation_name_the_same_project() {
    let event = own_fixture("workflow-completed.oauth.json"); // github/acme/api
    for project in [
        "gh/acme/api",
        "github/acme/api",
        "gh/ACME/Api",
        "gh/acme/*",
        "github/*/a?i",
        "gh/acme/{api,web}",
    ] {
        let toml = format!(
            "[[chain]]\nname = \"r\"\nwhen = {{ project = \"{project}\" }}\n[[chain.then]]\nproject = \"gh/ops/deploy\"\nbranch = \"main\"\n"
        );
        assert_eq!(rules(&toml).matching(&event).len(), 1, "{project}");
    }
    for project in ["bb/acme/api", "gh/acme/ap", "gh/other/*", "gh/acme/api-*"] {
        let toml = format!(
            "[[chain]]\nname = \"r\"\nwhen = {{ project = \"{project}\" }}\n[[chain.then]]\nproject = \"gh/ops/deploy\"\nbranch = \"main\"\n"
        );
        assert!(
            matches!(
                mismatches(&rules(&toml), &event)[..],
                [Mismatch::Project { .. }]
            ),
            "{project}"
        );
    }
}

#[test]
fn app_style_projects_match_by_opaque_slug() {
    let event = circleci_fixture("workflow-completed.app.json"); // build, failed
    let rules = rules(
        r#"
[[chain]]
name = "on-failure"
when = { project = "circleci/DdaVtNusHqi24D4YT3X4eu/*", workflow = "build", branch = "main", status = ["failed", "error"] }
[[chain.then]]
project = "gh/acme/alerts"
branch = "main"
parameters = { why = "{{ workflow.name }} {{ status }} at {{ revision }} on {{ branch }}" }
"#,
    );
    let action = one_action(&rules, &event);
    assert_eq!(
        pipeline(&action).parameters.get("why"),
        Some(&ParameterValue::String(
            "build failed at 850a1519f25d14e968649cc420d1bd381715c05c on main".into()
        ))
    );
}

#[test]
fn statuses_default_to_success() {
    let failed = own_fixture("workflow-completed.oauth-tag.json"); // release, failed, tag v2.0.0
    let default = rules(
        "[[chain]]\nname = \"r\"\nwhen = { project = \"gh/acme/api\", tag = \"v*\" }\n[[chain.then]]\nproject = \"gh/acme/deploy\"\ntag = \"{{ tag }}\"\n",
    );
    assert_eq!(
        mismatches(&default, &failed),
        [Mismatch::Status {
            actual: "failed".into()
        }]
    );
    let on_failure = rules(
        "[[chain]]\nname = \"r\"\nwhen = { project = \"gh/acme/api\", tag = \"v*\", status = \"failed\" }\n[[chain.then]]\nproject = \"gh/acme/deploy\"\ntag = \"{{ tag }}\"\n",
    );
    let action = one_action(&on_failure, &failed);
    assert_eq!(pipeline(&action).tag.as_deref(), Some("v2.0.0"));
    assert_eq!(pipeline(&action).branch, None);
}

#[test]
fn an_unknown_status_matches_no_rule() {
    let mut body: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/integration/fixtures/webhooks/workflow-completed.oauth.json"),
        )
        .unwrap(),
    )
    .unwrap();
    body["workflow"]["status"] = json!("exploded");
    let event = parse_event(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(
        mismatches(&rules(DEPLOY_AFTER_BUILD), &event),
        [Mismatch::Status {
            actual: "exploded".into()
        }]
    );
}

#[test]
fn branch_patterns_stop_at_slashes() {
    let rules = rules(
        "[[chain]]\nname = \"r\"\nwhen = { project = \"gh/acme/api\", branch = [\"main\", \"release/*\"] }\n[[chain.then]]\nproject = \"gh/acme/deploy\"\nbranch = \"{{ branch }}\"\n",
    );
    for (branch, matches) in [
        ("main", true),
        ("release/1.2", true),
        ("release/1.2/hotfix", false),
        ("mainline", false),
        ("feature/x", false),
    ] {
        assert_eq!(
            rules.matching(&event_on(branch)).len(),
            usize::from(matches),
            "{branch}"
        );
    }
    assert_eq!(
        pipeline(&one_action(&rules, &event_on("release/1.2")))
            .branch
            .as_deref(),
        Some("release/1.2")
    );
    // A tag pipeline has no branch: a branch filter rejects it.
    assert_eq!(
        mismatches(&rules, &own_fixture("workflow-completed.oauth-tag.json")),
        [Mismatch::Branch { actual: None }]
    );
}

#[test]
fn job_rules_rerun_and_cancel_with_their_selection() {
    let event = own_fixture("job-completed.oauth.json"); // lint failed in build on main
    let rules = rules(
        r#"
[[chain]]
name = "retry-lint"
when = { project = "gh/acme/api", job = "lint*", branch = "main", status = "failed" }
[[chain.then]]
action = "rerun"
project = "gh/acme/tools"
jobs = ["lint", "format"]
select = "latest"
branch = "{{ branch }}"
token = "tools-bot"
[[chain.then]]
action = "rerun"
project = "gh/acme/tools"
from_failed = true
select = "origin"
workflow = "{{ workflow.name }}"
[[chain.then]]
action = "cancel"
project = "gh/acme/docs"
select = "origin"
workflow = "publish"
"#,
    );
    let actions = rules.matching(&event);
    assert_eq!(
        actions
            .iter()
            .map(|a| (a.action_index, a.kind))
            .collect::<Vec<_>>(),
        [
            (0, ActionKind::Rerun),
            (1, ActionKind::Rerun),
            (2, ActionKind::Cancel)
        ]
    );
    assert_eq!(
        ready(&actions[0]),
        &ActionRequest::Existing {
            action: ActionSpec::Rerun(RerunJobs::Jobs(vec!["lint".into(), "format".into()])),
            existing: ExistingWorkflow {
                target: target_on("gh/acme/tools", Some("main"), Some("tools-bot")),
                workflow: None,
                select: SelectionRequest::Latest,
            },
        }
    );
    match ready(&actions[1]) {
        ActionRequest::Existing { action, existing } => {
            assert_eq!(action, &ActionSpec::Rerun(RerunJobs::FromFailed));
            assert_eq!(existing.workflow.as_deref(), Some("build"));
            assert_eq!(existing.target, target_on("gh/acme/tools", None, None));
            assert_eq!(
                existing.select,
                SelectionRequest::Origin {
                    upstream_pipeline_id: "c4d5e6f7-0819-4a2b-9c3d-444444444444".into()
                }
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(ready(&actions[2]), ActionRequest::Existing { action: ActionSpec::Cancel, existing } if existing.workflow.as_deref() == Some("publish"))
    );
}

#[test]
fn approve_by_revision_and_origin() {
    let event = own_fixture("workflow-completed.oauth.json"); // gh/acme/api build success
    let rules = rules(
        r#"
[[chain]]
name = "release-gate"
when = { project = "gh/acme/api", workflow = "build", branch = "main" }
[[chain.then]]
action = "approve"
project = "github/acme/api"
job = "hold-release"
workflow = "deploy"
select = "revision"
[[chain.then]]
action = "approve"
project = "gh/acme/deploy"
job = "hold-release"
select = "origin"
"#,
    );
    let actions = rules.matching(&event);
    assert_eq!(
        ready(&actions[0]),
        &ActionRequest::Existing {
            action: ActionSpec::Approve {
                job: "hold-release".into()
            },
            existing: ExistingWorkflow {
                target: target_on("gh/acme/api", None, None),
                workflow: Some("deploy".into()),
                select: SelectionRequest::Revision {
                    revision: "3f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a39".into()
                },
            },
        }
    );
    assert!(matches!(
        ready(&actions[1]),
        ActionRequest::Existing { action: ActionSpec::Approve { job }, existing: ExistingWorkflow { select: SelectionRequest::Origin { .. }, .. } } if job == "hold-release"
    ));

    // The same rule on an event without a revision cannot select by revision.
    let mut body = event.raw().clone();
    body["pipeline"]["vcs"]
        .as_object_mut()
        .unwrap()
        .remove("revision");
    let no_revision = parse_event(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(
        rules.matching(&no_revision)[0].plan,
        ActionPlan::Invalid(PlanError::NoRevision)
    );
}

#[test]
fn app_job_events_without_workflow_or_branch() {
    let event = own_fixture("job-completed.app.json"); // publish success, tag v1.4.2, no workflow
    let with_workflow = rules(
        "[[chain]]\nname = \"r\"\nwhen = { project = \"circleci/Hq7Rt2WxYz3AbCdEfGhJk9/*\", job = \"publish\", workflow = \"release\" }\n[[chain.then]]\nproject = \"gh/acme/deploy\"\nbranch = \"main\"\n",
    );
    assert_eq!(
        mismatches(&with_workflow, &event),
        [Mismatch::Workflow { actual: None }]
    );

    let rules = rules(
        r#"
[[chain]]
name = "promote"
when = { project = "circleci/Hq7Rt2WxYz3AbCdEfGhJk9/Qr5St9UvWx3YzAbCdEfGh7", job = "publish", tag = "v*" }
[[chain.then]]
project = "gh/acme/deploy"
tag = "{{ tag }}"
parameters = { job = "{{ job.name }}" }
[[chain.then]]
project = "gh/acme/deploy"
branch = "{{ branch }}"
[[chain.then]]
project = "gh/acme/deploy"
branch_map = [{ from = "main", to = "production" }]
[[chain.then]]
project = "gh/acme/deploy"
branch = "main"
parameters = { wf = "{{ workflow.name }}" }
"#,
    );
    let actions = rules.matching(&event);
    assert_eq!(actions.len(), 4);
    assert_eq!(pipeline(&actions[0]).tag.as_deref(), Some("v1.4.2"));
    assert_eq!(
        pipeline(&actions[0]).parameters.get("job"),
        Some(&ParameterValue::String("publish".into()))
    );
    // Same-as-upstream branch on a tag pipeline: nothing to render — a recorded failure.
    assert_eq!(
        actions[1].plan,
        ActionPlan::Invalid(PlanError::Render {
            field: "branch".into(),
            source: RenderError::Missing(Variable::Branch)
        })
    );
    // An unmapped branch is skipped by design, not failed.
    assert_eq!(
        actions[2].plan,
        ActionPlan::Skipped(SkipReason::NoBranchMapping { branch: None })
    );
    assert!(
        matches!(&actions[3].plan, ActionPlan::Invalid(PlanError::Render { field, .. }) if field == "parameters.wf")
    );
}

#[test]
fn branch_maps_take_the_first_matching_entry() {
    let rules = rules(
        r#"
[[chain]]
name = "map"
when = { project = "gh/acme/api", upstream = "ours" }
[[chain.then]]
project = "gh/acme/deploy"
branch_map = [{ from = "feature/*", to = "preview" }, { from = "main", to = "production" }, { from = "*", to = "staging-{{ pipeline.number }}" }]
"#,
    );
    let action = one_action(&rules, &own_fixture("workflow-completed.oauth.json"));
    assert_eq!(pipeline(&action).branch.as_deref(), Some("production"));
}

#[test]
fn rendered_values_are_checked_before_anything_is_sent() {
    let rules = rules(
        r#"
[[chain]]
name = "r"
when = { project = "gh/acme/api", branch = "main" }
[[chain.then]]
project = "gh/acme/deploy"
branch = "x/{{ status }}.lock"
[[chain.then]]
project = "gh/acme/deploy"
branch = "main"
parameters = { long = "{{ revision }}{{ revision }}{{ revision }}{{ revision }}{{ revision }}{{ revision }}{{ revision }}{{ revision }}{{ revision }}{{ revision }}{{ revision }}{{ revision }}{{ revision }}" }
"#,
    );
    let actions = rules.matching(&own_fixture("workflow-completed.oauth.json"));
    assert!(
        matches!(&actions[0].plan, ActionPlan::Invalid(PlanError::InvalidValue { field, .. }) if field == "branch"),
        "{:?}",
        actions[0].plan
    );
    assert!(
        matches!(&actions[1].plan, ActionPlan::Invalid(PlanError::InvalidValue { field, reason }) if field == "parameters.long" && reason.contains("512")),
        "{:?}",
        actions[1].plan
    );
}

#[test]
fn several_rules_match_in_file_order() {
    let rules = rules(&format!(
        "{DEPLOY_AFTER_BUILD}\n[[chain]]\nname = \"notify\"\nwhen = {{ project = \"gh/acme/*\", status = [\"success\", \"failed\"] }}\n[[chain.then]]\nproject = \"gh/ops/notify\"\nbranch = \"main\"\n"
    ));
    let event = own_fixture("workflow-completed.oauth.json");
    let matched: Vec<String> = rules.matching(&event).into_iter().map(|a| a.rule).collect();
    assert_eq!(matched, ["deploy-after-build", "notify"]);
    let evaluations = rules.evaluate(&own_fixture("workflow-completed.oauth-tag.json"));
    assert_eq!(evaluations.len(), 2);
    assert!(matches!(evaluations[0].verdict, Verdict::NotMatched(_)));
    assert!(matches!(evaluations[1].verdict, Verdict::Matched(_)));
    assert_eq!(
        Mismatch::Branch { actual: None }.to_string(),
        "branch (none) does not match"
    );
}

// ----- fan-in -------------------------------------------------------------------------------

const FAN_IN: &str = r#"
[[chain]]
name = "e2e-when-both-built"
after = [{ project = "gh/acme/api", workflow = "build", upstream = "ours" }, { project = "gh/acme/web", workflow = "build", upstream = "ours" }]
correlate = "origin"
window = "2h"
[[chain.then]]
project = "gh/acme/e2e"
branch = "main"
parameters = { last = "{{ project.slug }}" }
"#;

#[test]
fn fan_in_rules_report_arrivals_not_actions() {
    let rules = rules(FAN_IN);
    let event = own_fixture("workflow-completed.oauth.json");
    assert!(rules.matching(&event).is_empty());
    let arrivals = rules.join_arrivals(&event);
    assert_eq!(
        arrivals,
        [JoinArrival {
            rule: "e2e-when-both-built".into(),
            upstream_index: 0,
            event_id: "5f6e0c1a-1b2c-4d3e-8f40-0a1b2c3d4e5f".into(),
            pipeline_id: "c4d5e6f7-0819-4a2b-9c3d-444444444444".into(),
            at: "2026-11-28T09:15:42.120Z".parse().unwrap(),
            outcome: UpstreamOutcome::Succeeded,
            correlation: Some(CorrelationSource::Origin {
                upstream_pipeline_id: "c4d5e6f7-0819-4a2b-9c3d-444444444444".into()
            }),
        }]
    );
    // A failure arrives too (it closes the join).
    let mut body = event.raw().clone();
    body["workflow"]["status"] = json!("failed");
    let failed = parse_event(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(
        rules.join_arrivals(&failed)[0].outcome,
        UpstreamOutcome::Failed {
            status: "failed".into()
        }
    );
    // Unrelated events do not arrive.
    assert!(
        rules
            .join_arrivals(&own_fixture("workflow-completed.oauth-tag.json"))
            .is_empty()
    );

    let join = rules.join("e2e-when-both-built").unwrap();
    assert_eq!(join.upstreams, 2);
    assert_eq!(join.correlate, Correlation::Origin);
    assert_eq!(join.window, Duration::hours(2));
    assert_eq!(join.key("trg_123"), "e2e-when-both-built#origin:trg_123");

    // When the join completes, the rule's actions are planned against the completing event.
    let planned = rules.plan_rule("e2e-when-both-built", &event).unwrap();
    assert_eq!(
        pipeline(&planned[0]).parameters.get("last"),
        Some(&ParameterValue::String("gh/acme/api".into()))
    );
    assert!(rules.plan_rule("nope", &event).is_none());
}

#[test]
fn fan_in_correlation_values_come_from_the_event() {
    let tag_join = FAN_IN.replace("correlate = \"origin\"", "correlate = \"tag\"");
    let branch_join = FAN_IN.replace("correlate = \"origin\"", "correlate = \"branch\"");
    let event = own_fixture("workflow-completed.oauth.json"); // branch main, no tag
    assert_eq!(rules(&tag_join).join_arrivals(&event)[0].correlation, None);
    assert_eq!(
        rules(&branch_join).join_arrivals(&event)[0].correlation,
        Some(CorrelationSource::Value("main".into()))
    );
}

fn t(minutes: i64) -> DateTime<Utc> {
    "2026-11-28T09:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::minutes(minutes)
}

fn ok(index: usize, minutes: i64) -> Arrival {
    Arrival {
        upstream_index: index,
        outcome: UpstreamOutcome::Succeeded,
        at: t(minutes),
    }
}

fn failed(index: usize, minutes: i64) -> Arrival {
    Arrival {
        upstream_index: index,
        outcome: UpstreamOutcome::Failed {
            status: "failed".into(),
        },
        at: t(minutes),
    }
}

#[test]
fn join_decisions() {
    let join = JoinSpec {
        rule: "j".into(),
        upstreams: 3,
        correlate: Correlation::Tag,
        window: Duration::hours(2),
    };
    assert_eq!(
        join.decide(&[], t(0)),
        JoinDecision::Waiting {
            missing: vec![0, 1, 2],
            deadline: None
        }
    );
    assert_eq!(
        join.decide(&[ok(1, 10), ok(1, 20)], t(30)),
        JoinDecision::Waiting {
            missing: vec![0, 2],
            deadline: Some(t(130))
        }
    );
    // Order of storage does not matter; time order does.
    assert_eq!(
        join.decide(&[ok(2, 50), ok(0, 10), ok(1, 30)], t(60)),
        JoinDecision::Complete
    );
    assert_eq!(
        join.decide(&[ok(0, 0), ok(1, 60), ok(2, 120)], t(500)),
        JoinDecision::Complete,
        "on the deadline counts"
    );
    // A failure before completion closes the join; after completion it changes nothing.
    assert_eq!(
        join.decide(&[ok(0, 0), failed(1, 5), ok(1, 10), ok(2, 15)], t(20)),
        JoinDecision::Closed(JoinClosed::UpstreamFailed {
            upstream_index: 1,
            status: "failed".into()
        })
    );
    assert_eq!(
        join.decide(&[ok(0, 0), ok(1, 5), ok(2, 10), failed(1, 15)], t(20)),
        JoinDecision::Complete
    );
    // The window runs from the first arrival.
    assert_eq!(
        join.decide(&[ok(0, 0), ok(1, 10)], t(121)),
        JoinDecision::Closed(JoinClosed::Expired { deadline: t(120) })
    );
    assert_eq!(
        join.decide(&[ok(0, 0), ok(1, 10), ok(2, 121)], t(121)),
        JoinDecision::Closed(JoinClosed::Expired { deadline: t(120) }),
        "a late arrival does not complete it"
    );
    // Arrivals for upstreams the rule no longer has (the file changed) are ignored.
    assert_eq!(
        join.decide(&[ok(7, 0)], t(1)),
        JoinDecision::Waiting {
            missing: vec![0, 1, 2],
            deadline: None
        }
    );
}

#[test]
fn arrivals_convert_for_storage() {
    let rules = rules(FAN_IN);
    let arrival = rules
        .join_arrivals(&own_fixture("workflow-completed.oauth.json"))
        .remove(0);
    let stored = arrival.arrival();
    assert_eq!(stored.upstream_index, 0);
    assert_eq!(stored.at, arrival.at);
    let join = rules.join("e2e-when-both-built").unwrap();
    assert!(
        matches!(join.decide(&[stored], arrival.at), JoinDecision::Waiting { ref missing, .. } if missing == &[1])
    );
}

#[test]
fn unvalidated_rules_fail_to_compile_instead_of_misbehaving() {
    let mut file = parse_str(DEPLOY_AFTER_BUILD, "t.toml").unwrap();
    file.chain[0].then[0].branch = Some("{{ nope }}".into());
    let error = ChainRules::from_file(&file).err().unwrap();
    assert_eq!(error.rule, "deploy-after-build");
    assert!(error.problem.contains("nope"), "{error}");

    let mut file = parse_str(FAN_IN, "t.toml").unwrap();
    file.chain[0].window = None;
    assert!(ChainRules::from_file(&file).is_err());
}

#[test]
fn hostile_event_values_refuse_the_action_instead_of_reaching_a_parameter() {
    // `release/*` pins the upstream, but a branch is only a name: whoever can push
    // `release/$(id)` still chooses its text. Its value class refuses it.
    let rules = rules(
        r#"
[[chain]]
name = "deploy-release"
when = { project = "gh/acme/api", branch = "release/*" }
[[chain.then]]
project = "gh/acme/deploy"
branch = "{{ branch }}"
[[chain.then]]
project = "gh/acme/deploy"
branch = "main"
parameters = { from = "{{ branch }}" }
"#,
    );
    for hostile in [
        "release/$(id)",
        "release/`id`",
        "release/x;id",
        "release/x\nid",
        "release/ma\u{0456}n",
    ] {
        let actions = rules.matching(&event_on(hostile));
        assert_eq!(actions.len(), 2, "{hostile:?} matches the pinned pattern");
        for action in &actions {
            match &action.plan {
                ActionPlan::Invalid(error) => {
                    assert!(error.is_refusal(), "{hostile:?}: {error}");
                    assert!(
                        matches!(
                            error,
                            PlanError::Render {
                                source: RenderError::OutOfClass {
                                    variable: Variable::Branch,
                                    ..
                                },
                                ..
                            }
                        ),
                        "{error:?}"
                    );
                    assert!(!error.to_string().contains(hostile), "{error}");
                }
                other => panic!("{hostile:?} was planned: {other:?}"),
            }
        }
    }
    let fine = rules.matching(&event_on("release/1.4"));
    assert_eq!(pipeline(&fine[0]).branch.as_deref(), Some("release/1.4"));
    assert_eq!(
        pipeline(&fine[1]).parameters.get("from"),
        Some(&ParameterValue::String("release/1.4".into()))
    );
    // A rule that cannot be applied (not a refusal of the event) stays a failure.
    assert!(!PlanError::NoRevision.is_refusal());
}

#[test]
fn actions_are_named_by_what_they_do_not_where_they_stand() {
    let deploy = rules(DEPLOY_AFTER_BUILD).specs().next().unwrap().then[0].clone();
    let mut e2e = deploy.clone();
    e2e.project = "gh/acme/e2e".into();
    let before = action_ids(std::slice::from_ref(&deploy));
    let after = action_ids(&[e2e.clone(), deploy.clone()]);
    assert_eq!(
        after[1], before[0],
        "inserting an action keeps the others' names"
    );
    assert_ne!(after[0], after[1]);
    assert!(
        before[0].starts_with("a-") && before[0].len() == 18,
        "{}",
        before[0]
    );
    // The same action twice in one rule: two names, by occurrence.
    let twice = action_ids(&[deploy.clone(), deploy.clone()]);
    assert_eq!(twice[0], before[0]);
    assert_eq!(twice[1], format!("{}#2", before[0]));
    // An edited action is another action.
    let mut edited = deploy;
    edited.branch = Some("release".into());
    assert_ne!(action_ids(&[edited])[0], before[0]);
}

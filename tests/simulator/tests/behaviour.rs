//! Behaviour of the simulated API: auth, slugs, triggers, parameters, `when`, the clock,
//! approvals, reruns, cancels and pagination. All over real HTTP, no sleeps.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use circleci_sim::{
    JobSpec, JobStatus, ParameterSpec, PipelineState, ProjectSpec, SimOptions, Simulator,
    TriggerEndpoint, WorkflowSpec, WorkflowStatus,
};
use common::{Api, TOKEN, acme_api, sim_with};
use serde_json::{Value, json};

fn id_of(body: &Value) -> uuid::Uuid {
    body["id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn unknown_or_missing_token_is_401_with_circleci_message() {
    let sim = sim_with(vec![acme_api()]).await;
    for api in [Api::new(&sim, "wrong"), Api::anonymous(&sim)] {
        let reply = api.get("/me").await;
        assert_eq!(reply.status, 401);
        assert_eq!(reply.body, json!({"message": "You must log in first."}));
    }
    let log = sim.requests();
    assert_eq!(log.len(), 2);
    assert!(log.iter().all(|r| r.user.is_none() && r.status == 401));
}

#[tokio::test]
async fn me_and_auth_schemes_identify_the_token_user_without_logging_the_token() {
    let sim = sim_with(vec![]).await;
    let bob = sim.add_token("bob", "bob-ci", "tok-bob");
    let http = reqwest::Client::new();
    let basic = http
        .get(format!("{}/me", sim.base_url()))
        .basic_auth("tok-bob", Some(""))
        .send()
        .await
        .unwrap();
    let bearer = http
        .get(format!("{}/me", sim.base_url()))
        .bearer_auth("tok-bob")
        .send()
        .await
        .unwrap();
    for response in [basic, bearer] {
        assert_eq!(response.status(), 200);
        let me: Value = response.json().await.unwrap();
        assert_eq!(me["login"], "bob");
        assert_eq!(me["id"], json!(bob));
    }
    let log = sim.requests();
    assert!(
        log.iter()
            .all(|r| r.token_name.as_deref() == Some("bob-ci") && r.user.as_deref() == Some("bob"))
    );
    let rendered = format!("{log:?}");
    assert!(
        !rendered.contains("tok-bob"),
        "the token leaked into the request log: {rendered}"
    );
}

#[tokio::test]
async fn slug_aliases_and_percent_encoding_reach_the_same_project() {
    let sim = sim_with(vec![acme_api()]).await;
    let api = Api::new(&sim, TOKEN);
    for path in [
        "/project/gh/acme/api",
        "/project/github/acme/api",
        "/project/gh%2Facme%2Fapi",
        "/project/github/Acme/API",
    ] {
        let reply = api.get(path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
        assert_eq!(reply.body["slug"], "gh/acme/api");
        assert_eq!(reply.body["vcs_info"]["provider"], "GitHub");
    }
    assert_eq!(api.get("/project/gh/acme/nope").await.status, 404);
    assert_eq!(api.get("/project/gitlab/acme/api").await.status, 404);
}

#[tokio::test]
async fn invisible_projects_are_404_and_read_only_users_get_403_on_writes() {
    let sim = sim_with(vec![
        acme_api()
            .only_users(["alice", "reader"])
            .read_only(["reader"]),
    ])
    .await;
    sim.add_user("mallory", "tok-mallory");
    sim.add_user("reader", "tok-reader");
    let mallory = Api::new(&sim, "tok-mallory");
    assert_eq!(mallory.get("/project/gh/acme/api").await.status, 404);
    assert_eq!(
        mallory
            .post("/project/gh/acme/api/pipeline", &json!({}))
            .await
            .status,
        404
    );

    let reader = Api::new(&sim, "tok-reader");
    assert_eq!(reader.get("/project/gh/acme/api").await.status, 200);
    let denied = reader
        .post("/project/gh/acme/api/pipeline", &json!({"branch": "main"}))
        .await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.body["message"], "Permission denied.");
    assert!(sim.pipelines().is_empty());

    // A pipeline alice created is invisible by id to mallory.
    let created = Api::new(&sim, TOKEN)
        .post("/project/gh/acme/api/pipeline", &json!({}))
        .await;
    let id = created.body["id"].as_str().unwrap();
    assert_eq!(mallory.get(&format!("/pipeline/{id}")).await.status, 404);
    assert_eq!(reader.get(&format!("/pipeline/{id}")).await.status, 200);
}

#[tokio::test]
async fn legacy_trigger_creates_a_pipeline_with_workflows_running() {
    let sim = sim_with(vec![
        acme_api().revision("main", "0123456789abcdef0123456789abcdef01234567"),
    ])
    .await;
    let api = Api::new(&sim, TOKEN);
    let created = api
        .post(
            "/project/gh/acme/api/pipeline",
            &json!({"branch": "main", "parameters": {"deploy": true}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.body["state"], "pending");
    assert_eq!(created.body["number"], 1);

    let id = id_of(&created.body);
    let pipeline = api.get(&format!("/pipeline/{id}")).await;
    assert_eq!(pipeline.body["state"], "created");
    assert_eq!(pipeline.body["vcs"]["branch"], "main");
    assert_eq!(
        pipeline.body["vcs"]["revision"],
        "0123456789abcdef0123456789abcdef01234567"
    );
    assert_eq!(pipeline.body["trigger"]["actor"]["login"], "alice");

    let views = sim.pipelines();
    assert_eq!(views.len(), 1);
    assert_eq!(
        views[0].parameters,
        json!({"deploy": true}).as_object().unwrap().clone()
    );
    assert_eq!(views[0].created_by, "alice");
    assert_eq!(views[0].endpoint, TriggerEndpoint::Legacy);
    let workflows = sim.workflows(id);
    assert_eq!(workflows.len(), 1);
    assert_eq!(workflows[0].name, "build");
    assert_eq!(workflows[0].status, WorkflowStatus::Running);
    assert_eq!(workflows[0].jobs[0].status, JobStatus::Running);
    assert_eq!(workflows[0].jobs[1].status, JobStatus::Blocked);

    let second = api
        .post(
            "/project/github/acme/api/pipeline",
            &json!({"tag": "v1.0.0"}),
        )
        .await;
    assert_eq!(second.body["number"], 2);
    assert_eq!(sim.pipelines()[1].tag.as_deref(), Some("v1.0.0"));
}

#[tokio::test]
async fn pipeline_run_uses_definitions_and_refs() {
    let definition = uuid::Uuid::new_v4();
    let sim = sim_with(vec![acme_api().definition(definition)]).await;
    let api = Api::new(&sim, TOKEN);
    let created = api
        .post(
            "/project/gh/acme/api/pipeline/run",
            &json!({"definition_id": definition, "config": {"branch": "main"}, "checkout": {"branch": "feature/x"}, "parameters": {"count": 3}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let view = sim.pipeline(id_of(&created.body)).unwrap();
    assert_eq!(view.branch.as_deref(), Some("feature/x"));
    assert!(
        matches!(view.endpoint, TriggerEndpoint::Run { definition_id, .. } if definition_id == definition)
    );

    let unknown = api
        .post(
            "/project/gh/acme/api/pipeline/run",
            &json!({"definition_id": uuid::Uuid::new_v4()}),
        )
        .await;
    assert_eq!(unknown.status, 404);
    let both = api
        .post(
            "/project/gh/acme/api/pipeline/run",
            &json!({"checkout": {"branch": "a", "tag": "b"}}),
        )
        .await;
    assert_eq!(both.status, 400);
    let extra = api
        .post(
            "/project/gh/acme/api/pipeline/run",
            &json!({"branch": "main"}),
        )
        .await;
    assert_eq!(extra.status, 400, "pipeline/run takes no top-level branch");
    assert_eq!(sim.pipelines().len(), 1);
}

#[tokio::test]
async fn app_projects_refuse_the_legacy_trigger_but_accept_pipeline_run() {
    let sim = sim_with(vec![
        ProjectSpec::new("circleci/Org1d/Pr0j")
            .workflow(WorkflowSpec::new("w").job(JobSpec::new("j"))),
    ])
    .await;
    let api = Api::new(&sim, TOKEN);
    assert_eq!(
        api.post("/project/circleci/Org1d/Pr0j/pipeline", &json!({}))
            .await
            .status,
        400
    );
    let created = api
        .post(
            "/project/circleci/Org1d/Pr0j/pipeline/run",
            &json!({"checkout": {"branch": "main"}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let pipeline = api
        .get(&format!(
            "/pipeline/{}",
            created.body["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(pipeline.body["project_slug"], "circleci/Org1d/Pr0j");
    assert_eq!(pipeline.body["trigger_parameters"]["git"]["branch"], "main");
}

#[tokio::test]
async fn undeclared_or_mistyped_parameters_still_answer_201_but_error_the_pipeline() {
    let sim = sim_with(vec![acme_api()]).await;
    let api = Api::new(&sim, TOKEN);
    let cases = [
        (
            json!({"nope": 1, "zap": "x"}),
            "Unexpected argument(s): nope, zap",
        ),
        (
            json!({"deploy": "yes"}),
            "Type error for argument deploy: expected type: boolean",
        ),
        (
            json!({"count": "3"}),
            "Type error for argument count: expected type: integer",
        ),
    ];
    for (parameters, expected) in cases {
        let created = api
            .post(
                "/project/gh/acme/api/pipeline",
                &json!({"branch": "main", "parameters": parameters}),
            )
            .await;
        assert_eq!(created.status, 201);
        let pipeline = api
            .get(&format!(
                "/pipeline/{}",
                created.body["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(pipeline.body["state"], "errored");
        let message = pipeline.body["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.starts_with(expected),
            "{message:?} should start with {expected:?}"
        );
        assert_eq!(pipeline.body["errors"][0]["type"], "config");
        let workflows = api
            .get(&format!(
                "/pipeline/{}/workflow",
                created.body["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(workflows.body["items"], json!([]));
    }
    assert!(
        sim.pipelines()
            .iter()
            .all(|p| p.state == PipelineState::Errored)
    );
}

#[tokio::test]
async fn required_parameters_without_default_must_be_given() {
    let sim = sim_with(vec![ProjectSpec::new("gh/acme/deploy").parameter(
        ParameterSpec::required("api_sha", circleci_sim::ParameterType::String),
    )])
    .await;
    let api = Api::new(&sim, TOKEN);
    let missing = api
        .post("/project/gh/acme/deploy/pipeline", &json!({}))
        .await;
    assert_eq!(missing.status, 201);
    assert_eq!(
        sim.pipelines()[0].errors,
        vec!["Missing argument(s): api_sha".to_owned()]
    );
    api.post(
        "/project/gh/acme/deploy/pipeline",
        &json!({"parameters": {"api_sha": "abc"}}),
    )
    .await;
    assert_eq!(sim.pipelines()[1].state, PipelineState::Created);
}

#[tokio::test]
async fn parameter_limits_are_400_and_create_nothing() {
    let sim = sim_with(vec![acme_api()]).await;
    let api = Api::new(&sim, TOKEN);
    let too_many: serde_json::Map<String, Value> =
        (0..101).map(|i| (format!("p{i}"), json!(i))).collect();
    let long_key = json!({ "k".repeat(129): "v" });
    let long_value = json!({ "run-workflow": "v".repeat(513) });
    let object_value = json!({ "run-workflow": {"nested": true} });
    for parameters in [Value::Object(too_many), long_key, long_value, object_value] {
        for path in [
            "/project/gh/acme/api/pipeline",
            "/project/gh/acme/api/pipeline/run",
        ] {
            let reply = api.post(path, &json!({"parameters": parameters})).await;
            assert_eq!(reply.status, 400, "{path}: {}", reply.text);
            assert!(reply.body["message"].as_str().unwrap().len() > 10);
        }
    }
    // Exactly at the limits is fine (the pipeline errors on undeclared names, but exists).
    let at_limit: serde_json::Map<String, Value> = (0..100)
        .map(|i| (format!("{i:0>128}"), json!("v".repeat(512))))
        .collect();
    assert_eq!(
        api.post(
            "/project/gh/acme/api/pipeline",
            &json!({"parameters": at_limit})
        )
        .await
        .status,
        201
    );
    assert_eq!(sim.pipelines().len(), 1);
}

#[tokio::test]
async fn when_conditions_gate_workflows() {
    let sim = sim_with(vec![acme_api()]).await;
    let api = Api::new(&sim, TOKEN);
    let nightly = api
        .post(
            "/project/gh/acme/api/pipeline",
            &json!({"parameters": {"run-workflow": "nightly"}}),
        )
        .await;
    let default = api.post("/project/gh/acme/api/pipeline", &json!({})).await;
    let names = |id| {
        sim.workflows(id)
            .into_iter()
            .map(|w| w.name)
            .collect::<Vec<_>>()
    };
    assert_eq!(names(id_of(&nightly.body)), vec!["nightly"]);
    assert_eq!(names(id_of(&default.body)), vec!["build"]);
}

#[tokio::test]
async fn branch_filters_skip_workflows() {
    let sim = sim_with(vec![
        ProjectSpec::new("gh/acme/web")
            .workflow(WorkflowSpec::new("always").job(JobSpec::new("a")))
            .workflow(
                WorkflowSpec::new("release")
                    .only_branches(["main"])
                    .job(JobSpec::new("r")),
            ),
    ])
    .await;
    let api = Api::new(&sim, TOKEN);
    let feature = api
        .post(
            "/project/gh/acme/web/pipeline",
            &json!({"branch": "feature"}),
        )
        .await;
    let main = api
        .post("/project/gh/acme/web/pipeline", &json!({"branch": "main"}))
        .await;
    assert_eq!(sim.workflows(id_of(&feature.body)).len(), 1);
    assert_eq!(sim.workflows(id_of(&main.body)).len(), 2);
}

#[tokio::test]
async fn the_clock_moves_jobs_in_order_and_only_when_told() {
    let sim = sim_with(vec![acme_api()]).await;
    let api = Api::new(&sim, TOKEN);
    let created = api.post("/project/gh/acme/api/pipeline", &json!({})).await;
    let pipeline = id_of(&created.body);
    let start = sim.now();

    sim.advance(Duration::from_secs(9)).await;
    let wf = &sim.workflows(pipeline)[0];
    assert_eq!(wf.jobs[0].status, JobStatus::Running);

    sim.advance(Duration::from_secs(1)).await;
    let wf = &sim.workflows(pipeline)[0];
    assert_eq!(wf.jobs[0].status, JobStatus::Success);
    assert_eq!(
        wf.jobs[0].stopped_at,
        Some(start + chrono::Duration::seconds(10))
    );
    assert_eq!(wf.jobs[1].status, JobStatus::Running);
    assert_eq!(
        wf.jobs[1].started_at,
        Some(start + chrono::Duration::seconds(10))
    );
    assert!(!sim.pipeline_is_final(pipeline));

    // One big step still completes jobs at their own instants.
    sim.advance(Duration::from_secs(3600)).await;
    let wf = &sim.workflows(pipeline)[0];
    assert_eq!(wf.status, WorkflowStatus::Success);
    assert_eq!(
        wf.jobs[1].stopped_at,
        Some(start + chrono::Duration::seconds(30))
    );
    assert_eq!(wf.stopped_at, Some(start + chrono::Duration::seconds(30)));
    assert!(sim.pipeline_is_final(pipeline));
    assert!(wf.jobs[0].job_number.unwrap() < wf.jobs[1].job_number.unwrap());
}

#[tokio::test]
async fn failures_fail_the_workflow_and_leave_dependents_not_run() {
    let sim = sim_with(vec![
        ProjectSpec::new("gh/acme/flaky").workflow(
            WorkflowSpec::new("ci")
                .job(JobSpec::new("lint").duration(Duration::from_secs(5)))
                .job(
                    JobSpec::new("unit")
                        .duration(Duration::from_secs(10))
                        .fails(),
                )
                .job(JobSpec::new("deploy").requires(["lint", "unit"])),
        ),
    ])
    .await;
    let api = Api::new(&sim, TOKEN);
    let created = api
        .post("/project/gh/acme/flaky/pipeline", &json!({}))
        .await;
    let pipeline = id_of(&created.body);
    sim.run_until_idle().await;
    let wf = &sim.workflows(pipeline)[0];
    assert_eq!(wf.status, WorkflowStatus::Failed);
    let statuses: Vec<JobStatus> = wf.jobs.iter().map(|j| j.status).collect();
    assert_eq!(
        statuses,
        vec![JobStatus::Success, JobStatus::Failed, JobStatus::NotRun]
    );
}

#[tokio::test]
async fn failing_is_reported_while_other_jobs_still_run() {
    let sim = sim_with(vec![
        ProjectSpec::new("gh/acme/x").workflow(
            WorkflowSpec::new("ci")
                .job(
                    JobSpec::new("fast")
                        .duration(Duration::from_secs(1))
                        .fails(),
                )
                .job(JobSpec::new("slow").duration(Duration::from_secs(100))),
        ),
    ])
    .await;
    let api = Api::new(&sim, TOKEN);
    let created = api.post("/project/gh/acme/x/pipeline", &json!({})).await;
    sim.advance(Duration::from_secs(2)).await;
    let wf_id = sim.workflows(id_of(&created.body))[0].id;
    assert_eq!(
        api.get(&format!("/workflow/{wf_id}")).await.body["status"],
        "failing"
    );
    sim.run_until_idle().await;
    assert_eq!(
        api.get(&format!("/workflow/{wf_id}")).await.body["status"],
        "failed"
    );
}

fn gated_project() -> ProjectSpec {
    ProjectSpec::new("gh/acme/deploy").workflow(
        WorkflowSpec::new("deploy")
            .job(JobSpec::new("build").duration(Duration::from_secs(5)))
            .job(JobSpec::approval("hold-release").requires(["build"]))
            .job(
                JobSpec::new("release")
                    .requires(["hold-release"])
                    .duration(Duration::from_secs(5)),
            ),
    )
}

#[tokio::test]
async fn approval_jobs_hold_until_approved_then_release_dependents() {
    let sim = sim_with(vec![gated_project()]).await;
    let api = Api::new(&sim, TOKEN);
    let created = api
        .post("/project/gh/acme/deploy/pipeline", &json!({}))
        .await;
    sim.run_until_idle().await;
    let wf = sim.workflows(id_of(&created.body))[0].clone();
    assert_eq!(wf.status, WorkflowStatus::OnHold);
    assert!(!wf.status.is_final());

    let hold = api.job(&wf.id.to_string(), "hold-release").await;
    assert_eq!(hold["status"], "on_hold");
    assert_eq!(hold["type"], "approval");
    assert!(hold["started_at"].is_null());
    let approval = hold["approval_request_id"].as_str().unwrap();
    assert_ne!(approval, hold["id"].as_str().unwrap());

    // Approving the wrong id or the job id is refused.
    let wrong = api
        .post_empty(&format!(
            "/workflow/{}/approve/{}",
            wf.id,
            uuid::Uuid::new_v4()
        ))
        .await;
    assert_eq!(wrong.status, 404);

    let approved = api
        .post_empty(&format!("/workflow/{}/approve/{approval}", wf.id))
        .await;
    assert_eq!(approved.status, 202, "{}", approved.text);
    assert_eq!(approved.body["message"], "Accepted.");
    let again = api
        .post_empty(&format!("/workflow/{}/approve/{approval}", wf.id))
        .await;
    assert_eq!(again.status, 400, "a second approval is refused");

    let release = api.job(&wf.id.to_string(), "release").await;
    assert_eq!(release["status"], "running");
    let hold = api.job(&wf.id.to_string(), "hold-release").await;
    assert_eq!(hold["status"], "success");
    assert_eq!(hold["approved_by"], json!(sim.user_id("alice").unwrap()));
    sim.run_until_idle().await;
    assert_eq!(sim.workflow(wf.id).unwrap().status, WorkflowStatus::Success);
}

#[tokio::test]
async fn read_only_users_cannot_approve() {
    let sim = sim_with(vec![gated_project().read_only(["reader"])]).await;
    sim.add_user("reader", "tok-reader");
    let created = Api::new(&sim, TOKEN)
        .post("/project/gh/acme/deploy/pipeline", &json!({}))
        .await;
    sim.run_until_idle().await;
    let wf = sim.workflows(id_of(&created.body))[0].clone();
    let approval = wf.jobs[1].approval_request_id.unwrap();
    let reply = Api::new(&sim, "tok-reader")
        .post_empty(&format!("/workflow/{}/approve/{approval}", wf.id))
        .await;
    assert_eq!(reply.status, 403);
    assert_eq!(sim.workflow(wf.id).unwrap().status, WorkflowStatus::OnHold);
}

#[tokio::test]
async fn cancel_stops_running_jobs_and_finishes_the_workflow() {
    let sim = sim_with(vec![acme_api()]).await;
    let api = Api::new(&sim, TOKEN);
    let created = api.post("/project/gh/acme/api/pipeline", &json!({})).await;
    let pipeline = id_of(&created.body);
    sim.advance(Duration::from_secs(3)).await;
    let wf_id = sim.workflows(pipeline)[0].id;
    let reply = api.post_empty(&format!("/workflow/{wf_id}/cancel")).await;
    assert_eq!(reply.status, 202);
    let wf = sim.workflow(wf_id).unwrap();
    assert_eq!(wf.status, WorkflowStatus::Canceled);
    assert_eq!(wf.jobs[0].status, JobStatus::Canceled);
    assert_eq!(wf.jobs[1].status, JobStatus::NotRun);
    let body = api.get(&format!("/workflow/{wf_id}")).await.body;
    assert_eq!(body["canceled_by"], json!(sim.user_id("alice").unwrap()));
    assert!(body["stopped_at"].is_string());
    // Time moving on changes nothing any more; canceling again is harmless.
    sim.run_until_idle().await;
    assert_eq!(
        sim.workflow(wf_id).unwrap().jobs[0].status,
        JobStatus::Canceled
    );
    assert_eq!(
        api.post_empty(&format!("/workflow/{wf_id}/cancel"))
            .await
            .status,
        202
    );
    assert!(sim.pipeline_is_final(pipeline));
}

fn flaky_project() -> ProjectSpec {
    ProjectSpec::new("gh/acme/flaky").workflow(
        WorkflowSpec::new("ci")
            .job(JobSpec::new("build"))
            .job(
                JobSpec::new("unit")
                    .requires(["build"])
                    .fails_then_succeeds(),
            )
            .job(JobSpec::new("lint").requires(["build"]))
            .job(JobSpec::new("package").requires(["unit"])),
    )
}

#[tokio::test]
async fn rerun_from_failed_reruns_failed_jobs_and_their_dependents_only() {
    let sim = sim_with(vec![flaky_project()]).await;
    let api = Api::new(&sim, TOKEN);
    let created = api
        .post("/project/gh/acme/flaky/pipeline", &json!({}))
        .await;
    let pipeline = id_of(&created.body);
    sim.run_until_idle().await;
    let first = sim.workflows(pipeline)[0].clone();
    assert_eq!(first.status, WorkflowStatus::Failed);

    let running = api
        .post("/project/gh/acme/flaky/pipeline", &json!({}))
        .await;
    let running_wf = sim.workflows(id_of(&running.body))[0].id;
    assert_eq!(
        api.post(
            &format!("/workflow/{running_wf}/rerun"),
            &json!({"from_failed": true})
        )
        .await
        .status,
        400
    );

    let reply = api
        .post(
            &format!("/workflow/{}/rerun", first.id),
            &json!({"from_failed": true}),
        )
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let new_id: uuid::Uuid = reply.body["workflow_id"].as_str().unwrap().parse().unwrap();
    let rerun = sim.workflow(new_id).unwrap();
    assert_eq!(rerun.rerun_of, Some(first.id));
    assert_eq!(rerun.name, "ci");
    // build and lint succeeded: carried over unchanged; unit and package run again.
    assert_eq!(rerun.jobs[0].id, first.jobs[0].id);
    assert_eq!(rerun.jobs[2].id, first.jobs[2].id);
    assert_ne!(rerun.jobs[1].id, first.jobs[1].id);
    assert_eq!(rerun.jobs[1].attempt, 1);
    assert_eq!(rerun.jobs[3].status, JobStatus::Blocked);
    sim.run_until_idle().await;
    let rerun = sim.workflow(new_id).unwrap();
    assert_eq!(
        rerun.status,
        WorkflowStatus::Success,
        "the flaky job passes on its second attempt"
    );
    assert_eq!(sim.workflows(pipeline).len(), 2);
    assert!(sim.pipeline_is_final(pipeline));

    // Nothing failed any more.
    assert_eq!(
        api.post(
            &format!("/workflow/{new_id}/rerun"),
            &json!({"from_failed": true})
        )
        .await
        .status,
        400
    );
}

#[tokio::test]
async fn rerun_by_job_ids_reruns_those_jobs_and_dependents() {
    let sim = sim_with(vec![flaky_project()]).await;
    let api = Api::new(&sim, TOKEN);
    let created = api
        .post("/project/gh/acme/flaky/pipeline", &json!({}))
        .await;
    sim.run_until_idle().await;
    let first = sim.workflows(id_of(&created.body))[0].clone();
    let lint = first.jobs[2].id;
    let reply = api
        .post(
            &format!("/workflow/{}/rerun", first.id),
            &json!({"jobs": [lint]}),
        )
        .await;
    assert_eq!(reply.status, 202);
    let rerun = sim
        .workflow(reply.body["workflow_id"].as_str().unwrap().parse().unwrap())
        .unwrap();
    assert_ne!(rerun.jobs[2].id, lint, "lint reruns");
    assert_eq!(
        rerun.jobs[1].id, first.jobs[1].id,
        "unit is carried over (still failed)"
    );

    let both = api
        .post(
            &format!("/workflow/{}/rerun", first.id),
            &json!({"jobs": [lint], "from_failed": true}),
        )
        .await;
    assert_eq!(both.status, 400);
    let stranger = api
        .post(
            &format!("/workflow/{}/rerun", first.id),
            &json!({"jobs": [uuid::Uuid::new_v4()]}),
        )
        .await;
    assert_eq!(stranger.status, 400);

    let full = api
        .post_empty(&format!("/workflow/{}/rerun", first.id))
        .await;
    assert_eq!(full.status, 202);
    let full = sim
        .workflow(full.body["workflow_id"].as_str().unwrap().parse().unwrap())
        .unwrap();
    assert!(full.jobs.iter().zip(&first.jobs).all(|(a, b)| a.id != b.id));
}

#[tokio::test]
async fn pipeline_workflows_are_paginated_with_page_tokens() {
    let sim = Simulator::start_with(SimOptions {
        page_size: 2,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    sim.add_user("alice", TOKEN);
    let mut project = ProjectSpec::new("gh/acme/many");
    for i in 0..5 {
        project = project.workflow(WorkflowSpec::new(&format!("w{i}")).job(JobSpec::new("j")));
    }
    sim.add_project(project);
    let api = Api::new(&sim, TOKEN);
    let created = api.post("/project/gh/acme/many/pipeline", &json!({})).await;
    let id = created.body["id"].as_str().unwrap();

    let mut names = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &token {
            None => format!("/pipeline/{id}/workflow"),
            Some(t) => format!("/pipeline/{id}/workflow?page-token={t}"),
        };
        let page = api.get(&path).await;
        assert_eq!(page.status, 200);
        pages += 1;
        names.extend(
            page.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w["name"].as_str().unwrap().to_owned()),
        );
        match page.body["next_page_token"].as_str() {
            Some(next) => token = Some(next.to_owned()),
            None => {
                assert!(page.body["next_page_token"].is_null());
                break;
            }
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, vec!["w0", "w1", "w2", "w3", "w4"]);
    assert_eq!(
        api.get(&format!("/pipeline/{id}/workflow?page-token=garbage"))
            .await
            .status,
        400
    );
}

#[tokio::test]
async fn project_pipelines_list_newest_first_filtered_by_branch() {
    let sim = Simulator::start_with(SimOptions {
        page_size: 2,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    sim.add_user("alice", TOKEN);
    sim.add_project(acme_api());
    let api = Api::new(&sim, TOKEN);
    for branch in ["main", "dev", "main", "main", "dev"] {
        api.post("/project/gh/acme/api/pipeline", &json!({"branch": branch}))
            .await;
    }
    let first = api.get("/project/gh/acme/api/pipeline?branch=main").await;
    let numbers = |reply: &common::Reply| {
        reply.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["number"].as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(numbers(&first), vec![4, 3]);
    let token = first.body["next_page_token"].as_str().unwrap().to_owned();
    // A pipeline created between pages does not shift the second page.
    api.post("/project/gh/acme/api/pipeline", &json!({"branch": "main"}))
        .await;
    let second = api
        .get(&format!(
            "/project/gh/acme/api/pipeline?branch=main&page-token={token}"
        ))
        .await;
    assert_eq!(numbers(&second), vec![1]);
    assert!(second.body["next_page_token"].is_null());
    let all = api.get("/project/gh/acme/api/pipeline").await;
    assert_eq!(numbers(&all), vec![6, 5]);
}

#[tokio::test]
async fn unknown_ids_are_404_and_malformed_ids_400() {
    let sim = sim_with(vec![acme_api()]).await;
    let api = Api::new(&sim, TOKEN);
    let missing = uuid::Uuid::new_v4();
    for path in [
        format!("/pipeline/{missing}"),
        format!("/workflow/{missing}"),
        format!("/workflow/{missing}/job"),
    ] {
        let reply = api.get(&path).await;
        assert_eq!(reply.status, 404, "{path}");
        assert!(reply.body["message"].is_string());
    }
    assert_eq!(api.get("/pipeline/not-a-uuid").await.status, 400);
    assert_eq!(api.get("/nowhere").await.status, 404);
}

#[tokio::test]
async fn auto_advance_moves_jobs_in_real_time() {
    // Time scale 1000: the 30 s of jobs take ~30 ms of real time. Polls, no fixed sleeps.
    let sim = Simulator::start_with(SimOptions {
        auto_advance: Some(Duration::from_millis(5)),
        time_scale: 1000.0,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    sim.add_user("alice", TOKEN);
    sim.add_project(acme_api());
    let created = Api::new(&sim, TOKEN)
        .post("/project/gh/acme/api/pipeline", &json!({}))
        .await;
    let pipeline = id_of(&created.body);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !sim.pipeline_is_final(pipeline) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "auto-advance never finished the pipeline"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(sim.workflows(pipeline)[0].status, WorkflowStatus::Success);
}

#[tokio::test]
async fn config_files_load_in_toml_and_json() {
    let toml = r#"
        [[users]]
        login = "alice"
        tokens = [{ name = "ci", token = "t1" }]

        [[projects]]
        slug = "gh/acme/api"
        parameters = [
          { name = "run-workflow", type = "string", default = "build" },
          { name = "env", type = "enum", values = ["dev", "prod"], default = "dev" },
        ]

        [[projects.workflows]]
        name = "nightly"
        when = { equal = { parameter = "run-workflow", value = "nightly" } }
        jobs = [
          { name = "e2e", duration = 1.5 },
          { name = "hold", kind = "approval", requires = ["e2e"] },
          { name = "flaky", outcomes = ["failed", "success"] },
        ]
    "#;
    let config = circleci_sim::SimConfig::from_toml(toml).unwrap();
    let as_json = serde_json::to_string(&config).unwrap();
    assert_eq!(
        circleci_sim::SimConfig::from_json(&as_json).unwrap(),
        config
    );
    let project = &config.projects[0];
    assert_eq!(
        project.workflows[0].jobs[0].duration,
        Duration::from_millis(1500)
    );
    assert_eq!(
        project.workflows[0].jobs[1].kind,
        circleci_sim::JobKind::Approval
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sim.toml");
    std::fs::write(&path, toml).unwrap();
    let sim = Simulator::start().await.unwrap();
    sim.load_config(circleci_sim::SimConfig::from_file(&path).unwrap())
        .unwrap();
    let api = Api::new(&sim, "t1");
    let created = api
        .post(
            "/project/gh/acme/api/pipeline",
            &json!({"parameters": {"run-workflow": "nightly", "env": "qa"}}),
        )
        .await;
    assert_eq!(created.status, 201);
    assert_eq!(
        sim.pipelines()[0].state,
        PipelineState::Errored,
        "qa is not an allowed enum value"
    );
    assert_eq!(sim.pipelines()[0].token_name, "ci");
    assert!(
        sim.try_add_project(ProjectSpec::new("gh/acme/api"))
            .is_err(),
        "duplicate project"
    );
    assert!(
        sim.try_add_project(ProjectSpec::new("nope")).is_err(),
        "invalid slug"
    );
}

#[tokio::test]
async fn the_simulated_clock_starts_where_told_and_can_catch_up_with_the_wall_clock() {
    let start = chrono::DateTime::parse_from_rfc3339("2024-03-31T00:30:00Z")
        .unwrap()
        .to_utc();
    let sim = Simulator::start_with(SimOptions {
        start_time: Some(start),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    sim.add_user("alice", TOKEN);
    sim.add_project(acme_api());
    let created = Api::new(&sim, TOKEN)
        .post("/project/gh/acme/api/pipeline", &json!({}))
        .await;
    assert_eq!(created.body["created_at"], "2024-03-31T00:30:00.000Z");
    let before = chrono::Utc::now();
    sim.catch_up_to_wall_clock().await;
    assert!(sim.now() >= before);
    // Catching up ran the old pipeline to completion on the way.
    assert!(sim.pipeline_is_final(id_of(&created.body)));
}

#[tokio::test]
async fn logs_keep_only_the_most_recent_entries_when_bounded() {
    let sim = Simulator::start_with(SimOptions {
        log_capacity: 3,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    sim.add_user("alice", TOKEN);
    let api = Api::new(&sim, TOKEN);
    for path in ["/a", "/b", "/me", "/c", "/d"] {
        api.get(path).await;
    }
    let paths: Vec<String> = sim.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, vec!["/api/v2/me", "/api/v2/c", "/api/v2/d"]);
    assert_eq!(
        sim.counters().requests,
        5,
        "counters still count everything"
    );
}

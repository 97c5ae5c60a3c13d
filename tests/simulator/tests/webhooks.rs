//! Webhook management through the API and signed deliveries to a real local receiver.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;

use circleci_sim::{Faults, JobSpec, PayloadStyle, ProjectSpec, WorkflowSpec};
use common::{Api, Receiver, TOKEN, create_webhook, sim_with};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const SECRET: &str = "s3cret-signing-key";

fn project(slug: &str, style: PayloadStyle) -> ProjectSpec {
    ProjectSpec::new(slug).payload_style(style).workflow(
        WorkflowSpec::new("build")
            .job(JobSpec::new("compile"))
            .job(JobSpec::new("test").requires(["compile"]).fails()),
    )
}

/// Verifies `v1=<hex>` independently of the simulator's own signing code.
fn assert_signed(header: &str, body: &[u8], secret: &str) {
    let hex_sig = header
        .split(',')
        .find_map(|part| part.strip_prefix("v1="))
        .expect("a v1 signature");
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    mac.verify_slice(&hex::decode(hex_sig).unwrap())
        .expect("signature must verify");
}

async fn run_one_pipeline(sim: &circleci_sim::Simulator, slug: &str) -> Value {
    let api = Api::new(sim, TOKEN);
    let (path, body) = if slug.starts_with("circleci/") {
        (
            format!("/project/{slug}/pipeline/run"),
            json!({"checkout": {"branch": "main"}}),
        )
    } else {
        (
            format!("/project/{slug}/pipeline"),
            json!({"branch": "main"}),
        )
    };
    let created = api.post(&path, &body).await;
    assert_eq!(created.status, 201, "{}", created.text);
    sim.run_until_idle().await;
    created.body
}

#[tokio::test]
async fn oauth_style_deliveries_are_signed_and_carry_vcs() {
    let sim = sim_with(vec![project("gh/acme/api", PayloadStyle::Oauth)]).await;
    let receiver = Receiver::start().await;
    let api = Api::new(&sim, TOKEN);
    let project_id = sim.project_id("gh/acme/api").unwrap();
    let hook = create_webhook(
        &api,
        project_id,
        &receiver.url,
        SECRET,
        &["workflow-completed", "job-completed"],
    )
    .await;
    assert_eq!(hook.status, 201, "{}", hook.text);

    let created = run_one_pipeline(&sim, "gh/acme/api").await;
    let received = receiver.all();
    // compile + test job-completed, then workflow-completed.
    let types: Vec<&str> = received
        .iter()
        .map(|r| r.header("circleci-event-type"))
        .collect();
    assert_eq!(
        types,
        vec!["job-completed", "job-completed", "workflow-completed"]
    );
    for delivery in &received {
        assert_signed(
            delivery.header("circleci-signature"),
            &delivery.body,
            SECRET,
        );
        assert!(
            delivery
                .header("content-type")
                .starts_with("application/json")
        );
        let body = delivery.json();
        assert_eq!(body["type"], delivery.header("circleci-event-type"));
        assert_eq!(body["webhook"]["id"], hook.body["id"]);
        assert_eq!(body["webhook"]["name"], "triggers");
        assert_eq!(body["project"]["slug"], "github/acme/api");
        assert_eq!(body["pipeline"]["id"], created["id"]);
        assert_eq!(body["pipeline"]["vcs"]["branch"], "main");
        assert_eq!(
            body["pipeline"]["vcs"]["revision"].as_str().unwrap().len(),
            40
        );
        assert!(body["pipeline"].get("trigger_parameters").is_none());
        assert!(
            chrono::DateTime::parse_from_rfc3339(body["happened_at"].as_str().unwrap()).is_ok()
        );
        assert!(
            body["workflow"]["id"].is_string(),
            "OAuth job-completed carries the workflow"
        );
    }
    let event_ids: HashSet<String> = received
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(event_ids.len(), 3, "every event has its own id");
    let workflow_event = received[2].json();
    assert_eq!(workflow_event["workflow"]["status"], "failed");
    assert_eq!(received[1].json()["job"]["status"], "failed");
    assert_eq!(received[0].json()["job"]["name"], "compile");

    let deliveries = sim.deliveries();
    assert_eq!(deliveries.len(), 3);
    assert!(
        deliveries
            .iter()
            .all(|d| d.status == Some(200) && d.url == receiver.url && d.attempt == 1)
    );
}

#[tokio::test]
async fn app_style_deliveries_use_trigger_parameters_and_no_workflow_on_jobs() {
    let slug = "circleci/AbCdOrg/XyZProj";
    let sim = sim_with(vec![project(slug, PayloadStyle::App)]).await;
    let receiver = Receiver::start().await;
    let api = Api::new(&sim, TOKEN);
    let project_id = sim.project_id(slug).unwrap();
    assert_eq!(
        create_webhook(
            &api,
            project_id,
            &receiver.url,
            SECRET,
            &["job-completed", "workflow-completed"]
        )
        .await
        .status,
        201
    );
    run_one_pipeline(&sim, slug).await;
    let received = receiver.all();
    assert_eq!(received.len(), 3);
    for delivery in &received {
        assert_signed(
            delivery.header("circleci-signature"),
            &delivery.body,
            SECRET,
        );
        let body = delivery.json();
        assert!(body["pipeline"].get("vcs").is_none());
        assert_eq!(
            body["pipeline"]["trigger_parameters"]["git"]["branch"],
            "main"
        );
        assert_eq!(body["project"]["slug"], slug);
        if body["type"] == "job-completed" {
            assert!(
                body.get("workflow").is_none(),
                "App-style job-completed has no workflow object"
            );
        } else {
            assert_eq!(body["workflow"]["status"], "failed");
        }
    }
}

#[tokio::test]
async fn only_subscribed_events_are_delivered_and_only_for_their_project() {
    let sim = sim_with(vec![
        project("gh/acme/api", PayloadStyle::Oauth),
        project("gh/acme/other", PayloadStyle::Oauth),
    ])
    .await;
    let receiver = Receiver::start().await;
    let api = Api::new(&sim, TOKEN);
    create_webhook(
        &api,
        sim.project_id("gh/acme/api").unwrap(),
        &receiver.url,
        SECRET,
        &["workflow-completed"],
    )
    .await;
    run_one_pipeline(&sim, "gh/acme/other").await;
    assert!(receiver.all().is_empty());
    run_one_pipeline(&sim, "gh/acme/api").await;
    let types: Vec<String> = receiver
        .all()
        .iter()
        .map(|r| r.header("circleci-event-type").to_owned())
        .collect();
    assert_eq!(types, vec!["workflow-completed"]);
}

#[tokio::test]
async fn duplicate_deliveries_repeat_the_same_event() {
    let sim = sim_with(vec![project("gh/acme/api", PayloadStyle::Oauth)]).await;
    sim.set_faults(Faults {
        duplicate_deliveries: true,
        ..Faults::default()
    });
    let receiver = Receiver::start().await;
    let api = Api::new(&sim, TOKEN);
    create_webhook(
        &api,
        sim.project_id("gh/acme/api").unwrap(),
        &receiver.url,
        SECRET,
        &["workflow-completed"],
    )
    .await;
    run_one_pipeline(&sim, "gh/acme/api").await;
    let received = receiver.all();
    assert_eq!(received.len(), 2);
    assert_eq!(
        received[0].body, received[1].body,
        "byte-identical duplicate"
    );
    assert_eq!(
        received[0].header("circleci-signature"),
        received[1].header("circleci-signature")
    );
    let attempts: Vec<u32> = sim.deliveries().iter().map(|d| d.attempt).collect();
    assert_eq!(attempts, vec![1, 2]);
}

#[tokio::test]
async fn failed_deliveries_are_recorded_and_optionally_redelivered() {
    let sim = sim_with(vec![project("gh/acme/api", PayloadStyle::Oauth)]).await;
    sim.set_faults(Faults {
        redeliver_failed: 2,
        ..Faults::default()
    });
    let receiver = Receiver::start().await;
    *receiver.answer.lock().unwrap() = 500;
    let api = Api::new(&sim, TOKEN);
    create_webhook(
        &api,
        sim.project_id("gh/acme/api").unwrap(),
        &receiver.url,
        SECRET,
        &["workflow-completed"],
    )
    .await;
    run_one_pipeline(&sim, "gh/acme/api").await;
    let deliveries = sim.deliveries();
    assert_eq!(deliveries.len(), 3, "one attempt plus two redeliveries");
    assert!(deliveries.iter().all(|d| d.status == Some(500)));
    assert_eq!(
        deliveries
            .iter()
            .map(|d| d.event_id)
            .collect::<HashSet<_>>()
            .len(),
        1
    );

    // An unreachable receiver is a transport error, not a hang.
    sim.set_faults(Faults::default());
    sim.clear_deliveries();
    sim.add_webhook(
        "gh/acme/api",
        "http://127.0.0.1:9/hook",
        SECRET,
        &["workflow-completed"],
    )
    .unwrap();
    *receiver.answer.lock().unwrap() = 200;
    run_one_pipeline(&sim, "gh/acme/api").await;
    let deliveries = sim.deliveries();
    assert_eq!(deliveries.len(), 2);
    assert!(
        deliveries
            .iter()
            .any(|d| d.status.is_none() && d.error.is_some())
    );
    assert!(deliveries.iter().any(|d| d.status == Some(200)));
}

#[tokio::test]
async fn cancel_through_the_api_delivers_workflow_completed_canceled() {
    let sim = sim_with(vec![project("gh/acme/api", PayloadStyle::Oauth)]).await;
    let receiver = Receiver::start().await;
    let api = Api::new(&sim, TOKEN);
    create_webhook(
        &api,
        sim.project_id("gh/acme/api").unwrap(),
        &receiver.url,
        SECRET,
        &["workflow-completed", "job-completed"],
    )
    .await;
    let created = api.post("/project/gh/acme/api/pipeline", &json!({})).await;
    let workflow = sim.workflows(created.body["id"].as_str().unwrap().parse().unwrap())[0].id;
    assert_eq!(
        api.post_empty(&format!("/workflow/{workflow}/cancel"))
            .await
            .status,
        202
    );
    sim.flush_deliveries().await;
    let received: Vec<Value> = receiver.all().iter().map(common::Received::json).collect();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0]["job"]["status"], "canceled");
    assert_eq!(received[1]["workflow"]["status"], "canceled");
}

#[tokio::test]
async fn webhook_crud_masks_the_secret_and_enforces_five_per_project() {
    let sim = sim_with(vec![project("gh/acme/api", PayloadStyle::Oauth)]).await;
    let api = Api::new(&sim, TOKEN);
    let project_id = sim.project_id("gh/acme/api").unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        let reply = create_webhook(
            &api,
            project_id,
            &format!("https://hooks.example.com/{i}"),
            SECRET,
            &["workflow-completed"],
        )
        .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        assert_eq!(reply.body["signing-secret"], "****-key");
        ids.push(reply.body["id"].as_str().unwrap().to_owned());
    }
    let sixth = create_webhook(
        &api,
        project_id,
        "https://hooks.example.com/6",
        SECRET,
        &["workflow-completed"],
    )
    .await;
    assert_eq!(sixth.status, 400);
    assert!(sixth.body["message"].as_str().unwrap().contains('5'));

    let listed = api
        .get(&format!(
            "/webhook?scope-id={project_id}&scope-type=project"
        ))
        .await;
    assert_eq!(listed.status, 200);
    let items = listed.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    assert!(items.iter().all(|h| h["signing-secret"] == "****-key"));
    assert!(!listed.text.contains(SECRET));
    assert!(listed.body["next_page_token"].is_null());

    let updated = api.put(&format!("/webhook/{}", ids[0]), &json!({"url": "https://hooks.example.com/new", "signing-secret": "rotated-secret-9999"})).await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.body["url"], "https://hooks.example.com/new");
    assert_eq!(updated.body["signing-secret"], "****9999");
    assert_eq!(updated.body["events"], json!(["workflow-completed"]));
    let fetched = api.get(&format!("/webhook/{}", ids[0])).await;
    assert_eq!(fetched.body["url"], "https://hooks.example.com/new");

    let views = sim.webhooks("github/acme/api");
    assert_eq!(views.len(), 5);
    assert_eq!(
        views[0].signing_secret, "rotated-secret-9999",
        "the simulator keeps the real secret"
    );
    assert_eq!(views[0].url, "https://hooks.example.com/new");
    let deleted = api.delete(&format!("/webhook/{}", ids[1])).await;
    assert_eq!(deleted.status, 200);
    assert_eq!(api.get(&format!("/webhook/{}", ids[1])).await.status, 404);
    assert_eq!(
        create_webhook(
            &api,
            project_id,
            "https://hooks.example.com/6",
            SECRET,
            &["job-completed"]
        )
        .await
        .status,
        201
    );
}

#[tokio::test]
async fn invalid_webhook_requests_are_400() {
    let sim = sim_with(vec![project("gh/acme/api", PayloadStyle::Oauth)]).await;
    let api = Api::new(&sim, TOKEN);
    let project_id = sim.project_id("gh/acme/api").unwrap();
    assert_eq!(
        create_webhook(
            &api,
            project_id,
            "http://hooks.example.com/x",
            SECRET,
            &["workflow-completed"]
        )
        .await
        .status,
        400,
        "https only (except loopback)"
    );
    assert_eq!(
        create_webhook(&api, project_id, "https://h.example.com", SECRET, &["push"])
            .await
            .status,
        400
    );
    assert_eq!(
        create_webhook(&api, project_id, "https://h.example.com", SECRET, &[])
            .await
            .status,
        400
    );
    assert_eq!(
        create_webhook(
            &api,
            uuid::Uuid::new_v4(),
            "https://h.example.com",
            SECRET,
            &["job-completed"]
        )
        .await
        .status,
        404
    );
    let missing_fields = api.post("/webhook", &json!({"name": "x"})).await;
    assert_eq!(missing_fields.status, 400);
    assert_eq!(api.get("/webhook?scope-type=project").await.status, 400);
    assert!(sim.deliveries().is_empty());
}

//! Calls that succeed: one pipeline per logical trigger, replays, selection, history.

use std::collections::BTreeSet;

use chrono::Duration as Delta;
use serde_json::json;
use shared::store::{ClaimKey, ClaimKind, TriggerStatus};
use shared::triggers::http::{CallInput, request};

use crate::harness::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_starts_one_pipeline_with_defaults_and_fixed_values() {
    let h = Harness::start().await;
    let answer = h
        .call(
            "deploy-staging",
            &h.keys.bot,
            Some("release-1.4.2"),
            json!({"parameters": {"version": "1.4.2", "shards": 4}}),
        )
        .await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    assert_eq!(answer.header("idempotent-replayed"), Some("false"));
    let id = answer.trigger_id();
    assert_eq!(
        answer.header("location"),
        Some(format!("/v1/triggers/{id}").as_str())
    );
    let body = &answer.body;
    assert_eq!(body["status"], "triggered");
    assert_eq!(body["endpoint"], "deploy-staging");
    assert_eq!(body["client"], "release-bot");
    assert_eq!(body["source"], "http");
    assert_eq!(body["branch"], "main", "the fixed branch is the default");
    assert_eq!(body["idempotency_key"], "release-1.4.2");
    let expected = json!({"version": "1.4.2", "shards": 4, "dry_run": false, "region": "eu", "env": "staging"});
    assert_eq!(body["parameters"], expected);

    let pipelines = h.sim.pipelines();
    assert_eq!(pipelines.len(), 1);
    let pipeline = &pipelines[0];
    assert_eq!(
        serde_json::Value::Object(pipeline.parameters.clone()),
        expected
    );
    assert_eq!(pipeline.branch.as_deref(), Some("main"));
    assert_eq!(body["pipeline"]["id"], pipeline.id.to_string());
    assert_eq!(body["pipeline"]["number"], pipeline.number);
    assert!(
        body["pipeline"]["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!(
                "/pipelines/github/acme/deploy/{}",
                pipeline.number
            )),
        "{}",
        body["pipeline"]
    );

    let record = h.record(id).await;
    assert_eq!(record.status, TriggerStatus::Triggered);
    assert_eq!(record.detail.client.as_deref(), Some("release-bot"));
    assert_eq!(record.origin, record.id, "an HTTP call is its own origin");
    assert_eq!(record.retry_at, None, "HTTP triggers are never swept");

    // The workflow reaches its approval; reading the trigger asks CircleCI.
    h.sim.run_until_idle().await;
    let read = h.get(&format!("/v1/triggers/{id}"), &h.keys.bot).await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.body["workflows"][0]["name"], "deploy");
    assert_eq!(read.body["workflows"][0]["status"], "on_hold");
    assert_eq!(read.body["pipeline_final"], false);
    assert_eq!(
        h.record(id).await.workflows.len(),
        1,
        "the refresh is stored"
    );
}

/// Between receiving a call and answering it, the API makes the engine's three store
/// requests and nothing else: the open, then the settle with the binding beside it (the
/// relay's shape: a write before the create, one after). Counted on a warm process (the
/// first call of an endpoint also registers its source, once).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_warm_call_makes_three_store_requests_the_open_then_the_settle_and_binding() {
    let h = Harness::start().await;
    let body = || json!({"parameters": {"version": "1.4.2"}});
    let first = h
        .call("deploy-staging", &h.keys.bot, Some("warm-0"), body())
        .await;
    assert_eq!(first.status, 202, "{}", first.body);
    h.dynamo_requests.take();
    let answer = h
        .call("deploy-staging", &h.keys.bot, Some("warm-1"), body())
        .await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    let operations = h.dynamo_requests.take_operations();
    assert_eq!(operations.len(), 3, "{operations:?}");
    assert_eq!(operations[0], "PutItem", "the open first: {operations:?}");
    let after: BTreeSet<&str> = operations[1..].iter().map(String::as_str).collect();
    assert_eq!(
        after,
        BTreeSet::from(["PutItem", "UpdateItem"]),
        "the settle and the binding: {operations:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chosen_branch_must_be_allowed_and_either_current_key_works() {
    let h = Harness::start().await;
    let answer = h
        .call(
            "deploy-staging",
            &h.keys.bot_previous,
            None,
            json!({"branch": "release/1.4", "parameters": {"version": "1.4.2"}}),
        )
        .await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    assert_eq!(answer.body["branch"], "release/1.4");
    assert_eq!(h.sim.pipelines()[0].branch.as_deref(), Some("release/1.4"));

    for branch in ["feature/x", "release/1.4/hotfix"] {
        let refused = h
            .call(
                "deploy-staging",
                &h.keys.bot,
                None,
                json!({"branch": branch, "parameters": {"version": "1.4.2"}}),
            )
            .await;
        assert_eq!(refused.status, 422, "{branch}: {}", refused.body);
        assert_eq!(refused.body["errors"][0]["pointer"], "/branch");
        assert!(
            refused.body["errors"][0]["detail"]
                .as_str()
                .unwrap()
                .contains("allowed: main, release/*")
        );
    }
    assert_eq!(h.pipelines(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_key_replays_the_answer_and_another_request_under_it_is_refused() {
    let h = Harness::start().await;
    let body = json!({"parameters": {"version": "2.0.0"}});
    let first = h
        .call("deploy-staging", &h.keys.bot, Some("k-1"), body.clone())
        .await;
    assert_eq!(first.status, 202);
    // Spelling a default out is the same request.
    let spelled = json!({"branch": "main", "parameters": {"version": "2.0.0", "dry_run": false}});
    for replay_body in [body.clone(), spelled] {
        let replay = h
            .call("deploy-staging", &h.keys.bot, Some("k-1"), replay_body)
            .await;
        assert_eq!(replay.status, 202);
        assert_eq!(replay.header("idempotent-replayed"), Some("true"));
        assert_eq!(replay.body["id"], first.body["id"]);
        assert_eq!(replay.body["pipeline"], first.body["pipeline"]);
    }
    assert_eq!(h.pipelines(), 1);

    let other = h
        .call(
            "deploy-staging",
            &h.keys.bot,
            Some("k-1"),
            json!({"parameters": {"version": "2.0.1"}}),
        )
        .await;
    assert_eq!(other.status, 422, "{}", other.body);
    assert_eq!(other.kind(), "idempotency-key-reused");
    assert_eq!(h.pipelines(), 1);
    let audit = h.record(other.trigger_id()).await;
    assert_eq!(audit.status, TriggerStatus::Rejected);
    assert_eq!(audit.detail.idempotency_key.as_deref(), Some("k-1"));

    // Keys belong to a client: another client's identical key is another trigger.
    let cms = h
        .call("deploy-staging", &h.keys.cms, Some("k-1"), body)
        .await;
    assert_eq!(cms.status, 202);
    assert_ne!(cms.body["id"], first.body["id"]);
    assert_eq!(h.pipelines(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn twenty_concurrent_identical_requests_start_one_pipeline() {
    let h = std::sync::Arc::new(Harness::start().await);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move {
                h.call(
                    "deploy-staging",
                    &h.keys.bot,
                    Some("burst-key"),
                    json!({"parameters": {"version": "3.0.0"}}),
                )
                .await
            })
        })
        .collect();
    let mut ids = BTreeSet::new();
    let (mut accepted, mut in_progress) = (0, 0);
    for task in tasks {
        let answer = task.await.unwrap();
        match answer.status {
            202 => {
                accepted += 1;
                ids.insert(answer.body["id"].as_str().unwrap().to_owned());
            }
            409 => {
                in_progress += 1;
                assert_eq!(answer.kind(), "request-in-progress");
                assert!(answer.header("retry-after").is_some());
            }
            other => panic!("unexpected {other}: {}", answer.body),
        }
    }
    assert_eq!(accepted + in_progress, 20);
    assert!(accepted >= 1);
    assert_eq!(ids.len(), 1, "every 202 names the same trigger");
    assert_eq!(h.pipelines(), 1, "one pipeline in the simulator");
    let records = h.records("deploy-staging").await;
    assert_eq!(
        records.len(),
        1,
        "duplicates in flight leave no extra records"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_duplicate_while_the_first_is_in_progress_gets_409_with_retry_after() {
    let h = Harness::start().await;
    // Claim the key as a first request still running would have.
    let endpoint = h.api.catalog().endpoint("deploy-staging").unwrap();
    let input = CallInput {
        parameters: json!({"version": "4.0.0"}).as_object().unwrap().clone(),
        ..CallInput::default()
    };
    let fingerprint = request::validate(endpoint, &input)
        .unwrap()
        .fingerprint(endpoint);
    let key = ClaimKey::new(ClaimKind::Client, &["release-bot", "slow-key"]);
    h.store
        .claim(&key, &fingerprint, std::time::Duration::from_secs(90))
        .await
        .unwrap();
    let answer = h
        .call(
            "deploy-staging",
            &h.keys.bot,
            Some("slow-key"),
            json!({"parameters": {"version": "4.0.0"}}),
        )
        .await;
    assert_eq!(answer.status, 409, "{}", answer.body);
    assert_eq!(answer.kind(), "request-in-progress");
    assert_eq!(answer.header("retry-after"), Some("90"));
    assert_eq!(h.pipelines(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_key_every_call_is_its_own_trigger() {
    let h = Harness::start().await;
    let body = json!({"parameters": {"version": "1.0.0"}});
    let first = h
        .call("deploy-staging", &h.keys.bot, None, body.clone())
        .await;
    let second = h.call("deploy-staging", &h.keys.bot, None, body).await;
    assert_eq!((first.status, second.status), (202, 202));
    assert_ne!(first.body["id"], second.body["id"]);
    assert_eq!(h.pipelines(), 2);
    assert!(first.body.get("idempotency_key").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approve_acts_on_the_workflow_the_callers_trigger_started() {
    let h = Harness::start().await;
    let deploy = h
        .call(
            "deploy-staging",
            &h.keys.bot,
            None,
            json!({"parameters": {"version": "5.0.0"}}),
        )
        .await;
    let deploy_id = deploy.trigger_id();
    h.sim.run_until_idle().await;

    let approve = h
        .call(
            "approve-release",
            &h.keys.bot,
            Some("approve-5.0.0"),
            json!({"select": format!("trigger:{deploy_id}")}),
        )
        .await;
    assert_eq!(approve.status, 202, "{}", approve.body);
    assert_eq!(approve.body["action"], "approve");
    let pipeline_id = deploy.body["pipeline"]["id"].as_str().unwrap();
    assert_eq!(approve.body["acted_on_pipeline"], pipeline_id);
    h.sim.run_until_idle().await;
    let workflows = h.sim.workflows(pipeline_id.parse().unwrap());
    assert_eq!(
        workflows[0].status,
        circleci_sim::WorkflowStatus::Success,
        "approved, so `ship` ran"
    );

    // Approving again: nothing is on hold any more.
    let again = h
        .call(
            "approve-release",
            &h.keys.bot,
            None,
            json!({"select": pipeline_id}),
        )
        .await;
    assert_eq!(again.status, 409, "{}", again.body);
    assert_eq!(again.kind(), "workflow-not-actionable");
    assert_eq!(again.body["retry_with_new_key"], false);

    // A trigger of an endpoint this client cannot see is no selection at all.
    let prod = h.call("deploy-prod", &h.keys.admin, None, json!({})).await;
    assert_eq!(prod.status, 202);
    let hidden = h
        .call(
            "approve-release",
            &h.keys.bot,
            None,
            json!({"select": format!("trigger:{}", prod.body["id"].as_str().unwrap())}),
        )
        .await;
    assert_eq!(hidden.status, 422, "{}", hidden.body);
    assert_eq!(hidden.body["errors"][0]["pointer"], "/select");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_shows_the_clients_own_calls_newest_first_in_pages() {
    let h = Harness::start().await;
    let mut bot_visible = Vec::new();
    let mut cms_calls = Vec::new();
    for (endpoint, key, body) in [
        (
            "deploy-staging",
            &h.keys.bot,
            json!({"parameters": {"version": "1.0.0"}}),
        ),
        ("deploy-prod", &h.keys.admin, json!({})),
        (
            "deploy-staging",
            &h.keys.cms,
            json!({"parameters": {"version": "1.0.1"}}),
        ),
        (
            "deploy-staging",
            &h.keys.bot,
            json!({"parameters": {"version": "bad"}}),
        ),
        (
            "approve-release",
            &h.keys.bot,
            json!({"select": "pipeline:00000000-0000-0000-0000-000000000001"}),
        ),
        ("deploy-prod", &h.keys.admin, json!({})),
        (
            "deploy-staging",
            &h.keys.bot,
            json!({"parameters": {"version": "1.0.2"}}),
        ),
    ] {
        h.clock.advance(Delta::seconds(1));
        let idempotency_key = format!("private-plan-{}", bot_visible.len() + cms_calls.len());
        let answer = h.call(endpoint, key, Some(&idempotency_key), body).await;
        if key == &h.keys.bot {
            bot_visible.push(answer.trigger_id().to_string());
        } else if key == &h.keys.cms {
            cms_calls.push((answer.trigger_id().to_string(), idempotency_key));
        }
    }
    bot_visible.reverse();

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/v1/triggers?limit=2&cursor={cursor}"),
            None => "/v1/triggers?limit=2".to_owned(),
        };
        let page = h.get(&path, &h.keys.bot).await;
        assert_eq!(page.status, 200, "{}", page.body);
        pages += 1;
        for item in page.body["items"].as_array().unwrap() {
            assert_ne!(item["endpoint"], "deploy-prod");
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(seen, bot_visible, "newest first, every record once");

    let only = h
        .get("/v1/triggers?source=approve-release", &h.keys.bot)
        .await;
    assert_eq!(only.body["items"].as_array().unwrap().len(), 1);
    // Clients of the same endpoint see only their own calls, keys and parameters.
    let staging = h
        .get("/v1/triggers?source=deploy-staging", &h.keys.cms)
        .await;
    let items = staging.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", staging.body);
    let (cms_id, cms_key) = &cms_calls[0];
    assert_eq!(items[0]["id"], cms_id.as_str());
    assert_eq!(items[0]["idempotency_key"], cms_key.as_str());
    let listed = h.get("/v1/triggers", &h.keys.bot).await.body.to_string();
    assert!(!listed.contains(cms_key.as_str()) && !listed.contains("1.0.1"));
    let cross = h.get(&format!("/v1/triggers/{cms_id}"), &h.keys.bot).await;
    assert_eq!(
        (cross.status, cross.kind()),
        (404, "not-found"),
        "another client's call of the same endpoint does not exist for this one"
    );
    assert!(!cross.body.to_string().contains(cms_key.as_str()));
    let back = h
        .get(&format!("/v1/triggers/{}", bot_visible[0]), &h.keys.cms)
        .await;
    assert_eq!(back.status, 404);
    h.clock.advance(Delta::seconds(61)); // cms's own rate: 3 a minute
    let own = h.get(&format!("/v1/triggers/{cms_id}"), &h.keys.cms).await;
    assert_eq!(own.status, 200);
    // Nor can it act through another client's trigger.
    let borrowed = h
        .call(
            "approve-release",
            &h.keys.bot,
            None,
            json!({"select": format!("trigger:{cms_id}")}),
        )
        .await;
    assert_eq!(borrowed.status, 422, "{}", borrowed.body);

    let forbidden = h.get("/v1/triggers?source=deploy-prod", &h.keys.bot).await;
    assert_eq!(forbidden.status, 403);
    let bad_limit = h.get("/v1/triggers?limit=1000", &h.keys.bot).await;
    assert_eq!(bad_limit.status, 422);
    assert_eq!(bad_limit.body["errors"][0]["parameter"], "limit");
    let first = h.get("/v1/triggers?limit=2", &h.keys.bot).await;
    let foreign_cursor = first.body["next_cursor"].as_str().unwrap();
    let replayed_by_cms = h
        .get(
            &format!("/v1/triggers?cursor={foreign_cursor}"),
            &h.keys.cms,
        )
        .await;
    assert_eq!(
        replayed_by_cms.status, 422,
        "a cursor only continues its own listing"
    );
    let garbage = h.get("/v1/triggers?cursor=bm9wZQ", &h.keys.bot).await;
    assert_eq!(garbage.status, 422);

    let prod_id = h.records("deploy-prod").await[0].id;
    let hidden = h.get(&format!("/v1/triggers/{prod_id}"), &h.keys.bot).await;
    assert_eq!(
        hidden.status, 404,
        "another client's trigger does not exist for this one"
    );
    let visible = h
        .get(&format!("/v1/triggers/{prod_id}"), &h.keys.admin)
        .await;
    assert_eq!(visible.status, 200);
}

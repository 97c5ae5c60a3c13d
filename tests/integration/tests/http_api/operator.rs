//! `POST /v1/schedules/{name}/runs`: an `operator = true` client runs a schedule at one of
//! its slots (once per slot, whoever asks) or now; pause is honoured unless overridden.

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use shared::clock::Clock;
use shared::config::schedule::ScheduleTiming;
use shared::store::{PauseScope, SourceKind, TriggerSource, TriggerStatus};
use shared::triggers::scheduled::calendar::due_slots;

use super::harness::Harness;

/// The newest slot of `nightly-deploy` (02:00 Europe/Berlin) before the harness's now.
fn last_slot(h: &Harness) -> DateTime<Utc> {
    let timing = ScheduleTiming::new("0 2 * * *", "Europe/Berlin").unwrap();
    let now = h.clock.now();
    *due_slots(&timing, now - Duration::days(2), now)
        .iter()
        .map(|slot| &slot.at)
        .next_back()
        .unwrap()
}

fn runs(h: &Harness, schedule: &str, key: Option<&str>) -> reqwest::RequestBuilder {
    let request = h
        .http
        .post(format!("{}/v1/schedules/{schedule}/runs", h.url));
    match key {
        Some(key) => request.bearer_auth(key),
        None => request,
    }
}

async fn schedule_records(h: &Harness) -> Vec<shared::store::TriggerRecord> {
    h.store
        .list_by_source(
            &TriggerSource::new(SourceKind::Schedule, "nightly-deploy"),
            shared::store::PageRequest::first(100),
        )
        .await
        .unwrap()
        .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_at_a_slot_twice_starts_one_pipeline_with_the_slots_zone_date() {
    let h = Harness::start().await;
    let slot = last_slot(&h);
    let at = slot.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let first = h
        .send(runs(&h, "nightly-deploy", Some(&h.keys.ops)).json(&json!({"at": at})))
        .await;
    assert_eq!(first.status, 202, "{:#}", first.body);
    assert_eq!(first.body["fired"], 1);
    assert_eq!(first.body["slot"], at);
    assert_eq!(first.body["triggers"][0]["status"], "triggered");
    let again = h
        .send(runs(&h, "nightly-deploy", Some(&h.keys.ops)).json(&json!({"at": at})))
        .await;
    assert_eq!(again.status, 200, "{:#}", again.body);
    assert_eq!(
        (
            again.body["fired"].as_u64(),
            again.body["replayed"].as_u64()
        ),
        (Some(0), Some(1))
    );
    assert_eq!(
        again.body["triggers"][0]["id"],
        first.body["triggers"][0]["id"]
    );
    assert_eq!(h.pipelines(), 1);

    // The parameter template rendered the slot's date in the schedule's zone.
    let zone = ScheduleTiming::new("0 2 * * *", "Europe/Berlin")
        .unwrap()
        .zone;
    let local_date = slot.with_timezone(&zone).format("%Y-%m-%d").to_string();
    let pipeline = &h.sim.pipelines()[0];
    assert_eq!(pipeline.parameters["day"], json!(local_date));
    assert_eq!(pipeline.parameters["env"], "nightly");

    let records = schedule_records(&h).await;
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert!(record.detail.manual);
    assert_eq!(record.detail.operator.as_deref(), Some("ops"));
    assert_eq!(record.detail.slot.as_deref(), Some(at.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_operator_clients_may_run_and_bad_slots_are_refused_without_a_trace() {
    let h = Harness::start().await;
    let slot = last_slot(&h);
    let unauthenticated = h
        .send(runs(&h, "nightly-deploy", None).json(&json!({})))
        .await;
    assert_eq!(unauthenticated.status, 401);
    let not_operator = h
        .send(runs(&h, "nightly-deploy", Some(&h.keys.bot)).json(&json!({})))
        .await;
    assert_eq!(not_operator.status, 403);
    assert_eq!(not_operator.kind(), "forbidden");
    let unknown = h
        .send(runs(&h, "nightly-deplyo", Some(&h.keys.ops)).json(&json!({})))
        .await;
    assert_eq!(unknown.status, 404);
    let off_slot = h
        .send(
            runs(&h, "nightly-deploy", Some(&h.keys.ops))
                .json(&json!({"at": (slot + Duration::minutes(30)).to_rfc3339()})),
        )
        .await;
    assert_eq!(off_slot.status, 422, "{:#}", off_slot.body);
    assert!(
        off_slot.body["detail"]
            .as_str()
            .unwrap()
            .contains("is not a slot of schedule `nightly-deploy` (0 2 * * * in Europe/Berlin)"),
        "{:#}",
        off_slot.body
    );
    let future = h
        .send(
            runs(&h, "nightly-deploy", Some(&h.keys.ops))
                .json(&json!({"at": (slot + Duration::days(2)).to_rfc3339()})),
        )
        .await;
    assert_eq!(future.status, 422, "{:#}", future.body);
    let malformed = h
        .send(
            runs(&h, "nightly-deploy", Some(&h.keys.ops))
                .header("Content-Type", "application/json")
                .body(r#"{"at": "yesterday"}"#),
        )
        .await;
    assert_eq!(malformed.status, 400);
    let wrong_method = h
        .send(
            h.http
                .get(format!("{}/v1/schedules/nightly-deploy/runs", h.url))
                .bearer_auth(&h.keys.ops),
        )
        .await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(h.pipelines(), 0);
    assert!(schedule_records(&h).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_schedule_is_refused_unless_the_run_overrides_it_and_says_so() {
    let h = Harness::start().await;
    h.store
        .pause(
            &PauseScope::Schedule("nightly-deploy".into()),
            Some("freeze"),
            Some("ops"),
        )
        .await
        .unwrap();
    let refused = h
        .send(runs(&h, "nightly-deploy", Some(&h.keys.ops)).json(&json!({"run_id": "CHG-9"})))
        .await;
    assert_eq!(refused.status, 409, "{:#}", refused.body);
    assert_eq!(refused.kind(), "schedule-paused");
    let detail = refused.body["detail"].as_str().unwrap();
    assert!(
        detail.contains("schedule:nightly-deploy paused: freeze"),
        "{detail}"
    );
    assert!(detail.contains("\"ignore_pause\": true"), "{detail}");
    assert_eq!(h.pipelines(), 0);

    let body = json!({"run_id": "CHG-9", "ignore_pause": true});
    let overridden = h
        .send(runs(&h, "nightly-deploy", Some(&h.keys.ops)).json(&body))
        .await;
    assert_eq!(overridden.status, 202, "{:#}", overridden.body);
    assert_eq!(
        overridden.body["ignored_pause"],
        "schedule:nightly-deploy paused: freeze; run anyway by ops"
    );
    // The same run id replays.
    let replay = h
        .send(runs(&h, "nightly-deploy", Some(&h.keys.ops)).json(&body))
        .await;
    assert_eq!(replay.status, 200);
    assert_eq!(h.pipelines(), 1);
    let records = schedule_records(&h).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, TriggerStatus::Triggered);
    assert_eq!(records[0].detail.slot.as_deref(), Some("manual:CHG-9"));
    assert_eq!(
        records[0].detail.ignored_pause.as_deref(),
        Some("schedule:nightly-deploy paused: freeze; run anyway by ops")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_is_for_operator_clients_only() {
    let h = Harness::start().await;
    let page = |key: Option<&str>| {
        let request = h.http.get(format!("{}/v1/status", h.url));
        match key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    };
    assert_eq!(h.send(page(None)).await.status, 401);
    let not_operator = h.send(page(Some(&h.keys.bot))).await;
    assert_eq!(not_operator.status, 403);
    assert_eq!(not_operator.kind(), "forbidden");

    // A run shows on the page, with its schedule's next fire times in its zone.
    let ran = h
        .send(runs(&h, "nightly-deploy", Some(&h.keys.ops)).json(&json!({})))
        .await;
    assert_eq!(ran.status, 202, "{:#}", ran.body);
    let shown = h.send(page(Some(&h.keys.ops))).await;
    assert_eq!(shown.status, 200);
    assert!(
        shown
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{:?}",
        shown.headers
    );
    let html = shown.body.as_str().unwrap();
    assert!(html.contains("<td>nightly-deploy</td>"), "{html}");
    assert!(html.contains("Europe/Berlin"), "{html}");
    assert!(html.contains("schedule:nightly-deploy"), "{html}");
}

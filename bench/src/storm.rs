//! Storm: signed `workflow-completed` deliveries, some of them duplicates by event id,
//! posted concurrently to the webhook acceptor served on loopback (queued in the embedded
//! queue, settled by `serve`'s worker running beside it); one chain rule starts a
//! downstream pipeline per unique event. Latency is the acceptor's answer; `settled_seconds`
//! is when the worker had settled every delivery.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shared::triggers::chained::queue::embedded::{EmbeddedWorker, SqliteDeliveryQueue};
use shared::triggers::chained::webhook::{SIGNATURE_HEADER, sign_v1};
use shared::triggers::chained::{Receiver, WEBHOOK_PATH, WebhookAcceptor, webhook_router};
use shared::wiring::ContextOptions;

use crate::latency::Percentiles;
use crate::setup::{DOWNSTREAM, PROJECT, UNCONSTRAINED_RATE, WEBHOOK_SECRET, system};
use circleci_sim::Faults;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StormResult {
    pub deliveries: usize,
    pub unique_events: usize,
    pub concurrency: usize,
    pub triggered: usize,
    pub wall_seconds: f64,
    /// From the first post until the worker had settled every queued delivery.
    #[serde(default)]
    pub settled_seconds: f64,
    pub latency_ms: Percentiles,
    /// HTTP status → deliveries answered with it.
    pub statuses: BTreeMap<u16, usize>,
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A `workflow-completed` event of `PROJECT`'s `build` workflow, as CircleCI sends it.
pub fn event(id: uuid::Uuid, pipeline_number: u64, at: DateTime<Utc>) -> Value {
    let repository = "https://github.com/acme/api";
    json!({
        "id": id,
        "type": "workflow-completed",
        "happened_at": rfc3339(at),
        "webhook": { "id": uuid::Uuid::new_v4(), "name": "circleci-triggers" },
        "project": { "id": uuid::Uuid::new_v4(), "name": "api", "slug": "github/acme/api" },
        "organization": { "id": uuid::Uuid::new_v4(), "name": "acme" },
        "workflow": {
            "id": uuid::Uuid::new_v4(),
            "name": "build",
            "created_at": rfc3339(at - chrono::Duration::minutes(3)),
            "stopped_at": rfc3339(at),
            "url": "https://app.circleci.com/pipelines/workflows/x",
            "status": "success",
        },
        "pipeline": {
            "id": uuid::Uuid::new_v4(),
            "number": pipeline_number,
            "created_at": rfc3339(at - chrono::Duration::minutes(4)),
            "trigger": { "type": "webhook" },
            "vcs": {
                "provider_name": "github",
                "origin_repository_url": repository,
                "target_repository_url": repository,
                "revision": "0123456789abcdef0123456789abcdef01234567",
                "branch": "main",
                "commit": { "subject": "change", "body": "" },
            },
        },
    })
}

pub async fn run(deliveries: usize, concurrency: usize) -> anyhow::Result<StormResult> {
    let start: DateTime<Utc> = "2026-11-28T10:00:00Z".parse()?;
    let rules = format!(
        "[[chain]]\nname = \"deploy-after-build\"\n\
         when = {{ project = \"{PROJECT}\", workflow = \"build\", status = [\"success\"] }}\n\
         [[chain.then]]\naction = \"pipeline\"\nproject = \"{DOWNSTREAM}\"\nbranch = \"main\"\n"
    );
    let system = system(start, &rules, ContextOptions::default()).await?;
    system
        .sim
        .set_faults(Faults::rate_limited(UNCONSTRAINED_RATE, 1000));
    let receiver = Arc::new(Receiver::from_context(&system.context)?);
    let queue = SqliteDeliveryQueue::in_memory(system.context.clock.clone())?;
    let acceptor = Arc::new(WebhookAcceptor::new(
        system.context.secrets.clone(),
        Arc::new(queue.clone()),
        system.context.clock.clone(),
    ));
    let (stop_worker, worker_stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(
        EmbeddedWorker::new(queue.clone(), receiver).run(async move {
            let _ = worker_stopped.await;
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}{WEBHOOK_PATH}", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, webhook_router(acceptor)).await });

    // In every ten deliveries, seven new events then three repeats of events sent so far
    // (some of them still being handled): 30 % duplicates, interleaved like redeliveries.
    let mut order = Vec::with_capacity(deliveries);
    let mut unique = 0;
    for i in 0..deliveries {
        if i % 10 < 7 || unique == 0 {
            order.push(unique);
            unique += 1;
        } else {
            order.push((i * 7919) % unique);
        }
    }
    let secret = SecretString::from(WEBHOOK_SECRET.to_owned());
    let bodies: Vec<Vec<u8>> = (0..unique)
        .map(|n| serde_json::to_vec(&event(uuid::Uuid::new_v4(), n as u64 + 1, start)))
        .collect::<Result<_, _>>()?;

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(30))
        .build()?;
    let began = Instant::now();
    let answers: Vec<anyhow::Result<(u16, Duration)>> = futures::stream::iter(order)
        .map(|index| {
            let body = bodies[index].clone();
            let signature = sign_v1(&body, &secret);
            let http = http.clone();
            let url = url.clone();
            async move {
                let sent = Instant::now();
                let response = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .header(SIGNATURE_HEADER, signature)
                    .body(body)
                    .send()
                    .await?;
                let status = response.status().as_u16();
                response.bytes().await?;
                Ok((status, sent.elapsed()))
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let wall = began.elapsed().as_secs_f64();
    server.abort();
    // Bounded: a worker that cannot settle (it should) ends the run with what it did.
    for _ in 0..600 {
        if queue.pending().await? == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let settled = began.elapsed().as_secs_f64();
    let _ = stop_worker.send(());
    worker.await?;

    let mut statuses = BTreeMap::new();
    let mut latencies = Vec::with_capacity(answers.len());
    for answer in answers {
        let (status, latency) = answer?;
        *statuses.entry(status).or_default() += 1;
        latencies.push(latency);
    }
    let triggered = system
        .sim
        .pipelines()
        .iter()
        .filter(|p| p.project_slug == DOWNSTREAM)
        .count();
    Ok(StormResult {
        deliveries,
        unique_events: unique,
        concurrency,
        triggered,
        wall_seconds: wall,
        settled_seconds: settled,
        latency_ms: Percentiles::of(&mut latencies),
        statuses,
    })
}

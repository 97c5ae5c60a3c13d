//! The HTTP trigger API over real HTTP: DynamoDB and Secrets Manager on moto_server, the
//! CircleCI simulator, every answer checked against `docs/openapi.json` (see `harness`).
//!
//! - `calls`: the happy paths, idempotency (sequential and 20 concurrent), selection,
//!   history and refresh;
//! - `refusals`: 401 / 403 / 404 / 405 / 415 / 400 / 422 / 429 and their audit records;
//! - `hostile`: oversized, malformed and malicious input: 4xx, nothing triggered, recorded;
//! - `circleci`: CircleCI failing in each way, and what the caller is told;
//! - `operator`: `POST /v1/schedules/{name}/runs` (operator runs of a schedule);
//! - `lambda_events`: the router behind `lambda_http` with API Gateway HTTP API (payload
//!   2.0) and Function URL events from `functions/http/fixtures/`.
#![allow(clippy::unwrap_used)]

mod calls;
mod circleci;
mod harness;
mod hostile;
mod lambda_events;
mod operator;
mod refusals;

//! circleci-triggers core: the domain, its ports and their adapters.
//!
//! Every binary (the three Lambda functions and the CLI with `serve`) is thin wiring over
//! this crate. The domain knows no Lambda and no AWS; adapters live beside the ports they
//! implement.
//!
//! # A tour
//!
//! Read it in the order a trigger travels: **entry → intent → engine → CircleCI → history**.
//!
//! - [`triggers`] — the three trigger kinds, one folder each, each read top to bottom as
//!   entry point → intent:
//!   - [`triggers::scheduled`]: the tick (`Scheduler::tick`) turns due slots of each
//!     `[[schedule]]` ([`triggers::scheduled::calendar`]: cron + zone + DST + catch-up, pure
//!     and clock-free) into intents, after pause and concurrency checks.
//!   - [`triggers::chained`]: `POST /webhooks/circleci` ([`triggers::chained::webhook`]:
//!     signature and payload) is matched against the `[[chain]]` rules
//!     ([`triggers::chained::rules`]: matching, templates, fan-in joins); the closed loop
//!     writes workflow outcomes back onto the records of pipelines we started.
//!   - [`triggers::http`]: `POST /v1/endpoints/{name}` with client keys, a parameter schema
//!     and a branch policy; `GET /v1/triggers` reads history back.
//!   - What all three share sits beside them: the action spec of the triggers file becomes
//!     an [`actions::Action`] through one [`actions::Action::from_spec`]; the closed loop's
//!     one merge of workflow outcomes is [`triggers::outcome`]; the one "pipelines of an
//!     origin" lookup is [`store::origin_pipelines`].
//! - [`engine`] — the one lifecycle every intent goes through: claim (exactly once) → record
//!   `received` → mark sending → perform → record the outcome → complete the claim; the
//!   retry sweep and reconciliation of ambiguous creates.
//! - [`actions`] — what is done on CircleCI: start a pipeline, or approve / rerun / cancel
//!   an existing workflow found by a [`actions::WorkflowSelector`].
//! - Ports and their adapters: [`store`] (DynamoDB, SQLite; [`store::RecordDetail`] is what
//!   each record keeps besides its columns), [`circleci`] (the API client with pacing),
//!   [`secrets`] (Secrets Manager, env/files), [`clock`].
//! - Wiring: [`wiring`] builds the adapters for a Lambda function or for `serve`
//!   ([`local`]); [`http`] holds what every router shares (problem+json, health);
//!   [`telemetry`] sets up logging and metrics.
//! - [`operator`] — what only the CLI uses: `setup-webhooks` and `explain`.
//! - [`config`] — the triggers file (re-exported from the `triggers-config` crate, which the
//!   Lambda build scripts also use to refuse an invalid file at build time).

// Library code never unwraps: input errors are typed errors (tests may unwrap).
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod actions;
pub mod circleci;
pub mod clock;
pub mod console;
pub mod engine;
pub mod http;
pub mod local;
pub mod notify;
pub mod operator;
pub mod secrets;
pub mod store;
pub mod telemetry;
pub mod triggers;
pub mod wiring;

/// The triggers file (model, loader, validator), re-exported from `triggers-config`.
pub use triggers_config as config;

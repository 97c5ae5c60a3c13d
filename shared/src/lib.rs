//! circleci-triggers core: the domain, its ports and their adapters.
//!
//! Every binary (the three Lambda functions and the CLI with `serve`) is thin wiring over
//! this crate. The domain knows no Lambda and no AWS; adapters live beside the ports they
//! implement.

// Library code never unwraps: input errors are typed errors (tests may unwrap).
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod actions;
pub mod api;
pub mod chain;
pub mod circleci;
pub mod clock;
pub mod engine;
pub mod http;
pub mod local;
pub mod receiver;
pub mod schedule;
pub mod scheduler;
pub mod secrets;
pub mod store;
pub mod telemetry;
pub mod triggers;
pub mod webhook;
pub mod wiring;

/// The triggers file (model, loader, validator), re-exported from `triggers-config`.
pub use triggers_config as config;

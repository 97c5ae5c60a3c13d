//! Shared helpers for the integration tests (tests/*.rs in this crate).

pub mod actions_support;
pub mod capacity;
pub mod circleci_client;
pub mod faults_support;
pub mod http_forward;
pub mod moto;
pub mod moto_process;
pub mod outbox_suite;
pub mod request_cost;
pub mod runtime_api;
pub mod scheduled_support;
pub mod store_suite;
pub mod tcp_proxy;
pub mod webhook_rig;

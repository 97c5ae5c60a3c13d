//! Shared helpers for the integration tests (tests/*.rs in this crate).

pub mod actions_support;
pub mod circleci_client;
pub mod moto;
pub mod scheduled_support;
pub mod store_suite;

//! Shared helpers for the integration tests (tests/*.rs in this crate).

pub mod circleci_client;
pub mod moto;
pub mod store_suite;

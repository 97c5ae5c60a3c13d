//! Shared helpers for the integration tests (tests/*.rs in this crate).

pub mod moto;

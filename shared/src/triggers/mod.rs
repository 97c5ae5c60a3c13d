//! The three trigger kinds, one folder each (entry point → intent; the engine does the
//! rest), and what they share.

pub mod chained;
pub mod http;
pub mod outcome;
pub mod scheduled;

#[cfg(test)]
mod spec_tests;

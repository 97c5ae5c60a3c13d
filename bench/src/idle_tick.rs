//! idle-tick: what one scheduler tick with nothing due costs in DynamoDB requests and
//! request units, at 1, 10 and 1,000 schedules, on moto_server through the real AWS SDK
//! (`integration_tests::capacity`: requests recorded by an SDK interceptor, units computed
//! from item sizes because moto's `ConsumedCapacity` is not DynamoDB's).
//!
//! "Before" is the tick as it was until the scheduler state item (commit 8e9ae3c), priced
//! from its code path: per schedule a `GetItem` of its cursor, a `GetItem` of its pause flag,
//! a `PutItem` advancing the cursor and a `by_source` `Query` re-checking its latest 25
//! records (≈ 7 RRU for 25 records of ≈ 1.7 KB, eventually consistent); per tick a `GetItem`
//! of the global pause flag and the sweep's `retry_due` `Query`.

use serde::{Deserialize, Serialize};

use integration_tests::request_cost::{Cost, idle_tick_costs};

use crate::moto::Moto;

/// On-demand prices used for the monthly figure (us-east-1, see docs/deploy.md).
pub const RRU_PRICE_PER_MILLION: f64 = 0.125;
pub const WRU_PRICE_PER_MILLION: f64 = 0.625;
/// One tick a minute for 30 days.
pub const TICKS_PER_MONTH: f64 = 43_200.0;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdleTickRow {
    pub schedules: usize,
    pub requests: usize,
    pub read_units: f64,
    pub write_units: f64,
    /// Requests by operation.
    pub operations: std::collections::BTreeMap<String, usize>,
    pub before_requests: usize,
    pub before_read_units: f64,
    pub before_write_units: f64,
    /// The first tick (no state yet: every schedule evaluated, state and definitions saved).
    pub first_requests: usize,
    pub first_read_units: f64,
    pub first_write_units: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdleTickResult {
    pub rows: Vec<IdleTickRow>,
}

impl IdleTickRow {
    fn new(schedules: usize, first: &Cost, idle: &Cost) -> Self {
        let n = schedules as f64;
        Self {
            schedules,
            requests: idle.requests,
            read_units: idle.read_units,
            write_units: idle.write_units,
            operations: idle.operations.clone(),
            before_requests: 4 * schedules + 2,
            before_read_units: 9.0 * n + 1.5,
            before_write_units: n,
            first_requests: first.requests,
            first_read_units: first.read_units,
            first_write_units: first.write_units,
        }
    }
}

/// Dollars a month for one tick a minute costing `read_units` and `write_units`.
pub fn monthly(read_units: f64, write_units: f64) -> f64 {
    TICKS_PER_MONTH * (read_units * RRU_PRICE_PER_MILLION + write_units * WRU_PRICE_PER_MILLION)
        / 1_000_000.0
}

pub async fn run(counts: &[usize]) -> anyhow::Result<IdleTickResult> {
    let moto = Moto::start().await?;
    let mut rows = Vec::new();
    for &schedules in counts {
        eprintln!("idle-tick: {schedules} schedules ...");
        let costs = idle_tick_costs(schedules, Some(&moto.endpoint))
            .await
            .map_err(anyhow::Error::msg)?;
        rows.push(IdleTickRow::new(schedules, &costs.first, &costs.idle));
    }
    Ok(IdleTickResult { rows })
}

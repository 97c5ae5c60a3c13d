//! The `scheduled` binary as Lambda runs it: started under a Lambda Runtime API emulator with
//! the variables Lambda sets and a table on moto_server, it answers the committed EventBridge
//! Scheduler Input (`fixtures/scheduler-input.json`) with a completed tick — through the same
//! `main.rs` wiring that ships (the function has no HTTP route; the tick is its health check).
#![allow(clippy::unwrap_used)]

use std::path::Path;

use integration_tests::moto::{sdk_config, unique_name};
use integration_tests::runtime_api::invoke_binary;

#[tokio::test]
async fn the_binary_answers_a_tick_under_the_lambda_runtime() {
    let table = unique_name("runtime-tick");
    shared::store::dynamo::create_table(
        &aws_sdk_dynamodb::Client::new(&sdk_config().await),
        &table,
    )
    .await
    .unwrap();
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/scheduler-input.json")).unwrap();
    let invocations = invoke_binary(
        Path::new(env!("CARGO_BIN_EXE_scheduled")),
        "scheduled",
        &[("TRIGGERS_TABLE", table)],
        vec![fixture],
    )
    .await
    .unwrap();
    assert_eq!(invocations[0].outcome, Some("response"));
    let answer = invocations[0].body.clone().unwrap();
    assert_eq!(answer["outcome"], "ticked", "{answer}");
    assert_eq!(answer["metrics"][0], "TickSucceeded", "{answer}");
}

//! The `http` binary as Lambda runs it: started under a Lambda Runtime API emulator with the
//! variables Lambda sets, it answers the API Gateway event for `GET /healthz` (the route the
//! template sends to it) with 200 — through the same `main.rs` wiring that ships.

use std::path::Path;

use integration_tests::runtime_api::assert_healthz;

#[tokio::test]
async fn the_binary_answers_healthz_under_the_lambda_runtime() {
    assert_healthz(
        Path::new(env!("CARGO_BIN_EXE_http")),
        "http",
        include_str!("../fixtures/apigw-v2-get-healthz.json"),
    )
    .await;
}

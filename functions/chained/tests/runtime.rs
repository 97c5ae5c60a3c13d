//! The `chained` binary as Lambda runs it: started under a Lambda Runtime API emulator with
//! the variables Lambda sets, it answers an API Gateway event for `GET /healthz` with 200 —
//! through the same `main.rs` wiring that ships.

use std::path::Path;

use integration_tests::runtime_api::assert_healthz;

#[tokio::test]
async fn the_binary_answers_healthz_under_the_lambda_runtime() {
    assert_healthz(
        Path::new(env!("CARGO_BIN_EXE_chained")),
        "chained",
        include_str!("../../http/fixtures/apigw-v2-get-healthz.json"),
    )
    .await;
}

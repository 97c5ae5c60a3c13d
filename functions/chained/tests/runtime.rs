//! The `chained` binary as Lambda runs it: started under a Lambda Runtime API emulator with
//! the variables Lambda sets, it answers an API Gateway event for `GET /healthz` with 200 —
//! through the same `main.rs` wiring that ships.

use std::path::Path;

use integration_tests::runtime_api::{http_answer, invoke_binary};

#[tokio::test]
async fn the_binary_answers_healthz_under_the_lambda_runtime() {
    let fixture: serde_json::Value = serde_json::from_str(include_str!(
        "../../http/fixtures/apigw-v2-get-healthz.json"
    ))
    .unwrap();
    let invocations = invoke_binary(
        Path::new(env!("CARGO_BIN_EXE_chained")),
        "chained",
        &[("TRIGGERS_TABLE", "healthz-reads-no-table".to_owned())],
        vec![fixture],
    )
    .await
    .unwrap();
    assert_eq!(invocations[0].outcome, Some("response"));
    let (status, body) = http_answer(&invocations[0]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok");
}

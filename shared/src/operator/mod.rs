//! What only an operator's CLI uses: registering the webhooks (`setup-webhooks`) and
//! explaining what the chain rules would do with an event (`explain`). Kept out of the
//! trigger kinds, which the Lambda functions link.

pub mod explain;
pub mod lint_ci;
pub mod setup_webhooks;

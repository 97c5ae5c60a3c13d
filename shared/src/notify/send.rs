//! Sending one notification: Slack's `{"text": ...}`, or the notification as JSON signed
//! with HMAC-SHA256 in `X-Triggers-Signature: t=<unix>,v1=<hex>` over `"<t>.<body>"`.

use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{Notification, NotifyKind, NotifySpec};
use crate::secrets::{Secrets, SecretsError};

/// The webhook's signature header.
pub const SIGNATURE_HEADER: &str = "X-Triggers-Signature";
/// One request's deadline (connect included): well inside the first retry delay.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error("the sink answered {0}")]
    Status(u16),
    /// The error's text, without the URL (it is a credential).
    #[error("the sink could not be reached: {0}")]
    Transport(String),
    #[error("the sink's URL is not a valid http(s) URL")]
    BadUrl,
}

/// Sends one notification to one sink.
#[async_trait]
pub trait Sender: Send + Sync {
    async fn send(
        &self,
        sink: &NotifySpec,
        secrets: &dyn Secrets,
        notification: &Notification,
    ) -> Result<(), SendError>;
}

/// Over HTTP with reqwest.
pub struct HttpSender {
    client: reqwest::Client,
}

impl HttpSender {
    pub fn new() -> Result<Self, SendError> {
        let client = reqwest::Client::builder()
            .timeout(SEND_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| SendError::Transport(error.without_url().to_string()))?;
        Ok(Self { client })
    }
}

#[async_trait]
impl Sender for HttpSender {
    async fn send(
        &self,
        sink: &NotifySpec,
        secrets: &dyn Secrets,
        notification: &Notification,
    ) -> Result<(), SendError> {
        let url = secrets.notify_secret(&sink.url_secret).await?;
        let url = reqwest::Url::parse(url.expose_secret().trim()).map_err(|_| SendError::BadUrl)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(SendError::BadUrl);
        }
        let request = match sink.kind {
            NotifyKind::Slack => self
                .client
                .post(url)
                .json(&serde_json::json!({ "text": notification.summary() })),
            NotifyKind::Webhook => {
                let name = sink.signing_key_secret.as_deref().unwrap_or_default();
                let key = secrets.notify_secret(name).await?;
                let body = serde_json::to_vec(notification)
                    .map_err(|error| SendError::Transport(error.to_string()))?;
                let signature = sign(&key, chrono::Utc::now().timestamp(), &body);
                self.client
                    .post(url)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header(SIGNATURE_HEADER, signature)
                    .body(body)
            }
        };
        let response = request
            .send()
            .await
            .map_err(|error| SendError::Transport(error.without_url().to_string()))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(SendError::Status(response.status().as_u16()))
        }
    }
}

/// The header value for `body` sent at `timestamp` (unix seconds).
pub fn sign(key: &SecretString, timestamp: i64, body: &[u8]) -> String {
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac(key, timestamp, body).finalize().into_bytes())
    )
}

/// Whether `header` is a valid signature of `body` under `key` (for receivers and tests):
/// the `v1` value is compared in constant time.
pub fn verify_signature(key: &SecretString, header: &str, body: &[u8]) -> bool {
    let mut timestamp = None;
    let mut signature = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("v1", value)) => signature = hex::decode(value).ok(),
            _ => {}
        }
    }
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return false;
    };
    let expected = mac(key, timestamp, body).finalize().into_bytes();
    signature.len() == expected.len() && bool::from(expected.as_slice().ct_eq(&signature))
}

fn mac(key: &SecretString, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length (long ones are hashed first), so this cannot fail.
    <Hmac<Sha256> as KeyInit>::new_from_slice(key.expose_secret().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"))
        .chain_update(format!("{timestamp}.").as_bytes())
        .chain_update(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_key_time_and_body() {
        let key = SecretString::from("k3y");
        let header = sign(&key, 1_700_000_000, b"{\"a\":1}");
        assert!(header.starts_with("t=1700000000,v1="));
        assert!(verify_signature(&key, &header, b"{\"a\":1}"));
        assert!(!verify_signature(&key, &header, b"{\"a\":2}"));
        assert!(!verify_signature(
            &SecretString::from("other"),
            &header,
            b"{\"a\":1}"
        ));
        let moved = header.replace("t=1700000000", "t=1700000001");
        assert!(!verify_signature(&key, &moved, b"{\"a\":1}"));
        assert!(!verify_signature(&key, "v1=00", b"{\"a\":1}"));
    }
}

//! The secrets port: named CircleCI tokens, webhook signing secrets and client key hashes.
//!
//! Three separately addressable secrets, so each function can be granted only what it
//! reads. A [`SecretSource`] fetches one secret's raw JSON; [`CachedSecrets`] parses and
//! caches it with a TTL, serves the last good copy when the source is unavailable, and can
//! be told to re-read one secret (e.g. after CircleCI answered 401).

mod aws;
mod cache;
mod local;

use std::fmt;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use aws::{SecretIds, SecretsManagerSource};
pub use cache::CachedSecrets;
pub use local::{LocalSecretSource, env_names};

/// Which of the three secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretKind {
    /// `{"default": "<token>", "release-bot": "<token>"}`
    CircleCiTokens,
    /// `["<current>", "<previous>"]`
    WebhookSigningSecrets,
    /// `{"release-bot": ["<sha256 hex>", "<sha256 hex>"]}`
    ClientKeyHashes,
    /// `[[notify]]` sinks' URLs and signing keys: `{"<entry>": "<value>"}`.
    NotifySecrets,
}

impl SecretKind {
    /// The secrets of the Lambda deployment (one Secrets Manager secret and one template
    /// parameter each). [`SecretKind::NotifySecrets`] is not among them yet: notifications
    /// are sent by `serve` only (its Lambda wiring, `NotifySecretsSecretArn`, is to come).
    pub const ALL: [SecretKind; 4] = [
        SecretKind::CircleCiTokens,
        SecretKind::WebhookSigningSecrets,
        SecretKind::ClientKeyHashes,
        SecretKind::NotifySecrets,
    ];
}

impl fmt::Display for SecretKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SecretKind::CircleCiTokens => "circleci-tokens",
            SecretKind::WebhookSigningSecrets => "webhook-signing-secrets",
            SecretKind::ClientKeyHashes => "client-key-hashes",
            SecretKind::NotifySecrets => "notify-secrets",
        })
    }
}

/// Errors never carry secret values: only which secret and why.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("the {kind} secret is not configured")]
    NotConfigured { kind: SecretKind },
    #[error("the {kind} secret ({id}) does not exist")]
    NotFound { kind: SecretKind, id: String },
    #[error("access to the {kind} secret was denied: {message}")]
    Denied { kind: SecretKind, message: String },
    #[error("the {kind} secret is malformed: {reason}")]
    Malformed { kind: SecretKind, reason: String },
    #[error("no CircleCI token named `{name}` in the {kind} secret", kind = SecretKind::CircleCiTokens)]
    UnknownToken { name: String },
    #[error("no entry named `{name}` in the {kind} secret", kind = SecretKind::NotifySecrets)]
    UnknownNotifyEntry { name: String },
    #[error("the {kind} secret could not be read (will retry): {message}")]
    Unavailable { kind: SecretKind, message: String },
}

impl SecretsError {
    /// Whether trying again later may succeed (the store was unreachable or throttling).
    pub fn is_retryable(&self) -> bool {
        matches!(self, SecretsError::Unavailable { .. })
    }
}

/// The SHA-256 of a client key's secret part, as stored in the client keys secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientKeyHash([u8; 32]);

impl ClientKeyHash {
    pub fn from_hex(hex_text: &str) -> Option<Self> {
        let bytes = hex::decode(hex_text.trim()).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }

    pub fn of(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Constant-time comparison of the presented secret's hash with this one.
    pub fn matches(&self, presented: &SecretString) -> bool {
        let presented = Self::of(presented.expose_secret());
        bool::from(self.ct_eq(&presented))
    }

    /// A hash no client key has (finding a preimage of it would break SHA-256): compared
    /// against when there is nothing real to compare, so that costs the same work.
    pub const fn placeholder() -> Self {
        Self([0x5a; 32])
    }
}

impl ConstantTimeEq for ClientKeyHash {
    fn ct_eq(&self, other: &Self) -> subtle::Choice {
        self.0.ct_eq(&other.0)
    }
}

impl fmt::Debug for ClientKeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hashes are not secrets, but there is no reason to spread them through logs.
        f.write_str("ClientKeyHash(..)")
    }
}

/// Fetches the raw text of one secret from wherever it is kept.
#[async_trait]
pub trait SecretSource: Send + Sync {
    async fn fetch(&self, kind: SecretKind) -> Result<SecretString, SecretsError>;
}

/// A shared source is a source (lets a test or a wrapper keep a handle on it).
#[async_trait]
impl<T: SecretSource + ?Sized> SecretSource for std::sync::Arc<T> {
    async fn fetch(&self, kind: SecretKind) -> Result<SecretString, SecretsError> {
        (**self).fetch(kind).await
    }
}

/// What the domain asks of secrets.
#[async_trait]
pub trait Secrets: Send + Sync {
    /// The CircleCI API token with this name.
    async fn circleci_token(&self, name: &str) -> Result<SecretString, SecretsError>;
    /// Every currently valid webhook signing secret (several during a rotation).
    async fn webhook_signing_secrets(&self) -> Result<Vec<SecretString>, SecretsError>;
    /// The key hashes of one client (several during a rotation); empty for an unknown client.
    async fn client_key_hashes(&self, client: &str) -> Result<Vec<ClientKeyHash>, SecretsError>;
    /// Forget the cached copy of one secret: the next read goes to the source.
    async fn refresh(&self, kind: SecretKind);
    /// One entry of the notification secret (a `[[notify]]` sink's URL or signing key).
    async fn notify_secret(&self, name: &str) -> Result<SecretString, SecretsError> {
        let _ = name;
        Err(SecretsError::NotConfigured {
            kind: SecretKind::NotifySecrets,
        })
    }
}

//! Parsing and caching of the three secrets over any [`SecretSource`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::{ClientKeyHash, SecretKind, SecretSource, Secrets, SecretsError};

/// One parsed secret.
enum Parsed {
    Tokens(HashMap<String, SecretString>),
    WebhookSecrets(Vec<SecretString>),
    ClientKeys(HashMap<String, Vec<ClientKeyHash>>),
    Notify(HashMap<String, SecretString>),
}

struct Entry {
    parsed: Arc<Parsed>,
    fresh_until: Instant,
}

/// A [`Secrets`] implementation: parse once, cache for `ttl`, re-read on demand.
pub struct CachedSecrets<S> {
    source: S,
    ttl: Duration,
    // One lock per secret: concurrent readers of an expired secret wait for a single fetch.
    slots: [Mutex<Option<Entry>>; 4],
}

impl<S: SecretSource> CachedSecrets<S> {
    pub fn new(source: S, ttl: Duration) -> Self {
        Self {
            source,
            ttl,
            slots: [
                Mutex::new(None),
                Mutex::new(None),
                Mutex::new(None),
                Mutex::new(None),
            ],
        }
    }

    pub fn source(&self) -> &S {
        &self.source
    }

    fn slot(&self, kind: SecretKind) -> &Mutex<Option<Entry>> {
        let index = match kind {
            SecretKind::CircleCiTokens => 0,
            SecretKind::WebhookSigningSecrets => 1,
            SecretKind::ClientKeyHashes => 2,
            SecretKind::NotifySecrets => 3,
        };
        &self.slots[index]
    }

    async fn get(&self, kind: SecretKind) -> Result<Arc<Parsed>, SecretsError> {
        let mut slot = self.slot(kind).lock().await;
        if let Some(entry) = slot.as_ref()
            && Instant::now() < entry.fresh_until
        {
            return Ok(entry.parsed.clone());
        }
        match self.source.fetch(kind).await {
            Ok(raw) => {
                let parsed = Arc::new(parse(kind, &raw)?);
                *slot = Some(Entry {
                    parsed: parsed.clone(),
                    fresh_until: Instant::now() + self.ttl,
                });
                Ok(parsed)
            }
            // The store is unreachable: an expired copy beats firing nothing at all.
            Err(error) if error.is_retryable() => match slot.as_ref() {
                Some(stale) => {
                    tracing::warn!(secret = %kind, %error, "secrets store unavailable; using the cached copy");
                    Ok(stale.parsed.clone())
                }
                None => Err(error),
            },
            Err(error) => Err(error),
        }
    }
}

#[async_trait]
impl<S: SecretSource> Secrets for CachedSecrets<S> {
    async fn circleci_token(&self, name: &str) -> Result<SecretString, SecretsError> {
        match &*self.get(SecretKind::CircleCiTokens).await? {
            Parsed::Tokens(tokens) => {
                tokens
                    .get(name)
                    .cloned()
                    .ok_or_else(|| SecretsError::UnknownToken {
                        name: name.to_owned(),
                    })
            }
            _ => unreachable_kind(SecretKind::CircleCiTokens),
        }
    }

    async fn webhook_signing_secrets(&self) -> Result<Vec<SecretString>, SecretsError> {
        match &*self.get(SecretKind::WebhookSigningSecrets).await? {
            Parsed::WebhookSecrets(secrets) => Ok(secrets.clone()),
            _ => unreachable_kind(SecretKind::WebhookSigningSecrets),
        }
    }

    async fn client_key_hashes(&self, client: &str) -> Result<Vec<ClientKeyHash>, SecretsError> {
        match &*self.get(SecretKind::ClientKeyHashes).await? {
            Parsed::ClientKeys(keys) => Ok(keys.get(client).cloned().unwrap_or_default()),
            _ => unreachable_kind(SecretKind::ClientKeyHashes),
        }
    }

    async fn notify_secret(&self, name: &str) -> Result<SecretString, SecretsError> {
        match &*self.get(SecretKind::NotifySecrets).await? {
            Parsed::Notify(entries) => {
                entries
                    .get(name)
                    .cloned()
                    .ok_or_else(|| SecretsError::UnknownNotifyEntry {
                        name: name.to_owned(),
                    })
            }
            _ => unreachable_kind(SecretKind::NotifySecrets),
        }
    }

    async fn refresh(&self, kind: SecretKind) {
        let mut slot = self.slot(kind).lock().await;
        if let Some(entry) = slot.as_mut() {
            // Keep the value as a fallback for an outage, but make it expired.
            entry.fresh_until = Instant::now();
        }
    }
}

fn unreachable_kind<T>(kind: SecretKind) -> Result<T, SecretsError> {
    // Each slot only ever holds its own kind; report rather than panic.
    Err(SecretsError::Malformed {
        kind,
        reason: "internal: cached secret of the wrong kind".into(),
    })
}

fn malformed(kind: SecretKind, expected: &str) -> SecretsError {
    // Never echo the value or serde's message (which can quote it): say what was expected.
    SecretsError::Malformed {
        kind,
        reason: format!("expected {expected}"),
    }
}

fn parse(kind: SecretKind, raw: &SecretString) -> Result<Parsed, SecretsError> {
    let text = raw.expose_secret();
    match kind {
        SecretKind::CircleCiTokens => {
            let map: HashMap<String, String> = serde_json::from_str(text).map_err(|_| {
                malformed(
                    kind,
                    r#"a JSON object of token name to token, e.g. {"default": "..."}"#,
                )
            })?;
            if map.values().any(|token| token.trim().is_empty()) {
                return Err(malformed(kind, "non-empty tokens"));
            }
            Ok(Parsed::Tokens(
                map.into_iter()
                    .map(|(name, token)| (name, SecretString::from(token)))
                    .collect(),
            ))
        }
        SecretKind::WebhookSigningSecrets => {
            #[derive(Deserialize)]
            #[serde(untagged)]
            enum OneOrMany {
                One(String),
                Many(Vec<String>),
            }
            let list = match serde_json::from_str::<OneOrMany>(text) {
                Ok(OneOrMany::Many(list)) => list,
                Ok(OneOrMany::One(one)) => vec![one],
                Err(_) => {
                    return Err(malformed(
                        kind,
                        r#"a JSON array of secrets, e.g. ["current", "previous"]"#,
                    ));
                }
            };
            if list.is_empty() || list.iter().any(|s| s.is_empty()) {
                return Err(malformed(kind, "at least one non-empty secret"));
            }
            Ok(Parsed::WebhookSecrets(
                list.into_iter().map(SecretString::from).collect(),
            ))
        }
        SecretKind::NotifySecrets => {
            let map: HashMap<String, String> = serde_json::from_str(text).map_err(|_| {
                malformed(
                    kind,
                    r#"a JSON object of entry name to value, e.g. {"ops-url": "https://..."}"#,
                )
            })?;
            if map.values().any(|value| value.trim().is_empty()) {
                return Err(malformed(kind, "non-empty values"));
            }
            Ok(Parsed::Notify(
                map.into_iter()
                    .map(|(name, value)| (name, SecretString::from(value)))
                    .collect(),
            ))
        }
        SecretKind::ClientKeyHashes => {
            let map: HashMap<String, Vec<String>> = serde_json::from_str(text).map_err(|_| {
                malformed(kind, r#"a JSON object of client name to SHA-256 hex hashes, e.g. {"bot": ["<64 hex>"]}"#)
            })?;
            let mut parsed = HashMap::with_capacity(map.len());
            for (client, hashes) in map {
                let hashes = hashes
                    .iter()
                    .map(|h| ClientKeyHash::from_hex(h))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| SecretsError::Malformed {
                        kind,
                        reason: format!(
                            "client `{client}` has a hash that is not 64 hex characters"
                        ),
                    })?;
                parsed.insert(client, hashes);
            }
            Ok(Parsed::ClientKeys(parsed))
        }
    }
}

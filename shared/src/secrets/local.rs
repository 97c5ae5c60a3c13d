//! Secrets from environment variables or files, for `serve` and the CLI.

use std::collections::HashMap;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};

use super::{SecretKind, SecretSource, SecretsError};

/// The documented variable names. Each secret can be given inline (JSON) or as a file path
/// (`*_FILE`, read on every fetch so an edited file is picked up on refresh).
pub mod env_names {
    /// A single CircleCI token, stored under the file's `[circleci].token` name.
    pub const CIRCLECI_TOKEN: &str = "CIRCLECI_TOKEN";
    /// `{"default": "...", "other": "..."}`
    pub const CIRCLECI_TOKENS: &str = "CIRCLECI_TOKENS";
    pub const CIRCLECI_TOKENS_FILE: &str = "CIRCLECI_TOKENS_FILE";
    /// `["current", "previous"]` or one plain secret.
    pub const WEBHOOK_SECRETS: &str = "CIRCLECI_WEBHOOK_SECRETS";
    pub const WEBHOOK_SECRETS_FILE: &str = "CIRCLECI_WEBHOOK_SECRETS_FILE";
    /// `{"client": ["<sha256 hex>"]}`
    pub const CLIENT_KEYS: &str = "CIRCLECI_TRIGGERS_CLIENT_KEYS";
    pub const CLIENT_KEYS_FILE: &str = "CIRCLECI_TRIGGERS_CLIENT_KEYS_FILE";
    /// `{"<entry>": "<value>"}`: `[[notify]]` sink URLs and signing keys.
    pub const NOTIFY_SECRETS: &str = "CIRCLECI_TRIGGERS_NOTIFY_SECRETS";
    pub const NOTIFY_SECRETS_FILE: &str = "CIRCLECI_TRIGGERS_NOTIFY_SECRETS_FILE";
}

/// Reads secrets from a snapshot of variables (the process environment, or a map in tests).
pub struct LocalSecretSource {
    vars: HashMap<String, SecretString>,
    default_token_name: String,
}

impl LocalSecretSource {
    /// `default_token_name` is the triggers file's `[circleci].token`: `CIRCLECI_TOKEN` is
    /// stored under it.
    pub fn from_env(default_token_name: &str) -> Self {
        Self::from_vars(std::env::vars(), default_token_name)
    }

    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
        default_token_name: &str,
    ) -> Self {
        let relevant = [
            env_names::CIRCLECI_TOKEN,
            env_names::CIRCLECI_TOKENS,
            env_names::CIRCLECI_TOKENS_FILE,
            env_names::WEBHOOK_SECRETS,
            env_names::WEBHOOK_SECRETS_FILE,
            env_names::CLIENT_KEYS,
            env_names::CLIENT_KEYS_FILE,
            env_names::NOTIFY_SECRETS,
            env_names::NOTIFY_SECRETS_FILE,
        ];
        Self {
            vars: vars
                .into_iter()
                .filter(|(name, value)| relevant.contains(&name.as_str()) && !value.is_empty())
                .map(|(name, value)| (name, SecretString::from(value)))
                .collect(),
            default_token_name: default_token_name.to_owned(),
        }
    }

    fn inline_or_file(
        &self,
        kind: SecretKind,
        inline: &str,
        file: &str,
    ) -> Result<Option<SecretString>, SecretsError> {
        if let Some(value) = self.vars.get(inline) {
            return Ok(Some(value.clone()));
        }
        let Some(path) = self.vars.get(file) else {
            return Ok(None);
        };
        let path = path.expose_secret();
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Some(SecretString::from(text))),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Err(SecretsError::NotFound {
                    kind,
                    id: path.to_owned(),
                })
            }
            Err(error) => Err(SecretsError::Denied {
                kind,
                message: format!("cannot read {path}: {}", error.kind()),
            }),
        }
    }
}

#[async_trait]
impl SecretSource for LocalSecretSource {
    async fn fetch(&self, kind: SecretKind) -> Result<SecretString, SecretsError> {
        let found = match kind {
            SecretKind::CircleCiTokens => {
                match self.inline_or_file(
                    kind,
                    env_names::CIRCLECI_TOKENS,
                    env_names::CIRCLECI_TOKENS_FILE,
                )? {
                    Some(found) => Some(found),
                    None => self.vars.get(env_names::CIRCLECI_TOKEN).map(|token| {
                        let map = HashMap::from([(
                            self.default_token_name.as_str(),
                            token.expose_secret(),
                        )]);
                        SecretString::from(serde_json::to_string(&map).unwrap_or_default())
                    }),
                }
            }
            SecretKind::WebhookSigningSecrets => {
                self.inline_or_file(
                    kind,
                    env_names::WEBHOOK_SECRETS,
                    env_names::WEBHOOK_SECRETS_FILE,
                )?
                .map(|value| {
                    // A bare secret (not JSON) is accepted as the only current secret.
                    let text = value.expose_secret().trim();
                    if text.starts_with('[') || text.starts_with('"') {
                        value
                    } else {
                        SecretString::from(serde_json::to_string(&[text]).unwrap_or_default())
                    }
                })
            }
            SecretKind::ClientKeyHashes => {
                self.inline_or_file(kind, env_names::CLIENT_KEYS, env_names::CLIENT_KEYS_FILE)?
            }
            SecretKind::NotifySecrets => self.inline_or_file(
                kind,
                env_names::NOTIFY_SECRETS,
                env_names::NOTIFY_SECRETS_FILE,
            )?,
        };
        found.ok_or(SecretsError::NotConfigured { kind })
    }
}

//! AWS Secrets Manager as a [`SecretSource`].

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::SdkError;
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use secrecy::SecretString;

use super::{SecretKind, SecretSource, SecretsError};

/// The Secrets Manager ids (names or ARNs) of the three secrets; a function is given only
/// the ones it reads.
#[derive(Debug, Clone, Default)]
pub struct SecretIds {
    pub circleci_tokens: Option<String>,
    pub webhook_signing_secrets: Option<String>,
    pub client_key_hashes: Option<String>,
    pub notify_secrets: Option<String>,
}

impl SecretIds {
    /// Environment variables the Lambda functions are configured with.
    pub const TOKENS_ENV: &'static str = "TOKENS_SECRET_ID";
    pub const WEBHOOK_ENV: &'static str = "WEBHOOK_SECRETS_SECRET_ID";
    pub const CLIENT_KEYS_ENV: &'static str = "CLIENT_KEYS_SECRET_ID";
    pub const NOTIFY_ENV: &'static str = "NOTIFY_SECRETS_SECRET_ID";

    pub fn from_env() -> Self {
        let read = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self {
            circleci_tokens: read(Self::TOKENS_ENV),
            webhook_signing_secrets: read(Self::WEBHOOK_ENV),
            client_key_hashes: read(Self::CLIENT_KEYS_ENV),
            notify_secrets: read(Self::NOTIFY_ENV),
        }
    }

    fn get(&self, kind: SecretKind) -> Option<&str> {
        match kind {
            SecretKind::CircleCiTokens => self.circleci_tokens.as_deref(),
            SecretKind::WebhookSigningSecrets => self.webhook_signing_secrets.as_deref(),
            SecretKind::ClientKeyHashes => self.client_key_hashes.as_deref(),
            SecretKind::NotifySecrets => self.notify_secrets.as_deref(),
        }
    }
}

pub struct SecretsManagerSource {
    client: Client,
    ids: SecretIds,
}

impl SecretsManagerSource {
    pub fn new(client: Client, ids: SecretIds) -> Self {
        Self { client, ids }
    }
}

#[async_trait]
impl SecretSource for SecretsManagerSource {
    async fn fetch(&self, kind: SecretKind) -> Result<SecretString, SecretsError> {
        let id = self
            .ids
            .get(kind)
            .ok_or(SecretsError::NotConfigured { kind })?;
        let output = self
            .client
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|error| classify(kind, id, error))?;
        output
            .secret_string
            .map(SecretString::from)
            .ok_or_else(|| SecretsError::Malformed {
                kind,
                reason: "the secret has no string value (binary secrets are not supported)".into(),
            })
    }
}

fn classify(kind: SecretKind, id: &str, error: SdkError<GetSecretValueError>) -> SecretsError {
    match error {
        SdkError::ServiceError(context) => {
            let service_error = context.into_err();
            let code = aws_sdk_secretsmanager::error::ProvideErrorMetadata::code(&service_error)
                .unwrap_or("Unknown")
                .to_owned();
            match service_error {
                GetSecretValueError::ResourceNotFoundException(_) => SecretsError::NotFound {
                    kind,
                    id: id.to_owned(),
                },
                GetSecretValueError::InternalServiceError(_) => SecretsError::Unavailable {
                    kind,
                    message: code,
                },
                _ if code == "ThrottlingException" => SecretsError::Unavailable {
                    kind,
                    message: code,
                },
                _ => SecretsError::Denied {
                    kind,
                    message: code,
                },
            }
        }
        // Timeouts, connection failures and unparseable responses: the store may be back soon.
        other => SecretsError::Unavailable {
            kind,
            message: describe_transport(&other),
        },
    }
}

fn describe_transport<E>(error: &SdkError<E>) -> String {
    match error {
        SdkError::TimeoutError(_) => "timed out".into(),
        SdkError::DispatchFailure(_) => "could not reach Secrets Manager".into(),
        SdkError::ResponseError(_) => "unreadable response from Secrets Manager".into(),
        SdkError::ConstructionFailure(_) => "could not build the request".into(),
        _ => "request failed".into(),
    }
}

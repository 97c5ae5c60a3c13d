//! Secrets from environment variables and files, and the cache's behaviour during an outage.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use shared::secrets::{
    CachedSecrets, ClientKeyHash, LocalSecretSource, SecretKind, SecretSource, Secrets,
    SecretsError, env_names,
};

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn circleci_token_is_stored_under_the_configured_default_name() {
    let source =
        LocalSecretSource::from_vars(vars(&[(env_names::CIRCLECI_TOKEN, "tok-1")]), "ci-bot");
    let secrets = CachedSecrets::new(source, Duration::from_secs(60));
    assert_eq!(
        secrets
            .circleci_token("ci-bot")
            .await
            .unwrap()
            .expose_secret(),
        "tok-1"
    );
    assert!(matches!(
        secrets.circleci_token("default").await,
        Err(SecretsError::UnknownToken { .. })
    ));
}

#[tokio::test]
async fn named_tokens_json_wins_over_the_single_token() {
    let source = LocalSecretSource::from_vars(
        vars(&[
            (env_names::CIRCLECI_TOKEN, "single"),
            (
                env_names::CIRCLECI_TOKENS,
                r#"{"default": "a", "other": "b"}"#,
            ),
        ]),
        "default",
    );
    let secrets = CachedSecrets::new(source, Duration::from_secs(60));
    assert_eq!(
        secrets
            .circleci_token("default")
            .await
            .unwrap()
            .expose_secret(),
        "a"
    );
    assert_eq!(
        secrets
            .circleci_token("other")
            .await
            .unwrap()
            .expose_secret(),
        "b"
    );
}

#[tokio::test]
async fn files_are_read_and_re_read_on_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let webhook = dir.path().join("webhook.json");
    let clients = dir.path().join("clients.json");
    std::fs::write(&webhook, "bare-secret\n").unwrap();
    std::fs::write(
        &clients,
        format!(r#"{{"bot": ["{}"]}}"#, ClientKeyHash::of("k").to_hex()),
    )
    .unwrap();
    let source = LocalSecretSource::from_vars(
        vars(&[
            (env_names::WEBHOOK_SECRETS_FILE, webhook.to_str().unwrap()),
            (env_names::CLIENT_KEYS_FILE, clients.to_str().unwrap()),
        ]),
        "default",
    );
    let secrets = CachedSecrets::new(source, Duration::from_secs(3600));
    let current = secrets.webhook_signing_secrets().await.unwrap();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].expose_secret(), "bare-secret");

    std::fs::write(&webhook, r#"["new", "bare-secret"]"#).unwrap();
    assert_eq!(
        secrets.webhook_signing_secrets().await.unwrap().len(),
        1,
        "cached"
    );
    secrets.refresh(SecretKind::WebhookSigningSecrets).await;
    let rotated = secrets.webhook_signing_secrets().await.unwrap();
    assert_eq!(rotated[0].expose_secret(), "new");
    assert_eq!(rotated.len(), 2);

    assert!(secrets.client_key_hashes("bot").await.unwrap()[0].matches(&SecretString::from("k")));
}

#[tokio::test]
async fn unset_secrets_are_not_configured() {
    let secrets = CachedSecrets::new(
        LocalSecretSource::from_vars(Vec::new(), "default"),
        Duration::from_secs(1),
    );
    assert!(matches!(
        secrets.circleci_token("default").await,
        Err(SecretsError::NotConfigured {
            kind: SecretKind::CircleCiTokens
        })
    ));
    let missing_file = LocalSecretSource::from_vars(
        vars(&[(env_names::CLIENT_KEYS_FILE, "/nonexistent/keys.json")]),
        "default",
    );
    let secrets = CachedSecrets::new(missing_file, Duration::from_secs(1));
    assert!(matches!(
        secrets.client_key_hashes("x").await,
        Err(SecretsError::NotFound { .. })
    ));
}

#[tokio::test]
async fn malformed_values_are_rejected_without_echoing_them() {
    for (name, value) in [
        (env_names::CIRCLECI_TOKENS, "tok-not-json"),
        (env_names::CIRCLECI_TOKENS, r#"{"default": ""}"#),
        (env_names::CLIENT_KEYS, r#"{"bot": ["tok-not-hex"]}"#),
        (env_names::WEBHOOK_SECRETS, "[]"),
    ] {
        let secrets = CachedSecrets::new(
            LocalSecretSource::from_vars(vars(&[(name, value)]), "default"),
            Duration::from_secs(1),
        );
        let error = match name {
            env_names::CIRCLECI_TOKENS => secrets.circleci_token("default").await.unwrap_err(),
            env_names::CLIENT_KEYS => secrets.client_key_hashes("bot").await.unwrap_err(),
            _ => secrets.webhook_signing_secrets().await.unwrap_err(),
        };
        assert!(
            matches!(error, SecretsError::Malformed { .. }),
            "{name}={value}: {error:?}"
        );
        assert!(!format!("{error}{error:?}").contains("tok-not"), "{error}");
    }
}

/// A source that works until switched off, counting fetches.
struct FlakySource {
    down: AtomicBool,
    fetches: AtomicUsize,
}

#[async_trait]
impl SecretSource for FlakySource {
    async fn fetch(&self, kind: SecretKind) -> Result<SecretString, SecretsError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(SecretsError::Unavailable {
                kind,
                message: "connection refused".into(),
            });
        }
        Ok(SecretString::from(r#"{"default": "cached-token"}"#))
    }
}

#[tokio::test]
async fn an_outage_serves_the_last_good_copy_and_fails_clearly_without_one() {
    let flaky = Arc::new(FlakySource {
        down: AtomicBool::new(false),
        fetches: AtomicUsize::new(0),
    });
    let secrets = CachedSecrets::new(flaky.clone(), Duration::ZERO);
    assert_eq!(
        secrets
            .circleci_token("default")
            .await
            .unwrap()
            .expose_secret(),
        "cached-token"
    );
    flaky.down.store(true, Ordering::SeqCst);
    assert_eq!(
        secrets
            .circleci_token("default")
            .await
            .unwrap()
            .expose_secret(),
        "cached-token"
    );
    assert_eq!(
        flaky.fetches.load(Ordering::SeqCst),
        2,
        "the expired copy was re-fetched first"
    );

    let cold = CachedSecrets::new(flaky.clone(), Duration::ZERO);
    let error = cold.circleci_token("default").await.unwrap_err();
    assert!(error.is_retryable());
}

#[test]
fn secret_values_do_not_appear_in_debug_output() {
    let token = SecretString::from("tok-very-secret");
    assert!(!format!("{token:?}").contains("tok-very-secret"));
    assert!(!format!("{:?}", ClientKeyHash::of("x")).contains(&ClientKeyHash::of("x").to_hex()));
}

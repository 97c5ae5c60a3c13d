//! The Secrets Manager adapter against moto_server through the real AWS SDK.

use std::time::Duration;

use integration_tests::moto::{RequestCounter, sdk_config, sdk_config_for, unique_name};
use secrecy::{ExposeSecret, SecretString};
use shared::secrets::{
    CachedSecrets, ClientKeyHash, SecretIds, SecretKind, Secrets, SecretsError,
    SecretsManagerSource,
};

struct Fixture {
    admin: aws_sdk_secretsmanager::Client,
    counter: RequestCounter,
    secrets: CachedSecrets<SecretsManagerSource>,
    tokens_id: String,
}

/// Creates the three secrets under fresh names and a cached adapter with a request counter.
async fn fixture(ttl: Duration) -> Fixture {
    let config = sdk_config().await;
    let admin = aws_sdk_secretsmanager::Client::new(&config);
    let tokens_id = unique_name("tokens");
    let webhook_id = unique_name("webhook");
    let clients_id = unique_name("clients");
    for (id, value) in [
        (
            &tokens_id,
            r#"{"default": "tok-default-1", "release": "tok-release"}"#.to_owned(),
        ),
        (
            &webhook_id,
            r#"["current-secret", "previous-secret"]"#.to_owned(),
        ),
        (
            &clients_id,
            format!(
                r#"{{"release-bot": ["{}"]}}"#,
                ClientKeyHash::of("s3cret").to_hex()
            ),
        ),
    ] {
        admin
            .create_secret()
            .name(id)
            .secret_string(value)
            .send()
            .await
            .expect("moto_server must accept create_secret");
    }
    let counter = RequestCounter::default();
    let counted = aws_sdk_secretsmanager::config::Builder::from(&config)
        .interceptor(counter.clone())
        .build();
    let source = SecretsManagerSource::new(
        aws_sdk_secretsmanager::Client::from_conf(counted),
        SecretIds {
            circleci_tokens: Some(tokens_id.clone()),
            webhook_signing_secrets: Some(webhook_id),
            client_key_hashes: Some(clients_id),
            notify_secrets: None,
        },
    );
    Fixture {
        admin,
        counter,
        secrets: CachedSecrets::new(source, ttl),
        tokens_id,
    }
}

#[tokio::test]
async fn reads_each_secret_layout() {
    let f = fixture(Duration::from_secs(300)).await;
    let token = f.secrets.circleci_token("default").await.unwrap();
    assert_eq!(token.expose_secret(), "tok-default-1");
    assert_eq!(
        f.secrets
            .circleci_token("release")
            .await
            .unwrap()
            .expose_secret(),
        "tok-release"
    );

    let webhook: Vec<String> = f
        .secrets
        .webhook_signing_secrets()
        .await
        .unwrap()
        .iter()
        .map(|s| s.expose_secret().to_owned())
        .collect();
    assert_eq!(webhook, ["current-secret", "previous-secret"]);

    let hashes = f.secrets.client_key_hashes("release-bot").await.unwrap();
    assert_eq!(hashes.len(), 1);
    assert!(hashes[0].matches(&SecretString::from("s3cret")));
    assert!(!hashes[0].matches(&SecretString::from("s3creT")));
    assert!(
        f.secrets
            .client_key_hashes("stranger")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn reads_within_the_ttl_are_served_from_the_cache() {
    let f = fixture(Duration::from_secs(300)).await;
    for _ in 0..5 {
        f.secrets.circleci_token("default").await.unwrap();
    }
    assert_eq!(f.counter.count(), 1, "one GetSecretValue for five reads");
    // Another secret is fetched on its own.
    f.secrets.webhook_signing_secrets().await.unwrap();
    assert_eq!(f.counter.count(), 2);
}

#[tokio::test]
async fn an_unknown_token_name_is_a_clear_error_without_refetching() {
    let f = fixture(Duration::from_secs(300)).await;
    let error = f.secrets.circleci_token("nope").await.unwrap_err();
    assert!(matches!(error, SecretsError::UnknownToken { ref name } if name == "nope"));
    assert!(!error.is_retryable());
    f.secrets.circleci_token("nope").await.unwrap_err();
    assert_eq!(f.counter.count(), 1);
}

#[tokio::test]
async fn refresh_forces_one_re_read_after_a_rotation() {
    let f = fixture(Duration::from_secs(300)).await;
    let read = || async { f.secrets.circleci_token("default").await.unwrap() };
    assert_eq!(read().await.expose_secret(), "tok-default-1");
    f.admin
        .put_secret_value()
        .secret_id(&f.tokens_id)
        .secret_string(r#"{"default": "tok-default-2"}"#)
        .send()
        .await
        .unwrap();
    // Still cached: the rotation is not seen until the TTL or a refresh.
    assert_eq!(read().await.expose_secret(), "tok-default-1");
    f.secrets.refresh(SecretKind::CircleCiTokens).await;
    assert_eq!(read().await.expose_secret(), "tok-default-2");
    assert_eq!(read().await.expose_secret(), "tok-default-2");
    assert_eq!(f.counter.count(), 2, "exactly one extra read");
}

#[tokio::test]
async fn an_expired_ttl_reads_again() {
    let f = fixture(Duration::ZERO).await;
    f.secrets.circleci_token("default").await.unwrap();
    f.secrets.circleci_token("default").await.unwrap();
    assert_eq!(f.counter.count(), 2);
}

#[tokio::test]
async fn a_missing_secret_is_a_clear_non_retryable_error() {
    let config = sdk_config().await;
    let missing = unique_name("missing");
    let secrets = CachedSecrets::new(
        SecretsManagerSource::new(
            aws_sdk_secretsmanager::Client::new(&config),
            SecretIds {
                circleci_tokens: Some(missing.clone()),
                ..SecretIds::default()
            },
        ),
        Duration::from_secs(60),
    );
    let error = secrets.circleci_token("default").await.unwrap_err();
    assert!(
        matches!(error, SecretsError::NotFound { ref id, .. } if *id == missing),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert!(error.to_string().contains(&missing));

    // A secret this function was not given is "not configured", without any request.
    let error = secrets.webhook_signing_secrets().await.unwrap_err();
    assert!(matches!(
        error,
        SecretsError::NotConfigured {
            kind: SecretKind::WebhookSigningSecrets
        }
    ));
}

#[tokio::test]
async fn a_malformed_secret_never_echoes_its_value() {
    let config = sdk_config().await;
    let admin = aws_sdk_secretsmanager::Client::new(&config);
    let id = unique_name("malformed");
    admin
        .create_secret()
        .name(&id)
        .secret_string("tok-plain-value-not-json")
        .send()
        .await
        .unwrap();
    let secrets = CachedSecrets::new(
        SecretsManagerSource::new(
            admin,
            SecretIds {
                circleci_tokens: Some(id),
                ..SecretIds::default()
            },
        ),
        Duration::from_secs(60),
    );
    let error = secrets.circleci_token("default").await.unwrap_err();
    assert!(matches!(error, SecretsError::Malformed { .. }));
    let text = format!("{error} {error:?}");
    assert!(!text.contains("tok-plain-value"), "{text}");
}

#[tokio::test]
async fn an_unreachable_store_is_retryable() {
    // A port nothing listens on: connection refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let config = sdk_config_for(&format!("http://127.0.0.1:{port}")).await;
    let client = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(&config)
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build(),
    );
    let secrets = CachedSecrets::new(
        SecretsManagerSource::new(
            client,
            SecretIds {
                circleci_tokens: Some("anything".into()),
                ..SecretIds::default()
            },
        ),
        Duration::from_secs(60),
    );
    let error = secrets.circleci_token("default").await.unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
}

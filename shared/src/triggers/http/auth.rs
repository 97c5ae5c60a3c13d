//! Client keys: `Authorization: Bearer <client>.<secret>`, checked against the SHA-256
//! hashes in the client keys secret (several per client during a rotation).
//!
//! An unknown client and a wrong secret get the same answer after the same work: the client
//! keys secret is read for every request (the same cache read, or the same Secrets Manager
//! call when the cache expired, whether or not the name is a client), the presented secret
//! is hashed once, and that hash is compared in constant time against [`KEY_SLOTS`] slots —
//! the client's hashes, the rest [`ClientKeyHash::placeholder`] — with no early exit. The
//! presented secret is never logged, stored or echoed; it lives in a [`SecretString`] until
//! it is hashed.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use subtle::{Choice, ConstantTimeEq};

use super::catalog::{Catalog, Client};
use crate::secrets::{ClientKeyHash, Secrets, SecretsError};

/// Random bytes in a minted key's secret part (256 bits).
const SECRET_BYTES: usize = 32;
/// Longest Authorization header considered (a key is about 110 characters).
const MAX_AUTHORIZATION_LEN: usize = 1024;
/// Hashes compared for every request (a client has one key, two or three while rotating);
/// a client with more is compared against all of them.
pub const KEY_SLOTS: usize = 8;
/// The name the client keys secret is asked about when the presented one is not a client:
/// not a valid client name, so it never has keys.
const NOT_A_CLIENT: &str = "(not a client)";

/// Why a request is not authenticated.
#[derive(Debug)]
pub enum AuthFailure {
    /// No `Authorization: Bearer ...` header, or not of the `<client>.<secret>` form.
    Missing,
    /// Unknown client, no keys for it, or a wrong secret (indistinguishable on purpose).
    /// `claimed` is the client named by the key, only when it is a configured client.
    Rejected { claimed: Option<String> },
    /// The client keys secret could not be read: try again later.
    Unavailable(SecretsError),
    /// The client keys secret is missing or malformed: an operator must fix it.
    Misconfigured(SecretsError),
}

/// The presented key, split.
struct Presented {
    client: String,
    secret: SecretString,
}

impl std::fmt::Debug for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presented")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

fn presented(headers: &HeaderMap) -> Option<Presented> {
    let value = headers.get(AUTHORIZATION)?;
    if value.len() > MAX_AUTHORIZATION_LEN {
        return None;
    }
    let text = value.to_str().ok()?;
    let (scheme, token) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let (client, secret) = token.trim().split_once('.')?;
    if client.is_empty() || secret.is_empty() {
        return None;
    }
    Some(Presented {
        client: client.to_owned(),
        secret: SecretString::from(secret.to_owned()),
    })
}

/// What the presented hash is compared with: every stored hash, then placeholders up to
/// [`KEY_SLOTS`], each with whether it is a real key.
fn slots(hashes: &[ClientKeyHash]) -> impl Iterator<Item = (ClientKeyHash, Choice)> + '_ {
    (0..hashes.len().max(KEY_SLOTS)).map(move |index| match hashes.get(index) {
        Some(hash) => (hash.clone(), Choice::from(1)),
        None => (ClientKeyHash::placeholder(), Choice::from(0)),
    })
}

/// Whether a real slot matches the secret: one hash, every slot compared in constant time.
fn any_matches(hashes: &[ClientKeyHash], secret: &SecretString) -> bool {
    let presented = ClientKeyHash::of(secret.expose_secret());
    let found = slots(hashes).fold(Choice::from(0), |found, (hash, real)| {
        found | (hash.ct_eq(&presented) & real)
    });
    bool::from(found)
}

/// The configured client the request's key belongs to.
pub async fn authenticate<'c>(
    catalog: &'c Catalog,
    secrets: &dyn Secrets,
    headers: &HeaderMap,
) -> Result<&'c Client, AuthFailure> {
    let Some(presented) = presented(headers) else {
        return Err(AuthFailure::Missing);
    };
    let client = catalog.client(&presented.client);
    // The secret is read for an unknown name too: the same cache read (or fetch).
    let asked = client.map_or(NOT_A_CLIENT, Client::name);
    let hashes = match secrets.client_key_hashes(asked).await {
        Ok(hashes) => hashes,
        Err(error) if error.is_retryable() => return Err(AuthFailure::Unavailable(error)),
        Err(error) => return Err(AuthFailure::Misconfigured(error)),
    };
    let matched = any_matches(&hashes, &presented.secret);
    match client {
        Some(client) if matched => Ok(client),
        Some(client) => {
            if hashes.is_empty() {
                tracing::warn!(
                    client = client.name(),
                    "client has no key hashes in the client keys secret"
                );
            }
            Err(AuthFailure::Rejected {
                claimed: Some(client.name().to_owned()),
            })
        }
        None => Err(AuthFailure::Rejected { claimed: None }),
    }
}

/// A new client key and the hash that goes into the client keys secret.
pub struct MintedKey {
    /// `<client>.<secret>`: shown once to the operator, who hands it to the client.
    pub key: SecretString,
    pub hash: ClientKeyHash,
}

impl std::fmt::Debug for MintedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedKey")
            .field("hash", &self.hash.to_hex())
            .finish_non_exhaustive()
    }
}

/// Mints a key for `client`: 256 random bits from the thread's CSPRNG, base64url.
pub fn mint_key(client: &str) -> MintedKey {
    let mut bytes = [0_u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    let secret = URL_SAFE_NO_PAD.encode(bytes);
    let hash = ClientKeyHash::of(&secret);
    MintedKey {
        key: SecretString::from(format!("{client}.{secret}")),
        hash,
    }
}

/// The secret part of a minted or presented key (what the stored hash is computed over).
pub fn secret_part(key: &SecretString) -> Option<SecretString> {
    key.expose_secret()
        .split_once('.')
        .map(|(_, secret)| SecretString::from(secret.to_owned()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use axum::http::HeaderValue;

    use super::*;
    use crate::secrets::{CachedSecrets, LocalSecretSource};

    fn catalog() -> Catalog {
        let file = crate::config::parse_str(
            r#"
[[endpoint]]
name = "deploy"
target = { project = "gh/acme/deploy" }

[[client]]
name = "bot"
endpoints = ["deploy"]

[[client]]
name = "keyless"
endpoints = ["deploy"]
"#,
            "t.toml",
        )
        .unwrap();
        Catalog::new(&file).unwrap()
    }

    fn secrets(hashes: &[&ClientKeyHash]) -> CachedSecrets<LocalSecretSource> {
        let map: HashMap<&str, Vec<String>> =
            HashMap::from([("bot", hashes.iter().map(|h| h.to_hex()).collect())]);
        let source = LocalSecretSource::from_vars(
            [(
                crate::secrets::env_names::CLIENT_KEYS.to_owned(),
                serde_json::to_string(&map).unwrap(),
            )],
            "default",
        );
        CachedSecrets::new(source, Duration::from_secs(60))
    }

    fn bearer(key: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
        );
        headers
    }

    #[tokio::test]
    async fn any_current_key_of_a_client_authenticates_it() {
        let old = mint_key("bot");
        let new = mint_key("bot");
        assert!(new.key.expose_secret().starts_with("bot."));
        assert_eq!(
            ClientKeyHash::of(secret_part(&new.key).unwrap().expose_secret()),
            new.hash
        );
        let secrets = secrets(&[&old.hash, &new.hash]);
        let catalog = catalog();
        for key in [&old.key, &new.key] {
            let client = authenticate(&catalog, &secrets, &bearer(key.expose_secret()))
                .await
                .unwrap();
            assert_eq!(client.name(), "bot");
        }
        // The scheme is case-insensitive.
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("bearer {}", new.key.expose_secret())).unwrap(),
        );
        assert!(authenticate(&catalog, &secrets, &headers).await.is_ok());
    }

    #[tokio::test]
    async fn wrong_unknown_keyless_and_malformed_keys_are_refused() {
        let minted = mint_key("bot");
        let secrets = secrets(&[&minted.hash]);
        let catalog = catalog();
        let secret = secret_part(&minted.key).unwrap();
        let cases = [
            (format!("bot.{}x", secret.expose_secret()), Some("bot")),
            (format!("stranger.{}", secret.expose_secret()), None),
            (
                format!("keyless.{}", secret.expose_secret()),
                Some("keyless"),
            ),
        ];
        for (key, claimed) in cases {
            match authenticate(&catalog, &secrets, &bearer(&key)).await {
                Err(AuthFailure::Rejected { claimed: found }) => {
                    assert_eq!(found.as_deref(), claimed, "{key}")
                }
                other => panic!("{key}: {other:?}"),
            }
        }
        for header in [
            "Basic Ym90Og==",
            "Bearer",
            "Bearer nodot",
            "Bearer .x",
            "Bearer bot.",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, HeaderValue::from_static(header));
            assert!(
                matches!(
                    authenticate(&catalog, &secrets, &headers).await,
                    Err(AuthFailure::Missing)
                ),
                "{header}"
            );
        }
        assert!(matches!(
            authenticate(&catalog, &secrets, &HeaderMap::new()).await,
            Err(AuthFailure::Missing)
        ));
    }

    /// Counts reads of the client keys secret, then asks the real cache.
    struct Counting {
        inner: CachedSecrets<LocalSecretSource>,
        reads: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Secrets for Counting {
        async fn circleci_token(&self, name: &str) -> Result<SecretString, SecretsError> {
            self.inner.circleci_token(name).await
        }
        async fn webhook_signing_secrets(&self) -> Result<Vec<SecretString>, SecretsError> {
            self.inner.webhook_signing_secrets().await
        }
        async fn client_key_hashes(
            &self,
            client: &str,
        ) -> Result<Vec<ClientKeyHash>, SecretsError> {
            self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.client_key_hashes(client).await
        }
        async fn refresh(&self, kind: crate::secrets::SecretKind) {
            self.inner.refresh(kind).await;
        }
    }

    #[tokio::test]
    async fn an_unknown_client_costs_the_same_work_as_a_wrong_secret() {
        let minted = mint_key("bot");
        let secrets = Counting {
            inner: secrets(&[&minted.hash, &mint_key("bot").hash]),
            reads: Default::default(),
        };
        let catalog = catalog();
        let secret = secret_part(&minted.key).unwrap();
        for key in [
            format!("bot.{}x", secret.expose_secret()),
            format!("stranger.{}", secret.expose_secret()),
            format!("keyless.{}", secret.expose_secret()),
        ] {
            let before = secrets.reads.load(std::sync::atomic::Ordering::SeqCst);
            let refused = authenticate(&catalog, &secrets, &bearer(&key)).await;
            assert!(
                matches!(refused, Err(AuthFailure::Rejected { .. })),
                "{key}"
            );
            assert_eq!(
                secrets.reads.load(std::sync::atomic::Ordering::SeqCst),
                before + 1,
                "{key}: one read of the client keys secret"
            );
        }
        // Whatever a client has, one hash is compared against the same number of slots.
        let real = |hashes: &[ClientKeyHash]| {
            let compared: Vec<(ClientKeyHash, Choice)> = slots(hashes).collect();
            let real = compared.iter().filter(|(_, r)| bool::from(*r)).count();
            (compared.len(), real)
        };
        let two = [minted.hash.clone(), mint_key("bot").hash];
        assert_eq!(real(&[]), (KEY_SLOTS, 0));
        assert_eq!(real(&two[..1]), (KEY_SLOTS, 1));
        assert_eq!(real(&two), (KEY_SLOTS, 2));
        // With no keys nothing matches; with keys, the right secret does.
        assert!(!any_matches(&[], &SecretString::from(String::new())));
        assert!(any_matches(&two, &secret));
    }

    #[tokio::test]
    async fn a_missing_secret_is_a_misconfiguration_for_unknown_and_known_names_alike() {
        let catalog = catalog();
        let source = LocalSecretSource::from_vars(Vec::<(String, String)>::new(), "default");
        let secrets = CachedSecrets::new(source, Duration::from_secs(60));
        for key in ["bot.x", "stranger.x"] {
            assert!(
                matches!(
                    authenticate(&catalog, &secrets, &bearer(key)).await,
                    Err(AuthFailure::Misconfigured(_))
                ),
                "{key}"
            );
        }
    }

    #[test]
    fn minted_keys_are_distinct_and_debug_shows_no_key() {
        let a = mint_key("bot");
        let b = mint_key("bot");
        assert_ne!(a.key.expose_secret(), b.key.expose_secret());
        assert_eq!(a.key.expose_secret().len(), "bot.".len() + 43);
        let debug = format!("{a:?}");
        assert!(!debug.contains(secret_part(&a.key).unwrap().expose_secret()));
    }
}

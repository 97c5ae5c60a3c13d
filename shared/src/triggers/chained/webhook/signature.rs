//! The `circleci-signature` header: `v1=<hex HMAC-SHA256 of the raw body>[,v2=...]`.
//!
//! Only `v1` is verified; other schemes are ignored so CircleCI can add them without
//! breaking us. Several secrets may be valid at once while one is being rotated.
//! Errors say which check failed (for our logs) and never contain a secret or the
//! expected signature; the HTTP edge answers every one of them with the same 401.

use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "circleci-signature";

/// Longest header accepted: a few schemes of 64 hex digits fit many times over.
const MAX_HEADER_LEN: usize = 1024;
/// SHA-256 output.
const V1_LEN: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the circleci-signature header is missing")]
    Missing,
    #[error("the circleci-signature header is malformed")]
    Malformed,
    #[error("the circleci-signature header has no v1 signature")]
    NoV1,
    #[error("the circleci-signature header does not match the body")]
    Mismatch,
    /// A deployment problem, not the caller's: no signing secret is configured.
    #[error("no webhook signing secret is configured")]
    NoSecrets,
}

/// Verifies `header` (the raw `circleci-signature` value, if the request had one) for
/// `body` against every configured secret. Succeeds when any `v1` signature matches any
/// secret.
pub fn verify_signature(
    header: Option<&str>,
    body: &[u8],
    secrets: &[SecretString],
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let signatures = v1_signatures(header)?;
    if secrets.is_empty() {
        return Err(SignatureError::NoSecrets);
    }
    // Every pair is checked, without stopping at the first match, so the time taken does
    // not reveal which secret (old or new) signed the body.
    let mut matched = false;
    for secret in secrets {
        for signature in &signatures {
            matched |= mac(secret, body).verify_slice(signature).is_ok();
        }
    }
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The `v1=<hex>` value CircleCI would send for `body` signed with `secret`
/// (for the simulator and tests).
pub fn sign_v1(body: &[u8], secret: &SecretString) -> String {
    format!(
        "v1={}",
        hex::encode(mac(secret, body).finalize().into_bytes())
    )
}

fn mac(secret: &SecretString, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length (long ones are hashed first), so this cannot fail.
    <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose_secret().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"))
        .chain_update(body)
}

/// The decoded `v1` signatures in a header (one normally; several are all tried).
fn v1_signatures(header: &str) -> Result<Vec<[u8; V1_LEN]>, SignatureError> {
    let header = header.trim();
    if header.is_empty() || header.len() > MAX_HEADER_LEN {
        return Err(SignatureError::Malformed);
    }
    let mut found = Vec::new();
    for element in header.split(',') {
        let (scheme, value) = element
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?;
        if scheme.trim() != "v1" {
            continue; // v2 and later schemes are not ours to check
        }
        let mut signature = [0u8; V1_LEN];
        hex::decode_to_slice(value.trim(), &mut signature)
            .map_err(|_| SignatureError::Malformed)?;
        found.push(signature);
    }
    if found.is_empty() {
        Err(SignatureError::NoV1)
    } else {
        Ok(found)
    }
}

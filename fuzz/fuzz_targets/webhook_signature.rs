//! The `circleci-signature` header: parsing and verification.
//!
//! Input: `header \0 secret \0 body` (missing parts are empty). Beyond "no panic":
//! - a header without a matching `v1` never verifies (only the real HMAC does);
//! - the signature computed with the secret verifies, also next to other schemes, in upper
//!   case, and while a second secret is configured (rotation);
//! - another secret, or a changed body, is a mismatch.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;
use shared::triggers::chained::webhook::{SignatureError, sign_v1, verify_signature};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |byte| *byte == 0);
    let header = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let secret_text = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let body = parts.next().unwrap_or_default();
    let secret = SecretString::from(secret_text.clone());
    let other = SecretString::from(format!("{secret_text}-other"));

    // The fuzzer's own header: whatever it is, it verifies only if it carries the real MAC.
    let expected = sign_v1(body, &secret);
    let expected_hex = &expected["v1=".len()..];
    match verify_signature(Some(&header), body, std::slice::from_ref(&secret)) {
        Ok(()) => assert!(
            header.to_ascii_lowercase().contains(expected_hex),
            "{header:?} verified without the body's signature"
        ),
        Err(SignatureError::NoSecrets) => panic!("a secret was configured"),
        Err(_) => {}
    }
    assert_eq!(
        verify_signature(None, body, std::slice::from_ref(&secret)),
        Err(SignatureError::Missing)
    );
    if !header.trim().is_empty() {
        let without_secrets = verify_signature(Some(&header), body, &[]);
        assert_ne!(without_secrets, Ok(()), "verified with no secret");
    }

    // The real signature, in the forms CircleCI may send it.
    let secrets = [other.clone(), secret.clone()];
    for signed in [
        expected.clone(),
        format!("v2=abc, {expected} "),
        format!("{expected},v1={}", "0".repeat(64)),
        format!("v1={}", expected_hex.to_ascii_uppercase()),
    ] {
        assert_eq!(
            verify_signature(Some(&signed), body, std::slice::from_ref(&secret)),
            Ok(()),
            "{signed}"
        );
        assert_eq!(verify_signature(Some(&signed), body, &secrets), Ok(()));
        assert_eq!(
            verify_signature(Some(&signed), body, std::slice::from_ref(&other)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(Some(&signed), body, &[]),
            Err(SignatureError::NoSecrets)
        );
    }
    if let Some((first, rest)) = body.split_first() {
        let mut changed = vec![first ^ 0x01];
        changed.extend_from_slice(rest);
        assert_eq!(
            verify_signature(Some(&expected), &changed, std::slice::from_ref(&secret)),
            Err(SignatureError::Mismatch)
        );
    }
});

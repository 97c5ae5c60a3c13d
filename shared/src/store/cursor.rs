//! Opaque page cursors: base64url JSON bound to the query that issued them, so a cursor
//! from one listing cannot be replayed against another (it fails as `InvalidCursor`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::{Cursor, StoreError, StoreResult};

#[derive(serde::Serialize, serde::Deserialize)]
struct Envelope<P> {
    /// A short digest of the query's identity (index + partition).
    q: String,
    p: P,
}

fn scope_tag(scope: &str) -> String {
    hex::encode(&Sha256::digest(scope.as_bytes())[..8])
}

pub(crate) fn encode<P: Serialize>(scope: &str, position: &P) -> StoreResult<Cursor> {
    let envelope = Envelope {
        q: scope_tag(scope),
        p: position,
    };
    let json = serde_json::to_vec(&envelope)
        .map_err(|error| StoreError::invalid(format!("cannot encode a page cursor: {error}")))?;
    Ok(Cursor(URL_SAFE_NO_PAD.encode(json)))
}

pub(crate) fn decode<P: DeserializeOwned>(scope: &str, cursor: &Cursor) -> StoreResult<P> {
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor.0.as_bytes())
        .map_err(|_| StoreError::InvalidCursor)?;
    let envelope: Envelope<P> =
        serde_json::from_slice(&bytes).map_err(|_| StoreError::InvalidCursor)?;
    if envelope.q != scope_tag(scope) {
        return Err(StoreError::InvalidCursor);
    }
    Ok(envelope.p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_only_within_their_query() {
        let cursor = encode("source#schedule#nightly", &(42_i64, "id")).unwrap();
        let back: (i64, String) = decode("source#schedule#nightly", &cursor).unwrap();
        assert_eq!(back, (42, "id".to_owned()));
        assert!(matches!(
            decode::<(i64, String)>("project#gh/a/b", &cursor),
            Err(StoreError::InvalidCursor)
        ));
        assert!(matches!(
            decode::<(i64, String)>("x", &Cursor::from_token("not base64 !")),
            Err(StoreError::InvalidCursor)
        ));
    }
}

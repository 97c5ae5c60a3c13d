//! Attribute-value plumbing and error classification for the DynamoDB adapter.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use chrono::{DateTime, Utc};

use crate::store::logic::from_millis;
use crate::store::{StoreError, StoreResult};

pub(crate) type Item = HashMap<String, AttributeValue>;

pub(crate) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(crate) fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(crate) fn n_u64(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// DynamoDB's TTL attribute is epoch seconds; rounded up so TTL never deletes an item
/// before the expiry the code compares against.
pub(crate) fn ttl_seconds(at: DateTime<Utc>) -> i64 {
    let ms = at.timestamp_millis();
    ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) != 0)
}

pub(crate) fn from_ttl_seconds(seconds: i64) -> StoreResult<DateTime<Utc>> {
    from_millis(seconds.saturating_mul(1000))
}

/// An instant for sort keys: 13 hex digits of microseconds since the epoch. Sorts like
/// the instant (until the year 2112), and is short: index keys are paid for on every write
/// of an item.
pub(crate) fn sort_time(at: DateTime<Utc>) -> String {
    let micros = u64::try_from(at.timestamp_micros()).unwrap_or(0);
    format!("{micros:013x}")
}

pub(crate) struct Reader<'a> {
    item: &'a Item,
    what: &'a str,
}

impl<'a> Reader<'a> {
    pub fn new(item: &'a Item, what: &'a str) -> Self {
        Self { item, what }
    }

    fn corrupt(&self, attribute: &str, problem: &str) -> StoreError {
        StoreError::corrupt(self.what, format!("attribute `{attribute}` {problem}"))
    }

    pub fn opt_s(&self, attribute: &str) -> StoreResult<Option<&'a str>> {
        match self.item.get(attribute) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(value)) => Ok(Some(value)),
            Some(_) => Err(self.corrupt(attribute, "is not a string")),
        }
    }

    pub fn s(&self, attribute: &str) -> StoreResult<&'a str> {
        self.opt_s(attribute)?
            .ok_or_else(|| self.corrupt(attribute, "is missing"))
    }

    pub fn opt_n(&self, attribute: &str) -> StoreResult<Option<i64>> {
        match self.item.get(attribute) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::N(value)) => value
                .parse()
                .map(Some)
                .map_err(|_| self.corrupt(attribute, "is not an integer")),
            Some(_) => Err(self.corrupt(attribute, "is not a number")),
        }
    }

    pub fn n(&self, attribute: &str) -> StoreResult<i64> {
        self.opt_n(attribute)?
            .ok_or_else(|| self.corrupt(attribute, "is missing"))
    }

    pub fn time(&self, attribute: &str) -> StoreResult<DateTime<Utc>> {
        from_millis(self.n(attribute)?)
    }

    pub fn opt_time(&self, attribute: &str) -> StoreResult<Option<DateTime<Utc>>> {
        self.opt_n(attribute)?.map(from_millis).transpose()
    }

    pub fn bool(&self, attribute: &str) -> StoreResult<bool> {
        match self.item.get(attribute) {
            Some(AttributeValue::Bool(value)) => Ok(*value),
            _ => Err(self.corrupt(attribute, "is not a boolean")),
        }
    }

    pub fn string_set(&self, attribute: &str) -> StoreResult<BTreeSet<String>> {
        match self.item.get(attribute) {
            Some(AttributeValue::Ss(values)) => Ok(values.iter().cloned().collect()),
            _ => Err(self.corrupt(attribute, "is not a string set")),
        }
    }
}

/// `LastEvaluatedKey` (all string attributes here) to a plain map for a cursor, and back.
pub(crate) fn key_to_strings(key: &Item) -> StoreResult<BTreeMap<String, String>> {
    key.iter()
        .map(|(name, value)| match value {
            AttributeValue::S(text) => Ok((name.clone(), text.clone())),
            _ => Err(StoreError::Internal {
                message: format!("unexpected non-string key attribute `{name}`"),
            }),
        })
        .collect()
}

pub(crate) fn strings_to_key(strings: BTreeMap<String, String>) -> Item {
    strings.into_iter().map(|(k, v)| (k, s(v))).collect()
}

/// DynamoDB error codes that mean "try again later".
const RETRYABLE_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionConflictException",
    "TransactionInProgressException",
    "LimitExceededException",
];

/// Codes that mean the deployment is wrong (no table, no permission, bad credentials).
const MISCONFIGURED_CODES: &[&str] = &[
    "ResourceNotFoundException",
    "AccessDeniedException",
    "UnrecognizedClientException",
    "MissingAuthenticationTokenException",
    "InvalidSignatureException",
    "ValidationException",
];

/// Maps any SDK error to the port's error, retryable or not.
pub(crate) fn classify<E>(operation: &str, error: &SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata,
{
    match error {
        SdkError::ServiceError(context) => {
            let code = context.err().code().unwrap_or("Unknown");
            let detail = context.err().message().unwrap_or_default();
            let status = context.raw().status().as_u16();
            let message = format!("{operation}: {code} (HTTP {status}) {detail}")
                .trim_end()
                .to_owned();
            if RETRYABLE_CODES.contains(&code) || status >= 500 {
                StoreError::Unavailable { message }
            } else if MISCONFIGURED_CODES.contains(&code) {
                StoreError::Misconfigured { message }
            } else {
                StoreError::Internal { message }
            }
        }
        SdkError::TimeoutError(_) => StoreError::Unavailable {
            message: format!("{operation}: timed out"),
        },
        SdkError::DispatchFailure(_) => StoreError::Unavailable {
            message: format!("{operation}: could not reach DynamoDB"),
        },
        SdkError::ResponseError(_) => StoreError::Unavailable {
            message: format!("{operation}: unreadable response from DynamoDB"),
        },
        SdkError::ConstructionFailure(_) => StoreError::Internal {
            message: format!("{operation}: could not build the request"),
        },
        _ => StoreError::Unavailable {
            message: format!("{operation}: request failed"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ttl_rounds_up_to_whole_seconds() {
        let exact = Utc.timestamp_millis_opt(5_000).unwrap();
        let fraction = Utc.timestamp_millis_opt(5_001).unwrap();
        assert_eq!(ttl_seconds(exact), 5);
        assert_eq!(ttl_seconds(fraction), 6);
    }

    #[test]
    fn sort_times_sort_like_instants() {
        let a = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let b = a + chrono::TimeDelta::microseconds(1);
        let c = a + chrono::TimeDelta::days(400);
        assert!(sort_time(a) < sort_time(b));
        assert!(sort_time(b) < sort_time(c));
        assert_eq!(sort_time(a), "6475ef64cf340");
        assert_eq!(sort_time(a).len(), 13);
    }
}

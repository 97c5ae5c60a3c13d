//! The outbox on the single DynamoDB table (the Lambda functions).
//!
//! | item | pk | sk | attributes |
//! |---|---|---|---|
//! | dedup key | `NOTIFY#<trigger>#<status>#<sink>` | `NOTIFY` | `expires_at` (TTL) |
//! | pending entry | `NOTIFY#PENDING` | `<due, 20-digit ms>#<id>` | `id`, `body`, `attempts`, `expires_at` |
//!
//! Enqueue is one `TransactWriteItems`: the dedup key's conditional `Put` (absent, or
//! expired as compared in code) and the pending entry's `Put`. The sweep is one `Query` on
//! `NOTIFY#PENDING` up to now (the sort key orders by due time); taking an entry is a
//! transaction moving it to its next due time (`Delete` conditional on its attempt count +
//! `Put`); delivery deletes it.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem};
use chrono::{DateTime, Utc};

use super::{DEDUP_RETENTION, Notification, NotifyError, Outbox, Pending};
use crate::store::dynamo::{PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE};

/// The partition of pending entries.
pub const PENDING_PARTITION: &str = "NOTIFY#PENDING";

/// The outbox over the trigger table.
#[derive(Clone)]
pub struct DynamoOutbox {
    client: Client,
    table: String,
}

impl DynamoOutbox {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn pending_item(pending: &Pending) -> Result<HashMap<String, AttributeValue>, NotifyError> {
        let body = serde_json::to_string(&pending.notification)
            .map_err(|error| NotifyError::Unavailable(error.to_string()))?;
        let expires = pending.due_at.timestamp() + DEDUP_RETENTION.as_secs() as i64;
        Ok(HashMap::from([
            (PARTITION_KEY.to_owned(), s(PENDING_PARTITION)),
            (SORT_KEY.to_owned(), s(&pending_sort_key(pending))),
            ("id".to_owned(), s(&pending.notification.id)),
            ("body".to_owned(), s(&body)),
            (
                "attempts".to_owned(),
                AttributeValue::N(pending.attempts.to_string()),
            ),
            (
                TTL_ATTRIBUTE.to_owned(),
                AttributeValue::N(expires.to_string()),
            ),
        ]))
    }
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn due_prefix(at: DateTime<Utc>) -> String {
    format!("{:020}", at.timestamp_millis().max(0))
}

fn pending_sort_key(pending: &Pending) -> String {
    format!("{}#{}", due_prefix(pending.due_at), pending.notification.id)
}

fn failed<E: ProvideErrorMetadata>(operation: &str, error: &SdkError<E>) -> NotifyError {
    let detail = match error {
        SdkError::ServiceError(context) => context.err().code().unwrap_or("Unknown").to_owned(),
        SdkError::TimeoutError(_) => "timed out".to_owned(),
        SdkError::DispatchFailure(_) => "could not reach DynamoDB".to_owned(),
        _ => "request failed".to_owned(),
    };
    NotifyError::Unavailable(format!("{operation}: {detail}"))
}

/// Whether a transaction was cancelled because a condition did not hold.
fn condition_failed(error: &SdkError<TransactWriteItemsError>) -> bool {
    match error {
        SdkError::ServiceError(context) => match context.err() {
            TransactWriteItemsError::TransactionCanceledException(cancelled) => cancelled
                .cancellation_reasons()
                .iter()
                .any(|reason| reason.code() == Some("ConditionalCheckFailed")),
            _ => false,
        },
        _ => false,
    }
}

#[async_trait]
impl Outbox for DynamoOutbox {
    async fn enqueue(
        &self,
        notification: &Notification,
        due_at: DateTime<Utc>,
    ) -> Result<bool, NotifyError> {
        let pending = Pending {
            notification: notification.clone(),
            attempts: 0,
            due_at,
        };
        let expires = due_at.timestamp() + DEDUP_RETENTION.as_secs() as i64;
        let dedup = Put::builder()
            .table_name(&self.table)
            .item(PARTITION_KEY, s(&format!("NOTIFY#{}", notification.id)))
            .item(SORT_KEY, s("NOTIFY"))
            .item(TTL_ATTRIBUTE, AttributeValue::N(expires.to_string()))
            .condition_expression("attribute_not_exists(#pk) OR #ttl < :now")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":now", AttributeValue::N(due_at.timestamp().to_string()))
            .build()
            .map_err(|error| NotifyError::Unavailable(error.to_string()))?;
        let entry = Put::builder()
            .table_name(&self.table)
            .set_item(Some(Self::pending_item(&pending)?))
            .build()
            .map_err(|error| NotifyError::Unavailable(error.to_string()))?;
        let sent = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(dedup).build())
            .transact_items(TransactWriteItem::builder().put(entry).build())
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(error) if condition_failed(&error) => Ok(false),
            Err(error) => Err(failed("notify enqueue", &error)),
        }
    }

    async fn due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Pending>, NotifyError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND #sk < :until")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_names("#sk", SORT_KEY)
            .expression_attribute_values(":pk", s(PENDING_PARTITION))
            // Every key due at `now` sorts before `<now>$` ('#' < '$').
            .expression_attribute_values(":until", s(&format!("{}$", due_prefix(now))))
            .consistent_read(true)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|error| failed("notify due", &error))?;
        let mut found = Vec::new();
        for item in output.items() {
            let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
            let key = text(SORT_KEY).unwrap_or_default();
            let corrupt = |reason: &str| NotifyError::Corrupt {
                key: key.clone(),
                reason: reason.to_owned(),
            };
            let body = text("body").ok_or_else(|| corrupt("no body"))?;
            let notification: Notification =
                serde_json::from_str(&body).map_err(|error| corrupt(&error.to_string()))?;
            let attempts = item
                .get("attempts")
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| corrupt("no attempt count"))?;
            let due_at = key
                .split('#')
                .next()
                .and_then(|millis| millis.parse::<i64>().ok())
                .and_then(DateTime::from_timestamp_millis)
                .ok_or_else(|| corrupt("no due time"))?;
            found.push(Pending {
                notification,
                attempts,
                due_at,
            });
        }
        Ok(found)
    }

    async fn take(
        &self,
        pending: &Pending,
        next_due: DateTime<Utc>,
    ) -> Result<Option<Pending>, NotifyError> {
        let taken = Pending {
            notification: pending.notification.clone(),
            attempts: pending.attempts + 1,
            due_at: next_due,
        };
        let old = Delete::builder()
            .table_name(&self.table)
            .key(PARTITION_KEY, s(PENDING_PARTITION))
            .key(SORT_KEY, s(&pending_sort_key(pending)))
            .condition_expression("attempts = :attempts")
            .expression_attribute_values(
                ":attempts",
                AttributeValue::N(pending.attempts.to_string()),
            )
            .build()
            .map_err(|error| NotifyError::Unavailable(error.to_string()))?;
        let new = Put::builder()
            .table_name(&self.table)
            .set_item(Some(Self::pending_item(&taken)?))
            .build()
            .map_err(|error| NotifyError::Unavailable(error.to_string()))?;
        let sent = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().delete(old).build())
            .transact_items(TransactWriteItem::builder().put(new).build())
            .send()
            .await;
        match sent {
            Ok(_) => Ok(Some(taken)),
            Err(error) if condition_failed(&error) => Ok(None),
            Err(error) => Err(failed("notify take", &error)),
        }
    }

    async fn remove(&self, pending: &Pending) -> Result<(), NotifyError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key(PARTITION_KEY, s(PENDING_PARTITION))
            .key(SORT_KEY, s(&pending_sort_key(pending)))
            .send()
            .await
            .map_err(|error| failed("notify remove", &error))?;
        Ok(())
    }
}

//! The delivery queue in AWS: SQS. The `webhooks` function sends each verified delivery
//! (`SendMessage`: the body as signed, the acceptance time and refusal as message
//! attributes); the `chained` function receives batches from the event source mapping and
//! answers with the ids of the messages to keep (`ReportBatchItemFailures`).
//!
//! A delivery to retry later is given its delay with `ChangeMessageVisibility`, so an
//! approval job that is not on hold yet is retried in about a minute rather than after the
//! queue's whole visibility timeout. After [`MAX_RECEIVES`](super::MAX_RECEIVES) receives the
//! redrive policy moves a message to the dead-letter queue, where an alarm sees it.

use std::time::Duration;

use aws_sdk_sqs::types::MessageAttributeValue;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AcceptedDelivery, DeliveryQueue, QueueError, Settlement, settle_batch};
use crate::triggers::chained::Receiver;

/// The environment variable holding the queue's URL (both functions).
pub const QUEUE_URL_ENV: &str = "DELIVERY_QUEUE_URL";

const ACCEPTED_AT: &str = "accepted_at";
const REFUSED: &str = "refused";

/// SQS's longest visibility timeout a message can be given (12 hours).
const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);

/// The queue through the AWS SDK.
#[derive(Clone, Debug)]
pub struct SqsDeliveryQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsDeliveryQueue {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }

    /// Makes a received message visible again after `after` (instead of at the end of the
    /// queue's visibility timeout).
    pub async fn retry_after(
        &self,
        receipt_handle: &str,
        after: Duration,
    ) -> Result<(), QueueError> {
        let seconds = after.min(MAX_VISIBILITY).as_secs().max(1);
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(i32::try_from(seconds).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|error| {
                QueueError::Unavailable(aws_sdk_sqs::error::DisplayErrorContext(error).to_string())
            })?;
        Ok(())
    }
}

fn string_attribute(value: String) -> Result<MessageAttributeValue, QueueError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|error| QueueError::Refused(error.to_string()))
}

#[async_trait::async_trait]
impl DeliveryQueue for SqsDeliveryQueue {
    async fn enqueue(&self, delivery: &AcceptedDelivery) -> Result<String, QueueError> {
        let mut request = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(&delivery.body)
            .message_attributes(
                ACCEPTED_AT,
                string_attribute(delivery.accepted_at.to_rfc3339())?,
            );
        if let Some(reason) = &delivery.refused {
            request = request.message_attributes(REFUSED, string_attribute(reason.clone())?);
        }
        let sent = request.send().await.map_err(|error| {
            let refused = error.as_service_error().is_some_and(|service| {
                service.meta().code().is_some_and(|code| {
                    code.contains("InvalidMessageContents")
                        || code.contains("InvalidParameterValue")
                })
            });
            let text = aws_sdk_sqs::error::DisplayErrorContext(error).to_string();
            if refused {
                QueueError::Refused(text)
            } else {
                QueueError::Unavailable(text)
            }
        })?;
        Ok(sent.message_id().unwrap_or_default().to_owned())
    }
}

/// One record of the event source mapping's event (the fields the worker reads).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SqsRecord {
    message_id: String,
    #[serde(default)]
    receipt_handle: Option<String>,
    body: String,
    #[serde(default)]
    message_attributes: std::collections::BTreeMap<String, SqsAttribute>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SqsAttribute {
    #[serde(default)]
    string_value: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SqsBatch {
    records: Vec<SqsRecord>,
}

impl SqsRecord {
    fn attribute(&self, name: &str) -> Option<String> {
        self.message_attributes
            .get(name)
            .and_then(|value| value.string_value.clone())
    }

    fn delivery(&self) -> AcceptedDelivery {
        AcceptedDelivery {
            body: self.body.clone(),
            accepted_at: self
                .attribute(ACCEPTED_AT)
                .and_then(|text| DateTime::parse_from_rfc3339(&text).ok())
                .map(|at| at.with_timezone(&Utc))
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
            refused: self.attribute(REFUSED),
        }
    }
}

/// Why a batch could not be read at all (the invocation fails; SQS retries every message).
#[derive(Debug, thiserror::Error)]
#[error("not an SQS batch: {0}")]
pub struct NotABatch(String);

/// The `chained` function's handler: settles each record of an SQS batch concurrently and
/// answers `{"batchItemFailures": [...]}` naming the ones SQS must deliver again. A retry
/// with a delay first sets the message's visibility to that delay (`queue`).
pub async fn handle_batch(
    receiver: &Receiver,
    queue: Option<&SqsDeliveryQueue>,
    payload: Value,
) -> Result<Value, NotABatch> {
    let batch: SqsBatch =
        serde_json::from_value(payload).map_err(|error| NotABatch(error.to_string()))?;
    let deliveries: Vec<AcceptedDelivery> = batch.records.iter().map(SqsRecord::delivery).collect();
    let settlements = settle_batch(receiver, &deliveries.iter().collect::<Vec<_>>()).await;
    let work = batch
        .records
        .into_iter()
        .zip(settlements)
        .map(|(record, settlement)| async move {
            match settlement {
                Settlement::Settled(_) => None,
                Settlement::Retry { after, .. } => {
                    if let (Some(queue), Some(handle)) = (queue, record.receipt_handle.as_deref())
                        && let Err(error) = queue.retry_after(handle, after).await
                    {
                        // The message still comes back, after the queue's visibility timeout.
                        tracing::warn!(%error, message_id = %record.message_id,
                            "could not shorten the retry delay");
                    }
                    Some(record.message_id)
                }
                Settlement::Failed { .. } => Some(record.message_id),
            }
        });
    let failures: Vec<Value> = futures::future::join_all(work)
        .await
        .into_iter()
        .flatten()
        .map(|id| json!({ "itemIdentifier": id }))
        .collect();
    Ok(json!({ "batchItemFailures": failures }))
}

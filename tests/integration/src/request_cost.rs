//! What DynamoDB requests cost, measured on moto_server: an SDK interceptor records every
//! request (operation and JSON body), and [`Cost::of`] prices them in request units.
//!
//! moto's `ConsumedCapacity` is not DynamoDB's (it is a fixed figure), so the units are
//! computed here from item sizes by DynamoDB's published rules: a read is one unit per 4 KB
//! (rounded up, at least one; half for an eventually consistent read), a `Query` sums the
//! sizes of the items it reads; a write is one unit per 1 KB (rounded up, at least one), a
//! transaction twice that. The sizes of the items a read returned are taken by repeating the
//! read with an unrecorded client right after (call [`Cost::of`] before anything else
//! writes); an `UpdateItem` or `DeleteItem` is counted as one unit.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use serde::Serialize;
use serde_json::Value;

/// One recorded DynamoDB request.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GetItem`, `Query`, `PutItem`, ... (from `X-Amz-Target`).
    pub operation: String,
    pub body: Value,
}

impl Recorded {
    /// The operation (from `X-Amz-Target`) and JSON body of a request an SDK client is about
    /// to send (for interceptors: this recorder, the IAM audit).
    pub fn of(context: &BeforeTransmitInterceptorContextRef<'_>) -> Result<Recorded, BoxError> {
        let request = context.request();
        let operation = request
            .headers()
            .get("x-amz-target")
            .and_then(|target| target.rsplit_once('.'))
            .map(|(_, operation)| operation.to_owned())
            .ok_or("a DynamoDB request without X-Amz-Target")?;
        let body = match request.body().bytes() {
            Some(bytes) if !bytes.is_empty() => serde_json::from_slice(bytes)?,
            _ => Value::Null,
        };
        Ok(Recorded { operation, body })
    }
}

/// Records every DynamoDB request a client sends (attach with `.interceptor(...)`).
#[derive(Debug, Clone, Default)]
pub struct DynamoRecorder(Arc<Mutex<Vec<Recorded>>>);

impl DynamoRecorder {
    /// The requests recorded so far, and forgets them.
    pub fn take(&self) -> Vec<Recorded> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The operations (`PutItem`, `Query`, ...) of the requests recorded so far, in order,
    /// and forgets them.
    pub fn take_operations(&self) -> Vec<String> {
        self.take()
            .into_iter()
            .map(|request| request.operation)
            .collect()
    }
}

impl Intercept for DynamoRecorder {
    fn name(&self) -> &'static str {
        "DynamoRecorder"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let recorded = Recorded::of(context)?;
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(recorded);
        Ok(())
    }
}

/// The cost of a sequence of requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Cost {
    pub requests: usize,
    /// Requests by operation.
    pub operations: BTreeMap<String, usize>,
    /// Read request units (on-demand RRU).
    pub read_units: f64,
    /// Write request units (on-demand WRU).
    pub write_units: f64,
    /// Bytes of the largest item read (DynamoDB's size rules).
    pub largest_item_read: usize,
}

impl Cost {
    /// Prices `requests`, repeating each read with `client` (no recorder) to size what it read.
    pub async fn of(requests: &[Recorded], client: &Client) -> Result<Cost, String> {
        let mut cost = Cost {
            requests: requests.len(),
            ..Cost::default()
        };
        for request in requests {
            *cost
                .operations
                .entry(request.operation.clone())
                .or_default() += 1;
            let body = &request.body;
            let consistent = body["ConsistentRead"].as_bool().unwrap_or(false);
            let scale = if consistent { 1.0 } else { 0.5 };
            match request.operation.as_str() {
                "GetItem" => {
                    let size = get_item_size(client, body).await?;
                    cost.largest_item_read = cost.largest_item_read.max(size);
                    cost.read_units += read_units(size) * scale;
                }
                "Query" => {
                    let sizes = query_item_sizes(client, body).await?;
                    let largest = sizes.iter().copied().max().unwrap_or(0);
                    cost.largest_item_read = cost.largest_item_read.max(largest);
                    cost.read_units += read_units(sizes.iter().sum()) * scale;
                }
                "PutItem" => cost.write_units += write_units(json_item_size(&body["Item"])),
                "TransactWriteItems" => {
                    for item in body["TransactItems"].as_array().into_iter().flatten() {
                        let units = match item.get("Put") {
                            Some(put) => write_units(json_item_size(&put["Item"])),
                            None => 1.0,
                        };
                        cost.write_units += 2.0 * units;
                    }
                }
                "UpdateItem" | "DeleteItem" => cost.write_units += 1.0,
                "BatchWriteItem" => {
                    for writes in body["RequestItems"]
                        .as_object()
                        .into_iter()
                        .flat_map(|m| m.values())
                    {
                        for write in writes.as_array().into_iter().flatten() {
                            cost.write_units += match write.get("PutRequest") {
                                Some(put) => write_units(json_item_size(&put["Item"])),
                                None => 1.0,
                            };
                        }
                    }
                }
                other => return Err(format!("no price for {other}")),
            }
        }
        Ok(cost)
    }

    /// Requests that write (any write, whatever its units).
    pub fn write_requests(&self) -> usize {
        [
            "PutItem",
            "UpdateItem",
            "DeleteItem",
            "TransactWriteItems",
            "BatchWriteItem",
        ]
        .iter()
        .filter_map(|operation| self.operations.get(*operation))
        .sum()
    }
}

fn read_units(bytes: usize) -> f64 {
    bytes.div_ceil(4096).max(1) as f64
}

fn write_units(bytes: usize) -> f64 {
    bytes.div_ceil(1024).max(1) as f64
}

async fn get_item_size(client: &Client, body: &Value) -> Result<usize, String> {
    let output = client
        .get_item()
        .table_name(body["TableName"].as_str().unwrap_or_default())
        .set_key(Some(attributes(&body["Key"])?))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| format!("GetItem: {e:?}"))?;
    Ok(output.item.as_ref().map_or(0, item_size))
}

/// The sizes of every item the query reads (all pages; filters are left out: DynamoDB
/// charges for what it reads before filtering).
async fn query_item_sizes(client: &Client, body: &Value) -> Result<Vec<usize>, String> {
    let names: Option<HashMap<String, String>> =
        body["ExpressionAttributeNames"].as_object().map(|names| {
            names
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        });
    let values = match body.get("ExpressionAttributeValues") {
        Some(values) => Some(attributes(values)?),
        None => None,
    };
    let limit = body["Limit"].as_i64().and_then(|l| i32::try_from(l).ok());
    let mut sizes = Vec::new();
    let mut start = match body.get("ExclusiveStartKey") {
        Some(key) => Some(attributes(key)?),
        None => None,
    };
    loop {
        let output = client
            .query()
            .table_name(body["TableName"].as_str().unwrap_or_default())
            .set_index_name(body["IndexName"].as_str().map(str::to_owned))
            .set_key_condition_expression(
                body["KeyConditionExpression"].as_str().map(str::to_owned),
            )
            .set_expression_attribute_names(names.clone())
            .set_expression_attribute_values(values.clone())
            .set_scan_index_forward(body["ScanIndexForward"].as_bool())
            .set_limit(limit)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| format!("Query: {e:?}"))?;
        sizes.extend(output.items().iter().map(item_size));
        // One request reads one page: a `Limit` ends it.
        if limit.is_some() || output.last_evaluated_key.is_none() {
            return Ok(sizes);
        }
        start = output.last_evaluated_key;
    }
}

fn attributes(json: &Value) -> Result<HashMap<String, AttributeValue>, String> {
    json.as_object()
        .ok_or("not a map of attributes")?
        .iter()
        .map(|(name, value)| Ok((name.clone(), attribute(value)?)))
        .collect()
}

fn attribute(json: &Value) -> Result<AttributeValue, String> {
    let (kind, value) = json
        .as_object()
        .and_then(|m| m.iter().next())
        .ok_or("not an attribute value")?;
    let text = || value.as_str().unwrap_or_default().to_owned();
    Ok(match kind.as_str() {
        "S" => AttributeValue::S(text()),
        "N" => AttributeValue::N(text()),
        "BOOL" => AttributeValue::Bool(value.as_bool().unwrap_or(false)),
        "NULL" => AttributeValue::Null(true),
        "B" => AttributeValue::B(blob(value)?),
        "SS" | "NS" => {
            let texts = value
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| v.as_str().unwrap_or_default().to_owned())
                .collect();
            if kind == "SS" {
                AttributeValue::Ss(texts)
            } else {
                AttributeValue::Ns(texts)
            }
        }
        "BS" => AttributeValue::Bs(
            value
                .as_array()
                .into_iter()
                .flatten()
                .map(blob)
                .collect::<Result<_, _>>()?,
        ),
        "M" => AttributeValue::M(attributes(value)?),
        "L" => AttributeValue::L(
            value
                .as_array()
                .into_iter()
                .flatten()
                .map(attribute)
                .collect::<Result<_, _>>()?,
        ),
        other => return Err(format!("attribute type {other} not handled")),
    })
}

/// A binary value as the JSON protocol carries it (base64).
fn blob(json: &Value) -> Result<aws_smithy_types::Blob, String> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(json.as_str().unwrap_or_default())
        .map(aws_smithy_types::Blob::new)
        .map_err(|error| format!("binary attribute: {error}"))
}

/// An item's size by DynamoDB's rules: each attribute's name plus its value (strings and
/// binaries their length, numbers about one byte per two digits plus one, booleans and
/// nulls one, maps and lists three plus their elements).
pub fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter()
        .map(|(name, value)| name.len() + value_size(value))
        .sum()
}

fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(set) => set.iter().map(String::len).sum(),
        AttributeValue::Ns(set) => set.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(set) => set.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::M(map) => 3 + item_size(map) + map.len(),
        AttributeValue::L(list) => 3 + list.iter().map(|v| value_size(v) + 1).sum::<usize>(),
        _ => 0,
    }
}

/// About one byte per two significant digits (leading and trailing zeros are not stored),
/// plus one.
fn number_size(n: &str) -> usize {
    let digits: String = n.chars().filter(char::is_ascii_digit).collect();
    let significant = digits
        .trim_start_matches('0')
        .trim_end_matches('0')
        .len()
        .max(1);
    significant.div_ceil(2) + 1
}

/// [`item_size`] of an item in the request's JSON form (`{"name": {"S": "…"}}`).
pub fn json_item_size(item: &Value) -> usize {
    attributes(item).map_or(0, |item| item_size(&item))
}

/// What the scheduler's ticks cost with `schedules` schedules (none of them due), on a
/// DynamoDB table on moto_server.
#[derive(Debug, Clone, Serialize)]
pub struct TickCosts {
    pub schedules: usize,
    /// The first tick: no state yet, every schedule evaluated, state and definitions saved.
    pub first: Cost,
    /// A tick a minute later with nothing due.
    pub idle: Cost,
}

/// `schedules` daily schedules (`0 2 * * *` UTC, one target each): a first tick at 10:00,
/// then an idle tick at 10:01; the DynamoDB requests of each, priced. DynamoDB is moto_server
/// at `endpoint`, or at `AWS_ENDPOINT_URL`.
pub async fn idle_tick_costs(
    schedules: usize,
    endpoint: Option<&str>,
) -> Result<TickCosts, String> {
    use crate::scheduled_support::{Backend, Harness};
    let toml: String = (0..schedules)
        .map(|i| {
            format!(
                "[[schedule]]\nname = \"daily-{i:05}\"\ncron = \"0 2 * * *\"\ntimezone = \"UTC\"\n\
                 target = {{ project = \"gh/acme/api\", branch = \"main\", workflow = \"w{i}\" }}\n\n"
            )
        })
        .collect();
    let recorder = DynamoRecorder::default();
    let mut builder = Harness::builder(Backend::Dynamo)
        .start_at("2026-11-28T10:00:00Z")
        .record_dynamo(recorder.clone());
    if let Some(endpoint) = endpoint {
        builder = builder.dynamo_endpoint(endpoint);
    }
    let h = builder.build(&toml).await;
    let (client, _) = h.dynamo.clone().ok_or("no DynamoDB table")?;
    recorder.take();
    let first = h.tick().await;
    if first.totals().fired != 0 {
        return Err("a schedule fired on the first tick".into());
    }
    let first = Cost::of(&recorder.take(), &client).await?;
    h.advance(chrono::TimeDelta::minutes(1)).await;
    let idle = h.tick().await;
    if !idle.schedules.is_empty() {
        return Err("the idle tick evaluated schedules".into());
    }
    let idle = Cost::of(&recorder.take(), &client).await?;
    Ok(TickCosts {
        schedules,
        first,
        idle,
    })
}

//! A capacity-metering proxy in front of moto_server: it bills every DynamoDB request the
//! way DynamoDB on demand does, which moto does not (its `ConsumedCapacity` is a constant:
//! every `PutItem` reports 1.0, an `UpdateItem` reports nothing, index writes never appear).
//!
//! For each write the proxy reads the item before and after (straight from moto, outside
//! the metered client) and applies DynamoDB's published sizing rules:
//! - an item's size is the UTF-8 length of its attribute names plus its values (strings:
//!   UTF-8 bytes; numbers: about one byte per two significant digits, plus one; binary: its
//!   bytes; booleans and nulls: one byte; lists and maps: three bytes plus one per element);
//! - a write costs one WRU per started KB of the larger of the old and new item (a delete:
//!   of the old item; a refused conditional write: still at least one);
//! - each global secondary index the write touches costs one WRU per started KB of its
//!   entry (the index and table keys, the projected attributes, and 100 bytes): one write
//!   when an entry appears, disappears or a projected attribute changes, two when an index
//!   key changes;
//! - inside `TransactWriteItems` every unit counts twice;
//! - a strongly consistent read costs one RRU per started 4 KB read (a missing item too),
//!   an eventually consistent one half that; a `Query` is billed on the sum of the entries
//!   it read.
//!
//! Requests are serialised through the proxy (a measurement tool, not a load generator), so
//! the before/after images of one write are never mixed with another's.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response};

use crate::http_forward;
use serde_json::{Value, json};
use shared::store::dynamo::{IndexProjection, TableDefinition, table_definition};

/// What one request cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Billed {
    pub operation: String,
    pub write_units: f64,
    pub read_units: f64,
    /// The largest item image a write touched (bytes, DynamoDB's sizing).
    pub item_bytes: usize,
}

/// The running proxy: point an SDK client at [`CapacityMeter::endpoint`].
pub struct CapacityMeter {
    addr: SocketAddr,
    shared: Arc<MeterState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CapacityMeter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct MeterState {
    upstream: String,
    http: reqwest::Client,
    definition: TableDefinition,
    billed: Mutex<Vec<Billed>>,
    serial: tokio::sync::Mutex<()>,
}

/// A fresh table (the deployment's definition) on moto_server, reached through a new meter:
/// the meter, an SDK client pointed at it, and the table's name.
pub async fn metered_table(prefix: &str) -> (CapacityMeter, aws_sdk_dynamodb::Client, String) {
    let meter = CapacityMeter::start(&crate::moto::endpoint()).await;
    let client =
        aws_sdk_dynamodb::Client::new(&crate::moto::sdk_config_for(&meter.endpoint()).await);
    let table = crate::moto::unique_name(prefix);
    shared::store::dynamo::create_table(&client, &table)
        .await
        .expect("create the metered table");
    (meter, client, table)
}

impl CapacityMeter {
    /// Starts a meter forwarding to `upstream` (moto_server's URL).
    pub async fn start(upstream: &str) -> Self {
        let shared = Arc::new(MeterState {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            definition: table_definition(),
            billed: Mutex::new(Vec::new()),
            serial: tokio::sync::Mutex::new(()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the capacity meter");
        let addr = listener.local_addr().expect("meter address");
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything billed so far, in order.
    pub fn billed(&self) -> Vec<Billed> {
        self.shared
            .billed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Forgets what was billed (e.g. after creating the table).
    pub fn reset(&self) {
        self.shared
            .billed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    pub fn totals(&self) -> Totals {
        let billed = self.billed();
        Totals {
            requests: billed.len(),
            write_units: billed.iter().map(|b| b.write_units).sum(),
            read_units: billed.iter().map(|b| b.read_units).sum(),
        }
    }
}

/// Sums over a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Totals {
    pub requests: usize,
    pub write_units: f64,
    pub read_units: f64,
}

async fn forward(
    State(state): State<Arc<MeterState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let operation = target.rsplit('.').next().unwrap_or_default().to_owned();
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let _serial = state.serial.lock().await;
    let writes = written_keys(&operation, &request);
    let mut before = Vec::with_capacity(writes.len());
    for (table, key) in &writes {
        before.push(state.get_item(table, key).await);
    }
    let url = format!("{}/", state.upstream);
    let answer =
        match http_forward::send(&state.http, Method::POST, url, &headers, body.clone()).await {
            Ok(answer) => answer,
            Err(error) => return http_forward::bad_gateway(error),
        };
    let status = answer.status();
    let answer_headers = answer.headers().clone();
    let answer_body = answer.bytes().await.unwrap_or_default();
    let response: Value = serde_json::from_slice(&answer_body).unwrap_or(Value::Null);
    let mut after = Vec::with_capacity(writes.len());
    for (table, key) in &writes {
        after.push(state.get_item(table, key).await);
    }
    let billed = state.bill(
        &operation,
        &request,
        &response,
        status.is_success(),
        &before,
        &after,
    );
    state
        .billed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(billed);
    http_forward::relay(status, &answer_headers, answer_body)
}

/// The (table, key) of every item a write request may change.
fn written_keys(operation: &str, request: &Value) -> Vec<(String, Value)> {
    let definition = table_definition();
    let key_of = |item: &Value| -> Value {
        json!({
            definition.partition_key: item[definition.partition_key],
            definition.sort_key: item[definition.sort_key],
        })
    };
    let table = |v: &Value| v["TableName"].as_str().unwrap_or_default().to_owned();
    match operation {
        "PutItem" => vec![(table(request), key_of(&request["Item"]))],
        "UpdateItem" | "DeleteItem" => vec![(table(request), request["Key"].clone())],
        "TransactWriteItems" => request["TransactItems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|entry| {
                if let Some(put) = entry.get("Put") {
                    Some((table(put), key_of(&put["Item"])))
                } else if let Some(update) = entry.get("Update") {
                    Some((table(update), update["Key"].clone()))
                } else {
                    entry
                        .get("Delete")
                        .map(|delete| (table(delete), delete["Key"].clone()))
                }
            })
            .collect(),
        "BatchWriteItem" => request["RequestItems"]
            .as_object()
            .into_iter()
            .flatten()
            .flat_map(|(name, requests)| {
                requests
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| {
                        r.get("PutRequest")
                            .map(|p| key_of(&p["Item"]))
                            .or_else(|| r.get("DeleteRequest").map(|d| d["Key"].clone()))
                    })
                    .map(|key| (name.clone(), key))
                    .collect::<Vec<_>>()
            })
            .collect(),
        _ => Vec::new(),
    }
}

impl MeterState {
    async fn get_item(&self, table: &str, key: &Value) -> Option<BTreeMap<String, Value>> {
        let answer = self
            .http
            .post(format!("{}/", self.upstream))
            .header("x-amz-target", "DynamoDB_20120810.GetItem")
            // moto routes by the credential scope's service; the signature is not checked.
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/dynamodb/aws4_request, \
                 SignedHeaders=host, Signature=0",
            )
            .header("content-type", "application/x-amz-json-1.0")
            .body(json!({"TableName": table, "Key": key, "ConsistentRead": true}).to_string())
            .send()
            .await
            .ok()?;
        let value: Value = answer.json().await.ok()?;
        value["Item"]
            .as_object()
            .map(|item| item.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    fn bill(
        &self,
        operation: &str,
        request: &Value,
        response: &Value,
        succeeded: bool,
        before: &[Option<BTreeMap<String, Value>>],
        after: &[Option<BTreeMap<String, Value>>],
    ) -> Billed {
        let mut write_units = 0.0;
        let mut read_units = 0.0;
        let mut item_bytes = 0;
        let transactional = operation == "TransactWriteItems";
        for (old, new) in before.iter().zip(after) {
            let old_size = old.as_ref().map_or(0, item_size);
            let new_size = new.as_ref().map_or(0, item_size);
            item_bytes = item_bytes.max(old_size).max(new_size);
            let mut units = kb_units(old_size.max(new_size)).max(1) as f64;
            if succeeded {
                units += self.index_units(old.as_ref(), new.as_ref()) as f64;
            }
            write_units += if transactional { 2.0 * units } else { units };
        }
        match operation {
            "GetItem" => {
                let size = response["Item"].as_object().map_or(0, |item| {
                    item_size(&item.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                });
                read_units += read_cost(size, request["ConsistentRead"].as_bool() == Some(true));
            }
            "BatchGetItem" => {
                for items in response["Responses"].as_object().into_iter().flatten() {
                    for item in items.1.as_array().into_iter().flatten() {
                        let size = item.as_object().map_or(0, |item| {
                            item_size(&item.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                        });
                        read_units += read_cost(size, false);
                    }
                }
            }
            "Query" | "Scan" => {
                let index = request["IndexName"].as_str();
                let total: usize = response["Items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_object)
                    .map(|item| {
                        let item: BTreeMap<String, Value> =
                            item.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                        match index.and_then(|name| self.index(name)) {
                            Some(def) => self.entry_size(def, &item),
                            None => item_size(&item),
                        }
                    })
                    .sum();
                read_units += read_cost(total, request["ConsistentRead"].as_bool() == Some(true));
            }
            _ => {}
        }
        Billed {
            operation: operation.to_owned(),
            write_units,
            read_units,
            item_bytes,
        }
    }

    fn index(&self, name: &str) -> Option<&shared::store::dynamo::IndexDefinition> {
        self.definition
            .indexes
            .iter()
            .find(|index| index.name == name)
    }

    /// The size of an item's entry in an index (keys, projection, 100 bytes).
    fn entry_size(
        &self,
        index: &shared::store::dynamo::IndexDefinition,
        item: &BTreeMap<String, Value>,
    ) -> usize {
        let projected: BTreeMap<String, Value> = match index.projection {
            IndexProjection::All => item.clone(),
            IndexProjection::KeysOnly => item
                .iter()
                .filter(|(name, _)| {
                    [
                        self.definition.partition_key,
                        self.definition.sort_key,
                        index.partition_key,
                        index.sort_key,
                    ]
                    .contains(&name.as_str())
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        item_size(&projected) + 100
    }

    /// Index write units for one item changing from `old` to `new`.
    fn index_units(
        &self,
        old: Option<&BTreeMap<String, Value>>,
        new: Option<&BTreeMap<String, Value>>,
    ) -> usize {
        let mut units = 0;
        for index in &self.definition.indexes {
            let keys = |item: Option<&BTreeMap<String, Value>>| {
                item.and_then(|item| {
                    Some((
                        item.get(index.partition_key)?.clone(),
                        item.get(index.sort_key)?.clone(),
                    ))
                })
            };
            let (old_keys, new_keys) = (keys(old), keys(new));
            let entry = |item: Option<&BTreeMap<String, Value>>| {
                item.map(|item| self.entry_size(index, item))
            };
            units += match (old_keys, new_keys) {
                (None, None) => 0,
                (None, Some(_)) => kb_units(entry(new).unwrap_or(0)),
                (Some(_), None) => kb_units(entry(old).unwrap_or(0)),
                (Some(a), Some(b)) if a != b => {
                    kb_units(entry(old).unwrap_or(0)) + kb_units(entry(new).unwrap_or(0))
                }
                (Some(_), Some(_)) => {
                    let projected = |item: Option<&BTreeMap<String, Value>>| {
                        item.map(|item| match index.projection {
                            IndexProjection::All => item.clone(),
                            IndexProjection::KeysOnly => BTreeMap::new(),
                        })
                    };
                    if projected(old) == projected(new) {
                        0
                    } else {
                        kb_units(entry(new).unwrap_or(0))
                    }
                }
            };
        }
        units
    }
}

fn kb_units(bytes: usize) -> usize {
    bytes.div_ceil(1024)
}

fn read_cost(bytes: usize, consistent: bool) -> f64 {
    let units = bytes.div_ceil(4096).max(1) as f64;
    if consistent { units } else { units / 2.0 }
}

/// DynamoDB's size of an item in the wire format (`{"name": {"S": "…"}}`): the sizing rules
/// of [`crate::request_cost::item_size`].
pub fn item_size(item: &BTreeMap<String, Value>) -> usize {
    crate::request_cost::json_item_size(&Value::Object(
        item.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_published_rules() {
        let item: BTreeMap<String, Value> = serde_json::from_value(json!({
            "pk": {"S": "abc"},
            "n": {"N": "12345"},
            "b": {"B": "AAEC"},
            "t": {"BOOL": true},
        }))
        .unwrap();
        // pk 2+3, n 1+(3+1), b 1+3, t 1+1
        assert_eq!(item_size(&item), 5 + 5 + 4 + 2);
        assert_eq!(kb_units(1024), 1);
        assert_eq!(kb_units(1025), 2);
        assert_eq!(read_cost(10, false), 0.5);
        assert_eq!(read_cost(4097, true), 2.0);
    }
}

//! The single table's definition, in one place: [`create_table`] (tests, local) builds it
//! from [`table_definition`], and `infra/table.json` (the CloudFormation properties the SAM
//! template uses) is checked against it by a test.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use serde_json::{Value, json};

use super::item::classify;
use crate::store::{StoreError, StoreResult};

/// Main-table partition key (`CLAIM#…`, `TRIGGER#…`, `PIPELINE#…`, `SCHEDULE#…`, `JOIN#…`, `FLAGS`, `SOURCES`).
pub const PARTITION_KEY: &str = "pk";
/// Main-table sort key (`CLAIM`, `TRIGGER`, `PIPELINE`, `STATE`, `ARRIVAL#…`, scope).
pub const SORT_KEY: &str = "sk";
/// Epoch seconds; DynamoDB's TTL deletes expired items eventually (reads compare in code).
pub const TTL_ATTRIBUTE: &str = "expires_at";

/// Index key attributes: short names, since every name is paid for on every write of the
/// item (a trigger's item stays under 1 KB, one write unit).
/// `by_source`'s partition key: `S#<kind>#<name>`.
pub const SOURCE_KEY: &str = "sp";
/// `by_source`'s and `by_origin`'s sort key: creation time (13 hex digits of µs) `#` id.
pub const CREATED_KEY: &str = "cs";
/// `by_origin`'s partition key: `O#<origin id>` (descendants only).
pub const ORIGIN_KEY: &str = "op";
/// `retry_due`'s partition key: `R<shard>`.
pub const RETRY_SHARD_KEY: &str = "rp";
/// `retry_due`'s sort key: the time the sweep should look (13 hex digits of µs).
pub const RETRY_TIME_KEY: &str = "rs";

pub const BY_SOURCE: &str = "by_source";
pub const BY_ORIGIN: &str = "by_origin";
pub const RETRY_DUE: &str = "retry_due";

/// Which attributes a global secondary index copies from the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexProjection {
    /// Only the table's and the index's keys: the smallest entry (a write of it is 1 WRU);
    /// a query reads the items themselves afterwards.
    KeysOnly,
    /// Every attribute: each write of the item is repeated, at full size, in the index.
    All,
}

impl IndexProjection {
    pub fn cloudformation(self) -> &'static str {
        match self {
            IndexProjection::KeysOnly => "KEYS_ONLY",
            IndexProjection::All => "ALL",
        }
    }

    fn sdk(self) -> ProjectionType {
        match self {
            IndexProjection::KeysOnly => ProjectionType::KeysOnly,
            IndexProjection::All => ProjectionType::All,
        }
    }
}

/// A global secondary index: string keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDefinition {
    pub name: &'static str,
    pub partition_key: &'static str,
    pub sort_key: &'static str,
    pub projection: IndexProjection,
    /// Which items appear in it and what it answers.
    pub purpose: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDefinition {
    pub partition_key: &'static str,
    pub sort_key: &'static str,
    pub indexes: Vec<IndexDefinition>,
    pub ttl_attribute: &'static str,
}

/// The table every deployment and every test uses.
pub fn table_definition() -> TableDefinition {
    TableDefinition {
        partition_key: PARTITION_KEY,
        sort_key: SORT_KEY,
        indexes: vec![
            IndexDefinition {
                name: BY_SOURCE,
                partition_key: SOURCE_KEY,
                sort_key: CREATED_KEY,
                projection: IndexProjection::KeysOnly,
                purpose: "trigger records by schedule/rule/endpoint, newest first",
            },
            IndexDefinition {
                name: BY_ORIGIN,
                partition_key: ORIGIN_KEY,
                sort_key: CREATED_KEY,
                projection: IndexProjection::KeysOnly,
                purpose: "sparse: descendant trigger records by origin trigger, newest first (action selection, fan-in); a root is read by id",
            },
            IndexDefinition {
                name: RETRY_DUE,
                partition_key: RETRY_SHARD_KEY,
                sort_key: RETRY_TIME_KEY,
                projection: IndexProjection::KeysOnly,
                purpose: "sparse: schedule and chain records waiting to be retried, by due time",
            },
        ],
        ttl_attribute: TTL_ATTRIBUTE,
    }
}

impl TableDefinition {
    /// Every key attribute (all strings).
    pub fn key_attributes(&self) -> Vec<&'static str> {
        let mut names = vec![self.partition_key, self.sort_key];
        for index in &self.indexes {
            for name in [index.partition_key, index.sort_key] {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names
    }

    /// The `Properties` of an `AWS::DynamoDB::Table` resource (without `TableName`), as
    /// committed in `infra/table.json`.
    pub fn cloudformation_properties(&self) -> Value {
        let key_schema = |hash: &str, range: &str| {
            json!([
                {"AttributeName": hash, "KeyType": "HASH"},
                {"AttributeName": range, "KeyType": "RANGE"},
            ])
        };
        json!({
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": self
                .key_attributes()
                .iter()
                .map(|name| json!({"AttributeName": name, "AttributeType": "S"}))
                .collect::<Vec<_>>(),
            "KeySchema": key_schema(self.partition_key, self.sort_key),
            "GlobalSecondaryIndexes": self
                .indexes
                .iter()
                .map(|index| json!({
                    "IndexName": index.name,
                    "KeySchema": key_schema(index.partition_key, index.sort_key),
                    "Projection": {"ProjectionType": index.projection.cloudformation()},
                }))
                .collect::<Vec<_>>(),
            "TimeToLiveSpecification": {"AttributeName": self.ttl_attribute, "Enabled": true},
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": true},
            "SSESpecification": {"SSEEnabled": true},
        })
    }
}

fn key_schema(hash: &str, range: &str) -> StoreResult<Vec<KeySchemaElement>> {
    [(hash, KeyType::Hash), (range, KeyType::Range)]
        .into_iter()
        .map(|(name, key_type)| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(key_type)
                .build()
                .map_err(build_error)
        })
        .collect()
}

fn build_error(error: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Internal {
        message: format!("cannot build the table definition: {error}"),
    }
}

/// Creates the table (on-demand, every index, TTL on) and waits until it is active.
/// For tests and local setups; deployments create it from the SAM template.
pub async fn create_table(client: &Client, name: &str) -> StoreResult<()> {
    let definition = table_definition();
    let attributes = definition
        .key_attributes()
        .into_iter()
        .map(|attribute| {
            AttributeDefinition::builder()
                .attribute_name(attribute)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(build_error)
        })
        .collect::<StoreResult<Vec<_>>>()?;
    let indexes = definition
        .indexes
        .iter()
        .map(|index| {
            GlobalSecondaryIndex::builder()
                .index_name(index.name)
                .set_key_schema(Some(key_schema(index.partition_key, index.sort_key)?))
                .projection(
                    Projection::builder()
                        .projection_type(index.projection.sdk())
                        .build(),
                )
                .build()
                .map_err(build_error)
        })
        .collect::<StoreResult<Vec<_>>>()?;
    client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_attribute_definitions(Some(attributes))
        .set_key_schema(Some(key_schema(
            definition.partition_key,
            definition.sort_key,
        )?))
        .set_global_secondary_indexes(Some(indexes))
        .send()
        .await
        .map_err(|error| classify("CreateTable", &error))?;
    client
        .wait_until_table_exists()
        .table_name(name)
        .wait(std::time::Duration::from_secs(300))
        .await
        .map_err(|error| StoreError::Unavailable {
            message: format!("table {name} did not become active: {error}"),
        })?;
    client
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(definition.ttl_attribute)
                .enabled(true)
                .build()
                .map_err(build_error)?,
        )
        .send()
        .await
        .map_err(|error| classify("UpdateTimeToLive", &error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `infra/table.json` is what the SAM template deploys; it must be exactly this
    /// definition. `UPDATE_TABLE_JSON=1 cargo test -p shared table_json` rewrites it.
    #[test]
    fn table_json_matches_the_definition() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/table.json");
        let expected = table_definition().cloudformation_properties();
        let rendered = format!("{}\n", serde_json::to_string_pretty(&expected).unwrap());
        if std::env::var_os("UPDATE_TABLE_JSON").is_some() {
            std::fs::write(&path, &rendered).unwrap();
        }
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
        let committed: Value = serde_json::from_str(&committed).unwrap();
        assert_eq!(
            committed, expected,
            "infra/table.json drifted from dynamo::table_definition(); regenerate it with \
             UPDATE_TABLE_JSON=1 cargo test -p shared table_json"
        );
    }

    #[test]
    fn every_index_key_is_declared_once() {
        let definition = table_definition();
        let attributes = definition.key_attributes();
        let mut unique = attributes.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), attributes.len());
        assert!(attributes.contains(&RETRY_TIME_KEY));
        assert!(
            !attributes.contains(&TTL_ATTRIBUTE),
            "the TTL attribute is a number, not a key"
        );
    }
}

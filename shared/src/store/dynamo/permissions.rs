//! Least privilege, declared next to the code it describes: which DynamoDB actions each
//! store operation sends (and which indexes it queries), which store operations each Lambda
//! function performs, and which secrets it reads.
//!
//! `infra/template.yaml` grants each function's role exactly the union of these, and
//! `tests/integration/tests/infra/` keeps both sides honest:
//! - the template's policies must equal [`LambdaFunction::dynamodb_grants`] and
//!   [`LambdaFunction::secrets`], nothing more, nothing less;
//! - [`StoreOperation::access`] must cover every request the adapter really sends: the test
//!   runs the store conformance suite through an SDK interceptor and maps each request to the
//!   IAM action it needs (a `TransactWriteItems` needs the action of each item in it —
//!   `PutItem`, `UpdateItem`, `DeleteItem`, `ConditionCheckItem` — never an action of its own);
//! - each function's role must equal what that function really sends (`infra/call_paths.rs`:
//!   the functions wired as in Lambda, driven through every request path, each store operation
//!   they call declared here for them).
//!
//! Adding a store operation to a function means adding it to that function's list here; the
//! template then fails its test until the role is widened to match.

use std::collections::BTreeSet;

use crate::secrets::SecretKind;
use crate::store::StoreOperation;

use super::table::{BY_ORIGIN, BY_SOURCE, RETRY_DUE};

/// The IAM actions the adapter uses, by name.
pub mod actions {
    pub const GET_ITEM: &str = "dynamodb:GetItem";
    pub const PUT_ITEM: &str = "dynamodb:PutItem";
    pub const UPDATE_ITEM: &str = "dynamodb:UpdateItem";
    pub const DELETE_ITEM: &str = "dynamodb:DeleteItem";
    pub const QUERY: &str = "dynamodb:Query";
    /// Listings read the records behind their (keys-only) index entries in batches.
    pub const BATCH_GET_ITEM: &str = "dynamodb:BatchGetItem";
    pub const SCAN: &str = "dynamodb:Scan";
    /// The `ConditionCheck` element of a `TransactWriteItems` request.
    pub const CONDITION_CHECK_ITEM: &str = "dynamodb:ConditionCheckItem";
}

use actions::*;

/// What one store operation needs from IAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperationAccess {
    /// Actions on the table itself (item operations, and `Query` on the main key).
    pub table_actions: &'static [&'static str],
    /// Indexes it runs `Query` on (granted as `dynamodb:Query` on `<table>/index/<name>`).
    pub queried_indexes: &'static [&'static str],
}

const fn table(actions: &'static [&'static str]) -> OperationAccess {
    OperationAccess {
        table_actions: actions,
        queried_indexes: &[],
    }
}

impl StoreOperation {
    /// What the DynamoDB adapter sends for this operation, on any path (including the
    /// read-back after a failed conditional write).
    pub fn access(self) -> OperationAccess {
        match self {
            // Fresh claim: conditional Put; expired lease: conditional Update (takeover);
            // a failed condition without the old item reads it back.
            StoreOperation::Claim => table(&[PUT_ITEM, UPDATE_ITEM, GET_ITEM]),
            // Holder transitions: one fenced Update, read-back when the condition fails.
            StoreOperation::Renew | StoreOperation::MarkSending | StoreOperation::Complete => {
                table(&[UPDATE_ITEM, GET_ITEM])
            }
            // The claim's attributes are removed; the record in the same item stays.
            StoreOperation::Release => table(&[UPDATE_ITEM, GET_ITEM]),
            // Claim + record in one conditional Put (the claim alone on an item that holds
            // only a record: Update; a takeover: Update), the source's registration (Put),
            // a read-back when the condition fails without the old item.
            StoreOperation::OpenTrigger => table(&[PUT_ITEM, UPDATE_ITEM, GET_ITEM]),
            // Record + completion in one fenced Update, the new pipeline's binding (Put),
            // read-backs when a condition fails; a retry attempt's separate claim takes the
            // narrow path (Update, Put).
            StoreOperation::SettleTrigger => table(&[UPDATE_ITEM, PUT_ITEM, GET_ITEM]),
            StoreOperation::AdoptAmbiguous => table(&[GET_ITEM, UPDATE_ITEM]),
            StoreOperation::ClaimSnapshot
            | StoreOperation::GetRecord
            | StoreOperation::FindByPipeline
            | StoreOperation::PipelineRecorded
            | StoreOperation::SchedulerState
            | StoreOperation::ScheduleDefinitions
            | StoreOperation::PauseFlag => table(&[GET_ITEM]),
            // Update of the record's attributes (its claim, in the same item, stays), after
            // the conditional Put of a newly named pipeline's binding; a refused write reads
            // the record (and the binding) back to tell "exists", "stale", "bound elsewhere"
            // and "ours, answer lost" apart. A create also registers its source (a Put in
            // `SOURCES`, once per process).
            StoreOperation::CreateRecord | StoreOperation::UpdateRecord => {
                table(&[UPDATE_ITEM, PUT_ITEM, GET_ITEM])
            }
            // Keys-only index entries, then the records by `BatchGetItem`.
            StoreOperation::ListBySource => OperationAccess {
                table_actions: &[BATCH_GET_ITEM],
                queried_indexes: &[BY_SOURCE],
            },
            // The sparse index holds descendants; the root is read by id.
            StoreOperation::ListByOrigin => OperationAccess {
                table_actions: &[BATCH_GET_ITEM, GET_ITEM],
                queried_indexes: &[BY_ORIGIN],
            },
            // The registered sources (a Query of `SOURCES`), then each source's partition.
            StoreOperation::ListRecent | StoreOperation::ListByProject => OperationAccess {
                table_actions: &[QUERY, BATCH_GET_ITEM],
                queried_indexes: &[BY_SOURCE],
            },
            // The index is eventually consistent and keeps decided records' entries: the
            // records it names are re-read. The cursors are one item (`SCHEDULER` /
            // `SWEEP`), read once per process and put when they move; a record still due
            // has its entry moved ahead by a conditional `UpdateItem`.
            StoreOperation::DueForRetry => OperationAccess {
                table_actions: &[BATCH_GET_ITEM, GET_ITEM, PUT_ITEM, UPDATE_ITEM],
                queried_indexes: &[RETRY_DUE],
            },
            StoreOperation::PurgeExpired => table(&[SCAN, DELETE_ITEM]),
            // A conditional Put of the state item, or a transaction of it and the
            // definitions item (two Puts).
            StoreOperation::SaveSchedulerState => table(&[PUT_ITEM]),
            // State read, generation Put, [ConditionCheck state + Put arrival] transaction,
            // arrivals Query on the main key, settling Update.
            StoreOperation::JoinArrive => {
                table(&[GET_ITEM, PUT_ITEM, CONDITION_CHECK_ITEM, QUERY, UPDATE_ITEM])
            }
            StoreOperation::JoinState => table(&[GET_ITEM, QUERY]),
            StoreOperation::Pause => table(&[PUT_ITEM]),
            StoreOperation::Resume => table(&[DELETE_ITEM]),
            StoreOperation::PauseFlags => table(&[QUERY]),
            StoreOperation::TakeRateTicket => table(&[UPDATE_ITEM]),
        }
    }
}

/// What the trigger lifecycle (`engine::Engine`: `fire`, `decide_without_action`, `retry`,
/// `sweep`) does to the store, whichever entry point drives it.
const LIFECYCLE: [StoreOperation; 12] = [
    // `fire` and `decide_without_action`: claim and record together, decided together.
    StoreOperation::OpenTrigger,
    StoreOperation::SettleTrigger,
    StoreOperation::Claim,
    StoreOperation::AdoptAmbiguous,
    // The fence before a holder writes its outcome (the same fenced `UpdateItem`).
    StoreOperation::Renew,
    StoreOperation::MarkSending,
    StoreOperation::Complete,
    StoreOperation::Release,
    StoreOperation::CreateRecord,
    // Also `store::modify_record`'s read-modify-write (with `GetRecord`).
    StoreOperation::UpdateRecord,
    StoreOperation::GetRecord,
    // `engine::StoreLedger`: is a candidate pipeline of an ambiguous create someone else's?
    StoreOperation::PipelineRecorded,
];

/// `shared::triggers::scheduled` (the tick).
const SCHEDULED_EXTRA: [StoreOperation; 7] = [
    // Every tick: the one small state item. When something is due or changed: the
    // per-schedule definitions, and the state (with the definitions when they changed).
    StoreOperation::SchedulerState,
    StoreOperation::ScheduleDefinitions,
    StoreOperation::SaveSchedulerState,
    // `Engine::sweep`: schedule and chain records due for another attempt (and the
    // schedule records left `received`, which the tick decides again).
    StoreOperation::DueForRetry,
    // `concurrency = forbid | replace`: the schedule's records.
    StoreOperation::ListBySource,
    StoreOperation::ClaimSnapshot,
    // Every pause flag in one Query: on a tick with a slot to fire, a manual run, a stale
    // slot's re-check.
    StoreOperation::PauseFlags,
];

/// `shared::triggers::chained` (the webhook receiver).
const CHAINED_EXTRA: [StoreOperation; 5] = [
    // Closed loop: the upstream pipeline's record gives the origin and takes the outcome.
    StoreOperation::FindByPipeline,
    // `select = "origin"`: the pipelines the same origin started, per project.
    StoreOperation::ListByOrigin,
    // Fan-in.
    StoreOperation::JoinArrive,
    StoreOperation::JoinState,
    // Every flag at once (rules and the global scope), one Query per delivery.
    StoreOperation::PauseFlags,
];

/// `shared::triggers::http` (the HTTP trigger API).
const HTTP_EXTRA: [StoreOperation; 6] = [
    // `[[client]].rate_limit`: one conditional update of the client's window counter.
    StoreOperation::TakeRateTicket,
    // `GET /v1/triggers`: the caller's endpoints' records.
    StoreOperation::ListBySource,
    // `select = "trigger:<id>"`: the pipelines of that trigger's origin.
    StoreOperation::ListByOrigin,
    // `POST /v1/schedules/{name}/runs`: whether a slot was decided as skipped (then it
    // runs under `<slot>#run`), a `GetItem` the lifecycle already grants.
    StoreOperation::ClaimSnapshot,
    // `GET /v1/status` (operator clients): the recent triggers. Every pause flag in one
    // Query (the status page, and a schedule run's pause check).
    StoreOperation::ListRecent,
    StoreOperation::PauseFlags,
];

/// The four Lambda functions of the SAM template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LambdaFunction {
    Scheduled,
    /// The webhook acceptor: verifies and queues; no table, no CircleCI token.
    Webhooks,
    /// The webhook worker: settles queued deliveries (chain rules, fan-in, closed loop).
    Chained,
    Http,
}

/// One grant on the table: an action, on the table or on one index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DynamoGrant {
    Table(&'static str),
    /// `dynamodb:Query` on this index.
    QueryIndex(&'static str),
}

impl LambdaFunction {
    pub const ALL: [LambdaFunction; 4] = [
        LambdaFunction::Scheduled,
        LambdaFunction::Webhooks,
        LambdaFunction::Chained,
        LambdaFunction::Http,
    ];

    /// The binary's name (`[[bin]]` in its Cargo.toml, `BuildProperties.Binary` in SAM).
    pub fn binary(self) -> &'static str {
        match self {
            LambdaFunction::Scheduled => "scheduled",
            LambdaFunction::Webhooks => "webhooks",
            LambdaFunction::Chained => "chained",
            LambdaFunction::Http => "http",
        }
    }

    /// Every store operation the function performs.
    pub fn store_operations(self) -> BTreeSet<StoreOperation> {
        let extra: &[StoreOperation] = match self {
            LambdaFunction::Scheduled => &SCHEDULED_EXTRA,
            LambdaFunction::Webhooks => return BTreeSet::new(),
            LambdaFunction::Chained => &CHAINED_EXTRA,
            LambdaFunction::Http => &HTTP_EXTRA,
        };
        LIFECYCLE.iter().chain(extra).copied().collect()
    }

    /// The notification outbox's requests (`notify::DynamoOutbox`, `NOTIFY#…` items, with
    /// `[[notify]]`): every function that decides triggers queues (a transaction of two
    /// `Put`s); the scheduled tick also sweeps (`Query` of the pending partition, a
    /// `Delete` + `Put` transaction to take an entry, `DeleteItem` once delivered).
    pub fn outbox_actions(self) -> &'static [&'static str] {
        match self {
            LambdaFunction::Scheduled => &[PUT_ITEM, QUERY, DELETE_ITEM],
            LambdaFunction::Chained | LambdaFunction::Http => &[PUT_ITEM],
            LambdaFunction::Webhooks => &[],
        }
    }

    /// The DynamoDB grants the function's role must have: the union over its operations
    /// and the outbox.
    pub fn dynamodb_grants(self) -> BTreeSet<DynamoGrant> {
        let mut grants: BTreeSet<DynamoGrant> = self
            .outbox_actions()
            .iter()
            .map(|action| DynamoGrant::Table(action))
            .collect();
        for operation in self.store_operations() {
            let access = operation.access();
            grants.extend(access.table_actions.iter().map(|a| DynamoGrant::Table(a)));
            grants.extend(
                access
                    .queried_indexes
                    .iter()
                    .map(|i| DynamoGrant::QueryIndex(i)),
            );
        }
        grants
    }

    /// The partition keys the function's item requests may name, as IAM
    /// `dynamodb:LeadingKeys` patterns (`ForAllValues:StringLike` on the role's table
    /// statement; index queries are not narrowed). The key shapes are the adapter's
    /// (`TRIGGER#<id>` for a claim and its record, one item; `PIPELINE#<id>`, ...). A
    /// function touches only the state its paths need: `http` never names the scheduler's
    /// state (`SCHEDULER`) or a fan-in; `chained` never the scheduler's state or a rate
    /// window; `scheduled` never a join or a rate window. A claim's key is `TRIGGER#<uuid>`
    /// (the record's id, derived from the claim key), so roles no longer tell claim kinds
    /// apart: each function could already write any trigger record, which is what a claim
    /// guards.
    pub fn leading_keys(self) -> &'static [&'static str] {
        match self {
            // The sweep retries schedule and chain records (their `…#attempt<n>` claims, in
            // items of their own under `TRIGGER#`).
            LambdaFunction::Scheduled => &[
                "TRIGGER#*",
                "PIPELINE#*",
                "SCHEDULER",
                "FLAGS",
                "SOURCES",
                "NOTIFY#*",
            ],
            LambdaFunction::Webhooks => &[],
            LambdaFunction::Chained => &[
                "JOIN#join#*",
                "TRIGGER#*",
                "PIPELINE#*",
                "FLAGS",
                "SOURCES",
                "NOTIFY#*",
            ],
            // `[[client]].rate_limit` windows are `RATE#<client>` counters; operator
            // schedule runs fire slots under their schedule claims and read pause flags.
            LambdaFunction::Http => &[
                "RATE#*",
                "TRIGGER#*",
                "PIPELINE#*",
                "FLAGS",
                "SOURCES",
                "NOTIFY#*",
            ],
        }
    }

    /// The secrets the function reads (each one Secrets Manager secret in the cloud).
    pub fn secrets(self) -> &'static [SecretKind] {
        match self {
            // The tick sends the notifications every function queues.
            LambdaFunction::Scheduled => &[SecretKind::CircleCiTokens, SecretKind::NotifySecrets],
            LambdaFunction::Webhooks => &[SecretKind::WebhookSigningSecrets],
            LambdaFunction::Chained => &[SecretKind::CircleCiTokens],
            LambdaFunction::Http => &[SecretKind::CircleCiTokens, SecretKind::ClientKeyHashes],
        }
    }

    /// The SQS actions the function's role needs on the webhook delivery queue: the
    /// acceptor sends; the worker's event source mapping receives, deletes and reads the
    /// queue's attributes with the worker's role, and the worker shortens retry delays.
    pub fn sqs_actions(self) -> &'static [&'static str] {
        match self {
            LambdaFunction::Webhooks => &["sqs:SendMessage"],
            LambdaFunction::Chained => &[
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:ChangeMessageVisibility",
            ],
            LambdaFunction::Scheduled | LambdaFunction::Http => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::dynamo::table_definition;

    #[test]
    fn every_queried_index_exists() {
        let definition = table_definition();
        for operation in StoreOperation::ALL {
            for name in operation.access().queried_indexes {
                assert!(
                    definition.indexes.iter().any(|index| index.name == *name),
                    "{} queries unknown index {name}",
                    operation.name()
                );
            }
        }
    }

    #[test]
    fn no_function_scans_purges_or_clears_pause_flags() {
        for function in LambdaFunction::ALL {
            assert!(
                !function
                    .dynamodb_grants()
                    .contains(&DynamoGrant::Table(SCAN)),
                "{function:?} must not scan the table"
            );
            let operations = function.store_operations();
            assert!(!operations.contains(&StoreOperation::PurgeExpired));
            assert!(!operations.contains(&StoreOperation::Resume));
        }
    }

    #[test]
    fn only_the_functions_that_join_check_conditions() {
        // Only fan-in (chained) is a transaction; the rate limit is one conditional update.
        for function in LambdaFunction::ALL {
            assert_eq!(
                function
                    .dynamodb_grants()
                    .contains(&DynamoGrant::Table(CONDITION_CHECK_ITEM)),
                function == LambdaFunction::Chained,
                "{function:?}"
            );
        }
    }

    #[test]
    fn every_function_but_the_acceptor_reads_tokens_and_only_its_own_secrets() {
        for function in LambdaFunction::ALL {
            assert_eq!(
                function.secrets().contains(&SecretKind::CircleCiTokens),
                function != LambdaFunction::Webhooks,
                "{function:?}"
            );
        }
        // Only the acceptor holds the signing secrets; it holds nothing else.
        assert_eq!(
            LambdaFunction::Webhooks.secrets(),
            &[SecretKind::WebhookSigningSecrets]
        );
        assert!(LambdaFunction::Webhooks.store_operations().is_empty());
        assert!(
            !LambdaFunction::Scheduled
                .secrets()
                .contains(&SecretKind::ClientKeyHashes)
        );
        assert!(
            !LambdaFunction::Http
                .secrets()
                .contains(&SecretKind::WebhookSigningSecrets)
        );
    }
}

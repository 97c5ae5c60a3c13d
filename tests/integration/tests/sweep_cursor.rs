//! The reconciler's index keeps every trigger's entry (taking it out when the trigger is
//! decided was a write unit on every trigger), so the sweep reads `retry_due` from a cursor.
//! These tests hold the DynamoDB adapter to what that must not cost or lose, counting its
//! requests through the capacity meter on moto_server:
//! - decided triggers' entries are read once, then never again (the cursor moves past them);
//! - a record still due holds the cursor back until it is decided or has been stuck for
//!   long, and is never passed over;
//! - a record written with a due time behind the cursor (a late or skewed writer) is found.

use std::sync::Arc;

use chrono::TimeDelta;
use integration_tests::capacity::{CapacityMeter, metered_table};
use integration_tests::moto::sdk_config_for;
use shared::clock::{Clock, ManualClock};
use shared::config::ActionKind;
use shared::store::{
    DynamoStore, HistoryStore, SourceKind, TriggerId, TriggerRecord, TriggerSource, TriggerStatus,
    TriggerTarget,
};

struct Rig {
    meter: CapacityMeter,
    store: DynamoStore,
    clock: Arc<ManualClock>,
}

async fn rig() -> Rig {
    let (meter, client, table) = metered_table("sweep").await;
    let clock = Arc::new(ManualClock::new("2026-12-06T02:00:00Z".parse().unwrap()));
    let store = DynamoStore::new(client, table, clock.clone());
    Rig {
        meter,
        store,
        clock,
    }
}

impl Rig {
    /// A chain record as the engine opens one: `received`, due for the reconciler when its
    /// claim's lease (two minutes) ends.
    async fn open(&self, name: &str) -> TriggerRecord {
        let now = self.clock.now();
        let mut record = TriggerRecord::new(
            TriggerSource::new(SourceKind::Chain, name),
            TriggerTarget::project("gh/acme/api"),
            ActionKind::Pipeline,
            now,
        );
        record.retry_at = Some(now + TimeDelta::minutes(2));
        self.store.create_record(record).await.unwrap()
    }

    async fn decide(&self, record: &TriggerRecord) {
        let mut record = self.store.get_record(record.id).await.unwrap().unwrap();
        record.status = TriggerStatus::Triggered;
        record.retry_at = None;
        self.store.update_record(record).await.unwrap();
    }

    /// The ids the sweep finds due, and the requests it made by operation.
    async fn sweep(&self) -> (Vec<TriggerId>, Vec<String>) {
        self.meter.reset();
        let due = self.store.due_for_retry(100).await.unwrap();
        let operations = self
            .meter
            .billed()
            .into_iter()
            .map(|billed| billed.operation)
            .collect();
        (
            due.into_iter().map(|record| record.id).collect(),
            operations,
        )
    }

    fn advance(&self, by: TimeDelta) {
        self.clock.advance(by);
    }
}

fn count(operations: &[String], name: &str) -> usize {
    operations.iter().filter(|op| *op == name).count()
}

#[tokio::test]
async fn decided_triggers_are_read_by_one_sweep_and_never_again() {
    let rig = rig().await;
    let mut opened = Vec::new();
    for i in 0..20 {
        opened.push(rig.open(&format!("rule-{i}")).await);
    }
    for record in &opened {
        rig.decide(record).await;
    }
    rig.advance(TimeDelta::minutes(3));

    let (due, operations) = rig.sweep().await;
    assert!(due.is_empty(), "decided records are not due: {due:?}");
    // The cursor item (once a process), 8 shards, the 20 records in one batch per shard
    // that has some, the cursor put once.
    assert_eq!(count(&operations, "Query"), 8, "{operations:?}");
    assert!(count(&operations, "BatchGetItem") >= 1, "{operations:?}");
    assert_eq!(count(&operations, "PutItem"), 1, "{operations:?}");
    assert_eq!(count(&operations, "UpdateItem"), 0, "{operations:?}");

    rig.advance(TimeDelta::minutes(1));
    let (due, operations) = rig.sweep().await;
    assert!(due.is_empty());
    assert_eq!(
        operations,
        vec!["Query".to_owned(); 8],
        "behind the cursor: nothing read again, nothing written"
    );

    // A fresh process reads the cursor once and then only the shards.
    let fresh = DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&sdk_config_for(&rig.meter.endpoint()).await),
        rig.store_table(),
        rig.clock.clone(),
    );
    rig.meter.reset();
    assert!(fresh.due_for_retry(100).await.unwrap().is_empty());
    let operations: Vec<String> = rig
        .meter
        .billed()
        .into_iter()
        .map(|b| b.operation)
        .collect();
    assert_eq!(count(&operations, "GetItem"), 1, "{operations:?}");
    assert_eq!(count(&operations, "BatchGetItem"), 0, "{operations:?}");
}

#[tokio::test]
async fn a_record_still_due_holds_the_cursor_until_it_is_decided() {
    let rig = rig().await;
    let stranded = rig.open("stranded").await;
    rig.advance(TimeDelta::seconds(30));
    let decided = rig.open("decided").await;
    rig.decide(&decided).await;
    rig.advance(TimeDelta::minutes(3));

    // Due every sweep while nobody decides it, the cursor never passing it.
    for _ in 0..3 {
        let (due, operations) = rig.sweep().await;
        assert_eq!(due, [stranded.id], "{operations:?}");
        assert_eq!(count(&operations, "UpdateItem"), 0, "not stuck long yet");
        rig.advance(TimeDelta::minutes(1));
    }
    // Stuck for longer than five minutes: its entry moves to the present (one update), the
    // cursor may pass its old place, and it is still found.
    rig.advance(TimeDelta::minutes(2));
    let (due, operations) = rig.sweep().await;
    assert_eq!(due, [stranded.id]);
    assert_eq!(count(&operations, "UpdateItem"), 1, "{operations:?}");
    rig.advance(TimeDelta::minutes(1));
    let (due, _) = rig.sweep().await;
    assert_eq!(due, [stranded.id], "found again after its entry moved");

    rig.decide(&stranded).await;
    rig.advance(TimeDelta::minutes(1));
    let (due, _) = rig.sweep().await;
    assert!(due.is_empty());
    rig.advance(TimeDelta::minutes(1));
    let (due, operations) = rig.sweep().await;
    assert!(due.is_empty());
    assert_eq!(count(&operations, "BatchGetItem"), 0, "{operations:?}");
}

/// Many records stuck at once, swept one at a time: each is handed out before any is lost
/// behind the cursor (a stuck record's entry moves; the others hold the cursor).
#[tokio::test]
async fn a_sweep_with_a_small_limit_passes_over_no_stuck_record() {
    let rig = rig().await;
    let mut stuck = std::collections::BTreeSet::new();
    for i in 0..40 {
        let record = rig.open(&format!("stuck-{i}")).await;
        // Decided ones in between: a page of entries then holds fewer due records than
        // entries, so one page can bring more due records than the limit takes.
        if i % 3 == 0 {
            rig.decide(&record).await;
        } else {
            stuck.insert(record.id);
        }
        rig.advance(TimeDelta::seconds(1));
    }
    rig.advance(TimeDelta::minutes(10));
    let mut handed_out = std::collections::BTreeSet::new();
    for _ in 0..80 {
        rig.meter.reset();
        let due = rig.store.due_for_retry(3).await.unwrap();
        for record in due {
            handed_out.insert(record.id);
            rig.decide(&record).await;
        }
        if handed_out == stuck {
            break;
        }
        rig.advance(TimeDelta::minutes(1));
    }
    assert_eq!(handed_out, stuck, "every stuck record is swept");
}

#[tokio::test]
async fn a_record_due_behind_the_cursor_is_still_found() {
    let rig = rig().await;
    let early = rig.open("early").await;
    rig.decide(&early).await;
    rig.advance(TimeDelta::minutes(10));
    let (due, operations) = rig.sweep().await;
    assert!(due.is_empty());
    assert_eq!(
        count(&operations, "PutItem"),
        1,
        "the cursor moved: {operations:?}"
    );

    // A writer whose due time is long past (a skewed clock, a retry computed from an old
    // send): its entry is placed no earlier than its own clock, ahead of the cursor.
    let now = rig.clock.now();
    let mut late = TriggerRecord::new(
        TriggerSource::new(SourceKind::Schedule, "nightly"),
        TriggerTarget::project("gh/acme/api"),
        ActionKind::Pipeline,
        now,
    );
    late.status = TriggerStatus::Failed;
    late.retry_at = Some(now - TimeDelta::hours(1));
    let late = rig.store.create_record(late).await.unwrap();
    let (due, _) = rig.sweep().await;
    assert_eq!(due, [late.id]);
}

impl Rig {
    fn store_table(&self) -> String {
        self.store.table_name().to_owned()
    }
}

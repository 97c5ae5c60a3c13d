//! Seeing decisions: a store decorator that enqueues notifications after record writes.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Notification, NotifiedWorkflow, NotifyOn, NotifySpec, Outbox};
use crate::config::TriggersFile;
use crate::config::slug::ProjectSlug;
use crate::store::*;
use crate::triggers::http::view::{app_url, pipeline_url};

/// Decides which notifications a record calls for, and queues them.
pub struct Notifier {
    sinks: Vec<NotifySpec>,
    app_url: String,
    outbox: Arc<dyn Outbox>,
}

impl Notifier {
    pub fn new(triggers: &TriggersFile, outbox: Arc<dyn Outbox>) -> Self {
        Self {
            sinks: triggers.notify.clone(),
            app_url: app_url(&triggers.circleci.api_url),
            outbox,
        }
    }

    /// The statuses a record is in, as sinks name them. A failure or an ambiguity that is
    /// still being retried or rechecked (`retry_at` set) is not final yet: not notified.
    pub fn statuses_of(record: &TriggerRecord) -> Vec<NotifyOn> {
        let mut statuses = Vec::new();
        match record.status {
            TriggerStatus::Failed if record.retry_at.is_none() => statuses.push(NotifyOn::Failed),
            TriggerStatus::Ambiguous if record.retry_at.is_none() => {
                statuses.push(NotifyOn::Ambiguous)
            }
            TriggerStatus::Rejected => statuses.push(NotifyOn::Rejected),
            _ => {}
        }
        if crate::console::workflow_failed(record) {
            statuses.push(NotifyOn::WorkflowFailed);
        }
        statuses
    }

    /// The notifications `record` calls for, one per wanting sink and status.
    pub fn notifications(&self, record: &TriggerRecord) -> Vec<Notification> {
        let statuses = Self::statuses_of(record);
        if statuses.is_empty() {
            return Vec::new();
        }
        let pipeline_url = self.pipeline_url(record);
        let mut found = Vec::new();
        for sink in &self.sinks {
            if !sink.accepts_source(record.source.kind.as_str())
                || !sink.accepts_project(&record.target.project)
            {
                continue;
            }
            for status in statuses.iter().filter(|status| sink.wants(**status)) {
                let trigger = record.id.to_string();
                found.push(Notification {
                    id: Notification::dedup_key(&trigger, *status, &sink.name),
                    sink: sink.name.clone(),
                    status: status.as_str().to_owned(),
                    trigger_id: trigger,
                    source: record.source.kind.as_str().to_owned(),
                    source_name: record.source.name.clone(),
                    project: record.target.project.clone(),
                    reason: record.reason.clone(),
                    pipeline_id: record.pipeline.as_ref().map(|p| p.id.clone()),
                    pipeline_url: pipeline_url.clone(),
                    workflows: record
                        .workflows
                        .iter()
                        .map(|workflow| NotifiedWorkflow {
                            id: workflow.id.clone(),
                            name: workflow.name.clone(),
                            status: workflow.status.clone(),
                            url: pipeline_url
                                .as_ref()
                                .map(|url| format!("{url}/workflows/{}", workflow.id)),
                        })
                        .collect(),
                    happened_at: record.updated_at,
                });
            }
        }
        found
    }

    fn pipeline_url(&self, record: &TriggerRecord) -> Option<String> {
        if let Some(url) = record.pipeline.as_ref().and_then(|p| p.url.clone()) {
            return Some(url);
        }
        let number = record.pipeline.as_ref()?.number?;
        let slug: ProjectSlug = record.target.project.parse().ok()?;
        Some(pipeline_url(&self.app_url, &slug, number))
    }

    /// Queues what `record` calls for, due at `now`. Never fails: an outbox error is logged
    /// (the trigger's own outcome is what matters on this path).
    pub async fn observe(&self, record: &TriggerRecord, now: DateTime<Utc>) {
        for notification in self.notifications(record) {
            match self.outbox.enqueue(&notification, now).await {
                Ok(true) => tracing::info!(notification = %notification.id,
                    sink = %notification.sink, "notification queued"),
                Ok(false) => {}
                Err(error) => tracing::error!(notification = %notification.id,
                    sink = %notification.sink, %error, "cannot queue a notification; it is lost"),
            }
        }
    }
}

/// The store with a [`Notifier`] looking at every record written through it.
pub struct NotifyingStore {
    inner: SharedStore,
    notifier: Notifier,
}

/// `store` as is when the file has no `[[notify]]`, else wrapped in a [`NotifyingStore`].
pub fn with_notifications(
    store: SharedStore,
    triggers: &TriggersFile,
    outbox: Option<Arc<dyn Outbox>>,
) -> SharedStore {
    match outbox {
        Some(outbox) if !triggers.notify.is_empty() => Arc::new(NotifyingStore {
            inner: store,
            notifier: Notifier::new(triggers, outbox),
        }),
        _ => store,
    }
}

impl NotifyingStore {
    async fn observed(&self, written: StoreResult<TriggerRecord>) -> StoreResult<TriggerRecord> {
        if let Ok(record) = &written {
            self.notifier.observe(record, record.updated_at).await;
        }
        written
    }
}

#[async_trait]
impl HistoryStore for NotifyingStore {
    async fn create_record(&self, record: TriggerRecord) -> StoreResult<TriggerRecord> {
        let written = self.inner.create_record(record).await;
        self.observed(written).await
    }

    async fn update_record(&self, record: TriggerRecord) -> StoreResult<TriggerRecord> {
        let written = self.inner.update_record(record).await;
        self.observed(written).await
    }

    async fn get_record(&self, id: TriggerId) -> StoreResult<Option<TriggerRecord>> {
        self.inner.get_record(id).await
    }

    async fn list_by_source(
        &self,
        source: &TriggerSource,
        page: PageRequest,
    ) -> StoreResult<Page<TriggerRecord>> {
        self.inner.list_by_source(source, page).await
    }

    async fn list_by_project(
        &self,
        project: &str,
        page: PageRequest,
    ) -> StoreResult<Page<TriggerRecord>> {
        self.inner.list_by_project(project, page).await
    }

    async fn list_by_origin(
        &self,
        origin: TriggerId,
        project: Option<&str>,
        page: PageRequest,
    ) -> StoreResult<Page<TriggerRecord>> {
        self.inner.list_by_origin(origin, project, page).await
    }

    async fn list_recent(&self, page: PageRequest) -> StoreResult<Page<TriggerRecord>> {
        self.inner.list_recent(page).await
    }

    async fn find_by_pipeline(&self, pipeline_id: &str) -> StoreResult<Option<TriggerRecord>> {
        self.inner.find_by_pipeline(pipeline_id).await
    }

    async fn pipeline_recorded(&self, pipeline_id: &str) -> StoreResult<Option<TriggerId>> {
        self.inner.pipeline_recorded(pipeline_id).await
    }

    async fn due_for_retry(&self, limit: u32) -> StoreResult<Vec<TriggerRecord>> {
        self.inner.due_for_retry(limit).await
    }

    async fn purge_expired(&self, limit: u32) -> StoreResult<u64> {
        self.inner.purge_expired(limit).await
    }
}

#[async_trait]
impl ClaimStore for NotifyingStore {
    async fn claim(
        &self,
        key: &ClaimKey,
        fingerprint: &Fingerprint,
        lease: Duration,
    ) -> StoreResult<ClaimOutcome> {
        self.inner.claim(key, fingerprint, lease).await
    }

    async fn renew(
        &self,
        key: &ClaimKey,
        owner: OwnerToken,
        lease: Duration,
    ) -> StoreResult<DateTime<Utc>> {
        self.inner.renew(key, owner, lease).await
    }

    async fn mark_sending(&self, key: &ClaimKey, owner: OwnerToken) -> StoreResult<()> {
        self.inner.mark_sending(key, owner).await
    }

    async fn complete(
        &self,
        key: &ClaimKey,
        owner: OwnerToken,
        result: &ClaimResult,
    ) -> StoreResult<()> {
        self.inner.complete(key, owner, result).await
    }

    async fn release(&self, key: &ClaimKey, owner: OwnerToken) -> StoreResult<()> {
        self.inner.release(key, owner).await
    }

    async fn adopt_ambiguous(&self, key: &ClaimKey, lease: Duration) -> StoreResult<ClaimGrant> {
        self.inner.adopt_ambiguous(key, lease).await
    }

    async fn claim_snapshot(&self, key: &ClaimKey) -> StoreResult<Option<ClaimSnapshot>> {
        self.inner.claim_snapshot(key).await
    }
}

#[async_trait]
impl ScheduleStateStore for NotifyingStore {
    async fn scheduler_state(&self) -> StoreResult<Option<SchedulerState>> {
        self.inner.scheduler_state().await
    }

    async fn schedule_definitions(&self) -> StoreResult<Option<ScheduleDefinitions>> {
        self.inner.schedule_definitions().await
    }

    async fn save_scheduler_state(
        &self,
        state: &SchedulerState,
        definitions: Option<&ScheduleDefinitions>,
    ) -> StoreResult<bool> {
        self.inner.save_scheduler_state(state, definitions).await
    }
}

/// A trigger's claim and record written together: its decision is seen like any other
/// record write (the opening write is `received`: nothing to notify).
#[async_trait]
impl TriggerLedger for NotifyingStore {
    async fn open_trigger(
        &self,
        key: &ClaimKey,
        fingerprint: &Fingerprint,
        lease: Duration,
        record: TriggerRecord,
        sending: bool,
    ) -> StoreResult<OpenedTrigger> {
        self.inner
            .open_trigger(key, fingerprint, lease, record, sending)
            .await
    }

    async fn settle_trigger(
        &self,
        key: &ClaimKey,
        owner: OwnerToken,
        lease: Duration,
        record: TriggerRecord,
    ) -> StoreResult<TriggerRecord> {
        let written = self.inner.settle_trigger(key, owner, lease, record).await;
        self.observed(written).await
    }
}

#[async_trait]
impl JoinStore for NotifyingStore {
    async fn join_arrive(&self, arrival: &JoinArrival) -> StoreResult<JoinOutcome> {
        self.inner.join_arrive(arrival).await
    }

    async fn join_state(&self, key: &ClaimKey) -> StoreResult<Option<JoinState>> {
        self.inner.join_state(key).await
    }

    async fn take_rate_ticket(&self, ticket: &RateTicket) -> StoreResult<bool> {
        self.inner.take_rate_ticket(ticket).await
    }
}

#[async_trait]
impl FlagStore for NotifyingStore {
    async fn pause(
        &self,
        scope: &PauseScope,
        reason: Option<&str>,
        paused_by: Option<&str>,
    ) -> StoreResult<PauseFlag> {
        self.inner.pause(scope, reason, paused_by).await
    }

    async fn resume(&self, scope: &PauseScope) -> StoreResult<bool> {
        self.inner.resume(scope).await
    }

    async fn pause_flag(&self, scope: &PauseScope) -> StoreResult<Option<PauseFlag>> {
        self.inner.pause_flag(scope).await
    }

    async fn pause_flags(&self) -> StoreResult<Vec<PauseFlag>> {
        self.inner.pause_flags().await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::config::ActionKind;
    use crate::notify::{NotifyError, Pending, SqliteOutbox};

    fn triggers() -> TriggersFile {
        crate::config::parse_str(
            r#"
[[notify]]
name = "ops"
kind = "webhook"
on = ["failed", "rejected", "workflow_failed"]
url_secret = "u"
signing_key_secret = "k"

[[notify]]
name = "e2e-slack"
kind = "slack"
on = ["failed", "ambiguous"]
url_secret = "s"
sources = ["scheduled"]
projects = ["gh/acme/e2e"]
"#,
            "t.toml",
        )
        .unwrap()
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 6, 9, 0, 0).unwrap()
    }

    fn record(kind: SourceKind, project: &str) -> TriggerRecord {
        TriggerRecord::new(
            TriggerSource::new(kind, "nightly"),
            TriggerTarget {
                project: project.to_owned(),
                ..TriggerTarget::default()
            },
            ActionKind::Pipeline,
            now(),
        )
    }

    async fn queued(outbox: &SqliteOutbox) -> Vec<String> {
        let far = now() + chrono::Duration::days(30);
        let mut ids: Vec<String> = outbox
            .due(far, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.notification.id)
            .collect();
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn final_decisions_are_queued_once_per_sink_and_status() {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(now()));
        let outbox = SqliteOutbox::in_memory().unwrap();
        let store = with_notifications(
            Arc::new(SqliteStore::in_memory(clock).unwrap()),
            &triggers(),
            Some(Arc::new(outbox.clone())),
        );
        let mut failing = record(SourceKind::Schedule, "github/acme/e2e");
        failing.status = TriggerStatus::Failed;
        failing.retry_at = Some(now() + chrono::Duration::minutes(1));
        let mut failing = store.create_record(failing).await.unwrap();
        // Still being retried: not an operator's yet.
        assert!(queued(&outbox).await.is_empty());

        failing.retry_at = None;
        let mut failing = store.update_record(failing).await.unwrap();
        let id = failing.id.to_string();
        assert_eq!(
            queued(&outbox).await,
            [format!("{id}#failed#e2e-slack"), format!("{id}#failed#ops")]
        );
        // Another write of the same decision (a redelivery's update) queues nothing more;
        // a failed workflow is news for the sink that wants it.
        failing.upsert_workflow(WorkflowOutcome {
            id: "wf".into(),
            name: "e2e".into(),
            status: "failed".into(),
            stopped_at: None,
        });
        store.update_record(failing).await.unwrap();
        assert_eq!(queued(&outbox).await.len(), 3);

        // Filters: an http rejection of another project only reaches `ops`.
        let mut rejected = record(SourceKind::Http, "gh/acme/api");
        rejected.status = TriggerStatus::Rejected;
        let rejected = store.create_record(rejected).await.unwrap();
        assert!(
            queued(&outbox)
                .await
                .contains(&format!("{}#rejected#ops", rejected.id))
        );
        assert_eq!(queued(&outbox).await.len(), 4);
        // Successes are not news.
        let mut fine = record(SourceKind::Schedule, "gh/acme/e2e");
        fine.status = TriggerStatus::Triggered;
        store.create_record(fine).await.unwrap();
        assert_eq!(queued(&outbox).await.len(), 4);
    }

    struct Broken;

    #[async_trait]
    impl Outbox for Broken {
        async fn enqueue(&self, _: &Notification, _: DateTime<Utc>) -> Result<bool, NotifyError> {
            Err(NotifyError::Unavailable("down".into()))
        }
        async fn due(&self, _: DateTime<Utc>, _: u32) -> Result<Vec<Pending>, NotifyError> {
            Err(NotifyError::Unavailable("down".into()))
        }
        async fn take(
            &self,
            _: &Pending,
            _: DateTime<Utc>,
        ) -> Result<Option<Pending>, NotifyError> {
            Err(NotifyError::Unavailable("down".into()))
        }
        async fn remove(&self, _: &Pending) -> Result<(), NotifyError> {
            Err(NotifyError::Unavailable("down".into()))
        }
    }

    #[tokio::test]
    async fn an_outbox_outage_never_fails_the_trigger_write() {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(now()));
        let store = with_notifications(
            Arc::new(SqliteStore::in_memory(clock).unwrap()),
            &triggers(),
            Some(Arc::new(Broken)),
        );
        let mut rejected = record(SourceKind::Http, "gh/acme/api");
        rejected.status = TriggerStatus::Rejected;
        let written = store.create_record(rejected).await.unwrap();
        assert_eq!(
            store.get_record(written.id).await.unwrap().unwrap().status,
            TriggerStatus::Rejected
        );
    }
}

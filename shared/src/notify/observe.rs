//! Seeing decisions: a store decorator that enqueues notifications after record writes.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

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

/// Every port call goes to the wrapped store; each record a write returns is looked at
/// (the opening write is `received`: nothing to notify; a decision is seen when settled).
impl StoreDecorator for NotifyingStore {
    fn inner(&self) -> &dyn TriggerStore {
        self.inner.as_ref()
    }

    fn record_written<'a>(&'a self, record: &'a TriggerRecord) -> BoxFuture<'a, ()> {
        Box::pin(self.notifier.observe(record, record.updated_at))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use async_trait::async_trait;
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

//! The store answering reconciliation's question: is this pipeline already someone else's?

use async_trait::async_trait;
use uuid::Uuid;

use crate::actions::PipelineLedger;
use std::sync::Arc;

use crate::store::{HistoryStore, StoreError, TriggerId};

/// Pipeline ids recorded for any trigger other than `own`.
pub struct StoreLedger {
    store: Arc<dyn HistoryStore>,
    own: TriggerId,
}

impl StoreLedger {
    pub fn new(store: Arc<dyn HistoryStore>, own: TriggerId) -> Self {
        Self { store, own }
    }
}

#[async_trait]
impl PipelineLedger for StoreLedger {
    async fn is_recorded_elsewhere(&self, pipeline_id: Uuid) -> Result<bool, StoreError> {
        let owner = self
            .store
            .pipeline_recorded(&pipeline_id.to_string())
            .await?;
        Ok(owner.is_some_and(|owner| owner != self.own))
    }
}

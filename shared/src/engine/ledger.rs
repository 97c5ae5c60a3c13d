//! The store answering reconciliation's question: is this pipeline already someone else's?

use async_trait::async_trait;
use uuid::Uuid;

use crate::actions::PipelineLedger;
use crate::store::{SharedStore, TriggerId};

/// Pipeline ids recorded for any trigger other than `own`.
pub struct StoreLedger {
    store: SharedStore,
    own: TriggerId,
}

impl StoreLedger {
    pub fn new(store: SharedStore, own: TriggerId) -> Self {
        Self { store, own }
    }
}

#[async_trait]
impl PipelineLedger for StoreLedger {
    async fn is_recorded_elsewhere(&self, pipeline_id: Uuid) -> Result<bool, String> {
        match self.store.pipeline_recorded(&pipeline_id.to_string()).await {
            Ok(Some(owner)) => Ok(owner != self.own),
            Ok(None) => Ok(false),
            Err(error) => Err(error.to_string()),
        }
    }
}

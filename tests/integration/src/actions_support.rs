//! Helpers for the targets-and-actions tests (`tests/actions.rs`): guards, a pipeline ledger,
//! and a port wrapper that loses CircleCI's answer after the simulator has acted.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use circleci_sim::{RecordedRequest, Simulator};
use shared::actions::{PipelineLedger, SendGuard};
use shared::circleci::intercept::{Call, Forward, Intercepted, Interceptor};
use shared::circleci::{CircleCi, CircleCiError};
use shared::store::StoreError;
use uuid::Uuid;

/// The requests with side effects (every POST) among `requests`.
pub fn posts(requests: &[RecordedRequest]) -> Vec<&RecordedRequest> {
    requests.iter().filter(|r| r.method == "POST").collect()
}

/// A guard that notes how many requests the simulator had received when it was asked,
/// and lets the request go or refuses it.
pub struct RecordingGuard {
    sim: Simulator,
    refuse: Option<String>,
    asked_at: Mutex<Vec<usize>>,
}

impl RecordingGuard {
    pub fn allowing(sim: &Simulator) -> Self {
        Self {
            sim: sim.clone(),
            refuse: None,
            asked_at: Mutex::new(Vec::new()),
        }
    }

    pub fn refusing(sim: &Simulator, reason: &str) -> Self {
        Self {
            refuse: Some(reason.to_owned()),
            ..Self::allowing(sim)
        }
    }

    /// The simulator's request count at each call of the guard.
    pub fn asked_at(&self) -> Vec<usize> {
        self.asked_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

#[async_trait]
impl SendGuard for RecordingGuard {
    async fn before_send(&self) -> Result<(), StoreError> {
        self.asked_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(self.sim.requests().len());
        match &self.refuse {
            Some(reason) => Err(StoreError::Unavailable {
                message: reason.clone(),
            }),
            None => Ok(()),
        }
    }
}

/// Pipeline ids recorded for other triggers, as the store would answer.
#[derive(Default)]
pub struct RecordedElsewhere {
    ids: Mutex<HashSet<Uuid>>,
    pub asked: AtomicUsize,
    pub fail: AtomicBool,
}

impl RecordedElsewhere {
    pub fn with(ids: impl IntoIterator<Item = Uuid>) -> Self {
        Self {
            ids: Mutex::new(ids.into_iter().collect()),
            ..Self::default()
        }
    }
}

#[async_trait]
impl PipelineLedger for RecordedElsewhere {
    async fn is_recorded_elsewhere(&self, pipeline_id: Uuid) -> Result<bool, StoreError> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable {
                message: "store unavailable".into(),
            });
        }
        Ok(self
            .ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&pipeline_id))
    }
}

/// The real client, except that when armed, the next pipeline or workflow action is sent
/// (the simulator acts on it) and its answer is then reported as lost (`Ambiguous`), as a
/// connection reset after CircleCI processed the request would be.
pub type LosesAnswers = Intercepted<LoseNextAnswer>;

/// The [`Interceptor`] of [`LosesAnswers`].
#[derive(Default)]
pub struct LoseNextAnswer {
    armed: AtomicBool,
}

impl LoseNextAnswer {
    pub fn client(inner: Arc<dyn CircleCi>) -> LosesAnswers {
        Intercepted::new(inner, Self::default())
    }

    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }
}

#[async_trait]
impl Interceptor for LoseNextAnswer {
    async fn around<'a, T: Send + 'a>(
        &'a self,
        call: Call<'a>,
        forward: Forward<'a, T>,
    ) -> Result<T, CircleCiError> {
        let result = forward.await;
        match call.trigger_action() {
            Some(operation) if result.is_ok() && self.armed.swap(false, Ordering::SeqCst) => {
                Err(CircleCiError::Ambiguous {
                    operation,
                    status: None,
                    reason: "the connection was reset after the request was sent (test)".into(),
                })
            }
            _ => result,
        }
    }
}

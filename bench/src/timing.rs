//! Timing decorators for the two ports whose time is not ours: the store (a
//! `shared::store::StoreDecorator`) and the CircleCI client (an interceptor of
//! `shared::circleci::intercept`). Each adds the time spent inside every call to a
//! [`Meter`], so "our code" = end to end − store time − CircleCI time.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::future::BoxFuture;
use shared::circleci::intercept::{Call, Forward, Intercepted, Interceptor};
use shared::circleci::{CircleCi, CircleCiError};
use shared::store::{SharedStore, StoreDecorator, StoreOperation, StoreResult, TriggerStore};

/// Calls made and time spent inside them (summed; the measured paths call one at a time).
/// Also when the first call began and the last one ended (the span a burst's CircleCI
/// calls took).
#[derive(Debug, Default)]
pub struct Meter {
    calls: AtomicU64,
    nanos: AtomicU64,
    span: Mutex<(Option<Instant>, Option<Instant>)>,
}

impl Meter {
    async fn time<T>(&self, call: impl Future<Output = T>) -> T {
        let began = Instant::now();
        let out = call.await;
        let ended = Instant::now();
        let spent = u64::try_from(ended.duration_since(began).as_nanos()).unwrap_or(u64::MAX);
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.nanos.fetch_add(spent, Ordering::Relaxed);
        let mut span = self.span.lock().unwrap_or_else(PoisonError::into_inner);
        span.0 = Some(span.0.map_or(began, |first| first.min(began)));
        span.1 = Some(span.1.map_or(ended, |last| last.max(ended)));
        out
    }

    /// When the first call began and the last one ended.
    pub fn span(&self) -> Option<(Instant, Instant)> {
        let span = self.span.lock().unwrap_or_else(PoisonError::into_inner);
        span.0.zip(span.1)
    }

    /// (calls, time) so far.
    pub fn read(&self) -> (u64, Duration) {
        (
            self.calls.load(Ordering::Relaxed),
            Duration::from_nanos(self.nanos.load(Ordering::Relaxed)),
        )
    }
}

/// A store that times every call to the store it wraps.
pub struct TimedStore {
    inner: SharedStore,
    meter: Arc<Meter>,
}

impl TimedStore {
    pub fn wrap(inner: SharedStore, meter: Arc<Meter>) -> SharedStore {
        Arc::new(Self { inner, meter })
    }
}

impl StoreDecorator for TimedStore {
    fn inner(&self) -> &dyn TriggerStore {
        self.inner.as_ref()
    }

    fn around<'a, T: Send + 'a>(
        &'a self,
        _operation: StoreOperation,
        call: BoxFuture<'a, StoreResult<T>>,
    ) -> BoxFuture<'a, StoreResult<T>> {
        Box::pin(self.meter.time(call))
    }
}

/// Times every call to the CircleCI client it wraps (the HTTP round trip and the
/// simulator's handling are inside).
pub struct TimedCircleCi(Arc<Meter>);

impl TimedCircleCi {
    pub fn wrap(inner: Arc<dyn CircleCi>, meter: Arc<Meter>) -> Arc<dyn CircleCi> {
        Arc::new(Intercepted::new(inner, Self(meter)))
    }
}

#[async_trait]
impl Interceptor for TimedCircleCi {
    async fn around<'a, T: Send + 'a>(
        &'a self,
        _call: Call<'a>,
        forward: Forward<'a, T>,
    ) -> Result<T, CircleCiError> {
        self.0.time(forward).await
    }
}

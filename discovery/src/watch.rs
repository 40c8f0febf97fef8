//! A watch per service: re-resolve on TTL, publish only on change, keep the last known good.

use std::sync::Arc;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::endpoint::EndpointSet;
use crate::metrics as m;
use crate::resolve::{Resolve, Source};

mod state;

pub use state::{Step, WatchConfig, WatchState};

/// A running watch of one service. Dropping it stops the refresh task.
///
/// Subscribers get a `tokio::sync::watch::Receiver<EndpointSet>` that changes only when
/// endpoints are added, removed or changed, or when the set turns stale or fresh.
pub struct Watch {
    source: Source,
    tx: Arc<watch::Sender<EndpointSet>>,
    refresh: Arc<Notify>,
    task: JoinHandle<()>,
}

// === impl Watch ===

impl Watch {
    /// Starts watching `source` with `resolver` on the current tokio runtime.
    ///
    /// Many watches can share one resolver (clone it or wrap it in `Arc`); each watch is
    /// one task, whatever the number of records.
    pub fn spawn<R: Resolve>(resolver: R, source: Source, config: WatchConfig) -> Self {
        let (tx, _) = watch::channel(EndpointSet::pending());
        let tx = Arc::new(tx);
        let refresh = Arc::new(Notify::new());
        let span = tracing::info_span!("watch", source = %source, kind = source.kind());
        let task = tokio::spawn(
            run(
                resolver,
                source.clone(),
                config,
                Arc::clone(&tx),
                Arc::clone(&refresh),
            )
            .instrument(span),
        );
        Self {
            source,
            tx,
            refresh,
            task,
        }
    }

    /// What this watch resolves.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// A receiver of the endpoint set; `changed()` fires only on real changes.
    pub fn subscribe(&self) -> watch::Receiver<EndpointSet> {
        self.tx.subscribe()
    }

    /// The current set.
    pub fn current(&self) -> EndpointSet {
        self.tx.borrow().clone()
    }

    /// Asks for a resolution now instead of at the next scheduled time.
    pub fn refresh_now(&self) {
        self.refresh.notify_one();
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Keeps the stale gauge right even when the task is aborted.
struct Gauges {
    stale: bool,
}

impl Gauges {
    fn new() -> Self {
        ::metrics::gauge!(m::WATCHES).increment(1.0);
        Self { stale: false }
    }

    fn set_stale(&mut self, stale: bool) {
        if stale != self.stale {
            let delta = if stale { 1.0 } else { -1.0 };
            ::metrics::gauge!(m::STALE_SERVICES).increment(delta);
            self.stale = stale;
        }
    }
}

impl Drop for Gauges {
    fn drop(&mut self) {
        self.set_stale(false);
        ::metrics::gauge!(m::WATCHES).decrement(1.0);
    }
}

async fn run<R: Resolve>(
    resolver: R,
    source: Source,
    config: WatchConfig,
    tx: Arc<watch::Sender<EndpointSet>>,
    refresh: Arc<Notify>,
) {
    let mut state = WatchState::default();
    let mut gauges = Gauges::new();
    let kind = source.kind();
    loop {
        let started = tokio::time::Instant::now();
        let result = resolver.resolve(&source).await;
        ::metrics::histogram!(m::RESOLVE_DURATION_SECONDS).record(started.elapsed().as_secs_f64());
        let step = match result {
            Ok(resolution) => {
                let outcome = if resolution.endpoints.is_empty() {
                    "empty"
                } else {
                    "ok"
                };
                ::metrics::counter!(m::RESOLUTIONS_TOTAL, "source" => kind, "outcome" => outcome)
                    .increment(1);
                state.succeeded(resolution, &config)
            }
            Err(error) => {
                let reason = error.reason().as_str();
                ::metrics::counter!(m::RESOLUTIONS_TOTAL, "source" => kind, "outcome" => "error")
                    .increment(1);
                ::metrics::counter!(m::RESOLVE_ERRORS_TOTAL, "reason" => reason).increment(1);
                tracing::warn!(
                    %error,
                    reason,
                    failures = state.failures() + 1,
                    kept = state.set().len(),
                    "resolution failed; keeping last known good endpoints"
                );
                state.failed(&config)
            }
        };
        gauges.set_stale(state.set().is_stale());
        if step.publish {
            tracing::debug!(
                endpoints = state.set().len(),
                added = step.diff.added.len(),
                removed = step.diff.removed.len(),
                changed = step.diff.changed.len(),
                stale = state.set().is_stale(),
                "publishing endpoint set"
            );
            ::metrics::counter!(m::UPDATES_PUBLISHED_TOTAL).increment(1);
            tx.send_replace(state.set().clone());
        }
        let Some(base) = step.next else {
            // Static: nothing to refresh; wait to be dropped.
            std::future::pending::<()>().await;
            return;
        };
        let wait = config.jittered(base, rand::random::<f64>());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = refresh.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests;

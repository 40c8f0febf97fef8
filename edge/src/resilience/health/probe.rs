//! The active health-check driver: a thin async loop per endpoint that sleeps until
//! [`HealthCheck::next_check_at`], sends one GET through a [`HealthProbe`] (the data
//! plane's mTLS client, so the check sees the identity the real traffic sees) with the
//! configured timeout, and hands every result and transition to a callback. The loop
//! ends when the task is dropped or aborted; all decisions stay in [`HealthCheck`].

use std::future::Future;
use std::pin::Pin;

use rand::rngs::SmallRng;
use tokio::time::Instant;

use super::{CheckResult, HealthCheck, Transition};
use crate::resilience::EndpointId;

/// A boxed future, as [`HealthProbe::check`] returns.
pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = CheckResult> + Send + 'a>>;

/// Sends one health-check request. Implementations do `GET path` to `endpoint` over the
/// cluster's mTLS client and map the answer with [`CheckResult::from_status`]; failures
/// to connect (including a wrong peer identity) are [`CheckResult::ConnectFailure`]. The
/// driver applies the timeout, so implementations need not.
pub trait HealthProbe: Send + Sync {
    /// Checks `endpoint` at `path`.
    fn check<'a>(&'a self, endpoint: EndpointId, path: &'a str) -> ProbeFuture<'a>;
}

/// One finished check, as handed to the driver's callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckReport {
    /// When it finished.
    pub at: Instant,
    /// The endpoint.
    pub endpoint: EndpointId,
    /// What it found.
    pub result: CheckResult,
    /// What it changed.
    pub transition: Transition,
}

/// Checks `endpoint` forever; `report` is called after every check (e.g. to update a
/// [`ClusterPolicy`](crate::resilience::cluster_state::ClusterPolicy)). Spawn it and
/// abort the task when the endpoint goes away.
pub async fn run(
    probe: &dyn HealthProbe,
    endpoint: EndpointId,
    path: &str,
    mut state: HealthCheck,
    mut rng: SmallRng,
    mut report: impl FnMut(CheckReport) + Send,
) {
    loop {
        tokio::time::sleep_until(state.next_check_at()).await;
        let result = tokio::time::timeout(state.timeout(), probe.check(endpoint, path))
            .await
            .unwrap_or(CheckResult::Timeout);
        let at = Instant::now();
        let transition = state.record(at, result, &mut rng);
        tracing::debug!(%endpoint, ?result, ?transition, "health check");
        report(CheckReport {
            at,
            endpoint,
            result,
            transition,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use rand::SeedableRng;

    use super::*;
    use crate::resilience::config::HealthCheckConfig;
    use crate::resilience::testutil::ep;

    /// Answers from a script: `Some(status)` after 10ms, `None` hangs.
    struct Scripted {
        script: Vec<Option<u16>>,
        calls: AtomicUsize,
        paths: Mutex<Vec<String>>,
    }

    impl HealthProbe for Scripted {
        fn check<'a>(&'a self, _endpoint: EndpointId, path: &'a str) -> ProbeFuture<'a> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            self.paths
                .lock()
                .expect("not poisoned")
                .push(path.to_owned());
            let answer = self.script.get(n).copied().flatten();
            Box::pin(async move {
                match answer {
                    Some(status) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        CheckResult::from_status(status)
                    }
                    None => std::future::pending().await,
                }
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn driver_times_out_hung_checks_and_reports_transitions() {
        let probe = Arc::new(Scripted {
            script: vec![Some(200), None, None, Some(200), Some(200)],
            calls: AtomicUsize::new(0),
            paths: Mutex::new(Vec::new()),
        });
        let config = HealthCheckConfig {
            interval_jitter: Duration::ZERO,
            ..HealthCheckConfig::default()
        };
        let t0 = Instant::now();
        let mut rng = SmallRng::seed_from_u64(0);
        let state = HealthCheck::new(config, t0, &mut rng);
        let reports = Arc::new(Mutex::new(Vec::new()));
        let sink = reports.clone();
        let p = probe.clone();
        let task = tokio::spawn(async move {
            run(&*p, ep(1), "/ready", state, rng, move |r| {
                sink.lock().expect("not poisoned").push(r)
            })
            .await
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        task.abort();
        let reports = reports.lock().expect("not poisoned").clone();
        let got: Vec<(u128, CheckResult, Transition)> = reports
            .iter()
            .map(|r| ((r.at - t0).as_millis(), r.result, r.transition))
            .collect();
        use CheckResult::{Pass, Timeout};
        use Transition::{BecameHealthy as Up, BecameUnhealthy as Down, Unchanged as Same};
        // checks start at 0, 1.01s, 2.51s; each hung one costs the 500ms timeout; once
        // unhealthy, every 250ms (unhealthy_interval) until two passes make it healthy
        assert_eq!(
            got,
            vec![
                (10, Pass, Same),
                (1510, Timeout, Same),
                (3010, Timeout, Down),
                (3270, Pass, Same),
                (3530, Pass, Up),
            ]
        );
        assert!(probe
            .paths
            .lock()
            .expect("not poisoned")
            .iter()
            .all(|p| p == "/ready"));
    }
}

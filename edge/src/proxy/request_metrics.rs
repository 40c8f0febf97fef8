//! The per-request metrics (`meshedge_edge_requests_total`, the request duration
//! histogram) through handles registered once per route, cluster, status and protocol.
//! Going through the `metrics::counter!` macro with owned labels costs a label vector, a
//! copy of every label into the recorder's key and a registry lookup on every request.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use metrics::{Counter, Histogram};
use rustc_hash::FxHashMap;

use crate::metrics as m;

/// Handles for one route and cluster.
#[derive(Debug)]
struct RouteClusterMetrics {
    route: String,
    cluster: String,
    duration: Histogram,
    /// Request counters by status and protocol (a few entries; scanned).
    requests: RwLock<Vec<(u16, &'static str, Counter)>>,
}

/// The handle cache of one gateway (route and cluster names come from its config, so the
/// cache stays as small as the config).
#[derive(Debug, Default)]
pub struct RequestMetrics {
    /// Route and cluster names come from the config: FxHash, not SipHash.
    by_route: RwLock<FxHashMap<String, FxHashMap<String, Arc<RouteClusterMetrics>>>>,
}

impl RequestMetrics {
    /// Counts one request answered with `status` and records how long it took.
    pub fn record(
        &self,
        route: &str,
        cluster: &str,
        status: u16,
        protocol: &'static str,
        took: Duration,
    ) {
        // The usual case: handles registered before, used under the read lock (no reference
        // counts taken).
        {
            let by_route = self.by_route.read().expect("metrics cache lock");
            if let Some(handles) = by_route.get(route).and_then(|c| c.get(cluster)) {
                handles.duration.record(took.as_secs_f64());
                if !handles.count_registered(status, protocol) {
                    handles.register_count(status, protocol);
                }
                return;
            }
        }
        let handles = self.register(route, cluster);
        handles.duration.record(took.as_secs_f64());
        handles.register_count(status, protocol);
    }

    fn register(&self, route: &str, cluster: &str) -> Arc<RouteClusterMetrics> {
        let mut by_route = self.by_route.write().expect("metrics cache lock");
        by_route
            .entry(route.to_owned())
            .or_default()
            .entry(cluster.to_owned())
            .or_insert_with(|| {
                Arc::new(RouteClusterMetrics {
                    route: route.to_owned(),
                    cluster: cluster.to_owned(),
                    duration: metrics::histogram!(
                        m::REQUEST_DURATION_SECONDS,
                        "route" => route.to_owned(),
                        "cluster" => cluster.to_owned(),
                    ),
                    requests: RwLock::default(),
                })
            })
            .clone()
    }
}

impl RouteClusterMetrics {
    /// Counts a request on the counter for `status` and `protocol` when it is registered.
    fn count_registered(&self, status: u16, protocol: &'static str) -> bool {
        let requests = self.requests.read().expect("metrics cache lock");
        match requests
            .iter()
            .find(|(s, p, _)| *s == status && *p == protocol)
        {
            Some((_, _, counter)) => {
                counter.increment(1);
                true
            }
            None => false,
        }
    }

    /// Registers the counter for `status` and `protocol` (unless another request just did)
    /// and counts a request on it.
    fn register_count(&self, status: u16, protocol: &'static str) {
        let mut requests = self.requests.write().expect("metrics cache lock");
        if let Some((_, _, counter)) = requests
            .iter()
            .find(|(s, p, _)| *s == status && *p == protocol)
        {
            counter.increment(1);
            return;
        }
        let counter = metrics::counter!(
            m::REQUESTS_TOTAL,
            "route" => self.route.clone(),
            "cluster" => self.cluster.clone(),
            "status" => status.to_string(),
            "protocol" => protocol,
        );
        counter.increment(1);
        requests.push((status, protocol, counter));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    #[test]
    fn requests_are_counted_by_route_cluster_status_and_protocol() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let cache = RequestMetrics::default();
            for _ in 0..3 {
                cache.record("api", "backend", 200, "h1", Duration::from_millis(2));
            }
            cache.record("api", "backend", 503, "h2", Duration::from_millis(1));
            cache.record("web", "backend", 200, "h1", Duration::from_millis(1));
        });
        let counts: Vec<(Vec<String>, u64)> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter_map(|(key, _, _, value)| match value {
                DebugValue::Counter(n) => Some((
                    key.key().labels().map(|l| l.value().to_owned()).collect(),
                    n,
                )),
                _ => None,
            })
            .collect();
        let find = |labels: &[&str]| {
            counts
                .iter()
                .find(|(l, _)| l.iter().map(String::as_str).eq(labels.iter().copied()))
                .map(|(_, n)| *n)
        };
        assert_eq!(find(&["api", "backend", "200", "h1"]), Some(3));
        assert_eq!(find(&["api", "backend", "503", "h2"]), Some(1));
        assert_eq!(find(&["web", "backend", "200", "h1"]), Some(1));
    }
}

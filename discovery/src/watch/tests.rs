use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::endpoint::Endpoint;
use crate::resolve::{Resolution, ResolveError};

fn ep(instance: &str, port: u16) -> Endpoint {
    Endpoint {
        instance: instance.into(),
        address: "10.0.0.1".parse().expect("ip"),
        port,
        priority: 0,
        weight: 1,
        zone: None,
        attributes: BTreeMap::new(),
    }
}

fn ok(eps: &[Endpoint], ttl_secs: u64) -> Result<Resolution, ResolveError> {
    Ok(Resolution {
        endpoints: eps.to_vec(),
        ttl: Some(Duration::from_secs(ttl_secs)),
    })
}

fn fail() -> Result<Resolution, ResolveError> {
    Err(ResolveError::NoNameservers)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn config() -> WatchConfig {
    WatchConfig {
        min_refresh: secs(1),
        max_refresh: secs(60),
        jitter: 0.0,
    }
}

#[test]
fn delays() {
    let c = config();
    let cases = [(0, 1), (1, 1), (30, 30), (60, 60), (3600, 60)];
    for (ttl, want) in cases {
        assert_eq!(c.refresh_after(secs(ttl)), secs(want), "ttl {ttl}");
    }
    let retries = [(1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (100, 60)];
    for (failures, want) in retries {
        assert_eq!(c.retry_after(failures), secs(want), "failures {failures}");
    }
    let j = WatchConfig {
        jitter: 0.5,
        ..config()
    };
    assert_eq!(j.jittered(secs(10), 0.0), secs(10));
    assert_eq!(j.jittered(secs(10), 0.5), Duration::from_millis(7_500));
    assert!(j.jittered(secs(10), 0.999) > secs(5));
    assert!(j.jittered(secs(10), 0.999) < secs(6));
    // Never below min_refresh, never above the TTL.
    assert_eq!(j.jittered(Duration::from_millis(1_500), 0.9), secs(1));
    assert_eq!(
        j.jittered(Duration::from_millis(500), 0.9),
        Duration::from_millis(500)
    );
}

#[test]
fn state_machine() {
    // (outcome, publish, stale, endpoints, next)
    let a = ep("a", 80);
    let b = ep("b", 80);
    // (outcome, publish, stale, endpoints, next)
    type StepCase = (Result<Resolution, ResolveError>, bool, bool, usize, u64);
    let steps: Vec<StepCase> = vec![
        (fail(), true, true, 0, 1), // pending -> stale pending
        (ok(std::slice::from_ref(&a), 10), true, false, 1, 10), // first answer
        (ok(std::slice::from_ref(&a), 10), false, false, 1, 10), // unchanged: silent
        (fail(), true, true, 1, 1), // kept, stale
        (fail(), false, true, 1, 2), // still stale: silent, backoff
        (ok(std::slice::from_ref(&a), 10), true, false, 1, 10), // fresh again, same endpoints
        (ok(&[a.clone(), b.clone()], 5), true, false, 2, 5), // added
        (ok(&[], 30), true, false, 0, 30), // authoritative empty empties
        (ok(&[], 30), false, false, 0, 30),
    ];
    let c = config();
    let mut state = WatchState::default();
    for (i, (outcome, publish, stale, len, next)) in steps.into_iter().enumerate() {
        let step = match outcome {
            Ok(r) => state.succeeded(r, &c),
            Err(_) => state.failed(&c),
        };
        assert_eq!(step.publish, publish, "step {i}");
        assert_eq!(state.set().is_stale(), stale, "step {i}");
        assert_eq!(state.set().len(), len, "step {i}");
        assert_eq!(step.next, Some(secs(next)), "step {i}");
    }
}

/// Replays scripted outcomes and records when it was called.
struct Scripted {
    outcomes: Mutex<VecDeque<Result<Resolution, ResolveError>>>,
    calls: Mutex<Vec<Instant>>,
}

impl Resolve for Scripted {
    async fn resolve(&self, _source: &Source) -> Result<Resolution, ResolveError> {
        self.calls.lock().expect("lock").push(Instant::now());
        let next = self.outcomes.lock().expect("lock").pop_front();
        next.unwrap_or_else(|| ok(&[], 3600))
    }
}

#[tokio::test(start_paused = true)]
async fn watch_publishes_changes_and_keeps_last_good() {
    let a = ep("a", 80);
    let b = ep("b", 80);
    let script = Arc::new(Scripted {
        outcomes: Mutex::new(VecDeque::from(vec![
            ok(std::slice::from_ref(&a), 10),
            ok(std::slice::from_ref(&a), 10),
            fail(),
            fail(),
            ok(&[a.clone(), b.clone()], 5),
            ok(&[], 60),
        ])),
        calls: Mutex::new(Vec::new()),
    });
    let start = Instant::now();
    let source = Source::Srv("x.example.".parse().expect("name"));
    let watch = Watch::spawn(Arc::clone(&script), source, config());
    let mut rx = watch.subscribe();

    let mut seen = Vec::new();
    for _ in 0..4 {
        rx.changed().await.expect("watch alive");
        let set = rx.borrow_and_update().clone();
        seen.push((start.elapsed().as_secs(), set.len(), set.is_stale()));
    }
    // t=0 a; t=10 same (silent); t=20 fail -> stale; t=21 fail (silent);
    // t=23 a+b fresh; t=28 empty.
    assert_eq!(
        seen,
        [(0, 1, false), (20, 1, true), (23, 2, false), (28, 0, false)]
    );
    let calls: Vec<u64> = script
        .calls
        .lock()
        .expect("lock")
        .iter()
        .map(|t| (*t - start).as_secs())
        .collect();
    assert_eq!(calls[..6], [0, 10, 20, 21, 23, 28]);
}

#[tokio::test(start_paused = true)]
async fn refresh_now_skips_the_wait() {
    let script = Arc::new(Scripted {
        outcomes: Mutex::new(VecDeque::from(vec![ok(&[], 3600), ok(&[ep("a", 1)], 3600)])),
        calls: Mutex::new(Vec::new()),
    });
    let watch = Watch::spawn(Arc::clone(&script), Source::Static(vec![]), config());
    let mut rx = watch.subscribe();
    rx.wait_for(|s| s.is_resolved()).await.expect("alive");
    watch.refresh_now();
    let set = rx.wait_for(|s| s.len() == 1).await.expect("alive").clone();
    assert_eq!(set.endpoints()[0].instance, "a");
    assert!(Instant::now().elapsed() < secs(1));
}

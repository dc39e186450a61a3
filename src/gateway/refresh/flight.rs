//! Who refreshes what right now, and what happened lately, in this
//! process: one flight (an async mutex) per credential so concurrent
//! requests wait for one refresh; refreshes that failed for want of their
//! authority, so that the requests that waited through one fall back at
//! once; and refreshes an upstream 401 asked for (`min_refresh_interval`).
//! Keys are `<grant id>/<credential name>`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failed refreshes are remembered this long (they only matter to requests
/// that were already waiting when the failure happened).
const FAILURE_MEMORY: Duration = Duration::from_secs(60);

#[derive(Default)]
pub(super) struct Flights {
    flights: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// When the last refresh of a credential failed for want of its
    /// authority, by flight key.
    failures: Mutex<HashMap<String, Instant>>,
    /// When an upstream 401 last made this instance refresh a credential,
    /// by flight key (`min_refresh_interval`).
    rejections: Mutex<HashMap<String, Instant>>,
}

impl Flights {
    pub fn flight(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        flights.entry(key.to_string()).or_default().clone()
    }

    /// Forgets a flight nobody else waits on. A request arriving later
    /// starts a new flight and first re-reads the store, so it sees what
    /// this one stored.
    pub fn land(&self, key: &str, flight: Arc<tokio::sync::Mutex<()>>) {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        // Ours plus the map's: nobody else holds it.
        if Arc::strong_count(&flight) <= 2 {
            flights.remove(key);
        }
    }

    /// Whether a refresh of `key` failed for want of its authority since
    /// `since`: a request that waited through that attempt does not repeat
    /// it.
    pub fn failed_since(&self, key: &str, since: Instant) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.get(key).is_some_and(|at| *at >= since)
    }

    /// Whether an upstream 401 may refresh `key` now: at most once per
    /// `interval`. Claims the turn when it may.
    pub fn rejection_may_refresh(&self, key: &str, interval: Duration) -> bool {
        let mut rejections = self.rejections.lock().unwrap_or_else(|p| p.into_inner());
        if rejections
            .get(key)
            .is_some_and(|at| at.elapsed() < interval)
        {
            return false;
        }
        if rejections.len() >= 1024 {
            rejections.retain(|_, at| at.elapsed() < interval);
        }
        rejections.insert(key.to_string(), Instant::now());
        true
    }

    pub fn note_failure(&self, key: &str, failed: bool) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failed {
            failures.retain(|_, at| at.elapsed() < FAILURE_MEMORY);
            failures.insert(key.to_string(), Instant::now());
        } else {
            failures.remove(key);
        }
    }
}

//! Failed client authentications, counted per client id: past
//! `[tokens] auth_failures` (30 a minute by default) the id is refused with
//! 429 for the rest of the period, the right secret included, so a secret
//! cannot be guessed at line rate.
//!
//! Unknown ids are counted too, or the 429 would tell which ids exist;
//! they share 65,536 counters chosen by a keyed hash (the key is random per
//! process, so nobody can aim collisions), which bounds the memory an
//! attacker can make refgate spend on made-up ids. A refused attempt is
//! answered before its secret is hashed.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::audit::Audit;
use crate::config::{Config, Rate};
use crate::telemetry::Metrics;

/// Counters for made-up client ids.
const UNKNOWN_BUCKETS: u64 = 1 << 16;

pub struct AuthThrottle {
    limit: Option<Limit>,
    metrics: Arc<Metrics>,
    audit: Arc<Audit>,
}

struct Limit {
    failures: DefaultKeyedRateLimiter<u64>,
    period: Duration,
    hasher: RandomState,
    /// Ids over their limit, until when.
    refused: Mutex<HashMap<u64, Instant>>,
}

impl AuthThrottle {
    pub fn new(rate: Option<Rate>, metrics: Arc<Metrics>, audit: Arc<Audit>) -> Self {
        let limit = rate.map(|rate| {
            let burst = NonZeroU32::new(rate.count).unwrap_or(NonZeroU32::MIN);
            let quota = Quota::with_period(rate.per / rate.count)
                .unwrap_or_else(|| Quota::per_second(burst))
                .allow_burst(burst);
            Limit {
                failures: RateLimiter::keyed(quota),
                period: rate.per,
                hasher: RandomState::new(),
                refused: Mutex::new(HashMap::new()),
            }
        });
        AuthThrottle {
            limit,
            metrics,
            audit,
        }
    }

    /// Counts a refusal; an id nobody configured is not a metric label,
    /// nor a `client_id` in the audit trail.
    fn count(&self, config: &Config, id: &str) {
        let known = config.clients.contains_key(id);
        let name = if known { id } else { "-" };
        self.metrics
            .rate_limited
            .with_label_values(&["auth_failures", name])
            .inc();
        self.audit.record(
            "rate_limited",
            serde_json::json!({
                "client_id": known.then_some(id),
                "limit": "auth_failures",
            }),
        );
    }

    /// How long `id` is still refused, if it is.
    pub fn refused(&self, config: &Config, id: &str) -> Option<Duration> {
        let limit = self.limit.as_ref()?;
        let key = limit.key(config, id);
        let mut refused = limit.refused.lock().unwrap_or_else(|p| p.into_inner());
        let until = *refused.get(&key)?;
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            refused.remove(&key);
            return None;
        }
        drop(refused);
        self.count(config, id);
        Some(left)
    }

    /// Counts a failed authentication of `id`; past the limit, how long
    /// the id is refused from now.
    pub fn failed(&self, config: &Config, id: &str) -> Option<Duration> {
        let limit = self.limit.as_ref()?;
        let key = limit.key(config, id);
        limit.failures.check_key(&key).err()?;
        let mut refused = limit.refused.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        refused.retain(|_, until| *until > now);
        refused.insert(key, now + limit.period);
        if limit.failures.len() > 4 * UNKNOWN_BUCKETS as usize {
            limit.failures.retain_recent();
        }
        drop(refused);
        self.count(config, id);
        Some(limit.period)
    }
}

impl Limit {
    /// A configured id has a counter of its own (per tenant: one id in
    /// two tenants is two clients); an unknown one, one of the shared ones
    /// (the top bit tells them apart).
    fn key(&self, config: &Config, id: &str) -> u64 {
        let hash = self.hasher.hash_one((&config.tenant, id));
        if config.clients.contains_key(id) {
            hash >> 1
        } else {
            (1 << 63) | (hash % UNKNOWN_BUCKETS)
        }
    }
}

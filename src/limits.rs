//! Request rate limits, as token buckets (governor): per client on the
//! token endpoint (`[[clients]] rate_limit`) and per calling client on a
//! gateway route (`[[routes]] rate_limit`; on a public route every caller
//! shares one bucket). Built with each configuration generation, so a
//! reload starts them afresh. Failed client authentications have a limit
//! of their own (`token::throttle`).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::{Client, Config, RateLimit, Route};

/// The token-endpoint limits of one configuration and its tenants, by
/// tenant, then client id.
#[derive(Default)]
pub struct Limits {
    clients: HashMap<String, HashMap<String, DefaultDirectRateLimiter>>,
}

/// One route's limit, kept with the route; keyed by the calling client's
/// id (configured ids only, so the keys are bounded).
pub struct RouteLimit(DefaultKeyedRateLimiter<String>);

impl RouteLimit {
    /// The route's limit, if it has one.
    pub fn of(route: &Route) -> Option<Self> {
        Some(RouteLimit(RateLimiter::keyed(quota(route.rate_limit?))))
    }

    /// A request of `client` (`""` for a public route's callers): `Err`
    /// with the time until it may send again when its bucket is empty.
    pub fn check(&self, client: &str) -> Result<(), Duration> {
        self.0
            .check_key(&client.to_string())
            .map_err(|until| until.wait_time_from(self.0.clock().now()))
    }
}

impl Limits {
    pub fn build(config: &Config) -> Self {
        let clients = std::iter::once(config)
            .chain(config.tenants.values().map(|t| &**t))
            .map(|tenant| {
                let limited = tenant
                    .clients
                    .values()
                    .filter_map(|c| Some((c.id.clone(), RateLimiter::direct(quota(c.rate_limit?)))))
                    .collect();
                (tenant.tenant.clone(), limited)
            })
            .collect();
        Limits { clients }
    }

    /// A token-endpoint request of `client`: `Err` with the time until it
    /// may ask again when its bucket is empty.
    pub fn client(&self, client: &Client) -> Result<(), Duration> {
        let Some(limiter) = self
            .clients
            .get(&client.tenant)
            .and_then(|limited| limited.get(&client.id))
        else {
            return Ok(());
        };
        limiter
            .check()
            .map_err(|until| until.wait_time_from(limiter.clock().now()))
    }
}

fn quota(limit: RateLimit) -> Quota {
    let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
    // At most 1,000,000 a second: the period is at least a microsecond.
    Quota::with_period(limit.rate.per / limit.rate.count)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
        .allow_burst(burst)
}

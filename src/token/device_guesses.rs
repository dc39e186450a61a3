//! Wrong user codes at `/oauth2/device_approve`, counted per approving
//! client: after [`LIMIT`] in a [`WINDOW`], the client is refused with 429
//! until the window ends, a right code included. A user code has about 40
//! bits; with few codes live at a time this keeps guessing one hopeless.
//! Only authenticated, configured clients are counted, so the map is
//! bounded by the configuration.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::audit::Audit;
use crate::config::Client;
use crate::telemetry::Metrics;

/// Wrong user codes allowed per approving client and window.
pub const LIMIT: u32 = 10;
/// The counting window.
pub const WINDOW: Duration = Duration::from_secs(60);

pub struct DeviceGuesses {
    windows: Mutex<HashMap<String, (Instant, u32)>>,
    metrics: Arc<Metrics>,
    audit: Arc<Audit>,
}

impl DeviceGuesses {
    pub fn new(metrics: Arc<Metrics>, audit: Arc<Audit>) -> Self {
        DeviceGuesses {
            windows: Mutex::new(HashMap::new()),
            metrics,
            audit,
        }
    }

    fn count(&self, client: &Client) {
        self.metrics
            .rate_limited
            .with_label_values(&["device_guesses", &client.key()])
            .inc();
        self.audit.record(
            "rate_limited",
            serde_json::json!({ "client_id": client.id, "limit": "device_guesses" }),
        );
    }

    /// How long `client` is still refused, if it is. Counted per client
    /// of a tenant: one id in two tenants is two clients.
    pub fn refused(&self, client: &Client) -> Option<Duration> {
        let windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let (started, failures) = *windows.get(&client.key())?;
        let left = WINDOW.saturating_sub(started.elapsed());
        drop(windows);
        if failures < LIMIT || left.is_zero() {
            return None;
        }
        self.count(client);
        Some(left)
    }

    /// Counts a wrong user code of `client`; past the limit (concurrent
    /// attempts), how long it is refused from now.
    pub fn failed(&self, client: &Client) -> Option<Duration> {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let entry = windows.entry(client.key()).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        let (started, failures) = *entry;
        drop(windows);
        if failures <= LIMIT {
            return None;
        }
        self.count(client);
        Some(WINDOW.saturating_sub(started.elapsed()))
    }
}

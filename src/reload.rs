//! Reloading routes, clients and authorities on SIGHUP and when the file
//! changes, without dropping connections: the new file is validated first
//! and swapped in whole; an invalid one is logged and the old configuration
//! keeps serving. Listener addresses and the store take a restart.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use crate::config::{self, LoadMode};
use crate::gateway::GatewayState;
use crate::signing::KeyRing;

/// How often the file is looked at.
const POLL: Duration = Duration::from_secs(1);

/// One generation of the configuration and everything built from it
/// (routes, upstream peers), which every request reads, the gateway's and
/// the token service's alike. A reload swaps it whole, in one store: no
/// request ever sees one generation's clients with another's routes.
pub type Live = Arc<ArcSwap<GatewayState>>;

/// Swaps in new configurations.
pub struct Reloader {
    pub path: PathBuf,
    pub live: Live,
    /// Signing keys: a tenant the new file adds has its keys read before
    /// the file serves.
    pub keys: Arc<KeyRing>,
}

impl Reloader {
    /// Loads, validates and swaps in the file. On failure nothing changes.
    pub async fn reload(&self) -> Result<(), String> {
        let new = config::load(&self.path, LoadMode::Serve).map_err(|e| e.to_string())?;
        let old = self.live.load_full().config.clone();
        if new.listen.proxy != old.listen.proxy
            || new.listen.token_service != old.listen.token_service
            || new.listen.metrics != old.listen.metrics
            || new.listen.max_connections != old.listen.max_connections
            || new.listen.request_head_timeout != old.listen.request_head_timeout
            || new.listen.keepalive_timeout != old.listen.keepalive_timeout
            || new.gateway.dns_servers != old.gateway.dns_servers
            || new.tokens.auth_failures != old.tokens.auth_failures
            || new.store.url != old.store.url
            || new.audit_log != old.audit_log
            || new.tracing != old.tracing
        {
            tracing::warn!(
                "listener addresses and limits, DNS servers, the failed-authentication limit, the audit log, trace export and the store only change on restart; keeping the running ones"
            );
        }
        let new = Arc::new(new);
        let state = GatewayState::build(new.clone(), self.live.load().dns.clone())?;
        self.keys
            .prepare(&new)
            .await
            .map_err(|e| format!("the signing keys of a new tenant cannot be read: {e}"))?;
        let routes = state.route_count();
        self.live.store(Arc::new(state));
        tracing::info!(
            routes,
            clients = new.clients.len(),
            authorities = new.authorities.len(),
            tenants = new.tenants.len(),
            "configuration reloaded"
        );
        Ok(())
    }

    async fn attempt(&self, why: &str) {
        if let Err(e) = self.reload().await {
            tracing::error!(
                trigger = why,
                "configuration reload refused; the previous configuration keeps serving"
            );
            for line in e.lines() {
                tracing::error!("{line}");
            }
        }
    }

    /// Reloads on SIGHUP and on file changes until `stop` turns true.
    pub async fn watch(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGHUP; file changes still reload");
                None
            }
        };
        let mut seen = fingerprint(&self.path);
        let mut every = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                _ = crate::app::stopped(&mut stop) => return,
                Some(_) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    seen = fingerprint(&self.path);
                    self.attempt("SIGHUP").await;
                }
                _ = every.tick() => {
                    let now = fingerprint(&self.path);
                    if now != seen {
                        // Let an editor finish writing.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        seen = fingerprint(&self.path);
                        self.attempt("file change").await;
                    }
                }
            }
        }
    }
}

fn fingerprint(path: &PathBuf) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

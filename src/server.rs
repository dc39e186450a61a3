//! Wiring: opens the store, builds the shared lookup and the token service,
//! binds the listeners and runs until the shutdown signal, then drains
//! in-flight requests for a bounded time.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;

use crate::config::Config;
use crate::lookup::{now, CacheSettings, TokenLookup};
use crate::token::TokenService;

/// How long in-flight requests may take to finish after shutdown starts.
const DRAIN: Duration = Duration::from_secs(5);
/// How often expired tokens are deleted from the store.
const PURGE_EVERY: Duration = Duration::from_secs(600);
/// Expired tokens are kept this long before they are deleted.
const PURGE_AFTER: i64 = 3600;

/// Runs refgate until `shutdown` completes. Blocks the calling thread; keep
/// `main` synchronous (this builds its own runtime).
pub fn serve(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("refgate")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(config, shutdown))
}

async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let store = crate::store::open(&config.store.url, config.store.max_connections)
        .await
        .context("cannot open the store")?;
    let cache = CacheSettings {
        capacity: config.gateway.cache_capacity,
        max_ttl: config.gateway.cache_max_ttl,
        negative_ttl: config.gateway.negative_cache_ttl,
    };
    let lookup = Arc::new(TokenLookup::new(
        store.clone(),
        config.store.data_key.clone(),
        &cache,
    ));
    let http = reqwest::Client::builder()
        .user_agent(concat!("refgate/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .context("cannot build the HTTP client")?;
    let token_addr = config.listen.token_service;
    let config = Arc::new(ArcSwap::from_pointee(config));
    let service = Arc::new(TokenService::new(config.clone(), lookup, http));

    let listener = tokio::net::TcpListener::bind(token_addr)
        .await
        .with_context(|| format!("cannot listen on {token_addr}"))?;
    tracing::info!(address = %listener.local_addr()?, "token service listening");

    let purge_store = store.clone();
    let purger = tokio::spawn(async move {
        let mut every = tokio::time::interval(PURGE_EVERY);
        loop {
            every.tick().await;
            match purge_store.purge_expired(now() - PURGE_AFTER).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(tokens = n, "purged expired tokens"),
                Err(e) => tracing::warn!(error = %e, "purging expired tokens failed"),
            }
        }
    });

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut graceful = stop_rx.clone();
    let app = crate::token::router(service);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = graceful.wait_for(|stop| *stop).await;
        tracing::info!("shutting down: draining in-flight requests");
    });
    let mut stopped = stop_rx;
    let serving = tokio::spawn(async move { server.await });
    let _ = stopped.wait_for(|stop| *stop).await;
    match tokio::time::timeout(DRAIN, serving).await {
        Ok(Ok(Ok(()))) => tracing::info!("stopped"),
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server error during shutdown"),
        Ok(Err(e)) => tracing::warn!(error = %e, "server task failed"),
        Err(_) => tracing::warn!("drain timed out; closing remaining connections"),
    }
    purger.abort();
    Ok(())
}

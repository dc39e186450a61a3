//! Wiring: one process, two faces. A control runtime (tokio) runs the token
//! service, the metrics listener, credential refreshes, reloads and
//! housekeeping; pingora runs the proxy on its own runtime on the main
//! thread. A shutdown signal stops both, draining in-flight requests for a
//! bounded time.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use tokio::sync::watch;

use crate::config::Config;
use crate::connections::{Activity, Admission, Closable, InFlight, Opening};
use crate::dns::Dns;
use crate::gateway::{
    Drain, Gateway, GatewayState, HeadLimits, PhantomTokens, ProxyListener, Refresher, TlsArrivals,
};
use crate::listeners::{Listeners, PreBound};
use crate::lookup::{now, CacheSettings, TokenLookup};
use crate::reload::{Live, Reloader};
use crate::signing::KeyRing;
use crate::telemetry::Metrics;
use crate::token::TokenService;

/// How long in-flight requests may take to finish after shutdown starts.
const DRAIN: Duration = Duration::from_secs(5);
/// How often expired tokens are deleted from the store.
const PURGE_EVERY: Duration = Duration::from_secs(600);
/// Expired tokens are kept this long before they are deleted.
const PURGE_AFTER: i64 = 3600;
/// How often custom data sealed with a previous data key is sealed again
/// with the current one (also once at start).
const RESEAL_EVERY: Duration = Duration::from_secs(3600);
/// Concurrent HTTP/2 streams per token-service connection. Each stream may
/// hold one request body (64 KiB for a form; a mutation's cap), so this
/// bounds what one connection can make the token service buffer: 16 × 64 KiB
/// is 1 MiB.
const H2_STREAMS: u32 = 16;
/// Time a client has to send a complete request head once it began one
/// (the first one on a connection also within `request_head_timeout` of
/// accept).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a proxy HTTP/2 connection may be idle, and how often the token
/// service pings an HTTP/2 client (closing it after a ping goes unanswered
/// for `H2_PING_TIMEOUT`).
const H2_IDLE: Duration = Duration::from_secs(60);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs refgate until `shutdown` completes. Blocks the calling thread: keep
/// `main` synchronous, since pingora and the control runtime are built here.
pub fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // pingora and reqwest both use rustls with ring; one provider for all.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("refgate-control")
        .build()
        .context("cannot start the control runtime")?;
    let (stop_tx, stop_rx) = watch::channel(false);
    // Poll the shutdown signal once before anything listens: a signal
    // handler it installs is then in place before the first request can be
    // answered, so a SIGTERM right after start is a clean stop, not a kill.
    let mut shutdown = Box::pin(shutdown);
    let signalled = control.block_on(async { futures::poll!(shutdown.as_mut()).is_ready() });
    let parts = control.block_on(Parts::open(config))?;

    let Listeners {
        token_service,
        proxy,
        metrics,
        admin,
    } = listeners;
    let token_listener =
        control.block_on(async { tokio_listener(token_service, "token service") })?;
    let app = crate::token::router(parts.tokens.clone());
    let admission = || {
        Admission::new(
            parts.listen.max_connections,
            parts.listen.request_head_timeout,
        )
    };
    let token_task = control.spawn(serve_http(
        token_listener,
        app,
        admission(),
        stop_rx.clone(),
    ));

    if let Some(listener) = admin {
        let listener = control.block_on(async { tokio_listener(listener, "admin API") })?;
        let app = crate::token::admin::router(parts.tokens.clone());
        control.spawn(serve_http(listener, app, admission(), stop_rx.clone()));
    }

    if let Some(listener) = metrics {
        let listener = control.block_on(async { tokio_listener(listener, "metrics") })?;
        let metrics = parts.metrics.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move { metrics.render() }
            }),
        );
        control.spawn(serve_http(listener, app, admission(), stop_rx.clone()));
    }

    control.spawn(purge(parts.tokens.grants.clone(), stop_rx.clone()));
    control.spawn(reseal(parts.lookup.clone(), stop_rx.clone()));
    control.spawn(parts.tokens.keys.clone().keep(stop_rx.clone()));
    if let Some(feed) = parts.lookup.store().subscribe() {
        control.spawn(follow_invalidations(
            feed,
            parts.lookup.clone(),
            stop_rx.clone(),
        ));
    }
    control.spawn(
        Reloader {
            path: parts.live.load().config.source.clone(),
            live: parts.live.clone(),
            keys: parts.tokens.keys.clone(),
        }
        .watch(stop_rx.clone()),
    );
    control.spawn(async move {
        if !signalled {
            shutdown.await;
        }
        let _ = stop_tx.send(true);
    });

    match proxy {
        Some(listener) => run_proxy(&control, &parts, listener, stop_rx.clone())?,
        None => {
            let mut stop = stop_rx.clone();
            control.block_on(async move {
                let _ = stop.wait_for(|s| *s).await;
            });
        }
    }

    control.block_on(async move {
        match tokio::time::timeout(DRAIN, token_task).await {
            Ok(_) => tracing::info!("stopped"),
            Err(_) => tracing::warn!("drain timed out; closing remaining connections"),
        }
    });
    control.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// Hands a bound socket to tokio and logs the address it listens on.
fn tokio_listener(
    listener: std::net::TcpListener,
    what: &str,
) -> anyhow::Result<tokio::net::TcpListener> {
    let address = listener.local_addr().context("listener address")?;
    // A caller's socket may be blocking (std binds them so); tokio needs
    // it non-blocking.
    listener
        .set_nonblocking(true)
        .with_context(|| format!("cannot listen on {address}"))?;
    let listener = tokio::net::TcpListener::from_std(listener)
        .with_context(|| format!("cannot listen on {address}"))?;
    tracing::info!(%address, "{what} listening");
    Ok(listener)
}

/// Everything built at start.
struct Parts {
    listen: crate::config::Listen,
    /// The one generation of configuration every request reads.
    live: Live,
    lookup: Arc<TokenLookup>,
    tokens: Arc<TokenService>,
    refresher: Arc<Refresher>,
    metrics: Arc<Metrics>,
}

impl Parts {
    async fn open(config: Config) -> anyhow::Result<Self> {
        let store = crate::store::open(&config.store.url, config.store.max_connections)
            .await
            .context("cannot open the store")?;
        let store: Arc<dyn crate::store::Store> = if crate::traces::on() {
            Arc::new(crate::traces::Traced(store))
        } else {
            store
        };
        let cache = CacheSettings {
            capacity: config.gateway.cache_capacity,
            max_ttl: config.gateway.cache_max_ttl,
            negative_ttl: config.gateway.negative_cache_ttl,
        };
        let lookup = Arc::new(TokenLookup::new(
            store,
            config.store.data_keys.clone(),
            &cache,
        ));
        crate::lookup::reseal::check_keys(&lookup)
            .await
            .map_err(anyhow::Error::msg)?;
        let dns = Arc::new(Dns::new(
            &config.gateway.dns_servers,
            tokio::runtime::Handle::current(),
        ));
        let http = reqwest::Client::builder()
            .dns_resolver(Arc::new(crate::dns::ForHttpClient(dns.clone())))
            .user_agent(concat!("refgate/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("cannot build the HTTP client")?;
        let listen = config.listen.clone();
        let audit = Arc::new(
            crate::audit::Audit::open(config.audit_log.as_ref())
                .context("cannot open the audit log")?,
        );
        let signing_settings = config.signing.clone();
        let config = Arc::new(config);
        let gateway = GatewayState::build(config, dns).map_err(anyhow::Error::msg)?;
        let live: Live = Arc::new(ArcSwap::from_pointee(gateway));
        let metrics = Arc::new(Metrics::new());
        let keys = Arc::new(KeyRing::new(
            lookup.store().clone(),
            lookup.data_keys().clone(),
            signing_settings,
        ));
        keys.prepare(&live.load().config)
            .await
            .context("cannot read or add signing keys")?;
        let tokens = Arc::new(TokenService::new(
            live.clone(),
            lookup.clone(),
            http.clone(),
            metrics.clone(),
            keys.clone(),
            audit,
        ));
        let refresher = Arc::new(Refresher::new(
            lookup.clone(),
            tokens.clone(),
            http,
            metrics.clone(),
            tokio::runtime::Handle::current(),
        ));
        Ok(Parts {
            listen,
            live,
            lookup,
            tokens,
            refresher,
            metrics,
        })
    }
}

/// Runs pingora on this thread until `stop` turns true.
fn run_proxy(
    control: &tokio::runtime::Runtime,
    parts: &Parts,
    listener: std::net::TcpListener,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("proxy listener address")?;
    // pingora accepts on each of its runtimes; a blocking socket (as std
    // binds them) would stall a runtime in accept.
    listener
        .set_nonblocking(true)
        .context("cannot make the proxy listener non-blocking")?;
    let mut server = Server::new_with_opt_and_conf(None, proxy_server_conf());
    server.bootstrap();
    let drain = Arc::new(Drain::default());
    // `cache_capacity = 0` turns every gateway cache off, the JWTs of
    // phantom routes too.
    let caching = parts.live.load().config.gateway.cache_capacity > 0;
    let phantom = Arc::new(PhantomTokens::new(parts.tokens.keys.clone(), caching));
    let proxy = |h2c: bool| {
        let gateway = Gateway::new(
            parts.live.clone(),
            parts.lookup.clone(),
            parts.refresher.clone(),
            parts.metrics.clone(),
            phantom.clone(),
            drain.clone(),
        );
        let mut proxy = pingora::proxy::http_proxy(&server.configuration, gateway);
        let mut options = proxy_server_options();
        options.h2c = h2c;
        proxy.server_options = Some(options);
        proxy
    };
    let admission = Admission::new(
        parts.listen.max_connections,
        parts.listen.request_head_timeout,
    );
    let limits = HeadLimits {
        keepalive: parts.listen.keepalive_timeout,
        head: parts.listen.request_head_timeout,
    };
    let tls = parts.live.load().config.listen.tls.clone();
    let arrivals = tls
        .is_some()
        .then(|| TlsArrivals::new(admission.clone(), parts.listen.request_head_timeout));
    let mut service = pingora::services::listening::Service::new(
        "gateway".to_string(),
        ProxyListener::new(
            proxy(false),
            proxy(true),
            admission,
            limits,
            arrivals.clone(),
        ),
    );
    if let Some(arrivals) = &arrivals {
        service
            .endpoints()
            .set_pre_tls_callback(arrivals.callback());
    }
    match tls {
        Some(tls) => {
            let cert = tls.cert.to_string_lossy().to_string();
            let key = tls.key.to_string_lossy().to_string();
            let mut settings = pingora::listeners::tls::TlsSettings::intermediate(&cert, &key)
                .map_err(|e| anyhow::anyhow!("cannot load the proxy's TLS certificate: {e}"))?;
            settings.enable_h2();
            service.add_tls_with_settings(&addr.to_string(), None, settings);
        }
        None => service.add_tcp(&addr.to_string()),
    }
    server.add_service(PreBound::new(service, listener));
    control.spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            tracing::error!(address = %addr, "the proxy is not listening");
        }
    });
    tracing::info!(address = %addr, "proxy listening");
    server.run(RunArgs {
        shutdown_signal: Box::new(StopWatch { stop, drain }),
    });
    Ok(())
}

/// How many threads the gateway proxies on: one per available CPU.
pub fn proxy_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// pingora's settings for the proxy (also used by the benchmark's bare
/// pingora proxy, so that it measures pingora as refgate runs it).
///
/// One thread per available CPU, each a single-threaded runtime: without
/// work stealing a proxied request costs about a tenth less CPU (measured
/// on one core), and a connection stays on the thread that accepted it.
pub fn proxy_server_conf() -> ServerConf {
    ServerConf {
        threads: proxy_threads(),
        work_stealing: false,
        // Idle upstream connections are checked when taken out for reuse,
        // not watched by a task each (vendor/README.md).
        upstream_keepalive_idle_watch: false,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(DRAIN.as_secs()),
        ..ServerConf::default()
    }
}

/// The proxy listener's HTTP options: HTTP/1.1 and h2c on one port (the
/// gateway's `ProxyListener` tells them apart before pingora sees them).
/// CONNECT is let through to the gateway's own filter, which refuses it
/// with the JSON error every other refusal has (pingora's own refusal has
/// an empty body).
pub fn proxy_server_options() -> pingora::apps::HttpServerOptions {
    let mut options = pingora::apps::HttpServerOptions::default();
    options.h2c = true;
    options.allow_connect_method_proxying = true;
    options.h2_idle_timeout = Some(H2_IDLE);
    options
}

/// Tells pingora to stop once the shared stop flag turns true and the
/// requests in flight have finished (or `DRAIN` has passed). pingora cancels
/// whatever still runs when it returns, so the waiting happens here.
struct StopWatch {
    stop: watch::Receiver<bool>,
    drain: Arc<Drain>,
}

#[async_trait]
impl ShutdownSignalWatch for StopWatch {
    async fn recv(&self) -> ShutdownSignal {
        let mut stop = self.stop.clone();
        stopped(&mut stop).await;
        self.drain.begin();
        let started = std::time::Instant::now();
        while self.drain.in_flight() > 0 && started.elapsed() < DRAIN {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if self.drain.in_flight() > 0 {
            tracing::warn!(
                requests = self.drain.in_flight(),
                "drain timed out; cutting off requests in flight"
            );
        }
        ShutdownSignal::GracefulTerminate
    }
}

/// Completes when the stop flag turns true.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

/// Serves an axum app until `stop` turns true, then drains. Connections
/// are bounded in number, and a client gets a bounded time to send its
/// request head (no slow-loris).
async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    admission: Arc<Admission>,
    mut stop: watch::Receiver<bool>,
) {
    use hyper::body::Incoming;
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(64 * 1024)
        .max_concurrent_streams(H2_STREAMS)
        .keep_alive_interval(Some(H2_IDLE))
        .keep_alive_timeout(H2_PING_TIMEOUT);
    loop {
        let accepted = tokio::select! {
            _ = stopped(&mut stop) => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(mut ticket) = admission.admit() else {
            tracing::warn!("every connection is busy; refusing one");
            continue;
        };
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            use std::os::fd::AsFd;
            if matches!(ticket.first_request(stream.as_fd()).await, Opening::Close) {
                return;
            }
            // Between requests the connection is idle, and the first to
            // be closed when the listener is full.
            let activity = Activity::new(ticket);
            let counted = activity.clone();
            let service = tower::service_fn(move |request: http::Request<Incoming>| {
                let in_flight = counted.begin();
                let answer =
                    tower::ServiceExt::oneshot(app.clone(), request.map(axum::body::Body::new));
                async move {
                    let response = answer.await?;
                    Ok::<_, std::convert::Infallible>(
                        response.map(|body| axum::body::Body::new(Counted { body, in_flight })),
                    )
                }
            });
            let stream = Closable::new(stream, activity);
            let connection = builder
                .serve_connection_with_upgrades(
                    TokioIo::new(stream),
                    TowerToHyperService::new(service),
                )
                .into_owned();
            let _ = watcher.watch(connection).await;
        });
    }
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timed out; closing remaining connections");
    }
}

/// A response body that counts its request as in flight until it is sent
/// (or dropped).
struct Counted {
    body: axum::body::Body,
    in_flight: InFlight,
}

impl http_body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let _ = &self.in_flight;
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Applies other instances' changes to this instance's caches.
async fn follow_invalidations(
    mut feed: tokio::sync::broadcast::Receiver<crate::store::Invalidation>,
    lookup: Arc<TokenLookup>,
    mut stop: watch::Receiver<bool>,
) {
    use crate::store::Invalidation;
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let next = tokio::select! {
            _ = stopped(&mut stop) => return,
            next = feed.recv() => next,
        };
        match next {
            Ok(Invalidation::Grant(id)) => lookup.invalidate_grant(&id).await,
            Ok(Invalidation::Token(hash)) => lookup.invalidate_token(&hash).await,
            Ok(Invalidation::All) | Err(RecvError::Lagged(_)) => lookup.invalidate_all(),
            Err(RecvError::Closed) => return,
        }
    }
}

/// Deletes long-expired tokens now and then.
async fn purge(grants: Arc<crate::core::Grants>, mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(PURGE_EVERY);
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = every.tick() => match grants.purge_expired(now() - PURGE_AFTER).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(tokens = n, "purged expired tokens"),
                Err(e) => tracing::warn!(error = %e, "purging expired tokens failed"),
            },
        }
    }
}

/// Seals custom data again with the current data key, at start and then
/// every [`RESEAL_EVERY`].
async fn reseal(lookup: Arc<TokenLookup>, mut stop: watch::Receiver<bool>) {
    let holder = crate::crypto::Random::default().grant_id();
    let mut every = tokio::time::interval(RESEAL_EVERY);
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = every.tick() => {
                if let Err(e) = crate::lookup::reseal::reseal_stale(&lookup, &holder).await {
                    tracing::warn!(error = %e, "sealing custom data again failed; retrying later");
                }
            }
        }
    }
}

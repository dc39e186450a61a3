//! The pingora `ProxyHttp` implementation. Each hook is thin and calls a
//! named function: admission in `admit`, refresh in `refresh`, responses in
//! `errors`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType};

use super::admit::credential_name;
use super::errors::{self, GatewayError};
use super::phantom::PhantomTokens;
use super::refresh::{Need, Refresher};
use super::routing::RouteEntry;
use super::watched::Watched;
use super::GatewayState;
use crate::credential::Credential;
use crate::lookup::{Grant, TokenLookup};
use crate::telemetry::{status_label, Metrics};

/// The proxy service.
pub struct Gateway {
    pub(super) state: Arc<ArcSwap<GatewayState>>,
    pub(super) lookup: Arc<TokenLookup>,
    pub(super) refresher: Arc<Refresher>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) phantom: Arc<PhantomTokens>,
    ids: RequestIds,
    drain: Arc<Drain>,
}

/// Requests in flight, so that shutdown can wait for them instead of
/// cutting them off; and whether shutdown has begun.
#[derive(Default)]
pub struct Drain {
    in_flight: AtomicUsize,
    draining: AtomicBool,
}

impl Drain {
    /// Starts draining: connections are no longer kept alive.
    pub fn begin(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Counts one request in flight for as long as it lives.
pub struct InFlight(Arc<Drain>);

impl InFlight {
    fn new(drain: &Arc<Drain>) -> Self {
        drain.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(drain.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Per-request state shared by the hooks.
#[derive(Default)]
pub struct RequestCtx {
    pub(super) request_id: String,
    pub(super) route: Option<Arc<RouteEntry>>,
    pub(super) state: Option<Arc<GatewayState>>,
    /// The inbound token's grant, once admitted.
    pub(super) grant: Option<Arc<Grant>>,
    pub(super) credential: Option<Arc<Credential>>,
    /// The `Authorization` of a phantom-token route: a JWT refgate signed.
    pub(super) phantom: Option<http::HeaderValue>,
    started: Option<Instant>,
    upstream_started: Option<Instant>,
    /// A refresh already happened for this request (no second one).
    refreshed: bool,
    /// The next proxy error is our own request to replay after a 401.
    replay: bool,
    /// Held for the request's lifetime (shutdown waits for it).
    _in_flight: Option<InFlight>,
    /// Refgate answers instead of passing on the upstream's response.
    answer_instead: Option<GatewayError>,
    /// Status of a response refgate wrote itself.
    local_status: u16,
    /// The request target the upstream gets (origin-form, as routed).
    pub(super) upstream_target: String,
    /// The host the client addressed (its `Host`, or the URI's authority).
    pub(super) client_host: Option<String>,
    /// The request's trace span (tracing on only).
    span: Option<tracing::Span>,
}

impl Gateway {
    pub fn new(
        state: Arc<ArcSwap<GatewayState>>,
        lookup: Arc<TokenLookup>,
        refresher: Arc<Refresher>,
        metrics: Arc<Metrics>,
        phantom: Arc<PhantomTokens>,
        drain: Arc<Drain>,
    ) -> Self {
        Gateway {
            state,
            lookup,
            refresher,
            metrics,
            phantom,
            ids: RequestIds::new(),
            drain,
        }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            _in_flight: Some(InFlight::new(&self.drain)),
            ..RequestCtx::default()
        }
    }

    fn init_downstream_modules(&self, _: &mut pingora::modules::http::HttpModules) {
        // None: refgate never compresses responses, and pingora's default,
        // a disabled compression module, still runs on every request.
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if let Some(watched) = Watched::of(session) {
            let keepalive = watched.request_began();
            // pingora times each read of the next head by its keep-alive
            // timeout; it must not cut before refgate's own does.
            if session.get_keepalive().is_some() {
                session.set_keepalive(Some(keepalive));
            }
        }
        // Requests a client pipelines (sends before reading the answers)
        // are served one after another, answers in order (RFC 9112
        // §9.3.2), rather than the connection closing after the first.
        session.as_downstream_mut().set_pipelining_enabled(true);
        ctx.started = Some(Instant::now());
        ctx.request_id = self.ids.for_request(session.req_header());
        let admitted = if crate::traces::on() {
            self.admit_traced(session, ctx).await
        } else {
            super::admit::admit(self, session, ctx).await
        };
        match admitted {
            Ok(()) => {
                // A credential obtained for this very request is not
                // refreshed again when the upstream rejects it.
                ctx.refreshed = ctx.credential.as_ref().is_some_and(|c| c.just_obtained);
                Ok(false)
            }
            Err(error) => {
                ctx.local_status = error.status();
                if matches!(error, GatewayError::StoreUnavailable) {
                    self.metrics.store_unavailable.inc();
                }
                if session.req_header().method == http::Method::CONNECT {
                    // What follows a CONNECT is not HTTP.
                    session.set_keepalive(None);
                }
                let hint = errors::connect_hint(
                    &error,
                    &self.state.load().config,
                    ctx.route.as_ref().map_or("", |e| &e.route.tenant),
                );
                errors::respond(session, &error, &ctx.request_id, hint.as_ref()).await;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(&self, _: &mut Session, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        let Some(entry) = &ctx.route else {
            return Error::e_explain(ErrorType::InternalError, "no route selected");
        };
        if entry.route.upstream.addr.is_some() {
            // A literal address: no resolver involved.
            return Ok(Box::new(entry.peer.clone()));
        }
        // One resolver for every configuration (kept across reloads).
        let dns = self.state.load().dns.clone();
        match super::upstream::resolved(&entry.route, &entry.peer, &dns).await {
            Ok(peer) => Ok(Box::new(peer)),
            Err(unresolved) => {
                // An upstream whose name does not resolve (yet) is an
                // unavailable upstream: 502, and asked again next time.
                let mut e = Error::explain(ErrorType::ConnectNoRoute, unresolved.to_string());
                e.set_retry(false);
                Err(e.into_up())
            }
        }
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        prepare_upstream_request(session, upstream, ctx);
        if let Some(span) = &ctx.span {
            // The upstream's parent is refgate's span, not the client's.
            for name in crate::traces::PROPAGATED {
                upstream.remove_header(name);
            }
            for (name, value) in crate::traces::headers_for(span) {
                let _ = upstream.insert_header(name, value);
            }
        }
        ctx.upstream_started = Some(Instant::now());
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let (Some(entry), Some(started)) = (&ctx.route, ctx.upstream_started) {
            entry
                .metrics(&self.metrics)
                .upstream_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        if response.status != 401 {
            return Ok(());
        }
        let span = ctx.span.clone();
        let after = self.refresh_after_rejection(session, ctx);
        let after = match span {
            Some(span) => tracing::Instrument::instrument(after, span).await,
            None => after.await,
        };
        match after {
            AfterRejection::PassOn => Ok(()),
            AfterRejection::Replay => {
                let mut e = Error::explain(
                    ErrorType::HTTPStatus(401),
                    "the upstream rejected the credential; replaying once with a refreshed one",
                );
                e.set_retry(true);
                Err(e)
            }
            AfterRejection::Answer(error) => {
                let mut e = Error::explain(
                    ErrorType::HTTPStatus(error.status()),
                    "the upstream rejected the credential and it cannot be refreshed",
                );
                e.set_retry(false);
                ctx.answer_instead = Some(error);
                Err(e)
            }
        }
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let _ = response.insert_parsed_header(
            REQUEST_ID_NAME,
            REQUEST_ID_HEADER,
            ctx.request_id.as_str(),
        );
        if self.drain.draining() {
            // Shutting down: let clients reconnect elsewhere.
            session.set_keepalive(None);
        }
        Ok(())
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer {peer}"));
        if std::mem::take(&mut ctx.replay) {
            e.set_retry(true);
        } else if !session.req_header().method.is_idempotent()
            || session.as_ref().retry_buffer_truncated()
        {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        if let Some(error) = ctx.answer_instead.clone() {
            let hint = errors::connect_hint(
                &error,
                &self.state.load().config,
                ctx.route.as_ref().map_or("", |e| &e.route.tenant),
            );
            errors::respond(session, &error, &ctx.request_id, hint.as_ref()).await;
            ctx.local_status = error.status();
            return FailToProxy {
                error_code: error.status(),
                can_reuse_downstream: false,
            };
        }
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                _ => 502,
            },
        };
        // refgate's own JSON answer where it has one, never pingora's empty
        // page; pingora logs every one of these with `request_summary`.
        let refusal = match code {
            502 => {
                tracing::warn!(request_id = %ctx.request_id, error = %e, "upstream unavailable");
                Some(GatewayError::UpstreamUnavailable)
            }
            // A request pingora refused to pass on as sent (a protected
            // header named in `Connection`, say).
            400 => Some(GatewayError::BadRequest(
                "the request cannot be passed on as sent (its Connection header or framing)",
            )),
            _ => None,
        };
        match refusal {
            Some(error) => errors::respond(session, &error, &ctx.request_id, None).await,
            None if code > 0 => {
                let _ = session.respond_error(code).await;
            }
            None => {}
        }
        ctx.local_status = code;
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn request_summary(&self, session: &Session, ctx: &RequestCtx) -> String {
        // What pingora's own error lines say about a request. Never the
        // query (it may hold a token or other secret) nor the client's
        // headers: the route and the request id find the rest.
        let request = session.req_header();
        let route = ctx.route.as_ref().map_or("-", |e| e.route.name.as_str());
        format!(
            "{} {}, route: {route}, request_id: {}",
            request.method,
            request.uri.path(),
            ctx.request_id
        )
    }

    fn suppress_error_log(&self, _: &Session, ctx: &RequestCtx, _: &Error) -> bool {
        // Our own answer after an upstream 401, logged where it is decided.
        ctx.answer_instead.is_some()
    }

    fn suppress_proxy_warn_log(
        &self,
        _: &Session,
        _: &RequestCtx,
        e: &Error,
        context: ProxyWarnLogContext,
    ) -> bool {
        // The replay after an upstream 401 is no failure.
        matches!(context, ProxyWarnLogContext::UpstreamRetry)
            && matches!(e.etype(), ErrorType::HTTPStatus(401))
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        // pingora closes, rather than reuses, a connection whose request
        // body was not read to its end: what is left is never taken for
        // the next head.
        if let Some(watched) = Watched::of(session) {
            watched.request_ended();
        }
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(ctx.local_status);
        let route = ctx.route.as_ref().map_or("-", |e| e.route.name.as_str());
        if let Some(span) = &ctx.span {
            span.record("http.response.status_code", status);
        }
        match &ctx.route {
            Some(entry) => entry.metrics(&self.metrics).count_request(status),
            None => self
                .metrics
                .requests
                .with_label_values(&[route, status_label(status)])
                .inc(),
        }
        if tracing::enabled!(target: "refgate::access", tracing::Level::INFO) {
            let request = session.req_header();
            tracing::info!(
                target: "refgate::access",
                request_id = %ctx.request_id,
                method = %request.method,
                path = %request.uri.path(),
                route,
                status,
                micros = ctx.started.map_or(0, |s| s.elapsed().as_micros() as u64),
            );
        }
    }
}

impl Gateway {
    /// Admission inside the request's span (child of the caller's trace);
    /// the span then names the route, client and grant.
    async fn admit_traced(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<(), GatewayError> {
        use tracing::Instrument;
        let request = session.req_header();
        let span = crate::traces::gateway_request(&request.method, &request.headers);
        let admission = span.in_scope(crate::traces::admission);
        let admitted = super::admit::admit(self, session, ctx)
            .instrument(admission)
            .await;
        if let Some(entry) = &ctx.route {
            span.record("route", entry.route.name.as_str());
        }
        if let Some(grant) = &ctx.grant {
            span.record("client_id", &*grant.client_id);
            span.record("grant_id", &*grant.id);
        }
        ctx.span = Some(span);
        admitted
    }
}

/// What to do about an upstream 401.
enum AfterRejection {
    /// Pass the upstream's 401 on to the client.
    PassOn,
    /// Send the request again with the refreshed credential in the context.
    Replay,
    /// Answer the client with this instead.
    Answer(GatewayError),
}

impl Gateway {
    /// After an upstream 401 to a credential that was not just refreshed:
    /// refresh it once, and replay the request if its body (if any) is
    /// still buffered. A body too large to replay still gets the
    /// credential refreshed, so that the client's own retry succeeds.
    async fn refresh_after_rejection(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
    ) -> AfterRejection {
        if ctx.refreshed {
            return AfterRejection::PassOn;
        }
        let (Some(state), Some(grant), Some(name), Some(sent)) = (
            ctx.state.clone(),
            ctx.grant.clone(),
            ctx.route.as_ref().and_then(|e| credential_name(&e.route)),
            ctx.credential.clone(),
        ) else {
            return AfterRejection::PassOn;
        };
        ctx.refreshed = true;
        let need = Need::Rejected { sent: sent.clone() };
        let refreshed = self
            .refresher
            .refresh(state, &grant, name, need, &ctx.request_id)
            .await;
        match refreshed {
            Ok(fresh) if !fresh.same_header(&sent) => {
                if session.as_ref().retry_buffer_truncated() {
                    tracing::info!(
                        request_id = %ctx.request_id,
                        credential = name,
                        "the upstream rejected the credential; refreshed it, but the body is too large to replay"
                    );
                    return AfterRejection::PassOn;
                }
                tracing::debug!(
                    request_id = %ctx.request_id,
                    credential = name,
                    "the upstream rejected the credential; replaying with a refreshed one"
                );
                ctx.credential = Some(fresh);
                ctx.replay = true;
                AfterRejection::Replay
            }
            Ok(_) => AfterRejection::PassOn,
            Err(e @ GatewayError::ReauthRequired(_)) => {
                tracing::info!(request_id = %ctx.request_id, error = %e, "the upstream rejected the credential");
                AfterRejection::Answer(e)
            }
            Err(e) => {
                tracing::info!(request_id = %ctx.request_id, error = %e, "no refresh after an upstream 401");
                AfterRejection::PassOn
            }
        }
    }
}

/// Rewrites the request for the upstream: target, `Host`, forwarding
/// headers, credential, request id.
fn prepare_upstream_request(session: &Session, upstream: &mut RequestHeader, ctx: &RequestCtx) {
    if let Some(entry) = &ctx.route {
        if let Ok(target) = ctx.upstream_target.parse::<http::Uri>() {
            upstream.set_uri(target);
        }
        let host = if entry.route.preserve_host {
            ctx.client_host
                .as_deref()
                .and_then(|h| http::HeaderValue::from_str(h).ok())
        } else {
            None
        };
        replace_header(
            upstream,
            http::header::HOST,
            "Host",
            host.unwrap_or_else(|| entry.upstream_host.clone()),
        );
    }
    set_forwarding_headers(session, upstream, ctx);
    match ctx
        .phantom
        .clone()
        .or_else(|| ctx.credential.as_ref().and_then(|c| c.header_value()))
    {
        Some(header) => replace_header(
            upstream,
            http::header::AUTHORIZATION,
            AUTHORIZATION_HEADER,
            header,
        ),
        None => strip_reference_token(upstream),
    }
    if let Ok(id) = http::HeaderValue::from_str(&ctx.request_id) {
        replace_header(upstream, REQUEST_ID_NAME, REQUEST_ID_HEADER, id);
    }
}

/// Sets the header `name` to `value`. When the request carries exactly one
/// such header (a client's `Host`, a bearer token's `Authorization`: the
/// usual case) its value is replaced where it is (pingora's
/// `replace_single_header_value`, refgate's patch: one hashed lookup, the
/// name as the client spelled it); otherwise inserted, which updates both
/// of pingora's maps (values, and names with their case) and drops
/// repeats, the name sent as `spelled` (see [`REQUEST_ID_HEADER`]).
fn replace_header(
    upstream: &mut RequestHeader,
    name: http::HeaderName,
    spelled: &'static str,
    value: http::HeaderValue,
) {
    if let Err(value) = upstream.replace_single_header_value(name.clone(), value) {
        let _ = upstream.insert_parsed_header(name, spelled, value);
    }
}

/// Headers an upstream may trust to describe the client. Whatever the
/// client sent under these names is dropped, so that it cannot claim
/// another address or host.
static CLIENT_CLAIMS: [&str; 6] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-real-ip",
];

/// `X-Forwarded-For` (the client's address as refgate saw it, never a
/// chain the client made up), `X-Forwarded-Proto` and `X-Forwarded-Host`.
fn set_forwarding_headers(session: &Session, upstream: &mut RequestHeader, ctx: &RequestCtx) {
    // One look at the names sent instead of a removal (two hashed
    // lookups) per name: most requests carry none of them.
    if upstream
        .headers
        .keys()
        .any(|name| CLIENT_CLAIMS.contains(&name.as_str()))
    {
        for name in CLIENT_CLAIMS {
            upstream.remove_header(name);
        }
    }
    if let Some(ip) = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
    {
        let _ =
            upstream.insert_parsed_header(X_FORWARDED_FOR, "x-forwarded-for", super::text::ip(ip));
    }
    let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    let _ = upstream.insert_parsed_header(
        X_FORWARDED_PROTO,
        "x-forwarded-proto",
        if tls { HTTPS } else { HTTP },
    );
    if let Some(host) = ctx
        .client_host
        .as_deref()
        .and_then(|h| http::HeaderValue::from_str(h).ok())
    {
        let _ = upstream.insert_parsed_header(X_FORWARDED_HOST, "x-forwarded-host", host);
    }
}

/// Headers refgate sets: each name parsed once, here (a name made
/// `from_static` allocates nothing), and spelled for the wire as a
/// `&'static str`, which pingora keeps as it is. pingora's
/// `insert_parsed_header` (refgate's patch) takes both; its
/// `insert_header` would parse the name again and allocate a copy of each
/// name the `http` crate does not know.
const REQUEST_ID_HEADER: &str = "x-request-id";
const REQUEST_ID_NAME: http::HeaderName = http::HeaderName::from_static(REQUEST_ID_HEADER);
const X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: http::HeaderName = http::HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: http::HeaderName = http::HeaderName::from_static("x-forwarded-host");
const AUTHORIZATION_HEADER: &str = "authorization";

/// `X-Forwarded-Proto`'s two values, static: no copy and no check per
/// request.
const HTTP: http::HeaderValue = http::HeaderValue::from_static("http");
const HTTPS: http::HeaderValue = http::HeaderValue::from_static("https");

/// On public routes a refgate token must not leak upstream; any other
/// Authorization passes through.
fn strip_reference_token(upstream: &mut RequestHeader) {
    let is_reference = upstream
        .headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .any(|v| {
            // Any scheme spelling and any whitespace: if a refgate token is
            // in there, the header goes.
            let bytes = v.as_bytes();
            bytes.windows(5).any(|w| w == b"rgat_" || w == b"rgrt_")
        });
    if is_reference {
        upstream.remove_header(&http::header::AUTHORIZATION);
    }
}

/// Request ids: the client's `x-request-id` when it is sane, else a
/// process-unique one.
pub(super) struct RequestIds {
    prefix: String,
    counter: AtomicU64,
}

impl RequestIds {
    pub(super) fn new() -> Self {
        let random = crate::crypto::Random::default().grant_id();
        RequestIds {
            prefix: random[..8].to_string(),
            counter: AtomicU64::new(0),
        }
    }

    pub(super) fn for_request(&self, request: &RequestHeader) -> String {
        let offered = request
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok());
        if let Some(given) = crate::audit::sane_request_id(offered) {
            return given.to_string();
        }
        self.fresh()
    }

    /// A process-unique id, for a request whose head could not be read.
    pub(super) fn fresh(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        super::text::numbered(&self.prefix, n)
    }
}

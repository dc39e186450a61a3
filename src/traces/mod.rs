//! OpenTelemetry tracing (`[telemetry] otlp_endpoint`): spans for the
//! gateway's requests (admission, token lookup, credential refresh and
//! exchange, the call to an authority), the token service's endpoints and
//! every store call, exported as OTLP/HTTP protobuf by a batch processor
//! on a thread of its own; W3C `traceparent`/`tracestate` taken from
//! callers and sent to upstreams and authorities.
//!
//! With tracing off no span is made (each helper here checks one flag and
//! returns a disabled span), nothing is extracted or injected, and the
//! store is not wrapped. The spans have the target [`TARGET`], which only
//! the export layer sees: the log output is the same either way, and
//! `RUST_LOG` does not turn them off.
//!
//! Attributes are identifiers only: route, credential and authority names
//! from the configuration, client ids, grant ids, hit or miss, status
//! codes. Never a token, secret, custom value or raw header value.

mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
use tracing::field::Empty;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::TracingSettings;

pub use store::Traced;

/// The target of refgate's trace spans.
pub const TARGET: &str = "refgate::traces";

static ON: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (set once at start).
#[inline]
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// How long one export request may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long exiting waits for the last export: with the 5 s drain, within
/// the unit's 15 s stop timeout even when the collector does not answer.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(3);

/// The running export: a tracer provider whose batch processor posts to
/// the OTLP endpoint from its own thread.
pub struct Export {
    provider: SdkTracerProvider,
}

impl Export {
    /// Builds the exporter. Call it outside any async runtime (the HTTP
    /// client of the export thread is a blocking one).
    pub fn start(settings: &TracingSettings) -> anyhow::Result<Self> {
        use opentelemetry_otlp::{Protocol, WithExportConfig};
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(settings.traces_url.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .context("cannot set up the OTLP trace exporter")?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(settings.service_name.clone())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        ON.store(true, Ordering::Relaxed);
        Ok(Export { provider })
    }

    /// The tracer the export layer records spans with.
    pub fn tracer(&self) -> Tracer {
        self.provider.tracer("refgate")
    }

    /// Exports what is still queued (waiting at most [`FLUSH_AT_EXIT`]) and
    /// stops the export thread.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown_with_timeout(FLUSH_AT_EXIT) {
            tracing::warn!(error = %e, "exporting the last spans failed");
        }
    }
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct Collected(HashMap<String, String>);

impl Injector for Collected {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
}

/// The W3C headers refgate reads and writes.
pub const PROPAGATED: [&str; 2] = ["traceparent", "tracestate"];

/// Makes `span` the child of the caller's trace (W3C headers). A missing
/// or malformed `traceparent` leaves it a new trace's root.
fn continue_trace(span: &Span, headers: &http::HeaderMap) {
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// The W3C headers naming `span` as the parent of the next hop.
pub fn headers_for(span: &Span) -> Vec<(&'static str, String)> {
    if !on() {
        return Vec::new();
    }
    let mut collected = Collected(HashMap::new());
    TraceContextPropagator::new().inject_context(&span.context(), &mut collected);
    PROPAGATED
        .iter()
        .filter_map(|name| collected.0.remove(*name).map(|v| (*name, v)))
        .collect()
}

/// The id of the trace the current span belongs to, when tracing is on.
pub fn current_trace_id() -> Option<String> {
    if !on() {
        return None;
    }
    let context = Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// Notes the identifiers of an audit line (`client_id`, `grant_id`) on
/// the current span, if it has those attributes.
pub fn note_ids(line: &serde_json::Map<String, serde_json::Value>) {
    if !on() {
        return;
    }
    let span = Span::current();
    for key in ["client_id", "grant_id"] {
        if let Some(value) = line.get(key).and_then(|v| v.as_str()) {
            span.record(key, value);
        }
    }
}

/// A request method as an attribute: the standard ones by name, anything
/// else (a client's own token) as `_OTHER`.
fn method_name(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

/// The span of one gateway request, child of the caller's trace.
pub fn gateway_request(method: &http::Method, headers: &http::HeaderMap) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "gateway request",
        otel.kind = "server",
        http.request.method = method_name(method),
        route = Empty,
        client_id = Empty,
        grant_id = Empty,
        http.response.status_code = Empty,
    );
    continue_trace(&span, headers);
    span
}

/// Admission of a gateway request: route, token, scopes, credential.
pub fn admission() -> Span {
    if !on() {
        return Span::none();
    }
    tracing::info_span!(target: TARGET, "admission")
}

/// A token lookup; `cache` is recorded as `hit` or `miss`.
pub fn token_lookup() -> Span {
    if !on() {
        return Span::none();
    }
    tracing::info_span!(target: TARGET, "token lookup", cache = Empty)
}

/// A downstream credential refresh (including the wait for one).
pub fn refresh(credential: &str) -> Span {
    if !on() {
        return Span::none();
    }
    tracing::info_span!(target: TARGET, "credential refresh", credential)
}

/// A transparent exchange for an exchange route.
pub fn exchange(route: &str) -> Span {
    if !on() {
        return Span::none();
    }
    tracing::info_span!(target: TARGET, "credential exchange", route)
}

/// A call to an authority's token endpoint.
pub fn authority_call(authority: &str) -> Span {
    if !on() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "authority token request",
        otel.kind = "client",
        authority,
        http.response.status_code = Empty,
    )
}

/// A store call.
pub fn store_call(operation: &'static str) -> Span {
    if !on() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "store",
        otel.name = operation,
        db.operation.name = operation,
    )
}

/// Adds the token service's per-endpoint spans to `routes` (when tracing
/// is on): one span per request, named after its endpoint, child of the
/// caller's trace.
pub fn endpoint_spans<S: Clone + Send + Sync + 'static>(
    routes: axum::Router<S>,
) -> axum::Router<S> {
    if !on() {
        return routes;
    }
    routes.route_layer(axum::middleware::from_fn(endpoint_span))
}

async fn endpoint_span(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let endpoint = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let method = method_name(request.method());
    let span = tracing::info_span!(
        target: TARGET,
        "token service request",
        otel.name = %format!("{method} {endpoint}"),
        otel.kind = "server",
        http.request.method = method,
        endpoint = %endpoint,
        client_id = Empty,
        grant_id = Empty,
        http.response.status_code = Empty,
    );
    continue_trace(&span, request.headers());
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_tracing_off_no_span_is_made() {
        assert!(!on());
        for span in [
            admission(),
            token_lookup(),
            refresh("photos"),
            exchange("reports"),
            authority_call("photos-as"),
            store_call("find_token"),
        ] {
            assert!(span.is_disabled());
        }
        assert!(headers_for(&token_lookup()).is_empty());
    }

    #[test]
    fn a_malformed_traceparent_starts_a_new_trace() {
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n-x",
        ] {
            let mut headers = http::HeaderMap::new();
            if let Ok(v) = http::HeaderValue::from_str(bad) {
                headers.insert("traceparent", v);
            }
            let parent = TraceContextPropagator::new().extract(&Headers(&headers));
            assert!(!parent.span().span_context().is_valid(), "{bad:?}");
        }
    }

    #[test]
    fn other_methods_are_not_attributes() {
        let custom = http::Method::from_bytes(b"SECRETVERB").unwrap();
        assert_eq!(method_name(&custom), "_OTHER");
        assert_eq!(method_name(&http::Method::POST), "POST");
    }
}

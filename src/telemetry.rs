//! Logging through `tracing` (human-readable or JSON lines on stderr,
//! filtered by `RUST_LOG`, default `info`) and the gateway's Prometheus
//! metrics.

use std::fmt;

use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. Safe to call once per process. With a
/// `tracer`, refgate's trace spans ([`crate::traces::TARGET`]) go to it;
/// the log lines never show them.
pub fn init(format: LogFormat, tracer: Option<opentelemetry_sdk::trace::Tracer>) {
    let filter = default_filter();
    let most_verbose = filter.max_level_hint();
    let subscriber = subscriber(format, filter, tracer, std::io::stderr);
    if let Err(e) = subscriber.try_init() {
        eprintln!("logging was already initialised: {e}");
        return;
    }
    if let Some(level) = most_verbose {
        set_log_max_level(level);
    }
}

/// pingora logs through the `log` crate, at `debug` and `trace` some
/// twenty times a request; the bridge into `tracing` lets every record
/// through to the subscriber, which then drops it. With `log`'s own level
/// at the filter's most verbose, a record the filter would drop costs one
/// comparison in the `log!` macro instead.
fn set_log_max_level(level: tracing::level_filters::LevelFilter) {
    use tracing::level_filters::LevelFilter;
    let level = match level {
        LevelFilter::OFF => log::LevelFilter::Off,
        LevelFilter::ERROR => log::LevelFilter::Error,
        LevelFilter::WARN => log::LevelFilter::Warn,
        LevelFilter::INFO => log::LevelFilter::Info,
        LevelFilter::DEBUG => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    log::set_max_level(level);
}

/// `RUST_LOG`, else refgate's default filter.
fn default_filter() -> EnvFilter {
    // Per-request access lines (target `refgate::access`) are off unless
    // RUST_LOG asks for them: the hot path does no logging by default.
    EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,refgate::access=off,pingora_core=warn,pingora_proxy=warn,sqlx=warn")
    })
}

type Boxed = Box<dyn Subscriber + Send + Sync>;

/// The log layer (filtered by `filter`, trace spans left out), pingora's
/// restrictions, and the export layer when there is a tracer.
fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    tracer: Option<opentelemetry_sdk::trace::Tracer>,
    writer: W,
) -> Boxed
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::filter::{filter_fn, FilterExt, Targets};
    let logs = filter.and(filter_fn(|m| m.target() != crate::traces::TARGET));
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer);
    let fmt = match format {
        LogFormat::Text => fmt.with_filter(logs).boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).with_filter(logs).boxed(),
    };
    let export = tracer.map(|tracer| {
        // Only the attributes refgate gives a span: no source locations,
        // thread names or timings.
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_target(false)
            .with_level(false)
            .with_filter(Targets::new().with_target(crate::traces::TARGET, Level::INFO))
    });
    Box::new(
        tracing_subscriber::registry()
            .with(fmt)
            .with(PingoraLogs)
            .with(export),
    )
}

/// What pingora may log, whatever `RUST_LOG` says.
///
/// - Nothing below `info`: at `debug` and `trace` pingora logs request and
///   response headers (the upstream `Authorization` among them) and bodies.
/// - Not `failed to acquire reusable stream`: logged at `error` when a
///   request on one thread takes an idle upstream connection whose idle
///   watch, on another thread, has released its lock but not yet its
///   reference. The connection is closed and a new one opened; the client
///   sees nothing. An operator's error log should not fill with it.
struct PingoraLogs;

/// pingora's crates log under their own names (`pingora_core::…`).
fn is_pingora(target: &str) -> bool {
    target.starts_with("pingora")
}

const POOL_RACE: &str = "failed to acquire reusable stream";

impl<S: Subscriber> Layer<S> for PingoraLogs {
    fn enabled(&self, metadata: &Metadata<'_>, _: Context<'_, S>) -> bool {
        !is_pingora(metadata.target()) || *metadata.level() <= Level::INFO
    }

    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        // pingora logs through the `log` crate: its events arrive with the
        // target `log` and the real one in a `log.target` field.
        let target = event.metadata().target();
        if target != "log" && target != POOL_RACE_TARGET {
            return true;
        }
        let mut seen = PoolRace {
            target: target == POOL_RACE_TARGET,
            message: false,
        };
        event.record(&mut seen);
        !(seen.target && seen.message)
    }
}

const POOL_RACE_TARGET: &str = "pingora_core::connectors";

/// Whether an event is the pool race line.
struct PoolRace {
    target: bool,
    message: bool,
}

impl tracing::field::Visit for PoolRace {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}") == POOL_RACE,
            "log.target" => {
                self.target |= format!("{value:?}").trim_matches('"') == POOL_RACE_TARGET
            }
            _ => {}
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "message" => self.message = value == POOL_RACE,
            "log.target" => self.target |= value == POOL_RACE_TARGET,
            _ => {}
        }
    }
}

/// A value from outside refgate's configuration (a credential's authority
/// name, an authority's error text) as it is safe to write into a text log
/// line: control characters (newlines, ANSI escapes) escaped, so the value
/// cannot end the line or forge another one. JSON logs escape by
/// themselves.
pub struct Untrusted<'a>(pub &'a str);

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        for c in self.0.chars() {
            // Controls, the escape character itself, and what reorders or
            // breaks lines on a terminal.
            let unsafe_char = c.is_control()
                || c == '\\'
                || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
            if unsafe_char {
                write!(f, "{}", c.escape_unicode())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// Prometheus metrics of the gateway.
pub struct Metrics {
    pub registry: prometheus::Registry,
    /// Requests by route and status.
    pub requests: prometheus::IntCounterVec,
    /// Token lookups by route and result (`hit`, `miss`).
    pub cache: prometheus::IntCounterVec,
    /// Credential refreshes by authority and outcome.
    pub refreshes: prometheus::IntCounterVec,
    /// Time to the upstream's response headers, by route.
    pub upstream_seconds: prometheus::HistogramVec,
    /// Time of a refresh call to an authority.
    pub refresh_seconds: prometheus::HistogramVec,
    /// Requests refused by a rate limit, by limit (`route`, `client`,
    /// `auth_failures`) and the route or client it belongs to.
    pub rate_limited: prometheus::IntCounterVec,
    /// Gateway requests answered `store_unavailable` (exported from start,
    /// at 0, so an alert can watch its increase).
    pub store_unavailable: prometheus::IntCounter,
}

impl Metrics {
    pub fn new() -> Self {
        use prometheus::{HistogramOpts, IntCounterVec, Opts};
        let registry = prometheus::Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "refgate_requests_total",
                "Gateway requests by route and status",
            ),
            &["route", "status"],
        )
        .expect("valid metric");
        let cache = IntCounterVec::new(
            Opts::new(
                "refgate_token_cache_total",
                "Token lookups by route and result (hit, miss)",
            ),
            &["route", "result"],
        )
        .expect("valid metric");
        let refreshes = IntCounterVec::new(
            Opts::new(
                "refgate_credential_refreshes_total",
                "Downstream credential refreshes by authority and outcome",
            ),
            &["authority", "outcome"],
        )
        .expect("valid metric");
        let upstream_seconds = prometheus::HistogramVec::new(
            HistogramOpts::new(
                "refgate_upstream_seconds",
                "Time from forwarding to the upstream's response headers",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["route"],
        )
        .expect("valid metric");
        let refresh_seconds = prometheus::HistogramVec::new(
            HistogramOpts::new(
                "refgate_credential_refresh_seconds",
                "Duration of credential refresh calls to an authority",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["authority"],
        )
        .expect("valid metric");
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "refgate_rate_limited_total",
                "Requests refused by a rate limit, by limit (route, client, auth_failures) and what it belongs to",
            ),
            &["limit", "name"],
        )
        .expect("valid metric");
        let store_unavailable = prometheus::IntCounter::new(
            "refgate_store_unavailable_total",
            "Gateway requests answered 503 store_unavailable",
        )
        .expect("valid metric");
        for metric in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(cache.clone()),
            Box::new(refreshes.clone()),
            Box::new(upstream_seconds.clone()),
            Box::new(refresh_seconds.clone()),
            Box::new(rate_limited.clone()),
            Box::new(store_unavailable.clone()),
        ] {
            registry.register(metric).expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            cache,
            refreshes,
            upstream_seconds,
            refresh_seconds,
            rate_limited,
            store_unavailable,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut out = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// One route's series, resolved once: a label lookup hashes its strings
/// and takes a lock, which the proxy would otherwise pay three times per
/// request.
pub struct RouteMetrics {
    pub cache_hit: prometheus::IntCounter,
    pub cache_miss: prometheus::IntCounter,
    pub upstream_seconds: prometheus::Histogram,
    route: String,
    requests: prometheus::IntCounterVec,
    /// By [`STATUS_LABELS`] index; a series is created when first counted,
    /// so `/metrics` lists only statuses that happened.
    by_status: [std::sync::OnceLock<prometheus::IntCounter>; STATUS_LABELS.len()],
}

impl RouteMetrics {
    pub fn new(metrics: &Metrics, route: &str) -> Self {
        RouteMetrics {
            cache_hit: metrics.cache.with_label_values(&[route, "hit"]),
            cache_miss: metrics.cache.with_label_values(&[route, "miss"]),
            upstream_seconds: metrics.upstream_seconds.with_label_values(&[route]),
            route: route.to_string(),
            requests: metrics.requests.clone(),
            by_status: Default::default(),
        }
    }

    /// Counts a request answered with `status` (0: no answer was sent).
    pub fn count_request(&self, status: u16) {
        let slot = status_slot(status);
        self.by_status[slot]
            .get_or_init(|| {
                self.requests
                    .with_label_values(&[&self.route, STATUS_LABELS[slot]])
            })
            .inc();
    }
}

/// The `status` label values: exact codes for the common ones, classes for
/// the rest (bounded cardinality).
const STATUS_LABELS: [&str; 24] = [
    "0", "200", "201", "204", "301", "302", "304", "400", "401", "403", "404", "405", "409", "413",
    "429", "500", "502", "503", "504", "1xx", "2xx", "3xx", "4xx", "5xx",
];

// Exact slots for the common codes, classes for the rest.
#[allow(clippy::match_overlapping_arm)]
fn status_slot(status: u16) -> usize {
    match status {
        0 => 0,
        200 => 1,
        201 => 2,
        204 => 3,
        301 => 4,
        302 => 5,
        304 => 6,
        400 => 7,
        401 => 8,
        403 => 9,
        404 => 10,
        405 => 11,
        409 => 12,
        413 => 13,
        429 => 14,
        500 => 15,
        502 => 16,
        503 => 17,
        504 => 18,
        100..=199 => 19,
        200..=299 => 20,
        300..=399 => 21,
        400..=499 => 22,
        _ => 23,
    }
}

/// The `status` label of a response status.
pub fn status_label(status: u16) -> &'static str {
    STATUS_LABELS[status_slot(status)]
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Log lines written while `f` runs, with `filter` as RUST_LOG.
    fn logged(filter: &str, f: impl FnOnce()) -> String {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("lock").extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new(filter))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish()
            .with(PingoraLogs);
        tracing::subscriber::with_default(subscriber, f);
        let bytes = lines.0.lock().expect("lock").clone();
        String::from_utf8(bytes).expect("UTF-8")
    }

    #[test]
    fn pingora_logs_stay_at_info_and_the_pool_race_is_dropped() {
        let out = logged("trace", || {
            tracing::debug!(target: "pingora_proxy::proxy_h1", "authorization: Bearer secret");
            tracing::trace!(target: "pingora_core::protocols", "body bytes");
            tracing::error!(target: "pingora_core::connectors", "failed to acquire reusable stream");
            tracing::error!(target: "pingora_core::connectors", "something that matters");
            tracing::info!(target: "pingora_core::server", "Server starting");
            tracing::debug!(target: "refgate::gateway", "refgate's own debug line");
        });
        assert!(!out.contains("Bearer secret"), "{out}");
        assert!(!out.contains("body bytes"), "{out}");
        assert!(!out.contains("reusable stream"), "{out}");
        assert!(out.contains("something that matters"), "{out}");
        assert!(out.contains("Server starting"), "{out}");
        assert!(out.contains("refgate's own debug line"), "{out}");
    }

    /// pingora logs through the `log` crate, as the running process sees it.
    #[test]
    fn pingora_log_records_are_filtered_too() {
        let _ = tracing_log::LogTracer::init();
        let out = logged("trace", || {
            log::error!(target: "pingora_core::connectors", "failed to acquire reusable stream");
            log::error!(target: "pingora_core::connectors", "a pool error that matters");
            log::debug!(target: "pingora_proxy::proxy_h1", "authorization: Bearer secret");
        });
        assert!(!out.contains("reusable stream"), "{out}");
        assert!(!out.contains("Bearer secret"), "{out}");
        assert!(out.contains("a pool error that matters"), "{out}");
    }

    /// With a tracer, refgate's trace spans are made whatever RUST_LOG
    /// says, and the log lines never show them.
    #[test]
    fn trace_spans_go_to_the_export_only() {
        use opentelemetry::trace::TracerProvider as _;
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("lock").extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let lines = Lines::default();
        let writer = lines.clone();
        let quiet = subscriber(
            LogFormat::Text,
            EnvFilter::new("error"),
            Some(provider.tracer("test")),
            move || writer.clone(),
        );
        let made = tracing::subscriber::with_default(quiet, || {
            let span = tracing::info_span!(target: crate::traces::TARGET, "traced", marker = "zq9");
            !span.is_disabled()
        });
        assert!(made, "RUST_LOG must not turn trace spans off");
        let writer = lines.clone();
        let verbose = subscriber(
            LogFormat::Text,
            EnvFilter::new("trace"),
            Some(provider.tracer("test")),
            move || writer.clone(),
        );
        tracing::subscriber::with_default(verbose, || {
            let span = tracing::info_span!(target: crate::traces::TARGET, "traced", marker = "zq9");
            span.in_scope(|| tracing::info!("inside the span"));
        });
        let out = String::from_utf8(lines.0.lock().expect("lock").clone()).expect("UTF-8");
        assert!(out.contains("inside the span"), "{out}");
        assert!(!out.contains("zq9") && !out.contains("traced"), "{out}");
    }

    #[test]
    fn untrusted_values_cannot_break_a_line() {
        let shown = Untrusted("a\nb\u{1b}[31m\\c\u{202e}d é").to_string();
        assert_eq!(shown, "a\\u{a}b\\u{1b}[31m\\u{5c}c\\u{202e}d é");
        let out = logged("info", || {
            tracing::warn!(authority = %Untrusted("x\nFORGED"), "refresh failed");
        });
        assert_eq!(out.lines().count(), 1, "{out}");
    }

    #[test]
    fn status_labels_name_their_codes() {
        for label in &STATUS_LABELS[..19] {
            assert_eq!(status_label(label.parse().unwrap()), *label);
        }
        assert_eq!(status_label(418), "4xx");
        assert_eq!(status_label(206), "2xx");
        assert_eq!(status_label(101), "1xx");
        assert_eq!(status_label(599), "5xx");
        assert_eq!(status_label(999), "5xx");
    }
}

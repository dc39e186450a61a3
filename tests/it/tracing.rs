//! OpenTelemetry tracing (`[telemetry] otlp_endpoint`): refgate posts its
//! spans as OTLP/HTTP protobuf to a real receiver on loopback (run here,
//! decoding with opentelemetry-proto's types), continues the caller's W3C
//! trace, and passes it on to the upstream and to the real oidc-provider
//! authority a refresh calls. No token, secret or custom value in any
//! attribute; nothing is posted with tracing off; audit lines carry the
//! trace id.

use crate::common::oidc::OidcAs;
use crate::common::upstream::Upstream;
use crate::common::*;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::{json, Value};

/// The caller's trace and span ids.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// One span as the receiver decoded it.
#[derive(Debug, Clone)]
struct Span {
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    attributes: HashMap<String, String>,
}

/// What the receiver got.
#[derive(Default)]
struct Received {
    posts: usize,
    spans: Vec<Span>,
    service_names: Vec<String>,
    /// Problems with a post (path, content type, undecodable body).
    problems: Vec<String>,
}

/// An OTLP/HTTP trace receiver on loopback.
struct Receiver {
    port: u16,
    received: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn any_text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

impl Receiver {
    async fn start() -> Self {
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        let received = Arc::new(Mutex::new(Received::default()));
        let shared = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: http::Request<hyper::body::Incoming>| {
                            let shared = shared.clone();
                            async move {
                                use http_body_util::BodyExt;
                                let path = request.uri().path().to_string();
                                let content_type = request
                                    .headers()
                                    .get("content-type")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or_default()
                                    .to_string();
                                let body = request
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                record(&shared, &path, &content_type, &body);
                                Ok::<_, std::convert::Infallible>(http::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::new()),
                                ))
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            port,
            received,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spans(&self) -> Vec<Span> {
        self.received.lock().unwrap().spans.clone()
    }

    fn posts(&self) -> usize {
        self.received.lock().unwrap().posts
    }

    /// Waits until `done` holds for the spans received.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans = self.spans();
            if done(&spans) {
                let problems = self.received.lock().unwrap().problems.clone();
                assert!(problems.is_empty(), "{problems:?}");
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within 20 s; received: {spans:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn record(shared: &Mutex<Received>, path: &str, content_type: &str, body: &[u8]) {
    let mut received = shared.lock().unwrap();
    received.posts += 1;
    if path != "/v1/traces" {
        received.problems.push(format!("posted to {path}"));
    }
    if content_type != "application/x-protobuf" {
        received
            .problems
            .push(format!("content type {content_type:?}"));
    }
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(r) => r,
        Err(e) => {
            received.problems.push(format!("undecodable: {e}"));
            return;
        }
    };
    for resource_spans in request.resource_spans {
        if let Some(resource) = &resource_spans.resource {
            for kv in &resource.attributes {
                if kv.key == "service.name" {
                    received.service_names.push(any_text(kv.value.as_ref()));
                }
            }
        }
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                received.spans.push(Span {
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent: hex::encode(&span.parent_span_id),
                    name: span.name.clone(),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), any_text(kv.value.as_ref())))
                        .collect(),
                });
            }
        }
    }
}

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

/// Whether `span` descends from `ancestor` (through received spans).
fn descends(spans: &[Span], span: &Span, ancestor: &Span) -> bool {
    let by_id: HashMap<&str, &Span> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let mut current = span;
    for _ in 0..32 {
        if current.parent == ancestor.span_id {
            return true;
        }
        match by_id.get(current.parent.as_str()) {
            Some(parent) => current = parent,
            None => return false,
        }
    }
    false
}

/// `(trace id, parent span id)` of a `traceparent` value.
fn parse_traceparent(value: &str) -> (String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {value:?}");
    assert_eq!(parts[0], "00", "traceparent {value:?}");
    (parts[1].to_string(), parts[2].to_string())
}

fn telemetry(receiver: &Receiver) -> String {
    format!(
        "[telemetry]\notlp_endpoint = \"{}\"\nservice_name = \"refgate-under-test\"\naudit_log = \"audit.log\"\n",
        receiver.url()
    )
}

/// Exports every 100 ms, so that a test need not wait for the default 5 s.
fn fast_export() -> Vec<(String, String)> {
    vec![("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into())]
}

/// Every attribute name a span may have: identifiers, never a header.
const ALLOWED_ATTRIBUTES: [&str; 12] = [
    "http.request.method",
    "http.response.status_code",
    "route",
    "client_id",
    "grant_id",
    "cache",
    "credential",
    "authority",
    "db.operation.name",
    "endpoint",
    "span.kind",
    "otel.kind",
];

/// Custom data a client stores: never an attribute.
const CUSTOM_VALUE: &str = "custom-value-7c41e9";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_the_caller_through_refresh_to_authority_and_upstream() {
    let receiver = Receiver::start().await;
    let oidc = OidcAs::start(3600);
    let upstream = Upstream::start().await;
    let server = Refgate::start_with(Options {
        gateway: "authority_timeout = \"20s\"".into(),
        extra: format!(
            "{}\n{}\n{}",
            telemetry(&receiver),
            oidc.authority_toml("photos-as"),
            credential_route("photos", "/photos/", &upstream.url(), ""),
        ),
        env: fast_export(),
        ..Options::default()
    });

    // An app token whose credential expires now: the request refreshes it
    // at the authority.
    let (access, refresh, _) = oidc.mint("alice").await;
    let app = str_of(&server.client_token("app", None).await, "access_token").to_string();
    let (status, answer) = server
        .mutate(&json!({"token": app, "patch": {
        "note": CUSTOM_VALUE,
        "credentials": {"photos": {
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "Bearer",
            "expires_at": unix_now() - 10,
            "authority": "photos-as",
        }}}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    let caller = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let response = http()
        .get(format!("{}/photos/album/1", server.proxy))
        .bearer_auth(&app)
        .header("traceparent", &caller)
        .header("tracestate", "vendor=opaque")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        oidc.refresh_count().await,
        1,
        "the credential was refreshed"
    );

    let spans = receiver
        .wait_for("gateway request span with its refresh", |spans| {
            spans.iter().any(|s| {
                s.name == "gateway request"
                    && s.trace_id == CALLER_TRACE
                    && s.attributes.contains_key("http.response.status_code")
            }) && spans
                .iter()
                .any(|s| s.name == "authority token request" && s.trace_id == CALLER_TRACE)
        })
        .await;
    let traced: Vec<Span> = spans
        .iter()
        .filter(|s| s.trace_id == CALLER_TRACE)
        .cloned()
        .collect();

    // The gateway's request span is the child of the caller's span.
    let gateway = named(&traced, "gateway request");
    assert_eq!(gateway.len(), 1, "{traced:#?}");
    let gateway = gateway[0];
    assert_eq!(gateway.parent, CALLER_SPAN);
    assert_eq!(gateway.attributes["route"], "photos");
    assert_eq!(gateway.attributes["client_id"], "app");
    assert_eq!(gateway.attributes["http.response.status_code"], "200");
    assert_eq!(gateway.attributes["http.request.method"], "GET");
    assert_eq!(gateway.attributes["grant_id"].len(), 32, "{gateway:?}");

    // Admission and the token lookup under it, hit or miss.
    let admission = named(&traced, "admission");
    assert_eq!(admission.len(), 1, "{traced:#?}");
    assert_eq!(admission[0].parent, gateway.span_id);
    let lookup = named(&traced, "token lookup");
    assert_eq!(lookup.len(), 1, "{traced:#?}");
    assert!(descends(&traced, lookup[0], gateway));
    assert!(
        ["hit", "miss"].contains(&lookup[0].attributes["cache"].as_str()),
        "{:?}",
        lookup[0]
    );

    // The refresh descends from the request; the authority call from the
    // refresh; store calls happen in it.
    let refresh_span = named(&traced, "credential refresh");
    assert_eq!(refresh_span.len(), 1, "{traced:#?}");
    let refresh_span = refresh_span[0];
    assert!(descends(&traced, refresh_span, gateway), "{traced:#?}");
    assert_eq!(refresh_span.attributes["credential"], "photos");
    let authority = named(&traced, "authority token request");
    assert_eq!(authority.len(), 1, "{traced:#?}");
    let authority = authority[0];
    assert!(descends(&traced, authority, refresh_span), "{traced:#?}");
    assert_eq!(authority.attributes["authority"], "photos-as");
    assert_eq!(authority.attributes["http.response.status_code"], "200");
    let store_calls: Vec<&Span> = traced
        .iter()
        .filter(|s| s.attributes.contains_key("db.operation.name"))
        .collect();
    assert!(
        store_calls
            .iter()
            .any(|s| descends(&traced, s, refresh_span) && s.name == "update_grant"),
        "{traced:#?}"
    );

    // The authority received a traceparent naming the call's span.
    let stats: Value = http()
        .get(oidc.url("/_traceparent"))
        .send()
        .await
        .expect("authority")
        .json()
        .await
        .expect("JSON");
    let (trace, parent) = parse_traceparent(stats["last_traceparent"].as_str().expect("received"));
    assert_eq!(trace, CALLER_TRACE);
    assert_eq!(parent, authority.span_id);

    // The upstream's traceparent names refgate's span, not the caller's.
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header_count("traceparent"), 1);
    let sent = seen[0].header("traceparent").expect("traceparent upstream");
    assert_ne!(sent, caller);
    let (trace, parent) = parse_traceparent(&sent);
    assert_eq!(trace, CALLER_TRACE);
    assert_eq!(parent, gateway.span_id);

    // A refresh the authority refuses: its audit line, written by the
    // gateway's refresh, carries the caller's trace id.
    let refused = str_of(&server.client_token("app", None).await, "access_token").to_string();
    let (status, answer) = server
        .mutate(
            &json!({"token": refused, "patch": {"credentials": {"photos": {
                "access_token": "stale",
                "refresh_token": "not-a-refresh-token-the-authority-knows",
                "token_type": "Bearer",
                "expires_at": unix_now() - 10,
                "authority": "photos-as",
            }}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let other_trace = "5bf92f3577b34da6a3ce929d0e0e4737";
    let response = http()
        .get(format!("{}/photos/album/2", server.proxy))
        .bearer_auth(&refused)
        .header("traceparent", format!("00-{other_trace}-{CALLER_SPAN}-01"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let audit = wait_for_text(&server.dir.path().join("audit.log"), "refresh_refused");
    let line: Value = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON line"))
        .find(|l| l["event"] == "refresh_refused")
        .expect("refresh_refused line");
    assert_eq!(line["trace_id"], other_trace, "{line}");

    // The service name from the configuration.
    assert!(receiver
        .received
        .lock()
        .unwrap()
        .service_names
        .iter()
        .all(|n| n == "refgate-under-test"));

    // No token, secret or custom value in any attribute of any span.
    let stored = server.introspect(&app).await["custom"]["credentials"]["photos"].clone();
    let mut secrets = vec![
        app.clone(),
        access.clone(),
        refresh.clone(),
        "app-secret".to_string(),
        "middle-secret".to_string(),
        crate::common::oidc::CLIENT_SECRET.to_string(),
        CUSTOM_VALUE.to_string(),
        caller.clone(),
        "vendor=opaque".to_string(),
        refused.clone(),
        "not-a-refresh-token-the-authority-knows".to_string(),
    ];
    for member in ["access_token", "refresh_token"] {
        secrets.push(str_of(&stored, member).to_string());
    }
    assert_ne!(str_of(&stored, "access_token"), access, "refreshed");
    for span in receiver.spans() {
        let keys: Vec<&str> = span.attributes.keys().map(String::as_str).collect();
        assert!(
            keys.iter().all(|k| ALLOWED_ATTRIBUTES.contains(k)),
            "{span:?}"
        );
        for (key, value) in &span.attributes {
            for secret in &secrets {
                assert!(
                    !value.contains(secret.as_str()),
                    "attribute {key} of {} holds a secret: {value}",
                    span.name
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_service_endpoints_have_spans_and_audit_lines_their_trace_id() {
    let receiver = Receiver::start().await;
    let server = Refgate::start_with(Options {
        extra: telemetry(&receiver),
        env: fast_export(),
        ..Options::default()
    });
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let parent = "b7ad6b7169203331";
    let response = http()
        .post(server.url("/oauth2/token"))
        .basic_auth("app", Some("app-secret"))
        .header("traceparent", format!("00-{trace}-{parent}-01"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("token request");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("JSON");
    let token = str_of(&body, "access_token").to_string();

    let spans = receiver
        .wait_for("token endpoint span", |spans| {
            spans.iter().any(|s| s.name == "POST /oauth2/token")
        })
        .await;
    let endpoint = named(&spans, "POST /oauth2/token");
    assert_eq!(endpoint.len(), 1, "{spans:#?}");
    let endpoint = endpoint[0];
    assert_eq!(endpoint.trace_id, trace);
    assert_eq!(endpoint.parent, parent);
    assert_eq!(endpoint.attributes["endpoint"], "/oauth2/token");
    assert_eq!(endpoint.attributes["client_id"], "app");
    assert_eq!(endpoint.attributes["http.response.status_code"], "200");
    // Its store call is its child.
    assert!(
        spans
            .iter()
            .any(|s| s.name == "create_grant" && s.parent == endpoint.span_id),
        "{spans:#?}"
    );

    // The audit line of the issue carries the trace id.
    let audit = wait_for_text(&server.dir.path().join("audit.log"), "token_issued");
    let line: Value = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON line"))
        .find(|l| l["event"] == "token_issued")
        .expect("token_issued line");
    assert_eq!(line["trace_id"], trace, "{line}");

    // Another endpoint, without a caller trace: a root span of its own.
    let introspection = server.introspect(&token).await;
    assert_eq!(introspection["active"], true);
    let spans = receiver
        .wait_for("introspection span", |spans| {
            spans.iter().any(|s| s.name == "POST /oauth2/introspect")
        })
        .await;
    let introspect = named(&spans, "POST /oauth2/introspect")[0];
    assert_eq!(introspect.parent, "");
    assert_ne!(introspect.trace_id, trace);

    for span in &spans {
        for value in span.attributes.values() {
            for secret in [token.as_str(), "app-secret", "introspector-secret"] {
                assert!(!value.contains(secret), "{span:?}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_traceparent_is_ignored_and_a_new_trace_begins() {
    let receiver = Receiver::start().await;
    let upstream = Upstream::start().await;
    let server = Refgate::start_with(Options {
        extra: format!(
            "{}\n{}",
            telemetry(&receiver),
            public_route("open", "/open/", &upstream.url(), "")
        ),
        env: fast_export(),
        ..Options::default()
    });
    let malformed = [
        "00-zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "nonsense",
    ];
    for (n, bad) in malformed.iter().enumerate() {
        let response = http()
            .get(format!("{}/open/{n}", server.proxy))
            .header("traceparent", *bad)
            .header("tracestate", "k=v")
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::OK, "{bad}");
    }
    // A token-service request with one too.
    let response = http()
        .get(server.url("/.well-known/oauth-authorization-server"))
        .header("traceparent", malformed[0])
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);

    let seen = upstream.requests();
    assert_eq!(seen.len(), malformed.len());
    let sent: Vec<String> = seen
        .iter()
        .map(|request| request.header("traceparent").expect("a fresh traceparent"))
        .collect();
    // Wait for the span each forwarded request names as its parent (the
    // harness's readiness probes add gateway spans of their own, so a
    // count of gateway spans says nothing).
    let parents: Vec<String> = sent.iter().map(|s| parse_traceparent(s).1).collect();
    let spans = receiver
        .wait_for("the forwarded requests' gateway spans", |spans| {
            parents
                .iter()
                .all(|parent| spans.iter().any(|s| &s.span_id == parent))
        })
        .await;
    let mut traces = Vec::new();
    for (sent, bad) in sent.iter().zip(malformed) {
        assert_ne!(sent, bad);
        let (trace, parent) = parse_traceparent(sent);
        assert_ne!(trace, "0".repeat(32));
        let span = spans
            .iter()
            .find(|s| s.span_id == parent)
            .unwrap_or_else(|| panic!("no span {parent}: {spans:#?}"));
        assert_eq!(span.name, "gateway request");
        assert_eq!(span.trace_id, trace);
        assert_eq!(span.parent, "", "a root span");
        assert_eq!(span.attributes["route"], "open");
        traces.push(trace);
    }
    traces.sort();
    traces.dedup();
    assert_eq!(traces.len(), malformed.len(), "one new trace each");
    let metadata = receiver
        .wait_for("metadata span", |spans| {
            spans
                .iter()
                .any(|s| s.name == "GET /.well-known/oauth-authorization-server")
        })
        .await;
    let metadata = named(&metadata, "GET /.well-known/oauth-authorization-server")[0];
    assert_eq!(metadata.parent, "");
}

/// With no `otlp_endpoint`, nothing is posted, even with the standard
/// OTLP environment variables pointing at a receiver; the client's own
/// trace headers pass through untouched and audit lines have no trace id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tracing_off_nothing_is_posted() {
    let receiver = Receiver::start().await;
    let upstream = Upstream::start().await;
    let mut env = fast_export();
    env.push(("OTEL_EXPORTER_OTLP_ENDPOINT".into(), receiver.url()));
    env.push((
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT".into(),
        format!("{}/v1/traces", receiver.url()),
    ));
    let server = Refgate::start_with(Options {
        extra: format!(
            "[telemetry]\naudit_log = \"audit.log\"\n\n{}",
            public_route("open", "/open/", &upstream.url(), "")
        ),
        env,
        ..Options::default()
    });
    let caller = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let response = http()
        .get(format!("{}/open/x", server.proxy))
        .header("traceparent", &caller)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let response = http()
        .post(server.url("/oauth2/token"))
        .basic_auth("app", Some("app-secret"))
        .header("traceparent", &caller)
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("token request");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        upstream.requests()[0].header("traceparent").as_deref(),
        Some(caller.as_str())
    );
    let audit = wait_for_text(&server.dir.path().join("audit.log"), "token_issued");
    assert!(!audit.contains("trace_id"), "{audit}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.posts(), 0);
}

/// Spans still queued when refgate stops are exported before it exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_spans_are_exported_at_shutdown() {
    let receiver = Receiver::start().await;
    let mut server = Refgate::start_with(Options {
        extra: telemetry(&receiver),
        // Far longer than the test: only the shutdown flush exports.
        env: vec![("OTEL_BSP_SCHEDULE_DELAY".into(), "600000".into())],
        ..Options::default()
    });
    server.client_token("app", None).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.posts(), 0);
    server.stop_cleanly();
    let spans = receiver
        .wait_for("token endpoint span", |spans| {
            spans.iter().any(|s| s.name == "POST /oauth2/token")
        })
        .await;
    assert!(!spans.is_empty());
}

/// A collector that takes connections and never answers costs requests
/// nothing, and holds up a stop by a few seconds at most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_delays_neither_requests_nor_shutdown() {
    // Connections complete in the kernel's backlog; nothing reads them.
    let silent = loopback_listener();
    let port = silent.local_addr().expect("address").port();
    let upstream = Upstream::start().await;
    let mut server = Refgate::start_with(Options {
        extra: format!(
            "[telemetry]\notlp_endpoint = \"http://127.0.0.1:{port}\"\n\n{}",
            public_route("open", "/open/", &upstream.url(), "")
        ),
        env: fast_export(),
        ..Options::default()
    });
    for n in 0..20 {
        let started = Instant::now();
        let response = http()
            .get(format!("{}/open/{n}", server.proxy))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::OK);
        server.client_token("app", None).await;
        // Far below the exporter's 10 s timeout it would wait behind (the
        // margin is for a loaded machine).
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopping = Instant::now();
    server.stop_cleanly();
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "{:?}",
        stopping.elapsed()
    );
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_a_bad_otlp_endpoint() {
    let server = Refgate::start();
    let config = std::fs::read_to_string(&server.config_path).expect("config");
    for bad in [
        "ftp://127.0.0.1:4318",
        "not a url",
        "http://127.0.0.1:4318/?token=x",
        "http://user:password@127.0.0.1:4318",
        "",
    ] {
        let broken = format!("{config}\n[telemetry]\notlp_endpoint = \"{bad}\"\n");
        server.assert_check_refuses(&broken, "telemetry.otlp_endpoint");
    }
    let broken = format!(
        "{config}\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\nservice_name = \"\"\n"
    );
    server.assert_check_refuses(&broken, "telemetry.service_name");
}

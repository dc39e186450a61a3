//! The gateway's request path, end to end: the real binary (through the
//! harness) in front of real upstreams on loopback. What the upstream
//! receives (the downstream credential, never the reference token; the
//! request id; the rewritten path), which route a request lands on (hosts,
//! wildcards, longest prefix, `strip_prefix`, public routes), and that
//! HTTP/2 from the client and large bodies in both directions go through
//! streamed and intact.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::upstream::Upstream;
use crate::common::*;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

const MIB: usize = 1024 * 1024;

fn start(routes: &str) -> Refgate {
    Refgate::start_with(Options {
        extra: format!("{AUTHORITY}\n{routes}"),
        ..Options::default()
    })
}

/// Which of the named upstreams received requests since the last call, and
/// the paths they saw; clears them.
fn landed(upstreams: &[(&'static str, &Upstream)]) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (name, upstream) in upstreams {
        for r in upstream.requests() {
            out.push((*name, r.path.clone()));
        }
        upstream.clear();
    }
    out
}

// ---------------------------------------------------------------------------
// An origin of our own for large and gated bodies (the shared echo upstream
// buffers whole bodies and answers with small JSON).
// ---------------------------------------------------------------------------

type OriginBody = BoxBody<Bytes, Infallible>;

#[derive(Default)]
struct OriginState {
    /// `Authorization` of every request, in order.
    authorizations: Mutex<Vec<Option<String>>>,
    /// `/gated/`: released by the test to send the rest of the body.
    gate: Notify,
    /// `/stream-in`: told the number of bytes of the first body frame.
    first_frame: Mutex<Option<mpsc::UnboundedSender<usize>>>,
}

/// A hyper HTTP/1.1 + HTTP/2 server. Paths:
/// - `/photos/big/<n>`: `n` bytes of [`pattern`], streamed in 64 KiB chunks;
/// - `/photos/gated/<n>`: the first 64 KiB chunk of `n` bytes, then the rest
///   only after [`Origin::release`];
/// - `/photos/stream-in`: reads the request body frame by frame, reports the
///   first frame's size, answers `{"len", "sum"}` for the whole body;
/// - anything else: `{"ok":true}` with `x-origin: yes`, never echoing.
struct Origin {
    port: u16,
    state: Arc<OriginState>,
    task: tokio::task::JoinHandle<()>,
}

impl Origin {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind origin");
        let port = listener.local_addr().expect("origin address").port();
        let state = Arc::new(OriginState::default());
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req| origin(shared.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Origin { port, state, task }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn release(&self) {
        self.state.gate.notify_one();
    }

    fn authorizations(&self) -> Vec<Option<String>> {
        self.state.authorizations.lock().expect("lock").clone()
    }

    /// Where the size of `/stream-in`'s first body frame will be sent.
    fn watch_first_frame(&self) -> mpsc::UnboundedReceiver<usize> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.state.first_frame.lock().expect("lock") = Some(tx);
        rx
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Byte `i` of a large body: not a repeating short cycle, so a reordered or
/// duplicated chunk shows.
fn pattern(i: usize) -> u8 {
    ((i / 65_536) as u8).wrapping_mul(31) ^ (i as u8)
}

fn pattern_bytes(from: usize, to: usize) -> Bytes {
    Bytes::from((from..to).map(pattern).collect::<Vec<u8>>())
}

const CHUNK: usize = 64 * 1024;

fn streamed(len: usize, gate: Option<Arc<OriginState>>) -> OriginBody {
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(2);
    tokio::spawn(async move {
        use futures::SinkExt;
        let mut at = 0;
        while at < len {
            let end = (at + CHUNK).min(len);
            if tx
                .send(Ok(Frame::data(pattern_bytes(at, end))))
                .await
                .is_err()
            {
                return;
            }
            if at == 0 {
                if let Some(state) = &gate {
                    state.gate.notified().await;
                }
            }
            at = end;
        }
    });
    StreamBody::new(rx).boxed()
}

async fn origin(
    state: Arc<OriginState>,
    request: Request<Incoming>,
) -> Result<Response<OriginBody>, Infallible> {
    let authorization = request
        .headers()
        .get("authorization")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).to_string());
    state
        .authorizations
        .lock()
        .expect("lock")
        .push(authorization);
    let path = request.uri().path().to_string();
    let size = |rest: &str| rest.parse::<usize>().unwrap_or(0);
    if let Some(n) = path.strip_prefix("/photos/big/") {
        let len = size(n);
        return Ok(Response::builder()
            .header("content-type", "application/octet-stream")
            .body(streamed(len, None))
            .expect("response"));
    }
    if let Some(n) = path.strip_prefix("/photos/gated/") {
        let len = size(n);
        return Ok(Response::builder()
            .header("content-type", "application/octet-stream")
            .body(streamed(len, Some(state.clone())))
            .expect("response"));
    }
    if path == "/photos/stream-in" {
        let mut body = request.into_body();
        let mut len = 0usize;
        let mut sum = 0u64;
        let mut first = true;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Ok(data) = frame.into_data() {
                if first && !data.is_empty() {
                    first = false;
                    if let Some(tx) = state.first_frame.lock().expect("lock").as_ref() {
                        let _ = tx.send(data.len());
                    }
                }
                for (i, b) in data.iter().enumerate() {
                    sum = sum.wrapping_add((len + i) as u64 * *b as u64);
                }
                len += data.len();
            }
        }
        let answer = json!({"len": len, "sum": sum}).to_string();
        return Ok(Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(answer)).boxed())
            .expect("response"));
    }
    Ok(Response::builder()
        .header("content-type", "application/json")
        .header("x-origin", "yes")
        .body(Full::new(Bytes::from_static(b"{\"ok\":true}")).boxed())
        .expect("response"))
}

/// The weighted sum the origin reports for `/stream-in`.
fn weighted_sum(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .enumerate()
        .fold(0u64, |acc, (i, b)| acc.wrapping_add(i as u64 * *b as u64))
}

// ---------------------------------------------------------------------------
// HTTP/2 (prior knowledge, h2c) from the client
// ---------------------------------------------------------------------------

/// Opens one h2c connection to the proxy.
async fn h2c(server: &Refgate) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", server.proxy_port))
        .await
        .expect("connect to the proxy");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c handshake with the proxy");
    tokio::spawn(connection);
    sender
}

struct H2Reply {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
}

async fn h2_send(
    sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> H2Reply {
    let response = tokio::time::timeout(Duration::from_secs(30), sender.send_request(request))
        .await
        .expect("h2 response within 30 s")
        .expect("h2 response");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = tokio::time::timeout(Duration::from_secs(60), response.into_body().collect())
        .await
        .expect("h2 body within 60 s")
        .expect("h2 body")
        .to_bytes();
    H2Reply {
        status,
        headers,
        body,
    }
}

// ---------------------------------------------------------------------------
// The credential swap and request ids
// ---------------------------------------------------------------------------

#[tokio::test]
async fn upstream_receives_the_downstream_credential_and_never_the_reference_token() {
    let upstream = Upstream::start().await;
    let server = start(&photos_route(&upstream.url()));
    let token = server.token_with_photos().await;

    for (method, body) in [("GET", ""), ("POST", "{\"title\":\"holiday\"}")] {
        let response = http()
            .request(
                method.parse().expect("method"),
                format!("{}/photos/albums/1?sort=date", server.proxy),
            )
            .bearer_auth(&token)
            .body(body.to_string())
            .send()
            .await
            .expect("proxied request");
        assert_eq!(response.status(), StatusCode::OK, "{method}");
    }

    let seen = upstream.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for request in &seen {
        assert_eq!(request.path, "/photos/albums/1?sort=date");
        assert_eq!(request.header_count("authorization"), 1, "{request:?}");
        assert_eq!(
            request.header("authorization").as_deref(),
            Some("Bearer down-abc")
        );
        for (name, value) in &request.headers {
            assert!(
                !contains(value, b"rgat_") && !contains(value, token.as_bytes()),
                "the reference token reached the upstream in `{name}`"
            );
        }
        assert!(!contains(&request.body, b"rgat_"));
    }
    assert_eq!(seen[1].body, b"{\"title\":\"holiday\"}");
}

#[tokio::test]
async fn credential_token_type_becomes_the_authorization_scheme() {
    let upstream = Upstream::start().await;
    let routes = [
        photos_route(&upstream.url()),
        route(
            "mac",
            "/mac/",
            &upstream.url(),
            "credential = \"mac\"\nrequired_scopes = [\"photos.read\"]",
        ),
    ]
    .join("\n");
    let server = start(&routes);
    let token = server.access_token("app").await;
    // A lower-case `bearer` is normalised; another scheme is used as stored.
    server
        .store_credential(&token, "photos", credential("down-lower", "bearer"))
        .await;
    server
        .store_credential(&token, "mac", credential("down-mac", "DPoP"))
        .await;

    for path in ["/photos/x", "/mac/x"] {
        let response = http()
            .get(format!("{}{path}", server.proxy))
            .bearer_auth(&token)
            .send()
            .await
            .expect("proxied request");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    let seen: Vec<_> = upstream
        .requests()
        .iter()
        .map(|r| r.header("authorization"))
        .collect();
    assert_eq!(
        seen,
        [
            Some("Bearer down-lower".to_string()),
            Some("DPoP down-mac".to_string())
        ]
    );
}

#[tokio::test]
async fn client_never_receives_the_downstream_token() {
    // The origin answers without echoing anything: whatever the client sees
    // of the credential would have been added by the gateway.
    let origin = Origin::start().await;
    let closed = closed_port();
    let closed = closed.port;
    let routes = [
        photos_route(&origin.url()),
        route(
            "down",
            "/down/",
            &format!("http://127.0.0.1:{closed}"),
            "required_scopes = [\"photos.read\"]\ncredential = \"photos\"",
        ),
    ]
    .join("\n");
    let server = start(&routes);
    let token = server.token_with_photos().await;

    // A normal proxied answer, an upstream failure, and a local rejection
    // after the credential was found.
    for (path, expected) in [
        ("/photos/anything", StatusCode::OK),
        ("/down/anything", StatusCode::BAD_GATEWAY),
    ] {
        let response = http()
            .get(format!("{}{path}", server.proxy))
            .bearer_auth(&token)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), expected, "{path}");
        for (name, value) in response.headers() {
            assert!(
                !contains(value.as_bytes(), b"down-abc"),
                "{path}: the downstream token is in response header `{name}`"
            );
        }
        assert!(response.headers().get("authorization").is_none());
        let body = response.bytes().await.expect("body");
        assert!(
            !contains(&body, b"down-abc"),
            "{path}: the downstream token is in the body: {}",
            String::from_utf8_lossy(&body)
        );
        if path == "/photos/anything" {
            assert_eq!(&body[..], b"{\"ok\":true}");
        }
    }
    // The origin did get it (so the assertions above were not vacuous).
    assert_eq!(
        origin.authorizations(),
        [Some("Bearer down-abc".to_string())]
    );
}

#[tokio::test]
async fn request_id_is_generated_when_absent_and_returned_to_the_client() {
    let upstream = Upstream::start().await;
    let server = start(&photos_route(&upstream.url()));
    let token = server.token_with_photos().await;

    let mut ids = Vec::new();
    for _ in 0..2 {
        let response = http()
            .get(format!("{}/photos/x", server.proxy))
            .bearer_auth(&token)
            .send()
            .await
            .expect("proxied request");
        assert_eq!(response.status(), StatusCode::OK);
        let returned = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .expect("x-request-id on the response")
            .to_string();
        let echo: Value = response.json().await.expect("echo JSON");
        assert!(!returned.is_empty());
        assert_eq!(echo["request_id"], returned.as_str(), "upstream saw {echo}");
        ids.push(returned);
    }
    assert_ne!(ids[0], ids[1], "each request gets its own id");
    for request in upstream.requests() {
        assert_eq!(request.header_count("x-request-id"), 1);
    }
}

#[tokio::test]
async fn sane_request_id_from_the_client_is_preserved_and_a_bad_one_replaced() {
    let upstream = Upstream::start().await;
    let server = start(&photos_route(&upstream.url()));
    let token = server.token_with_photos().await;

    let sane = "req-42.abc_DEF:7";
    let response = http()
        .get(format!("{}/photos/x", server.proxy))
        .bearer_auth(&token)
        .header("x-request-id", sane)
        .send()
        .await
        .expect("proxied request");
    assert_eq!(response.headers()["x-request-id"], sane);
    let echo: Value = response.json().await.expect("echo");
    assert_eq!(echo["request_id"], sane);

    // Too long, or with characters that do not belong in a log line: the
    // gateway uses its own id, the same upstream and back.
    for bad in ["a b c", "x\"y", &"z".repeat(300)] {
        let response = http()
            .get(format!("{}/photos/x", server.proxy))
            .bearer_auth(&token)
            .header("x-request-id", bad)
            .send()
            .await
            .expect("proxied request");
        let returned = response.headers()["x-request-id"]
            .to_str()
            .expect("ASCII id")
            .to_string();
        assert_ne!(returned, bad);
        assert!(!returned.is_empty());
        let echo: Value = response.json().await.expect("echo");
        assert_eq!(echo["request_id"], returned.as_str());
    }

    // Answers the gateway writes itself carry the id too.
    let response = http()
        .get(format!("{}/photos/x", server.proxy))
        .header("x-request-id", sane)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["x-request-id"], sane);
    let response = http()
        .get(format!("{}/nowhere", server.proxy))
        .header("x-request-id", sane)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.headers()["x-request-id"], sane);
}

// ---------------------------------------------------------------------------
// Route matching
// ---------------------------------------------------------------------------

#[tokio::test]
async fn routes_match_by_host_then_longest_prefix() {
    let exact = Upstream::start().await;
    let exact_deep = Upstream::start().await;
    let wildcard = Upstream::start().await;
    let short = Upstream::start().await;
    let long = Upstream::start().await;
    let routes = [
        public_route("exact", "/", &exact.url(), "host = \"api.example.com\""),
        public_route(
            "exact-deep",
            "/deep/",
            &exact_deep.url(),
            "host = \"api.example.com\"",
        ),
        public_route("wildcard", "/", &wildcard.url(), "host = \"*.example.com\""),
        public_route("short", "/photos/", &short.url(), ""),
        public_route("long", "/photos/albums/", &long.url(), ""),
    ]
    .join("\n");
    let server = start(&routes);
    let all = [
        ("exact", &exact),
        ("exact-deep", &exact_deep),
        ("wildcard", &wildcard),
        ("short", &short),
        ("long", &long),
    ];

    let cases: &[(Option<&str>, &str, Option<&str>)] = &[
        // A host route wins over a host-less one with a longer prefix.
        (Some("api.example.com"), "/photos/albums/1", Some("exact")),
        // Port and case of the Host header do not matter.
        (Some("API.Example.COM:8443"), "/x", Some("exact")),
        // Among host routes, the longest prefix wins.
        (Some("api.example.com"), "/deep/x", Some("exact-deep")),
        // The wildcard matches any subdomain depth...
        (Some("sub.example.com"), "/x", Some("wildcard")),
        (Some("a.b.example.com:80"), "/deep/x", Some("wildcard")),
        // ...but not the apex nor a look-alike, which fall to host-less
        // routes by path, or to nothing.
        (Some("example.com"), "/photos/x", Some("short")),
        (Some("badexample.com"), "/photos/albums/2", Some("long")),
        (Some("example.com"), "/x", None),
        (Some("sub.example.org"), "/x", None),
        // Host-less routes: the longest prefix wins.
        (None, "/photos/albums/7", Some("long")),
        (None, "/photos/7", Some("short")),
        (None, "/photos", None),
    ];
    for (host, path, expected) in cases {
        let mut request = http().get(format!("{}{path}", server.proxy));
        if let Some(host) = host {
            request = request.header("host", *host);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let went = landed(&all);
        match expected {
            Some(name) => {
                assert_eq!(status, StatusCode::OK, "{host:?} {path}");
                assert_eq!(
                    went,
                    [(*name, path.to_string())],
                    "{host:?} {path} went elsewhere"
                );
            }
            None => {
                assert_eq!(status, StatusCode::NOT_FOUND, "{host:?} {path}");
                assert!(went.is_empty(), "{host:?} {path} went to {went:?}");
            }
        }
    }
}

#[tokio::test]
async fn strip_prefix_maps_the_path_and_keeps_the_query() {
    let upstream = Upstream::start().await;
    let routes = [
        route(
            "photos",
            "/photos/",
            &upstream.url(),
            "strip_prefix = true\nrequired_scopes = [\"photos.read\"]\ncredential = \"photos\"",
        ),
        public_route("kept", "/kept/", &upstream.url(), ""),
    ]
    .join("\n");
    let server = start(&routes);
    let token = server.token_with_photos().await;
    for (path, expected) in [
        ("/photos/x?q=1", "/x?q=1"),
        ("/photos/a/b?c=d&e", "/a/b?c=d&e"),
        ("/photos/", "/"),
        ("/photos/?only=query", "/?only=query"),
        // The prefix is matched and stripped as the upstream reads the path:
        // percent-encoded unreserved characters are the same characters.
        ("/%70hotos/x?q=%2F", "/x?q=%2F"),
        // Other escapes stay as they are (an encoded `/` is refused).
        ("/photos/a%20b", "/a%20b"),
        ("/kept/x?q=1", "/kept/x?q=1"),
    ] {
        let response = http()
            .get(format!("{}{path}", server.proxy))
            .bearer_auth(&token)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let seen = upstream.requests();
        upstream.clear();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].path, expected, "{path}");
    }
}

#[tokio::test]
async fn unmatched_request_gets_404_json_and_reaches_no_upstream() {
    let upstream = Upstream::start().await;
    let server = start(&photos_route(&upstream.url()));
    let token = server.token_with_photos().await;
    for path in ["/", "/other/x", "/photos", "/PHOTOS/x"] {
        let response = http()
            .get(format!("{}{path}", server.proxy))
            .bearer_auth(&token)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{path}"
        );
        let body: Value = response.json().await.expect("JSON body");
        assert!(body["error"].is_string(), "{body}");
        assert!(body["error_description"].is_string(), "{body}");
    }
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn public_route_forwards_without_a_token_and_strips_reference_tokens() {
    let upstream = Upstream::start().await;
    let server = start(&public_route("open", "/open/", &upstream.url(), ""));
    let token = server.access_token("app").await;

    let cases: &[(Option<String>, Option<&str>)] = &[
        (None, None),
        (Some(format!("Bearer {token}")), None),
        (Some(format!("bearer {token}")), None),
        (
            Some("Bearer rgat_NotEvenARealTokenButStillOurs".into()),
            None,
        ),
        (Some("Bearer rgrt_ARefreshTokenLookalike".into()), None),
        (
            Some("Basic dXNlcjpwYXNz".into()),
            Some("Basic dXNlcjpwYXNz"),
        ),
        (
            Some("Bearer someone-elses-token".into()),
            Some("Bearer someone-elses-token"),
        ),
    ];
    for (sent, expected) in cases {
        let mut request = http().get(format!("{}/open/x", server.proxy));
        if let Some(value) = sent {
            request = request.header("authorization", value);
        }
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), StatusCode::OK, "{sent:?}");
        let seen = upstream.requests();
        upstream.clear();
        assert_eq!(seen.len(), 1);
        assert_eq!(
            seen[0].header("authorization").as_deref(),
            *expected,
            "sent {sent:?}"
        );
        for (name, value) in &seen[0].headers {
            assert!(!contains(value, b"rgat_"), "`{name}` leaked a token");
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP/2 from the client, and streaming
// ---------------------------------------------------------------------------

#[tokio::test]
async fn h2c_prior_knowledge_requests_are_proxied() {
    let upstream = Upstream::start().await;
    let host_upstream = Upstream::start().await;
    let routes = [
        photos_route(&upstream.url()),
        public_route(
            "api",
            "/",
            &host_upstream.url(),
            "host = \"api.example.com\"",
        ),
    ]
    .join("\n");
    let server = start(&routes);
    let token = server.token_with_photos().await;
    let mut sender = h2c(&server).await;

    // Several requests on the one connection.
    for i in 0..3 {
        let request = Request::get(format!(
            "http://127.0.0.1:{}/photos/h2/{i}",
            server.proxy_port
        ))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
        let reply = h2_send(&mut sender, request).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert!(reply.headers.contains_key("x-request-id"));
        let echo: Value = serde_json::from_slice(&reply.body).expect("echo");
        assert_eq!(echo["authorization"], "Bearer down-abc");
        assert_eq!(echo["path"], format!("/photos/h2/{i}"));
    }

    // No token over h2 is the same 401 as over HTTP/1.1.
    let request = Request::get(format!("http://127.0.0.1:{}/photos/x", server.proxy_port))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let reply = h2_send(&mut sender, request).await;
    assert_eq!(reply.status, 401);
    let body: Value = serde_json::from_slice(&reply.body).expect("JSON error");
    assert_eq!(body["error"], "missing_token");

    // The :authority pseudo-header selects host routes.
    let request = Request::get("http://api.example.com/hello")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let reply = h2_send(&mut sender, request).await;
    assert_eq!(reply.status, 200);
    assert_eq!(host_upstream.requests().len(), 1);

    for request in upstream.requests() {
        for (name, value) in &request.headers {
            assert!(!contains(value, b"rgat_"), "`{name}` leaked the token");
        }
    }
}

#[tokio::test]
async fn large_request_bodies_reach_the_upstream_intact() {
    let upstream = Upstream::start().await;
    let server = start(&photos_route(&upstream.url()));
    let token = server.token_with_photos().await;
    let body: Vec<u8> = (0..5 * MIB).map(pattern).collect();

    // HTTP/1.1 with a Content-Length.
    let response = http()
        .post(format!("{}/photos/upload", server.proxy))
        .bearer_auth(&token)
        .body(body.clone())
        .send()
        .await
        .expect("upload");
    assert_eq!(response.status(), StatusCode::OK);
    let echo: Value = response.json().await.expect("echo");
    assert_eq!(echo["body_len"], 5 * MIB);

    // HTTP/2 (h2c).
    let mut sender = h2c(&server).await;
    let request = Request::post(format!(
        "http://127.0.0.1:{}/photos/upload-h2",
        server.proxy_port
    ))
    .header("authorization", format!("Bearer {token}"))
    .body(Full::new(Bytes::from(body.clone())))
    .expect("request");
    let reply = h2_send(&mut sender, request).await;
    assert_eq!(reply.status, 200);
    let echo: Value = serde_json::from_slice(&reply.body).expect("echo");
    assert_eq!(echo["body_len"], 5 * MIB);

    let seen = upstream.requests();
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert!(
            request.body == body,
            "{}: the body arrived altered",
            request.path
        );
        assert_eq!(
            request.header("authorization").as_deref(),
            Some("Bearer down-abc")
        );
    }
}

#[tokio::test]
async fn request_body_is_streamed_to_the_upstream_before_it_ends() {
    let origin = Origin::start().await;
    let server = start(&photos_route(&origin.url()));
    let token = server.token_with_photos().await;
    let mut first_frame = origin.watch_first_frame();

    let stream = tokio::net::TcpStream::connect(("127.0.0.1", server.proxy_port))
        .await
        .expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
    let request = Request::post("/photos/stream-in")
        .header("host", "127.0.0.1")
        .header("authorization", format!("Bearer {token}"))
        .body(StreamBody::new(rx))
        .expect("request");
    let response = tokio::spawn(sender.send_request(request));

    use futures::SinkExt;
    let total = 3 * MIB;
    tx.send(Ok(Frame::data(pattern_bytes(0, CHUNK))))
        .await
        .expect("first chunk");
    // The upstream sees the start of the body while the client still holds
    // the rest: the gateway does not buffer whole bodies.
    let seen = tokio::time::timeout(Duration::from_secs(20), first_frame.recv())
        .await
        .expect("the upstream saw the first chunk before the body ended")
        .expect("first frame size");
    assert!(seen > 0);
    let mut at = CHUNK;
    while at < total {
        let end = (at + CHUNK).min(total);
        tx.send(Ok(Frame::data(pattern_bytes(at, end))))
            .await
            .expect("chunk");
        at = end;
    }
    drop(tx);
    let response = tokio::time::timeout(Duration::from_secs(60), response)
        .await
        .expect("response within 60 s")
        .expect("task")
        .expect("response");
    assert_eq!(response.status(), 200);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let answer: Value = serde_json::from_slice(&body).expect("JSON");
    let expected: Vec<u8> = (0..total).map(pattern).collect();
    assert_eq!(answer["len"], total);
    assert_eq!(answer["sum"], weighted_sum(&expected));
}

#[tokio::test]
async fn large_responses_stream_back_intact() {
    let origin = Origin::start().await;
    let server = start(&photos_route(&origin.url()));
    let token = server.token_with_photos().await;
    let len = 16 * MIB;

    // HTTP/1.1
    let response = http()
        .get(format!("{}/photos/big/{len}", server.proxy))
        .bearer_auth(&token)
        .send()
        .await
        .expect("download");
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.bytes().await.expect("body");
    assert_eq!(body.len(), len);
    assert!(
        body.iter().enumerate().all(|(i, b)| *b == pattern(i)),
        "the body arrived altered"
    );

    // HTTP/2
    let mut sender = h2c(&server).await;
    let request = Request::get(format!(
        "http://127.0.0.1:{}/photos/big/{len}",
        server.proxy_port
    ))
    .header("authorization", format!("Bearer {token}"))
    .body(Full::new(Bytes::new()))
    .expect("request");
    let reply = h2_send(&mut sender, request).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), len);
    assert!(reply.body.iter().enumerate().all(|(i, b)| *b == pattern(i)));
}

#[tokio::test]
async fn response_body_streams_to_the_client_before_the_upstream_finishes() {
    let origin = Origin::start().await;
    let server = start(&photos_route(&origin.url()));
    let token = server.token_with_photos().await;
    let len = 4 * MIB;

    let mut response = http()
        .get(format!("{}/photos/gated/{len}", server.proxy))
        .bearer_auth(&token)
        .send()
        .await
        .expect("download");
    assert_eq!(response.status(), StatusCode::OK);
    // The origin has sent only its first chunk and waits: the client must
    // already be able to read it.
    let mut received = Vec::new();
    while received.len() < CHUNK {
        let chunk = tokio::time::timeout(Duration::from_secs(20), response.chunk())
            .await
            .expect("the first chunk arrived while the upstream was still sending")
            .expect("chunk")
            .expect("not the end of the body");
        received.extend_from_slice(&chunk);
    }
    origin.release();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(60), response.chunk())
        .await
        .expect("the rest within 60 s")
        .expect("chunk")
    {
        received.extend_from_slice(&chunk);
    }
    assert_eq!(received.len(), len);
    assert!(received.iter().enumerate().all(|(i, b)| *b == pattern(i)));
}

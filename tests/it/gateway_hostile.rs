//! Hostile input at the gateway, end to end: oversized and repeated
//! Authorization headers, garbage tokens, header injection through stored
//! credentials, and raw-socket requests with bytes no HTTP client would send.
//!
//! Every case must be answered with a 4xx — never a 5xx, never a hang, never
//! a dropped connection without a status line — must not reach the upstream
//! with anything it should not see, and the proxy must keep serving
//! afterwards with no panic in its log.

use crate::common::raw::*;
use crate::common::upstream::{Recorded, Upstream};
use crate::common::*;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const KIB: usize = 1024;

/// refgate with `/photos/` (protected, credential `photos`) and `/open/`
/// (public), both to `upstream`.
fn start(upstream: &Upstream) -> Refgate {
    let url = upstream.url();
    Refgate::start_with(Options {
        extra: format!(
            r#"{AUTHORITY}
[[routes]]
name = "photos"
path_prefix = "/photos/"
upstream = "{url}"
required_scopes = ["photos.read"]
credential = "photos"

[[routes]]
name = "open"
path_prefix = "/open/"
upstream = "{url}"
auth = "none"
"#
        ),
        ..Options::default()
    })
}

/// The proxy still answers a normal request normally.
async fn assert_still_serving(server: &Refgate, token: &str, upstream: &Upstream) {
    upstream.clear();
    let response = http()
        .get(format!("{}/photos/after", server.proxy))
        .bearer_auth(token)
        .send()
        .await
        .expect("the proxy still accepts requests");
    assert_eq!(response.status(), StatusCode::OK);
    sent_once(upstream, "after");
    upstream.clear();
}

/// The one request the upstream received, which carried the stored
/// downstream credential.
fn sent_once(upstream: &Upstream, what: &str) -> Recorded {
    let mut seen = upstream.requests();
    assert_eq!(seen.len(), 1, "{what}: {seen:?}");
    let sent = seen.remove(0);
    assert_eq!(
        sent.header("authorization").as_deref(),
        Some("Bearer down-abc"),
        "{what}"
    );
    sent
}

fn assert_no_panic(server: &Refgate) {
    let log = server.log();
    assert!(!log.contains("panicked"), "refgate logged a panic:\n{log}");
}

// ---------------------------------------------------------------------------
// Raw HTTP/1.1
// ---------------------------------------------------------------------------

/// `GET <path>` with the given extra header lines (each without CRLF), and
/// `Connection: close`.
fn raw_get(path: &str, lines: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n").into_bytes();
    for line in lines {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out
}

/// A case's verdict: `Ok` or what was wrong.
fn judge(reply: &Result<Reply, String>) -> Result<u16, String> {
    let reply = reply.as_ref().map_err(Clone::clone)?;
    if !(400..500).contains(&reply.status) {
        return Err(format!(
            "status {} ({})",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        ));
    }
    Ok(reply.status)
}

// ---------------------------------------------------------------------------
// Authorization headers and tokens
// ---------------------------------------------------------------------------

#[tokio::test]
async fn oversized_and_repeated_authorization_headers_are_4xx() {
    let upstream = Upstream::start().await;
    let server = start(&upstream);
    let token = server.token_with_photos().await;

    let huge = format!("Bearer rgat_{}", "A".repeat(64 * KIB));
    let response = http()
        .get(format!("{}/photos/x", server.proxy))
        .header("authorization", &huge)
        .send()
        .await
        .expect("request");
    let status = response.status();
    assert!(status.is_client_error(), "64 KiB Authorization: {status}");
    let body = response.bytes().await.expect("body");
    assert!(
        !contains(&body, b"AAAAAAAAAAAAAAAA"),
        "the oversized token was echoed"
    );

    // Repeated, in every combination: valid twice, valid + garbage,
    // valid + another scheme, and many copies.
    let bearer = format!("Bearer {token}");
    let combos: Vec<Vec<&str>> = vec![
        vec![&bearer, &bearer],
        vec![&bearer, "Bearer rgat_other"],
        vec!["Basic dXNlcjpwYXNz", &bearer],
        vec![&bearer; 50],
    ];
    for values in &combos {
        let mut request = http().get(format!("{}/photos/x", server.proxy));
        for value in values {
            request = request.header("authorization", *value);
        }
        let response = request.send().await.expect("request");
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{} Authorization headers",
            values.len()
        );
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["error"], "invalid_request");
    }
    assert!(upstream.requests().is_empty());
    assert_still_serving(&server, &token, &upstream).await;
    assert_no_panic(&server);
}

#[tokio::test]
async fn garbage_bearer_tokens_are_4xx_and_never_forwarded() {
    let upstream = Upstream::start().await;
    let server = start(&upstream);
    let token = server.token_with_photos().await;

    // A real refresh token of a grant that holds the credential.
    let (status, minted) = server
        .token(
            "minter",
            &[
                ("grant_type", "arbitrary_token"),
                ("subject", "alice"),
                ("issuer", "https://idp.example.com"),
                ("scope", "photos.read offline_access"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{minted}");
    server
        .store_credential(
            str_of(&minted, "access_token"),
            "photos",
            credential("down-abc", "Bearer"),
        )
        .await;
    let refresh = str_of(&minted, "refresh_token").to_string();
    assert!(refresh.starts_with("rgrt_"));

    let random_shape = format!("rgat_{}", "Qx7-_".repeat(9)); // 45 chars, plausible
    let ten_kb = format!("rgat_{}", "b".repeat(10 * KIB));
    let cases: Vec<(String, u16, &str)> = vec![
        (format!("Bearer {refresh}"), 401, "invalid_token"),
        (format!("Bearer {random_shape}"), 401, "invalid_token"),
        (format!("Bearer {ten_kb}"), 400, "invalid_request"),
        ("Bearer rgat_abc$def".into(), 400, "invalid_request"),
        ("Bearer rgat_a,b".into(), 400, "invalid_request"),
        ("Bearer rgat_\"quoted\"".into(), 400, "invalid_request"),
        ("Bearer rgat_x=y".into(), 400, "invalid_request"),
        ("Bearer =====".into(), 400, "invalid_request"),
        ("Bearer rgat_tab\there".into(), 400, "invalid_request"),
        (format!("Bearer {token} trailing"), 400, "invalid_request"),
        ("Bearer rgat_caf\u{e9}".into(), 400, "invalid_request"),
    ];
    for (value, status, error) in &cases {
        let header = reqwest::header::HeaderValue::from_bytes(value.as_bytes())
            .unwrap_or_else(|_| panic!("{value:?} is sendable"));
        let response = http()
            .get(format!("{}/photos/x", server.proxy))
            .header("authorization", header)
            .send()
            .await
            .expect("request");
        let short: String = value.chars().take(40).collect();
        assert_eq!(response.status().as_u16(), *status, "{short}");
        let body = response.bytes().await.expect("body");
        let body: Value = serde_json::from_slice(&body).expect("JSON error");
        assert_eq!(body["error"], *error, "{short}");
        assert!(body["error_description"].is_string());
        assert!(
            !body
                .to_string()
                .contains(value.trim_start_matches("Bearer ")),
            "{short}: the token is echoed in {body}"
        );
    }
    assert!(upstream.requests().is_empty(), "{:?}", upstream.requests());
    assert_still_serving(&server, &token, &upstream).await;
    assert_no_panic(&server);
}

#[tokio::test]
async fn stored_credentials_cannot_inject_headers_upstream() {
    let upstream = Upstream::start().await;
    let server = start(&upstream);
    let good = server.token_with_photos().await;

    let evil: Vec<(&str, Value)> = vec![
        (
            "CRLF in access_token",
            credential("abc\r\nX-Injected: 1", "Bearer"),
        ),
        (
            "LF in access_token",
            credential("abc\nX-Injected: 1", "Bearer"),
        ),
        (
            "CRLF CRLF in access_token (request splitting)",
            credential(
                "abc\r\n\r\nGET /photos/smuggled HTTP/1.1\r\nX-Injected: 1\r\n\r\n",
                "Bearer",
            ),
        ),
        (
            "CRLF in token_type",
            credential("abc", "Bearer\r\nX-Injected: 1"),
        ),
        ("space in token_type", credential("abc", "Bear er")),
        (
            "space in access_token",
            credential("abc X-Injected: 1", "Bearer"),
        ),
        ("NUL in access_token", credential("abc\u{0}def", "Bearer")),
        (
            "non-ASCII access_token",
            credential("t\u{f6}k\u{e9}n", "Bearer"),
        ),
        ("empty access_token", credential("", "Bearer")),
        ("empty token_type", credential("abc", "")),
    ];
    for (case, stored) in &evil {
        let token = server.access_token("app").await;
        server
            .store_credential(&token, "photos", stored.clone())
            .await;
        let response = http()
            .get(format!("{}/photos/x", server.proxy))
            .bearer_auth(&token)
            .send()
            .await
            .expect("request");
        let status = response.status();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap_or("").to_string());
        let text = response.text().await.expect("body");
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}: {text}");
        let body: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(body["error"], "credential_invalid", "{case}");
        assert_eq!(body["credential"], "photos", "{case}");
        assert!(
            challenge.is_some_and(|c| c.contains("error=\"invalid_token\"")),
            "{case}"
        );
        assert!(!text.contains("X-Injected"), "{case}: echoed in {text}");
    }
    let seen = upstream.requests();
    assert!(
        seen.is_empty(),
        "the upstream received requests with bad credentials: {seen:?}"
    );
    assert_still_serving(&server, &good, &upstream).await;
    for request in upstream.requests() {
        assert!(request.header("x-injected").is_none());
    }
    assert_no_panic(&server);
}

// ---------------------------------------------------------------------------
// Raw bytes
// ---------------------------------------------------------------------------

#[tokio::test]
async fn raw_requests_with_invalid_bytes_are_4xx_and_the_proxy_keeps_serving() {
    let upstream = Upstream::start().await;
    let server = start(&upstream);
    let token = server.token_with_photos().await;
    let auth = format!("Authorization: Bearer {token}");
    let auth = auth.as_bytes();
    let port = server.proxy_port;

    let many_headers: Vec<Vec<u8>> = (0..300)
        .map(|i| format!("X-Filler-{i}: {i}").into_bytes())
        .collect();
    let many_refs: Vec<&[u8]> = many_headers.iter().map(Vec::as_slice).collect();
    let huge_value = format!("X-Huge: {}", "h".repeat(2 * 1024 * KIB));

    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        // Header names.
        ("space in a header name", raw_get("/photos/x", &[auth, b"X Bad: 1"])),
        ("space before the colon", raw_get("/photos/x", &[b"Authorization : Bearer x"])),
        ("control byte in a header name", raw_get("/photos/x", &[auth, b"X-Bad\x01: 1"])),
        ("NUL in a header name", raw_get("/photos/x", &[auth, b"X-B\x00d: 1"])),
        ("non-ASCII header name", raw_get("/photos/x", &[auth, b"X-\xff\xfe: 1"])),
        ("empty header name", raw_get("/photos/x", &[auth, b": value"])),
        ("header line without a colon", raw_get("/photos/x", &[auth, b"NoColonHere"])),
        ("separator in a header name", raw_get("/photos/x", &[auth, b"X(bad): 1"])),
        // Header values.
        ("NUL in a header value", raw_get("/photos/x", &[auth, b"X-Val: a\x00b"])),
        ("bare CR in a header value", raw_get("/photos/x", &[auth, b"X-Val: a\rb"])),
        ("control byte in a header value", raw_get("/photos/x", &[auth, b"X-Val: a\x01b"])),
        ("NUL in the Authorization value", raw_get("/photos/x", &[b"Authorization: Bearer rgat_a\x00b"])),
        ("obs-text in the Authorization value", raw_get("/photos/x", &[b"Authorization: Bearer rgat_\xff\xfe"])),
        ("bare CR in the Authorization value", raw_get("/photos/x", &[b"Authorization: Bearer rgat_a\rX-Injected: 1"])),
        ("folded Authorization", raw_get("/photos/x", &[b"Authorization: Bearer", b" rgat_folded"])),
        ("obs-fold continuation", raw_get("/photos/x", &[auth, b"X-Folded: a", b" b"])),
        // Framing.
        ("two different Content-Lengths", format!("POST /photos/x HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Length: 3\r\nContent-Length: 30\r\nConnection: close\r\n\r\nabc").into_bytes()),
        ("non-numeric Content-Length", format!("POST /photos/x HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Length: 1x\r\nConnection: close\r\n\r\nabc").into_bytes()),
        ("negative Content-Length", format!("POST /photos/x HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Length: -1\r\nConnection: close\r\n\r\n").into_bytes()),
        ("unknown Transfer-Encoding", format!("POST /photos/x HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\nabc").into_bytes()),
        ("bad chunk size", format!("POST /photos/x HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nabc\r\n0\r\n\r\n").into_bytes()),
        // Request line.
        // (At least 24 bytes: see `short_http1_request_is_answered`.)
        ("garbage request line", b"\x00\x01\x02\x03 garbage garbage garbage\r\n\r\n".to_vec()),
        ("unknown HTTP version", format!("GET /photos/x HTTP/7.3\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").into_bytes()),
        ("lowercase method and version", b"get /photos/x http/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".to_vec()),
        // Hosts.
        ("two Host headers", format!("GET /photos/x HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: api.example.com\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").into_bytes()),
        ("space inside Host", format!("GET /photos/x HTTP/1.1\r\nHost: api example.com\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").into_bytes()),
        ("slash inside Host", format!("GET /photos/x HTTP/1.1\r\nHost: api.example.com/evil\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").into_bytes()),
        ("non-numeric port in Host", format!("GET /photos/x HTTP/1.1\r\nHost: api.example.com:http\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").into_bytes()),
        ("userinfo in Host", format!("GET /photos/x HTTP/1.1\r\nHost: user@api.example.com\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").into_bytes()),
        ("HTTP/1.1 without Host", format!("GET /photos/x HTTP/1.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").into_bytes()),
        ("absolute-form target disagreeing with Host", format!("GET http://api.example.com/photos/x HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").into_bytes()),
        // Sizes.
        ("300 header lines", raw_get("/photos/x", &many_refs)),
        ("2 MiB header value", raw_get("/photos/x", &[huge_value.as_bytes()])),
    ];
    // The public route must not forward what the protected one rejects.
    cases.push((
        "public route: NUL in a header value",
        raw_get("/open/x", &[b"X-Val: a\x00b"]),
    ));
    cases.push((
        "public route: bare CR with an injected header",
        raw_get("/open/x", &[b"X-Val: a\rX-Injected: 1"]),
    ));

    let mut failures = Vec::new();
    let mut report = String::new();
    for (name, bytes) in &cases {
        let reply = send_raw(port, bytes).await;
        match judge(&reply) {
            Ok(status) => {
                report.push_str(&format!("  {status} {name}\n"));
            }
            Err(why) => failures.push(format!("{name}: {why}")),
        }
    }
    eprintln!("answers:\n{report}");
    assert!(
        failures.is_empty(),
        "cases not answered with a 4xx:\n  {}",
        failures.join("\n  ")
    );
    for request in upstream.requests() {
        assert!(
            request.header("x-injected").is_none(),
            "an injected header reached the upstream: {request:?}"
        );
        assert!(
            !request.path.contains("smuggled"),
            "a smuggled request reached the upstream: {request:?}"
        );
    }
    assert_still_serving(&server, &token, &upstream).await;
    assert_no_panic(&server);
}

#[tokio::test]
async fn a_connection_sending_garbage_after_a_good_request_does_not_disturb_others() {
    let upstream = Upstream::start().await;
    let server = start(&upstream);
    let token = server.token_with_photos().await;

    // A keep-alive connection: one good request, then garbage.
    let mut stream = TcpStream::connect(("127.0.0.1", server.proxy_port))
        .await
        .expect("connect");
    let good = format!(
        "GET /photos/ok HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    stream.write_all(good.as_bytes()).await.expect("write");
    let (mut answers, rest, _) = read_replies(&mut stream, 1).await;
    let reply = answers.pop().unwrap_or_else(|| panic!("no answer: {rest}"));
    assert_eq!(reply.status, 200);
    assert!(reply.header("x-request-id").is_some());
    stream
        .write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n")
        .await
        .expect("write garbage");
    // Answered with a 4xx or not at all, and the connection closes.
    let answers = read_until_closed(&mut stream)
        .await
        .expect("the connection with garbage on it stayed open");
    for reply in answers {
        assert!(
            (400..500).contains(&reply.status),
            "garbage on a kept-alive connection: {}",
            reply.status
        );
    }

    // Half a request, then silence, on another connection: others are
    // served meanwhile.
    let mut stalled = TcpStream::connect(("127.0.0.1", server.proxy_port))
        .await
        .expect("connect");
    stalled
        .write_all(b"GET /photos/x HTTP/1.1\r\nHost: 127.0")
        .await
        .expect("write half");
    assert_still_serving(&server, &token, &upstream).await;
    drop(stalled);
    assert_no_panic(&server);
}

#[tokio::test]
async fn ambiguous_framing_and_raw_bytes_in_the_target_are_never_passed_on_as_sent() {
    let upstream = Upstream::start().await;
    let server = start(&upstream);
    let token = server.token_with_photos().await;
    let port = server.proxy_port;

    // Content-Length and Transfer-Encoding together (a request-smuggling
    // shape): refused, or framed by Transfer-Encoding alone and the
    // connection closed (RFC 9112 §6.1) — the bytes after the chunked body
    // must never become a second request, nor reach the upstream with a
    // Content-Length beside the chunked encoding.
    let mut smuggle = format!(
        "POST /photos/x HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    smuggle.extend_from_slice(
        format!("0\r\n\r\nGET /photos/smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n").as_bytes(),
    );
    // Read until refgate closes the connection: after that, nothing more
    // of what was sent on it can reach the upstream.
    let mut stream = connect(port).await.expect("connect");
    stream.write_all(&smuggle).await.expect("write");
    let answers = read_until_closed(&mut stream)
        .await
        .expect("the connection stays open after an ambiguous framing");
    assert_eq!(answers.len(), 1, "CL+TE: {answers:?}");
    assert!(answers[0].status < 500, "CL+TE: {}", answers[0].status);
    for request in upstream.requests() {
        assert!(!request.path.contains("smuggled"), "smuggled: {request:?}");
        assert!(
            request.header("content-length").is_none()
                || request.header("transfer-encoding").is_none(),
            "both framings forwarded: {request:?}"
        );
    }
    upstream.clear();

    // NUL and space in the request target: pingora percent-encodes an
    // illegal request line rather than refusing it. Either is fine; what
    // must not happen is the raw byte reaching the upstream.
    for (name, target) in [
        ("NUL in the path", &b"/photos/a\x00b"[..]),
        ("space in the path", &b"/photos/a b"[..]),
        ("DEL in the path", &b"/photos/a\x7fb"[..]),
    ] {
        let mut bytes = b"GET ".to_vec();
        bytes.extend_from_slice(target);
        bytes.extend_from_slice(
            format!(" HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        let reply = send_raw(port, &bytes)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(reply.status < 500, "{name}: {}", reply.status);
        for request in upstream.requests() {
            assert!(
                request.path.bytes().all(|b| b.is_ascii_graphic()),
                "{name}: the upstream saw {:?}",
                request.path
            );
        }
        upstream.clear();
    }
    assert_still_serving(&server, &token, &upstream).await;
    assert_no_panic(&server);
}

#[tokio::test]
async fn dot_segments_cannot_escape_a_routes_scope_check() {
    let upstream = Upstream::start().await;
    let url = upstream.url();
    // Same upstream and credential; the admin area needs another scope.
    let server = Refgate::start_with(Options {
        extra: format!(
            r#"{AUTHORITY}
[[routes]]
name = "photos"
path_prefix = "/photos/"
upstream = "{url}"
required_scopes = ["photos.read"]
credential = "photos"

[[routes]]
name = "admin"
path_prefix = "/admin/"
upstream = "{url}"
required_scopes = ["photos.write"]
credential = "photos"

[[routes]]
name = "open"
path_prefix = "/open/"
upstream = "{url}"
auth = "none"
"#
        ),
        ..Options::default()
    });
    let reader = str_of(
        &server.client_token("app", Some("photos.read")).await,
        "access_token",
    )
    .to_string();
    server
        .store_credential(&reader, "photos", credential("down-abc", "Bearer"))
        .await;

    // The reader may not reach /admin/ directly...
    let response = http()
        .get(format!("{}/admin/x", server.proxy))
        .bearer_auth(&reader)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    // ...nor through dot segments an upstream would resolve, raw or
    // percent-encoded (sent raw: reqwest would normalise them away).
    let escapes = [
        "/photos/../admin/x",
        "/photos/./../admin/x",
        "/photos/%2e%2e/admin/x",
        "/photos/%2E%2e/admin/x",
        "/photos/.%2e/admin/x",
        "/photos/x/../../admin/x",
        "/open/../admin/x",
        "/photos/..",
        // What servlet containers and Windows servers also resolve.
        "/photos/..;/admin/x",
        "/photos/..%2Fadmin/x",
        "/photos/..%5Cadmin/x",
    ];
    for path in escapes {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {reader}\r\nConnection: close\r\n\r\n"
        );
        let reply = send_raw(server.proxy_port, request.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(reply.status, 400, "{path}");
        let body: Value = serde_json::from_slice(&reply.body).expect("JSON");
        assert_eq!(body["error"], "invalid_request", "{path}");
    }
    // Percent-encoded unreserved characters are the same path (RFC 3986
    // §6.2.2.2): they are routed — and scope-checked — as the upstream will
    // read them.
    for (path, status) in [
        ("/%61dmin/x", 403),
        ("/%70hotos/x", 200),
        ("/photos/%7Euser", 200),
    ] {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {reader}\r\nConnection: close\r\n\r\n"
        );
        let reply = send_raw(server.proxy_port, request.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(reply.status, status, "{path}");
    }
    // The upstream gets the path as it was routed.
    let seen: Vec<String> = upstream.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(seen, ["/photos/x", "/photos/~user"]);
    assert_no_panic(&server);
}

/// A complete HTTP/1.x request shorter than the 24-byte HTTP/2 preface is
/// answered: the proxy listener decides between HTTP/1 and h2c as soon as
/// the first bytes differ from the preface (pingora's own detection waits
/// for all 24).
#[tokio::test]
async fn short_http1_request_is_answered() {
    let upstream = Upstream::start().await;
    let server = start(&upstream);
    let reply = send_raw(server.proxy_port, b"GET / HTTP/1.0\r\n\r\n").await;
    assert!(
        reply.as_ref().is_ok_and(|r| r.status == 404),
        "{:?}",
        reply.map(|r| r.status)
    );
}

#[tokio::test]
async fn unread_bodies_of_rejected_requests_are_not_parsed_as_requests() {
    let upstream = Upstream::start().await;
    let server = start(&upstream);
    let token = server.token_with_photos().await;

    // Keep-alive: a POST the gateway rejects before reading its body, whose
    // body is itself a request; then an honest request. The body must be
    // drained (or the connection closed), never served.
    let hidden = "GET /open/smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let mut bytes = Vec::new();
    for authorization in [
        "",
        "Authorization: Bearer rgat_unknownUnknownUnknownUnknown\r\n",
    ] {
        bytes.extend_from_slice(
            format!(
                "POST /photos/x HTTP/1.1\r\nHost: 127.0.0.1\r\n{authorization}Content-Length: {}\r\n\r\n{hidden}",
                hidden.len()
            )
            .as_bytes(),
        );
    }
    bytes.extend_from_slice(
        format!("GET /photos/after HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let mut stream = TcpStream::connect(("127.0.0.1", server.proxy_port))
        .await
        .expect("connect");
    stream.write_all(&bytes).await.expect("write");
    let answers = read_until_closed(&mut stream)
        .await
        .expect("the connection closes after `Connection: close`");
    let statuses: Vec<u16> = answers.iter().map(|reply| reply.status).collect();
    assert_eq!(statuses.first(), Some(&401), "{answers:?}");
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 200) && statuses.len() <= 3,
        "{statuses:?}"
    );
    let paths: Vec<String> = upstream.requests().into_iter().map(|r| r.path).collect();
    assert!(
        !paths.iter().any(|p| p.contains("smuggled")),
        "a body was served as a request: {paths:?}"
    );
    if statuses.len() == 3 {
        assert_eq!(statuses, [401, 401, 200]);
        assert_eq!(paths, ["/photos/after"]);
    }
    assert_no_panic(&server);
}

// ---------------------------------------------------------------------------
// Hop-by-hop headers
// ---------------------------------------------------------------------------

/// A raw request on `/photos/` with `token` and the given header lines.
fn raw_photos(token: &str, lines: &[&str]) -> Vec<u8> {
    let mut out =
        format!("GET /photos/hop HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n");
    for line in lines {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// Headers that describe the client's own connection to refgate, and
/// those its `Connection` header names, are not passed on; naming
/// refgate's own headers there neither removes them nor lets the client's
/// versions through.
#[tokio::test]
async fn hop_by_hop_headers_stay_with_the_client_connection() {
    let upstream = Upstream::start().await;
    let server = start(&upstream);
    let token = server.token_with_photos().await;

    let reply = send_raw(
        server.proxy_port,
        &raw_photos(
            &token,
            &[
                "Connection: keep-alive, X-Hop-Secret, X-Other-Hop",
                "Keep-Alive: timeout=5",
                "TE: trailers",
                "Trailer: X-Trailing",
                "Proxy-Authorization: Basic cHJveHk6c2VjcmV0",
                "Proxy-Connection: keep-alive",
                "X-Hop-Secret: hop-1",
                "X-Other-Hop: hop-2",
                "HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA",
                "Upgrade: h2c",
                "X-End-To-End: kept",
            ],
        ),
    )
    .await
    .expect("an answer");
    assert_eq!(reply.status, 200, "{reply:?}");
    let sent = &sent_once(&upstream, "hop-by-hop headers");
    for name in [
        "keep-alive",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
        "x-hop-secret",
        "x-other-hop",
        "http2-settings",
        "upgrade",
    ] {
        assert_eq!(sent.header_count(name), 0, "{name} passed on: {sent:?}");
    }
    if let Some(connection) = sent.header("connection") {
        let connection = connection.to_ascii_lowercase();
        assert!(!connection.contains("hop"), "{connection}");
        assert!(!connection.contains("upgrade"), "{connection}");
    }
    assert_eq!(sent.header("x-end-to-end").as_deref(), Some("kept"));
    upstream.clear();

    // refgate's own headers named as hop-by-hop: still refgate's, or the
    // request is refused; never the client's, never missing.
    for (connection, claimed) in [
        (
            "Connection: authorization",
            "Authorization: Bearer client-claimed",
        ),
        ("Connection: x-request-id", "X-Request-Id: client-claimed"),
        (
            "Connection: x-forwarded-for",
            "X-Forwarded-For: 203.0.113.9",
        ),
        (
            "Connection: X-Forwarded-Host",
            "X-Forwarded-Host: evil.test",
        ),
        ("Connection: forwarded", "Forwarded: for=203.0.113.9"),
        ("Connection: host", "X-Unused: 1"),
        (
            "Connection: \"x-forwarded-proto\"",
            "X-Forwarded-Proto: https",
        ),
    ] {
        let reply = send_raw(
            server.proxy_port,
            &raw_photos(&token, &[connection, claimed]),
        )
        .await
        .expect("an answer");
        match reply.status {
            200 => {
                let sent = &sent_once(&upstream, connection);
                assert_eq!(sent.header_count("authorization"), 1, "{connection}");
                assert!(sent.header("x-request-id").is_some(), "{connection}");
                assert_eq!(
                    sent.header("x-forwarded-for").as_deref(),
                    Some("127.0.0.1"),
                    "{connection}"
                );
                assert_ne!(
                    sent.header("x-forwarded-host").as_deref(),
                    Some("evil.test"),
                    "{connection}"
                );
                assert_eq!(sent.header_count("forwarded"), 0, "{connection}");
                assert_eq!(
                    sent.header("x-forwarded-proto").as_deref(),
                    Some("http"),
                    "{connection}"
                );
                assert_eq!(
                    sent.header("host").as_deref().map(|h| !h.is_empty()),
                    Some(true)
                );
            }
            400 => {
                assert!(upstream.requests().is_empty(), "{connection}");
                assert_eq!(
                    reply.json()["error"],
                    "invalid_request",
                    "{connection}: {reply:?}"
                );
            }
            other => panic!("{connection}: status {other}: {reply:?}"),
        }
        upstream.clear();
    }
    assert_still_serving(&server, &token, &upstream).await;
    assert_no_panic(&server);
}

/// The headers refgate sets in place of the client's (`Host`,
/// `Authorization`, `x-request-id`) are replaced whatever case the client
/// spelled their names in and wherever they stand among the others: the
/// upstream gets each exactly once, with refgate's value, and every other
/// header as sent; with two `x-request-id` headers, one id, the same up
/// and down.
#[tokio::test]
async fn headers_refgate_sets_replace_the_clients_in_any_spelling() {
    let upstream = Upstream::start().await;
    let server = start(&upstream);
    let token = server.token_with_photos().await;
    let expected_host = format!("127.0.0.1:{}", upstream.port);
    // The ids each case may be answered with (none listed: one refgate
    // made, not what the client sent).
    let given: &[&str] = &["given-id.1"];
    let fresh: &[&str] = &[];
    let either: &[&str] = &["one", "two"];
    for (case, head, ids) in [
        (
            "odd case, refgate's headers between others",
            format!(
                "GET /photos/hop HTTP/1.1\r\nX-First: 1\r\nhOsT: api.example.com\r\nX-Before: 2\r\n\
                 AUTHORIZATION: Bearer {token}\r\nX-REQUEST-ID: given-id.1\r\nX-After: 3\r\n\r\n"
            ),
            given,
        ),
        (
            "lower case, an id refgate does not take",
            format!(
                "GET /photos/hop HTTP/1.1\r\nhost: 127.0.0.1\r\nX-First: 1\r\nX-Before: 2\r\n\
                 x-request-id: not a sane id\r\nauthorization: bearer {token}\r\nX-After: 3\r\n\r\n"
            ),
            fresh,
        ),
        (
            "two ids",
            format!(
                "GET /photos/hop HTTP/1.1\r\nHost: 127.0.0.1\r\nX-First: 1\r\nX-Request-Id: one\r\n\
                 X-Before: 2\r\nAuthorization: Bearer {token}\r\nX-Request-Id: two\r\nX-After: 3\r\n\r\n"
            ),
            either,
        ),
    ] {
        upstream.clear();
        let reply = send_raw(server.proxy_port, head.as_bytes())
            .await
            .expect("an answer");
        assert_eq!(reply.status, 200, "{case}: {reply:?}");
        let sent = &sent_once(&upstream, case);
        assert_eq!(sent.header("host"), Some(expected_host.clone()), "{case}");
        let answered_id = reply.header("x-request-id").expect("a request id");
        assert_eq!(
            sent.header("x-request-id").as_deref(),
            Some(answered_id),
            "{case}"
        );
        if ids.is_empty() {
            assert!(
                !answered_id.is_empty() && answered_id != "not a sane id",
                "{case}: {answered_id}"
            );
        } else {
            assert!(ids.contains(&answered_id), "{case}: {answered_id}");
        }
        for (name, value) in [("x-first", "1"), ("x-before", "2"), ("x-after", "3")] {
            assert_eq!(sent.header(name).as_deref(), Some(value), "{case}: {name}");
        }
        for name in [
            "host",
            "authorization",
            "x-request-id",
            "x-first",
            "x-before",
            "x-after",
        ] {
            assert_eq!(sent.header_count(name), 1, "{case}: {name}: {sent:?}");
        }
    }
}

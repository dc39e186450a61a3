//! The gateway's edge as a hostile client meets it: paths that other
//! servers read differently from refgate's route match, the `Host` and
//! forwarding headers the upstream trusts, tokens in URLs, requests that
//! are not for a gateway at all, and upstream 401s repeated to make
//! refgate rotate a credential again and again.
//!
//! `/open/` is public and `/open/admin/` needs a scope throughout: every
//! bypass below would otherwise reach the admin resource without a token
//! at an upstream that merges slashes, cuts `;` parameters, ignores case
//! or decodes `%2F`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::oidc::OidcAs;
use crate::common::raw::*;
use crate::common::upstream::Upstream;
use crate::common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A GET of `target` with `headers` (each ending in CRLF), closing after.
fn get_request(target: &str, headers: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Connection: close\r\n\r\n")
        .into_bytes()
}

/// refgate with `/open/` public and `/open/admin/` needing `photos.write`
/// and credential `photos`, plus `extra` TOML.
fn start(upstream: &Upstream, gateway: &str, extra: &str) -> Refgate {
    let url = upstream.url();
    Refgate::start_with(Options {
        gateway: gateway.to_string(),
        extra: format!(
            r#"{AUTHORITY}
[[routes]]
name = "open"
path_prefix = "/open/"
upstream = "{url}"
auth = "none"

[[routes]]
name = "admin"
path_prefix = "/open/admin/"
upstream = "{url}"
required_scopes = ["photos.write"]
credential = "photos"

{extra}
"#
        ),
        ..Options::default()
    })
}

/// Asserts a 400 `invalid_request` JSON answer with a request id.
fn assert_invalid_request(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 400, "{what}: {reply:?}");
    let body = reply.json();
    assert_eq!(body["error"], "invalid_request", "{what}: {reply:?}");
    assert!(body["error_description"].is_string(), "{what}: {body}");
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{what}"
    );
    assert!(reply.header("x-request-id").is_some(), "{what}: {reply:?}");
    assert_eq!(reply.header("cache-control"), Some("no-store"), "{what}");
}

// ---------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------

#[tokio::test]
async fn paths_other_servers_map_onto_a_scoped_route_are_refused() {
    let upstream = Upstream::start().await;
    let server = start(&upstream, "", "");

    // The scoped route itself needs a token.
    let reply = send_raw(server.proxy_port, &get_request("/open/admin/x", ""))
        .await
        .expect("answer");
    assert_eq!(reply.status, 401, "{reply:?}");

    let bypasses: [&[u8]; 13] = [
        b"/open//admin/x",
        b"/open/admin;jsessionid=1/x",
        b"/open/admin;/x",
        b"/open/ADMIN/x",
        b"/open/Admin/x",
        b"/open/admin%2Fx",
        b"/open/admin%2fx",
        b"/open/admin%5Cx",
        b"/open/admin%5cx",
        b"/open/admin\\x",
        b"/open/admin/%00x",
        b"/open/adm\x7fin/x",
        b"/open/\xc3\xa4dmin/x",
    ];
    for path in bypasses {
        let mut request = b"GET ".to_vec();
        request.extend_from_slice(path);
        request.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        let what = lossy(path);
        let reply = send_raw(server.proxy_port, &request)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(reply.status, 400, "{what}: {reply:?}");
        // The few bytes the HTTP parser itself refuses get its bare 400;
        // everything that reaches routing gets the JSON error.
        if !reply.body.is_empty() {
            assert_invalid_request(&reply, &what);
        }
    }
    // A path that matches no route exactly is not forwarded at all, in
    // whatever case: 404.
    let reply = send_raw(server.proxy_port, &get_request("/OPEN/admin/x", ""))
        .await
        .expect("answer");
    assert_eq!(reply.status, 404, "{reply:?}");
    assert!(
        upstream.requests().is_empty(),
        "a bypass reached the upstream: {:?}",
        upstream.requests()
    );

    // The public route still serves what is plainly its own.
    let reply = send_raw(server.proxy_port, &get_request("/open/x/y?q=1", ""))
        .await
        .expect("answer");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(upstream.requests()[0].path, "/open/x/y?q=1");
}

#[tokio::test]
async fn the_upstream_gets_exactly_the_routed_path() {
    let upstream = Upstream::start().await;
    let url = upstream.url();
    let server = start(
        &upstream,
        "",
        &format!(
            "[[routes]]\nname = \"short\"\npath_prefix = \"/s\"\nupstream = \"{url}\"\nauth = \"none\"\nstrip_prefix = true\n"
        ),
    );
    let port = server.proxy_port;
    for (target, expected) in [
        // Percent-encoded unreserved characters are forwarded decoded: the
        // path the upstream reads is the path that was routed.
        ("/%6Fpen/%7Euser", "/open/~user"),
        ("/open/a%20b?x=%2F", "/open/a%20b?x=%2F"),
        // A prefix covers whole segments; `strip_prefix` leaves a path.
        ("/s/x", "/x"),
        ("/s", "/"),
        ("/s?q", "/?q"),
        // Absolute-form is forwarded in origin-form (RFC 9112 §3.2.1).
        (
            &format!("http://127.0.0.1:{port}/open/abs?q=1"),
            "/open/abs?q=1",
        ),
    ] {
        upstream.clear();
        let request =
            format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        let reply = send_raw(port, request.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{target}: {e}"));
        assert_eq!(reply.status, 200, "{target}: {reply:?}");
        let seen = upstream.requests();
        assert_eq!(seen.len(), 1, "{target}");
        assert_eq!(seen[0].path, expected, "{target}");
    }
    // `/s../admin` is not under `/s`: no route, and never `/../admin`.
    upstream.clear();
    for target in [
        "/s../admin",
        "/s%2e%2e/admin",
        "/s/../admin",
        "/s/%2E%2E/admin",
    ] {
        let reply = send_raw(port, &get_request(target, ""))
            .await
            .unwrap_or_else(|e| panic!("{target}: {e}"));
        assert!(
            reply.status == 404 || reply.status == 400,
            "{target}: {reply:?}"
        );
        assert!(reply.json()["error"].is_string(), "{target}: {reply:?}");
    }
    assert!(upstream.requests().is_empty(), "{:?}", upstream.requests());
}

#[tokio::test]
async fn prefixes_differing_only_in_case_are_ambiguous() {
    let upstream = Upstream::start().await;
    let url = upstream.url();
    let server = start(
        &upstream,
        "",
        &format!("[[routes]]\nname = \"upper\"\npath_prefix = \"/open/Reports/\"\nupstream = \"{url}\"\nauth = \"none\"\n"),
    );
    // Exactly `/open/`'s, but `/open/Reports/`'s to a server ignoring case.
    let reply = send_raw(server.proxy_port, &get_request("/open/reports/x", ""))
        .await
        .expect("answer");
    assert_invalid_request(&reply, "/open/reports/x");
    assert!(upstream.requests().is_empty());
    // Written as the prefix is, it is that route's either way.
    let reply = send_raw(server.proxy_port, &get_request("/open/Reports/x", ""))
        .await
        .expect("answer");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(upstream.requests()[0].path, "/open/Reports/x");
}

// ---------------------------------------------------------------------------
// Host and forwarding headers
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_upstream_gets_its_own_host_and_forwarding_headers_refgate_set() {
    let upstream = Upstream::start().await;
    let url = upstream.url();
    let server = start(
        &upstream,
        "",
        &format!("[[routes]]\nname = \"kept\"\npath_prefix = \"/kept/\"\nupstream = \"{url}\"\nauth = \"none\"\npreserve_host = true\n"),
    );
    let claims = "X-Forwarded-For: 10.6.6.6\r\nX-Forwarded-Host: evil.test\r\nX-Forwarded-Proto: https\r\nForwarded: for=10.6.6.6;host=evil.test\r\nX-Real-IP: 10.6.6.6\r\nX-Forwarded-Port: 443\r\n";
    for (path, expected_host) in [
        ("/open/x", format!("127.0.0.1:{}", upstream.port)),
        ("/kept/x", "internal-admin.corp".to_string()),
    ] {
        upstream.clear();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: internal-admin.corp\r\n{claims}Connection: close\r\n\r\n"
        );
        let reply = send_raw(server.proxy_port, request.as_bytes())
            .await
            .expect("answer");
        assert_eq!(reply.status, 200, "{path}: {reply:?}");
        let seen = &upstream.requests()[0];
        assert_eq!(seen.header("host"), Some(expected_host), "{path}");
        assert_eq!(seen.header_count("host"), 1, "{path}");
        assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
        assert_eq!(seen.header_count("x-forwarded-for"), 1);
        assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("http"));
        assert_eq!(seen.header_count("x-forwarded-proto"), 1);
        assert_eq!(
            seen.header("x-forwarded-host").as_deref(),
            Some("internal-admin.corp")
        );
        assert_eq!(seen.header_count("x-forwarded-host"), 1);
        for gone in ["forwarded", "x-real-ip", "x-forwarded-port"] {
            assert_eq!(
                seen.header(gone),
                None,
                "{path}: {gone} reached the upstream"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Tokens in URLs; requests for a forward proxy
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_token_in_the_query_is_refused_on_every_route() {
    let upstream = Upstream::start().await;
    let server = start(&upstream, "", "");
    for target in [
        "/open/x?access_token=rgat_abcdefabcdefabcdefabcdef",
        "/open/x?a=1&access%5Ftoken=rgat_x",
        "/open/admin/x?access_token=rgat_x",
    ] {
        let reply = send_raw(server.proxy_port, &get_request(target, ""))
            .await
            .expect("answer");
        assert_invalid_request(&reply, target);
        assert!(reply
            .header("www-authenticate")
            .is_some_and(|v| v.contains("invalid_request")));
    }
    assert!(upstream.requests().is_empty());
    let log = server.log();
    assert!(!log.contains("rgat_abcdef"), "the token was logged:\n{log}");
}

#[tokio::test]
async fn connect_gets_the_json_error_and_the_connection_closes() {
    let upstream = Upstream::start().await;
    let server = start(&upstream, "", "");
    let reply = send_raw(
        server.proxy_port,
        b"CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n",
    )
    .await
    .expect("answer");
    assert_invalid_request(&reply, "CONNECT");
    assert!(upstream.requests().is_empty());
}

// ---------------------------------------------------------------------------
// Upstream 401s
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_upstream_401s_refresh_at_most_once_per_interval() {
    let oidc = OidcAs::start(3600);
    let upstream = Upstream::start().await;
    let server = Refgate::start_with(Options {
        gateway: "min_refresh_interval = \"8s\"\nauthority_timeout = \"20s\"".into(),
        extra: format!(
            "{}\n{}",
            oidc.authority_toml("photos-as"),
            photos_route(&upstream.url())
        ),
        ..Options::default()
    });
    let (access, refresh, _) = oidc.mint("mallory").await;
    let app = server.access_token("app").await;
    let (status, body) = server
        .mutate(&json!({"token": app, "patch": {"credentials": {"photos": {
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "Bearer",
            "expires_at": unix_now() + 3600,
            "authority": "photos-as",
        }}}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let get = || async {
        http()
            .get(format!("{}/photos/x", server.proxy))
            .bearer_auth(&app)
            .send()
            .await
            .expect("request")
            .status()
    };
    // The path answers 401 to every credential it is sent.
    upstream.reject(&format!("Bearer {access}"));
    assert_eq!(get().await, StatusCode::OK, "first 401: refresh and replay");
    assert_eq!(oidc.refresh_count().await, 1);
    let fresh = upstream.requests()[1]
        .header("authorization")
        .expect("replayed with a credential");
    upstream.reject(&fresh);
    let started = Instant::now();
    for _ in 0..5 {
        assert_eq!(get().await, StatusCode::UNAUTHORIZED);
    }
    assert!(started.elapsed() < Duration::from_secs(8), "test too slow");
    assert_eq!(
        oidc.refresh_count().await,
        1,
        "a 401 within min_refresh_interval refreshed again"
    );
    // Once the interval has passed, one more 401 may refresh once more.
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(started.elapsed())).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get().await, StatusCode::OK);
    assert_eq!(oidc.refresh_count().await, 2);
}

// ---------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------

/// refgate restarted on `server`'s configuration with `RUST_LOG` and
/// the log format given, logging to its own file.
struct TraceRun {
    child: std::process::Child,
    log_path: std::path::PathBuf,
}

impl TraceRun {
    fn start(server: &mut Refgate, format: &str) -> Self {
        Self::start_logging(server, format, "trace")
    }

    fn start_logging(server: &mut Refgate, format: &str, filter: &str) -> Self {
        if server.is_running() {
            server.stop_cleanly();
        }
        let log_path = server.dir.path().join(format!("trace-{format}.log"));
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = server
            .command()
            .args(["--log-format", format, "serve", "--config"])
            .arg(&server.config_path)
            .env("RUST_LOG", filter)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start refgate");
        let run = TraceRun { child, log_path };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(raw_get_ok(server.token_port, "/healthz") && proxy_answers(server.proxy_port)) {
            assert!(Instant::now() < deadline, "not ready:\n{}", run.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        run
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for TraceRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Issue, exchange, mutate, proxy (with an upstream 401, a refresh at the
/// authority and a replay), refresh, revoke — and a failing upstream, a
/// token in a query, a credential naming a forged authority — with
/// everything logged at `trace`. Returns the secrets that must not appear.
async fn walk_through(server: &Refgate, oidc: &OidcAs, upstream: &Upstream) -> Vec<String> {
    let mut secrets: Vec<String> = ["app-secret", "middle-secret", "gateway-secret", DATA_KEY]
        .iter()
        .map(|s| s.to_string())
        .collect();
    // Basic credentials as they travel.
    for (id, secret) in [("app", "app-secret"), ("middle", "middle-secret")] {
        use base64::Engine;
        secrets.push(base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")));
    }
    let issued = server.access_token("app").await;
    let (access, refresh) = refreshable(server, "photos.read offline_access").await;
    let (down_access, down_refresh, _) = oidc.mint("walker").await;
    let custom = "custom-value-4f1d9c";
    // A credential naming a forged authority, as data stored before such
    // writes were refused may hold one (its name is written to the log).
    plant_custom(
        server,
        &access,
        json!({"credentials": {"forged": {
            "access_token": "forged-down-token-77",
            "refresh_token": "forged-down-refresh-77",
            "token_type": "Bearer",
            "expires_at": unix_now() - 10,
            "authority": "x\n2031-01-01T00:00:00Z ERROR FORGED-LINE \u{1b}[31m",
        }}}),
    )
    .await;
    let (status, body) = server
        .mutate(&json!({"token": access, "patch": {
            "note": custom,
            "credentials": {
                "photos": {
                    "access_token": down_access,
                    "refresh_token": down_refresh,
                    "token_type": "Bearer",
                    "expires_at": unix_now() + 3600,
                    "authority": "photos-as",
                },
            },
        }}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    upstream.reject(&format!("Bearer {down_access}"));
    let response = http()
        .get(format!("{}/photos/x?q=query-secret-5e2", server.proxy))
        .bearer_auth(&access)
        .send()
        .await
        .expect("proxy");
    assert_eq!(response.status(), StatusCode::OK);
    let replayed = upstream
        .requests()
        .last()
        .and_then(|r| r.header("authorization"))
        .expect("replayed");
    let refreshed_down = replayed.trim_start_matches("Bearer ").to_string();
    assert_ne!(refreshed_down, down_access);

    // A credential whose authority is no configured one.
    let response = http()
        .get(format!("{}/forged/x", server.proxy))
        .bearer_auth(&access)
        .send()
        .await
        .expect("forged");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // An upstream that is down, with a query: pingora logs the failure.
    let response = http()
        .get(format!("{}/down/x?secret=query-secret-5e2", server.proxy))
        .send()
        .await
        .expect("down");
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let response = http()
        .get(format!("{}/down/x?access_token={issued}", server.proxy))
        .send()
        .await
        .expect("query token");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let (status, body) = server
        .token(
            "app",
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new_access = str_of(&body, "access_token").to_string();
    let new_refresh = str_of(&body, "refresh_token").to_string();
    let (status, _) = server
        .post_form(
            "/oauth2/revoke",
            Some(("app", "app-secret")),
            &[("token", &new_refresh)],
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    secrets.extend([
        issued,
        access,
        refresh,
        new_access,
        new_refresh,
        down_access,
        down_refresh,
        refreshed_down,
        custom.to_string(),
        "forged-down-token-77".into(),
        "forged-down-refresh-77".into(),
        "query-secret-5e2".into(),
    ]);
    secrets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_secret_reaches_the_log_even_at_trace() {
    let oidc = OidcAs::start(3600);
    let down = closed_port();
    let upstream = Upstream::start().await;
    let url = upstream.url();
    let mut server = Refgate::start_with(Options {
        gateway: "authority_timeout = \"20s\"".into(),
        extra: format!(
            "{}\n{}\n{}\n{}",
            oidc.authority_toml("photos-as"),
            photos_route(&url),
            route(
                "forged",
                "/forged/",
                &url,
                "required_scopes = [\"photos.read\"]\ncredential = \"forged\""
            ),
            route(
                "down",
                "/down/",
                &format!("http://127.0.0.1:{}", down.port),
                "auth = \"none\""
            ),
        ),
        ..Options::default()
    });
    for format in ["text", "json"] {
        let run = TraceRun::start(&mut server, format);
        let secrets = walk_through(&server, &oidc, &upstream).await;
        // Let the last lines land.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let log = run.log();
        assert!(
            log.contains("TRACE"),
            "{format}: trace logging is not on:\n{log}"
        );
        for secret in &secrets {
            if let Some(line) = log.lines().find(|l| l.contains(secret.as_str())) {
                panic!("{format}: {secret:?} was logged:\n{line}");
            }
        }
        // pingora's own crates stay at info whatever RUST_LOG says.
        for line in log.lines() {
            let pingora_detail =
                (line.contains("DEBUG") || line.contains("TRACE")) && line.contains("pingora");
            assert!(!pingora_detail, "{format}: {line}");
        }
        // A value from custom data cannot start a line of its own.
        assert!(
            !log.lines()
                .any(|l| l.starts_with("2031-01-01") || l.contains('\u{1b}')),
            "{format}: a forged line:\n{log}"
        );
        assert!(
            log.contains("FORGED-LINE"),
            "{format}: the warning is missing"
        );
        drop(run);
        upstream.clear();
    }
}

// ---------------------------------------------------------------------------
// HTTP/1 or h2c
// ---------------------------------------------------------------------------

#[tokio::test]
async fn requests_shorter_than_the_h2_preface_are_answered_and_a_split_preface_is_h2c() {
    let upstream = Upstream::start().await;
    let server = start(&upstream, "", "");
    let short = b"GET /open/ HTTP/1.0\r\n\r\n";
    assert!(short.len() < 24);
    let started = Instant::now();
    let reply = send_raw(server.proxy_port, short).await.expect("answer");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // The preface in two writes: still HTTP/2, answered with SETTINGS.
    let mut stream = TcpStream::connect(("127.0.0.1", server.proxy_port))
        .await
        .expect("connect");
    stream
        .write_all(b"PRI * HTTP/2.0\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stream.write_all(b"\r\nSM\r\n\r\n").await.expect("write");
    // An empty SETTINGS frame.
    stream
        .write_all(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0])
        .await
        .expect("write");
    let mut frame = [0u8; 9];
    tokio::time::timeout(RAW_TIMEOUT, stream.read_exact(&mut frame))
        .await
        .expect("an answer in time")
        .expect("a frame");
    assert_eq!(frame[3], 0x4, "not a SETTINGS frame: {frame:?}");
}

// ---------------------------------------------------------------------------
// Idle and slow connections
// ---------------------------------------------------------------------------

/// Opens `n` connections that send nothing.
async fn idle_sockets(port: u16, n: usize) -> Vec<TcpStream> {
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        sockets.push(
            TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect an idle socket"),
        );
    }
    sockets
}

/// Waits (at most 10 s) until the server has closed at least `n` of
/// `sockets`.
async fn closed_at_least(sockets: &[TcpStream], n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let closed = sockets
            .iter()
            .filter(|s| {
                let mut byte = [0u8; 1];
                match s.try_read(&mut byte) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                }
            })
            .count();
        if closed >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {closed} of {} sockets were closed",
            sockets.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long until the server closes a connection that sends `start` and
/// then one more byte every 300 ms.
async fn trickle_until_closed(port: u16, start: &[u8]) -> Duration {
    let started = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.write_all(start).await.expect("write");
    trickle(&mut stream, started).await
}

/// Sends one byte every 300 ms until the server closes the stream (at
/// most 20 s), and returns the time from `since`; an answer to the head
/// that never ends fails the test.
async fn trickle<S>(stream: &mut S, since: Instant) -> Duration
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if stream.write_all(b"X").await.is_err() || stream.flush().await.is_err() {
            return since.elapsed();
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(10), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return since.elapsed(),
            Ok(Ok(n)) => panic!("answered a head never finished: {:?}", lossy(&buf[..n])),
            Err(_) => {}
        }
        if since.elapsed() > Duration::from_secs(20) {
            return since.elapsed();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_trickling_connections_neither_lock_out_clients_nor_stay() {
    let upstream = Upstream::start().await;
    let mut server = start(&upstream, "", "");
    let config = std::fs::read_to_string(&server.config_path).expect("config");
    let config = config.replacen(
        "[listen]\n",
        "[listen]\nmax_connections = 300\nrequest_head_timeout = \"5s\"\n",
        1,
    );
    std::fs::write(&server.config_path, config).expect("config");
    let run = TraceRun::start_logging(&mut server, "text", "info");
    for (port, request) in [
        (
            server.proxy_port,
            "GET /open/x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        ),
        (
            server.token_port,
            "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        ),
    ] {
        // Thousands of silent sockets, several times what the listener
        // holds.
        let mut idle = idle_sockets(port, 2000).await;
        let started = Instant::now();
        let reply = send_raw(port, request.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("port {port}: {e}\n{}", run.log()));
        assert_eq!(reply.status, 200, "port {port}: {reply:?}");
        // Well before the 5 s head deadline that would free a place for
        // it (the margin is for a loaded machine and a resent SYN).
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "port {port}: a real client waited {:?} behind idle sockets",
            started.elapsed()
        );
        // A silent socket is closed at the deadline (or earlier, to make
        // room).
        let last = idle.last_mut().expect("sockets");
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(8), last.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "port {port}: a silent socket stayed open: {read:?}"
        );
        drop(idle);
        // One byte every 300 ms never completes a head: cut at about 5 s.
        let lasted =
            trickle_until_closed(port, b"GET /open/x HTTP/1.1\r\nHost: 127.0.0.1\r\n").await;
        assert!(
            lasted >= Duration::from_millis(4500) && lasted < Duration::from_secs(8),
            "port {port}: a trickling connection lasted {lasted:?}"
        );
    }
    // After its first request, a kept-alive connection to the token
    // service is closed when no next request head comes within 10 s.
    let mut kept = TcpStream::connect(("127.0.0.1", server.token_port))
        .await
        .expect("connect");
    // Before the request: the server's idle time starts after its answer.
    let idle_since = Instant::now();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let answers = read_replies(&mut kept, 1).await.0;
    assert_eq!(answers.first().map(|a| a.status), Some(200));
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(15), kept.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "an idle keep-alive connection stayed open: {read:?}"
    );
    assert!(idle_since.elapsed() >= Duration::from_secs(10));
    drop(run);
}

// ---------------------------------------------------------------------------
// Pipelining
// ---------------------------------------------------------------------------

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let upstream = Upstream::start().await;
    let server = start(&upstream, "", "");
    let request = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    // In one write, and in several.
    for split in [false, true] {
        upstream.clear();
        let mut stream = TcpStream::connect(("127.0.0.1", server.proxy_port))
            .await
            .expect("connect");
        let post = "POST /open/2 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 31\r\n\r\nGET /open/smuggled HTTP/1.1\r\n\r\n";
        let all = [request("/open/1"), post.to_string(), request("/open/3")];
        if split {
            for r in &all {
                stream.write_all(r.as_bytes()).await.expect("write");
            }
        } else {
            stream
                .write_all(all.concat().as_bytes())
                .await
                .expect("write");
        }
        let answers = read_replies(&mut stream, 3).await.0;
        let paths: Vec<String> = answers
            .iter()
            .map(|a| a.json()["path"].as_str().unwrap_or("-").to_string())
            .collect();
        assert_eq!(paths, ["/open/1", "/open/2", "/open/3"], "split: {split}");
        assert_eq!(answers[1].json()["body_len"], 31);
        let seen: Vec<String> = upstream.requests().into_iter().map(|r| r.path).collect();
        assert_eq!(seen, ["/open/1", "/open/2", "/open/3"], "split: {split}");
    }
}

#[tokio::test]
async fn an_absolute_form_request_to_a_foreign_host_gets_the_json_error() {
    let upstream = Upstream::start().await;
    let server = start(&upstream, "", "");
    for request in [
        "GET http://evil.test/open/x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        "GET http://127.0.0.1/open/x HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n",
        "GET /open/x HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n",
        "GET http://user@127.0.0.1/open/x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    ] {
        let reply = send_raw(server.proxy_port, request.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{request:?}: {e}"));
        assert_invalid_request(&reply, request);
    }
    assert!(upstream.requests().is_empty(), "{:?}", upstream.requests());
    // The client's own request id is kept.
    let reply = send_raw(
        server.proxy_port,
        b"GET http://evil.test/x HTTP/1.1\r\nHost: a.test\r\nX-Request-Id: mine-1\r\n\r\n",
    )
    .await
    .expect("answer");
    assert_eq!(reply.header("x-request-id"), Some("mine-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_head_then_a_half_close_is_answered_at_once() {
    let upstream = Upstream::start().await;
    let server = start(&upstream, "", "");
    for (port, path) in [
        (server.proxy_port, "/open/x"),
        (server.token_port, "/healthz"),
    ] {
        let mut halves = Vec::new();
        for _ in 0..20 {
            let mut stream = TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            stream
                .write_all(b"GET /open/x HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                .await
                .expect("write");
            stream.shutdown().await.expect("half-close");
            halves.push(stream);
        }
        let started = Instant::now();
        let reply = send_raw(port, &get_request(path, ""))
            .await
            .expect("answer");
        assert_eq!(reply.status, 200, "port {port}: {reply:?}");
        // At once: far from the 10 s head deadline (the margin is for a
        // loaded machine).
        assert!(started.elapsed() < Duration::from_secs(3), "port {port}");
        // Each is answered or closed long before the head deadline.
        for mut half in halves {
            let mut buf = Vec::new();
            let read =
                tokio::time::timeout(Duration::from_secs(3), half.read_to_end(&mut buf)).await;
            assert!(
                read.is_ok(),
                "port {port}: a half-closed connection was held"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Later requests on a kept-alive proxy connection, and TLS
// ---------------------------------------------------------------------------

/// `[listen]` lines added to a test's configuration.
fn with_listen(server: &mut Refgate, lines: &str) {
    let config = std::fs::read_to_string(&server.config_path).expect("config");
    let config = config.replacen("[listen]\n", &format!("[listen]\n{lines}\n"), 1);
    std::fs::write(&server.config_path, config).expect("config");
}

/// A connection that has had one request answered and is kept alive (a
/// proxy port; with `path`, any).
async fn kept_alive(port: u16) -> TcpStream {
    kept_alive_on(port, "/open/first").await
}

async fn kept_alive_on(port: u16, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let answers = read_replies(&mut stream, 1).await.0;
    assert_eq!(answers.first().map(|a| a.status), Some(200), "{answers:?}");
    stream
}

/// Waits until the peer closes `stream` (at most `limit`); returns how
/// long that took and everything it sent first.
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    let mut got = Vec::new();
    loop {
        let left = limit.saturating_sub(started.elapsed());
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Err(_) => panic!("still open after {limit:?}; got {:?}", lossy(&got)),
            Ok(Ok(0)) | Ok(Err(_)) => return (started.elapsed(), got),
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_requests_on_a_kept_alive_connection_have_the_same_deadlines() {
    let upstream = Upstream::start().await;
    let mut server = start(&upstream, "", "");
    with_listen(
        &mut server,
        "request_head_timeout = \"2s\"\nkeepalive_timeout = \"3s\"",
    );
    server.restart();
    let port = server.proxy_port;

    // Idle after an answer: closed at the keep-alive timeout, counted from
    // the answer (so at least 3 s after the request was sent).
    let sent_at = Instant::now();
    let mut idle = kept_alive(port).await;
    let (_, sent) = until_closed(&mut idle, Duration::from_secs(8)).await;
    let lasted = sent_at.elapsed();
    assert!(sent.is_empty(), "{:?}", lossy(&sent));
    assert!(
        lasted >= Duration::from_secs(3) && lasted < Duration::from_secs(6),
        "an idle kept-alive connection lasted {lasted:?}"
    );

    // A next head sent one byte every 300 ms: cut about 2 s after its
    // first byte, whatever the pace of the bytes.
    let mut slow = kept_alive(port).await;
    slow.write_all(b"GET /open/slow HTTP/1.1\r\n")
        .await
        .expect("write");
    let cut = trickle(&mut slow, Instant::now()).await;
    assert!(
        cut >= Duration::from_millis(1500) && cut < Duration::from_secs(5),
        "a trickled second head lasted {cut:?}"
    );
    assert!(
        !upstream.requests().iter().any(|r| r.path == "/open/slow"),
        "{:?}",
        upstream.requests()
    );

    // Malformed heads, first or later, get refgate's JSON error (not
    // pingora's empty 400), and the connection closes.
    let malformed = b"GET /open/x HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n";
    let first = send_raw(port, malformed).await.expect("first");
    assert_invalid_request(&first, "a malformed first head");
    let mut later = kept_alive(port).await;
    later.write_all(malformed).await.expect("write");
    let (_, sent) = until_closed(&mut later, Duration::from_secs(5)).await;
    let (reply, used) =
        parse_reply(&sent, true, false).unwrap_or_else(|| panic!("no answer: {:?}", lossy(&sent)));
    assert_invalid_request(&reply, "a malformed later head");
    assert_eq!(used, sent.len(), "{:?}", lossy(&sent));
    assert_eq!(reply.header("cache-control"), Some("no-store"));

    // A later head refgate refuses for its authority, with a request
    // behind it in the same write: the answer is the JSON error, and
    // neither request reaches the upstream.
    let mut later = kept_alive(port).await;
    later
        .write_all(
            b"GET http://evil.test/open/foreign HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n\
              GET /open/behind HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        )
        .await
        .expect("write");
    let (_, sent) = until_closed(&mut later, Duration::from_secs(5)).await;
    let (reply, used) =
        parse_reply(&sent, true, false).unwrap_or_else(|| panic!("no answer: {:?}", lossy(&sent)));
    assert_invalid_request(&reply, "a later head for a foreign host");
    // Nothing of the refused bytes reached pingora: no second answer.
    assert_eq!(used, sent.len(), "{:?}", lossy(&sent));
    let seen: Vec<String> = upstream.requests().into_iter().map(|r| r.path).collect();
    assert!(
        !seen
            .iter()
            .any(|p| p == "/open/foreign" || p == "/open/behind"),
        "{seen:?}"
    );

    // A head over 64 KiB: 431 with the JSON error, first or later.
    let mut huge = b"GET /open/x HTTP/1.1\r\nHost: 127.0.0.1\r\n".to_vec();
    huge.extend_from_slice(format!("X-Big: {}\r\n\r\n", "a".repeat(70 * 1024)).as_bytes());
    let mut later = kept_alive(port).await;
    later.write_all(&huge).await.expect("write");
    let (_, sent) = until_closed(&mut later, Duration::from_secs(5)).await;
    let reply = parse_reply(&sent, true, false)
        .map(|(reply, _)| reply)
        .unwrap_or_else(|| panic!("no answer: {:?}", lossy(&sent)));
    assert_eq!(reply.status, 431, "{reply:?}");
    assert_eq!(reply.json()["error"], "invalid_request");

    // A later head larger than pingora's first read of a head (4 KiB) but
    // within the limit is served whole, in one write or in two.
    let big = "b".repeat(12 * 1024);
    let head = format!("GET /open/big HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {big}\r\n\r\n");
    for split in [None, Some(100), Some(5000)] {
        upstream.clear();
        let mut kept = kept_alive(port).await;
        match split {
            None => kept.write_all(head.as_bytes()).await.expect("write"),
            Some(at) => {
                kept.write_all(&head.as_bytes()[..at]).await.expect("write");
                tokio::time::sleep(Duration::from_millis(100)).await;
                kept.write_all(&head.as_bytes()[at..]).await.expect("write");
            }
        }
        let answers = read_replies(&mut kept, 1).await.0;
        assert_eq!(answers.first().map(|a| a.status), Some(200), "{split:?}");
        let seen = upstream.requests();
        let got = seen.iter().find(|r| r.path == "/open/big");
        assert_eq!(
            got.and_then(|r| r.header("x-big")).map(|v| v.len()),
            Some(big.len()),
            "{split:?}: {seen:?}"
        );
    }

    // A head pingora repairs (a space in the target) is still served, and
    // a keep-alive connection serves request after request.
    let mut kept = kept_alive(port).await;
    for _ in 0..3 {
        kept.write_all(b"GET /open/a b HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .expect("write");
        let answers = read_replies(&mut kept, 1).await.0;
        assert_eq!(answers.first().map(|a| a.status), Some(200), "{answers:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_listener_closes_the_connection_idle_the_longest() {
    let upstream = Upstream::start().await;
    let mut server = start(&upstream, "", "");
    with_listen(&mut server, "max_connections = 3");
    server.restart();
    for (port, path) in [
        (server.proxy_port, "/open/x"),
        (server.token_port, "/healthz"),
    ] {
        // A connection counts as idle again only once its server side has
        // finished the answer, which can be after the client has read it:
        // the pauses make the order they went idle the order they opened.
        let settle = || tokio::time::sleep(Duration::from_millis(250));
        let mut oldest = kept_alive_on(port, path).await;
        settle().await;
        let _middle = kept_alive_on(port, path).await;
        settle().await;
        let mut newest = kept_alive_on(port, path).await;
        settle().await;

        // The listener is full of idle kept-alive connections: a new
        // client is served, and the one idle the longest makes room.
        let started = Instant::now();
        let reply = send_raw(port, &get_request(path, ""))
            .await
            .unwrap_or_else(|e| panic!("port {port}: a new client is not served: {e}"));
        assert_eq!(reply.status, 200, "port {port}: {reply:?}");
        // At once, not after a deadline (the margin is for a loaded
        // machine).
        assert!(started.elapsed() < Duration::from_secs(3), "port {port}");
        let (_, sent) = until_closed(&mut oldest, Duration::from_secs(3)).await;
        assert!(sent.is_empty(), "port {port}: {:?}", lossy(&sent));
        // The newest still serves.
        newest
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let answers = read_replies(&mut newest, 1).await.0;
        assert_eq!(
            answers.first().map(|a| a.status),
            Some(200),
            "port {port}: {answers:?}"
        );
    }
}

/// A self-signed certificate for 127.0.0.1 and its key, written as PEM
/// files under `dir`; the `[listen.tls]` table naming them.
fn proxy_tls_table(dir: &std::path::Path) -> String {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("certificate");
    let cert = dir.join("proxy-cert.pem");
    let key = dir.join("proxy-key.pem");
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.key_pair.serialize_pem()).expect("write key");
    format!(
        "\n[listen.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshakes_count_against_the_proxy_limit_and_have_the_head_deadline() {
    let upstream = Upstream::start().await;
    let mut server = start(&upstream, "", "");
    server.stop_cleanly();
    with_listen(
        &mut server,
        "max_connections = 20\nrequest_head_timeout = \"4s\"",
    );
    let table = proxy_tls_table(server.dir.path());
    let mut config = std::fs::read_to_string(&server.config_path).expect("config");
    config.push_str(&table);
    std::fs::write(&server.config_path, config).expect("config");
    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(&server.log_path)
        .expect("log");
    let mut child = server
        .command()
        .arg("serve")
        .arg("--config")
        .arg(&server.config_path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start refgate");
    let client = reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        // Each request a new connection: a pooled idle one may rightly be
        // the one closed to make room.
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let url = format!("https://127.0.0.1:{}/open/tls", server.proxy_port);
    let ready = Instant::now();
    while client.get(&url).send().await.is_err() {
        assert!(
            ready.elapsed() < Duration::from_secs(20),
            "the TLS proxy never answered:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Silent sockets and a stalled ClientHello, more than the listener
    // holds: a real TLS client is still served at once.
    let mut silent = idle_sockets(server.proxy_port, 40).await;
    let mut stalled = TcpStream::connect(("127.0.0.1", server.proxy_port))
        .await
        .expect("connect");
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .expect("write");
    // The proxy accepts on each of its threads: wait until it has taken in
    // the whole flood (closing the oldest to stay at 20), so that the real
    // client arrives after it, as the point of the test is.
    closed_at_least(&silent, 20).await;
    let started = Instant::now();
    let answer = client.get(&url).send().await.expect("served over TLS");
    assert_eq!(answer.status(), 200);
    // Well before the 4 s deadline that would free a place (the margin is
    // for a loaded machine).
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "waited {:?} behind unfinished handshakes",
        started.elapsed()
    );
    // The handshakes that never finish are cut at the deadline, not after
    // pingora's 60 s.
    let (lasted, _) = until_closed(&mut stalled, Duration::from_secs(9)).await;
    assert!(lasted < Duration::from_secs(7), "lasted {lasted:?}");
    let last = silent.last_mut().expect("sockets");
    until_closed(last, Duration::from_secs(9)).await;

    // After the handshake, a trickled first head is cut at the deadline
    // counted from accept.
    let connector = {
        #[derive(Debug)]
        struct AnyCertificate;
        impl tokio_rustls::rustls::client::danger::ServerCertVerifier for AnyCertificate {
            fn verify_server_cert(
                &self,
                _: &tokio_rustls::rustls::pki_types::CertificateDer<'_>,
                _: &[tokio_rustls::rustls::pki_types::CertificateDer<'_>],
                _: &tokio_rustls::rustls::pki_types::ServerName<'_>,
                _: &[u8],
                _: tokio_rustls::rustls::pki_types::UnixTime,
            ) -> Result<
                tokio_rustls::rustls::client::danger::ServerCertVerified,
                tokio_rustls::rustls::Error,
            > {
                Ok(tokio_rustls::rustls::client::danger::ServerCertVerified::assertion())
            }
            fn verify_tls12_signature(
                &self,
                _: &[u8],
                _: &tokio_rustls::rustls::pki_types::CertificateDer<'_>,
                _: &tokio_rustls::rustls::DigitallySignedStruct,
            ) -> Result<
                tokio_rustls::rustls::client::danger::HandshakeSignatureValid,
                tokio_rustls::rustls::Error,
            > {
                Ok(tokio_rustls::rustls::client::danger::HandshakeSignatureValid::assertion())
            }
            fn verify_tls13_signature(
                &self,
                _: &[u8],
                _: &tokio_rustls::rustls::pki_types::CertificateDer<'_>,
                _: &tokio_rustls::rustls::DigitallySignedStruct,
            ) -> Result<
                tokio_rustls::rustls::client::danger::HandshakeSignatureValid,
                tokio_rustls::rustls::Error,
            > {
                Ok(tokio_rustls::rustls::client::danger::HandshakeSignatureValid::assertion())
            }
            fn supported_verify_schemes(&self) -> Vec<tokio_rustls::rustls::SignatureScheme> {
                tokio_rustls::rustls::crypto::ring::default_provider()
                    .signature_verification_algorithms
                    .supported_schemes()
            }
        }
        let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate))
        .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    };
    let tcp = TcpStream::connect(("127.0.0.1", server.proxy_port))
        .await
        .expect("connect");
    let accepted = Instant::now();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("handshake");
    tls.write_all(b"GET /open/slow HTTP/1.1\r\n")
        .await
        .expect("write");
    let cut = trickle(&mut tls, accepted).await;
    assert!(
        cut >= Duration::from_millis(3500) && cut < Duration::from_secs(7),
        "a trickled head over TLS lasted {cut:?}"
    );

    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn check_refuses_connection_limits_that_cannot_work() {
    let upstream = Upstream::start().await;
    let mut server = start(&upstream, "", "");
    server.stop_cleanly();
    let original = std::fs::read_to_string(&server.config_path).expect("config");
    for (line, key) in [
        ("keepalive_timeout = \"0s\"", "listen.keepalive_timeout"),
        ("keepalive_timeout = \"2h\"", "listen.keepalive_timeout"),
        (
            "request_head_timeout = \"0s\"",
            "listen.request_head_timeout",
        ),
        ("max_connections = 0", "listen.max_connections"),
    ] {
        let config = original.replacen("[listen]\n", &format!("[listen]\n{line}\n"), 1);
        server.assert_check_refuses(&config, key);
    }
}

#[tokio::test]
async fn check_refuses_pem_files_serve_could_not_use() {
    let upstream = Upstream::start().await;
    let mut server = start(&upstream, "", "");
    server.stop_cleanly();
    let original = std::fs::read_to_string(&server.config_path).expect("config");
    let garbage = server.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let good = proxy_tls_table(server.dir.path());
    let url = upstream.url().replace("http://", "https://");
    for (addition, key) in [
        (
            format!(
                "\n[listen.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
                garbage.display(),
                server.dir.path().join("proxy-key.pem").display()
            ),
            "listen.tls.cert",
        ),
        (
            format!(
                "\n[listen.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
                server.dir.path().join("proxy-cert.pem").display(),
                garbage.display()
            ),
            "listen.tls.key",
        ),
        (
            format!(
                "\n[[routes]]\nname = \"tls\"\npath_prefix = \"/tls/\"\nupstream = \"{url}\"\nauth = \"none\"\nca_file = \"{}\"\n",
                garbage.display()
            ),
            "ca_file",
        ),
    ] {
        let config = format!("{original}{addition}");
        server.assert_check_refuses(&config, key);
        server.assert_check_refuses(&config, "garbage.pem");
    }
    // The good pair passes.
    let out = server.check_config(&format!("{original}{good}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn the_unread_body_of_a_refused_request_is_never_taken_for_a_request() {
    let upstream = Upstream::start().await;
    let server = start(&upstream, "", "");
    let mut stream = TcpStream::connect(("127.0.0.1", server.proxy_port))
        .await
        .expect("connect");
    // No token on the scoped route: refused before the body is read. The
    // body looks like a request of its own.
    let body = "GET /open/smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let refused = format!(
        "POST /open/admin/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(refused.as_bytes()).await.expect("write");
    let (answers, rest, closed) = read_replies(&mut stream, 2).await;
    assert_eq!(
        answers.iter().map(|a| a.status).collect::<Vec<_>>(),
        [401],
        "{rest}"
    );
    assert!(closed, "the connection stayed open with an unread body");
    assert!(
        !upstream
            .requests()
            .iter()
            .any(|r| r.path == "/open/smuggled"),
        "{:?}",
        upstream.requests()
    );
}

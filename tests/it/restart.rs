//! Restarts and shutdown: grants, tokens and custom data live in the store,
//! not in the process (SPEC 3.1); SIGTERM drains in-flight requests within
//! a few seconds and exits 0 (SPEC 1).

use crate::common::*;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

/// How long a clean stop may take: the drain window plus slack for a
/// loaded machine.
const STOP_WITHIN: Duration = Duration::from_secs(12);

#[tokio::test]
async fn tokens_and_custom_data_survive_a_restart() {
    let mut server = Refgate::start();

    let app = server.client_token("app", Some("photos.read")).await;
    let app_access = str_of(&app, "access_token").to_string();
    let (access, refresh) = minted_pair(
        &server,
        "mallory",
        &[
            ("arbitrary_json", &json!({"seed": 1}).to_string()),
            ("arbitrary_claims", r#"{"groups": ["ops"]}"#),
        ],
    )
    .await;
    let (status, body) = server
        .mutate(
            &json!({"token": access, "patch": {"credentials": {"photos": {
            "access_token": "downstream", "token_type": "Bearer",
            "expires_at": 1_767_225_600, "authority": "photos-as"}}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let revoked = server.access_token("app").await;
    let (status, _) = server
        .post_form(
            "/oauth2/revoke",
            Some(("app", "app-secret")),
            &[("token", &revoked)],
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let before: Vec<Value> = futures::future::join_all(
        [&app_access, &access, &refresh, &revoked].map(|t| server.introspect(t)),
    )
    .await;
    assert_eq!(before[1]["custom"]["seed"], 1);
    assert_eq!(before[1]["version"], 2);
    assert_eq!(before[3], json!({"active": false}));

    server.restart();

    let after: Vec<Value> = futures::future::join_all(
        [&app_access, &access, &refresh, &revoked].map(|t| server.introspect(t)),
    )
    .await;
    assert_eq!(after, before, "introspection changed across the restart");
    assert_eq!(after[1]["groups"], json!(["ops"]));
    assert_eq!(after[1]["iss"], "https://idp.example.com");

    // The refresh token rotates after the restart, and the new access token
    // points at the same grant and custom data.
    let (status, body) = server.refresh("minter", &refresh).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "refresh after restart failed: {body}"
    );
    let view = server.introspect(str_of(&body, "access_token")).await;
    assert_eq!(view["active"], true);
    assert_eq!(view["custom"], before[1]["custom"]);
    assert_eq!(view["version"], 2);
    assert_eq!(view["sub"], "mallory");
    assert!(
        raw_get_ok(server.token_port, "/readyz"),
        "not ready after restart"
    );

    // Optimistic concurrency continues from the stored version.
    let (status, body) = server
        .mutate(&json!({"token": access, "patch": {"after": true}, "if_version": 2}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"version": 3}));
}

#[tokio::test]
async fn a_refresh_token_consumed_before_a_restart_stays_consumed() {
    let mut server = Refgate::start();
    let (_, refresh) = minted_pair(
        &server,
        "nina",
        &[
            ("arbitrary_json", "{}"),
            ("arbitrary_claims", r#"{"groups": ["ops"]}"#),
        ],
    )
    .await;
    let (status, body) = server.refresh("minter", &refresh).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new_access = str_of(&body, "access_token").to_string();

    server.restart();

    assert_eq!(server.introspect(&refresh).await, json!({"active": false}));
    assert_eq!(server.introspect(&new_access).await["active"], true);
    // Replaying it is still detected: invalid_grant, and the grant ends.
    let (status, body) = server.refresh("minter", &refresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(
        server.introspect(&new_access).await,
        json!({"active": false})
    );
}

#[tokio::test]
async fn sigterm_exits_0_within_a_few_seconds() {
    let mut server = Refgate::start();
    server.client_token("app", None).await;
    let started = Instant::now();
    assert_eq!(server.stop(), Some(0), "{}", server.log());
    assert!(
        started.elapsed() < STOP_WITHIN,
        "stopping took {:?}",
        started.elapsed()
    );
}

/// A raw HTTP/1.1 client connection to the token service.
fn connect(server: &Refgate) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", server.token_port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    stream
}

/// Headers of a client_credentials token request for `app` whose body is
/// `body_len` bytes long; with `expect_continue`, the server says
/// `100 Continue` once it has parsed them and starts reading the body.
fn token_request_head(body_len: usize, connection: &str, expect_continue: bool) -> String {
    let basic = STANDARD.encode("app:app-secret");
    let expect = if expect_continue {
        "Expect: 100-continue\r\n"
    } else {
        ""
    };
    format!(
        "POST /oauth2/token HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {basic}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {body_len}\r\n\
         {expect}Connection: {connection}\r\n\r\n"
    )
}

/// Waits for the `100 Continue` of a request sent with
/// `Expect: 100-continue`: the server has parsed the head and its handler
/// is reading the body, so the request is in flight.
fn read_continue(stream: &mut TcpStream) {
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    while !bytes.ends_with(b"\r\n\r\n") {
        stream
            .read_exact(&mut byte)
            .expect("read an interim answer");
        bytes.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&bytes);
    assert!(head.starts_with("HTTP/1.1 100"), "{head}");
}

/// Reads one HTTP/1.1 response with a `Content-Length` body; its head.
fn read_response(stream: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    while !bytes.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("read a response head");
        bytes.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&bytes).to_string();
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .expect("a Content-Length");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).expect("read a response body");
    head
}

/// Sends SIGTERM from another thread; the join handle yields the exit code,
/// how long stopping took, and the server (kept alive for its log).
fn stop_in_background(
    mut server: Refgate,
) -> std::thread::JoinHandle<(Option<i32>, Duration, Refgate)> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let code = server.stop();
        (code, started.elapsed(), server)
    })
}

#[tokio::test]
async fn sigterm_drains_an_in_flight_request() {
    let server = Refgate::start();
    let body = "grant_type=client_credentials&scope=photos.read";
    let (first, rest) = body.split_at(10);

    // A first request on a keep-alive connection: the connection is
    // accepted and served before shutdown begins.
    let mut stream = connect(&server);
    stream
        .write_all(
            format!(
                "{}{body}",
                token_request_head(body.len(), "keep-alive", false)
            )
            .as_bytes(),
        )
        .expect("send a first request");
    let head = read_response(&mut stream);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // A second request, of which only the head and part of the body arrive;
    // the server has read the head and waits for the body.
    stream
        .write_all(token_request_head(body.len(), "close", true).as_bytes())
        .expect("send headers");
    read_continue(&mut stream);
    stream
        .write_all(first.as_bytes())
        .expect("send a first part");

    let log_path = server.log_path.clone();
    let stopping = stop_in_background(server);
    // Shutdown has begun while the request is open.
    wait_for_text(&log_path, "SIGTERM received");
    assert!(
        !stopping.is_finished(),
        "refgate exited with a request in flight"
    );

    stream.write_all(rest.as_bytes()).expect("send the rest");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read the answer");
    let answer = String::from_utf8_lossy(&answer);

    let (code, took, server) = stopping.join().expect("stopper thread");
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the in-flight request was not answered: {answer:?}\n{}",
        server.log()
    );
    assert!(answer.contains("\"access_token\":\"rgat_"), "{answer}");
    assert_eq!(code, Some(0), "{}", server.log());
    assert!(took < STOP_WITHIN, "stopping took {took:?}");
}

#[tokio::test]
async fn sigterm_exits_0_even_when_a_request_never_completes() {
    let server = Refgate::start();
    // A request whose body never arrives, and an idle keep-alive connection.
    let mut stalled = connect(&server);
    stalled
        .write_all(token_request_head(1000, "close", true).as_bytes())
        .expect("send headers");
    read_continue(&mut stalled);
    stalled.write_all(b"grant_type=").expect("send a part");
    let _idle = connect(&server);

    let (code, took, server) = stop_in_background(server).join().expect("stopper thread");
    assert_eq!(code, Some(0), "{}", server.log());
    assert!(took < STOP_WITHIN, "stopping took {took:?}");
}

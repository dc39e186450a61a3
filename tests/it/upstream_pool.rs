//! The gateway's keep-alive connections to upstreams.
//!
//! Idle upstream connections are parked without a task watching each one;
//! the checks happen when a connection is taken out for reuse. These tests
//! hold the gateway to what a watched pool gave: a connection is reused
//! while the upstream keeps it open, and a connection the upstream closed,
//! or wrote to, while it sat idle never carries another request.

use crate::common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the upstream does once it has answered a request.
#[derive(Clone, Copy)]
enum After {
    /// Keeps the connection open for the next request.
    KeepOpen,
    /// Closes the connection without saying so (its answer had no
    /// `Connection: close`).
    Close,
    /// Writes a second, unrequested response and keeps the connection open.
    Unrequested,
}

/// A plain-socket HTTP/1.1 upstream that answers every request with
/// `conn-<c>-req-<r>`: which connection (counted from 1) served it, and
/// which request on that connection it was.
struct RawUpstream {
    url: String,
    accepted: Arc<AtomicUsize>,
}

impl RawUpstream {
    async fn start(after: After) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let conn = count.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(serve(stream, conn, after));
            }
        });
        RawUpstream { url, accepted }
    }

    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn serve(mut stream: TcpStream, conn: usize, after: After) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    for req in 1.. {
        // Bodiless requests only: a head ends the request.
        let end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        buf.drain(..end);
        let body = format!("conn-{conn}-req-{req}");
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        if !matches!(after, After::KeepOpen) {
            // Late enough that the gateway has put the connection back in
            // its pool: what follows happens while it sits idle there.
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        match after {
            After::KeepOpen => {}
            After::Close => return,
            After::Unrequested => {
                let extra = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled";
                if stream.write_all(extra).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn start(upstream: &RawUpstream) -> Refgate {
    start_with_gateway(upstream, "")
}

/// With `[gateway]` lines.
fn start_with_gateway(upstream: &RawUpstream, gateway: &str) -> Refgate {
    Refgate::start_with(Options {
        gateway: gateway.to_string(),
        extra: public_route("open", "/open/", &upstream.url, ""),
        ..Options::default()
    })
}

/// `n` requests one after the other, each on a new client connection (so
/// that only the upstream side can be reused), `pause` between them; the
/// bodies, each checked to be a 200. The gateway parks an upstream
/// connection only after the client has its whole answer, so a request
/// sent at once may find the pool empty: tests that expect reuse pause
/// [`SETTLE`].
/// Long enough, even on a loaded machine, for an answered request's
/// upstream connection to be back in the pool.
const SETTLE: Duration = Duration::from_millis(250);

async fn bodies(server: &Refgate, n: usize, pause: Duration) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..n {
        let client = http();
        let response = client
            .get(format!("{}/open/item-{i}", server.proxy))
            .header("connection", "close")
            .send()
            .await
            .expect("the gateway answers");
        let status = response.status();
        let body = response.text().await.expect("a body");
        assert_eq!(status, StatusCode::OK, "request {i}: {body}");
        out.push(body);
        tokio::time::sleep(pause).await;
    }
    out
}

#[tokio::test]
async fn an_open_upstream_connection_carries_the_following_requests() {
    let upstream = RawUpstream::start(After::KeepOpen).await;
    let server = start(&upstream);
    let seen = bodies(&server, 6, SETTLE).await;
    // One connection, reused: the pool found it again after each request.
    assert_eq!(upstream.connections(), 1, "{seen:?}");
    let expected: Vec<String> = (1..=6).map(|r| format!("conn-1-req-{r}")).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn a_connection_idle_past_upstream_idle_timeout_is_not_reused() {
    let upstream = RawUpstream::start(After::KeepOpen).await;
    let server = start_with_gateway(&upstream, "upstream_idle_timeout = \"2s\"\n");
    // Well within the timeout: reused.
    let first = bodies(&server, 2, SETTLE).await;
    assert_eq!(first, ["conn-1-req-1", "conn-1-req-2"]);
    // Past it: the parked connection is dropped when it would be taken out,
    // and the request goes out on a new one.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let later = bodies(&server, 2, SETTLE).await;
    assert_eq!(later, ["conn-2-req-1", "conn-2-req-2"]);
    assert_eq!(upstream.connections(), 2);
}

#[tokio::test]
async fn a_zero_upstream_idle_timeout_never_reuses_a_connection() {
    let upstream = RawUpstream::start(After::KeepOpen).await;
    let server = start_with_gateway(&upstream, "upstream_idle_timeout = \"0s\"\n");
    let seen = bodies(&server, 3, Duration::from_millis(20)).await;
    assert_eq!(seen, ["conn-1-req-1", "conn-2-req-1", "conn-3-req-1"]);
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_not_reused() {
    let upstream = RawUpstream::start(After::Close).await;
    let server = start(&upstream);
    // The pause lets the upstream's close (30 ms after its answer) reach the
    // gateway while the connection is parked.
    let seen = bodies(&server, 4, Duration::from_millis(100)).await;
    let expected: Vec<String> = (1..=4).map(|c| format!("conn-{c}-req-1")).collect();
    assert_eq!(seen, expected, "each request on a connection of its own");
    assert_eq!(upstream.connections(), 4);
    let log = server.log();
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test]
async fn a_connection_the_upstream_wrote_to_while_idle_is_not_reused() {
    let upstream = RawUpstream::start(After::Unrequested).await;
    let server = start(&upstream);
    let seen = bodies(&server, 4, Duration::from_millis(100)).await;
    // The unrequested response never reaches a client as the answer to the
    // next request: each request goes out on a fresh connection.
    assert!(
        seen.iter().all(|body| !body.contains("smuggled")),
        "{seen:?}"
    );
    let expected: Vec<String> = (1..=4).map(|c| format!("conn-{c}-req-1")).collect();
    assert_eq!(seen, expected);
    assert_eq!(upstream.connections(), 4);
}

#[tokio::test]
async fn concurrent_requests_each_get_their_own_answer_over_pooled_connections() {
    let upstream = RawUpstream::start(After::KeepOpen).await;
    let server = start(&upstream);
    let client = http();
    for round in 0..5 {
        let requests = (0..8).map(|i| {
            let client = client.clone();
            let url = format!("{}/open/r{round}-{i}", server.proxy);
            async move {
                let response = client.get(url).send().await.expect("answer");
                (response.status(), response.text().await.expect("body"))
            }
        });
        let answers = futures::future::join_all(requests).await;
        // Until the round's connections are back in the pool.
        tokio::time::sleep(SETTLE).await;
        let mut seen = std::collections::HashSet::new();
        for (status, body) in answers {
            assert_eq!(status, StatusCode::OK, "{body}");
            assert!(body.starts_with("conn-"), "{body}");
            // No two requests of a round were answered by the same
            // request on the same connection.
            assert!(seen.insert(body.clone()), "answer given twice: {body}");
        }
    }
    // Connections were reused across rounds: at most one per request in
    // flight, not one per request.
    assert!(
        upstream.connections() <= 8,
        "{} connections for 40 requests, 8 at a time",
        upstream.connections()
    );
}

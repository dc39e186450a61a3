//! What the client gets of every shape of upstream answer, byte for byte:
//! each framing (length, chunked, until close), answers without a body
//! (`HEAD`, 204, 304), a large body in many writes, an interim answer, an
//! upstream that breaks off mid-body, and a client that hangs up while the
//! upstream is still working. A request without a body and one with a body
//! take different ways through the gateway's engine; these tests hold both
//! to the same answers, and mix them on one client connection.

use crate::common::raw::{connect, lossy, parse_reply, read_replies, Reply, RAW_TIMEOUT};
use crate::common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The large body's size: many reads and writes on both sides.
const LARGE: usize = 1024 * 1024;

/// The large body's bytes.
fn large_body() -> Vec<u8> {
    (0..LARGE).map(|i| b'a' + (i % 26) as u8).collect()
}

/// A plain-socket HTTP/1.1 upstream whose answer is chosen by the request's
/// path (see [`answer`]). It counts the connections it accepted, and tells
/// [`ScriptedUpstream::slow`] what became of each `/open/slow` request.
struct ScriptedUpstream {
    url: String,
    accepted: Arc<AtomicUsize>,
    slow: mpsc::UnboundedReceiver<SlowEvent>,
}

/// What the upstream saw of a `/open/slow` request.
#[derive(Debug, PartialEq)]
enum SlowEvent {
    /// The request arrived; the upstream holds its answer back.
    Arrived,
    /// The gateway closed the connection while the answer was held back.
    Closed,
}

impl ScriptedUpstream {
    async fn start() -> ScriptedUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let (tell, slow) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, tell.clone()));
            }
        });
        ScriptedUpstream {
            url,
            accepted,
            slow,
        }
    }

    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    async fn next_slow_event(&mut self, within: Duration) -> Option<SlowEvent> {
        tokio::time::timeout(within, self.slow.recv())
            .await
            .ok()
            .flatten()
    }
}

/// One request read off the socket: method, path and body.
struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

/// Reads one request (its body by `Content-Length`); `None` once the peer
/// closed.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Request> {
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    buf.drain(..end);
    let mut words = head.split(' ');
    let method = words.next()?.to_string();
    let path = words.next()?.to_string();
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buf.drain(..length).collect();
    Some(Request { method, path, body })
}

async fn serve(mut stream: TcpStream, tell: mpsc::UnboundedSender<SlowEvent>) {
    let mut buf = Vec::new();
    while let Some(request) = read_request(&mut stream, &mut buf).await {
        if !answer(&mut stream, &request, &tell).await {
            return;
        }
    }
}

/// Writes the answer `request`'s path asks for; whether the connection
/// stays open for another request.
async fn answer(
    stream: &mut TcpStream,
    request: &Request,
    tell: &mpsc::UnboundedSender<SlowEvent>,
) -> bool {
    let pause = || tokio::time::sleep(Duration::from_millis(20));
    let path = request.path.as_str();
    let written = match path {
        "/open/length" => stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            .await
            .is_ok(),
        "/open/chunked" => {
            let parts: [&[u8]; 4] = [
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"2\r\nab\r\n",
                b"3\r\ncde\r\n",
                b"0\r\n\r\n",
            ];
            for part in parts {
                if stream.write_all(part).await.is_err() {
                    return false;
                }
                pause().await;
            }
            true
        }
        "/open/until-close" => {
            // No length and no chunks: the body ends where the connection does.
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n\r\ntail-").await;
            pause().await;
            let _ = stream.write_all(b"end").await;
            return false;
        }
        "/open/head" => stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n")
            .await
            .is_ok(),
        "/open/no-content" => stream
            .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .is_ok(),
        "/open/not-modified" => stream
            .write_all(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n")
            .await
            .is_ok(),
        "/open/large" => {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {LARGE}\r\n\r\n");
            if stream.write_all(head.as_bytes()).await.is_err() {
                return false;
            }
            for piece in large_body().chunks(64 * 1024) {
                if stream.write_all(piece).await.is_err() {
                    return false;
                }
                tokio::task::yield_now().await;
            }
            true
        }
        "/open/hints" => {
            let early = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n";
            if stream.write_all(early).await.is_err() {
                return false;
            }
            pause().await;
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal")
                .await
                .is_ok()
        }
        "/open/cut" => {
            // Promises 100 bytes, sends 10, and closes.
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
                .await;
            return false;
        }
        "/open/slow" => {
            // Holds the answer back until the gateway closes the connection.
            let _ = tell.send(SlowEvent::Arrived);
            let mut byte = [0u8; 1];
            if let Ok(Ok(0) | Err(_)) =
                tokio::time::timeout(Duration::from_secs(20), stream.read(&mut byte)).await
            {
                let _ = tell.send(SlowEvent::Closed);
            }
            return false;
        }
        "/open/echo" => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                request.body.len() + request.method.len() + 1
            );
            let mut out = head.into_bytes();
            out.extend_from_slice(request.method.as_bytes());
            out.push(b' ');
            out.extend_from_slice(&request.body);
            stream.write_all(&out).await.is_ok()
        }
        _ => stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            .await
            .is_ok(),
    };
    written
}

/// The scripted upstream, refgate with one open route to it (`/open/`),
/// and a client connection to the gateway.
async fn setup() -> (ScriptedUpstream, Refgate, TcpStream) {
    let upstream = ScriptedUpstream::start().await;
    let server = Refgate::start_with(Options {
        extra: public_route("open", "/open/", &upstream.url, ""),
        ..Options::default()
    });
    let client = connect(server.proxy_port).await.expect("connect");
    (upstream, server, client)
}

/// Writes `request` on `stream` as it is.
async fn send(stream: &mut TcpStream, request: &str) {
    stream
        .write_all(request.as_bytes())
        .await
        .expect("the gateway takes the request");
}

/// Reads one complete answer off `stream` (`head`: the request was a
/// `HEAD`, whose answer has no body whatever its headers say), and checks
/// nothing follows it: the answer and the bytes it came in.
async fn read_answer(stream: &mut TcpStream, head: bool, what: &str) -> (Reply, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + RAW_TIMEOUT;
    loop {
        if let Some((reply, used)) = parse_reply(&buf, false, head) {
            assert_eq!(
                used,
                buf.len(),
                "{what}: bytes after the answer: {:?}",
                lossy(&buf[used..])
            );
            return (reply, buf);
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            other => panic!(
                "{what}: no complete answer ({other:?}); got {:?}",
                lossy(&buf)
            ),
        }
    }
}

/// Sends one request on `stream` and reads its answer.
async fn exchange(stream: &mut TcpStream, request: &str, head: bool) -> Reply {
    send(stream, request).await;
    read_answer(stream, head, request).await.0
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: api.test\r\n\r\n")
}

#[tokio::test]
async fn every_framing_reaches_the_client_whole_on_one_connection() {
    let (_upstream, _server, mut client) = setup().await;

    let reply = exchange(&mut client, &get("/open/length"), false).await;
    assert_eq!((reply.status, reply.body.as_slice()), (200, &b"hello"[..]));

    let reply = exchange(&mut client, &get("/open/chunked"), false).await;
    assert_eq!((reply.status, reply.body.as_slice()), (200, &b"abcde"[..]));

    // A body that ends with the upstream's connection reaches the client
    // framed, so that the client's connection carries on.
    let reply = exchange(&mut client, &get("/open/until-close"), false).await;
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (200, &b"tail-end"[..])
    );

    let reply = exchange(
        &mut client,
        "HEAD /open/head HTTP/1.1\r\nHost: api.test\r\n\r\n",
        true,
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-length"), Some("42"));

    let reply = exchange(&mut client, &get("/open/no-content"), false).await;
    assert_eq!((reply.status, reply.body.len()), (204, 0));

    let reply = exchange(&mut client, &get("/open/not-modified"), false).await;
    assert_eq!((reply.status, reply.body.len()), (304, 0));
    assert_eq!(reply.header("etag"), Some("\"v1\""));

    let reply = exchange(&mut client, &get("/open/large"), false).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.body == large_body(),
        "the large body arrived changed: {} bytes",
        reply.body.len()
    );

    // And the connection still answers after all of them.
    let reply = exchange(&mut client, &get("/open/length"), false).await;
    assert_eq!((reply.status, reply.body.as_slice()), (200, &b"hello"[..]));
}

#[tokio::test]
async fn an_interim_answer_is_passed_on_before_the_final_one() {
    let (_upstream, _server, mut client) = setup().await;
    send(&mut client, &get("/open/hints")).await;
    let (reply, bytes) = read_answer(&mut client, false, "/open/hints").await;
    let text = lossy(&bytes);
    assert!(
        text.starts_with("HTTP/1.1 103 "),
        "the interim answer comes first: {text:?}"
    );
    assert!(
        text.contains("</style.css>; rel=preload"),
        "with its Link: {text:?}"
    );
    assert_eq!((reply.status, reply.body.as_slice()), (200, &b"final"[..]));
}

#[tokio::test]
async fn an_upstream_that_breaks_off_mid_body_cuts_the_client_off_and_is_not_used_again() {
    let (upstream, server, mut client) = setup().await;
    send(&mut client, &get("/open/cut")).await;
    let (answers, rest, closed) = read_replies(&mut client, 1).await;
    assert!(
        answers.is_empty() && closed,
        "the client must not get the cut body as a whole answer, and its connection ends: {answers:?}, {rest}"
    );
    assert!(
        rest.contains("0123456789"),
        "what came before the break reaches the client: {rest}"
    );

    // The next request gets a whole answer, on a new upstream connection.
    let before = upstream.connections();
    let mut client = connect(server.proxy_port).await.expect("connect");
    let reply = exchange(&mut client, &get("/open/length"), false).await;
    assert_eq!((reply.status, reply.body.as_slice()), (200, &b"hello"[..]));
    assert_eq!(upstream.connections(), before + 1);
}

#[tokio::test]
async fn a_client_that_hangs_up_ends_its_request_at_the_upstream() {
    let (mut upstream, server, mut client) = setup().await;
    send(&mut client, &get("/open/slow")).await;
    assert_eq!(
        upstream.next_slow_event(RAW_TIMEOUT).await,
        Some(SlowEvent::Arrived)
    );
    drop(client);
    // The gateway does not keep the upstream working for nobody.
    assert_eq!(
        upstream.next_slow_event(Duration::from_secs(5)).await,
        Some(SlowEvent::Closed),
        "the gateway kept the upstream's connection open after the client left"
    );
    // And it goes on serving.
    let mut client = connect(server.proxy_port).await.expect("connect");
    let reply = exchange(&mut client, &get("/open/length"), false).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn requests_with_and_without_a_body_share_a_connection() {
    let (_upstream, _server, mut client) = setup().await;
    for round in 0..3 {
        let body = format!("payload-{round}");
        let post = format!(
            "POST /open/echo HTTP/1.1\r\nHost: api.test\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let reply = exchange(&mut client, &post, false).await;
        assert_eq!(reply.status, 200);
        assert_eq!(lossy(&reply.body), format!("POST {body}"));

        let reply = exchange(&mut client, &get("/open/echo"), false).await;
        assert_eq!(
            (reply.status, lossy(&reply.body)),
            (200, "GET ".to_string())
        );
    }
}

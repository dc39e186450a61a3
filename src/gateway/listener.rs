//! The proxy listener's first look at a connection: HTTP/1.x or HTTP/2 with
//! prior knowledge (h2c), told apart by the first bytes as they arrive.
//!
//! pingora's own h2c detection reads exactly the 24 bytes of the HTTP/2
//! preface before it decides, with no deadline: an HTTP/1.0 request shorter
//! than that (`GET / HTTP/1.0\r\n\r\n`) is never answered. Here the bytes
//! are peeked, not read, as they come, and the connection goes to the
//! HTTP/1 proxy as soon as they differ from the preface; only a complete
//! preface goes to the h2c one. A connection that sends nothing within
//! [`FIRST_BYTES_TIMEOUT`] is closed.

use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::Gateway;

/// RFC 9113 §3.4.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long a new connection may stay silent.
pub const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(60);

/// The proxy's application: one pingora proxy for HTTP/1.x (and TLS with
/// ALPN), one with h2c on for connections that open with the preface.
pub struct ProxyListener {
    http1: Arc<HttpProxy<Gateway>>,
    h2c: Arc<HttpProxy<Gateway>>,
}

impl ProxyListener {
    /// `http1` must have h2c off and `h2c` on.
    pub fn new(http1: HttpProxy<Gateway>, h2c: HttpProxy<Gateway>) -> Self {
        ProxyListener {
            http1: Arc::new(http1),
            h2c: Arc::new(h2c),
        }
    }
}

/// What a connection opened with.
#[derive(Debug, PartialEq, Eq)]
enum Opening {
    Http1,
    H2c,
    /// Nothing in time: close it.
    Silence,
}

#[async_trait]
impl ServerApp for ProxyListener {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // TLS: ALPN decides, inside pingora.
        if stream.get_ssl_digest().is_some() {
            return ServerApp::process_new(&self.http1, stream, shutdown).await;
        }
        match opening(&stream).await {
            Opening::H2c => ServerApp::process_new(&self.h2c, stream, shutdown).await,
            Opening::Http1 => ServerApp::process_new(&self.http1, stream, shutdown).await,
            Opening::Silence => None,
        }
    }

    async fn cleanup(&self) {
        self.http1.cleanup().await;
        self.h2c.cleanup().await;
    }
}

/// Peeks at the first bytes of a plain TCP connection, through a duplicate
/// of its socket registered for readiness, until they decide.
async fn opening(stream: &Stream) -> Opening {
    // A plain pingora stream's id is its socket's descriptor.
    // SAFETY: the descriptor belongs to `stream`, which is borrowed for
    // the whole call and so stays open; it is only duplicated here.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.id()) };
    let Ok(duplicate) = fd.try_clone_to_owned() else {
        return Opening::Http1;
    };
    let socket = std::net::TcpStream::from(duplicate);
    // Non-blocking already (the flag is the socket's, shared by both).
    // SAFETY: `socket` owns its descriptor, which stays open and the same
    // until the `AsyncFd` that owns `socket` is dropped.
    let registered = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) };
    let Ok(watched) = registered else {
        return Opening::Http1;
    };
    let deadline = tokio::time::Instant::now() + FIRST_BYTES_TIMEOUT;
    let mut first = [0u8; H2_PREFACE.len()];
    loop {
        let mut ready = match tokio::time::timeout_at(deadline, watched.readable()).await {
            Err(_) => return Opening::Silence,
            Ok(Err(_)) => return Opening::Http1,
            Ok(Ok(ready)) => ready,
        };
        match ready.get_inner().peek(&mut first) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => ready.clear_ready(),
            // Closed or failed: pingora's HTTP/1 reader sees it too.
            Err(_) | Ok(0) => return Opening::Http1,
            Ok(n) if first[..n] != H2_PREFACE[..n] => return Opening::Http1,
            Ok(n) if n == H2_PREFACE.len() => return Opening::H2c,
            // A beginning of the preface: wait for more bytes.
            Ok(_) => ready.clear_ready(),
        }
    }
}

//! The proxy listener's first look at a connection: it counts against the
//! listener's connection limit and has a deadline to send its first
//! request head ([`crate::connections`]); then it goes to HTTP/1.x or to
//! HTTP/2 with prior knowledge (h2c), by its first bytes as they arrive.
//!
//! pingora's own h2c detection reads exactly the 24 bytes of the HTTP/2
//! preface before it decides, with no deadline: an HTTP/1.0 request shorter
//! than that (`GET / HTTP/1.0\r\n\r\n`) is never answered. Here the bytes
//! are peeked, not read, and only a complete preface goes to the h2c proxy.

use std::os::fd::BorrowedFd;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::http::RequestHeader;
use pingora::protocols::http::authority::validate_request_authority;
use pingora::protocols::Stream;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::errors::GatewayError;
use super::proxy::RequestIds;
use super::Gateway;
use crate::connections::{Admission, Opening};

/// The proxy's application: one pingora proxy for HTTP/1.x (and TLS with
/// ALPN), one with h2c on for connections that open with the preface.
pub struct ProxyListener {
    http1: Arc<HttpProxy<Gateway>>,
    h2c: Arc<HttpProxy<Gateway>>,
    admission: Arc<Admission>,
    ids: RequestIds,
}

impl ProxyListener {
    /// `http1` must have h2c off and `h2c` on.
    pub fn new(
        http1: HttpProxy<Gateway>,
        h2c: HttpProxy<Gateway>,
        admission: Arc<Admission>,
    ) -> Self {
        ProxyListener {
            http1: Arc::new(http1),
            h2c: Arc::new(h2c),
            admission,
            ids: RequestIds::new(),
        }
    }
}

#[async_trait]
impl ServerApp for ProxyListener {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut ticket = self.admission.admit()?;
        // TLS: the handshake is done and ALPN decides, inside pingora.
        let proxy = if stream.get_ssl_digest().is_some() {
            ticket.served();
            &self.http1
        } else {
            // A plain pingora stream's id is its socket's descriptor.
            // SAFETY: the descriptor belongs to `stream`, which outlives
            // this borrow; it is only duplicated.
            let socket = unsafe { BorrowedFd::borrow_raw(stream.id()) };
            match ticket.first_request(socket).await {
                Opening::H2 => &self.h2c,
                Opening::Http1(head) => {
                    if let Some((why, request_id)) = self.refusal(&head) {
                        let mut stream = stream;
                        // Read what was only peeked: closing a socket with
                        // unread bytes resets it, and the answer with it.
                        let mut seen = vec![0u8; head.len()];
                        let _ = stream.read_exact(&mut seen).await;
                        let answer = GatewayError::BadRequest(why).http1_answer(&request_id);
                        let _ = stream.write_all(&answer).await;
                        let _ = stream.flush().await;
                        let _ = stream.shutdown().await;
                        return None;
                    }
                    &self.http1
                }
                Opening::Close => return None,
            }
        };
        let reusable = ServerApp::process_new(proxy, stream, shutdown).await;
        drop(ticket);
        reusable
    }

    async fn cleanup(&self) {
        self.http1.cleanup().await;
        self.h2c.cleanup().await;
    }
}

impl ProxyListener {
    /// Why pingora would refuse this first request head before any of
    /// refgate's filters run (and answer a bare 400), with the request id
    /// for refgate's own answer instead: the request-target's authority
    /// disagrees with `Host` (an absolute-form request to a foreign host),
    /// `Host` is repeated, or the authority is ambiguous. A head that does
    /// not parse is left to pingora, which repairs some of them.
    fn refusal(&self, head: &[u8]) -> Option<(&'static str, String)> {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut parsed = httparse::Request::new(&mut headers);
        if !matches!(parsed.parse(head), Ok(httparse::Status::Complete(_))) {
            return None;
        }
        let mut request =
            RequestHeader::build(parsed.method?, parsed.path?.as_bytes(), None).ok()?;
        for header in parsed.headers.iter() {
            request
                .append_header(header.name.to_string(), header.value)
                .ok()?;
        }
        validate_request_authority(&request).err()?;
        Some((
            "the request-target and Host name different hosts, or the host is ambiguous",
            self.ids.for_request(&request),
        ))
    }
}

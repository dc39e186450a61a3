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
use pingora::protocols::Stream;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;

use super::Gateway;
use crate::connections::{Admission, Opening};

/// The proxy's application: one pingora proxy for HTTP/1.x (and TLS with
/// ALPN), one with h2c on for connections that open with the preface.
pub struct ProxyListener {
    http1: Arc<HttpProxy<Gateway>>,
    h2c: Arc<HttpProxy<Gateway>>,
    admission: Arc<Admission>,
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
                Opening::Http1 => &self.http1,
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

//! The proxy listener's first look at a connection: it counts against the
//! listener's connection limit and has a deadline to send its first
//! request head ([`crate::connections`]; on TLS, the handshake included,
//! [`TlsArrivals`]); then it goes to HTTP/1.x or to HTTP/2 with prior
//! knowledge (h2c), by its first bytes as they arrive. An HTTP/1
//! connection stays watched between requests ([`super::watched`]).
//!
//! pingora's own h2c detection reads exactly the 24 bytes of the HTTP/2
//! preface before it decides, with no deadline: an HTTP/1.0 request shorter
//! than that (`GET / HTTP/1.0\r\n\r\n`) is never answered. Here the bytes
//! are peeked, not read, and only a complete preface goes to the h2c proxy.

use std::collections::HashMap;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::listeners::PreTlsProcess;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{Stream, UniqueID, UniqueIDType, ALPN};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::proxy::RequestIds;
use super::watched::{refusal, HeadLimits, Watched};
use super::Gateway;
use crate::connections::{Admission, Opening, Ticket};

/// The proxy's application: one pingora proxy for HTTP/1.x (and TLS with
/// ALPN), one with h2c on for connections that open with the preface.
pub struct ProxyListener {
    http1: Arc<HttpProxy<Gateway>>,
    h2c: Arc<HttpProxy<Gateway>>,
    admission: Arc<Admission>,
    limits: HeadLimits,
    ids: Arc<RequestIds>,
    arrivals: Option<Arc<TlsArrivals>>,
}

impl ProxyListener {
    /// `http1` must have h2c off and `h2c` on; `arrivals` watches TLS
    /// handshakes when the listener has TLS.
    pub fn new(
        http1: HttpProxy<Gateway>,
        h2c: HttpProxy<Gateway>,
        admission: Arc<Admission>,
        limits: HeadLimits,
        arrivals: Option<Arc<TlsArrivals>>,
    ) -> Self {
        ProxyListener {
            http1: Arc::new(http1),
            h2c: Arc::new(h2c),
            admission,
            limits,
            ids: Arc::new(RequestIds::new()),
            arrivals,
        }
    }

    /// A TLS connection, its handshake done (inside pingora): HTTP/2 by
    /// ALPN as it is, HTTP/1 watched, its first head due by the deadline
    /// counted from accept.
    async fn tls(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let arrival = self.arrivals.as_ref().and_then(|a| a.take(stream.id()));
        let (mut ticket, deadline) = match arrival {
            Some(arrival) => arrival,
            None => (self.admission.admit()?, Instant::now() + self.limits.head),
        };
        if stream.selected_alpn_proto() == Some(ALPN::H2) {
            ticket.served();
            let reusable = ServerApp::process_new(&self.http1, stream, shutdown).await;
            drop(ticket);
            return reusable;
        }
        let watched =
            Watched::first_head_by(stream, ticket, deadline, self.limits, self.ids.clone());
        ServerApp::process_new(&self.http1, Box::new(watched), shutdown).await
    }
}

#[async_trait]
impl ServerApp for ProxyListener {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if stream.get_ssl_digest().is_some() {
            return self.tls(stream, shutdown).await;
        }
        let mut ticket = self.admission.admit()?;
        // A plain pingora stream's id is its socket's descriptor.
        // SAFETY: the descriptor belongs to `stream`, which outlives this
        // borrow; it is only duplicated.
        let socket = unsafe { BorrowedFd::borrow_raw(stream.id()) };
        match ticket.first_request(socket).await {
            Opening::H2 => {
                let reusable = ServerApp::process_new(&self.h2c, stream, shutdown).await;
                drop(ticket);
                reusable
            }
            Opening::Http1(head) => {
                if let Some((error, request_id)) = refusal(&head, &self.ids) {
                    let mut stream = stream;
                    // Read what was only peeked: closing a socket with
                    // unread bytes resets it, and the answer with it.
                    let mut seen = vec![0u8; head.len()];
                    let _ = stream.read_exact(&mut seen).await;
                    let _ = stream.write_all(&error.http1_answer(&request_id)).await;
                    let _ = stream.flush().await;
                    let _ = stream.shutdown().await;
                    return None;
                }
                let watched = Watched::serving(stream, ticket, self.limits, self.ids.clone());
                ServerApp::process_new(&self.http1, Box::new(watched), shutdown).await
            }
            Opening::Close => None,
        }
    }

    async fn cleanup(&self) {
        self.http1.cleanup().await;
        self.h2c.cleanup().await;
    }
}

/// TLS connections from accept until their handshake is done (pingora's,
/// before [`ProxyListener`] sees them): each counts against the
/// listener's connection limit, may be closed to make room, and has
/// `request_head_timeout` from accept to finish the handshake (and then
/// its first request head), where pingora would wait 60 s.
pub struct TlsArrivals {
    admission: Arc<Admission>,
    head_timeout: Duration,
    /// By socket descriptor; a descriptor reused by a new connection
    /// replaces the entry of the old one.
    pending: Mutex<HashMap<UniqueIDType, Arrival>>,
    next: AtomicU64,
}

struct Arrival {
    ticket: Ticket,
    deadline: Instant,
    generation: u64,
    watchdog: tokio::task::AbortHandle,
}

impl TlsArrivals {
    pub fn new(admission: Arc<Admission>, head_timeout: Duration) -> Arc<Self> {
        Arc::new(TlsArrivals {
            admission,
            head_timeout,
            pending: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
        })
    }

    /// The callback pingora runs between accept and the handshake.
    pub fn callback(self: &Arc<Self>) -> Arc<dyn PreTlsProcess> {
        Arc::new(ArrivalsCallback(self.clone()))
    }

    /// The ticket and first-head deadline of a connection whose handshake
    /// is done; its watchdog stops.
    fn take(&self, id: UniqueIDType) -> Option<(Ticket, Instant)> {
        let arrival = self.lock().remove(&id)?;
        arrival.watchdog.abort();
        Some((arrival.ticket, arrival.deadline))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<UniqueIDType, Arrival>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct ArrivalsCallback(Arc<TlsArrivals>);

#[async_trait]
impl PreTlsProcess for ArrivalsCallback {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        let arrivals = &self.0;
        let Some(mut ticket) = arrivals.admission.admit() else {
            return pingora::Error::e_explain(
                pingora::ErrorType::AcceptError,
                "the proxy listener is full",
            );
        };
        ticket.waiting();
        let id = stream.id();
        let deadline = Instant::now() + arrivals.head_timeout;
        let generation = arrivals.next.fetch_add(1, Ordering::Relaxed);
        let closed = ticket.take_closed();
        // A duplicate descriptor: the watchdog shuts this very socket down
        // even if pingora has closed its descriptor and the number now
        // names another socket.
        // SAFETY: the descriptor belongs to `stream`, alive for this call;
        // it is only duplicated.
        let socket: Option<OwnedFd> = unsafe { BorrowedFd::borrow_raw(id) }
            .try_clone_to_owned()
            .ok();
        let watched = Arc::downgrade(arrivals);
        let watchdog = tokio::spawn(async move {
            let evicted = async {
                let evicted = match closed {
                    Some(closed) => closed.await.is_ok(),
                    None => false,
                };
                if !evicted {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = evicted => {}
            }
            if let Some(socket) = socket {
                let _ = std::net::TcpStream::from(socket).shutdown(std::net::Shutdown::Both);
            }
            if let Some(arrivals) = watched.upgrade() {
                let mut pending = arrivals.lock();
                if pending.get(&id).is_some_and(|a| a.generation == generation) {
                    pending.remove(&id);
                }
            }
        })
        .abort_handle();
        let replaced = arrivals.lock().insert(
            id,
            Arrival {
                ticket,
                deadline,
                generation,
                watchdog,
            },
        );
        // The descriptor's previous connection ended before its handshake
        // did: its watchdog has nothing left to watch.
        if let Some(old) = replaced {
            old.watchdog.abort();
        }
        Ok(())
    }
}

//! A proxy connection between requests: the deadlines pingora does not
//! keep, and refgate's own answer to a request head pingora would refuse
//! with an empty body.
//!
//! pingora times each read of a request head, not the head, and serves
//! the requests of a kept-alive HTTP/1 connection in its own loop. So the
//! connection's stream is wrapped ([`Watched`]): while the HTTP server
//! waits for a request head, the wrapper gives it nothing until the head
//! is complete (a head that arrives in one read is read into the server's
//! buffer and judged there; one that arrives in pieces is held until it
//! is whole), and ends the stream (the HTTP server sees the client close,
//! and closes quietly) when
//! - nothing arrives within the keep-alive timeout of the previous answer,
//! - a head begun is not complete within `request_head_timeout` of its
//!   first byte (of accept, for the first request on a TLS connection),
//! - or the listener is full and this is the connection idle the longest.
//!
//! A complete head is judged before pingora sees it ([`refusal`]); a head
//! refgate refuses is answered with the JSON error, and the connection
//! closed. The gateway's filters tell the wrapper when a request begins
//! ([`Watched::serving`]) and ends ([`Watched::waiting`]), which also
//! covers a pipelined request pingora already holds.

use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::protocols::http::authority::validate_request_authority;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora::proxy::Session;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::errors::GatewayError;
use super::proxy::RequestIds;
use crate::connections::{head_end, Ticket, HEAD_PEEK};

/// How long a connection may wait for, and take over, a request head.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// From the previous answer to the first byte of the next head.
    pub keepalive: Duration,
    /// From the first byte of a head to its end.
    pub head: Duration,
}

/// A proxy connection's stream, watched between requests.
pub struct Watched {
    inner: Stream,
    state: Mutex<State>,
}

struct State {
    phase: Phase,
    /// Bytes read while waiting for a head, not yet given to the server.
    held: Vec<u8>,
    /// How many of `held` were given (in `Release`).
    given: usize,
    ticket: Ticket,
    deadline: Pin<Box<Sleep>>,
    limits: HeadLimits,
    ids: Arc<RequestIds>,
}

enum Phase {
    /// A request is being served: reads pass through.
    Serving,
    /// Waiting for the next request head; nothing of it has arrived.
    Idle,
    /// Part of a request head has arrived.
    Head,
    /// A complete head, accepted, being handed to the server.
    Release,
    /// Writing refgate's answer to a refused head, then closing.
    Refuse { answer: Vec<u8>, written: usize },
    /// Ended by refgate: every read ends the stream.
    Closed,
}

impl Watched {
    /// Wraps a connection whose first request head has been read and
    /// judged already (a plain connection, see [`crate::connections`]).
    pub fn serving(
        inner: Stream,
        ticket: Ticket,
        limits: HeadLimits,
        ids: Arc<RequestIds>,
    ) -> Self {
        Self::new(inner, ticket, Phase::Serving, Instant::now(), limits, ids)
    }

    /// Wraps a connection that has yet to send its first request head,
    /// which must be complete by `deadline` (a TLS connection, counted
    /// from accept).
    pub fn first_head_by(
        inner: Stream,
        mut ticket: Ticket,
        deadline: Instant,
        limits: HeadLimits,
        ids: Arc<RequestIds>,
    ) -> Self {
        ticket.waiting();
        Self::new(inner, ticket, Phase::Head, deadline, limits, ids)
    }

    fn new(
        inner: Stream,
        ticket: Ticket,
        phase: Phase,
        deadline: Instant,
        limits: HeadLimits,
        ids: Arc<RequestIds>,
    ) -> Self {
        Watched {
            inner,
            state: Mutex::new(State {
                phase,
                held: Vec::new(),
                given: 0,
                ticket,
                deadline: Box::pin(tokio::time::sleep_until(deadline)),
                limits,
                ids,
            }),
        }
    }

    /// The watched stream under a gateway session, if it is one (HTTP/1
    /// on the proxy listener).
    pub fn of(session: &Session) -> Option<&Watched> {
        let stream = session.as_downstream().stream()?;
        stream.as_any().downcast_ref::<Watched>()
    }

    /// A request has begun (its head was read, perhaps from bytes pingora
    /// already held): no deadline until it ends. Returns the keep-alive
    /// timeout in whole seconds (pingora's unit).
    pub fn request_began(&self) -> u64 {
        let mut state = self.lock();
        if matches!(state.phase, Phase::Idle | Phase::Head) && state.held.is_empty() {
            state.phase = Phase::Serving;
            state.ticket.served();
        }
        state.limits.keepalive.as_secs().max(1)
    }

    /// The request was answered: the next head is waited for, for the
    /// keep-alive timeout, and the connection may be closed to make room.
    pub fn request_ended(&self) {
        let mut state = self.lock();
        if matches!(state.phase, Phase::Serving) {
            state.phase = Phase::Idle;
            state.ticket.waiting();
            let deadline = Instant::now() + state.limits.keepalive;
            state.deadline.as_mut().reset(deadline);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let inner = &mut this.inner;
        let mut state = this.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match &mut state.phase {
                Phase::Serving => {
                    drop(state);
                    return Pin::new(inner).poll_read(cx, buf);
                }
                Phase::Closed => return Poll::Ready(Ok(())),
                Phase::Release => {
                    let state = &mut *state;
                    let rest = &state.held[state.given..];
                    let n = rest.len().min(buf.remaining());
                    buf.put_slice(&rest[..n]);
                    state.given += n;
                    if state.given == state.held.len() {
                        state.held.clear();
                        state.given = 0;
                        state.phase = Phase::Serving;
                        state.ticket.served();
                    }
                    return Poll::Ready(Ok(()));
                }
                Phase::Refuse { answer, written } => {
                    while *written < answer.len() {
                        match Pin::new(&mut *inner).poll_write(cx, &answer[*written..]) {
                            Poll::Pending => return Poll::Pending,
                            Poll::Ready(Ok(n)) if n > 0 => *written += n,
                            Poll::Ready(_) => break,
                        }
                    }
                    if *written == answer.len() && Pin::new(&mut *inner).poll_flush(cx).is_pending()
                    {
                        return Poll::Pending;
                    }
                    state.phase = Phase::Closed;
                }
                Phase::Idle | Phase::Head => {
                    let state = &mut *state;
                    if state.ticket.poll_closed(cx) || state.deadline.as_mut().poll(cx).is_ready() {
                        // Nothing held reaches the server: it sees a client
                        // that closed before a request, and closes quietly.
                        state.held.clear();
                        state.phase = Phase::Closed;
                        continue;
                    }
                    if state.held.is_empty() && buf.remaining() > 0 {
                        match state.read_in_place(inner, cx, buf) {
                            Some(answer) => return answer,
                            None => continue,
                        }
                    }
                    // Left uninitialised: zeroing 8 KiB on every poll, the
                    // ones that find nothing to read among them, cost more
                    // than the rest of the wait.
                    let mut chunk = [MaybeUninit::<u8>::uninit(); 8192];
                    let mut read = ReadBuf::uninit(&mut chunk);
                    match Pin::new(&mut *inner).poll_read(cx, &mut read) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(e)) => {
                            state.held.clear();
                            state.phase = Phase::Closed;
                            return Poll::Ready(Err(e));
                        }
                        Poll::Ready(Ok(())) if read.filled().is_empty() => {
                            // The client shut its side: the server answers
                            // what it got, as for a first request.
                            state.phase = if state.held.is_empty() {
                                Phase::Closed
                            } else {
                                Phase::Release
                            };
                        }
                        Poll::Ready(Ok(())) => {
                            state.head_begun();
                            state.held.extend_from_slice(read.filled());
                            if let Some(phase) = judge(&state.held, &state.ids) {
                                state.phase = phase;
                            }
                        }
                    }
                }
            }
        }
    }
}

impl State {
    /// Reads the start of a head while nothing of it is held, straight into
    /// the server's buffer: a head that arrives whole (nearly every one) is
    /// judged where it lies and not copied; one refused or not yet complete
    /// is taken back out, so the server sees none of it. `None`: the phase
    /// changed, go round again.
    fn read_in_place(
        &mut self,
        inner: &mut Stream,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Option<Poll<std::io::Result<()>>> {
        let before = buf.filled().len();
        match Pin::new(inner).poll_read(cx, buf) {
            Poll::Pending => return Some(Poll::Pending),
            Poll::Ready(Err(e)) => {
                self.phase = Phase::Closed;
                return Some(Poll::Ready(Err(e)));
            }
            Poll::Ready(Ok(())) => {}
        }
        let got = &buf.filled()[before..];
        if got.is_empty() {
            self.phase = Phase::Closed;
            return None;
        }
        match judge(got, &self.ids) {
            Some(Phase::Release) => {
                self.phase = Phase::Serving;
                self.ticket.served();
                return Some(Poll::Ready(Ok(())));
            }
            Some(refused) => self.phase = refused,
            None => {
                self.held.extend_from_slice(got);
                self.head_begun();
            }
        }
        buf.set_filled(before);
        None
    }

    /// The first bytes of a head arrived while idle: its deadline starts.
    fn head_begun(&mut self) {
        if matches!(self.phase, Phase::Idle) {
            self.phase = Phase::Head;
            let deadline = Instant::now() + self.limits.head;
            self.deadline.as_mut().reset(deadline);
        }
    }
}

/// What follows the bytes of a head read so far, if they are enough to
/// tell: `Release` (hand them to the server) or `Refuse`.
fn judge(head: &[u8], ids: &RequestIds) -> Option<Phase> {
    // A line end first: the rest of a head pingora began to read.
    let refused = if matches!(head.first(), Some(b'\r' | b'\n')) {
        None
    } else {
        match head_end(head) {
            Some(end) => refusal_of_complete(&head[..end], ids),
            None if head.len() < HEAD_PEEK => return None,
            None => Some((GatewayError::HeadTooLarge, ids.fresh())),
        }
    };
    Some(match refused {
        Some((error, request_id)) => Phase::Refuse {
            answer: error.http1_answer(&request_id),
            written: 0,
        },
        None => Phase::Release,
    })
}

/// Why refgate refuses a request head before pingora reads it, with the
/// request id for the answer. pingora would refuse these itself with an
/// empty 400, before any of refgate's filters run:
/// - a head longer than 64 KiB (431; pingora would take up to 1 MiB, read
///   by read),
/// - a head that does not parse, even after pingora's repair of a
///   request-target with spaces or quotes,
/// - a request-target whose authority disagrees with `Host` (an
///   absolute-form request to a foreign host), a repeated `Host`, or an
///   ambiguous authority.
pub fn refusal(head: &[u8], ids: &RequestIds) -> Option<(GatewayError, String)> {
    match head_end(head) {
        Some(end) => refusal_of_complete(&head[..end], ids),
        None => Some((GatewayError::HeadTooLarge, ids.fresh())),
    }
}

/// [`refusal`] of a head known to end where `head` ends.
fn refusal_of_complete(head: &[u8], ids: &RequestIds) -> Option<(GatewayError, String)> {
    let repaired;
    // Uninitialised: httparse fills in only the headers there are.
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 256];
    let mut parsed = httparse::Request::new(&mut []);
    let parsed = match parsed.parse_with_uninit_headers(head, &mut headers) {
        Ok(httparse::Status::Complete(_)) => parsed,
        Err(httparse::Error::Token | httparse::Error::Version) => {
            // pingora escapes such a request-target and parses again.
            // Nothing to escape: pingora refuses it as it is.
            let Some(escaped) = escape_target(head) else {
                return Some((malformed(), ids.fresh()));
            };
            repaired = escaped;
            let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 256];
            let mut again = httparse::Request::new(&mut []);
            return match again.parse_with_uninit_headers(&repaired, &mut headers) {
                Ok(httparse::Status::Complete(_)) => authority_refusal(&again, ids),
                _ => Some((malformed(), ids.fresh())),
            };
        }
        _ => return Some((malformed(), ids.fresh())),
    };
    authority_refusal(&parsed, ids)
}

fn malformed() -> GatewayError {
    GatewayError::BadRequest("the request head is malformed")
}

/// The request-target's authority against `Host`.
fn authority_refusal(
    parsed: &httparse::Request<'_, '_>,
    ids: &RequestIds,
) -> Option<(GatewayError, String)> {
    if plainly_acceptable(parsed) {
        return None;
    }
    let mut request = RequestHeader::build(parsed.method?, parsed.path?.as_bytes(), None).ok()?;
    for header in parsed.headers.iter() {
        request
            .append_header(header.name.to_string(), header.value)
            .ok()?;
    }
    validate_request_authority(&request).err()?;
    Some((
        GatewayError::BadRequest(
            "the request-target and Host name different hosts, or the host is ambiguous",
        ),
        ids.for_request(&request),
    ))
}

/// Whether a head passes pingora's authority check without building
/// pingora's request for it (a copy of every header): an origin-form
/// target carries no authority of its own, so outside CONNECT only a
/// repeated `Host` or userinfo in `Host` is refused. Anything else takes
/// the full check.
fn plainly_acceptable(parsed: &httparse::Request<'_, '_>) -> bool {
    if parsed.method == Some("CONNECT") || !parsed.path.is_some_and(|p| p.starts_with('/')) {
        return false;
    }
    let mut hosts = parsed
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"));
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => false,
        (Some(host), None) => !host.value.contains(&b'@'),
        (None, None) => true,
    }
}

/// The head with its request-target percent-encoded where httparse
/// refuses a byte (controls, space, `<`, `>`, `"`), as pingora repairs it;
/// `None` when there is no request line of that shape or nothing changes.
fn escape_target(head: &[u8]) -> Option<Vec<u8>> {
    let line_end = head.iter().position(|&b| b == b'\n')?;
    let line = head[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&head[..line_end]);
    let method_end = line.iter().position(|&b| b == b' ')?;
    let version_start = line.iter().rposition(|&b| b == b' ')?;
    if version_start <= method_end + 1 || !line[version_start + 1..].starts_with(b"HTTP/") {
        return None;
    }
    let target = &line[method_end + 1..version_start];
    let mut escaped = Vec::with_capacity(head.len() + 16);
    escaped.extend_from_slice(&head[..method_end + 1]);
    let mut changed = false;
    for &b in target {
        if b < 0x20 || b == 0x7f || b" <>\"".contains(&b) {
            escaped.extend_from_slice(format!("%{b:02X}").as_bytes());
            changed = true;
        } else {
            escaped.push(b);
        }
    }
    escaped.extend_from_slice(&head[version_start..]);
    changed.then_some(escaped)
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for Watched {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for Watched {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Watched {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Watched {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Watched {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for Watched {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for Watched {
    // Not offered: held bytes would be missed. pingora peeks only to
    // detect h2c, which never reaches a watched stream.
}

impl std::fmt::Debug for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("inner", &self.inner)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_pingora_would_refuse_bare_are_refused_here() {
        let ids = RequestIds::new();
        let refused = |head: &[u8]| refusal(head, &ids).map(|(e, _)| e.status());
        assert_eq!(refused(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"), None);
        // Repaired by pingora: a space or quote in the target.
        assert_eq!(refused(b"GET /a b\"c HTTP/1.1\r\nHost: x\r\n\r\n"), None);
        assert_eq!(refused(b"GET /a HTTP/1.1\r\nHo st: x\r\n\r\n"), Some(400));
        assert_eq!(refused(b"GET /a HTTP/1.1\r\nHost x\r\n\r\n"), Some(400));
        assert_eq!(refused(b"\x01\x02\x03\r\n\r\n"), Some(400));
        assert_eq!(
            refused(b"GET http://evil.test/ HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(400)
        );
        assert_eq!(refused(&vec![b'a'; HEAD_PEEK]), Some(431));
        // Origin form, decided without pingora's request: a repeated Host
        // and userinfo in Host are still refused.
        assert_eq!(
            refused(b"GET /a HTTP/1.1\r\nHost: x\r\nhost: y\r\n\r\n"),
            Some(400)
        );
        assert_eq!(refused(b"GET /a HTTP/1.1\r\nHost: u@x\r\n\r\n"), Some(400));
        assert_eq!(refused(b"GET /a HTTP/1.1\r\nX-A: 1\r\n\r\n"), None);
    }

    #[test]
    fn a_target_is_escaped_as_pingora_does() {
        assert_eq!(
            escape_target(b"GET /a b HTTP/1.1\r\n\r\n").as_deref(),
            Some(&b"GET /a%20b HTTP/1.1\r\n\r\n"[..])
        );
        assert_eq!(escape_target(b"GET /a HTTP/1.1\r\n\r\n"), None);
    }
}

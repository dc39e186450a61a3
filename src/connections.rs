//! Open connections on a listener: how many, and how long a new one may
//! take to send its first request head.
//!
//! A listener holds at most `max_connections`. When it is full, the
//! connection waiting longest for a request is closed to make room (one
//! that has not yet sent a complete request head, or one idle between
//! requests): a flood of idle or trickling sockets cannot lock a real
//! client out. Only when every open connection is serving requests is a
//! new one refused. A new connection has `request_head_timeout` from accept
//! to send a complete request head (for HTTP/2, its preface), whether it
//! sends nothing at all or one byte at a time.
//!
//! The head is waited for by peeking at the socket, through a duplicate of
//! its descriptor registered for readiness, so that the HTTP servers
//! (pingora, hyper) read the bytes as if nobody had looked.

use std::collections::BTreeMap;
use std::future::Future;
use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::oneshot;

/// RFC 9113 §3.4.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Most bytes looked at for the end of a request head; the proxy refuses
/// a longer head (431), and the token service leaves it to hyper's limit.
pub const HEAD_PEEK: usize = 64 * 1024;

/// The limits of one listener.
pub struct Admission {
    max_connections: usize,
    head_timeout: Duration,
    state: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    count: usize,
    next_id: u64,
    /// Connections still waiting for their first request head, oldest
    /// first, with the means to close them.
    waiting: BTreeMap<u64, oneshot::Sender<()>>,
}

impl Admission {
    pub fn new(max_connections: usize, head_timeout: Duration) -> Arc<Self> {
        Arc::new(Admission {
            max_connections,
            head_timeout,
            state: Mutex::new(Open::default()),
        })
    }

    /// Admits a new connection, closing the oldest one still waiting for
    /// its first request head if the listener is full; `None` when every
    /// open connection is busy.
    pub fn admit(self: &Arc<Self>) -> Option<Ticket> {
        let mut open = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if open.count >= self.max_connections {
            let (_, close) = open.waiting.pop_first()?;
            let _ = close.send(());
        }
        open.count += 1;
        open.next_id += 1;
        let id = open.next_id;
        let (close, closed) = oneshot::channel();
        open.waiting.insert(id, close);
        Some(Ticket {
            admission: self.clone(),
            id,
            closed: Some(closed),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).count
    }
}

/// One admitted connection; it counts as open until dropped.
pub struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    closed: Option<oneshot::Receiver<()>>,
}

/// How a connection began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opening {
    /// A complete HTTP/1.x request head (or bytes refgate leaves the HTTP
    /// server to judge): the bytes seen, still unread.
    Http1(Vec<u8>),
    /// The HTTP/2 connection preface.
    H2,
    /// Nothing usable in time, or closed to make room: drop it.
    Close,
}

impl Ticket {
    /// Waits until the connection has sent a complete request head or the
    /// HTTP/2 preface, at most the head timeout from now (call it right
    /// after accepting), and no longer counts it as waiting afterwards.
    pub async fn first_request(&mut self, socket: BorrowedFd<'_>) -> Opening {
        let deadline = tokio::time::Instant::now() + self.admission.head_timeout;
        let closed = self.closed.take();
        let opening = tokio::select! {
            opening = tokio::time::timeout_at(deadline, request_head(socket)) => {
                opening.unwrap_or(Opening::Close)
            }
            _ = async {
                match closed {
                    Some(closed) => { let _ = closed.await; }
                    None => std::future::pending::<()>().await,
                }
            } => Opening::Close,
        };
        self.served();
        opening
    }

    /// Puts the connection back on the waiting list, as the newest entry:
    /// it is idle between requests (or still in its TLS handshake), and may
    /// be closed to make room from now on ([`Ticket::poll_closed`] says so).
    pub fn waiting(&mut self) {
        let (close, closed) = oneshot::channel();
        let mut open = self.no_longer_waiting();
        open.next_id += 1;
        let id = open.next_id;
        open.waiting.insert(id, close);
        drop(open);
        self.id = id;
        self.closed = Some(closed);
    }

    /// Whether the listener closed this waiting connection to make room;
    /// registers `cx` to be woken when it does.
    pub fn poll_closed(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        let Some(closed) = self.closed.as_mut() else {
            return false;
        };
        match std::pin::Pin::new(closed).poll(cx) {
            std::task::Poll::Ready(Ok(())) => true,
            // Taken off the waiting list without being closed.
            std::task::Poll::Ready(Err(_)) => {
                self.closed = None;
                false
            }
            std::task::Poll::Pending => false,
        }
    }

    /// The means to learn that the listener closed this waiting
    /// connection, for a task that watches it on the ticket's behalf.
    pub fn take_closed(&mut self) -> Option<oneshot::Receiver<()>> {
        self.closed.take()
    }

    /// The connection is no longer waiting for a request (or is not
    /// watched for one, as on HTTP/2 over TLS).
    pub fn served(&mut self) {
        drop(self.no_longer_waiting());
        self.closed = None;
    }

    /// Takes the connection off the waiting list; returns the listener's
    /// state, still locked.
    fn no_longer_waiting(&self) -> std::sync::MutexGuard<'_, Open> {
        let mut open = self
            .admission
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        open.waiting.remove(&self.id);
        open
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut open = self.no_longer_waiting();
        open.count = open.count.saturating_sub(1);
    }
}

/// The requests in flight on one connection of a server that does not
/// say when a request ends (hyper): with none in flight the connection is
/// idle, back on the waiting list, and may be closed to make room
/// ([`Closable`] ends its reads then).
pub struct Activity {
    /// The ticket and the requests in flight, changed together, and the
    /// reader to wake when the connection goes back on the waiting list
    /// (its read is pending on the old ticket state).
    state: Mutex<(Ticket, usize, Option<std::task::Waker>)>,
}

impl Activity {
    pub fn new(ticket: Ticket) -> Arc<Self> {
        Arc::new(Activity {
            state: Mutex::new((ticket, 0, None)),
        })
    }

    /// A request begins; it ends when the returned guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        let mut state = self.lock();
        state.1 += 1;
        state.0.served();
        InFlight(self.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Ticket, usize, Option<std::task::Waker>)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One request in flight on a connection (see [`Activity`]).
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.1 = state.1.saturating_sub(1);
        if state.1 == 0 {
            state.0.waiting();
            // A read pending since before watches the new state now.
            if let Some(reader) = state.2.take() {
                reader.wake();
            }
        }
    }
}

/// A connection's stream whose reads end once the listener closed the
/// connection to make room; the HTTP server sees the client leave.
pub struct Closable<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Closable<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        Closable { inner, activity }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Closable<T> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        {
            let mut state = this.activity.lock();
            if state.0.poll_closed(cx) {
                return std::task::Poll::Ready(Ok(()));
            }
            state.2 = Some(cx.waker().clone());
        }
        std::pin::Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Closable<T> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Peeks at a socket until its bytes decide how the connection began.
async fn request_head(socket: BorrowedFd<'_>) -> Opening {
    let Ok(duplicate) = socket.try_clone_to_owned() else {
        return Opening::Http1(Vec::new());
    };
    // Non-blocking already: the flag belongs to the socket, which both
    // descriptors share.
    let socket = std::net::TcpStream::from(duplicate);
    // SAFETY: `socket` owns its descriptor, which stays open and the same
    // until the `AsyncFd` that owns `socket` is dropped.
    let registered = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) };
    let Ok(watched) = registered else {
        return Opening::Http1(Vec::new());
    };
    loop {
        let Ok(mut ready) = watched.readable().await else {
            return Opening::Http1(Vec::new());
        };
        let mut bytes = vec![0u8; HEAD_PEEK];
        match ready.get_inner().peek(&mut bytes) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => ready.clear_ready(),
            // Closed or failed: the HTTP server sees it too.
            Err(_) | Ok(0) => return Opening::Http1(Vec::new()),
            Ok(n) => match judge(&bytes[..n]) {
                Some(Protocol::Http1) => {
                    bytes.truncate(n);
                    return Opening::Http1(bytes);
                }
                Some(Protocol::H2) => return Opening::H2,
                // The client sent part of a head and shut its side: no
                // more bytes will come (and the socket stays readable, so
                // waiting would spin). The HTTP server answers what it got.
                None if ready.ready().is_read_closed() => {
                    bytes.truncate(n);
                    return Opening::Http1(bytes);
                }
                // More to come: wait for the next bytes.
                None => ready.clear_ready(),
            },
        }
    }
}

/// What the first bytes say.
#[derive(Debug, PartialEq, Eq)]
enum Protocol {
    Http1,
    H2,
}

/// What the first bytes of a connection say, if they say enough yet.
fn judge(bytes: &[u8]) -> Option<Protocol> {
    let shared = bytes.len().min(H2_PREFACE.len());
    if bytes[..shared] == H2_PREFACE[..shared] {
        return (bytes.len() >= H2_PREFACE.len()).then_some(Protocol::H2);
    }
    (head_end(bytes).is_some() || bytes.len() >= HEAD_PEEK).then_some(Protocol::Http1)
}

/// Where the request head at the start of `bytes` ends (just past its
/// empty line), if it is complete. httparse, which both HTTP servers use,
/// also takes a bare LF as a line end.
///
/// One pass from line end to line end (every request head is judged with
/// it, twice): the first LF that ends an empty line, `\n\n` or
/// `\r\n\r\n`, ends the head, since any later one ends further on.
pub fn head_end(bytes: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = bytes[from..].iter().position(|&b| b == b'\n') {
        let lf = from + at;
        match bytes.get(lf + 1) {
            Some(b'\n') => return Some(lf + 2),
            Some(b'\r')
                if lf > 0 && bytes[lf - 1] == b'\r' && bytes.get(lf + 2) == Some(&b'\n') =>
            {
                return Some(lf + 3)
            }
            _ => from = lf + 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_ends_at_its_first_empty_line() {
        // The two scans this replaced, as the reference.
        fn scanned(bytes: &[u8]) -> Option<usize> {
            let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n");
            let lf = bytes.windows(2).position(|w| w == b"\n\n");
            match (crlf.map(|i| i + 4), lf.map(|i| i + 2)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
        let heads: [&[u8]; 12] = [
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\nHost: a\n\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n",
            b"GET / HTTP/1.1\r\nHost: a\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\nrest",
            b"\n\n",
            b"\r\n\r\n",
            b"\n\r\n",
            b"\r\n\r",
            b"a\r\r\n\r\n\n\n",
            b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            b"",
        ];
        for head in heads {
            assert_eq!(head_end(head), scanned(head), "{head:?}");
        }
        // Every short string over the bytes that matter.
        let alphabet = [b'\r', b'\n', b'a'];
        for len in 0..=7u32 {
            for mut n in 0..3usize.pow(len) {
                let mut bytes = Vec::new();
                for _ in 0..len {
                    bytes.push(alphabet[n % 3]);
                    n /= 3;
                }
                assert_eq!(head_end(&bytes), scanned(&bytes), "{bytes:?}");
            }
        }
    }

    #[test]
    fn openings() {
        assert_eq!(judge(b"GET / HTTP/1.0\r\n\r\n"), Some(Protocol::Http1));
        assert_eq!(judge(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
        assert_eq!(judge(b"G"), None);
        assert_eq!(judge(b"PRI * HTTP/2.0\r\n"), None);
        assert_eq!(judge(H2_PREFACE), Some(Protocol::H2));
        assert_eq!(judge(b"PRX"), None);
        assert_eq!(judge(b"PRX\r\n\r\n"), Some(Protocol::Http1));
        assert_eq!(judge(&[b'a'; HEAD_PEEK]), Some(Protocol::Http1));
    }

    #[test]
    fn a_full_listener_closes_the_oldest_waiting_connection() {
        let admission = Admission::new(2, Duration::from_secs(1));
        let mut first = admission.admit().expect("room");
        let mut second = admission.admit().expect("room");
        let third = admission.admit().expect("room made");
        assert!(first.closed.as_mut().expect("waiting").try_recv().is_ok());
        assert!(second.closed.as_mut().expect("waiting").try_recv().is_err());
        drop(first);
        second.served();
        let mut third = third;
        third.served();
        assert_eq!(admission.open(), 2);
        // Everything open is busy: refused.
        assert!(admission.admit().is_none());
        drop(second);
        assert!(admission.admit().is_some());
    }
}

//! Raw HTTP/1.1 over loopback: requests written byte for byte and answers
//! parsed by hand, for tests that need every byte on the wire under their
//! control (duplicate headers, invalid bytes, pipelining, smuggling shapes).

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a raw exchange may take before the test calls it a hang.
pub const RAW_TIMEOUT: Duration = Duration::from_secs(10);

/// An answer read off a raw socket; header names lower-case.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Reply {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The start of the body on one line.
    pub fn short(&self) -> String {
        let text: String = String::from_utf8_lossy(&self.body)
            .chars()
            .take(110)
            .collect();
        text.replace(['\r', '\n'], " ")
    }

    /// The body as text, cut after 400 bytes.
    pub fn body_text(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        if text.len() > 400 {
            let mut end = 400;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}… ({} bytes)", &text[..end], self.body.len())
        } else {
            text.into_owned()
        }
    }
}

/// The complete answer at the start of `buf` and how many bytes it took,
/// or `None` while more bytes are needed. `eof`: the peer closed, so a body
/// without a length ends here. `head`: the request was `HEAD` (no body).
/// An interim answer (`100 Continue`) is skipped.
pub fn parse_reply(buf: &[u8], eof: bool, head: bool) -> Option<(Reply, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let text = String::from_utf8_lossy(&buf[..end]);
    let mut lines = text.split("\r\n");
    let mut parts = lines.next()?.splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status: u16 = parts.next()?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let start = end + 4;
    let rest = &buf[start..];
    if (100..200).contains(&status) {
        let (reply, used) = parse_reply(rest, eof, head)?;
        return Some((reply, start + used));
    }
    let get = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let (body, used) = if head || status == 204 || status == 304 {
        (Vec::new(), 0)
    } else if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        (rest.get(..len)?.to_vec(), len)
    } else if eof {
        (rest.to_vec(), rest.len())
    } else {
        return None;
    };
    Some((
        Reply {
            status,
            headers,
            body,
        },
        start + used,
    ))
}

/// A complete chunked body and how many bytes it took (trailers included),
/// or `None` while more bytes are needed.
fn dechunk(data: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let line_end = at + data[at..].windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[at..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // Trailer lines, then an empty line.
            loop {
                let line_end = at + data[at..].windows(2).position(|w| w == b"\r\n")?;
                let empty = line_end == at;
                at = line_end + 2;
                if empty {
                    return Some((out, at));
                }
            }
        }
        out.extend_from_slice(data.get(at..at + size)?);
        at += size + 2;
        if data.len() < at {
            return None;
        }
    }
}

/// Sends `bytes` as they are on a fresh connection and reads one answer.
/// `Err` says what went wrong (no answer within [`RAW_TIMEOUT`], closed
/// without a complete answer). The server may answer and close before
/// reading everything sent (an oversized head): a write error is not the
/// verdict, the answer is.
pub async fn send_raw(port: u16, bytes: &[u8]) -> Result<Reply, String> {
    let mut stream = connect(port).await?;
    let _ = tokio::time::timeout(RAW_TIMEOUT, stream.write_all(bytes)).await;
    let (mut answers, rest, _) = read_replies(&mut stream, 1).await;
    match answers.pop() {
        Some(reply) => Ok(reply),
        None => Err(rest),
    }
}

/// A loopback connection to `port`, within [`RAW_TIMEOUT`].
pub async fn connect(port: u16) -> Result<TcpStream, String> {
    tokio::time::timeout(RAW_TIMEOUT, TcpStream::connect(("127.0.0.1", port)))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))
}

/// Reads answers until `n` complete ones came, the connection closed, or
/// [`RAW_TIMEOUT`] passed. Returns the answers, a description of what was
/// left over (for messages), and whether the peer closed.
pub async fn read_replies(stream: &mut TcpStream, n: usize) -> (Vec<Reply>, String, bool) {
    let mut buf = Vec::new();
    let mut answers = Vec::new();
    let deadline = tokio::time::Instant::now() + RAW_TIMEOUT;
    let mut eof = false;
    loop {
        while let Some((reply, used)) = parse_reply(&buf, eof, false) {
            buf.drain(..used);
            answers.push(reply);
            if answers.len() >= n || (eof && buf.is_empty()) {
                break;
            }
        }
        if answers.len() >= n || eof {
            let what = if eof {
                "the connection closed without a complete answer"
            } else {
                "left over"
            };
            return (answers, format!("{what}; got {:?}", lossy(&buf)), eof);
        }
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => {
                let what = format!(
                    "no complete answer within {RAW_TIMEOUT:?}; got {:?}",
                    lossy(&buf)
                );
                return (answers, what, false);
            }
            Ok(Ok(0)) | Ok(Err(_)) => eof = true,
            Ok(Ok(k)) => buf.extend_from_slice(&chunk[..k]),
        }
    }
}

/// Reads until the peer closes the connection (or [`RAW_TIMEOUT`] passes:
/// `None`), and returns the answers it sent.
pub async fn read_until_closed(stream: &mut TcpStream) -> Option<Vec<Reply>> {
    let (answers, _, closed) = read_replies(stream, usize::MAX).await;
    closed.then_some(answers)
}

/// Bytes as text, for messages.
pub fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

//! Hostile input against the token service, black-box: the real binary is
//! started through the harness and fed malformed, oversized and malicious
//! requests over raw TCP, so that every byte on the wire is under the test's
//! control (duplicate headers, non-UTF-8 header bytes, bare protocol errors,
//! bodies that never end).
//!
//! Every case must be answered — no 5xx, no hang (10 s per request), no
//! connection dropped before a status line — with a 4xx whose body is
//! `{"error", "error_description"}` JSON. Protocol-level rejections written by
//! the HTTP layer (400 on unparseable HTTP, 413, 414, 431) may come without
//! JSON; those are listed in the test output. A few cases are answered 200
//! because the spec demands it (RFC 7662 `{"active":false}` for a malformed
//! token, RFC 7009 200 for revoking an unknown one); they say so.
//!
//! The first test reports every failing case at once; the second runs the
//! same barrage and then checks that the server still serves normal requests
//! and that its log has no panic and none of the secrets or tokens sent.

use std::fmt::Write as _;
use std::time::Duration;

use crate::common::raw::*;
use crate::common::*;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;

/// The form limit of the OAuth endpoints (src/token/request.rs FORM_LIMIT).
const FORM_LIMIT: usize = 64 * 1024;
const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// A secret that is sent in many shapes and must never be logged or echoed.
const FAKE_SECRET: &str = "hostile-secret-Zq8vN3wK";
/// A well-formed but unknown access token (prefix + 43 base64url chars), so
/// that lookups really reach the store.
const FAKE_ACCESS: &str = "rgat_HostileFakeAccessTokenNeverIssued0123456789";
/// A well-formed but unknown refresh token.
const FAKE_REFRESH: &str = "rgrt_HostileFakeRefreshTokenNeverIssued012345678";
/// Secrets of the standard clients (tests/common/mod.rs: `<id>-secret`).
const CLIENT_SECRETS: &[&str] = &[
    "app-secret",
    "other-secret",
    "middle-secret",
    "introspector-secret",
    "minter-secret",
    "gateway-secret",
];

// ---------------------------------------------------------------------------
// Raw HTTP/1.1 requests
// ---------------------------------------------------------------------------

/// An HTTP request built byte by byte. By default it gets `Host`,
/// `Connection: close` and a `Content-Length` for its body.
#[derive(Clone)]
struct RawRequest {
    line: Vec<u8>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
    host: bool,
    length: bool,
    close: bool,
}

fn req(method: &str, path: &str) -> RawRequest {
    RawRequest {
        line: format!("{method} {path} HTTP/1.1").into_bytes(),
        headers: Vec::new(),
        body: Vec::new(),
        host: true,
        length: true,
        close: true,
    }
}

fn post(path: &str) -> RawRequest {
    req("POST", path)
}

impl RawRequest {
    /// Replaces the whole request line.
    fn line(mut self, line: impl AsRef<[u8]>) -> Self {
        self.line = line.as_ref().to_vec();
        self
    }

    fn header(mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.as_ref().to_vec(), value.as_ref().to_vec()));
        self
    }

    fn auth(self, value: impl AsRef<[u8]>) -> Self {
        self.header("Authorization", value)
    }

    /// HTTP Basic for a standard client (`<id>-secret`).
    fn client(self, id: &str) -> Self {
        self.auth(basic(id, &format!("{id}-secret")))
    }

    fn body(mut self, body: impl AsRef<[u8]>) -> Self {
        self.body = body.as_ref().to_vec();
        self
    }

    fn form(self, body: impl AsRef<[u8]>) -> Self {
        self.header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
    }

    fn json(self, body: impl AsRef<[u8]>) -> Self {
        self.header("Content-Type", "application/json").body(body)
    }

    fn no_host(mut self) -> Self {
        self.host = false;
        self
    }

    fn no_length(mut self) -> Self {
        self.length = false;
        self
    }

    fn keep_alive(mut self) -> Self {
        self.close = false;
        self
    }

    /// Everything before the body.
    fn head_bytes(&self) -> Vec<u8> {
        let mut out = self.line.clone();
        out.extend_from_slice(b"\r\n");
        if self.host {
            out.extend_from_slice(b"Host: 127.0.0.1\r\n");
        }
        if self.close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        for (name, value) in &self.headers {
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        if self.length && (!self.body.is_empty() || self.line.starts_with(b"POST ")) {
            out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = self.head_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// `Basic base64(id:secret)` (no form-encoding: callers pass what they mean).
fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", B64.encode(format!("{id}:{secret}")))
}

/// `Basic base64(bytes)`.
fn basic_raw(decoded: &[u8]) -> String {
    format!("Basic {}", B64.encode(decoded))
}

/// A form body with proper encoding.
fn form(params: &[(&str, &str)]) -> Vec<u8> {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish()
        .into_bytes()
}

/// Raw form pieces joined with `&`, each taken as is (no encoding).
fn raw_form(pieces: &[&[u8]]) -> Vec<u8> {
    pieces.join(&b'&')
}

/// The `arbitrary_token` parameters of client `minter`, plus `extra` raw pieces.
fn minter_form(extra: &[&[u8]]) -> Vec<u8> {
    let mut pieces: Vec<&[u8]> = vec![
        b"grant_type=arbitrary_token",
        b"subject=x",
        b"issuer=https%3A%2F%2Fidp.example.com",
    ];
    pieces.extend_from_slice(extra);
    raw_form(&pieces)
}

fn nested(open: &str, close: &str, depth: usize, inner: &str) -> String {
    let mut out = String::with_capacity(depth * (open.len() + close.len()) + inner.len());
    for _ in 0..depth {
        out.push_str(open);
    }
    out.push_str(inner);
    for _ in 0..depth {
        out.push_str(close);
    }
    out
}

/// A fake token of `len` characters that starts like an access token.
fn absurd_token(len: usize) -> String {
    let mut token = String::from("rgat_");
    while token.len() < len {
        token.push_str("AbsurdTokenAbsurdTokenAbsurdToken_");
    }
    token.truncate(len);
    token
}

// ---------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------

/// What is put on the wire.
enum Payload {
    /// One complete request.
    Bytes(Vec<u8>),
    /// `head`, then `chunk` written `times` times, never finished. Write
    /// errors are expected once the server has answered and closed.
    Stream {
        head: Vec<u8>,
        chunk: Vec<u8>,
        times: usize,
    },
}

/// What answer is correct.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Expect {
    /// A 4xx with an OAuth JSON error body (or a bare protocol-level status).
    Reject,
    /// 200 `{"active":false}`: RFC 7662 for a malformed token.
    Inactive,
    /// 200: RFC 7009 for revoking a token the server does not know.
    RevokeOk,
}

struct Case {
    name: &'static str,
    payload: Payload,
    /// A HEAD request: the answer has no body by definition.
    head: bool,
    expect: Expect,
}

fn case(name: &'static str, request: RawRequest) -> Case {
    Case {
        name,
        head: request.line.starts_with(b"HEAD "),
        payload: Payload::Bytes(request.bytes()),
        expect: Expect::Reject,
    }
}

fn raw_case(name: &'static str, bytes: impl AsRef<[u8]>) -> Case {
    Case {
        name,
        payload: Payload::Bytes(bytes.as_ref().to_vec()),
        head: false,
        expect: Expect::Reject,
    }
}

fn stream_case(name: &'static str, head: RawRequest, chunk: Vec<u8>, times: usize) -> Case {
    Case {
        name,
        payload: Payload::Stream {
            head: head.head_bytes(),
            chunk,
            times,
        },
        head: false,
        expect: Expect::Reject,
    }
}

impl Case {
    fn expect(mut self, expect: Expect) -> Self {
        self.expect = expect;
        self
    }
}

/// A chunk of `size` bytes in chunked transfer coding.
fn chunk(size: usize) -> Vec<u8> {
    let mut out = format!("{size:x}\r\n").into_bytes();
    out.extend(std::iter::repeat_n(b'a', size));
    out.extend_from_slice(b"\r\n");
    out
}

/// Every hostile request. `access` is a real, active access token of `app`.
fn cases(access: &str) -> Vec<Case> {
    const TOKEN: &str = "/oauth2/token";
    const INTROSPECT: &str = "/oauth2/introspect";
    const REVOKE: &str = "/oauth2/revoke";
    const MUTATE: &str = "/oauth2/mutate";
    let cc = "grant_type=client_credentials";
    let fake_basic = basic("app", FAKE_SECRET);
    let mut cases = Vec::new();

    // --- Oversized bodies ------------------------------------------------
    let pad = format!("{cc}&pad={}", "a".repeat(MIB));
    cases.push(case(
        "body: 1 MiB form to token",
        post(TOKEN).client("app").form(&pad),
    ));
    cases.push(case(
        "body: 1 MiB form to introspect",
        post(INTROSPECT)
            .client("introspector")
            .form(format!("token={}", "a".repeat(MIB))),
    ));
    cases.push(case(
        "body: 1 MiB JSON to mutate",
        post(MUTATE).client("middle").json(format!(
            r#"{{"token":"{access}","patch":{{"a":"{}"}}}}"#,
            "a".repeat(MIB)
        )),
    ));
    cases.push(stream_case(
        "body: chunked to token, 2 MiB, no Content-Length, never ends",
        post(TOKEN)
            .client("app")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Transfer-Encoding", "chunked")
            .no_length(),
        chunk(8 * KIB),
        256,
    ));
    cases.push(stream_case(
        "body: chunked to mutate, 2 MiB, no Content-Length, never ends",
        post(MUTATE)
            .client("middle")
            .header("Content-Type", "application/json")
            .header("Transfer-Encoding", "chunked")
            .no_length(),
        chunk(8 * KIB),
        256,
    ));
    cases.push(stream_case(
        "body: chunked to revoke, 2 MiB, no Content-Length, never ends",
        post(REVOKE)
            .client("app")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Transfer-Encoding", "chunked")
            .no_length(),
        chunk(8 * KIB),
        256,
    ));
    cases.push(stream_case(
        "body: Content-Length 10 GB to token",
        post(TOKEN)
            .client("app")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Content-Length", "10000000000")
            .no_length(),
        vec![b'a'; 8 * KIB],
        16,
    ));
    cases.push(stream_case(
        "body: Content-Length 10 GB to mutate",
        post(MUTATE)
            .client("middle")
            .header("Content-Type", "application/json")
            .header("Content-Length", "10000000000")
            .no_length(),
        vec![b'a'; 8 * KIB],
        16,
    ));
    cases.push(stream_case(
        "body: Content-Length u64::MAX+1 to introspect",
        post(INTROSPECT)
            .client("introspector")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Content-Length", "18446744073709551616")
            .no_length(),
        vec![b'a'; KIB],
        1,
    ));

    // --- Oversized headers -------------------------------------------------
    cases.push(case(
        "headers: one 64 KiB header",
        post(TOKEN)
            .header("X-Hostile", "h".repeat(64 * KIB))
            .form(cc),
    ));
    let mut many = post(TOKEN).client("app");
    for i in 0..200 {
        many = many.header(format!("X-Hostile-{i}"), "v");
    }
    cases.push(case("headers: 200 headers", many.form(cc)));
    cases.push(case(
        "headers: 1 MiB of headers",
        post(TOKEN).header("X-Hostile", "h".repeat(MIB)).form(cc),
    ));

    // --- Invalid UTF-8 -----------------------------------------------------
    cases.push(case(
        "utf8: percent-encoded invalid UTF-8 in scope",
        post(TOKEN)
            .client("app")
            .form(raw_form(&[cc.as_bytes(), b"scope=%C3%28"])),
    ));
    cases.push(case(
        "utf8: raw invalid UTF-8 in scope",
        post(TOKEN)
            .client("app")
            .form(raw_form(&[cc.as_bytes(), b"scope=\xff\xfe"])),
    ));
    cases.push(case(
        "utf8: raw invalid UTF-8 in a parameter name",
        post(TOKEN)
            .client("app")
            .form(raw_form(&[cc.as_bytes(), b"\xc0\xaf=1"])),
    ));
    cases.push(case(
        "utf8: overlong encoding of '/' in subject",
        post(TOKEN).client("minter").form(raw_form(&[
            b"grant_type=arbitrary_token",
            b"subject=%C0%AF",
            b"issuer=https%3A%2F%2Fidp.example.com",
        ])),
    ));
    cases.push(case(
        "utf8: UTF-16 surrogate in subject",
        post(TOKEN).client("minter").form(raw_form(&[
            b"grant_type=arbitrary_token",
            b"subject=%ED%A0%80",
            b"issuer=https%3A%2F%2Fidp.example.com",
        ])),
    ));
    cases.push(case(
        "utf8: invalid UTF-8 in introspected token",
        post(INTROSPECT)
            .client("introspector")
            .form(b"token=rgat_\xff\xfe\xfd"),
    ));

    // --- NUL and control characters ---------------------------------------
    cases.push(case(
        "control: percent-encoded NUL in subject",
        post(TOKEN).client("minter").form(raw_form(&[
            b"grant_type=arbitrary_token",
            b"subject=a%00b",
            b"issuer=https%3A%2F%2Fidp.example.com",
        ])),
    ));
    cases.push(case(
        "control: raw NUL in grant_type",
        post(TOKEN)
            .client("app")
            .form(b"grant_type=client_credentials\x00"),
    ));
    cases.push(case(
        "control: CRLF log injection in scope",
        post(TOKEN).client("app").form(raw_form(&[
            cc.as_bytes(),
            b"scope=photos.read%0D%0A2030-01-01+ERROR+forged+line",
        ])),
    ));
    cases.push(case(
        "control: ANSI escape in subject",
        post(TOKEN).client("minter").form(raw_form(&[
            b"grant_type=arbitrary_token",
            b"subject=%1B%5B31mred",
            b"issuer=https%3A%2F%2Fidp.example.com",
        ])),
    ));
    cases.push(case(
        "control: NUL in a header value",
        post(TOKEN)
            .header("X-Hostile", b"a\x00b")
            .client("app")
            .form(cc),
    ));
    cases.push(case(
        "control: NUL in the request target",
        post(TOKEN)
            .line(b"POST /oauth2/tok\x00en HTTP/1.1")
            .client("app")
            .form(cc),
    ));

    // --- Deeply nested JSON ------------------------------------------------
    cases.push(case(
        "json depth: mutate body is 10,000 '['",
        post(MUTATE)
            .client("middle")
            .json(nested("[", "]", 10_000, "")),
    ));
    cases.push(case(
        "json depth: mutate body is 10,000 '{' (unclosed)",
        post(MUTATE).client("middle").json("{\"a\":".repeat(10_000)),
    ));
    // 10,000 levels of objects cannot fit the mutate limit (413); 9,000
    // unclosed ones do, and reach the parser.
    cases.push(case(
        "json depth: mutate patch of 9,000 unclosed '{'",
        post(MUTATE).client("middle").json(format!(
            r#"{{"token":"{access}","patch":{}"#,
            "{\"\":".repeat(9_000)
        )),
    ));
    cases.push(case(
        "json depth: mutate patch with 10,000 nested arrays",
        post(MUTATE).client("middle").json(format!(
            r#"{{"token":"{access}","patch":{{"a":{}}}}}"#,
            nested("[", "]", 10_000, "")
        )),
    ));
    cases.push(case(
        "json depth: mutate patch with 7,000 nested objects",
        post(MUTATE).client("middle").json(format!(
            r#"{{"token":"{access}","patch":{}}}"#,
            nested("{\"\":", "}", 7_000, "1")
        )),
    ));
    cases.push(case(
        "json depth: arbitrary_json with 10,000 nested arrays",
        post(TOKEN).client("minter").form(minter_form(&[format!(
            "arbitrary_json={{\"a\":{}}}",
            nested("[", "]", 10_000, "")
        )
        .as_bytes()])),
    ));
    cases.push(case(
        "json depth: arbitrary_json with 10,000 nested objects",
        post(TOKEN).client("minter").form(minter_form(&[format!(
            "arbitrary_json={}",
            nested("{\"a\":", "}", 10_000, "1")
        )
        .as_bytes()])),
    ));
    cases.push(case(
        "json depth: arbitrary_claims with 10,000 nested arrays",
        post(TOKEN).client("minter").form(minter_form(&[format!(
            "arbitrary_claims={{\"c\":{}}}",
            nested("[", "]", 10_000, "")
        )
        .as_bytes()])),
    ));
    cases.push(case(
        "json depth: arbitrary_claims with 10,000 nested objects",
        post(TOKEN).client("minter").form(minter_form(&[format!(
            "arbitrary_claims={}",
            nested("{\"a\":", "}", 10_000, "[]")
        )
        .as_bytes()])),
    ));

    // --- Duplicate parameters ----------------------------------------------
    cases.push(case(
        "duplicate: grant_type twice (same value)",
        post(TOKEN).client("app").form(format!("{cc}&{cc}")),
    ));
    cases.push(case(
        "duplicate: grant_type twice (different values)",
        post(TOKEN)
            .client("app")
            .form(format!("{cc}&grant_type=refresh_token")),
    ));
    cases.push(case(
        "duplicate: scope twice",
        post(TOKEN)
            .client("app")
            .form(format!("{cc}&scope=photos.read&scope=reports.read")),
    ));
    cases.push(case(
        "duplicate: token twice in introspect",
        post(INTROSPECT)
            .client("introspector")
            .form(format!("token={access}&token={FAKE_ACCESS}")),
    ));
    cases.push(case(
        "duplicate: token twice in revoke",
        post(REVOKE)
            .client("app")
            .form(format!("token={FAKE_ACCESS}&token={access}")),
    ));
    cases.push(case(
        "duplicate: client_id twice (client_secret_post)",
        post(TOKEN).form(format!(
            "{cc}&client_id=app&client_id=other&client_secret=app-secret"
        )),
    ));
    cases.push(case(
        "duplicate: JSON key `token` twice in mutate",
        post(MUTATE).client("middle").json(format!(
            r#"{{"token":"{FAKE_ACCESS}","token":"{access}","patch":{{}}}}"#
        )),
    ));

    // --- Wrong content types -----------------------------------------------
    cases.push(case(
        "content type: JSON to token",
        post(TOKEN)
            .client("app")
            .json(r#"{"grant_type":"client_credentials"}"#),
    ));
    cases.push(case(
        "content type: missing on token",
        post(TOKEN).client("app").body(cc),
    ));
    cases.push(case(
        "content type: multipart/form-data to token",
        post(TOKEN)
            .client("app")
            .header("Content-Type", "multipart/form-data; boundary=XyZ")
            .body(
                "--XyZ\r\nContent-Disposition: form-data; name=\"grant_type\"\r\n\r\n\
                 client_credentials\r\n--XyZ--\r\n",
            ),
    ));
    cases.push(case(
        "content type: garbage bytes in Content-Type",
        post(TOKEN)
            .client("app")
            .header("Content-Type", b"\xff\xfe;;;=")
            .body(cc),
    ));
    cases.push(case(
        "content type: form to mutate",
        post(MUTATE)
            .client("middle")
            .form(format!("token={access}&patch=%7B%7D")),
    ));
    cases.push(case(
        "content type: missing on mutate",
        post(MUTATE)
            .client("middle")
            .body(format!(r#"{{"token":"{access}","patch":{{}}}}"#)),
    ));
    cases.push(case(
        "content type: multipart/form-data to mutate",
        post(MUTATE)
            .client("middle")
            .header("Content-Type", "multipart/form-data; boundary=XyZ")
            .body(
                "--XyZ\r\nContent-Disposition: form-data; name=\"token\"\r\n\r\nx\r\n--XyZ--\r\n",
            ),
    ));
    cases.push(case(
        "content type: JSON to introspect",
        post(INTROSPECT)
            .client("introspector")
            .json(format!(r#"{{"token":"{access}"}}"#)),
    ));

    // --- Garbage Basic headers ---------------------------------------------
    cases.push(case(
        "basic: not base64",
        post(TOKEN).auth("Basic !!!not*base64!!!").form(cc),
    ));
    cases.push(case(
        "basic: base64 without a colon",
        post(TOKEN).auth(basic_raw(b"app")).form(cc),
    ));
    cases.push(case(
        "basic: empty credentials (`Basic ` + nothing)",
        post(TOKEN).auth("Basic ").form(cc),
    ));
    cases.push(case(
        "basic: `Basic` alone",
        post(TOKEN).auth("Basic").form(cc),
    ));
    cases.push(case(
        "basic: empty Authorization header",
        post(TOKEN).auth("").form(cc),
    ));
    cases.push(case(
        "basic: empty id and secret (`:`)",
        post(TOKEN).auth(basic_raw(b":")).form(cc),
    ));
    cases.push(case(
        "basic: 48 KiB of credentials",
        post(TOKEN)
            .auth(basic(
                "app",
                &format!("{FAKE_SECRET}{}", "s".repeat(36 * KIB)),
            ))
            .form(cc),
    ));
    cases.push(case(
        "basic: non-UTF-8 bytes in the header",
        post(TOKEN).auth(b"Basic \xff\xfe\xfd\x80").form(cc),
    ));
    cases.push(case(
        "basic: decodes to non-UTF-8",
        post(TOKEN).auth(basic_raw(b"app\xff:\xfe\xfd")).form(cc),
    ));
    cases.push(case(
        "basic: two Authorization headers",
        post(TOKEN).client("app").client("app").form(cc),
    ));
    cases.push(case(
        "basic: Bearer instead of Basic",
        post(TOKEN).auth(format!("Bearer {FAKE_ACCESS}")).form(cc),
    ));
    cases.push(case(
        "basic: Bearer on mutate",
        post(MUTATE)
            .auth(format!("Bearer {access}"))
            .json(format!(r#"{{"token":"{access}","patch":{{}}}}"#)),
    ));
    cases.push(case(
        "basic: `%zz` and lone `%` in decoded credentials",
        post(TOKEN).auth(basic("app%zz", "app-secret%")).form(cc),
    ));
    cases.push(case(
        "basic: percent-encoded invalid UTF-8 in decoded secret",
        post(TOKEN).auth(basic("app", "%ff%fe")).form(cc),
    ));
    cases.push(case(
        "basic: percent-encoded NUL in decoded id",
        post(TOKEN).auth(basic("app%00", "app-secret")).form(cc),
    ));
    cases.push(case(
        "basic: wrong secret for a real client",
        post(TOKEN).auth(&fake_basic).form(cc),
    ));
    cases.push(case(
        "basic: Basic plus client_secret in the body",
        post(TOKEN)
            .client("app")
            .form(format!("{cc}&client_secret={FAKE_SECRET}")),
    ));
    cases.push(case(
        "basic: client_secret_post on mutate (Basic only)",
        post(MUTATE).json(format!(
            r#"{{"token":"{access}","patch":{{}},"client_id":"middle","client_secret":"middle-secret"}}"#
        )),
    ));
    cases.push(case(
        "basic: wrong secret on mutate",
        post(MUTATE)
            .auth(basic("middle", FAKE_SECRET))
            .json(format!(r#"{{"token":"{access}","patch":{{}}}}"#)),
    ));

    // --- Absurd lifetimes (minter, arbitrary_token) --------------------------
    for (name, value) in [
        ("lifetime: -1", "-1"),
        ("lifetime: 0", "0"),
        ("lifetime: 1e99", "1e99"),
        (
            "lifetime: 99999999999999999999999",
            "99999999999999999999999",
        ),
        ("lifetime: abc", "abc"),
        ("lifetime: 1.5", "1.5"),
        ("lifetime: i64::MIN", "-9223372036854775808"),
        ("lifetime: NaN", "NaN"),
    ] {
        let body = minter_form(&[format!("access_token_lifetime={value}").as_bytes()]);
        cases.push(case(name, post(TOKEN).client("minter").form(body)));
    }

    // --- Scope -------------------------------------------------------------
    let huge_scope: String = (0..6_000).map(|i| format!("s{i} ")).collect();
    cases.push(case(
        "scope: ~40 KiB of unknown scopes",
        post(TOKEN).client("app").form(form(&[
            ("grant_type", "client_credentials"),
            ("scope", &huge_scope),
        ])),
    ));
    cases.push(case(
        "scope: 100 KiB single scope (over the form limit)",
        post(TOKEN).client("app").form(form(&[
            ("grant_type", "client_credentials"),
            ("scope", &"x".repeat(100 * KIB)),
        ])),
    ));
    for (name, scope) in [
        ("scope: double quote", "photos.read\""),
        ("scope: backslash", "photos\\read"),
        ("scope: DEL", "photos.read\u{7f}"),
        ("scope: non-ASCII", "photos.réad"),
        ("scope: tab separated", "photos.read\treports.read"),
    ] {
        cases.push(case(
            name,
            post(TOKEN).client("app").form(form(&[
                ("grant_type", "client_credentials"),
                ("scope", scope),
            ])),
        ));
    }

    // --- Tokens of absurd length -------------------------------------------
    // Just under and well over the form limit.
    let token_60k = absurd_token(FORM_LIMIT - 4 * KIB);
    let token_100k = absurd_token(FORM_LIMIT + 36 * KIB);
    cases.push(
        case(
            "token: 60 KiB token to introspect (RFC 7662: inactive)",
            post(INTROSPECT)
                .client("introspector")
                .form(form(&[("token", &token_60k)])),
        )
        .expect(Expect::Inactive),
    );
    cases.push(case(
        "token: 100 KiB token to introspect (over the form limit)",
        post(INTROSPECT)
            .client("introspector")
            .form(form(&[("token", &token_100k)])),
    ));
    cases.push(case(
        "token: 60 KiB token to introspect without credentials",
        post(INTROSPECT).form(form(&[("token", &token_60k)])),
    ));
    cases.push(
        case(
            "token: 60 KiB token to revoke (RFC 7009: 200)",
            post(REVOKE).client("app").form(form(&[
                ("token", &token_60k),
                ("token_type_hint", "access_token"),
            ])),
        )
        .expect(Expect::RevokeOk),
    );
    cases.push(case(
        "token: 100 KiB token to revoke (over the form limit)",
        post(REVOKE)
            .client("app")
            .form(form(&[("token", &token_100k)])),
    ));
    cases.push(case(
        "token: 30 KiB token to mutate",
        post(MUTATE).client("middle").json(format!(
            r#"{{"token":"{}","patch":{{}}}}"#,
            absurd_token(30 * KIB)
        )),
    ));
    cases.push(case(
        "token: introspect by a client without introspect",
        post(INTROSPECT)
            .client("app")
            .form(form(&[("token", FAKE_REFRESH)])),
    ));

    // --- Malformed percent-escapes -----------------------------------------
    cases.push(case(
        "percent: grant_type=%zz",
        post(TOKEN).client("app").form("grant_type=%zz"),
    ));
    cases.push(case(
        "percent: lone % at the end of grant_type",
        post(TOKEN)
            .client("app")
            .form("grant_type=client_credentials%"),
    ));
    cases.push(case(
        "percent: truncated %4 in scope",
        post(TOKEN).client("app").form(format!("{cc}&scope=%4")),
    ));
    cases.push(case(
        "percent: %zz in a parameter name",
        post(TOKEN)
            .client("app")
            .form("gr%zzant_type=client_credentials"),
    ));
    // The form decoder is lenient (WHATWG): `%zz%` stays literal, which is
    // a malformed token, hence inactive.
    cases.push(
        case(
            "percent: %zz in introspected token (RFC 7662: inactive)",
            post(INTROSPECT).client("introspector").form("token=%zz%"),
        )
        .expect(Expect::Inactive),
    );

    // --- Other hostile forms and JSON -----------------------------------------
    let flood: Vec<String> = (0..5_000).map(|i| format!("p{i}=v")).collect();
    cases.push(case(
        "form: 5,000 distinct parameters, no grant_type",
        post(TOKEN).client("app").form(flood.join("&")),
    ));
    cases.push(case(
        "form: 60 KiB of '&'",
        post(TOKEN).client("app").form("&".repeat(60 * KIB)),
    ));
    cases.push(case(
        "form: 60 KiB unsupported grant_type",
        post(TOKEN)
            .client("app")
            .form(format!("grant_type={}", "g".repeat(60 * KIB))),
    ));
    cases.push(case(
        "arbitrary: arbitrary_claims sets `sub`",
        post(TOKEN)
            .client("minter")
            .form(minter_form(&[br#"arbitrary_claims={"sub":["root"]}"#])),
    ));
    cases.push(case(
        "arbitrary: arbitrary_json is an array",
        post(TOKEN)
            .client("minter")
            .form(minter_form(&[b"arbitrary_json=[1,2,3]"])),
    ));
    cases.push(case(
        "arbitrary: arbitrary_json number 1e999999",
        post(TOKEN)
            .client("minter")
            .form(minter_form(&[br#"arbitrary_json={"n":1e999999}"#])),
    ));
    cases.push(case(
        "arbitrary: issuer not allowed",
        post(TOKEN).client("minter").form(raw_form(&[
            b"grant_type=arbitrary_token",
            b"subject=x",
            b"issuer=https%3A%2F%2Fevil.example.com",
        ])),
    ));
    let deep_jwt_header =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(nested("[", "]", 10_000, ""));
    for (name, jwt) in [
        (
            "exchange: alg none id_token",
            "eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.".to_string(),
        ),
        (
            "exchange: id_token with a 10,000-deep JSON header",
            format!("{deep_jwt_header}.e30.sig"),
        ),
        ("exchange: id_token of dots", ".....".to_string()),
    ] {
        cases.push(case(
            name,
            post(TOKEN).client("app").form(form(&[
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ),
                ("subject_token", &jwt),
                (
                    "subject_token_type",
                    "urn:ietf:params:oauth:token-type:id_token",
                ),
            ])),
        ));
    }
    cases.push(case(
        "exchange: resource is not a URI",
        post(TOKEN).client("app").form(form(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", access),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
            ("resource", "%zz not a uri"),
        ])),
    ));
    cases.push(case(
        "refresh: 60 KiB refresh_token",
        post(TOKEN).client("minter").form(form(&[
            ("grant_type", "refresh_token"),
            (
                "refresh_token",
                &absurd_token(60 * KIB).replacen("rgat_", "rgrt_", 1),
            ),
        ])),
    ));
    for (name, body) in [
        ("mutate: body is not JSON", b"\xff\xfe\x00garbage".to_vec()),
        ("mutate: empty body", Vec::new()),
        ("mutate: body is `null`", b"null".to_vec()),
        (
            "mutate: patch is not an object",
            format!(r#"{{"token":"{access}","patch":[1]}}"#).into_bytes(),
        ),
        (
            "mutate: if_version 1e99",
            format!(r#"{{"token":"{access}","patch":{{}},"if_version":1e99}}"#).into_bytes(),
        ),
        (
            "mutate: if_version mismatch",
            format!(r#"{{"token":"{access}","patch":{{}},"if_version":-7}}"#).into_bytes(),
        ),
        (
            "mutate: unknown field",
            format!(r#"{{"token":"{access}","patch":{{}},"admin":true}}"#).into_bytes(),
        ),
        (
            "mutate: token is a number",
            br#"{"token":12345,"patch":{}}"#.to_vec(),
        ),
        (
            "mutate: unknown token",
            format!(r#"{{"token":"{FAKE_ACCESS}","patch":{{}}}}"#).into_bytes(),
        ),
        (
            "mutate: patch over custom_data_max",
            format!(
                r#"{{"token":"{access}","patch":{{"big":"{}"}}}}"#,
                "b".repeat(20 * KIB)
            )
            .into_bytes(),
        ),
        (
            "mutate: trailing garbage after the JSON",
            format!(r#"{{"token":"{access}","patch":{{}}}} trailing"#).into_bytes(),
        ),
    ] {
        cases.push(case(name, post(MUTATE).client("middle").json(body)));
    }
    cases.push(case(
        "mutate: caller without mutate permission",
        post(MUTATE)
            .client("app")
            .json(format!(r#"{{"token":"{access}","patch":{{}}}}"#)),
    ));

    // --- Methods and paths -------------------------------------------------
    for (name, method, path) in [
        ("method: GET /oauth2/token", "GET", TOKEN),
        ("method: GET /oauth2/introspect", "GET", INTROSPECT),
        ("method: GET /oauth2/revoke", "GET", REVOKE),
        ("method: GET /oauth2/mutate", "GET", MUTATE),
        ("method: PUT /oauth2/token", "PUT", TOKEN),
        ("method: DELETE /oauth2/revoke", "DELETE", REVOKE),
        ("method: PATCH /oauth2/mutate", "PATCH", MUTATE),
        ("method: OPTIONS /oauth2/token", "OPTIONS", TOKEN),
        ("method: TRACE /oauth2/token", "TRACE", TOKEN),
        ("method: HEAD /oauth2/token", "HEAD", TOKEN),
        ("method: extension method FROBNICATE", "FROBNICATE", TOKEN),
        ("method: POST /healthz", "POST", "/healthz"),
        (
            "path: unknown POST /oauth2/unknown",
            "POST",
            "/oauth2/unknown",
        ),
        ("path: unknown GET /admin", "GET", "/admin"),
        ("path: dot-segments", "GET", "/oauth2/../../../etc/passwd"),
        ("path: encoded slash", "POST", "/oauth2%2Ftoken"),
        ("path: trailing slash", "POST", "/oauth2/token/"),
        ("path: double slash", "POST", "//oauth2/token"),
    ] {
        cases.push(case(name, req(method, path).client("app").form(cc)));
    }
    cases.push(case(
        "path: query string on token with credentials",
        post(&format!(
            "{TOKEN}?client_id=app&client_secret={FAKE_SECRET}"
        ))
        .form(cc),
    ));
    cases.push(case(
        "path: absolute-form target to another host",
        post(TOKEN)
            .line("POST http://evil.example/oauth2/token HTTP/1.1")
            .form(cc),
    ));
    cases.push(case(
        "path: asterisk-form target",
        req("OPTIONS", "*").line("OPTIONS * HTTP/1.1"),
    ));

    // --- Protocol-level garbage --------------------------------------------
    cases.push(case(
        "protocol: 100 KiB URI",
        req("GET", &format!("/{}", "u".repeat(100 * KIB))),
    ));
    cases.push(case(
        "protocol: 1 MiB URI",
        req("POST", &format!("/oauth2/token?{}", "q".repeat(MIB))).form(cc),
    ));
    cases.push(case(
        "protocol: HTTP/1.0 POST without Host",
        post(TOKEN)
            .line("POST /oauth2/token HTTP/1.0")
            .no_host()
            .keep_alive()
            .form(cc),
    ));
    cases.push(case(
        "protocol: HTTP/1.0 GET unknown path without Host",
        req("GET", "/nope")
            .line("GET /nope HTTP/1.0")
            .no_host()
            .keep_alive(),
    ));
    // RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request
    // without Host, with two Host fields or with an invalid Host value. The
    // requests are otherwise valid token requests.
    cases.push(case(
        "protocol: HTTP/1.1 without Host (otherwise valid)",
        post(TOKEN).no_host().client("app").form(cc),
    ));
    cases.push(case(
        "protocol: two Host headers (otherwise valid)",
        post(TOKEN)
            .header("Host", "evil.example")
            .client("app")
            .form(cc),
    ));
    cases.push(case(
        "protocol: invalid Host value (otherwise valid)",
        post(TOKEN)
            .no_host()
            .header("Host", "a b/c@d")
            .client("app")
            .form(cc),
    ));
    cases.push(raw_case(
        "protocol: garbage request line",
        "HELLO THERE\r\n\r\n",
    ));
    cases.push(raw_case(
        "protocol: unknown HTTP version",
        "POST /oauth2/token HTTP/3.7\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    ));
    cases.push(raw_case(
        "protocol: binary junk",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    ));
    cases.push(case(
        "protocol: Content-Length not a number",
        post(TOKEN)
            .client("app")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Content-Length", "abc")
            .no_length()
            .body(cc),
    ));
    cases.push(case(
        "protocol: negative Content-Length",
        post(TOKEN)
            .client("app")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Content-Length", "-1")
            .no_length()
            .body(cc),
    ));
    cases.push(case(
        "protocol: two conflicting Content-Length headers",
        post(TOKEN)
            .client("app")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Content-Length", "29")
            .header("Content-Length", "5")
            .no_length()
            .body(cc),
    ));
    cases.push(case(
        "protocol: Transfer-Encoding chunked plus Content-Length (smuggling)",
        post(TOKEN)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Content-Length", "4")
            .header("Transfer-Encoding", "chunked")
            .no_length()
            .body("1d\r\ngrant_type=client_credentials\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n"),
    ));
    cases.push(case(
        "protocol: Transfer-Encoding gzip",
        post(TOKEN)
            .client("app")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Transfer-Encoding", "gzip")
            .no_length()
            .body(cc),
    ));
    cases.push(case(
        "protocol: malformed chunk size",
        post(TOKEN)
            .client("app")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Transfer-Encoding", "chunked")
            .no_length()
            .body("zz\r\ngrant_type=client_credentials\r\n0\r\n\r\n"),
    ));
    cases.push(case(
        "protocol: header without a colon",
        post(TOKEN)
            .line(b"POST /oauth2/token HTTP/1.1\r\nBroken header line")
            .form(cc),
    ));
    cases.push(case(
        "protocol: obs-fold header continuation",
        post(TOKEN)
            .header("X-Folded", "first\r\n second")
            .client("app")
            .form(cc),
    ));
    cases.push(case(
        "protocol: space before the colon",
        post(TOKEN)
            .header("Authorization ", basic("app", "app-secret"))
            .form(cc),
    ));
    cases.push(case(
        "protocol: Expect 100-continue with an oversized body",
        post(TOKEN)
            .client("app")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Expect", "100-continue")
            .header("Content-Length", MIB.to_string())
            .no_length(),
    ));
    cases
}

// ---------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------

/// Sends a payload on a fresh connection and reads one response. Writing
/// runs concurrently with reading, so a server that answers early (413,
/// 431) is seen even while the body is still being pushed. The write half
/// stays open until the answer is read: closing it early would be a
/// half-close, which is a different test.
async fn exchange(port: u16, payload: &Payload, head: bool) -> Result<Reply, String> {
    let stream = tokio::time::timeout(RAW_TIMEOUT, TcpStream::connect(("127.0.0.1", port)))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect failed: {e}"))?;
    let (mut reader, mut writer) = stream.into_split();
    let (first, chunk, times) = match payload {
        Payload::Bytes(bytes) => (bytes.clone(), Vec::new(), 0),
        Payload::Stream { head, chunk, times } => (head.clone(), chunk.clone(), *times),
    };
    let writing = tokio::spawn(async move {
        let w: &mut OwnedWriteHalf = &mut writer;
        let written: std::io::Result<()> = async {
            w.write_all(&first).await?;
            for _ in 0..times {
                w.write_all(&chunk).await?;
            }
            w.flush().await
        }
        .await;
        // Errors are expected once the server has answered and closed.
        drop(written);
        // Handing the half back keeps it open until the reader is done.
        writer
    });

    let mut buf = Vec::new();
    let mut piece = vec![0u8; 64 * KIB];
    let deadline = tokio::time::Instant::now() + RAW_TIMEOUT;
    let result = loop {
        match tokio::time::timeout_at(deadline, reader.read(&mut piece)).await {
            Err(_) => {
                break Err(format!(
                    "no complete answer within {RAW_TIMEOUT:?} (got {} bytes: {:?})",
                    buf.len(),
                    String::from_utf8_lossy(&buf[..buf.len().min(200)])
                ))
            }
            Ok(Ok(0)) => {
                break parse_reply(&buf, true, head)
                    .map(|(reply, _)| reply)
                    .ok_or_else(|| {
                        format!(
                            "connection closed without a complete response (got {} bytes: {:?})",
                            buf.len(),
                            String::from_utf8_lossy(&buf[..buf.len().min(200)])
                        )
                    })
            }
            Ok(Ok(n)) => {
                buf.extend_from_slice(&piece[..n]);
                if let Some(reply) = parse_reply(&buf, false, head).map(|(reply, _)| reply) {
                    break Ok(reply);
                }
            }
            Ok(Err(e)) => {
                break parse_reply(&buf, true, head)
                    .map(|(reply, _)| reply)
                    .ok_or_else(|| {
                        format!(
                            "connection error before a complete response: {e} (got {} bytes)",
                            buf.len()
                        )
                    })
            }
        }
    };
    writing.abort();
    result
}

/// Strings that must never be echoed in a response nor written to the log.
fn sensitive(extra: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = CLIENT_SECRETS.iter().map(|s| s.to_string()).collect();
    out.extend([FAKE_SECRET, FAKE_ACCESS, FAKE_REFRESH].map(String::from));
    out.extend(extra.iter().map(|s| s.to_string()));
    out
}

/// Checks one answer against the case's expectation. `Ok(Some(note))` for a
/// bare protocol-level rejection.
fn judge(case: &Case, reply: &Reply, secrets: &[String]) -> Result<Option<String>, String> {
    let body_text = String::from_utf8_lossy(&reply.body);
    if let Some(leak) = secrets.iter().find(|s| body_text.contains(s.as_str())) {
        return Err(format!(
            "the response echoes the sent secret/token `{leak}`"
        ));
    }
    match case.expect {
        Expect::Inactive => {
            let body: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
            if reply.status == 200 && body == json!({"active": false}) {
                Ok(None)
            } else {
                Err("expected 200 {\"active\":false} (RFC 7662)".into())
            }
        }
        Expect::RevokeOk => {
            if reply.status == 200 {
                Ok(None)
            } else {
                Err("expected 200 (RFC 7009)".into())
            }
        }
        Expect::Reject => {
            if !(400..500).contains(&reply.status) {
                return Err("expected a 4xx".into());
            }
            if case.head {
                return Ok(Some(format!(
                    "{} for HEAD (no body by definition)",
                    reply.status
                )));
            }
            let body: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
            let is_oauth = body["error"].is_string() && body["error_description"].is_string();
            if is_oauth {
                if reply.status == 401
                    && !reply
                        .header("www-authenticate")
                        .is_some_and(|v| v.starts_with("Basic realm="))
                {
                    return Err("401 without `WWW-Authenticate: Basic realm=\"refgate\"`".into());
                }
                return Ok(None);
            }
            if [400, 413, 414, 431].contains(&reply.status) && body.is_null() {
                return Ok(Some(format!(
                    "{} from the HTTP layer, body {:?}",
                    reply.status,
                    reply.body_text()
                )));
            }
            Err("4xx without an `error`/`error_description` JSON body".into())
        }
    }
}

/// Partial requests that are never finished, held open during the barrage.
async fn open_slow_loris(port: u16) -> Vec<TcpStream> {
    let partials: [&[u8]; 4] = [
        b"POST /oauth2/tok",
        b"POST /oauth2/token HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaa",
        b"POST /oauth2/token HTTP/1.1\r\nHost: 127.0.0.1\r\n\
          Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type",
        b"POST /oauth2/mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
          Transfer-Encoding: chunked\r\n\r\n10\r\n{\"token\":",
    ];
    let mut held = Vec::new();
    for _ in 0..8 {
        for partial in partials {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await {
                let _ = stream.write_all(partial).await;
                held.push(stream);
            }
        }
    }
    held
}

/// The outcome of a barrage.
struct Outcome {
    total: usize,
    failures: Vec<String>,
    notes: Vec<String>,
    /// One line per case: name, status, start of the body.
    trace: Vec<String>,
}

/// Sends every case, one after the other, while slow-loris connections are
/// held open; then abandons those connections.
async fn barrage(server: &Refgate, access: &str) -> Outcome {
    let secrets = sensitive(&[access]);
    let held = open_slow_loris(server.token_port).await;
    let cases = cases(access);
    let mut failures = Vec::new();
    let mut notes = Vec::new();
    let mut trace = Vec::new();
    let mut names = std::collections::HashSet::new();
    for case in &cases {
        assert!(names.insert(case.name), "duplicate case name {}", case.name);
        let answer = exchange(server.token_port, &case.payload, case.head).await;
        trace.push(match &answer {
            Err(e) => format!("{:<70} ERROR {e}", case.name),
            Ok(reply) => format!("{:<70} {} {}", case.name, reply.status, reply.short()),
        });
        match answer {
            Err(e) => failures.push(format!("[{}] {e}", case.name)),
            Ok(reply) => match judge(case, &reply, &secrets) {
                Ok(None) => {}
                Ok(Some(note)) => notes.push(format!("[{}] {note}", case.name)),
                Err(why) => failures.push(format!(
                    "[{}] {why}: got {} {}",
                    case.name,
                    reply.status,
                    reply.body_text()
                )),
            },
        }
    }

    // The slow-loris connections are still open: the server must serve.
    let name = "slow loris: 32 partial requests held open";
    if held.len() < 32 {
        failures.push(format!("[{name}] only {} connections opened", held.len()));
    }
    let (status, body) = server
        .token(
            "app",
            &[
                ("grant_type", "client_credentials"),
                ("scope", "photos.read"),
            ],
        )
        .await;
    if status != StatusCode::OK {
        failures.push(format!(
            "[{name}] a normal token request while they are held: {status} {body}"
        ));
    }
    drop(held);
    Outcome {
        total: cases.len() + 1,
        failures,
        notes,
        trace,
    }
}

fn report(outcome: &Outcome) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{} of {} hostile cases failed:",
        outcome.failures.len(),
        outcome.total
    );
    for f in &outcome.failures {
        let _ = writeln!(text, "  {f}");
    }
    text
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_requests_get_a_4xx_never_a_5xx_hang_or_drop() {
    assert_eq!(FAKE_ACCESS.len(), 5 + 43);
    assert_eq!(FAKE_REFRESH.len(), 5 + 43);
    let server = Refgate::start();
    let access = server.client_token("app", None).await;
    let access = str_of(&access, "access_token").to_string();

    let outcome = barrage(&server, &access).await;

    eprintln!("every answer (shown with --nocapture or on failure):");
    for line in &outcome.trace {
        eprintln!("  {line}");
    }
    eprintln!(
        "{} cases; protocol-level answers without a JSON body:",
        outcome.total
    );
    for note in &outcome.notes {
        eprintln!("  {note}");
    }
    let mut failures = outcome.failures.clone();
    if server.log().lines().any(|l| l.contains("panicked")) {
        failures.push(format!("[server log] contains a panic:\n{}", server.log()));
    }
    assert!(
        failures.is_empty(),
        "{}",
        report(&Outcome {
            total: outcome.total,
            failures,
            notes: Vec::new(),
            trace: Vec::new(),
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_still_answers_correctly_after_the_barrage() {
    let server = Refgate::start();
    let before = server.client_token("app", None).await;
    let before = str_of(&before, "access_token").to_string();
    let outcome = barrage(&server, &before).await;
    eprintln!(
        "barrage done: {} cases, {} failed",
        outcome.total,
        outcome.failures.len()
    );
    server.mark_log("barrage over");

    assert!(
        raw_get_ok(server.token_port, "/healthz"),
        "healthz after the barrage: {}",
        server
            .log()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The token issued before the barrage is still active.
    let view = server.introspect(&before).await;
    assert_eq!(view["active"], true, "pre-barrage token: {view}");
    assert_eq!(view["sub"], "app");

    // A normal token request and its introspection.
    let body = server.client_token("app", Some("photos.read")).await;
    let access = str_of(&body, "access_token").to_string();
    assert!(access.starts_with("rgat_"));
    let view = server.introspect(&access).await;
    assert_eq!(view["active"], true, "{view}");
    assert_eq!(view["sub"], "app");
    assert_eq!(view["scope"], "photos.read");

    // client_secret_post, introspection by a plain introspector.
    let (status, body) = server
        .post_form(
            "/oauth2/token",
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "other"),
                ("client_secret", "other-secret"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "client_secret_post: {body}");
    let other = str_of(&body, "access_token").to_string();
    let (status, view) = server
        .post_form(
            "/oauth2/introspect",
            Some(("introspector", "introspector-secret")),
            &[("token", &other)],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["active"], true, "{view}");
    assert!(view.get("custom").is_none(), "{view}");

    // arbitrary_token with a sane lifetime, then mutate and revoke.
    let (status, body) = server
        .token(
            "minter",
            &[
                ("grant_type", "arbitrary_token"),
                ("subject", "x"),
                ("issuer", "https://idp.example.com"),
                ("access_token_lifetime", "99999999"),
                ("arbitrary_claims", r#"{"groups":["a","b"]}"#),
                ("arbitrary_json", r#"{"k":"v"}"#),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "arbitrary_token: {body}");
    assert_eq!(body["expires_in"], 600, "clamped to minter's ttl: {body}");
    let minted = str_of(&body, "access_token").to_string();
    let view = server.introspect(&minted).await;
    assert_eq!(view["active"], true, "{view}");
    assert_eq!(view["iss"], "https://idp.example.com");
    assert_eq!(view["groups"], json!(["a", "b"]));
    assert_eq!(view["custom"], json!({"k": "v"}));

    let (status, body) = server
        .mutate(&json!({"token": minted, "patch": {"k": null, "n": 1}, "if_version": 1}))
        .await;
    assert_eq!(status, StatusCode::OK, "mutate: {body}");
    assert_eq!(body["version"], 2);

    // A patch nested as deep as the JSON parser allows is stored and can be
    // read back (introspection must not turn into a 500).
    let deep: Value = serde_json::from_str(&nested("{\"d\":", "}", 120, "1")).expect("deep");
    let (status, body) = server
        .mutate(&json!({"token": minted, "patch": {"deep": deep}}))
        .await;
    assert_eq!(status, StatusCode::OK, "deep mutate: {body}");
    let (status, view) = server
        .post_form(
            "/oauth2/introspect",
            Some(("middle", "middle-secret")),
            &[("token", &minted)],
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "introspect after a deep patch: {view}"
    );
    assert_eq!(view["active"], true, "{view}");
    assert_eq!(view["custom"]["n"], 1, "{view}");

    let (status, _) = server
        .post_form(
            "/oauth2/revoke",
            Some(("minter", "minter-secret")),
            &[("token", &minted)],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let view = server.introspect(&minted).await;
    assert_eq!(view, json!({"active": false}));

    // The log: no panic, none of the secrets or tokens sent.
    let log = server.log();
    let panics: Vec<&str> = log.lines().filter(|l| l.contains("panicked")).collect();
    assert!(
        panics.is_empty(),
        "the server panicked:\n{}",
        panics.join("\n")
    );
    let secrets = sensitive(&[&before, &access, &other, &minted]);
    let leaked: Vec<&String> = secrets
        .iter()
        .filter(|s| log.contains(s.as_str()))
        .collect();
    assert!(leaked.is_empty(), "the log contains {leaked:?}:\n{log}");
    let absurd = absurd_token(60 * KIB);
    assert!(
        !log.contains(&absurd[..200]),
        "the log contains the absurd token"
    );
}

/// A client that fails Basic authentication is answered before refgate
/// reads (and holds) the body it announced: here a body that never comes.
#[tokio::test]
async fn a_wrong_basic_secret_is_refused_before_the_body_is_read() {
    let server = Refgate::start();
    for path in ["/oauth2/token", "/oauth2/introspect", "/oauth2/revoke"] {
        let mut stream = TcpStream::connect(("127.0.0.1", server.token_port))
            .await
            .expect("connect");
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Authorization: Basic {}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: 4000\r\n\r\n",
            B64.encode("app:wrong-secret")
        );
        stream.write_all(head.as_bytes()).await.expect("write");
        let mut answer = vec![0u8; 4096];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
            .await
            .unwrap_or_else(|_| panic!("{path}: no answer while the body is missing"))
            .expect("read");
        let answer = String::from_utf8_lossy(&answer[..read]);
        assert!(answer.starts_with("HTTP/1.1 401"), "{path}: {answer}");
        assert!(answer.contains("invalid_client"), "{path}: {answer}");
    }
}

/// Reads from `stream` until the server closes it (at most 30 s); returns
/// what it sent and when it closed, counted from `since`.
async fn read_until_close(
    stream: &mut TcpStream,
    since: std::time::Instant,
) -> (Vec<u8>, Duration) {
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut bytes)).await;
    assert!(
        read.is_ok(),
        "the connection was still open after 30 s; got {:?}",
        lossy(&bytes)
    );
    (bytes, since.elapsed())
}

/// A token-service request must arrive, body included, within 15 s (else
/// 408 `invalid_request`), and its head within 10 s (else the connection
/// is closed). Both clocks run at once here, so the test takes 15 s.
#[tokio::test]
async fn a_stalled_body_is_408_after_15_s_and_a_stalled_head_is_closed_after_10_s() {
    let server = Refgate::start();
    let started = std::time::Instant::now();
    // A head and part of its body, then nothing.
    let mut body_stalled = connect(server.token_port).await.expect("connect");
    let head = format!(
        "POST /oauth2/token HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n\
         grant_type=",
        basic("app", "app-secret")
    );
    body_stalled
        .write_all(head.as_bytes())
        .await
        .expect("write a head and part of a body");
    // Part of a head, then nothing.
    let mut head_stalled = connect(server.token_port).await.expect("connect");
    head_stalled
        .write_all(b"POST /oauth2/token HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .expect("write part of a head");

    let ((body_answer, body_closed), (head_answer, head_closed)) = tokio::join!(
        read_until_close(&mut body_stalled, started),
        read_until_close(&mut head_stalled, started)
    );

    assert!(
        head_closed >= Duration::from_millis(9500) && head_closed < Duration::from_secs(14),
        "a stalled head was closed after {head_closed:?}"
    );
    assert!(
        head_answer.is_empty(),
        "a stalled head got an answer: {:?}",
        lossy(&head_answer)
    );

    assert!(
        body_closed >= Duration::from_millis(14500) && body_closed < Duration::from_secs(20),
        "a stalled body was answered after {body_closed:?}"
    );
    let (reply, _) = parse_reply(&body_answer, true, false)
        .unwrap_or_else(|| panic!("no answer to a stalled body: {:?}", lossy(&body_answer)));
    assert_eq!(reply.status, 408, "{reply:?}");
    assert_eq!(reply.json()["error"], "invalid_request", "{reply:?}");
    assert_eq!(reply.header("cache-control"), Some("no-store"), "{reply:?}");
}

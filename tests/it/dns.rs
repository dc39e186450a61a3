//! Upstream host names against a real DNS server on loopback that the test
//! controls: a changed A record moves traffic without a reload; a name
//! that does not resolve yet answers 502 `upstream_unavailable` and
//! recovers by itself; `refgate check` warns about it but passes.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::oidc::OidcAs;
use crate::common::upstream::Upstream;
use crate::common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A DNS server over UDP answering A queries from a table the test
/// changes; every answer has a TTL of one second. Unknown names are
/// NXDOMAIN; other query types get an empty answer.
struct DnsServer {
    addr: SocketAddr,
    records: Arc<Mutex<HashMap<String, Ipv4Addr>>>,
}

impl DnsServer {
    async fn start() -> Self {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind DNS");
        let addr = socket.local_addr().expect("address");
        let records: Arc<Mutex<HashMap<String, Ipv4Addr>>> = Arc::default();
        let table = records.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let reply = answer(&buf[..n], &table.lock().expect("records"));
                if let Some(reply) = reply {
                    let _ = socket.send_to(&reply, from).await;
                }
            }
        });
        DnsServer { addr, records }
    }

    fn set(&self, name: &str, ip: Ipv4Addr) {
        self.records
            .lock()
            .expect("records")
            .insert(name.to_string(), ip);
    }
}

/// The answer to one query (RFC 1035 §4.1).
fn answer(query: &[u8], records: &HashMap<String, Ipv4Addr>) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // The question: labels up to the root, then type and class.
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*query.get(i)?, *query.get(i + 1)?]);
    let question = &query[12..i + 4];
    let name = labels.join(".");
    let found = records.get(&name);
    let rd = query[2] & 0x01;
    let (rcode, ip) = match (found, qtype) {
        (None, _) => (3u8, None),
        (Some(ip), 1) => (0, Some(*ip)),
        (Some(_), _) => (0, None),
    };
    let mut out = Vec::new();
    out.extend_from_slice(&query[0..2]);
    out.push(0x80 | rd); // QR, opcode 0, RD as asked
    out.push(0x80 | rcode); // RA, rcode
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(ip.is_some() as u16).to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(question);
    if let Some(ip) = ip {
        out.extend_from_slice(&[0xc0, 0x0c]); // the question's name
        out.extend_from_slice(&1u16.to_be_bytes()); // A
        out.extend_from_slice(&1u16.to_be_bytes()); // IN
        out.extend_from_slice(&1u32.to_be_bytes()); // TTL: one second
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&ip.octets());
    }
    Some(out)
}

/// A tiny HTTP upstream on `listener` that answers every request with
/// `name`.
async fn named_upstream(listener: std::net::TcpListener, name: &'static str) {
    listener.set_nonblocking(true).expect("non-blocking");
    let listener = tokio::net::TcpListener::from_std(listener).expect("upstream listener");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut seen = Vec::new();
                loop {
                    let Ok(n) = stream.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let response = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{name}",
                            name.len()
                        );
                        if stream.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
}

/// Listeners on one port of both 127.0.0.1 and 127.0.0.2, kept bound from
/// the choice on (no other process can take the port in between).
fn listeners_on_both() -> (std::net::TcpListener, std::net::TcpListener, u16) {
    loop {
        let first = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = first.local_addr().expect("address").port();
        if let Ok(second) = std::net::TcpListener::bind(("127.0.0.2", port)) {
            return (first, second, port);
        }
    }
}

fn start(dns: &DnsServer, host: &str, port: u16) -> Refgate {
    Refgate::start_with(Options {
        gateway: format!("dns_servers = [\"{}\"]", dns.addr),
        extra: route(
            "svc",
            "/svc/",
            &format!("http://{host}:{port}"),
            r#"auth = "none""#,
        ),
        ..Options::default()
    })
}

async fn get(server: &Refgate) -> (StatusCode, String) {
    let response = http()
        .get(format!("{}/svc/x", server.proxy))
        .send()
        .await
        .expect("request");
    let status = response.status();
    (status, response.text().await.expect("body"))
}

/// Polls until the proxy answers `want`, for at most `within`.
async fn eventually(server: &Refgate, want: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let (status, body) = get(server).await;
        if status == StatusCode::OK && body == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "still {status} {body:?} after {within:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_changed_a_record_moves_traffic_without_a_reload() {
    let dns = DnsServer::start().await;
    let (first, second, port) = listeners_on_both();
    named_upstream(first, "one").await;
    named_upstream(second, "two").await;
    dns.set("svc.refgate.test", Ipv4Addr::new(127, 0, 0, 1));
    let server = start(&dns, "svc.refgate.test", port);
    assert_eq!(get(&server).await, (StatusCode::OK, "one".to_string()));

    dns.set("svc.refgate.test", Ipv4Addr::new(127, 0, 0, 2));
    // The record's TTL is one second: the new address is used soon after.
    eventually(&server, "two", Duration::from_secs(5)).await;
    dns.set("svc.refgate.test", Ipv4Addr::new(127, 0, 0, 1));
    eventually(&server, "one", Duration::from_secs(5)).await;
    assert!(!server.log().contains("configuration reloaded"));
}

#[tokio::test]
async fn an_unresolvable_upstream_is_unavailable_until_its_name_resolves() {
    let dns = DnsServer::start().await;
    let (first, _second, port) = listeners_on_both();
    named_upstream(first, "late").await;
    // `serve` starts although the name does not resolve.
    let server = start(&dns, "late.refgate.test", port);
    let response = http()
        .get(format!("{}/svc/x", server.proxy))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let body: Value = response.json().await.expect("JSON error");
    assert_eq!(body["error"], "upstream_unavailable", "{body}");
    assert!(body["error_description"].is_string(), "{body}");

    dns.set("late.refgate.test", Ipv4Addr::new(127, 0, 0, 1));
    eventually(&server, "late", Duration::from_secs(5)).await;
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[tokio::test]
async fn check_warns_about_an_unresolvable_host_but_passes() {
    let dns = DnsServer::start().await;
    let server = start(&dns, "nowhere.refgate.test", 8080);
    let config = server.config_path.clone();
    let output = tokio::task::spawn_blocking(move || {
        output_within(
            std::process::Command::new(env!("CARGO_BIN_EXE_refgate"))
                .arg("check")
                .arg("--config")
                .arg(&config),
            COMMAND_LIMIT,
        )
    })
    .await
    .expect("check");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "check failed: {stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("nowhere.refgate.test"),
        "{stderr}"
    );
}

/// An authority named by host name is reached through the same resolver:
/// an expired credential is refreshed at `as.refgate.test`, which only the
/// test's DNS server knows.
#[tokio::test]
async fn an_authority_host_name_resolves_through_the_configured_servers() {
    let dns = DnsServer::start().await;
    dns.set("as.refgate.test", Ipv4Addr::new(127, 0, 0, 1));
    let oidc = OidcAs::start(3600);
    let upstream = Upstream::start().await;
    let authority = oidc
        .authority_toml("photos-as")
        .replace("127.0.0.1", "as.refgate.test");
    let server = Refgate::start_with(Options {
        gateway: format!("dns_servers = [\"{}\"]", dns.addr),
        extra: format!("{authority}\n{}", photos_route(&upstream.url())),
        ..Options::default()
    });
    let (access, refresh, _) = oidc.mint("alice").await;
    let app = server.access_token("app").await;
    let (status, body) = server
        .mutate(&json!({"token": app, "patch": {"credentials": {"photos": {
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "Bearer",
            "expires_at": unix_now() - 10,
            "authority": "photos-as",
        }}}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let response = http()
        .get(format!("{}/photos/a", server.proxy))
        .bearer_auth(&app)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK, "{}", server.log());
    let sent = upstream
        .requests()
        .last()
        .and_then(|r| r.header("authorization"));
    let sent = sent.expect("the upstream saw a credential");
    assert!(
        sent.starts_with("Bearer ") && sent != format!("Bearer {access}"),
        "{sent}"
    );
}

#[tokio::test]
async fn check_refuses_a_dns_server_that_is_not_an_address() {
    let dns = DnsServer::start().await;
    let server = start(&dns, "127.0.0.1", 9);
    let text = std::fs::read_to_string(&server.config_path).expect("config");
    let bad = text.replace(&dns.addr.to_string(), "dns.example.com:53");
    let path = server.dir.path().join("changed.toml");
    std::fs::write(&path, bad).expect("write config");
    let output = output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_refgate"))
            .arg("check")
            .arg("--config")
            .arg(&path),
        COMMAND_LIMIT,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "check passed: {stderr}");
    assert!(
        stderr.contains("changed.toml:") && stderr.contains("gateway.dns_servers[0]"),
        "{stderr}"
    );
}

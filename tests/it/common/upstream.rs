//! A real upstream HTTP server for gateway tests: records every request it
//! receives and answers as told (echo, reject chosen tokens with 401, slow).
//! Plain HTTP or HTTPS (rustls, with a certificate the test chooses).
#![allow(dead_code)]

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    pub path: String,
    /// Header (name, value) pairs, names lower-case, values as raw bytes.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Recorded {
    /// The first value of a header, lossily as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).to_string())
    }

    pub fn header_count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(n, _)| n == name).count()
    }
}

struct Shared {
    requests: Mutex<Vec<Recorded>>,
    /// `Authorization` values answered with 401.
    rejected: Mutex<HashSet<String>>,
    /// Whether `/hold/` requests may be answered.
    released: tokio::sync::watch::Sender<bool>,
}

/// A running upstream.
pub struct Upstream {
    pub port: u16,
    pub tls: bool,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// Plain HTTP on a free loopback port. Paths: `/slow/<ms>/...` waits
    /// `ms` before answering; `/hold/...` waits until [`Upstream::release`];
    /// everything else answers at once with a JSON
    /// echo `{"path","authorization","request_id","body_len"}`.
    pub async fn start() -> Self {
        Self::start_inner(None).await
    }

    /// HTTPS with the given certificate chain and key (PEM).
    pub async fn start_tls(cert_pem: &str, key_pem: &str) -> Self {
        let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("certificate PEM");
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .expect("key PEM")
            .expect("a key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server certificate");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self::start_inner(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn start_inner(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared {
            requests: Mutex::default(),
            rejected: Mutex::default(),
            released: tokio::sync::watch::Sender::new(false),
        });
        let is_tls = tls.is_some();
        let state = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        Upstream {
            port,
            tls: is_tls,
            shared,
            task,
        }
    }

    /// The URL to put in a route's `upstream`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().expect("lock").clone()
    }

    pub fn clear(&self) {
        self.shared.requests.lock().expect("lock").clear();
    }

    /// Lets `/hold/` requests (held ones and later ones) be answered.
    pub fn release(&self) {
        self.shared.released.send_replace(true);
    }

    /// Answer 401 to requests whose `Authorization` equals `value`.
    pub fn reject(&self, value: &str) {
        self.shared
            .rejected
            .lock()
            .expect("lock")
            .insert(value.to_string());
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let recorded = Recorded {
        method: parts.method.to_string(),
        version: format!("{:?}", parts.version),
        path: path.clone(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
            .collect(),
        body: body.to_vec(),
    };
    let authorization = recorded.header("authorization");
    shared.requests.lock().expect("lock").push(recorded);
    if let Some(ms) = path
        .strip_prefix("/slow/")
        .and_then(|rest| rest.split('/').next())
        .and_then(|ms| ms.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if path.starts_with("/hold/") {
        let mut released = shared.released.subscribe();
        let _ = released.wait_for(|released| *released).await;
    }
    let rejected = authorization
        .as_ref()
        .is_some_and(|a| shared.rejected.lock().expect("lock").contains(a));
    let status = if rejected { 401 } else { 200 };
    let echo = json!({
        "path": path,
        "authorization": authorization,
        "request_id": parts.headers.get("x-request-id").and_then(|v| v.to_str().ok()),
        "body_len": body.len(),
    });
    let response = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(echo.to_string())))
        .expect("response");
    Ok(response)
}

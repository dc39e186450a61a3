//! The benchmark's upstream and downstream authority, in one small process
//! (see `bench/README.md`). Not a demo of refgate: a fixed, cheap peer so the
//! benchmark measures the proxy in front of it.
//!
//! - any `GET`/`POST` path: `200` with a fixed 13-byte body, keep-alive,
//!   HTTP/1.1. It classifies the `Authorization` it received, so the harness
//!   can prove refgate swapped the header: a reference token (`rgat_`/`rgrt_`)
//!   is a leak and is answered `403` (never `401`, which would make refgate
//!   refresh).
//! - `GET /_echo`: answers the `Authorization` header it received.
//! - `POST /token`: a downstream authorization server for the refresh storm.
//!   `grant_type=refresh_token` rotates: each refresh token works once, a
//!   replay is `invalid_grant` (and counted), like a strict real authority.
//! - `GET /_stats`: the counters as JSON; `POST /_reset` zeroes them.
//!
//! Usage: `bench_upstream [--listen 127.0.0.1:18100] [--threads 1]`

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// What every plain request gets back.
const BODY: &[u8] = b"hello, bench\n";
/// Largest `/token` request body read.
const MAX_FORM: usize = 16 * 1024;

#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    /// Requests that carried a refgate reference token: a leak.
    leaked_reference: AtomicU64,
    /// Requests that carried some other `Authorization` (the downstream one).
    downstream: AtomicU64,
    no_authorization: AtomicU64,
    refreshes: AtomicU64,
    /// Refresh tokens presented a second time.
    replays: AtomicU64,
    bad_token_requests: AtomicU64,
    /// Refresh tokens already used (rotation).
    consumed: Mutex<HashSet<String>>,
}

impl Stats {
    fn json(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "{{\"requests\":{},\"leaked_reference\":{},\"downstream\":{},\"no_authorization\":{},\"refreshes\":{},\"replays\":{},\"bad_token_requests\":{}}}\n",
            get(&self.requests),
            get(&self.leaked_reference),
            get(&self.downstream),
            get(&self.no_authorization),
            get(&self.refreshes),
            get(&self.replays),
            get(&self.bad_token_requests),
        )
    }

    fn reset(&self) {
        for c in [
            &self.requests,
            &self.leaked_reference,
            &self.downstream,
            &self.no_authorization,
            &self.refreshes,
            &self.replays,
            &self.bad_token_requests,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        self.consumed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_str(content_type).expect("a static content type"),
    );
    response
}

fn is_reference_token(authorization: &[u8]) -> bool {
    let text = String::from_utf8_lossy(authorization);
    let mut parts = text.split_whitespace();
    parts
        .next()
        .is_some_and(|s| s.eq_ignore_ascii_case("bearer"))
        && parts
            .next()
            .is_some_and(|t| t.starts_with("rgat_") || t.starts_with("rgrt_"))
}

async fn handle(
    stats: Arc<Stats>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path();
    match (request.method(), path) {
        (&Method::GET, "/_stats") => {
            return Ok(respond(StatusCode::OK, "application/json", stats.json()))
        }
        (&Method::POST, "/_reset") => {
            stats.reset();
            return Ok(respond(StatusCode::OK, "application/json", stats.json()));
        }
        (&Method::POST, "/token") => return Ok(token(&stats, request).await),
        _ => {}
    }
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let authorization = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .map(|v| v.as_bytes().to_vec());
    let leaked = match &authorization {
        None => {
            stats.no_authorization.fetch_add(1, Ordering::Relaxed);
            false
        }
        Some(value) if is_reference_token(value) => {
            stats.leaked_reference.fetch_add(1, Ordering::Relaxed);
            true
        }
        Some(_) => {
            stats.downstream.fetch_add(1, Ordering::Relaxed);
            false
        }
    };
    if path.ends_with("/_echo") {
        let seen = authorization.unwrap_or_default();
        return Ok(respond(StatusCode::OK, "text/plain", seen));
    }
    // Drain a request body (POSTs through the proxy) so keep-alive holds.
    let _ = request.into_body().collect().await;
    if leaked {
        return Ok(respond(
            StatusCode::FORBIDDEN,
            "text/plain",
            "reference token leaked\n",
        ));
    }
    Ok(respond(StatusCode::OK, "text/plain", BODY))
}

/// `POST /token`, `grant_type=refresh_token`: a fresh pair, once per
/// refresh token.
async fn token(stats: &Stats, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let body = match http_body_util::Limited::new(request.into_body(), MAX_FORM)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            stats.bad_token_requests.fetch_add(1, Ordering::Relaxed);
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
        }
    };
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let (Some("refresh_token"), Some(refresh_token)) =
        (field("grant_type"), field("refresh_token"))
    else {
        stats.bad_token_requests.fetch_add(1, Ordering::Relaxed);
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    };
    let fresh = {
        let mut consumed = stats.consumed.lock().unwrap_or_else(|p| p.into_inner());
        consumed.insert(refresh_token.to_string())
    };
    if !fresh {
        stats.replays.fetch_add(1, Ordering::Relaxed);
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    let n = stats.refreshes.fetch_add(1, Ordering::Relaxed) + 1;
    let answer = format!(
        "{{\"access_token\":\"down-refreshed-{n}\",\"refresh_token\":\"rt-refreshed-{n}\",\"token_type\":\"Bearer\",\"expires_in\":3600}}"
    );
    let mut response = respond(StatusCode::OK, "application/json", answer);
    response.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    response
}

fn oauth_error(status: StatusCode, code: &str) -> Response<Full<Bytes>> {
    respond(
        status,
        "application/json",
        format!("{{\"error\":\"{code}\"}}"),
    )
}

struct Args {
    listen: SocketAddr,
    threads: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: "127.0.0.1:18100".parse().expect("a literal address"),
        threads: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => {
                args.listen = value
                    .parse()
                    .map_err(|_| format!("`{value}` is not an address"))?
            }
            "--threads" => {
                args.threads = value
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| format!("`{value}` is not a thread count"))?
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench_upstream: {e}\nusage: bench_upstream [--listen ADDR] [--threads N]");
            std::process::exit(2);
        }
    };
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .expect("a tokio runtime");
    runtime.block_on(async {
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("bench_upstream: cannot listen on {}: {e}", args.listen);
                std::process::exit(1);
            }
        };
        eprintln!("bench_upstream listening on {}", args.listen);
        serve(listener).await
    });
}

/// Serves until the process ends. Public to the crate so that
/// `tests/it/bench_scripts.rs` can run it in-process on an ephemeral port.
pub async fn serve(listener: tokio::net::TcpListener) {
    let stats = Arc::new(Stats::default());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors under a storm: back off, keep serving.
                eprintln!("bench_upstream: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let stats = stats.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |r| handle(stats.clone(), r));
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

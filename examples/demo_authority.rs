//! A demo downstream authorization server, for watching refgate refresh a
//! credential: the `photos-as` authority of `config/refgate.toml`.
//!
//! It listens on `127.0.0.1:9101` and answers `POST /token` with
//! `grant_type=refresh_token`, authenticated with HTTP Basic as
//! `gateway` / `gateway-secret`. Each refresh issues a new access token and a
//! new refresh token (`photos-at-N`, `photos-rt-N`) that expire after
//! `DEMO_EXPIRES_IN` seconds (default 90).
//!
//! Refresh tokens rotate: a refresh token is good once. Presenting one again
//! is answered `invalid_grant`, as a rotating authorization server does, and
//! the gateway then asks the user to consent again
//! (`credential_reauth_required`). For the demo, any refresh token it has not
//! seen used before is accepted, so a middle tier can store made-up ones.
//!
//! ```sh
//! cargo run --example demo_authority
//! ```

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use serde_json::{json, Value};

const ADDRESS: ([u8; 4], u16) = ([127, 0, 0, 1], 9101);
const CLIENT_ID: &str = "gateway";
const CLIENT_SECRET: &str = "gateway-secret";

struct Authority {
    expires_in: u64,
    issued: AtomicU64,
    used: Mutex<HashSet<String>>,
}

#[tokio::main]
async fn main() {
    let expires_in = std::env::var("DEMO_EXPIRES_IN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(90);
    let authority = Arc::new(Authority {
        expires_in,
        issued: AtomicU64::new(0),
        used: Mutex::new(HashSet::new()),
    });
    let addr = SocketAddr::from(ADDRESS);
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("demo_authority: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "[photos-as] token endpoint http://{addr}/token (client {CLIENT_ID}, tokens live {expires_in}s)"
    );
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let authority = authority.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let authority = authority.clone();
                async move { Ok::<_, Infallible>(authority.answer(request).await) }
            });
            let _ = Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

impl Authority {
    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::POST || request.uri().path() != "/token" {
            return reply(StatusCode::NOT_FOUND, json!({ "error": "not_found" }));
        }
        if !authenticated(&request) {
            println!("[photos-as] refused: bad client credentials");
            return reply(
                StatusCode::UNAUTHORIZED,
                json!({ "error": "invalid_client" }),
            );
        }
        let body = match Limited::new(request.into_body(), 64 * 1024).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return reply(
                    StatusCode::BAD_REQUEST,
                    json!({ "error": "invalid_request" }),
                )
            }
        };
        let form: HashMap<String, String> =
            url::form_urlencoded::parse(&body).into_owned().collect();
        if form.get("grant_type").map(String::as_str) != Some("refresh_token") {
            return reply(
                StatusCode::BAD_REQUEST,
                json!({ "error": "unsupported_grant_type" }),
            );
        }
        let Some(presented) = form.get("refresh_token") else {
            return reply(
                StatusCode::BAD_REQUEST,
                json!({ "error": "invalid_request" }),
            );
        };
        let first_use = self
            .used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(presented.clone());
        if !first_use {
            println!("[photos-as] refresh_token={presented} was already used -> invalid_grant");
            return reply(
                StatusCode::BAD_REQUEST,
                json!({ "error": "invalid_grant", "error_description": "refresh token already used" }),
            );
        }
        let n = self.issued.fetch_add(1, Ordering::Relaxed) + 1;
        let access_token = format!("photos-at-{n}");
        let refresh_token = format!("photos-rt-{n}");
        println!(
            "[photos-as] refresh_token={presented} -> access_token={access_token} refresh_token={refresh_token} expires_in={}",
            self.expires_in
        );
        reply(
            StatusCode::OK,
            json!({
                "access_token": access_token,
                "refresh_token": refresh_token,
                "token_type": "Bearer",
                "expires_in": self.expires_in,
                "scope": "photos.read",
            }),
        )
    }
}

/// HTTP Basic with the gateway's client id and secret (RFC 6749 §2.3.1).
fn authenticated(request: &Request<Incoming>) -> bool {
    let Some(value) = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(encoded) = value.strip_prefix("Basic ") else {
        return false;
    };
    let Ok(decoded) = STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let expected = format!("{CLIENT_ID}:{CLIENT_SECRET}");
    decoded == expected.as_bytes()
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    response
}

//! A demo upstream API for trying refgate's gateway: two tiny HTTP servers
//! that print the `Authorization` header they receive and echo it back.
//!
//! - `127.0.0.1:9100` plays `photos-api` (the `photos` route of
//!   `config/refgate.toml`, which swaps in `custom.credentials.photos`);
//! - `127.0.0.1:9200` plays `reports-api` (the `reports` route, where refgate
//!   exchanges the caller's token on its behalf).
//!
//! A bearer token containing `stale` is answered with 401, the way a real API
//! rejects a token its authorization server no longer honours: the gateway
//! then refreshes the credential once and replays the request.
//!
//! ```sh
//! cargo run --example demo_upstream
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use serde_json::json;

#[tokio::main]
async fn main() {
    let apis = [("photos-api", 9100), ("reports-api", 9200)];
    let mut servers = Vec::new();
    for (name, port) in apis {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("demo_upstream: cannot listen on {addr}: {e}");
                std::process::exit(1);
            }
        };
        println!("[{name}] listening on http://{addr}");
        servers.push(tokio::spawn(serve(name, listener)));
    }
    for server in servers {
        let _ = server.await;
    }
}

async fn serve(name: &'static str, listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| answer(name, request));
            let _ = Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    name: &'static str,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |n: &str| {
        request
            .headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string()
    };
    let authorization = header("authorization");
    let request_id = header("x-request-id");
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let rejected = authorization.contains("stale");
    println!(
        "[{name}] {} {path}  Authorization: {authorization}  x-request-id: {request_id}{}",
        request.method(),
        if rejected { "  -> 401" } else { "" }
    );
    let (status, body) = if rejected {
        (
            StatusCode::UNAUTHORIZED,
            json!({ "error": "invalid_token", "api": name }),
        )
    } else {
        (
            StatusCode::OK,
            json!({
                "api": name,
                "method": request.method().as_str(),
                "path": path,
                "authorization": authorization,
                "request_id": request_id,
            }),
        )
    };
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    if rejected {
        response.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
    }
    Ok(response)
}

//! pingora without pingora-proxy, for the benchmark (see `bench/README.md`):
//! one HTTP/1.1 keep-alive loop per downstream connection on pingora-core's
//! own server session, the upstream through pingora-core's connector and
//! its keep-alive pool, with exactly the settings of refgate's gateway
//! (`refgate::app::proxy_server_conf`). No authentication, no header
//! changes, no h2, no upgrades, no retries, no timeouts of its own: it is
//! the floor under a fast path that would skip pingora-proxy's per-request
//! machinery (its request state machine, the copy of the request header,
//! the channels and `select!` loops between the two sides). Set beside
//! `bench_pingora` (pingora-proxy with no logic), it measures what that
//! machinery costs on this machine.
//!
//! Usage: `bench_pingora_core --listen 127.0.0.1:18114 --upstream 127.0.0.1:18100`

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::connectors::http::v1::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::prelude::*;
use pingora::protocols::http::v1::server::HttpSession;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use pingora::services::listening::Service;
use pingora::upstreams::peer::HttpPeer;

#[path = "support/proxy_args.rs"]
mod proxy_args;
use proxy_args::ProxyArgs;

// The allocator refgate uses, so that only the proxy logic differs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long a downstream connection may wait for its next request, as
/// pingora-core's own HTTP loop sets it.
const KEEPALIVE_SECONDS: u64 = 60;

/// How long an idle upstream connection stays in the pool.
const UPSTREAM_IDLE: Duration = Duration::from_secs(60);

struct CoreLoop {
    upstream: HttpPeer,
    connector: Connector,
}

impl CoreLoop {
    /// Forwards the request `downstream` has read and writes the answer
    /// back: whether both sides are still usable.
    async fn exchange(&self, downstream: &mut HttpSession) -> bool {
        let request = Box::new(downstream.req_header().clone());
        let Ok((mut upstream, _reused)) = self.connector.get_http_session(&self.upstream).await
        else {
            return false;
        };
        if upstream.write_request_header(request).await.is_err() {
            return false;
        }
        while !downstream.is_body_done() {
            match downstream.read_body_bytes().await {
                Ok(Some(chunk)) => {
                    if upstream.write_body(&chunk).await.is_err() {
                        return false;
                    }
                }
                Ok(None) => break,
                Err(_) => return false,
            }
        }
        if upstream.finish_body().await.is_err() || upstream.read_response().await.is_err() {
            return false;
        }
        let Some(response) = upstream.resp_header() else {
            return false;
        };
        let response = Box::new(response.clone());
        if downstream.write_response_header(response).await.is_err() {
            return false;
        }
        loop {
            match upstream.read_body_bytes().await {
                Ok(Some(chunk)) => {
                    if downstream.write_body(&chunk).await.is_err() {
                        return false;
                    }
                }
                Ok(None) => break,
                Err(_) => return false,
            }
        }
        if downstream.finish_body().await.is_err() {
            return false;
        }
        self.connector
            .release_http_session(upstream, &self.upstream, Some(UPSTREAM_IDLE))
            .await;
        true
    }
}

#[async_trait]
impl ServerApp for CoreLoop {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        _shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        loop {
            let mut downstream = HttpSession::new(stream);
            downstream.set_server_keepalive(Some(KEEPALIVE_SECONDS));
            match downstream.read_request().await {
                Ok(Some(_)) => {}
                _ => return None,
            }
            if !self.exchange(&mut downstream).await {
                return None;
            }
            // Bytes of a pipelined next request are not kept: the benchmark
            // does not pipeline.
            stream = downstream.reuse().await.ok()??.into_parts().0;
        }
    }
}

fn main() {
    let ProxyArgs { listen, upstream } = ProxyArgs::parse("bench_pingora_core", "127.0.0.1:18114");
    let mut server = Server::new_with_opt_and_conf(None, refgate::app::proxy_server_conf());
    server.bootstrap();
    let connector = Connector::new(Some(ConnectorOptions::from_server_conf(
        &server.configuration,
    )));
    let app = CoreLoop {
        upstream: HttpPeer::new(upstream, false, String::new()),
        connector,
    };
    let mut service = Service::new("core loop".to_string(), app);
    service.add_tcp(&listen);
    server.add_service(service);
    server.run_forever();
}

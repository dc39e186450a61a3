//! A bare pingora proxy for the benchmark (see `bench/README.md`): the
//! smallest `ProxyHttp` there is — one upstream, no authentication, no
//! metrics, no logging — with exactly the pingora settings of refgate's
//! gateway (`refgate::app::proxy_server_conf`). Its numbers are pingora's
//! own floor on this machine, so the benchmark can tell what refgate adds
//! apart from what pingora costs.
//!
//! Usage: `bench_pingora --listen 127.0.0.1:18111 --upstream 127.0.0.1:18100`

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;

#[path = "support/proxy_args.rs"]
mod proxy_args;
use proxy_args::ProxyArgs;

// The allocator refgate uses, so that only the proxy logic differs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    fn init_downstream_modules(&self, _: &mut pingora::modules::http::HttpModules) {
        // As refgate's gateway: no modules.
    }

    async fn upstream_peer(&self, _: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() {
    let ProxyArgs { listen, upstream } = ProxyArgs::parse("bench_pingora", "127.0.0.1:18111");
    let mut server = Server::new_with_opt_and_conf(None, refgate::app::proxy_server_conf());
    server.bootstrap();
    let mut service = http_proxy_service(&server.configuration, Bare { upstream });
    if let Some(logic) = service.app_logic_mut() {
        logic.server_options = Some(refgate::app::proxy_server_options());
    }
    service.add_tcp(&listen);
    server.add_service(service);
    server.run_forever();
}

//! A bare pingora proxy for the benchmark (see `bench/README.md`): the
//! smallest `ProxyHttp` there is — one upstream, no authentication, no
//! metrics, no logging — run with the same pingora settings as refgate's
//! gateway. Its numbers are pingora's own floor on this machine, so the
//! benchmark can tell what refgate adds apart from what pingora costs.
//!
//! Usage: `bench_pingora --listen 127.0.0.1:18111 --upstream 127.0.0.1:18100`

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::upstreams::peer::HttpPeer;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare {
    upstream: SocketAddr,
    modules: bool,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    fn init_downstream_modules(&self, modules: &mut pingora::modules::http::HttpModules) {
        if self.modules {
            modules.add_module(
                pingora::modules::http::compression::ResponseCompressionBuilder::enable(0),
            );
        }
    }

    async fn upstream_peer(&self, _: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn flag(name: &str, default: &str) -> String {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == name {
            if let Some(value) = args.next() {
                return value;
            }
        }
    }
    default.to_string()
}

fn main() {
    let listen = flag("--listen", "127.0.0.1:18111");
    let upstream: SocketAddr = match flag("--upstream", "127.0.0.1:18100").parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench_pingora: --upstream: {e}");
            std::process::exit(2);
        }
    };
    let work_stealing = flag("--work-stealing", "true") != "false";
    let modules = flag("--modules", "true") != "false";
    let conf = ServerConf {
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        work_stealing,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = http_proxy_service(&server.configuration, Bare { upstream, modules });
    // As refgate's gateway: HTTP/1.1 and h2c on one plain listener.
    if let Some(logic) = service.app_logic_mut() {
        let mut options = pingora::apps::HttpServerOptions::default();
        options.h2c = true;
        logic.server_options = Some(options);
    }
    service.add_tcp(&listen);
    server.add_service(service);
    server.run_forever();
}

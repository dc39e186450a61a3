//! The command line of the benchmark's two pingora proxies
//! (`bench_pingora`, `bench_pingora_core`): `--listen ADDR --upstream ADDR`.

use std::net::SocketAddr;

/// Where the proxy listens and where it forwards.
pub struct ProxyArgs {
    pub listen: String,
    pub upstream: SocketAddr,
}

impl ProxyArgs {
    /// Reads the arguments, with the given default listening address; a bad
    /// `--upstream` ends the process with status 2, naming `program`.
    pub fn parse(program: &str, default_listen: &str) -> Self {
        let listen = flag("--listen", default_listen);
        let upstream = match flag("--upstream", "127.0.0.1:18100").parse() {
            Ok(a) => a,
            Err(e) => {
                eprintln!("{program}: --upstream: {e}");
                std::process::exit(2);
            }
        };
        ProxyArgs { listen, upstream }
    }
}

/// The value after `name` on the command line, or `default`.
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

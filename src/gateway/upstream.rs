//! Upstream peers, built once per configuration: TLS with certificate and
//! hostname verification, extra trusted CAs, timeouts. A literal address
//! is part of the peer; a host name is resolved per request (from the
//! resolver's cache while its TTL lasts) into a copy of the peer.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::{parse_x509, WrappedX509};

use crate::config::{GatewaySettings, Route};
use crate::dns::{Dns, Unresolved};

/// The peer to send a request to: `template` itself for a literal address,
/// else a copy with the host name's current address.
pub async fn resolved(
    route: &Route,
    template: &HttpPeer,
    dns: &Dns,
) -> Result<HttpPeer, Unresolved> {
    if route.upstream.addr.is_some() {
        return Ok(template.clone());
    }
    let ip = dns.resolve(&route.upstream.host).await?;
    let mut peer = template.clone();
    peer._address =
        pingora::protocols::l4::socket::SocketAddr::Inet(SocketAddr::new(ip, route.upstream.port));
    Ok(peer)
}

/// Builds the peer for a route.
pub fn peer_for(route: &Route, settings: &GatewaySettings) -> Result<HttpPeer, String> {
    let upstream = &route.upstream;
    // The SNI is the configured host name: never empty, since an empty SNI
    // would turn certificate verification off.
    let sni = if upstream.tls {
        upstream.host.clone()
    } else {
        String::new()
    };
    // A name's address is filled in per request (`resolved`): never let
    // pingora resolve it (it blocks, and panics on failure).
    let addr = upstream
        .addr
        .unwrap_or_else(|| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), upstream.port));
    let mut peer = HttpPeer::new(addr, upstream.tls, sni);
    peer.options.connection_timeout = Some(settings.upstream_connect_timeout);
    // Checked when a pooled connection is taken out for reuse (the pool
    // watches no idle connection: vendor/README.md).
    peer.options.idle_timeout = Some(settings.upstream_idle_timeout);
    peer.options.verify_cert = true;
    peer.options.verify_hostname = true;
    if upstream.tls {
        // Offer h2 and http/1.1 by ALPN; the upstream picks. Plain-HTTP
        // upstreams stay on HTTP/1.1 (h2c would break HTTP/1-only ones).
        peer.options.set_http_version(2, 1);
        let mut cas = Vec::new();
        for file in route.ca_file.iter().chain(settings.ca_file.iter()) {
            cas.extend(load_cas(file)?);
        }
        if !cas.is_empty() {
            // pingora trusts a peer's own CA list *instead of* the platform
            // roots; a `ca_file` is an extra CA (SPEC 2), so add them back.
            cas.extend(
                platform_roots()
                    .iter()
                    .map(|der| WrappedX509::new(der.clone(), parse_x509)),
            );
            // pingora's connection pool keys on address, SNI and the verify
            // flags but not on the trusted CAs: without a group of its own,
            // a route would reuse a connection that another route's CA
            // verified, and trust the upstream without trusting its CA.
            peer.group_key = trust_group(&cas);
            peer.options.ca = Some(Arc::from(cas.into_boxed_slice()));
        }
    }
    Ok(peer)
}

/// The platform's trusted roots (honouring `SSL_CERT_FILE` and
/// `SSL_CERT_DIR`, as pingora's default store does), read once. Roots the
/// certificate parser refuses are left out: the TLS layer's parser panics.
fn platform_roots() -> &'static [Vec<u8>] {
    static ROOTS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    ROOTS.get_or_init(|| match pingora::tls::load_native_certs() {
        Ok(certs) => certs
            .iter()
            .map(|c| c.as_ref().to_vec())
            .filter(|der| x509_parser::parse_x509_certificate(der).is_ok())
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the platform's trusted roots");
            Vec::new()
        }
    })
}

/// A connection-pool group for a set of trusted CAs: equal sets share
/// connections, different ones (or none, group 0) never do.
fn trust_group(cas: &[WrappedX509]) -> u64 {
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    for ca in cas {
        let der = ca.borrow_raw_cert();
        digest.update(&(der.len() as u64).to_be_bytes());
        digest.update(der);
    }
    let hash = digest.finish();
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_ref()[..8]);
    u64::from_be_bytes(first).max(1)
}

/// Reads every certificate of a PEM file.
fn load_cas(path: &Path) -> Result<Vec<WrappedX509>, String> {
    Ok(crate::config::pem::certificates(path)?
        .into_iter()
        .map(|der| WrappedX509::new(der, parse_x509))
        .collect())
}

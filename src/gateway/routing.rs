//! Route matching (SPEC 4.1 step 1): routes whose `host` matches win over
//! host-less routes; among those the longest `path_prefix` wins. Also the
//! `strip_prefix` rewrite.

use std::sync::Arc;

use pingora::upstreams::peer::HttpPeer;

use crate::config::Route;

/// A route with what the proxy needs prepared for it.
pub struct RouteEntry {
    pub route: Arc<Route>,
    /// The upstream peer, built once (TLS, CA, SNI, timeouts).
    pub peer: HttpPeer,
}

/// All routes, ordered for matching.
#[derive(Default)]
pub struct RouteTable {
    with_host: Vec<Arc<RouteEntry>>,
    without_host: Vec<Arc<RouteEntry>>,
}

impl RouteTable {
    pub fn new(entries: Vec<Arc<RouteEntry>>) -> Self {
        let (mut with_host, mut without_host): (Vec<_>, Vec<_>) =
            entries.into_iter().partition(|e| e.route.host.is_some());
        let longest_first = |a: &Arc<RouteEntry>, b: &Arc<RouteEntry>| {
            b.route.path_prefix.len().cmp(&a.route.path_prefix.len())
        };
        with_host.sort_by(longest_first);
        without_host.sort_by(longest_first);
        RouteTable {
            with_host,
            without_host,
        }
    }

    /// The route for a request host (any case, port allowed) and path.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Arc<RouteEntry>> {
        if let Some(host) = host.map(normalize_host).filter(|h| !h.is_empty()) {
            let found = self.with_host.iter().find(|e| {
                path.starts_with(&e.route.path_prefix)
                    && e.route.host.as_ref().is_some_and(|p| p.matches(&host))
            });
            if found.is_some() {
                return found;
            }
        }
        self.without_host
            .iter()
            .find(|e| path.starts_with(&e.route.path_prefix))
    }

    pub fn len(&self) -> usize {
        self.with_host.len() + self.without_host.len()
    }
}

/// Lower-cases a Host value and drops its port (`[::1]:80` → `[::1]`).
fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let without_port = if host.starts_with('[') {
        match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

/// The upstream path for `path_and_query` under a route: with
/// `strip_prefix`, `/photos/x?y` under `/photos/` becomes `/x?y`.
pub fn upstream_path(route: &Route, path_and_query: &str) -> Option<String> {
    if !route.strip_prefix {
        return None;
    }
    let rest = path_and_query
        .strip_prefix(route.path_prefix.as_str())
        .unwrap_or(path_and_query);
    Some(if rest.starts_with('/') {
        rest.to_string()
    } else {
        format!("/{rest}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_normalized() {
        assert_eq!(normalize_host("API.Example.com:8080"), "api.example.com");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
        assert_eq!(normalize_host("example.com."), "example.com");
    }
}

//! Route matching (SPEC 4.1 step 1): routes whose `host` matches win over
//! host-less routes; among those the longest `path_prefix` wins. Also the
//! `strip_prefix` rewrite, and the one view of a request path that routing
//! and the rewrite share.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use pingora::upstreams::peer::HttpPeer;

use crate::config::Route;
use crate::telemetry::{Metrics, RouteMetrics};

/// A route with what the proxy needs prepared for it.
pub struct RouteEntry {
    pub route: Arc<Route>,
    /// The upstream peer, built once (TLS, CA, SNI, timeouts).
    pub peer: HttpPeer,
    /// The route's metric series, resolved on first use.
    metrics: OnceLock<RouteMetrics>,
}

impl RouteEntry {
    pub fn new(route: Arc<Route>, peer: HttpPeer) -> Self {
        RouteEntry {
            route,
            peer,
            metrics: OnceLock::new(),
        }
    }

    pub fn metrics(&self, all: &Metrics) -> &RouteMetrics {
        self.metrics
            .get_or_init(|| RouteMetrics::new(all, &self.route.name))
    }
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
        let host = host.filter(|_| !self.with_host.is_empty());
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

/// Why a request path cannot be routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// A `.` or `..` segment, literal or percent-encoded.
    DotSegment,
}

impl PathError {
    pub fn describe(self) -> &'static str {
        match self {
            PathError::DotSegment => "the request path has a `.` or `..` segment",
        }
    }
}

/// The path as routes see it: percent-encoded unreserved characters decoded
/// (RFC 3986 §6.2.2.2), so `/%70hotos/x` matches `/photos/` here as it does
/// at any upstream. A path with a dot segment is refused rather than
/// resolved: `/photos/../admin/x` would be checked against the `/photos/`
/// route's scopes and then resolved by the upstream to `/admin/x`. What
/// some upstreams also take for dot segments counts too: `..;param`
/// (servlet path parameters) and `..` between encoded or back slashes.
pub fn route_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    let normalized = decode_unreserved(path);
    if has_dot_segment(&normalized) {
        return Err(PathError::DotSegment);
    }
    Ok(normalized)
}

fn has_dot_segment(path: &str) -> bool {
    let is_dot = |segment: &str| {
        let name = segment.split(';').next().unwrap_or(segment);
        name == "." || name == ".."
    };
    if path.split('/').any(is_dot) {
        return true;
    }
    // Only when the path has another separator an upstream might honour.
    let other_separator = path.contains('\\')
        || path.as_bytes().windows(3).any(|w| {
            w[0] == b'%' && w[1] == b'2' && w[2].eq_ignore_ascii_case(&b'f')
                || w[0] == b'%' && w[1] == b'5' && w[2].eq_ignore_ascii_case(&b'c')
        });
    if !other_separator {
        return false;
    }
    path.to_ascii_lowercase()
        .replace("%2f", "/")
        .replace("%5c", "/")
        .replace('\\', "/")
        .split('/')
        .any(is_dot)
}

/// Decodes `%XX` where it stands for an unreserved character; leaves every
/// other escape (`%2F`, `%00`, ...) as it is.
fn decode_unreserved(path: &str) -> Cow<'_, str> {
    if !path.contains('%') {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = &rest[at..];
        let decoded = escape
            .get(1..3)
            .filter(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .filter(|b| b.is_ascii_alphanumeric() || b"-._~".contains(b));
        match decoded {
            Some(b) => {
                out.push(b as char);
                rest = &escape[3..];
            }
            None => {
                out.push('%');
                rest = &escape[1..];
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// The upstream path for `path_and_query` under a route: with
/// `strip_prefix`, `/photos/x?y` under `/photos/` becomes `/x?y`. The prefix
/// is removed from the path as routing saw it ([`route_path`]).
pub fn upstream_path(route: &Route, path_and_query: &str) -> Option<String> {
    if !route.strip_prefix {
        return None;
    }
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let path = route_path(path).unwrap_or(Cow::Borrowed(path));
    let rest = path
        .strip_prefix(route.path_prefix.as_str())
        .unwrap_or(&path);
    let mut out = String::with_capacity(rest.len() + 1 + query.map_or(0, |q| q.len() + 1));
    if !rest.starts_with('/') {
        out.push('/');
    }
    out.push_str(rest);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_paths() {
        assert_eq!(route_path("/photos/x").unwrap(), "/photos/x");
        assert_eq!(route_path("/%70hotos/%7Ex%2Fy").unwrap(), "/photos/~x%2Fy");
        assert_eq!(route_path("/a%2").unwrap(), "/a%2");
        assert_eq!(route_path("/a%+1b").unwrap(), "/a%+1b");
        assert_eq!(route_path("/a%00%25").unwrap(), "/a%00%25");
        assert_eq!(
            route_path("/a..b/.x/..."),
            Ok(Cow::Borrowed("/a..b/.x/..."))
        );
        for bad in [
            "/a/../b",
            "/a/./b",
            "/a/..",
            "/..",
            "/a/%2e%2E/b",
            "/a/.%2e",
            "/a/%2E",
        ] {
            assert_eq!(route_path(bad), Err(PathError::DotSegment), "{bad}");
        }
    }

    #[test]
    fn hosts_are_normalized() {
        assert_eq!(normalize_host("API.Example.com:8080"), "api.example.com");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
        assert_eq!(normalize_host("example.com."), "example.com");
    }
}

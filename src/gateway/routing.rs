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
    /// The `Host` the upstream gets unless the route preserves the client's:
    /// the upstream's own authority (`host`, or `host:port` for a port that
    /// is not the scheme's default).
    pub upstream_host: http::HeaderValue,
    /// `path_prefix` in lower case, for the case-insensitive cross-check.
    lower_prefix: String,
    /// The route's metric series, resolved on first use.
    metrics: OnceLock<RouteMetrics>,
    /// Its `rate_limit`, per calling client.
    pub limit: Option<crate::limits::RouteLimit>,
}

impl RouteEntry {
    pub fn new(route: Arc<Route>, peer: HttpPeer) -> Self {
        let upstream = &route.upstream;
        let host = if upstream.host.contains(':') {
            format!("[{}]", upstream.host)
        } else {
            upstream.host.clone()
        };
        let default_port = if upstream.tls { 443 } else { 80 };
        let authority = if upstream.port == default_port {
            host
        } else {
            format!("{host}:{}", upstream.port)
        };
        let upstream_host = http::HeaderValue::from_str(&authority)
            .unwrap_or_else(|_| http::HeaderValue::from_static("localhost"));
        RouteEntry {
            lower_prefix: route.path_prefix.to_ascii_lowercase(),
            upstream_host,
            limit: crate::limits::RouteLimit::of(&route),
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
    /// Some prefix has an upper-case letter: even an all-lower-case path
    /// needs the case-insensitive cross-check.
    mixed_case_prefixes: bool,
}

impl RouteTable {
    pub fn new(entries: Vec<Arc<RouteEntry>>) -> Self {
        let mixed_case_prefixes = entries
            .iter()
            .any(|e| e.route.path_prefix.bytes().any(|b| b.is_ascii_uppercase()));
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
            mixed_case_prefixes,
        }
    }

    /// The route for a request host (any case, port allowed) and a path in
    /// its routing form ([`route_path`]). A path that a case-insensitive
    /// server would take for another route's is refused: `/open/ADMIN/x`
    /// matches a public `/open/` exactly, but `/open/admin/` at an upstream
    /// that ignores case. A path that matches nothing exactly is unrouted
    /// (404) whatever its case, since nothing is forwarded.
    pub fn find(
        &self,
        host: Option<&str>,
        path: &str,
    ) -> Result<Option<&Arc<RouteEntry>>, PathError> {
        let host = host
            .filter(|_| !self.with_host.is_empty())
            .map(normalize_host)
            .filter(|h| !h.is_empty());
        let exact = self.find_by(host.as_deref(), path, |e| &e.route.path_prefix);
        let Some(exact) = exact else {
            return Ok(None);
        };
        if self.mixed_case_prefixes || path.bytes().any(|b| b.is_ascii_uppercase()) {
            let lower = path.to_ascii_lowercase();
            let folded = self.find_by(host.as_deref(), &lower, |e| &e.lower_prefix);
            if !folded.is_some_and(|f| Arc::ptr_eq(f, exact)) {
                return Err(PathError::AmbiguousCase);
            }
        }
        Ok(Some(exact))
    }

    fn find_by(
        &self,
        host: Option<&str>,
        path: &str,
        prefix: impl Fn(&RouteEntry) -> &str,
    ) -> Option<&Arc<RouteEntry>> {
        if let Some(host) = host {
            let found = self.with_host.iter().find(|e| {
                is_under(path, prefix(e)) && e.route.host.as_ref().is_some_and(|p| p.matches(host))
            });
            if found.is_some() {
                return found;
            }
        }
        self.without_host.iter().find(|e| is_under(path, prefix(e)))
    }

    pub fn len(&self) -> usize {
        self.with_host.len() + self.without_host.len()
    }
}

/// Whether `path` lies under `prefix` segment by segment: `/s` covers `/s`
/// and `/s/x`, never `/s../x` or `/sx`.
fn is_under(path: &str, prefix: &str) -> bool {
    path.starts_with(prefix)
        && (prefix.ends_with('/')
            || path.len() == prefix.len()
            || path.as_bytes()[prefix.len()] == b'/')
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

/// Why a request path cannot be routed unambiguously. Each is a way some
/// upstream reads a path differently from a plain segment-by-segment
/// match, so that a request checked against one route's rules would land
/// on another's resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// A `.` or `..` segment, literal or percent-encoded.
    DotSegment,
    /// `//`: merged into one slash by some servers.
    EmptySegment,
    /// `;`: path parameters, cut off by servlet containers.
    Parameter,
    /// `%2F` or `%5C`: decoded into separators by some servers.
    EncodedSeparator,
    /// `\`: a separator to Windows servers.
    Backslash,
    /// A control character or a byte outside ASCII, raw or encoded control.
    UnsafeByte,
    /// Matching without regard to case picks another route.
    AmbiguousCase,
}

impl PathError {
    pub fn describe(self) -> &'static str {
        match self {
            PathError::DotSegment => "the request path has a `.` or `..` segment",
            PathError::EmptySegment => "the request path has an empty segment (`//`)",
            PathError::Parameter => "the request path has a `;` parameter",
            PathError::EncodedSeparator => {
                "the request path has an encoded slash or backslash (`%2F`, `%5C`)"
            }
            PathError::Backslash => "the request path has a backslash",
            PathError::UnsafeByte => {
                "the request path has a control character or a byte outside ASCII"
            }
            PathError::AmbiguousCase => {
                "the request path matches another route when letter case is ignored"
            }
        }
    }
}

/// The path as routes see it, and as the upstream receives it:
/// percent-encoded unreserved characters decoded (RFC 3986 §6.2.2.2), so
/// `/%70hotos/x` is `/photos/x` here as it is at any upstream. Whatever
/// some upstream would read differently is refused rather than resolved
/// ([`PathError`]): `/photos/../admin/x` would be checked against the
/// `/photos/` route's scopes and then resolved by the upstream to
/// `/admin/x`; `/open//admin/x` merged into `/open/admin/x`.
pub fn route_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.iter().any(|b| *b < 0x21 || *b >= 0x7f) {
        return Err(PathError::UnsafeByte);
    }
    if path.contains('\\') {
        return Err(PathError::Backslash);
    }
    for escape in bytes.windows(3).filter(|w| w[0] == b'%') {
        match (escape[1], escape[2].to_ascii_lowercase()) {
            (b'2', b'f') | (b'5', b'c') => return Err(PathError::EncodedSeparator),
            (b'0' | b'1', _) | (b'7', b'f') => return Err(PathError::UnsafeByte),
            _ => {}
        }
    }
    let normalized = decode_unreserved(path);
    if normalized.contains(';') {
        return Err(PathError::Parameter);
    }
    let mut segments = normalized.split('/').skip(1).peekable();
    while let Some(segment) = segments.next() {
        if segment == "." || segment == ".." {
            return Err(PathError::DotSegment);
        }
        // A trailing slash ends the path with one empty segment; any other
        // empty segment is `//`.
        if segment.is_empty() && segments.peek().is_some() {
            return Err(PathError::EmptySegment);
        }
    }
    Ok(normalized)
}

/// Decodes `%XX` where it stands for an unreserved character; leaves every
/// other escape as it is.
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

/// The request target the upstream gets: the routed path ([`route_path`]),
/// without the route's prefix under `strip_prefix` (`/photos/x` under
/// `/photos/` becomes `/x`), and the query as the client sent it. Always
/// origin-form (RFC 9112 §3.2.1), whatever form the client used.
pub fn upstream_target(route: &Route, path: &str, query: Option<&str>) -> String {
    let rest = if route.strip_prefix {
        path.strip_prefix(route.path_prefix.as_str())
            .unwrap_or(path)
    } else {
        path
    };
    let mut out = String::with_capacity(rest.len() + 1 + query.map_or(0, |q| q.len() + 1));
    if !rest.starts_with('/') {
        out.push('/');
    }
    out.push_str(rest);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_paths() {
        assert_eq!(route_path("/photos/x").unwrap(), "/photos/x");
        assert_eq!(route_path("/photos/").unwrap(), "/photos/");
        assert_eq!(route_path("/").unwrap(), "/");
        assert_eq!(route_path("/%70hotos/%7Ex%41").unwrap(), "/photos/~xA");
        assert_eq!(route_path("/a%2").unwrap(), "/a%2");
        assert_eq!(route_path("/a%25%C3%A9").unwrap(), "/a%25%C3%A9");
        assert_eq!(
            route_path("/a..b/.x/..."),
            Ok(Cow::Borrowed("/a..b/.x/..."))
        );
        for (bad, why) in [
            ("/a/../b", PathError::DotSegment),
            ("/a/./b", PathError::DotSegment),
            ("/a/..", PathError::DotSegment),
            ("/..", PathError::DotSegment),
            ("/a/%2e%2E/b", PathError::DotSegment),
            ("/a/.%2e", PathError::DotSegment),
            ("/a/%2E", PathError::DotSegment),
            ("/a//b", PathError::EmptySegment),
            ("//a", PathError::EmptySegment),
            ("/a//", PathError::EmptySegment),
            ("/a;x=1/b", PathError::Parameter),
            ("/a/..;/b", PathError::Parameter),
            ("/a%2Fb", PathError::EncodedSeparator),
            ("/a%2fb", PathError::EncodedSeparator),
            ("/a%5cb", PathError::EncodedSeparator),
            ("/a\\b", PathError::Backslash),
            ("/a\u{1}b", PathError::UnsafeByte),
            ("/a\u{7f}b", PathError::UnsafeByte),
            ("/a\u{e9}b", PathError::UnsafeByte),
            ("/a%00b", PathError::UnsafeByte),
            ("/a%0Ab", PathError::UnsafeByte),
            ("/a%7fb", PathError::UnsafeByte),
        ] {
            assert_eq!(route_path(bad), Err(why), "{bad}");
        }
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(is_under("/s", "/s"));
        assert!(is_under("/s/x", "/s"));
        assert!(!is_under("/s../admin", "/s"));
        assert!(!is_under("/sx", "/s"));
        assert!(is_under("/photos/x", "/photos/"));
        assert!(!is_under("/photos", "/photos/"));
    }

    #[test]
    fn hosts_are_normalized() {
        assert_eq!(normalize_host("API.Example.com:8080"), "api.example.com");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
        assert_eq!(normalize_host("example.com."), "example.com");
    }
}

//! `[tokens]`, `[gateway]` and `[signing]`: lifetimes, limits, caches,
//! refresh timing, DNS servers, the signing-key schedule.

use super::*;

pub(super) fn token_settings(c: &mut Checker<'_>, t: &file::Tokens) -> TokenSettings {
    let access_token_ttl = c.duration(
        "tokens.access_token_ttl",
        t.access_token_ttl.as_ref(),
        Duration::from_secs(3600),
    );
    let refresh_token_ttl = c.duration(
        "tokens.refresh_token_ttl",
        t.refresh_token_ttl.as_ref(),
        Duration::from_secs(30 * 86_400),
    );
    let refresh_grace = c.duration(
        "tokens.refresh_grace",
        t.refresh_grace.as_ref(),
        Duration::ZERO,
    );
    if access_token_ttl.is_zero() {
        c.report("tokens.access_token_ttl", "must be longer than 0s");
    }
    if refresh_token_ttl.is_zero() {
        c.report("tokens.refresh_token_ttl", "must be longer than 0s");
    }
    let custom_data_max = match t.custom_data_max {
        None => 16_384,
        Some(n) if (2..=1_048_576).contains(&n) => n as usize,
        Some(_) => {
            c.report(
                "tokens.custom_data_max",
                "must be between 2 and 1048576 bytes",
            );
            16_384
        }
    };
    let auth_failures = match t.auth_failures.as_deref() {
        None => Some(Rate {
            count: 30,
            per: Duration::from_secs(60),
        }),
        Some("off") => None,
        Some(text) => Rate::parse(text)
            .map_err(|e| c.report("tokens.auth_failures", format!("{e}, or \"off\"")))
            .ok(),
    };
    let device_code_ttl = c.duration(
        "tokens.device_code_ttl",
        t.device_code_ttl.as_ref(),
        Duration::from_secs(600),
    );
    if !(Duration::from_secs(5)..=Duration::from_secs(86_400)).contains(&device_code_ttl) {
        c.report("tokens.device_code_ttl", "must be between 5s and 24h");
    }
    let device_interval = c.duration(
        "tokens.device_interval",
        t.device_interval.as_ref(),
        Duration::from_secs(5),
    );
    if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&device_interval)
        || device_interval.subsec_nanos() != 0
    {
        c.report(
            "tokens.device_interval",
            "must be whole seconds between 1s and 5m",
        );
    }
    let device_verification_uri = t.device_verification_uri.clone();
    if let Some(uri) = &device_verification_uri {
        let valid = url::Url::parse(uri)
            .is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.fragment().is_none());
        if !valid {
            c.report(
                "tokens.device_verification_uri",
                "must be an absolute http(s) URL without a fragment",
            );
        }
    }
    TokenSettings {
        access_token_ttl,
        refresh_token_ttl,
        refresh_grace,
        custom_data_max,
        auth_failures,
        device_code_ttl,
        device_interval,
        device_verification_uri,
    }
}

pub(super) fn gateway_settings(c: &mut Checker<'_>, g: &file::Gateway) -> GatewaySettings {
    let cache_capacity = match g.cache_capacity {
        None => 100_000,
        Some(n) if (0..=MAX_CACHE_CAPACITY).contains(&n) => n as u64,
        Some(_) => {
            c.report(
                "gateway.cache_capacity",
                format!("must be between 0 and {MAX_CACHE_CAPACITY} entries"),
            );
            0
        }
    };
    let upstream_idle_timeout = c.duration(
        "gateway.upstream_idle_timeout",
        g.upstream_idle_timeout.as_ref(),
        Duration::from_secs(60),
    );
    if upstream_idle_timeout > Duration::from_secs(3600) {
        c.report("gateway.upstream_idle_timeout", "must be at most 1h");
    }
    GatewaySettings {
        refresh_skew: c.duration(
            "gateway.refresh_skew",
            g.refresh_skew.as_ref(),
            Duration::from_secs(60),
        ),
        cache_capacity,
        cache_max_ttl: c.duration(
            "gateway.cache_max_ttl",
            g.cache_max_ttl.as_ref(),
            Duration::from_secs(300),
        ),
        negative_cache_ttl: c.duration(
            "gateway.negative_cache_ttl",
            g.negative_cache_ttl.as_ref(),
            Duration::from_secs(5),
        ),
        ca_file: g
            .ca_file
            .as_deref()
            .map(|f| c.certificate_file("gateway.ca_file", f)),
        authority_timeout: c.duration(
            "gateway.authority_timeout",
            g.authority_timeout.as_ref(),
            Duration::from_secs(10),
        ),
        upstream_connect_timeout: c.duration(
            "gateway.upstream_connect_timeout",
            g.upstream_connect_timeout.as_ref(),
            Duration::from_secs(5),
        ),
        upstream_idle_timeout,
        min_refresh_interval: c.duration(
            "gateway.min_refresh_interval",
            g.min_refresh_interval.as_ref(),
            Duration::from_secs(30),
        ),
        dns_servers: dns_servers(c, g.dns_servers.as_deref()),
    }
}

/// `ip:port` of DNS servers, or `ip` alone for port 53.
pub(super) fn dns_servers(c: &mut Checker<'_>, list: Option<&[String]>) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for (i, text) in list.unwrap_or_default().iter().enumerate() {
        let parsed = text.parse::<SocketAddr>().ok().or_else(|| {
            text.parse::<std::net::IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 53))
        });
        match parsed {
            Some(addr) => out.push(addr),
            None => c.report(
                format!("gateway.dns_servers[{i}]"),
                format!(
                    "`{text}` is not an IP address with an optional port, such as \"127.0.0.1:53\""
                ),
            ),
        }
    }
    out
}

/// Longest `rotate_every`: a key that signs for years is not rotated.
const MAX_ROTATE_EVERY: Duration = Duration::from_secs(365 * 86_400);
/// Longest `jwt_ttl`: a signed token cannot be revoked, so it stays short.
const MAX_JWT_TTL: Duration = Duration::from_secs(86_400);

pub(super) fn signing_settings(c: &mut Checker<'_>, s: &file::Signing) -> SigningSettings {
    let algorithm = match s.algorithm.as_deref() {
        None => SigningAlgorithm::Es256,
        Some(text) => SigningAlgorithm::parse(text).unwrap_or_else(|| {
            c.report(
                "signing.algorithm",
                format!(
                    "`{text}` is not a signing algorithm refgate offers: \"ES256\", \"EdDSA\" or \"RS256\""
                ),
            );
            SigningAlgorithm::Es256
        }),
    };
    let rotate_every = c.duration(
        "signing.rotate_every",
        s.rotate_every.as_ref(),
        Duration::from_secs(30 * 86_400),
    );
    let publish_ahead = c.duration(
        "signing.publish_ahead",
        s.publish_ahead.as_ref(),
        Duration::from_secs(86_400),
    );
    let jwt_ttl = c.duration(
        "signing.jwt_ttl",
        s.jwt_ttl.as_ref(),
        Duration::from_secs(300),
    );
    if rotate_every < Duration::from_secs(60) || rotate_every > MAX_ROTATE_EVERY {
        c.report("signing.rotate_every", "must be between 1m and 365d");
    }
    if publish_ahead < Duration::from_secs(1) {
        c.report("signing.publish_ahead", "must be at least 1s");
    } else if publish_ahead >= rotate_every {
        c.report(
            "signing.publish_ahead",
            "must be shorter than signing.rotate_every (a key is published ahead of its turn, not a whole turn ahead)",
        );
    }
    if jwt_ttl < Duration::from_secs(1) || jwt_ttl > MAX_JWT_TTL {
        c.report("signing.jwt_ttl", "must be between 1s and 1d");
    }
    SigningSettings {
        algorithm,
        rotate_every,
        publish_ahead,
        jwt_ttl,
    }
}

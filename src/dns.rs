//! Host names of upstreams and authorities, resolved while serving: never
//! at configuration load, never with blocking calls. Answers are kept for
//! their records' TTL and asked again after; a name that does not resolve
//! (yet) is an unavailable upstream, not a configuration error, and is
//! asked again on the next request (failures are remembered for at most
//! `NEGATIVE_TTL`). An answer is kept at least `MIN_TTL`. IP literals never
//! come here.
//!
//! The servers are `[gateway] dns_servers`, or the system's
//! (`/etc/resolv.conf`) when that is empty. Lookups run on the control
//! runtime, whichever runtime asks.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;

/// How long a failed lookup is remembered before the name is asked again.
const NEGATIVE_TTL: Duration = Duration::from_secs(1);
/// The shortest time an answer is kept, whatever its TTL (a TTL of 0 would
/// otherwise put a DNS query in front of every request).
const MIN_TTL: Duration = Duration::from_secs(1);
/// The longest one lookup may take, retries included.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// A host name that did not resolve.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot resolve `{host}`: {reason}")]
pub struct Unresolved {
    pub host: String,
    pub reason: String,
}

/// The resolver with its cache of answers.
pub struct Dns {
    resolver: TokioResolver,
    runtime: tokio::runtime::Handle,
    answers: RwLock<HashMap<String, Answer>>,
}

#[derive(Clone)]
struct Answer {
    ips: Arc<[IpAddr]>,
    valid_until: Instant,
}

impl Dns {
    /// A resolver asking `servers` (the system's when empty); lookups run
    /// on `runtime`.
    pub fn new(servers: &[SocketAddr], runtime: tokio::runtime::Handle) -> Self {
        let provider = TokioConnectionProvider::default();
        let mut builder = if servers.is_empty() {
            match TokioResolver::builder_tokio() {
                Ok(builder) => builder,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the system's DNS configuration; no host name will resolve");
                    TokioResolver::builder_with_config(ResolverConfig::new(), provider)
                }
            }
        } else {
            let mut config = ResolverConfig::new();
            for server in servers {
                config.add_name_server(NameServerConfig::new(*server, Protocol::Udp));
                config.add_name_server(NameServerConfig::new(*server, Protocol::Tcp));
            }
            TokioResolver::builder_with_config(config, provider)
        };
        let options: &mut ResolverOpts = builder.options_mut();
        options.negative_max_ttl = Some(NEGATIVE_TTL);
        options.positive_min_ttl = Some(MIN_TTL);
        options.cache_size = 1024;
        options.timeout = Duration::from_secs(2);
        options.attempts = 2;
        Dns {
            resolver: builder.build(),
            runtime,
            answers: RwLock::new(HashMap::new()),
        }
    }

    /// One address of `host` (the first of its records).
    pub async fn resolve(&self, host: &str) -> Result<IpAddr, Unresolved> {
        let ips = self.resolve_all(host).await?;
        ips.first().copied().ok_or_else(|| Unresolved {
            host: host.to_string(),
            reason: "no address records".to_string(),
        })
    }

    /// Every address of `host`, from the cache while its TTL lasts.
    pub async fn resolve_all(&self, host: &str) -> Result<Arc<[IpAddr]>, Unresolved> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Arc::from([ip]));
        }
        let now = Instant::now();
        if let Some(answer) = self
            .answers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
            .filter(|a| a.valid_until > now)
        {
            return Ok(answer.ips.clone());
        }
        let unresolved = |reason: String| Unresolved {
            host: host.to_string(),
            reason,
        };
        let resolver = self.resolver.clone();
        let name = host.to_string();
        let lookup = self.runtime.spawn(async move {
            tokio::time::timeout(LOOKUP_TIMEOUT, resolver.lookup_ip(name)).await
        });
        let lookup = match lookup.await {
            Ok(Ok(Ok(lookup))) => lookup,
            Ok(Ok(Err(e))) => return Err(unresolved(e.to_string())),
            Ok(Err(_)) => return Err(unresolved("the DNS servers did not answer in time".into())),
            Err(_) => return Err(unresolved("the lookup was cancelled".into())),
        };
        let ips: Arc<[IpAddr]> = lookup.iter().collect();
        if ips.is_empty() {
            return Err(unresolved("no address records".into()));
        }
        let answer = Answer {
            ips: ips.clone(),
            valid_until: lookup.valid_until().max(now + MIN_TTL),
        };
        let mut answers = self.answers.write().unwrap_or_else(|e| e.into_inner());
        if answers.len() > 4096 {
            answers.retain(|_, a| a.valid_until > now);
        }
        answers.insert(host.to_string(), answer);
        Ok(ips)
    }
}

/// The resolver for the HTTP client that calls authorities (and JWKS
/// URLs).
pub struct ForHttpClient(pub Arc<Dns>);

impl reqwest::dns::Resolve for ForHttpClient {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let dns = self.0.clone();
        Box::pin(async move {
            let ips = dns.resolve_all(name.as_str()).await?;
            let addrs: reqwest::dns::Addrs = Box::new(
                ips.iter()
                    .map(|ip| SocketAddr::new(*ip, 0))
                    .collect::<Vec<_>>()
                    .into_iter(),
            );
            Ok(addrs)
        })
    }
}

/// The host names a configuration names (upstreams and authorities) that
/// do not resolve from here, with the key that names each: `refgate check`
/// warns about them (they may resolve where refgate serves, or later).
pub fn unresolvable(config: &crate::config::Config) -> Vec<(String, Unresolved)> {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    let dns = Dns::new(&config.gateway.dns_servers, runtime.handle().clone());
    let mut names: Vec<(String, String)> = Vec::new();
    for route in &config.routes {
        if route.upstream.addr.is_none() {
            names.push((
                format!("route `{}` upstream", route.name),
                route.upstream.host.clone(),
            ));
        }
    }
    let mut authorities: Vec<_> = config.authorities.values().collect();
    authorities.sort_by(|a, b| a.name.cmp(&b.name));
    for authority in authorities {
        if let Some(host) = url::Url::parse(&authority.token_endpoint)
            .ok()
            .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_string()))
        {
            names.push((
                format!("authority `{}` token_endpoint", authority.name),
                host,
            ));
        }
    }
    runtime.block_on(async {
        let mut out = Vec::new();
        for (key, host) in names {
            if let Err(e) = dns.resolve(&host).await {
                out.push((key, e));
            }
        }
        out
    })
}

//! Turns the parsed file into a [`Config`]: parses durations, resolves
//! addresses and paths, reads secrets from the environment, and collects
//! every problem with the key it belongs to.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::file;
use super::*;
use crate::crypto::{DataKey, DataKeys, Random, SecretHash};

/// Problems found, as (key path, message).
type Problems = Vec<(String, String)>;

/// Most cached token lookups: at a few hundred bytes an entry, a hundred
/// million is tens of gigabytes already.
const MAX_CACHE_CAPACITY: i64 = 100_000_000;

struct Checker<'a> {
    base: &'a Path,
    mode: LoadMode,
    problems: Problems,
}

impl Checker<'_> {
    fn report(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push((key.into(), message.into()));
    }

    fn duration(&mut self, key: &str, value: Option<&String>, default: Duration) -> Duration {
        match value.map(|v| parse_duration(v)) {
            None => default,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                self.report(key, e);
                default
            }
        }
    }

    fn address(&mut self, key: &str, value: &str) -> Option<SocketAddr> {
        match value.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(addr)) => Some(addr),
            _ => {
                self.report(
                    key,
                    format!("`{value}` is not an address such as \"127.0.0.1:8080\""),
                );
                None
            }
        }
    }

    fn path(&self, value: &str) -> PathBuf {
        let p = Path::new(value);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    fn existing_file(&mut self, key: &str, value: &str) -> PathBuf {
        let path = self.path(value);
        if !path.is_file() {
            self.report(key, format!("file `{}` does not exist", path.display()));
        }
        path
    }

    /// An existing PEM file of certificates that parse (a CA file, a
    /// certificate chain).
    fn certificate_file(&mut self, key: &str, value: &str) -> PathBuf {
        let path = self.existing_file(key, value);
        if path.is_file() {
            if let Err(e) = super::pem::certificates(&path) {
                self.report(key, e);
            }
        }
        path
    }

    /// An existing PEM file holding a private key.
    fn key_file(&mut self, key: &str, value: &str) -> PathBuf {
        let path = self.existing_file(key, value);
        if path.is_file() {
            if let Err(e) = super::pem::private_key(&path) {
                self.report(key, e);
            }
        }
        path
    }

    fn env_secret(&mut self, key: &str, name: &str) -> Option<String> {
        match std::env::var(name) {
            Ok(v) if !v.is_empty() => Some(v),
            _ => {
                self.report(key, format!("environment variable `{name}` is not set"));
                None
            }
        }
    }

    /// A name or other word that cannot hold whitespace or control
    /// characters: a trailing tab would otherwise make a name that nothing
    /// ever matches.
    fn word(&mut self, key: &str, value: &str) -> bool {
        if value.is_empty() {
            self.report(key, "must not be empty");
            return false;
        }
        if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.report(
                key,
                format!("{value:?} has whitespace or control characters"),
            );
            return false;
        }
        true
    }

    fn http_url(&mut self, key: &str, value: &str) -> Option<url::Url> {
        // The URL parser silently drops tabs, newlines and surrounding
        // spaces; a value holding them is a mistake.
        if !self.word(key, value) {
            return None;
        }
        match url::Url::parse(value) {
            Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => {
                Some(u)
            }
            _ => {
                self.report(key, format!("`{value}` is not an http:// or https:// URL"));
                None
            }
        }
    }
}

pub(super) fn validate(
    file: file::File,
    base: &Path,
    source: &Path,
    mode: LoadMode,
) -> Result<Config, Problems> {
    let mut c = Checker {
        base,
        mode,
        problems: Vec::new(),
    };

    // Kept exactly as written: RFC 8414 wants the metadata `issuer` identical.
    let issuer = file.issuer.clone();
    c.http_url("issuer", &issuer);

    let listen = Listen {
        proxy: file
            .listen
            .proxy
            .as_deref()
            .and_then(|a| c.address("listen.proxy", a)),
        token_service: c
            .address("listen.token_service", &file.listen.token_service)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
        metrics: file
            .listen
            .metrics
            .as_deref()
            .and_then(|a| c.address("listen.metrics", a)),
        tls: file.listen.tls.as_ref().map(|t| ProxyTls {
            cert: c.certificate_file("listen.tls.cert", &t.cert),
            key: c.key_file("listen.tls.key", &t.key),
        }),
        max_connections: match file.listen.max_connections {
            None => 8192,
            Some(n) if (1..=1_000_000).contains(&n) => n as usize,
            Some(_) => {
                c.report("listen.max_connections", "must be between 1 and 1000000");
                8192
            }
        },
        request_head_timeout: c.duration(
            "listen.request_head_timeout",
            file.listen.request_head_timeout.as_ref(),
            Duration::from_secs(10),
        ),
        keepalive_timeout: c.duration(
            "listen.keepalive_timeout",
            file.listen.keepalive_timeout.as_ref(),
            Duration::from_secs(60),
        ),
    };
    if listen.request_head_timeout.is_zero() {
        c.report("listen.request_head_timeout", "must be longer than 0s");
    }
    if listen.keepalive_timeout < Duration::from_secs(1)
        || listen.keepalive_timeout > Duration::from_secs(3600)
    {
        c.report("listen.keepalive_timeout", "must be between 1s and 1h");
    }

    let store = store_config(&mut c, &file.store);
    let tokens = token_settings(&mut c, &file.tokens);
    let gateway = gateway_settings(&mut c, &file.gateway);
    let clients = clients(&mut c, &file.clients, &tokens);
    let trusted_issuers = trusted_issuers(&mut c, &file.trusted_issuers);
    check_exchange_sources(&mut c, &file.clients, &clients, &trusted_issuers);
    let authorities = authorities(&mut c, &file.authorities);
    let routes = routes(&mut c, &file.routes, &clients, &authorities);

    if !c.problems.is_empty() {
        return Err(c.problems);
    }
    Ok(Config {
        source: source.to_path_buf(),
        issuer,
        listen,
        store: store.expect("no problems means the store section was valid"),
        tokens,
        gateway,
        clients,
        trusted_issuers,
        authorities,
        routes,
    })
}

fn store_config(c: &mut Checker<'_>, s: &file::Store) -> Option<StoreConfig> {
    let url = if let Some(rest) = s.url.strip_prefix("sqlite://") {
        if rest.is_empty() {
            c.report("store.url", "the SQLite URL names no file");
            None
        } else {
            Some(StoreUrl::Sqlite(c.path(rest)))
        }
    } else if s.url.starts_with("postgres://") || s.url.starts_with("postgresql://") {
        Some(StoreUrl::Postgres(Secret::new(s.url.clone())))
    } else {
        c.report("store.url", "must start with sqlite:// or postgres://");
        None
    };

    let given = [
        s.data_key.is_some(),
        s.data_key_env.is_some(),
        s.data_key_file.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    if given != 1 {
        c.report(
            "store",
            "set exactly one of data_key, data_key_env or data_key_file",
        );
        return None;
    }
    let (key_name, encoded) = if let Some(inline) = &s.data_key {
        ("store.data_key", Some(inline.clone()))
    } else if let Some(name) = &s.data_key_env {
        (
            "store.data_key_env",
            c.env_secret("store.data_key_env", name),
        )
    } else {
        let path = c.path(s.data_key_file.as_deref().unwrap_or_default());
        // A new key for existing data would make that data unreadable.
        let data_exists = match &url {
            Some(StoreUrl::Sqlite(db)) => db.exists(),
            Some(StoreUrl::Postgres(_)) => true,
            None => false,
        };
        ("store.data_key_file", data_key_file(c, &path, data_exists))
    };
    let key = match encoded {
        Some(text) => match DataKey::from_base64(&text) {
            Some(k) => Some(k),
            None => {
                c.report(
                    key_name,
                    "the data key must be standard base64 of exactly 32 bytes (see `refgate key generate`)",
                );
                None
            }
        },
        None => None,
    };
    let previous = previous_data_keys(c, s);
    let data_keys = match (key, previous) {
        (Some(current), Some(mut previous)) => {
            // The current key listed again changes nothing.
            previous.retain(|p| p.id() != current.id());
            Some(Arc::new(DataKeys::new(current, previous)))
        }
        _ => None,
    };
    let max_connections = match s.max_connections {
        Some(n) if !(1..=10_000).contains(&n) => {
            c.report("store.max_connections", "must be between 1 and 10000");
            1
        }
        Some(n) => n,
        None => 16,
    };
    Some(StoreConfig {
        url: url?,
        data_keys: data_keys?,
        max_connections,
    })
}

/// Reads the key file; when serving, it is missing and the store is new,
/// writes a fresh key readable by the owner only.
fn data_key_file(c: &mut Checker<'_>, path: &Path, data_exists: bool) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => check_private(c, path).then_some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && data_exists => {
            c.report(
                "store.data_key_file",
                format!(
                    "`{}` is missing but the store already holds data; restore the key \
                     (a new one could not open the stored custom data)",
                    path.display()
                ),
            );
            None
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && c.mode == LoadMode::Check => {
            // `serve` creates it; a valid key is what it will hold.
            Some(Random::default().data_key_base64())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Random::default().data_key_base64();
            match write_private(path, &key) {
                Ok(()) => Some(key),
                Err(e) => {
                    c.report(
                        "store.data_key_file",
                        format!("cannot create `{}`: {e}", path.display()),
                    );
                    None
                }
            }
        }
        Err(e) => {
            c.report(
                "store.data_key_file",
                format!("cannot read `{}`: {e}", path.display()),
            );
            None
        }
    }
}

/// The older keys of a rotation, inline and from the environment; `None`
/// when one of them is not a key (each is reported by its index).
fn previous_data_keys(c: &mut Checker<'_>, s: &file::Store) -> Option<Vec<DataKey>> {
    let mut keys = Vec::new();
    let mut all_valid = true;
    let not_a_key = "not standard base64 of exactly 32 bytes (see `refgate key generate`)";
    for (i, text) in s.previous_data_keys.iter().flatten().enumerate() {
        match DataKey::from_base64(text) {
            Some(k) => keys.push(k),
            None => {
                c.report(format!("store.previous_data_keys[{i}]"), not_a_key);
                all_valid = false;
            }
        }
    }
    for (i, name) in s.previous_data_keys_env.iter().flatten().enumerate() {
        let key_name = format!("store.previous_data_keys_env[{i}]");
        match c.env_secret(&key_name, name) {
            Some(text) => match DataKey::from_base64(&text) {
                Some(k) => keys.push(k),
                None => {
                    c.report(
                        key_name,
                        format!("environment variable `{name}` is {not_a_key}"),
                    );
                    all_valid = false;
                }
            },
            None => all_valid = false,
        }
    }
    all_valid.then_some(keys)
}

/// Refuses a key file that group or others may read or write: the data key
/// opens every grant's custom data.
fn check_private(c: &mut Checker<'_>, path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let mode = match std::fs::metadata(path) {
        Ok(m) => m.permissions().mode() & 0o777,
        Err(e) => {
            c.report(
                "store.data_key_file",
                format!("cannot read `{}`: {e}", path.display()),
            );
            return false;
        }
    };
    if mode & 0o077 != 0 {
        c.report(
            "store.data_key_file",
            format!(
                "`{path}` is accessible by group or others (mode {mode:04o}); the data key \
                 must be readable by refgate's user only: run `chmod 600 {path}`",
                path = path.display()
            ),
        );
        return false;
    }
    true
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        // Owner only, like the SQLite directory it usually shares.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(content.as_bytes())?;
    f.write_all(b"\n")
}

fn token_settings(c: &mut Checker<'_>, t: &file::Tokens) -> TokenSettings {
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
    TokenSettings {
        access_token_ttl,
        refresh_token_ttl,
        refresh_grace,
        custom_data_max,
    }
}

fn gateway_settings(c: &mut Checker<'_>, g: &file::Gateway) -> GatewaySettings {
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
        min_refresh_interval: c.duration(
            "gateway.min_refresh_interval",
            g.min_refresh_interval.as_ref(),
            Duration::from_secs(30),
        ),
        dns_servers: dns_servers(c, g.dns_servers.as_deref()),
    }
}

/// `ip:port` of DNS servers, or `ip` alone for port 53.
fn dns_servers(c: &mut Checker<'_>, list: Option<&[String]>) -> Vec<SocketAddr> {
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

/// A scope token as RFC 6749 §3.3 allows it.
fn valid_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

fn clients(
    c: &mut Checker<'_>,
    list: &[file::Client],
    tokens: &TokenSettings,
) -> HashMap<String, Arc<Client>> {
    let mut out = HashMap::new();
    for (i, f) in list.iter().enumerate() {
        let key = |k: &str| format!("clients[{i}].{k}");
        if c.word(&key("id"), &f.id) && f.id.contains(':') {
            c.report(key("id"), "must not contain ':'");
        }
        let secret = SecretHash::parse(&f.secret_hash).unwrap_or_else(|| {
            c.report(
                key("secret_hash"),
                "must be \"sha256:\" followed by 64 hex digits (see `refgate secret hash`)",
            );
            SecretHash::unmatchable()
        });
        let mut grant_types = HashSet::new();
        for (j, g) in f.grant_types.iter().enumerate() {
            match GrantType::parse(g) {
                Some(g) => {
                    grant_types.insert(g);
                }
                None => c.report(
                    format!("clients[{i}].grant_types[{j}]"),
                    format!("unknown grant type `{g}`"),
                ),
            }
        }
        for (j, s) in f.scopes.iter().enumerate() {
            if !valid_scope_token(s) {
                c.report(
                    format!("clients[{i}].scopes[{j}]"),
                    format!("`{s}` is not a valid scope"),
                );
            }
        }
        if !f.allowed_issuers.is_empty() && !grant_types.contains(&GrantType::ArbitraryToken) {
            c.report(
                key("allowed_issuers"),
                "only matters with the arbitrary_token grant type",
            );
        }
        let access_token_ttl = c.duration(
            &key("access_token_ttl"),
            f.access_token_ttl.as_ref(),
            tokens.access_token_ttl,
        );
        let refresh_token_ttl = c.duration(
            &key("refresh_token_ttl"),
            f.refresh_token_ttl.as_ref(),
            tokens.refresh_token_ttl,
        );
        let mut exchange_from = ExchangeFrom::default();
        for entry in f.exchange_from.iter().flatten() {
            if entry == "*" {
                exchange_from.any_client = true;
            } else if entry.contains("://") {
                exchange_from.issuers.push(entry.clone());
            } else {
                exchange_from.clients.push(entry.clone());
            }
        }
        if f.exchange_from.is_some() && !grant_types.contains(&GrantType::TokenExchange) {
            c.report(
                key("exchange_from"),
                "only matters with the token-exchange grant type",
            );
        }
        let client = Client {
            id: f.id.clone(),
            secret,
            grant_types,
            scopes: f.scopes.clone(),
            introspect: f.introspect,
            reveal_custom: f.reveal_custom,
            mutate: f.mutate,
            allowed_issuers: f.allowed_issuers.clone(),
            audiences: f.audiences.clone(),
            exchange_from,
            access_token_ttl,
            refresh_token_ttl,
        };
        if out.insert(f.id.clone(), Arc::new(client)).is_some() {
            c.report(key("id"), format!("client `{}` is defined twice", f.id));
        }
    }
    out
}

/// Every `exchange_from` entry names a configured client or trusted issuer:
/// a typo would silently refuse every exchange it was meant to allow.
fn check_exchange_sources(
    c: &mut Checker<'_>,
    list: &[file::Client],
    clients: &HashMap<String, Arc<Client>>,
    issuers: &[Arc<TrustedIssuer>],
) {
    for (i, f) in list.iter().enumerate() {
        for (j, entry) in f.exchange_from.iter().flatten().enumerate() {
            if entry.contains("://") {
                // Allowed but inert until the issuer is trusted: an issuer
                // may be taken out of [[trusted_issuers]] for a while.
                if !issuers.iter().any(|t| t.issuer == *entry) {
                    tracing::warn!(
                        key = %format!("clients[{i}].exchange_from[{j}]"),
                        issuer = %entry,
                        "exchange_from names an issuer that is not in [[trusted_issuers]]"
                    );
                }
                continue;
            }
            if entry != "*" && !clients.contains_key(entry) {
                c.report(
                    format!("clients[{i}].exchange_from[{j}]"),
                    format!("`{entry}` is neither \"*\", a [[clients]] id nor an issuer URL"),
                );
            }
        }
    }
}

fn trusted_issuers(c: &mut Checker<'_>, list: &[file::TrustedIssuer]) -> Vec<Arc<TrustedIssuer>> {
    let mut out = Vec::new();
    for (i, f) in list.iter().enumerate() {
        let key = |k: &str| format!("trusted_issuers[{i}].{k}");
        let jwks = match (&f.jwks_uri, &f.jwks_file) {
            (Some(uri), None) => {
                if let Some(u) = c.http_url(&key("jwks_uri"), uri) {
                    warn_plain_http(&u, &key("jwks_uri"));
                }
                JwksSource::Uri(uri.clone())
            }
            (None, Some(file)) => JwksSource::File(c.existing_file(&key("jwks_file"), file)),
            _ => {
                c.report(
                    format!("trusted_issuers[{i}]"),
                    "set exactly one of jwks_uri or jwks_file",
                );
                continue;
            }
        };
        if f.audiences.is_empty() {
            c.report(key("audiences"), "list at least one accepted audience");
        }
        if f.issuer.is_empty() {
            c.report(key("issuer"), "must not be empty");
        }
        out.push(Arc::new(TrustedIssuer {
            issuer: f.issuer.clone(),
            jwks,
            audiences: f.audiences.clone(),
        }));
    }
    out
}

fn warn_plain_http(url: &url::Url, key: &str) {
    let loopback = match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    if url.scheme() == "http" && !loopback {
        tracing::warn!(key, host = %url.host_str().unwrap_or(""), "plain http:// to a host that is not loopback");
    }
}

fn authorities(c: &mut Checker<'_>, list: &[file::Authority]) -> HashMap<String, Arc<Authority>> {
    let mut out = HashMap::new();
    for (i, f) in list.iter().enumerate() {
        let key = |k: &str| format!("authorities[{i}].{k}");
        if f.name == "self" {
            c.report(
                key("name"),
                "`self` is reserved for refgate's own token service",
            );
        }
        c.word(&key("name"), &f.name);
        c.word(&key("client_id"), &f.client_id);
        if let Some(u) = c.http_url(&key("token_endpoint"), &f.token_endpoint) {
            warn_plain_http(&u, &key("token_endpoint"));
        }
        let secret = match (&f.client_secret, &f.client_secret_env) {
            (Some(s), None) => Some(s.clone()),
            (None, Some(name)) => c.env_secret(&key("client_secret_env"), name),
            _ => {
                c.report(
                    format!("authorities[{i}]"),
                    "set exactly one of client_secret or client_secret_env",
                );
                None
            }
        };
        let auth_method = match f.auth_method.as_deref() {
            None | Some("client_secret_basic") => AuthMethod::ClientSecretBasic,
            Some("client_secret_post") => AuthMethod::ClientSecretPost,
            Some(other) => {
                c.report(
                    key("auth_method"),
                    format!("`{other}` is neither client_secret_basic nor client_secret_post"),
                );
                AuthMethod::ClientSecretBasic
            }
        };
        let authority = Authority {
            name: f.name.clone(),
            token_endpoint: f.token_endpoint.clone(),
            client_id: f.client_id.clone(),
            client_secret: Secret::new(secret.unwrap_or_default()),
            auth_method,
        };
        if out.insert(f.name.clone(), Arc::new(authority)).is_some() {
            c.report(
                key("name"),
                format!("authority `{}` is defined twice", f.name),
            );
        }
    }
    out
}

fn routes(
    c: &mut Checker<'_>,
    list: &[file::Route],
    clients: &HashMap<String, Arc<Client>>,
    _authorities: &HashMap<String, Arc<Authority>>,
) -> Vec<Arc<Route>> {
    let mut out = Vec::new();
    let mut names = HashSet::new();
    for (i, f) in list.iter().enumerate() {
        let key = |k: &str| format!("routes[{i}].{k}");
        if c.word(&key("name"), &f.name) && !names.insert(f.name.clone()) {
            c.report(
                key("name"),
                format!("route name `{}` is used twice", f.name),
            );
        }
        if !f.path_prefix.starts_with('/') {
            c.report(key("path_prefix"), "must start with '/'");
        } else if c.word(&key("path_prefix"), &f.path_prefix) {
            // A prefix is matched against request paths in their routing
            // form; one that is not in that form can never match.
            match crate::gateway::route_path(&f.path_prefix) {
                Ok(p) if p == f.path_prefix => {}
                Ok(p) => c.report(
                    key("path_prefix"),
                    format!(
                        "write it as `{p}` (percent-encoded letters, digits and -._~ are decoded)"
                    ),
                ),
                Err(e) => c.report(key("path_prefix"), e.describe()),
            }
        }
        for (j, s) in f.required_scopes.iter().enumerate() {
            if !valid_scope_token(s) {
                c.report(
                    format!("routes[{i}].required_scopes[{j}]"),
                    format!("{s:?} is not a valid scope"),
                );
            }
        }
        let host = f.host.as_deref().map(|h| {
            c.word(&key("host"), h);
            let h = h.to_ascii_lowercase();
            match h.strip_prefix("*.") {
                Some(rest) if !rest.is_empty() && !rest.contains('*') => {
                    HostPattern::Subdomains(format!(".{rest}"))
                }
                _ if h.contains('*') || h.is_empty() => {
                    c.report(key("host"), "must be a host name or \"*.domain\"");
                    HostPattern::Exact(h)
                }
                _ => HostPattern::Exact(h),
            }
        });
        let upstream = upstream(c, &key("upstream"), &f.upstream);
        let public = match f.auth.as_deref() {
            None | Some("token") => false,
            Some("none") => true,
            Some(other) => {
                c.report(
                    key("auth"),
                    format!("`{other}` must be \"none\" or \"token\""),
                );
                false
            }
        };
        let access = match (public, &f.credential, &f.exchange) {
            (true, None, None) => RouteAccess::Public,
            (true, _, _) => {
                c.report(
                    key("auth"),
                    "a public route (auth = \"none\") takes no credential or exchange",
                );
                RouteAccess::Public
            }
            (false, Some(name), None) => {
                c.word(&key("credential"), name);
                RouteAccess::Credential(name.clone())
            }
            (false, None, Some(x)) => {
                match clients.get(&x.client) {
                    Some(cl) if cl.may_use(GrantType::TokenExchange) => {
                        for (j, s) in x.scopes.iter().enumerate() {
                            if !cl.has_scope(s) {
                                c.report(
                                    format!("routes[{i}].exchange.scopes[{j}]"),
                                    format!("client `{}` may not obtain scope `{s}`", x.client),
                                );
                            }
                        }
                        let mut uncovered: Vec<&str> = clients
                            .values()
                            .filter(|other| {
                                f.required_scopes.iter().all(|s| other.has_scope(s))
                                    && !cl.exchange_from.allows_client(&cl.id, &other.id)
                            })
                            .map(|other| other.id.as_str())
                            .collect();
                        uncovered.sort_unstable();
                        if !uncovered.is_empty() {
                            c.report(
                                key("exchange.client"),
                                format!(
                                    "tokens of {} can reach this route, but client `{}` may not \
                                     exchange them: add them (or \"*\") to its exchange_from",
                                    uncovered
                                        .iter()
                                        .map(|id| format!("`{id}`"))
                                        .collect::<Vec<_>>()
                                        .join(", "),
                                    x.client
                                ),
                            );
                        }
                    }
                    Some(_) => c.report(
                        key("exchange.client"),
                        format!("client `{}` lacks the token-exchange grant type", x.client),
                    ),
                    None => c.report(
                        key("exchange.client"),
                        format!("no [[clients]] entry `{}`", x.client),
                    ),
                }
                RouteAccess::Exchange(RouteExchange {
                    client: x.client.clone(),
                    scopes: x.scopes.clone(),
                    audience: x.audience.clone(),
                })
            }
            (false, _, _) => {
                c.report(
                    format!("routes[{i}]"),
                    "set exactly one of credential or [routes.exchange] (or auth = \"none\")",
                );
                RouteAccess::Public
            }
        };
        let ca_file = f
            .ca_file
            .as_deref()
            .map(|p| c.certificate_file(&key("ca_file"), p));
        if f.audience
            .as_deref()
            .is_some_and(|a| a.trim().is_empty() || a.chars().any(char::is_control))
        {
            c.report(
                key("audience"),
                "must be a non-empty audience without control characters",
            );
        }
        if public && f.audience.is_some() {
            c.report(
                key("audience"),
                "a public route (auth = \"none\") checks no token",
            );
        }
        if let Some(upstream) = upstream {
            out.push(Arc::new(Route {
                name: f.name.clone(),
                path_prefix: f.path_prefix.clone(),
                host,
                upstream,
                strip_prefix: f.strip_prefix,
                required_scopes: f.required_scopes.clone(),
                access,
                ca_file,
                audience: f.audience.clone(),
                preserve_host: f.preserve_host,
            }));
        }
    }
    out
}

fn upstream(c: &mut Checker<'_>, key: &str, value: &str) -> Option<Upstream> {
    let url = c.http_url(key, value)?;
    if url.path() != "/" || url.query().is_some() {
        c.report(key, "an upstream is scheme://host[:port] with no path");
        return None;
    }
    warn_plain_http(&url, key);
    let host = url.host_str()?.trim_matches(['[', ']']).to_string();
    let port = url.port_or_known_default()?;
    // A literal address is used as it is; a name is resolved while serving
    // (never here: it may not resolve yet, and resolving blocks).
    let addr = host
        .parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, port));
    Some(Upstream {
        tls: url.scheme() == "https",
        host,
        port,
        addr,
    })
}

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

mod connect;
mod parties;
mod routes;
mod settings;
mod store;
mod tenants;

use parties::*;
use routes::*;
use settings::*;
use store::*;

/// Problems found, as (key path, message).
type Problems = Vec<(String, String)>;

/// Most cached token lookups: at a few hundred bytes an entry, a hundred
/// million is tens of gigabytes already.
const MAX_CACHE_CAPACITY: i64 = 100_000_000;

struct Checker<'a> {
    base: &'a Path,
    mode: LoadMode,
    problems: Problems,
    /// Put before every key reported (`tenants[2].` inside a tenant).
    prefix: String,
    /// The tenant whose tables are being read (empty: the top level).
    tenant: String,
}

impl Checker<'_> {
    fn report(&mut self, key: impl Into<String>, message: impl Into<String>) {
        let key = format!("{}{}", self.prefix, key.into());
        self.problems.push((key, message.into()));
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
        self.pem_file(key, value, |p| super::pem::certificates(p).map(drop))
    }

    /// An existing PEM file holding a private key.
    fn key_file(&mut self, key: &str, value: &str) -> PathBuf {
        self.pem_file(key, value, super::pem::private_key)
    }

    /// An existing file that `check` reads as `serve` will.
    fn pem_file(
        &mut self,
        key: &str,
        value: &str,
        check: impl Fn(&Path) -> Result<(), String>,
    ) -> PathBuf {
        let path = self.existing_file(key, value);
        if path.is_file() {
            if let Err(e) = check(&path) {
                self.report(key, e);
            }
        }
        path
    }

    /// `rate_limit` and `rate_limit_burst` of one table.
    fn rate_limit(
        &mut self,
        key: impl Fn(&str) -> String,
        rate: Option<&str>,
        burst: Option<i64>,
    ) -> Option<RateLimit> {
        let Some(rate) = rate else {
            if burst.is_some() {
                self.report(key("rate_limit_burst"), "needs a rate_limit");
            }
            return None;
        };
        let rate = match Rate::parse(rate) {
            Ok(rate) => rate,
            Err(e) => {
                self.report(key("rate_limit"), e);
                return None;
            }
        };
        let burst = match burst {
            None => rate.count,
            Some(n) if (1..=1_000_000).contains(&n) => n as u32,
            Some(_) => {
                self.report(key("rate_limit_burst"), "must be between 1 and 1000000");
                return None;
            }
        };
        Some(RateLimit { rate, burst })
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
        prefix: String::new(),
        tenant: String::new(),
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
        admin: file
            .listen
            .admin
            .as_deref()
            .and_then(|a| c.address("listen.admin", a)),
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
    let signing = signing_settings(&mut c, &file.signing);
    let audit_log = file
        .telemetry
        .audit_log
        .as_deref()
        .and_then(|v| audit_target(&mut c, v));
    let tracing = tracing_settings(&mut c, &file.telemetry);
    let clients = clients(&mut c, &file.clients, &tokens);
    let trusted_issuers = trusted_issuers(&mut c, &file.trusted_issuers);
    check_exchange_sources(&mut c, &file.clients, &clients, &trusted_issuers);
    let authorities = authorities(&mut c, &file.authorities);
    let connect = connect::settings(&mut c, file.connect.as_ref(), &authorities);
    let tenant_parts = tenants::read(&mut c, &file, &issuer, connect.as_ref());
    let mut parties = HashMap::new();
    parties.insert(String::new(), (&clients, &authorities));
    for t in &tenant_parts {
        parties.insert(t.name.clone(), (&t.clients, &t.authorities));
    }
    let routes = routes(&mut c, &file.routes, &parties);

    if !c.problems.is_empty() {
        return Err(c.problems);
    }
    let top = Config {
        source: source.to_path_buf(),
        issuer,
        listen,
        store: store.expect("no problems means the store section was valid"),
        tokens,
        gateway,
        signing,
        audit_log,
        tracing,
        clients,
        trusted_issuers,
        authorities,
        routes,
        connect,
        tenant: String::new(),
        tenants: HashMap::new(),
    };
    Ok(tenants::attach(top, tenant_parts))
}

/// `[telemetry] otlp_endpoint` (an http(s) base URL without query, fragment
/// or credentials) and `service_name` (default `refgate`).
fn tracing_settings(
    c: &mut Checker<'_>,
    telemetry: &file::Telemetry,
) -> Option<crate::config::TracingSettings> {
    let service_name = telemetry.service_name.as_deref().unwrap_or("refgate");
    if service_name.is_empty()
        || service_name.len() > 200
        || service_name.chars().any(char::is_control)
    {
        c.report(
            "telemetry.service_name",
            "must be 1 to 200 characters, none of them a control character",
        );
    }
    let value = telemetry.otlp_endpoint.as_deref()?;
    const KEY: &str = "telemetry.otlp_endpoint";
    let url = c.http_url(KEY, value)?;
    if url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        c.report(
            KEY,
            "must be a base URL without query, fragment or credentials (refgate posts to <otlp_endpoint>/v1/traces)",
        );
        return None;
    }
    Some(crate::config::TracingSettings {
        traces_url: format!("{}/v1/traces", url.as_str().trim_end_matches('/')),
        service_name: service_name.to_string(),
    })
}

/// `[telemetry] audit_log`: `"stderr"`, or a file whose directory exists
/// (the file itself is created when refgate starts).
fn audit_target(c: &mut Checker<'_>, value: &str) -> Option<AuditTarget> {
    const KEY: &str = "telemetry.audit_log";
    if value == "stderr" {
        return Some(AuditTarget::Stderr);
    }
    if value.is_empty() || value.chars().any(char::is_control) {
        c.report(KEY, "must be \"stderr\" or the path of a file");
        return None;
    }
    let path = c.path(value);
    if path.is_dir() {
        c.report(
            KEY,
            format!("`{}` is a directory, not a file", path.display()),
        );
        return None;
    }
    match path.parent() {
        Some(dir) if dir.is_dir() => Some(AuditTarget::File(path)),
        _ => {
            c.report(
                KEY,
                format!("the directory of `{}` does not exist", path.display()),
            );
            None
        }
    }
}

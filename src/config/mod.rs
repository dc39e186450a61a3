//! Configuration: the TOML file (`file`), its validation into the internal
//! [`Config`] (`validate`), and problem reporting with file, line and key.
//! Only the validated [`Config`] is ever seen by the request path.

mod client_key;
mod file;
mod locate;
pub mod pem;
mod validate;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::crypto::{DataKeys, SecretHash};

pub use client_key::ClientKey;

/// A validated configuration.
#[derive(Debug)]
pub struct Config {
    /// The file it was read from.
    pub source: PathBuf,
    /// The token service's public base URL, exactly as configured.
    pub issuer: String,
    pub listen: Listen,
    pub store: StoreConfig,
    pub tokens: TokenSettings,
    pub gateway: GatewaySettings,
    pub signing: SigningSettings,
    /// Where the audit trail goes (`None`: off).
    pub audit_log: Option<AuditTarget>,
    /// OpenTelemetry trace export (`None`: off).
    pub tracing: Option<TracingSettings>,
    pub clients: HashMap<String, Arc<Client>>,
    pub trusted_issuers: Vec<Arc<TrustedIssuer>>,
    pub authorities: HashMap<String, Arc<Authority>>,
    pub routes: Vec<Arc<Route>>,
    /// `[connect]`: present when any authority is connectable.
    pub connect: Option<ConnectSettings>,
    /// The tenant this configuration serves: empty for the top level, else
    /// a `[[tenants]]` name. Every token, grant and signing key is
    /// partitioned by it.
    pub tenant: String,
    /// The `[[tenants]]`, each as a configuration of its own (its issuer,
    /// parties and token settings; the rest shared with the top level).
    /// Empty inside a tenant's configuration.
    pub tenants: HashMap<String, Arc<Config>>,
}

/// `[connect]`: the connect flow's URLs and lifetime.
#[derive(Debug, Clone)]
pub struct ConnectSettings {
    /// refgate's `/connect/callback` as authorities and browsers see it.
    pub redirect_uri: String,
    /// `POST /oauth2/connect` at the same place (derived from `redirect_uri`).
    pub connect_endpoint: String,
    /// Where `connect_uri`s point (`…/connect/start`).
    pub start_uri: String,
    /// Allowed `return_to` prefixes, normalised.
    pub return_to: Vec<String>,
    pub ttl: Duration,
}

impl Config {
    /// The configuration of `tenant` (empty: the top level).
    pub fn tenant(&self, tenant: &str) -> Option<&Config> {
        if tenant == self.tenant {
            return Some(self);
        }
        self.tenants.get(tenant).map(|t| &**t)
    }

    /// The connectable authority that fills credential `name`.
    pub fn connectable_for(&self, name: &str) -> Option<&Arc<Authority>> {
        self.connect.as_ref()?;
        self.authorities
            .values()
            .find(|a| a.connect_credential.as_deref() == Some(name))
    }
}

/// `[telemetry] otlp_endpoint` and `service_name`: spans are posted as
/// OTLP/HTTP protobuf to `traces_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracingSettings {
    /// `<otlp_endpoint>/v1/traces`.
    pub traces_url: String,
    pub service_name: String,
}

/// `[telemetry] audit_log`: a file (appended, created 0600) or stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    Stderr,
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Listen {
    pub proxy: Option<SocketAddr>,
    pub token_service: SocketAddr,
    pub metrics: Option<SocketAddr>,
    /// The admin API, when set.
    pub admin: Option<SocketAddr>,
    pub tls: Option<ProxyTls>,
    /// Open connections each of the proxy and the token service holds.
    pub max_connections: usize,
    /// Time from accept to a complete first request head (from the first
    /// byte of a later head to its end, on the proxy).
    pub request_head_timeout: Duration,
    /// How long a kept-alive proxy connection may wait for its next
    /// request after an answer.
    pub keepalive_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct ProxyTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where the data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// An SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (kept whole; may hold a password).
    Postgres(Secret),
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub url: StoreUrl,
    /// The current data key and the previous ones (a rotation).
    pub data_keys: Arc<DataKeys>,
    pub max_connections: u32,
}

#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub refresh_grace: Duration,
    pub custom_data_max: usize,
    /// Failed client authentications allowed per client id; `None`: off.
    pub auth_failures: Option<Rate>,
    /// How long a device code and its user code live.
    pub device_code_ttl: Duration,
    /// Least time between two polls of one device code (RFC 8628 `interval`).
    pub device_interval: Duration,
    /// The page where a person enters a user code (RFC 8628
    /// `verification_uri`): the application that approves codes.
    pub device_verification_uri: Option<String>,
}

/// A token bucket: `rate` refills it, `burst` is its size (the rate's
/// count unless set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub rate: Rate,
    pub burst: u32,
}

/// A number of events per period ("30/min", "100/s").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    /// `N/s` or `N/min`, N from 1 to 1,000,000.
    pub fn parse(text: &str) -> Result<Self, String> {
        let shape = || format!("`{text}` is not a rate such as \"30/min\" or \"100/s\"");
        let (count, unit) = text.split_once('/').ok_or_else(shape)?;
        let count: u32 = count
            .parse()
            .ok()
            .filter(|n| (1..=1_000_000).contains(n))
            .ok_or_else(|| format!("`{text}`: the count must be between 1 and 1000000"))?;
        let per = match unit {
            "s" => Duration::from_secs(1),
            "min" => Duration::from_secs(60),
            _ => return Err(shape()),
        };
        Ok(Rate { count, per })
    }
}

#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub refresh_skew: Duration,
    pub cache_capacity: u64,
    pub cache_max_ttl: Duration,
    pub negative_cache_ttl: Duration,
    pub ca_file: Option<PathBuf>,
    pub authority_timeout: Duration,
    pub upstream_connect_timeout: Duration,
    /// How long an idle upstream connection is kept for reuse (zero: never
    /// reused).
    pub upstream_idle_timeout: Duration,
    /// At most one upstream-401-triggered refresh per credential this often.
    pub min_refresh_interval: Duration,
    /// DNS servers for host names; empty: the system's (`/etc/resolv.conf`).
    pub dns_servers: Vec<SocketAddr>,
}

/// `[signing]`: how refgate makes, rotates and publishes its signing keys.
#[derive(Debug, Clone)]
pub struct SigningSettings {
    pub algorithm: SigningAlgorithm,
    /// How long one key signs.
    pub rotate_every: Duration,
    /// How long a new key is published before it signs.
    pub publish_ahead: Duration,
    /// Longest lifetime of a JWT refgate signs.
    pub jwt_ttl: Duration,
}

/// The JWS algorithms refgate signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlgorithm {
    /// ECDSA with P-256 and SHA-256.
    Es256,
    /// Ed25519.
    EdDsa,
    Rs256,
}

impl SigningAlgorithm {
    /// The JWS `alg` value.
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::Es256 => "ES256",
            SigningAlgorithm::EdDsa => "EdDSA",
            SigningAlgorithm::Rs256 => "RS256",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            SigningAlgorithm::Es256,
            SigningAlgorithm::EdDsa,
            SigningAlgorithm::Rs256,
        ]
        .into_iter()
        .find(|a| a.as_str() == text)
    }
}

/// The grant types refgate implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrantType {
    ClientCredentials,
    RefreshToken,
    TokenExchange,
    TokenExchangeMutate,
    ArbitraryToken,
    ArbitraryIdentity,
    /// RFC 8628: a device polls for the tokens a person approved.
    DeviceCode,
}

impl GrantType {
    pub const ALL: [GrantType; 7] = [
        GrantType::ClientCredentials,
        GrantType::RefreshToken,
        GrantType::TokenExchange,
        GrantType::TokenExchangeMutate,
        GrantType::ArbitraryToken,
        GrantType::ArbitraryIdentity,
        GrantType::DeviceCode,
    ];

    /// The `grant_type` value on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::ClientCredentials => "client_credentials",
            GrantType::RefreshToken => "refresh_token",
            GrantType::TokenExchange => "urn:ietf:params:oauth:grant-type:token-exchange",
            GrantType::TokenExchangeMutate => {
                "urn:ietf:params:oauth:grant-type:token-exchange-mutate"
            }
            GrantType::ArbitraryToken => "arbitrary_token",
            GrantType::ArbitraryIdentity => "arbitrary_identity",
            GrantType::DeviceCode => "urn:ietf:params:oauth:grant-type:device_code",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        GrantType::ALL.into_iter().find(|g| g.as_str() == text)
    }
}

/// A registered OAuth client of the token service.
#[derive(Debug)]
pub struct Client {
    pub id: String,
    /// Its tenant (empty: the top level): a client id names a client only
    /// within one tenant.
    pub tenant: String,
    pub secret: SecretHash,
    pub grant_types: HashSet<GrantType>,
    pub scopes: Vec<String>,
    pub introspect: bool,
    pub reveal_custom: bool,
    pub mutate: bool,
    /// May revoke every grant of a subject at `/oauth2/revoke`.
    pub revoke_subject: bool,
    /// May use the admin API (`[listen] admin`).
    pub admin: bool,
    pub allowed_issuers: Vec<String>,
    pub audiences: Option<Vec<String>>,
    pub exchange_from: ExchangeFrom,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// Token-endpoint requests of this client.
    pub rate_limit: Option<RateLimit>,
    /// May approve or deny device user codes (`/oauth2/device_approve`).
    pub device_approve: bool,
}

/// Whose tokens a client may present as a token-exchange subject
/// (`exchange_from`). A client may always exchange its own access tokens;
/// beyond that only what is listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExchangeFrom {
    /// `"*"`: the access tokens of every client.
    pub any_client: bool,
    /// Client ids whose access tokens it may exchange.
    pub clients: Vec<String>,
    /// Trusted issuers whose id_tokens it may exchange.
    pub issuers: Vec<String>,
}

impl ExchangeFrom {
    /// Whether a client `own` may exchange an access token issued to
    /// `subject_client`.
    pub fn allows_client(&self, own: &str, subject_client: &str) -> bool {
        own == subject_client || self.any_client || self.clients.iter().any(|c| c == subject_client)
    }

    /// Whether id_tokens of `issuer` may be exchanged.
    pub fn allows_issuer(&self, issuer: &str) -> bool {
        self.issuers.iter().any(|i| i == issuer)
    }
}

impl Client {
    /// The client's name across tenants: `tenant:id`, or the bare id at
    /// the top level (ids never hold ':').
    pub fn key(&self) -> String {
        if self.tenant.is_empty() {
            self.id.clone()
        } else {
            format!("{}:{}", self.tenant, self.id)
        }
    }

    pub fn may_use(&self, grant: GrantType) -> bool {
        self.grant_types.contains(&grant)
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// An issuer whose id_tokens are accepted as token-exchange subjects.
#[derive(Debug)]
pub struct TrustedIssuer {
    pub issuer: String,
    pub jwks: JwksSource,
    pub audiences: Vec<String>,
    /// Keep the id_token a grant is exchanged from, sealed, so that routes
    /// can exchange it at an external authority.
    pub keep_subject_token: bool,
}

#[derive(Debug, Clone)]
pub enum JwksSource {
    Uri(String),
    File(PathBuf),
}

/// A downstream OAuth server the gateway refreshes credentials against.
#[derive(Debug)]
pub struct Authority {
    pub name: String,
    /// Its tenant (empty: the top level): `private_key_jwt` without a key
    /// file signs with that tenant's keys.
    pub tenant: String,
    /// Empty when it comes from the discovery document of `issuer`.
    pub token_endpoint: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub auth_method: AuthMethod,
    /// The authority's issuer identifier: endpoints not configured come
    /// from its discovery document, and its answers must name it.
    pub issuer: Option<String>,
    /// Where a connect flow sends the browser (else from discovery).
    pub authorization_endpoint: Option<String>,
    /// Scopes a connect flow asks for.
    pub scopes: Vec<String>,
    /// The credential a connect flow at this authority fills; `None`: the
    /// authority is not connectable.
    pub connect_credential: Option<String>,
    /// `private_key_jwt` with `private_key_file`: the key signing client
    /// assertions. `None` with `private_key_jwt`: refgate's own current
    /// signing key (published at its JWKS).
    pub client_key: Option<Arc<ClientKey>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    /// RFC 7523 client assertions.
    PrivateKeyJwt,
}

/// A gateway route.
#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub path_prefix: String,
    pub host: Option<HostPattern>,
    pub upstream: Upstream,
    pub strip_prefix: bool,
    pub required_scopes: Vec<String>,
    pub access: RouteAccess,
    pub ca_file: Option<PathBuf>,
    /// Tokens whose grant has an `aud` without this are refused here.
    pub audience: Option<String>,
    /// Send the client's `Host` upstream (default: the upstream's authority).
    pub preserve_host: bool,
    /// Requests per calling client on this route.
    pub rate_limit: Option<RateLimit>,
    /// The tenant whose tokens the route admits (empty: the top level's).
    pub tenant: String,
}

/// What a route does with the inbound token.
#[derive(Debug, Clone)]
pub enum RouteAccess {
    /// A public route: no token checked, none forwarded.
    Public,
    /// Swap in `custom.credentials.<name>`.
    Credential(String),
    /// Transparent on-behalf-of: exchange the inbound token (SPEC 4.4).
    Exchange(RouteExchange),
    /// On-behalf-of at an external authority: exchange the subject token
    /// the inbound grant keeps.
    ExternalExchange(ExternalExchange),
    /// Phantom token: forward a JWT refgate signs for the inbound token.
    Jwt,
}

#[derive(Debug, Clone)]
pub struct RouteExchange {
    /// The route's tenant, whose client `client` is.
    pub tenant: String,
    pub client: String,
    pub scopes: Vec<String>,
    pub audience: Option<String>,
}

/// `[routes.exchange]` with `authority`: an exchange at that authority.
#[derive(Debug, Clone)]
pub struct ExternalExchange {
    /// The route's tenant, whose authority `authority` is.
    pub tenant: String,
    pub authority: String,
    pub grant: ExternalGrant,
    pub scope: Option<String>,
    pub audience: Option<String>,
    pub resource: Option<String>,
}

/// The request an external exchange makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExternalGrant {
    /// RFC 8693 token exchange.
    TokenExchange,
    /// Microsoft Entra's on-behalf-of request (RFC 7523 `jwt-bearer` with
    /// `requested_token_use=on_behalf_of`).
    JwtBearer,
}

/// A host a route matches: exact, or every subdomain of a suffix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// `*.example.com` is stored as `.example.com`.
    Subdomains(String),
}

impl HostPattern {
    /// Whether a request host (port already removed, lower case) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Subdomains(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        }
    }
}

/// An upstream: a literal address, or a host name resolved while serving.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// The address when `host` is an IP literal; `None` for a name.
    pub addr: Option<SocketAddr>,
}

/// A secret value: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a configuration.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError(pub Vec<Problem>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Whether loading may create files (the data key file, when missing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMode {
    /// `refgate serve`: a missing `data_key_file` is created with a fresh key.
    Serve,
    /// `refgate check`: nothing is written.
    Check,
}

/// Reads, parses and validates a configuration file.
pub fn load(path: &Path, mode: LoadMode) -> Result<Config, ConfigError> {
    let problem = |message: String| {
        ConfigError(vec![Problem {
            file: path.to_path_buf(),
            line: None,
            key: String::new(),
            message,
        }])
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| problem(format!("cannot read the file: {e}")))?;
    parse(path, &text, mode)
}

/// Parses and validates configuration text; `path` names it in problems and
/// anchors relative paths.
pub fn parse(path: &Path, text: &str, mode: LoadMode) -> Result<Config, ConfigError> {
    let at_offset = |offset: Option<usize>, key: String, message: String| Problem {
        file: path.to_path_buf(),
        line: offset.map(|o| locate::line_at(text, o)),
        key,
        message,
    };
    let table = toml::de::DeTable::parse(text).map_err(|e| {
        ConfigError(vec![at_offset(
            e.span().map(|s| s.start),
            String::new(),
            first_line(e.message()),
        )])
    })?;
    let mut unknown = Vec::new();
    let deserializer = toml::de::Deserializer::from(table.clone());
    let parsed: Result<file::File, _> = serde_ignored::deserialize(deserializer, |p| {
        unknown.push(locate::display_path(&p.to_string()))
    });
    let mut problems: Vec<Problem> = unknown
        .into_iter()
        .map(|key| Problem {
            file: path.to_path_buf(),
            line: locate::line_of(text, &table, &key),
            message: "unknown key".to_string(),
            key,
        })
        .collect();
    let file = match parsed {
        Ok(file) => file,
        Err(e) => {
            problems.push(at_offset(
                e.span().map(|s| s.start),
                String::new(),
                first_line(e.message()),
            ));
            return Err(ConfigError(problems));
        }
    };
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let validated = validate::validate(file, &base, path, mode);
    match validated {
        Ok(config) if problems.is_empty() => Ok(config),
        Ok(_) => Err(ConfigError(problems)),
        Err(found) => {
            problems.extend(found.into_iter().map(|(key, message)| Problem {
                file: path.to_path_buf(),
                line: locate::line_of(text, &table, &key),
                key,
                message,
            }));
            Err(ConfigError(problems))
        }
    }
}

fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or(message).trim().to_string()
}

/// Parses a duration written as `"90s"`, `"15m"`, `"1h"` or `"30d"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{:?} has whitespace or control characters; write a duration such as \"90s\"",
            text
        ));
    }
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &text[digits.len()..];
    let value: u64 = digits.parse().map_err(|_| {
        format!("`{text}` is not a duration such as \"90s\", \"15m\", \"1h\" or \"30d\"")
    })?;
    let seconds = match unit {
        "s" => Some(value),
        "m" => value.checked_mul(60),
        "h" => value.checked_mul(3600),
        "d" => value.checked_mul(86_400),
        "ms" => {
            return Some(value)
                .filter(|ms| *ms <= 10 * 365 * 86_400 * 1000)
                .map(Duration::from_millis)
                .ok_or_else(|| format!("`{text}` is longer than ten years"))
        }
        _ => {
            return Err(format!(
                "`{text}` needs a unit: s, m, h or d (\"90s\", \"15m\", \"1h\", \"30d\")"
            ))
        }
    };
    seconds
        .filter(|s| *s <= 10 * 365 * 86_400)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{text}` is longer than ten years"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(
            parse_duration("30d").unwrap(),
            Duration::from_secs(2_592_000)
        );
        assert!(parse_duration("90").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("99999999999d").is_err());
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("99999999999999ms").is_err());
        assert!(parse_duration("30d\n").is_err());
        assert!(parse_duration(" 30d").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(
            Rate::parse("30/min"),
            Ok(Rate {
                count: 30,
                per: Duration::from_secs(60)
            })
        );
        assert_eq!(Rate::parse("5/s").map(|r| r.count), Ok(5));
        for bad in [
            "30",
            "0/min",
            "-1/s",
            "30/h",
            "30/min ",
            "1000001/s",
            "/s",
            "x/s",
        ] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_patterns() {
        let sub = HostPattern::Subdomains(".example.com".into());
        assert!(sub.matches("api.example.com"));
        assert!(!sub.matches("example.com"));
        assert!(!sub.matches("badexample.com"));
        assert!(HostPattern::Exact("a.b".into()).matches("a.b"));
    }
}

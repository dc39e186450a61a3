//! The TOML file as written by an operator. These types mirror the file
//! one-to-one; nothing here is trusted until `validate` turns it into
//! [`crate::config::Config`].

use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Deserialize)]
pub struct File {
    pub issuer: String,
    pub listen: Listen,
    pub store: Store,
    #[serde(default)]
    pub tokens: Tokens,
    #[serde(default)]
    pub gateway: Gateway,
    #[serde(default)]
    pub signing: Signing,
    #[serde(default)]
    pub telemetry: Telemetry,
    #[serde(default)]
    pub clients: Vec<Client>,
    #[serde(default)]
    pub trusted_issuers: Vec<TrustedIssuer>,
    #[serde(default)]
    pub authorities: Vec<Authority>,
    #[serde(default)]
    pub routes: Vec<Route>,
    /// The connect flow (refgate obtains a user's credential itself).
    pub connect: Option<Connect>,
    /// Further tenants, each under `/{name}/` on the token service.
    #[serde(default)]
    pub tenants: Vec<Tenant>,
}

/// `[[tenants]]`: one tenant's issuer and parties. Its `[tenants.tokens]`
/// keys fall back to the top-level `[tokens]` one by one; its clients,
/// trusted issuers and authorities are its own (nothing is inherited).
#[derive(Debug, Deserialize)]
pub struct Tenant {
    pub name: String,
    pub issuer: String,
    #[serde(default)]
    pub tokens: Tokens,
    #[serde(default)]
    pub clients: Vec<Client>,
    #[serde(default)]
    pub trusted_issuers: Vec<TrustedIssuer>,
    #[serde(default)]
    pub authorities: Vec<Authority>,
}

#[derive(Debug, Deserialize)]
pub struct Connect {
    /// refgate's `/connect/callback` URL as authorities and browsers see it.
    pub redirect_uri: String,
    /// URLs a finished connect flow may send the browser back to (prefixes).
    #[serde(default)]
    pub return_to: Vec<String>,
    /// Lifetime of a `connect_uri` and of the flow it starts.
    pub ttl: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Listen {
    pub proxy: Option<String>,
    pub token_service: String,
    pub metrics: Option<String>,
    /// The admin API (off when absent).
    pub admin: Option<String>,
    pub tls: Option<ListenTls>,
    /// Open connections each listener (proxy, token service) holds.
    pub max_connections: Option<i64>,
    /// Time from accept to a complete first request head.
    pub request_head_timeout: Option<String>,
    /// Idle time allowed between requests on a proxy connection.
    pub keepalive_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ListenTls {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Deserialize)]
pub struct Store {
    pub url: String,
    pub data_key: Option<String>,
    pub data_key_env: Option<String>,
    /// A file holding the base64 key; created with a fresh key when missing.
    pub data_key_file: Option<String>,
    /// Older data keys that still open sealed data during a rotation.
    pub previous_data_keys: Option<Vec<String>>,
    /// Names of environment variables holding older data keys.
    pub previous_data_keys_env: Option<Vec<String>>,
    /// Upper bound of the store's connection pool.
    pub max_connections: Option<u32>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct Tokens {
    pub access_token_ttl: Option<String>,
    pub refresh_token_ttl: Option<String>,
    pub refresh_grace: Option<String>,
    pub custom_data_max: Option<i64>,
    /// Failed client authentications allowed per client id ("30/min").
    pub auth_failures: Option<String>,
    /// Lifetime of a device code ("10m").
    pub device_code_ttl: Option<String>,
    /// Least time between two polls of a device code ("5s").
    pub device_interval: Option<String>,
    /// The page where a person enters a user code.
    pub device_verification_uri: Option<String>,
}

impl Tokens {
    /// These settings, each one this table omits taken from `parent`.
    pub fn inheriting(&self, parent: &Tokens) -> Tokens {
        let pick = |own: &Option<String>, theirs: &Option<String>| own.clone().or(theirs.clone());
        Tokens {
            access_token_ttl: pick(&self.access_token_ttl, &parent.access_token_ttl),
            refresh_token_ttl: pick(&self.refresh_token_ttl, &parent.refresh_token_ttl),
            refresh_grace: pick(&self.refresh_grace, &parent.refresh_grace),
            custom_data_max: self.custom_data_max.or(parent.custom_data_max),
            auth_failures: pick(&self.auth_failures, &parent.auth_failures),
            device_code_ttl: pick(&self.device_code_ttl, &parent.device_code_ttl),
            device_interval: pick(&self.device_interval, &parent.device_interval),
            device_verification_uri: pick(
                &self.device_verification_uri,
                &parent.device_verification_uri,
            ),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct Gateway {
    pub refresh_skew: Option<String>,
    pub cache_capacity: Option<i64>,
    pub cache_max_ttl: Option<String>,
    pub negative_cache_ttl: Option<String>,
    /// Extra CA certificates trusted for every upstream.
    pub ca_file: Option<String>,
    /// Timeout of one call to a downstream authority.
    pub authority_timeout: Option<String>,
    /// Timeout to connect to an upstream.
    pub upstream_connect_timeout: Option<String>,
    /// How long an idle upstream connection is kept for reuse.
    pub upstream_idle_timeout: Option<String>,
    /// Least time between two refreshes of one credential that upstream
    /// 401s trigger.
    pub min_refresh_interval: Option<String>,
    /// DNS servers (`ip:port`) for upstream and authority host names.
    pub dns_servers: Option<Vec<String>>,
}

/// `[telemetry]`: where the audit trail goes, and where traces are sent.
#[derive(Debug, Default, Deserialize)]
pub struct Telemetry {
    pub audit_log: Option<String>,
    /// OTLP/HTTP base URL; tracing is off without it.
    pub otlp_endpoint: Option<String>,
    pub service_name: Option<String>,
}

/// `[signing]`: the keys refgate signs JWTs with.
#[derive(Debug, Default, Deserialize)]
pub struct Signing {
    pub algorithm: Option<String>,
    pub rotate_every: Option<String>,
    pub publish_ahead: Option<String>,
    pub jwt_ttl: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Client {
    pub id: String,
    pub secret_hash: String,
    #[serde(default)]
    pub grant_types: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub introspect: bool,
    #[serde(default)]
    pub reveal_custom: bool,
    #[serde(default)]
    pub mutate: bool,
    /// May revoke every grant of a subject (`token_type_hint=subject`).
    #[serde(default)]
    pub revoke_subject: bool,
    /// May use the admin API.
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub allowed_issuers: Vec<String>,
    /// When set, the only `audience` values this client may request.
    pub audiences: Option<Vec<String>>,
    /// Whose tokens this client may use as a token-exchange subject.
    pub exchange_from: Option<Vec<String>>,
    pub access_token_ttl: Option<String>,
    pub refresh_token_ttl: Option<String>,
    /// Token-endpoint requests of this client ("100/s", "600/min").
    pub rate_limit: Option<String>,
    pub rate_limit_burst: Option<i64>,
    /// May approve device user codes at `/oauth2/device_approve`.
    #[serde(default)]
    pub device_approve: bool,
}

#[derive(Debug, Deserialize)]
pub struct TrustedIssuer {
    pub issuer: String,
    pub jwks_uri: Option<String>,
    pub jwks_file: Option<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Keep the id_token a grant was exchanged from, sealed, for external
    /// exchanges on routes.
    #[serde(default)]
    pub keep_subject_token: bool,
}

#[derive(Debug, Deserialize)]
pub struct Authority {
    pub name: String,
    /// Optional when `issuer` is set (discovery).
    pub token_endpoint: Option<String>,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub client_secret_env: Option<String>,
    pub auth_method: Option<String>,
    /// Endpoints come from this issuer's discovery document.
    pub issuer: Option<String>,
    /// Where a connect flow sends the browser.
    pub authorization_endpoint: Option<String>,
    /// Scopes a connect flow asks for.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The credential a connect flow at this authority fills.
    pub connect_credential: Option<String>,
    /// `private_key_jwt`: the PKCS#8 PEM key signing client assertions
    /// (absent: refgate's own signing key).
    pub private_key_file: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Route {
    pub name: String,
    pub path_prefix: String,
    pub host: Option<String>,
    pub upstream: String,
    #[serde(default)]
    pub strip_prefix: bool,
    #[serde(default)]
    pub required_scopes: Vec<String>,
    pub credential: Option<String>,
    pub ca_file: Option<String>,
    pub auth: Option<String>,
    pub exchange: Option<RouteExchange>,
    /// Tokens whose `aud` does not contain this are refused here.
    pub audience: Option<String>,
    /// Send the client's `Host` upstream instead of the upstream's own.
    #[serde(default)]
    pub preserve_host: bool,
    /// Requests per calling client on this route.
    pub rate_limit: Option<String>,
    pub rate_limit_burst: Option<i64>,
    /// `"jwt"`: a phantom-token route.
    pub forward: Option<String>,
    /// The `[[tenants]]` entry whose tokens this route admits (absent: the
    /// top-level issuer's).
    pub tenant: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RouteExchange {
    /// Exchange at refgate itself, as this client.
    pub client: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub audience: Option<String>,
    /// Exchange at this `[[authorities]]` entry instead.
    pub authority: Option<String>,
    /// `token-exchange` or `jwt-bearer` (external exchanges).
    pub grant: Option<String>,
    /// The scope asked of the authority (external exchanges).
    pub scope: Option<String>,
    /// RFC 8707 resource asked of the authority (external exchanges).
    pub resource: Option<String>,
}

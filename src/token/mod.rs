//! The token service: an OAuth 2.0 authorization server for machine and
//! middle-tier clients, as HTTP (axum). This is an adapter of
//! [`crate::core`]: its files read requests, call the core operation and
//! write the answer; no grant rule lives here.
//!
//! - `token_endpoint` dispatches `POST /oauth2/token` to the `grant_*`
//!   files (one per grant type that has parameters to read;
//!   `client_credentials` calls the core directly);
//! - `introspect`, `revoke`, `mutate`, `metadata`, `jwks`, `health`;
//! - `device_authorization`, `device_approve` (the back channel) and
//!   `device_grant`: RFC 8628, with `device_guesses` limiting user-code
//!   guessing;
//! - `request` reads bodies and authenticates clients, `error` is the one
//!   mapping of failures (among them [`crate::core::Error`]) to RFC 6749
//!   responses, `issue` writes token responses;
//! - `tenant` serves each `[[tenants]]` entry under `/{name}/`: every
//!   handler reads the configuration of the request's tenant.

pub mod admin;
mod connect;
mod device_approve;
mod device_authorization;
mod device_grant;
mod device_guesses;
mod error;
mod grant_arbitrary;
mod grant_exchange;
mod grant_exchange_mutate;
mod grant_refresh;
pub(crate) mod guard;
mod health;
pub mod id_token;
mod introspect;
mod issue;
mod jwks;
mod metadata;
mod mutate;
mod request;
mod revoke;
mod tenant;
mod throttle;
mod token_endpoint;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;

use crate::audit::Audit;
use crate::config::Config;
use crate::core::Grants;
use crate::lookup::TokenLookup;
use crate::reload::Live;
use crate::signing::{KeyRing, SigningKeys};
use crate::telemetry::Metrics;

pub use error::OAuthError;
pub use issue::TokenResponse;

/// State shared by the token-service endpoints.
pub struct TokenService {
    live: Live,
    pub lookup: Arc<TokenLookup>,
    /// Every grant operation and write goes through it.
    pub grants: Arc<Grants>,
    pub id_tokens: id_token::IdTokenVerifier,
    /// Failed client authentications per client id (set at start).
    pub auth_throttle: throttle::AuthThrottle,
    /// Wrong user codes per approving client.
    pub device_guesses: device_guesses::DeviceGuesses,
    pub metrics: Arc<Metrics>,
    /// refgate's own signing keys, each tenant's (the JWKS it publishes).
    pub keys: Arc<KeyRing>,
    /// The audit trail (also written by the gateway's refreshes).
    pub audit: Arc<Audit>,
    /// Calls to downstream authorities (the connect flow's code redemption).
    pub http: reqwest::Client,
    /// Authorities' endpoints from their discovery documents.
    pub discovery: Arc<crate::discovery::Discovery>,
}

impl TokenService {
    pub fn new(
        live: Live,
        lookup: Arc<TokenLookup>,
        http: reqwest::Client,
        metrics: Arc<Metrics>,
        keys: Arc<KeyRing>,
        audit: Arc<Audit>,
    ) -> Self {
        let auth_failures = live.load().config.tokens.auth_failures;
        let auth_throttle =
            throttle::AuthThrottle::new(auth_failures, metrics.clone(), audit.clone());
        TokenService {
            live,
            keys,
            grants: Arc::new(Grants::new(lookup.clone())),
            lookup,
            id_tokens: id_token::IdTokenVerifier::new(http.clone()),
            discovery: Arc::new(crate::discovery::Discovery::new(http.clone())),
            http,
            auth_throttle,
            device_guesses: device_guesses::DeviceGuesses::new(metrics.clone(), audit.clone()),
            metrics,
            audit,
        }
    }

    /// A token-endpoint request of `client` against its rate limit.
    pub fn check_rate(&self, client: &crate::config::Client) -> Result<(), OAuthError> {
        self.live.load().limits.client(client).map_err(|wait| {
            self.metrics
                .rate_limited
                .with_label_values(&["client", &client.key()])
                .inc();
            self.audit.record(
                "rate_limited",
                json!({ "client_id": client.id, "limit": "client" }),
            );
            OAuthError::rate_limited("too many requests from this client; retry later", wait)
        })
    }

    /// The top level's configuration in force now (a request's own is
    /// [`tenant::Scope`]).
    pub fn config(&self) -> Arc<Config> {
        self.live.load().config.clone()
    }

    /// The signing keys of `tenant`.
    pub fn signing(&self, tenant: &str) -> Result<Arc<SigningKeys>, OAuthError> {
        self.keys.of(tenant).ok_or_else(|| {
            OAuthError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "no signing key is available; retry shortly",
            )
        })
    }
}

/// The token service's HTTP routes: each endpoint at the top level and
/// under every tenant's `/{name}/`.
pub fn router(service: Arc<TokenService>) -> Router {
    let endpoints = endpoints(service.clone());
    let tenants = axum::middleware::from_fn_with_state(service, tenant::resolve);
    Router::new().fallback_service(
        tower::ServiceBuilder::new()
            .layer(tenants)
            .service(endpoints),
    )
}

fn endpoints(service: Arc<TokenService>) -> Router {
    let routes = Router::new()
        .route(
            "/.well-known/oauth-authorization-server",
            get(metadata::handle),
        )
        .route("/.well-known/jwks.json", get(jwks::handle))
        .route("/oauth2/token", post(token_endpoint::handle))
        .route("/oauth2/introspect", post(introspect::handle))
        .route("/oauth2/revoke", post(revoke::handle))
        .route("/oauth2/mutate", post(mutate::handle))
        .route("/oauth2/connect", post(connect::begin))
        .route(
            "/oauth2/device_authorization",
            post(device_authorization::handle),
        )
        .route("/oauth2/device_approve", post(device_approve::handle))
        .route("/connect/start", get(connect::start))
        .route("/connect/callback", get(connect::callback))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz));
    crate::traces::endpoint_spans(routes)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(guard::guard))
        .layer(axum::middleware::from_fn(guard::request_id))
        .with_state(service)
}

async fn not_found() -> axum::response::Response {
    OAuthError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint").into_response()
}

async fn method_not_allowed() -> axum::response::Response {
    OAuthError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
        "method not allowed on this endpoint",
    )
    .into_response()
}

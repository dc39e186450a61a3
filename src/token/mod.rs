//! The token service: an OAuth 2.0 authorization server for machine and
//! middle-tier clients. One file per endpoint, one per grant type:
//!
//! - `token_endpoint` dispatches `POST /oauth2/token` to `grant_*`;
//! - `introspect`, `revoke`, `mutate`, `metadata`, `health`;
//! - `request` reads bodies and authenticates clients, `error` is the one
//!   mapping of failures to RFC 6749 responses, `issue` mints tokens.

mod error;
mod grant_arbitrary;
mod grant_client_credentials;
mod grant_exchange;
mod grant_exchange_mutate;
mod grant_refresh;
mod guard;
mod health;
pub mod id_token;
mod in_process;
mod introspect;
mod issue;
mod metadata;
mod mutate;
mod request;
mod revoke;
mod scope;
mod token_endpoint;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;

use crate::config::Config;
use crate::crypto::{Random, TokenHash};
use crate::lookup::TokenLookup;
use crate::reload::Live;

pub use error::OAuthError;
pub use in_process::OwnRefresh;
pub use issue::TokenResponse;
pub use mutate::patch_custom;

/// State shared by the token-service endpoints.
pub struct TokenService {
    live: Live,
    pub lookup: Arc<TokenLookup>,
    pub random: Random,
    pub id_tokens: id_token::IdTokenVerifier,
}

impl TokenService {
    pub fn new(live: Live, lookup: Arc<TokenLookup>, http: reqwest::Client) -> Self {
        TokenService {
            live,
            lookup,
            random: Random::default(),
            id_tokens: id_token::IdTokenVerifier::new(http),
        }
    }

    /// The configuration in force now.
    pub fn config(&self) -> Arc<Config> {
        self.live.load().config.clone()
    }

    /// A grant changed (revoked, re-scoped, custom data): drop cached views.
    pub async fn notify_grant_changed(&self, grant_id: &str) {
        self.lookup.invalidate_grant(grant_id).await;
    }

    /// A token changed (revoked, consumed): drop its cached view.
    pub async fn notify_token_changed(&self, hash: &TokenHash) {
        self.lookup.invalidate_token(hash).await;
    }
}

/// The token service's HTTP routes.
pub fn router(service: Arc<TokenService>) -> Router {
    Router::new()
        .route(
            "/.well-known/oauth-authorization-server",
            get(metadata::handle),
        )
        .route("/oauth2/token", post(token_endpoint::handle))
        .route("/oauth2/introspect", post(introspect::handle))
        .route("/oauth2/revoke", post(revoke::handle))
        .route("/oauth2/mutate", post(mutate::handle))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(guard::guard))
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

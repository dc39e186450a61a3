//! `GET /.well-known/jwks.json`: the public halves of refgate's signing
//! keys (RFC 7517), the upcoming one included; cacheable for half of
//! `publish_ahead`, so a verifier has a key before it signs anything.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::tenant::Scope;
use super::{OAuthError, TokenService};

/// The keys of the request's tenant.
pub async fn handle(State(service): State<Arc<TokenService>>, Scope(config): Scope) -> Response {
    let keys = match service.signing(&config.tenant) {
        Ok(keys) => keys,
        Err(e) => return e.into_response(),
    };
    match keys.jwks().await {
        Ok(jwks) => {
            let max_age = keys.jwks_max_age().as_secs();
            let cache = HeaderValue::from_str(&format!("public, max-age={max_age}"))
                .expect("a number makes a valid header value");
            (
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/jwk-set+json"),
                    ),
                    (header::CACHE_CONTROL, cache),
                ],
                jwks.to_string(),
            )
                .into_response()
        }
        Err(e) => {
            tracing::warn!("cannot publish the signing keys: {e}");
            OAuthError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the signing keys cannot be read now",
            )
            .into_response()
        }
    }
}

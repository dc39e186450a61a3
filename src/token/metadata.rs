//! `GET /.well-known/oauth-authorization-server` (RFC 8414).

use std::collections::BTreeSet;

use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::tenant::Scope;
use crate::config::GrantType;

/// The metadata of the request's tenant (the top level's at the top).
pub async fn handle(Scope(config): Scope) -> Response {
    let issuer = &config.issuer;
    let base = issuer.trim_end_matches('/');
    let scopes: BTreeSet<&str> = config
        .clients
        .values()
        .flat_map(|c| c.scopes.iter().map(String::as_str))
        .collect();
    let auth_methods = ["client_secret_basic", "client_secret_post"];
    let grant_types: Vec<&str> = GrantType::ALL.iter().map(|g| g.as_str()).collect();
    axum::Json(json!({
        "issuer": issuer,
        "token_endpoint": format!("{base}/oauth2/token"),
        "introspection_endpoint": format!("{base}/oauth2/introspect"),
        "revocation_endpoint": format!("{base}/oauth2/revoke"),
        "mutate_endpoint": format!("{base}/oauth2/mutate"),
        "device_authorization_endpoint": format!("{base}/oauth2/device_authorization"),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "introspection_signing_alg_values_supported": [config.signing.algorithm.as_str()],
        "grant_types_supported": grant_types,
        "response_types_supported": [],
        "scopes_supported": scopes,
        "token_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "mutate_endpoint_auth_methods_supported": ["client_secret_basic"],
    }))
    .into_response()
}

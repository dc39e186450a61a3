//! `arbitrary_token` and `arbitrary_identity`: their parameters, and the
//! signing of the tokens they ask for as JWTs; the checks and the minting
//! are [`crate::core::arbitrary`].
//!
//! - `arbitrary_token` with `access_token_type=jwt` answers a JWT access
//!   token (RFC 9068 shape, `iss` the asserted issuer, the arbitrary claims
//!   beside the registered ones) signed with refgate's current key. The
//!   grant is stored as for a reference token, so its refresh token works
//!   (and refreshes to reference tokens); the JWT itself is
//!   self-contained: revocation and introspection do not reach it, its
//!   lifetime does.
//! - `arbitrary_identity` answers an OIDC id_token for `subject` under an
//!   issuer the client may assert, for `audience` (the client's id when
//!   absent), living `id_token_lifetime` seconds at most the client's
//!   access-token lifetime. Nothing is stored.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::error::{no_store, OAuthError};
use super::issue::TokenResponse;
use super::request::Form;
use super::TokenService;
use crate::config::{Client, Config};
use crate::core::arbitrary::{asserted_issuer, mint, signed_claims, Arbitrary};
use crate::core::issue::whole_seconds;
use crate::crypto::Random;
use crate::lookup::now;

pub async fn grant(
    service: &TokenService,
    config: &Config,
    client: &Client,
    form: &Form,
) -> Result<TokenResponse, OAuthError> {
    let signed = match form.get("access_token_type") {
        None | Some("reference") => false,
        Some("jwt") => true,
        Some(other) => {
            return Err(OAuthError::invalid_request(format!(
                "access_token_type `{other}` is not one of reference, jwt"
            )))
        }
    };
    let request = Arbitrary {
        subject: form.require("subject")?,
        issuer: form.require("issuer")?,
        scope: form.get("scope"),
        claims: form.get("arbitrary_claims"),
        custom: form.get("arbitrary_json"),
        lifetime: form.get("access_token_lifetime"),
    };
    let (subject, issuer, arbitrary) = (request.subject, request.issuer, request.claims);
    if signed {
        // Refused before anything is stored.
        signed_claims(Map::new(), arbitrary)?;
    }
    let mut response = mint(&service.grants, config, client, request).await?;
    if signed {
        let issued_at = now();
        let mut registered = Map::new();
        registered.insert("iss".into(), json!(issuer));
        registered.insert("sub".into(), json!(subject));
        registered.insert("client_id".into(), json!(client.id));
        if !response.scope.is_empty() {
            registered.insert("scope".into(), json!(response.scope));
        }
        registered.insert("iat".into(), json!(issued_at));
        registered.insert("exp".into(), json!(issued_at + response.expires_in));
        registered.insert("jti".into(), json!(Random::default().grant_id()));
        let claims = signed_claims(registered, arbitrary)?;
        response.access_token = sign(service, &client.tenant, "at+jwt", &claims)?;
    }
    Ok(response)
}

pub async fn identity(
    service: &TokenService,
    client: &Client,
    form: &Form,
) -> Result<Response, OAuthError> {
    let subject = form.require("subject")?;
    let issuer = asserted_issuer(client, form.require("issuer")?)?;
    // An empty parameter counts as absent (RFC 6749 §3.1).
    let audience = form.get("audience").unwrap_or(&client.id);
    let most = whole_seconds(client.access_token_ttl);
    let lifetime = match form.get("id_token_lifetime") {
        None => most,
        Some(text) => match text.parse::<i64>() {
            Ok(n) if n > 0 => n.min(most),
            _ => {
                return Err(OAuthError::invalid_request(
                    "id_token_lifetime must be a positive number of seconds",
                ))
            }
        },
    };
    let issued_at = now();
    let mut registered = Map::new();
    registered.insert("iss".into(), json!(issuer));
    registered.insert("sub".into(), json!(subject));
    registered.insert("aud".into(), json!(audience));
    registered.insert("azp".into(), json!(client.id));
    registered.insert("iat".into(), json!(issued_at));
    registered.insert("exp".into(), json!(issued_at + lifetime));
    let claims = signed_claims(registered, form.get("arbitrary_claims"))?;
    let id_token = sign(service, &client.tenant, "JWT", &claims)?;
    service.audit.record(
        "token_issued",
        json!({
            "client_id": client.id,
            "sub": subject,
            "grant_type": "arbitrary_identity",
        }),
    );
    let mut response = (
        StatusCode::OK,
        axum::Json(json!({
            "id_token": id_token,
            "token_type": "N_A",
            "expires_in": lifetime,
        })),
    )
        .into_response();
    no_store(&mut response);
    Ok(response)
}

/// Signs with the current key of `tenant`; 503 when none can sign.
pub(super) fn sign(
    service: &TokenService,
    tenant: &str,
    typ: &str,
    claims: &Value,
) -> Result<String, OAuthError> {
    service.signing(tenant)?.sign(typ, claims).map_err(|e| {
        tracing::warn!(error = %e, "cannot sign a token");
        OAuthError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "no signing key is available; retry shortly",
        )
    })
}

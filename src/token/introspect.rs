//! `POST /oauth2/introspect` (RFC 7662). Anything not active is exactly
//! `{"active":false}`; custom data only for `reveal_custom` callers.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::error::{no_store, OAuthError};
use super::request::AuthenticatedForm;
use super::TokenService;
use crate::core::scope;
use crate::crypto::TokenKind;
use crate::lookup::{is_active, ActiveToken};

/// RFC 9701's media type for a signed introspection answer.
const JWT_ANSWER: &str = "application/token-introspection+jwt";

pub async fn handle(
    State(service): State<Arc<TokenService>>,
    request: AuthenticatedForm,
) -> Response {
    let signed = match wants_jwt(&request.headers) {
        Ok(signed) => signed,
        Err(e) => return e.into_response(),
    };
    let caller = request.client.id.clone();
    let issuer = request.config.issuer.clone();
    let tenant = request.config.tenant.clone();
    let body = match introspect(&service, request).await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    let mut response = if signed {
        // RFC 9701 §5: the answer inside a JWT for the caller.
        let claims = json!({
            "iss": issuer,
            "aud": caller,
            "iat": crate::lookup::now(),
            "token_introspection": body,
        });
        match super::grant_arbitrary::sign(&service, &tenant, "token-introspection+jwt", &claims) {
            Ok(jwt) => ([(axum::http::header::CONTENT_TYPE, JWT_ANSWER)], jwt).into_response(),
            Err(e) => return e.into_response(),
        }
    } else {
        axum::Json(body).into_response()
    };
    no_store(&mut response);
    response
}

/// Whether `Accept` asks for a signed answer (RFC 9701); plain JSON when it
/// is absent or allows JSON; 406 when it allows neither.
fn wants_jwt(headers: &axum::http::HeaderMap) -> Result<bool, OAuthError> {
    let accepted: Vec<String> = headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next()?.to_ascii_lowercase();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (!refused && !media.is_empty()).then_some(media)
        })
        .collect();
    if headers.get(axum::http::header::ACCEPT).is_none() {
        return Ok(false);
    }
    if accepted.iter().any(|m| m == JWT_ANSWER) {
        return Ok(true);
    }
    if accepted
        .iter()
        .any(|m| m == "application/json" || m == "application/*" || m == "*/*")
    {
        return Ok(false);
    }
    Err(OAuthError::new(
        axum::http::StatusCode::NOT_ACCEPTABLE,
        "invalid_request",
        format!("introspection answers application/json or {JWT_ANSWER}"),
    ))
}

async fn introspect(
    service: &TokenService,
    request: AuthenticatedForm,
) -> Result<Value, OAuthError> {
    let AuthenticatedForm {
        config,
        client,
        form,
        ..
    } = request;
    if !client.introspect {
        return Err(OAuthError::invalid_client(format!(
            "client `{}` may not introspect tokens",
            client.id
        )));
    }
    let token = form.require("token")?;
    let inactive = json!({ "active": false });
    let Some(active) = service.lookup.find_active(&config.tenant, token).await? else {
        return Ok(inactive);
    };
    if active.token.kind == TokenKind::Refresh
        && !refresh_token_still_active(service, &active).await?
    {
        return Ok(inactive);
    }
    let custom = if client.reveal_custom {
        // Custom data is not cached: read it, with its version, from the
        // grant's record.
        // Unreadable custom data (logged) makes the token inactive: a
        // caller never sees data that did not open for this version.
        match service.grants.find_grant(&active.grant.id).await? {
            Some(record) if !record.revoked => match service.lookup.open_custom(&record) {
                Ok(custom) => Some(Revealed {
                    custom,
                    version: record.version,
                }),
                Err(_) => return Ok(inactive),
            },
            _ => return Ok(inactive),
        }
    } else {
        None
    };
    Ok(describe(&active, custom, &config.issuer))
}

/// What a `reveal_custom` caller sees beyond the rest: the grant's custom
/// data and its version.
pub struct Revealed {
    pub custom: Map<String, Value>,
    pub version: i64,
}

/// Re-reads a refresh token from the store. Some writes revoke a grant's
/// refresh tokens without knowing their hashes (a scope mutation that drops
/// `offline_access`), so a cached view of one can be stale; refresh tokens
/// are introspected rarely, so the authoritative answer is affordable.
async fn refresh_token_still_active(
    service: &TokenService,
    active: &ActiveToken,
) -> Result<bool, OAuthError> {
    let still_active = match service
        .grants
        .find_token(active.grant.tenant(), &active.hash)
        .await?
    {
        Some((token, grant)) => is_active(&token, &grant),
        None => false,
    };
    if !still_active {
        // A cached view of it is stale: forget it.
        service.lookup.invalidate_token(&active.hash).await;
    }
    Ok(still_active)
}

/// The RFC 7662 view of an active token.
/// `revealed` is given only for a caller allowed to see it.
pub fn describe(active: &ActiveToken, revealed: Option<Revealed>, issuer: &str) -> Value {
    let grant = &active.grant;
    let mut out = Map::new();
    // Arbitrary claims first, so registered members always win.
    if let Some(Value::Object(claims)) = grant.claims() {
        out.extend(claims.clone());
    }
    out.insert("active".into(), Value::Bool(true));
    out.insert("scope".into(), Value::String(scope::join(&active.scopes())));
    out.insert("client_id".into(), Value::from(&*grant.client_id));
    out.insert("sub".into(), Value::from(&*grant.subject));
    out.insert("exp".into(), Value::from(active.token.expires_at));
    out.insert("iat".into(), Value::from(active.token.issued_at));
    out.insert(
        "iss".into(),
        Value::from(grant.issuer.as_deref().unwrap_or(issuer)),
    );
    let token_type = match active.token.kind {
        TokenKind::Access => "Bearer",
        TokenKind::Refresh => "refresh_token",
    };
    out.insert("token_type".into(), Value::String(token_type.into()));
    match grant.audience() {
        [] => {}
        [one] => {
            out.insert("aud".into(), Value::String(one.clone()));
        }
        many => {
            out.insert("aud".into(), Value::from(many.to_vec()));
        }
    }
    if let Some(actor) = grant.actor() {
        out.insert("act".into(), actor.clone());
    }
    if let Some(idp) = grant.idp() {
        out.insert("idp".into(), Value::from(idp));
    }
    if let Some(revealed) = revealed {
        out.insert("custom".into(), Value::Object(revealed.custom));
        out.insert("version".into(), Value::from(revealed.version));
    }
    Value::Object(out)
}

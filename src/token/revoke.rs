//! `POST /oauth2/revoke` (RFC 7009). Always 200 once the client is
//! authenticated: for unknown tokens, for already revoked ones, and for
//! tokens of another client (which stay active: no oracle).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::{no_store, OAuthError};
use super::request::{authenticate, read_body, AuthMethods, Form, FORM_LIMIT};
use super::TokenService;
use crate::crypto::{hash_token, token_kind, TokenKind};

pub async fn handle(State(service): State<Arc<TokenService>>, request: Request<Body>) -> Response {
    match revoke(&service, request).await {
        Ok(()) => {
            let mut response = StatusCode::OK.into_response();
            no_store(&mut response);
            response
        }
        Err(e) => e.into_response(),
    }
}

async fn revoke(service: &TokenService, request: Request<Body>) -> Result<(), OAuthError> {
    let (parts, body) = read_body(request, FORM_LIMIT).await?;
    let form = Form::parse(&parts.headers, &body)?;
    let config = service.config();
    let client = authenticate(&config, &parts.headers, Some(&form), AuthMethods::BasicOrPost)?;
    let token = form.require("token")?;
    // token_type_hint is only a hint: the prefix says what the token is.
    if token_kind(token).is_none() {
        return Ok(());
    }
    let hash = hash_token(token);
    let Some((record, grant)) = service.lookup.store().find_token(&hash).await? else {
        return Ok(());
    };
    if grant.client_id != client.id {
        tracing::info!(client = %client.id, "revocation of another client's token ignored");
        return Ok(());
    }
    match record.kind {
        TokenKind::Refresh => {
            service.lookup.store().revoke_grant(&grant.id).await?;
            service.notify_grant_changed(&grant.id).await;
        }
        TokenKind::Access => {
            service.lookup.store().revoke_token(&hash).await?;
            service.notify_token_changed(&hash).await;
        }
    }
    Ok(())
}

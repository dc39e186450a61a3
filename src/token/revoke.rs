//! `POST /oauth2/revoke` (RFC 7009). Always 200 once the client is
//! authenticated: for unknown tokens, for already revoked ones, and for
//! tokens of another client (which stay active: no oracle). Only a live
//! token has effects: a refresh token ends its grant, an access token only
//! itself. With `token_type_hint=subject`, a client with `revoke_subject`
//! ends every grant of the subject named by `token`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::{no_store, OAuthError};
use super::request::AuthenticatedForm;
use super::TokenService;
use crate::core::issue::whole_seconds;
use crate::core::rotation::{still_usable, Presented};
use crate::crypto::{hash_token, token_kind, TokenKind};
use crate::lookup::now;
use crate::store::GrantsOf;

pub async fn handle(
    State(service): State<Arc<TokenService>>,
    request: AuthenticatedForm,
) -> Response {
    match revoke(&service, request).await {
        Ok(()) => {
            let mut response = StatusCode::OK.into_response();
            no_store(&mut response);
            response
        }
        Err(e) => e.into_response(),
    }
}

async fn revoke(service: &TokenService, request: AuthenticatedForm) -> Result<(), OAuthError> {
    let AuthenticatedForm {
        config,
        client,
        form,
        ..
    } = request;
    let token = form.require("token")?;
    if form.get("token_type_hint") == Some("subject") {
        // Every session of one user, whichever client it was issued to.
        if !client.revoke_subject {
            return Err(OAuthError::unauthorized_client(format!(
                "client `{}` may not revoke a subject's grants",
                client.id
            ))
            .with_status(StatusCode::FORBIDDEN));
        }
        let ended = service
            .grants
            .revoke_all(&GrantsOf::subject(&client.tenant, token))
            .await?;
        tracing::info!(client = %client.id, grants = ended, "subject revoked");
        service.audit.record(
            "token_revoked",
            json!({
                "client_id": client.id,
                "sub": token,
                "token_type_hint": "subject",
                "grants": ended,
            }),
        );
        return Ok(());
    }
    // token_type_hint is only a hint: the prefix says what the token is.
    if token_kind(token).is_none() {
        return Ok(());
    }
    let hash = hash_token(&client.tenant, token);
    let Some((record, grant)) = service.grants.find_token(&client.tenant, &hash).await? else {
        return Ok(());
    };
    if grant.client_id != client.id {
        tracing::info!(client = %client.id, "revocation of another client's token ignored");
        return Ok(());
    }
    let grace = whole_seconds(config.tokens.refresh_grace);
    let presented = Presented {
        kind: record.kind,
        expires_at: record.expires_at,
        revoked: record.revoked,
        grant_revoked: grant.revoked,
        consumed_at: record.consumed_at,
    };
    if !still_usable(&presented, now(), grace) {
        // Already dead (revoked, expired, or rotated out): RFC 7009 asks for
        // nothing more. In particular a refresh token revoked by a scope
        // change, or one rotated out earlier, must not take the live grant
        // down with it.
        return Ok(());
    }
    let (hint, grants) = match record.kind {
        TokenKind::Refresh => {
            // Grants exchanged from this one end with it.
            let ended = service.grants.revoke_grant(&grant.id).await?;
            ("refresh_token", ended.len())
        }
        TokenKind::Access => {
            service.grants.revoke_token(&hash).await?;
            ("access_token", 0)
        }
    };
    service.audit.record(
        "token_revoked",
        json!({
            "client_id": client.id,
            "sub": grant.subject,
            "grant_id": grant.id,
            "token_type_hint": hint,
            "grants": (grants > 0).then_some(grants),
        }),
    );
    Ok(())
}

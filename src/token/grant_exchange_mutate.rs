//! `urn:ietf:params:oauth:grant-type:token-exchange-mutate`: gives an
//! existing grant a new scope set. The token strings stay the same and `exp`
//! is not extended; a scope set without `offline_access` revokes the grant's
//! refresh tokens.

use super::error::OAuthError;
use super::issue::{TokenResponse, ACCESS_TOKEN_TYPE};
use super::request::Form;
use super::{scope, TokenService};
use crate::config::Client;
use crate::crypto::TokenKind;
use crate::lookup::now;
use crate::store::{GrantChange, GrantUpdate};

/// Attempts at the compare-and-set before giving up under contention.
const CAS_ATTEMPTS: usize = 8;

pub async fn grant(
    service: &TokenService,
    client: &Client,
    form: &Form,
) -> Result<TokenResponse, OAuthError> {
    let subject_token = form.require("subject_token")?;
    let subject_type = form.require("subject_token_type")?;
    if subject_type != ACCESS_TOKEN_TYPE {
        return Err(OAuthError::invalid_request(format!(
            "subject_token_type must be {ACCESS_TOKEN_TYPE}"
        )));
    }
    let inactive =
        || OAuthError::invalid_request("the subject_token is not an active access token");
    let active = service
        .lookup
        .find_active(subject_token)
        .await?
        .filter(|t| t.token.kind == TokenKind::Access)
        .ok_or_else(inactive)?;
    if *active.grant.client_id != *client.id && !client.mutate {
        return Err(OAuthError::unauthorized_client(
            "only the token's own client or a mutate client may change its scopes",
        ));
    }
    // The ceiling is what the token's own client may hold: a mutate client
    // changes which of those scopes a token has, it does not lend its own.
    let config = service.config();
    let owner = config
        .clients
        .get(&*active.grant.client_id)
        .ok_or_else(|| {
            OAuthError::invalid_request("the subject_token's client is no longer configured")
        })?;
    let scopes = scope::for_client(owner, form.get("scope"))?;
    let change = GrantChange {
        scopes: Some(scopes.clone()),
        custom_sealed: None,
        revoke_refresh_tokens: !scope::has_offline_access(&scopes),
        reset_token_scopes: Some(active.hash),
    };
    let store = service.lookup.store();
    let mut updated = false;
    for _ in 0..CAS_ATTEMPTS {
        // The record, not the cached view: the write carries the grant's
        // custom data sealed again for the version it bumps to.
        let record = match store.find_grant(&active.grant.id).await? {
            Some(record) if !record.revoked => record,
            _ => return Err(inactive()),
        };
        match service.lookup.update_grant(&record, change.clone()).await? {
            Ok(GrantUpdate::Updated(_)) => {
                updated = true;
                break;
            }
            Ok(GrantUpdate::Conflict(_)) => continue,
            // Unreadable custom data (logged): the grant counts as inactive.
            Ok(GrantUpdate::Gone) | Err(_) => return Err(inactive()),
        }
    }
    service.notify_grant_changed(&active.grant.id).await;
    service.notify_token_changed(&active.hash).await;
    if !updated {
        return Err(OAuthError::new(
            axum::http::StatusCode::CONFLICT,
            "invalid_request",
            "the grant is being changed concurrently; retry",
        ));
    }
    Ok(TokenResponse {
        access_token: subject_token.to_string(),
        token_type: "Bearer",
        expires_in: (active.token.expires_at - now()).max(0),
        scope: scope::join(&scopes),
        refresh_token: None,
        issued_token_type: Some(ACCESS_TOKEN_TYPE),
    })
}

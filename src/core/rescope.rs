//! Giving an existing grant a new scope set (the token-exchange-mutate
//! grant). The token strings stay the same and `exp` is not extended; a
//! scope set without `offline_access` revokes the grant's refresh tokens.

use super::issue::{TokenResponse, ACCESS_TOKEN_TYPE};
use super::{scope, Contention, Error, Grants};
use crate::config::{Client, Config};
use crate::crypto::TokenKind;
use crate::lookup::now;
use crate::store::{GrantChange, GrantUpdate};

/// Attempts at the compare-and-set before giving up under contention.
const CAS_ATTEMPTS: usize = 8;

/// Re-scopes the grant of the access token `subject_token` as `client`
/// asks (`scope`: the new set; omitted: the owner's default).
pub async fn rescope(
    grants: &Grants,
    config: &Config,
    client: &Client,
    subject_token: &str,
    scope: Option<&str>,
) -> Result<TokenResponse, Error> {
    let active = grants
        .lookup()
        .find_active(&client.tenant, subject_token)
        .await?
        .filter(|t| t.token.kind == TokenKind::Access)
        .ok_or(Error::SubjectInactive)?;
    if *active.grant.client_id != *client.id && !client.mutate {
        return Err(Error::UnauthorizedClient(
            "only the token's own client or a mutate client may change its scopes".into(),
        ));
    }
    // The ceiling is what the token's own client may hold: a mutate client
    // changes which of those scopes a token has, it does not lend its own.
    let owner = config
        .clients
        .get(&*active.grant.client_id)
        .ok_or_else(|| {
            Error::InvalidRequest("the subject_token's client is no longer configured".into())
        })?;
    let scopes = scope::for_client(owner, scope)?;
    let change = GrantChange {
        scopes: Some(scopes.clone()),
        custom_sealed: None,
        revoke_refresh_tokens: !scope::has_offline_access(&scopes),
        reset_token_scopes: Some(active.hash),
    };
    let mut updated = false;
    for _ in 0..CAS_ATTEMPTS {
        // The record, not the cached view: the write carries the grant's
        // custom data sealed again for the version it bumps to.
        let record = match grants.find_grant(&active.grant.id).await? {
            Some(record) if !record.revoked => record,
            _ => return Err(Error::SubjectInactive),
        };
        match grants.update(&record, change.clone()).await? {
            Ok(GrantUpdate::Updated(_)) => {
                updated = true;
                break;
            }
            Ok(GrantUpdate::Conflict(_)) => continue,
            // Unreadable custom data (logged): the grant counts as inactive.
            Ok(GrantUpdate::Gone) | Err(_) => return Err(Error::SubjectInactive),
        }
    }
    if !updated {
        return Err(Error::Contended(Contention::Scopes));
    }
    Ok(TokenResponse {
        access_token: subject_token.to_string(),
        token_type: "Bearer",
        expires_in: (active.token.expires_at - now()).max(0),
        scope: scope::join(&scopes),
        refresh_token: None,
        issued_token_type: Some(ACCESS_TOKEN_TYPE),
        grant_id: active.grant.id.to_string(),
        subject: active.grant.subject.to_string(),
    })
}

//! The `refresh_token` grant: rotation with reuse detection. Every use
//! consumes the presented refresh token and returns a new one; presenting a
//! consumed one again outside `refresh_grace` revokes the whole grant (the
//! rule: [`super::rotation`]).

use super::issue::{capped_expiry, whole_seconds, TokenResponse};
use super::{scope, Error, Grants};
use crate::config::{Client, Config};
use crate::crypto::{hash_token, token_kind, TokenKind};
use crate::lookup::now;
use crate::store::{NewToken, Rotation};

/// The error of every refresh token that cannot be used.
fn invalid() -> Error {
    Error::InvalidGrant("the refresh token is invalid, expired or revoked".into())
}

/// Redeems `presented` for `client`, optionally narrowing to `scope`.
pub async fn redeem(
    grants: &Grants,
    config: &Config,
    client: &Client,
    presented: &str,
    scope: Option<&str>,
) -> Result<TokenResponse, Error> {
    if token_kind(presented) != Some(TokenKind::Refresh) {
        return Err(invalid());
    }
    let tenant = &client.tenant;
    let hash = hash_token(tenant, presented);
    // Read from the store, not the cache: a consumed token must reach the
    // rotation below so that its replay is detected.
    let Some((token, grant)) = grants.find_token(tenant, &hash).await? else {
        return Err(invalid());
    };
    let now = now();
    if token.kind != TokenKind::Refresh
        || grant.client_id != client.id
        || token.revoked
        || grant.revoked
        || token.expires_at <= now
    {
        return Err(invalid());
    }
    let held = scope::held(
        grant.scopes.iter().map(String::as_str),
        token.scopes.as_ref().map(|n| n.iter().map(String::as_str)),
    );
    let scopes = match scope {
        None => held.clone(),
        Some(text) => {
            let asked = scope::parse(text)?;
            if let Some(wider) = asked.iter().find(|s| !held.contains(s)) {
                return Err(Error::InvalidScope(format!(
                    "scope `{wider}` was not granted; a refresh may only narrow"
                )));
            }
            asked
        }
    };
    let access = grants.random().token(TokenKind::Access);
    let refresh = grants.random().token(TokenKind::Refresh);
    if grant.not_after.is_some_and(|end| end <= now) {
        // The grant it was derived from has ended, and so has this one.
        return Err(invalid());
    }
    let access_expiry = capped_expiry(now, whole_seconds(client.access_token_ttl), grant.not_after);
    let new_tokens = [
        NewToken {
            hash: hash_token(tenant, &access),
            kind: TokenKind::Access,
            scopes: (scopes != grant.scopes).then(|| scopes.clone()),
            issued_at: now,
            expires_at: access_expiry,
        },
        NewToken {
            hash: hash_token(tenant, &refresh),
            kind: TokenKind::Refresh,
            scopes: token.scopes.clone(),
            issued_at: now,
            expires_at: capped_expiry(
                now,
                whole_seconds(client.refresh_token_ttl),
                grant.not_after,
            ),
        },
    ];
    let grace = whole_seconds(config.tokens.refresh_grace);
    match grants
        .rotate_refresh(&hash, now, grace, &new_tokens)
        .await?
    {
        Rotation::Rotated => Ok(TokenResponse {
            access_token: access,
            token_type: "Bearer",
            expires_in: access_expiry - now,
            scope: scope::join(&scopes),
            refresh_token: Some(refresh),
            issued_token_type: None,
            grant_id: grant.id,
            subject: grant.subject,
        }),
        Rotation::Replayed(revoked) => {
            tracing::warn!(
                client = %client.id,
                grant = %grant.id,
                derived = revoked.len().saturating_sub(1),
                "a consumed refresh token was presented again; the grant and the grants derived from it are revoked"
            );
            Err(Error::RefreshReplayed {
                grant_id: grant.id,
                subject: grant.subject,
            })
        }
        Rotation::Inactive => Err(invalid()),
    }
}

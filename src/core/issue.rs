//! Minting tokens for a new grant, and what a token operation returns
//! (the fields of an RFC 6749 §5.1 response; the token service writes it).

use serde::Serialize;

use super::{scope, Error, Grants};
use crate::config::Client;
use crate::crypto::{hash_token, TokenKind};
use crate::lookup::now;
use crate::store::{GrantRecord, NewToken};

/// RFC 8693 token type of refgate access tokens.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";

/// A configured lifetime in whole seconds, rounded up. Token times are Unix
/// seconds; truncating a sub-second setting (`"500ms"`) would mint tokens
/// that are already expired, or turn a grace window off.
pub fn whole_seconds(duration: std::time::Duration) -> i64 {
    let seconds = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

/// Tokens issued by a grant operation.
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
    /// The grant the tokens belong to (for the audit trail; never sent).
    #[serde(skip)]
    pub grant_id: String,
    /// That grant's subject (for the audit trail; never sent).
    #[serde(skip)]
    pub subject: String,
}

/// What a new grant is made of.
#[derive(Default)]
pub struct NewGrant {
    pub subject: String,
    pub scopes: Vec<String>,
    pub audience: Vec<String>,
    pub actor: Option<serde_json::Value>,
    pub issuer: Option<String>,
    pub claims: Option<serde_json::Value>,
    pub custom: serde_json::Map<String, serde_json::Value>,
    /// Lifetime of the access token in seconds.
    pub access_ttl: i64,
    /// Whether `offline_access` may add a refresh token.
    pub allow_refresh: bool,
    /// The lineage of an exchanged grant: its source grant, which it never
    /// outlives (`not_after`).
    pub parent_id: Option<String>,
    pub not_after: Option<i64>,
    /// Issuer of the id_token the subject came from.
    pub idp: Option<String>,
    /// The route the gateway minted it for.
    pub route: Option<String>,
    /// The subject token to keep, sealed, with the grant.
    pub kept_subject_token: Option<String>,
}

/// A token's expiry: `ttl` seconds from `issued_at`, but never past the
/// grant's `not_after`.
pub fn capped_expiry(issued_at: i64, ttl: i64, not_after: Option<i64>) -> i64 {
    let natural = issued_at.saturating_add(ttl);
    not_after.map_or(natural, |end| natural.min(end))
}

/// Stores a new grant for `client` and returns its first tokens.
pub async fn issue(
    grants: &Grants,
    client: &Client,
    grant: NewGrant,
) -> Result<TokenResponse, Error> {
    let random = grants.random();
    let issued_at = now();
    let grant_id = random.grant_id();
    if grant.not_after.is_some_and(|end| end <= issued_at) {
        return Err(Error::InvalidGrant(
            "the grant this one would derive from has ended".into(),
        ));
    }
    let access = random.token(TokenKind::Access);
    let access_expiry = capped_expiry(issued_at, grant.access_ttl, grant.not_after);
    let mut tokens = vec![NewToken {
        hash: hash_token(&client.tenant, &access),
        kind: TokenKind::Access,
        scopes: None,
        issued_at,
        expires_at: access_expiry,
    }];
    let refresh = (grant.allow_refresh && scope::has_offline_access(&grant.scopes)).then(|| {
        let token = random.token(TokenKind::Refresh);
        tokens.push(NewToken {
            hash: hash_token(&client.tenant, &token),
            kind: TokenKind::Refresh,
            scopes: None,
            issued_at,
            expires_at: capped_expiry(
                issued_at,
                whole_seconds(client.refresh_token_ttl),
                grant.not_after,
            ),
        });
        token
    });
    // A new grant starts at version 1; its custom data is sealed for it.
    let record = GrantRecord {
        id: grant_id.clone(),
        custom_sealed: grants.seal_custom(&grant_id, 1, &grant.custom),
        client_id: client.id.clone(),
        subject: grant.subject,
        scopes: grant.scopes,
        audience: grant.audience,
        actor: grant.actor,
        issuer: grant.issuer,
        claims: grant.claims,
        version: 1,
        created_at: issued_at,
        revoked: false,
        parent_id: grant.parent_id,
        not_after: grant.not_after,
        idp: grant.idp,
        route: grant.route,
        kept_subject_token: grant
            .kept_subject_token
            .map(|token| super::kept::seal(grants, &grant_id, &token)),
        tenant: client.tenant.clone(),
    };
    grants.create(&record, &tokens).await?;
    Ok(TokenResponse {
        access_token: access,
        token_type: "Bearer",
        expires_in: access_expiry - issued_at,
        scope: scope::join(&record.scopes),
        refresh_token: refresh,
        issued_token_type: None,
        grant_id: record.id,
        subject: record.subject,
    })
}

/// The `client_credentials` grant: a token whose subject is the client
/// itself. Never a refresh token (RFC 6749 §4.4.3).
pub async fn client_credentials(
    grants: &Grants,
    client: &Client,
    scope: Option<&str>,
) -> Result<TokenResponse, Error> {
    let mut scopes = scope::for_client(client, scope)?;
    scopes.retain(|s| s != scope::OFFLINE_ACCESS);
    issue(
        grants,
        client,
        NewGrant {
            subject: client.id.clone(),
            scopes,
            access_ttl: whole_seconds(client.access_token_ttl),
            allow_refresh: false,
            ..NewGrant::default()
        },
    )
    .await
}

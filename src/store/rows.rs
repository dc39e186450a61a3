//! The row shapes both stores share: how a grant and a token handle are
//! laid out in columns, and how those columns become records. Each store
//! only reads its driver's values into [`GrantRow`] / [`TokenRow`] (in
//! the order of [`grant_columns!`]); what the values mean is decided here.

use super::{split_scopes, GrantRecord, TokenRecord};
use crate::crypto::{TokenHash, TokenKind};

/// The grant columns every grant query reads, in [`GrantRow`]'s order,
/// for table alias `g`. A macro so that the SQL texts are built at compile
/// time.
macro_rules! grant_columns {
    () => {
        "g.id, g.client_id, g.subject, g.scopes, g.audience, g.actor, \
         g.issuer, g.claims, g.custom, g.version, g.created_at, g.revoked, \
         g.parent_id, g.not_after, g.idp, g.route, g.tenant"
    };
}
pub(crate) use grant_columns;

/// A grant's columns as the driver returns them.
pub(crate) struct GrantRow {
    pub id: String,
    pub client_id: String,
    pub subject: String,
    pub scopes: String,
    pub audience: Option<String>,
    pub actor: Option<String>,
    pub issuer: Option<String>,
    pub claims: Option<String>,
    pub custom: Option<Vec<u8>>,
    pub version: i64,
    pub created_at: i64,
    pub revoked: bool,
    pub parent_id: Option<String>,
    pub not_after: Option<i64>,
    pub idp: Option<String>,
    pub route: Option<String>,
    pub tenant: String,
}

/// Why stored columns do not make a record.
#[derive(Debug, thiserror::Error)]
#[error("stored {column} is unreadable: {why}")]
pub(crate) struct BadColumn {
    pub column: &'static str,
    why: String,
}

fn json_column(
    column: &'static str,
    text: Option<String>,
) -> Result<Option<serde_json::Value>, BadColumn> {
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| BadColumn {
            column,
            why: e.to_string(),
        })
    })
    .transpose()
}

impl GrantRow {
    pub fn into_record(self) -> Result<GrantRecord, BadColumn> {
        // `aud` is a JSON array of strings; anything else reads as unset.
        let audience = match json_column("audience", self.audience)? {
            Some(serde_json::Value::Array(items)) => items
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        Ok(GrantRecord {
            id: self.id,
            client_id: self.client_id,
            subject: self.subject,
            scopes: split_scopes(&self.scopes),
            audience,
            actor: json_column("actor", self.actor)?,
            issuer: self.issuer,
            claims: json_column("claims", self.claims)?,
            custom_sealed: self.custom,
            version: self.version,
            created_at: self.created_at,
            revoked: self.revoked,
            parent_id: self.parent_id,
            not_after: self.not_after,
            idp: self.idp,
            route: self.route,
            kept_subject_token: None,
            tenant: self.tenant,
        })
    }
}

/// The text columns of a grant to insert.
pub(crate) struct GrantText {
    pub scopes: String,
    pub audience: Option<String>,
    pub actor: Option<String>,
    pub claims: Option<String>,
}

impl GrantText {
    pub fn of(grant: &GrantRecord) -> Self {
        GrantText {
            scopes: super::join_scopes(&grant.scopes),
            audience: (!grant.audience.is_empty())
                .then(|| serde_json::Value::from(grant.audience.clone()).to_string()),
            actor: grant.actor.as_ref().map(|v| v.to_string()),
            claims: grant.claims.as_ref().map(|v| v.to_string()),
        }
    }
}

/// A token handle's columns as the driver returns them.
pub(crate) struct TokenRow {
    pub hash: TokenHash,
    pub grant_id: String,
    pub kind: i64,
    pub scopes: Option<String>,
    pub issued_at: i64,
    pub expires_at: i64,
    pub revoked: bool,
    pub consumed_at: Option<i64>,
}

impl TokenRow {
    pub fn into_record(self) -> Result<TokenRecord, BadColumn> {
        let kind = TokenKind::from_code(self.kind).ok_or_else(|| BadColumn {
            column: "kind",
            why: "unknown token kind".into(),
        })?;
        Ok(TokenRecord {
            hash: self.hash,
            grant_id: self.grant_id,
            kind,
            scopes: self.scopes.map(|s| split_scopes(&s)),
            issued_at: self.issued_at,
            expires_at: self.expires_at,
            revoked: self.revoked,
            consumed_at: self.consumed_at,
        })
    }
}

/// What a rotation reads about the presented refresh token, in this
/// order: `t.grant_id, t.kind, t.expires_at, t.revoked, t.consumed_at,
/// g.revoked` (see [`crate::core::rotation`] for the rule).
macro_rules! rotation_columns {
    () => {
        "t.grant_id, t.kind, t.expires_at, t.revoked, t.consumed_at, g.revoked"
    };
}
pub(crate) use rotation_columns;

/// The presented token as the rule sees it; an unknown kind is never a
/// refresh token.
pub(crate) fn presented(
    kind: i64,
    expires_at: i64,
    revoked: bool,
    consumed_at: Option<i64>,
    grant_revoked: bool,
) -> crate::core::rotation::Presented {
    crate::core::rotation::Presented {
        kind: TokenKind::from_code(kind).unwrap_or(TokenKind::Access),
        expires_at,
        revoked,
        grant_revoked,
        consumed_at,
    }
}

/// Orders the ids a revocation returns as [`super::Store::revoke_grant`]
/// promises: the revoked grant's own id first.
pub(crate) fn own_first(ids: &mut [String], id: &str) {
    if let Some(own) = ids.iter().position(|g| g == id) {
        ids.swap(0, own);
    }
}

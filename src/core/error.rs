//! The one error type of the grant operations. It names what went wrong in
//! the domain; each adapter decides what that looks like on its wire (the
//! token service: RFC 6749 JSON, see `token::error`; the gateway: SPEC 4.5).
//! Descriptions never hold a token, a secret or custom data.

use crate::lookup::LookupError;
use crate::store::StoreError;

/// Which concurrent change an operation gave up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contention {
    /// A merge patch on custom data without `if_version`.
    CustomData,
    /// A new scope set for a grant.
    Scopes,
}

/// Why a grant operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The request is malformed or names something that does not fit.
    #[error("{0}")]
    InvalidRequest(String),
    /// The client is unknown or may not act as asked.
    #[error("{0}")]
    InvalidClient(String),
    /// The client may not use this operation.
    #[error("{0}")]
    UnauthorizedClient(String),
    /// The presented grant (refresh token, subject) is not usable.
    #[error("{0}")]
    InvalidGrant(String),
    /// A consumed refresh token was presented again: its grant and the
    /// grants derived from it are revoked (an `invalid_grant` on the wire).
    #[error("the refresh token was already used; the grant has been revoked")]
    RefreshReplayed { grant_id: String, subject: String },
    #[error("{0}")]
    InvalidScope(String),
    /// An audience or resource the client may not obtain tokens for.
    #[error("{0}")]
    InvalidTarget(String),
    /// The subject token of an exchange is not an active access token.
    #[error("the subject_token is not an active access token")]
    SubjectInactive,
    /// The token whose grant is to change is not an active access token.
    #[error("the token is not an active access token")]
    TokenInactive,
    /// `if_version` does not match; the grant is at `version`.
    #[error("if_version does not match; the current version is {version}")]
    Conflict { version: i64 },
    /// Other writers kept winning the compare-and-set.
    #[error("the grant is being changed concurrently; retry")]
    Contended(Contention),
    /// Custom data would exceed its size limit.
    #[error("{0}")]
    TooLarge(String),
    /// The store failed; the reason is for the log only.
    #[error("the token store is unavailable: {0}")]
    Unavailable(String),
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::Unavailable(e.to_string())
    }
}

impl From<LookupError> for Error {
    fn from(e: LookupError) -> Self {
        match e {
            LookupError::Store(inner) => Error::Unavailable(inner.to_string()),
        }
    }
}

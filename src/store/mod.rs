//! Persistence of grants and token handles behind the [`Store`] trait.
//!
//! A store keeps grants (one authorization each: client, subject, scopes,
//! audience, actor, sealed custom data, version, revoked flag) and token
//! handles pointing at them. It stores only SHA-256 hashes of token strings
//! and only sealed custom data: sealing happens before a record reaches the
//! store, so a store never sees plaintext custom data or a token string.
//!
//! `rows` holds what both backends share (the column layout and the
//! mapping of rows to records); the rules they apply inside their
//! transactions (refresh rotation, the version check) are in
//! [`crate::core`].

mod pg_lookups;
mod postgres;
mod rows;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::StoreUrl;
use crate::crypto::{KeyId, TokenHash, TokenKind};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Seconds since the Unix epoch.
pub type UnixTime = i64;

/// Whose grants: one subject's, or one client's, within one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantsOf {
    /// The tenant (empty: the top level).
    pub tenant: String,
    pub owner: Owner,
}

/// A subject, or a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Subject(String),
    Client(String),
}

impl GrantsOf {
    pub fn subject(tenant: &str, subject: impl Into<String>) -> Self {
        GrantsOf {
            tenant: tenant.to_string(),
            owner: Owner::Subject(subject.into()),
        }
    }

    pub fn client(tenant: &str, client: impl Into<String>) -> Self {
        GrantsOf {
            tenant: tenant.to_string(),
            owner: Owner::Client(client.into()),
        }
    }

    /// The grants column it filters on (besides `tenant`), and the value.
    pub fn filter(&self) -> (&'static str, &str) {
        match &self.owner {
            Owner::Subject(s) => ("subject", s),
            Owner::Client(c) => ("client_id", c),
        }
    }
}

/// A grant as stored.
#[derive(Debug, Clone, Default)]
pub struct GrantRecord {
    pub id: String,
    pub client_id: String,
    pub subject: String,
    pub scopes: Vec<String>,
    /// `aud`: empty when unset.
    pub audience: Vec<String>,
    /// `act` (RFC 8693 §4.1), as JSON.
    pub actor: Option<serde_json::Value>,
    /// `iss` asserted by an arbitrary_token caller; `None` means refgate itself.
    pub issuer: Option<String>,
    /// Extra top-level introspection claims (a JSON object).
    pub claims: Option<serde_json::Value>,
    /// Custom data sealed with the data key; `None` when empty.
    pub custom_sealed: Option<Vec<u8>>,
    pub version: i64,
    pub created_at: UnixTime,
    pub revoked: bool,
    /// The grant this one was made from by token exchange: revoking that
    /// one revokes this one.
    pub parent_id: Option<String>,
    /// No token of this grant lives past this time (the source grant's end).
    pub not_after: Option<UnixTime>,
    /// The issuer of the id_token the subject came from; `None` when the
    /// subject is a client of refgate's or came from one of its tokens
    /// without an issuer.
    pub idp: Option<String>,
    /// The route whose upstream the gateway minted this grant for (a
    /// transparent exchange); its tokens are admitted on no other route.
    pub route: Option<String>,
    /// The subject token the grant was exchanged from, sealed (see
    /// [`crate::core::kept`]). Written when the grant is created; grant
    /// reads leave it `None`: only [`Store::kept_subject_token`] reads it.
    pub kept_subject_token: Option<Vec<u8>>,
    /// The tenant it belongs to (empty: the top level).
    pub tenant: String,
}

impl GrantRecord {
    /// The namespace of `subject` (see [`crate::lookup::Grant::subject_issuer`]).
    pub fn subject_issuer(&self) -> Option<&str> {
        self.idp.as_deref().or(self.issuer.as_deref())
    }
}

/// A token handle as stored.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub hash: TokenHash,
    pub grant_id: String,
    pub kind: TokenKind,
    /// A narrower scope set than the grant's (a refresh asked for less).
    pub scopes: Option<Vec<String>>,
    pub issued_at: UnixTime,
    pub expires_at: UnixTime,
    pub revoked: bool,
    /// When a refresh token was used up by rotation.
    pub consumed_at: Option<UnixTime>,
}

/// A token to insert.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub hash: TokenHash,
    pub kind: TokenKind,
    pub scopes: Option<Vec<String>>,
    pub issued_at: UnixTime,
    pub expires_at: UnixTime,
}

/// The outcome of presenting a refresh token for rotation.
#[derive(Debug)]
pub enum Rotation {
    /// The token was consumed and the new tokens stored.
    Rotated,
    /// The token was consumed before, outside the grace window: the whole
    /// grant has been revoked, with every grant derived from it (their ids,
    /// the grant's first).
    Replayed(Vec<String>),
    /// Unknown, expired, revoked, or its grant is revoked.
    Inactive,
}

/// The outcome of a compare-and-set on a grant.
#[derive(Debug, PartialEq, Eq)]
pub enum GrantUpdate {
    /// Written; the grant now has this version.
    Updated(i64),
    /// The grant's version was not the expected one; it is now this one.
    Conflict(i64),
    /// The grant does not exist or is revoked.
    Gone,
}

/// New values for a grant; `None` leaves a field alone.
#[derive(Debug, Default, Clone)]
pub struct GrantChange {
    pub scopes: Option<Vec<String>>,
    /// `Some(None)` clears the custom data.
    pub custom_sealed: Option<Option<Vec<u8>>>,
    /// Revoke every refresh token of the grant in the same write.
    pub revoke_refresh_tokens: bool,
    /// Clear the narrowed scope of this token in the same write.
    pub reset_token_scopes: Option<TokenHash>,
}

/// A grant's sealed custom data as stored, for sealing it again.
#[derive(Debug, Clone)]
pub struct SealedCustom {
    pub grant_id: String,
    pub version: i64,
    pub sealed: Vec<u8>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store data is inconsistent: {0}")]
    Corrupt(String),
}

/// The persistence interface the token service and the gateway share.
/// Every method is atomic on its own.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Checks that the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Inserts a new grant with its first tokens.
    async fn create_grant(
        &self,
        grant: &GrantRecord,
        tokens: &[NewToken],
    ) -> Result<(), StoreError>;

    /// Looks a token up with its grant.
    async fn find_token(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<(TokenRecord, GrantRecord)>, StoreError>;

    /// Loads a grant by id.
    async fn find_grant(&self, id: &str) -> Result<Option<GrantRecord>, StoreError>;

    /// Atomically consumes a refresh token and stores its successors. Of
    /// concurrent calls with one token exactly one gets `Rotated`, unless the
    /// token was consumed less than `grace` seconds ago. `now` is read by the
    /// caller before it waits for the store, so it may be earlier than the
    /// recorded consumption time: a `grace` of 0 must still mean no window.
    async fn rotate_refresh(
        &self,
        old: &TokenHash,
        now: UnixTime,
        grace: i64,
        new_tokens: &[NewToken],
    ) -> Result<Rotation, StoreError>;

    /// The sealed subject token a live (not revoked) grant keeps.
    async fn kept_subject_token(&self, grant_id: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Live grants whose kept subject token does not start with `header`,
    /// with ids after `after`, in id order, at most `limit`: each grant's
    /// id and sealed token.
    async fn kept_sealed_otherwise(
        &self,
        header: &[u8],
        after: &str,
        limit: u32,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Replaces a live grant's kept subject token with `resealed` (the
    /// same token sealed again) if it is still `current`. Returns whether
    /// it was replaced.
    async fn reseal_kept(
        &self,
        grant_id: &str,
        current: &[u8],
        resealed: &[u8],
    ) -> Result<bool, StoreError>;

    /// Revokes one token; returns whether it existed.
    async fn revoke_token(&self, hash: &TokenHash) -> Result<bool, StoreError>;

    /// Revokes a grant and so every token pointing at it, and every grant
    /// derived from it by exchange, transitively. Returns the ids of all
    /// grants revoked (the grant's own first; empty when it does not exist).
    async fn revoke_grant(&self, id: &str) -> Result<Vec<String>, StoreError>;

    /// The ids of the grants of a subject or client that are not revoked,
    /// oldest first.
    async fn live_grants_of(&self, owner: &GrantsOf) -> Result<Vec<String>, StoreError>;

    /// Grants of a subject or client, revoked ones included, newest first:
    /// at most `limit`, all created before `before` (`created_at`, `id`)
    /// when given.
    async fn list_grants(
        &self,
        owner: &GrantsOf,
        before: Option<&(UnixTime, String)>,
        limit: u32,
    ) -> Result<Vec<GrantRecord>, StoreError>;

    /// The latest expiry among the live tokens of a grant, capped by its
    /// own `not_after`: how long the grant can still be used. `None` when it
    /// has no live token (or does not exist).
    async fn grant_expiry(&self, id: &str, now: UnixTime) -> Result<Option<UnixTime>, StoreError>;

    /// Applies `change` if the grant is at `expected_version`, bumping it.
    /// Sealed custom data is bound to the version: a change that keeps the
    /// custom data must carry it sealed again for the new version, which
    /// [`crate::core::Grants::update`] does.
    async fn update_grant(
        &self,
        id: &str,
        expected_version: i64,
        change: &GrantChange,
    ) -> Result<GrantUpdate, StoreError>;

    /// Live (not revoked) grants whose sealed custom data does not start
    /// with `header`, with ids after `after`, in id order, at most `limit`.
    async fn sealed_otherwise(
        &self,
        header: &[u8],
        after: &str,
        limit: u32,
    ) -> Result<Vec<SealedCustom>, StoreError>;

    /// Replaces a grant's sealed custom data with `resealed` (the same data
    /// sealed again) if it is still `current.sealed` at `current.version`
    /// and the grant is live. The version stays as it is. Returns whether
    /// it was replaced.
    async fn reseal_custom(
        &self,
        current: &SealedCustom,
        resealed: &[u8],
    ) -> Result<bool, StoreError>;

    /// How many live grants hold custom data, by the key id their blob
    /// names (`None`: sealed before blobs named their key).
    async fn count_sealed_by_key(&self) -> Result<Vec<(Option<KeyId>, u64)>, StoreError>;

    /// Takes the lease `key` for `holder` until `until`, unless another
    /// holder has it past `now`. Returns whether `holder` holds it now.
    async fn try_lease(
        &self,
        key: &str,
        holder: &str,
        now: UnixTime,
        until: UnixTime,
    ) -> Result<bool, StoreError>;

    /// Gives a lease back early.
    async fn release_lease(&self, key: &str, holder: &str) -> Result<(), StoreError>;

    /// Deletes tokens that expired before `before` and grants left without
    /// tokens; returns how many tokens went.
    async fn purge_expired(&self, before: UnixTime) -> Result<u64, StoreError>;

    /// Signing keys that sign after `signs_after`, and always the latest
    /// generation, in generation order.
    async fn signing_keys(
        &self,
        tenant: &str,
        signs_after: UnixTime,
    ) -> Result<Vec<SigningKeyRecord>, StoreError>;

    /// Adds `key` unless its generation exists already (another instance
    /// or a forced rotation was first: `false`). In the same transaction,
    /// every earlier key that would still sign at `key.signs_from` is cut
    /// short to end there, so at most one key signs at any time.
    async fn add_signing_key(&self, key: &SigningKeyRecord) -> Result<bool, StoreError>;

    /// Deletes the signing keys whose turn ended before `before`, except
    /// the latest generation (the next one is numbered after it). Returns
    /// how many went.
    async fn purge_signing_keys(&self, tenant: &str, before: UnixTime) -> Result<u64, StoreError>;

    /// Replaces the sealed private key of generation `generation` with
    /// `resealed` (the same key sealed with the current data key) if it is
    /// still `current`. Returns whether it was replaced.
    async fn reseal_signing_key(
        &self,
        tenant: &str,
        generation: i64,
        current: &[u8],
        resealed: &[u8],
    ) -> Result<bool, StoreError>;

    /// Adds a device authorization; `false` when its user code hash is
    /// taken already (the caller draws another code).
    async fn create_device_code(&self, record: &DeviceCodeRecord) -> Result<bool, StoreError>;

    /// Records a person's decision on the pending device authorization
    /// with the user code hash `user_hash`, if it is still pending and
    /// unexpired at `now`. Returns whether it was.
    async fn decide_device_code(
        &self,
        tenant: &str,
        user_hash: &TokenHash,
        now: UnixTime,
        decision: &DeviceStatus,
    ) -> Result<bool, StoreError>;

    /// A poll of `client_id` with the device code hash `device_hash` at
    /// `now_ms` (milliseconds): atomically applies
    /// [`crate::core::device::decide`] (poll time, `slow_down`, consuming an
    /// approved code) and returns its answer.
    async fn poll_device_code(
        &self,
        tenant: &str,
        device_hash: &TokenHash,
        client_id: &str,
        now_ms: i64,
    ) -> Result<DevicePoll, StoreError>;

    /// Changes made by other instances sharing this store, for cache
    /// invalidation. `None` when the store is not shared (SQLite).
    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<Invalidation>> {
        None
    }
}

/// A device authorization (RFC 8628) as stored: hashes of its device code
/// and of its normalised user code, never the codes.
#[derive(Debug, Clone)]
pub struct DeviceCodeRecord {
    /// The tenant it belongs to (empty: the top level).
    pub tenant: String,
    pub device_hash: TokenHash,
    pub user_hash: TokenHash,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub status: DeviceStatus,
    pub expires_at: UnixTime,
    /// Least seconds between two polls; raised by each `slow_down`.
    pub interval: i64,
    /// When the device last polled, in milliseconds since the epoch.
    pub last_poll_ms: Option<i64>,
    /// Tokens were issued for it; it answers nothing any more.
    pub consumed: bool,
}

/// Where a device authorization stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceStatus {
    Pending,
    /// A person approved it as `subject` of the issuer `idp`.
    Approved {
        subject: String,
        idp: String,
    },
    Denied,
}

impl DeviceStatus {
    /// The stored status column.
    pub(crate) fn code(&self) -> i64 {
        match self {
            DeviceStatus::Pending => 0,
            DeviceStatus::Approved { .. } => 1,
            DeviceStatus::Denied => 2,
        }
    }

    /// A status from its columns.
    pub(crate) fn from_columns(
        code: i64,
        subject: Option<String>,
        idp: Option<String>,
    ) -> Result<Self, StoreError> {
        match (code, subject, idp) {
            (0, _, _) => Ok(DeviceStatus::Pending),
            (1, Some(subject), Some(idp)) => Ok(DeviceStatus::Approved { subject, idp }),
            (2, _, _) => Ok(DeviceStatus::Denied),
            _ => Err(StoreError::Corrupt("bad device code status".into())),
        }
    }
}

/// What a device's poll found (the rule is [`crate::core::device::decide`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevicePoll {
    /// No such device code for this client, or it was used already.
    Unknown,
    Expired,
    /// Polled too soon; its interval is now this many seconds.
    SlowDown(i64),
    Pending,
    Denied,
    /// Approved: consumed by this poll, for `subject` of `idp`.
    Approved {
        subject: String,
        idp: String,
        scopes: Vec<String>,
    },
}

/// A signing key as stored: the private half sealed with the data key.
#[derive(Clone)]
pub struct SigningKeyRecord {
    /// The tenant whose tokens it signs (empty: the top level).
    pub tenant: String,
    /// The turn of the schedule this key serves; unique within its tenant,
    /// counting up.
    pub generation: i64,
    /// RFC 7638 thumbprint of the public key.
    pub kid: String,
    /// JWS `alg`.
    pub algorithm: String,
    /// The public key as a JWK (JSON text).
    pub public_jwk: String,
    /// The PKCS#8 private key sealed with the data key.
    pub private_sealed: Vec<u8>,
    pub created_at: UnixTime,
    /// The key signs from this time...
    pub signs_from: UnixTime,
    /// ...until this one (a later key that starts earlier cuts it short).
    pub signs_until: UnixTime,
}

impl std::fmt::Debug for SigningKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRecord")
            .field("generation", &self.generation)
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("signs_from", &self.signs_from)
            .field("signs_until", &self.signs_until)
            .finish_non_exhaustive()
    }
}

/// A change another instance made that cached lookups must forget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    Grant(String),
    Token(TokenHash),
    /// Notifications may have been lost: forget everything.
    All,
}

impl Invalidation {
    /// The NOTIFY payload: `g:<grant id>` or `t:<hex of the token hash>`.
    pub fn to_payload(&self) -> String {
        match self {
            Invalidation::Grant(id) => format!("g:{id}"),
            Invalidation::Token(hash) => format!("t:{}", hex::encode(hash.0)),
            Invalidation::All => "*".to_string(),
        }
    }

    pub fn parse(payload: &str) -> Option<Self> {
        if payload == "*" {
            return Some(Invalidation::All);
        }
        if let Some(id) = payload.strip_prefix("g:") {
            return Some(Invalidation::Grant(id.to_string()));
        }
        let hex_hash = payload.strip_prefix("t:")?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_hash, &mut bytes).ok()?;
        Some(Invalidation::Token(TokenHash(bytes)))
    }
}

/// Opens the store a URL names, running migrations.
pub async fn open(url: &StoreUrl, max_connections: u32) -> Result<Arc<dyn Store>, StoreError> {
    match url {
        StoreUrl::Sqlite(path) => Ok(Arc::new(SqliteStore::open(path, max_connections).await?)),
        StoreUrl::Postgres(url) => Ok(Arc::new(
            PostgresStore::open(url.expose(), max_connections).await?,
        )),
    }
}

/// The key id named by the first bytes of a blob, as the stores' survey
/// queries return them: the format byte and, for a blob that names its
/// key, the key id.
pub(crate) fn key_id_column(bytes: Option<Vec<u8>>) -> Option<KeyId> {
    let bytes = bytes?;
    let id: [u8; crate::crypto::KEY_ID_LEN] = bytes.as_slice().try_into().ok()?;
    Some(KeyId(id))
}

/// Joins scopes for storage.
pub(crate) fn join_scopes(scopes: &[String]) -> String {
    scopes.join(" ")
}

/// Splits stored scopes.
pub(crate) fn split_scopes(text: &str) -> Vec<String> {
    text.split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

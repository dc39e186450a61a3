//! Token lookup through an in-process cache, shared by introspection and
//! the gateway. Keys are token hashes, never token strings.
//!
//! - `grant`: the compact view of a grant that lookups return and the cache
//!   keeps ([`Grant`]);
//! - `cache`: the bounded token cache with its deadlines, coalesced misses
//!   and invalidation fences;
//! - [`reseal`]: keeps sealed custom data on the current data key.
//!
//! A lookup of a token reads its handle and its grant in one store call and
//! caches both in one entry. Changes made through this process invalidate
//! the affected entries at once, including a load that was in flight when
//! the change happened.

mod cache;
mod grant;
pub mod reseal;

use std::sync::Arc;

pub use cache::CacheSettings;
pub use grant::{Grant, Scopes};

use crate::credential::Credentials;
use crate::crypto::{hash_token, token_kind, DataKeys, OpenError, TokenHash, TokenKind};
use crate::store::{GrantRecord, Store, StoreError, TokenRecord, UnixTime};
use cache::{Cacheable, TokenCache};
use grant::Interner;

/// The per-token part of a lookup.
#[derive(Debug, Clone)]
pub struct TokenState {
    pub kind: TokenKind,
    /// A narrower scope set than the grant's (a refresh asked for less).
    pub scopes: Option<Scopes>,
    pub issued_at: UnixTime,
    pub expires_at: UnixTime,
}

/// An active token with its grant.
#[derive(Debug, Clone)]
pub struct ActiveToken {
    pub hash: TokenHash,
    pub token: TokenState,
    pub grant: Arc<Grant>,
}

impl ActiveToken {
    /// The scopes this token carries: the grant's, narrowed if the token was
    /// issued for fewer.
    pub fn scopes(&self) -> Vec<String> {
        crate::core::scope::held(
            self.grant.scopes.iter(),
            self.token.scopes.as_ref().map(Scopes::iter),
        )
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.grant.scopes.contains(scope)
            && self
                .token
                .scopes
                .as_ref()
                .is_none_or(|narrow| narrow.contains(scope))
    }
}

/// What the cache keeps of an active token.
#[derive(Clone)]
struct Cached {
    token: TokenState,
    grant: Arc<Grant>,
}

impl Cacheable for Cached {
    fn grant_id(&self) -> &str {
        &self.grant.id
    }

    fn expires_at(&self) -> UnixTime {
        self.token.expires_at
    }
}

/// Why a lookup could not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LookupError {
    #[error(transparent)]
    Store(Arc<StoreError>),
}

/// A grant whose custom data does not open: sealed with a data key that is
/// not configured, altered, or rolled back to an older version's blob.
/// Such a grant is treated as inactive everywhere; its data is never shown.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the custom data of grant {grant_id} cannot be read: {why}")]
pub struct Unreadable {
    pub grant_id: String,
    why: String,
}

impl Unreadable {
    fn new(grant_id: &str, why: impl std::fmt::Display) -> Self {
        let unreadable = Unreadable {
            grant_id: grant_id.to_string(),
            why: why.to_string(),
        };
        tracing::error!(
            grant = grant_id,
            reason = %unreadable.why,
            "custom data cannot be read; the grant is treated as inactive"
        );
        unreadable
    }
}

impl From<StoreError> for LookupError {
    fn from(e: StoreError) -> Self {
        LookupError::Store(Arc::new(e))
    }
}

/// Current Unix time in seconds.
pub fn now() -> UnixTime {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Looks tokens up, through the cache.
pub struct TokenLookup {
    store: Arc<dyn Store>,
    data_keys: Arc<DataKeys>,
    cache: TokenCache<Cached>,
    interner: Interner,
}

impl TokenLookup {
    pub fn new(store: Arc<dyn Store>, data_keys: Arc<DataKeys>, settings: &CacheSettings) -> Self {
        TokenLookup {
            store,
            data_keys,
            cache: TokenCache::new(settings),
            interner: Interner::default(),
        }
    }

    /// The store behind the cache. Writes go through
    /// [`crate::core::Grants`], which forgets what they change.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn data_keys(&self) -> &Arc<DataKeys> {
        &self.data_keys
    }

    /// Opens a stored grant into the lookup view: checks that its custom
    /// data opens with the data keys and prepares the downstream
    /// credentials in it.
    pub fn open_grant(&self, record: GrantRecord) -> Result<Grant, Unreadable> {
        let credentials = match &record.custom_sealed {
            None => Credentials::default(),
            Some(sealed) => {
                let plain = self.open_sealed(&record.id, record.version, sealed)?;
                Credentials::from_json(&plain)
                    .ok_or_else(|| Unreadable::new(&record.id, "not a JSON object"))?
            }
        };
        Ok(Grant::new(record, credentials, &self.interner))
    }

    /// A stored grant's custom data: a JSON object, empty when none was
    /// stored.
    pub fn open_custom(
        &self,
        record: &GrantRecord,
    ) -> Result<serde_json::Map<String, serde_json::Value>, Unreadable> {
        let Some(sealed) = record.custom_sealed.as_deref() else {
            return Ok(serde_json::Map::new());
        };
        let plain = self.open_sealed(&record.id, record.version, sealed)?;
        match serde_json::from_slice(&plain) {
            Ok(serde_json::Value::Object(map)) => Ok(map),
            _ => Err(Unreadable::new(&record.id, "not a JSON object")),
        }
    }

    fn open_sealed(
        &self,
        grant_id: &str,
        version: i64,
        sealed: &[u8],
    ) -> Result<Vec<u8>, Unreadable> {
        self.data_keys
            .open(grant_id, version, sealed)
            .map(|opened| opened.plain)
            .map_err(|e: OpenError| Unreadable::new(grant_id, e))
    }

    /// Seals custom data for storage in grant `grant_id` at `version`;
    /// `None` for an empty object.
    pub fn seal_custom(
        &self,
        grant_id: &str,
        version: i64,
        custom: &serde_json::Map<String, serde_json::Value>,
    ) -> Option<Vec<u8>> {
        if custom.is_empty() {
            return None;
        }
        let plain = serde_json::to_vec(custom).expect("a JSON map always serializes");
        Some(self.data_keys.seal(grant_id, version, &plain))
    }

    /// The custom data of `record` sealed again for the version that a
    /// write at `record.version` gives the grant. Sealed blobs are bound to
    /// their grant's version, so every write that bumps the version and
    /// leaves the custom data as it is must carry this (see
    /// [`crate::core::Grants::update`]). `None`: the grant has no custom data.
    pub fn reseal_for_next_version(
        &self,
        record: &GrantRecord,
    ) -> Result<Option<Vec<u8>>, Unreadable> {
        let Some(sealed) = record.custom_sealed.as_deref() else {
            return Ok(None);
        };
        let plain = self.open_sealed(&record.id, record.version, sealed)?;
        Ok(Some(self.data_keys.seal(
            &record.id,
            record.version + 1,
            &plain,
        )))
    }

    /// Finds an active token of any kind issued in `tenant` (empty: the top
    /// level). `Ok(None)` means inactive: unknown, malformed, expired,
    /// revoked, consumed, its grant revoked, or another tenant's.
    pub async fn find_active(
        &self,
        tenant: &str,
        token: &str,
    ) -> Result<Option<ActiveToken>, LookupError> {
        if token_kind(token).is_none() {
            return Ok(None);
        }
        self.find_active_hash(tenant, hash_token(tenant, token))
            .await
    }

    /// As [`TokenLookup::find_active`], by hash.
    pub async fn find_active_hash(
        &self,
        tenant: &str,
        hash: TokenHash,
    ) -> Result<Option<ActiveToken>, LookupError> {
        self.find_active_counted(tenant, hash)
            .await
            .map(|(found, _)| found)
    }

    /// As [`TokenLookup::find_active_hash`], also telling whether the token
    /// came from the cache (`true`) or had to be loaded. A tenant's hashes
    /// cover its name, so another tenant's token is not found; the grant's
    /// own tenant is checked as well.
    pub async fn find_active_counted(
        &self,
        tenant: &str,
        hash: TokenHash,
    ) -> Result<(Option<ActiveToken>, bool), LookupError> {
        // Expiry is checked once: by the load (`is_active`) for a value
        // just read, by the cache for a cached one.
        let (found, hit) = self
            .cache
            .get_or_load(hash, || self.load_token(hash))
            .await?;
        let active = found
            .filter(|c| c.grant.tenant() == tenant)
            .map(|c| ActiveToken {
                hash,
                token: c.token,
                grant: c.grant,
            });
        Ok((active, hit))
    }

    /// Loads a grant from the store, bypassing the cache; `None` when it is
    /// revoked, gone or unreadable.
    pub async fn find_grant_fresh(&self, id: &str) -> Result<Option<Arc<Grant>>, LookupError> {
        match self.store.find_grant(id).await? {
            Some(record) if !record.revoked => Ok(self.open_grant(record).ok().map(Arc::new)),
            _ => Ok(None),
        }
    }

    async fn load_token(&self, hash: TokenHash) -> Result<Option<Cached>, LookupError> {
        let Some((token, grant)) = self.store.find_token(&hash).await? else {
            return Ok(None);
        };
        if !is_active(&token, &grant) {
            return Ok(None);
        }
        let Ok(grant) = self.open_grant(grant) else {
            return Ok(None);
        };
        Ok(Some(Cached {
            token: TokenState {
                kind: token.kind,
                scopes: token.scopes.map(|s| self.interner.scopes(&s)),
                issued_at: token.issued_at,
                expires_at: token.expires_at,
            },
            grant: Arc::new(grant),
        }))
    }

    /// Forgets a token (after it was revoked or consumed). Call it after
    /// the store write.
    pub async fn invalidate_token(&self, hash: &TokenHash) {
        self.cache.invalidate_token(hash);
    }

    /// Forgets a grant (after it was revoked, mutated or re-scoped). Call it
    /// after the store write.
    pub async fn invalidate_grant(&self, id: &str) {
        self.cache.invalidate_grant(id);
    }

    /// Forgets everything (e.g. after losing the invalidation feed).
    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }
}

/// Whether a stored token is active now: not revoked, not consumed, not
/// expired, and its grant not revoked.
pub fn is_active(token: &TokenRecord, grant: &GrantRecord) -> bool {
    !token.revoked && token.consumed_at.is_none() && !grant.revoked && token.expires_at > now()
}

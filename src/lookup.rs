//! Token lookup through an in-process cache (moka), shared by introspection
//! and the gateway. Keys are token hashes, never token strings.
//!
//! Two caches: token hash → token state, and grant id → decoded grant. A
//! token entry never outlives the token's `exp` nor `cache_max_ttl`; unknown
//! or inactive tokens are remembered for `negative_cache_ttl`. Changes made
//! through this process invalidate the affected entries at once, including
//! a load that was in flight when the change happened (see `Fences`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::Expiry;

use crate::credential::{self, Credential};
use crate::crypto::{hash_token, token_kind, DataKey, TokenHash, TokenKind};
use crate::store::{GrantRecord, Store, StoreError, TokenRecord, UnixTime};

/// A grant with its custom data opened.
#[derive(Debug, Clone)]
pub struct Grant {
    pub id: String,
    pub client_id: String,
    pub subject: String,
    pub scopes: Vec<String>,
    pub audience: Vec<String>,
    pub actor: Option<serde_json::Value>,
    pub issuer: Option<String>,
    pub claims: Option<serde_json::Value>,
    /// The custom data, still sealed: cached entries stay small, and only
    /// callers that show or change it open it ([`TokenLookup::open_custom`]).
    pub sealed_custom: Option<Arc<[u8]>>,
    /// `custom.credentials`, parsed for the gateway.
    pub credentials: HashMap<String, Arc<Credential>>,
    pub version: i64,
    pub created_at: UnixTime,
}

/// The per-token part of a lookup.
#[derive(Debug, Clone)]
pub struct TokenState {
    pub grant_id: String,
    pub kind: TokenKind,
    pub scopes: Option<Vec<String>>,
    pub issued_at: UnixTime,
    pub expires_at: UnixTime,
}

/// An active token with its grant.
#[derive(Debug, Clone)]
pub struct ActiveToken {
    pub hash: TokenHash,
    pub token: Arc<TokenState>,
    pub grant: Arc<Grant>,
}

impl ActiveToken {
    /// The scopes this token carries: the grant's, narrowed if the token was
    /// issued for fewer.
    pub fn scopes(&self) -> Vec<String> {
        match &self.token.scopes {
            None => self.grant.scopes.clone(),
            Some(narrow) => narrow
                .iter()
                .filter(|s| self.grant.scopes.contains(s))
                .cloned()
                .collect(),
        }
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.grant.scopes.iter().any(|s| s == scope)
            && self
                .token
                .scopes
                .as_ref()
                .is_none_or(|narrow| narrow.iter().any(|s| s == scope))
    }
}

/// Cache sizes and lifetimes.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub capacity: u64,
    pub max_ttl: Duration,
    pub negative_ttl: Duration,
}

/// A cached value with the invalidation epoch at which its load began.
#[derive(Debug, Clone)]
struct Loaded<T> {
    value: T,
    epoch: u64,
}

type TokenEntry = Loaded<Option<Arc<TokenState>>>;
type GrantEntry = Loaded<Option<Arc<Grant>>>;

/// How often a read retries a value that an invalidation made stale before
/// it answers straight from the store.
const STALE_RELOADS: usize = 3;
/// A fence outlives the longest a stale value could sit in the cache: the
/// cache's maximum TTL plus this bound on a load's duration.
const FENCE_MARGIN: Duration = Duration::from_secs(300);

/// Invalidation fences. moka inserts the result of a load even when the key
/// was invalidated while the load ran, so a load that read the store just
/// before a revocation could otherwise leave the pre-revocation view cached
/// for a full TTL. Every invalidation takes a new epoch and records it for
/// its key; a cached value whose load began before that epoch is discarded
/// when it is read.
struct Fences {
    epoch: AtomicU64,
    /// Epoch of the last [`TokenLookup::invalidate_all`].
    all: AtomicU64,
    tokens: Cache<TokenHash, u64>,
    grants: Cache<String, u64>,
}

impl Fences {
    fn new(settings: &CacheSettings) -> Self {
        let ttl = settings.max_ttl.max(settings.negative_ttl) + FENCE_MARGIN;
        Fences {
            epoch: AtomicU64::new(0),
            all: AtomicU64::new(0),
            tokens: Cache::builder()
                .max_capacity(settings.capacity)
                .time_to_live(ttl)
                .build(),
            grants: Cache::builder()
                .max_capacity(settings.capacity)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// The epoch a load starts at; read before the load reads the store.
    fn current(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// A new epoch for an invalidation (the store write happened before).
    fn advance(&self) -> u64 {
        self.epoch.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Whether any invalidation happened since `loaded`: when none did
    /// (the usual case), no fence needs reading.
    fn untouched_since(&self, loaded: u64) -> bool {
        loaded >= self.epoch.load(Ordering::SeqCst)
    }

    async fn token_is_stale(&self, hash: &TokenHash, loaded: u64) -> bool {
        if self.untouched_since(loaded) {
            return false;
        }
        loaded < self.all.load(Ordering::SeqCst)
            || self.tokens.get(hash).await.is_some_and(|f| loaded < f)
    }

    async fn grant_is_stale(&self, id: &str, loaded: u64) -> bool {
        if self.untouched_since(loaded) {
            return false;
        }
        loaded < self.all.load(Ordering::SeqCst)
            || self.grants.get(id).await.is_some_and(|f| loaded < f)
    }
}

struct TokenExpiry {
    max_ttl: Duration,
    negative_ttl: Duration,
}

impl TokenExpiry {
    fn ttl(&self, entry: &TokenEntry) -> Duration {
        match &entry.value {
            None => self.negative_ttl,
            Some(t) => {
                let left = (t.expires_at - now()).max(0) as u64;
                self.max_ttl.min(Duration::from_secs(left))
            }
        }
    }
}

impl Expiry<TokenHash, TokenEntry> for TokenExpiry {
    fn expire_after_create(&self, _: &TokenHash, v: &TokenEntry, _: Instant) -> Option<Duration> {
        Some(self.ttl(v))
    }

    fn expire_after_update(
        &self,
        _: &TokenHash,
        v: &TokenEntry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.ttl(v))
    }
}

struct GrantExpiry {
    max_ttl: Duration,
    negative_ttl: Duration,
}

impl Expiry<String, GrantEntry> for GrantExpiry {
    fn expire_after_create(&self, _: &String, v: &GrantEntry, _: Instant) -> Option<Duration> {
        Some(if v.value.is_some() {
            self.max_ttl
        } else {
            self.negative_ttl
        })
    }

    fn expire_after_update(
        &self,
        k: &String,
        v: &GrantEntry,
        at: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(k, v, at)
    }
}

/// Why a lookup could not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LookupError {
    #[error(transparent)]
    Store(Arc<StoreError>),
    #[error("a grant's custom data could not be opened")]
    Sealed,
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

/// Looks tokens up, through the caches.
pub struct TokenLookup {
    store: Arc<dyn Store>,
    data_key: Arc<DataKey>,
    tokens: Cache<TokenHash, TokenEntry>,
    grants: Cache<String, GrantEntry>,
    fences: Fences,
}

impl TokenLookup {
    pub fn new(store: Arc<dyn Store>, data_key: Arc<DataKey>, settings: &CacheSettings) -> Self {
        let tokens = Cache::builder()
            .max_capacity(settings.capacity)
            .expire_after(TokenExpiry {
                max_ttl: settings.max_ttl,
                negative_ttl: settings.negative_ttl,
            })
            .build();
        let grants = Cache::builder()
            .max_capacity(settings.capacity)
            .expire_after(GrantExpiry {
                max_ttl: settings.max_ttl,
                negative_ttl: settings.negative_ttl,
            })
            .build();
        TokenLookup {
            store,
            data_key,
            tokens,
            grants,
            fences: Fences::new(settings),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn data_key(&self) -> &Arc<DataKey> {
        &self.data_key
    }

    /// Opens a stored grant: checks the custom data opens with the data key
    /// and parses the downstream credentials in it.
    pub fn open_grant(&self, record: GrantRecord) -> Result<Grant, LookupError> {
        let custom = self.open_sealed(&record.id, record.custom_sealed.as_deref())?;
        Ok(Grant {
            credentials: credential::parse_all(&custom),
            sealed_custom: record.custom_sealed.map(Arc::from),
            id: record.id,
            client_id: record.client_id,
            subject: record.subject,
            scopes: record.scopes,
            audience: record.audience,
            actor: record.actor,
            issuer: record.issuer,
            claims: record.claims,
            version: record.version,
            created_at: record.created_at,
        })
    }

    /// A grant's custom data: a JSON object, empty when none was stored.
    pub fn open_custom(
        &self,
        grant: &Grant,
    ) -> Result<serde_json::Map<String, serde_json::Value>, LookupError> {
        self.open_sealed(&grant.id, grant.sealed_custom.as_deref())
    }

    fn open_sealed(
        &self,
        grant_id: &str,
        sealed: Option<&[u8]>,
    ) -> Result<serde_json::Map<String, serde_json::Value>, LookupError> {
        let Some(sealed) = sealed else {
            return Ok(serde_json::Map::new());
        };
        let plain = self
            .data_key
            .open(grant_id, sealed)
            .map_err(|_| LookupError::Sealed)?;
        match serde_json::from_slice(&plain) {
            Ok(serde_json::Value::Object(map)) => Ok(map),
            _ => Err(LookupError::Sealed),
        }
    }

    /// Seals custom data for storage; `None` for an empty object.
    pub fn seal_custom(
        &self,
        grant_id: &str,
        custom: &serde_json::Map<String, serde_json::Value>,
    ) -> Option<Vec<u8>> {
        if custom.is_empty() {
            return None;
        }
        let plain = serde_json::to_vec(custom).expect("a JSON map always serializes");
        Some(self.data_key.seal(grant_id, &plain))
    }

    /// Finds an active token of any kind. `Ok(None)` means inactive: unknown,
    /// malformed, expired, revoked, consumed or its grant revoked.
    pub async fn find_active(&self, token: &str) -> Result<Option<ActiveToken>, LookupError> {
        if token_kind(token).is_none() {
            return Ok(None);
        }
        self.find_active_hash(hash_token(token)).await
    }

    /// As [`TokenLookup::find_active`], by hash.
    pub async fn find_active_hash(
        &self,
        hash: TokenHash,
    ) -> Result<Option<ActiveToken>, LookupError> {
        self.find_active_counted(hash).await.map(|(found, _)| found)
    }

    /// As [`TokenLookup::find_active_hash`], also telling whether the token
    /// came from the cache (`true`) or had to be loaded.
    pub async fn find_active_counted(
        &self,
        hash: TokenHash,
    ) -> Result<(Option<ActiveToken>, bool), LookupError> {
        let (state, hit) = self.cached_token(hash).await?;
        let Some(state) = state else {
            return Ok((None, hit));
        };
        if state.expires_at <= now() {
            return Ok((None, hit));
        }
        let grant = self.cached_grant(&state.grant_id).await?;
        Ok((
            grant.map(|grant| ActiveToken {
                hash,
                token: state,
                grant,
            }),
            hit,
        ))
    }

    /// Loads a grant from the store, bypassing the cache.
    pub async fn find_grant_fresh(&self, id: &str) -> Result<Option<Arc<Grant>>, LookupError> {
        Ok(self.load_grant(id.to_string()).await?.value)
    }

    /// A token's state through the cache, and whether it was a cache hit.
    async fn cached_token(
        &self,
        hash: TokenHash,
    ) -> Result<(Option<Arc<TokenState>>, bool), LookupError> {
        for _ in 0..STALE_RELOADS {
            let entry = self
                .tokens
                .entry(hash)
                .or_try_insert_with(self.load_token(hash))
                .await
                .map_err(|e: Arc<LookupError>| (*e).clone())?;
            let hit = !entry.is_fresh();
            let loaded = entry.into_value();
            if !self.fences.token_is_stale(&hash, loaded.epoch).await {
                return Ok((loaded.value, hit));
            }
            self.tokens.invalidate(&hash).await;
        }
        Ok((self.load_token(hash).await?.value, false))
    }

    /// A grant through the cache; `None` when it is revoked or gone.
    async fn cached_grant(&self, id: &str) -> Result<Option<Arc<Grant>>, LookupError> {
        for _ in 0..STALE_RELOADS {
            let loaded = self
                .grants
                .try_get_with_by_ref(id, self.load_grant(id.to_string()))
                .await
                .map_err(|e: Arc<LookupError>| (*e).clone())?;
            if !self.fences.grant_is_stale(id, loaded.epoch).await {
                return Ok(loaded.value);
            }
            self.grants.invalidate(id).await;
        }
        Ok(self.load_grant(id.to_string()).await?.value)
    }

    async fn load_token(&self, hash: TokenHash) -> Result<TokenEntry, LookupError> {
        let epoch = self.fences.current();
        let inactive = Loaded { value: None, epoch };
        let Some((token, grant)) = self.store.find_token(&hash).await? else {
            return Ok(inactive);
        };
        if !is_active(&token, &grant) {
            return Ok(inactive);
        }
        let grant_id = grant.id.clone();
        let opened = Arc::new(self.open_grant(grant)?);
        // Saves the grant lookup that follows; stamped with this load's
        // epoch, so a revocation that raced this load still wins.
        self.grants
            .insert(
                grant_id,
                Loaded {
                    value: Some(opened),
                    epoch,
                },
            )
            .await;
        Ok(Loaded {
            value: Some(Arc::new(TokenState {
                grant_id: token.grant_id,
                kind: token.kind,
                scopes: token.scopes,
                issued_at: token.issued_at,
                expires_at: token.expires_at,
            })),
            epoch,
        })
    }

    async fn load_grant(&self, id: String) -> Result<GrantEntry, LookupError> {
        let epoch = self.fences.current();
        let value = match self.store.find_grant(&id).await? {
            Some(g) if !g.revoked => Some(Arc::new(self.open_grant(g)?)),
            _ => None,
        };
        Ok(Loaded { value, epoch })
    }

    /// Forgets a token (after it was revoked or consumed). Call it after
    /// the store write.
    pub async fn invalidate_token(&self, hash: &TokenHash) {
        let epoch = self.fences.advance();
        self.fences.tokens.insert(*hash, epoch).await;
        self.tokens.invalidate(hash).await;
    }

    /// Forgets a grant (after it was revoked, mutated or re-scoped). Call it
    /// after the store write.
    pub async fn invalidate_grant(&self, id: &str) {
        let epoch = self.fences.advance();
        self.fences.grants.insert(id.to_string(), epoch).await;
        self.grants.invalidate(id).await;
    }

    /// Forgets everything (e.g. after losing the invalidation feed).
    pub fn invalidate_all(&self) {
        let epoch = self.fences.advance();
        self.fences.all.fetch_max(epoch, Ordering::SeqCst);
        self.tokens.invalidate_all();
        self.grants.invalidate_all();
    }
}

fn is_active(token: &TokenRecord, grant: &GrantRecord) -> bool {
    !token.revoked && token.consumed_at.is_none() && !grant.revoked && token.expires_at > now()
}

//! The token cache: token hash → what a lookup found (an active token with
//! its grant, or "inactive"), one entry per token.
//!
//! - Bounded by `cache_capacity` entries (S3-FIFO eviction, so a flood of
//!   one-off unknown tokens does not push out the tokens in use).
//! - An entry is never used past its deadline: the token's `exp`, the
//!   configured maximum TTL, or the negative TTL for inactive tokens.
//! - Concurrent misses on one token are coalesced into one store read; when
//!   that read fails, the requests that waited for it get its error instead
//!   of each trying the failing store in turn.
//! - Invalidation is fenced by epochs. A token is forgotten directly; a
//!   grant's tokens cannot be found by grant, so invalidating a grant records
//!   a fence instead, and an entry loaded before its grant's fence is
//!   discarded when it is read. The same fences catch a load that read the
//!   store just before a revocation and would otherwise leave the
//!   pre-revocation view cached.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use super::LookupError;
use crate::crypto::TokenHash;
use crate::store::UnixTime;

/// Cache sizes and lifetimes.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub capacity: u64,
    pub max_ttl: Duration,
    pub negative_ttl: Duration,
}

/// What the cache needs to know of a cached value.
pub(super) trait Cacheable: Clone + Send + Sync + 'static {
    fn grant_id(&self) -> &str;
    fn expires_at(&self) -> UnixTime;
}

/// How often a read retries a value that an invalidation made stale before
/// it answers straight from the store.
const STALE_RELOADS: usize = 3;
/// A fence outlives the longest a stale value could be used: the cache's
/// maximum TTL plus this bound on a load's duration.
const FENCE_MARGIN: Duration = Duration::from_secs(300);
/// Entries the cache reserves room for up front, at most.
const RESERVED_ENTRIES: usize = 1 << 20;
/// Fences kept at least this many, whatever the capacity.
const MIN_FENCES: usize = 1024;

/// Milliseconds on a process-wide monotonic clock.
fn clock_ms() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    millis(START.elapsed())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Clone)]
enum Found<T> {
    Active(T),
    Inactive,
    /// The load failed; only requests that asked before it failed (those
    /// that were waiting for it) see this. The number orders failures after
    /// asks (see `TokenCache::failures`).
    Failed(Arc<LookupError>, u64),
}

#[derive(Clone)]
struct Entry<T> {
    /// The invalidation epoch at which the load began.
    epoch: u64,
    /// Not used at or after this clock reading.
    until: u64,
    found: Found<T>,
}

impl<T> Entry<T> {
    fn same(&self, other: &Entry<T>) -> bool {
        self.epoch == other.epoch && self.until == other.until
    }
}

/// What a read makes of an entry.
enum Verdict<T> {
    Use(Option<T>),
    Fail(Arc<LookupError>),
    Stale,
}

pub(super) struct TokenCache<T> {
    /// `None` when `cache_capacity` is 0: every lookup reads the store.
    entries: Option<quick_cache::sync::Cache<TokenHash, Entry<T>>>,
    max_ttl_ms: u64,
    negative_ttl_ms: u64,
    fences: Fences,
    /// Counts failed loads: a request notes the count when it asks, and a
    /// failure numbered above that happened while it waited.
    failures: AtomicU64,
}

impl<T: Cacheable> TokenCache<T> {
    pub fn new(settings: &CacheSettings) -> Self {
        let entries = (settings.capacity > 0).then(|| {
            let capacity = usize::try_from(settings.capacity).unwrap_or(usize::MAX);
            let cache = quick_cache::sync::Cache::new(capacity);
            // Address space only (pages are touched as entries arrive); it
            // spares the cache the copies of growing by doubling, whose
            // freed buffers the allocator would keep resident.
            cache.reserve(capacity.min(RESERVED_ENTRIES));
            cache
        });
        let lifetime = settings
            .max_ttl
            .max(settings.negative_ttl)
            .saturating_add(FENCE_MARGIN);
        TokenCache {
            entries,
            max_ttl_ms: millis(settings.max_ttl),
            negative_ttl_ms: millis(settings.negative_ttl),
            fences: Fences::new(
                millis(lifetime),
                (settings.capacity as usize).max(MIN_FENCES),
            ),
            failures: AtomicU64::new(0),
        }
    }

    /// The value for `hash` (`None`: inactive), through the cache, and
    /// whether it came from the cache (`true`) or this call loaded it.
    /// `load` reads the store; it may run more than once when invalidations
    /// race it.
    pub async fn get_or_load<F, Fut>(
        &self,
        hash: TokenHash,
        load: F,
    ) -> Result<(Option<T>, bool), LookupError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Option<T>, LookupError>>,
    {
        let Some(entries) = &self.entries else {
            return Ok((load().await?, false));
        };
        let failures_seen = self.failures.load(Ordering::SeqCst);
        for _ in 0..STALE_RELOADS {
            let (entry, hit) = match entries.get_value_or_guard_async(&hash).await {
                Ok(entry) => (entry, true),
                Err(guard) => {
                    // The epoch is read before the load reads the store.
                    let epoch = self.fences.current();
                    let entry = self.entry_for(epoch, load().await);
                    let _ = guard.insert(entry.clone());
                    (entry, false)
                }
            };
            match self.verdict(&hash, &entry, failures_seen) {
                Verdict::Use(found) => return Ok((found, hit)),
                Verdict::Fail(e) => return Err((*e).clone()),
                Verdict::Stale => {
                    entries.remove_if(&hash, |current| current.same(&entry));
                }
            }
        }
        Ok((load().await?, false))
    }

    fn entry_for(&self, epoch: u64, loaded: Result<Option<T>, LookupError>) -> Entry<T> {
        let now = clock_ms();
        let (until, found) = match loaded {
            Ok(Some(value)) => {
                let left_s = value.expires_at().saturating_sub(super::now()).max(0) as u64;
                let ttl = self.max_ttl_ms.min(left_s.saturating_mul(1000));
                (now.saturating_add(ttl), Found::Active(value))
            }
            Ok(None) => (now.saturating_add(self.negative_ttl_ms), Found::Inactive),
            Err(e) => {
                let number = self.failures.fetch_add(1, Ordering::SeqCst) + 1;
                (now, Found::Failed(Arc::new(e), number))
            }
        };
        Entry {
            epoch,
            until,
            found,
        }
    }

    fn verdict(&self, hash: &TokenHash, entry: &Entry<T>, failures_seen: u64) -> Verdict<T> {
        let value = match &entry.found {
            Found::Failed(e, number) if *number > failures_seen => return Verdict::Fail(e.clone()),
            Found::Failed(..) => return Verdict::Stale,
            Found::Inactive => None,
            Found::Active(value) => Some(value),
        };
        if clock_ms() >= entry.until
            || value.is_some_and(|v| v.expires_at() <= super::now())
            || self
                .fences
                .is_stale(hash, value.map(Cacheable::grant_id), entry.epoch)
        {
            return Verdict::Stale;
        }
        Verdict::Use(value.cloned())
    }

    /// Forgets a token (after it was revoked or consumed). Call it after
    /// the store write.
    pub fn invalidate_token(&self, hash: &TokenHash) {
        let Some(entries) = &self.entries else { return };
        if self.fences.fence_token(*hash) {
            entries.clear();
        }
        entries.remove(hash);
    }

    /// Forgets a grant's tokens (after the grant was revoked, mutated or
    /// re-scoped). Call it after the store write.
    pub fn invalidate_grant(&self, id: &str) {
        let Some(entries) = &self.entries else { return };
        if self.fences.fence_grant(id) {
            entries.clear();
        }
    }

    /// Forgets everything (e.g. after losing the invalidation feed).
    pub fn invalidate_all(&self) {
        let Some(entries) = &self.entries else { return };
        self.fences.fence_all();
        entries.clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, |e| e.len())
    }
}

/// Invalidation fences (see the module comment). Each invalidation takes a
/// new epoch and records it for its key; a value whose load began before
/// that epoch is stale. An epoch is taken while the fence map it goes into
/// is locked, so a reader that sees the new epoch also finds its fence.
struct Fences {
    epoch: AtomicU64,
    /// Epoch of the last "forget everything".
    all: AtomicU64,
    lifetime_ms: u64,
    limit: usize,
    tokens: Mutex<HashMap<TokenHash, Fence>>,
    grants: Mutex<HashMap<Box<str>, Fence>>,
}

#[derive(Clone, Copy)]
struct Fence {
    epoch: u64,
    at: u64,
}

impl Fences {
    fn new(lifetime_ms: u64, limit: usize) -> Self {
        Fences {
            epoch: AtomicU64::new(0),
            all: AtomicU64::new(0),
            lifetime_ms,
            limit,
            tokens: Mutex::new(HashMap::new()),
            grants: Mutex::new(HashMap::new()),
        }
    }

    /// The epoch a load starts at; read before the load reads the store.
    fn current(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    fn advance(&self) -> u64 {
        self.epoch.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn is_stale(&self, hash: &TokenHash, grant_id: Option<&str>, loaded: u64) -> bool {
        // No invalidation since the load (the usual case): no fence to read.
        if loaded >= self.epoch.load(Ordering::SeqCst) {
            return false;
        }
        if loaded < self.all.load(Ordering::SeqCst) {
            return true;
        }
        let newer = |f: Option<&Fence>| f.is_some_and(|f| loaded < f.epoch);
        newer(lock(&self.tokens).get(hash))
            || grant_id.is_some_and(|id| newer(lock(&self.grants).get(id)))
    }

    /// Records a token's fence; `true` when the fences overflowed and
    /// everything cached must go instead.
    fn fence_token(&self, hash: TokenHash) -> bool {
        let mut tokens = lock(&self.tokens);
        let epoch = self.advance();
        self.record(&mut tokens, hash, epoch)
    }

    fn fence_grant(&self, id: &str) -> bool {
        let mut grants = lock(&self.grants);
        let epoch = self.advance();
        self.record(&mut grants, Box::from(id), epoch)
    }

    fn fence_all(&self) {
        let epoch = self.advance();
        self.all.fetch_max(epoch, Ordering::SeqCst);
    }

    /// Inserts a fence. Fences older than their lifetime are dropped when
    /// the map is full; if it is still full, everything loaded so far is
    /// declared stale instead (the older fences are then redundant).
    fn record<K: Hash + Eq>(&self, map: &mut HashMap<K, Fence>, key: K, epoch: u64) -> bool {
        let at = clock_ms();
        if map.len() >= self.limit {
            map.retain(|_, f| at.saturating_sub(f.at) < self.lifetime_ms);
        }
        let overflowed = map.len() >= self.limit;
        if overflowed {
            self.all.fetch_max(epoch, Ordering::SeqCst);
            map.clear();
        } else {
            map.insert(key, Fence { epoch, at });
        }
        overflowed
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[derive(Clone)]
    struct Value {
        grant: &'static str,
        exp: UnixTime,
    }

    impl Cacheable for Value {
        fn grant_id(&self) -> &str {
            self.grant
        }
        fn expires_at(&self) -> UnixTime {
            self.exp
        }
    }

    fn cache(capacity: u64) -> TokenCache<Value> {
        TokenCache::new(&CacheSettings {
            capacity,
            max_ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_millis(50),
        })
    }

    fn hash(n: u8) -> TokenHash {
        TokenHash([n; 32])
    }

    fn active(grant: &'static str) -> Option<Value> {
        Some(Value {
            grant,
            exp: super::super::now() + 3600,
        })
    }

    async fn lookup(
        cache: &TokenCache<Value>,
        n: u8,
        loads: &AtomicUsize,
        value: Option<Value>,
    ) -> (bool, bool) {
        let (found, hit) = cache
            .get_or_load(hash(n), || {
                loads.fetch_add(1, Ordering::SeqCst);
                let value = value.clone();
                async move { Ok(value) }
            })
            .await
            .expect("no store error");
        (found.is_some(), hit)
    }

    #[tokio::test]
    async fn a_second_read_is_a_hit_and_no_load() {
        let (c, loads) = (cache(10), AtomicUsize::new(0));
        assert_eq!(lookup(&c, 1, &loads, active("g")).await, (true, false));
        assert_eq!(lookup(&c, 1, &loads, active("g")).await, (true, true));
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn without_capacity_every_read_loads() {
        let (c, loads) = (cache(0), AtomicUsize::new(0));
        for _ in 0..3 {
            assert_eq!(lookup(&c, 1, &loads, active("g")).await, (true, false));
        }
        assert_eq!(loads.load(Ordering::SeqCst), 3);
        assert_eq!(c.len(), 0);
    }

    #[tokio::test]
    async fn a_negative_entry_lives_only_the_negative_ttl() {
        let (c, loads) = (cache(10), AtomicUsize::new(0));
        assert_eq!(lookup(&c, 1, &loads, None).await, (false, false));
        assert_eq!(lookup(&c, 1, &loads, None).await, (false, true));
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(lookup(&c, 1, &loads, active("g")).await, (true, false));
    }

    #[test]
    fn an_entry_is_never_used_past_the_tokens_exp_nor_the_max_ttl() {
        let c = cache(10);
        let at = 0;
        let past = c.entry_for(
            0,
            Ok(Some(Value {
                grant: "g",
                exp: super::super::now(),
            })),
        );
        assert!(matches!(c.verdict(&hash(1), &past, at), Verdict::Stale));
        let fresh = c.entry_for(0, Ok(active("g")));
        assert!(matches!(
            c.verdict(&hash(1), &fresh, at),
            Verdict::Use(Some(_))
        ));
        assert!(fresh.until <= clock_ms() + 300_000, "bounded by max_ttl");
    }

    #[tokio::test]
    async fn invalidating_a_grant_reloads_its_tokens_only() {
        let (c, loads) = (cache(10), AtomicUsize::new(0));
        lookup(&c, 1, &loads, active("g1")).await;
        lookup(&c, 2, &loads, active("g2")).await;
        c.invalidate_grant("g1");
        assert_eq!(lookup(&c, 1, &loads, active("g1")).await, (true, false));
        assert_eq!(lookup(&c, 2, &loads, active("g2")).await, (true, true));
        c.invalidate_token(&hash(2));
        assert_eq!(lookup(&c, 2, &loads, None).await, (false, false));
        assert_eq!(loads.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_load_racing_an_invalidation_is_not_used() {
        let c = cache(10);
        let loads = AtomicUsize::new(0);
        let (found, _) = c
            .get_or_load(hash(1), || {
                let n = loads.fetch_add(1, Ordering::SeqCst);
                // The first load read the store just before the grant was
                // changed; the change's invalidation lands mid-load.
                if n == 0 {
                    c.invalidate_grant("g");
                }
                async move { Ok(if n == 0 { active("g") } else { None }) }
            })
            .await
            .unwrap();
        assert!(found.is_none(), "the pre-invalidation view was used");
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_load_and_its_failure() {
        let c = Arc::new(cache(10));
        let loads = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (c, loads) = (c.clone(), loads.clone());
            tasks.push(tokio::spawn(async move {
                c.get_or_load(hash(9), || {
                    loads.fetch_add(1, Ordering::SeqCst);
                    async {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Err::<Option<Value>, _>(LookupError::from(
                            crate::store::StoreError::Unavailable("down".into()),
                        ))
                    }
                })
                .await
                .is_err()
            }));
        }
        for task in tasks {
            assert!(task.await.unwrap(), "every request sees the failure");
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        // A later request tries again.
        let again = AtomicUsize::new(0);
        assert_eq!(lookup(&c, 9, &again, active("g")).await, (true, false));
    }

    #[test]
    fn overflowing_fences_declares_everything_stale() {
        let fences = Fences::new(60_000, 4);
        let loaded = fences.current();
        for n in 0..4 {
            assert!(!fences.fence_token(hash(n)));
        }
        assert!(!fences.is_stale(&hash(9), Some("g"), loaded));
        assert!(fences.fence_token(hash(5)), "the fifth overflows");
        assert!(fences.is_stale(&hash(9), Some("g"), loaded));
        assert!(!fences.is_stale(&hash(9), Some("g"), fences.current()));
    }
}

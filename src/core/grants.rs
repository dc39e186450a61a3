//! [`Grants`]: the one way the token service and the gateway change grants
//! and tokens. Every write that changes what a token means drops the
//! cached lookups it affects itself, after the store write, so a new write
//! path cannot forget to (a stale entry would be served for up to
//! `cache_max_ttl`). Reads that must see the store, not the cache (a
//! rotation, a compare-and-set) are here too.

use std::sync::Arc;

use crate::crypto::{KeyId, Random, TokenHash};
use crate::lookup::{Grant, LookupError, TokenLookup, Unreadable};
use crate::store::{
    GrantChange, GrantRecord, GrantUpdate, GrantsOf, NewToken, Rotation, SealedCustom, StoreError,
    TokenRecord, UnixTime,
};

/// Grants and tokens: the store behind the lookup cache.
pub struct Grants {
    lookup: Arc<TokenLookup>,
    random: Random,
}

impl Grants {
    pub fn new(lookup: Arc<TokenLookup>) -> Self {
        Grants {
            lookup,
            random: Random::default(),
        }
    }

    /// Cached token lookups (reads only).
    pub fn lookup(&self) -> &Arc<TokenLookup> {
        &self.lookup
    }

    /// New token strings and grant ids.
    pub fn random(&self) -> &Random {
        &self.random
    }

    // -- reads from the store, bypassing the cache ------------------------

    /// Whether the store answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.lookup.store().ping().await
    }

    /// A token of `tenant` with its grant, as stored (`None` when unknown
    /// or another tenant's).
    pub async fn find_token(
        &self,
        tenant: &str,
        hash: &TokenHash,
    ) -> Result<Option<(TokenRecord, GrantRecord)>, StoreError> {
        Ok(self
            .lookup
            .store()
            .find_token(hash)
            .await?
            .filter(|(_, grant)| grant.tenant == tenant))
    }

    /// A grant, as stored.
    pub async fn find_grant(&self, id: &str) -> Result<Option<GrantRecord>, StoreError> {
        self.lookup.store().find_grant(id).await
    }

    /// A live grant's view, as stored; `None` when revoked, gone or
    /// unreadable.
    pub async fn find_grant_fresh(&self, id: &str) -> Result<Option<Arc<Grant>>, LookupError> {
        self.lookup.find_grant_fresh(id).await
    }

    /// See [`crate::store::Store::grant_expiry`].
    pub async fn grant_expiry(
        &self,
        id: &str,
        now: UnixTime,
    ) -> Result<Option<UnixTime>, StoreError> {
        self.lookup.store().grant_expiry(id, now).await
    }

    /// A stored grant's custom data (see [`TokenLookup::open_custom`]).
    pub fn open_custom(
        &self,
        record: &GrantRecord,
    ) -> Result<serde_json::Map<String, serde_json::Value>, Unreadable> {
        self.lookup.open_custom(record)
    }

    /// See [`TokenLookup::seal_custom`].
    pub fn seal_custom(
        &self,
        grant_id: &str,
        version: i64,
        custom: &serde_json::Map<String, serde_json::Value>,
    ) -> Option<Vec<u8>> {
        self.lookup.seal_custom(grant_id, version, custom)
    }

    // -- writes ------------------------------------------------------------

    /// Stores a new grant with its first tokens. Nothing to forget: new
    /// token strings were never looked up.
    pub async fn create(&self, grant: &GrantRecord, tokens: &[NewToken]) -> Result<(), StoreError> {
        self.lookup.store().create_grant(grant, tokens).await
    }

    /// Rotates a refresh token (see [`crate::core::rotation`]); forgets it,
    /// and on a replay every grant that was revoked.
    pub async fn rotate_refresh(
        &self,
        old: &TokenHash,
        now: UnixTime,
        grace: i64,
        new_tokens: &[NewToken],
    ) -> Result<Rotation, StoreError> {
        let outcome = self
            .lookup
            .store()
            .rotate_refresh(old, now, grace, new_tokens)
            .await;
        self.lookup.invalidate_token(old).await;
        let outcome = outcome?;
        if let Rotation::Replayed(revoked) = &outcome {
            for id in revoked {
                self.lookup.invalidate_grant(id).await;
            }
        }
        Ok(outcome)
    }

    /// Revokes a grant and the grants derived from it; forgets them all.
    pub async fn revoke_grant(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let revoked = self.lookup.store().revoke_grant(id).await?;
        for id in &revoked {
            self.lookup.invalidate_grant(id).await;
        }
        Ok(revoked)
    }

    /// Revokes every grant of a subject or client that is not revoked yet,
    /// and those
    /// exchanged from them; forgets them. Returns how many grants ended. A
    /// grant issued while this runs may escape: it is a new session.
    pub async fn revoke_all(&self, owner: &GrantsOf) -> Result<usize, StoreError> {
        let mut ended = std::collections::HashSet::new();
        for id in self.lookup.store().live_grants_of(owner).await? {
            if ended.contains(&id) {
                continue;
            }
            ended.extend(self.revoke_grant(&id).await?);
        }
        Ok(ended.len())
    }

    /// Grants of a subject or client, newest first (see
    /// [`crate::store::Store::list_grants`]).
    pub async fn list(
        &self,
        owner: &GrantsOf,
        before: Option<&(UnixTime, String)>,
        limit: u32,
    ) -> Result<Vec<GrantRecord>, StoreError> {
        self.lookup.store().list_grants(owner, before, limit).await
    }

    /// Revokes one token; forgets it.
    pub async fn revoke_token(&self, hash: &TokenHash) -> Result<bool, StoreError> {
        let done = self.lookup.store().revoke_token(hash).await?;
        self.lookup.invalidate_token(hash).await;
        Ok(done)
    }

    /// Applies `change` if the grant is at `expected_version` (see
    /// [`crate::core::version`]); forgets the grant, and the token whose
    /// scopes it reset.
    pub async fn update_at(
        &self,
        id: &str,
        expected_version: i64,
        change: &GrantChange,
    ) -> Result<GrantUpdate, StoreError> {
        let outcome = self
            .lookup
            .store()
            .update_grant(id, expected_version, change)
            .await?;
        if let GrantUpdate::Updated(_) = outcome {
            self.lookup.invalidate_grant(id).await;
            if let Some(hash) = &change.reset_token_scopes {
                self.lookup.invalidate_token(hash).await;
            }
        }
        Ok(outcome)
    }

    /// Applies `change` to the grant `record` describes, if it is still at
    /// `record.version`. A change that leaves the custom data alone carries
    /// it sealed again for the new version, read from `record`: the
    /// compare-and-set on the version guarantees it is still the stored one.
    pub async fn update(
        &self,
        record: &GrantRecord,
        mut change: GrantChange,
    ) -> Result<Result<GrantUpdate, Unreadable>, StoreError> {
        if change.custom_sealed.is_none() {
            match self.lookup.reseal_for_next_version(record) {
                Ok(None) => {}
                Ok(Some(resealed)) => change.custom_sealed = Some(Some(resealed)),
                Err(unreadable) => return Ok(Err(unreadable)),
            }
        }
        self.update_at(&record.id, record.version, &change)
            .await
            .map(Ok)
    }

    /// Replaces sealed custom data with the same data sealed again (see
    /// [`crate::store::Store::reseal_custom`]). Nothing cached changes: the
    /// plaintext and the version stay.
    pub async fn reseal_custom(
        &self,
        current: &SealedCustom,
        resealed: &[u8],
    ) -> Result<bool, StoreError> {
        self.lookup.store().reseal_custom(current, resealed).await
    }

    /// See [`crate::store::Store::sealed_otherwise`].
    pub async fn sealed_otherwise(
        &self,
        header: &[u8],
        after: &str,
        limit: u32,
    ) -> Result<Vec<SealedCustom>, StoreError> {
        self.lookup
            .store()
            .sealed_otherwise(header, after, limit)
            .await
    }

    /// See [`crate::store::Store::count_sealed_by_key`].
    pub async fn count_sealed_by_key(&self) -> Result<Vec<(Option<KeyId>, u64)>, StoreError> {
        self.lookup.store().count_sealed_by_key().await
    }

    /// Takes a lease (see [`crate::store::Store::try_lease`]). Leases say
    /// who works on something; nothing cached depends on them.
    pub async fn try_lease(
        &self,
        key: &str,
        holder: &str,
        now: UnixTime,
        until: UnixTime,
    ) -> Result<bool, StoreError> {
        self.lookup.store().try_lease(key, holder, now, until).await
    }

    /// Deletes expired tokens and grants left without tokens (see
    /// [`crate::store::Store::purge_expired`]). Nothing cached changes: an
    /// expired token is inactive whether or not its row is there.
    pub async fn purge_expired(&self, before: UnixTime) -> Result<u64, StoreError> {
        self.lookup.store().purge_expired(before).await
    }

    /// Gives a lease back early.
    pub async fn release_lease(&self, key: &str, holder: &str) -> Result<(), StoreError> {
        self.lookup.store().release_lease(key, holder).await
    }
}

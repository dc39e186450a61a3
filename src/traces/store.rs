//! A [`Store`] that wraps every call in a span (installed only when
//! tracing is on, so an untraced store call costs nothing extra).

use std::sync::Arc;

use async_trait::async_trait;
use tracing::Instrument;

use super::store_call;
use crate::crypto::{KeyId, TokenHash};
use crate::store::{
    DeviceCodeRecord, DevicePoll, DeviceStatus, GrantChange, GrantRecord, GrantUpdate, GrantsOf,
    Invalidation, NewToken, Rotation, SealedCustom, SigningKeyRecord, Store, StoreError,
    TokenRecord, UnixTime,
};

/// The store, traced.
pub struct Traced(pub Arc<dyn Store>);

#[async_trait]
impl Store for Traced {
    async fn ping(&self) -> Result<(), StoreError> {
        self.0.ping().instrument(store_call("ping")).await
    }

    async fn create_grant(
        &self,
        grant: &GrantRecord,
        tokens: &[NewToken],
    ) -> Result<(), StoreError> {
        self.0
            .create_grant(grant, tokens)
            .instrument(store_call("create_grant"))
            .await
    }

    async fn find_token(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<(TokenRecord, GrantRecord)>, StoreError> {
        self.0
            .find_token(hash)
            .instrument(store_call("find_token"))
            .await
    }

    async fn find_grant(&self, id: &str) -> Result<Option<GrantRecord>, StoreError> {
        self.0
            .find_grant(id)
            .instrument(store_call("find_grant"))
            .await
    }

    async fn kept_subject_token(&self, grant_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.0
            .kept_subject_token(grant_id)
            .instrument(store_call("kept_subject_token"))
            .await
    }

    async fn kept_sealed_otherwise(
        &self,
        header: &[u8],
        after: &str,
        limit: u32,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.0
            .kept_sealed_otherwise(header, after, limit)
            .instrument(store_call("kept_sealed_otherwise"))
            .await
    }

    async fn reseal_kept(
        &self,
        grant_id: &str,
        current: &[u8],
        resealed: &[u8],
    ) -> Result<bool, StoreError> {
        self.0
            .reseal_kept(grant_id, current, resealed)
            .instrument(store_call("reseal_kept"))
            .await
    }

    async fn rotate_refresh(
        &self,
        old: &TokenHash,
        now: UnixTime,
        grace: i64,
        new_tokens: &[NewToken],
    ) -> Result<Rotation, StoreError> {
        self.0
            .rotate_refresh(old, now, grace, new_tokens)
            .instrument(store_call("rotate_refresh"))
            .await
    }

    async fn revoke_token(&self, hash: &TokenHash) -> Result<bool, StoreError> {
        self.0
            .revoke_token(hash)
            .instrument(store_call("revoke_token"))
            .await
    }

    async fn revoke_grant(&self, id: &str) -> Result<Vec<String>, StoreError> {
        self.0
            .revoke_grant(id)
            .instrument(store_call("revoke_grant"))
            .await
    }

    async fn live_grants_of(&self, owner: &GrantsOf) -> Result<Vec<String>, StoreError> {
        self.0
            .live_grants_of(owner)
            .instrument(store_call("live_grants_of"))
            .await
    }

    async fn list_grants(
        &self,
        owner: &GrantsOf,
        before: Option<&(UnixTime, String)>,
        limit: u32,
    ) -> Result<Vec<GrantRecord>, StoreError> {
        self.0
            .list_grants(owner, before, limit)
            .instrument(store_call("list_grants"))
            .await
    }

    async fn grant_expiry(&self, id: &str, now: UnixTime) -> Result<Option<UnixTime>, StoreError> {
        self.0
            .grant_expiry(id, now)
            .instrument(store_call("grant_expiry"))
            .await
    }

    async fn update_grant(
        &self,
        id: &str,
        expected_version: i64,
        change: &GrantChange,
    ) -> Result<GrantUpdate, StoreError> {
        self.0
            .update_grant(id, expected_version, change)
            .instrument(store_call("update_grant"))
            .await
    }

    async fn sealed_otherwise(
        &self,
        header: &[u8],
        after: &str,
        limit: u32,
    ) -> Result<Vec<SealedCustom>, StoreError> {
        self.0
            .sealed_otherwise(header, after, limit)
            .instrument(store_call("sealed_otherwise"))
            .await
    }

    async fn reseal_custom(
        &self,
        current: &SealedCustom,
        resealed: &[u8],
    ) -> Result<bool, StoreError> {
        self.0
            .reseal_custom(current, resealed)
            .instrument(store_call("reseal_custom"))
            .await
    }

    async fn count_sealed_by_key(&self) -> Result<Vec<(Option<KeyId>, u64)>, StoreError> {
        self.0
            .count_sealed_by_key()
            .instrument(store_call("count_sealed_by_key"))
            .await
    }

    async fn try_lease(
        &self,
        key: &str,
        holder: &str,
        now: UnixTime,
        until: UnixTime,
    ) -> Result<bool, StoreError> {
        self.0
            .try_lease(key, holder, now, until)
            .instrument(store_call("try_lease"))
            .await
    }

    async fn release_lease(&self, key: &str, holder: &str) -> Result<(), StoreError> {
        self.0
            .release_lease(key, holder)
            .instrument(store_call("release_lease"))
            .await
    }

    async fn purge_expired(&self, before: UnixTime) -> Result<u64, StoreError> {
        self.0
            .purge_expired(before)
            .instrument(store_call("purge_expired"))
            .await
    }

    async fn signing_keys(
        &self,
        tenant: &str,
        signs_after: UnixTime,
    ) -> Result<Vec<SigningKeyRecord>, StoreError> {
        self.0
            .signing_keys(tenant, signs_after)
            .instrument(store_call("signing_keys"))
            .await
    }

    async fn add_signing_key(&self, key: &SigningKeyRecord) -> Result<bool, StoreError> {
        self.0
            .add_signing_key(key)
            .instrument(store_call("add_signing_key"))
            .await
    }

    async fn purge_signing_keys(&self, tenant: &str, before: UnixTime) -> Result<u64, StoreError> {
        self.0
            .purge_signing_keys(tenant, before)
            .instrument(store_call("purge_signing_keys"))
            .await
    }

    async fn reseal_signing_key(
        &self,
        tenant: &str,
        generation: i64,
        current: &[u8],
        resealed: &[u8],
    ) -> Result<bool, StoreError> {
        self.0
            .reseal_signing_key(tenant, generation, current, resealed)
            .instrument(store_call("reseal_signing_key"))
            .await
    }

    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<Invalidation>> {
        self.0.subscribe()
    }

    async fn create_device_code(&self, record: &DeviceCodeRecord) -> Result<bool, StoreError> {
        self.0
            .create_device_code(record)
            .instrument(store_call("create_device_code"))
            .await
    }

    async fn decide_device_code(
        &self,
        tenant: &str,
        user_hash: &TokenHash,
        now: UnixTime,
        decision: &DeviceStatus,
    ) -> Result<bool, StoreError> {
        self.0
            .decide_device_code(tenant, user_hash, now, decision)
            .instrument(store_call("decide_device_code"))
            .await
    }

    async fn poll_device_code(
        &self,
        tenant: &str,
        device_hash: &TokenHash,
        client_id: &str,
        now_ms: i64,
    ) -> Result<DevicePoll, StoreError> {
        self.0
            .poll_device_code(tenant, device_hash, client_id, now_ms)
            .instrument(store_call("poll_device_code"))
            .await
    }
}

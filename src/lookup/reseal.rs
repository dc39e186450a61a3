//! Keeps sealed custom data on the current data key.
//!
//! - [`check_keys`], at start: every live grant's custom data names a key
//!   that is configured, or refgate does not start (rather than treating
//!   those grants as inactive while it serves).
//! - [`reseal_stale`], at start and then now and then: opens the custom
//!   data sealed with a previous key (or before blobs named their key) and
//!   seals it again with the current key, at the same grant version, so
//!   that the previous keys can be dropped; subject tokens grants keep
//!   ([`crate::core::kept`]) likewise.
//!
//! Only the key id and the counts are logged, never key material or data.

use std::sync::Arc;

use crate::core::Grants;
use crate::crypto::KeyId;
use crate::store::{SealedCustom, StoreError};

use super::{now, TokenLookup};

/// Grants read per query of a pass.
const PAGE: u32 = 256;
/// Grants whose unreadable custom data a pass names one by one in the log.
const NAMED_UNREADABLE: u64 = 10;
/// The lease that makes one instance at a time run a pass on a shared store.
const LEASE: &str = "reseal-custom-data";
/// How long a pass may hold the lease.
const LEASE_SECONDS: i64 = 600;

/// What a pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Resealed {
    /// Grants whose custom data is now sealed with the current key.
    pub resealed: u64,
    /// Grants whose custom data opens with no configured key.
    pub unreadable: u64,
}

/// Fails when live grants hold custom data sealed with a key that is not
/// configured; the message says what to do. Logs how much custom data
/// still waits for the current key during a rotation.
pub async fn check_keys(lookup: &Arc<TokenLookup>) -> Result<(), String> {
    let keys = lookup.data_keys();
    let counts = Grants::new(lookup.clone())
        .count_sealed_by_key()
        .await
        .map_err(|e| format!("cannot survey the sealed custom data: {e}"))?;
    let unknown: Vec<(KeyId, u64)> = counts
        .iter()
        .filter_map(|(id, n)| id.filter(|id| !keys.knows(*id)).map(|id| (id, *n)))
        .collect();
    if !unknown.is_empty() {
        let grants: u64 = unknown.iter().map(|(_, n)| n).sum();
        let ids: Vec<String> = unknown.iter().map(|(id, _)| id.to_string()).collect();
        return Err(format!(
            "the custom data of {grants} grant(s) is sealed with a data key that is not \
             configured (key id {}); list that key in [store] previous_data_keys or \
             previous_data_keys_env and start again: refgate then seals that data again \
             with the current key, after which the old key can be removed",
            ids.join(", ")
        ));
    }
    let current = keys.current_id();
    let waiting: u64 = counts
        .iter()
        .filter(|(id, _)| *id != Some(current))
        .map(|(_, n)| n)
        .sum();
    if waiting > 0 {
        tracing::info!(
            grants = waiting,
            key = %current,
            "custom data sealed with a previous data key (or before key ids) will be sealed again with the current key"
        );
    }
    Ok(())
}

/// Seals again, with the current key, all custom data sealed otherwise,
/// unless another instance is doing it (then nothing is done).
pub async fn reseal_stale(lookup: &Arc<TokenLookup>, holder: &str) -> Result<Resealed, StoreError> {
    let store = Grants::new(lookup.clone());
    if !store
        .try_lease(LEASE, holder, now(), now() + LEASE_SECONDS)
        .await?
    {
        return Ok(Resealed::default());
    }
    let outcome = match reseal_pages(lookup, &store).await {
        Ok(done) => crate::core::kept::reseal_stale(&store, PAGE)
            .await
            .map(|kept| (done, kept)),
        Err(e) => Err(e),
    };
    if let Err(e) = store.release_lease(LEASE, holder).await {
        tracing::debug!(error = %e, "releasing the re-seal lease failed; it expires by itself");
    }
    let (done, kept) = outcome?;
    if done.resealed > 0 {
        tracing::info!(
            grants = done.resealed,
            "sealed custom data again with the current data key"
        );
    }
    if done.unreadable > 0 {
        tracing::error!(
            grants = done.unreadable,
            "custom data of some grants opens with no configured data key (sealed with an \
             unknown key, altered or rolled back); those grants are treated as inactive"
        );
    }
    if lookup.data_keys().has_previous() && done.unreadable == 0 && kept.unreadable == 0 {
        let current = Some(lookup.data_keys().current_id());
        let counts = store.count_sealed_by_key().await?;
        if counts.iter().all(|(id, _)| *id == current) {
            tracing::info!(
                "all custom data is sealed with the current data key; the previous data keys \
                 can be removed from [store]"
            );
        }
    }
    Ok(done)
}

async fn reseal_pages(lookup: &TokenLookup, store: &Grants) -> Result<Resealed, StoreError> {
    let keys = lookup.data_keys();
    let header = keys.current_header();
    let mut done = Resealed::default();
    let mut after = String::new();
    loop {
        let page = store.sealed_otherwise(&header, &after, PAGE).await?;
        let Some(last) = page.last() else {
            return Ok(done);
        };
        after = last.grant_id.clone();
        let mut writes = Vec::with_capacity(page.len());
        for stale in &page {
            match keys.open(&stale.grant_id, stale.version, &stale.sealed) {
                Ok(opened) => {
                    let resealed = keys.seal(&stale.grant_id, stale.version, &opened.plain);
                    writes.push(reseal_one(store, stale, resealed));
                }
                Err(e) => {
                    done.unreadable += 1;
                    if done.unreadable <= NAMED_UNREADABLE {
                        tracing::warn!(grant = %stale.grant_id, "custom data cannot be read: {e}");
                    }
                }
            }
        }
        // Concurrent writes share the SQLite writer's batches.
        for written in futures::future::join_all(writes).await {
            if written? {
                done.resealed += 1;
            }
        }
        if page.len() < PAGE as usize {
            return Ok(done);
        }
    }
}

/// Writes one re-sealed blob; `false` when the grant changed meanwhile
/// (its new blob is sealed with the current key anyway) or was revoked.
async fn reseal_one(
    store: &Grants,
    stale: &SealedCustom,
    resealed: Vec<u8>,
) -> Result<bool, StoreError> {
    store.reseal_custom(stale, &resealed).await
}

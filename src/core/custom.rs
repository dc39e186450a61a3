//! Custom data: an RFC 7396 JSON Merge Patch on a grant's custom data, with
//! optional optimistic concurrency (`if_version`). The merged data is
//! size-capped and sealed for the version the write gives the grant.

use serde_json::Value;

use super::{version, Contention, Error, Grants};
use crate::config::Config;
use crate::store::{GrantChange, GrantUpdate};

/// Attempts at the compare-and-set when no `if_version` was given. Every
/// lost attempt means another writer won, so this only bounds the wait of an
/// unlucky request under heavy contention on one grant.
const CAS_ATTEMPTS: u32 = 64;
/// Longest pause between two attempts; the pause grows up to it, jittered
/// so that the losers of one round do not collide again in the next.
const CAS_MAX_BACKOFF_MS: u64 = 25;

/// Who writes custom data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// A client of the mutate endpoint: its credential entries are checked
    /// ([`crate::credential::check_client_write`]).
    Client,
    /// refgate itself (the gateway storing a credential it obtained): no
    /// client-facing check applies to what refgate writes itself.
    Refgate,
}

/// Applies a merge patch to a grant's custom data and returns the new
/// version. `patch` must be a JSON object.
pub async fn patch(
    grants: &Grants,
    config: &Config,
    grant_id: &str,
    patch: &Value,
    if_version: Option<i64>,
    writer: Writer,
) -> Result<i64, Error> {
    let max = config.tokens.custom_data_max;
    for attempt in 0..CAS_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(backoff(attempt)).await;
        }
        let Some(record) = grants.find_grant(grant_id).await? else {
            return Err(Error::TokenInactive);
        };
        if record.revoked {
            return Err(Error::TokenInactive);
        }
        if let Some(expected) = if_version {
            if let Err(GrantUpdate::Conflict(current)) =
                version::next(Some((record.version, record.revoked)), expected)
            {
                return Err(Error::Conflict { version: current });
            }
        }
        let version = record.version;
        let Ok(before) = grants.open_custom(&record) else {
            // Unreadable custom data (logged): the grant counts as inactive.
            return Err(Error::TokenInactive);
        };
        let mut merged = Value::Object(before.clone());
        json_patch::merge(&mut merged, patch);
        let Value::Object(merged) = merged else {
            return Err(Error::InvalidRequest("patch must be a JSON object".into()));
        };
        if writer == Writer::Client {
            crate::credential::check_client_write(patch, &before, &merged, |a| {
                config.authorities.contains_key(a)
            })
            .map_err(|e| Error::InvalidRequest(e.to_string()))?;
        }
        let size = serde_json::to_vec(&merged).map_or(usize::MAX, |v| v.len());
        if size > max {
            return Err(Error::TooLarge(format!(
                "custom data would be {size} bytes; the limit is {max}"
            )));
        }
        let change = GrantChange {
            // Sealed for the version this write gives the grant.
            custom_sealed: Some(grants.seal_custom(grant_id, version + 1, &merged)),
            ..GrantChange::default()
        };
        match grants.update_at(grant_id, version, &change).await? {
            GrantUpdate::Updated(new_version) => return Ok(new_version),
            GrantUpdate::Conflict(current) if if_version.is_some() => {
                return Err(Error::Conflict { version: current })
            }
            GrantUpdate::Conflict(_) => continue,
            GrantUpdate::Gone => return Err(Error::TokenInactive),
        }
    }
    Err(Error::Contended(Contention::CustomData))
}

/// A random pause of up to `2^attempt` ms, capped at [`CAS_MAX_BACKOFF_MS`].
fn backoff(attempt: u32) -> std::time::Duration {
    use std::hash::{BuildHasher, Hasher};
    let ceiling = (1u64 << attempt.min(16)).min(CAS_MAX_BACKOFF_MS);
    // Jitter only: RandomState's per-instance keys are random enough.
    let noise = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    std::time::Duration::from_micros(noise % (ceiling * 1000 + 1))
}

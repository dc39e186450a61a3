//! Kept subject tokens: the id_token a grant was exchanged from, when its
//! trusted issuer says `keep_subject_token = true`, so that a route can
//! exchange it at an external authority on the subject's behalf.
//!
//! It is sealed with the data key (bound to the grant, apart from custom
//! data), written once when the grant is made, and read only by the
//! gateway's external exchange. Nothing a client writes reaches it:
//! custom data cannot plant one, introspection and the admin API never
//! show it. A grant derived from this one (an exchange of its access token)
//! does not inherit it: it is for the grant the subject signed in to.
//! A data-key rotation seals kept tokens again, as it does custom data
//! ([`reseal_stale`], called from [`crate::lookup::reseal`]).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::{Error, Grants};
use crate::store::StoreError;

/// The sealing context of a grant's kept subject token: distinct from its
/// custom data's, so neither blob opens in the other's place.
fn context(grant_id: &str) -> String {
    format!("kept-subject-token/{grant_id}")
}

/// Seals `token` for grant `grant_id`.
pub fn seal(grants: &Grants, grant_id: &str, token: &str) -> Vec<u8> {
    grants
        .lookup()
        .data_keys()
        .seal(&context(grant_id), 0, token.as_bytes())
}

/// A subject token a grant keeps.
pub struct KeptSubject {
    pub token: String,
    /// Its `exp`, when it has one.
    pub expires_at: Option<i64>,
}

impl std::fmt::Debug for KeptSubject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeptSubject")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl KeptSubject {
    /// Whether it is still valid at `now`.
    pub fn valid_at(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|exp| exp > now)
    }
}

/// The subject token grant `grant_id` keeps, if any. One that no data key
/// opens is logged and counts as none.
pub async fn open(grants: &Grants, grant_id: &str) -> Result<Option<KeptSubject>, Error> {
    let Some(sealed) = grants.lookup().store().kept_subject_token(grant_id).await? else {
        return Ok(None);
    };
    let opened = match grants
        .lookup()
        .data_keys()
        .open(&context(grant_id), 0, &sealed)
    {
        Ok(opened) => opened,
        Err(e) => {
            tracing::warn!(grant_id, error = %e, "a kept subject token does not open");
            return Ok(None);
        }
    };
    let Ok(token) = String::from_utf8(opened.plain) else {
        return Ok(None);
    };
    let expires_at = expiry(&token);
    Ok(Some(KeptSubject { token, expires_at }))
}

/// What a re-sealing pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Resealed {
    pub resealed: u64,
    /// Kept tokens no configured data key opens (they count as none).
    pub unreadable: u64,
}

/// Seals again, with the current data key, every kept subject token sealed
/// with another one (a data-key rotation), `page` grants per query.
pub async fn reseal_stale(grants: &Grants, page: u32) -> Result<Resealed, StoreError> {
    let keys = grants.lookup().data_keys();
    let store = grants.lookup().store();
    let header = keys.current_header();
    let mut done = Resealed::default();
    let mut after = String::new();
    loop {
        let batch = store.kept_sealed_otherwise(&header, &after, page).await?;
        let Some((last, _)) = batch.last() else {
            break;
        };
        after = last.clone();
        for (grant_id, sealed) in &batch {
            match keys.open(&context(grant_id), 0, sealed) {
                Ok(opened) => {
                    let again = keys.seal(&context(grant_id), 0, &opened.plain);
                    if store.reseal_kept(grant_id, sealed, &again).await? {
                        done.resealed += 1;
                    }
                }
                Err(e) => {
                    done.unreadable += 1;
                    tracing::warn!(grant = %grant_id, "a kept subject token cannot be read: {e}");
                }
            }
        }
        if batch.len() < page as usize {
            break;
        }
    }
    if done.resealed > 0 {
        tracing::info!(
            grants = done.resealed,
            "sealed kept subject tokens again with the current data key"
        );
    }
    Ok(done)
}

/// The `exp` of a JWT, read without checking its signature (it was checked
/// when the grant was made).
fn expiry(jwt: &str) -> Option<i64> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("exp")?.as_i64()
}

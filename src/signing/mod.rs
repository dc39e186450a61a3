//! refgate's own signing keys: made here, kept sealed in the store (so
//! every instance on one store signs with the same keys), rotated on the
//! `[signing]` schedule and published as a JWKS.
//!
//! - `keypair`: generating a key pair, its JWK and RFC 7638 `kid`;
//! - `schedule`: when the next key is due (pure);
//! - [`SigningKeys`]: the keys in force, read from the store, with the
//!   JWKS they publish and the key that signs now.
//!
//! Two instances never add two keys for one turn: each key has a
//! generation number, the store's primary key, and the instance that loses
//! the race to add one reads the winner's instead.
//!
//! Each tenant has keys of its own ([`KeyRing`] holds one [`SigningKeys`]
//! per tenant): its own generations, its own JWKS.

mod keypair;
mod ring;
mod schedule;

pub use ring::KeyRing;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde_json::json;

use crate::config::{SigningAlgorithm, SigningSettings};
use crate::crypto::DataKeys;
use crate::store::{SigningKeyRecord, Store, StoreError, UnixTime};

pub use keypair::thumbprint;

/// A retired key stays published this long past the end of its turn on top
/// of `jwt_ttl`, for verifiers whose clocks run a little behind.
const CLOCK_LEEWAY: i64 = 60;
/// The JWKS answer reads the store again when its copy is older than this,
/// so a rotation made elsewhere shows at once.
const JWKS_FRESH: Duration = Duration::from_secs(1);
/// Longest time between two looks at the schedule.
const MOST_BETWEEN_CHECKS: Duration = Duration::from_secs(60);
/// A retired key is deleted from the store this long after it left the
/// JWKS (so instances whose clocks differ a little agree on the JWKS).
const PURGE_AFTER: i64 = 3600;
/// Tries to add a key when other instances keep winning the race.
const ADD_TRIES: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Generate(#[from] keypair::GenerateError),
    #[error("no signing key signs now")]
    NoCurrentKey,
    #[error("other instances kept adding signing keys; try again")]
    Contended,
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// One key as this instance holds it.
struct Loaded {
    kid: String,
    algorithm: SigningAlgorithm,
    signs_from: UnixTime,
    signs_until: UnixTime,
    /// `None` for a key past its turn (not needed) or one whose private
    /// half no data key opens (logged).
    signer: Option<jsonwebtoken::EncodingKey>,
}

/// The keys as last read from the store.
struct Snapshot {
    read_at: Option<Instant>,
    keys: Vec<Loaded>,
    /// The JWKS document.
    jwks: Arc<str>,
}

/// A key a forced rotation added.
#[derive(Debug, Clone)]
pub struct AddedKey {
    pub kid: String,
    pub algorithm: &'static str,
    pub signs_from: UnixTime,
}

/// The signing keys in force.
pub struct SigningKeys {
    /// Whose keys (empty: the top level's).
    tenant: String,
    store: Arc<dyn Store>,
    data_keys: Arc<DataKeys>,
    settings: SigningSettings,
    snapshot: ArcSwap<Snapshot>,
    /// One store read (and schedule check) at a time.
    refreshing: tokio::sync::Mutex<()>,
}

impl SigningKeys {
    pub fn new(
        tenant: &str,
        store: Arc<dyn Store>,
        data_keys: Arc<DataKeys>,
        settings: SigningSettings,
    ) -> Self {
        SigningKeys {
            tenant: tenant.to_string(),
            store,
            data_keys,
            settings,
            snapshot: ArcSwap::from_pointee(Snapshot {
                read_at: None,
                keys: Vec::new(),
                jwks: Arc::from(r#"{"keys":[]}"#),
            }),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    pub fn settings(&self) -> &SigningSettings {
        &self.settings
    }

    /// How often the schedule is looked at: well within `publish_ahead`, so
    /// a key due is added (and seen by every instance) long before it signs.
    pub fn check_every(&self) -> Duration {
        (self.settings.publish_ahead / 4).clamp(Duration::from_secs(1), MOST_BETWEEN_CHECKS)
    }

    /// `Cache-Control: max-age` of the JWKS: half of `publish_ahead` (at
    /// most an hour), so a verifier that caches it has a new key before
    /// the key signs anything.
    pub fn jwks_max_age(&self) -> Duration {
        (self.settings.publish_ahead / 2).min(Duration::from_secs(3600))
    }

    /// A key is published until every token it signed has expired.
    fn published_after(&self, now: UnixTime) -> UnixTime {
        now - secs(self.settings.jwt_ttl) - CLOCK_LEEWAY
    }

    /// Reads the keys, adds the one the schedule asks for if it is due,
    /// and makes what was read the keys in force.
    pub async fn refresh(&self) -> Result<(), SigningError> {
        let _one = self.refreshing.lock().await;
        let now = crate::lookup::now();
        let mut records = self
            .store
            .signing_keys(&self.tenant, self.published_after(now))
            .await?;
        for _ in 0..ADD_TRIES {
            let Some(next) = schedule::due(&spans(&records), now, &self.settings) else {
                break;
            };
            if self.add(next, now).await? {
                tracing::info!(
                    generation = next.generation,
                    signs_from = next.signs_from,
                    "signing key added"
                );
            }
            records = self
                .store
                .signing_keys(&self.tenant, self.published_after(now))
                .await?;
        }
        self.reseal_stale(&mut records, now).await?;
        self.install(records, now);
        Ok(())
    }

    /// Seals again with the current data key the private keys, still to
    /// sign, that a previous data key sealed: the previous key can then be
    /// dropped from the configuration.
    async fn reseal_stale(
        &self,
        records: &mut [SigningKeyRecord],
        now: UnixTime,
    ) -> Result<(), SigningError> {
        for record in records.iter_mut().filter(|r| r.signs_until > now) {
            let name = sealing_name(&record.kid);
            let Ok(opened) = self
                .data_keys
                .open(&name, record.generation, &record.private_sealed)
            else {
                continue;
            };
            if !opened.stale {
                continue;
            }
            let resealed = self.data_keys.seal(&name, record.generation, &opened.plain);
            if self
                .store
                .reseal_signing_key(
                    &self.tenant,
                    record.generation,
                    &record.private_sealed,
                    &resealed,
                )
                .await?
            {
                tracing::info!(kid = %record.kid, "signing key sealed with the current data key");
                record.private_sealed = resealed;
            }
        }
        Ok(())
    }

    /// Adds a key that takes over from the current one `publish_ahead` from
    /// now (`refgate key rotate-signing`).
    pub async fn rotate(&self) -> Result<AddedKey, SigningError> {
        let _one = self.refreshing.lock().await;
        let now = crate::lookup::now();
        for _ in 0..ADD_TRIES {
            let records = self
                .store
                .signing_keys(&self.tenant, self.published_after(now))
                .await?;
            let next = schedule::forced(&spans(&records), now, &self.settings);
            if let Some(kid) = self.add_returning_kid(next, now).await? {
                let records = self
                    .store
                    .signing_keys(&self.tenant, self.published_after(now))
                    .await?;
                self.install(records, now);
                return Ok(AddedKey {
                    kid,
                    algorithm: self.settings.algorithm.as_str(),
                    signs_from: next.signs_from,
                });
            }
        }
        Err(SigningError::Contended)
    }

    async fn add(&self, next: schedule::Next, now: UnixTime) -> Result<bool, SigningError> {
        Ok(self.add_returning_kid(next, now).await?.is_some())
    }

    async fn add_returning_kid(
        &self,
        next: schedule::Next,
        now: UnixTime,
    ) -> Result<Option<String>, SigningError> {
        let pair = keypair::KeyPair::generate(self.settings.algorithm)?;
        let record = SigningKeyRecord {
            tenant: self.tenant.clone(),
            generation: next.generation,
            kid: pair.kid.clone(),
            algorithm: self.settings.algorithm.as_str().to_string(),
            public_jwk: pair.public_jwk.to_string(),
            private_sealed: self.data_keys.seal(
                &sealing_name(&pair.kid),
                next.generation,
                &pair.pkcs8,
            ),
            created_at: now,
            signs_from: next.signs_from,
            signs_until: next.signs_until,
        };
        Ok(self
            .store
            .add_signing_key(&record)
            .await?
            .then_some(pair.kid))
    }

    fn install(&self, records: Vec<SigningKeyRecord>, now: UnixTime) {
        let published_after = self.published_after(now);
        let mut jwks = Vec::new();
        let mut keys = Vec::new();
        for record in records {
            if record.signs_until <= published_after {
                continue;
            }
            let Some(algorithm) = SigningAlgorithm::parse(&record.algorithm) else {
                tracing::warn!(kid = %record.kid, "signing key with an unknown algorithm skipped");
                continue;
            };
            let Ok(mut jwk) = serde_json::from_str::<serde_json::Value>(&record.public_jwk) else {
                tracing::warn!(kid = %record.kid, "signing key with an unreadable public key skipped");
                continue;
            };
            if let Some(members) = jwk.as_object_mut() {
                members.insert("kid".into(), json!(record.kid));
                members.insert("alg".into(), json!(algorithm.as_str()));
                members.insert("use".into(), json!("sig"));
            }
            jwks.push(jwk);
            let signer = (record.signs_until > now)
                .then(|| self.open_private(&record, algorithm))
                .flatten();
            keys.push(Loaded {
                kid: record.kid,
                algorithm,
                signs_from: record.signs_from,
                signs_until: record.signs_until,
                signer,
            });
        }
        self.snapshot.store(Arc::new(Snapshot {
            read_at: Some(Instant::now()),
            keys,
            jwks: Arc::from(json!({ "keys": jwks }).to_string()),
        }));
    }

    fn open_private(
        &self,
        record: &SigningKeyRecord,
        algorithm: SigningAlgorithm,
    ) -> Option<jsonwebtoken::EncodingKey> {
        match self.data_keys.open(
            &sealing_name(&record.kid),
            record.generation,
            &record.private_sealed,
        ) {
            Ok(opened) => {
                let key = keypair::encoding_key(algorithm, &opened.plain);
                if key.is_none() {
                    tracing::error!(kid = %record.kid, "a signing key does not parse");
                }
                key
            }
            Err(e) => {
                tracing::error!(kid = %record.kid, "cannot open a signing key: {e}");
                None
            }
        }
    }

    /// The JWKS document, read again from the store when the copy is older
    /// than a second.
    pub async fn jwks(&self) -> Result<Arc<str>, SigningError> {
        let fresh = |s: &Snapshot| s.read_at.is_some_and(|t| t.elapsed() < JWKS_FRESH);
        if !fresh(&self.snapshot.load()) {
            if let Err(e) = self.refresh().await {
                // A store hiccup: the last copy is still right for a while.
                if self.snapshot.load().read_at.is_none() {
                    return Err(e);
                }
                tracing::warn!("signing keys not re-read: {e}");
            }
        }
        Ok(self.snapshot.load().jwks.clone())
    }

    /// Signs `claims` with the key whose turn it is, with header `typ`.
    /// refgate alone sets the header: `alg` and `kid` come from the key.
    pub fn sign(&self, typ: &str, claims: &serde_json::Value) -> Result<String, SigningError> {
        let now = crate::lookup::now();
        let snapshot = self.snapshot.load();
        let key = snapshot
            .keys
            .iter()
            .find(|k| k.signs_from <= now && now < k.signs_until)
            .ok_or(SigningError::NoCurrentKey)?;
        let signer = key.signer.as_ref().ok_or(SigningError::NoCurrentKey)?;
        let mut header = jsonwebtoken::Header::new(keypair::jws_algorithm(key.algorithm));
        header.typ = Some(typ.to_string());
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, signer).map_err(|e| SigningError::Sign(e.to_string()))
    }

    /// One look at the schedule: adds a key when one is due and deletes
    /// the retired keys that left the JWKS long enough ago.
    pub async fn check(&self) {
        if let Err(e) = self.refresh().await {
            tracing::warn!(tenant = %self.tenant, "signing keys not checked: {e}");
        }
        // A retired key's private half has no use once it is no longer
        // published: it leaves the store.
        let before = self.published_after(crate::lookup::now()) - PURGE_AFTER;
        match self.store.purge_signing_keys(&self.tenant, before).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(tenant = %self.tenant, keys = n, "retired signing keys deleted")
            }
            Err(e) => {
                tracing::warn!(tenant = %self.tenant, "retired signing keys not deleted: {e}")
            }
        }
    }
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeys")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// What a sealed private key is bound to, besides its generation: a blob
/// moved to another key's row does not open.
fn sealing_name(kid: &str) -> String {
    format!("signing-key:{kid}")
}

fn spans(records: &[SigningKeyRecord]) -> Vec<schedule::Span> {
    records
        .iter()
        .map(|r| schedule::Span {
            generation: r.generation,
            signs_from: r.signs_from,
            signs_until: r.signs_until,
        })
        .collect()
}

fn secs(d: Duration) -> i64 {
    d.as_secs().min(i64::MAX as u64) as i64
}

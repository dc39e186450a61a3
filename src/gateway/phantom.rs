//! Phantom-token routes (`forward = "jwt"`): the upstream gets a short-lived
//! JWT (RFC 9068) that refgate signs for the inbound reference token, never
//! the reference token itself.
//!
//! JWTs are cached per (token, audience) until shortly before they expire. An
//! entry is used only for the grant version it was signed for: every
//! change to a grant (scopes, custom data) bumps its version, and a revoked
//! token never gets this far, since admission looks the token up first
//! through the lookup cache that writes and other instances' notifications
//! invalidate. So a change reaches the upstream with the next request.
//! With `[gateway] cache_capacity = 0` nothing is cached: every request on
//! a phantom route signs a new JWT.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderValue;
use serde_json::{json, Map, Value};

use super::errors::GatewayError;
use crate::config::Route;
use crate::crypto::{Random, TokenHash};
use crate::lookup::{now, ActiveToken};
use crate::signing::KeyRing;
use crate::store::UnixTime;

/// Memory the cached JWTs may take.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// A cached JWT is replaced this long before it expires (at most a quarter
/// of its lifetime), so an upstream never gets one that expires in flight.
const RENEW_BEFORE: Duration = Duration::from_secs(30);
/// JWS header `typ` of an access token (RFC 9068 §2.1).
const TYP: &str = "at+jwt";

/// A signed JWT, ready to send.
struct Minted {
    header: HeaderValue,
    /// The grant version it was signed for.
    version: i64,
    /// The `aud` and `iss` it carries: a reload that changes either makes
    /// it unusable.
    audience: Box<str>,
    issuer: Box<str>,
    /// Replace it from this instant on.
    renew_at: Instant,
}

/// JWTs by token and a hash of their `aud`: what a JWT says depends only on
/// the grant (its version), the audience and the issuer, so routes with one
/// audience share it. A hash collision only makes a JWT be signed anew (the
/// entry names its audience and is used for that one alone).
type JwtCache = moka::sync::Cache<(TokenHash, u64), Arc<Minted>>;

/// Signs and caches the JWTs of phantom-token routes.
pub struct PhantomTokens {
    /// Each route signs with its tenant's keys.
    keys: Arc<KeyRing>,
    /// `None` when caching is off.
    cache: Option<JwtCache>,
    random: Random,
}

/// Per-entry expiry: each JWT lives in the cache until its own renewal time.
struct UntilRenewal;

impl moka::Expiry<(TokenHash, u64), Arc<Minted>> for UntilRenewal {
    fn expire_after_create(
        &self,
        _key: &(TokenHash, u64),
        value: &Arc<Minted>,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(value.renew_at.saturating_duration_since(created_at))
    }
}

impl PhantomTokens {
    /// Signs with `keys`; caches the JWTs when `caching`.
    pub fn new(keys: Arc<KeyRing>, caching: bool) -> Self {
        let cache = caching.then(|| {
            moka::sync::Cache::builder()
                .max_capacity(CACHE_BYTES)
                .weigher(|_key, value: &Arc<Minted>| {
                    (value.header.len() + 128).try_into().unwrap_or(u32::MAX)
                })
                .expire_after(UntilRenewal)
                .build()
        });
        PhantomTokens {
            keys,
            cache,
            random: Random::default(),
        }
    }

    /// The `Authorization` value for `active` on `route`: a cached JWT
    /// when one was signed for the grant as it is now, else a new one.
    pub fn authorization(
        &self,
        active: &ActiveToken,
        route: &Route,
        issuer: &str,
        request_id: &str,
    ) -> Result<HeaderValue, GatewayError> {
        let Some(cache) = &self.cache else {
            return Ok(self.mint(active, route, issuer, request_id)?.header);
        };
        let key = (active.hash, audience_key(audience(route)));
        if let Some(minted) = cache.get(&key) {
            if minted.version == active.grant.version
                && *minted.audience == *audience(route)
                && *minted.issuer == *issuer
                && Instant::now() < minted.renew_at
            {
                return Ok(minted.header.clone());
            }
        }
        let minted = Arc::new(self.mint(active, route, issuer, request_id)?);
        let header = minted.header.clone();
        cache.insert(key, minted);
        Ok(header)
    }

    fn mint(
        &self,
        active: &ActiveToken,
        route: &Route,
        issuer: &str,
        request_id: &str,
    ) -> Result<Minted, GatewayError> {
        let issued_at = now();
        let keys = self.keys.of(&route.tenant).ok_or_else(|| {
            tracing::error!(request_id, route = %route.name, "no signing keys for the route's tenant");
            GatewayError::SigningUnavailable
        })?;
        let ttl = keys.settings().jwt_ttl.as_secs() as UnixTime;
        let expires_at = (issued_at + ttl).min(active.token.expires_at);
        if expires_at <= issued_at {
            return Err(GatewayError::InvalidToken);
        }
        let grant = &active.grant;
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(issuer));
        claims.insert("sub".into(), json!(&*grant.subject));
        claims.insert("aud".into(), json!(audience(route)));
        claims.insert("client_id".into(), json!(&*grant.client_id));
        claims.insert("scope".into(), json!(active.scopes().join(" ")));
        if let Some(actor) = grant.actor() {
            claims.insert("act".into(), actor.clone());
        }
        claims.insert("iat".into(), json!(issued_at));
        claims.insert("exp".into(), json!(expires_at));
        claims.insert("jti".into(), json!(self.random.grant_id()));
        let jwt = keys.sign(TYP, &Value::Object(claims)).map_err(|e| {
            tracing::error!(request_id, route = %route.name, "cannot sign a phantom token: {e}");
            GatewayError::SigningUnavailable
        })?;
        let header = HeaderValue::try_from(format!("Bearer {jwt}"))
            .map_err(|_| GatewayError::SigningUnavailable)?;
        let lifetime = Duration::from_secs((expires_at - issued_at) as u64);
        let renew_at = Instant::now() + lifetime - RENEW_BEFORE.min(lifetime / 4);
        Ok(Minted {
            header,
            version: grant.version,
            audience: audience(route).into(),
            issuer: issuer.into(),
            renew_at,
        })
    }
}

fn audience_key(audience: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(audience)
}

/// A phantom JWT's `aud`: the route's `audience`, else its name.
fn audience(route: &Route) -> &str {
    route.audience.as_deref().unwrap_or(&route.name)
}

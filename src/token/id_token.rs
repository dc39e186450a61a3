//! Verification of id_tokens from `[[trusted_issuers]]`: signature against
//! the issuer's JWKS (fetched from `jwks_uri` and cached, or read from
//! `jwks_file`), then `iss`, `aud` and `exp`. `alg: none` and HMAC
//! algorithms are never accepted: a public key must never double as an HMAC
//! secret.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::sync::Mutex;

use crate::config::{JwksSource, TrustedIssuer};

/// How long a fetched key set is used before it is fetched again.
const JWKS_TTL: Duration = Duration::from_secs(600);
/// An unknown `kid` triggers a refetch at most this often.
const REFETCH_MIN: Duration = Duration::from_secs(30);
/// After a failed fetch, the issuer's keys are not fetched again for this
/// long: requests meanwhile use the last keys known, or are refused at once
/// instead of each waiting for its own timeout.
const FAILED_FETCH_BACKOFF: Duration = Duration::from_secs(5);
/// Clock skew allowed on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 30;

/// Why an id_token was refused. The text goes to the client.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The parts of a verified id_token refgate uses.
#[derive(Debug)]
pub struct VerifiedIdToken {
    pub subject: String,
    pub issuer: String,
}

/// One issuer's keys as last fetched.
#[derive(Default)]
struct IssuerKeys {
    keys: Option<Arc<JwkSet>>,
    fetched: Option<Instant>,
    failed: Option<Instant>,
}

/// Verifies id_tokens, caching each issuer's keys.
pub struct IdTokenVerifier {
    http: reqwest::Client,
    /// One lock per issuer, held while its keys are fetched: a slow or
    /// unreachable `jwks_uri` delays only the id_tokens of that issuer.
    issuers: Mutex<HashMap<String, Arc<Mutex<IssuerKeys>>>>,
}

#[derive(serde::Deserialize)]
struct UnverifiedClaims {
    iss: Option<String>,
}

#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
    iss: String,
}

impl IdTokenVerifier {
    pub fn new(http: reqwest::Client) -> Self {
        IdTokenVerifier {
            http,
            issuers: Mutex::new(HashMap::new()),
        }
    }

    /// Verifies `token` against the trusted issuer it names.
    pub async fn verify(
        &self,
        trusted: &[Arc<TrustedIssuer>],
        token: &str,
    ) -> Result<VerifiedIdToken, Refused> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Refused("the id_token is not a signed JWT".into()))?;
        let family = match header.alg {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => KeyFamily::Rsa,
            Algorithm::ES256 | Algorithm::ES384 => KeyFamily::Ec,
            Algorithm::EdDSA => KeyFamily::Okp,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                return Err(Refused("HMAC-signed id_tokens are not accepted".into()))
            }
        };
        let issuer = unverified_issuer(token)?;
        let trusted = trusted
            .iter()
            .find(|t| t.issuer == issuer)
            .ok_or_else(|| Refused("the id_token's issuer is not trusted".into()))?;
        let key = self
            .key_for(trusted, header.kid.as_deref(), header.alg, family)
            .await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&trusted.issuer]);
        validation.set_audience(&trusted.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // Off by default in jsonwebtoken: an id_token that carries `nbf`
        // must not be accepted before it (RFC 7519 §4.1.5).
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            Refused(
                match e.kind() {
                    ErrorKind::ExpiredSignature => "the id_token has expired",
                    ErrorKind::InvalidAudience => "the id_token's audience is not accepted",
                    ErrorKind::InvalidIssuer => "the id_token's issuer is not trusted",
                    ErrorKind::InvalidSignature => "the id_token's signature does not verify",
                    ErrorKind::ImmatureSignature => "the id_token is not valid yet",
                    ErrorKind::MissingRequiredClaim(_) => "the id_token lacks a required claim",
                    _ => "the id_token could not be verified",
                }
                .to_string(),
            )
        })?;
        if data.claims.sub.is_empty() {
            return Err(Refused("the id_token has an empty sub".into()));
        }
        Ok(VerifiedIdToken {
            subject: data.claims.sub,
            issuer: data.claims.iss,
        })
    }

    async fn key_for(
        &self,
        trusted: &TrustedIssuer,
        kid: Option<&str>,
        alg: Algorithm,
        family: KeyFamily,
    ) -> Result<DecodingKey, Refused> {
        let set = self.key_set(trusted, false).await?;
        let found = pick_key(&set, kid, alg, family);
        let jwk = match found {
            Some(jwk) => jwk,
            None => {
                // A rotated key: fetch again (rate limited) and retry once.
                let set = self.key_set(trusted, true).await?;
                pick_key(&set, kid, alg, family)
                    .ok_or_else(|| Refused("no key of the issuer matches the id_token".into()))?
            }
        };
        DecodingKey::from_jwk(&jwk).map_err(|_| Refused("the issuer's key is unusable".into()))
    }

    async fn key_set(
        &self,
        trusted: &TrustedIssuer,
        refresh: bool,
    ) -> Result<Arc<JwkSet>, Refused> {
        let slot = self
            .issuers
            .lock()
            .await
            .entry(trusted.issuer.clone())
            .or_default()
            .clone();
        let mut state = slot.lock().await;
        if let (Some(keys), Some(fetched)) = (&state.keys, state.fetched) {
            let age = fetched.elapsed();
            if age < JWKS_TTL && (!refresh || age < REFETCH_MIN) {
                return Ok(keys.clone());
            }
        }
        let unavailable = || Refused("the issuer's keys are unavailable".into());
        if state
            .failed
            .is_some_and(|at| at.elapsed() < FAILED_FETCH_BACKOFF)
        {
            return state.keys.clone().ok_or_else(unavailable);
        }
        match self.fetch(&trusted.jwks).await {
            Ok(set) => {
                let keys = Arc::new(set);
                *state = IssuerKeys {
                    keys: Some(keys.clone()),
                    fetched: Some(Instant::now()),
                    failed: None,
                };
                Ok(keys)
            }
            Err(e) => {
                tracing::warn!(issuer = %trusted.issuer, error = %e, "cannot load the issuer's JWKS");
                state.failed = Some(Instant::now());
                // Keys that were good a moment ago beat refusing everyone.
                state.keys.clone().ok_or_else(unavailable)
            }
        }
    }

    async fn fetch(&self, source: &JwksSource) -> Result<JwkSet, String> {
        match source {
            JwksSource::File(path) => {
                let text = tokio::fs::read_to_string(path)
                    .await
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                serde_json::from_str(&text).map_err(|e| e.to_string())
            }
            JwksSource::Uri(uri) => {
                let response = self
                    .http
                    .get(uri)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?
                    .error_for_status()
                    .map_err(|e| e.to_string())?;
                let body = response.bytes().await.map_err(|e| e.to_string())?;
                if body.len() > 1024 * 1024 {
                    return Err("JWKS larger than 1 MiB".into());
                }
                serde_json::from_slice(&body).map_err(|e| e.to_string())
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyFamily {
    Rsa,
    Ec,
    Okp,
}

fn pick_key(set: &JwkSet, kid: Option<&str>, alg: Algorithm, family: KeyFamily) -> Option<Jwk> {
    set.keys
        .iter()
        .filter(|k| match kid {
            Some(kid) => k.common.key_id.as_deref() == Some(kid),
            None => true,
        })
        .find(|k| {
            let family_ok = matches!(
                (&k.algorithm, family),
                (AlgorithmParameters::RSA(_), KeyFamily::Rsa)
                    | (AlgorithmParameters::EllipticCurve(_), KeyFamily::Ec)
                    | (AlgorithmParameters::OctetKeyPair(_), KeyFamily::Okp)
            );
            // A key that names its algorithm is used with that one only.
            let alg_ok = match k.common.key_algorithm {
                None => true,
                Some(ka) => format!("{ka:?}") == format!("{alg:?}"),
            };
            family_ok && alg_ok
        })
        .cloned()
}

fn unverified_issuer(token: &str) -> Result<String, Refused> {
    let malformed = || Refused("the id_token is not a well-formed JWT".into());
    let payload = token.split('.').nth(1).ok_or_else(malformed)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| malformed())?;
    let claims: UnverifiedClaims = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    claims
        .iss
        .ok_or_else(|| Refused("the id_token has no iss".into()))
}

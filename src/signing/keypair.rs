//! One signing key pair: made with ring (RSA keys with the `rsa` crate,
//! which ring cannot make), its public half as a JWK and its RFC 7638
//! thumbprint (the `kid`), its private half as PKCS#8 for `jsonwebtoken`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use serde_json::json;

use crate::config::SigningAlgorithm;

/// Bits of an RS256 key.
const RSA_BITS: usize = 2048;

/// A fresh key pair. Its `Debug` shows no private material.
pub struct KeyPair {
    pub algorithm: SigningAlgorithm,
    /// PKCS#8 DER of the private key.
    pub pkcs8: Vec<u8>,
    /// The public key as a JWK (without `kid`, `alg`, `use`).
    pub public_jwk: serde_json::Value,
    pub kid: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot generate a {0} signing key")]
pub struct GenerateError(&'static str);

impl KeyPair {
    /// Generates a key pair from the system's CSPRNG.
    pub fn generate(algorithm: SigningAlgorithm) -> Result<Self, GenerateError> {
        let rng = SystemRandom::new();
        let failed = || GenerateError(algorithm.as_str());
        let (pkcs8, public_jwk) = match algorithm {
            SigningAlgorithm::Es256 => {
                let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| failed())?;
                let pair =
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref(), &rng)
                        .map_err(|_| failed())?;
                // Uncompressed point: 0x04 || x || y.
                let point = pair.public_key().as_ref();
                if point.len() != 65 {
                    return Err(failed());
                }
                let jwk = json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                    "y": URL_SAFE_NO_PAD.encode(&point[33..]),
                });
                (doc.as_ref().to_vec(), jwk)
            }
            SigningAlgorithm::EdDsa => {
                let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| failed())?;
                let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).map_err(|_| failed())?;
                let jwk = json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
                });
                (doc.as_ref().to_vec(), jwk)
            }
            SigningAlgorithm::Rs256 => {
                use rsa::pkcs8::EncodePrivateKey;
                use rsa::traits::PublicKeyParts;
                let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, RSA_BITS)
                    .map_err(|_| failed())?;
                let jwk = json!({
                    "kty": "RSA",
                    "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
                    "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
                });
                let der = key.to_pkcs8_der().map_err(|_| failed())?;
                (der.as_bytes().to_vec(), jwk)
            }
        };
        let kid = thumbprint(&public_jwk).ok_or_else(failed)?;
        Ok(KeyPair {
            algorithm,
            pkcs8,
            public_jwk,
            kid,
        })
    }
}

/// RFC 7638: SHA-256 over the required members in lexicographic order,
/// without whitespace, base64url. `None` for a key type refgate does not make.
pub fn thumbprint(jwk: &serde_json::Value) -> Option<String> {
    let member = |name: &str| jwk.get(name).and_then(|v| v.as_str());
    // serde_json writes strings with the escaping RFC 7638 asks for; the
    // members are base64url and fixed names, so nothing needs escaping.
    let canonical = match member("kty")? {
        "EC" => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            member("crv")?,
            member("x")?,
            member("y")?
        ),
        "OKP" => format!(
            r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#,
            member("crv")?,
            member("x")?
        ),
        "RSA" => format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            member("e")?,
            member("n")?
        ),
        _ => return None,
    };
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
    Some(URL_SAFE_NO_PAD.encode(digest.as_ref()))
}

/// The `jsonwebtoken` signing key for a PKCS#8 private key; `None` when
/// the bytes are not a key of that algorithm.
pub fn encoding_key(
    algorithm: SigningAlgorithm,
    pkcs8: &[u8],
) -> Option<jsonwebtoken::EncodingKey> {
    match algorithm {
        SigningAlgorithm::Es256 => Some(jsonwebtoken::EncodingKey::from_ec_der(pkcs8)),
        SigningAlgorithm::EdDsa => Some(jsonwebtoken::EncodingKey::from_ed_der(pkcs8)),
        SigningAlgorithm::Rs256 => {
            // jsonwebtoken (ring) takes an RSA key as PKCS#1.
            use rsa::pkcs1::EncodeRsaPrivateKey;
            use rsa::pkcs8::DecodePrivateKey;
            let key = rsa::RsaPrivateKey::from_pkcs8_der(pkcs8).ok()?;
            let pkcs1 = key.to_pkcs1_der().ok()?;
            Some(jsonwebtoken::EncodingKey::from_rsa_der(pkcs1.as_bytes()))
        }
    }
}

/// The `jsonwebtoken` algorithm.
pub fn jws_algorithm(algorithm: SigningAlgorithm) -> jsonwebtoken::Algorithm {
    match algorithm {
        SigningAlgorithm::Es256 => jsonwebtoken::Algorithm::ES256,
        SigningAlgorithm::EdDsa => jsonwebtoken::Algorithm::EdDSA,
        SigningAlgorithm::Rs256 => jsonwebtoken::Algorithm::RS256,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7638_example_thumbprint_is_reproduced() {
        // RFC 7638 §3.1 uses an RSA key; RFC 8037 §A.3 gives one for Ed25519.
        let jwk = json!({"kty":"OKP","crv":"Ed25519",
            "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
        assert_eq!(
            thumbprint(&jwk).as_deref(),
            Some("kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k")
        );
    }

    #[test]
    fn generated_keys_sign_and_verify() {
        for algorithm in [
            SigningAlgorithm::Es256,
            SigningAlgorithm::EdDsa,
            SigningAlgorithm::Rs256,
        ] {
            let pair = KeyPair::generate(algorithm).expect("generate");
            let mut header = jsonwebtoken::Header::new(jws_algorithm(algorithm));
            header.kid = Some(pair.kid.clone());
            let token = jsonwebtoken::encode(
                &header,
                &json!({"sub": "x", "exp": 4_000_000_000u64}),
                &encoding_key(algorithm, &pair.pkcs8).expect("a key"),
            )
            .expect("sign");
            let jwk: jsonwebtoken::jwk::Jwk =
                serde_json::from_value(pair.public_jwk.clone()).expect("jwk");
            let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("decoding key");
            let mut validation = jsonwebtoken::Validation::new(jws_algorithm(algorithm));
            validation.validate_aud = false;
            jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation).expect("verifies");
        }
    }
}

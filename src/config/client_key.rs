//! `private_key_file` of an authority using `private_key_jwt` (RFC 7523):
//! a PKCS#8 PEM key, RSA (signing RS256) or EC P-256 (ES256), read and
//! checked once when the configuration is validated. Its `kid` is the RFC
//! 7638 thumbprint of its public half, so an authority can find it in a
//! JWKS registered for the client.

use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::json;

/// A key signing client assertions.
pub struct ClientKey {
    pub algorithm: jsonwebtoken::Algorithm,
    /// RFC 7638 thumbprint of the public key.
    pub kid: String,
    pub signer: jsonwebtoken::EncodingKey,
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientKey")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl ClientKey {
    /// Reads a PKCS#8 PEM file. The error says what is wrong without
    /// quoting the file's contents.
    pub fn read(path: &Path) -> Result<Self, String> {
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut reader = pem.as_slice();
        let der = loop {
            match rustls_pemfile::read_one(&mut reader) {
                Ok(Some(rustls_pemfile::Item::Pkcs8Key(key))) => {
                    break key.secret_pkcs8_der().to_vec()
                }
                Ok(Some(_)) => continue,
                Ok(None) => {
                    return Err(format!(
                        "{} holds no PKCS#8 private key (\"BEGIN PRIVATE KEY\")",
                        path.display()
                    ))
                }
                Err(e) => return Err(format!("{}: bad PEM: {e}", path.display())),
            }
        };
        Self::from_pkcs8(&der).ok_or_else(|| {
            format!(
                "{}: the key is neither RSA nor EC P-256 (the algorithms are RS256 and ES256)",
                path.display()
            )
        })
    }

    /// An RSA or EC P-256 key from PKCS#8 DER.
    fn from_pkcs8(der: &[u8]) -> Option<Self> {
        if let Ok(rsa) = <rsa::RsaPrivateKey as rsa::pkcs8::DecodePrivateKey>::from_pkcs8_der(der) {
            use rsa::pkcs1::EncodeRsaPrivateKey;
            use rsa::traits::PublicKeyParts;
            let jwk = json!({
                "kty": "RSA",
                "n": URL_SAFE_NO_PAD.encode(rsa.n().to_bytes_be()),
                "e": URL_SAFE_NO_PAD.encode(rsa.e().to_bytes_be()),
            });
            let pkcs1 = rsa.to_pkcs1_der().ok()?;
            return Some(ClientKey {
                algorithm: jsonwebtoken::Algorithm::RS256,
                kid: crate::signing::thumbprint(&jwk)?,
                signer: jsonwebtoken::EncodingKey::from_rsa_der(pkcs1.as_bytes()),
            });
        }
        use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = ring::rand::SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng).ok()?;
        // An uncompressed point: 0x04, x, y.
        let point = pair.public_key().as_ref();
        if point.len() != 65 || point[0] != 4 {
            return None;
        }
        let jwk = json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..]),
        });
        Some(ClientKey {
            algorithm: jsonwebtoken::Algorithm::ES256,
            kid: crate::signing::thumbprint(&jwk)?,
            signer: jsonwebtoken::EncodingKey::from_ec_der(der),
        })
    }
}

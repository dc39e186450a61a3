//! Token generation, token hashing, client-secret checks and sealing of
//! custom data at rest. Everything that touches key material lives here.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

/// Prefix of every access token, so secret scanners can spot leaked ones.
pub const ACCESS_PREFIX: &str = "rgat_";
/// Prefix of every refresh token.
pub const REFRESH_PREFIX: &str = "rgrt_";
/// Random bytes in a token (256 bits).
const TOKEN_BYTES: usize = 32;
/// Length of the base64url body of a token.
const TOKEN_BODY_LEN: usize = 43;
/// First byte of a sealed blob: the sealing format, so it can change later.
const SEAL_FORMAT: u8 = 1;

/// The kind of an opaque token, read from its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    Access,
    Refresh,
}

impl TokenKind {
    /// The value stored in the database for this kind.
    pub fn code(self) -> i64 {
        match self {
            TokenKind::Access => 0,
            TokenKind::Refresh => 1,
        }
    }

    /// The kind for a stored code.
    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            0 => Some(TokenKind::Access),
            1 => Some(TokenKind::Refresh),
            _ => None,
        }
    }
}

/// SHA-256 of a token string: the only form in which a token is stored or
/// used as a cache key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenHash(pub [u8; 32]);

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A short prefix is enough to correlate log lines and reveals nothing.
        write!(f, "TokenHash({})", hex::encode(&self.0[..4]))
    }
}

/// Hashes a token string.
pub fn hash_token(token: &str) -> TokenHash {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    TokenHash(out)
}

/// Checks that a string has the shape of a refgate token and returns its kind.
/// A string of the wrong shape can never be a token, so callers skip the store.
pub fn token_kind(token: &str) -> Option<TokenKind> {
    let (kind, body) = if let Some(body) = token.strip_prefix(ACCESS_PREFIX) {
        (TokenKind::Access, body)
    } else if let Some(body) = token.strip_prefix(REFRESH_PREFIX) {
        (TokenKind::Refresh, body)
    } else {
        return None;
    };
    let well_formed = body.len() == TOKEN_BODY_LEN
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then_some(kind)
}

/// Source of randomness for tokens, ids, nonces and keys.
#[derive(Clone)]
pub struct Random(SystemRandom);

impl Default for Random {
    fn default() -> Self {
        Random(SystemRandom::new())
    }
}

impl Random {
    fn bytes<const N: usize>(&self) -> [u8; N] {
        let mut out = [0u8; N];
        self.0
            .fill(&mut out)
            .expect("the operating system's CSPRNG is available");
        out
    }

    /// A fresh token of the given kind.
    pub fn token(&self, kind: TokenKind) -> String {
        let prefix = match kind {
            TokenKind::Access => ACCESS_PREFIX,
            TokenKind::Refresh => REFRESH_PREFIX,
        };
        let body = URL_SAFE_NO_PAD.encode(self.bytes::<TOKEN_BYTES>());
        format!("{prefix}{body}")
    }

    /// A fresh 128-bit identifier (hex) for a grant.
    pub fn grant_id(&self) -> String {
        hex::encode(self.bytes::<16>())
    }

    /// A fresh 256-bit key, standard padded base64.
    pub fn data_key_base64(&self) -> String {
        STANDARD.encode(self.bytes::<32>())
    }
}

/// A stored client secret: `sha256:<hex>`.
#[derive(Clone)]
pub struct SecretHash([u8; 32]);

impl std::fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHash(..)")
    }
}

impl SecretHash {
    /// Parses the `sha256:<64 hex digits>` form.
    pub fn parse(text: &str) -> Option<Self> {
        let hex_part = text.strip_prefix("sha256:")?;
        if hex_part.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).ok()?;
        Some(SecretHash(out))
    }

    /// Hashes a presented secret and compares in constant time.
    pub fn verify(&self, presented: &str) -> bool {
        let digest = ring::digest::digest(&ring::digest::SHA256, presented.as_bytes());
        bool::from(digest.as_ref().ct_eq(&self.0))
    }

    /// A hash that no secret matches, used for unknown clients so that the
    /// work done does not reveal whether a client id exists.
    pub fn unmatchable() -> Self {
        SecretHash([0u8; 32])
    }
}

/// The `sha256:<hex>` form of a secret, as `refgate secret hash` prints it.
pub fn secret_hash_text(secret: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    format!("sha256:{}", hex::encode(digest.as_ref()))
}

/// The key that seals custom data at rest (AES-256-GCM).
pub struct DataKey {
    key: LessSafeKey,
    random: Random,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// Sealed data could not be opened: wrong key, or tampered with.
#[derive(Debug, thiserror::Error)]
#[error("sealed data could not be opened (wrong data key or corrupted record)")]
pub struct OpenError;

impl DataKey {
    /// Builds the key from 32 raw bytes.
    pub fn new(bytes: &[u8; 32]) -> Self {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).expect("32 bytes is an AES-256 key");
        DataKey {
            key: LessSafeKey::new(unbound),
            random: Random::default(),
        }
    }

    /// Decodes standard base64 into a key; `None` unless it is exactly 32 bytes.
    pub fn from_base64(text: &str) -> Option<Self> {
        let raw = STANDARD.decode(text.trim()).ok()?;
        let bytes: [u8; 32] = raw.try_into().ok()?;
        Some(DataKey::new(&bytes))
    }

    /// Seals `plain`, binding it to `context` (the grant id) so a sealed blob
    /// cannot be moved to another record.
    pub fn seal(&self, context: &str, plain: &[u8]) -> Vec<u8> {
        let nonce_bytes = self.random.bytes::<NONCE_LEN>();
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plain.len() + 16);
        out.push(SEAL_FORMAT);
        out.extend_from_slice(&nonce_bytes);
        let mut body = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(context.as_bytes()),
                &mut body,
            )
            .expect("AES-GCM sealing of an in-memory buffer cannot fail");
        out.extend_from_slice(&body);
        out
    }

    /// Opens a blob made by [`DataKey::seal`] with the same context.
    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != SEAL_FORMAT {
            return Err(OpenError);
        }
        let nonce_bytes: [u8; NONCE_LEN] =
            sealed[1..1 + NONCE_LEN].try_into().map_err(|_| OpenError)?;
        let mut body = sealed[1 + NONCE_LEN..].to_vec();
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(context.as_bytes()),
                &mut body,
            )
            .map_err(|_| OpenError)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_prefix_and_shape() {
        let random = Random::default();
        let access = random.token(TokenKind::Access);
        assert!(access.starts_with("rgat_"));
        assert_eq!(token_kind(&access), Some(TokenKind::Access));
        let refresh = random.token(TokenKind::Refresh);
        assert_eq!(token_kind(&refresh), Some(TokenKind::Refresh));
        assert_ne!(access[5..], refresh[5..]);
        assert_eq!(token_kind("rgat_short"), None);
        assert_eq!(token_kind("Bearer x"), None);
    }

    #[test]
    fn sealed_data_opens_only_in_its_context() {
        let key = DataKey::new(&[7u8; 32]);
        let sealed = key.seal("grant-a", b"marker-123");
        assert!(!sealed.windows(10).any(|w| w == b"marker-123"));
        assert_eq!(key.open("grant-a", &sealed).unwrap(), b"marker-123");
        assert!(key.open("grant-b", &sealed).is_err());
        let other = DataKey::new(&[8u8; 32]);
        assert!(other.open("grant-a", &sealed).is_err());
    }

    #[test]
    fn secret_hash_round_trip() {
        let text = secret_hash_text("s3cret");
        let hash = SecretHash::parse(&text).unwrap();
        assert!(hash.verify("s3cret"));
        assert!(!hash.verify("s3cret "));
        assert!(SecretHash::parse("sha256:zz").is_none());
        assert!(!SecretHash::unmatchable().verify(""));
    }
}

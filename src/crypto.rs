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

/// Hashes a token string of `tenant` (empty: the top level). A tenant's
/// hashes cover its name, so the same string has another hash in every
/// tenant: a token looked up in a tenant that did not issue it is simply
/// not found, and every store key and cache key of a token includes its
/// tenant. The top level hashes the bare string (as stores written before
/// tenants existed hold it); a tenant's input starts with a NUL byte,
/// which no token and no string the top level hashes holds.
pub fn hash_token(tenant: &str, token: &str) -> TokenHash {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    if !tenant.is_empty() {
        context.update(b"\0refgate-tenant\0");
        context.update(tenant.as_bytes());
        context.update(b"\0");
    }
    context.update(token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
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

    /// 32 random bytes as unpadded base64url: a one-time secret for a URL
    /// or a cookie.
    pub fn url_secret(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.bytes::<32>())
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

/// One data key (AES-256-GCM) with its key id.
pub struct DataKey {
    key: LessSafeKey,
    id: KeyId,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey({})", self.id)
    }
}

impl DataKey {
    /// Builds the key from 32 raw bytes.
    pub fn new(bytes: &[u8; 32]) -> Self {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).expect("32 bytes is an AES-256 key");
        DataKey {
            key: LessSafeKey::new(unbound),
            id: KeyId::of(bytes),
        }
    }

    /// Decodes standard base64 into a key; `None` unless it is exactly 32 bytes.
    pub fn from_base64(text: &str) -> Option<Self> {
        let raw = STANDARD.decode(text.trim()).ok()?;
        let bytes: [u8; 32] = raw.try_into().ok()?;
        Some(DataKey::new(&bytes))
    }

    /// The id that blobs sealed with this key carry.
    pub fn id(&self) -> KeyId {
        self.id
    }

    fn open_in(&self, nonce: [u8; NONCE_LEN], aad: &[u8], body: &[u8]) -> Option<Vec<u8>> {
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .ok()?;
        Some(plain.to_vec())
    }
}

/// Names a data key without revealing it: the first bytes of a SHA-256 of
/// the key under a fixed label. Sealed blobs carry it in the clear, so a
/// store can tell which key sealed what, and it may appear in logs.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; KEY_ID_LEN]);

impl KeyId {
    fn of(key: &[u8; 32]) -> Self {
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        context.update(b"refgate data key id\0");
        context.update(key);
        let digest = context.finish();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest.as_ref()[..KEY_ID_LEN]);
        KeyId(id)
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Bytes of a key id in a sealed blob.
pub const KEY_ID_LEN: usize = 8;
/// First byte of a blob sealed before blobs carried a key id: nonce and
/// ciphertext follow, bound to the grant id only.
pub const SEAL_FORMAT_UNNAMED: u8 = 1;
/// First byte of a blob that names its key: key id, nonce and ciphertext
/// follow, bound to the header, the grant id and the grant version.
pub const SEAL_FORMAT_NAMED: u8 = 2;
/// The clear header of a blob that names its key: format byte and key id.
pub const SEAL_HEADER_LEN: usize = 1 + KEY_ID_LEN;

/// Why sealed data did not open. None of these reveal key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The blob names a key that is not configured.
    #[error("sealed with data key {0}, which is not configured")]
    UnknownKey(KeyId),
    /// The named key is configured but the blob does not open under it
    /// for this grant and version: it was altered, copied from another
    /// grant, or rolled back to an older version of this grant.
    #[error("does not open for this grant and version (altered or rolled back)")]
    Rejected,
    /// A blob from before key ids that opens with no configured key.
    #[error("sealed before key ids and opens with no configured data key")]
    NoKeyOpens,
    /// Too short, or a format this version does not know.
    #[error("not a sealed blob this version can read")]
    Malformed,
}

/// Custom data opened from a blob.
#[derive(Debug)]
pub struct Opened {
    pub plain: Vec<u8>,
    /// Whether the blob should be sealed again: it was sealed with a
    /// previous key, or before blobs named their key and version.
    pub stale: bool,
}

/// The data keys: the current one seals, every one of them opens.
///
/// A blob is `[2][key id: 8][nonce: 12][ciphertext + tag]`, and the AEAD's
/// associated data is the header, the grant version and the grant id. So a
/// blob opens only for the grant and the version it was written for: copied
/// to another grant, or put back in place of a newer version of its grant,
/// it is refused. Blobs written before key ids (`[1][nonce][ciphertext]`,
/// bound to the grant id only) still open with any configured key until
/// they are sealed again.
pub struct DataKeys {
    current: DataKey,
    previous: Vec<DataKey>,
    random: Random,
}

impl std::fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKeys")
            .field("current", &self.current)
            .field("previous", &self.previous)
            .finish()
    }
}

impl DataKeys {
    /// The current key and the previous ones that still open old blobs.
    pub fn new(current: DataKey, previous: Vec<DataKey>) -> Self {
        DataKeys {
            current,
            previous,
            random: Random::default(),
        }
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> KeyId {
        self.current.id
    }

    /// Whether any previous keys are configured.
    pub fn has_previous(&self) -> bool {
        !self.previous.is_empty()
    }

    /// Whether a key of this id is configured (current or previous).
    pub fn knows(&self, id: KeyId) -> bool {
        self.find(id).is_some()
    }

    /// The header every blob sealed with the current key starts with.
    pub fn current_header(&self) -> [u8; SEAL_HEADER_LEN] {
        header(self.current.id)
    }

    fn find(&self, id: KeyId) -> Option<&DataKey> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
    }

    /// Seals `plain` with the current key for grant `grant_id` at `version`.
    pub fn seal(&self, grant_id: &str, version: i64, plain: &[u8]) -> Vec<u8> {
        let head = self.current_header();
        let nonce_bytes = self.random.bytes::<NONCE_LEN>();
        let mut out = Vec::with_capacity(SEAL_HEADER_LEN + NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(&head);
        out.extend_from_slice(&nonce_bytes);
        let mut body = plain.to_vec();
        self.current
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(associated_data(&head, grant_id, version)),
                &mut body,
            )
            .expect("AES-GCM sealing of an in-memory buffer cannot fail");
        out.extend_from_slice(&body);
        out
    }

    /// Opens a blob of grant `grant_id` at `version`.
    pub fn open(&self, grant_id: &str, version: i64, sealed: &[u8]) -> Result<Opened, OpenError> {
        match sealed.first() {
            Some(&SEAL_FORMAT_NAMED) => {
                let id = named_key_id(sealed).ok_or(OpenError::Malformed)?;
                let key = self.find(id).ok_or(OpenError::UnknownKey(id))?;
                let rest = &sealed[SEAL_HEADER_LEN..];
                let nonce = nonce_of(rest).ok_or(OpenError::Malformed)?;
                let aad = associated_data(&sealed[..SEAL_HEADER_LEN], grant_id, version);
                let plain = key
                    .open_in(nonce, &aad, &rest[NONCE_LEN..])
                    .ok_or(OpenError::Rejected)?;
                Ok(Opened {
                    plain,
                    stale: id != self.current.id,
                })
            }
            Some(&SEAL_FORMAT_UNNAMED) => {
                let rest = &sealed[1..];
                let nonce = nonce_of(rest).ok_or(OpenError::Malformed)?;
                std::iter::once(&self.current)
                    .chain(&self.previous)
                    .find_map(|key| key.open_in(nonce, grant_id.as_bytes(), &rest[NONCE_LEN..]))
                    .map(|plain| Opened { plain, stale: true })
                    .ok_or(OpenError::NoKeyOpens)
            }
            _ => Err(OpenError::Malformed),
        }
    }
}

/// The key id a blob names, when it names one.
pub fn named_key_id(sealed: &[u8]) -> Option<KeyId> {
    if sealed.first() != Some(&SEAL_FORMAT_NAMED) {
        return None;
    }
    let id: [u8; KEY_ID_LEN] = sealed.get(1..SEAL_HEADER_LEN)?.try_into().ok()?;
    Some(KeyId(id))
}

fn header(id: KeyId) -> [u8; SEAL_HEADER_LEN] {
    let mut out = [0u8; SEAL_HEADER_LEN];
    out[0] = SEAL_FORMAT_NAMED;
    out[1..].copy_from_slice(&id.0);
    out
}

fn nonce_of(rest: &[u8]) -> Option<[u8; NONCE_LEN]> {
    rest.get(..NONCE_LEN)?.try_into().ok()
}

/// Header, version (8 bytes, big-endian), grant id: fixed-length fields
/// first, so no two (grant, version) pairs give the same bytes.
fn associated_data(head: &[u8], grant_id: &str, version: i64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(head.len() + 8 + grant_id.len());
    aad.extend_from_slice(head);
    aad.extend_from_slice(&version.to_be_bytes());
    aad.extend_from_slice(grant_id.as_bytes());
    aad
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

    fn keys(current: u8, previous: &[u8]) -> DataKeys {
        DataKeys::new(
            DataKey::new(&[current; 32]),
            previous.iter().map(|b| DataKey::new(&[*b; 32])).collect(),
        )
    }

    #[test]
    fn sealed_data_opens_only_for_its_grant_and_version() {
        let keys = keys(7, &[]);
        let sealed = keys.seal("grant-a", 3, b"marker-123");
        assert!(!sealed.windows(10).any(|w| w == b"marker-123"));
        let opened = keys.open("grant-a", 3, &sealed).unwrap();
        assert_eq!(opened.plain, b"marker-123");
        assert!(!opened.stale);
        assert_eq!(
            keys.open("grant-b", 3, &sealed).unwrap_err(),
            OpenError::Rejected
        );
        assert_eq!(
            keys.open("grant-a", 4, &sealed).unwrap_err(),
            OpenError::Rejected
        );
        let mut altered = sealed.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert_eq!(
            keys.open("grant-a", 3, &altered).unwrap_err(),
            OpenError::Rejected
        );
        let other = self::keys(8, &[]);
        assert_eq!(
            other.open("grant-a", 3, &sealed).unwrap_err(),
            OpenError::UnknownKey(keys.current_id())
        );
        assert_eq!(
            keys.open("grant-a", 3, &[]).unwrap_err(),
            OpenError::Malformed
        );
        assert_eq!(
            keys.open("grant-a", 3, &[2, 1]).unwrap_err(),
            OpenError::Malformed
        );
    }

    #[test]
    fn previous_keys_open_and_the_current_one_seals() {
        let old = keys(1, &[]);
        let sealed = old.seal("g", 1, b"{}");
        let rotated = keys(2, &[1]);
        let opened = rotated.open("g", 1, &sealed).unwrap();
        assert_eq!(opened.plain, b"{}");
        assert!(opened.stale, "sealed with a previous key");
        let resealed = rotated.seal("g", 1, &opened.plain);
        assert_eq!(resealed[..SEAL_HEADER_LEN], rotated.current_header());
        assert_eq!(named_key_id(&resealed), Some(rotated.current_id()));
        assert!(keys(2, &[]).open("g", 1, &resealed).is_ok());
        assert!(rotated.knows(old.current_id()));
        assert!(!keys(2, &[]).knows(old.current_id()));
    }

    /// A blob as sealed before blobs named their key: `[1][nonce][body]`,
    /// bound to the grant id only.
    fn seal_unnamed(key: &[u8; 32], grant_id: &str, plain: &[u8]) -> Vec<u8> {
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap());
        let nonce = [9u8; NONCE_LEN];
        let mut body = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(grant_id.as_bytes()),
            &mut body,
        )
        .unwrap();
        [&[SEAL_FORMAT_UNNAMED][..], &nonce, &body].concat()
    }

    #[test]
    fn blobs_sealed_before_key_ids_open_with_any_configured_key() {
        let sealed = seal_unnamed(&[1; 32], "g", b"old");
        for keys in [keys(1, &[]), keys(2, &[1])] {
            let opened = keys.open("g", 5, &sealed).unwrap();
            assert_eq!(opened.plain, b"old");
            assert!(opened.stale, "to be sealed again with a key id");
        }
        assert_eq!(
            keys(2, &[]).open("g", 5, &sealed).unwrap_err(),
            OpenError::NoKeyOpens
        );
        assert_eq!(
            keys(1, &[]).open("h", 5, &sealed).unwrap_err(),
            OpenError::NoKeyOpens
        );
    }

    #[test]
    fn a_key_id_names_the_key_without_revealing_it() {
        let a = DataKey::new(&[1; 32]).id();
        assert_eq!(a, DataKey::new(&[1; 32]).id());
        assert_ne!(a, DataKey::new(&[2; 32]).id());
        assert_eq!(format!("{a}").len(), 2 * KEY_ID_LEN);
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

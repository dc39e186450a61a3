//! Downstream credentials stored inside a grant's custom data under
//! `custom.credentials.<name>` (SPEC 3.6).
//!
//! Two shapes: [`StoredCredential`] is the stored JSON, read fresh from the
//! store whenever a credential is refreshed or exchanged; [`Credential`] is
//! the compact form a cached grant keeps for the proxy's hot path — the
//! prepared header text, the expiry and two flags, nothing a request does
//! not need (no refresh token, which only the refresh reads, from the store).

use std::sync::Arc;

use http::HeaderValue;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Reserved authority name: refgate's own token service.
pub const SELF_AUTHORITY: &str = "self";

/// The stored shape of one downstream credential.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredCredential {
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Set when the authority refused a refresh: the user must consent again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reauth_required: Option<bool>,
    /// Set by refgate on a credential it obtained by an external exchange
    /// (a route's `[routes.exchange] authority`); no client may set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchanged: Option<bool>,
}

impl StoredCredential {
    pub fn reauth_required(&self) -> bool {
        self.reauth_required == Some(true)
    }

    /// Whether refgate obtained it by an external exchange.
    pub fn exchanged(&self) -> bool {
        self.exchanged == Some(true)
    }

    /// Whether it must be refreshed before use at `now` with `skew` seconds.
    pub fn needs_refresh(&self, now: i64, skew: i64) -> bool {
        expiring(self.expires_at, now, skew)
    }

    /// Whether the access token is still valid at `now`.
    pub fn still_valid(&self, now: i64) -> bool {
        valid(self.expires_at, now)
    }
}

/// Whether a credential expiring at `expires_at` (`None`: never) must be
/// refreshed at `now` with `skew` seconds.
fn expiring(expires_at: Option<i64>, now: i64, skew: i64) -> bool {
    expires_at.is_some_and(|exp| exp.saturating_sub(skew) <= now)
}

fn valid(expires_at: Option<i64>, now: i64) -> bool {
    expires_at.is_none_or(|exp| exp > now)
}

/// The expiry of a credential that states none (it never needs a refresh).
const NEVER: i64 = i64::MAX;

/// A credential ready for use by the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// `<token_type> <access_token>`; `None` when that is not a valid header
    /// value (e.g. it holds CR/LF): such a credential is never sent. Kept
    /// as the header value itself: every proxied request sends it, and a
    /// clone shares the bytes where building it copied and checked them.
    header: Option<HeaderValue>,
    /// Unix seconds; [`NEVER`] when the credential does not say.
    expires_at: i64,
    reauth_required: bool,
    /// It has a refresh token (in the store).
    refreshable: bool,
    /// The authority it names, as stored (checked against the
    /// configuration where it is used: the configuration may change).
    authority: Option<Box<str>>,
    /// refgate obtained it by an external exchange.
    exchanged: bool,
    /// This process obtained it from its authority for the request at hand
    /// (a refresh or an exchange), rather than reading it from the store:
    /// an upstream 401 to it is final, refreshing again would not help.
    pub just_obtained: bool,
}

/// What a [`Credential`] is made of, borrowed from a stored one however it
/// was read.
struct Parts<'a> {
    token_type: Option<&'a str>,
    access_token: &'a str,
    expires_at: Option<i64>,
    reauth_required: bool,
    refreshable: bool,
    authority: Option<&'a str>,
    exchanged: bool,
}

impl Credential {
    pub fn from_stored(stored: &StoredCredential) -> Self {
        Credential::from_parts(Parts {
            token_type: stored.token_type.as_deref(),
            access_token: &stored.access_token,
            expires_at: stored.expires_at,
            reauth_required: stored.reauth_required(),
            refreshable: stored.refresh_token.is_some(),
            authority: stored.authority.as_deref(),
            exchanged: stored.exchanged(),
        })
    }

    fn from_parts(parts: Parts<'_>) -> Self {
        let scheme = match parts.token_type {
            None => "Bearer",
            Some(s) if s.eq_ignore_ascii_case("bearer") => "Bearer",
            Some(s) => s,
        };
        Credential {
            header: header_text(scheme, parts.access_token),
            expires_at: parts.expires_at.unwrap_or(NEVER),
            reauth_required: parts.reauth_required,
            refreshable: parts.refreshable,
            authority: parts.authority.map(Box::from),
            exchanged: parts.exchanged,
            just_obtained: false,
        }
    }

    /// A credential just obtained from its authority.
    pub fn obtained(stored: &StoredCredential) -> Self {
        Credential {
            just_obtained: true,
            ..Credential::from_stored(stored)
        }
    }

    /// The same credential, marked as just obtained.
    pub fn as_obtained(&self) -> Self {
        Credential {
            just_obtained: true,
            ..self.clone()
        }
    }

    /// The `Authorization` value to send upstream, when it is a safe one.
    pub fn header_value(&self) -> Option<HeaderValue> {
        self.header.clone()
    }

    /// Whether it can be sent at all (see [`Credential::header_value`]).
    pub fn is_sendable(&self) -> bool {
        self.header.is_some()
    }

    /// Whether two credentials would send the same header.
    pub fn same_header(&self, other: &Credential) -> bool {
        self.header == other.header
    }

    /// Whether it must be refreshed before use at `now` with `skew` seconds.
    pub fn needs_refresh(&self, now: i64, skew: i64) -> bool {
        expiring(self.expiry(), now, skew)
    }

    /// Whether the access token is still valid at `now`.
    pub fn still_valid(&self, now: i64) -> bool {
        valid(self.expiry(), now)
    }

    fn expiry(&self) -> Option<i64> {
        (self.expires_at != NEVER).then_some(self.expires_at)
    }

    pub fn reauth_required(&self) -> bool {
        self.reauth_required
    }

    /// The authority it names.
    pub fn authority(&self) -> Option<&str> {
        self.authority.as_deref()
    }

    /// Whether refgate obtained it by an external exchange.
    pub fn is_exchanged(&self) -> bool {
        self.exchanged
    }

    /// Whether refgate obtained it by an external exchange at `authority`.
    pub fn exchanged_at(&self, authority: &str) -> bool {
        self.exchanged && self.authority() == Some(authority)
    }

    /// Whether refgate obtained it itself (a transparent exchange).
    pub fn is_own(&self) -> bool {
        self.authority() == Some(SELF_AUTHORITY)
    }

    /// The access token it sends.
    pub fn access_token(&self) -> Option<&str> {
        self.header
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.split_once(' '))
            .map(|(_, token)| token)
    }

    pub fn refreshable(&self) -> bool {
        self.refreshable
    }
}

/// `<scheme> <token>`, refusing anything that is not a plain visible-ASCII
/// token (no CR, LF, NUL or spaces inside).
fn header_text(scheme: &str, token: &str) -> Option<HeaderValue> {
    // Every byte is looked at, without an early exit, so that the check
    // runs as a vector loop over the (often long) token.
    let safe = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .fold(true, |ok, b| ok & (0x21..=0x7e).contains(&b))
    };
    if !safe(scheme) || !safe(token) {
        return None;
    }
    let mut text = Vec::with_capacity(scheme.len() + 1 + token.len());
    text.extend_from_slice(scheme.as_bytes());
    text.push(b' ');
    text.extend_from_slice(token.as_bytes());
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text)).ok()
}

/// The credentials of a grant, by name, in the compact form: sorted by
/// name, each name once.
#[derive(Debug, Clone, Default)]
pub struct Credentials(Box<[(Box<str>, Arc<Credential>)]>);

impl Credentials {
    /// Reads every credential under `credentials` straight from custom
    /// data's JSON text, without building a tree of it: strings are
    /// borrowed from the text where they have no escapes, and only the
    /// members a [`Credential`] keeps are copied. Entries of the wrong
    /// shape (the shape [`StoredCredential`] reads) are skipped: a route
    /// that needs one answers `credential_missing`. A repeated name or
    /// member counts once, the last one. `None` when the text is not a
    /// JSON object.
    pub fn from_json(text: &[u8]) -> Option<Self> {
        #[derive(Deserialize)]
        struct Custom<'a> {
            #[serde(default, borrow)]
            credentials: Option<lenient::Entries<'a>>,
        }
        // serde would also take an array for a struct: only an object is
        // custom data.
        if text.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return None;
        }
        let custom: Custom = serde_json::from_slice(text).ok()?;
        let Some(entries) = custom.credentials else {
            return Some(Credentials::default());
        };
        let usable = entries.0.into_iter().filter_map(|(name, entry)| {
            let credential = entry?.credential()?;
            Some((Box::from(name.as_ref()), Arc::new(credential)))
        });
        Some(Credentials(usable.collect()))
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Credential>> {
        // The names are a client's, as many as custom data holds.
        let at = self.0.binary_search_by(|(n, _)| (**n).cmp(name)).ok()?;
        Some(&self.0[at].1)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The reading of `credentials` behind [`Credentials::from_json`]: one pass
/// over the text with serde's visitors, judging each entry as
/// [`StoredCredential`] would (required `access_token` string; optional
/// strings, an `i64` expiry and booleans, each of which may be `null`;
/// other members ignored) without failing the whole document on a bad one.
mod lenient {
    use std::borrow::Cow;
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use serde::Deserialize;

    use super::{Credential, Parts};

    /// The `credentials` member: its entries in order, `None` for one of
    /// the wrong shape; empty when it is not an object.
    #[derive(Default)]
    pub(super) struct Entries<'a>(pub(super) Vec<(Cow<'a, str>, Option<Entry<'a>>)>);

    /// One entry's members that a [`Credential`] keeps or that decide
    /// whether it is well-formed.
    #[derive(Default)]
    pub(super) struct Entry<'a> {
        access_token: Option<Cow<'a, str>>,
        token_type: Option<Cow<'a, str>>,
        refresh_token: bool,
        expires_at: Option<i64>,
        authority: Option<Cow<'a, str>>,
        reauth_required: bool,
        exchanged: bool,
    }

    impl Entry<'_> {
        /// The credential, unless the required access token is missing.
        pub(super) fn credential(self) -> Option<Credential> {
            Some(Credential::from_parts(Parts {
                token_type: self.token_type.as_deref(),
                access_token: self.access_token.as_deref()?,
                expires_at: self.expires_at,
                reauth_required: self.reauth_required,
                refreshable: self.refresh_token,
                authority: self.authority.as_deref(),
                exchanged: self.exchanged,
            }))
        }
    }

    /// Any JSON value, kept only as far as a member of an entry needs it.
    enum Scalar<'a> {
        Null,
        Str(Cow<'a, str>),
        Int(i64),
        Bool(bool),
        /// A float, an integer beyond `i64`, an array or an object.
        Other,
    }

    impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(ScalarVisitor(PhantomData))
        }
    }

    /// Visitors make values that may borrow from the text (`'de`) for as
    /// long as `'a`.
    struct ScalarVisitor<'a>(PhantomData<&'a ()>);

    impl<'de: 'a, 'a> Visitor<'de> for ScalarVisitor<'a> {
        type Value = Scalar<'a>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(Scalar::Null)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(Scalar::Null)
        }
        fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Scalar::Bool(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Scalar::Int(v))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(i64::try_from(v).map_or(Scalar::Other, Scalar::Int))
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Scalar::Other)
        }
        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Scalar::Str(Cow::Borrowed(v)))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Scalar::Str(Cow::Owned(v.to_owned())))
        }
        fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
            Ok(Scalar::Str(Cow::Owned(v)))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Scalar::Other)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Scalar::Other)
        }
    }

    /// A map key, borrowed unless it has escapes.
    struct Key<'a>(Cow<'a, str>);

    impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            match Scalar::deserialize(d)? {
                Scalar::Str(s) => Ok(Key(s)),
                _ => Err(de::Error::custom("a key that is not a string")),
            }
        }
    }

    /// Where a member's value goes: `Ok(None)` for `null`, `Err(())` for
    /// a value of the wrong type (the entry is then of the wrong shape).
    fn string(v: Scalar<'_>) -> Result<Option<Cow<'_, str>>, ()> {
        match v {
            Scalar::Null => Ok(None),
            Scalar::Str(s) => Ok(Some(s)),
            _ => Err(()),
        }
    }

    fn boolean(v: Scalar<'_>) -> Result<bool, ()> {
        match v {
            Scalar::Null => Ok(false),
            Scalar::Bool(b) => Ok(b),
            _ => Err(()),
        }
    }

    fn integer(v: Scalar<'_>) -> Result<Option<i64>, ()> {
        match v {
            Scalar::Null => Ok(None),
            Scalar::Int(i) => Ok(Some(i)),
            _ => Err(()),
        }
    }

    /// A value read from a JSON object by [`FromObject::read`]; any other
    /// JSON value is read past and gives the default.
    trait FromObject<'a>: Default {
        fn read<'de: 'a, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
    }

    struct ObjectOrDefault<'a, T>(PhantomData<(&'a (), T)>);

    impl<'de: 'a, 'a, T: FromObject<'a>> Visitor<'de> for ObjectOrDefault<'a, T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::read(map)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(T::default())
        }
        fn visit_unit<E>(self) -> Result<T, E> {
            Ok(T::default())
        }
        fn visit_bool<E>(self, _: bool) -> Result<T, E> {
            Ok(T::default())
        }
        fn visit_i64<E>(self, _: i64) -> Result<T, E> {
            Ok(T::default())
        }
        fn visit_u64<E>(self, _: u64) -> Result<T, E> {
            Ok(T::default())
        }
        fn visit_f64<E>(self, _: f64) -> Result<T, E> {
            Ok(T::default())
        }
        fn visit_str<E>(self, _: &str) -> Result<T, E> {
            Ok(T::default())
        }
    }

    /// One entry: `None` when it is not an object or a member has the
    /// wrong type. A repeated member is judged by its last value, as a
    /// JSON object keeps it.
    #[derive(Default)]
    struct MaybeEntry<'a>(Option<Entry<'a>>);

    impl<'a> FromObject<'a> for MaybeEntry<'a> {
        fn read<'de: 'a, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
            let mut entry = Entry::default();
            // Members seen with a value of the wrong type, by name; a
            // later value of the right type mends it.
            let mut wrong: Vec<Cow<'a, str>> = Vec::new();
            while let Some(Key(key)) = map.next_key::<Key>()? {
                let value: Scalar = map.next_value()?;
                let ok = match key.as_ref() {
                    "access_token" => string(value).map(|v| entry.access_token = v),
                    "token_type" => string(value).map(|v| entry.token_type = v),
                    "refresh_token" => string(value).map(|v| entry.refresh_token = v.is_some()),
                    "authority" => string(value).map(|v| entry.authority = v),
                    "scope" => string(value).map(drop),
                    "expires_at" => integer(value).map(|v| entry.expires_at = v),
                    "reauth_required" => boolean(value).map(|v| entry.reauth_required = v),
                    "exchanged" => boolean(value).map(|v| entry.exchanged = v),
                    _ => continue,
                };
                wrong.retain(|k| k != &key);
                if ok.is_err() {
                    wrong.push(key);
                }
            }
            Ok(MaybeEntry(wrong.is_empty().then_some(entry)))
        }
    }

    impl<'de: 'a, 'a> Deserialize<'de> for MaybeEntry<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(ObjectOrDefault::<'a, Self>(PhantomData))
        }
    }

    impl<'a> FromObject<'a> for Entries<'a> {
        fn read<'de: 'a, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
            let mut entries: Vec<(Cow<'a, str>, Option<Entry<'a>>)> = Vec::new();
            while let Some(Key(name)) = map.next_key::<Key>()? {
                let MaybeEntry(entry) = map.next_value()?;
                entries.push((name, entry));
            }
            // A repeated name: the last one counts. Sorted (stable, so
            // repeats keep their order) rather than searched on each
            // insert: the names are a client's, and as many as custom data
            // holds.
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            entries.dedup_by(|later, kept| {
                let repeat = later.0 == kept.0;
                if repeat {
                    std::mem::swap(later, kept);
                }
                repeat
            });
            Ok(Entries(entries))
        }
    }

    impl<'de: 'a, 'a> Deserialize<'de> for Entries<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(ObjectOrDefault::<'a, Self>(PhantomData))
        }
    }
}

/// A client's write to custom data that would plant a credential refgate
/// must not trust; `member` is the JSON path of the offending member.
#[derive(Debug, thiserror::Error)]
#[error("{member} {reason}")]
pub struct CredentialRefused {
    pub member: String,
    pub reason: &'static str,
}

/// Checks what a client's merge `patch` does to `credentials.<name>`
/// entries, given custom data `before` and `after` the patch. Every entry
/// the patch touches and keeps must be an object whose `authority` names a
/// configured authority (`is_authority`). `"self"` entries are refgate's
/// own (a transparent exchange's result): a client may not create one,
/// nor put a token into one; it may change their other members or delete
/// them. Entries refgate obtained by an external exchange (`exchanged`)
/// are refgate's too: a client may delete one, never create one nor change
/// one, so it cannot point their refresh token at another authority.
/// Custom data is written by clients, and the gateway acts on these
/// entries: without this a client could make it redeem a refresh token
/// that is not its own, as the token's owner.
pub fn check_client_write(
    patch: &Value,
    before: &Map<String, Value>,
    after: &Map<String, Value>,
    is_authority: impl Fn(&str) -> bool,
) -> Result<(), CredentialRefused> {
    let refuse = |member: String, reason| Err(CredentialRefused { member, reason });
    let touched = match patch.get("credentials") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(entries)) => entries,
        Some(_) => return refuse("credentials".into(), "must be an object of credentials"),
    };
    let entry_of = |data: &Map<String, Value>, name: &str| {
        data.get("credentials")
            .and_then(|c| c.get(name))
            .cloned()
            .unwrap_or(Value::Null)
    };
    for (name, change) in touched {
        if change.is_null() {
            continue;
        }
        let was_self =
            entry_of(before, name).get("authority") == Some(&Value::from(SELF_AUTHORITY));
        if entry_of(before, name).get("exchanged") == Some(&Value::Bool(true)) {
            return refuse(
                format!("credentials.{name}"),
                "was obtained by refgate's exchange: a client may delete it, not change it",
            );
        }
        if let Value::Object(members) = change {
            if members.get("exchanged").is_some_and(|v| !v.is_null()) {
                return refuse(
                    format!("credentials.{name}.exchanged"),
                    "is set by refgate on credentials it obtained itself",
                );
            }
            if members.get("authority") == Some(&Value::from(SELF_AUTHORITY)) {
                return refuse(
                    format!("credentials.{name}.authority"),
                    "may not be \"self\": refgate writes its own credentials itself",
                );
            }
            for token in ["access_token", "refresh_token"] {
                if was_self && members.get(token).is_some_and(|v| !v.is_null()) {
                    return refuse(
                        format!("credentials.{name}.{token}"),
                        "may not be written into a credential refgate obtained itself",
                    );
                }
            }
        }
        let entry = entry_of(after, name);
        let Value::Object(members) = &entry else {
            return refuse(format!("credentials.{name}"), "must be an object");
        };
        match members.get("authority") {
            Some(Value::String(a)) if a == SELF_AUTHORITY && was_self => {}
            Some(Value::String(a)) if is_authority(a) => {}
            Some(_) => {
                return refuse(
                    format!("credentials.{name}.authority"),
                    "names no configured [[authorities]] entry",
                )
            }
            None => {
                return refuse(
                    format!("credentials.{name}.authority"),
                    "is missing: name the [[authorities]] entry that issued the credential",
                )
            }
        }
    }
    Ok(())
}

/// One stored credential of parsed custom data, in its stored shape.
pub fn stored(custom: &Map<String, Value>, name: &str) -> Option<StoredCredential> {
    let value = custom.get("credentials")?.get(name)?;
    StoredCredential::deserialize(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(patch: Value, before: Value) -> Result<(), String> {
        let before = before.as_object().cloned().unwrap_or_default();
        let mut after = Value::Object(before.clone());
        json_patch::merge(&mut after, &patch);
        let after = after.as_object().cloned().unwrap_or_default();
        check_client_write(&patch, &before, &after, |a| a == "photos-as").map_err(|e| e.member)
    }

    #[test]
    fn client_writes_to_credentials_are_checked() {
        use serde_json::json;
        let ok =
            json!({"credentials": {"photos": {"access_token": "a", "authority": "photos-as"}}});
        assert_eq!(check(ok.clone(), json!({})), Ok(()));
        assert_eq!(check(json!({"other": 1}), json!({})), Ok(()));
        assert_eq!(check(json!({"credentials": null}), json!({})), Ok(()));
        assert_eq!(
            check(
                json!({"credentials": {"photos": {"access_token": "a", "authority": "elsewhere"}}}),
                json!({})
            ),
            Err("credentials.photos.authority".into())
        );
        assert_eq!(
            check(
                json!({"credentials": {"photos": {"access_token": "a"}}}),
                json!({})
            ),
            Err("credentials.photos.authority".into())
        );
        assert_eq!(
            check(
                json!({"credentials": {"photos": {"refresh_token": "r", "authority": "self"}}}),
                json!({})
            ),
            Err("credentials.photos.authority".into())
        );
        assert_eq!(
            check(json!({"credentials": "x"}), json!({})),
            Err("credentials".into())
        );
        assert_eq!(
            check(json!({"credentials": {"photos": 7}}), json!({})),
            Err("credentials.photos".into())
        );
        let mine =
            json!({"credentials": {"reports": {"access_token": "rgat_x", "authority": "self"}}});
        // Refgate's own entries: other members and deletion are fine...
        assert_eq!(
            check(
                json!({"credentials": {"reports": {"expires_at": 1}}}),
                mine.clone()
            ),
            Ok(())
        );
        assert_eq!(
            check(json!({"credentials": {"reports": null}}), mine.clone()),
            Ok(())
        );
        // ...tokens are not.
        assert_eq!(
            check(
                json!({"credentials": {"reports": {"refresh_token": "rgrt_x"}}}),
                mine.clone()
            ),
            Err("credentials.reports.refresh_token".into())
        );
        assert_eq!(
            check(
                json!({"credentials": {"reports": {"access_token": "a"}}}),
                mine
            ),
            Err("credentials.reports.access_token".into())
        );
        // Entries of an external exchange: deleted, never made nor changed.
        let exchanged = json!({"credentials": {"graph": {
            "access_token": "a", "authority": "photos-as", "exchanged": true}}});
        assert_eq!(
            check(json!({"credentials": {"graph": null}}), exchanged.clone()),
            Ok(())
        );
        assert_eq!(
            check(
                json!({"credentials": {"graph": {"expires_at": 1}}}),
                exchanged
            ),
            Err("credentials.graph".into())
        );
        assert_eq!(
            check(
                json!({"credentials": {"graph": {"access_token": "a", "authority": "photos-as", "exchanged": true}}}),
                json!({})
            ),
            Err("credentials.graph.exchanged".into())
        );
        // Even with another authority: a client deletes refgate's entry first.
        assert_eq!(
            check(
                ok,
                json!({"credentials": {"photos": {"access_token": "old", "authority": "self"}}})
            ),
            Err("credentials.photos.access_token".into())
        );
    }

    #[test]
    fn header_injection_is_refused() {
        let c = Credential::from_stored(&StoredCredential {
            access_token: "abc\r\nX-Evil: 1".into(),
            ..Default::default()
        });
        assert!(!c.is_sendable());
        assert!(c.header_value().is_none());
        let ok = Credential::from_stored(&StoredCredential {
            access_token: "abc.def".into(),
            token_type: Some("bearer".into()),
            ..Default::default()
        });
        assert_eq!(ok.header_value().unwrap(), "Bearer abc.def");
    }

    #[test]
    fn credentials_from_json_skip_entries_of_the_wrong_shape() {
        let text = br#"{"other": {"deep": [1, 2, 3]}, "credentials": {
            "photos": {"access_token": "a", "refresh_token": "r", "expires_at": 10},
            "broken": {"access_token": 7},
            "plain": {"access_token": "b", "reauth_required": true}}}"#;
        let all = Credentials::from_json(text).expect("an object");
        assert_eq!(all.len(), 2);
        let photos = all.get("photos").expect("photos");
        assert!(photos.refreshable());
        assert!(photos.needs_refresh(10, 0) && !photos.needs_refresh(9, 0));
        assert!(all.get("plain").expect("plain").reauth_required());
        assert!(all.get("broken").is_none());
        assert!(Credentials::from_json(b"[1]").is_none());
        // A repeated field or name: the last one.
        let repeated = br#"{"credentials": {"x": {"access_token": "a", "access_token": "b"},
            "y": {"access_token": "c"}, "y": {"access_token": "d"}}}"#;
        let all = Credentials::from_json(repeated).expect("an object");
        let header = |name| all.get(name).and_then(|c| c.header_value());
        assert_eq!(header("x").expect("x"), "Bearer b");
        assert_eq!(header("y").expect("y"), "Bearer d");
        assert!(Credentials::from_json(br#"{"credentials": null}"#)
            .expect("an object")
            .is_empty());
        assert!(Credentials::from_json(br#"{"credentials": "x"}"#)
            .expect("an object")
            .is_empty());
    }

    /// What `from_json` must equal: the whole text as a tree, each entry
    /// read as a `StoredCredential`.
    fn through_a_tree(text: &[u8]) -> Option<Vec<(String, Credential)>> {
        #[derive(Deserialize)]
        struct Custom {
            #[serde(default)]
            credentials: Option<Value>,
        }
        if text.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return None;
        }
        let custom: Custom = serde_json::from_slice(text).ok()?;
        let Some(Value::Object(all)) = custom.credentials else {
            return Some(Vec::new());
        };
        let mut read: Vec<(String, Credential)> = all
            .into_iter()
            .filter_map(|(name, value)| {
                let stored: StoredCredential = serde_json::from_value(value).ok()?;
                Some((name, Credential::from_stored(&stored)))
            })
            .collect();
        read.sort_by(|a, b| a.0.cmp(&b.0));
        Some(read)
    }

    /// Custom data a client wrote may hold as many names as its size
    /// allows: read in one sort, not a search per name, and the last of a
    /// repeated name counts.
    #[test]
    fn credentials_from_json_take_many_names() {
        let mut text = String::from(r#"{"credentials": {"#);
        for i in 0..60_000 {
            text.push_str(&format!(
                r#""n{}": {{"access_token": "t{i}"}},"#,
                i % 30_000
            ));
        }
        text.push_str(r#""last": {"access_token": "z"}}}"#);
        let all = Credentials::from_json(text.as_bytes()).expect("an object");
        assert_eq!(all.len(), 30_001);
        let header = |name| all.get(name).and_then(|c| c.header_value());
        assert_eq!(header("n7").expect("n7"), "Bearer t30007");
        assert_eq!(header("last").expect("last"), "Bearer z");
        assert_eq!(
            through_a_tree(text.as_bytes()).map(|all| all.len()),
            Some(30_001)
        );
    }

    #[test]
    fn credentials_from_json_read_what_a_tree_would() {
        let documents: &[&str] = &[
            r#"{}"#,
            r#"{"credentials": {}}"#,
            r#"{"credentials": []}"#,
            r#"{"credentials": [{"access_token": "a"}]}"#,
            r#"{"credentials": 7}"#,
            r#"{"credentials": true}"#,
            r#"{"credentials": null, "x": 1}"#,
            r#"{"credentials": {"a": {"access_token": "t"}}, "credentials": {}}"#,
            r#"{"credentials": {"a": null, "b": 1, "c": "s", "d": [], "e": true, "f": 1.5}}"#,
            r#"{"credentials": {"a": {"access_token": null}}}"#,
            r#"{"credentials": {"a": {"refresh_token": "r"}}}"#,
            r#"{"credentials": {"a": {"access_token": "t", "refresh_token": null,
                "token_type": null, "expires_at": null, "authority": null, "scope": null,
                "reauth_required": null, "exchanged": null}}}"#,
            r#"{"credentials": {"a": {"access_token": "t", "refresh_token": "r",
                "token_type": "DPoP", "expires_at": -5, "authority": "photos",
                "scope": "a b", "reauth_required": true, "exchanged": true}}}"#,
            r#"{"credentials": {"a": {"access_token": "t", "token_type": "bEaReR"}}}"#,
            r#"{"credentials": {"a": {"access_token": "t", "expires_at": 1.0}}}"#,
            r#"{"credentials": {"a": {"access_token": "t", "expires_at": 1e3}}}"#,
            r#"{"credentials": {"a": {"access_token": "t", "expires_at": 9223372036854775807}}}"#,
            r#"{"credentials": {"a": {"access_token": "t", "expires_at": 9223372036854775808}}}"#,
            r#"{"credentials": {"a": {"access_token": "t", "expires_at": "10"}}}"#,
            r#"{"credentials": {"a": {"access_token": "t", "scope": ["a"]}}}"#,
            r#"{"credentials": {"a": {"access_token": "t", "reauth_required": "yes"}}}"#,
            r#"{"credentials": {"a": {"access_token": "t", "exchanged": 1}}}"#,
            r#"{"credentials": {"a": {"access_token": "t", "authority": {"x": 1}}}}"#,
            r#"{"credentials": {"a": {"access_token": "t", "other": {"deep": [1, {"x": null}]}}}}"#,
            r#"{"credentials": {"a": {"access_token": 7, "access_token": "t"}}}"#,
            r#"{"credentials": {"a": {"access_token": "t", "access_token": 7}}}"#,
            r#"{"credentials": {"a": {"access_token": "t", "refresh_token": "r", "refresh_token": null}}}"#,
            r#"{"credentials": {"a": {"access_token": "t"}, "a": 5}}"#,
            r#"{"credentials": {"a": 5, "a": {"access_token": "t"}}}"#,
            r#"{"credentials": {"a\u0062": {"access_\u0074oken": "x\u0041y"}}}"#,
            r#"{"credentials": {"a": {"access_token": "a\/b\"c\\d"}}}"#,
            r#"{"credentials": {"a": {"access_token": "line\r\nbreak"}}}"#,
            r#"{"credentials": {"a": {"access_token": "with space"}}}"#,
            r#"{"credentials": {"a": {"access_token": ""}}}"#,
            r#"{"credentials": {"a": {"access_token": "t", "token_type": "Bad Scheme"}}}"#,
            r#"{"credentials": {"b": {"access_token": "2"}, "a": {"access_token": "1"}}}"#,
            r#"{"credentials": {"a": {"access_token": "t"}}"#,
            r#"{"credentials": {"a": {"access_token": "t"}}} trailing"#,
            r#"  {"credentials": {"a": {"access_token": "t",}}}"#,
            r#"[{"credentials": {}}]"#,
            r#""text""#,
            "",
        ];
        for text in documents {
            let expected = through_a_tree(text.as_bytes());
            let read = Credentials::from_json(text.as_bytes()).map(|all| {
                let mut read: Vec<(String, Credential)> = all
                    .0
                    .iter()
                    .map(|(name, c)| (name.to_string(), (**c).clone()))
                    .collect();
                read.sort_by(|a, b| a.0.cmp(&b.0));
                read
            });
            assert_eq!(read, expected, "{text}");
        }
    }
}

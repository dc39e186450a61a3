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

impl Credential {
    pub fn from_stored(stored: &StoredCredential) -> Self {
        let scheme = stored.token_type.as_deref().unwrap_or("Bearer");
        let scheme = if scheme.eq_ignore_ascii_case("bearer") {
            "Bearer"
        } else {
            scheme
        };
        Credential {
            header: header_text(scheme, &stored.access_token),
            expires_at: stored.expires_at.unwrap_or(NEVER),
            reauth_required: stored.reauth_required(),
            refreshable: stored.refresh_token.is_some(),
            authority: stored.authority.as_deref().map(Box::from),
            exchanged: stored.exchanged(),
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
    let safe = |s: &str| !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if !safe(scheme) || !safe(token) {
        return None;
    }
    HeaderValue::try_from(format!("{scheme} {token}")).ok()
}

/// The credentials of a grant, by name, in the compact form.
#[derive(Debug, Clone, Default)]
pub struct Credentials(Box<[(Box<str>, Arc<Credential>)]>);

impl Credentials {
    /// Reads every credential under `credentials` straight from custom
    /// data's JSON text, without building a tree of the rest of it. Entries
    /// of the wrong shape are skipped (a route that needs one answers
    /// `credential_missing`). `None` when the text is not a JSON object.
    pub fn from_json(text: &[u8]) -> Option<Self> {
        #[derive(Deserialize)]
        struct Custom {
            #[serde(default)]
            credentials: Option<Value>,
        }
        // serde would also take an array for a struct: only an object is
        // custom data.
        if text.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return None;
        }
        let custom: Custom = serde_json::from_slice(text).ok()?;
        let Some(Value::Object(all)) = custom.credentials else {
            return Some(Credentials::default());
        };
        let usable = all.into_iter().filter_map(|(name, value)| {
            let stored: StoredCredential = serde_json::from_value(value).ok()?;
            let credential = Arc::new(Credential::from_stored(&stored));
            Some((name.into_boxed_str(), credential))
        });
        Some(Credentials(usable.collect()))
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Credential>> {
        self.0.iter().find(|(n, _)| &**n == name).map(|(_, c)| c)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
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
}

//! Downstream credentials stored inside a grant's custom data under
//! `custom.credentials.<name>` (SPEC 3.6), parsed once when a grant is
//! loaded so the proxy's hot path only reads a prepared header value.

use std::collections::HashMap;
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
}

/// A credential ready for use by the proxy.
#[derive(Debug, Clone)]
pub struct Credential {
    pub stored: StoredCredential,
    /// `<token_type> <access_token>`; `None` when that is not a valid header
    /// value (e.g. it holds CR/LF): such a credential is never sent.
    pub header: Option<HeaderValue>,
    /// This process obtained it from its authority for the request at hand
    /// (a refresh or an exchange), rather than reading it from the store:
    /// an upstream 401 to it is final, refreshing again would not help.
    pub just_obtained: bool,
}

impl Credential {
    pub fn from_stored(stored: StoredCredential) -> Self {
        let scheme = stored.token_type.as_deref().unwrap_or("Bearer");
        let scheme = if scheme.eq_ignore_ascii_case("bearer") {
            "Bearer"
        } else {
            scheme
        };
        let header = header_value(scheme, &stored.access_token);
        Credential {
            stored,
            header,
            just_obtained: false,
        }
    }

    /// A credential just obtained from its authority.
    pub fn obtained(stored: StoredCredential) -> Self {
        Credential {
            just_obtained: true,
            ..Credential::from_stored(stored)
        }
    }

    /// Whether it must be refreshed before use at `now` with `skew` seconds.
    pub fn needs_refresh(&self, now: i64, skew: i64) -> bool {
        self.stored.expires_at.is_some_and(|exp| exp - skew <= now)
    }

    /// Whether the access token is still valid at `now`.
    pub fn still_valid(&self, now: i64) -> bool {
        self.stored.expires_at.is_none_or(|exp| exp > now)
    }

    pub fn reauth_required(&self) -> bool {
        self.stored.reauth_required == Some(true)
    }
}

/// A header value from a scheme and a token, refusing anything that is not
/// a plain visible-ASCII token (no CR, LF, NUL or spaces inside).
fn header_value(scheme: &str, token: &str) -> Option<HeaderValue> {
    let safe = |s: &str| !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if !safe(scheme) || !safe(token) {
        return None;
    }
    HeaderValue::from_str(&format!("{scheme} {token}")).ok()
}

/// Parses every credential under `credentials` in custom data. Entries of
/// the wrong shape are skipped (the route answers `credential_missing`).
pub fn parse_all(custom: &Map<String, Value>) -> HashMap<String, Arc<Credential>> {
    let Some(Value::Object(credentials)) = custom.get("credentials") else {
        return HashMap::new();
    };
    credentials
        .iter()
        .filter_map(|(name, value)| {
            let stored: StoredCredential = serde_json::from_value(value.clone()).ok()?;
            Some((name.clone(), Arc::new(Credential::from_stored(stored))))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_injection_is_refused() {
        let c = Credential::from_stored(StoredCredential {
            access_token: "abc\r\nX-Evil: 1".into(),
            ..Default::default()
        });
        assert!(c.header.is_none());
        let ok = Credential::from_stored(StoredCredential {
            access_token: "abc.def".into(),
            token_type: Some("bearer".into()),
            ..Default::default()
        });
        assert_eq!(ok.header.unwrap(), "Bearer abc.def");
    }
}

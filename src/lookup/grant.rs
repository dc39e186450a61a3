//! The compact, read-only view of a grant that lookups hand out and the
//! cache keeps: every string boxed to its exact length, the strings that
//! repeat across grants (client ids, issuers, scope sets) shared, the
//! fields most grants lack (`aud`, `act`, arbitrary claims) behind one
//! optional box, and custom data reduced to the downstream credentials.
//! Custom data itself stays sealed in the store; whoever shows or changes
//! it reads the grant's record.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::credential::Credentials;
use crate::store::GrantRecord;

/// A grant's scopes: a small, shared, ordered set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes(Arc<[Box<str>]>);

impl Scopes {
    pub fn contains(&self, scope: &str) -> bool {
        self.0.iter().any(|s| &**s == scope)
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> + Clone {
        self.0.iter().map(|s| &**s)
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_string).collect()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl PartialEq<[String]> for Scopes {
    fn eq(&self, other: &[String]) -> bool {
        self.len() == other.len() && self.iter().zip(other).all(|(a, b)| a == b)
    }
}

/// A grant as lookups see it (see the module comment).
#[derive(Debug, Clone)]
pub struct Grant {
    pub id: Box<str>,
    pub client_id: Arc<str>,
    pub subject: Box<str>,
    pub scopes: Scopes,
    /// `iss` asserted by an arbitrary_token caller; `None` means refgate.
    pub issuer: Option<Arc<str>>,
    extra: Option<Box<GrantExtra>>,
    /// `custom.credentials`, prepared for the gateway.
    pub credentials: Credentials,
    pub version: i64,
}

/// What most grants do not have.
#[derive(Debug, Clone, Default)]
struct GrantExtra {
    audience: Vec<String>,
    actor: Option<Value>,
    claims: Option<Value>,
    parent_id: Option<Box<str>>,
    idp: Option<Box<str>>,
    route: Option<Box<str>>,
    /// Empty for the top level.
    tenant: Box<str>,
}

impl Grant {
    /// The view of a stored grant whose credentials were prepared already,
    /// sharing the strings `interner` already has. The sealed custom data
    /// is left behind.
    pub fn new(record: GrantRecord, credentials: Credentials, interner: &Interner) -> Self {
        let rare = !record.audience.is_empty()
            || record.actor.is_some()
            || record.claims.is_some()
            || record.parent_id.is_some()
            || record.idp.is_some()
            || record.route.is_some()
            || !record.tenant.is_empty();
        let extra = rare.then(|| {
            Box::new(GrantExtra {
                audience: record.audience,
                actor: record.actor,
                claims: record.claims,
                parent_id: record.parent_id.map(String::into_boxed_str),
                idp: record.idp.map(String::into_boxed_str),
                route: record.route.map(String::into_boxed_str),
                tenant: record.tenant.into_boxed_str(),
            })
        });
        Grant {
            id: record.id.into_boxed_str(),
            client_id: interner.string(&record.client_id),
            subject: record.subject.into_boxed_str(),
            scopes: interner.scopes(&record.scopes),
            issuer: record.issuer.map(|i| interner.string(&i)),
            extra,
            credentials,
            version: record.version,
        }
    }

    /// `aud`: empty when unset.
    pub fn audience(&self) -> &[String] {
        self.extra.as_ref().map_or(&[], |e| &e.audience)
    }

    /// `act` (RFC 8693 §4.1).
    pub fn actor(&self) -> Option<&Value> {
        self.extra.as_ref().and_then(|e| e.actor.as_ref())
    }

    /// Extra top-level introspection claims (a JSON object).
    pub fn claims(&self) -> Option<&Value> {
        self.extra.as_ref().and_then(|e| e.claims.as_ref())
    }

    /// The grant this one was exchanged from.
    pub fn parent_id(&self) -> Option<&str> {
        self.extra.as_ref().and_then(|e| e.parent_id.as_deref())
    }

    /// The issuer of the id_token (or the asserted issuer of the token) the
    /// subject came from, as introspection's `idp` shows it.
    pub fn idp(&self) -> Option<&str> {
        self.extra.as_ref().and_then(|e| e.idp.as_deref())
    }

    /// The tenant the grant belongs to (empty: the top level).
    pub fn tenant(&self) -> &str {
        self.extra.as_ref().map_or("", |e| &e.tenant)
    }

    /// The route the gateway minted this grant for.
    pub fn route(&self) -> Option<&str> {
        self.extra.as_ref().and_then(|e| e.route.as_deref())
    }

    /// The namespace of `subject`: `sub` values of different issuers are
    /// different subjects. `None` is refgate's own namespace (client ids and
    /// subjects of its own tokens).
    pub fn subject_issuer(&self) -> Option<&str> {
        self.idp().or(self.issuer.as_deref())
    }
}

/// Most shared strings kept; past this, new ones are simply not shared.
/// Client ids, issuers and scope sets come from the configuration, so a
/// real deployment stays far below it.
const MAX_SHARED: usize = 4096;

/// Shares equal strings and scope sets between grants.
#[derive(Default)]
pub struct Interner {
    strings: Mutex<HashSet<Arc<str>>>,
    scope_sets: Mutex<HashMap<Box<str>, Scopes>>,
}

impl Interner {
    pub fn string(&self, text: &str) -> Arc<str> {
        let mut strings = self.strings.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(shared) = strings.get(text) {
            return shared.clone();
        }
        let new: Arc<str> = Arc::from(text);
        if strings.len() < MAX_SHARED {
            strings.insert(new.clone());
        }
        new
    }

    pub fn scopes(&self, scopes: &[String]) -> Scopes {
        let key = scopes.join(" ");
        let mut sets = self.scope_sets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(shared) = sets.get(key.as_str()) {
            return shared.clone();
        }
        let new = Scopes(scopes.iter().map(|s| Box::from(s.as_str())).collect());
        if sets.len() < MAX_SHARED {
            sets.insert(key.into_boxed_str(), new.clone());
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_scope_sets_and_strings_are_shared() {
        let interner = Interner::default();
        let a = interner.scopes(&["a".into(), "b".into()]);
        let b = interner.scopes(&["a".into(), "b".into()]);
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert!(a.contains("b") && !a.contains("c"));
        assert!(a == *["a".to_string(), "b".to_string()].as_slice());
        let x = interner.string("client");
        assert!(Arc::ptr_eq(&x, &interner.string("client")));
    }

    #[test]
    fn sharing_is_bounded() {
        let interner = Interner::default();
        for i in 0..MAX_SHARED + 10 {
            interner.string(&format!("s{i}"));
            interner.scopes(&[format!("s{i}")]);
        }
        assert_eq!(interner.strings.lock().unwrap().len(), MAX_SHARED);
        assert_eq!(interner.scope_sets.lock().unwrap().len(), MAX_SHARED);
        // Still answers correctly past the bound.
        assert_eq!(&*interner.string("late"), "late");
    }
}

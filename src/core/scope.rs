//! Scope parameters: parsing, the client's allowance, and defaults.

use super::Error;
use crate::config::Client;

pub const OFFLINE_ACCESS: &str = "offline_access";

/// Splits a `scope` parameter (RFC 6749 §3.3), keeping first occurrences.
pub fn parse(text: &str) -> Result<Vec<String>, Error> {
    let mut out: Vec<String> = Vec::new();
    for s in text.split(' ').filter(|s| !s.is_empty()) {
        let valid = s
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
        if !valid {
            return Err(Error::InvalidScope(
                "scope contains characters RFC 6749 does not allow".into(),
            ));
        }
        if !out.iter().any(|o| o == s) {
            out.push(s.to_string());
        }
    }
    Ok(out)
}

/// The scopes a client asks for, bounded by what it may obtain. Omitted
/// means every scope of the client except `offline_access`.
pub fn for_client(client: &Client, requested: Option<&str>) -> Result<Vec<String>, Error> {
    let Some(text) = requested else {
        return Ok(client
            .scopes
            .iter()
            .filter(|s| *s != OFFLINE_ACCESS)
            .cloned()
            .collect());
    };
    let scopes = parse(text)?;
    if let Some(denied) = scopes.iter().find(|s| !client.has_scope(s)) {
        return Err(Error::InvalidScope(format!(
            "client `{}` may not obtain scope `{denied}`",
            client.id
        )));
    }
    Ok(scopes)
}

/// Joins scopes for a response.
pub fn join(scopes: &[String]) -> String {
    scopes.join(" ")
}

pub fn has_offline_access(scopes: &[String]) -> bool {
    scopes.iter().any(|s| s == OFFLINE_ACCESS)
}

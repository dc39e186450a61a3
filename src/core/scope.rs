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

/// The scopes a token holds: a token issued for fewer scopes than its
/// grant has holds those, less any its grant no longer has (a re-scope
/// may have dropped some); any other token holds its grant's.
pub fn held<'a>(
    grant: impl Iterator<Item = &'a str> + Clone,
    narrow: Option<impl Iterator<Item = &'a str>>,
) -> Vec<String> {
    match narrow {
        Some(narrow) => narrow
            .filter(|s| grant.clone().any(|g| g == *s))
            .map(str::to_string)
            .collect(),
        None => grant.map(str::to_string).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_narrowed_token_holds_its_own_scopes_that_its_grant_still_has() {
        let grant = ["a", "b"];
        assert_eq!(
            held(grant.into_iter(), None::<std::vec::IntoIter<&str>>),
            ["a", "b"]
        );
        assert_eq!(held(grant.into_iter(), Some(["b", "c"].into_iter())), ["b"]);
    }
}

//! `arbitrary_token`: a trusted client mints a token for any subject, under
//! an issuer it is allowed to assert, with extra claims and custom data.

use super::issue::{issue, whole_seconds, NewGrant, TokenResponse};
use super::{scope, Error, Grants};
use crate::config::{Client, Config};

/// Claims refgate itself sets in introspection; callers may not set them.
pub const RESERVED_CLAIMS: &[&str] = &[
    "active",
    "scope",
    "client_id",
    "username",
    "token_type",
    "exp",
    "iat",
    "nbf",
    "sub",
    "aud",
    "iss",
    "jti",
    "act",
    "may_act",
    "cnf",
    "custom",
    "version",
    "idp",
];

/// What an `arbitrary_token` request asks for, as the client sent it.
pub struct Arbitrary<'a> {
    pub subject: &'a str,
    pub issuer: &'a str,
    pub scope: Option<&'a str>,
    /// `arbitrary_claims`: a JSON object of string arrays.
    pub claims: Option<&'a str>,
    /// `arbitrary_json`: the custom data, a JSON object.
    pub custom: Option<&'a str>,
    /// `access_token_lifetime` in seconds.
    pub lifetime: Option<&'a str>,
}

pub async fn mint(
    grants: &Grants,
    config: &Config,
    client: &Client,
    request: Arbitrary<'_>,
) -> Result<TokenResponse, Error> {
    let issuer = asserted_issuer(client, request.issuer)?;
    let scopes = scope::for_client(client, request.scope)?;
    let claims = request.claims.map(claims).transpose()?;
    let custom = match request.custom {
        None => serde_json::Map::new(),
        Some(text) => match serde_json::from_str(text) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => {
                return Err(Error::InvalidRequest(
                    "arbitrary_json must be a JSON object".into(),
                ))
            }
        },
    };
    let patch = serde_json::Value::Object(custom.clone());
    crate::credential::check_client_write(&patch, &serde_json::Map::new(), &custom, |a| {
        config.authorities.contains_key(a)
    })
    .map_err(|e| Error::InvalidRequest(format!("arbitrary_json: {e}")))?;
    if serde_json::to_vec(&custom).map_or(0, |v| v.len()) > config.tokens.custom_data_max {
        return Err(Error::InvalidRequest(format!(
            "arbitrary_json exceeds {} bytes",
            config.tokens.custom_data_max
        )));
    }
    let client_ttl = whole_seconds(client.access_token_ttl);
    let access_ttl = match request.lifetime {
        None => client_ttl,
        Some(text) => match text.parse::<i64>() {
            Ok(n) if n > 0 => n.min(client_ttl),
            _ => {
                return Err(Error::InvalidRequest(
                    "access_token_lifetime must be a positive number of seconds".into(),
                ))
            }
        },
    };
    issue(
        grants,
        client,
        NewGrant {
            subject: request.subject.to_string(),
            scopes,
            issuer: Some(issuer.to_string()),
            claims,
            custom,
            access_ttl,
            allow_refresh: true,
            ..NewGrant::default()
        },
    )
    .await
}

/// Most bytes of a signed token's claims (as JSON), arbitrary ones
/// included.
pub const SIGNED_CLAIMS_MAX: usize = 16 * 1024;

/// The issuer a client asserts, if it may.
pub fn asserted_issuer<'a>(client: &Client, issuer: &'a str) -> Result<&'a str, Error> {
    if client.allowed_issuers.iter().any(|i| i == issuer) {
        Ok(issuer)
    } else {
        Err(Error::UnauthorizedClient(format!(
            "client `{}` may not assert issuer `{issuer}`",
            client.id
        )))
    }
}

/// Claims to sign: `registered` (refgate's) with the caller's
/// `arbitrary_claims` beside them, at most [`SIGNED_CLAIMS_MAX`] bytes.
pub fn signed_claims(
    mut registered: serde_json::Map<String, serde_json::Value>,
    arbitrary: Option<&str>,
) -> Result<serde_json::Value, Error> {
    if let Some(serde_json::Value::Object(extra)) = arbitrary.map(claims).transpose()? {
        registered.extend(extra);
    }
    let claims = serde_json::Value::Object(registered);
    if serde_json::to_vec(&claims).map_or(usize::MAX, |v| v.len()) > SIGNED_CLAIMS_MAX {
        return Err(Error::InvalidRequest(format!(
            "the token's claims exceed {SIGNED_CLAIMS_MAX} bytes"
        )));
    }
    Ok(claims)
}

/// `arbitrary_claims`: a JSON object of string arrays, no registered names.
fn claims(text: &str) -> Result<serde_json::Value, Error> {
    let bad =
        || Error::InvalidRequest("arbitrary_claims must be a JSON object of string arrays".into());
    let serde_json::Value::Object(map) = serde_json::from_str(text).map_err(|_| bad())? else {
        return Err(bad());
    };
    for (name, value) in &map {
        if RESERVED_CLAIMS.contains(&name.as_str()) {
            return Err(Error::InvalidRequest(format!(
                "arbitrary_claims may not set the registered claim `{name}`"
            )));
        }
        let strings = value
            .as_array()
            .is_some_and(|items| items.iter().all(serde_json::Value::is_string));
        if !strings {
            return Err(bad());
        }
    }
    Ok(serde_json::Value::Object(map))
}

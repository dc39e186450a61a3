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
    let issuer = request.issuer;
    if !client.allowed_issuers.iter().any(|i| i == issuer) {
        return Err(Error::UnauthorizedClient(format!(
            "client `{}` may not assert issuer `{issuer}`",
            client.id
        )));
    }
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

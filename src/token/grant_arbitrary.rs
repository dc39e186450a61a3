//! `arbitrary_token`: a trusted client mints a token for any subject, under
//! an issuer it is allowed to assert, with extra claims and custom data.

use super::error::OAuthError;
use super::issue::{whole_seconds, NewGrant, TokenResponse};
use super::request::Form;
use super::{scope, TokenService};
use crate::config::{Client, Config};

/// Claims refgate itself sets in introspection; callers may not set them.
const RESERVED_CLAIMS: &[&str] = &[
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

pub async fn grant(
    service: &TokenService,
    config: &Config,
    client: &Client,
    form: &Form,
) -> Result<TokenResponse, OAuthError> {
    let subject = form.require("subject")?;
    let issuer = form.require("issuer")?;
    if !client.allowed_issuers.iter().any(|i| i == issuer) {
        return Err(OAuthError::unauthorized_client(format!(
            "client `{}` may not assert issuer `{issuer}`",
            client.id
        )));
    }
    let scopes = scope::for_client(client, form.get("scope"))?;
    let claims = form.get("arbitrary_claims").map(claims).transpose()?;
    let custom = match form.get("arbitrary_json") {
        None => serde_json::Map::new(),
        Some(text) => match serde_json::from_str(text) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => {
                return Err(OAuthError::invalid_request(
                    "arbitrary_json must be a JSON object",
                ))
            }
        },
    };
    let patch = serde_json::Value::Object(custom.clone());
    crate::credential::check_client_write(&patch, &serde_json::Map::new(), &custom, |a| {
        config.authorities.contains_key(a)
    })
    .map_err(|e| OAuthError::invalid_request(format!("arbitrary_json: {e}")))?;
    if serde_json::to_vec(&custom).map_or(0, |v| v.len()) > config.tokens.custom_data_max {
        return Err(OAuthError::invalid_request(format!(
            "arbitrary_json exceeds {} bytes",
            config.tokens.custom_data_max
        )));
    }
    let client_ttl = whole_seconds(client.access_token_ttl);
    let access_ttl = match form.get("access_token_lifetime") {
        None => client_ttl,
        Some(text) => match text.parse::<i64>() {
            Ok(n) if n > 0 => n.min(client_ttl),
            _ => {
                return Err(OAuthError::invalid_request(
                    "access_token_lifetime must be a positive number of seconds",
                ))
            }
        },
    };
    service
        .issue(
            client,
            NewGrant {
                subject: subject.to_string(),
                scopes,
                audience: Vec::new(),
                actor: None,
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
fn claims(text: &str) -> Result<serde_json::Value, OAuthError> {
    let bad =
        || OAuthError::invalid_request("arbitrary_claims must be a JSON object of string arrays");
    let serde_json::Value::Object(map) = serde_json::from_str(text).map_err(|_| bad())? else {
        return Err(bad());
    };
    for (name, value) in &map {
        if RESERVED_CLAIMS.contains(&name.as_str()) {
            return Err(OAuthError::invalid_request(format!(
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

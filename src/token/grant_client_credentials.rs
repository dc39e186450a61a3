//! The `client_credentials` grant: a token whose subject is the client
//! itself. Never a refresh token (RFC 6749 §4.4.3).

use super::error::OAuthError;
use super::issue::{whole_seconds, NewGrant, TokenResponse};
use super::{scope, TokenService};
use crate::config::{Client, Config};

pub async fn grant(
    service: &TokenService,
    _config: &Config,
    client: &Client,
    form: &super::request::Form,
) -> Result<TokenResponse, OAuthError> {
    let mut scopes = scope::for_client(client, form.get("scope"))?;
    scopes.retain(|s| s != scope::OFFLINE_ACCESS);
    service
        .issue(
            client,
            NewGrant {
                subject: client.id.clone(),
                scopes,
                audience: Vec::new(),
                actor: None,
                issuer: None,
                claims: None,
                custom: Default::default(),
                access_ttl: whole_seconds(client.access_token_ttl),
                allow_refresh: false,
                ..NewGrant::default()
            },
        )
        .await
}

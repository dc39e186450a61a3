//! Grants run by refgate on its own behalf, without HTTP: the gateway's
//! transparent on-behalf-of exchange (SPEC 4.4) and the refresh of
//! credentials whose authority is `self`.

use std::sync::Arc;

use super::error::OAuthError;
use super::issue::{TokenResponse, ACCESS_TOKEN_TYPE};
use super::request::Form;
use super::{scope, TokenService};
use crate::config::{Client, GrantType};
use crate::crypto::{hash_token, token_kind, TokenKind};
use crate::lookup::Grant;

impl TokenService {
    /// Token exchange as `client_id` with `subject_token` as the subject.
    pub async fn exchange_for(
        &self,
        client_id: &str,
        subject_token: &str,
        scopes: &[String],
        audience: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let config = self.config();
        let client = exchange_client(&config.clients, client_id)?;
        let scope = scopes.join(" ");
        let form = Form::from_pairs(&[
            ("subject_token", subject_token),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
            ("scope", &scope),
            ("audience", audience.unwrap_or_default()),
        ]);
        super::grant_exchange::grant(self, &config, &client, &form).await
    }

    /// Token exchange as `client_id` for the subject of `subject`, a grant
    /// the caller has just found active: what [`TokenService::exchange_for`]
    /// does with one of the grant's access tokens. The gateway renews a
    /// transparent on-behalf-of credential this way when it has no access
    /// token of the grant at hand (a refresh of it was refused).
    pub async fn exchange_for_grant(
        &self,
        client_id: &str,
        subject: &Grant,
        scopes: &[String],
        audience: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let config = self.config();
        let client = exchange_client(&config.clients, client_id)?;
        let scopes = scope::for_client(&client, Some(&scopes.join(" ")))?;
        let audience: Vec<String> = audience
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .into_iter()
            .collect();
        if let Some(allowed) = &client.audiences {
            if let Some(denied) = audience.iter().find(|a| !allowed.contains(a)) {
                return Err(OAuthError::invalid_target(format!(
                    "client `{}` may not obtain tokens for `{denied}`",
                    client.id
                )));
            }
        }
        super::grant_exchange::issue_exchanged(
            self,
            &client,
            subject.subject.to_string(),
            subject.actor().cloned(),
            scopes,
            audience,
        )
        .await
    }

    /// Refreshes one of refgate's own refresh tokens as the client it was
    /// issued to.
    pub async fn refresh_as_owner(&self, refresh_token: &str) -> Result<TokenResponse, OAuthError> {
        let invalid = || OAuthError::invalid_grant("the refresh token is invalid");
        if token_kind(refresh_token) != Some(TokenKind::Refresh) {
            return Err(invalid());
        }
        let found = self
            .lookup
            .store()
            .find_token(&hash_token(refresh_token))
            .await?;
        let Some((_, grant)) = found else {
            return Err(invalid());
        };
        let config = self.config();
        let client = config
            .clients
            .get(&grant.client_id)
            .cloned()
            .ok_or_else(invalid)?;
        let form = Form::from_pairs(&[("refresh_token", refresh_token)]);
        super::grant_refresh::grant(self, &config, &client, &form).await
    }
}

/// The client a route exchanges as, if it may.
fn exchange_client(
    clients: &std::collections::HashMap<String, Arc<Client>>,
    client_id: &str,
) -> Result<Arc<Client>, OAuthError> {
    let client = clients
        .get(client_id)
        .cloned()
        .ok_or_else(|| OAuthError::invalid_client(format!("no client `{client_id}`")))?;
    if !client.may_use(GrantType::TokenExchange) {
        return Err(OAuthError::unauthorized_client(
            "the exchange client lacks the token-exchange grant",
        ));
    }
    Ok(client)
}

//! Grants run by refgate on its own behalf, without HTTP: the gateway's
//! transparent on-behalf-of exchange (SPEC 4.4) and the refresh of the
//! credentials it obtained that way (authority `self`).
//!
//! Both act on the caller's grant, never on data a client wrote: the
//! exchange is for the caller's subject under the route's exchange client,
//! and a refresh is honoured only for a grant that such an exchange made
//! for this caller's grant and route.

use std::sync::Arc;

use super::error::OAuthError;
use super::grant_exchange::{issue_exchanged, Subject};
use super::issue::TokenResponse;
use super::request::Form;
use super::{scope, TokenService};
use crate::config::{Client, GrantType};
use crate::crypto::{hash_token, token_kind, TokenKind};
use crate::lookup::Grant;

/// What refreshing one of refgate's own derived credentials came to.
pub enum OwnRefresh {
    Fresh(TokenResponse),
    /// The refresh token is dead (revoked, expired, rotated out): exchange
    /// again.
    Refused,
    /// The refresh token is not one a route's exchange made for this
    /// caller: it is never redeemed.
    Foreign,
    /// The store failed.
    Failed(String),
}

impl TokenService {
    /// Token exchange as `client_id` for the subject of `subject`, a grant
    /// the caller found active, minting a grant for `route`'s upstream only.
    /// The new grant is linked to `subject` and ends when it ends.
    pub async fn exchange_for_route(
        &self,
        client_id: &str,
        subject: &Grant,
        scopes: &[String],
        audience: Option<&str>,
        route: &str,
    ) -> Result<TokenResponse, OAuthError> {
        let config = self.config();
        let client = exchange_client(&config.clients, client_id)?;
        if !client
            .exchange_from
            .allows_client(&client.id, &subject.client_id)
        {
            return Err(OAuthError::invalid_grant(format!(
                "client `{}` may not exchange tokens issued to `{}` (see exchange_from)",
                client.id, subject.client_id
            )));
        }
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
        let subject = Subject::of_grant(self, subject).await?;
        issue_exchanged(self, &client, subject, scopes, audience, Some(route)).await
    }

    /// Refreshes a credential the gateway obtained by exchange for `caller`
    /// on `route` (as `client_id`), as the client it was issued to: only
    /// when the refresh token belongs to a grant that this route's exchange
    /// made for `caller`.
    pub async fn refresh_derived(
        &self,
        refresh_token: &str,
        caller: &Grant,
        client_id: &str,
        route: &str,
    ) -> OwnRefresh {
        if token_kind(refresh_token) != Some(TokenKind::Refresh) {
            return OwnRefresh::Foreign;
        }
        let found = match self
            .lookup
            .store()
            .find_token(&hash_token(refresh_token))
            .await
        {
            Ok(found) => found,
            Err(e) => return OwnRefresh::Failed(e.to_string()),
        };
        let Some((_, record)) = found else {
            return OwnRefresh::Foreign;
        };
        let linked = record.client_id == client_id
            && record.parent_id.as_deref() == Some(&*caller.id)
            && record.route.as_deref() == Some(route)
            && *record.subject == *caller.subject
            && record.subject_issuer() == caller.subject_issuer();
        if !linked {
            return OwnRefresh::Foreign;
        }
        let config = self.config();
        let Some(client) = config.clients.get(client_id).cloned() else {
            return OwnRefresh::Refused;
        };
        let form = Form::from_pairs(&[("refresh_token", refresh_token)]);
        match super::grant_refresh::grant(self, &config, &client, &form).await {
            Ok(response) => OwnRefresh::Fresh(response),
            Err(e) if e.code == "invalid_grant" => OwnRefresh::Refused,
            Err(e) => OwnRefresh::Failed(e.description),
        }
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

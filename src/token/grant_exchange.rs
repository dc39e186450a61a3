//! RFC 8693 token exchange: a new grant for the subject of a refgate access
//! token or of a trusted id_token, made for the calling client, with `act`
//! naming that client.

use serde_json::json;

use super::error::OAuthError;
use super::issue::{whole_seconds, NewGrant, TokenResponse, ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE};
use super::request::Form;
use super::{scope, TokenService};
use crate::config::{Client, Config};
use crate::crypto::TokenKind;

pub async fn grant(
    service: &TokenService,
    config: &Config,
    client: &Client,
    form: &Form,
) -> Result<TokenResponse, OAuthError> {
    let subject_token = form.require("subject_token")?;
    let subject_type = form.require("subject_token_type")?;
    if form.get("actor_token").is_some() || form.get("actor_token_type").is_some() {
        return Err(OAuthError::invalid_request(
            "actor_token is not supported; the authenticated client is the actor",
        ));
    }
    if let Some(requested) = form.get("requested_token_type") {
        if requested != ACCESS_TOKEN_TYPE {
            return Err(OAuthError::invalid_request(format!(
                "requested_token_type must be {ACCESS_TOKEN_TYPE}"
            )));
        }
    }
    let audience = audiences(client, form)?;
    let scopes = scope::for_client(client, form.get("scope"))?;

    let (subject, prior_actor) = match subject_type {
        ACCESS_TOKEN_TYPE => {
            let active = service
                .lookup
                .find_active(subject_token)
                .await?
                .filter(|t| t.token.kind == TokenKind::Access)
                .ok_or_else(|| {
                    OAuthError::invalid_request("the subject_token is not an active access token")
                })?;
            (
                active.grant.subject.to_string(),
                active.grant.actor().cloned(),
            )
        }
        ID_TOKEN_TYPE => {
            let verified = service
                .id_tokens
                .verify(&config.trusted_issuers, subject_token)
                .await
                .map_err(|e| OAuthError::invalid_request(e.0))?;
            tracing::debug!(issuer = %verified.issuer, "id_token subject verified");
            (verified.subject, None)
        }
        other => {
            return Err(OAuthError::invalid_request(format!(
                "subject_token_type `{other}` is not supported"
            )))
        }
    };

    issue_exchanged(service, client, subject, prior_actor, scopes, audience).await
}

/// Issues the new grant of an exchange: the subject's, made for `client`,
/// with `act` naming the client on top of any earlier actor (RFC 8693 §4.1).
pub(super) async fn issue_exchanged(
    service: &TokenService,
    client: &Client,
    subject: String,
    prior_actor: Option<serde_json::Value>,
    scopes: Vec<String>,
    audience: Vec<String>,
) -> Result<TokenResponse, OAuthError> {
    let mut actor = json!({ "sub": client.id });
    if let Some(prior) = prior_actor {
        actor["act"] = prior;
    }
    let mut response = service
        .issue(
            client,
            NewGrant {
                subject,
                scopes,
                audience,
                actor: Some(actor),
                issuer: None,
                claims: None,
                custom: Default::default(),
                access_ttl: whole_seconds(client.access_token_ttl),
                allow_refresh: true,
            },
        )
        .await?;
    response.issued_token_type = Some(ACCESS_TOKEN_TYPE);
    Ok(response)
}

/// `audience` and `resource` values, checked: a resource is an absolute URI
/// without a fragment (RFC 8707), and a client with an `audiences` list may
/// only name those.
fn audiences(client: &Client, form: &Form) -> Result<Vec<String>, OAuthError> {
    let mut out: Vec<String> = Vec::new();
    for resource in form.all("resource") {
        let valid = url::Url::parse(resource).is_ok_and(|u| u.fragment().is_none());
        if !valid {
            return Err(OAuthError::invalid_target(format!(
                "resource `{resource}` is not an absolute URI without a fragment"
            )));
        }
    }
    for value in form.all("audience").iter().chain(form.all("resource")) {
        if let Some(allowed) = &client.audiences {
            if !allowed.contains(value) {
                return Err(OAuthError::invalid_target(format!(
                    "client `{}` may not obtain tokens for `{value}`",
                    client.id
                )));
            }
        }
        if !out.contains(value) {
            out.push(value.clone());
        }
    }
    Ok(out)
}

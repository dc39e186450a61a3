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
use crate::lookup::{now, Grant};

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

    let subject = match subject_type {
        ACCESS_TOKEN_TYPE => {
            let active = service
                .lookup
                .find_active(subject_token)
                .await?
                .filter(|t| t.token.kind == TokenKind::Access)
                .ok_or_else(|| {
                    OAuthError::invalid_request("the subject_token is not an active access token")
                })?;
            if !client
                .exchange_from
                .allows_client(&client.id, &active.grant.client_id)
            {
                return Err(OAuthError::invalid_grant(format!(
                    "client `{}` may not exchange tokens issued to `{}` (see exchange_from)",
                    client.id, active.grant.client_id
                )));
            }
            Subject::of_grant(service, &active.grant).await?
        }
        ID_TOKEN_TYPE => {
            let verified = service
                .id_tokens
                .verify(&config.trusted_issuers, subject_token)
                .await
                .map_err(|e| OAuthError::invalid_request(e.0))?;
            if !client.exchange_from.allows_issuer(&verified.issuer) {
                return Err(OAuthError::invalid_grant(format!(
                    "client `{}` may not exchange id_tokens of `{}` (see exchange_from)",
                    client.id, verified.issuer
                )));
            }
            tracing::debug!(issuer = %verified.issuer, "id_token subject verified");
            Subject {
                subject: verified.subject,
                idp: Some(verified.issuer),
                prior_actor: None,
                parent_id: None,
                not_after: None,
                route: None,
            }
        }
        other => {
            return Err(OAuthError::invalid_request(format!(
                "subject_token_type `{other}` is not supported"
            )))
        }
    };

    issue_exchanged(service, client, subject, scopes, audience, None).await
}

/// Who an exchange is for, and what the new grant inherits from its source.
pub(super) struct Subject {
    pub subject: String,
    /// The issuer the subject belongs to (`None`: refgate's own subjects).
    pub idp: Option<String>,
    pub prior_actor: Option<serde_json::Value>,
    /// The source grant, when the subject came from a refgate token.
    pub parent_id: Option<String>,
    /// When the source grant ends.
    pub not_after: Option<i64>,
    /// The route the source grant is bound to: a grant made from a token
    /// the gateway minted for one route's upstream stays bound to it.
    pub route: Option<String>,
}

impl Subject {
    /// The subject of a live refgate grant: the derived grant is linked to
    /// it and ends when it ends.
    pub async fn of_grant(service: &TokenService, grant: &Grant) -> Result<Self, OAuthError> {
        let not_after = service
            .lookup
            .store()
            .grant_expiry(&grant.id, now())
            .await?
            .ok_or_else(|| {
                OAuthError::invalid_request("the subject_token is not an active access token")
            })?;
        Ok(Subject {
            subject: grant.subject.to_string(),
            idp: grant.subject_issuer().map(str::to_string),
            prior_actor: grant.actor().cloned(),
            parent_id: Some(grant.id.to_string()),
            not_after: Some(not_after),
            route: grant.route().map(str::to_string),
        })
    }
}

/// Issues the new grant of an exchange: the subject's, made for `client`,
/// with `act` naming the client on top of any earlier actor (RFC 8693 §4.1).
/// `route` names the gateway route it is minted for, if any; otherwise it
/// keeps the subject's binding.
pub(super) async fn issue_exchanged(
    service: &TokenService,
    client: &Client,
    subject: Subject,
    scopes: Vec<String>,
    audience: Vec<String>,
    route: Option<&str>,
) -> Result<TokenResponse, OAuthError> {
    let mut actor = json!({ "sub": client.id });
    if let Some(prior) = subject.prior_actor {
        actor["act"] = prior;
    }
    let mut response = service
        .issue(
            client,
            NewGrant {
                subject: subject.subject,
                scopes,
                audience,
                actor: Some(actor),
                access_ttl: whole_seconds(client.access_token_ttl),
                allow_refresh: true,
                parent_id: subject.parent_id,
                not_after: subject.not_after,
                idp: subject.idp,
                route: route.map(str::to_string).or(subject.route),
                ..NewGrant::default()
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

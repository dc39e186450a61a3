//! RFC 8693 token exchange: a new grant for the subject of a refgate access
//! token or of a trusted id_token, made for the calling client, with `act`
//! naming that client. The gateway's transparent on-behalf-of exchange
//! (SPEC 4.4) is the same operation for a route ([`for_route`]), and the
//! refresh of what it obtained is [`refresh_derived`].

use std::sync::Arc;

use serde_json::json;

use super::issue::{issue, whole_seconds, NewGrant, TokenResponse, ACCESS_TOKEN_TYPE};
use super::{refresh, scope, Error, Grants};
use crate::config::{Client, Config, GrantType};
use crate::crypto::{hash_token, token_kind, TokenKind};
use crate::lookup::{now, Grant};
use crate::store::GrantRecord;

/// Who an exchange is for, and what the new grant inherits from its source.
pub struct Subject {
    pub subject: String,
    /// The client of the source grant, when the subject came from a
    /// refgate token.
    pub client_id: Option<String>,
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
    /// The subject token to keep with the new grant (an id_token whose
    /// trusted issuer keeps them). Never inherited from a source grant.
    pub kept_token: Option<String>,
}

impl Subject {
    /// The subject of a verified id_token of `issuer`.
    pub fn of_id_token(subject: String, issuer: String) -> Self {
        Subject {
            subject,
            client_id: None,
            idp: Some(issuer),
            prior_actor: None,
            parent_id: None,
            not_after: None,
            route: None,
            kept_token: None,
        }
    }

    /// The subject of a live refgate grant: the derived grant is linked to
    /// it and ends when it ends.
    pub async fn of_grant(grants: &Grants, grant: &Grant) -> Result<Self, Error> {
        let not_after = grants
            .grant_expiry(&grant.id, now())
            .await?
            .ok_or(Error::SubjectInactive)?;
        Ok(Subject {
            subject: grant.subject.to_string(),
            client_id: Some(grant.client_id.to_string()),
            idp: grant.subject_issuer().map(str::to_string),
            prior_actor: grant.actor().cloned(),
            parent_id: Some(grant.id.to_string()),
            not_after: Some(not_after),
            route: grant.route().map(str::to_string),
            kept_token: None,
        })
    }

    /// The subject of a refgate access token that `client` presents.
    pub async fn of_access_token(
        grants: &Grants,
        client: &Client,
        token: &str,
    ) -> Result<Self, Error> {
        let active = grants
            .lookup()
            .find_active(&client.tenant, token)
            .await?
            .filter(|t| t.token.kind == TokenKind::Access)
            .ok_or(Error::SubjectInactive)?;
        may_exchange(client, &active.grant)?;
        Self::of_grant(grants, &active.grant).await
    }
}

/// Whether `client` may exchange tokens of `subject`'s grant.
fn may_exchange(client: &Client, subject: &Grant) -> Result<(), Error> {
    if client
        .exchange_from
        .allows_client(&client.id, &subject.client_id)
    {
        return Ok(());
    }
    Err(Error::InvalidGrant(format!(
        "client `{}` may not exchange tokens issued to `{}` (see exchange_from)",
        client.id, subject.client_id
    )))
}

/// `audience` and `resource` values, checked: a resource is an absolute URI
/// without a fragment (RFC 8707), and a client with an `audiences` list may
/// only name those. Returns the distinct values, in order.
pub fn targets(
    client: &Client,
    audience: &[String],
    resource: &[String],
) -> Result<Vec<String>, Error> {
    let mut out: Vec<String> = Vec::new();
    for value in resource {
        let valid = url::Url::parse(value).is_ok_and(|u| u.fragment().is_none());
        if !valid {
            return Err(Error::InvalidTarget(format!(
                "resource `{value}` is not an absolute URI without a fragment"
            )));
        }
    }
    for value in audience.iter().chain(resource) {
        if let Some(allowed) = &client.audiences {
            if !allowed.contains(value) {
                return Err(Error::InvalidTarget(format!(
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

/// Issues the new grant of an exchange: the subject's, made for `client`,
/// with `act` naming the client on top of any earlier actor (RFC 8693 §4.1).
/// `route` names the gateway route it is minted for, if any; otherwise it
/// keeps the subject's binding.
pub async fn issue_exchanged(
    grants: &Grants,
    client: &Client,
    subject: Subject,
    scopes: Vec<String>,
    audience: Vec<String>,
    route: Option<&str>,
) -> Result<TokenResponse, Error> {
    let mut actor = json!({ "sub": client.id });
    if let Some(prior) = subject.prior_actor {
        actor["act"] = prior;
    }
    let mut response = issue(
        grants,
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
            kept_subject_token: subject.kept_token,
            ..NewGrant::default()
        },
    )
    .await?;
    response.issued_token_type = Some(ACCESS_TOKEN_TYPE);
    Ok(response)
}

/// Token exchange as `client_id` for the subject of `subject`, a grant the
/// gateway found active, minting a grant for `route`'s upstream only. The
/// new grant is linked to `subject` and ends when it ends.
pub async fn for_route(
    grants: &Grants,
    config: &Config,
    client_id: &str,
    subject: &Grant,
    scopes: &[String],
    audience: Option<&str>,
    route: &str,
) -> Result<TokenResponse, Error> {
    let client = exchange_client(config, client_id)?;
    may_exchange(&client, subject)?;
    let scopes = scope::for_client(&client, Some(&scopes.join(" ")))?;
    let audience: Vec<String> = audience
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .into_iter()
        .collect();
    let audience = targets(&client, &audience, &[])?;
    let subject = Subject::of_grant(grants, subject).await?;
    issue_exchanged(grants, &client, subject, scopes, audience, Some(route)).await
}

/// The client a route exchanges as, if it may.
fn exchange_client(config: &Config, client_id: &str) -> Result<Arc<Client>, Error> {
    let client = config
        .clients
        .get(client_id)
        .cloned()
        .ok_or_else(|| Error::InvalidClient(format!("no client `{client_id}`")))?;
    if !client.may_use(GrantType::TokenExchange) {
        return Err(Error::UnauthorizedClient(
            "the exchange client lacks the token-exchange grant".into(),
        ));
    }
    Ok(client)
}

/// What ties a grant to the exchange that made it.
pub struct Lineage<'a> {
    client_id: &'a str,
    parent_id: Option<&'a str>,
    route: Option<&'a str>,
    subject: &'a str,
    subject_issuer: Option<&'a str>,
}

impl<'a> Lineage<'a> {
    pub fn of_record(record: &'a GrantRecord) -> Self {
        Lineage {
            client_id: &record.client_id,
            parent_id: record.parent_id.as_deref(),
            route: record.route.as_deref(),
            subject: &record.subject,
            subject_issuer: record.subject_issuer(),
        }
    }

    pub fn of_grant(grant: &'a Grant) -> Self {
        Lineage {
            client_id: &grant.client_id,
            parent_id: grant.parent_id(),
            route: grant.route(),
            subject: &grant.subject,
            subject_issuer: grant.subject_issuer(),
        }
    }

    /// Whether this grant is one that `route`'s transparent exchange, as
    /// `client_id`, made for `caller`: only such a grant's tokens are sent
    /// or redeemed on the caller's behalf.
    pub fn made_for(&self, caller: &Grant, client_id: &str, route: &str) -> bool {
        self.client_id == client_id
            && self.parent_id == Some(&*caller.id)
            && self.route == Some(route)
            && self.subject == &*caller.subject
            && self.subject_issuer == caller.subject_issuer()
    }
}

/// Why a derived credential was not refreshed.
#[derive(Debug)]
pub enum DerivedRefusal {
    /// The refresh token is not one a route's exchange made for this
    /// caller: it is never redeemed.
    Foreign,
    /// Refreshing failed; [`Error::InvalidGrant`] means the refresh token
    /// is dead (revoked, expired, rotated out) and a new exchange is due.
    Failed(Error),
}

/// Refreshes a credential the gateway obtained by exchange for `caller` on
/// `route` (as `client_id`), as the client it was issued to: only when the
/// refresh token belongs to a grant that this route's exchange made for
/// `caller`. Custom data never decides whose refresh token refgate redeems.
pub async fn refresh_derived(
    grants: &Grants,
    config: &Config,
    refresh_token: &str,
    caller: &Grant,
    client_id: &str,
    route: &str,
) -> Result<TokenResponse, DerivedRefusal> {
    if token_kind(refresh_token) != Some(TokenKind::Refresh) {
        return Err(DerivedRefusal::Foreign);
    }
    let found = grants
        .find_token(&config.tenant, &hash_token(&config.tenant, refresh_token))
        .await
        .map_err(|e| DerivedRefusal::Failed(e.into()))?;
    let Some((_, record)) = found else {
        return Err(DerivedRefusal::Foreign);
    };
    if !Lineage::of_record(&record).made_for(caller, client_id, route) {
        return Err(DerivedRefusal::Foreign);
    }
    let Some(client) = config.clients.get(client_id).cloned() else {
        return Err(DerivedRefusal::Failed(Error::InvalidGrant(format!(
            "no client `{client_id}`"
        ))));
    };
    refresh::redeem(grants, config, &client, refresh_token, None)
        .await
        .map_err(DerivedRefusal::Failed)
}

//! RFC 8693 token exchange's parameters: the subject token is resolved
//! (an id_token is verified here, against the trusted issuers) and the
//! exchange itself is [`crate::core::exchange`].

use super::error::OAuthError;
use super::issue::TokenResponse;
use super::request::Form;
use super::TokenService;
use crate::config::{Client, Config};
use crate::core::exchange::{issue_exchanged, targets, Subject};
use crate::core::issue::{ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE};
use crate::core::scope;

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
    let audience = targets(client, form.all("audience"), form.all("resource"))?;
    let scopes = scope::for_client(client, form.get("scope"))?;

    let subject = match subject_type {
        ACCESS_TOKEN_TYPE => {
            Subject::of_access_token(&service.grants, client, subject_token).await?
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
            let keeps = config
                .trusted_issuers
                .iter()
                .any(|t| t.issuer == verified.issuer && t.keep_subject_token);
            let mut subject = Subject::of_id_token(verified.subject, verified.issuer);
            // Kept for external exchanges on routes (sealed with the grant).
            subject.kept_token = keeps.then(|| subject_token.to_string());
            subject
        }
        other => {
            return Err(OAuthError::invalid_request(format!(
                "subject_token_type `{other}` is not supported"
            )))
        }
    };

    let (subject_client_id, idp) = (subject.client_id.clone(), subject.idp.clone());
    let response =
        issue_exchanged(&service.grants, client, subject, scopes, audience, None).await?;
    service.audit.record(
        "token_exchanged",
        serde_json::json!({
            "client_id": client.id,
            "sub": response.subject,
            "grant_id": response.grant_id,
            "subject_client_id": subject_client_id,
            "idp": idp,
        }),
    );
    Ok(response)
}

//! `POST /oauth2/device_approve`: the trusted back channel. A client with
//! `device_approve = true` (the application a person signed in to) approves
//! a user code with that person's id_token from a trusted issuer it may
//! accept (`exchange_from`, as for token exchange), or denies it with
//! `deny=true`. Wrong user codes are counted per approving client
//! ([`super::device_guesses`]).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::{no_store, OAuthError};
use super::request::AuthenticatedForm;
use super::TokenService;
use crate::core::device;
use crate::store::DeviceStatus;

pub async fn handle(
    State(service): State<Arc<TokenService>>,
    request: AuthenticatedForm,
) -> Response {
    match approve(&service, request).await {
        Ok(()) => {
            let mut response = axum::Json(json!({})).into_response();
            no_store(&mut response);
            response
        }
        Err(e) => e.into_response(),
    }
}

async fn approve(service: &TokenService, request: AuthenticatedForm) -> Result<(), OAuthError> {
    let AuthenticatedForm {
        config,
        client,
        form,
        ..
    } = request;
    if !client.device_approve {
        return Err(OAuthError::unauthorized_client(format!(
            "client `{}` may not approve device codes",
            client.id
        ))
        .with_status(StatusCode::FORBIDDEN));
    }
    service.check_rate(&client)?;
    let too_many = |wait| OAuthError::rate_limited("too many wrong user codes; retry later", wait);
    if let Some(wait) = service.device_guesses.refused(&client) {
        return Err(too_many(wait));
    }
    let deny = match form.get("deny") {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(OAuthError::invalid_request("deny must be true or false")),
    };
    let user_code = device::normalise_user_code(form.require("user_code")?).ok_or_else(|| {
        OAuthError::invalid_request("user_code is not a user code of this service")
    })?;
    // The person: required to approve, checked when given with a denial.
    let person = match (form.get("id_token"), deny) {
        (None, true) => None,
        (None, false) => {
            return Err(OAuthError::invalid_request(
                "parameter `id_token` is missing",
            ))
        }
        (Some(token), _) => {
            let verified = service
                .id_tokens
                .verify(&config.trusted_issuers, token)
                .await
                .map_err(|e| OAuthError::invalid_request(e.0))?;
            if !client.exchange_from.allows_issuer(&verified.issuer) {
                return Err(OAuthError::invalid_grant(format!(
                    "client `{}` may not vouch for id_tokens of `{}` (see exchange_from)",
                    client.id, verified.issuer
                )));
            }
            Some(verified)
        }
    };
    let decision = match (&person, deny) {
        (Some(p), false) => DeviceStatus::Approved {
            subject: p.subject.clone(),
            idp: p.issuer.clone(),
        },
        _ => DeviceStatus::Denied,
    };
    if !device::decide(&service.grants, &client.tenant, &user_code, &decision).await? {
        if let Some(wait) = service.device_guesses.failed(&client) {
            return Err(too_many(wait));
        }
        return Err(OAuthError::invalid_grant(
            "the user_code is unknown, expired or already decided",
        ));
    }
    let event = if deny {
        "device_denied"
    } else {
        "device_approved"
    };
    service.audit.record(
        event,
        json!({
            "client_id": client.id,
            "sub": person.as_ref().map(|p| &p.subject),
            "idp": person.as_ref().map(|p| &p.issuer),
        }),
    );
    Ok(())
}

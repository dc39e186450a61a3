//! `POST /oauth2/device_authorization` (RFC 8628 §3.1–3.2): a client with
//! the device_code grant gets a device code to poll with and a user code
//! for a person to enter at `verification_uri`.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::{no_store, OAuthError};
use super::request::AuthenticatedForm;
use super::TokenService;
use crate::config::GrantType;
use crate::core::device;

pub async fn handle(
    State(service): State<Arc<TokenService>>,
    request: AuthenticatedForm,
) -> Response {
    match authorize(&service, request).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn authorize(
    service: &TokenService,
    request: AuthenticatedForm,
) -> Result<Response, OAuthError> {
    let AuthenticatedForm {
        config,
        client,
        form,
        ..
    } = request;
    service.check_rate(&client)?;
    if !client.may_use(GrantType::DeviceCode) {
        return Err(OAuthError::unauthorized_client(format!(
            "client `{}` may not use the device_code grant",
            client.id
        )));
    }
    let Some(verification_uri) = config.tokens.device_verification_uri.clone() else {
        return Err(OAuthError::unauthorized_client(
            "device authorization is not configured",
        ));
    };
    let authorized =
        device::authorize(&service.grants, &config.tokens, &client, form.get("scope")).await?;
    service.audit.record(
        "device_authorized",
        json!({ "client_id": client.id, "scope": authorized.scope }),
    );
    let separator = if verification_uri.contains('?') {
        '&'
    } else {
        '?'
    };
    let complete = format!(
        "{verification_uri}{separator}user_code={}",
        authorized.user_code
    );
    let mut response = axum::Json(json!({
        "device_code": authorized.device_code,
        "user_code": authorized.user_code,
        "verification_uri": verification_uri,
        "verification_uri_complete": complete,
        "expires_in": authorized.expires_in,
        "interval": authorized.interval,
    }))
    .into_response();
    no_store(&mut response);
    Ok(response)
}

//! `POST /oauth2/token`: authenticates the client and hands the request to
//! the grant type it names.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::OAuthError;
use super::request::AuthenticatedForm;
use super::TokenService;
use crate::config::GrantType;

pub async fn handle(
    State(service): State<Arc<TokenService>>,
    request: AuthenticatedForm,
) -> Response {
    match token(&service, request).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn token(service: &TokenService, request: AuthenticatedForm) -> Result<Response, OAuthError> {
    let AuthenticatedForm {
        config,
        client,
        form,
        ..
    } = request;
    service.check_rate(&client)?;
    let grant_type = form.require("grant_type")?;
    let grant = GrantType::parse(grant_type).ok_or_else(|| {
        OAuthError::unsupported_grant_type(format!("grant type `{grant_type}` is not supported"))
    })?;
    if !client.may_use(grant) {
        return Err(OAuthError::unauthorized_client(format!(
            "client `{}` may not use the {} grant",
            client.id,
            grant.as_str()
        )));
    }
    let audited = match grant {
        GrantType::RefreshToken => Some("token_refreshed"),
        GrantType::TokenExchangeMutate => Some("scope_mutated"),
        // Written where the subject's origin is known, or (an id_token)
        // where it is minted.
        GrantType::TokenExchange | GrantType::ArbitraryIdentity => None,
        GrantType::ClientCredentials | GrantType::ArbitraryToken | GrantType::DeviceCode => {
            Some("token_issued")
        }
    };
    let response = match grant {
        GrantType::ClientCredentials => {
            crate::core::issue::client_credentials(&service.grants, &client, form.get("scope"))
                .await?
        }
        GrantType::RefreshToken => {
            super::grant_refresh::grant(service, &config, &client, &form).await?
        }
        GrantType::TokenExchange => {
            super::grant_exchange::grant(service, &config, &client, &form).await?
        }
        GrantType::TokenExchangeMutate => {
            super::grant_exchange_mutate::grant(service, &config, &client, &form).await?
        }
        GrantType::ArbitraryToken => {
            super::grant_arbitrary::grant(service, &config, &client, &form).await?
        }
        GrantType::ArbitraryIdentity => {
            return super::grant_arbitrary::identity(service, &client, &form).await;
        }
        GrantType::DeviceCode => super::device_grant::grant(service, &client, &form).await?,
    };
    if let Some(event) = audited {
        let mut members = json!({
            "client_id": client.id,
            "sub": response.subject,
            "grant_id": response.grant_id,
        });
        match grant {
            GrantType::ClientCredentials | GrantType::ArbitraryToken | GrantType::DeviceCode => {
                members["grant_type"] = grant.as_str().into();
            }
            GrantType::TokenExchangeMutate => members["scope"] = response.scope.clone().into(),
            _ => {}
        }
        service.audit.record(event, members);
    }
    Ok(response.into_response())
}

//! The `refresh_token` grant's parameters; the rotation is
//! [`crate::core::refresh`].

use super::error::OAuthError;
use super::issue::TokenResponse;
use super::request::Form;
use super::TokenService;
use crate::config::{Client, Config};

pub async fn grant(
    service: &TokenService,
    config: &Config,
    client: &Client,
    form: &Form,
) -> Result<TokenResponse, OAuthError> {
    let presented = form.require("refresh_token")?;
    let redeemed = crate::core::refresh::redeem(
        &service.grants,
        config,
        client,
        presented,
        form.get("scope"),
    )
    .await;
    if let Err(crate::core::Error::RefreshReplayed { grant_id, subject }) = &redeemed {
        service.audit.record(
            "refresh_replay_detected",
            serde_json::json!({ "client_id": client.id, "sub": subject, "grant_id": grant_id }),
        );
    }
    Ok(redeemed?)
}

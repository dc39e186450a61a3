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
    Ok(crate::core::refresh::redeem(
        &service.grants,
        config,
        client,
        presented,
        form.get("scope"),
    )
    .await?)
}

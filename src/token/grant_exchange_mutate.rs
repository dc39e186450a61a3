//! `urn:ietf:params:oauth:grant-type:token-exchange-mutate`'s parameters;
//! the new scope set is applied by [`crate::core::rescope`].

use super::error::OAuthError;
use super::issue::TokenResponse;
use super::request::Form;
use super::TokenService;
use crate::config::{Client, Config};
use crate::core::issue::ACCESS_TOKEN_TYPE;

pub async fn grant(
    service: &TokenService,
    config: &Config,
    client: &Client,
    form: &Form,
) -> Result<TokenResponse, OAuthError> {
    let subject_token = form.require("subject_token")?;
    let subject_type = form.require("subject_token_type")?;
    if subject_type != ACCESS_TOKEN_TYPE {
        return Err(OAuthError::invalid_request(format!(
            "subject_token_type must be {ACCESS_TOKEN_TYPE}"
        )));
    }
    let scope = form.get("scope");
    Ok(
        crate::core::rescope::rescope(&service.grants, config, client, subject_token, scope)
            .await?,
    )
}

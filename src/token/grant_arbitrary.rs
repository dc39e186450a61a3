//! `arbitrary_token`'s parameters; the checks and the minting are
//! [`crate::core::arbitrary`].

use super::error::OAuthError;
use super::issue::TokenResponse;
use super::request::Form;
use super::TokenService;
use crate::config::{Client, Config};
use crate::core::arbitrary::{mint, Arbitrary};

pub async fn grant(
    service: &TokenService,
    config: &Config,
    client: &Client,
    form: &Form,
) -> Result<TokenResponse, OAuthError> {
    let request = Arbitrary {
        subject: form.require("subject")?,
        issuer: form.require("issuer")?,
        scope: form.get("scope"),
        claims: form.get("arbitrary_claims"),
        custom: form.get("arbitrary_json"),
        lifetime: form.get("access_token_lifetime"),
    };
    Ok(mint(&service.grants, config, client, request).await?)
}

//! The device_code grant at `/oauth2/token` (RFC 8628 §3.4–3.5): a device
//! polls with its device code; until a person decided it answers
//! `authorization_pending` (or `slow_down` when polled too fast), then the
//! tokens, `access_denied` or `expired_token`.

use super::error::OAuthError;
use super::issue::TokenResponse;
use super::request::Form;
use super::TokenService;
use crate::config::Client;
use crate::core::device::{self, Waiting};

pub async fn grant(
    service: &TokenService,
    client: &Client,
    form: &Form,
) -> Result<TokenResponse, OAuthError> {
    let device_code = form.require("device_code")?;
    match device::redeem(&service.grants, client, device_code).await? {
        Ok(response) => Ok(response),
        Err(waiting) => {
            let (code, description) = match waiting {
                Waiting::Pending => (
                    "authorization_pending",
                    "the user code has not been approved yet",
                ),
                Waiting::SlowDown => (
                    "slow_down",
                    "polled too soon; wait 5 seconds more between polls",
                ),
                Waiting::Denied => ("access_denied", "the authorization was denied"),
                Waiting::Expired => ("expired_token", "the device_code has expired"),
            };
            Err(OAuthError::invalid_request(description).with_code(code))
        }
    }
}

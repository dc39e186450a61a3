//! The client side of a downstream authority's token endpoint: one
//! `refresh_token` grant request, and what its answer means for the
//! credential (SPEC 4.2). Only `invalid_grant` is a refusal (re-consent);
//! anything else is the authority being unavailable.

use std::time::Duration;

use serde::Deserialize;
use tracing::Instrument;

use crate::config::{AuthMethod, Authority};

/// Largest token response read from an authority.
const MAX_RESPONSE: usize = 64 * 1024;

/// What an authority answered.
pub(super) enum Outcome {
    Fresh(TokenFields),
    Refused,
    Unavailable(String),
}

#[derive(Debug, Deserialize)]
pub(super) struct TokenFields {
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default)]
    pub expires_in: Option<i64>,
    #[serde(default)]
    pub scope: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ErrorFields {
    error: String,
}

/// Calls authorities' token endpoints.
pub(super) struct AuthorityClient {
    pub http: reqwest::Client,
}

impl AuthorityClient {
    /// Redeems `refresh_token` at `authority`, giving up after `timeout`.
    pub async fn refresh(
        &self,
        authority: &Authority,
        refresh_token: &str,
        timeout: Duration,
    ) -> Outcome {
        let encode =
            |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        let mut request = self
            .http
            .post(&authority.token_endpoint)
            .timeout(timeout)
            .header(reqwest::header::ACCEPT, "application/json");
        match authority.auth_method {
            AuthMethod::ClientSecretBasic => {
                request = request.basic_auth(
                    encode(&authority.client_id),
                    Some(encode(authority.client_secret.expose())),
                );
            }
            AuthMethod::ClientSecretPost => {
                form.push(("client_id", &authority.client_id));
                form.push(("client_secret", authority.client_secret.expose()));
            }
        }
        let span = crate::traces::authority_call(&authority.name);
        for (name, value) in crate::traces::headers_for(&span) {
            request = request.header(name, value);
        }
        let response = match request.form(&form).send().instrument(span.clone()).await {
            Ok(r) => r,
            Err(e) => return Outcome::Unavailable(format!("request failed: {}", e.without_url())),
        };
        let status = response.status();
        span.record("http.response.status_code", status.as_u16());
        let body = match response.bytes().instrument(span).await {
            Ok(b) if b.len() <= MAX_RESPONSE => b,
            Ok(_) => return Outcome::Unavailable("token response too large".into()),
            Err(e) => {
                return Outcome::Unavailable(format!(
                    "reading the response failed: {}",
                    e.without_url()
                ))
            }
        };
        if status.is_success() {
            return match serde_json::from_slice::<TokenFields>(&body) {
                Ok(fields) if !fields.access_token.is_empty() => Outcome::Fresh(fields),
                _ => Outcome::Unavailable("the token response is not valid JSON".into()),
            };
        }
        match serde_json::from_slice::<ErrorFields>(&body) {
            Ok(e) if e.error == "invalid_grant" => Outcome::Refused,
            Ok(e) => Outcome::Unavailable(format!("the authority answered {status} {}", e.error)),
            Err(_) => Outcome::Unavailable(format!("the authority answered {status}")),
        }
    }
}

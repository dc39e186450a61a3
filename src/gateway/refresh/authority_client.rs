//! The client side of a downstream authority's token endpoint: a
//! `refresh_token` grant request (SPEC 4.2), an exchange of a kept subject
//! token (RFC 8693 or Entra's on-behalf-of request), and what an answer
//! means for the credential. Only `invalid_grant` is a refusal
//! (re-consent); anything else is the authority being unavailable.
//!
//! Every request authenticates the same way, in [`AuthorityClient::authenticate`]:
//! `client_secret_basic`, `client_secret_post`, or `private_key_jwt`
//! (RFC 7523 §2.2: a short-lived assertion signed with the authority's
//! `private_key_file`, or with refgate's own current signing key).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tracing::Instrument;

use crate::config::{AuthMethod, Authority, ExternalExchange, ExternalGrant};
use crate::crypto::Random;
use crate::signing::{KeyRing, SigningError};

/// Largest token response read from an authority.
const MAX_RESPONSE: usize = 64 * 1024;

/// What an authority answered.
pub enum Outcome {
    Fresh(TokenFields),
    Refused,
    Unavailable(String),
}

#[derive(Debug, Deserialize)]
pub struct TokenFields {
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

/// RFC 7523 §2.2 client assertion type.
const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// A client assertion is good for this long.
const ASSERTION_LIFETIME: i64 = 60;
const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";

/// A client assertion could not be signed (no signing key signs now).
#[derive(Debug, thiserror::Error)]
#[error("cannot sign a client assertion: {0}")]
pub struct ClientAuthError(String);

/// Calls authorities' token endpoints.
pub struct AuthorityClient {
    http: reqwest::Client,
    /// refgate's own keys: `private_key_jwt` without `private_key_file`.
    signing: Arc<KeyRing>,
    /// Token endpoints of authorities configured by `issuer`.
    discovery: Arc<crate::discovery::Discovery>,
    random: Random,
}

impl AuthorityClient {
    pub fn new(
        http: reqwest::Client,
        signing: Arc<KeyRing>,
        discovery: Arc<crate::discovery::Discovery>,
    ) -> Self {
        AuthorityClient {
            http,
            signing,
            discovery,
            random: Random::default(),
        }
    }

    /// Adds `authority`'s client authentication to a token-endpoint
    /// request and sets `form` (with whatever the method adds) as its body.
    /// `token_endpoint` is where the request goes (the assertion's `aud`).
    pub fn authenticate(
        &self,
        request: reqwest::RequestBuilder,
        form: Vec<(&str, &str)>,
        authority: &Authority,
        token_endpoint: &str,
    ) -> Result<reqwest::RequestBuilder, ClientAuthError> {
        // Shorter-lived fields join it below (the assertion).
        let mut form: Vec<(&str, &str)> = form;
        let encode =
            |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        match authority.auth_method {
            AuthMethod::ClientSecretBasic => Ok(request
                .basic_auth(
                    encode(&authority.client_id),
                    Some(encode(authority.client_secret.expose())),
                )
                .form(&form)),
            AuthMethod::ClientSecretPost => {
                form.push(("client_id", &authority.client_id));
                form.push(("client_secret", authority.client_secret.expose()));
                Ok(request.form(&form))
            }
            AuthMethod::PrivateKeyJwt => {
                let assertion = self.client_assertion(authority, token_endpoint)?;
                let mut form: Vec<(&str, &str)> = form;
                form.push(("client_id", &authority.client_id));
                form.push(("client_assertion_type", JWT_BEARER_ASSERTION));
                form.push(("client_assertion", &assertion));
                Ok(request.form(&form))
            }
        }
    }

    /// An RFC 7523 client assertion for `authority`: issued by and about
    /// the client, for the token endpoint, short-lived, never reused.
    fn client_assertion(
        &self,
        authority: &Authority,
        token_endpoint: &str,
    ) -> Result<String, ClientAuthError> {
        let now = crate::lookup::now();
        let claims = json!({
            "iss": authority.client_id,
            "sub": authority.client_id,
            "aud": token_endpoint,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
            "jti": self.random.grant_id(),
        });
        match &authority.client_key {
            Some(key) => {
                let mut header = jsonwebtoken::Header::new(key.algorithm);
                header.kid = Some(key.kid.clone());
                jsonwebtoken::encode(&header, &claims, &key.signer)
                    .map_err(|e| ClientAuthError(e.to_string()))
            }
            None => self
                .signing
                .of(&authority.tenant)
                .ok_or(SigningError::NoCurrentKey)
                .and_then(|keys| keys.sign("JWT", &claims))
                .map_err(|e| ClientAuthError(e.to_string())),
        }
    }

    /// Redeems `refresh_token` at `authority`, giving up after `timeout`.
    pub async fn refresh(
        &self,
        authority: &Authority,
        refresh_token: &str,
        timeout: Duration,
    ) -> Outcome {
        let form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        self.token_request(authority, form, timeout).await
    }

    /// Exchanges `subject_token` at `authority` as `exchange` says.
    pub async fn exchange(
        &self,
        authority: &Authority,
        exchange: &ExternalExchange,
        subject_token: &str,
        timeout: Duration,
    ) -> Outcome {
        let mut form = match exchange.grant {
            ExternalGrant::TokenExchange => vec![
                ("grant_type", TOKEN_EXCHANGE_GRANT),
                ("subject_token", subject_token),
                ("subject_token_type", ID_TOKEN_TYPE),
            ],
            ExternalGrant::JwtBearer => vec![
                ("grant_type", JWT_BEARER_GRANT),
                ("requested_token_use", "on_behalf_of"),
                ("assertion", subject_token),
            ],
        };
        for (name, value) in [
            ("scope", &exchange.scope),
            ("audience", &exchange.audience),
            ("resource", &exchange.resource),
        ] {
            if let Some(value) = value {
                form.push((name, value));
            }
        }
        self.token_request(authority, form, timeout).await
    }

    /// Posts `form` to `authority`'s token endpoint, authenticated.
    async fn token_request(
        &self,
        authority: &Authority,
        form: Vec<(&str, &str)>,
        timeout: Duration,
    ) -> Outcome {
        let (status, body) = match self.post_token_form(authority, form, timeout).await {
            Ok(answer) => answer,
            Err(why) => return Outcome::Unavailable(why),
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

    /// Posts `form` to `authority`'s token endpoint (configured or
    /// discovered), authenticated and traced, giving up after `timeout`;
    /// the answer's status and body (at most 64 KiB), or why there is none.
    pub async fn post_token_form(
        &self,
        authority: &Authority,
        form: Vec<(&str, &str)>,
        timeout: Duration,
    ) -> Result<(reqwest::StatusCode, bytes::Bytes), String> {
        let endpoint = self.discovery.token_endpoint(authority, timeout).await?;
        let request = self
            .http
            .post(&endpoint)
            .timeout(timeout)
            .header(reqwest::header::ACCEPT, "application/json");
        let mut request = self
            .authenticate(request, form, authority, &endpoint)
            .map_err(|e| e.to_string())?;
        let span = crate::traces::authority_call(&authority.name);
        for (name, value) in crate::traces::headers_for(&span) {
            request = request.header(name, value);
        }
        let response = request
            .send()
            .instrument(span.clone())
            .await
            .map_err(|e| format!("request failed: {}", e.without_url()))?;
        let status = response.status();
        span.record("http.response.status_code", status.as_u16());
        match response.bytes().instrument(span).await {
            Ok(b) if b.len() <= MAX_RESPONSE => Ok((status, b)),
            Ok(_) => Err("token response too large".into()),
            Err(e) => Err(format!("reading the response failed: {}", e.without_url())),
        }
    }
}

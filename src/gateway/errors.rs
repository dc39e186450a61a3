//! The one mapping of gateway failures to client responses (SPEC 4.5).
//! Every body is JSON with `error` and `error_description`.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use serde_json::json;

/// Why the gateway answered instead of the upstream.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    #[error("no route matches this request")]
    NoRoute,
    /// A request the gateway will not route (bad Host, ambiguous path);
    /// not about the token, so no Bearer challenge.
    #[error("{0}")]
    BadRequest(&'static str),
    /// A request head longer than the proxy reads (64 KiB).
    #[error("the request head is larger than 64 KiB")]
    HeadTooLarge,
    #[error("no bearer token in the Authorization header")]
    MissingToken,
    #[error("{0}")]
    Malformed(&'static str),
    #[error("the token is unknown, expired or revoked")]
    InvalidToken,
    /// An active token that is not meant for this route (its audience, or
    /// the route the gateway minted it for); the text says which.
    #[error("{0}")]
    NotForThisRoute(String),
    #[error("the token lacks a required scope")]
    InsufficientScope(String),
    #[error("the token holds no credential `{0}`")]
    CredentialMissing(String),
    #[error("the stored credential `{0}` is not usable")]
    CredentialInvalid(String),
    #[error(
        "the downstream authority refused to refresh credential `{0}`; the user must consent again"
    )]
    ReauthRequired(String),
    #[error("the downstream authority is unavailable and the credential has expired")]
    AuthorityUnavailable,
    #[error("the upstream is unavailable")]
    UpstreamUnavailable,
    /// The calling client's requests on this route are over its rate
    /// limit; whole seconds until it may send again.
    #[error("too many requests on this route; retry later")]
    RateLimited(u64),
    #[error("the token store is unavailable")]
    StoreUnavailable,
    /// A phantom-token route cannot sign now (no usable signing key).
    #[error("the gateway cannot sign a token for this route now")]
    SigningUnavailable,
}

const REALM: &str = "Bearer realm=\"refgate\"";

/// Where the holder of a token can start a connect flow that fills the
/// credential it lacks (a connectable authority fills it).
#[derive(Debug, Clone)]
pub struct ConnectHint {
    /// Absolute URL of `POST /oauth2/connect`.
    pub endpoint: String,
    pub authority: String,
}

/// The hint for `error`, when it is about a credential a connect flow of
/// `tenant` (the route's) fills.
pub fn connect_hint(
    error: &GatewayError,
    config: &crate::config::Config,
    tenant: &str,
) -> Option<ConnectHint> {
    let (GatewayError::CredentialMissing(name) | GatewayError::ReauthRequired(name)) = error else {
        return None;
    };
    let config = config.tenant(tenant)?;
    let authority = config.connectable_for(name)?;
    Some(ConnectHint {
        endpoint: config.connect.as_ref()?.connect_endpoint.clone(),
        authority: authority.name.clone(),
    })
}

impl GatewayError {
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::NoRoute => 404,
            GatewayError::BadRequest(_) | GatewayError::Malformed(_) => 400,
            GatewayError::HeadTooLarge => 431,
            GatewayError::MissingToken
            | GatewayError::InvalidToken
            | GatewayError::NotForThisRoute(_)
            | GatewayError::CredentialMissing(_)
            | GatewayError::CredentialInvalid(_)
            | GatewayError::ReauthRequired(_) => 401,
            GatewayError::InsufficientScope(_) => 403,
            GatewayError::RateLimited(_) => 429,
            GatewayError::UpstreamUnavailable => 502,
            GatewayError::AuthorityUnavailable
            | GatewayError::StoreUnavailable
            | GatewayError::SigningUnavailable => 503,
        }
    }

    /// The `error` member of the body.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::NoRoute => "not_found",
            GatewayError::MissingToken => "missing_token",
            GatewayError::BadRequest(_)
            | GatewayError::Malformed(_)
            | GatewayError::HeadTooLarge => "invalid_request",
            GatewayError::InvalidToken | GatewayError::NotForThisRoute(_) => "invalid_token",
            GatewayError::InsufficientScope(_) => "insufficient_scope",
            GatewayError::CredentialMissing(_) => "credential_missing",
            GatewayError::CredentialInvalid(_) => "credential_invalid",
            GatewayError::ReauthRequired(_) => "credential_reauth_required",
            GatewayError::AuthorityUnavailable => "authority_unavailable",
            GatewayError::UpstreamUnavailable => "upstream_unavailable",
            GatewayError::StoreUnavailable => "store_unavailable",
            GatewayError::RateLimited(_) => "rate_limited",
            GatewayError::SigningUnavailable => "signing_unavailable",
        }
    }

    fn www_authenticate(&self, hint: Option<&ConnectHint>) -> Option<String> {
        if let Some(hint) = hint {
            return Some(format!(
                "{REALM}, error=\"invalid_token\", connect_endpoint=\"{}\"",
                hint.endpoint.replace(['"', '\\'], "")
            ));
        }
        match self {
            GatewayError::MissingToken => Some(REALM.to_string()),
            GatewayError::Malformed(_) => Some(format!("{REALM}, error=\"invalid_request\"")),
            GatewayError::InvalidToken
            | GatewayError::NotForThisRoute(_)
            | GatewayError::CredentialMissing(_)
            | GatewayError::CredentialInvalid(_)
            | GatewayError::ReauthRequired(_) => Some(format!("{REALM}, error=\"invalid_token\"")),
            GatewayError::InsufficientScope(scope) => Some(format!(
                "{REALM}, error=\"insufficient_scope\", scope=\"{scope}\""
            )),
            _ => None,
        }
    }

    fn retry_after(&self) -> Option<String> {
        match self {
            GatewayError::AuthorityUnavailable => Some("5".to_string()),
            GatewayError::StoreUnavailable | GatewayError::SigningUnavailable => {
                Some("1".to_string())
            }
            GatewayError::RateLimited(seconds) => Some(seconds.to_string()),
            _ => None,
        }
    }

    fn body(&self, hint: Option<&ConnectHint>) -> Bytes {
        let mut body = json!({ "error": self.code(), "error_description": self.to_string() });
        if let Some(hint) = hint {
            body["connect_endpoint"] = json!(hint.endpoint);
            body["authority"] = json!(hint.authority);
        }
        match self {
            GatewayError::CredentialMissing(name)
            | GatewayError::CredentialInvalid(name)
            | GatewayError::ReauthRequired(name) => body["credential"] = json!(name),
            GatewayError::InsufficientScope(scope) => body["scope"] = json!(scope),
            _ => {}
        }
        Bytes::from(body.to_string())
    }
}

impl GatewayError {
    /// The whole HTTP/1.1 answer, closing the connection, for a client
    /// refused before pingora has a session for it.
    pub fn http1_answer(&self, request_id: &str) -> Vec<u8> {
        let body = self.body(None);
        let status =
            http::StatusCode::from_u16(self.status()).unwrap_or(http::StatusCode::BAD_REQUEST);
        let mut out = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        );
        if let Some(challenge) = self.www_authenticate(None) {
            out.push_str(&format!("www-authenticate: {challenge}\r\n"));
        }
        if !request_id.is_empty() {
            out.push_str(&format!("x-request-id: {request_id}\r\n"));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&body);
        bytes
    }
}

/// Writes the error to the client, keeping the connection usable.
pub async fn respond(
    session: &mut Session,
    error: &GatewayError,
    request_id: &str,
    hint: Option<&ConnectHint>,
) {
    let body = error.body(hint);
    let Ok(mut header) = ResponseHeader::build(error.status(), Some(6)) else {
        return;
    };
    let _ = header.insert_header(http::header::CONTENT_TYPE, "application/json");
    let _ = header.insert_header(http::header::CONTENT_LENGTH, body.len().to_string());
    let _ = header.insert_header(http::header::CACHE_CONTROL, "no-store");
    if let Some(challenge) = error.www_authenticate(hint) {
        let _ = header.insert_header(http::header::WWW_AUTHENTICATE, challenge);
    }
    if let Some(seconds) = error.retry_after() {
        let _ = header.insert_header(http::header::RETRY_AFTER, seconds);
    }
    if !request_id.is_empty() {
        let _ = header.insert_header("x-request-id", request_id);
    }
    if session
        .write_response_header(Box::new(header), false)
        .await
        .is_ok()
    {
        let _ = session.write_response_body(Some(body), true).await;
    }
}

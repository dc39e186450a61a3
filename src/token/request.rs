//! Reading requests: bounded bodies, strict form parsing (RFC 6749 §3.2:
//! no repeated parameters, UTF-8 only) and client authentication
//! (`client_secret_basic`, `client_secret_post`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, request::Parts, HeaderMap, Request};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::error::OAuthError;
use super::throttle::AuthThrottle;
use crate::config::{Client, Config};
use crate::crypto::SecretHash;

/// Largest form body the OAuth endpoints read.
pub const FORM_LIMIT: usize = 64 * 1024;

/// Reads the whole body, refusing more than `limit` bytes with 413.
pub async fn read_body(request: Request<Body>, limit: usize) -> Result<(Parts, Bytes), OAuthError> {
    let (parts, body) = request.into_parts();
    if let Some(len) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit as u64 {
            return Err(OAuthError::too_large(format!(
                "the request body exceeds {limit} bytes"
            )));
        }
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        if exceeded_limit(&e) {
            OAuthError::too_large(format!("the request body exceeds {limit} bytes"))
        } else {
            OAuthError::invalid_request("the request body could not be read")
        }
    })?;
    Ok((parts, bytes))
}

/// Whether a body error was the size limit (rather than a broken body).
fn exceeded_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Whether the request's media type is `expected` (parameters ignored).
pub fn has_media_type(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(expected))
}

/// Parameters of an `application/x-www-form-urlencoded` body.
#[derive(Debug, Default)]
pub struct Form {
    values: HashMap<String, Vec<String>>,
}

/// Parameters that RFC 8693 lets a client repeat.
const REPEATABLE: &[&str] = &["audience", "resource"];

impl Form {
    /// Parses a form body, rejecting repeated parameters, bad encoding and
    /// the wrong content type.
    pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Self, OAuthError> {
        if !has_media_type(headers, "application/x-www-form-urlencoded") {
            return Err(OAuthError::invalid_request(
                "the body must be application/x-www-form-urlencoded",
            ));
        }
        let mut values: HashMap<String, Vec<String>> = HashMap::new();
        for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
            let (name, value) = match pair.iter().position(|b| *b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &[][..]),
            };
            let name = decode(name)?;
            let value = decode(value)?;
            // RFC 6749 §3.1: a parameter without a value counts as omitted.
            if value.is_empty() || name.is_empty() {
                continue;
            }
            let entry = values.entry(name.clone()).or_default();
            if !entry.is_empty() && !REPEATABLE.contains(&name.as_str()) {
                return Err(OAuthError::invalid_request(format!(
                    "parameter `{name}` is given more than once"
                )));
            }
            entry.push(value);
        }
        Ok(Form { values })
    }

    /// A single-valued parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    /// A required single-valued parameter.
    pub fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("parameter `{name}` is missing")))
    }

    /// Every value of a repeatable parameter.
    pub fn all(&self, name: &str) -> &[String] {
        self.values.get(name).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// Decodes one form component: `+` is a space, `%XX` a byte, and the result
/// must be UTF-8 without control characters.
fn decode(raw: &[u8]) -> Result<String, OAuthError> {
    let spaced: Vec<u8> = raw
        .iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect();
    let bytes: Vec<u8> = percent_encoding::percent_decode(&spaced).collect();
    let text = String::from_utf8(bytes)
        .map_err(|_| OAuthError::invalid_request("the body is not valid UTF-8"))?;
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return Err(OAuthError::invalid_request(
            "parameters must not contain control characters",
        ));
    }
    Ok(text)
}

/// Which client authentication methods an endpoint accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethods {
    BasicOrPost,
    BasicOnly,
}

/// Authenticates the calling client; every failure is 401 `invalid_client`,
/// and 429 `rate_limited` once the client id has failed too often
/// ([`AuthThrottle`]).
pub fn authenticate(
    config: &Config,
    throttle: &AuthThrottle,
    headers: &HeaderMap,
    form: Option<&Form>,
    methods: AuthMethods,
) -> Result<Arc<Client>, OAuthError> {
    let mut auth_headers = headers.get_all(header::AUTHORIZATION).iter();
    let basic = match (auth_headers.next(), auth_headers.next()) {
        (Some(_), Some(_)) => {
            return Err(OAuthError::invalid_request(
                "more than one Authorization header",
            ))
        }
        (Some(value), None) => Some(parse_basic(value.as_bytes())?),
        (None, _) => None,
    };
    let post_id = form.and_then(|f| f.get("client_id"));
    let post_secret = form.and_then(|f| f.get("client_secret"));
    let (id, secret) = match basic {
        Some((id, secret)) => {
            if post_secret.is_some() {
                return Err(OAuthError::invalid_request(
                    "use one client authentication method, not both",
                ));
            }
            if post_id.is_some_and(|p| p != id) {
                return Err(OAuthError::invalid_client(
                    "client_id does not match the authenticated client",
                ));
            }
            (id, secret)
        }
        None if methods == AuthMethods::BasicOrPost => match (post_id, post_secret) {
            (Some(id), Some(secret)) => (id.to_string(), secret.to_string()),
            _ => return Err(OAuthError::invalid_client("client authentication required")),
        },
        None => {
            return Err(OAuthError::invalid_client(
                "client authentication with HTTP Basic is required",
            ))
        }
    };
    let refused = |wait| {
        OAuthError::rate_limited("too many failed client authentications; retry later", wait)
    };
    if let Some(wait) = throttle.refused(config, &id) {
        return Err(refused(wait));
    }
    let client = config.clients.get(&id);
    let expected = client
        .map(|c| c.secret.clone())
        .unwrap_or_else(SecretHash::unmatchable);
    match client {
        Some(c) if expected.verify(&secret) => Ok(c.clone()),
        _ => match throttle.failed(config, &id) {
            Some(wait) => Err(refused(wait)),
            None => Err(OAuthError::invalid_client("client authentication failed")),
        },
    }
}

/// Checks HTTP Basic client credentials before the body is read: a caller
/// that sends an Authorization header and fails it is refused without
/// refgate reading (and holding) its body. Without the header nothing is
/// checked here (`client_secret_post` needs the body); [`authenticate`]
/// runs on the whole request afterwards either way.
pub fn authenticate_header_first(
    config: &Config,
    throttle: &AuthThrottle,
    headers: &HeaderMap,
) -> Result<(), OAuthError> {
    if headers.contains_key(header::AUTHORIZATION) {
        authenticate(config, throttle, headers, None, AuthMethods::BasicOnly)?;
    }
    Ok(())
}

/// Parses `Basic base64(urlencode(id):urlencode(secret))` (RFC 6749 §2.3.1).
fn parse_basic(value: &[u8]) -> Result<(String, String), OAuthError> {
    let bad = || OAuthError::invalid_client("malformed Basic credentials");
    let text = std::str::from_utf8(value).map_err(|_| bad())?;
    let (scheme, encoded) = text.trim().split_once(' ').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::invalid_client(
            "unsupported authentication scheme; use Basic",
        ));
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
    let id = decode(id.as_bytes()).map_err(|_| bad())?;
    let secret = decode(secret.as_bytes()).map_err(|_| bad())?;
    if id.is_empty() {
        return Err(bad());
    }
    Ok((id, secret))
}

/// A form request from an authenticated client, as the token,
/// introspection and revocation endpoints all take theirs: HTTP Basic
/// checked before the body is read (a wrong secret is refused without
/// reading it), the body capped at [`FORM_LIMIT`] and parsed, then the
/// client authenticated on the whole request (Basic or
/// `client_secret_post`).
pub struct AuthenticatedForm {
    /// The configuration the request is served with, start to end.
    pub config: Arc<Config>,
    pub client: Arc<Client>,
    pub form: Form,
    /// The request's headers (for content negotiation).
    pub headers: HeaderMap,
}

impl axum::extract::FromRequest<Arc<super::TokenService>> for AuthenticatedForm {
    type Rejection = OAuthError;

    async fn from_request(
        request: Request<Body>,
        service: &Arc<super::TokenService>,
    ) -> Result<Self, OAuthError> {
        let config = super::tenant::scope_of(request.extensions(), service).0;
        authenticate_header_first(&config, &service.auth_throttle, request.headers())?;
        let (parts, body) = read_body(request, FORM_LIMIT).await?;
        let form = Form::parse(&parts.headers, &body)?;
        let client = authenticate(
            &config,
            &service.auth_throttle,
            &parts.headers,
            Some(&form),
            AuthMethods::BasicOrPost,
        )?;
        Ok(AuthenticatedForm {
            config,
            client,
            form,
            headers: parts.headers,
        })
    }
}

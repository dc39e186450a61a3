//! Request hygiene in front of every token-service endpoint: HTTP/1.1
//! requests need exactly one valid `Host` (RFC 9112 §3.2), and no request
//! may take longer than a bound (a slow body never holds a task forever).
//! Every answer carries the request's `x-request-id` (the caller's when it
//! is sane, else a new one), the id its audit lines carry.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, StatusCode, Version};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::OAuthError;

/// The longest a token-service request may take, body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

pub async fn guard(request: Request<Body>, next: Next) -> Response {
    if request.version() == Version::HTTP_11 {
        let mut hosts = request.headers().get_all(header::HOST).iter();
        let valid = match (hosts.next(), hosts.next()) {
            (Some(host), None) => host
                .to_str()
                .ok()
                .and_then(|h| h.parse::<axum::http::uri::Authority>().ok())
                .is_some_and(|a| !a.as_str().contains('@')),
            _ => false,
        };
        if !valid {
            return OAuthError::invalid_request("HTTP/1.1 requires exactly one valid Host header")
                .into_response();
        }
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => OAuthError::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request",
            "the request took too long to arrive",
        )
        .into_response(),
    }
}

/// Gives the request an id for the audit trail and returns it as
/// `x-request-id`.
pub async fn request_id(request: Request<Body>, next: Next) -> Response {
    let offered = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok());
    let id = crate::audit::request_id(offered);
    let value = axum::http::HeaderValue::from_str(&id).ok();
    // The tenant the request was routed to (`super::tenant`), for the audit
    // trail; the admin API's requests have none.
    let tenant = request
        .extensions()
        .get::<super::tenant::Scope>()
        .map(|s| s.0.tenant.clone())
        .unwrap_or_default();
    let mut response = crate::audit::with_request_id(id, &tenant, next.run(request)).await;
    if let Some(value) = value {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

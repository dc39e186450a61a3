//! The one place where token-service failures become HTTP responses:
//! RFC 6749 §5.2 JSON bodies (also used by RFC 7662, RFC 7009, RFC 8693 and
//! the mutate endpoint).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::lookup::LookupError;
use crate::store::StoreError;

/// An OAuth error response.
#[derive(Debug, Clone)]
pub struct OAuthError {
    pub status: StatusCode,
    pub code: &'static str,
    pub description: String,
    /// Extra members of the JSON body.
    pub extra: Option<serde_json::Value>,
    /// Seconds for `Retry-After`.
    pub retry_after: Option<u64>,
}

impl OAuthError {
    pub fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        OAuthError {
            status,
            code,
            description: description.into(),
            extra: None,
            retry_after: None,
        }
    }

    /// Too many attempts: 429 with `Retry-After` (SPEC 5).
    pub fn rate_limited(description: impl Into<String>, wait: std::time::Duration) -> Self {
        let mut error = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", description);
        error.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
        error
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    /// Client authentication failed: always 401 with a Basic challenge.
    pub fn invalid_client(description: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
    }

    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
    }

    pub fn unauthorized_client(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "unauthorized_client", description)
    }

    pub fn unsupported_grant_type(description: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            description,
        )
    }

    pub fn invalid_scope(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_scope", description)
    }

    pub fn invalid_target(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_target", description)
    }

    /// The request body is larger than the endpoint accepts.
    pub fn too_large(description: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            description,
        )
    }

    pub fn server_error(description: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            description,
        )
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }

    pub fn with_extra(mut self, extra: serde_json::Value) -> Self {
        self.extra = Some(extra);
        self
    }
}

impl From<crate::core::Error> for OAuthError {
    fn from(e: crate::core::Error) -> Self {
        use crate::core::{Contention, Error};
        let description = e.to_string();
        match e {
            Error::InvalidRequest(_) | Error::SubjectInactive => Self::invalid_request(description),
            Error::InvalidClient(_) => Self::invalid_client(description),
            Error::UnauthorizedClient(_) => Self::unauthorized_client(description),
            Error::InvalidGrant(_) | Error::RefreshReplayed { .. } => {
                Self::invalid_grant(description)
            }
            Error::InvalidScope(_) => Self::invalid_scope(description),
            Error::InvalidTarget(_) => Self::invalid_target(description),
            Error::TokenInactive => Self::invalid_request(description).with_code("invalid_token"),
            Error::Conflict { version } => Self::new(StatusCode::CONFLICT, "conflict", description)
                .with_extra(json!({ "version": version })),
            Error::Contended(Contention::CustomData) => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                "the custom data is being changed concurrently; retry",
            ),
            Error::Contended(Contention::Scopes) => {
                Self::new(StatusCode::CONFLICT, "invalid_request", description)
            }
            Error::TooLarge(_) => Self::too_large(description),
            Error::Unavailable(why) => {
                tracing::error!(error = %why, "store error");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the token store is unavailable; retry shortly",
                )
            }
        }
    }
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        crate::core::Error::from(e).into()
    }
}

impl From<LookupError> for OAuthError {
    fn from(e: LookupError) -> Self {
        crate::core::Error::from(e).into()
    }
}

/// Headers every token-service JSON answer carries (RFC 6749 §5.1).
pub fn no_store(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.code, "error_description": self.description });
        if let (Some(serde_json::Value::Object(extra)), Some(map)) =
            (self.extra, body.as_object_mut())
        {
            map.extend(extra);
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        no_store(&mut response);
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"refgate\""),
            );
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

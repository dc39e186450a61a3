//! The token response on the wire (RFC 6749 §5.1): what a grant operation
//! of [`crate::core`] returned, as JSON that no cache keeps.

use axum::response::{IntoResponse, Response};

use super::error::no_store;
pub use crate::core::issue::TokenResponse;

impl IntoResponse for TokenResponse {
    fn into_response(self) -> Response {
        let mut response = axum::Json(self).into_response();
        no_store(&mut response);
        response
    }
}

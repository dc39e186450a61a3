//! `GET /healthz` (the process answers) and `GET /readyz` (the store answers).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::TokenService;

pub async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

pub async fn readyz(State(service): State<Arc<TokenService>>) -> Response {
    match service.grants.ping().await {
        Ok(()) => axum::Json(json!({ "status": "ready" })).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: the store does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({ "status": "unavailable", "reason": "store" })),
            )
                .into_response()
        }
    }
}

//! `POST /oauth2/mutate`: reads the request for an RFC 7396 JSON Merge
//! Patch on a grant's custom data ([`crate::core::custom`] applies it).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{no_store, OAuthError};
use super::request::{authenticate, has_media_type, read_body, AuthMethods};
use super::TokenService;
use crate::core::custom::Writer;
use crate::crypto::TokenKind;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MutateRequest {
    token: String,
    patch: Value,
    if_version: Option<i64>,
}

pub async fn handle(State(service): State<Arc<TokenService>>, request: Request<Body>) -> Response {
    match mutate(&service, request).await {
        Ok(version) => {
            let mut response = axum::Json(json!({ "version": version })).into_response();
            no_store(&mut response);
            response
        }
        Err(e) => e.into_response(),
    }
}

async fn mutate(service: &TokenService, request: Request<Body>) -> Result<i64, OAuthError> {
    let config = super::tenant::scope_of(request.extensions(), service).0;
    let headers = request.headers().clone();
    let client = authenticate(
        &config,
        &service.auth_throttle,
        &headers,
        None,
        AuthMethods::BasicOnly,
    )?;
    if !client.mutate {
        return Err(OAuthError::unauthorized_client(format!(
            "client `{}` may not mutate tokens",
            client.id
        ))
        .with_status(StatusCode::FORBIDDEN));
    }
    if !has_media_type(&headers, "application/json") {
        return Err(OAuthError::invalid_request(
            "the body must be application/json",
        ));
    }
    // Room for a patch as large as the cap plus the envelope.
    let limit = config.tokens.custom_data_max * 2 + 4096;
    let (_, body) = read_body(request, limit).await?;
    let request: MutateRequest = serde_json::from_slice(&body).map_err(|e| {
        OAuthError::invalid_request(format!(
            "the body must be {{\"token\", \"patch\", \"if_version\"?}}: {e}"
        ))
    })?;
    if !request.patch.is_object() {
        return Err(OAuthError::invalid_request("patch must be a JSON object"));
    }
    let active = service
        .lookup
        .find_active(&config.tenant, &request.token)
        .await?
        .filter(|t| t.token.kind == TokenKind::Access)
        .ok_or(crate::core::Error::TokenInactive)?;
    let version = crate::core::custom::patch(
        &service.grants,
        &config,
        &active.grant.id,
        &request.patch,
        request.if_version,
        Writer::Client,
    )
    .await?;
    let mut paths = Vec::new();
    if let Value::Object(members) = &request.patch {
        for (key, value) in members {
            patched_paths(key, value, &mut String::new(), &mut paths);
        }
    }
    paths.sort_unstable();
    service.audit.record(
        "custom_mutated",
        json!({
            "client_id": client.id,
            "sub": &*active.grant.subject,
            "grant_id": &*active.grant.id,
            "version": version,
            "paths": paths,
        }),
    );
    Ok(version)
}

/// The JSON pointers (RFC 6901) a merge patch's member `key` sets or
/// removes: its leaves, never their values.
fn patched_paths(key: &str, value: &Value, prefix: &mut String, paths: &mut Vec<String>) {
    let length = prefix.len();
    prefix.push('/');
    prefix.push_str(&key.replace('~', "~0").replace('/', "~1"));
    match value {
        Value::Object(members) if !members.is_empty() => {
            for (key, value) in members {
                patched_paths(key, value, prefix, paths);
            }
        }
        _ => paths.push(prefix.clone()),
    }
    prefix.truncate(length);
}

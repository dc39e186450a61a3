//! `POST /oauth2/mutate`: an RFC 7396 JSON Merge Patch on a grant's custom
//! data, with optional optimistic concurrency (`if_version`). The merged
//! data is size-capped and sealed before it is stored.

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
use crate::crypto::TokenKind;
use crate::store::{GrantChange, GrantUpdate};

/// Attempts at the compare-and-set when no `if_version` was given. Every
/// lost attempt means another writer won, so this only bounds the wait of an
/// unlucky request under heavy contention on one grant.
const CAS_ATTEMPTS: u32 = 64;
/// Longest pause between two attempts; the pause grows up to it, jittered
/// so that the losers of one round do not collide again in the next.
const CAS_MAX_BACKOFF_MS: u64 = 25;

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
    let config = service.config();
    let headers = request.headers().clone();
    let client = authenticate(&config, &headers, None, AuthMethods::BasicOnly)?;
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
        .find_active(&request.token)
        .await?
        .filter(|t| t.token.kind == TokenKind::Access)
        .ok_or_else(|| {
            OAuthError::invalid_request("the token is not an active access token")
                .with_code("invalid_token")
        })?;
    apply_patch(
        service,
        &active.grant.id,
        &request.patch,
        request.if_version,
        Writer::Client,
    )
    .await
}

/// Who writes custom data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// A client of the mutate endpoint: its credential entries are checked
    /// ([`crate::credential::check_client_write`]).
    Client,
    /// refgate itself (the gateway storing a credential it obtained).
    Refgate,
}

/// Applies a merge patch to a grant's custom data and returns the new
/// version. The gateway stores the credentials it refreshed or obtained
/// this way; no client-facing check applies to what refgate writes itself.
pub async fn patch_custom(
    service: &TokenService,
    grant_id: &str,
    patch: &Value,
    if_version: Option<i64>,
) -> Result<i64, OAuthError> {
    apply_patch(service, grant_id, patch, if_version, Writer::Refgate).await
}

async fn apply_patch(
    service: &TokenService,
    grant_id: &str,
    patch: &Value,
    if_version: Option<i64>,
    writer: Writer,
) -> Result<i64, OAuthError> {
    let max = service.config().tokens.custom_data_max;
    let store = service.lookup.store();
    let gone = || {
        OAuthError::invalid_request("the token is not an active access token")
            .with_code("invalid_token")
    };
    for attempt in 0..CAS_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(backoff(attempt)).await;
        }
        let Some(record) = store.find_grant(grant_id).await? else {
            return Err(gone());
        };
        if record.revoked {
            return Err(gone());
        }
        if let Some(expected) = if_version {
            if expected != record.version {
                return Err(conflict(record.version));
            }
        }
        let version = record.version;
        let Ok(before) = service.lookup.open_custom(&record) else {
            // Unreadable custom data (logged): the grant counts as inactive.
            return Err(gone());
        };
        let mut merged = Value::Object(before.clone());
        json_patch::merge(&mut merged, patch);
        let Value::Object(merged) = merged else {
            return Err(OAuthError::invalid_request("patch must be a JSON object"));
        };
        if writer == Writer::Client {
            let config = service.config();
            crate::credential::check_client_write(patch, &before, &merged, |a| {
                config.authorities.contains_key(a)
            })
            .map_err(|e| OAuthError::invalid_request(e.to_string()))?;
        }
        let size = serde_json::to_vec(&merged).map_or(usize::MAX, |v| v.len());
        if size > max {
            return Err(OAuthError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                format!("custom data would be {size} bytes; the limit is {max}"),
            ));
        }
        let change = GrantChange {
            // Sealed for the version this write gives the grant.
            custom_sealed: Some(service.lookup.seal_custom(grant_id, version + 1, &merged)),
            ..GrantChange::default()
        };
        match store.update_grant(grant_id, version, &change).await? {
            GrantUpdate::Updated(new_version) => {
                service.notify_grant_changed(grant_id).await;
                return Ok(new_version);
            }
            GrantUpdate::Conflict(current) if if_version.is_some() => {
                return Err(conflict(current))
            }
            GrantUpdate::Conflict(_) => continue,
            GrantUpdate::Gone => return Err(gone()),
        }
    }
    Err(OAuthError::new(
        StatusCode::CONFLICT,
        "conflict",
        "the custom data is being changed concurrently; retry",
    ))
}

/// A random pause of up to `2^attempt` ms, capped at [`CAS_MAX_BACKOFF_MS`].
fn backoff(attempt: u32) -> std::time::Duration {
    use std::hash::{BuildHasher, Hasher};
    let ceiling = (1u64 << attempt.min(16)).min(CAS_MAX_BACKOFF_MS);
    // Jitter only: RandomState's per-instance keys are random enough.
    let noise = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    std::time::Duration::from_micros(noise % (ceiling * 1000 + 1))
}

fn conflict(current: i64) -> OAuthError {
    OAuthError::new(
        StatusCode::CONFLICT,
        "conflict",
        format!("if_version does not match; the current version is {current}"),
    )
    .with_extra(json!({ "version": current }))
}

//! The admin API, on its own listener (`[listen] admin`, never the proxy's
//! or the token service's port): grants by subject or client, one grant,
//! and revocation of a grant, a subject or a client. Callers authenticate
//! with HTTP Basic as a client with `admin = true`; anything else is 401.
//! Answers show metadata only — never a token, a secret or a custom value
//! (a stored credential appears as its authority, expiry and whether it
//! needs consent again).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::{no_store, OAuthError};
use super::request::{authenticate, AuthMethods};
use super::TokenService;
use crate::lookup::now;
use crate::store::{GrantRecord, GrantsOf, Owner, UnixTime};

/// Grants a page holds unless the caller asks for fewer.
const PAGE: u32 = 50;
/// Most grants a page may hold.
const MAX_PAGE: u32 = 500;

/// The admin API's routes.
pub fn router(service: Arc<TokenService>) -> Router {
    Router::new()
        .route("/admin/grants", get(list))
        .route("/admin/grants/{id}", get(show).delete(delete))
        .route("/admin/revoke", post(revoke))
        .fallback(|| async { not_found("no such admin endpoint") })
        .layer(axum::middleware::from_fn(super::guard::request_id))
        .with_state(service)
}

/// The calling client's id, if it is an admin.
fn admin(service: &TokenService, headers: &HeaderMap) -> Result<String, OAuthError> {
    let config = service.config();
    let client = authenticate(
        &config,
        &service.auth_throttle,
        headers,
        None,
        AuthMethods::BasicOnly,
    )?;
    if !client.admin {
        return Err(OAuthError::invalid_client(format!(
            "client `{}` may not use the admin API",
            client.id
        )));
    }
    Ok(client.id.clone())
}

fn answer(status: StatusCode, body: Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    no_store(&mut response);
    response
}

fn not_found(what: &str) -> Response {
    OAuthError::new(StatusCode::NOT_FOUND, "not_found", what).into_response()
}

#[derive(Deserialize)]
struct ListQuery {
    /// A `[[tenants]]` name (absent: the top level).
    tenant: Option<String>,
    subject: Option<String>,
    client_id: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// `tenant` of an admin request, if the configuration has it (absent:
/// the top level, "").
fn known_tenant(service: &TokenService, tenant: Option<String>) -> Result<String, OAuthError> {
    match tenant {
        None => Ok(String::new()),
        Some(name) if service.config().tenants.contains_key(&name) => Ok(name),
        Some(name) => Err(OAuthError::invalid_request(format!("no tenant `{name}`"))),
    }
}

async fn list(
    State(service): State<Arc<TokenService>>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(e) = admin(&service, &headers) {
        return e.into_response();
    }
    let Ok(Query(query)) = query else {
        return OAuthError::invalid_request("the query is not subject, client_id, limit, cursor")
            .into_response();
    };
    let tenant = match known_tenant(&service, query.tenant) {
        Ok(tenant) => tenant,
        Err(e) => return e.into_response(),
    };
    let owner = match (query.subject, query.client_id) {
        (Some(subject), None) => GrantsOf::subject(&tenant, subject),
        (None, Some(client)) => GrantsOf::client(&tenant, client),
        _ => {
            return OAuthError::invalid_request("give exactly one of subject and client_id")
                .into_response()
        }
    };
    let limit = query.limit.unwrap_or(PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return OAuthError::invalid_request(format!("limit must be between 1 and {MAX_PAGE}"))
            .into_response();
    }
    let before = match query.cursor.as_deref().map(parse_cursor) {
        None => None,
        Some(Some(cursor)) => Some(cursor),
        Some(None) => return OAuthError::invalid_request("not a cursor").into_response(),
    };
    // One more than the page: whether there is a next one.
    let mut records = match service
        .grants
        .list(&owner, before.as_ref(), limit + 1)
        .await
    {
        Ok(records) => records,
        Err(e) => return OAuthError::from(e).into_response(),
    };
    let next = (records.len() > limit as usize).then(|| {
        records.truncate(limit as usize);
        records.last().map(|r| cursor(r.created_at, &r.id))
    });
    let mut grants = Vec::with_capacity(records.len());
    for record in &records {
        match describe(&service, record).await {
            Ok(grant) => grants.push(grant),
            Err(e) => return e.into_response(),
        }
    }
    answer(
        StatusCode::OK,
        json!({ "grants": grants, "next_cursor": next.flatten() }),
    )
}

async fn show(
    State(service): State<Arc<TokenService>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(e) = admin(&service, &headers) {
        return e.into_response();
    }
    match service.grants.find_grant(&id).await {
        Ok(Some(record)) => match describe(&service, &record).await {
            Ok(grant) => answer(StatusCode::OK, grant),
            Err(e) => e.into_response(),
        },
        Ok(None) => not_found("no such grant"),
        Err(e) => OAuthError::from(e).into_response(),
    }
}

async fn delete(
    State(service): State<Arc<TokenService>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let caller = match admin(&service, &headers) {
        Ok(caller) => caller,
        Err(e) => return e.into_response(),
    };
    match service.grants.find_grant(&id).await {
        Ok(Some(_)) => {}
        Ok(None) => return not_found("no such grant"),
        Err(e) => return OAuthError::from(e).into_response(),
    }
    match service.grants.revoke_grant(&id).await {
        Ok(revoked) => {
            tracing::info!(grants = revoked.len(), "admin revoked a grant");
            service.audit.record(
                "admin_action",
                json!({
                    "client_id": caller,
                    "action": "revoke_grant",
                    "grant_id": id,
                    "grants": revoked.len(),
                }),
            );
            let mut response = StatusCode::NO_CONTENT.into_response();
            no_store(&mut response);
            response
        }
        Err(e) => OAuthError::from(e).into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    /// A `[[tenants]]` name (absent: the top level).
    tenant: Option<String>,
    subject: Option<String>,
    client_id: Option<String>,
}

async fn revoke(
    State(service): State<Arc<TokenService>>,
    headers: HeaderMap,
    body: Result<axum::Json<RevokeBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let caller = match admin(&service, &headers) {
        Ok(caller) => caller,
        Err(e) => return e.into_response(),
    };
    let Ok(axum::Json(body)) = body else {
        return OAuthError::invalid_request(
            "the body must be JSON with exactly one of subject and client_id",
        )
        .into_response();
    };
    let tenant = match known_tenant(&service, body.tenant) {
        Ok(tenant) => tenant,
        Err(e) => return e.into_response(),
    };
    let owner = match (body.subject, body.client_id) {
        (Some(subject), None) => GrantsOf::subject(&tenant, subject),
        (None, Some(client)) => GrantsOf::client(&tenant, client),
        _ => {
            return OAuthError::invalid_request("give exactly one of subject and client_id")
                .into_response()
        }
    };
    match service.grants.revoke_all(&owner).await {
        Ok(revoked) => {
            tracing::info!(grants = revoked, "admin revoked grants");
            let mut members = json!({
                "client_id": caller,
                "grants": revoked,
            });
            if !owner.tenant.is_empty() {
                members["tenant"] = owner.tenant.clone().into();
            }
            match &owner.owner {
                Owner::Subject(subject) => {
                    members["action"] = "revoke_subject".into();
                    members["sub"] = subject.clone().into();
                }
                Owner::Client(client) => {
                    members["action"] = "revoke_client".into();
                    members["target_client_id"] = client.clone().into();
                }
            }
            service.audit.record("admin_action", members);
            answer(StatusCode::OK, json!({ "revoked": revoked }))
        }
        Err(e) => OAuthError::from(e).into_response(),
    }
}

/// A grant as the admin API shows it.
async fn describe(service: &TokenService, record: &GrantRecord) -> Result<Value, OAuthError> {
    let expires_at = if record.revoked {
        None
    } else {
        service.grants.grant_expiry(&record.id, now()).await?
    };
    let credentials = match service.grants.open_custom(record) {
        Ok(custom) => credentials(&custom),
        // Unreadable custom data (logged where it is opened) shows as
        // unknown rather than failing the listing.
        Err(_) => Value::Null,
    };
    let mut grant = json!({
        "id": record.id,
        "client_id": record.client_id,
        "sub": record.subject,
        "scope": record.scopes.join(" "),
        "created_at": record.created_at,
        "expires_at": expires_at,
        "version": record.version,
        "revoked": record.revoked,
        "credentials": credentials,
    });
    if !record.audience.is_empty() {
        grant["aud"] = json!(record.audience);
    }
    if let Some(actor) = &record.actor {
        grant["act"] = actor.clone();
    }
    if !record.tenant.is_empty() {
        grant["tenant"] = json!(record.tenant);
    }
    Ok(grant)
}

/// `custom.credentials` reduced to what an operator may see: per name, the
/// authority, the expiry and whether consent is needed again.
fn credentials(custom: &Map<String, Value>) -> Value {
    let mut out = Map::new();
    if let Some(Value::Object(stored)) = custom.get("credentials") {
        for (name, credential) in stored {
            out.insert(
                name.clone(),
                json!({
                    "authority": credential.get("authority").and_then(Value::as_str),
                    "expires_at": credential.get("expires_at").and_then(Value::as_i64),
                    "reauth_required": credential
                        .get("reauth_required")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                }),
            );
        }
    }
    Value::Object(out)
}

/// The position after a grant, opaque to callers.
fn cursor(created_at: UnixTime, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{created_at}.{id}"))
}

fn parse_cursor(text: &str) -> Option<(UnixTime, String)> {
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (at, id) = text.split_once('.')?;
    Some((at.parse().ok()?, id.to_string()))
}

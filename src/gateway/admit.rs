//! Per-request admission (SPEC 4.1 steps 1–4): match the route, take the
//! bearer token, look it up, check scopes, and pick a usable credential.
//! On the hot path (cached token, fresh credential) this touches no store,
//! allocates little and logs nothing.

use std::sync::Arc;

use pingora::http::RequestHeader;
use pingora::proxy::Session;

use super::bearer::{self, Bearer};
use super::errors::GatewayError;
use super::proxy::{Gateway, RequestCtx};
use super::refresh::Need;
use super::routing::route_path;
use crate::config::RouteAccess;
use crate::credential::Credential;
use crate::crypto::{hash_token, token_kind, TokenKind};
use crate::lookup::now;

pub async fn admit(
    gateway: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<(), GatewayError> {
    let state = gateway.state.load_full();
    let request = session.req_header();
    let host = request_host(request)?;
    let path =
        route_path(request.uri.path()).map_err(|e| GatewayError::BadRequest(e.describe()))?;
    let entry = state
        .routes
        .find(host, &path)
        .ok_or(GatewayError::NoRoute)?
        .clone();
    ctx.route = Some(entry.clone());
    let route = &entry.route;
    if let RouteAccess::Public = route.access {
        return Ok(());
    }

    let token = match bearer::extract(request) {
        Bearer::Token(t) => t,
        Bearer::Missing => return Err(GatewayError::MissingToken),
        Bearer::Malformed(why) => return Err(GatewayError::Malformed(why)),
    };
    if token_kind(token) != Some(TokenKind::Access) {
        return Err(GatewayError::InvalidToken);
    }
    let (found, hit) = gateway
        .lookup
        .find_active_counted(hash_token(token))
        .await
        .map_err(|e| {
            tracing::warn!(request_id = %ctx.request_id, error = %e, "token lookup failed");
            GatewayError::StoreUnavailable
        })?;
    gateway
        .metrics
        .cache
        .with_label_values(&[route.name.as_str(), if hit { "hit" } else { "miss" }])
        .inc();
    let active = found
        .filter(|t| t.token.kind == TokenKind::Access)
        .ok_or(GatewayError::InvalidToken)?;
    if !route.required_scopes.iter().all(|s| active.has_scope(s)) {
        return Err(GatewayError::InsufficientScope(
            route.required_scopes.join(" "),
        ));
    }

    let skew = state.config.gateway.refresh_skew.as_secs() as i64;
    let grant_id = active.grant.id.as_str();
    let (name, credential): (&str, Arc<Credential>) = match &route.access {
        RouteAccess::Credential(name) => {
            let stored = active
                .grant
                .credentials
                .get(name)
                .cloned()
                .ok_or_else(|| GatewayError::CredentialMissing(name.clone()))?;
            if stored.reauth_required() {
                return Err(GatewayError::ReauthRequired(name.clone()));
            }
            let fresh = if stored.needs_refresh(now(), skew) {
                gateway
                    .refresher
                    .refresh(state.clone(), grant_id, name, Need::Expiring)
                    .await?
            } else {
                stored
            };
            (name, fresh)
        }
        RouteAccess::Exchange(exchange) => {
            let name = route.name.as_str();
            let stored = active.grant.credentials.get(name).cloned();
            let fresh = match stored {
                Some(c) if !c.needs_refresh(now(), skew) && c.header.is_some() => c,
                Some(c) if c.stored.refresh_token.is_some() => {
                    gateway
                        .refresher
                        .refresh(state.clone(), grant_id, name, Need::Expiring)
                        .await?
                }
                _ => {
                    gateway
                        .refresher
                        .exchange(state.clone(), grant_id, name, exchange, token)
                        .await?
                }
            };
            (name, fresh)
        }
        RouteAccess::Public => return Ok(()),
    };
    if credential.header.is_none() {
        return Err(GatewayError::CredentialInvalid(name.to_string()));
    }
    ctx.grant_id = Some(active.grant.id.clone());
    ctx.credential_name = Some(name.to_string());
    ctx.credential = Some(credential);
    ctx.state = Some(state);
    // Keeps up to 64 KiB of the body so a 401 can be replayed once.
    session.enable_retry_buffering();
    Ok(())
}

/// The host a request is for: its `Host` header, else the URI's authority
/// (HTTP/2's `:authority`). pingora has already refused a request whose
/// `Host` disagrees with its URI or that has two; this refuses a `Host` that
/// is not a host at all, and an HTTP/1.1 request without one (RFC 9112
/// §3.2), rather than routing either to the host-less routes.
fn request_host(request: &RequestHeader) -> Result<Option<&str>, GatewayError> {
    let Some(value) = request.headers.get(http::header::HOST) else {
        if request.version == http::Version::HTTP_11 && request.uri.authority().is_none() {
            return Err(GatewayError::BadRequest(
                "an HTTP/1.1 request needs a Host header",
            ));
        }
        return Ok(request.uri.host());
    };
    match value.to_str() {
        Ok("") => Ok(request.uri.host()),
        Ok(host) if is_authority(host) => Ok(Some(host)),
        _ => Err(GatewayError::BadRequest(
            "the Host header is not a valid host[:port]",
        )),
    }
}

/// `host[:port]` as RFC 3986 has it, without userinfo.
fn is_authority(text: &str) -> bool {
    let Ok(authority) = text.parse::<http::uri::Authority>() else {
        return false;
    };
    let port_ok = match text.rsplit_once(':') {
        Some((_, port)) if !text.ends_with(']') => {
            port.is_empty() || port.bytes().all(|b| b.is_ascii_digit())
        }
        _ => true,
    };
    port_ok && !authority.host().is_empty() && !text.contains('@')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        for good in [
            "api.example.com",
            "API.example.com:8080",
            "127.0.0.1:80",
            "[::1]:8080",
            "[::1]",
            "a_b.example",
        ] {
            assert!(is_authority(good), "{good}");
        }
        for bad in [
            "api example.com",
            "a@b",
            "host:port",
            "a:1:2",
            ":80",
            "a/b",
            "a\\b",
            "a\"b",
        ] {
            assert!(!is_authority(bad), "{bad}");
        }
    }
}

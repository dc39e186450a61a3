//! Per-request admission (SPEC 4.1 steps 1–4): match the route, take the
//! bearer token, look it up, check scopes, and pick a usable credential.
//! On the hot path (cached token, fresh credential) this touches no store,
//! allocates little and logs nothing.

use std::sync::Arc;

use pingora::http::RequestHeader;
use pingora::proxy::Session;
use tracing::Instrument;

use super::bearer::{self, Bearer};
use super::errors::GatewayError;
use super::proxy::{Gateway, RequestCtx};
use super::refresh::Need;
use super::routing::{route_path, upstream_target, PathError};
use crate::config::RouteAccess;
use crate::core::exchange::Lineage;
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
    if request.method == http::Method::CONNECT {
        return Err(GatewayError::BadRequest(
            "CONNECT is not served: this is a gateway, not a forward proxy",
        ));
    }
    // On every route, public ones too: a token in a URL ends up in logs
    // and caches along the way (RFC 6750 §2.3).
    if bearer::query_has_token(request.uri.query()) {
        return Err(GatewayError::Malformed(
            "tokens are accepted in the Authorization header only",
        ));
    }
    let host = request_host(request)?;
    let bad_path = |e: PathError| GatewayError::BadRequest(e.describe());
    let path = route_path(request.uri.path()).map_err(bad_path)?;
    let entry = state
        .routes
        .find(host, &path)
        .map_err(bad_path)?
        .ok_or(GatewayError::NoRoute)?
        .clone();
    ctx.upstream_target = upstream_target(&entry.route, &path, request.uri.query());
    ctx.client_host = host.map(str::to_string);
    ctx.route = Some(entry.clone());
    let route = &entry.route;
    if let RouteAccess::Public = route.access {
        // Callers of a public route are not told apart: they share one
        // bucket.
        return rate_limit(&entry, gateway, "", &ctx.request_id);
    }

    let token = match bearer::extract(request) {
        Bearer::Token(t) => t,
        Bearer::Missing => return Err(GatewayError::MissingToken),
        Bearer::Malformed(why) => return Err(GatewayError::Malformed(why)),
    };
    if token_kind(token) != Some(TokenKind::Access) {
        return Err(GatewayError::InvalidToken);
    }
    let lookup = crate::traces::token_lookup();
    let (found, hit) = gateway
        .lookup
        .find_active_counted(&route.tenant, hash_token(&route.tenant, token))
        .instrument(lookup.clone())
        .await
        .map_err(|e| {
            tracing::warn!(request_id = %ctx.request_id, error = %e, "token lookup failed");
            GatewayError::StoreUnavailable
        })?;
    lookup.record("cache", if hit { "hit" } else { "miss" });
    let counted = entry.metrics(&gateway.metrics);
    if hit {
        counted.cache_hit.inc();
    } else {
        counted.cache_miss.inc();
    }
    let active = found
        .filter(|t| t.token.kind == TokenKind::Access)
        .ok_or(GatewayError::InvalidToken)?;
    rate_limit(&entry, gateway, &active.grant.client_id, &ctx.request_id)?;
    if !route.required_scopes.iter().all(|s| active.has_scope(s)) {
        return Err(GatewayError::InsufficientScope(
            route.required_scopes.join(" "),
        ));
    }
    check_destination(route, &active.grant)?;

    // The route's tenant: its issuer, its authorities.
    let tenant = state
        .config
        .tenant(&route.tenant)
        .ok_or(GatewayError::InvalidToken)?;
    if let RouteAccess::Jwt = route.access {
        let issuer = &tenant.issuer;
        let header = gateway
            .phantom
            .authorization(&active, route, issuer, &ctx.request_id)?;
        ctx.phantom = Some(header);
        ctx.grant = Some(active.grant);
        ctx.state = Some(state);
        return Ok(());
    }

    let skew = state.config.gateway.refresh_skew.as_secs() as i64;
    let grant_id = &*active.grant.id;
    let (name, credential): (&str, Arc<Credential>) = match &route.access {
        RouteAccess::Credential(name) => {
            let stored = active
                .grant
                .credentials
                .get(name)
                .cloned()
                .ok_or_else(|| GatewayError::CredentialMissing(name.clone()))?;
            // Custom data is written by clients: only a credential of a
            // configured authority is ever sent or refreshed.
            let configured = stored
                .authority()
                .is_some_and(|a| tenant.authorities.contains_key(a));
            if !configured {
                tracing::warn!(
                    request_id = %ctx.request_id,
                    credential = %crate::telemetry::Untrusted(name),
                    authority = %crate::telemetry::Untrusted(stored.authority().unwrap_or_default()),
                    "the credential names no configured authority; it is not used"
                );
                return Err(GatewayError::CredentialInvalid(name.clone()));
            }
            if stored.reauth_required() {
                return Err(GatewayError::ReauthRequired(name.clone()));
            }
            let fresh = if stored.needs_refresh(now(), skew) {
                gateway
                    .refresher
                    .refresh(
                        state.clone(),
                        &active.grant,
                        name,
                        Need::Expiring,
                        &ctx.request_id,
                    )
                    .await?
            } else {
                stored
            };
            (name, fresh)
        }
        RouteAccess::Exchange(exchange) => {
            let name = route.name.as_str();
            let stored = active.grant.credentials.get(name).cloned();
            if stored.as_ref().is_some_and(|c| !c.is_own()) {
                tracing::warn!(
                    request_id = %ctx.request_id,
                    credential = %name,
                    "an exchange route's credential was not obtained by refgate; it is not used"
                );
                return Err(GatewayError::CredentialInvalid(name.to_string()));
            }
            let fresh = match stored {
                Some(c) if !c.needs_refresh(now(), skew) && c.is_sendable() => {
                    if own_credential_alive(gateway, &c, &active.grant, name, exchange).await? {
                        c
                    } else {
                        // Its grant ended early: renew it now.
                        gateway
                            .refresher
                            .refresh(
                                state.clone(),
                                &active.grant,
                                name,
                                Need::Rejected { sent: c },
                                &ctx.request_id,
                            )
                            .await?
                    }
                }
                Some(c) if c.refreshable() => {
                    gateway
                        .refresher
                        .refresh(
                            state.clone(),
                            &active.grant,
                            name,
                            Need::Expiring,
                            &ctx.request_id,
                        )
                        .await?
                }
                _ => {
                    gateway
                        .refresher
                        .exchange(state.clone(), grant_id, name, exchange, &ctx.request_id)
                        .await?
                }
            };
            (name, fresh)
        }
        RouteAccess::ExternalExchange(exchange) => {
            let name = route.name.as_str();
            let stored = active.grant.credentials.get(name).cloned();
            if stored.as_ref().is_some_and(|c| !c.is_exchanged()) {
                // Custom data is written by clients: only what refgate's own
                // exchange at the route's authority obtained is used.
                tracing::warn!(
                    request_id = %ctx.request_id,
                    credential = %name,
                    "an external exchange route's credential was not obtained by refgate; it is not used"
                );
                return Err(GatewayError::CredentialInvalid(name.to_string()));
            }
            // One exchanged at another authority (the route changed since)
            // is replaced by a new exchange.
            let fresh = match stored.filter(|c| c.exchanged_at(&exchange.authority)) {
                Some(c) if c.reauth_required() => {
                    return Err(GatewayError::ReauthRequired(name.to_string()))
                }
                Some(c) if !c.needs_refresh(now(), skew) && c.is_sendable() => c,
                _ => {
                    gateway
                        .refresher
                        .exchange_external(state.clone(), grant_id, name, exchange, &ctx.request_id)
                        .await?
                }
            };
            (name, fresh)
        }
        RouteAccess::Public | RouteAccess::Jwt => return Ok(()),
    };
    if !credential.is_sendable() {
        return Err(GatewayError::CredentialInvalid(name.to_string()));
    }
    ctx.grant = Some(active.grant);
    ctx.credential = Some(credential);
    ctx.state = Some(state);
    // Keeps up to 64 KiB of the body so a 401 can be replayed once.
    session.enable_retry_buffering();
    Ok(())
}

/// Refuses an active token that is not meant for `route`: one whose `aud`
/// lacks the route's `audience`, and one the gateway minted for another
/// route's upstream (a transparent exchange's token is for that upstream
/// only, whatever else it would pass).
fn check_destination(
    route: &crate::config::Route,
    grant: &crate::lookup::Grant,
) -> Result<(), GatewayError> {
    if let Some(minted_for) = grant.route() {
        if minted_for != route.name {
            return Err(GatewayError::NotForThisRoute(format!(
                "the token was issued by the gateway for route `{minted_for}`, not `{}`",
                route.name
            )));
        }
    }
    if let Some(audience) = &route.audience {
        let aud = grant.audience();
        if !aud.is_empty() && !aud.iter().any(|a| a == audience) {
            return Err(GatewayError::NotForThisRoute(format!(
                "the token's audience does not include `{audience}`, the audience of this route"
            )));
        }
    }
    Ok(())
}

/// Whether a stored credential of an exchange route is a live token of a
/// grant that this route's exchange made for `caller`. A dead one (its
/// grant ended) is `false`, to be renewed; one that belongs elsewhere is
/// never sent.
async fn own_credential_alive(
    gateway: &Gateway,
    credential: &Credential,
    caller: &crate::lookup::Grant,
    route_name: &str,
    exchange: &crate::config::RouteExchange,
) -> Result<bool, GatewayError> {
    let invalid = || GatewayError::CredentialInvalid(route_name.to_string());
    let token = credential.access_token().ok_or_else(invalid)?;
    if token_kind(token) != Some(TokenKind::Access) {
        return Err(invalid());
    }
    let found = gateway
        .lookup
        .find_active_hash(caller.tenant(), hash_token(caller.tenant(), token))
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "token lookup failed");
            GatewayError::StoreUnavailable
        })?;
    let Some(own) = found else {
        return Ok(false);
    };
    if !Lineage::of_grant(&own.grant).made_for(caller, &exchange.client, route_name) {
        tracing::warn!(
            credential = %route_name,
            "an exchange route's credential belongs to another grant; it is not used"
        );
        return Err(invalid());
    }
    Ok(true)
}

/// The name of the credential a route forwards with: the one it names, or
/// for a transparent on-behalf-of route, the route's own.
pub fn credential_name(route: &crate::config::Route) -> Option<&str> {
    match &route.access {
        RouteAccess::Credential(name) => Some(name),
        RouteAccess::Exchange(_) | RouteAccess::ExternalExchange(_) => Some(&route.name),
        RouteAccess::Public | RouteAccess::Jwt => None,
    }
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

/// `host[:port]` as RFC 3986 has it (an IP literal in brackets or a
/// reg-name), without userinfo. Checked by hand: it runs on every request,
/// and parsing an `http::uri::Authority` would copy the value.
fn is_authority(text: &str) -> bool {
    let (host_ok, port) = match text.strip_prefix('[') {
        Some(rest) => {
            let Some((literal, after)) = rest.split_once(']') else {
                return false;
            };
            let literal_ok = !literal.is_empty()
                && literal
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
            match after {
                "" => (literal_ok, ""),
                _ => match after.strip_prefix(':') {
                    Some(port) => (literal_ok, port),
                    None => return false,
                },
            }
        }
        None => {
            let (host, port) = text.split_once(':').unwrap_or((text, ""));
            let reg_name = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b);
            (!host.is_empty() && host.bytes().all(reg_name), port)
        }
    };
    host_ok && port.bytes().all(|b| b.is_ascii_digit())
}

/// The route's rate limit for the calling client.
fn rate_limit(
    entry: &super::RouteEntry,
    gateway: &Gateway,
    client: &str,
    request_id: &str,
) -> Result<(), GatewayError> {
    let Some(limit) = &entry.limit else {
        return Ok(());
    };
    let route = entry.route.name.as_str();
    limit.check(client).map_err(|wait| {
        gateway
            .metrics
            .rate_limited
            .with_label_values(&["route", route])
            .inc();
        // `client` is the id of a live grant's client ("" on a public
        // route), never a string the caller chose.
        gateway.refresher.audit().record(
            "rate_limited",
            serde_json::json!({
                "request_id": request_id,
                "client_id": (!client.is_empty()).then_some(client),
                "limit": "route",
                "route": route,
            }),
        );
        GatewayError::RateLimited(wait.as_secs_f64().ceil().max(1.0) as u64)
    })
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
            "[::ffff:10.0.0.1]:443",
            "a_b.example",
            "host:",
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
            "[::1",
            "[]:80",
            "[::1]x",
            "[::1]:8o",
            "[g::1]",
            "",
        ] {
            assert!(!is_authority(bad), "{bad}");
        }
    }
}

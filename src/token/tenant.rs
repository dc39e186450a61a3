//! Tenants on the token service. A request for `/{name}/…`, where `name`
//! is a `[[tenants]]` entry, is served as a request for `/…` with that
//! tenant's configuration; RFC 8414's
//! `/.well-known/oauth-authorization-server/{name}` is its metadata too.
//! Every request carries its configuration, taken once when it arrives
//! ([`Scope`]): the top level's, or its tenant's. A first segment that names
//! no tenant is left alone, so an unknown tenant meets the 404 of an
//! unknown path.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::Uri;
use axum::middleware::Next;
use axum::response::Response;

use super::TokenService;
use crate::config::Config;

/// RFC 8414 §3.1: the metadata of an issuer with a path is here, the path
/// appended.
const METADATA: &str = "/.well-known/oauth-authorization-server";

/// The configuration a request is served with, start to end.
#[derive(Clone)]
pub struct Scope(pub Arc<Config>);

impl FromRequestParts<Arc<TokenService>> for Scope {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        service: &Arc<TokenService>,
    ) -> Result<Self, Self::Rejection> {
        Ok(scope_of(&parts.extensions, service))
    }
}

/// The request's configuration ([`resolve`] put it there; the top level's
/// when the request did not pass through it).
pub fn scope_of(extensions: &axum::http::Extensions, service: &TokenService) -> Scope {
    extensions
        .get::<Scope>()
        .cloned()
        .unwrap_or_else(|| Scope(service.config()))
}

/// Gives the request its configuration and, for a tenant, the path its
/// endpoint has at the top level.
pub async fn resolve(
    State(service): State<Arc<TokenService>>,
    mut request: Request,
    next: Next,
) -> Response {
    let top = service.config();
    let path = request.uri().path();
    let found = tenant_of(path).and_then(|(name, rest)| {
        let config = top.tenants.get(name)?.clone();
        Some((config, rest.to_string()))
    });
    let scope = match found {
        Some((config, rest)) => {
            if let Some(uri) = with_path(request.uri(), &rest) {
                *request.uri_mut() = uri;
            }
            config
        }
        None => top,
    };
    request.extensions_mut().insert(Scope(scope));
    next.run(request).await
}

/// The tenant name a path starts with, and the rest of the path: `/{name}/…`
/// or the metadata path with `/{name}` appended.
fn tenant_of(path: &str) -> Option<(&str, &str)> {
    if let Some(name) = path
        .strip_prefix(METADATA)
        .and_then(|rest| rest.strip_prefix('/'))
    {
        return (!name.is_empty() && !name.contains('/')).then_some((name, METADATA));
    }
    let rest = path.strip_prefix('/')?;
    let slash = rest.find('/')?;
    Some((&rest[..slash], &rest[slash..]))
}

/// `uri` with its path replaced by `path` (the query kept).
fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_is_the_first_segment_or_the_metadata_suffix() {
        assert_eq!(
            tenant_of("/acme/oauth2/token"),
            Some(("acme", "/oauth2/token"))
        );
        assert_eq!(
            tenant_of("/.well-known/oauth-authorization-server/acme"),
            Some(("acme", METADATA))
        );
        assert_eq!(
            tenant_of("/acme/.well-known/oauth-authorization-server"),
            Some(("acme", METADATA))
        );
        assert_eq!(
            tenant_of("/.well-known/oauth-authorization-server/a/b"),
            None
        );
        assert_eq!(tenant_of("/healthz"), None);
        assert_eq!(tenant_of("/"), None);
    }

    #[test]
    fn the_query_survives_the_new_path() {
        let uri: Uri = "/acme/connect/callback?code=1&state=2".parse().unwrap();
        let uri = with_path(&uri, "/connect/callback").unwrap();
        assert_eq!(uri.to_string(), "/connect/callback?code=1&state=2");
    }
}

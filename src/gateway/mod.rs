//! The gateway: a pingora proxy that swaps an inbound reference token for
//! the downstream credential stored in its grant (SPEC 4).
//!
//! - `proxy`: the thin `ProxyHttp` hooks;
//! - `admit`: per-request checks — route, bearer token, lookup, scopes,
//!   credential (SPEC 4.1);
//! - `phantom`: the signed JWTs of `forward = "jwt"` routes, cached;
//! - `refresh`: credential refresh and transparent OBO exchange (4.2, 4.4),
//!   refgate's own token service called through [`crate::core`];
//! - `routing`, `bearer`, `upstream`: route matching, token extraction,
//!   upstream peers; `errors`: the one mapping of failures to responses (4.5);
//!   `text`: per-request values written without `fmt`;
//! - `listener`: HTTP/1.x or h2c, decided by a connection's first bytes;
//!   `watched`: the deadlines between requests on an HTTP/1 connection.

mod admit;
mod bearer;
mod errors;
mod listener;
mod phantom;
mod proxy;
mod refresh;
mod routing;
mod text;
mod upstream;
mod watched;

use std::sync::Arc;

use crate::config::Config;
use crate::dns::Dns;

pub use errors::GatewayError;
pub use listener::{ProxyListener, TlsArrivals};
pub use phantom::PhantomTokens;
pub use proxy::{Drain, Gateway};
pub use refresh::authority_client::{AuthorityClient, ClientAuthError};
pub use refresh::Refresher;
pub use routing::route_path;
use routing::{RouteEntry, RouteTable};
pub use watched::HeadLimits;

/// One generation of the configuration, prepared: routes ordered for
/// matching, upstream peers built. The token service reads its
/// configuration from the same generation ([`crate::reload::Live`]), and a
/// reload replaces it whole.
pub struct GatewayState {
    pub config: Arc<Config>,
    routes: RouteTable,
    /// Resolves upstream host names (shared across reloads: its answers
    /// stay cached).
    pub dns: Arc<Dns>,
    /// Rate limits of this generation (token endpoint and routes).
    pub limits: crate::limits::Limits,
}

impl GatewayState {
    /// Prepares a configuration; fails if an upstream's CA file is unusable.
    pub fn build(config: Arc<Config>, dns: Arc<Dns>) -> Result<Self, String> {
        let mut entries = Vec::with_capacity(config.routes.len());
        for route in &config.routes {
            let peer = upstream::peer_for(route, &config.gateway)
                .map_err(|e| format!("route `{}`: {e}", route.name))?;
            entries.push(Arc::new(RouteEntry::new(route.clone(), peer)));
        }
        Ok(GatewayState {
            limits: crate::limits::Limits::build(&config),
            routes: RouteTable::new(entries),
            config,
            dns,
        })
    }

    pub fn route_count(&self) -> usize {
        self.routes.len()
    }
}

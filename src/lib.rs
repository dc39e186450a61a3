//! refgate: a reverse-proxy gateway with an integrated OAuth 2.0 token
//! service for opaque *reference* tokens.
//!
//! Apps hold an opaque access token (`rgat_…`). A middle tier stores, inside
//! that token's grant ("custom mutate"), the credentials it obtained for
//! downstream services. The gateway takes the inbound token, looks it up,
//! swaps in the downstream credential and forwards the request, refreshing
//! the credential when it is about to expire.
//!
//! The request path and the module map:
//!
//! - [`config`]: the TOML file, validated into [`config::Config`];
//! - [`core`]: the grant operations (issue, refresh, exchange, re-scope,
//!   custom data) and the rules that hold everywhere (refresh rotation,
//!   version check), with one typed error; every write goes through
//!   [`core::Grants`], which drops the cached lookups it affects. No HTTP
//!   types: the token service and the gateway are its adapters;
//! - [`store`]: the [`store::Store`] trait and the row mapping both
//!   backends share, SQLite (embedded; `store/sqlite/`: readers, writer
//!   thread, queries) and PostgreSQL (shared by several instances) —
//!   grants and token hashes, custom data sealed;
//! - [`crypto`]: token generation and hashing, secret checks, sealing with
//!   the data keys (current and previous);
//! - [`lookup`]: token lookups through the token cache (one compact entry
//!   per token: its state and a view of its grant), shared by introspection
//!   and the gateway; opening and sealing grants' custom data, and sealing
//!   it again with the current data key;
//! - [`signing`]: refgate's signing keys: made, sealed in the store,
//!   rotated on the `[signing]` schedule, published as a JWKS;
//! - [`token`]: the token service's HTTP endpoints (axum), one file per
//!   endpoint and grant; they read requests, call [`core`] and write its
//!   errors as RFC 6749 responses;
//! - [`gateway`]: the pingora proxy — admission, credential refresh
//!   (`gateway/refresh/`), OBO through [`core`];
//! - [`credential`]: downstream credentials stored in custom data;
//! - [`reload`]: configuration reload on SIGHUP and file change;
//! - [`dns`]: upstream and authority host names, resolved while serving
//!   and re-resolved on their records' TTL;
//! - [`listeners`]: the sockets, bound from `[listen]` or inherited;
//! - [`app`]: wiring: open the store, serve on the listeners it is given
//!   ([`app::run`]), run until shutdown;
//! - [`connections`]: per listener, the connection limit and the deadline
//!   to a first request head;
//! - [`limits`]: request rate limits per client and per route;
//! - [`telemetry`]: logging and Prometheus metrics;
//! - [`traces`]: OpenTelemetry spans, W3C trace propagation and the OTLP
//!   export (`[telemetry] otlp_endpoint`);
//! - [`audit`]: the audit trail, one JSON line per security event.

pub mod app;
pub mod audit;
pub mod config;
pub mod connections;
pub mod core;
pub mod credential;
pub mod crypto;
pub mod discovery;
pub mod dns;
pub mod gateway;
pub mod limits;
pub mod listeners;
pub mod lookup;
pub mod reload;
pub mod signing;
pub mod store;
pub mod telemetry;
pub mod token;
pub mod traces;

pub use app::run;

//! refgate's integration tests, in one test binary (one link of pingora
//! instead of one per file). Each module is one suite, named for what it
//! covers; run one with `cargo test --test it <module>::`. Shared harness:
//! [`common`] (the refgate process, the PostgreSQL databases, the upstream,
//! the downstream authority, raw HTTP).

mod common;

mod admin;
mod at_rest;
mod audit;
mod auth_throttle;
mod bench_scripts;
mod cli;
mod cluster;
mod connect_browser;
mod connect_flow;
mod custom_mutate;
mod data_keys;
mod deb_package;
mod deploy;
mod device_flow;
mod dns;
mod exchange;
mod external_exchange;
mod gateway_edge;
mod gateway_errors;
mod gateway_hostile;
mod gateway_obo;
mod gateway_ops;
mod gateway_refresh;
mod gateway_routing;
mod gateway_tls;
mod hostile_input;
mod in_process;
mod introspection_revocation;
mod layering;
mod mutate_grant;
mod phantom_routes;
mod postgres_store;
mod refresh;
mod restart;
mod signed_tokens;
mod signing;
mod smoke;
mod sqlite_store;
mod subject_revocation;
mod tenants;
mod token_grants;
mod tracing;
mod trust_boundaries;
mod upstream_answers;
mod upstream_pool;

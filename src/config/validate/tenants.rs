//! `[[tenants]]`: further issuers served from one deployment. Each tenant
//! is read like the top level (its clients, trusted issuers, authorities
//! and token settings, problems keyed `tenants[i]. …`) and becomes a
//! [`Config`] of its own that shares everything else with the top level.

use super::*;

/// First path segments the token service uses itself: a tenant of that
/// name would hide them.
const RESERVED: &[&str] = &[
    "oauth2",
    ".well-known",
    "connect",
    "healthz",
    "readyz",
    "admin",
    "metrics",
];

/// The longest tenant name.
const NAME_MAX: usize = 32;

/// One tenant as read, before it becomes a [`Config`].
pub(super) struct TenantParts {
    pub name: String,
    issuer: String,
    tokens: TokenSettings,
    pub clients: HashMap<String, Arc<Client>>,
    trusted_issuers: Vec<Arc<TrustedIssuer>>,
    pub authorities: HashMap<String, Arc<Authority>>,
    connect: Option<ConnectSettings>,
}

/// Whether `name` can name a tenant: 1 to 32 of `a-z`, `0-9` and `-`,
/// starting with a letter or digit.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

pub(super) fn read(
    c: &mut Checker<'_>,
    file: &file::File,
    top_issuer: &str,
    top_connect: Option<&ConnectSettings>,
) -> Vec<TenantParts> {
    let mut out = Vec::new();
    let mut names = HashSet::new();
    let mut issuers = HashSet::from([top_issuer.to_string()]);
    for (i, t) in file.tenants.iter().enumerate() {
        c.prefix = format!("tenants[{i}].");
        c.tenant = t.name.clone();
        if !valid_name(&t.name) {
            c.report(
                "name",
                format!(
                    "{:?} is not a tenant name: 1 to {NAME_MAX} of a-z, 0-9 and '-', not starting with '-'",
                    t.name
                ),
            );
        } else if RESERVED.contains(&t.name.as_str()) {
            c.report(
                "name",
                format!("`{}` is a path of the token service itself", t.name),
            );
        } else if !names.insert(t.name.clone()) {
            c.report("name", format!("tenant `{}` is defined twice", t.name));
        }
        if c.http_url("issuer", &t.issuer).is_some() && !issuers.insert(t.issuer.clone()) {
            c.report(
                "issuer",
                format!(
                    "`{}` is already the issuer of the top level or another tenant",
                    t.issuer
                ),
            );
        }
        let tokens = token_settings(c, &t.tokens.inheriting(&file.tokens));
        let clients = clients(c, &t.clients, &tokens);
        let trusted_issuers = trusted_issuers(c, &t.trusted_issuers);
        check_exchange_sources(c, &t.clients, &clients, &trusted_issuers);
        let authorities = authorities(c, &t.authorities);
        // The top level's [connect], read once, serves the tenant too.
        connect::check_connectable(c, &authorities, file.connect.is_some());
        let connect = top_connect.map(|s| connect::for_tenant(s, &t.name));
        out.push(TenantParts {
            name: t.name.clone(),
            issuer: t.issuer.clone(),
            tokens,
            clients,
            trusted_issuers,
            authorities,
            connect,
        });
    }
    c.prefix.clear();
    c.tenant.clear();
    out
}

/// The top level with its tenants attached, each a [`Config`] sharing the
/// listeners, store, gateway, signing and telemetry settings and the routes.
pub(super) fn attach(mut top: Config, parts: Vec<TenantParts>) -> Config {
    for t in parts {
        let config = Config {
            source: top.source.clone(),
            issuer: t.issuer,
            listen: top.listen.clone(),
            store: top.store.clone(),
            tokens: t.tokens,
            gateway: top.gateway.clone(),
            signing: top.signing.clone(),
            audit_log: top.audit_log.clone(),
            tracing: top.tracing.clone(),
            clients: t.clients,
            trusted_issuers: t.trusted_issuers,
            authorities: t.authorities,
            routes: top
                .routes
                .iter()
                .filter(|r| r.tenant == t.name)
                .cloned()
                .collect(),
            connect: t.connect,
            tenant: t.name.clone(),
            tenants: HashMap::new(),
        };
        top.tenants.insert(t.name, Arc::new(config));
    }
    top
}

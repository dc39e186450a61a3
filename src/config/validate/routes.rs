//! `[[routes]]`: paths, hosts, upstreams, credentials and exchanges,
//! checked against the clients and authorities.

use super::*;

/// Each tenant's clients and authorities, by tenant name (empty: the top
/// level's).
pub(super) type Parties<'a> = HashMap<
    String,
    (
        &'a HashMap<String, Arc<Client>>,
        &'a HashMap<String, Arc<Authority>>,
    ),
>;

pub(super) fn routes(
    c: &mut Checker<'_>,
    list: &[file::Route],
    parties: &Parties<'_>,
) -> Vec<Arc<Route>> {
    let mut out = Vec::new();
    let mut names = HashSet::new();
    let empty_clients = HashMap::new();
    let empty_authorities = HashMap::new();
    for (i, f) in list.iter().enumerate() {
        let key = |k: &str| format!("routes[{i}].{k}");
        // A route's exchange client and authorities are its tenant's.
        let tenant = f.tenant.clone().unwrap_or_default();
        let (clients, authorities) = match parties.get(&tenant) {
            Some(p) if f.tenant.as_deref() != Some("") => *p,
            _ => {
                c.report(
                    key("tenant"),
                    format!(
                        "no [[tenants]] entry named `{tenant}` (leave tenant out for the top level)"
                    ),
                );
                (&empty_clients, &empty_authorities)
            }
        };
        if c.word(&key("name"), &f.name) && !names.insert(f.name.clone()) {
            c.report(
                key("name"),
                format!("route name `{}` is used twice", f.name),
            );
        }
        if !f.path_prefix.starts_with('/') {
            c.report(key("path_prefix"), "must start with '/'");
        } else if c.word(&key("path_prefix"), &f.path_prefix) {
            // A prefix is matched against request paths in their routing
            // form; one that is not in that form can never match.
            match crate::gateway::route_path(&f.path_prefix) {
                Ok(p) if p == f.path_prefix => {}
                Ok(p) => c.report(
                    key("path_prefix"),
                    format!(
                        "write it as `{p}` (percent-encoded letters, digits and -._~ are decoded)"
                    ),
                ),
                Err(e) => c.report(key("path_prefix"), e.describe()),
            }
        }
        for (j, s) in f.required_scopes.iter().enumerate() {
            if !valid_scope_token(s) {
                c.report(
                    format!("routes[{i}].required_scopes[{j}]"),
                    format!("{s:?} is not a valid scope"),
                );
            }
        }
        let host = f.host.as_deref().map(|h| {
            c.word(&key("host"), h);
            let h = h.to_ascii_lowercase();
            match h.strip_prefix("*.") {
                Some(rest) if !rest.is_empty() && !rest.contains('*') => {
                    HostPattern::Subdomains(format!(".{rest}"))
                }
                _ if h.contains('*') || h.is_empty() => {
                    c.report(key("host"), "must be a host name or \"*.domain\"");
                    HostPattern::Exact(h)
                }
                _ => HostPattern::Exact(h),
            }
        });
        let upstream = upstream(c, &key("upstream"), &f.upstream);
        let public = match f.auth.as_deref() {
            None | Some("token") => false,
            Some("none") => true,
            Some(other) => {
                c.report(
                    key("auth"),
                    format!("`{other}` must be \"none\" or \"token\""),
                );
                false
            }
        };
        let jwt = match f.forward.as_deref() {
            None => false,
            Some("jwt") => true,
            Some(other) => {
                c.report(
                    key("forward"),
                    format!("`{other}` is not a forwarding mode: the one there is, is \"jwt\""),
                );
                false
            }
        };
        let access = match (public, &f.credential, &f.exchange) {
            _ if jwt => {
                if public || f.credential.is_some() || f.exchange.is_some() {
                    c.report(
                        key("forward"),
                        "a phantom-token route (forward = \"jwt\") takes no credential, \
                         exchange or auth = \"none\"",
                    );
                }
                RouteAccess::Jwt
            }
            (true, None, None) => RouteAccess::Public,
            (true, _, _) => {
                c.report(
                    key("auth"),
                    "a public route (auth = \"none\") takes no credential or exchange",
                );
                RouteAccess::Public
            }
            (false, Some(name), None) => {
                c.word(&key("credential"), name);
                RouteAccess::Credential(name.clone())
            }
            (false, None, Some(x)) if x.authority.is_some() || x.client.is_none() => {
                external_exchange(c, i, x, authorities, &tenant)
            }
            (false, None, Some(x)) => {
                let client = x.client.clone().unwrap_or_default();
                for (member, set) in [
                    ("grant", x.grant.is_some()),
                    ("scope", x.scope.is_some()),
                    ("resource", x.resource.is_some()),
                ] {
                    if set {
                        c.report(
                            key(&format!("exchange.{member}")),
                            "belongs to an exchange at an external authority (exchange.authority); \
                             an exchange at refgate (exchange.client) takes scopes and audience",
                        );
                    }
                }
                match clients.get(&client) {
                    Some(cl) if cl.may_use(GrantType::TokenExchange) => {
                        for (j, s) in x.scopes.iter().enumerate() {
                            if !cl.has_scope(s) {
                                c.report(
                                    format!("routes[{i}].exchange.scopes[{j}]"),
                                    format!("client `{}` may not obtain scope `{s}`", client),
                                );
                            }
                        }
                        let mut uncovered: Vec<&str> = clients
                            .values()
                            .filter(|other| {
                                f.required_scopes.iter().all(|s| other.has_scope(s))
                                    && !cl.exchange_from.allows_client(&cl.id, &other.id)
                            })
                            .map(|other| other.id.as_str())
                            .collect();
                        uncovered.sort_unstable();
                        if !uncovered.is_empty() {
                            c.report(
                                key("exchange.client"),
                                format!(
                                    "tokens of {} can reach this route, but client `{}` may not \
                                     exchange them: add them (or \"*\") to its exchange_from",
                                    uncovered
                                        .iter()
                                        .map(|id| format!("`{id}`"))
                                        .collect::<Vec<_>>()
                                        .join(", "),
                                    client
                                ),
                            );
                        }
                    }
                    Some(_) => c.report(
                        key("exchange.client"),
                        format!("client `{}` lacks the token-exchange grant type", client),
                    ),
                    None => c.report(
                        key("exchange.client"),
                        format!("no [[clients]] entry `{}`", client),
                    ),
                }
                RouteAccess::Exchange(RouteExchange {
                    tenant: tenant.clone(),
                    client: client.clone(),
                    scopes: x.scopes.clone(),
                    audience: x.audience.clone(),
                })
            }
            (false, _, _) => {
                c.report(
                    format!("routes[{i}]"),
                    "set exactly one of credential, [routes.exchange] or forward = \"jwt\" \
                     (or auth = \"none\")",
                );
                RouteAccess::Public
            }
        };
        let ca_file = f
            .ca_file
            .as_deref()
            .map(|p| c.certificate_file(&key("ca_file"), p));
        if f.audience
            .as_deref()
            .is_some_and(|a| a.trim().is_empty() || a.chars().any(char::is_control))
        {
            c.report(
                key("audience"),
                "must be a non-empty audience without control characters",
            );
        }
        if public && f.audience.is_some() {
            c.report(
                key("audience"),
                "a public route (auth = \"none\") checks no token",
            );
        }
        if let Some(upstream) = upstream {
            out.push(Arc::new(Route {
                name: f.name.clone(),
                path_prefix: f.path_prefix.clone(),
                host,
                upstream,
                strip_prefix: f.strip_prefix,
                required_scopes: f.required_scopes.clone(),
                access,
                ca_file,
                audience: f.audience.clone(),
                preserve_host: f.preserve_host,
                rate_limit: c.rate_limit(key, f.rate_limit.as_deref(), f.rate_limit_burst),
                tenant,
            }));
        }
    }
    out
}

pub(super) fn upstream(c: &mut Checker<'_>, key: &str, value: &str) -> Option<Upstream> {
    let url = c.http_url(key, value)?;
    if url.path() != "/" || url.query().is_some() {
        c.report(key, "an upstream is scheme://host[:port] with no path");
        return None;
    }
    warn_plain_http(&url, key);
    let host = url.host_str()?.trim_matches(['[', ']']).to_string();
    let port = url.port_or_known_default()?;
    // A literal address is used as it is; a name is resolved while serving
    // (never here: it may not resolve yet, and resolving blocks).
    let addr = host
        .parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, port));
    Some(Upstream {
        tls: url.scheme() == "https",
        host,
        port,
        addr,
    })
}

/// `[routes.exchange]` with `authority`: an exchange of the inbound
/// grant's kept subject token at that authority.
fn external_exchange(
    c: &mut Checker<'_>,
    i: usize,
    x: &file::RouteExchange,
    authorities: &HashMap<String, Arc<Authority>>,
    tenant: &str,
) -> RouteAccess {
    let key = |k: &str| format!("routes[{i}].exchange.{k}");
    let authority = match (&x.authority, &x.client) {
        (Some(_), Some(_)) => {
            c.report(
                key("client"),
                "set either client (an exchange at refgate) or authority (an exchange at an \
                 external authority), not both",
            );
            x.authority.clone().unwrap_or_default()
        }
        (Some(a), None) => {
            if !authorities.contains_key(a) {
                c.report(key("authority"), format!("no [[authorities]] entry `{a}`"));
            }
            a.clone()
        }
        (None, _) => {
            c.report(
                format!("routes[{i}].exchange"),
                "set client (an exchange at refgate) or authority (an exchange at an external \
                 authority)",
            );
            String::new()
        }
    };
    let grant = match x.grant.as_deref() {
        Some("token-exchange") => ExternalGrant::TokenExchange,
        Some("jwt-bearer") => ExternalGrant::JwtBearer,
        Some(other) => {
            c.report(
                key("grant"),
                format!("`{other}` is neither \"token-exchange\" nor \"jwt-bearer\""),
            );
            ExternalGrant::TokenExchange
        }
        None => {
            c.report(
                key("grant"),
                "an exchange at an authority names its grant: \"token-exchange\" or \"jwt-bearer\"",
            );
            ExternalGrant::TokenExchange
        }
    };
    if !x.scopes.is_empty() {
        c.report(
            key("scopes"),
            "an exchange at an authority asks for `scope` (one space-separated string)",
        );
    }
    if let Some(scope) = &x.scope {
        if scope.split(' ').any(|s| !valid_scope_token(s)) {
            c.report(
                key("scope"),
                format!("{scope:?} is not a valid scope string"),
            );
        }
    } else if grant == ExternalGrant::JwtBearer {
        c.report(
            key("scope"),
            "an on-behalf-of request (jwt-bearer) needs a scope",
        );
    }
    if grant == ExternalGrant::JwtBearer {
        for (member, set) in [
            ("audience", x.audience.is_some()),
            ("resource", x.resource.is_some()),
        ] {
            if set {
                c.report(
                    key(member),
                    "an on-behalf-of request (jwt-bearer) names its target in scope",
                );
            }
        }
    }
    if let Some(audience) = &x.audience {
        c.word(&key("audience"), audience);
    }
    if let Some(resource) = &x.resource {
        let valid = url::Url::parse(resource).is_ok_and(|u| u.fragment().is_none());
        if !valid {
            c.report(
                key("resource"),
                format!("`{resource}` is not an absolute URI without a fragment"),
            );
        }
    }
    RouteAccess::ExternalExchange(ExternalExchange {
        tenant: tenant.to_string(),
        authority,
        grant,
        scope: x.scope.clone(),
        audience: x.audience.clone(),
        resource: x.resource.clone(),
    })
}

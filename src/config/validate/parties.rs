//! Who refgate deals with: clients (with what they may exchange from),
//! trusted issuers and downstream authorities.

use super::*;

/// A scope token as RFC 6749 §3.3 allows it.
pub(super) fn valid_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

pub(super) fn clients(
    c: &mut Checker<'_>,
    list: &[file::Client],
    tokens: &TokenSettings,
) -> HashMap<String, Arc<Client>> {
    let mut out = HashMap::new();
    for (i, f) in list.iter().enumerate() {
        let key = |k: &str| format!("clients[{i}].{k}");
        if c.word(&key("id"), &f.id) && f.id.contains(':') {
            c.report(key("id"), "must not contain ':'");
        }
        let secret = SecretHash::parse(&f.secret_hash).unwrap_or_else(|| {
            c.report(
                key("secret_hash"),
                "must be \"sha256:\" followed by 64 hex digits (see `refgate secret hash`)",
            );
            SecretHash::unmatchable()
        });
        let mut grant_types = HashSet::new();
        for (j, g) in f.grant_types.iter().enumerate() {
            match GrantType::parse(g) {
                Some(g) => {
                    grant_types.insert(g);
                }
                None => c.report(
                    format!("clients[{i}].grant_types[{j}]"),
                    format!("unknown grant type `{g}`"),
                ),
            }
        }
        for (j, s) in f.scopes.iter().enumerate() {
            if !valid_scope_token(s) {
                c.report(
                    format!("clients[{i}].scopes[{j}]"),
                    format!("`{s}` is not a valid scope"),
                );
            }
        }
        if !f.allowed_issuers.is_empty()
            && !grant_types.contains(&GrantType::ArbitraryToken)
            && !grant_types.contains(&GrantType::ArbitraryIdentity)
        {
            c.report(
                key("allowed_issuers"),
                "only matters with the arbitrary_token or arbitrary_identity grant type",
            );
        }
        if grant_types.contains(&GrantType::DeviceCode) && tokens.device_verification_uri.is_none()
        {
            c.report(
                key("grant_types"),
                "the device_code grant needs [tokens] device_verification_uri",
            );
        }
        let access_token_ttl = c.duration(
            &key("access_token_ttl"),
            f.access_token_ttl.as_ref(),
            tokens.access_token_ttl,
        );
        let refresh_token_ttl = c.duration(
            &key("refresh_token_ttl"),
            f.refresh_token_ttl.as_ref(),
            tokens.refresh_token_ttl,
        );
        let mut exchange_from = ExchangeFrom::default();
        for entry in f.exchange_from.iter().flatten() {
            if entry == "*" {
                exchange_from.any_client = true;
            } else if entry.contains("://") {
                exchange_from.issuers.push(entry.clone());
            } else {
                exchange_from.clients.push(entry.clone());
            }
        }
        if f.exchange_from.is_some()
            && !grant_types.contains(&GrantType::TokenExchange)
            && !f.device_approve
        {
            c.report(
                key("exchange_from"),
                "only matters with the token-exchange grant type or device_approve",
            );
        }
        let client = Client {
            id: f.id.clone(),
            tenant: c.tenant.clone(),
            secret,
            grant_types,
            scopes: f.scopes.clone(),
            introspect: f.introspect,
            reveal_custom: f.reveal_custom,
            mutate: f.mutate,
            revoke_subject: f.revoke_subject,
            admin: f.admin,
            allowed_issuers: f.allowed_issuers.clone(),
            audiences: f.audiences.clone(),
            exchange_from,
            access_token_ttl,
            refresh_token_ttl,
            rate_limit: c.rate_limit(key, f.rate_limit.as_deref(), f.rate_limit_burst),
            device_approve: f.device_approve,
        };
        if out.insert(f.id.clone(), Arc::new(client)).is_some() {
            c.report(key("id"), format!("client `{}` is defined twice", f.id));
        }
    }
    out
}

/// Every `exchange_from` entry names a configured client or trusted issuer:
/// a typo would silently refuse every exchange it was meant to allow.
pub(super) fn check_exchange_sources(
    c: &mut Checker<'_>,
    list: &[file::Client],
    clients: &HashMap<String, Arc<Client>>,
    issuers: &[Arc<TrustedIssuer>],
) {
    for (i, f) in list.iter().enumerate() {
        for (j, entry) in f.exchange_from.iter().flatten().enumerate() {
            if entry.contains("://") {
                // Allowed but inert until the issuer is trusted: an issuer
                // may be taken out of [[trusted_issuers]] for a while.
                if !issuers.iter().any(|t| t.issuer == *entry) {
                    tracing::warn!(
                        key = %format!("clients[{i}].exchange_from[{j}]"),
                        issuer = %entry,
                        "exchange_from names an issuer that is not in [[trusted_issuers]]"
                    );
                }
                continue;
            }
            if entry != "*" && !clients.contains_key(entry) {
                c.report(
                    format!("clients[{i}].exchange_from[{j}]"),
                    format!("`{entry}` is neither \"*\", a [[clients]] id nor an issuer URL"),
                );
            }
        }
    }
}

pub(super) fn trusted_issuers(
    c: &mut Checker<'_>,
    list: &[file::TrustedIssuer],
) -> Vec<Arc<TrustedIssuer>> {
    let mut out = Vec::new();
    for (i, f) in list.iter().enumerate() {
        let key = |k: &str| format!("trusted_issuers[{i}].{k}");
        let jwks = match (&f.jwks_uri, &f.jwks_file) {
            (Some(uri), None) => {
                if let Some(u) = c.http_url(&key("jwks_uri"), uri) {
                    warn_plain_http(&u, &key("jwks_uri"));
                }
                JwksSource::Uri(uri.clone())
            }
            (None, Some(file)) => JwksSource::File(c.existing_file(&key("jwks_file"), file)),
            _ => {
                c.report(
                    format!("trusted_issuers[{i}]"),
                    "set exactly one of jwks_uri or jwks_file",
                );
                continue;
            }
        };
        if f.audiences.is_empty() {
            c.report(key("audiences"), "list at least one accepted audience");
        }
        if f.issuer.is_empty() {
            c.report(key("issuer"), "must not be empty");
        }
        out.push(Arc::new(TrustedIssuer {
            issuer: f.issuer.clone(),
            jwks,
            audiences: f.audiences.clone(),
            keep_subject_token: f.keep_subject_token,
        }));
    }
    out
}

pub(super) fn warn_plain_http(url: &url::Url, key: &str) {
    let loopback = match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    if url.scheme() == "http" && !loopback {
        tracing::warn!(key, host = %url.host_str().unwrap_or(""), "plain http:// to a host that is not loopback");
    }
}

pub(super) fn authorities(
    c: &mut Checker<'_>,
    list: &[file::Authority],
) -> HashMap<String, Arc<Authority>> {
    let mut out = HashMap::new();
    for (i, f) in list.iter().enumerate() {
        let key = |k: &str| format!("authorities[{i}].{k}");
        if f.name == "self" {
            c.report(
                key("name"),
                "`self` is reserved for refgate's own token service",
            );
        }
        c.word(&key("name"), &f.name);
        c.word(&key("client_id"), &f.client_id);
        match (&f.token_endpoint, &f.issuer) {
            (Some(endpoint), _) => {
                if let Some(u) = c.http_url(&key("token_endpoint"), endpoint) {
                    warn_plain_http(&u, &key("token_endpoint"));
                }
            }
            (None, Some(_)) => {}
            (None, None) => c.report(
                format!("authorities[{i}]"),
                "set token_endpoint, or issuer to take it from the authority's discovery document",
            ),
        }
        for (name, value) in [
            ("issuer", &f.issuer),
            ("authorization_endpoint", &f.authorization_endpoint),
        ] {
            if let Some(u) = value.as_deref().and_then(|v| c.http_url(&key(name), v)) {
                warn_plain_http(&u, &key(name));
            }
        }
        if let Some(i) = f.issuer.as_deref() {
            if i.contains(['?', '#']) {
                c.report(key("issuer"), "an issuer has no query or fragment");
            }
        }
        for (j, scope) in f.scopes.iter().enumerate() {
            c.word(&format!("authorities[{i}].scopes[{j}]"), scope);
        }
        if let Some(name) = &f.connect_credential {
            if c.word(&key("connect_credential"), name)
                && f.authorization_endpoint.is_none()
                && f.issuer.is_none()
            {
                c.report(
                    key("connect_credential"),
                    "a connectable authority needs authorization_endpoint, or issuer for discovery",
                );
            }
        }
        let auth_method = match f.auth_method.as_deref() {
            None | Some("client_secret_basic") => AuthMethod::ClientSecretBasic,
            Some("client_secret_post") => AuthMethod::ClientSecretPost,
            Some("private_key_jwt") => AuthMethod::PrivateKeyJwt,
            Some(other) => {
                c.report(
                    key("auth_method"),
                    format!(
                        "`{other}` is not client_secret_basic, client_secret_post or private_key_jwt"
                    ),
                );
                AuthMethod::ClientSecretBasic
            }
        };
        let secret = match (&f.client_secret, &f.client_secret_env) {
            _ if auth_method == AuthMethod::PrivateKeyJwt => {
                if f.client_secret.is_some() || f.client_secret_env.is_some() {
                    c.report(
                        format!("authorities[{i}]"),
                        "private_key_jwt signs its requests: drop client_secret and \
                         client_secret_env",
                    );
                }
                None
            }
            (Some(s), None) => Some(s.clone()),
            (None, Some(name)) => c.env_secret(&key("client_secret_env"), name),
            _ => {
                c.report(
                    format!("authorities[{i}]"),
                    "set exactly one of client_secret or client_secret_env",
                );
                None
            }
        };
        let client_key = match &f.private_key_file {
            Some(_) if auth_method != AuthMethod::PrivateKeyJwt => {
                c.report(
                    key("private_key_file"),
                    "only auth_method = \"private_key_jwt\" signs with a key",
                );
                None
            }
            Some(file) => match ClientKey::read(&c.path(file)) {
                Ok(k) => Some(Arc::new(k)),
                Err(e) => {
                    c.report(key("private_key_file"), e);
                    None
                }
            },
            None => None,
        };
        let authority = Authority {
            name: f.name.clone(),
            tenant: c.tenant.clone(),
            token_endpoint: f.token_endpoint.clone().unwrap_or_default(),
            client_id: f.client_id.clone(),
            client_secret: Secret::new(secret.unwrap_or_default()),
            auth_method,
            issuer: f.issuer.clone(),
            authorization_endpoint: f.authorization_endpoint.clone(),
            scopes: f.scopes.clone(),
            connect_credential: f.connect_credential.clone(),
            client_key,
        };
        if out.insert(f.name.clone(), Arc::new(authority)).is_some() {
            c.report(
                key("name"),
                format!("authority `{}` is defined twice", f.name),
            );
        }
    }
    out
}

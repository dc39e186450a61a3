//! `[connect]` and the authorities a connect flow can use.

use super::*;

/// The path `[connect] redirect_uri` must end with: the token service's
/// callback, wherever it is published.
const CALLBACK_PATH: &str = "/connect/callback";

pub(super) fn settings(
    c: &mut Checker<'_>,
    file: Option<&file::Connect>,
    authorities: &HashMap<String, Arc<Authority>>,
) -> Option<ConnectSettings> {
    check_connectable(c, authorities, file.is_some());
    let file = file?;
    let redirect = c.http_url("connect.redirect_uri", &file.redirect_uri)?;
    if !redirect.path().ends_with(CALLBACK_PATH)
        || redirect.query().is_some()
        || redirect.fragment().is_some()
    {
        c.report(
            "connect.redirect_uri",
            format!("must be refgate's callback: a URL whose path ends with {CALLBACK_PATH}, without query or fragment"),
        );
        return None;
    }
    let base = &file.redirect_uri[..file.redirect_uri.len() - CALLBACK_PATH.len()];
    let mut return_to = Vec::new();
    for (i, entry) in file.return_to.iter().enumerate() {
        let key = format!("connect.return_to[{i}]");
        let Some(url) = c.http_url(&key, entry) else {
            continue;
        };
        // An entry must reach at least the first `/` of the path: a bare
        // origin prefix would also match `https://app.example.evil.test`.
        let origin = url.origin().ascii_serialization();
        if !entry.starts_with(&format!("{origin}/"))
            || url.username() != ""
            || url.password().is_some()
            || url.fragment().is_some()
        {
            c.report(
                key,
                "must be an absolute URL with a path (\"https://app.example/done\"), no user info or fragment",
            );
            continue;
        }
        return_to.push(url.to_string());
    }
    let ttl = c.duration("connect.ttl", file.ttl.as_ref(), Duration::from_secs(600));
    if ttl < Duration::from_secs(30) || ttl > Duration::from_secs(3600) {
        c.report("connect.ttl", "must be between 30s and 1h");
    }
    Some(ConnectSettings {
        redirect_uri: file.redirect_uri.clone(),
        connect_endpoint: format!("{base}/oauth2/connect"),
        start_uri: format!("{base}/connect/start"),
        return_to,
        ttl,
    })
}

/// The connectable ones among `authorities`: one per credential, and only
/// with a `[connect]` section (`configured`).
pub(super) fn check_connectable(
    c: &mut Checker<'_>,
    authorities: &HashMap<String, Arc<Authority>>,
    configured: bool,
) {
    let mut filled: HashMap<&str, &str> = HashMap::new();
    for a in authorities.values() {
        if let Some(name) = a.connect_credential.as_deref() {
            if let Some(other) = filled.insert(name, &a.name) {
                c.report(
                    format!("authorities.{}.connect_credential", a.name),
                    format!("authority `{other}` already fills credential `{name}`"),
                );
            }
        }
    }
    if !configured {
        if let Some(a) = authorities
            .values()
            .find(|a| a.connect_credential.is_some())
        {
            c.report(
                format!("authorities.{}.connect_credential", a.name),
                "a connectable authority needs [connect] redirect_uri",
            );
        }
    }
}

/// A tenant's connect settings: the same flow under `/{tenant}/`.
pub(super) fn for_tenant(top: &ConnectSettings, tenant: &str) -> ConnectSettings {
    let base = &top.redirect_uri[..top.redirect_uri.len() - CALLBACK_PATH.len()];
    let base = format!("{base}/{tenant}");
    ConnectSettings {
        redirect_uri: format!("{base}{CALLBACK_PATH}"),
        connect_endpoint: format!("{base}/oauth2/connect"),
        start_uri: format!("{base}/connect/start"),
        ..top.clone()
    }
}

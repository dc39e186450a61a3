//! Transparent on-behalf-of (SPEC 4.4): on a `[routes.exchange]` route the
//! gateway exchanges the inbound token for one made for the upstream,
//! stores it in the inbound grant under `credentials.<route>` with
//! `authority: "self"`, reuses it, and renews it when it expires or the
//! upstream rejects it — by refresh against refgate itself when it holds a
//! refresh token, else by a new exchange.

use crate::common::upstream::Upstream;
use crate::common::*;

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};

/// An exchange route `reports` (prefix `/reports/`) to `upstream`, for
/// `scopes`.
fn reports_route(upstream: &str, scopes: &str) -> String {
    format!(
        r#"[[routes]]
name = "reports"
path_prefix = "/reports/"
upstream = "{upstream}"
required_scopes = ["reports.read"]
[routes.exchange]
client = "gateway"
scopes = [{scopes}]
audience = "reports-api"
"#
    )
}

/// Clients for tests that need a short-lived exchanged token: `app` (the
/// caller), `middle` (introspects and mutates) and `gateway` (the exchange
/// client) whose tokens live `gateway_ttl`. Each secret is `<id>-secret`.
fn short_lived_clients(gateway_ttl: &str) -> String {
    format!(
        r#"[[clients]]
id = "app"
secret_hash = "{app}"
grant_types = ["client_credentials"]
scopes = ["reports.read"]

[[clients]]
id = "middle"
secret_hash = "{middle}"
grant_types = ["client_credentials"]
scopes = ["reports.read"]
introspect = true
reveal_custom = true
mutate = true

[[clients]]
id = "gateway"
secret_hash = "{gateway}"
grant_types = ["urn:ietf:params:oauth:grant-type:token-exchange", "refresh_token"]
scopes = ["reports.read", "offline_access"]
exchange_from = ["app", "middle"]
access_token_ttl = "{gateway_ttl}"
"#,
        app = secret_hash("app-secret"),
        middle = secret_hash("middle-secret"),
        gateway = secret_hash("gateway-secret"),
    )
}

struct Setup {
    upstream: Upstream,
    server: Refgate,
}

impl Setup {
    /// Standard clients and an exchange route for `scopes`.
    async fn start(scopes: &str) -> Self {
        let upstream = Upstream::start().await;
        let server = Refgate::start_with(Options {
            extra: reports_route(&upstream.url(), scopes),
            ..Options::default()
        });
        Setup { upstream, server }
    }

    /// The short-lived clients, an exchange route for `scopes`, `[gateway]`
    /// lines.
    async fn start_short_lived(gateway_ttl: &str, scopes: &str, gateway: &str) -> Self {
        let upstream = Upstream::start().await;
        let server = Refgate::start_with(Options {
            gateway: gateway.into(),
            extra: format!(
                "{}\n{}",
                short_lived_clients(gateway_ttl),
                reports_route(&upstream.url(), scopes)
            ),
            standard_clients: false,
            ..Options::default()
        });
        Setup { upstream, server }
    }

    async fn app_token(&self) -> String {
        let body = self.server.client_token("app", None).await;
        str_of(&body, "access_token").to_string()
    }

    /// `GET` through the proxy; returns the status and the `Authorization`
    /// the upstream received for it.
    async fn get(&self, app: &str, path: &str) -> (StatusCode, Value) {
        let response = http()
            .get(format!("{}{path}", self.server.proxy))
            .bearer_auth(app)
            .send()
            .await
            .expect("request");
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// The token the upstream received in request `index`.
    fn sent_token(&self, index: usize) -> String {
        let requests = self.upstream.requests();
        let authorization = requests
            .get(index)
            .unwrap_or_else(|| panic!("no request {index} at the upstream"))
            .header("authorization")
            .expect("authorization");
        authorization
            .strip_prefix("Bearer ")
            .unwrap_or_else(|| panic!("not a bearer header: {authorization}"))
            .to_string()
    }

    /// The stored `credentials.reports` of the app token's grant.
    async fn stored(&self, app: &str) -> Value {
        self.server.introspect(app).await["custom"]["credentials"]["reports"].clone()
    }
}

/// Asserts `token` is an active exchanged token for `sub` made for the
/// reports upstream.
async fn assert_exchanged_for(server: &Refgate, token: &str, sub: &str) {
    assert!(token.starts_with("rgat_"), "{token}");
    let view = server.introspect(token).await;
    assert_eq!(view["active"], true, "{view}");
    assert_eq!(view["sub"], sub, "{view}");
    assert_eq!(view["aud"], "reports-api", "{view}");
    assert_eq!(view["act"], json!({"sub": "gateway"}), "{view}");
    assert_eq!(view["client_id"], "gateway", "{view}");
    let scopes: Vec<&str> = view["scope"]
        .as_str()
        .unwrap_or_default()
        .split(' ')
        .collect();
    assert!(scopes.contains(&"reports.read"), "{view}");
    assert!(!scopes.contains(&"photos.read"), "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_request_exchanges_and_later_requests_reuse_the_exchanged_token() {
    let setup = Setup::start(r#""reports.read""#).await;
    let app = setup.app_token().await;
    let inbound = setup.server.introspect(&app).await;
    let sub = str_of(&inbound, "sub").to_string();

    let (status, body) = setup.get(&app, "/reports/q1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let exchanged = setup.sent_token(0);
    assert_ne!(exchanged, app, "the inbound token reached the upstream");
    assert_exchanged_for(&setup.server, &exchanged, &sub).await;
    let view = setup.server.introspect(&exchanged).await;
    assert_eq!(view["scope"], "reports.read", "{view}");

    let stored = setup.stored(&app).await;
    assert_eq!(stored["authority"], "self", "{stored}");
    assert_eq!(stored["access_token"], exchanged.as_str());
    assert!(stored["expires_at"].as_i64().expect("expires_at") > unix_now());

    let (status, body) = setup.get(&app, "/reports/q2").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        setup.sent_token(1),
        exchanged,
        "the exchanged token was not reused"
    );
    assert_eq!(setup.stored(&app).await["access_token"], exchanged.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_exchange_once() {
    let setup = Setup::start(r#""reports.read""#).await;
    let app = setup.app_token().await;

    let client = http();
    let requests = (0..20).map(|i| {
        client
            .get(format!("{}/reports/q{i}", setup.server.proxy))
            .bearer_auth(&app)
            .send()
    });
    for response in futures::future::join_all(requests).await {
        assert_eq!(response.expect("request").status(), StatusCode::OK);
    }
    let tokens: HashSet<String> = (0..20).map(|i| setup.sent_token(i)).collect();
    assert_eq!(tokens.len(), 1, "several exchanges: {tokens:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_exchanged_token_without_a_refresh_token_is_exchanged_again() {
    let setup = Setup::start(r#""reports.read""#).await;
    let app = setup.app_token().await;
    let sub = str_of(&setup.server.introspect(&app).await, "sub").to_string();
    let (status, _) = setup.get(&app, "/reports/q").await;
    assert_eq!(status, StatusCode::OK);
    let first = setup.sent_token(0);
    assert!(setup.stored(&app).await.get("refresh_token").is_none());

    // Make it look expired.
    let (status, body) = setup
        .server
        .mutate(&json!({"token": app, "patch": {"credentials": {"reports": {
            "expires_at": unix_now() - 10
        }}}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, body) = setup.get(&app, "/reports/q").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = setup.sent_token(1);
    assert_ne!(second, first, "the expired token was forwarded");
    assert_exchanged_for(&setup.server, &second, &sub).await;
    let stored = setup.stored(&app).await;
    assert_eq!(stored["access_token"], second.as_str());
    assert_eq!(stored["authority"], "self");
    assert!(stored["expires_at"].as_i64().expect("expires_at") > unix_now() + 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_exchanged_token_is_refreshed_against_refgate() {
    // Exchanged tokens live 3 s and are renewed 1 s before they expire.
    let setup = Setup::start_short_lived(
        "3s",
        r#""reports.read", "offline_access""#,
        r#"refresh_skew = "1s""#,
    )
    .await;
    let app = setup.app_token().await;
    let (status, body) = setup.get(&app, "/reports/q").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let first = setup.sent_token(0);
    let stored = setup.stored(&app).await;
    assert_eq!(stored["authority"], "self", "{stored}");
    let first_refresh = stored["refresh_token"]
        .as_str()
        .expect("the exchange gave a refresh token")
        .to_string();
    assert!(first_refresh.starts_with("rgrt_"));
    let first_grant = setup.server.introspect(&first).await;

    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert_eq!(setup.server.introspect(&first).await["active"], false);
    let (status, body) = setup.get(&app, "/reports/q").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = setup.sent_token(1);
    assert_ne!(second, first);
    assert_exchanged_for(&setup.server, &second, "app").await;
    let view = setup.server.introspect(&second).await;
    assert!(view["iat"].as_i64() > first_grant["iat"].as_i64(), "{view}");

    // Refreshed, not exchanged again: the refresh token rotated and the
    // original one is dead.
    let stored = setup.stored(&app).await;
    assert_eq!(stored["access_token"], second.as_str());
    let second_refresh = stored["refresh_token"].as_str().expect("refresh_token");
    assert_ne!(second_refresh, first_refresh);
    assert_eq!(
        setup.server.introspect(&first_refresh).await["active"],
        false
    );
    assert_eq!(
        setup.server.introspect(second_refresh).await["active"],
        true
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchanged_grant_whose_refresh_token_was_revoked_is_exchanged_again() {
    let setup = Setup::start(r#""reports.read", "offline_access""#).await;
    let app = setup.app_token().await;
    let (status, _) = setup.get(&app, "/reports/q").await;
    assert_eq!(status, StatusCode::OK);
    let first = setup.sent_token(0);
    let stored = setup.stored(&app).await;
    let refresh = str_of(&stored, "refresh_token").to_string();

    // Someone revokes the exchanged grant; then it expires.
    let (status, _) = setup
        .server
        .post_form(
            "/oauth2/revoke",
            Some(("gateway", "gateway-secret")),
            &[("token", &refresh)],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(setup.server.introspect(&first).await["active"], false);
    let (status, body) = setup
        .server
        .mutate(&json!({"token": app, "patch": {"credentials": {"reports": {
            "expires_at": unix_now() - 10
        }}}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, body) = setup.get(&app, "/reports/q").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = setup.sent_token(1);
    assert_ne!(second, first);
    assert_exchanged_for(&setup.server, &second, "app").await;
    let stored = setup.stored(&app).await;
    assert_eq!(stored["access_token"], second.as_str());
    assert!(
        stored.get("reauth_required").is_none_or(Value::is_null),
        "{stored}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_401_to_an_exchanged_token_gets_a_new_one_and_replays() {
    let setup = Setup::start(r#""reports.read""#).await;
    let app = setup.app_token().await;
    let (status, _) = setup.get(&app, "/reports/q").await;
    assert_eq!(status, StatusCode::OK);
    let first = setup.sent_token(0);

    // The upstream stops accepting it (say, it keeps a deny list).
    setup.upstream.reject(&format!("Bearer {first}"));

    let (status, body) = setup.get(&app, "/reports/q").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(setup.upstream.requests().len(), 3, "no replay");
    assert_eq!(setup.sent_token(1), first);
    let second = setup.sent_token(2);
    assert_ne!(second, first);
    assert_exchanged_for(&setup.server, &second, "app").await;
    assert_eq!(setup.stored(&app).await["access_token"], second.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchanged_token_revoked_at_refgate_is_renewed_before_it_is_sent() {
    let setup = Setup::start(r#""reports.read""#).await;
    let app = setup.app_token().await;
    let (status, _) = setup.get(&app, "/reports/q").await;
    assert_eq!(status, StatusCode::OK);
    let first = setup.sent_token(0);
    let (status, _) = setup
        .server
        .post_form(
            "/oauth2/revoke",
            Some(("gateway", "gateway-secret")),
            &[("token", &first)],
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = setup.get(&app, "/reports/q").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        setup.upstream.requests().len(),
        2,
        "the revoked token was sent"
    );
    let second = setup.sent_token(1);
    assert_ne!(second, first);
    assert_exchanged_for(&setup.server, &second, "app").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchanged_token_is_a_grant_of_its_own_tied_to_the_callers() {
    let setup = Setup::start(r#""reports.read""#).await;
    let app = setup.app_token().await;
    let (status, body) = setup.get(&app, "/reports/q1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let exchanged = setup.sent_token(0);

    // Its own grant: the caller's custom data (where the gateway keeps the
    // exchanged credential) is not its custom data.
    let caller = setup.server.introspect(&app).await;
    assert!(
        caller["custom"]["credentials"]["reports"].is_object(),
        "{caller}"
    );
    let own = setup.server.introspect(&exchanged).await;
    assert_eq!(own["active"], true, "{own}");
    assert!(
        own["custom"].is_object() && own["version"].is_i64(),
        "{own}"
    );
    assert!(own["custom"]["credentials"].is_null(), "{own}");

    // A change to the caller's grant is no change to it.
    let (status, body) = setup
        .server
        .mutate(&json!({"token": app, "patch": {"note": "the caller's"}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let after = setup.server.introspect(&exchanged).await;
    assert_eq!(after["version"], own["version"], "{after}");
    assert!(after["custom"]["note"].is_null(), "{after}");

    // Revoking it (as its client, the gateway) leaves the caller's grant;
    // the next request gets a new exchanged token.
    let (status, _) = setup
        .server
        .post_form(
            "/oauth2/revoke",
            Some(("gateway", "gateway-secret")),
            &[("token", &exchanged)],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        setup.server.introspect(&exchanged).await,
        json!({"active": false})
    );
    assert_eq!(setup.server.introspect(&app).await["active"], true);
    let (status, body) = setup.get(&app, "/reports/q2").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let renewed = setup.sent_token(1);
    assert_ne!(renewed, exchanged);
    assert_exchanged_for(&setup.server, &renewed, str_of(&caller, "sub")).await;
}

//! Trust boundaries, each tried the way an attacker would: custom data
//! never decides whose refresh token refgate redeems or which authority it
//! talks to; token exchange follows a per-client policy and derived grants
//! end with their source; tokens are admitted only where they were meant
//! to go; a mutate client cannot lend its own scopes; an id_token subject
//! keeps its issuer.

use crate::common::upstream::Upstream;
use crate::common::*;

use serde_json::{json, Value};

/// An exchange route `name` under `/<name>/` to `upstream`, as client
/// `gateway`, minting tokens for audience `<name>-api`; `more` adds lines
/// to the route table (before the exchange table).
fn exchange_route(name: &str, upstream: &str, more: &str) -> String {
    format!(
        r#"[[routes]]
name = "{name}"
path_prefix = "/{name}/"
upstream = "{upstream}"
required_scopes = ["reports.read"]
{more}
[routes.exchange]
client = "gateway"
scopes = ["reports.read", "offline_access"]
audience = "{name}-api"
"#
    )
}

/// `GET` through the proxy with `token`; status and JSON body.
async fn get(server: &Refgate, token: &str, path: &str) -> (StatusCode, Value) {
    let response = http()
        .get(format!("{}{path}", server.proxy))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn exchange(
    server: &Refgate,
    client: &str,
    subject: &str,
    extra: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut params = vec![
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", subject),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
    ];
    params.extend_from_slice(extra);
    server.token(client, &params).await
}

fn assert_refused(status: StatusCode, body: &Value, code: &str, mentions: &str) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], code, "{body}");
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(description.contains(mentions), "{body}");
}

// --- 1. custom data never steers a refresh -----------------------------

#[tokio::test]
async fn mutate_refuses_credentials_refgate_would_not_trust() {
    let server = Refgate::start_with(Options {
        extra: AUTHORITY.into(),
        ..Options::default()
    });
    let (_, app_refresh) = refreshable(&server, "photos.read offline_access").await;
    let mine = server.access_token("middle").await;
    for (credential, member) in [
        // The attack: another client's refresh token, as refgate's own.
        (
            json!({"refresh_token": app_refresh, "access_token": "x", "authority": "self", "expires_at": 1}),
            "credentials.photos.authority",
        ),
        (
            json!({"access_token": "x", "authority": "elsewhere"}),
            "credentials.photos.authority",
        ),
        (json!({"access_token": "x"}), "credentials.photos.authority"),
        (json!("not an object"), "credentials.photos"),
    ] {
        let (status, body) = server
            .mutate(&json!({"token": mine, "patch": {"credentials": {"photos": credential}}}))
            .await;
        assert_refused(status, &body, "invalid_request", member);
    }
    assert_eq!(server.introspect(&mine).await["custom"], json!({}));
    // A credential of a configured authority is fine.
    let (status, body) = server
        .mutate(&json!({"token": mine, "patch": {"credentials": {"photos":
            {"access_token": "x", "authority": "photos-as"}}}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn arbitrary_json_may_not_carry_a_credential_refgate_would_not_trust() {
    let server = Refgate::start_with(Options {
        extra: AUTHORITY.into(),
        ..Options::default()
    });
    let mint = |custom: Value| {
        let server = &server;
        async move {
            server
                .token(
                    "minter",
                    &[
                        ("grant_type", "arbitrary_token"),
                        ("subject", "alice"),
                        ("issuer", "https://idp.example.com"),
                        ("arbitrary_json", &custom.to_string()),
                    ],
                )
                .await
        }
    };
    for authority in ["self", "nowhere"] {
        let (status, body) = mint(json!({"credentials": {"photos":
            {"access_token": "x", "refresh_token": "rgrt_x", "authority": authority}}}))
        .await;
        assert_refused(
            status,
            &body,
            "invalid_request",
            "credentials.photos.authority",
        );
    }
    let (status, body) =
        mint(json!({"credentials": {"photos": {"access_token": "x", "authority": "photos-as"}}}))
            .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_self_credential_keeps_its_tokens_but_its_other_members_may_change() {
    let upstream = Upstream::start().await;
    let server = Refgate::start_with(Options {
        extra: exchange_route("reports", &upstream.url(), ""),
        ..Options::default()
    });
    let app = server.access_token("app").await;
    let (status, _) = get(&server, &app, "/reports/a").await;
    assert_eq!(status, StatusCode::OK);
    let stored = server.introspect(&app).await["custom"]["credentials"]["reports"].clone();
    assert_eq!(stored["authority"], "self", "{stored}");

    for member in ["refresh_token", "access_token"] {
        let (status, body) = server
            .mutate(&json!({"token": app, "patch": {"credentials": {"reports": {member: "rgrt_planted"}}}}))
            .await;
        assert_refused(
            status,
            &body,
            "invalid_request",
            &format!("credentials.reports.{member}"),
        );
    }
    let (status, body) = server
        .mutate(&json!({"token": app, "patch": {"credentials": {"reports": {"expires_at": 1}}}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .mutate(&json!({"token": app, "patch": {"credentials": {"reports": null}}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_forged_self_credential_in_stored_data_is_never_redeemed() {
    let upstream = Upstream::start().await;
    let server = Refgate::start_with(Options {
        extra: format!(
            "{AUTHORITY}\n{}\n{}",
            photos_route(&upstream.url()),
            exchange_route("reports", &upstream.url(), "")
        ),
        ..Options::default()
    });
    let (_, app_refresh) = refreshable(&server, "photos.read offline_access").await;
    // The attacker's own grant holds the victim's refresh token as
    // refgate's own credential, for a plain route and for an exchange
    // route (as an older release let a mutate client store it).
    let attacker = server.access_token("middle").await;
    let forged = json!({"access_token": "rgat_forged", "refresh_token": app_refresh,
        "authority": "self", "expires_at": 1});
    plant_custom(
        &server,
        &attacker,
        json!({"credentials": {"photos": forged, "reports": forged}}),
    )
    .await;

    for path in ["/photos/x", "/reports/x"] {
        let (status, body) = get(&server, &attacker, path).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
        assert_eq!(body["error"], "credential_invalid", "{path}: {body}");
    }
    assert!(upstream.requests().is_empty(), "something was forwarded");
    // The victim's refresh token was never redeemed: it still works, once.
    let (status, body) = server.refresh("app", &app_refresh).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_stored_credential_of_an_unknown_authority_is_never_sent() {
    let upstream = Upstream::start().await;
    let server = Refgate::start_with(Options {
        extra: format!("{AUTHORITY}\n{}", photos_route(&upstream.url())),
        ..Options::default()
    });
    let app = server.access_token("app").await;
    // Fresh (no refresh needed) but of an authority nobody configured.
    plant_custom(
        &server,
        &app,
        json!({"credentials": {"photos": {"access_token": "downstream-secret",
            "authority": "elsewhere", "expires_at": unix_now() + 3600}}}),
    )
    .await;
    let (status, body) = get(&server, &app, "/photos/x").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "credential_invalid", "{body}");
    assert_eq!(body["credential"], "photos", "{body}");
    assert!(upstream.requests().is_empty());
}

// --- 2. exchange policy and derived grants ------------------------------

/// Clients for the exchange-policy tests; every secret is `<id>-secret`.
fn policy_clients() -> String {
    let client = |id: &str, body: &str| {
        format!(
            "[[clients]]\nid = \"{id}\"\nsecret_hash = \"{}\"\n{body}\n",
            secret_hash(&format!("{id}-secret"))
        )
    };
    let exchanger = |from: &str| {
        format!(
            "grant_types = [\"{TOKEN_EXCHANGE}\", \"refresh_token\"]\n\
             scopes = [\"photos.read\", \"offline_access\"]\n\
             access_token_ttl = \"2h\"\nrefresh_token_ttl = \"30d\"\n{from}"
        )
    };
    [
        client(
            "app",
            &format!(
                "grant_types = [\"client_credentials\", \"refresh_token\", \"{TOKEN_EXCHANGE}\"]\n\
                 scopes = [\"photos.read\", \"offline_access\"]\naccess_token_ttl = \"10m\""
            ),
        ),
        client(
            "other",
            "grant_types = [\"client_credentials\"]\nscopes = [\"photos.read\"]",
        ),
        client("own-only", &exchanger("")),
        client("from-app", &exchanger("exchange_from = [\"app\"]")),
        client("from-any", &exchanger("exchange_from = [\"*\"]")),
        client("chained", &exchanger("exchange_from = [\"from-app\"]")),
        client(
            "middle",
            "grant_types = [\"client_credentials\"]\nscopes = [\"photos.read\"]\n\
             introspect = true\nreveal_custom = true",
        ),
    ]
    .join("\n")
}

fn policy_server() -> Refgate {
    Refgate::start_with(Options {
        extra: policy_clients(),
        standard_clients: false,
        ..Options::default()
    })
}

#[tokio::test]
async fn a_client_exchanges_only_the_tokens_exchange_from_allows() {
    let server = policy_server();
    let app = server.access_token("app").await;
    let other = server.access_token("other").await;

    // Without exchange_from: its own tokens only.
    let (status, body) = exchange(&server, "app", &other, &[]).await;
    assert_refused(status, &body, "invalid_grant", "exchange_from");
    let (status, body) = exchange(&server, "own-only", &app, &[]).await;
    assert_refused(status, &body, "invalid_grant", "exchange_from");
    let (status, body) = exchange(&server, "app", &app, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A list of clients, and "*".
    let (status, body) = exchange(&server, "from-app", &app, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = exchange(&server, "from-app", &other, &[]).await;
    assert_refused(status, &body, "invalid_grant", "exchange_from");
    let (status, body) = exchange(&server, "from-any", &other, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn revoking_a_grant_revokes_the_grants_exchanged_from_it() {
    let server = policy_server();
    let (app, app_refresh) = refreshable_as(&server, "app").await;
    // app → from-app → chained: two generations of derived grants.
    let (status, first) = exchange(
        &server,
        "from-app",
        &app,
        &[("scope", "photos.read offline_access")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let first_access = str_of(&first, "access_token").to_string();
    let first_refresh = str_of(&first, "refresh_token").to_string();
    let (status, second) = exchange(&server, "chained", &first_access, &[]).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let second_access = str_of(&second, "access_token").to_string();
    assert_eq!(server.introspect(&second_access).await["active"], true);

    let (status, _) = server
        .post_form(
            "/oauth2/revoke",
            Some(("app", "app-secret")),
            &[("token", &app_refresh)],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for token in [&app, &first_access, &first_refresh, &second_access] {
        assert_eq!(
            server.introspect(token).await,
            json!({"active": false}),
            "a derived token outlived the revocation of its source"
        );
    }
    let (status, body) = server.refresh("from-app", &first_refresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn a_refresh_token_replay_revokes_the_grants_exchanged_from_the_grant() {
    let server = policy_server();
    let (app, app_refresh) = refreshable_as(&server, "app").await;
    let (status, derived) = exchange(&server, "from-app", &app, &[]).await;
    assert_eq!(status, StatusCode::OK, "{derived}");
    let derived = str_of(&derived, "access_token").to_string();
    let (status, _) = server.refresh("app", &app_refresh).await;
    assert_eq!(status, StatusCode::OK);
    // The stolen copy comes back: the grant and what was made from it end.
    let (status, _) = server.refresh("app", &app_refresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(server.introspect(&derived).await, json!({"active": false}));
}

#[tokio::test]
async fn a_derived_grant_never_outlives_its_source() {
    let server = policy_server();
    // app's token lives 10 minutes; from-app's would live 2 hours and its
    // refresh token 30 days.
    let app = server.access_token("app").await;
    let source_exp = server.introspect(&app).await["exp"].as_i64().expect("exp");
    let (status, derived) = exchange(
        &server,
        "from-app",
        &app,
        &[("scope", "photos.read offline_access")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{derived}");
    assert!(
        derived["expires_in"].as_i64().expect("expires_in") <= 600,
        "{derived}"
    );
    for member in ["access_token", "refresh_token"] {
        let view = server.introspect(str_of(&derived, member)).await;
        let exp = view["exp"].as_i64().expect("exp");
        assert!(
            exp <= source_exp,
            "{member} exp {exp} > source {source_exp}"
        );
    }
    // A refresh does not stretch it either.
    let (status, refreshed) = server
        .refresh("from-app", str_of(&derived, "refresh_token"))
        .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    let view = server.introspect(str_of(&refreshed, "access_token")).await;
    assert!(view["exp"].as_i64().expect("exp") <= source_exp, "{view}");
}

#[tokio::test]
async fn revoking_the_caller_ends_the_gateways_exchanged_credential() {
    let upstream = Upstream::start().await;
    let server = Refgate::start_with(Options {
        extra: exchange_route("reports", &upstream.url(), ""),
        ..Options::default()
    });
    let (app, app_refresh) = refreshable(&server, "reports.read offline_access").await;
    let (status, _) = get(&server, &app, "/reports/a").await;
    assert_eq!(status, StatusCode::OK);
    let minted = upstream.requests()[0]
        .header("authorization")
        .expect("authorization")
        .trim_start_matches("Bearer ")
        .to_string();
    assert_eq!(server.introspect(&minted).await["active"], true);
    let (status, _) = server
        .post_form(
            "/oauth2/revoke",
            Some(("app", "app-secret")),
            &[("token", &app_refresh)],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.introspect(&minted).await, json!({"active": false}));
}

// --- 3. tokens go only where they were meant to go ----------------------

#[tokio::test]
async fn a_route_audience_refuses_tokens_made_for_another_audience() {
    let upstream = Upstream::start().await;
    let server = Refgate::start_with(Options {
        extra: format!(
            "{AUTHORITY}\n{}",
            route(
                "photos",
                "/photos/",
                &upstream.url(),
                "required_scopes = [\"photos.read\"]\ncredential = \"photos\"\naudience = \"photos-api\"",
            )
        ),
        ..Options::default()
    });
    let base = server.access_token("app").await;
    let with_audience = |audience: &'static str| {
        let (server, base) = (&server, base.clone());
        async move {
            let (status, body) = exchange(server, "app", &base, &[("audience", audience)]).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let token = str_of(&body, "access_token").to_string();
            let (status, body) = server
                .mutate(&json!({"token": token, "patch": {"credentials": {"photos":
                    {"access_token": "down", "authority": "photos-as"}}}}))
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            token
        }
    };
    let elsewhere = with_audience("reports-api").await;
    let (status, body) = get(&server, &elsewhere, "/photos/x").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_token", "{body}");
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(description.contains("photos-api"), "{body}");
    assert!(upstream.requests().is_empty());

    let meant = with_audience("photos-api").await;
    let (status, body) = get(&server, &meant, "/photos/x").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_token_the_gateway_minted_for_one_route_is_refused_on_every_other() {
    let upstream = Upstream::start().await;
    let server = Refgate::start_with(Options {
        extra: format!(
            "{}\n{}",
            exchange_route("reports", &upstream.url(), ""),
            exchange_route("billing", &upstream.url(), "")
        ),
        ..Options::default()
    });
    let app = server.access_token("app").await;
    let (status, _) = get(&server, &app, "/reports/a").await;
    assert_eq!(status, StatusCode::OK);
    let minted = upstream.requests()[0]
        .header("authorization")
        .expect("authorization")
        .trim_start_matches("Bearer ")
        .to_string();
    // The reports upstream replays what it received at another route.
    let (status, body) = get(&server, &minted, "/billing/a").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_token", "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap_or_default()
            .contains("reports"),
        "{body}"
    );
    assert_eq!(
        upstream.requests().len(),
        1,
        "the billing upstream was called"
    );

    // Exchanging it does not launder it: what is made from it stays bound.
    let (status, body) = exchange(&server, "app", &minted, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let laundered = str_of(&body, "access_token").to_string();
    let (status, body) = get(&server, &laundered, "/billing/a").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_token", "{body}");
    assert_eq!(
        upstream.requests().len(),
        1,
        "the billing upstream was called"
    );
}

// --- 4. smaller holes ---------------------------------------------------

#[tokio::test]
async fn token_exchange_mutate_is_bounded_by_the_tokens_own_client() {
    let server = Refgate::start();
    // `other` may hold photos.read only; `middle` (a mutate client) may
    // hold photos.write too, but cannot lend it.
    let token = server.access_token("other").await;
    let mutate = |scope: &'static str| {
        let (server, token) = (&server, token.clone());
        async move {
            server
                .token(
                    "middle",
                    &[
                        ("grant_type", EXCHANGE_MUTATE),
                        ("subject_token", &token),
                        ("subject_token_type", ACCESS_TOKEN_TYPE),
                        ("scope", scope),
                    ],
                )
                .await
        }
    };
    let (status, body) = mutate("photos.read photos.write").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_scope", "{body}");
    assert_eq!(server.introspect(&token).await["scope"], "photos.read");
    let (status, body) = mutate("photos.read").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

// --- helpers -------------------------------------------------------------

/// An access and a refresh token of a grant of `client`, which exchanges
/// its own client_credentials token for one with `offline_access`.
async fn refreshable_as(server: &Refgate, client: &str) -> (String, String) {
    let own = server.access_token(client).await;
    let (status, body) = exchange(
        server,
        client,
        &own,
        &[("scope", "photos.read offline_access")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (
        str_of(&body, "access_token").to_string(),
        str_of(&body, "refresh_token").to_string(),
    )
}

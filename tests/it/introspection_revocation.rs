//! `POST /oauth2/introspect` (RFC 7662, SPEC 3.3) and `POST /oauth2/revoke`
//! (RFC 7009, SPEC 3.4), observed from the outside.

use crate::common::*;

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::header::WWW_AUTHENTICATE;
use serde_json::{json, Value};

/// Revokes `token` as `client`; the status.
async fn revoke_as(server: &Refgate, client: &str, token: &str) -> StatusCode {
    let secret = format!("{client}-secret");
    let (status, body) = server
        .post_form(
            "/oauth2/revoke",
            Some((client, &secret)),
            &[("token", token)],
        )
        .await;
    assert!(
        status != StatusCode::OK || body.is_null() || body.is_object(),
        "unexpected revocation body: {body}"
    );
    status
}

/// The raw response of a form POST, for header checks.
async fn post_raw(
    server: &Refgate,
    path: &str,
    client: Option<(&str, &str)>,
    params: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = http().post(server.url(path)).form(params);
    if let Some((id, secret)) = client {
        request = request.basic_auth(id, Some(secret));
    }
    request.send().await.expect("request")
}

/// A token pair `app` holds: a token exchange of its own token, with
/// `offline_access` and an audience.
async fn app_pair(server: &Refgate, audience: &[&str]) -> (String, String) {
    let subject = server.client_token("app", None).await;
    let subject = str_of(&subject, "access_token");
    let mut params = vec![
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", subject),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
        ("scope", "photos.read offline_access"),
    ];
    params.extend(audience.iter().map(|a| ("audience", *a)));
    let (status, body) = server.token("app", &params).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (
        str_of(&body, "access_token").to_string(),
        str_of(&body, "refresh_token").to_string(),
    )
}

fn keys(body: &Value) -> BTreeSet<String> {
    body.as_object()
        .unwrap_or_else(|| panic!("not an object: {body}"))
        .keys()
        .cloned()
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

async fn assert_inactive(server: &Refgate, token: &str) {
    for client in ["middle", "introspector"] {
        let (status, body) = server.introspect_as(client, token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body,
            json!({"active": false}),
            "token {token:?} as {client}"
        );
    }
}

async fn assert_active(server: &Refgate, token: &str) -> Value {
    let view = server.introspect(token).await;
    assert_eq!(view["active"], true, "token {token:?}: {view}");
    view
}

// ---------------------------------------------------------------- introspection

#[tokio::test]
async fn active_access_token_shows_the_rfc7662_members() {
    let server = Refgate::start();
    let before = unix_now();
    let body = server
        .client_token("app", Some("photos.read reports.read"))
        .await;
    let token = str_of(&body, "access_token");
    let (status, view) = server.introspect_as("introspector", token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        keys(&view),
        set(&[
            "active",
            "scope",
            "client_id",
            "sub",
            "exp",
            "iat",
            "iss",
            "token_type"
        ]),
        "{view}"
    );
    assert_eq!(view["active"], true);
    assert_eq!(view["scope"], "photos.read reports.read");
    assert_eq!(view["client_id"], "app");
    assert_eq!(view["sub"], "app");
    assert_eq!(view["iss"], server.base);
    assert_eq!(view["token_type"], "Bearer");
    let iat = view["iat"].as_i64().expect("iat is a number");
    let exp = view["exp"].as_i64().expect("exp is a number");
    assert!(iat >= before - 1 && iat <= unix_now() + 1, "iat {iat}");
    assert_eq!(exp - iat, 3600, "default access_token_ttl is 1h");
    assert_eq!(body["expires_in"], 3600);
}

#[tokio::test]
async fn introspection_answers_carry_no_store() {
    let server = Refgate::start();
    let body = server.client_token("app", None).await;
    let response = post_raw(
        &server,
        "/oauth2/introspect",
        Some(("middle", "middle-secret")),
        &[("token", str_of(&body, "access_token"))],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert!(response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("application/json"));
}

#[tokio::test]
async fn exchanged_token_shows_aud_and_act() {
    let server = Refgate::start();
    let (access, refresh) = app_pair(&server, &["photos-api"]).await;
    let view = assert_active(&server, &access).await;
    assert_eq!(view["aud"], "photos-api");
    assert_eq!(view["act"], json!({"sub": "app"}));
    assert_eq!(view["sub"], "app");
    assert_eq!(view["client_id"], "app");
    let view = assert_active(&server, &refresh).await;
    assert_eq!(view["aud"], "photos-api");
    assert_eq!(view["act"], json!({"sub": "app"}));

    let (access, _) = app_pair(&server, &["photos-api", "reports-api"]).await;
    let view = assert_active(&server, &access).await;
    assert_eq!(view["aud"], json!(["photos-api", "reports-api"]));
}

#[tokio::test]
async fn minted_token_shows_asserted_iss_and_arbitrary_claims() {
    let server = Refgate::start();
    let (status, body) = server
        .token(
            "minter",
            &[
                ("grant_type", "arbitrary_token"),
                ("subject", "bob"),
                ("issuer", "https://idp.example.com"),
                ("scope", "photos.read"),
                ("arbitrary_claims", r#"{"groups": ["admins", "ops"]}"#),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, view) = server
        .introspect_as("introspector", str_of(&body, "access_token"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["active"], true);
    assert_eq!(view["sub"], "bob");
    assert_eq!(view["iss"], "https://idp.example.com");
    assert_eq!(view["client_id"], "minter");
    assert_eq!(view["groups"], json!(["admins", "ops"]));
    assert_eq!(
        view["exp"].as_i64().unwrap() - view["iat"].as_i64().unwrap(),
        600
    );
}

#[tokio::test]
async fn refresh_token_introspects_with_token_type_refresh_token() {
    let server = Refgate::start();
    let (access, refresh) = minted_pair(&server, "carol", &[]).await;
    let view = assert_active(&server, &refresh).await;
    assert_eq!(view["token_type"], "refresh_token");
    assert_eq!(view["sub"], "carol");
    assert_eq!(view["client_id"], "minter");
    assert_eq!(view["scope"], "photos.read offline_access");
    let exp = view["exp"].as_i64().expect("exp");
    let iat = view["iat"].as_i64().expect("iat");
    assert_eq!(exp - iat, 30 * 86_400, "default refresh_token_ttl is 30d");
    assert_eq!(
        assert_active(&server, &access).await["token_type"],
        "Bearer"
    );
}

#[tokio::test]
async fn unknown_and_malformed_tokens_are_exactly_inactive() {
    let server = Refgate::start();
    let issued = server.client_token("app", None).await;
    let issued = str_of(&issued, "access_token");
    // Same shape as a real token, one character changed.
    let mut altered = issued.to_string();
    let last = altered.pop().expect("non-empty");
    altered.push(if last == 'A' { 'B' } else { 'A' });
    let cases = [
        format!("rgat_{}", "A".repeat(43)),
        format!("rgrt_{}", "A".repeat(43)),
        altered,
        issued[5..].to_string(),
        format!("{issued}x"),
        format!("Bearer {issued}"),
        "rgat_short".to_string(),
        "not a token at all".to_string(),
        "x".repeat(4000),
        "rgat_ünïcödé".to_string(),
    ];
    for token in &cases {
        assert_inactive(&server, token).await;
    }
    assert_active(&server, issued).await;
}

#[tokio::test]
async fn expired_token_is_exactly_inactive() {
    let server = Refgate::start();
    let (status, body) = server
        .token(
            "minter",
            &[
                ("grant_type", "arbitrary_token"),
                ("subject", "dave"),
                ("issuer", "https://idp.example.com"),
                ("scope", "photos.read"),
                ("access_token_lifetime", "6"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["expires_in"], 6);
    let token = str_of(&body, "access_token");
    // Looked up while active first, so a cached view must not outlive exp.
    // (Six seconds, so that a loaded machine still sees it active.)
    let view = server.introspect(token).await;
    assert_eq!(view["active"], true, "{view}");
    assert_eq!(
        view["exp"].as_i64().unwrap() - view["iat"].as_i64().unwrap(),
        6
    );
    tokio::time::sleep(Duration::from_millis(7200)).await;
    assert_inactive(&server, token).await;
}

#[tokio::test]
async fn lifetime_longer_than_the_clients_ttl_is_clamped() {
    let server = Refgate::start();
    let (status, body) = server
        .token(
            "minter",
            &[
                ("grant_type", "arbitrary_token"),
                ("subject", "erin"),
                ("issuer", "https://idp.example.com"),
                ("access_token_lifetime", "86400"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["expires_in"], 600);
    let view = server.introspect(str_of(&body, "access_token")).await;
    assert_eq!(
        view["exp"].as_i64().unwrap() - view["iat"].as_i64().unwrap(),
        600
    );
}

#[tokio::test]
async fn revoked_token_is_exactly_inactive() {
    let server = Refgate::start();
    let body = server.client_token("app", None).await;
    let token = str_of(&body, "access_token");
    assert_active(&server, token).await;
    assert_eq!(revoke_as(&server, "app", token).await, StatusCode::OK);
    assert_inactive(&server, token).await;
}

#[tokio::test]
async fn consumed_refresh_token_is_exactly_inactive() {
    let server = Refgate::start();
    let (_, refresh) = minted_pair(&server, "frank", &[]).await;
    assert_active(&server, &refresh).await;
    let (status, body) = server.refresh("minter", &refresh).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_inactive(&server, &refresh).await;
    let new_refresh = str_of(&body, "refresh_token");
    assert_eq!(
        assert_active(&server, new_refresh).await["token_type"],
        "refresh_token"
    );
}

#[tokio::test]
async fn refresh_token_dropped_by_a_scope_mutation_is_inactive() {
    let server = Refgate::start();
    let (access, refresh) = app_pair(&server, &[]).await;
    // Looked up first, so a cached view has to be dropped.
    assert_active(&server, &refresh).await;
    let (status, body) = server
        .token(
            "app",
            &[
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange-mutate",
                ),
                ("subject_token", &access),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
                ("scope", "photos.read"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        assert_active(&server, &access).await["scope"],
        "photos.read"
    );
    let (status, body) = server.refresh("app", &refresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");
    assert_inactive(&server, &refresh).await;
}

#[tokio::test]
async fn caller_without_introspect_is_401_invalid_client() {
    let server = Refgate::start();
    let body = server.client_token("app", None).await;
    let token = str_of(&body, "access_token");
    for client in ["app", "other", "minter"] {
        let secret = format!("{client}-secret");
        let response = post_raw(
            &server,
            "/oauth2/introspect",
            Some((client, &secret)),
            &[("token", token)],
        )
        .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{client}");
        assert_eq!(
            response.headers()[WWW_AUTHENTICATE],
            "Basic realm=\"refgate\""
        );
        let body: Value = response.json().await.expect("JSON error");
        assert_eq!(body["error"], "invalid_client");
        assert!(!body.to_string().contains("\"active\""), "{body}");
    }
}

#[tokio::test]
async fn introspection_with_bad_or_missing_client_auth_is_401() {
    let server = Refgate::start();
    let body = server.client_token("app", None).await;
    let token = str_of(&body, "access_token");
    let cases: [Option<(&str, &str)>; 3] = [
        None,
        Some(("middle", "wrong-secret")),
        Some(("nobody", "nobody-secret")),
    ];
    for client in cases {
        let response = post_raw(&server, "/oauth2/introspect", client, &[("token", token)]).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{client:?}");
        assert_eq!(
            response.headers()[WWW_AUTHENTICATE],
            "Basic realm=\"refgate\""
        );
        let body: Value = response.json().await.expect("JSON error");
        assert_eq!(body["error"], "invalid_client");
    }
    // client_secret_post with a wrong secret is refused the same way.
    let response = post_raw(
        &server,
        "/oauth2/introspect",
        None,
        &[
            ("token", token),
            ("client_id", "middle"),
            ("client_secret", "wrong"),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()[WWW_AUTHENTICATE],
        "Basic realm=\"refgate\""
    );
}

#[tokio::test]
async fn introspection_accepts_client_secret_post() {
    let server = Refgate::start();
    let body = server.client_token("app", None).await;
    let token = str_of(&body, "access_token");
    let (status, view) = server
        .post_form(
            "/oauth2/introspect",
            None,
            &[
                ("token", token),
                ("client_id", "introspector"),
                ("client_secret", "introspector-secret"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["active"], true);
}

#[tokio::test]
async fn introspection_without_token_is_400_invalid_request() {
    let server = Refgate::start();
    let (status, body) = server
        .post_form("/oauth2/introspect", Some(("middle", "middle-secret")), &[])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_request");
}

#[tokio::test]
async fn token_type_hint_does_not_change_the_answer() {
    let server = Refgate::start();
    let (access, refresh) = minted_pair(&server, "gina", &[]).await;
    for (token, hint, kind) in [
        (&access, "refresh_token", "Bearer"),
        (&refresh, "access_token", "refresh_token"),
    ] {
        let (status, view) = server
            .post_form(
                "/oauth2/introspect",
                Some(("middle", "middle-secret")),
                &[("token", token), ("token_type_hint", hint)],
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(view["active"], true);
        assert_eq!(view["token_type"], kind);
    }
}

// ---------------------------------------------------------------- revocation

#[tokio::test]
async fn revocation_is_200_for_valid_unknown_malformed_and_revoked_tokens() {
    let server = Refgate::start();
    let body = server.client_token("app", None).await;
    let token = str_of(&body, "access_token");
    assert_eq!(revoke_as(&server, "app", token).await, StatusCode::OK);
    assert_eq!(revoke_as(&server, "app", token).await, StatusCode::OK);
    let unknown = format!("rgat_{}", "A".repeat(43));
    let unknown_refresh = format!("rgrt_{}", "A".repeat(43));
    for other in [unknown.as_str(), unknown_refresh.as_str(), "garbage"] {
        assert_eq!(
            revoke_as(&server, "app", other).await,
            StatusCode::OK,
            "{other}"
        );
    }
    assert_inactive(&server, token).await;
}

#[tokio::test]
async fn revocation_answer_is_200_with_no_store() {
    let server = Refgate::start();
    let body = server.client_token("app", None).await;
    let response = post_raw(
        &server,
        "/oauth2/revoke",
        Some(("app", "app-secret")),
        &[
            ("token", str_of(&body, "access_token")),
            ("token_type_hint", "access_token"),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn revoking_a_refresh_token_revokes_the_whole_grant() {
    let server = Refgate::start();
    let (first_access, refresh) = minted_pair(&server, "henry", &[]).await;
    let (status, body) = server.refresh("minter", &refresh).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second_access = str_of(&body, "access_token").to_string();
    let second_refresh = str_of(&body, "refresh_token").to_string();
    for token in [&first_access, &second_access, &second_refresh] {
        assert_active(&server, token).await;
    }

    assert_eq!(
        revoke_as(&server, "minter", &second_refresh).await,
        StatusCode::OK
    );

    for token in [&first_access, &second_access, &second_refresh] {
        assert_inactive(&server, token).await;
    }
    let (status, body) = server.refresh("minter", &second_refresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn hint_does_not_stop_a_refresh_token_revoking_its_grant() {
    let server = Refgate::start();
    let (access, refresh) = minted_pair(&server, "ida", &[]).await;
    let status = server
        .post_form(
            "/oauth2/revoke",
            Some(("minter", "minter-secret")),
            &[("token", &refresh), ("token_type_hint", "access_token")],
        )
        .await
        .0;
    assert_eq!(status, StatusCode::OK);
    assert_inactive(&server, &access).await;
    assert_inactive(&server, &refresh).await;
}

#[tokio::test]
async fn revoking_an_access_token_leaves_the_refresh_token_usable() {
    let server = Refgate::start();
    let (access, refresh) = app_pair(&server, &[]).await;
    assert_active(&server, &access).await;
    assert_eq!(revoke_as(&server, "app", &access).await, StatusCode::OK);
    assert_inactive(&server, &access).await;
    assert_active(&server, &refresh).await;

    let (status, body) = server.refresh("app", &refresh).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_active(&server, str_of(&body, "access_token")).await;
    // The revoked one stays revoked.
    assert_inactive(&server, &access).await;
}

#[tokio::test]
async fn another_clients_token_is_200_and_stays_active() {
    let server = Refgate::start();
    let (access, refresh) = app_pair(&server, &[]).await;
    let minted = minted_pair(&server, "jane", &[]).await;
    for (client, token) in [
        ("other", &access),
        ("other", &refresh),
        ("middle", &access),
        ("app", &minted.0),
        ("app", &minted.1),
    ] {
        assert_eq!(revoke_as(&server, client, token).await, StatusCode::OK);
    }
    for token in [&access, &refresh, &minted.0, &minted.1] {
        assert_active(&server, token).await;
    }
    let (status, body) = server.refresh("app", &refresh).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn revocation_without_token_is_400_invalid_request() {
    let server = Refgate::start();
    let (status, body) = server
        .post_form(
            "/oauth2/revoke",
            Some(("app", "app-secret")),
            &[("token_type_hint", "access_token")],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_request");
}

#[tokio::test]
async fn revocation_with_bad_client_auth_is_401_and_revokes_nothing() {
    let server = Refgate::start();
    let body = server.client_token("app", None).await;
    let token = str_of(&body, "access_token");
    let cases: [Option<(&str, &str)>; 3] =
        [None, Some(("app", "wrong-secret")), Some(("nobody", "x"))];
    for client in cases {
        let response = post_raw(&server, "/oauth2/revoke", client, &[("token", token)]).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{client:?}");
        assert_eq!(
            response.headers()[WWW_AUTHENTICATE],
            "Basic realm=\"refgate\""
        );
        let body: Value = response.json().await.expect("JSON error");
        assert_eq!(body["error"], "invalid_client");
    }
    let response = post_raw(
        &server,
        "/oauth2/revoke",
        None,
        &[
            ("token", token),
            ("client_id", "app"),
            ("client_secret", "bad"),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_active(&server, token).await;
}

#[tokio::test]
async fn revocation_accepts_client_secret_post() {
    let server = Refgate::start();
    let body = server.client_token("app", None).await;
    let token = str_of(&body, "access_token");
    let (status, _) = server
        .post_form(
            "/oauth2/revoke",
            None,
            &[
                ("token", token),
                ("client_id", "app"),
                ("client_secret", "app-secret"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_inactive(&server, token).await;
}

#[tokio::test]
async fn revoked_token_cannot_be_exchanged_or_mutated() {
    let server = Refgate::start();
    let body = server.client_token("app", None).await;
    let token = str_of(&body, "access_token");
    assert_eq!(revoke_as(&server, "app", token).await, StatusCode::OK);
    let (status, body) = server
        .token(
            "app",
            &[
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", token),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_request");
    let (status, body) = server
        .mutate(&json!({"token": token, "patch": {"a": 1}}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_token");
}

#[tokio::test]
async fn revoking_a_refresh_token_already_revoked_by_a_scope_mutation_leaves_the_grant_alone() {
    let server = Refgate::start();
    let (access, refresh) = app_pair(&server, &[]).await;
    let (status, body) = server
        .token(
            "app",
            &[
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange-mutate",
                ),
                ("subject_token", &access),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
                ("scope", "photos.read"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_inactive(&server, &refresh).await;

    // Already revoked: 200, and nothing else happens.
    assert_eq!(revoke_as(&server, "app", &refresh).await, StatusCode::OK);
    assert_active(&server, &access).await;
}

#[tokio::test]
async fn revoking_a_rotated_out_refresh_token_leaves_the_current_tokens_alone() {
    let server = Refgate::start();
    let (_, old_refresh) = minted_pair(&server, "kim", &[]).await;
    let (status, body) = server.refresh("minter", &old_refresh).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let access = str_of(&body, "access_token").to_string();
    let refresh = str_of(&body, "refresh_token").to_string();

    // The consumed token is already dead: revoking it is a no-op.
    assert_eq!(
        revoke_as(&server, "minter", &old_refresh).await,
        StatusCode::OK
    );
    assert_active(&server, &access).await;
    let (status, body) = server.refresh("minter", &refresh).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn revoking_a_refresh_token_inside_the_grace_window_revokes_the_grant() {
    let server = Refgate::start_with(Options {
        tokens: "refresh_grace = \"60s\"".into(),
        ..Options::default()
    });
    let (_, old_refresh) = minted_pair(&server, "lee", &[]).await;
    let (status, body) = server.refresh("minter", &old_refresh).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let access = str_of(&body, "access_token").to_string();

    // Still replayable within the grace window, so still live: revoking it
    // ends the grant, and it cannot be replayed any more.
    assert_eq!(
        revoke_as(&server, "minter", &old_refresh).await,
        StatusCode::OK
    );
    assert_inactive(&server, &access).await;
    let (status, body) = server.refresh("minter", &old_refresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");
}

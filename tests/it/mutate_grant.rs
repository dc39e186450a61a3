//! `urn:ietf:params:oauth:grant-type:token-exchange-mutate`: a grant gets a
//! new scope set while its token strings and expiry stay the same.

use crate::common::*;

use serde_json::{json, Value};

/// The mutate grant as `client` on `token`, with an optional new `scope`.
async fn mutate_scope(
    server: &Refgate,
    client: &str,
    token: &str,
    scope: Option<&str>,
) -> (StatusCode, Value) {
    let mut params = vec![
        ("grant_type", EXCHANGE_MUTATE),
        ("subject_token", token),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
    ];
    if let Some(scope) = scope {
        params.push(("scope", scope));
    }
    server.token(client, &params).await
}

#[tokio::test]
async fn mutated_scope_shows_at_once_on_the_same_token_without_extending_exp() {
    let server = Refgate::start();
    let (access, refresh_token) = refreshable(&server, "photos.read offline_access").await;
    // Warm the lookup cache: the mutation must show through it.
    let before = server.introspect(&access).await;
    assert_eq!(before["version"], 1);

    let (status, body) = mutate_scope(
        &server,
        "middle",
        &access,
        Some("photos.read photos.write offline_access"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["access_token"], access.as_str());
    assert_eq!(body["issued_token_type"], ACCESS_TOKEN_TYPE);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(
        sorted_scopes(&body["scope"]),
        ["offline_access", "photos.read", "photos.write"]
    );
    let remaining = before["exp"].as_i64().expect("exp") - unix_now();
    let expires_in = body["expires_in"].as_i64().expect("expires_in");
    assert!(
        expires_in <= remaining + 1 && expires_in >= remaining - 5,
        "expires_in {expires_in} is not what remained ({remaining})"
    );
    assert!(body.get("refresh_token").is_none(), "{body}");

    let after = server.introspect(&access).await;
    assert_eq!(after["active"], true);
    assert_eq!(
        sorted_scopes(&after["scope"]),
        ["offline_access", "photos.read", "photos.write"]
    );
    assert_eq!(after["exp"], before["exp"]);
    assert_eq!(after["iat"], before["iat"]);
    assert_eq!(after["sub"], before["sub"]);
    assert_eq!(after["client_id"], "app");
    assert_eq!(after["version"], 2);

    // The same refresh token still works and its access token carries the
    // new scope.
    let (status, refreshed) = server.refresh("app", &refresh_token).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    let view = server.introspect(str_of(&refreshed, "access_token")).await;
    assert_eq!(
        sorted_scopes(&view["scope"]),
        ["offline_access", "photos.read", "photos.write"]
    );
}

#[tokio::test]
async fn mutated_scope_without_offline_access_revokes_the_refresh_token() {
    let server = Refgate::start();
    let (access, refresh_token) =
        refreshable(&server, "photos.read photos.write offline_access").await;
    // Warm the lookup cache for both tokens.
    assert_eq!(server.introspect(&access).await["active"], true);
    assert_eq!(server.introspect(&refresh_token).await["active"], true);

    let (status, body) = mutate_scope(&server, "middle", &access, Some("photos.read")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "photos.read");

    assert_eq!(
        server.introspect(&refresh_token).await,
        json!({"active": false}),
        "the refresh token outlived a scope set without offline_access"
    );
    let (status, body) = server.refresh("app", &refresh_token).await;
    assert_bad_request(status, &body, "invalid_grant");
    // The access token lives on with the narrower scope.
    let view = server.introspect(&access).await;
    assert_eq!(view["active"], true);
    assert_eq!(view["scope"], "photos.read");
}

#[tokio::test]
async fn token_owner_may_mutate_its_own_token() {
    let server = Refgate::start();
    let (access, _) = refreshable(&server, "photos.read offline_access").await;
    let (status, body) =
        mutate_scope(&server, "app", &access, Some("reports.read offline_access")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let view = server.introspect(&access).await;
    assert_eq!(
        sorted_scopes(&view["scope"]),
        ["offline_access", "reports.read"]
    );
}

#[tokio::test]
async fn mutating_a_narrowed_token_gives_it_the_new_scope_set() {
    let server = Refgate::start();
    let (_, refresh_token) = refreshable(&server, "photos.read photos.write offline_access").await;
    let (status, narrowed) = server
        .token(
            "app",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh_token),
                ("scope", "photos.read"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{narrowed}");
    let access = str_of(&narrowed, "access_token");
    assert_eq!(server.introspect(access).await["scope"], "photos.read");

    let (status, body) = mutate_scope(
        &server,
        "middle",
        access,
        Some("photos.write reports.read offline_access"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let view = server.introspect(access).await;
    assert_eq!(
        sorted_scopes(&view["scope"]),
        ["offline_access", "photos.write", "reports.read"]
    );
}

#[tokio::test]
async fn mutate_by_a_third_client_without_mutate_is_unauthorized_client() {
    let server = Refgate::start();
    let (access, _) = refreshable(&server, "photos.read offline_access").await;
    // `other` has the grant type but not `mutate = true`.
    let (status, body) = mutate_scope(&server, "other", &access, Some("photos.read")).await;
    assert_bad_request(status, &body, "unauthorized_client");
    let view = server.introspect(&access).await;
    assert_eq!(
        sorted_scopes(&view["scope"]),
        ["offline_access", "photos.read"]
    );
    assert_eq!(view["version"], 1);
}

#[tokio::test]
async fn mutate_to_a_scope_the_caller_lacks_is_invalid_scope() {
    let server = Refgate::start();
    let subject = server.client_token("other", None).await;
    let token = str_of(&subject, "access_token");
    // `other` owns the token but may not obtain photos.write.
    let (status, body) = mutate_scope(&server, "other", token, Some("photos.write")).await;
    assert_bad_request(status, &body, "invalid_scope");
    assert_eq!(server.introspect(token).await["scope"], "photos.read");
}

#[tokio::test]
async fn mutate_of_an_inactive_subject_is_invalid_request() {
    let server = Refgate::start();
    let (access, refresh_token) = refreshable(&server, "photos.read offline_access").await;
    for token in [
        "rgat_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "not-a-token",
        // A refresh token is not an access token.
        refresh_token.as_str(),
    ] {
        let (status, body) = mutate_scope(&server, "middle", token, Some("photos.read")).await;
        assert_bad_request(status, &body, "invalid_request");
    }
    let (status, _) = server
        .post_form(
            "/oauth2/revoke",
            Some(("app", "app-secret")),
            &[("token", &access)],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = mutate_scope(&server, "middle", &access, Some("photos.read")).await;
    assert_bad_request(status, &body, "invalid_request");
}

#[tokio::test]
async fn mutate_without_subject_token_type_is_invalid_request() {
    let server = Refgate::start();
    let (access, _) = refreshable(&server, "photos.read offline_access").await;
    let (status, body) = server
        .token(
            "middle",
            &[
                ("grant_type", EXCHANGE_MUTATE),
                ("subject_token", &access),
                ("scope", "photos.read"),
            ],
        )
        .await;
    assert_bad_request(status, &body, "invalid_request");
    let (status, body) = server
        .token(
            "middle",
            &[
                ("grant_type", EXCHANGE_MUTATE),
                ("subject_token", &access),
                (
                    "subject_token_type",
                    "urn:ietf:params:oauth:token-type:refresh_token",
                ),
                ("scope", "photos.read"),
            ],
        )
        .await;
    assert_bad_request(status, &body, "invalid_request");
    let (status, body) = server
        .token(
            "middle",
            &[
                ("grant_type", EXCHANGE_MUTATE),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
                ("scope", "photos.read"),
            ],
        )
        .await;
    assert_bad_request(status, &body, "invalid_request");
    assert_eq!(server.introspect(&access).await["version"], 1);
}

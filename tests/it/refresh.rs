//! The `refresh_token` grant: rotation, reuse detection, concurrency,
//! narrowing, and the `refresh_grace` window.

use crate::common::*;

use serde_json::Value;

/// `grant_type=refresh_token` as `client`, with optional `scope`.
async fn refresh(
    server: &Refgate,
    client: &str,
    refresh_token: &str,
    scope: Option<&str>,
) -> (StatusCode, Value) {
    let mut params = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
    ];
    if let Some(scope) = scope {
        params.push(("scope", scope));
    }
    server.token(client, &params).await
}

#[tokio::test]
async fn refresh_rotates_the_refresh_token_and_the_old_one_dies() {
    let server = Refgate::start();
    let (first_access, first_refresh) = refreshable(&server, "photos.read offline_access").await;
    let first_view = server.introspect(&first_refresh).await;
    assert_eq!(first_view["active"], true);
    assert_eq!(first_view["token_type"], "refresh_token");

    let (status, body) = refresh(&server, "app", &first_refresh, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(
        sorted_scopes(&body["scope"]),
        ["offline_access", "photos.read"]
    );
    let second_access = str_of(&body, "access_token");
    let second_refresh = str_of(&body, "refresh_token");
    assert!(second_access.starts_with("rgat_"));
    assert!(second_refresh.starts_with("rgrt_"));
    assert_ne!(second_access, first_access);
    assert_ne!(second_refresh, first_refresh);

    // The consumed refresh token is dead; the new tokens are alive and
    // belong to the same grant (same subject, actor and client).
    assert_eq!(
        server.introspect(&first_refresh).await,
        serde_json::json!({"active": false})
    );
    let view = server.introspect(second_access).await;
    assert_eq!(view["active"], true);
    assert_eq!(view["client_id"], "app");
    assert_eq!(view["sub"], first_view["sub"]);
    assert_eq!(view["act"], first_view["act"]);
    assert_eq!(server.introspect(second_refresh).await["active"], true);
    // The access token issued before the refresh stays valid until it expires.
    assert_eq!(server.introspect(&first_access).await["active"], true);

    // The new refresh token rotates again.
    let (status, body) = refresh(&server, "app", second_refresh, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn replayed_refresh_token_revokes_grant() {
    let server = Refgate::start();
    let (first_access, first_refresh) = refreshable(&server, "photos.read offline_access").await;
    let (status, body) = refresh(&server, "app", &first_refresh, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rotated_access = str_of(&body, "access_token").to_string();
    let rotated_refresh = str_of(&body, "refresh_token").to_string();
    // Warm the introspection cache with the live tokens.
    assert_eq!(server.introspect(&rotated_access).await["active"], true);
    assert_eq!(server.introspect(&rotated_refresh).await["active"], true);

    let (status, body) = refresh(&server, "app", &first_refresh, None).await;
    assert_bad_request(status, &body, "invalid_grant");

    // Every token of the grant is dead, the rotated ones included.
    for token in [
        &first_access,
        &first_refresh,
        &rotated_access,
        &rotated_refresh,
    ] {
        assert_eq!(
            server.introspect(token).await,
            serde_json::json!({"active": false}),
            "token of a revoked grant still active"
        );
    }
    let (status, body) = refresh(&server, "app", &rotated_refresh, None).await;
    assert_bad_request(status, &body, "invalid_grant");
}

/// Sends 20 refreshes of `refresh_token` at once as `app`.
async fn refresh_concurrently(server: &Refgate, refresh_token: &str) -> Vec<(StatusCode, Value)> {
    let client = http();
    let attempts = (0..20).map(|_| {
        let request = client
            .post(server.url("/oauth2/token"))
            .basic_auth("app", Some("app-secret"))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ])
            .send();
        async move {
            let response = request.await.expect("refresh request");
            let status = response.status();
            let body: Value = response.json().await.expect("JSON body");
            (status, body)
        }
    });
    futures::future::join_all(attempts).await
}

/// Asserts that exactly one refresh succeeded and every other one is
/// `invalid_grant`; returns the winner's new access and refresh token.
fn assert_exactly_one_success(outcomes: &[(StatusCode, Value)]) -> [String; 2] {
    let winners: Vec<&Value> = outcomes
        .iter()
        .filter(|(status, _)| *status == StatusCode::OK)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(winners.len(), 1, "outcomes: {outcomes:?}");
    for (status, body) in outcomes.iter().filter(|(s, _)| *s != StatusCode::OK) {
        assert_bad_request(*status, body, "invalid_grant");
    }
    ["access_token", "refresh_token"].map(|key| str_of(winners[0], key).to_string())
}

/// The losers of a refresh race presented a used refresh token, a replay:
/// the grant is revoked, the winner's new tokens with it.
async fn assert_revoked(server: &Refgate, tokens: &[String]) {
    for token in tokens {
        assert_eq!(
            server.introspect(token).await,
            serde_json::json!({"active": false}),
            "a token of a grant that lost a refresh race"
        );
    }
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_succeed_exactly_once() {
    let server = Refgate::start();
    let (access, refresh_token) = refreshable(&server, "photos.read offline_access").await;
    let [new_access, new_refresh] =
        assert_exactly_one_success(&refresh_concurrently(&server, &refresh_token).await);
    assert_revoked(&server, &[access, new_access, new_refresh]).await;
}

/// The same race, fired just before a wall-clock second ends, so that the
/// requests read the clock on both sides of the boundary: a request that
/// read the earlier second must not slip through as a "replay within
/// grace" when the grace is zero.
#[tokio::test]
async fn concurrent_refreshes_across_a_second_boundary_succeed_exactly_once() {
    let server = Refgate::start();
    for _ in 0..2 {
        let (_, refresh_token) = refreshable(&server, "photos.read offline_access").await;
        let into_second = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .subsec_millis();
        let wait = (1000 + 990 - into_second) % 1000;
        tokio::time::sleep(std::time::Duration::from_millis(u64::from(wait))).await;
        let winner =
            assert_exactly_one_success(&refresh_concurrently(&server, &refresh_token).await);
        assert_revoked(&server, &winner).await;
    }
}

#[tokio::test]
async fn refresh_may_narrow_the_scope() {
    let server = Refgate::start();
    let (_, refresh_token) = refreshable(&server, "photos.read photos.write offline_access").await;
    let (status, body) = refresh(&server, "app", &refresh_token, Some("photos.read")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "photos.read");
    let view = server.introspect(str_of(&body, "access_token")).await;
    assert_eq!(view["scope"], "photos.read");

    // Narrowing applies to that access token only: the next refresh without
    // `scope` gets the grant's full scope back (RFC 6749 §6).
    let next_refresh = str_of(&body, "refresh_token").to_string();
    let view = server.introspect(&next_refresh).await;
    assert_eq!(
        sorted_scopes(&view["scope"]),
        ["offline_access", "photos.read", "photos.write"]
    );
    let (status, body) = refresh(&server, "app", &next_refresh, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let view = server.introspect(str_of(&body, "access_token")).await;
    assert_eq!(
        sorted_scopes(&view["scope"]),
        ["offline_access", "photos.read", "photos.write"]
    );
}

#[tokio::test]
async fn refresh_may_not_widen_the_scope() {
    let server = Refgate::start();
    let (_, refresh_token) = refreshable(&server, "photos.read offline_access").await;
    // `app` may obtain photos.write, but this grant never had it.
    let (status, body) = refresh(
        &server,
        "app",
        &refresh_token,
        Some("photos.read photos.write"),
    )
    .await;
    assert_bad_request(status, &body, "invalid_scope");
    // A refused request does not consume the refresh token.
    let (status, body) = refresh(&server, "app", &refresh_token, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn refresh_token_of_another_client_is_invalid_grant() {
    let server = Refgate::start();
    let (_, refresh_token) = refreshable(&server, "photos.read offline_access").await;
    let (status, body) = refresh(&server, "other", &refresh_token, None).await;
    assert_bad_request(status, &body, "invalid_grant");
    // Another client cannot burn the token either: its owner still refreshes.
    let (status, body) = refresh(&server, "app", &refresh_token, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn access_token_given_as_refresh_token_is_invalid_grant() {
    let server = Refgate::start();
    let (access, _) = refreshable(&server, "photos.read offline_access").await;
    let (status, body) = refresh(&server, "app", &access, None).await;
    assert_bad_request(status, &body, "invalid_grant");
    // Same for an access token body re-labelled with the refresh prefix.
    let relabelled = access.replacen("rgat_", "rgrt_", 1);
    let (status, body) = refresh(&server, "app", &relabelled, None).await;
    assert_bad_request(status, &body, "invalid_grant");
}

#[tokio::test]
async fn unknown_or_malformed_refresh_token_is_invalid_grant() {
    let server = Refgate::start();
    for token in [
        "rgrt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "rgrt_short",
        "not-a-token",
    ] {
        let (status, body) = refresh(&server, "app", token, None).await;
        assert_bad_request(status, &body, "invalid_grant");
    }
    let (status, body) = server
        .token("app", &[("grant_type", "refresh_token")])
        .await;
    assert_bad_request(status, &body, "invalid_request");
}

#[tokio::test]
async fn revoked_refresh_token_is_invalid_grant() {
    let server = Refgate::start();
    let (access, refresh_token) = refreshable(&server, "photos.read offline_access").await;
    let (status, _) = server
        .post_form(
            "/oauth2/revoke",
            Some(("app", "app-secret")),
            &[("token", &refresh_token)],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = refresh(&server, "app", &refresh_token, None).await;
    assert_bad_request(status, &body, "invalid_grant");
    assert_eq!(server.introspect(&access).await["active"], false);
}

#[tokio::test]
async fn replay_within_refresh_grace_succeeds() {
    let server = Refgate::start_with(Options {
        tokens: "refresh_grace = \"30s\"".into(),
        ..Options::default()
    });
    let (_, first_refresh) = refreshable(&server, "photos.read offline_access").await;
    let (status, first) = refresh(&server, "app", &first_refresh, None).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (status, second) = refresh(&server, "app", &first_refresh, None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "replay inside the grace window: {second}"
    );
    assert_ne!(second["access_token"], first["access_token"]);
    assert_ne!(second["refresh_token"], first["refresh_token"]);

    // Nothing was revoked: both successors are usable.
    for body in [&first, &second] {
        assert_eq!(
            server.introspect(str_of(body, "access_token")).await["active"],
            true
        );
        assert_eq!(
            server.introspect(str_of(body, "refresh_token")).await["active"],
            true
        );
    }
    let (status, body) = refresh(&server, "app", str_of(&first, "refresh_token"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A lookup that is in flight while the grant is revoked must not leave a
/// stale "active" view behind in the cache: once the replay has been
/// answered, every token of the grant is inactive.
#[tokio::test]
async fn replay_racing_a_first_lookup_leaves_no_active_token_behind() {
    let server = Refgate::start();
    for _ in 0..200 {
        let (_, first_refresh) = refreshable(&server, "photos.read offline_access").await;
        let (status, body) = refresh(&server, "app", &first_refresh, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let rotated = str_of(&body, "access_token").to_string();
        let (_, (status, body)) = tokio::join!(
            server.introspect(&rotated),
            refresh(&server, "app", &first_refresh, None)
        );
        assert_bad_request(status, &body, "invalid_grant");
        assert_eq!(
            server.introspect(&rotated).await,
            serde_json::json!({"active": false}),
            "a stale cached grant outlived its revocation"
        );
    }
}

#[tokio::test]
async fn replay_after_refresh_grace_revokes_grant() {
    let server = Refgate::start_with(Options {
        tokens: "refresh_grace = \"1s\"".into(),
        ..Options::default()
    });
    let (_, first_refresh) = refreshable(&server, "photos.read offline_access").await;
    let (status, rotated) = refresh(&server, "app", &first_refresh, None).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    // Token times are whole seconds: wait until a full second has passed
    // since the rotation was answered.
    let answered = unix_now();
    while unix_now() < answered + 2 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, body) = refresh(&server, "app", &first_refresh, None).await;
    assert_bad_request(status, &body, "invalid_grant");
    for member in ["access_token", "refresh_token"] {
        assert_eq!(
            server.introspect(str_of(&rotated, member)).await,
            serde_json::json!({"active": false})
        );
    }
}

#[tokio::test]
async fn expired_refresh_token_is_invalid_grant() {
    let server = Refgate::start_with(Options {
        tokens: "refresh_token_ttl = \"1s\"".into(),
        ..Options::default()
    });
    let (_, refresh_token) = refreshable(&server, "photos.read offline_access").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while server.introspect(&refresh_token).await["active"] == true {
        assert!(std::time::Instant::now() < deadline, "token did not expire");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (status, body) = refresh(&server, "app", &refresh_token, None).await;
    assert_bad_request(status, &body, "invalid_grant");
}

/// A second instance on the first one's store: the same database on
/// PostgreSQL, the same file (by absolute path) on SQLite.
fn second_instance(first: &Refgate) -> Refgate {
    let store_url = if test_store_is_postgres() {
        first.store_url.clone()
    } else {
        format!("sqlite://{}", first.db_path.display())
    };
    Refgate::start_with(Options {
        store_url: Some(store_url),
        ..Options::default()
    })
}

#[tokio::test]
async fn concurrent_refreshes_on_two_instances_sharing_a_store_succeed_exactly_once() {
    let a = Refgate::start();
    let b = second_instance(&a);
    let (_, refresh_token) = refreshable(&a, "photos.read offline_access").await;
    let (on_a, on_b) = tokio::join!(
        refresh_concurrently(&a, &refresh_token),
        refresh_concurrently(&b, &refresh_token)
    );
    let outcomes: Vec<_> = on_a.into_iter().chain(on_b).collect();
    let winner = assert_exactly_one_success(&outcomes);
    // The winner's tokens are new to both instances' caches.
    assert_revoked(&a, &winner).await;
    assert_revoked(&b, &winner).await;
}

//! `POST /oauth2/mutate` (SPEC 3.5): RFC 7396 merge patches on a grant's
//! custom data, optimistic concurrency, the size cap, who may call it, and
//! what introspection then shows to whom.

use crate::common::*;

use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use serde_json::{json, Value};

/// The answer of one HTTP exchange: status, headers and JSON body (Null
/// when the body is not JSON).
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body");
    Answer {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// `POST /oauth2/mutate` with a JSON body and optional Basic credentials.
async fn mutate_as(server: &Refgate, client: Option<(&str, &str)>, body: &Value) -> Answer {
    let mut request = http().post(server.url("/oauth2/mutate")).json(body);
    if let Some((id, secret)) = client {
        request = request.basic_auth(id, Some(secret));
    }
    answer(request.send().await.expect("request")).await
}

/// Introspects `token` as `client` (secret `<client>-secret`).
async fn introspect_as(server: &Refgate, client: &str, token: &str) -> Value {
    let (status, body) = server.introspect_as(client, token).await;
    assert_eq!(status, StatusCode::OK, "introspection failed: {body}");
    body
}

/// An access and refresh token pair that `app` itself holds: a token
/// exchange of its own client_credentials token asking for offline_access.
async fn app_offline_pair(server: &Refgate) -> (String, String) {
    let subject = server.access_token("app").await;
    let (status, body) = server
        .token(
            "app",
            &[
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", &subject),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
                ("scope", "photos.read offline_access"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "token exchange failed: {body}");
    (
        str_of(&body, "access_token").to_string(),
        str_of(&body, "refresh_token").to_string(),
    )
}

fn assert_error(answer: &Answer, status: StatusCode, code: &str) {
    assert_eq!(answer.status, status, "unexpected answer: {}", answer.body);
    assert_eq!(
        answer.body["error"], code,
        "unexpected body: {}",
        answer.body
    );
    assert!(
        answer.body["error_description"].is_string(),
        "no error_description in {}",
        answer.body
    );
}

fn assert_basic_challenge(answer: &Answer) {
    assert_error(answer, StatusCode::UNAUTHORIZED, "invalid_client");
    assert_eq!(
        answer
            .headers
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok()),
        Some("Basic realm=\"refgate\""),
        "401 without the Basic challenge"
    );
}

#[tokio::test]
async fn new_grant_has_version_1_and_empty_custom_data() {
    let server = Refgate::start();
    let token = server.access_token("app").await;
    let view = server.introspect(&token).await;
    assert_eq!(view["active"], true);
    assert_eq!(view["version"], 1, "{view}");
    assert_eq!(view["custom"], json!({}), "{view}");
}

#[tokio::test]
async fn merge_patch_adds_replaces_and_deletes_keys_and_bumps_version() {
    let server = Refgate::start();
    let token = server.access_token("app").await;

    // Add.
    let (status, body) = server
        .mutate(&json!({"token": token, "patch": {"a": 1, "b": {"c": 2, "e": [1, 2]}}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"version": 2}));
    let view = server.introspect(&token).await;
    assert_eq!(view["custom"], json!({"a": 1, "b": {"c": 2, "e": [1, 2]}}));
    assert_eq!(view["version"], 2);

    // Replace: objects merge recursively, everything else is replaced whole.
    let (status, body) = server
        .mutate(&json!({"token": token, "patch": {"a": "x", "b": {"d": 3, "e": [9]}}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"version": 3}));
    let view = server.introspect(&token).await;
    assert_eq!(
        view["custom"],
        json!({"a": "x", "b": {"c": 2, "d": 3, "e": [9]}})
    );
    assert_eq!(view["version"], 3);

    // Delete: null removes a key, also a nested one.
    let (status, body) = server
        .mutate(&json!({"token": token, "patch": {"a": null, "b": {"c": null}}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"version": 4}));
    let view = server.introspect(&token).await;
    assert_eq!(view["custom"], json!({"b": {"d": 3, "e": [9]}}));
    assert_eq!(view["version"], 4);

    // Deleting everything leaves an empty object, still versioned.
    let (status, body) = server
        .mutate(&json!({"token": token, "patch": {"b": null}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"version": 5}));
    let view = server.introspect(&token).await;
    assert_eq!(view["custom"], json!({}));
    assert_eq!(view["version"], 5);
    assert_eq!(view["active"], true);
}

#[tokio::test]
async fn mutation_is_seen_through_every_token_of_the_grant() {
    let server = Refgate::start();
    let (access, refresh) = app_offline_pair(&server).await;
    let (status, body) = server
        .mutate(&json!({"token": access, "patch": {"k": "v"}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let view = server.introspect(&refresh).await;
    assert_eq!(view["token_type"], "refresh_token");
    assert_eq!(view["custom"], json!({"k": "v"}));
    assert_eq!(view["version"], 2);
}

#[tokio::test]
async fn if_version_mismatch_is_409_and_changes_nothing() {
    let server = Refgate::start();
    let token = server.access_token("app").await;

    let (status, body) = server
        .mutate(&json!({"token": token, "patch": {"a": 1}, "if_version": 1}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"version": 2}));

    // A stale version.
    let (status, body) = server
        .mutate(&json!({"token": token, "patch": {"a": 2}, "if_version": 1}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "conflict", "{body}");
    assert_eq!(body["version"], 2, "the current version: {body}");
    // A version from the future.
    let (status, body) = server
        .mutate(&json!({"token": token, "patch": {"a": 3}, "if_version": 7}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "conflict", "{body}");
    assert_eq!(body["version"], 2, "the current version: {body}");

    let view = server.introspect(&token).await;
    assert_eq!(view["custom"], json!({"a": 1}));
    assert_eq!(view["version"], 2);

    // The current version goes through.
    let (status, body) = server
        .mutate(&json!({"token": token, "patch": {"a": 4}, "if_version": 2}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"version": 3}));
    assert_eq!(server.introspect(&token).await["custom"], json!({"a": 4}));
}

#[tokio::test]
async fn concurrent_mutations_with_one_if_version_let_exactly_one_win() {
    let server = Refgate::start();
    let token = server.access_token("app").await;
    let attempts = (0..8).map(|i| {
        let body = json!({"token": token, "patch": {"winner": i}, "if_version": 1});
        let server = &server;
        async move { server.mutate(&body).await }
    });
    let results = futures::future::join_all(attempts).await;
    let ok: Vec<_> = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::OK)
        .collect();
    assert_eq!(ok.len(), 1, "{results:?}");
    for (status, body) in &results {
        if *status != StatusCode::OK {
            assert_eq!(*status, StatusCode::CONFLICT, "{results:?}");
            assert_eq!(body["error"], "conflict", "{body}");
            assert_eq!(body["version"], 2, "{body}");
        }
    }
    assert_eq!(server.introspect(&token).await["version"], 2);
}

#[tokio::test]
async fn concurrent_mutations_without_if_version_all_apply() {
    let server = Refgate::start();
    let token = server.access_token("app").await;
    let attempts = (0..24).map(|i| {
        let body = json!({"token": token, "patch": {format!("k{i}"): i}});
        let server = &server;
        async move { server.mutate(&body).await }
    });
    let results = futures::future::join_all(attempts).await;
    for (status, body) in &results {
        assert_eq!(*status, StatusCode::OK, "{body}");
    }
    let view = server.introspect(&token).await;
    assert_eq!(view["version"], 25, "{view}");
    let custom = view["custom"].as_object().expect("custom is an object");
    assert_eq!(custom.len(), 24, "{view}");
}

#[tokio::test]
async fn custom_data_over_the_cap_is_413_and_not_stored() {
    let server = Refgate::start_with(Options {
        tokens: "custom_data_max = 512".into(),
        ..Options::default()
    });
    let token = server.access_token("app").await;

    let (status, body) = server
        .mutate(&json!({"token": token, "patch": {"big": "x".repeat(600)}}))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(body["error"].is_string(), "{body}");

    // Two patches that fit alone but not together: the merged data is capped.
    let (status, body) = server
        .mutate(&json!({"token": token, "patch": {"one": "y".repeat(300)}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .mutate(&json!({"token": token, "patch": {"two": "z".repeat(300)}}))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");

    let view = server.introspect(&token).await;
    assert_eq!(view["custom"], json!({"one": "y".repeat(300)}));
    assert_eq!(view["version"], 2);

    // Replacing the value keeps the merged size under the cap.
    let (status, body) = server
        .mutate(&json!({"token": token, "patch": {"one": null, "two": "z".repeat(300)}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        server.introspect(&token).await["custom"],
        json!({"two": "z".repeat(300)})
    );
}

#[tokio::test]
async fn body_far_over_the_cap_is_413() {
    let server = Refgate::start_with(Options {
        tokens: "custom_data_max = 512".into(),
        ..Options::default()
    });
    let token = server.access_token("app").await;
    let (status, body) = server
        .mutate(&json!({"token": token, "patch": {"huge": "x".repeat(200_000)}}))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(server.introspect(&token).await["version"], 1);
}

#[tokio::test]
async fn client_without_mutate_is_403_unauthorized_client() {
    let server = Refgate::start();
    let token = server.access_token("app").await;
    for client in ["introspector", "app"] {
        let secret = format!("{client}-secret");
        let answer = mutate_as(
            &server,
            Some((client, &secret)),
            &json!({"token": token, "patch": {"a": 1}}),
        )
        .await;
        assert_error(&answer, StatusCode::FORBIDDEN, "unauthorized_client");
    }
    assert_eq!(server.introspect(&token).await["version"], 1);
}

#[tokio::test]
async fn missing_or_bad_basic_credentials_are_401_invalid_client() {
    let server = Refgate::start();
    let token = server.access_token("app").await;
    let body = json!({"token": token, "patch": {"a": 1}});

    // No credentials at all.
    assert_basic_challenge(&mutate_as(&server, None, &body).await);
    // Wrong secret, unknown client, empty secret.
    assert_basic_challenge(&mutate_as(&server, Some(("middle", "wrong")), &body).await);
    assert_basic_challenge(&mutate_as(&server, Some(("nobody", "nobody-secret")), &body).await);
    assert_basic_challenge(&mutate_as(&server, Some(("middle", "")), &body).await);

    // A malformed Basic header and another scheme.
    for header in ["Basic !!!not-base64!!!", "Bearer middle-secret", "Basic"] {
        let response = http()
            .post(server.url("/oauth2/mutate"))
            .header(AUTHORIZATION, header)
            .json(&body)
            .send()
            .await
            .expect("request");
        assert_basic_challenge(&answer(response).await);
    }
    assert_eq!(server.introspect(&token).await["version"], 1);
}

#[tokio::test]
async fn client_secret_post_style_credentials_are_refused() {
    let server = Refgate::start();
    let token = server.access_token("app").await;

    // Credentials as JSON members.
    let answer_json = mutate_as(
        &server,
        None,
        &json!({
            "token": token,
            "patch": {"a": 1},
            "client_id": "middle",
            "client_secret": "middle-secret",
        }),
    )
    .await;
    assert_basic_challenge(&answer_json);

    // Credentials in a form body, as client_secret_post sends them.
    let response = http()
        .post(server.url("/oauth2/mutate"))
        .form(&[
            ("client_id", "middle"),
            ("client_secret", "middle-secret"),
            ("token", token.as_str()),
            ("patch", r#"{"a":1}"#),
        ])
        .send()
        .await
        .expect("request");
    assert_basic_challenge(&answer(response).await);

    // Credentials in the query string.
    let response = http()
        .post(server.url("/oauth2/mutate?client_id=middle&client_secret=middle-secret"))
        .json(&json!({"token": token, "patch": {"a": 1}}))
        .send()
        .await
        .expect("request");
    assert_basic_challenge(&answer(response).await);

    assert_eq!(server.introspect(&token).await["version"], 1);
}

#[tokio::test]
async fn inactive_or_unknown_token_is_400_invalid_token() {
    let server = Refgate::start();
    let middle = Some(("middle", "middle-secret"));

    let unknown = format!("rgat_{}", "A".repeat(43));
    let revoked = server.access_token("app").await;
    let (status, _) = server
        .post_form(
            "/oauth2/revoke",
            Some(("app", "app-secret")),
            &[("token", &revoked)],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.introspect(&revoked).await, json!({"active": false}));

    for token in [
        unknown.as_str(),
        revoked.as_str(),
        "not-a-token",
        "rgat_short",
    ] {
        let answer = mutate_as(&server, middle, &json!({"token": token, "patch": {"a": 1}})).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_token");
    }
}

#[tokio::test]
async fn expired_token_is_400_invalid_token() {
    let server = Refgate::start();
    let (status, body) = server
        .token(
            "minter",
            &[
                ("grant_type", "arbitrary_token"),
                ("subject", "short-lived"),
                ("issuer", "https://idp.example.com"),
                ("scope", "photos.read"),
                ("access_token_lifetime", "1"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = str_of(&body, "access_token").to_string();
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    let answer = mutate_as(
        &server,
        Some(("middle", "middle-secret")),
        &json!({"token": token, "patch": {"a": 1}}),
    )
    .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_token");
}

#[tokio::test]
async fn refresh_token_is_not_a_mutate_subject() {
    let server = Refgate::start();
    let (_, refresh) = app_offline_pair(&server).await;
    let answer = mutate_as(
        &server,
        Some(("middle", "middle-secret")),
        &json!({"token": refresh, "patch": {"a": 1}}),
    )
    .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_token");
}

#[tokio::test]
async fn patch_that_is_not_an_object_is_400_invalid_request() {
    let server = Refgate::start();
    let token = server.access_token("app").await;
    let middle = Some(("middle", "middle-secret"));
    for patch in [
        json!([1, 2]),
        json!("text"),
        json!(5),
        json!(null),
        json!(true),
    ] {
        let answer = mutate_as(&server, middle, &json!({"token": token, "patch": patch})).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_request");
    }
    // The patch member is required.
    let answer = mutate_as(&server, middle, &json!({"token": token})).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(server.introspect(&token).await["version"], 1);
}

#[tokio::test]
async fn body_that_is_not_the_json_envelope_is_400_invalid_request() {
    let server = Refgate::start();
    let token = server.access_token("app").await;
    let send = |content_type: &'static str, body: String| {
        let request = http()
            .post(server.url("/oauth2/mutate"))
            .basic_auth("middle", Some("middle-secret"))
            .header(CONTENT_TYPE, content_type)
            .body(body);
        async move { answer(request.send().await.expect("request")).await }
    };
    let envelope = json!({"token": token, "patch": {"a": 1}}).to_string();

    let cases = [
        ("application/json", "{not json".to_string()),
        ("application/json", "[]".to_string()),
        ("application/json", json!({"patch": {"a": 1}}).to_string()),
        (
            "application/json",
            json!({"token": 5, "patch": {}}).to_string(),
        ),
        (
            "application/json",
            json!({"token": token, "patch": {}, "if_version": "one"}).to_string(),
        ),
        ("text/plain", envelope.clone()),
        ("application/x-www-form-urlencoded", envelope),
    ];
    for (content_type, body) in cases {
        let answer = send(content_type, body.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{content_type} {body}: {}",
            answer.body
        );
        assert_eq!(answer.body["error"], "invalid_request", "{body}");
    }
    // A media type parameter is fine.
    let answer = send(
        "application/json; charset=utf-8",
        json!({"token": token, "patch": {"a": 1}}).to_string(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}

#[tokio::test]
async fn custom_data_survives_the_apps_own_refresh() {
    let server = Refgate::start();
    let (access, refresh) = app_offline_pair(&server).await;
    let credential = json!({"credentials": {"photos": {
        "access_token": "downstream-at",
        "refresh_token": "downstream-rt",
        "token_type": "Bearer",
        "expires_at": 1_767_225_600,
        "authority": "photos-as",
    }}});
    let (status, body) = server
        .mutate(&json!({"token": access, "patch": credential}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], 2);

    let (status, body) = server
        .token(
            "app",
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "refresh failed: {body}");
    let new_access = str_of(&body, "access_token");
    let new_refresh = str_of(&body, "refresh_token");
    assert_ne!(new_access, access);

    let view = server.introspect(new_access).await;
    assert_eq!(view["active"], true);
    assert_eq!(view["custom"], credential);
    assert_eq!(view["version"], 2);

    // A mutation through the new access token reaches the same grant, and a
    // second refresh still carries it.
    let (status, body) = server
        .mutate(&json!({"token": new_access, "patch": {"note": "after refresh"}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], 3);
    let (status, body) = server
        .token(
            "app",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", new_refresh),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "second refresh failed: {body}");
    let view = server.introspect(str_of(&body, "access_token")).await;
    assert_eq!(view["custom"]["note"], "after refresh");
    assert_eq!(view["custom"]["credentials"], credential["credentials"]);
    assert_eq!(view["version"], 3);
}

#[tokio::test]
async fn custom_data_survives_a_minted_tokens_refresh() {
    let server = Refgate::start();
    let (status, body) = server
        .token(
            "minter",
            &[
                ("grant_type", "arbitrary_token"),
                ("subject", "alice"),
                ("issuer", "https://idp.example.com"),
                ("scope", "photos.read offline_access"),
                ("arbitrary_json", r#"{"seed": {"x": 1}}"#),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let access = str_of(&body, "access_token").to_string();
    let refresh = str_of(&body, "refresh_token").to_string();

    let (status, body) = server
        .mutate(&json!({"token": access, "patch": {"seed": {"y": 2}}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, body) = server
        .token(
            "minter",
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "refresh failed: {body}");
    let view = server.introspect(str_of(&body, "access_token")).await;
    assert_eq!(view["custom"], json!({"seed": {"x": 1, "y": 2}}));
    assert_eq!(view["version"], 2);
    assert_eq!(view["sub"], "alice");
}

#[tokio::test]
async fn only_reveal_custom_callers_see_custom_and_version() {
    let server = Refgate::start();
    let token = server.access_token("app").await;
    let (status, body) = server
        .mutate(&json!({"token": token, "patch": {"secret-ish": "downstream"}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let revealed = introspect_as(&server, "middle", &token).await;
    assert_eq!(revealed["custom"], json!({"secret-ish": "downstream"}));
    assert_eq!(revealed["version"], 2);

    let plain = introspect_as(&server, "introspector", &token).await;
    assert_eq!(plain["active"], true);
    assert_eq!(plain["sub"], "app");
    let members = plain.as_object().expect("an object");
    assert!(!members.contains_key("custom"), "{plain}");
    assert!(!members.contains_key("version"), "{plain}");
    assert!(
        !plain.to_string().contains("downstream"),
        "custom data leaked: {plain}"
    );
}

#[tokio::test]
async fn mutate_answers_carry_no_store() {
    let server = Refgate::start();
    let token = server.access_token("app").await;
    let answer = mutate_as(
        &server,
        Some(("middle", "middle-secret")),
        &json!({"token": token, "patch": {"a": 1}}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer
            .headers
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
}

#[tokio::test]
async fn mutate_endpoint_is_listed_in_metadata() {
    let server = Refgate::start();
    let response = http()
        .get(server.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let metadata: Value = response.json().await.expect("JSON metadata");
    assert_eq!(metadata["issuer"], server.base);
    assert_eq!(
        metadata["mutate_endpoint"],
        format!("{}/oauth2/mutate", server.base)
    );
}

//! Failed client authentications per client id (`[tokens] auth_failures`):
//! past the limit the id gets 429 with `Retry-After`, even with the right
//! secret, while other clients are served untouched; unknown ids are
//! limited the same way, so the 429 tells nothing about which ids exist.

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

/// A client-credentials request as `id` with `secret` (HTTP Basic): the
/// status, `Retry-After` and the JSON body.
async fn attempt(server: &Refgate, id: &str, secret: &str) -> (StatusCode, Option<u64>, Value) {
    let response = http()
        .post(server.url("/oauth2/token"))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("token request");
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = response.json().await.unwrap_or(Value::Null);
    (status, retry_after, body)
}

#[tokio::test]
async fn a_client_id_that_fails_too_often_is_refused_for_the_period() {
    let server = Refgate::start_with(Options {
        tokens: "auth_failures = \"5/min\"".to_string(),
        ..Options::default()
    });
    for id in ["app", "nobody-by-this-name"] {
        for n in 0..5 {
            let (status, _, body) = attempt(&server, id, "wrong").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{id} #{n}: {body}");
            assert_eq!(body["error"], "invalid_client");
        }
        let (status, retry_after, body) = attempt(&server, id, "wrong").await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{id}: {body}");
        assert_eq!(body["error"], "rate_limited", "{id}");
        assert!(
            retry_after.is_some_and(|s| (1..=60).contains(&s)),
            "{id}: Retry-After {retry_after:?}"
        );
    }
    // The right secret is refused too until the period passes.
    let (status, _, body) = attempt(&server, "app", "app-secret").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    // Other clients are untouched.
    let (status, _, body) = attempt(&server, "other", "other-secret").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["access_token"].is_string(), "{body}");
    // Introspection authenticates the same way, with the same counter.
    let answer = http()
        .post(server.url("/oauth2/introspect"))
        .basic_auth("app", Some("app-secret"))
        .form(&[("token", "rgat_x")])
        .send()
        .await
        .expect("introspection");
    assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn the_limit_can_be_switched_off_and_bad_values_are_refused() {
    let server = Refgate::start_with(Options {
        tokens: "auth_failures = \"off\"".to_string(),
        ..Options::default()
    });
    for n in 0..40 {
        let (status, _, body) = attempt(&server, "app", "wrong").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "#{n}: {body}");
    }
    let (status, _, body) = attempt(&server, "app", "app-secret").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let mut server = server;
    server.stop_cleanly();
    let original = std::fs::read_to_string(&server.config_path).expect("config");
    for bad in ["30", "0/min", "30/h", "many/s", ""] {
        let config = original.replace(
            "auth_failures = \"off\"",
            &format!("auth_failures = \"{bad}\""),
        );
        std::fs::write(&server.config_path, config).expect("config");
        let out = server
            .command()
            .arg("check")
            .arg("--config")
            .arg(&server.config_path)
            .output()
            .expect("run check");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad:?} accepted");
        assert!(stderr.contains("tokens.auth_failures"), "{bad:?}: {stderr}");
    }
}

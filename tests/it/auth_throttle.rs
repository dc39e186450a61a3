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
        server.assert_check_refuses(&config, "tokens.auth_failures");
    }
}

#[tokio::test]
async fn a_noisy_client_is_limited_while_others_pass_untouched() {
    let upstream = crate::common::upstream::Upstream::start().await;
    let url = upstream.url();
    let mut server = Refgate::start_with(Options {
        extra: format!(
            "{}{}",
            credential_route("photos", "/photos/", &url, "rate_limit = \"2/min\""),
            public_route("open", "/open/", &url, "rate_limit = \"2/min\"")
        ),
        ..Options::default()
    });
    // The token endpoint, per client: `minter` may ask 3 times a minute.
    let config = std::fs::read_to_string(&server.config_path).expect("config");
    let config = config.replacen(
        "id = \"minter\"\n",
        "id = \"minter\"\nrate_limit = \"3/min\"\n",
        1,
    );
    let metrics_port = server.reserve_metrics_port();
    let config = config.replacen(
        "[listen]\n",
        &format!("[listen]\nmetrics = \"127.0.0.1:{metrics_port}\"\n"),
        1,
    );
    std::fs::write(&server.config_path, config).expect("config");
    server.restart();

    let mint = |n: usize| {
        let server = &server;
        async move {
            let response = http()
                .post(server.url("/oauth2/token"))
                .basic_auth("minter", Some("minter-secret"))
                .form(&[
                    ("grant_type", "arbitrary_token"),
                    ("subject", &format!("user-{n}")),
                    ("issuer", "https://idp.example.com"),
                ])
                .send()
                .await
                .expect("token request");
            let retry = response.headers().get("retry-after").cloned();
            (
                response.status(),
                retry,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    for n in 0..3 {
        let (status, _, body) = mint(n).await;
        assert_eq!(status, StatusCode::OK, "#{n}: {body}");
    }
    let (status, retry, body) = mint(3).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"], "rate_limited");
    assert!(retry.is_some(), "no Retry-After");
    // Another client is untouched.
    let token = server.access_token("app").await;
    assert!(token.starts_with("rgat_"));

    // A route, per calling client.
    let app = server.token_with_photos().await;
    let other = server.access_token("other").await;
    server
        .store_credential(&other, "photos", credential("down-other", "Bearer"))
        .await;
    let get = |path: &'static str, token: Option<String>| {
        let server = &server;
        async move {
            let mut request = http().get(format!("{}{path}", server.proxy));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.expect("proxy request");
            let retry = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let id = response.headers().get("x-request-id").cloned();
            (
                response.status(),
                retry,
                id,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    for _ in 0..2 {
        let (status, ..) = get("/photos/a", Some(app.clone())).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, retry, id, body) = get("/photos/a", Some(app.clone())).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"], "rate_limited");
    assert!(retry.is_some_and(|s| (1..=60).contains(&s)), "{retry:?}");
    assert!(id.is_some());
    let (status, ..) = get("/photos/a", Some(other.clone())).await;
    assert_eq!(status, StatusCode::OK, "another client on the same route");
    // A public route: its callers share one bucket.
    for _ in 0..2 {
        assert_eq!(get("/open/x", None).await.0, StatusCode::OK);
    }
    assert_eq!(get("/open/x", None).await.0, StatusCode::TOO_MANY_REQUESTS);

    let metrics = http()
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    for line in [
        "refgate_rate_limited_total{limit=\"client\",name=\"minter\"} 1",
        "refgate_rate_limited_total{limit=\"route\",name=\"photos\"} 1",
        "refgate_rate_limited_total{limit=\"route\",name=\"open\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
}

#[tokio::test]
async fn check_refuses_rate_limits_that_cannot_work() {
    let mut server = Refgate::start();
    server.stop_cleanly();
    let original = std::fs::read_to_string(&server.config_path).expect("config");
    for (line, key) in [
        ("rate_limit = \"fast\"", "clients[0].rate_limit"),
        ("rate_limit = \"0/s\"", "clients[0].rate_limit"),
        ("rate_limit_burst = 5", "clients[0].rate_limit_burst"),
        (
            "rate_limit = \"5/s\"\nrate_limit_burst = 0",
            "clients[0].rate_limit_burst",
        ),
    ] {
        let config = original.replacen("id = \"app\"\n", &format!("id = \"app\"\n{line}\n"), 1);
        server.assert_check_refuses(&config, key);
    }
}

//! The audit trail (`[telemetry] audit_log`): one JSON line per security
//! event, in order, with the acting client, subject and grant, and never a
//! token, secret, custom value or downstream credential.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::common::oidc::OidcAs;
use crate::common::upstream::Upstream;
use crate::common::*;

const EXTRA_CLIENTS: &str = r#"
[[clients]]
id = "support"
secret_hash = "SUPPORT_HASH"
grant_types = ["client_credentials"]
revoke_subject = true

[[clients]]
id = "noisy"
secret_hash = "NOISY_HASH"
grant_types = ["client_credentials"]
rate_limit = "1/min"
"#;

/// A custom value that must never reach the audit trail.
const CUSTOM_VALUE: &str = "custom-value-never-audited";

fn audit_lines(path: &PathBuf) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("audit log");
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

async fn revoke(server: &Refgate, client: &str, params: &[(&str, &str)]) {
    let secret = format!("{client}-secret");
    let (status, body) = server
        .post_form("/oauth2/revoke", Some((client, &secret)), params)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walk_through_writes_the_expected_events_and_no_secret() {
    let oidc = OidcAs::start(3600);
    let upstream = Upstream::start().await;
    let extra = format!(
        "[telemetry]\naudit_log = \"audit.log\"\n\n{}\n{}\n{}",
        EXTRA_CLIENTS
            .replace("SUPPORT_HASH", &secret_hash("support-secret"))
            .replace("NOISY_HASH", &secret_hash("noisy-secret")),
        oidc.authority_toml("photos-as"),
        credential_route("photos", "/photos/", &upstream.url(), ""),
    );
    let server = Refgate::start_with(Options {
        tokens: "refresh_grace = \"0s\"\nauth_failures = \"2/min\"".into(),
        gateway: "authority_timeout = \"20s\"".into(),
        extra,
        ..Options::default()
    });
    let audit_path = server.dir.path().join("audit.log");
    let mut secrets: Vec<String> = [
        "app-secret",
        "middle-secret",
        "minter-secret",
        "support-secret",
        "noisy-secret",
        "wrong-secret",
        CUSTOM_VALUE,
    ]
    .map(String::from)
    .to_vec();

    // client_credentials, with the caller's request id.
    let response = http()
        .post(server.url("/oauth2/token"))
        .basic_auth("app", Some("app-secret"))
        .header("x-request-id", "walk-1")
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("token request");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("walk-1")
    );
    let body: Value = response.json().await.expect("token JSON");
    let app_token = str_of(&body, "access_token").to_string();
    secrets.push(app_token.clone());

    // An exchange of it (with a refresh token), a refresh and a replay.
    let (status, body) = server
        .token(
            "app",
            &[
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", &app_token),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
                ("scope", "photos.read offline_access"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let first_refresh = str_of(&body, "refresh_token").to_string();
    secrets.push(str_of(&body, "access_token").to_string());
    secrets.push(first_refresh.clone());
    let (status, body) = server.refresh("app", &first_refresh).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    secrets.push(str_of(&body, "access_token").to_string());
    secrets.push(str_of(&body, "refresh_token").to_string());
    let (status, body) = server.refresh("app", &first_refresh).await;
    assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_grant");

    // A scope change of the first token, then custom data on it.
    let (status, body) = server
        .token(
            "app",
            &[
                ("grant_type", EXCHANGE_MUTATE),
                ("subject_token", &app_token),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
                ("scope", "photos.read"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .mutate(
            &json!({"token": app_token, "patch": {"profile": {"note": CUSTOM_VALUE, "old": null}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Revocation of that token, and of every grant of one subject.
    revoke(&server, "app", &[("token", &app_token)]).await;
    let (alice, alice_refresh) = minted_pair(&server, "alice", &[]).await;
    secrets.push(alice);
    secrets.push(alice_refresh);
    revoke(
        &server,
        "support",
        &[("token", "alice"), ("token_type_hint", "subject")],
    )
    .await;

    // A client over its rate limit, and failed authentications.
    let body = server.client_token("noisy", None).await;
    secrets.push(str_of(&body, "access_token").to_string());
    let (status, body) = server
        .token("noisy", &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let mut throttled = false;
    for _ in 0..5 {
        let (status, _) = server
            .post_form(
                "/oauth2/token",
                Some(("made-up-id", "wrong-secret")),
                &[("grant_type", "client_credentials")],
            )
            .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            throttled = true;
            break;
        }
    }
    assert!(throttled, "failed authentications were never throttled");

    // A downstream authority refuses a credential refresh.
    let (down_access, down_refresh, _) = oidc.mint("carol").await;
    secrets.push(down_access.clone());
    secrets.push(down_refresh.clone());
    let body = server.client_token("app", None).await;
    let carol_app = str_of(&body, "access_token").to_string();
    secrets.push(carol_app.clone());
    let (status, body) = server
        .mutate(
            &json!({"token": carol_app, "patch": {"credentials": {"photos": {
                "access_token": down_access,
                "refresh_token": down_refresh,
                "token_type": "Bearer",
                "expires_at": unix_now() - 10,
                "authority": "photos-as",
            }}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    oidc.revoke_all().await;
    let answer = http()
        .get(format!("{}/photos/x", server.proxy))
        .bearer_auth(&carol_app)
        .header("x-request-id", "walk-gateway")
        .send()
        .await
        .expect("gateway request");
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);

    let text = std::fs::read_to_string(&audit_path).expect("audit log");
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "`{secret}` is in the audit log:\n{text}"
        );
    }
    let lines = audit_lines(&audit_path);
    let events: Vec<&str> = lines.iter().map(|l| str_of(l, "event")).collect();
    assert_eq!(
        events,
        [
            "token_issued",
            "token_exchanged",
            "token_refreshed",
            "refresh_replay_detected",
            "scope_mutated",
            "custom_mutated",
            "token_revoked",
            "token_issued",
            "token_revoked",
            "token_issued",
            "rate_limited",
            "rate_limited",
            "token_issued",
            "custom_mutated",
            "refresh_refused",
        ],
        "{text}"
    );
    for line in &lines {
        let time = str_of(line, "time");
        assert!(
            time.ends_with('Z') && humantime::parse_rfc3339(time).is_ok(),
            "{line}"
        );
        assert!(!str_of(line, "request_id").is_empty(), "{line}");
    }
    let member = |i: usize, key: &str| lines[i].get(key).cloned().unwrap_or(Value::Null);
    let first_grant = member(0, "grant_id");
    let exchanged_grant = member(1, "grant_id");
    assert!(first_grant.is_string() && exchanged_grant.is_string());
    assert_ne!(first_grant, exchanged_grant);

    let expect = |i: usize, expected: Value| {
        for (key, value) in expected.as_object().expect("object") {
            assert_eq!(&member(i, key), value, "{key} of line {i}: {}", lines[i]);
        }
    };
    expect(
        0,
        json!({"request_id": "walk-1", "client_id": "app", "sub": "app",
               "grant_type": "client_credentials"}),
    );
    expect(
        1,
        json!({"client_id": "app", "sub": "app", "subject_client_id": "app", "idp": null}),
    );
    expect(
        2,
        json!({"client_id": "app", "sub": "app", "grant_id": exchanged_grant}),
    );
    expect(
        3,
        json!({"client_id": "app", "sub": "app", "grant_id": exchanged_grant}),
    );
    expect(
        4,
        json!({"client_id": "app", "sub": "app", "grant_id": first_grant, "scope": "photos.read"}),
    );
    expect(
        5,
        json!({"client_id": "middle", "sub": "app", "grant_id": first_grant,
               "paths": ["/profile/note", "/profile/old"]}),
    );
    expect(
        6,
        json!({"client_id": "app", "sub": "app", "grant_id": first_grant,
               "token_type_hint": "access_token"}),
    );
    expect(
        7,
        json!({"client_id": "minter", "sub": "alice", "grant_type": "arbitrary_token"}),
    );
    expect(
        8,
        json!({"client_id": "support", "sub": "alice", "token_type_hint": "subject",
               "grants": 1, "grant_id": null}),
    );
    expect(9, json!({"client_id": "noisy", "sub": "noisy"}));
    expect(10, json!({"client_id": "noisy", "limit": "client"}));
    // An id nobody configured is never written as a client id.
    expect(11, json!({"client_id": null, "limit": "auth_failures"}));
    assert!(!text.contains("made-up-id"), "{text}");
    expect(
        13,
        json!({"client_id": "middle", "sub": "app", "grant_id": member(12, "grant_id"),
               "paths": ["/credentials/photos/access_token", "/credentials/photos/authority",
                         "/credentials/photos/expires_at", "/credentials/photos/refresh_token",
                         "/credentials/photos/token_type"]}),
    );
    expect(
        14,
        json!({"request_id": "walk-gateway", "client_id": "app", "sub": "app",
               "grant_id": member(12, "grant_id"),
               "credential": "photos", "authority": "photos-as"}),
    );

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&audit_path)
        .expect("audit log metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
}

#[tokio::test]
async fn token_service_answers_carry_a_request_id() {
    let server = Refgate::start();
    let made = http()
        .post(server.url("/oauth2/token"))
        .header("x-request-id", "has spaces and\ttabs")
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("token request");
    assert_eq!(made.status(), StatusCode::UNAUTHORIZED);
    let id = made
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("x-request-id")
        .to_string();
    assert!(
        !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
}

#[tokio::test]
async fn check_refuses_an_audit_log_it_cannot_write() {
    let server = Refgate::start();
    let config = std::fs::read_to_string(&server.config_path).expect("config");
    for bad in ["no-such-directory/audit.log", ".", ""] {
        let broken = format!("{config}\n[telemetry]\naudit_log = \"{bad}\"\n");
        server.assert_check_refuses(&broken, "telemetry.audit_log");
    }
    let fine = format!("{config}\n[telemetry]\naudit_log = \"stderr\"\n");
    let out = server.check_config(&fine);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

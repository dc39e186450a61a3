//! Phantom-token routes (`forward = "jwt"`): the upstream gets a JWT that
//! refgate signs (RFC 9068), verified here by `jose` on node with only the
//! published JWKS; revocation and scope changes reach the upstream at once.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

use crate::common::upstream::Upstream;
use crate::common::*;

const EXCHANGE_MUTATE: &str = "urn:ietf:params:oauth:grant-type:token-exchange-mutate";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// A refgate with two phantom routes to `upstream`: `/api/` (audience: its
/// name) and `/aud/` (audience `photos-api`).
fn start(upstream: &Upstream) -> Refgate {
    let url = upstream.url();
    Refgate::start_with(Options {
        extra: format!(
            "{}{}",
            route(
                "api",
                "/api/",
                &url,
                "required_scopes = [\"photos.read\"]\nforward = \"jwt\""
            ),
            route(
                "aud",
                "/aud/",
                &url,
                "forward = \"jwt\"\naudience = \"photos-api\""
            ),
        ),
        ..Options::default()
    })
}

async fn call(server: &Refgate, path: &str, token: &str) -> StatusCode {
    http()
        .get(format!("{}{path}", server.proxy))
        .bearer_auth(token)
        .send()
        .await
        .expect("proxy request")
        .status()
}

/// The JWT in the `Authorization` of the last request the upstream got.
fn last_jwt(upstream: &Upstream) -> String {
    let requests = upstream.requests();
    let last = requests.last().expect("the upstream got a request");
    assert_eq!(last.header_count("authorization"), 1);
    let value = last.header("authorization").expect("Authorization");
    assert!(
        !value.contains("rgat_"),
        "the reference token went upstream"
    );
    value
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a Bearer value: {value}"))
        .to_string()
}

/// What `jose` says of `jwt`, verifying it against refgate's JWKS.
fn verify_with_jose(server: &Refgate, audience: &str, jwt: &str) -> Value {
    verify_with(server, server, audience, jwt)
}

/// What `jose` says of `jwt` signed by `signer`, with the JWKS of `publisher`.
fn verify_with(publisher: &Refgate, signer: &Refgate, audience: &str, jwt: &str) -> Value {
    jose_verify(
        &publisher.url("/.well-known/jwks.json"),
        signer.url("").trim_end_matches('/'),
        audience,
        jwt,
        "at+jwt",
    )
}

fn payload(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).expect("a JWS has a payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
}

#[tokio::test]
async fn upstream_gets_an_rfc9068_jwt_that_jose_verifies_with_the_jwks() {
    let upstream = Upstream::start().await;
    let server = start(&upstream);
    let issued = server
        .client_token("app", Some("photos.read photos.write"))
        .await;
    let token = str_of(&issued, "access_token").to_string();
    let token_exp = server.introspect(&token).await["exp"]
        .as_i64()
        .expect("exp");

    assert_eq!(call(&server, "/api/x", &token).await, StatusCode::OK);
    let jwt = last_jwt(&upstream);
    let verified = verify_with_jose(&server, "api", &jwt);
    assert_eq!(verified["ok"], true, "{verified}");
    let header = &verified["header"];
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "ES256");
    assert!(header["kid"].is_string());
    let claims = &verified["payload"];
    assert_eq!(claims["sub"], "app");
    assert_eq!(claims["client_id"], "app");
    assert_eq!(claims["aud"], "api");
    assert_eq!(
        sorted_scopes(&claims["scope"]),
        ["photos.read", "photos.write"]
    );
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    assert!(claims.get("act").is_none());
    let (iat, exp) = (
        claims["iat"].as_i64().expect("iat"),
        claims["exp"].as_i64().expect("exp"),
    );
    assert!(
        exp > iat && exp <= iat + 300 && exp <= token_exp,
        "{claims}"
    );

    // The next request reuses it.
    assert_eq!(call(&server, "/api/y", &token).await, StatusCode::OK);
    assert_eq!(last_jwt(&upstream), jwt);

    // A route's audience is the JWT's `aud`; the wrong audience is refused.
    assert_eq!(call(&server, "/aud/x", &token).await, StatusCode::OK);
    let other = last_jwt(&upstream);
    assert_eq!(payload(&other)["aud"], "photos-api");
    assert_eq!(verify_with_jose(&server, "photos-api", &other)["ok"], true);
    assert_eq!(verify_with_jose(&server, "api", &other)["ok"], false);

    // A JWT altered on the way is refused by the verifier.
    let mut parts: Vec<String> = jwt.split('.').map(str::to_string).collect();
    let mut forged = payload(&jwt);
    forged["scope"] = Value::from("photos.read photos.write admin");
    parts[1] = URL_SAFE_NO_PAD.encode(forged.to_string());
    assert_eq!(
        verify_with_jose(&server, "api", &parts.join("."))["ok"],
        false
    );
}

#[tokio::test]
async fn revocation_reaches_a_phantom_route_with_the_next_request() {
    let upstream = Upstream::start().await;
    let server = start(&upstream);
    let token = server.access_token("app").await;
    assert_eq!(call(&server, "/api/x", &token).await, StatusCode::OK);
    let (status, _) = server
        .post_form(
            "/oauth2/revoke",
            Some(("app", "app-secret")),
            &[("token", &token)],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let before = upstream.requests().len();
    assert_eq!(
        call(&server, "/api/x", &token).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(upstream.requests().len(), before, "the upstream was called");
}

#[tokio::test]
async fn scope_mutation_gives_the_next_jwt_the_new_scopes() {
    let upstream = Upstream::start().await;
    let server = start(&upstream);
    let issued = server
        .client_token("app", Some("photos.read photos.write"))
        .await;
    let token = str_of(&issued, "access_token").to_string();
    assert_eq!(call(&server, "/api/x", &token).await, StatusCode::OK);
    let first = last_jwt(&upstream);
    assert_eq!(
        sorted_scopes(&payload(&first)["scope"]),
        ["photos.read", "photos.write"]
    );

    let (status, body) = server
        .token(
            "app",
            &[
                ("grant_type", EXCHANGE_MUTATE),
                ("subject_token", &token),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
                ("scope", "photos.read"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(call(&server, "/api/x", &token).await, StatusCode::OK);
    let second = last_jwt(&upstream);
    assert_ne!(second, first);
    assert_eq!(sorted_scopes(&payload(&second)["scope"]), ["photos.read"]);
    assert_eq!(verify_with_jose(&server, "api", &second)["ok"], true);
}

#[tokio::test]
async fn a_phantom_route_with_a_credential_or_an_unknown_mode_is_refused() {
    let server_dir = tempfile::tempdir().expect("temp dir");
    let path = server_dir.path().join("refgate.toml");
    let text = format!(
        r#"issuer = "http://127.0.0.1:1"

[listen]
token_service = "127.0.0.1:1"

[store]
url = "sqlite://data/refgate.db"
data_key = "{DATA_KEY}"

{}{}"#,
        route(
            "both",
            "/both/",
            "http://127.0.0.1:9",
            "forward = \"jwt\"\ncredential = \"photos\""
        ),
        route("odd", "/odd/", "http://127.0.0.1:9", "forward = \"xml\""),
    );
    std::fs::write(&path, &text).expect("write config");
    let output = output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_refgate"))
            .args(["check", "--config"])
            .arg(&path),
        Duration::from_secs(30),
    );
    let errors = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(output.status.code(), Some(1), "{errors}");
    assert!(errors.contains("routes[0].forward"), "{errors}");
    assert!(errors.contains("routes[1].forward"), "{errors}");
}

#[tokio::test]
async fn a_scope_change_on_one_instance_reaches_the_phantom_jwts_of_another() {
    let upstream = Upstream::start().await;
    let db = PgDatabase::create();
    let url = upstream.url();
    let options = Options {
        extra: route(
            "api",
            "/api/",
            &url,
            "required_scopes = [\"photos.read\"]\nforward = \"jwt\"",
        ),
        store_url: Some(db.url.clone()),
        ..Options::default()
    };
    let a = Refgate::start_with(options.clone());
    let b = Refgate::start_with(options);
    let issued = a
        .client_token("app", Some("photos.read photos.write"))
        .await;
    let token = str_of(&issued, "access_token").to_string();
    // B signs and caches a JWT with both scopes.
    assert_eq!(call(&b, "/api/x", &token).await, StatusCode::OK);
    assert_eq!(call(&b, "/api/x", &token).await, StatusCode::OK);
    let first = last_jwt(&upstream);
    // Same keys on both: A's JWKS verifies what B signed.
    // (Each test instance has its own issuer URL; a real cluster shares one.)
    assert_eq!(verify_with(&a, &b, "api", &first)["ok"], true);

    let (status, body) = a
        .token(
            "app",
            &[
                ("grant_type", EXCHANGE_MUTATE),
                ("subject_token", &token),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
                ("scope", "photos.read"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The change reaches B through the store's notifications: within a
    // moment, never a stale JWT after that.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        assert_eq!(call(&b, "/api/x", &token).await, StatusCode::OK);
        let scope = sorted_scopes(&payload(&last_jwt(&upstream))["scope"]);
        if scope == ["photos.read"] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "B kept the old scopes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop((a, b));
}

#[tokio::test]
async fn jwts_signed_before_a_forced_rotation_keep_verifying() {
    let upstream = Upstream::start().await;
    let server = start(&upstream);
    let token = server.access_token("app").await;
    assert_eq!(call(&server, "/api/x", &token).await, StatusCode::OK);
    let jwt = last_jwt(&upstream);
    let output = output_within(
        server
            .command()
            .args(["key", "rotate-signing", "--config"])
            .arg(&server.config_path),
        Duration::from_secs(30),
    );
    assert!(output.status.success());
    // The new key is published (before it signs anything) and the old one
    // stays: the JWT signed before still verifies.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let jwks: Value = http()
            .get(server.url("/.well-known/jwks.json"))
            .send()
            .await
            .expect("jwks")
            .json()
            .await
            .expect("JSON");
        if jwks["keys"].as_array().is_some_and(|k| k.len() == 2) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no second key");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(verify_with_jose(&server, "api", &jwt)["ok"], true);
}

#[tokio::test]
async fn an_exchanged_token_carries_its_actor_into_the_jwt() {
    let upstream = Upstream::start().await;
    let server = start(&upstream);
    let subject = server.client_token("other", None).await;
    let (status, body) = server
        .token(
            "app",
            &[
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ),
                ("subject_token", str_of(&subject, "access_token")),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
                ("scope", "photos.read"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = str_of(&body, "access_token").to_string();
    assert_eq!(call(&server, "/api/x", &token).await, StatusCode::OK);
    let verified = verify_with_jose(&server, "api", &last_jwt(&upstream));
    assert_eq!(verified["ok"], true, "{verified}");
    let claims = &verified["payload"];
    assert_eq!(claims["sub"], "other");
    assert_eq!(claims["client_id"], "app");
    assert_eq!(claims["act"]["sub"], "app");
    assert_eq!(claims["scope"], "photos.read");
}

#[tokio::test]
async fn with_caching_off_every_request_gets_a_newly_signed_jwt() {
    let upstream = Upstream::start().await;
    let server = Refgate::start_with(Options {
        gateway: "cache_capacity = 0".into(),
        extra: route(
            "api",
            "/api/",
            &upstream.url(),
            "required_scopes = [\"photos.read\"]\nforward = \"jwt\"",
        ),
        ..Options::default()
    });
    let token = server.access_token("app").await;
    assert_eq!(call(&server, "/api/x", &token).await, StatusCode::OK);
    let first = last_jwt(&upstream);
    assert_eq!(call(&server, "/api/y", &token).await, StatusCode::OK);
    let second = last_jwt(&upstream);
    assert_ne!(first, second, "a JWT was reused with caching off");
    assert_ne!(payload(&first)["jti"], payload(&second)["jti"]);
    for jwt in [&first, &second] {
        let verified = verify_with_jose(&server, "api", jwt);
        assert_eq!(verified["ok"], true, "{verified}");
        assert_eq!(verified["payload"]["sub"], "app");
    }
}

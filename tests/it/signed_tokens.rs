//! The token service's signed tokens: `arbitrary_token` with
//! `access_token_type=jwt` and the `arbitrary_identity` grant, each
//! verified outside refgate (`jose`, with only the published JWKS).

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

const ISSUER: &str = "https://idp.example.com";

const IDMAKER: &str = r#"
[[clients]]
id = "idmaker"
secret_hash = "IDMAKER_HASH"
grant_types = ["arbitrary_identity"]
allowed_issuers = ["https://idp.example.com"]
access_token_ttl = "10m"
"#;

fn start() -> Refgate {
    Refgate::start_with(Options {
        extra: IDMAKER.replace("IDMAKER_HASH", &secret_hash("idmaker-secret")),
        ..Options::default()
    })
}

fn verify(server: &Refgate, audience: &str, jwt: &str, typ: &str) -> Value {
    jose_verify(
        &server.url("/.well-known/jwks.json"),
        ISSUER,
        audience,
        jwt,
        typ,
    )
}

#[tokio::test]
async fn an_arbitrary_jwt_access_token_verifies_with_the_jwks() {
    let server = start();
    let (status, body) = server
        .token(
            "minter",
            &[
                ("grant_type", "arbitrary_token"),
                ("subject", "alice"),
                ("issuer", ISSUER),
                ("scope", "photos.read offline_access"),
                ("access_token_type", "jwt"),
                ("arbitrary_claims", r#"{"groups":["ops","dev"]}"#),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let jwt = str_of(&body, "access_token");
    assert!(!jwt.starts_with("rgat_"), "{body}");
    let verified = verify(&server, "-", jwt, "at+jwt");
    assert_eq!(verified["ok"], true, "{verified}");
    let claims = &verified["payload"];
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["client_id"], "minter");
    assert_eq!(claims["scope"], "photos.read offline_access");
    assert_eq!(claims["groups"], json!(["ops", "dev"]));
    assert!(claims["jti"].is_string());
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(lifetime, body["expires_in"].as_i64().unwrap(), "{claims}");
    // The refresh token works, and answers a reference token.
    let (status, refreshed) = server
        .refresh("minter", str_of(&body, "refresh_token"))
        .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert!(str_of(&refreshed, "access_token").starts_with("rgat_"));
    // A tampered token does not verify.
    let mut parts: Vec<String> = jwt.split('.').map(str::to_string).collect();
    parts[1] = parts[1].chars().rev().collect();
    let tampered = verify(&server, "-", &parts.join("."), "at+jwt");
    assert_eq!(tampered["ok"], false, "{tampered}");
}

#[tokio::test]
async fn arbitrary_identity_mints_an_id_token_for_an_asserted_issuer() {
    let server = start();
    let (status, body) = server
        .token(
            "idmaker",
            &[
                ("grant_type", "arbitrary_identity"),
                ("subject", "bob"),
                ("issuer", ISSUER),
                ("audience", "portal"),
                ("id_token_lifetime", "99999"),
                ("arbitrary_claims", r#"{"amr":["pwd"]}"#),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "N_A");
    assert_eq!(body["expires_in"], 600, "capped at the client's lifetime");
    let verified = verify(&server, "portal", str_of(&body, "id_token"), "JWT");
    assert_eq!(verified["ok"], true, "{verified}");
    let claims = &verified["payload"];
    assert_eq!(claims["sub"], "bob");
    assert_eq!(claims["azp"], "idmaker");
    assert_eq!(claims["amr"], json!(["pwd"]));
    // Without an audience, the client's own id.
    let (status, body) = server
        .token(
            "idmaker",
            &[
                ("grant_type", "arbitrary_identity"),
                ("subject", "bob"),
                ("issuer", ISSUER),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let verified = verify(&server, "idmaker", str_of(&body, "id_token"), "JWT");
    assert_eq!(verified["ok"], true, "{verified}");
}

#[tokio::test]
async fn bad_signed_token_requests_are_refused_and_issue_nothing() {
    let server = start();
    let big = format!(r#"{{"blob":["{}"]}}"#, "x".repeat(17 * 1024));
    for (client, params, error) in [
        (
            "minter",
            vec![("access_token_type", "opaque")],
            "invalid_request",
        ),
        (
            "minter",
            vec![
                ("access_token_type", "jwt"),
                ("arbitrary_claims", r#"{"iss":["https://evil.example"]}"#),
            ],
            "invalid_request",
        ),
        (
            "minter",
            vec![("access_token_type", "jwt"), ("arbitrary_claims", &big)],
            "invalid_request",
        ),
        (
            "idmaker",
            vec![("arbitrary_claims", r#"{"aud":["elsewhere"]}"#)],
            "invalid_request",
        ),
        (
            "idmaker",
            vec![("arbitrary_claims", &big)],
            "invalid_request",
        ),
        (
            "idmaker",
            vec![("id_token_lifetime", "-5")],
            "invalid_request",
        ),
    ] {
        let grant = if client == "minter" {
            "arbitrary_token"
        } else {
            "arbitrary_identity"
        };
        let mut all = vec![
            ("grant_type", grant),
            ("subject", "mallory"),
            ("issuer", ISSUER),
        ];
        all.extend(params.iter().cloned());
        let (status, body) = server.token(client, &all).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{params:?}: {body}");
        assert_eq!(body["error"], error, "{params:?}: {body}");
        assert!(body.get("access_token").is_none() && body.get("id_token").is_none());
    }
    // An issuer the client may not assert, and a client without the grant.
    let (status, body) = server
        .token(
            "idmaker",
            &[
                ("grant_type", "arbitrary_identity"),
                ("subject", "mallory"),
                ("issuer", "https://evil.example"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "unauthorized_client");
    let (status, body) = server
        .token(
            "minter",
            &[
                ("grant_type", "arbitrary_identity"),
                ("subject", "mallory"),
                ("issuer", ISSUER),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "unauthorized_client");
}

#[tokio::test]
async fn introspection_answers_a_signed_jwt_when_asked() {
    let server = start();
    let token = server.access_token("app").await;
    let introspect = |accept: Option<&'static str>| {
        let server = &server;
        let token = token.clone();
        async move {
            let mut request = http()
                .post(server.url("/oauth2/introspect"))
                .basic_auth("introspector", Some("introspector-secret"))
                .form(&[("token", token.as_str())]);
            if let Some(accept) = accept {
                request = request.header("accept", accept);
            }
            let response = request.send().await.expect("introspection");
            let status = response.status();
            let kind = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            (status, kind, response.text().await.expect("body"))
        }
    };
    let (status, kind, jwt) = introspect(Some("application/token-introspection+jwt")).await;
    assert_eq!(status, StatusCode::OK, "{jwt}");
    assert_eq!(kind, "application/token-introspection+jwt");
    let verified = jose_verify(
        &server.url("/.well-known/jwks.json"),
        server.url("").trim_end_matches('/'),
        "introspector",
        &jwt,
        "token-introspection+jwt",
    );
    assert_eq!(verified["ok"], true, "{verified}");
    let answer = &verified["payload"]["token_introspection"];
    assert_eq!(answer["active"], true, "{verified}");
    assert_eq!(answer["client_id"], "app");

    // JSON when asked for it, or for nothing in particular.
    for accept in [None, Some("application/json"), Some("*/*")] {
        let (status, kind, body) = introspect(accept).await;
        assert_eq!(status, StatusCode::OK, "{accept:?}");
        assert!(kind.starts_with("application/json"), "{accept:?}: {kind}");
        let body: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(body["active"], true);
    }
    // Neither: 406.
    for accept in ["text/html", "application/token-introspection+jwt;q=0"] {
        let (status, _, body) = introspect(Some(accept)).await;
        assert_eq!(status, StatusCode::NOT_ACCEPTABLE, "{accept}: {body}");
        let body: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(body["error"], "invalid_request");
    }
    let metadata: Value = http()
        .get(server.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .expect("metadata")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        metadata["introspection_signing_alg_values_supported"],
        json!(["ES256"])
    );
}

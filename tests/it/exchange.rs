//! RFC 8693 token exchange: refgate access tokens and trusted id_tokens as
//! subjects, `act`, `aud`, scope bounds, and every way a subject is refused.

use crate::common::*;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";

/// The trusted issuer of the fixture key, and the audience it signs for.
const TRUSTED_ISSUER: &str = "https://accounts.test.example";
const AUDIENCE: &str = "refgate-test-client";
/// `kid` of the fixture key in `issuer-jwks.json`.
const KID: &str = "test-key-1";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

fn read_fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// `[[trusted_issuers]]` reading the fixture JWKS from a file.
fn trusted_issuer_file() -> String {
    format!(
        "[[trusted_issuers]]\nissuer = \"{TRUSTED_ISSUER}\"\njwks_file = \"{}\"\naudiences = [\"{AUDIENCE}\", \"second-audience\"]\n",
        fixture("issuer-jwks.json").display()
    )
}

/// Standard id_token claims; tests override members as they need.
fn id_claims(sub: &str) -> Value {
    let now = unix_now();
    json!({
        "iss": TRUSTED_ISSUER,
        "sub": sub,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
    })
}

/// Signs `claims` as an RS256 JWT with the fixture key `key_file`.
fn sign_rs256(claims: &Value, key_file: &str) -> String {
    let key = EncodingKey::from_rsa_pem(&read_fixture(key_file)).expect("fixture RSA key");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(KID.to_string());
    jsonwebtoken::encode(&header, claims, &key).expect("sign JWT")
}

/// An id_token signed by the trusted issuer's key.
fn good_id_token(claims: &Value) -> String {
    sign_rs256(claims, "issuer-key.pem")
}

/// Exchanges `subject_token` as `client`, with extra parameters.
async fn exchange(
    server: &Refgate,
    client: &str,
    subject_token: &str,
    subject_token_type: &str,
    extra: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut params = vec![
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", subject_token),
        ("subject_token_type", subject_token_type),
    ];
    params.extend_from_slice(extra);
    server.token(client, &params).await
}

// --- access_token subjects ----------------------------------------------

#[tokio::test]
async fn exchanged_access_token_keeps_subject_and_names_caller_as_actor() {
    let server = Refgate::start();
    let subject = server.client_token("other", None).await;
    let (status, body) = exchange(
        &server,
        "app",
        str_of(&subject, "access_token"),
        ACCESS_TOKEN_TYPE,
        &[("scope", "reports.read")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["issued_token_type"], ACCESS_TOKEN_TYPE);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "reports.read");
    assert!(body["expires_in"].as_i64().is_some_and(|e| e > 0), "{body}");
    let token = str_of(&body, "access_token");
    assert!(token.starts_with("rgat_"));
    assert_ne!(token, str_of(&subject, "access_token"));

    let view = server.introspect(token).await;
    assert_eq!(view["active"], true);
    assert_eq!(view["sub"], "other");
    assert_eq!(view["client_id"], "app");
    assert_eq!(view["act"], json!({"sub": "app"}));
    assert_eq!(view["scope"], "reports.read");
    assert_eq!(view["iss"], server.base.as_str());
    assert!(view.get("aud").is_none(), "{view}");
}

#[tokio::test]
async fn exchanging_an_exchanged_token_nests_the_earlier_actor() {
    let server = Refgate::start();
    let subject = server.client_token("other", None).await;
    let (status, first) = exchange(
        &server,
        "app",
        str_of(&subject, "access_token"),
        ACCESS_TOKEN_TYPE,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (status, second) = exchange(
        &server,
        "gateway",
        str_of(&first, "access_token"),
        ACCESS_TOKEN_TYPE,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let view = server.introspect(str_of(&second, "access_token")).await;
    assert_eq!(view["sub"], "other");
    assert_eq!(
        view["act"],
        json!({"sub": "gateway", "act": {"sub": "app"}})
    );
}

#[tokio::test]
async fn exchange_with_one_audience_records_aud_as_a_string() {
    let server = Refgate::start();
    let subject = server.client_token("other", None).await;
    let (status, body) = exchange(
        &server,
        "app",
        str_of(&subject, "access_token"),
        ACCESS_TOKEN_TYPE,
        &[("audience", "reports-api")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let view = server.introspect(str_of(&body, "access_token")).await;
    assert_eq!(view["aud"], "reports-api");

    let (status, body) = exchange(
        &server,
        "app",
        str_of(&subject, "access_token"),
        ACCESS_TOKEN_TYPE,
        &[("resource", "https://reports.example.com/api")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let view = server.introspect(str_of(&body, "access_token")).await;
    assert_eq!(view["aud"], "https://reports.example.com/api");
}

#[tokio::test]
async fn exchange_with_several_audiences_records_aud_as_an_array() {
    let server = Refgate::start();
    let subject = server.client_token("other", None).await;
    let (status, body) = exchange(
        &server,
        "app",
        str_of(&subject, "access_token"),
        ACCESS_TOKEN_TYPE,
        &[
            ("audience", "reports-api"),
            ("audience", "photos-api"),
            ("resource", "https://reports.example.com/api"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let view = server.introspect(str_of(&body, "access_token")).await;
    let aud = view["aud"].as_array().expect("aud is an array");
    let mut aud: Vec<&str> = aud.iter().filter_map(Value::as_str).collect();
    aud.sort_unstable();
    assert_eq!(
        aud,
        [
            "https://reports.example.com/api",
            "photos-api",
            "reports-api"
        ]
    );
}

#[tokio::test]
async fn exchange_scope_is_bounded_by_the_caller_not_the_subject() {
    let server = Refgate::start();
    // The subject only holds photos.read; the caller may ask for more.
    let subject = server.client_token("other", None).await;
    assert_eq!(subject["scope"], "photos.read");
    let (status, body) = exchange(
        &server,
        "app",
        str_of(&subject, "access_token"),
        ACCESS_TOKEN_TYPE,
        &[("scope", "photos.write reports.read")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let view = server.introspect(str_of(&body, "access_token")).await;
    assert_eq!(
        sorted_scopes(&view["scope"]),
        ["photos.write", "reports.read"]
    );

    // Without `scope`: every scope of the caller except offline_access.
    let (status, body) = exchange(
        &server,
        "gateway",
        str_of(&subject, "access_token"),
        ACCESS_TOKEN_TYPE,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "reports.read");
    assert!(body.get("refresh_token").is_none(), "{body}");

    // A scope the caller lacks is refused even though the subject has it.
    let (status, body) = exchange(
        &server,
        "gateway",
        str_of(&subject, "access_token"),
        ACCESS_TOKEN_TYPE,
        &[("scope", "photos.read")],
    )
    .await;
    assert_bad_request(status, &body, "invalid_scope");
}

#[tokio::test]
async fn exchange_with_offline_access_adds_a_refresh_token() {
    let server = Refgate::start();
    let subject = server.client_token("other", None).await;
    let (status, body) = exchange(
        &server,
        "gateway",
        str_of(&subject, "access_token"),
        ACCESS_TOKEN_TYPE,
        &[("scope", "reports.read offline_access")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let refresh = str_of(&body, "refresh_token");
    let (status, refreshed) = server
        .token(
            "gateway",
            &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    let view = server.introspect(str_of(&refreshed, "access_token")).await;
    assert_eq!(view["sub"], "other");
    assert_eq!(view["act"], json!({"sub": "gateway"}));
}

#[tokio::test]
async fn exchange_without_subject_token_is_invalid_request() {
    let server = Refgate::start();
    let (status, body) = server
        .token(
            "app",
            &[
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
            ],
        )
        .await;
    assert_bad_request(status, &body, "invalid_request");
    let subject = server.client_token("app", None).await;
    let (status, body) = server
        .token(
            "app",
            &[
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", str_of(&subject, "access_token")),
            ],
        )
        .await;
    assert_bad_request(status, &body, "invalid_request");
}

#[tokio::test]
async fn exchange_of_unknown_or_malformed_subject_is_invalid_request() {
    let server = Refgate::start();
    for token in [
        "rgat_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "rgat_short",
        "garbage",
    ] {
        let (status, body) = exchange(&server, "app", token, ACCESS_TOKEN_TYPE, &[]).await;
        assert_bad_request(status, &body, "invalid_request");
    }
}

#[tokio::test]
async fn exchange_of_a_refresh_token_or_unsupported_type_is_invalid_request() {
    let server = Refgate::start();
    let subject = server.client_token("other", None).await;
    let (status, granted) = exchange(
        &server,
        "app",
        str_of(&subject, "access_token"),
        ACCESS_TOKEN_TYPE,
        &[("scope", "photos.read offline_access")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{granted}");
    let refresh = str_of(&granted, "refresh_token");
    let (status, body) = exchange(&server, "app", refresh, ACCESS_TOKEN_TYPE, &[]).await;
    assert_bad_request(status, &body, "invalid_request");
    let (status, body) = exchange(
        &server,
        "app",
        refresh,
        "urn:ietf:params:oauth:token-type:refresh_token",
        &[],
    )
    .await;
    assert_bad_request(status, &body, "invalid_request");
}

#[tokio::test]
async fn exchange_of_expired_subject_is_invalid_request() {
    let server = Refgate::start();
    // minter may shorten a token's lifetime to one second.
    let (status, minted) = server
        .token(
            "minter",
            &[
                ("grant_type", "arbitrary_token"),
                ("subject", "dave"),
                ("issuer", "https://idp.example.com"),
                ("access_token_lifetime", "1"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{minted}");
    let token = str_of(&minted, "access_token");
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.introspect(token).await["active"] == true {
        assert!(Instant::now() < deadline, "token did not expire");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body) = exchange(&server, "app", token, ACCESS_TOKEN_TYPE, &[]).await;
    assert_bad_request(status, &body, "invalid_request");
}

#[tokio::test]
async fn exchange_of_revoked_subject_is_invalid_request() {
    let server = Refgate::start();
    let subject = server.client_token("app", None).await;
    let token = str_of(&subject, "access_token");
    // Warm the lookup cache first: revocation must win over it.
    let (status, body) = exchange(&server, "app", token, ACCESS_TOKEN_TYPE, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = server
        .post_form(
            "/oauth2/revoke",
            Some(("app", "app-secret")),
            &[("token", token)],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = exchange(&server, "app", token, ACCESS_TOKEN_TYPE, &[]).await;
    assert_bad_request(status, &body, "invalid_request");
}

#[tokio::test]
async fn exchange_with_a_resource_that_is_not_an_absolute_uri_is_invalid_target() {
    let server = Refgate::start();
    let subject = server.client_token("other", None).await;
    for resource in [
        "not a uri",
        "/relative/path",
        "https://reports.example.com/api#fragment",
    ] {
        let (status, body) = exchange(
            &server,
            "app",
            str_of(&subject, "access_token"),
            ACCESS_TOKEN_TYPE,
            &[("resource", resource)],
        )
        .await;
        assert_bad_request(status, &body, "invalid_target");
    }
}

#[tokio::test]
async fn exchange_for_an_audience_outside_the_client_list_is_invalid_target() {
    let server = Refgate::start_with(Options {
        extra: format!(
            "[[clients]]\nid = \"fenced\"\nsecret_hash = \"{}\"\ngrant_types = [\"{TOKEN_EXCHANGE}\"]\nscopes = [\"reports.read\"]\naudiences = [\"reports-api\", \"https://reports.example.com/\"]\nexchange_from = [\"other\"]\n",
            secret_hash("fenced-secret")
        ),
        ..Options::default()
    });
    let subject = server.client_token("other", None).await;
    let token = str_of(&subject, "access_token");
    for (name, value) in [
        ("audience", "photos-api"),
        ("resource", "https://photos.example.com/"),
    ] {
        let (status, body) = exchange(
            &server,
            "fenced",
            token,
            ACCESS_TOKEN_TYPE,
            &[(name, value)],
        )
        .await;
        assert_bad_request(status, &body, "invalid_target");
    }
    let (status, body) = exchange(
        &server,
        "fenced",
        token,
        ACCESS_TOKEN_TYPE,
        &[
            ("audience", "reports-api"),
            ("resource", "https://reports.example.com/"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn exchange_with_actor_token_is_invalid_request() {
    let server = Refgate::start();
    let subject = server.client_token("other", None).await;
    let actor = server.client_token("app", None).await;
    let (status, body) = exchange(
        &server,
        "app",
        str_of(&subject, "access_token"),
        ACCESS_TOKEN_TYPE,
        &[
            ("actor_token", str_of(&actor, "access_token")),
            ("actor_token_type", ACCESS_TOKEN_TYPE),
        ],
    )
    .await;
    assert_bad_request(status, &body, "invalid_request");
}

// --- id_token subjects -----------------------------------------------------

#[tokio::test]
async fn id_token_from_trusted_issuer_is_exchanged_for_its_subject() {
    let server = Refgate::start_with(Options {
        extra: trusted_issuer_file(),
        ..Options::default()
    });
    let id_token = good_id_token(&id_claims("user-42"));
    let (status, body) = exchange(
        &server,
        "app",
        &id_token,
        ID_TOKEN_TYPE,
        &[("scope", "photos.read"), ("audience", "photos-api")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["issued_token_type"], ACCESS_TOKEN_TYPE);
    let view = server.introspect(str_of(&body, "access_token")).await;
    assert_eq!(view["active"], true);
    assert_eq!(view["sub"], "user-42");
    assert_eq!(view["act"], json!({"sub": "app"}));
    assert_eq!(view["aud"], "photos-api");
    assert_eq!(view["scope"], "photos.read");
    // refgate issues the token; the id_token's issuer is not passed on.
    assert_eq!(view["iss"], server.base.as_str());
}

#[tokio::test]
async fn an_id_token_subject_keeps_its_issuer_apart_from_client_subjects() {
    let server = Refgate::start_with(Options {
        extra: trusted_issuer_file(),
        ..Options::default()
    });
    // A user of the IdP who happens to be called like a client.
    let id_token = good_id_token(&id_claims("middle"));
    let (status, body) = exchange(&server, "app", &id_token, ID_TOKEN_TYPE, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let from_idp = server.introspect(str_of(&body, "access_token")).await;
    assert_eq!(from_idp["sub"], "middle");
    assert_eq!(from_idp["idp"], TRUSTED_ISSUER, "{from_idp}");
    let client = server.client_token("middle", None).await;
    let client_view = server.introspect(str_of(&client, "access_token")).await;
    assert_eq!(client_view["sub"], "middle");
    assert!(client_view.get("idp").is_none(), "{client_view}");
    // A grant exchanged from it stays the IdP's subject.
    let (status, again) = exchange(
        &server,
        "app",
        str_of(&body, "access_token"),
        ACCESS_TOKEN_TYPE,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    let view = server.introspect(str_of(&again, "access_token")).await;
    assert_eq!(view["idp"], TRUSTED_ISSUER, "{view}");
}

#[tokio::test]
async fn id_tokens_are_exchanged_only_by_clients_that_list_their_issuer() {
    let server = Refgate::start_with(Options {
        extra: trusted_issuer_file(),
        ..Options::default()
    });
    // `gateway` may exchange every client's tokens ("*"), but no id_token.
    let id_token = good_id_token(&id_claims("user-42"));
    let (status, body) = exchange(&server, "gateway", &id_token, ID_TOKEN_TYPE, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant", "{body}");
}

#[tokio::test]
async fn id_token_with_any_accepted_audience_in_an_array_is_exchanged() {
    let server = Refgate::start_with(Options {
        extra: trusted_issuer_file(),
        ..Options::default()
    });
    let mut claims = id_claims("user-43");
    claims["aud"] = json!(["someone-else", "second-audience"]);
    let (status, body) =
        exchange(&server, "app", &good_id_token(&claims), ID_TOKEN_TYPE, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn id_token_signed_by_another_key_is_invalid_request() {
    let server = Refgate::start_with(Options {
        extra: trusted_issuer_file(),
        ..Options::default()
    });
    let forged = sign_rs256(&id_claims("user-42"), "other-key.pem");
    let (status, body) = exchange(&server, "app", &forged, ID_TOKEN_TYPE, &[]).await;
    assert_bad_request(status, &body, "invalid_request");
}

#[tokio::test]
async fn id_token_with_tampered_payload_is_invalid_request() {
    let server = Refgate::start_with(Options {
        extra: trusted_issuer_file(),
        ..Options::default()
    });
    let genuine = good_id_token(&id_claims("user-42"));
    let parts: Vec<&str> = genuine.split('.').collect();
    let payload = URL_SAFE_NO_PAD.encode(id_claims("admin").to_string());
    let tampered = format!("{}.{payload}.{}", parts[0], parts[2]);
    let (status, body) = exchange(&server, "app", &tampered, ID_TOKEN_TYPE, &[]).await;
    assert_bad_request(status, &body, "invalid_request");
}

#[tokio::test]
async fn id_token_for_another_audience_is_invalid_request() {
    let server = Refgate::start_with(Options {
        extra: trusted_issuer_file(),
        ..Options::default()
    });
    let mut claims = id_claims("user-42");
    claims["aud"] = json!("some-other-client");
    let (status, body) =
        exchange(&server, "app", &good_id_token(&claims), ID_TOKEN_TYPE, &[]).await;
    assert_bad_request(status, &body, "invalid_request");
    claims.as_object_mut().expect("object").remove("aud");
    let (status, body) =
        exchange(&server, "app", &good_id_token(&claims), ID_TOKEN_TYPE, &[]).await;
    assert_bad_request(status, &body, "invalid_request");
}

#[tokio::test]
async fn expired_id_token_is_invalid_request() {
    let server = Refgate::start_with(Options {
        extra: trusted_issuer_file(),
        ..Options::default()
    });
    let mut claims = id_claims("user-42");
    // Well past any clock-skew allowance.
    claims["iat"] = json!(unix_now() - 7200);
    claims["exp"] = json!(unix_now() - 3600);
    let (status, body) =
        exchange(&server, "app", &good_id_token(&claims), ID_TOKEN_TYPE, &[]).await;
    assert_bad_request(status, &body, "invalid_request");
    claims.as_object_mut().expect("object").remove("exp");
    let (status, body) =
        exchange(&server, "app", &good_id_token(&claims), ID_TOKEN_TYPE, &[]).await;
    assert_bad_request(status, &body, "invalid_request");
}

#[tokio::test]
async fn id_token_not_valid_yet_is_invalid_request() {
    let server = Refgate::start_with(Options {
        extra: trusted_issuer_file(),
        ..Options::default()
    });
    let mut claims = id_claims("user-42");
    // RFC 7519 §4.1.5: not to be accepted before `nbf` (beyond clock skew).
    claims["nbf"] = json!(unix_now() + 3600);
    claims["exp"] = json!(unix_now() + 7200);
    let (status, body) =
        exchange(&server, "app", &good_id_token(&claims), ID_TOKEN_TYPE, &[]).await;
    assert_bad_request(status, &body, "invalid_request");
    // A past `nbf` is fine.
    claims["nbf"] = json!(unix_now() - 60);
    let (status, body) =
        exchange(&server, "app", &good_id_token(&claims), ID_TOKEN_TYPE, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn id_token_from_unknown_issuer_is_invalid_request() {
    let server = Refgate::start_with(Options {
        extra: trusted_issuer_file(),
        ..Options::default()
    });
    let mut claims = id_claims("user-42");
    claims["iss"] = json!("https://untrusted.example");
    let (status, body) =
        exchange(&server, "app", &good_id_token(&claims), ID_TOKEN_TYPE, &[]).await;
    assert_bad_request(status, &body, "invalid_request");
    claims.as_object_mut().expect("object").remove("iss");
    let (status, body) =
        exchange(&server, "app", &good_id_token(&claims), ID_TOKEN_TYPE, &[]).await;
    assert_bad_request(status, &body, "invalid_request");
}

#[tokio::test]
async fn id_token_without_trusted_issuers_configured_is_invalid_request() {
    let server = Refgate::start();
    let id_token = good_id_token(&id_claims("user-42"));
    let (status, body) = exchange(&server, "app", &id_token, ID_TOKEN_TYPE, &[]).await;
    assert_bad_request(status, &body, "invalid_request");
}

#[tokio::test]
async fn unsigned_id_token_with_alg_none_is_invalid_request() {
    let server = Refgate::start_with(Options {
        extra: trusted_issuer_file(),
        ..Options::default()
    });
    let encode = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let claims = encode(&id_claims("user-42"));
    for alg in ["none", "None", "NONE"] {
        let header = encode(&json!({"alg": alg, "typ": "JWT", "kid": KID}));
        for token in [format!("{header}.{claims}."), format!("{header}.{claims}")] {
            let (status, body) = exchange(&server, "app", &token, ID_TOKEN_TYPE, &[]).await;
            assert_bad_request(status, &body, "invalid_request");
        }
    }
}

/// The classic key-confusion attack: HS256 with the issuer's public RSA key
/// (as the PEM text and as the DER bytes) used as the HMAC secret.
#[tokio::test]
async fn hs256_id_token_keyed_with_the_issuer_public_key_is_invalid_request() {
    let server = Refgate::start_with(Options {
        extra: trusted_issuer_file(),
        ..Options::default()
    });
    let pem = read_fixture("issuer-public.pem");
    let pem_text = String::from_utf8(pem.clone()).expect("PEM is text");
    let der_base64: String = pem_text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(der_base64)
        .expect("PEM body is base64");
    let jwks: Value = serde_json::from_slice(&read_fixture("issuer-jwks.json")).expect("JWKS");
    let modulus = URL_SAFE_NO_PAD
        .decode(jwks["keys"][0]["n"].as_str().expect("n"))
        .expect("n is base64url");
    for secret in [pem, der, modulus] {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let mut header = Header::new(alg);
            header.kid = Some(KID.to_string());
            let token = jsonwebtoken::encode(
                &header,
                &id_claims("user-42"),
                &EncodingKey::from_secret(&secret),
            )
            .expect("sign HMAC JWT");
            let (status, body) = exchange(&server, "app", &token, ID_TOKEN_TYPE, &[]).await;
            assert_bad_request(status, &body, "invalid_request");
        }
    }
}

#[tokio::test]
async fn malformed_id_token_is_invalid_request() {
    let server = Refgate::start_with(Options {
        extra: trusted_issuer_file(),
        ..Options::default()
    });
    for token in ["not-a-jwt", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30"] {
        let (status, body) = exchange(&server, "app", token, ID_TOKEN_TYPE, &[]).await;
        assert_bad_request(status, &body, "invalid_request");
    }
}

/// A minimal HTTP/1.1 server on loopback answering every request with the
/// fixture JWKS; returns its URL and a count of the requests it answered.
async fn serve_jwks() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind JWKS server");
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().expect("local address")
    );
    let body = read_fixture("issuer-jwks.json");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let body = body.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let found = request.starts_with(b"GET /.well-known/jwks.json ");
                let head = if found {
                    counter.fetch_add(1, Ordering::SeqCst);
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_string()
                };
                let _ = stream.write_all(head.as_bytes()).await;
                if found {
                    let _ = stream.write_all(&body).await;
                }
                let _ = stream.shutdown().await;
            });
        }
    });
    (url, hits)
}

#[tokio::test]
async fn id_token_is_verified_against_keys_fetched_from_jwks_uri() {
    let (jwks_uri, hits) = serve_jwks().await;
    let server = Refgate::start_with(Options {
        extra: format!(
            "[[trusted_issuers]]\nissuer = \"{TRUSTED_ISSUER}\"\njwks_uri = \"{jwks_uri}\"\naudiences = [\"{AUDIENCE}\"]\n"
        ),
        ..Options::default()
    });
    let (status, body) = exchange(
        &server,
        "app",
        &good_id_token(&id_claims("user-7")),
        ID_TOKEN_TYPE,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        hits.load(Ordering::SeqCst) >= 1,
        "the JWKS was never fetched"
    );
    let view = server.introspect(str_of(&body, "access_token")).await;
    assert_eq!(view["sub"], "user-7");

    // The fetched keys are cached, and still refuse a forged token.
    let fetched = hits.load(Ordering::SeqCst);
    let (status, body) = exchange(
        &server,
        "app",
        &good_id_token(&id_claims("user-8")),
        ID_TOKEN_TYPE,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(hits.load(Ordering::SeqCst), fetched, "keys were not cached");
    let forged = sign_rs256(&id_claims("user-7"), "other-key.pem");
    let (status, body) = exchange(&server, "app", &forged, ID_TOKEN_TYPE, &[]).await;
    assert_bad_request(status, &body, "invalid_request");
}

#[tokio::test]
async fn jwks_uri_answering_an_error_is_invalid_request() {
    let (jwks_uri, _) = serve_jwks().await;
    // The test server answers 404 for any other path.
    let missing = jwks_uri.replace("jwks.json", "missing.json");
    let server = Refgate::start_with(Options {
        extra: format!(
            "[[trusted_issuers]]\nissuer = \"{TRUSTED_ISSUER}\"\njwks_uri = \"{missing}\"\naudiences = [\"{AUDIENCE}\"]\n"
        ),
        ..Options::default()
    });
    let (status, body) = exchange(
        &server,
        "app",
        &good_id_token(&id_claims("user-7")),
        ID_TOKEN_TYPE,
        &[],
    )
    .await;
    assert_bad_request(status, &body, "invalid_request");
}

/// A loopback server that accepts connections, reads the request and never
/// answers; `requests` counts the requests it has read.
async fn serve_nothing() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind silent server");
    let url = format!(
        "http://{}/jwks",
        listener.local_addr().expect("local address")
    );
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            if matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            // Keep the connection open and silent.
            held.push(stream);
        }
    });
    (url, requests)
}

#[tokio::test]
async fn slow_jwks_of_one_issuer_does_not_hold_up_another() {
    let (silent_uri, requests) = serve_nothing().await;
    let slow_issuer = "https://slow.test.example";
    let server = Refgate::start_with(Options {
        extra: format!(
            "{}[[trusted_issuers]]\nissuer = \"{slow_issuer}\"\njwks_uri = \"{silent_uri}\"\naudiences = [\"{AUDIENCE}\"]\n",
            trusted_issuer_file()
        ),
        ..Options::default()
    });
    let mut slow_claims = id_claims("user-slow");
    slow_claims["iss"] = json!(slow_issuer);
    let slow_token = good_id_token(&slow_claims);
    let token_url = server.url("/oauth2/token");
    let slow = tokio::spawn(async move {
        http()
            .post(token_url)
            .basic_auth("app", Some("app-secret"))
            .form(&[
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", slow_token.as_str()),
                ("subject_token_type", ID_TOKEN_TYPE),
            ])
            .send()
            .await
            .map(|r| r.status())
    });
    // Wait until refgate is stuck fetching the slow issuer's keys.
    let deadline = Instant::now() + Duration::from_secs(10);
    while requests.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the slow JWKS was never fetched");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = exchange(
        &server,
        "app",
        &good_id_token(&id_claims("user-fast")),
        ID_TOKEN_TYPE,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        !slow.is_finished(),
        "the other issuer's exchange waited for the slow JWKS fetch to give up"
    );
    slow.abort();
}

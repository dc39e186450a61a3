//! On-behalf-of at an external authority: a `[routes.exchange]` route with
//! `authority` exchanges the id_token the caller's grant keeps
//! (`keep_subject_token`) at that authority — RFC 8693 or Entra's
//! on-behalf-of request — stores the answer as the route's credential,
//! refreshes it, exchanges again when a refresh is refused while the
//! subject token is valid, and never lets a client steer any of it.
//! The authority is the real oidc-provider (tests/peers/oidc-as) with
//! both grants registered; it verifies the subject token against the
//! fixture issuer's JWKS. Client authentication: secrets and
//! `private_key_jwt` with a file key (RSA, EC) or refgate's own key.

use crate::common::oidc::OidcAs;
use crate::common::upstream::Upstream;
use crate::common::*;

use std::path::PathBuf;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
/// The fixture issuer whose id_tokens refgate trusts and the authority
/// accepts as subject tokens.
const ISSUER: &str = "https://accounts.test.example";
const AUDIENCE: &str = "refgate-test-client";
/// The route (and so the credential) name in these tests.
const ROUTE: &str = "graph";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

/// An id_token of the fixture issuer for `sub`, expiring in `exp_in`
/// seconds.
fn id_token(sub: &str, exp_in: i64) -> String {
    let now = unix_now();
    let claims = json!({
        "iss": ISSUER, "sub": sub, "aud": AUDIENCE,
        "iat": now, "exp": now + exp_in,
    });
    let pem = std::fs::read(fixture("issuer-key.pem")).expect("fixture key");
    let key = EncodingKey::from_rsa_pem(&pem).expect("RSA key");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("test-key-1".into());
    jsonwebtoken::encode(&header, &claims, &key).expect("sign")
}

fn sha256_hex(text: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()))
}

/// The gateway's client at the authority: may use both exchange grants;
/// `auth` holds its authentication members.
fn authority_client(auth: Value) -> Value {
    let mut client = json!({
        "client_id": "gateway",
        "grant_types": ["refresh_token", TOKEN_EXCHANGE, JWT_BEARER],
    });
    for (k, v) in auth.as_object().expect("object") {
        client[k] = v.clone();
    }
    client
}

fn secret_client() -> Value {
    authority_client(json!({
        "client_secret": "gateway-secret",
        "token_endpoint_auth_method": "client_secret_basic",
    }))
}

/// The authority, accepting the fixture issuer's id_tokens for `audience`.
fn start_authority(access_ttl: u64, client: Value, audience: &str) -> OidcAs {
    OidcAs::start_with_env(
        access_ttl,
        &[
            (
                "SUBJECT_JWKS_FILE",
                fixture("issuer-jwks.json").display().to_string(),
            ),
            ("SUBJECT_ISSUER", ISSUER.to_string()),
            ("SUBJECT_AUDIENCE", audience.to_string()),
            ("CLIENTS", json!([client]).to_string()),
        ],
    )
}

fn trusted_issuer(keep: bool) -> String {
    format!(
        "[[trusted_issuers]]\nissuer = \"{ISSUER}\"\njwks_file = \"{}\"\naudiences = [\"{AUDIENCE}\"]\nkeep_subject_token = {keep}\n",
        fixture("issuer-jwks.json").display()
    )
}

/// `[[authorities]]` entry `entra` for `authority`; `auth` holds the
/// authentication lines.
fn authority_toml(authority: &OidcAs, auth: &str) -> String {
    format!(
        "[[authorities]]\nname = \"entra\"\ntoken_endpoint = \"{}\"\nclient_id = \"gateway\"\n{auth}\n",
        authority.url("/token")
    )
}

const SECRET_AUTH: &str =
    "client_secret = \"gateway-secret\"\nauth_method = \"client_secret_basic\"";

/// The route `graph` (`/graph/`) exchanging at `entra` with `exchange`
/// lines.
fn exchange_route(upstream: &str, exchange: &str) -> String {
    format!(
        "[[routes]]\nname = \"{ROUTE}\"\npath_prefix = \"/graph/\"\nupstream = \"{upstream}\"\n[routes.exchange]\nauthority = \"entra\"\n{exchange}\n"
    )
}

const TOKEN_EXCHANGE_ROUTE: &str =
    "grant = \"token-exchange\"\nscope = \"api offline_access\"\naudience = \"graph-api\"\nresource = \"https://graph.test.example/\"";
const JWT_BEARER_ROUTE: &str = "grant = \"jwt-bearer\"\nscope = \"api offline_access\"";

struct Setup {
    authority: OidcAs,
    upstream: Upstream,
    server: Refgate,
}

impl Setup {
    /// The authority (client authenticated by secret), an upstream and
    /// refgate with route `graph` (`exchange` lines) and a trusted issuer
    /// that keeps subject tokens when `keep`.
    async fn start(access_ttl: u64, exchange: &str, keep: bool, gateway: &str) -> Self {
        let authority = start_authority(access_ttl, secret_client(), AUDIENCE);
        let upstream = Upstream::start().await;
        let server = Refgate::start_with(Options {
            gateway: gateway.into(),
            extra: format!(
                "{}\n{}\n{}",
                trusted_issuer(keep),
                authority_toml(&authority, SECRET_AUTH),
                exchange_route(&upstream.url(), exchange)
            ),
            ..Options::default()
        });
        Setup {
            authority,
            upstream,
            server,
        }
    }

    /// A refgate access token exchanged by `app` from `id_token`.
    async fn sign_in(&self, id_token: &str) -> String {
        sign_in(&self.server, id_token).await
    }

    async fn get(&self, token: &str) -> (StatusCode, Value) {
        get(&self.server.proxy, token).await
    }

    /// The token the upstream received in its last request.
    fn last_sent(&self) -> String {
        let requests = self.upstream.requests();
        let authorization = requests
            .last()
            .expect("a request at the upstream")
            .header("authorization")
            .expect("authorization");
        authorization
            .strip_prefix("Bearer ")
            .unwrap_or_else(|| panic!("not a bearer header: {authorization}"))
            .to_string()
    }

    async fn exchanges(&self) -> Vec<Value> {
        exchanges(&self.authority).await
    }
}

async fn sign_in(server: &Refgate, id_token: &str) -> String {
    let (status, body) = server
        .token(
            "app",
            &[
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", id_token),
                ("subject_token_type", ID_TOKEN_TYPE),
                ("scope", "photos.read"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    str_of(&body, "access_token").to_string()
}

async fn get(proxy: &str, token: &str) -> (StatusCode, Value) {
    let response = http()
        .get(format!("{proxy}/graph/me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("proxy request");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// What the authority's exchanges saw, oldest first.
async fn exchanges(authority: &OidcAs) -> Vec<Value> {
    http()
        .get(authority.url("/_exchanges"))
        .send()
        .await
        .expect("exchanges")
        .json::<Vec<Value>>()
        .await
        .expect("exchanges JSON")
}

fn assert_gateway_error(status: StatusCode, body: &Value, expected: StatusCode, error: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error"], error, "{body}");
}

// --- the two grants, end to end ----------------------------------------------

#[tokio::test]
async fn a_token_exchange_route_forwards_the_authoritys_token_for_the_kept_subject() {
    let setup = Setup::start(600, TOKEN_EXCHANGE_ROUTE, true, "").await;
    let subject = id_token("user-42", 600);
    let token = setup.sign_in(&subject).await;

    let (status, body) = setup.get(&token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let sent = setup.last_sent();
    assert!(
        !sent.starts_with("rgat_"),
        "the reference token went upstream"
    );
    assert_ne!(sent, subject, "the subject token went upstream");
    assert!(
        setup.authority.is_active(&sent).await,
        "not the authority's token"
    );

    let seen = setup.exchanges().await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    let exchange = &seen[0];
    assert_eq!(exchange["grant_type"], TOKEN_EXCHANGE);
    assert_eq!(exchange["sub"], "user-42");
    assert_eq!(exchange["client_id"], "gateway");
    assert_eq!(exchange["client_auth"], "client_secret_basic");
    assert_eq!(exchange["subject_token_sha256"], sha256_hex(&subject));
    assert_eq!(exchange["subject_token_type"], ID_TOKEN_TYPE);
    assert_eq!(exchange["scope"], "api offline_access");
    assert_eq!(exchange["audience"], "graph-api");
    assert_eq!(exchange["resource"], "https://graph.test.example/");

    // The stored credential serves later requests: no second exchange.
    for _ in 0..3 {
        let (status, _) = setup.get(&token).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(setup.last_sent(), sent);
    }
    assert_eq!(setup.authority.stats().await["exchange"], 1);
    // Stored under the route's name, naming the authority; the tokens
    // themselves show only to a reveal_custom caller.
    let view = setup.server.introspect(&token).await;
    let stored = &view["custom"]["credentials"][ROUTE];
    assert_eq!(stored["authority"], "entra", "{view}");
    assert_eq!(stored["exchanged"], true, "{view}");
    assert_eq!(stored["access_token"], sent.as_str());
}

#[tokio::test]
async fn a_jwt_bearer_route_makes_an_on_behalf_of_request() {
    let setup = Setup::start(600, JWT_BEARER_ROUTE, true, "").await;
    let subject = id_token("user-7", 600);
    let token = setup.sign_in(&subject).await;

    let (status, body) = setup.get(&token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let sent = setup.last_sent();
    assert!(setup.authority.is_active(&sent).await);
    let seen = setup.exchanges().await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["grant_type"], JWT_BEARER);
    assert_eq!(seen[0]["requested_token_use"], "on_behalf_of");
    assert_eq!(seen[0]["sub"], "user-7");
    assert_eq!(seen[0]["subject_token_sha256"], sha256_hex(&subject));
    assert_eq!(seen[0]["scope"], "api offline_access");
}

// --- renewal -------------------------------------------------------------------

#[tokio::test]
async fn an_exchanged_credential_is_refreshed_at_the_authority() {
    let setup = Setup::start(3, JWT_BEARER_ROUTE, true, "refresh_skew = \"1s\"").await;
    let token = setup.sign_in(&id_token("user-1", 600)).await;
    let (status, _) = setup.get(&token).await;
    assert_eq!(status, StatusCode::OK);
    let first = setup.last_sent();

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, body) = setup.get(&token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = setup.last_sent();
    assert_ne!(first, second, "the credential was not renewed");
    let stats = setup.authority.stats().await;
    assert_eq!(stats["refresh_ok"], 1, "{stats}");
    assert_eq!(stats["exchange"], 1, "{stats}");
    assert!(setup.authority.is_active(&second).await);
}

#[tokio::test]
async fn a_refused_refresh_exchanges_again_while_the_subject_token_is_valid() {
    let setup = Setup::start(3, TOKEN_EXCHANGE_ROUTE, true, "refresh_skew = \"1s\"").await;
    let subject = id_token("user-2", 600);
    let token = setup.sign_in(&subject).await;
    let (status, _) = setup.get(&token).await;
    assert_eq!(status, StatusCode::OK);
    let first = setup.last_sent();

    // The authority forgets every grant: the refresh token is dead.
    setup.authority.revoke_all().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, body) = setup.get(&token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = setup.last_sent();
    assert_ne!(first, second);
    assert!(setup.authority.is_active(&second).await);
    let stats = setup.authority.stats().await;
    assert_eq!(stats["refresh_failed"], 1, "{stats}");
    assert_eq!(stats["exchange_ok"], 2, "{stats}");
    let seen = setup.exchanges().await;
    assert_eq!(seen[1]["subject_token_sha256"], sha256_hex(&subject));
}

#[tokio::test]
async fn a_refused_refresh_with_an_expired_subject_token_needs_a_new_sign_in() {
    let setup = Setup::start(3, TOKEN_EXCHANGE_ROUTE, true, "refresh_skew = \"1s\"").await;
    // The sign-in and the first exchange must be done while the id token
    // is valid: 8 s, for a loaded machine.
    let token = setup.sign_in(&id_token("user-3", 8)).await;
    let (status, _) = setup.get(&token).await;
    assert_eq!(status, StatusCode::OK);

    setup.authority.revoke_all().await;
    tokio::time::sleep(Duration::from_millis(8500)).await;
    let (status, body) = setup.get(&token).await;
    assert_gateway_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "credential_reauth_required",
    );
    assert_eq!(body["credential"], ROUTE);
    // Not asked again for this grant.
    let (status, _) = setup.get(&token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let stats = setup.authority.stats().await;
    assert_eq!(stats["exchange"], 1, "{stats}");
    assert_eq!(stats["refresh"], 1, "{stats}");
}

#[tokio::test]
async fn an_expired_subject_token_is_never_sent() {
    let setup = Setup::start(600, TOKEN_EXCHANGE_ROUTE, true, "").await;
    let token = setup.sign_in(&id_token("user-4", 2)).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, body) = setup.get(&token).await;
    assert_gateway_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "credential_reauth_required",
    );
    assert_eq!(body["credential"], ROUTE);
    assert_eq!(setup.authority.stats().await["token_requests"], 0);
}

#[tokio::test]
async fn the_authority_refusing_the_subject_token_needs_a_new_sign_in_and_is_not_asked_again() {
    // The authority accepts id_tokens for another audience only.
    let authority = start_authority(600, secret_client(), "someone-else");
    let upstream = Upstream::start().await;
    let server = Refgate::start_with(Options {
        extra: format!(
            "{}\n{}\n{}",
            trusted_issuer(true),
            authority_toml(&authority, SECRET_AUTH),
            exchange_route(&upstream.url(), JWT_BEARER_ROUTE)
        ),
        ..Options::default()
    });
    let token = sign_in(&server, &id_token("user-5", 600)).await;
    for _ in 0..2 {
        let (status, body) = get(&server.proxy, &token).await;
        assert_gateway_error(
            status,
            &body,
            StatusCode::UNAUTHORIZED,
            "credential_reauth_required",
        );
        assert_eq!(body["credential"], ROUTE);
    }
    let stats = authority.stats().await;
    assert_eq!(stats["exchange"], 1, "{stats}");
    assert_eq!(stats["exchange_ok"], 0, "{stats}");
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn an_upstream_401_renews_an_exchanged_credential_and_replays_once() {
    let setup = Setup::start(600, JWT_BEARER_ROUTE, true, "").await;
    let token = setup.sign_in(&id_token("user-17", 600)).await;
    let (status, _) = setup.get(&token).await;
    assert_eq!(status, StatusCode::OK);
    let first = setup.last_sent();
    setup.upstream.reject(&format!("Bearer {first}"));
    let (status, body) = setup.get(&token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let renewed = setup.last_sent();
    assert_ne!(renewed, first);
    assert!(setup.authority.is_active(&renewed).await);
    let stats = setup.authority.stats().await;
    assert_eq!(stats["refresh_ok"], 1, "{stats}");
    assert_eq!(stats["exchange"], 1, "{stats}");
}

#[tokio::test]
async fn an_unreachable_authority_is_503_and_a_still_valid_credential_keeps_serving() {
    // Every credential is within the refresh skew from the start.
    let setup = Setup::start(30, TOKEN_EXCHANGE_ROUTE, true, "refresh_skew = \"60s\"").await;
    let signed_in = setup.sign_in(&id_token("user-15", 600)).await;
    let (status, _) = setup.get(&signed_in).await;
    assert_eq!(status, StatusCode::OK);
    let first = setup.last_sent();

    setup.authority.set_mode("down", 0).await;
    // The refresh fails; the old token is still valid, so it is used.
    let (status, body) = setup.get(&signed_in).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(setup.last_sent(), first);
    // A grant with no credential yet cannot be served.
    let other = setup.sign_in(&id_token("user-16", 600)).await;
    let response = http()
        .get(format!("{}/graph/me", setup.server.proxy))
        .bearer_auth(&other)
        .send()
        .await
        .expect("proxy request");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["error"], "authority_unavailable");

    // Back up: the next request exchanges.
    setup.authority.set_mode("normal", 0).await;
    let (status, body) = setup.get(&other).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_kept_subject_token_is_sealed_again_in_a_data_key_rotation() {
    const KEY_B: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
    let mut setup = Setup::start(600, TOKEN_EXCHANGE_ROUTE, true, "").await;
    let subject = id_token("user-18", 600);
    let token = setup.sign_in(&subject).await;

    // Key B current, the old key previous: the pass at start seals the
    // kept token again with B...
    setup.server.stop_cleanly();
    crate::data_keys::configure_keys(
        &setup.server,
        KEY_B,
        &format!("previous_data_keys = [\"{DATA_KEY}\"]"),
    );
    setup.server.mark_log("rotated");
    setup.server.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let log = setup.server.log();
        let since = log.rsplit("--- rotated").next().unwrap_or_default();
        if since.contains("sealed kept subject tokens again with the current data key grants=1") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{since}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...so it still opens once the old key is gone.
    setup.server.stop_cleanly();
    crate::data_keys::configure_keys(&setup.server, KEY_B, "");
    setup.server.restart();
    let (status, body) = setup.get(&token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        setup.exchanges().await[0]["subject_token_sha256"],
        sha256_hex(&subject)
    );
}

#[tokio::test]
async fn a_route_moved_to_another_authority_exchanges_there_anew() {
    let mut setup = Setup::start(600, JWT_BEARER_ROUTE, true, "").await;
    let token = setup.sign_in(&id_token("user-19", 600)).await;
    let (status, _) = setup.get(&token).await;
    assert_eq!(status, StatusCode::OK);
    let first = setup.last_sent();

    let second = start_authority(600, secret_client(), AUDIENCE);
    let config = std::fs::read_to_string(&setup.server.config_path).expect("config");
    let moved = config.replace(
        "[routes.exchange]\nauthority = \"entra\"",
        "[routes.exchange]\nauthority = \"entra2\"",
    ) + &authority_toml(&second, SECRET_AUTH)
        .replace("name = \"entra\"", "name = \"entra2\"");
    std::fs::write(&setup.server.config_path, moved).expect("config");
    setup.server.restart();

    let (status, body) = setup.get(&token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let sent = setup.last_sent();
    assert_ne!(sent, first);
    assert!(second.is_active(&sent).await);
    assert_eq!(second.stats().await["exchange_ok"], 1);
    assert_eq!(setup.authority.stats().await["exchange"], 1);
    let view = setup.server.introspect(&token).await;
    assert_eq!(view["custom"]["credentials"][ROUTE]["authority"], "entra2");
}

// --- grants without a kept subject token ------------------------------------

#[tokio::test]
async fn a_grant_without_a_kept_subject_token_is_credential_missing() {
    // The issuer does not keep subject tokens.
    let setup = Setup::start(600, TOKEN_EXCHANGE_ROUTE, false, "").await;
    let from_id_token = setup.sign_in(&id_token("user-6", 600)).await;
    let client_token = setup.server.access_token("app").await;
    for token in [&from_id_token, &client_token] {
        let (status, body) = setup.get(token).await;
        assert_gateway_error(
            status,
            &body,
            StatusCode::UNAUTHORIZED,
            "credential_missing",
        );
        assert_eq!(body["credential"], ROUTE);
    }
    assert_eq!(setup.authority.stats().await["token_requests"], 0);
    assert!(setup.upstream.requests().is_empty());
}

#[tokio::test]
async fn a_grant_derived_from_one_that_keeps_a_subject_token_keeps_none() {
    let setup = Setup::start(600, TOKEN_EXCHANGE_ROUTE, true, "").await;
    let token = setup.sign_in(&id_token("user-8", 600)).await;
    let (status, derived) = setup
        .server
        .token(
            "app",
            &[
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", &token),
                (
                    "subject_token_type",
                    "urn:ietf:params:oauth:token-type:access_token",
                ),
                ("scope", "photos.read"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{derived}");
    let (status, body) = setup.get(str_of(&derived, "access_token")).await;
    assert_gateway_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "credential_missing",
    );
    // The grant signed in to still has it.
    let (status, _) = setup.get(&token).await;
    assert_eq!(status, StatusCode::OK);
}

// --- two instances -----------------------------------------------------------

#[tokio::test]
async fn an_exchange_stampede_across_two_instances_exchanges_once() {
    let authority = start_authority(600, secret_client(), AUDIENCE);
    let upstream = Upstream::start().await;
    let db = PgDatabase::create();
    let options = Options {
        extra: format!(
            "{}\n{}\n{}",
            trusted_issuer(true),
            authority_toml(&authority, SECRET_AUTH),
            exchange_route(&upstream.url(), TOKEN_EXCHANGE_ROUTE)
        ),
        store_url: Some(db.url.clone()),
        ..Options::default()
    };
    let a = Refgate::start_with(options.clone());
    let b = Refgate::start_with(options);
    let token = sign_in(&a, &id_token("user-9", 600)).await;
    // A slow authority: every request arrives while the first exchange runs.
    authority.set_mode("slow", 800).await;
    let calls = (0..24).map(|i| {
        let proxy = if i % 2 == 0 { &a.proxy } else { &b.proxy };
        let token = token.clone();
        async move { get(proxy, &token).await }
    });
    let answers = futures::future::join_all(calls).await;
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
    }
    let stats = authority.stats().await;
    assert_eq!(stats["exchange"], 1, "{stats}");
    let sent: std::collections::HashSet<String> = upstream
        .requests()
        .iter()
        .filter_map(|r| r.header("authorization"))
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
}

// --- private_key_jwt -----------------------------------------------------------

/// The public JWK of a PKCS#8 key, with `kid` = its RFC 7638 thumbprint.
fn public_jwk(pem: &str) -> Value {
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::traits::PublicKeyParts;
    let mut jwk = if let Ok(key) = rsa::RsaPrivateKey::from_pkcs8_pem(pem) {
        json!({
            "kty": "RSA", "alg": "RS256", "use": "sig",
            "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
        })
    } else {
        let pair = rcgen::KeyPair::from_pem(pem).expect("an EC key");
        let point = pair.public_key_raw();
        json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        })
    };
    jwk["kid"] = json!(refgate::signing::thumbprint(&jwk).expect("thumbprint"));
    jwk
}

fn ec_key_pem() -> String {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .expect("EC key")
        .serialize_pem()
}

/// Runs one exchange with the gateway's client registered at the
/// authority with `registered_pem`'s public key while refgate signs with
/// `signing_pem`; returns the gateway's answer and the authority.
async fn private_key_jwt_exchange(
    registered_pem: &str,
    signing_pem: &str,
) -> (StatusCode, Value, OidcAs, Refgate) {
    let client = authority_client(json!({
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks": { "keys": [public_jwk(registered_pem)] },
    }));
    let authority = start_authority(600, client, AUDIENCE);
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let key_path = dir.path().join("client-key.pem");
    std::fs::write(&key_path, signing_pem).expect("write key");
    let server = Refgate::start_with(Options {
        extra: format!(
            "{}\n{}\n{}",
            trusted_issuer(true),
            authority_toml(
                &authority,
                &format!(
                    "auth_method = \"private_key_jwt\"\nprivate_key_file = \"{}\"",
                    key_path.display()
                )
            ),
            exchange_route(&upstream.url(), JWT_BEARER_ROUTE)
        ),
        ..Options::default()
    });
    let token = sign_in(&server, &id_token("user-10", 600)).await;
    let (status, body) = get(&server.proxy, &token).await;
    drop(upstream);
    (status, body, authority, server)
}

#[tokio::test]
async fn private_key_jwt_with_an_rsa_key_file_authenticates_the_exchange() {
    let pem = std::fs::read_to_string(fixture("other-key.pem")).expect("RSA fixture");
    let (status, body, authority, _server) = private_key_jwt_exchange(&pem, &pem).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen = exchanges(&authority).await;
    assert_eq!(seen[0]["client_auth"], "private_key_jwt", "{seen:?}");
}

#[tokio::test]
async fn private_key_jwt_with_an_ec_key_file_authenticates_the_exchange() {
    let pem = ec_key_pem();
    let (status, body, authority, _server) = private_key_jwt_exchange(&pem, &pem).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen = exchanges(&authority).await;
    assert_eq!(seen[0]["client_auth"], "private_key_jwt", "{seen:?}");
}

#[tokio::test]
async fn an_authority_refusing_the_client_assertion_is_unavailable_not_a_reauth() {
    // Registered with one key, signed with another.
    let registered = ec_key_pem();
    let (status, body, authority, server) =
        private_key_jwt_exchange(&registered, &ec_key_pem()).await;
    assert_gateway_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "authority_unavailable",
    );
    assert_eq!(authority.stats().await["exchange"], 0);
    assert!(!server.log().contains("BEGIN PRIVATE KEY"));
}

#[tokio::test]
async fn private_key_jwt_with_refgates_own_key_is_verified_against_its_jwks() {
    // refgate first (the authority needs its JWKS URL), then the authority,
    // then refgate again with the authority in its configuration.
    let upstream = Upstream::start().await;
    let mut server = Refgate::start_with(Options {
        extra: trusted_issuer(true),
        ..Options::default()
    });
    let client = authority_client(json!({
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks_uri": server.url("/.well-known/jwks.json"),
    }));
    let authority = start_authority(3, client, AUDIENCE);
    let mut config = std::fs::read_to_string(&server.config_path).expect("config");
    config.push_str(&authority_toml(
        &authority,
        "auth_method = \"private_key_jwt\"",
    ));
    config.push_str(&exchange_route(&upstream.url(), TOKEN_EXCHANGE_ROUTE));
    std::fs::write(
        &server.config_path,
        config.replacen("[gateway]\n", "[gateway]\nrefresh_skew = \"1s\"\n", 1),
    )
    .expect("config");
    server.restart();

    let token = sign_in(&server, &id_token("user-11", 600)).await;
    let (status, body) = get(&server.proxy, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen = exchanges(&authority).await;
    assert_eq!(seen[0]["client_auth"], "private_key_jwt", "{seen:?}");
    // Its refresh authenticates the same way.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, body) = get(&server.proxy, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(authority.stats().await["refresh_ok"], 1);
}

// --- configuration -------------------------------------------------------------

#[tokio::test]
async fn check_refuses_bad_external_exchange_and_client_key_settings() {
    let server = Refgate::start();
    let base = std::fs::read_to_string(&server.config_path).expect("config");
    let authority = "[[authorities]]\nname = \"entra\"\ntoken_endpoint = \"http://127.0.0.1:9/token\"\nclient_id = \"gateway\"\n";
    let with_secret = format!("{authority}client_secret = \"s\"\n");
    let route = |exchange: &str| {
        format!(
            "[[routes]]\nname = \"graph\"\npath_prefix = \"/graph/\"\nupstream = \"http://127.0.0.1:9\"\n[routes.exchange]\n{exchange}\n"
        )
    };
    let not_a_key = server.dir.path().join("not-a-key.pem");
    std::fs::write(
        &not_a_key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    let cases = [
        (
            format!("{with_secret}{}", route("client = \"gateway\"\nauthority = \"entra\"\ngrant = \"token-exchange\"")),
            "routes[0].exchange.client",
        ),
        (
            format!("{with_secret}{}", route("authority = \"nowhere\"\ngrant = \"token-exchange\"")),
            "routes[0].exchange.authority",
        ),
        (
            format!("{with_secret}{}", route("authority = \"entra\"")),
            "routes[0].exchange.grant",
        ),
        (
            format!("{with_secret}{}", route("authority = \"entra\"\ngrant = \"saml\"")),
            "routes[0].exchange.grant",
        ),
        (
            format!("{with_secret}{}", route("client = \"gateway\"\ngrant = \"jwt-bearer\"")),
            "routes[0].exchange.grant",
        ),
        (
            format!("{with_secret}{}", route("authority = \"entra\"\ngrant = \"jwt-bearer\"")),
            "routes[0].exchange.scope",
        ),
        (
            format!("{with_secret}{}", route("authority = \"entra\"\ngrant = \"jwt-bearer\"\nscope = \"api\"\naudience = \"x\"")),
            "routes[0].exchange.audience",
        ),
        (
            format!("{with_secret}{}", route("authority = \"entra\"\ngrant = \"token-exchange\"\nscopes = [\"api\"]")),
            "routes[0].exchange.scopes",
        ),
        (
            format!("{with_secret}{}", route("authority = \"entra\"\ngrant = \"token-exchange\"\nresource = \"not a uri\"")),
            "routes[0].exchange.resource",
        ),
        (
            format!("{with_secret}private_key_file = \"{}\"\n", not_a_key.display()),
            "authorities[1].private_key_file",
        ),
        (
            format!("{authority}auth_method = \"private_key_jwt\"\nprivate_key_file = \"{}\"\n", not_a_key.display()),
            "authorities[1].private_key_file",
        ),
        (
            format!("{authority}auth_method = \"private_key_jwt\"\nprivate_key_file = \"missing.pem\"\n"),
            "authorities[1].private_key_file",
        ),
        (
            format!("{with_secret}auth_method = \"private_key_jwt\"\n"),
            "authorities[1]",
        ),
        (
            format!("{with_secret}auth_method = \"tls_client_auth\"\n"),
            "authorities[1].auth_method",
        ),
    ];
    for (extra, key) in cases {
        server.assert_check_refuses(&format!("{base}\n{extra}"), key);
    }
    // And the good forms pass.
    let good = format!(
        "{base}\n{authority}auth_method = \"private_key_jwt\"\n{}",
        route("authority = \"entra\"\ngrant = \"jwt-bearer\"\nscope = \"api\"")
    );
    let out = server.check_config(&good);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// --- abuse -------------------------------------------------------------------

#[tokio::test]
async fn clients_cannot_plant_redirect_or_alter_an_exchanged_credential() {
    let setup = Setup::start(600, TOKEN_EXCHANGE_ROUTE, false, "").await;
    // A grant without a kept subject token: custom data naming one (or
    // anything else) plants nothing.
    let token = setup.sign_in(&id_token("user-12", 600)).await;
    let (status, body) = setup
        .server
        .mutate(&json!({ "token": token, "patch": {
            "subject_token": id_token("user-12", 600),
            "kept_subject_token": id_token("user-12", 600),
        }}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = setup.get(&token).await;
    assert_gateway_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "credential_missing",
    );

    // A client may not mark a credential as refgate's exchange...
    let (status, body) = setup
        .server
        .mutate(
            &json!({ "token": token, "patch": { "credentials": { ROUTE: {
                "access_token": "planted", "refresh_token": "planted-rt",
                "authority": "entra", "exchanged": true,
            }}}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error_description"]
        .as_str()
        .unwrap_or_default()
        .contains("exchanged"));
    // ...and one it writes itself is never used on the exchange route.
    let (status, body) = setup
        .server
        .mutate(
            &json!({ "token": token, "patch": { "credentials": { ROUTE: {
                "access_token": "planted", "refresh_token": "planted-rt",
                "authority": "entra", "expires_at": 1,
            }}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = setup.get(&token).await;
    assert_gateway_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "credential_invalid",
    );
    assert_eq!(setup.authority.stats().await["token_requests"], 0);
    assert!(setup.upstream.requests().is_empty());
}

#[tokio::test]
async fn an_exchanged_credential_may_be_deleted_but_not_changed_by_a_client() {
    let setup = Setup::start(600, TOKEN_EXCHANGE_ROUTE, true, "").await;
    let token = setup.sign_in(&id_token("user-13", 600)).await;
    let (status, _) = setup.get(&token).await;
    assert_eq!(status, StatusCode::OK);
    let sent = setup.last_sent();
    for change in [
        json!({ "authority": "photos-as" }),
        json!({ "refresh_token": "rgrt_other" }),
        json!({ "access_token": "other" }),
        json!({ "exchanged": null }),
        json!({ "expires_at": 1 }),
    ] {
        let (status, body) = setup
            .server
            .mutate(&json!({ "token": token, "patch": { "credentials": { ROUTE: change }}}))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{change}: {body}");
    }
    let (status, _) = setup.get(&token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(setup.last_sent(), sent);
    // Deleting it makes the next request exchange again.
    let (status, body) = setup
        .server
        .mutate(&json!({ "token": token, "patch": { "credentials": { ROUTE: null }}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = setup.get(&token).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(setup.last_sent(), sent);
    assert_eq!(setup.authority.stats().await["exchange_ok"], 2);
}

#[tokio::test]
async fn the_kept_subject_token_shows_nowhere() {
    let authority = start_authority(600, secret_client(), AUDIENCE);
    let upstream = Upstream::start().await;
    let mut server = Refgate::start_with(Options {
        extra: format!(
            "{}\n{}\n{}\n[[clients]]\nid = \"ops\"\nsecret_hash = \"{}\"\ngrant_types = [\"client_credentials\"]\nadmin = true\n\n[telemetry]\naudit_log = \"audit.log\"\n",
            trusted_issuer(true),
            authority_toml(&authority, SECRET_AUTH),
            exchange_route(&upstream.url(), TOKEN_EXCHANGE_ROUTE),
            secret_hash("ops-secret"),
        ),
        ..Options::default()
    });
    let port = server.reserve_admin_port();
    let config = std::fs::read_to_string(&server.config_path).expect("config");
    std::fs::write(
        &server.config_path,
        config.replacen(
            "[listen]\n",
            &format!("[listen]\nadmin = \"127.0.0.1:{port}\"\n"),
            1,
        ),
    )
    .expect("config");
    server.restart();

    let subject = id_token("user-14", 600);
    let token = sign_in(&server, &subject).await;
    let (status, _) = get(&server.proxy, &token).await;
    assert_eq!(status, StatusCode::OK);
    let downstream = upstream.requests()[0]
        .header("authorization")
        .expect("authorization");
    let signature = subject.rsplit('.').next().expect("a JWT");

    // Introspection, even revealing custom data.
    let view = server.introspect(&token).await;
    assert_eq!(view["active"], true);
    assert!(!view.to_string().contains(signature), "{view}");
    // The admin API.
    let grants: Value = http()
        .get(format!(
            "http://127.0.0.1:{port}/admin/grants?subject=user-14"
        ))
        .basic_auth("ops", Some("ops-secret"))
        .send()
        .await
        .expect("admin")
        .json()
        .await
        .expect("admin JSON");
    let id = grants["grants"][0]["id"].as_str().expect("a grant id");
    let grant: Value = http()
        .get(format!("http://127.0.0.1:{port}/admin/grants/{id}"))
        .basic_auth("ops", Some("ops-secret"))
        .send()
        .await
        .expect("admin")
        .json()
        .await
        .expect("admin JSON");
    assert_eq!(grant["credentials"][ROUTE]["authority"], "entra", "{grant}");
    for text in [grants.to_string(), grant.to_string()] {
        assert!(!text.contains(signature), "{text}");
        assert!(!text.contains(&downstream[7..]), "{text}");
    }
    // Logs and the audit trail.
    let audit = std::fs::read_to_string(server.dir.path().join("audit.log")).unwrap_or_default();
    for text in [server.log(), audit] {
        assert!(!text.contains(signature));
        assert!(!text.contains(&downstream[7..]));
    }
    // The store, in clear.
    if !test_store_is_postgres() {
        server.stop_cleanly();
        let mut bytes = Vec::new();
        for entry in std::fs::read_dir(server.db_path.parent().expect("dir")).expect("data dir") {
            bytes.extend(std::fs::read(entry.expect("entry").path()).unwrap_or_default());
        }
        assert!(!bytes.is_empty());
        assert!(!contains(&bytes, signature.as_bytes()));
        assert!(!contains(&bytes, subject.as_bytes()));
    }
}

//! `POST /oauth2/token` basics: the client_credentials and arbitrary_token
//! grants, grant-type dispatch, client authentication, response headers,
//! and the RFC 8414 metadata document.

use crate::common::*;

use serde_json::{json, Value};

const CLIENT_CREDENTIALS: &str = "client_credentials";
const ARBITRARY: &str = "arbitrary_token";
const ALLOWED_ISSUER: &str = "https://idp.example.com";

/// `POST /oauth2/token` with optional Basic credentials; the raw response,
/// so that tests can look at headers.
async fn post_token(
    server: &Refgate,
    basic: Option<(&str, &str)>,
    params: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = http().post(server.url("/oauth2/token")).form(params);
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    request.send().await.expect("token request")
}

/// Status, `WWW-Authenticate` and JSON body of a response.
async fn unpack(response: reqwest::Response) -> (StatusCode, Option<String>, Value) {
    let status = response.status();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("ASCII header").to_string());
    let body = response.bytes().await.expect("body");
    (
        status,
        challenge,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

/// Asserts the 401 `invalid_client` answer with its Basic challenge.
fn assert_invalid_client(status: StatusCode, challenge: Option<&str>, body: &Value) {
    assert_oauth_error(status, body, StatusCode::UNAUTHORIZED, "invalid_client");
    assert_eq!(
        challenge,
        Some(r#"Basic realm="refgate""#),
        "missing Basic challenge"
    );
}

// --- client_credentials -------------------------------------------------

#[tokio::test]
async fn client_credentials_without_scope_gets_client_scopes_except_offline_access() {
    let server = Refgate::start();
    let body = server.client_token("app", None).await;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "photos.read photos.write reports.read");
    assert!(body.get("refresh_token").is_none(), "{body}");
    let expires_in = body["expires_in"].as_i64().expect("expires_in");
    assert!(
        (3590..=3600).contains(&expires_in),
        "default ttl is 1h: {body}"
    );
    let token = str_of(&body, "access_token");
    assert!(token.starts_with("rgat_"), "{token}");

    let view = server.introspect(token).await;
    assert_eq!(view["active"], true);
    assert_eq!(view["sub"], "app");
    assert_eq!(view["client_id"], "app");
    assert_eq!(view["token_type"], "Bearer");
    assert_eq!(view["iss"], server.base.as_str());
    assert_eq!(view["scope"], "photos.read photos.write reports.read");
    assert!(view.get("act").is_none(), "{view}");
    assert!(view.get("aud").is_none(), "{view}");
}

#[tokio::test]
async fn client_credentials_silently_drops_offline_access_and_issues_no_refresh_token() {
    let server = Refgate::start();
    let body = server
        .client_token("app", Some("photos.read offline_access"))
        .await;
    assert_eq!(body["scope"], "photos.read");
    assert!(body.get("refresh_token").is_none(), "{body}");
    let view = server.introspect(str_of(&body, "access_token")).await;
    assert_eq!(view["scope"], "photos.read");
}

#[tokio::test]
async fn client_credentials_with_requested_subset_gets_exactly_that_scope() {
    let server = Refgate::start();
    let body = server
        .client_token("app", Some("reports.read photos.read"))
        .await;
    let view = server.introspect(str_of(&body, "access_token")).await;
    let mut scopes: Vec<&str> = view["scope"].as_str().expect("scope").split(' ').collect();
    scopes.sort_unstable();
    assert_eq!(scopes, ["photos.read", "reports.read"]);
}

#[tokio::test]
async fn client_credentials_with_scope_the_client_lacks_is_invalid_scope() {
    let server = Refgate::start();
    let (status, body) = server
        .token(
            "other",
            &[
                ("grant_type", CLIENT_CREDENTIALS),
                ("scope", "photos.read photos.write"),
            ],
        )
        .await;
    assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_scope");
}

#[tokio::test]
async fn scope_with_characters_outside_rfc_6749_is_invalid_scope() {
    let server = Refgate::start();
    for scope in [
        "photos.read \"quoted\"",
        "back\\slash",
        "photos.read\ttabbed",
    ] {
        let (status, body) = server
            .token(
                "app",
                &[("grant_type", CLIENT_CREDENTIALS), ("scope", scope)],
            )
            .await;
        assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_scope");
    }
}

#[tokio::test]
async fn token_responses_carry_cache_control_no_store() {
    let server = Refgate::start();
    let ok = post_token(
        &server,
        Some(("app", "app-secret")),
        &[("grant_type", CLIENT_CREDENTIALS)],
    )
    .await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.headers()["cache-control"], "no-store");
    assert!(ok.headers()["content-type"]
        .to_str()
        .expect("content type")
        .starts_with("application/json"));

    let refused = post_token(
        &server,
        Some(("app", "app-secret")),
        &[("grant_type", "password")],
    )
    .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(refused.headers()["cache-control"], "no-store");
}

// --- grant type dispatch ------------------------------------------------

#[tokio::test]
async fn unknown_grant_type_is_unsupported_grant_type() {
    let server = Refgate::start();
    for grant_type in ["password", "authorization_code", "urn:example:nonsense"] {
        let (status, body) = server.token("app", &[("grant_type", grant_type)]).await;
        assert_oauth_error(
            status,
            &body,
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        );
    }
}

#[tokio::test]
async fn missing_grant_type_is_invalid_request() {
    let server = Refgate::start();
    let (status, body) = server.token("app", &[("scope", "photos.read")]).await;
    assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");
    // An empty value counts as omitted (RFC 6749 §3.1).
    let (status, body) = server.token("app", &[("grant_type", "")]).await;
    assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn grant_type_the_client_lacks_is_unauthorized_client() {
    let server = Refgate::start();
    // `minter` may not use client_credentials, `introspector` may not
    // exchange, `app` may not mint arbitrary tokens.
    let cases = [
        ("minter", CLIENT_CREDENTIALS),
        (
            "introspector",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        ("app", ARBITRARY),
    ];
    for (client, grant_type) in cases {
        let (status, body) = server.token(client, &[("grant_type", grant_type)]).await;
        assert_oauth_error(
            status,
            &body,
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
        );
    }
}

#[tokio::test]
async fn repeated_parameter_is_invalid_request() {
    let server = Refgate::start();
    let (status, body) = server
        .token(
            "app",
            &[
                ("grant_type", CLIENT_CREDENTIALS),
                ("scope", "photos.read"),
                ("scope", "reports.read"),
            ],
        )
        .await;
    assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");
}

// --- client authentication ----------------------------------------------

#[tokio::test]
async fn client_secret_post_authenticates() {
    let server = Refgate::start();
    let (status, body) = server
        .post_form(
            "/oauth2/token",
            None,
            &[
                ("grant_type", CLIENT_CREDENTIALS),
                ("client_id", "app"),
                ("client_secret", "app-secret"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let view = server.introspect(str_of(&body, "access_token")).await;
    assert_eq!(view["client_id"], "app");
}

#[tokio::test]
async fn basic_auth_with_wrong_secret_is_invalid_client() {
    let server = Refgate::start();
    let response = post_token(
        &server,
        Some(("app", "not-the-secret")),
        &[("grant_type", CLIENT_CREDENTIALS)],
    )
    .await;
    let (status, challenge, body) = unpack(response).await;
    assert_invalid_client(status, challenge.as_deref(), &body);
}

#[tokio::test]
async fn basic_auth_with_unknown_client_is_invalid_client() {
    let server = Refgate::start();
    let response = post_token(
        &server,
        Some(("nobody", "nobody-secret")),
        &[("grant_type", CLIENT_CREDENTIALS)],
    )
    .await;
    let (status, challenge, body) = unpack(response).await;
    assert_invalid_client(status, challenge.as_deref(), &body);
}

/// An unknown client id gets exactly the answer a wrong secret gets, so
/// that the answer never tells which client ids exist. (That both cost the
/// same work, one secret hash, is not observable from outside: a SHA-256
/// of a short secret is far below the noise of an HTTP exchange.)
#[tokio::test]
async fn unknown_client_and_wrong_secret_get_the_same_answer() {
    let server = Refgate::start();
    let answer = |basic: Option<(&'static str, &'static str)>,
                  form: Vec<(&'static str, &'static str)>| {
        let server = &server;
        async move {
            let mut params = vec![("grant_type", CLIENT_CREDENTIALS)];
            params.extend(form);
            unpack(post_token(server, basic, &params).await).await
        }
    };
    let wrong_secret = answer(Some(("app", "not-the-secret")), vec![]).await;
    let unknown = answer(Some(("nobody", "not-the-secret")), vec![]).await;
    assert_invalid_client(wrong_secret.0, wrong_secret.1.as_deref(), &wrong_secret.2);
    assert_eq!(unknown, wrong_secret, "Basic");
    let wrong_secret = answer(
        None,
        vec![("client_id", "app"), ("client_secret", "not-the-secret")],
    )
    .await;
    let unknown = answer(
        None,
        vec![("client_id", "nobody"), ("client_secret", "not-the-secret")],
    )
    .await;
    assert_eq!(wrong_secret.0, StatusCode::UNAUTHORIZED, "{wrong_secret:?}");
    assert_eq!(unknown, wrong_secret, "client_secret_post");
}

#[tokio::test]
async fn post_auth_with_wrong_secret_is_invalid_client() {
    let server = Refgate::start();
    let response = post_token(
        &server,
        None,
        &[
            ("grant_type", CLIENT_CREDENTIALS),
            ("client_id", "app"),
            ("client_secret", "not-the-secret"),
        ],
    )
    .await;
    let (status, challenge, body) = unpack(response).await;
    assert_invalid_client(status, challenge.as_deref(), &body);
}

#[tokio::test]
async fn post_auth_with_unknown_client_is_invalid_client() {
    let server = Refgate::start();
    let response = post_token(
        &server,
        None,
        &[
            ("grant_type", CLIENT_CREDENTIALS),
            ("client_id", "nobody"),
            ("client_secret", "nobody-secret"),
        ],
    )
    .await;
    let (status, challenge, body) = unpack(response).await;
    assert_invalid_client(status, challenge.as_deref(), &body);
}

#[tokio::test]
async fn missing_client_authentication_is_invalid_client() {
    let server = Refgate::start();
    let cases: [&[(&str, &str)]; 3] = [
        &[("grant_type", CLIENT_CREDENTIALS)],
        // A client_id alone is no authentication for a confidential client.
        &[("grant_type", CLIENT_CREDENTIALS), ("client_id", "app")],
        &[
            ("grant_type", CLIENT_CREDENTIALS),
            ("client_secret", "app-secret"),
        ],
    ];
    for params in cases {
        let (status, challenge, body) = unpack(post_token(&server, None, params).await).await;
        assert_invalid_client(status, challenge.as_deref(), &body);
    }
}

#[tokio::test]
async fn unsupported_authorization_scheme_is_invalid_client() {
    let server = Refgate::start();
    let response = http()
        .post(server.url("/oauth2/token"))
        .header("authorization", "Bearer rgat_whatever")
        .form(&[("grant_type", CLIENT_CREDENTIALS)])
        .send()
        .await
        .expect("request");
    let (status, challenge, body) = unpack(response).await;
    assert_invalid_client(status, challenge.as_deref(), &body);
}

/// RFC 6749 §2.3 and §5.2: a client that uses more than one authentication
/// method at once makes an `invalid_request`; refgate answers 400, and does
/// not issue a token even though both credentials are right.
#[tokio::test]
async fn basic_and_post_authentication_at_once_is_invalid_request() {
    let server = Refgate::start();
    let response = post_token(
        &server,
        Some(("app", "app-secret")),
        &[
            ("grant_type", CLIENT_CREDENTIALS),
            ("client_id", "app"),
            ("client_secret", "app-secret"),
        ],
    )
    .await;
    let (status, _, body) = unpack(response).await;
    assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(body.get("access_token").is_none(), "{body}");
}

#[tokio::test]
async fn post_client_id_naming_another_client_than_basic_is_invalid_client() {
    let server = Refgate::start();
    let response = post_token(
        &server,
        Some(("app", "app-secret")),
        &[("grant_type", CLIENT_CREDENTIALS), ("client_id", "other")],
    )
    .await;
    let (status, challenge, body) = unpack(response).await;
    assert_invalid_client(status, challenge.as_deref(), &body);
}

// --- metadata -------------------------------------------------------------

#[tokio::test]
async fn metadata_document_lists_endpoints_under_the_configured_issuer() {
    let server = Refgate::start();
    let response = http()
        .get(server.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .expect("metadata request");
    assert_eq!(response.status(), StatusCode::OK);
    let doc: Value = response.json().await.expect("metadata JSON");
    let issuer = server.base.as_str();
    assert_eq!(doc["issuer"], issuer);
    assert_eq!(doc["token_endpoint"], format!("{issuer}/oauth2/token"));
    assert_eq!(
        doc["introspection_endpoint"],
        format!("{issuer}/oauth2/introspect")
    );
    assert_eq!(
        doc["revocation_endpoint"],
        format!("{issuer}/oauth2/revoke")
    );
    assert_eq!(doc["mutate_endpoint"], format!("{issuer}/oauth2/mutate"));
    assert!(
        doc["response_types_supported"].is_array(),
        "RFC 8414 requires response_types_supported: {doc}"
    );
    let listed = |member: &str, value: &str| {
        doc[member]
            .as_array()
            .unwrap_or_else(|| panic!("`{member}` is not an array in {doc}"))
            .iter()
            .any(|v| v == value)
    };
    for grant in [
        "client_credentials",
        "refresh_token",
        "urn:ietf:params:oauth:grant-type:token-exchange",
        "urn:ietf:params:oauth:grant-type:token-exchange-mutate",
        "arbitrary_token",
    ] {
        assert!(listed("grant_types_supported", grant), "{grant} in {doc}");
    }
    for method in ["client_secret_basic", "client_secret_post"] {
        assert!(
            listed("token_endpoint_auth_methods_supported", method),
            "{method} in {doc}"
        );
    }
    for scope in ["photos.read", "reports.read", "offline_access"] {
        assert!(listed("scopes_supported", scope), "{scope} in {doc}");
    }
}

// --- arbitrary_token ------------------------------------------------------

/// An arbitrary_token request as `minter` with the given extra parameters.
async fn mint(server: &Refgate, extra: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut params = vec![("grant_type", ARBITRARY)];
    params.extend_from_slice(extra);
    server.token("minter", &params).await
}

#[tokio::test]
async fn arbitrary_token_carries_asserted_issuer_claims_and_custom_data() {
    let server = Refgate::start();
    let claims = json!({"groups": ["admins", "staff"], "tenant": ["t-1"]}).to_string();
    let custom = json!({"profile": {"locale": "nb-NO"}, "n": 7}).to_string();
    let (status, body) = mint(
        &server,
        &[
            ("subject", "alice@example.com"),
            ("issuer", ALLOWED_ISSUER),
            ("scope", "photos.read"),
            ("arbitrary_claims", &claims),
            ("arbitrary_json", &custom),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "photos.read");
    assert!(body.get("refresh_token").is_none(), "{body}");

    let token = str_of(&body, "access_token");
    let view = server.introspect(token).await;
    assert_eq!(view["active"], true);
    assert_eq!(view["sub"], "alice@example.com");
    assert_eq!(view["iss"], ALLOWED_ISSUER);
    assert_eq!(view["client_id"], "minter");
    assert_eq!(view["groups"], json!(["admins", "staff"]));
    assert_eq!(view["tenant"], json!(["t-1"]));
    assert_eq!(
        view["custom"],
        json!({"profile": {"locale": "nb-NO"}, "n": 7})
    );
    assert_eq!(view["version"], 1);

    // A caller without reveal_custom sees the claims but not the custom data.
    let (status, plain) = server
        .post_form(
            "/oauth2/introspect",
            Some(("introspector", "introspector-secret")),
            &[("token", token)],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{plain}");
    assert_eq!(plain["groups"], json!(["admins", "staff"]));
    assert_eq!(plain["iss"], ALLOWED_ISSUER);
    assert!(plain.get("custom").is_none(), "{plain}");
    assert!(plain.get("version").is_none(), "{plain}");
}

#[tokio::test]
async fn arbitrary_token_with_offline_access_gets_a_refresh_token_that_keeps_the_issuer() {
    let server = Refgate::start();
    let (status, body) = mint(
        &server,
        &[
            ("subject", "bob"),
            ("issuer", ALLOWED_ISSUER),
            ("scope", "photos.read offline_access"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let refresh = str_of(&body, "refresh_token");
    assert!(refresh.starts_with("rgrt_"), "{refresh}");
    let (status, refreshed) = server
        .token(
            "minter",
            &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    let view = server.introspect(str_of(&refreshed, "access_token")).await;
    assert_eq!(view["sub"], "bob");
    assert_eq!(view["iss"], ALLOWED_ISSUER);
}

#[tokio::test]
async fn arbitrary_token_lifetime_is_clamped_to_the_client_ttl() {
    let server = Refgate::start();
    // minter's access_token_ttl is 10m.
    let (status, body) = mint(
        &server,
        &[
            ("subject", "carol"),
            ("issuer", ALLOWED_ISSUER),
            ("access_token_lifetime", "86400"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["expires_in"], 600);
    let view = server.introspect(str_of(&body, "access_token")).await;
    let lifetime = view["exp"].as_i64().expect("exp") - view["iat"].as_i64().expect("iat");
    assert_eq!(lifetime, 600, "{view}");

    // A shorter lifetime is honoured as asked.
    let (status, body) = mint(
        &server,
        &[
            ("subject", "carol"),
            ("issuer", ALLOWED_ISSUER),
            ("access_token_lifetime", "120"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["expires_in"], 120);
    let view = server.introspect(str_of(&body, "access_token")).await;
    let lifetime = view["exp"].as_i64().expect("exp") - view["iat"].as_i64().expect("iat");
    assert_eq!(lifetime, 120, "{view}");
}

#[tokio::test]
async fn arbitrary_token_for_issuer_not_allowed_is_unauthorized_client() {
    let server = Refgate::start();
    for issuer in [
        "https://evil.example.com",
        "https://idp.example.com/",
        "https://IDP.example.com",
    ] {
        let (status, body) = mint(&server, &[("subject", "alice"), ("issuer", issuer)]).await;
        assert_oauth_error(
            status,
            &body,
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
        );
    }
}

#[tokio::test]
async fn arbitrary_claims_with_registered_claim_name_is_invalid_request() {
    let server = Refgate::start();
    for name in [
        "sub",
        "iss",
        "scope",
        "aud",
        "exp",
        "act",
        "active",
        "custom",
        "client_id",
        "username",
        "token_type",
        "iat",
        "nbf",
        "jti",
        "may_act",
        "cnf",
        "version",
    ] {
        let claims = json!({ name: ["x"] }).to_string();
        let (status, body) = mint(
            &server,
            &[
                ("subject", "alice"),
                ("issuer", ALLOWED_ISSUER),
                ("arbitrary_claims", &claims),
            ],
        )
        .await;
        assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");
    }
}

#[tokio::test]
async fn arbitrary_claims_that_are_not_string_arrays_are_invalid_request() {
    let server = Refgate::start();
    let cases = [
        json!({"groups": "admins"}).to_string(),
        json!({"groups": [1, 2]}).to_string(),
        json!({"groups": [["nested"]]}).to_string(),
        json!({"groups": {"a": "b"}}).to_string(),
        json!({"groups": null}).to_string(),
        json!(["groups"]).to_string(),
        "not json".to_string(),
    ];
    for claims in &cases {
        let (status, body) = mint(
            &server,
            &[
                ("subject", "alice"),
                ("issuer", ALLOWED_ISSUER),
                ("arbitrary_claims", claims),
            ],
        )
        .await;
        assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");
    }
}

#[tokio::test]
async fn arbitrary_json_that_is_not_an_object_is_invalid_request() {
    let server = Refgate::start();
    for custom in ["[1,2]", "\"text\"", "{broken"] {
        let (status, body) = mint(
            &server,
            &[
                ("subject", "alice"),
                ("issuer", ALLOWED_ISSUER),
                ("arbitrary_json", custom),
            ],
        )
        .await;
        assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");
    }
}

#[tokio::test]
async fn arbitrary_token_with_bad_lifetime_is_invalid_request() {
    let server = Refgate::start();
    for lifetime in ["0", "-5", "abc", "1.5", "1e3", " 60"] {
        let (status, body) = mint(
            &server,
            &[
                ("subject", "alice"),
                ("issuer", ALLOWED_ISSUER),
                ("access_token_lifetime", lifetime),
            ],
        )
        .await;
        assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");
    }
}

#[tokio::test]
async fn arbitrary_token_without_subject_or_issuer_is_invalid_request() {
    let server = Refgate::start();
    let (status, body) = mint(&server, &[("issuer", ALLOWED_ISSUER)]).await;
    assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");
    let (status, body) = mint(&server, &[("subject", "alice")]).await;
    assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn arbitrary_token_with_scope_the_client_lacks_is_invalid_scope() {
    let server = Refgate::start();
    let (status, body) = mint(
        &server,
        &[
            ("subject", "alice"),
            ("issuer", ALLOWED_ISSUER),
            ("scope", "photos.write"),
        ],
    )
    .await;
    assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_scope");
}

// --- lifetimes ------------------------------------------------------------

/// Token times are whole seconds: a sub-second ttl is rounded up, never
/// down to a token that is born expired.
#[tokio::test]
async fn sub_second_access_token_ttl_is_rounded_up_to_a_live_token() {
    let server = Refgate::start_with(Options {
        extra: format!(
            "[[clients]]\nid = \"brief\"\nsecret_hash = \"{}\"\ngrant_types = [\"client_credentials\"]\nscopes = [\"photos.read\"]\naccess_token_ttl = \"500ms\"\n",
            secret_hash("brief-secret")
        ),
        ..Options::default()
    });
    // A token issued just before a second ends may be over by the time it
    // is introspected; one born expired is never active. Of a few fresh
    // tokens, one is seen alive.
    for _ in 0..5 {
        let body = server.client_token("brief", None).await;
        assert_eq!(body["expires_in"], 1, "{body}");
        let view = server.introspect(str_of(&body, "access_token")).await;
        if view["active"] == true {
            let lifetime = view["exp"].as_i64().expect("exp") - view["iat"].as_i64().expect("iat");
            assert_eq!(lifetime, 1, "{view}");
            return;
        }
        assert_eq!(view, serde_json::json!({"active": false}));
    }
    panic!("five fresh tokens with a 1 s lifetime were all inactive at once");
}

//! Multi-tenancy (`[[tenants]]`, SPEC 5.3): each tenant's token service under
//! `/{name}/…` with its own issuer, clients, trusted issuers, authorities and
//! signing keys, beside the top-level one at today's URLs. The heart is
//! isolation, tried in both directions: a client id, a token, a refresh
//! token, a device code or a signing key of one tenant means nothing to
//! another tenant nor to the top level. Also: metadata, inherited token
//! settings, tenant routes on the gateway, `refgate check`, and reload.
//!
//! Every tenant here has the same client ids as the top level (`app`,
//! `middle`, `tv`, `portal`) with secrets of its own,
//! `<tenant>-<client>-secret`; the top level's are the standard
//! `<client>-secret`. A tenant of `""` in the helpers is the top level.

use crate::common::upstream::Upstream;
use crate::common::*;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// The top level, as a tenant argument of the helpers below.
const TOP: &str = "";

const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
const VERIFICATION_URI: &str = "https://portal.test.example/device";
/// The top level's trusted issuer (the standard `app` lists it), and the
/// audience of every id_token here. Each tenant trusts an issuer of its own
/// instead (see [`idp_of`]); all of them publish the fixture key.
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

/// The issuer `tenant` trusts (the top level: [`TRUSTED_ISSUER`]).
fn idp_of(tenant: &str) -> String {
    if tenant.is_empty() {
        TRUSTED_ISSUER.to_string()
    } else {
        format!("https://{tenant}-idp.test.example")
    }
}

/// A `[[table]]` entry trusting `issuer` with the fixture JWKS.
fn trusted_issuer_toml(table: &str, issuer: &str) -> String {
    format!(
        "[[{table}]]\nissuer = \"{issuer}\"\njwks_file = \"{}\"\naudiences = [\"{AUDIENCE}\"]\n",
        fixture("issuer-jwks.json").display()
    )
}

/// An id_token of `sub` from `issuer`, signed by the fixture key.
fn id_token(issuer: &str, sub: &str) -> String {
    let now = unix_now();
    let claims = json!({
        "iss": issuer, "sub": sub, "aud": AUDIENCE, "iat": now, "exp": now + 300,
    });
    let pem = std::fs::read(fixture("issuer-key.pem")).expect("fixture key");
    let key = EncodingKey::from_rsa_pem(&pem).expect("fixture RSA key");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(KID.to_string());
    jsonwebtoken::encode(&header, &claims, &key).expect("sign JWT")
}

// --- configuration -----------------------------------------------------------

/// The secret of `client` in `tenant` (the top level: the standard one).
fn secret_of(tenant: &str, client: &str) -> String {
    if tenant.is_empty() {
        format!("{client}-secret")
    } else {
        format!("{tenant}-{client}-secret")
    }
}

/// The issuer of `tenant` on the token service at `base`.
fn issuer_at(base: &str, tenant: &str) -> String {
    if tenant.is_empty() {
        base.to_string()
    } else {
        format!("{base}/{tenant}")
    }
}

/// The issuer of `tenant` of `server`.
fn issuer(server: &Refgate, tenant: &str) -> String {
    issuer_at(&server.base, tenant)
}

/// One `[[tenants]]` entry: `name`, its issuer under `base`, `[tenants.tokens]`
/// lines (none when empty), and its own clients (`app`, `middle`, `tv`,
/// `portal`), trusted issuer ([`idp_of`]) and `photos-as` authority. Its
/// `app` also lists the top level's trusted issuer, which it does not trust.
fn tenant_toml(base: &str, name: &str, tokens: &str) -> String {
    let client = |id: &str, body: &str| {
        format!(
            "[[tenants.clients]]\nid = \"{id}\"\nsecret_hash = \"{}\"\n{body}\n",
            secret_hash(&secret_of(name, id))
        )
    };
    let tokens = if tokens.is_empty() {
        String::new()
    } else {
        format!("[tenants.tokens]\n{tokens}\n")
    };
    [
        format!(
            "[[tenants]]\nname = \"{name}\"\nissuer = \"{}\"\n",
            issuer_at(base, name)
        ),
        tokens,
        client(
            "app",
            &format!(
                "grant_types = [\"client_credentials\", \"refresh_token\", \"{TOKEN_EXCHANGE}\"]\nscopes = [\"photos.read\", \"photos.write\", \"offline_access\"]\nexchange_from = [\"*\", \"{}\", \"{TRUSTED_ISSUER}\"]",
                idp_of(name)
            ),
        ),
        client(
            "middle",
            "grant_types = [\"client_credentials\"]\nscopes = [\"photos.read\"]\nintrospect = true\nreveal_custom = true\nmutate = true\nrevoke_subject = true",
        ),
        client(
            "tv",
            &format!("grant_types = [\"{DEVICE_GRANT}\"]\nscopes = [\"photos.read\", \"offline_access\"]"),
        ),
        client(
            "portal",
            &format!(
                "device_approve = true\nexchange_from = [\"{}\"]",
                idp_of(name)
            ),
        ),
        trusted_issuer_toml("tenants.trusted_issuers", &idp_of(name)),
        AUTHORITY.replace("[[authorities]]", "[[tenants.authorities]]"),
    ]
    .join("\n")
}

/// A refgate with the standard top-level clients, [`TRUSTED_ISSUER`], the
/// authorities `photos-as` and `top-as` (which no tenant has), and `tenants` (name,
/// `[tenants.tokens]` lines); `tokens`: more top-level `[tokens]` lines;
/// `routes`: `[[routes]]` entries. The token service's port is bound first,
/// so that each tenant's issuer is its real base URL.
fn start(tenants: &[(&str, &str)], tokens: &str, routes: &str) -> Refgate {
    let listener = Arc::new(loopback_listener());
    let base = format!(
        "http://127.0.0.1:{}",
        listener.local_addr().expect("address").port()
    );
    let tenants: String = tenants
        .iter()
        .map(|(name, tokens)| tenant_toml(&base, name, tokens))
        .collect::<Vec<_>>()
        .join("\n");
    let server = Refgate::start_with(Options {
        tokens: format!(
            "device_verification_uri = \"{VERIFICATION_URI}\"\ndevice_interval = \"1s\"\n{tokens}"
        ),
        // The tenants' `photos-as` makes the harness leave out the
        // top-level one: it is written here.
        extra: format!(
            "{AUTHORITY}\n{}\n{}\n{routes}\n{tenants}",
            AUTHORITY.replace("photos-as", "top-as"),
            trusted_issuer_toml("trusted_issuers", TRUSTED_ISSUER)
        ),
        token_listener: Some(listener),
        ..Options::default()
    });
    assert_eq!(server.base, base);
    server
}

/// [`start`] with `acme` and `globex`, neither setting `[tenants.tokens]`.
fn start_two(routes: &str) -> Refgate {
    start(&[("acme", ""), ("globex", "")], "", routes)
}

// --- tenant-prefixed calls ---------------------------------------------------

/// `path` of `tenant`'s token service.
fn tenant_path(tenant: &str, path: &str) -> String {
    if tenant.is_empty() {
        path.to_string()
    } else {
        format!("/{tenant}{path}")
    }
}

/// A form POST to `path` of `tenant` as its `client` (its secret there).
async fn post_tenant(
    server: &Refgate,
    tenant: &str,
    path: &str,
    client: &str,
    form: &[(&str, &str)],
) -> (StatusCode, Value) {
    let secret = secret_of(tenant, client);
    server
        .post_form(&tenant_path(tenant, path), Some((client, &secret)), form)
        .await
}

/// `POST /{tenant}/oauth2/token` as `client`.
async fn token_at(
    server: &Refgate,
    tenant: &str,
    client: &str,
    form: &[(&str, &str)],
) -> (StatusCode, Value) {
    post_tenant(server, tenant, "/oauth2/token", client, form).await
}

/// A client_credentials access token of `client` in `tenant`, asserting
/// success.
async fn access_token_at(server: &Refgate, tenant: &str, client: &str) -> String {
    let (status, body) = token_at(
        server,
        tenant,
        client,
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tenant}/{client}: {body}");
    str_of(&body, "access_token").to_string()
}

/// An access and a refresh token of `app` in `tenant`: a token exchange of
/// its own client_credentials token, with `offline_access`.
async fn pair_at(server: &Refgate, tenant: &str) -> (String, String) {
    let subject = access_token_at(server, tenant, "app").await;
    let (status, body) = exchange_at(server, tenant, &subject).await;
    assert_eq!(status, StatusCode::OK, "{tenant}: {body}");
    (
        str_of(&body, "access_token").to_string(),
        str_of(&body, "refresh_token").to_string(),
    )
}

/// `tenant`'s `app` exchanges `subject_token` (an access token) for
/// `photos.read offline_access`.
async fn exchange_at(server: &Refgate, tenant: &str, subject_token: &str) -> (StatusCode, Value) {
    token_at(
        server,
        tenant,
        "app",
        &[
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", subject_token),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
            ("scope", "photos.read offline_access"),
        ],
    )
    .await
}

/// `tenant`'s introspection of `token` as its `middle`, asserting 200.
async fn introspect_at(server: &Refgate, tenant: &str, token: &str) -> Value {
    let (status, body) = post_tenant(
        server,
        tenant,
        "/oauth2/introspect",
        "middle",
        &[("token", token)],
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "introspection at {tenant:?}: {body}"
    );
    body
}

async fn assert_active_at(server: &Refgate, tenant: &str, token: &str) -> Value {
    let view = introspect_at(server, tenant, token).await;
    assert_eq!(view["active"], true, "at {tenant:?}: {view}");
    view
}

async fn assert_inactive_at(server: &Refgate, tenant: &str, token: &str) {
    let view = introspect_at(server, tenant, token).await;
    assert_eq!(view, json!({"active": false}), "at {tenant:?}");
}

/// `POST /{tenant}/oauth2/mutate` with a JSON body as `tenant`'s `middle`.
async fn mutate_at(server: &Refgate, tenant: &str, body: &Value) -> (StatusCode, Value) {
    let response = http()
        .post(server.url(&tenant_path(tenant, "/oauth2/mutate")))
        .basic_auth("middle", Some(secret_of(tenant, "middle")))
        .json(body)
        .send()
        .await
        .expect("request");
    let status = response.status();
    let bytes = response.bytes().await.expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// An `app` token of `tenant` whose grant holds the `photos` credential
/// `down-<tenant>` (`down-top` at the top level).
async fn token_with_photos_at(server: &Refgate, tenant: &str) -> String {
    let token = access_token_at(server, tenant, "app").await;
    let name = if tenant.is_empty() { "top" } else { tenant };
    let patch = json!({"credentials": {"photos": credential(&format!("down-{name}"), "Bearer")}});
    let (status, body) = mutate_at(server, tenant, &json!({"token": token, "patch": patch})).await;
    assert_eq!(status, StatusCode::OK, "mutate at {tenant:?}: {body}");
    token
}

/// `tenant`'s `portal` approves `user_code` for `sub`, with an id_token of
/// the issuer `tenant` trusts.
async fn approve_at(
    server: &Refgate,
    tenant: &str,
    user_code: &str,
    sub: &str,
) -> (StatusCode, Value) {
    let id_token = id_token(&idp_of(tenant), sub);
    post_tenant(
        server,
        tenant,
        "/oauth2/device_approve",
        "portal",
        &[("user_code", user_code), ("id_token", &id_token)],
    )
    .await
}

/// A GET of `path` on the token service: status and JSON (Null when not
/// JSON).
async fn get_json(server: &Refgate, path: &str) -> (StatusCode, Value) {
    let response = http().get(server.url(path)).send().await.expect("request");
    let status = response.status();
    let bytes = response.bytes().await.expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A GET of `path` on the gateway with `token`.
async fn call(server: &Refgate, path: &str, token: &str) -> reqwest::Response {
    http()
        .get(format!("{}{path}", server.proxy))
        .bearer_auth(token)
        .send()
        .await
        .expect("proxy request")
}

/// Asserts the gateway's 401 `invalid_token` for `token` on `path`.
async fn assert_gateway_refuses(server: &Refgate, path: &str, token: &str, case: &str) {
    let response = call(server, path, token).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}: {body}");
    assert_eq!(body["error"], "invalid_token", "{case}: {body}");
}

/// The `kid`s of the JWKS at `path`.
async fn kids(server: &Refgate, path: &str) -> BTreeSet<String> {
    let (status, jwks) = get_json(server, path).await;
    assert_eq!(status, StatusCode::OK, "{path}: {jwks}");
    let kids: BTreeSet<String> = jwks["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("{path}: no keys in {jwks}"))
        .iter()
        .map(|key| str_of(key, "kid").to_string())
        .collect();
    assert!(!kids.is_empty(), "{path}: {jwks}");
    kids
}

/// Waits (up to 10 s) until a form POST to `path` of `tenant` as its
/// `client` answers `expected` (a reload is applied a moment after the
/// file changes).
async fn wait_for_status(
    server: &Refgate,
    tenant: &str,
    path: &str,
    client: &str,
    form: &[(&str, &str)],
    expected: StatusCode,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = post_tenant(server, tenant, path, client, form).await;
        if status == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{tenant}{path} still answers {status} {body}, not {expected}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// --- configuration checks ----------------------------------------------------

#[test]
fn check_refuses_bad_or_duplicate_tenant_names_and_routes_to_unknown_tenants() {
    let server = start_two("");
    let good = std::fs::read_to_string(&server.config_path).expect("read config");
    let out = server.check_config(&good);
    assert!(
        out.status.success(),
        "the two-tenant configuration is refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acme = "name = \"acme\"";
    assert_eq!(good.matches(acme).count(), 1);

    // Names: digits and dashes, up to 32 characters, are fine.
    for name in ["acme-2", "7", &"a".repeat(32)] {
        let renamed = good.replace(acme, &format!("name = \"{name}\""));
        let out = server.check_config(&renamed);
        assert!(
            out.status.success(),
            "{name:?} refused: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let too_long = "a".repeat(33);
    for name in [
        "",
        "Acme",
        "ac_me",
        "ac.me",
        "ac/me",
        "ac me",
        too_long.as_str(),
        "oauth2",
        "connect",
        ".well-known",
        "healthz",
        "readyz",
        "admin",
    ] {
        let renamed = good.replace(acme, &format!("name = \"{name}\""));
        server.assert_check_refuses(&renamed, "tenants[0].name");
    }

    // A tenant's `exchange_from` names its own clients, not the top level's.
    let acme_app = format!("exchange_from = [\"*\", \"{}\"", idp_of("acme"));
    assert_eq!(good.matches(&acme_app).count(), 1);
    let own = good.replace(&acme_app, &acme_app.replace('*', "middle"));
    let out = server.check_config(&own);
    assert!(
        out.status.success(),
        "exchange_from naming acme's own client is refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let foreign = good.replace(&acme_app, &acme_app.replace('*', "introspector"));
    server.assert_check_refuses(&foreign, "exchange_from");

    // Names and issuers are unique.
    let duplicate = good.replace("name = \"globex\"", acme);
    server.assert_check_refuses(&duplicate, "tenants[1].name");
    let duplicate_issuer = good.replace(
        &format!("issuer = \"{}\"", issuer(&server, "globex")),
        &format!("issuer = \"{}\"", issuer(&server, "acme")),
    );
    assert_ne!(duplicate_issuer, good);
    server.assert_check_refuses(&duplicate_issuer, "tenants[1]");

    // A route names a tenant that exists, or is refused.
    let with_route = |tenant: &str| {
        format!(
            "{good}\n{}",
            credential_route(
                "acme-api",
                "/acme-api/",
                "http://127.0.0.1:9",
                &format!("tenant = \"{tenant}\"")
            )
        )
    };
    let out = server.check_config(&with_route("acme"));
    assert!(
        out.status.success(),
        "a route of tenant acme is refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.assert_check_refuses(&with_route("nosuch"), "routes[0].tenant");
}

// --- the token service under /{name}/ ------------------------------------------

#[tokio::test]
async fn each_tenant_publishes_its_own_metadata_and_unknown_tenants_are_404() {
    let server = start_two("");
    for tenant in ["acme", "globex"] {
        let iss = issuer(&server, tenant);
        let (status, metadata) = get_json(
            &server,
            &format!("/{tenant}/.well-known/oauth-authorization-server"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{tenant}: {metadata}");
        let (status, rfc8414) = get_json(
            &server,
            &format!("/.well-known/oauth-authorization-server/{tenant}"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{tenant}: {rfc8414}");
        assert_eq!(metadata, rfc8414, "{tenant}: two documents");
        assert_eq!(metadata["issuer"], iss.as_str());
        for (member, path) in [
            ("token_endpoint", "/oauth2/token"),
            ("introspection_endpoint", "/oauth2/introspect"),
            ("revocation_endpoint", "/oauth2/revoke"),
            ("mutate_endpoint", "/oauth2/mutate"),
            (
                "device_authorization_endpoint",
                "/oauth2/device_authorization",
            ),
            ("jwks_uri", "/.well-known/jwks.json"),
        ] {
            assert_eq!(
                metadata[member],
                format!("{iss}{path}"),
                "{tenant}: {metadata}"
            );
        }
    }
    // The top level's stays as it was.
    let (status, top) = get_json(&server, "/.well-known/oauth-authorization-server").await;
    assert_eq!(status, StatusCode::OK, "{top}");
    assert_eq!(top["issuer"], server.base.as_str());
    assert_eq!(
        top["token_endpoint"],
        format!("{}/oauth2/token", server.base)
    );

    // A tenant's token shows its issuer; the top level's, the top level's.
    let token = access_token_at(&server, "acme", "app").await;
    let view = assert_active_at(&server, "acme", &token).await;
    assert_eq!(view["iss"], issuer(&server, "acme"), "{view}");
    assert_eq!(view["client_id"], "app");
    assert_eq!(view["sub"], "app");
    let token = access_token_at(&server, TOP, "app").await;
    let view = assert_active_at(&server, TOP, &token).await;
    assert_eq!(view["iss"], server.base.as_str(), "{view}");

    // No such tenant.
    let (status, body) = server
        .post_form(
            "/nosuch/oauth2/token",
            Some(("app", "app-secret")),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body["error"].is_string(), "no JSON error: {body}");
    let (status, _) = get_json(&server, "/.well-known/oauth-authorization-server/nosuch").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get_json(&server, "/nosuch/.well-known/oauth-authorization-server").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

// --- isolation -------------------------------------------------------------------

#[tokio::test]
async fn the_same_client_id_authenticates_only_at_its_own_tenant() {
    let server = start_two("");
    let form = [("grant_type", "client_credentials")];
    for (at, secret_of_tenant) in [
        ("acme", "globex"),
        ("acme", TOP),
        ("globex", "acme"),
        ("globex", TOP),
        (TOP, "acme"),
        (TOP, "globex"),
    ] {
        let secret = secret_of(secret_of_tenant, "app");
        let (status, body) = server
            .post_form(
                &tenant_path(at, "/oauth2/token"),
                Some(("app", &secret)),
                &form,
            )
            .await;
        assert_oauth_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_client");
    }
    for tenant in ["acme", "globex", TOP] {
        let token = access_token_at(&server, tenant, "app").await;
        assert_active_at(&server, tenant, &token).await;
    }

    // A top-level client is no client of a tenant's, even with its secret.
    let (status, body) = server
        .post_form(
            "/acme/oauth2/token",
            Some(("introspector", "introspector-secret")),
            &form,
        )
        .await;
    assert_oauth_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_client");
}

#[tokio::test]
async fn a_token_is_active_only_at_the_tenant_that_issued_it() {
    let server = start_two("");
    let acme = access_token_at(&server, "acme", "app").await;
    let globex = access_token_at(&server, "globex", "app").await;
    let top = access_token_at(&server, TOP, "app").await;
    for (token, owner) in [(&acme, "acme"), (&globex, "globex"), (&top, TOP)] {
        for at in ["acme", "globex", TOP] {
            if at == owner {
                let view = assert_active_at(&server, at, token).await;
                assert_eq!(view["iss"], issuer(&server, owner), "{view}");
            } else {
                assert_inactive_at(&server, at, token).await;
            }
        }
    }
    // The top level's other introspecting client agrees.
    let (status, view) = server.introspect_as("introspector", &acme).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view, json!({"active": false}));
}

#[tokio::test]
async fn revoking_through_another_tenant_answers_200_and_revokes_nothing() {
    let server = start_two("");
    let acme = access_token_at(&server, "acme", "app").await;
    for at in ["globex", TOP] {
        let (status, body) =
            post_tenant(&server, at, "/oauth2/revoke", "app", &[("token", &acme)]).await;
        assert_eq!(status, StatusCode::OK, "revoke at {at:?}: {body}");
        assert_active_at(&server, "acme", &acme).await;
    }
    // Its own tenant revokes it.
    let (status, body) = post_tenant(
        &server,
        "acme",
        "/oauth2/revoke",
        "app",
        &[("token", &acme)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_inactive_at(&server, "acme", &acme).await;

    // The other way round: acme cannot revoke globex's or the top level's.
    let globex = access_token_at(&server, "globex", "app").await;
    let top = access_token_at(&server, TOP, "app").await;
    for (token, owner) in [(&globex, "globex"), (&top, TOP)] {
        let (status, body) = post_tenant(
            &server,
            "acme",
            "/oauth2/revoke",
            "app",
            &[("token", token)],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_active_at(&server, owner, token).await;
    }
}

#[tokio::test]
async fn another_tenants_token_is_an_unknown_subject_token_for_exchange() {
    let server = start_two("");
    let acme = access_token_at(&server, "acme", "app").await;
    // Both callers may exchange every client's tokens (`exchange_from =
    // ["*"]`): acme's token is simply unknown to them, as any unknown
    // subject token is (exchange.rs: 400 invalid_request).
    for at in ["globex", TOP] {
        let (status, body) = exchange_at(&server, at, &acme).await;
        assert_bad_request(status, &body, "invalid_request");
    }
    let top = access_token_at(&server, TOP, "app").await;
    let (status, body) = exchange_at(&server, "acme", &top).await;
    assert_bad_request(status, &body, "invalid_request");

    // At acme the same exchange works, and the result is acme's.
    let (status, body) = exchange_at(&server, "acme", &acme).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let exchanged = str_of(&body, "access_token");
    let view = assert_active_at(&server, "acme", exchanged).await;
    assert_eq!(view["iss"], issuer(&server, "acme"), "{view}");
    assert_inactive_at(&server, "globex", exchanged).await;
}

#[tokio::test]
async fn mutating_another_tenants_token_is_the_unknown_token_answer() {
    let server = start_two("");
    let acme = access_token_at(&server, "acme", "app").await;
    for at in ["globex", TOP] {
        let (status, body) =
            mutate_at(&server, at, &json!({"token": acme, "patch": {"a": at}})).await;
        assert_oauth_error(status, &body, StatusCode::BAD_REQUEST, "invalid_token");
    }
    let view = assert_active_at(&server, "acme", &acme).await;
    assert_eq!(view["custom"], json!({}), "{view}");
    assert_eq!(view["version"], 1, "{view}");

    // acme's own mutate client changes it; globex still sees nothing.
    let (status, body) =
        mutate_at(&server, "acme", &json!({"token": acme, "patch": {"a": 1}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"version": 2}));
    let view = assert_active_at(&server, "acme", &acme).await;
    assert_eq!(view["custom"], json!({"a": 1}), "{view}");
    assert_inactive_at(&server, "globex", &acme).await;
}

#[tokio::test]
async fn a_refresh_token_refreshes_only_at_its_own_tenant() {
    let server = start_two("");
    let (_, refresh) = pair_at(&server, "acme").await;
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh.as_str()),
    ];
    for at in ["globex", TOP] {
        let (status, body) = token_at(&server, at, "app", &form).await;
        assert_bad_request(status, &body, "invalid_grant");
    }
    // Not used up by those: acme refreshes it.
    let (status, body) = token_at(&server, "acme", "app", &form).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let view = assert_active_at(&server, "acme", str_of(&body, "access_token")).await;
    assert_eq!(view["iss"], issuer(&server, "acme"), "{view}");

    // The other way round.
    let (_, top_refresh) = pair_at(&server, TOP).await;
    let (status, body) = token_at(
        &server,
        "acme",
        "app",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", top_refresh.as_str()),
        ],
    )
    .await;
    assert_bad_request(status, &body, "invalid_grant");
    let (status, body) = server.refresh("app", &top_refresh).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn trusted_issuers_and_authorities_are_not_inherited_from_the_top_level() {
    let server = start_two("");
    let exchange_id_token = |tenant: &'static str, id_token: String| {
        let server = &server;
        async move {
            token_at(
                server,
                tenant,
                "app",
                &[
                    ("grant_type", TOKEN_EXCHANGE),
                    ("subject_token", &id_token),
                    ("subject_token_type", ID_TOKEN_TYPE),
                    ("scope", "photos.read"),
                ],
            )
            .await
        }
    };

    // The top level trusts TRUSTED_ISSUER; acme's `app` lists it too, but
    // acme does not trust it: an id_token of an untrusted issuer.
    let top_user = id_token(TRUSTED_ISSUER, "user-42");
    let (status, body) = exchange_id_token(TOP, top_user.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = exchange_id_token("acme", top_user).await;
    assert_bad_request(status, &body, "invalid_request");

    // acme's own issuer is trusted at acme only.
    let acme_user = id_token(&idp_of("acme"), "user-42");
    let (status, body) = exchange_id_token("acme", acme_user.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let view = assert_active_at(&server, "acme", str_of(&body, "access_token")).await;
    assert_eq!(view["sub"], "user-42", "{view}");
    assert_eq!(view["idp"], idp_of("acme"), "{view}");
    for at in ["globex", TOP] {
        let (status, body) = exchange_id_token(at, acme_user.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "at {at:?}: {body}");
        assert!(
            body["error"] == "invalid_request" || body["error"] == "invalid_grant",
            "at {at:?}: {body}"
        );
    }

    // A credential names an authority of its own tenant: `top-as` is the
    // top level's only.
    let top_as = |token: &str| {
        json!({"token": token, "patch": {"credentials": {"photos": {
            "access_token": "down", "token_type": "Bearer",
            "expires_at": unix_now() + 3600, "authority": "top-as",
        }}}})
    };
    let acme = access_token_at(&server, "acme", "app").await;
    let (status, body) = mutate_at(&server, "acme", &top_as(&acme)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let top = access_token_at(&server, TOP, "app").await;
    let (status, body) = mutate_at(&server, TOP, &top_as(&top)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let view = assert_active_at(&server, "acme", &acme).await;
    assert_eq!(view["custom"], json!({}), "{view}");
}

// --- the gateway ----------------------------------------------------------------

#[tokio::test]
async fn a_tenant_route_admits_only_that_tenants_tokens() {
    let upstream = Upstream::start().await;
    let url = upstream.url();
    let server = start_two(&format!(
        "{}{}",
        credential_route("acme-api", "/acme-api/", &url, "tenant = \"acme\""),
        credential_route("api", "/api/", &url, "")
    ));
    let acme = token_with_photos_at(&server, "acme").await;
    let globex = token_with_photos_at(&server, "globex").await;
    let top = token_with_photos_at(&server, TOP).await;

    let response = call(&server, "/acme-api/x", &acme).await;
    assert_eq!(response.status(), StatusCode::OK);
    let echo: Value = response.json().await.expect("upstream echo");
    assert_eq!(echo["authorization"], "Bearer down-acme");
    let response = call(&server, "/api/x", &top).await;
    assert_eq!(response.status(), StatusCode::OK);
    let echo: Value = response.json().await.expect("upstream echo");
    assert_eq!(echo["authorization"], "Bearer down-top");
    upstream.clear();

    assert_gateway_refuses(&server, "/acme-api/x", &globex, "globex's on acme's route").await;
    assert_gateway_refuses(&server, "/acme-api/x", &top, "the top level's on acme's").await;
    assert_gateway_refuses(&server, "/api/x", &acme, "acme's on a top-level route").await;
    assert_gateway_refuses(&server, "/api/x", &globex, "globex's on a top-level route").await;
    assert!(
        upstream.requests().is_empty(),
        "a refused request went upstream: {:?}",
        upstream.requests()
    );
}

#[tokio::test]
async fn tenants_sign_with_keys_of_their_own() {
    let upstream = Upstream::start().await;
    let server = start_two(&route(
        "acme-jwt",
        "/acme-jwt/",
        &upstream.url(),
        "tenant = \"acme\"\nforward = \"jwt\"",
    ));
    let top = kids(&server, "/.well-known/jwks.json").await;
    let acme = kids(&server, "/acme/.well-known/jwks.json").await;
    let globex = kids(&server, "/globex/.well-known/jwks.json").await;
    assert!(top.is_disjoint(&acme), "{top:?} / {acme:?}");
    assert!(top.is_disjoint(&globex), "{top:?} / {globex:?}");
    assert!(acme.is_disjoint(&globex), "{acme:?} / {globex:?}");

    // A phantom route of acme's: acme's issuer, acme's key.
    let token = access_token_at(&server, "acme", "app").await;
    let response = call(&server, "/acme-jwt/x", &token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let requests = upstream.requests();
    let sent = requests
        .last()
        .and_then(|r| r.header("authorization"))
        .expect("the upstream got an Authorization");
    let jwt = sent
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a Bearer value: {sent}"));
    assert!(!jwt.contains("rgat_"), "the reference token went upstream");
    let acme_issuer = issuer(&server, "acme");
    let verified = jose_verify(
        &server.url("/acme/.well-known/jwks.json"),
        &acme_issuer,
        "acme-jwt",
        jwt,
        "at+jwt",
    );
    assert_eq!(verified["ok"], true, "{verified}");
    assert_eq!(verified["payload"]["iss"], acme_issuer.as_str());
    assert_eq!(verified["payload"]["client_id"], "app");
    let kid = str_of(&verified["header"], "kid");
    assert!(acme.contains(kid), "{kid} not in acme's JWKS {acme:?}");
    // Neither the top level's keys nor globex's verify it.
    for jwks in ["/.well-known/jwks.json", "/globex/.well-known/jwks.json"] {
        let verified = jose_verify(&server.url(jwks), &acme_issuer, "acme-jwt", jwt, "at+jwt");
        assert_eq!(verified["ok"], false, "{jwks}: {verified}");
    }
}

// --- the device flow --------------------------------------------------------------

#[tokio::test]
async fn a_device_code_is_approved_and_redeemed_only_at_its_own_tenant() {
    let server = start_two("");
    let (status, authorization) = post_tenant(
        &server,
        "acme",
        "/oauth2/device_authorization",
        "tv",
        &[("scope", "photos.read")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{authorization}");
    let user_code = str_of(&authorization, "user_code").to_string();
    let device_code = str_of(&authorization, "device_code").to_string();
    // globex's approver, with an id_token it may use, knows no such code.
    let (status, body) = approve_at(&server, "globex", &user_code, "person-globex").await;
    assert_bad_request(status, &body, "invalid_grant");
    let (status, body) = approve_at(&server, "acme", &user_code, "person-1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}));

    // globex's device client cannot redeem acme's device code; acme's can.
    let poll = [
        ("grant_type", DEVICE_GRANT),
        ("device_code", device_code.as_str()),
    ];
    let (status, body) = token_at(&server, "globex", "tv", &poll).await;
    assert_bad_request(status, &body, "invalid_grant");
    let (status, tokens) = token_at(&server, "acme", "tv", &poll).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let access = str_of(&tokens, "access_token");
    let view = assert_active_at(&server, "acme", access).await;
    assert_eq!(view["sub"], "person-1", "{view}");
    assert_eq!(view["client_id"], "tv", "{view}");
    assert_eq!(view["idp"], idp_of("acme"), "{view}");
    assert_eq!(view["iss"], issuer(&server, "acme"), "{view}");
    assert_inactive_at(&server, "globex", access).await;
    assert_inactive_at(&server, TOP, access).await;

    // The other way round: a code of globex's is unknown to acme.
    let (status, authorization) =
        post_tenant(&server, "globex", "/oauth2/device_authorization", "tv", &[]).await;
    assert_eq!(status, StatusCode::OK, "{authorization}");
    let user_code = str_of(&authorization, "user_code");
    let (status, body) = approve_at(&server, "acme", user_code, "person-2").await;
    assert_bad_request(status, &body, "invalid_grant");
}

// --- settings ----------------------------------------------------------------------

#[tokio::test]
async fn tenant_token_settings_inherit_what_they_do_not_set() {
    let server = start(
        &[("acme", ""), ("globex", "access_token_ttl = \"5m\"")],
        "access_token_ttl = \"20m\"",
        "",
    );
    for (tenant, ttl) in [("acme", 1200), ("globex", 300), (TOP, 1200)] {
        let (status, body) = token_at(
            &server,
            tenant,
            "app",
            &[("grant_type", "client_credentials")],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{tenant:?}: {body}");
        assert_eq!(body["expires_in"], ttl, "{tenant:?}: {body}");
        let view = assert_active_at(&server, tenant, str_of(&body, "access_token")).await;
        let lifetime = view["exp"].as_i64().expect("exp") - view["iat"].as_i64().expect("iat");
        assert_eq!(lifetime, ttl, "{tenant:?}: {view}");
    }
}

// --- reload --------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_added_and_removed_by_a_reload() {
    let server = start(&[("acme", "")], "", "");
    let acme = access_token_at(&server, "acme", "app").await;
    let form = [("grant_type", "client_credentials")];
    let (status, body) = token_at(&server, "globex", "app", &form).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "globex before it exists: {body}"
    );

    // Add globex.
    let config = std::fs::read_to_string(&server.config_path).expect("read config");
    let globex_toml = tenant_toml(&server.base, "globex", "");
    std::fs::write(&server.config_path, format!("{config}\n{globex_toml}")).expect("write config");
    wait_for_status(
        &server,
        "globex",
        "/oauth2/token",
        "app",
        &form,
        StatusCode::OK,
    )
    .await;
    assert_active_at(&server, "acme", &acme).await;
    let globex = access_token_at(&server, "globex", "app").await;
    assert_active_at(&server, "globex", &globex).await;
    assert_inactive_at(&server, "globex", &acme).await;

    // Remove acme.
    let config = std::fs::read_to_string(&server.config_path).expect("read config");
    let acme_toml = tenant_toml(&server.base, "acme", "");
    assert!(config.contains(&acme_toml), "acme's table is in the file");
    std::fs::write(&server.config_path, config.replacen(&acme_toml, "", 1)).expect("write config");
    wait_for_status(
        &server,
        "acme",
        "/oauth2/introspect",
        "middle",
        &[("token", &acme)],
        StatusCode::NOT_FOUND,
    )
    .await;
    let (status, body) = token_at(&server, "acme", "app", &form).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body["error"].is_string(), "no JSON error: {body}");
    assert_active_at(&server, "globex", &globex).await;
    let again = access_token_at(&server, "globex", "app").await;
    assert_active_at(&server, "globex", &again).await;
    // The top level served throughout.
    let top = access_token_at(&server, TOP, "app").await;
    assert_active_at(&server, TOP, &top).await;
}

#[tokio::test]
async fn revoking_a_subject_ends_its_grants_in_that_tenant_alone() {
    let server = start_two("");
    // client_credentials tokens: the subject is the client id, `app` in
    // every tenant.
    let acme = access_token_at(&server, "acme", "app").await;
    let globex = access_token_at(&server, "globex", "app").await;
    let top = server.access_token("app").await;
    let (status, body) = post_tenant(
        &server,
        "globex",
        "/oauth2/revoke",
        "middle",
        &[("token", "app"), ("token_type_hint", "subject")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_inactive_at(&server, "globex", &globex).await;
    assert_active_at(&server, "acme", &acme).await;
    assert_active_at(&server, "", &top).await;
}

#[tokio::test]
async fn the_admin_api_reaches_a_tenant_only_when_asked_by_name() {
    let listener = Arc::new(loopback_listener());
    let base = format!(
        "http://127.0.0.1:{}",
        listener.local_addr().expect("address").port()
    );
    let ops = format!(
        "[[clients]]\nid = \"ops\"\nsecret_hash = \"{}\"\ngrant_types = [\"client_credentials\"]\nadmin = true\n",
        secret_hash("ops-secret")
    );
    let mut server = Refgate::start_with(Options {
        tokens: format!("device_verification_uri = \"{VERIFICATION_URI}\""),
        extra: format!("{ops}\n{}", tenant_toml(&base, "acme", "")),
        token_listener: Some(listener),
        ..Options::default()
    });
    let port = server.reserve_admin_port();
    let config = std::fs::read_to_string(&server.config_path).expect("config");
    let config = config.replacen(
        "[listen]\n",
        &format!("[listen]\nadmin = \"127.0.0.1:{port}\"\n"),
        1,
    );
    std::fs::write(&server.config_path, config).expect("config");
    server.restart();
    let acme = access_token_at(&server, "acme", "app").await;
    let top = server.access_token("app").await;
    let admin = |path: &str| {
        http()
            .get(format!("http://127.0.0.1:{port}{path}"))
            .basic_auth("ops", Some("ops-secret"))
            .send()
    };
    let listed = |body: &Value| -> Vec<(String, Option<String>)> {
        body["grants"]
            .as_array()
            .expect("grants")
            .iter()
            .map(|g| {
                (
                    g["client_id"].as_str().unwrap_or_default().to_string(),
                    g["tenant"].as_str().map(str::to_string),
                )
            })
            .collect()
    };
    let top_list: Value = admin("/admin/grants?client_id=app")
        .await
        .expect("admin")
        .json()
        .await
        .expect("json");
    assert_eq!(listed(&top_list), vec![("app".to_string(), None)]);
    let acme_list: Value = admin("/admin/grants?client_id=app&tenant=acme")
        .await
        .expect("admin")
        .json()
        .await
        .expect("json");
    assert_eq!(
        listed(&acme_list),
        vec![("app".to_string(), Some("acme".to_string()))]
    );
    let unknown = admin("/admin/grants?client_id=app&tenant=nosuch")
        .await
        .expect("admin");
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    let body: Value = unknown.json().await.expect("json");
    assert_eq!(body["error"], "invalid_request");

    // Revoking a client's grants in one tenant leaves the other's alone.
    let revoked: Value = http()
        .post(format!("http://127.0.0.1:{port}/admin/revoke"))
        .basic_auth("ops", Some("ops-secret"))
        .json(&json!({ "tenant": "acme", "client_id": "app" }))
        .send()
        .await
        .expect("admin")
        .json()
        .await
        .expect("json");
    assert_eq!(revoked["revoked"], 1);
    assert_inactive_at(&server, "acme", &acme).await;
    assert_active_at(&server, "", &top).await;
    // A tenant's client is not an admin, whatever it is called.
    let (status, _) = post_tenant(
        &server,
        "acme",
        "/oauth2/introspect",
        "middle",
        &[("token", &acme)],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let refused = http()
        .get(format!(
            "http://127.0.0.1:{port}/admin/grants?client_id=app"
        ))
        .basic_auth("middle", Some(&*secret_of("acme", "middle")))
        .send()
        .await
        .expect("admin");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn rotating_a_tenants_signing_key_leaves_the_others_alone() {
    let server = start_two("");
    let before_top = kids(&server, "/.well-known/jwks.json").await;
    let before_globex = kids(&server, "/globex/.well-known/jwks.json").await;
    let before_acme = kids(&server, "/acme/.well-known/jwks.json").await;
    let rotate = |tenant: &str| {
        output_within(
            server
                .command()
                .args(["key", "rotate-signing", "--tenant", tenant, "--config"])
                .arg(&server.config_path),
            Duration::from_secs(30),
        )
    };
    let rotated = rotate("acme");
    let printed = String::from_utf8_lossy(&rotated.stdout).to_string();
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    let kid = printed
        .strip_prefix("signing key ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no kid in {printed:?}"))
        .to_string();
    // acme's JWKS gains the key within a JWKS refresh (a second).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = kids(&server, "/acme/.well-known/jwks.json").await;
        if now.contains(&kid) {
            assert!(now.is_superset(&before_acme));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "acme's JWKS lacks {kid}: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(kids(&server, "/.well-known/jwks.json").await, before_top);
    assert_eq!(
        kids(&server, "/globex/.well-known/jwks.json").await,
        before_globex
    );
    let unknown = rotate("nosuch");
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("nosuch"));
}

#[tokio::test]
async fn one_tenants_user_code_guessing_does_not_lock_out_another_tenants_approver() {
    let server = start_two("");
    // acme's `portal` guesses until it is refused (10 wrong codes a minute).
    let mut refused = false;
    for _ in 0..12 {
        let (status, body) = approve_at(&server, "acme", "BCDF-GHJK", "person-1").await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(body["error"], "rate_limited", "{body}");
            refused = true;
            break;
        }
        assert_bad_request(status, &body, "invalid_grant");
    }
    assert!(refused, "acme's approver was never refused");
    // globex's `portal`, the same client id in another tenant, is not.
    let (status, body) = approve_at(&server, "globex", "BCDF-GHJK", "person-1").await;
    assert_bad_request(status, &body, "invalid_grant");
    let (status, authorization) = post_tenant(
        &server,
        "globex",
        "/oauth2/device_authorization",
        "tv",
        &[("scope", "photos.read")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{authorization}");
    let (status, body) = approve_at(
        &server,
        "globex",
        str_of(&authorization, "user_code"),
        "person-2",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn one_tenants_failed_authentications_do_not_lock_out_another_tenants_client() {
    let server = start(
        &[("acme", ""), ("globex", "")],
        "auth_failures = \"3/min\"",
        "",
    );
    let wrong = [("grant_type", "client_credentials")];
    let mut refused = false;
    for _ in 0..5 {
        let (status, body) = server
            .post_form(
                "/acme/oauth2/token",
                Some(("app", "not-the-secret")),
                &wrong,
            )
            .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            refused = true;
            break;
        }
        assert_oauth_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_client");
    }
    assert!(refused, "acme's app was never refused");
    // The right secret is refused too at acme, until the window passes...
    let (status, _) = token_at(&server, "acme", "app", &wrong).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // ...but `app` of globex and of the top level are other clients.
    access_token_at(&server, "globex", "app").await;
    server.access_token("app").await;
}

#[tokio::test]
async fn a_tenant_is_only_ever_the_exact_first_path_segment() {
    let server = start_two("");
    let token = access_token_at(&server, "acme", "app").await;
    // Paths a client may try to reach acme's introspection, or another
    // tenant's, by: none of them is acme's endpoint.
    for path in [
        "/ACME/oauth2/introspect",
        "/acme%2Foauth2/introspect",
        "/acme/acme/oauth2/introspect",
        "/globex/acme/oauth2/introspect",
        "//acme/oauth2/introspect",
        "/acme /oauth2/introspect",
        "/.well-known/oauth-authorization-server/acme/oauth2/introspect",
    ] {
        let secret = secret_of("acme", "middle");
        let response = http()
            .post(server.url(path))
            .basic_auth("middle", Some(&secret))
            .form(&[("token", token.as_str())])
            .send()
            .await
            .expect("request");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(
            status == StatusCode::NOT_FOUND || status == StatusCode::BAD_REQUEST,
            "{path}: {status} {body}"
        );
        assert!(body["error"].is_string(), "{path}: {body}");
        assert_ne!(body["active"], true, "{path}: {body}");
    }
    // Metadata with a path beyond the tenant's name is not the tenant's.
    let (status, body) = get_json(
        &server,
        "/.well-known/oauth-authorization-server/acme/extra",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_active_at(&server, "acme", &token).await;
}

//! The connect flow: refgate obtains a user's downstream credential itself
//! (authorization code + PKCE at the real oidc-provider), stores it in the
//! grant of the token that asked, and the gateway uses it. Driven over
//! plain HTTP by a cookie-keeping client that follows redirects step by
//! step, as a browser does; `connect_browser` drives a real one.

use std::net::TcpListener;
use std::sync::Arc;

use reqwest::header::{LOCATION, WWW_AUTHENTICATE};
use serde_json::{json, Value};

use crate::common::oidc::OidcAs;
use crate::common::upstream::Upstream;
use crate::common::*;

pub const CONNECT_CLIENT: &str = "connect-client";
const CONNECT_SECRET: &str = "connect-client-secret";
pub const RETURN_TO: &str = "http://app.test/done";

/// refgate, the authority and the upstream of one connect test.
pub struct Setup {
    pub server: Refgate,
    pub oidc: OidcAs,
    pub upstream: Upstream,
}

/// The authority's client registration for refgate's callback at `port`.
fn clients_env(port: u16) -> String {
    json!([{
        "client_id": CONNECT_CLIENT,
        "client_secret": CONNECT_SECRET,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "redirect_uris": [format!("http://127.0.0.1:{port}/connect/callback")],
        "token_endpoint_auth_method": "client_secret_basic",
    }])
    .to_string()
}

/// Starts the three; the authority is configured by `issuer` only (its
/// endpoints come from discovery) unless `explicit`; `more` is added to
/// `[connect]`.
pub async fn setup(explicit: bool, more: &str) -> Setup {
    setup_with(
        |oidc| {
            if explicit {
                format!(
                    "token_endpoint = \"{}\"\nauthorization_endpoint = \"{}\"\n",
                    oidc.url("/token"),
                    oidc.url("/auth")
                )
            } else {
                format!("issuer = \"{}\"\n", oidc.url(""))
            }
        },
        more,
    )
    .await
}

/// As [`setup`], with the authority's endpoint lines from `endpoints`.
async fn setup_with(endpoints: impl FnOnce(&OidcAs) -> String, more: &str) -> Setup {
    let listener = Arc::new(TcpListener::bind("127.0.0.1:0").expect("bind"));
    let port = listener.local_addr().expect("address").port();
    let oidc = OidcAs::start_with_env(300, &[("CLIENTS", clients_env(port))]);
    let upstream = Upstream::start().await;
    let endpoints = endpoints(&oidc);
    let server = Refgate::start_with(Options {
        extra: format!(
            r#"[[authorities]]
name = "oidc"
{endpoints}client_id = "{CONNECT_CLIENT}"
client_secret = "{CONNECT_SECRET}"
scopes = ["openid", "offline_access", "api"]
connect_credential = "photos"

[connect]
redirect_uri = "http://127.0.0.1:{port}/connect/callback"
return_to = ["{RETURN_TO}"]
{more}

{}"#,
            credential_route("photos", "/api/", &upstream.url(), "")
        ),
        token_listener: Some(listener),
        ..Options::default()
    });
    Setup {
        server,
        oidc,
        upstream,
    }
}

/// A browser: keeps cookies, follows no redirect by itself.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(LOCATION)
        .unwrap_or_else(|| panic!("no Location in a {} answer", response.status()))
        .to_str()
        .expect("Location")
        .to_string()
}

/// `POST /oauth2/connect` as the holder of `token`.
pub async fn ask_connect(
    server: &Refgate,
    token: &str,
    form: &[(&str, &str)],
) -> (StatusCode, Value) {
    let response = http()
        .post(server.url("/oauth2/connect"))
        .bearer_auth(token)
        .form(form)
        .send()
        .await
        .expect("connect request");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A `connect_uri` for `token` at authority `oidc`.
pub async fn connect_uri(server: &Refgate, token: &str, return_to: Option<&str>) -> String {
    let mut form = vec![("authority", "oidc")];
    if let Some(r) = return_to {
        form.push(("return_to", r));
    }
    let (status, body) = ask_connect(server, token, &form).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    str_of(&body, "connect_uri").to_string()
}

/// Opens `connect_uri` and walks to the authority's sign-in page; returns
/// the URL of the authority's interaction (the form's target).
async fn to_sign_in(browser: &reqwest::Client, connect_uri: &str) -> (String, String) {
    let start = browser.get(connect_uri).send().await.expect("start");
    assert_eq!(
        start.status(),
        StatusCode::FOUND,
        "{:?}",
        start.text().await
    );
    let authorize = location(&start);
    let auth = browser.get(&authorize).send().await.expect("authorize");
    assert!(auth.status().is_redirection(), "{}", auth.status());
    let interaction = location(&auth);
    let base = authorize[..authorize.find("/auth").expect("an /auth URL")].to_string();
    let page = browser
        .get(format!("{base}{interaction}"))
        .send()
        .await
        .expect("sign-in page");
    assert_eq!(page.status(), StatusCode::OK);
    (authorize, format!("{base}{interaction}"))
}

/// Signs in as `account` (or denies) and follows the authority's redirects
/// until it sends the browser back to refgate; returns that callback URL.
async fn sign_in(
    browser: &reqwest::Client,
    interaction: &str,
    account: &str,
    allow: bool,
) -> String {
    let decision = if allow { "allow" } else { "deny" };
    let mut response = browser
        .post(interaction)
        .form(&[("login", account), ("decision", decision)])
        .send()
        .await
        .expect("sign in");
    let base =
        interaction[..interaction.find("/interaction").expect("interaction URL")].to_string();
    for _ in 0..5 {
        assert!(response.status().is_redirection(), "{}", response.status());
        let next = location(&response);
        if next.contains("/connect/callback") {
            return next;
        }
        let next = if next.starts_with('/') {
            format!("{base}{next}")
        } else {
            next
        };
        response = browser.get(&next).send().await.expect("follow");
    }
    panic!("the authority never sent the browser back");
}

/// The whole flow in `browser` up to (not including) refgate's callback.
pub async fn authorize(
    browser: &reqwest::Client,
    connect_uri: &str,
    account: &str,
    allow: bool,
) -> String {
    let (_, interaction) = to_sign_in(browser, connect_uri).await;
    sign_in(browser, &interaction, account, allow).await
}

async fn gateway_get(server: &Refgate, token: &str) -> reqwest::Response {
    http()
        .get(format!("{}/api/photos", server.proxy))
        .bearer_auth(token)
        .send()
        .await
        .expect("proxy request")
}

/// The credential stored in the grant of `token`, as the middle tier
/// sees it (introspection with `reveal_custom`).
async fn stored_photos(server: &Refgate, token: &str) -> Value {
    let (status, body) = server.introspect_as("middle", token).await;
    assert_eq!(status, StatusCode::OK);
    body["custom"]["credentials"]["photos"].clone()
}

/// Opens `url` in `browser` and asserts refgate's 400 page, naming `text`
/// (any page when `text` is empty).
async fn refused_page(browser: &reqwest::Client, url: &str, text: &str) {
    let response = browser.get(url).send().await.expect("request");
    let status = response.status();
    let page = response.text().await.expect("page");
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert!(page.contains(text), "{text:?} not in {page}");
}

/// Revokes `app`'s access token `token`.
async fn revoke(server: &Refgate, token: &str) {
    let (status, _) = server
        .post_form(
            "/oauth2/revoke",
            Some(("app", "app-secret")),
            &[("token", token)],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_connect_flow_fills_the_credential_the_gateway_asked_for() {
    let Setup {
        server,
        oidc,
        upstream,
    } = setup(false, "").await;
    let token = server.access_token("app").await;

    // The gateway says where to start.
    let refused = gateway_get(&server, &token).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let challenge = refused.headers()[WWW_AUTHENTICATE]
        .to_str()
        .expect("challenge")
        .to_string();
    let body: Value = refused.json().await.expect("JSON");
    assert_eq!(body["error"], "credential_missing");
    assert_eq!(body["credential"], "photos");
    assert_eq!(body["authority"], "oidc");
    let endpoint = server.url("/oauth2/connect");
    assert_eq!(body["connect_endpoint"], endpoint.as_str());
    assert!(
        challenge.contains(&format!("connect_endpoint=\"{endpoint}\"")),
        "{challenge}"
    );

    let (status, answer) = ask_connect(
        &server,
        &token,
        &[
            ("authority", "oidc"),
            ("return_to", "http://app.test/done?tab=2"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["expires_in"], 600);
    let connect_uri = str_of(&answer, "connect_uri").to_string();
    assert!(connect_uri.starts_with(&server.url("/connect/start?ticket=")));
    assert!(
        !connect_uri.contains(&token),
        "the token is in the connect_uri"
    );

    let browser = browser();
    let (authorize, interaction) = to_sign_in(&browser, &connect_uri).await;
    let authorize_url = url::Url::parse(&authorize).expect("authorize URL");
    let params: std::collections::HashMap<String, String> =
        authorize_url.query_pairs().into_owned().collect();
    assert!(authorize.starts_with(&oidc.url("/auth?")), "{authorize}");
    assert_eq!(params["response_type"], "code");
    assert_eq!(params["client_id"], CONNECT_CLIENT);
    assert_eq!(params["code_challenge_method"], "S256");
    assert_eq!(params["code_challenge"].len(), 43);
    assert_eq!(params["scope"], "openid offline_access api");
    assert_eq!(params["prompt"], "consent");
    assert!(params["nonce"].len() >= 32);
    assert!(params["state"].len() >= 32);
    assert!(!authorize.contains(&token));

    let callback = sign_in(&browser, &interaction, "alice", true).await;
    let done = browser.get(&callback).send().await.expect("callback");
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&done), "http://app.test/done?tab=2&connected=true");
    assert_eq!(oidc.stats().await["authorization_code"], 1);

    // The credential is in the grant, with its refresh token and authority.
    let stored = stored_photos(&server, &token).await;
    assert_eq!(stored["authority"], "oidc");
    assert!(stored["refresh_token"].is_string(), "{stored}");
    let access = str_of(&stored, "access_token").to_string();
    assert!(stored["expires_at"].as_i64().expect("expires_at") > unix_now());

    // The gateway forwards it; the authority knows it.
    let through = gateway_get(&server, &token).await;
    assert_eq!(through.status(), StatusCode::OK);
    let seen = upstream.requests();
    assert_eq!(
        seen.last()
            .expect("upstream request")
            .header("authorization"),
        Some(format!("Bearer {access}"))
    );
    assert!(oidc.is_active(&access).await);

    // Used once: the callback and the connect_uri do not work again.
    // (Its cookie is gone too, so the page says so first.)
    refused_page(&browser, &callback, "another browser").await;
    refused_page(&browser, &connect_uri, "").await;
    assert_eq!(oidc.stats().await["authorization_code"], 1);
    assert_eq!(
        stored_photos(&server, &token).await["access_token"],
        access.as_str()
    );

    // Nothing secret in refgate's log.
    let log = server.log();
    assert!(!log.contains(&token) && !log.contains(&access));
}

#[tokio::test]
async fn the_connect_endpoint_refuses_what_it_cannot_serve() {
    let Setup { server, .. } = setup(true, "").await;
    let token = server.access_token("app").await;

    // No token, a refresh token, an unknown one.
    let response = http()
        .post(server.url("/oauth2/connect"))
        .form(&[("authority", "oidc")])
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()[WWW_AUTHENTICATE],
        "Bearer realm=\"refgate\""
    );
    let (_, refresh) = refreshable(&server, "photos.read offline_access").await;
    for bad in [refresh.as_str(), "rgat_unknown", "not a token"] {
        let (status, body) = ask_connect(&server, bad, &[("authority", "oidc")]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}: {body}");
        assert_eq!(body["error"], "invalid_token");
    }

    // Unknown or not connectable authorities; a missing one.
    for authority in ["nope", "photos-as", ""] {
        let (status, body) = ask_connect(&server, &token, &[("authority", authority)]).await;
        assert_bad_request(status, &body, "invalid_request");
    }
    let (status, body) = ask_connect(&server, &token, &[]).await;
    assert_bad_request(status, &body, "invalid_request");
    // By route: the authority that fills the route's credential.
    let (status, body) = ask_connect(&server, &token, &[("route", "photos")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for form in [
        vec![("route", "nope")],
        vec![("route", "photos"), ("authority", "oidc")],
    ] {
        let (status, body) = ask_connect(&server, &token, &form).await;
        assert_bad_request(status, &body, "invalid_request");
    }

    // return_to off the allow-list: other hosts, look-alike hosts, tricks.
    for return_to in [
        "http://evil.test/done",
        "http://app.test.evil.test/done",
        "http://app.test@evil.test/done",
        "https://app.test/done",
        "http://app.test/other",
        "javascript:alert(1)",
        "//evil.test/done",
        "http://app.test/done/../../other",
    ] {
        let (status, body) = ask_connect(
            &server,
            &token,
            &[("authority", "oidc"), ("return_to", return_to)],
        )
        .await;
        assert_bad_request(status, &body, "invalid_request");
    }
    // Repeated parameters are refused, as on every form endpoint.
    let (status, body) = ask_connect(
        &server,
        &token,
        &[("authority", "oidc"), ("authority", "oidc")],
    )
    .await;
    assert_bad_request(status, &body, "invalid_request");
}

#[tokio::test]
async fn tampered_foreign_or_replayed_callbacks_store_nothing() {
    let Setup { server, oidc, .. } = setup(true, "").await;
    let token = server.access_token("app").await;

    // A state refgate did not make, or none.
    let page = browser()
        .get(server.url("/connect/callback?code=abc&state=forged"))
        .send()
        .await
        .expect("callback");
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);
    let json_page = browser()
        .get(server.url("/connect/callback?code=abc"))
        .header("accept", "application/json")
        .send()
        .await
        .expect("callback");
    assert_eq!(json_page.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json_page.json::<Value>().await.expect("JSON")["error"],
        "invalid_request"
    );

    // The callback in another browser than the one that started the flow.
    let uri = connect_uri(&server, &token, None).await;
    let victim = browser();
    let callback = authorize(&victim, &uri, "alice", true).await;
    refused_page(&browser(), &callback, "another browser").await;

    // A state altered by one character.
    let mut altered = url::Url::parse(&callback).expect("URL");
    let pairs: Vec<(String, String)> = altered.query_pairs().into_owned().collect();
    {
        let mut q = altered.query_pairs_mut();
        q.clear();
        for (k, v) in &pairs {
            if k == "state" {
                let mut bytes = v.clone().into_bytes();
                let i = bytes.len() / 2;
                bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
                q.append_pair(k, &String::from_utf8(bytes).expect("ASCII"));
            } else {
                q.append_pair(k, v);
            }
        }
    }
    refused_page(&victim, altered.as_str(), "").await;

    // Two flows in one browser, codes swapped: PKCE binds each code to its
    // own flow, so the authority refuses, and nothing lands in either grant.
    let other_token = server.access_token("other").await;
    let browser = browser();
    let first = authorize(
        &browser,
        &connect_uri(&server, &token, None).await,
        "alice",
        true,
    )
    .await;
    let second = authorize(
        &self::browser(),
        &connect_uri(&server, &other_token, None).await,
        "mallory",
        true,
    )
    .await;
    let param = |url: &str, name: &str| {
        url::Url::parse(url)
            .expect("URL")
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.to_string())
            .expect("parameter")
    };
    let swapped = format!(
        "{}?code={}&state={}",
        server.url("/connect/callback"),
        param(&second, "code"),
        param(&first, "state")
    );
    refused_page(&browser, &swapped, "access_denied").await;

    assert_eq!(oidc.stats().await["authorization_code"], 0);
    for t in [&token, &other_token] {
        assert!(stored_photos(&server, t).await.is_null());
    }
}

#[tokio::test]
async fn a_denial_or_a_revocation_before_the_callback_stores_nothing() {
    let Setup { server, oidc, .. } = setup(true, "").await;

    // The user denies: back to return_to with the error, nothing stored.
    let token = server.access_token("app").await;
    let browser = browser();
    let callback = authorize(
        &browser,
        &connect_uri(&server, &token, Some(RETURN_TO)).await,
        "alice",
        false,
    )
    .await;
    let back = browser.get(&callback).send().await.expect("callback");
    assert_eq!(back.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&back), format!("{RETURN_TO}?error=access_denied"));
    assert!(stored_photos(&server, &token).await.is_null());

    // The token is revoked while the user signs in: the code is not even
    // redeemed.
    let uri = connect_uri(&server, &token, None).await;
    let callback = authorize(&browser, &uri, "alice", true).await;
    revoke(&server, &token).await;
    refused_page(&browser, &callback, "invalid_token").await;
    assert_eq!(oidc.stats().await["authorization_code"], 0);

    // A connect_uri of a revoked token does not start a flow either.
    let fresh = server.access_token("app").await;
    let uri = connect_uri(&server, &fresh, None).await;
    revoke(&server, &fresh).await;
    refused_page(&browser, &uri, "").await;
}

#[tokio::test]
async fn an_answer_naming_another_issuer_is_refused() {
    // RFC 9207: a callback whose `iss` is not the authority asked is a
    // mix-up; refused before the state is used, so the real answer still
    // completes the flow.
    let Setup { server, oidc, .. } = setup(false, "").await;
    let token = server.access_token("app").await;
    let browser = browser();
    let callback = authorize(
        &browser,
        &connect_uri(&server, &token, None).await,
        "alice",
        true,
    )
    .await;
    let mut forged = url::Url::parse(&callback).expect("URL");
    let pairs: Vec<(String, String)> = forged
        .query_pairs()
        .filter(|(k, _)| k != "iss")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    forged
        .query_pairs_mut()
        .clear()
        .extend_pairs(&pairs)
        .append_pair("iss", "https://evil.test");
    refused_page(&browser, forged.as_str(), "another authority").await;
    assert!(stored_photos(&server, &token).await.is_null());
    let done = browser.get(&callback).send().await.expect("callback");
    assert_eq!(done.status(), StatusCode::OK);
    assert_eq!(oidc.stats().await["authorization_code"], 1);

    // A discovery document that names another issuer than the configured
    // one (here: the same server, configured with a trailing slash) is not
    // used: no redirect anywhere.
    let Setup { server, oidc, .. } =
        setup_with(|oidc| format!("issuer = \"{}/\"\n", oidc.url("")), "").await;
    let token = server.access_token("app").await;
    let start = browser
        .get(connect_uri(&server, &token, None).await)
        .send()
        .await
        .expect("start");
    assert_eq!(start.status(), StatusCode::BAD_GATEWAY);
    assert!(start.headers().get(LOCATION).is_none());
    assert!(start
        .text()
        .await
        .expect("page")
        .contains("authority_unavailable"));
    assert_eq!(oidc.stats().await["token_requests"], 0);
}

#[tokio::test]
async fn an_expired_connect_uri_or_flow_is_refused() {
    let Setup { server, oidc, .. } = setup(true, "ttl = \"30s\"").await;
    let token = server.access_token("app").await;
    let browser = browser();
    let unused = connect_uri(&server, &token, None).await;
    let started = connect_uri(&server, &token, None).await;
    let callback = authorize(&browser, &started, "alice", true).await;
    tokio::time::sleep(std::time::Duration::from_secs(31)).await;
    refused_page(&browser, &unused, "expired").await;
    refused_page(&browser, &callback, "expired").await;
    assert_eq!(oidc.stats().await["authorization_code"], 0);
    assert!(stored_photos(&server, &token).await.is_null());
}

#[tokio::test]
async fn a_reauth_answer_points_at_the_connect_flow_too() {
    let Setup { server, .. } = setup(true, "").await;
    let token = server.access_token("app").await;
    server
        .store_credential(
            &token,
            "photos",
            json!({ "access_token": "old", "refresh_token": "dead", "authority": "oidc",
                    "expires_at": unix_now() - 10, "reauth_required": true }),
        )
        .await;
    let refused = gateway_get(&server, &token).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let challenge = refused.headers()[WWW_AUTHENTICATE]
        .to_str()
        .expect("challenge")
        .to_string();
    assert!(challenge.contains("connect_endpoint="), "{challenge}");
    let body: Value = refused.json().await.expect("JSON");
    assert_eq!(body["error"], "credential_reauth_required");
    assert_eq!(
        body["connect_endpoint"],
        server.url("/oauth2/connect").as_str()
    );
}

#[tokio::test]
async fn check_refuses_connect_settings_that_cannot_work() {
    let server = Refgate::start();
    let base = std::fs::read_to_string(&server.config_path).expect("config");
    let authority = |more: &str| {
        format!("[[authorities]]\nname = \"c\"\nclient_id = \"x\"\nclient_secret = \"y\"\n{more}\n")
    };
    let connect = "[connect]\nredirect_uri = \"http://127.0.0.1:1/connect/callback\"\n";
    let cases = [
        (
            authority("token_endpoint = \"http://127.0.0.1:1/t\"\nconnect_credential = \"p\""),
            "connect_credential",
        ),
        (
            format!(
                "{}{connect}",
                authority("token_endpoint = \"http://127.0.0.1:1/t\"\nconnect_credential = \"p\"")
            ),
            "connect_credential",
        ),
        (authority(""), "set token_endpoint, or issuer"),
        (
            format!(
                "{}[connect]\nredirect_uri = \"http://127.0.0.1:1/callback\"\n",
                authority("issuer = \"http://127.0.0.1:1\"\nconnect_credential = \"p\"")
            ),
            "connect.redirect_uri",
        ),
        (
            format!(
                "{}{connect}return_to = [\"https://app.example\"]\n",
                authority("issuer = \"http://127.0.0.1:1\"\nconnect_credential = \"p\"")
            ),
            "connect.return_to[0]",
        ),
        (
            format!(
                "{}{connect}ttl = \"5s\"\n",
                authority("issuer = \"http://127.0.0.1:1\"\nconnect_credential = \"p\"")
            ),
            "connect.ttl",
        ),
    ];
    for (extra, key) in cases {
        server.assert_check_refuses(&format!("{base}\n{extra}"), key);
    }
    // A complete one passes.
    let fine = format!(
        "{base}\n{}{connect}return_to = [\"https://app.example/done\"]\n",
        authority("issuer = \"http://127.0.0.1:1\"\nconnect_credential = \"p\"")
    );
    let out = server.check_config(&fine);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

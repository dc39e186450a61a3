//! Device authorization (RFC 8628): a real device-flow client (openid-client,
//! tests/peers/device-client) asks for codes and polls; the test approves
//! or denies the user code through the back channel (`/oauth2/device_approve`)
//! with id_tokens of the trusted test issuer. Also: `slow_down`, expiry,
//! code reuse, user-code guessing limits, and the bad inputs of each
//! endpoint.

use crate::common::*;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
const TRUSTED_ISSUER: &str = "https://accounts.test.example";
const AUDIENCE: &str = "refgate-test-client";
const KID: &str = "test-key-1";
const VERIFICATION_URI: &str = "https://portal.test.example/device";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

/// An id_token of `sub` signed by `key_file` for the trusted issuer.
fn id_token_signed_with(sub: &str, key_file: &str) -> String {
    let now = unix_now();
    let claims = json!({
        "iss": TRUSTED_ISSUER, "sub": sub, "aud": AUDIENCE, "iat": now, "exp": now + 300,
    });
    let pem = std::fs::read(fixture(key_file)).expect("fixture key");
    let key = EncodingKey::from_rsa_pem(&pem).expect("fixture RSA key");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(KID.to_string());
    jsonwebtoken::encode(&header, &claims, &key).expect("sign JWT")
}

fn id_token(sub: &str) -> String {
    id_token_signed_with(sub, "issuer-key.pem")
}

/// Clients: `tv` and `radio` (devices), `portal` (approves for the trusted
/// issuer), `kiosk` (may approve, but no issuer), besides the standard ones.
fn device_config() -> String {
    let client = |id: &str, body: &str| {
        format!(
            "[[clients]]\nid = \"{id}\"\nsecret_hash = \"{}\"\n{body}\n",
            secret_hash(&format!("{id}-secret"))
        )
    };
    [
        "[telemetry]\naudit_log = \"audit.log\"\n".to_string(),
        client(
            "tv",
            &format!(
                "grant_types = [\"{DEVICE_GRANT}\", \"refresh_token\"]\nscopes = [\"photos.read\", \"photos.write\", \"offline_access\"]"
            ),
        ),
        client(
            "radio",
            &format!("grant_types = [\"{DEVICE_GRANT}\"]\nscopes = [\"photos.read\", \"offline_access\"]"),
        ),
        client(
            "portal",
            &format!("device_approve = true\nexchange_from = [\"{TRUSTED_ISSUER}\"]"),
        ),
        client("kiosk", "device_approve = true"),
        format!(
            "[[trusted_issuers]]\nissuer = \"{TRUSTED_ISSUER}\"\njwks_file = \"{}\"\naudiences = [\"{AUDIENCE}\"]\n",
            fixture("issuer-jwks.json").display()
        ),
    ]
    .join("\n")
}

fn start(tokens: &str) -> Refgate {
    Refgate::start_with(Options {
        tokens: format!("device_verification_uri = \"{VERIFICATION_URI}\"\n{tokens}"),
        extra: device_config(),
        ..Options::default()
    })
}

/// `POST /oauth2/device_authorization` as `client`.
async fn authorize(server: &Refgate, client: &str, scope: Option<&str>) -> (StatusCode, Value) {
    let secret = format!("{client}-secret");
    let params: Vec<(&str, &str)> = scope.map(|s| ("scope", s)).into_iter().collect();
    server
        .post_form(
            "/oauth2/device_authorization",
            Some((client, &secret)),
            &params,
        )
        .await
}

async fn authorized(server: &Refgate, client: &str, scope: Option<&str>) -> Value {
    let (status, body) = authorize(server, client, scope).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// A poll of the token endpoint with `device_code`, as `client`.
async fn poll(server: &Refgate, client: &str, device_code: &str) -> (StatusCode, Value) {
    server
        .token(
            client,
            &[("grant_type", DEVICE_GRANT), ("device_code", device_code)],
        )
        .await
}

/// `POST /oauth2/device_approve` as `client` with `params`.
async fn approve_as(
    server: &Refgate,
    client: &str,
    params: &[(&str, &str)],
) -> (StatusCode, Value) {
    let secret = format!("{client}-secret");
    server
        .post_form("/oauth2/device_approve", Some((client, &secret)), params)
        .await
}

/// The portal approves `user_code` for `sub`, asserting success.
async fn approve(server: &Refgate, user_code: &str, sub: &str) {
    let token = id_token(sub);
    let (status, body) = approve_as(
        server,
        "portal",
        &[("user_code", user_code), ("id_token", &token)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}));
}

/// The openid-client device, running as a child process.
struct Device {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Device {
    fn start(server: &Refgate, client: &str, scope: &str) -> Self {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/device-client");
        assert!(
            std::path::Path::new(dir).join("node_modules").exists(),
            "run `npm ci` in tests/peers/device-client first (scripts/setup --with-test-peers does)"
        );
        let mut child = tokio::process::Command::new("node")
            .current_dir(dir)
            .arg("client.mjs")
            .arg(&server.base)
            .arg(client)
            .arg(format!("{client}-secret"))
            .arg(scope)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start node");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Device {
            _child: child,
            lines,
        }
    }

    /// The next line the device writes, within `limit`.
    async fn next(&mut self, limit: Duration) -> Value {
        let line = tokio::time::timeout(limit, self.lines.next_line())
            .await
            .expect("the device client wrote nothing in time")
            .expect("read the device client's output")
            .expect("the device client ended early");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// Lines up to and including the first whose `event` is one of `events`.
    async fn until(&mut self, events: &[&str], limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.next(left).await;
            let done = events.iter().any(|e| line["event"] == *e);
            seen.push(line);
            if done {
                return seen;
            }
        }
    }
}

fn audit_lines(server: &Refgate) -> String {
    std::fs::read_to_string(server.dir.path().join("audit.log")).unwrap_or_default()
}

// --- the whole flow, driven by openid-client ------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_client_library_gets_tokens_for_the_approved_person() {
    let server = start("device_interval = \"1s\"");
    let mut device = Device::start(&server, "tv", "photos.read offline_access");
    let authorization = device.next(Duration::from_secs(30)).await;
    assert_eq!(authorization["event"], "authorization", "{authorization}");
    let user_code = str_of(&authorization, "user_code").to_string();
    let device_code = str_of(&authorization, "device_code").to_string();
    assert_eq!(user_code.len(), 9, "{user_code}");
    assert_eq!(&user_code[4..5], "-");
    assert!(user_code
        .chars()
        .filter(|c| *c != '-')
        .all(|c| "23456789ABCDEFGHJKMNPQRSTUVWXYZ".contains(c)));
    assert_eq!(authorization["verification_uri"], VERIFICATION_URI);
    assert_eq!(
        authorization["verification_uri_complete"],
        format!("{VERIFICATION_URI}?user_code={user_code}")
    );
    assert_eq!(authorization["interval"], 1);
    assert_eq!(authorization["expires_in"], 600);

    // The device polls and hears authorization_pending until a person
    // approves; the user code is typed in lower case without its dash.
    let polls = device.until(&["poll"], Duration::from_secs(10)).await;
    assert_eq!(polls.last().unwrap()["error"], "authorization_pending");
    approve(
        &server,
        &user_code.replace('-', "").to_lowercase(),
        "person-1",
    )
    .await;
    let lines = device
        .until(&["tokens", "error"], Duration::from_secs(20))
        .await;
    let tokens = lines.last().unwrap();
    assert_eq!(tokens["event"], "tokens", "{lines:?}");
    assert!(
        lines.iter().all(|l| l["error"] != "slow_down"),
        "the library polled at the interval: {lines:?}"
    );
    assert_eq!(tokens["scope"], "photos.read offline_access");

    let view = server.introspect(str_of(tokens, "access_token")).await;
    assert_eq!(view["active"], true, "{view}");
    assert_eq!(view["sub"], "person-1");
    assert_eq!(view["idp"], TRUSTED_ISSUER);
    assert_eq!(view["client_id"], "tv");
    assert_eq!(view["scope"], "photos.read offline_access");

    let (status, refreshed) = server.refresh("tv", str_of(tokens, "refresh_token")).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    let view = server.introspect(str_of(&refreshed, "access_token")).await;
    assert_eq!(view["sub"], "person-1");
    assert_eq!(view["idp"], TRUSTED_ISSUER);

    // The device code is used up, and the user code is decided.
    let (status, body) = poll(&server, "tv", &device_code).await;
    assert_bad_request(status, &body, "invalid_grant");
    let token = id_token("person-2");
    let (status, body) = approve_as(
        &server,
        "portal",
        &[("user_code", &user_code), ("id_token", &token)],
    )
    .await;
    assert_bad_request(status, &body, "invalid_grant");

    // The audit trail tells the story without a code in it.
    let audit = audit_lines(&server);
    for event in ["device_authorized", "device_approved", "token_issued"] {
        assert!(audit.contains(&format!("\"event\":\"{event}\"")), "{audit}");
    }
    assert!(audit.contains(DEVICE_GRANT), "{audit}");
    for secret in [
        device_code.as_str(),
        user_code.as_str(),
        &user_code.replace('-', ""),
        str_of(tokens, "access_token"),
    ] {
        assert!(!audit.contains(secret), "audit holds a code: {audit}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_slows_down_when_told_and_still_gets_its_tokens() {
    let server = start("device_interval = \"5s\"");
    let mut device = Device::start(&server, "tv", "photos.read");
    let authorization = device.next(Duration::from_secs(30)).await;
    let device_code = str_of(&authorization, "device_code").to_string();
    let user_code = str_of(&authorization, "user_code").to_string();
    // Another poll of the same code half an interval before the library's
    // first one (it waits one interval): the library's poll comes too
    // soon. Half an interval either way is the margin for a loaded
    // machine.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, body) = poll(&server, "tv", &device_code).await;
    assert_bad_request(status, &body, "authorization_pending");
    let first = device.until(&["poll"], Duration::from_secs(10)).await;
    let first = first.last().unwrap().clone();
    assert_eq!(first["error"], "slow_down", "{first}");
    approve(&server, &user_code, "person-3").await;
    let lines = device
        .until(&["tokens", "error"], Duration::from_secs(30))
        .await;
    assert_eq!(lines.last().unwrap()["event"], "tokens", "{lines:?}");
    let next = lines.iter().find(|l| l["event"] == "poll").unwrap();
    assert_eq!(next["status"], 200, "{lines:?}");
    let gap = next["at"].as_i64().unwrap() - first["at"].as_i64().unwrap();
    assert!(
        gap >= 9_900,
        "the library waited 5 + 5 seconds, not {gap} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_reaches_the_device_as_access_denied() {
    let server = start("device_interval = \"1s\"");
    let mut device = Device::start(&server, "tv", "photos.read");
    let authorization = device.next(Duration::from_secs(30)).await;
    let user_code = str_of(&authorization, "user_code").to_string();
    let device_code = str_of(&authorization, "device_code").to_string();
    // A denial needs no id_token.
    let (status, body) = approve_as(
        &server,
        "portal",
        &[("user_code", &user_code), ("deny", "true")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let lines = device
        .until(&["tokens", "error"], Duration::from_secs(20))
        .await;
    let last = lines.last().unwrap();
    assert_eq!(last["event"], "error", "{lines:?}");
    assert_eq!(last["error"], "access_denied", "{last}");
    let (status, body) = poll(&server, "tv", &device_code).await;
    assert_bad_request(status, &body, "access_denied");
    // Decided: it cannot be approved afterwards.
    let token = id_token("person-1");
    let (status, body) = approve_as(
        &server,
        "portal",
        &[("user_code", &user_code), ("id_token", &token)],
    )
    .await;
    assert_bad_request(status, &body, "invalid_grant");
    assert!(audit_lines(&server).contains("\"event\":\"device_denied\""));
}

// --- polling by hand ---------------------------------------------------------

#[tokio::test]
async fn polling_too_fast_answers_slow_down_and_raises_the_interval() {
    // 3 s: the second poll, sent at once, comes well within it even on a
    // loaded machine.
    let server = start("device_interval = \"3s\"");
    let body = authorized(&server, "tv", Some("photos.read")).await;
    let code = str_of(&body, "device_code");
    let (status, body) = poll(&server, "tv", code).await;
    assert_bad_request(status, &body, "authorization_pending");
    let (status, body) = poll(&server, "tv", code).await;
    assert_bad_request(status, &body, "slow_down");
    // The interval is 8 s now: 1.5 s later is still too soon.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (status, body) = poll(&server, "tv", code).await;
    assert_bad_request(status, &body, "slow_down");
    // ...and 13 s after that one, it is not.
    tokio::time::sleep(Duration::from_millis(13_100)).await;
    let (status, body) = poll(&server, "tv", code).await;
    assert_bad_request(status, &body, "authorization_pending");
}

#[tokio::test]
async fn an_expired_device_code_answers_expired_token() {
    let server = start("device_code_ttl = \"5s\"\ndevice_interval = \"1s\"");
    let body = authorized(&server, "tv", None).await;
    assert_eq!(body["expires_in"], 5);
    let code = str_of(&body, "device_code").to_string();
    let user_code = str_of(&body, "user_code").to_string();
    tokio::time::sleep(Duration::from_millis(6_100)).await;
    let (status, body) = poll(&server, "tv", &code).await;
    assert_bad_request(status, &body, "expired_token");
    let token = id_token("person-1");
    let (status, body) = approve_as(
        &server,
        "portal",
        &[("user_code", &user_code), ("id_token", &token)],
    )
    .await;
    assert_bad_request(status, &body, "invalid_grant");
}

#[tokio::test]
async fn device_codes_work_for_their_own_client_only_and_once() {
    let server = start("device_interval = \"1s\"");
    let body = authorized(&server, "radio", Some("photos.read offline_access")).await;
    let code = str_of(&body, "device_code");
    approve(&server, str_of(&body, "user_code"), "person-4").await;
    // Another client's poll is refused, and does not use the code up.
    let (status, answer) = poll(&server, "tv", code).await;
    assert_bad_request(status, &answer, "invalid_grant");
    let (status, tokens) = poll(&server, "radio", code).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    // `radio` may not refresh: no refresh token despite offline_access.
    assert!(tokens.get("refresh_token").is_none(), "{tokens}");
    let (status, answer) = poll(&server, "radio", code).await;
    assert_bad_request(status, &answer, "invalid_grant");
}

// --- the back channel ----------------------------------------------------------

#[tokio::test]
async fn the_back_channel_refuses_what_it_must() {
    let server = start("");
    let body = authorized(&server, "tv", None).await;
    let user_code = str_of(&body, "user_code");
    let good = id_token("person-1");

    // Not an approver: 403; unauthenticated: 401.
    let (status, answer) = approve_as(
        &server,
        "app",
        &[("user_code", user_code), ("id_token", &good)],
    )
    .await;
    assert_oauth_error(
        status,
        &answer,
        StatusCode::FORBIDDEN,
        "unauthorized_client",
    );
    let (status, answer) = server
        .post_form(
            "/oauth2/device_approve",
            Some(("portal", "wrong")),
            &[("user_code", user_code), ("id_token", &good)],
        )
        .await;
    assert_oauth_error(status, &answer, StatusCode::UNAUTHORIZED, "invalid_client");
    let (status, answer) = server
        .post_form(
            "/oauth2/device_approve",
            None,
            &[("user_code", user_code), ("id_token", &good)],
        )
        .await;
    assert_oauth_error(status, &answer, StatusCode::UNAUTHORIZED, "invalid_client");

    // The id_token: missing, forged, or of an issuer this approver may
    // not vouch for.
    let (status, answer) = approve_as(&server, "portal", &[("user_code", user_code)]).await;
    assert_bad_request(status, &answer, "invalid_request");
    let forged = id_token_signed_with("person-1", "other-key.pem");
    let (status, answer) = approve_as(
        &server,
        "portal",
        &[("user_code", user_code), ("id_token", &forged)],
    )
    .await;
    assert_bad_request(status, &answer, "invalid_request");
    let (status, answer) = approve_as(
        &server,
        "kiosk",
        &[("user_code", user_code), ("id_token", &good)],
    )
    .await;
    assert_bad_request(status, &answer, "invalid_grant");

    // Malformed codes and parameters.
    for bad in [
        "",
        "ABCD-EFG",
        "ABCD-EFG0",
        "IIII-IIII",
        "ABCDEFGHJ",
        "ÄBCD-EFGH",
    ] {
        let (status, answer) = approve_as(
            &server,
            "portal",
            &[("user_code", bad), ("id_token", &good)],
        )
        .await;
        assert_bad_request(status, &answer, "invalid_request");
    }
    let (status, answer) = approve_as(
        &server,
        "portal",
        &[("user_code", user_code), ("deny", "yes")],
    )
    .await;
    assert_bad_request(status, &answer, "invalid_request");
    let (status, answer) = approve_as(
        &server,
        "portal",
        &[
            ("user_code", user_code),
            ("user_code", user_code),
            ("id_token", &good),
        ],
    )
    .await;
    assert_bad_request(status, &answer, "invalid_request");

    // An unknown code; then the real one still works.
    let (status, answer) = approve_as(
        &server,
        "portal",
        &[("user_code", "WXYZ-2345"), ("id_token", &good)],
    )
    .await;
    assert_bad_request(status, &answer, "invalid_grant");
    approve(&server, user_code, "person-1").await;
}

#[tokio::test]
async fn guessing_user_codes_is_limited_per_approving_client() {
    let server = start("");
    let body = authorized(&server, "tv", None).await;
    let user_code = str_of(&body, "user_code");
    let good = id_token("person-1");
    let mut wrong = Vec::new();
    for i in 0..10 {
        let guess = format!(
            "WXYZ-{}",
            ["2345", "2346", "2347", "2348", "2349", "234A", "234B", "234C", "234D", "234E"][i]
        );
        if guess != user_code {
            wrong.push(guess);
        }
    }
    for guess in &wrong {
        let (status, answer) = approve_as(
            &server,
            "portal",
            &[("user_code", guess), ("id_token", &good)],
        )
        .await;
        assert_bad_request(status, &answer, "invalid_grant");
    }
    // Over the limit: refused, the right code included, with Retry-After.
    let response = http()
        .post(server.url("/oauth2/device_approve"))
        .basic_auth("portal", Some("portal-secret"))
        .form(&[("user_code", user_code), ("id_token", &good)])
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"], "rate_limited");
    assert!(audit_lines(&server).contains("device_guesses"));
}

// --- bad device requests -------------------------------------------------------

#[tokio::test]
async fn bad_device_requests_get_oauth_errors() {
    let server = start("");
    // Scope beyond the client's; a client without the grant; no client.
    let (status, body) = authorize(&server, "tv", Some("reports.read")).await;
    assert_bad_request(status, &body, "invalid_scope");
    let (status, body) = authorize(&server, "app", None).await;
    assert_bad_request(status, &body, "unauthorized_client");
    let (status, body) = server
        .post_form(
            "/oauth2/device_authorization",
            None,
            &[("scope", "photos.read")],
        )
        .await;
    assert_oauth_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_client");
    let (status, body) = server
        .post_form(
            "/oauth2/device_authorization",
            Some(("tv", "tv-secret")),
            &[("scope", "photos.read"), ("scope", "photos.write")],
        )
        .await;
    assert_bad_request(status, &body, "invalid_request");

    // Polls: no device_code, an unknown one, a grant the client lacks.
    let (status, body) = server.token("tv", &[("grant_type", DEVICE_GRANT)]).await;
    assert_bad_request(status, &body, "invalid_request");
    let (status, body) = poll(&server, "tv", "rgdc_not-a-device-code").await;
    assert_bad_request(status, &body, "invalid_grant");
    let (status, body) = poll(&server, "app", "rgdc_not-a-device-code").await;
    assert_bad_request(status, &body, "unauthorized_client");

    // Metadata names the endpoint and the grant type.
    let metadata: Value = http()
        .get(server.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        metadata["device_authorization_endpoint"],
        server.url("/oauth2/device_authorization")
    );
    assert!(metadata["grant_types_supported"]
        .as_array()
        .unwrap()
        .contains(&json!(DEVICE_GRANT)));
}

#[test]
fn check_refuses_bad_device_settings() {
    let server = start("");
    let config = std::fs::read_to_string(&server.config_path).unwrap();
    let without_uri = config.replace(
        &format!("device_verification_uri = \"{VERIFICATION_URI}\""),
        "",
    );
    server.assert_check_refuses(&without_uri, "clients[6].grant_types");
    for (line, key) in [
        ("device_interval = \"0s\"", "tokens.device_interval"),
        ("device_interval = \"1500ms\"", "tokens.device_interval"),
        ("device_code_ttl = \"1s\"", "tokens.device_code_ttl"),
        (
            "device_verification_uri = \"/device\"",
            "tokens.device_verification_uri",
        ),
    ] {
        let bad = without_uri.replace("[tokens]\n", &format!("[tokens]\n{line}\n"));
        server.assert_check_refuses(&bad, key);
    }
}

// --- across instances, and at rest -------------------------------------------

#[tokio::test]
async fn a_device_code_works_across_instances_sharing_postgresql() {
    let db = PgDatabase::create();
    let options = Options {
        tokens: format!(
            "device_verification_uri = \"{VERIFICATION_URI}\"\ndevice_interval = \"3s\""
        ),
        extra: device_config(),
        store_url: Some(db.url.clone()),
        ..Options::default()
    };
    let a = Refgate::start_with(options.clone());
    let b = Refgate::start_with(options);
    let body = authorized(&a, "tv", Some("photos.read")).await;
    let code = str_of(&body, "device_code");
    // The poll interval holds across instances too.
    let (status, answer) = poll(&b, "tv", code).await;
    assert_bad_request(status, &answer, "authorization_pending");
    let (status, answer) = poll(&a, "tv", code).await;
    assert_bad_request(status, &answer, "slow_down");
    approve(&b, str_of(&body, "user_code"), "person-5").await;
    // The interval is 3 + 5 s after the slow_down.
    tokio::time::sleep(Duration::from_millis(8_100)).await;
    let (status, tokens) = poll(&a, "tv", code).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let view = b.introspect(str_of(&tokens, "access_token")).await;
    assert_eq!(view["sub"], "person-5");
    let (status, answer) = poll(&b, "tv", code).await;
    assert_bad_request(status, &answer, "invalid_grant");
}

#[tokio::test]
async fn the_store_holds_no_device_or_user_code() {
    if test_store_is_postgres() {
        return; // the SQLite file is what this reads
    }
    let mut server = start("");
    let body = authorized(&server, "tv", None).await;
    let device_code = str_of(&body, "device_code").to_string();
    let user_code = str_of(&body, "user_code").replace('-', "");
    server.stop_cleanly();
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(server.db_path.parent().unwrap()).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    assert!(!bytes.is_empty());
    for code in [
        device_code.as_str(),
        &device_code["rgdc_".len()..],
        &user_code,
    ] {
        assert!(!contains(&bytes, code.as_bytes()), "{code} is in the store");
    }
}

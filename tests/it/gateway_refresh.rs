//! Downstream credential refresh through the gateway (SPEC 4.2), against a
//! real authorization server (panva's oidc-provider) and a real recording
//! upstream: refresh ahead of expiry with rotation, one refresh for many
//! concurrent requests, refusal and re-consent, an authority that is down,
//! and refresh-and-replay after an upstream 401.

use crate::common::oidc::OidcAs;
use crate::common::upstream::Upstream;
use crate::common::*;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The test environment: a downstream AS, an upstream, and refgate routing
/// `/photos/` to the upstream with credential `photos` from authority
/// `photos-as`.
struct Setup {
    oidc: OidcAs,
    upstream: Upstream,
    server: Refgate,
}

impl Setup {
    async fn start() -> Self {
        let oidc = OidcAs::start(3600);
        let authority = oidc.authority_toml("photos-as");
        Self::start_with_authority(oidc, &authority).await
    }

    async fn start_with_authority(oidc: OidcAs, authority: &str) -> Self {
        // Generous: the authority is slow on a loaded machine, and the
        // failure tests fail fast (a reset, a 500) rather than time out.
        Self::start_custom(oidc, authority, "authority_timeout = \"20s\"").await
    }

    /// With `[gateway]` lines of the test's choosing.
    async fn start_custom(oidc: OidcAs, authority: &str, gateway: &str) -> Self {
        let upstream = Upstream::start().await;
        let server = Refgate::start_with(Options {
            gateway: gateway.into(),
            extra: format!(
                "{authority}\n{}\n{}",
                credential_route("photos", "/photos/", &upstream.url(), ""),
                // The upstream answers `/slow/<ms>/…` late.
                credential_route("photos-slow", "/slow/", &upstream.url(), ""),
            ),
            ..Options::default()
        });
        Setup {
            oidc,
            upstream,
            server,
        }
    }

    /// A fresh app token whose grant holds credential `photos` made of a
    /// real token pair for `sub`, expiring at `expires_at`. Returns the
    /// app token and the pair.
    async fn app_with_credential(&self, sub: &str, expires_at: i64) -> (String, String, String) {
        let (access, refresh, _) = self.oidc.mint(sub).await;
        let app = self.app_holding(&access, &refresh, expires_at).await;
        (app, access, refresh)
    }

    /// A fresh app token whose grant holds the given credential `photos`.
    async fn app_holding(&self, access: &str, refresh: &str, expires_at: i64) -> String {
        let body = self.server.client_token("app", None).await;
        let app = str_of(&body, "access_token").to_string();
        let (status, answer) = self
            .server
            .mutate(&json!({"token": app, "patch": {"credentials": {"photos": {
                "access_token": access,
                "refresh_token": refresh,
                "token_type": "Bearer",
                "expires_at": expires_at,
                "authority": "photos-as",
            }}}}))
            .await;
        assert_eq!(status, StatusCode::OK, "mutate failed: {answer}");
        app
    }

    /// The credential `photos` as stored in the app token's grant.
    async fn stored(&self, app: &str) -> Value {
        self.server.introspect(app).await["custom"]["credentials"]["photos"].clone()
    }

    async fn get(&self, app: &str, path: &str) -> Answer {
        send(http().get(format!("{}{path}", self.server.proxy)), app).await
    }
}

/// What the client saw.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn send(request: reqwest::RequestBuilder, app: &str) -> Answer {
    let response = request.bearer_auth(app).send().await.expect("request");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body");
    Answer {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The access token in an `Authorization: Bearer …` value.
fn token_in(authorization: &str) -> &str {
    authorization
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a bearer header: {authorization}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_credential_is_refreshed_once_and_the_rotated_refresh_token_is_stored() {
    let setup = Setup::start().await;
    let (app, old_access, old_refresh) = setup.app_with_credential("alice", unix_now() - 10).await;

    let answer = setup.get(&app, "/photos/album/1").await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(setup.oidc.refresh_count().await, 1);

    let seen = setup.upstream.requests();
    assert_eq!(seen.len(), 1);
    let sent = seen[0].header("authorization").expect("authorization");
    let new_access = token_in(&sent).to_string();
    assert_ne!(new_access, old_access, "the upstream got the expired token");
    assert!(setup.oidc.is_active(&new_access).await);
    assert!(
        !sent.contains("rgat_"),
        "the reference token leaked upstream"
    );

    let stored = setup.stored(&app).await;
    assert_eq!(stored["access_token"], new_access.as_str(), "{stored}");
    assert_eq!(stored["authority"], "photos-as");
    let new_refresh = stored["refresh_token"].as_str().expect("refresh_token");
    assert_ne!(
        new_refresh, old_refresh,
        "the rotated refresh token was not stored"
    );
    assert!(
        stored["expires_at"].as_i64().expect("expires_at") > unix_now() + 600,
        "{stored}"
    );
    assert!(
        !setup.oidc.is_active(&old_refresh).await,
        "the original refresh token still works at the AS"
    );
    assert!(setup.oidc.is_active(new_refresh).await);

    // The refreshed credential is used as is from now on.
    let again = setup.get(&app, "/photos/album/2").await;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
    assert_eq!(setup.oidc.refresh_count().await, 1);
    let seen = setup.upstream.requests();
    assert_eq!(seen[1].header("authorization"), Some(bearer(&new_access)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_on_an_expired_credential_share_one_refresh() {
    let setup = Setup::start().await;
    let (app, old_access, _) = setup.app_with_credential("bob", unix_now() - 10).await;

    let client = http();
    let requests = (0..100).map(|i| {
        let request = client.get(format!("{}/photos/item/{i}", setup.server.proxy));
        let app = app.clone();
        async move { send(request, &app).await }
    });
    let answers = futures::future::join_all(requests).await;
    let failed: Vec<_> = answers.iter().filter(|a| !a.status.is_success()).collect();
    assert!(
        failed.is_empty(),
        "{} failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    assert_eq!(setup.oidc.refresh_count().await, 1);

    let seen = setup.upstream.requests();
    assert_eq!(seen.len(), 100);
    let first = seen[0].header("authorization").expect("authorization");
    assert_ne!(first, bearer(&old_access));
    assert!(
        seen.iter()
            .all(|r| r.header("authorization") == Some(first.clone())),
        "the requests did not all use the one refreshed token"
    );
    assert!(setup.oidc.is_active(token_in(&first)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_refresh_requires_reauth_and_is_not_retried() {
    let setup = Setup::start().await;
    let (app, _, _) = setup.app_with_credential("carol", unix_now() - 10).await;
    setup.oidc.revoke_all().await;

    let answer = setup.get(&app, "/photos/x").await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{answer:?}");
    assert_eq!(
        answer.body["error"], "credential_reauth_required",
        "{answer:?}"
    );
    assert_eq!(answer.body["credential"], "photos");
    assert!(answer.body["error_description"].is_string());
    let challenge = answer.header("www-authenticate").expect("WWW-Authenticate");
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert_eq!(setup.oidc.refresh_count().await, 1);

    let again = setup.get(&app, "/photos/x").await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED, "{again:?}");
    assert_eq!(again.body["error"], "credential_reauth_required");
    assert_eq!(again.body["credential"], "photos");
    assert_eq!(
        setup.oidc.refresh_count().await,
        1,
        "the authority was asked again after refusing"
    );
    assert!(setup.upstream.requests().is_empty());

    // A middle tier that obtains a new credential clears the condition.
    let (access, refresh, _) = setup.oidc.mint("carol").await;
    let (status, body) = setup
        .server
        .mutate(&json!({"token": app, "patch": {"credentials": {"photos": {
            "access_token": access, "refresh_token": refresh,
            "expires_at": unix_now() + 3600, "reauth_required": null,
        }}}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let healed = setup.get(&app, "/photos/x").await;
    assert_eq!(healed.status, StatusCode::OK, "{healed:?}");
    assert_eq!(
        setup.upstream.requests()[0].header("authorization"),
        Some(bearer(&access))
    );
}

async fn assert_unavailable_authority_gives_503(mode: &str) {
    let setup = Setup::start().await;
    let (app, old_access, old_refresh) = setup.app_with_credential("dave", unix_now() - 10).await;
    setup.oidc.set_mode(mode, 0).await;

    let answer = setup.get(&app, "/photos/x").await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{mode}: {answer:?}"
    );
    assert_eq!(answer.body["error"], "authority_unavailable", "{answer:?}");
    assert_eq!(answer.header("retry-after"), Some("5"), "{answer:?}");
    assert_eq!(
        answer.header("cache-control"),
        Some("no-store"),
        "{answer:?}"
    );
    assert!(setup.oidc.refresh_count().await >= 1);
    assert!(setup.upstream.requests().is_empty());
    // Nothing was lost: the credential is unchanged and not marked.
    let stored = setup.stored(&app).await;
    assert_eq!(stored["access_token"], old_access.as_str());
    assert_eq!(stored["refresh_token"], old_refresh.as_str());
    assert!(
        stored.get("reauth_required").is_none_or(Value::is_null),
        "{stored}"
    );

    // Once the authority is back, the next request refreshes and succeeds.
    setup.oidc.set_mode("normal", 0).await;
    let answer = setup.get(&app, "/photos/x").await;
    assert_eq!(answer.status, StatusCode::OK, "{mode}: {answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authority_down_with_an_expired_credential_gives_503_with_retry_after() {
    assert_unavailable_authority_gives_503("down").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authority_5xx_with_an_expired_credential_gives_503_with_retry_after() {
    assert_unavailable_authority_gives_503("error500").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authority_down_within_the_skew_forwards_with_the_still_valid_token() {
    let setup = Setup::start().await;
    // Valid for 30 s more: inside the default 60 s skew.
    let (app, old_access, _) = setup.app_with_credential("erin", unix_now() + 30).await;
    setup.oidc.set_mode("down", 0).await;

    let answer = setup.get(&app, "/photos/x").await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(setup.oidc.refresh_count().await, 1, "no refresh was tried");
    let seen = setup.upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("authorization"), Some(bearer(&old_access)));

    setup.oidc.set_mode("error500", 0).await;
    let answer = setup.get(&app, "/photos/y").await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(
        setup.upstream.requests()[1].header("authorization"),
        Some(bearer(&old_access))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_401_refreshes_once_and_replays_with_the_new_token() {
    let setup = Setup::start().await;
    let (app, old_access, _) = setup.app_with_credential("frank", unix_now() + 3600).await;
    setup.upstream.reject(&bearer(&old_access));

    let answer = setup.get(&app, "/photos/x").await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(setup.oidc.refresh_count().await, 1);
    let seen = setup.upstream.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].header("authorization"), Some(bearer(&old_access)));
    let replayed = seen[1].header("authorization").expect("authorization");
    assert_ne!(replayed, bearer(&old_access));
    assert!(setup.oidc.is_active(token_in(&replayed)).await);
    assert_eq!(seen[1].path, "/photos/x");
    // The client got the upstream's answer to the replay.
    assert_eq!(answer.body["authorization"], replayed.as_str());
    assert_eq!(
        setup.stored(&app).await["access_token"],
        token_in(&replayed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_401_replays_a_small_post_body() {
    let setup = Setup::start().await;
    let (app, old_access, _) = setup.app_with_credential("grace", unix_now() + 3600).await;
    setup.upstream.reject(&bearer(&old_access));
    let body = r#"{"title":"holiday","tags":["sea","sun"]}"#;

    let request = http()
        .post(format!("{}/photos/albums", setup.server.proxy))
        .header("content-type", "application/json")
        .body(body);
    let answer = send(request, &app).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(setup.oidc.refresh_count().await, 1);
    let seen = setup.upstream.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for request in &seen {
        assert_eq!(request.method, "POST");
        assert_eq!(request.body, body.as_bytes());
    }
    assert_ne!(seen[1].header("authorization"), Some(bearer(&old_access)));
    assert_eq!(answer.body["body_len"], body.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_upstream_401_after_the_replay_is_passed_through() {
    let setup = Setup::start().await;
    let (app, old_access, _) = setup.app_with_credential("heidi", unix_now() + 3600).await;
    setup.upstream.reject(&bearer(&old_access));

    // The upstream decides on 401 after its delay, so the test can reject
    // the refreshed token while the replay is on its way.
    let proxy = setup.server.proxy.clone();
    let app_token = app.clone();
    let pending =
        tokio::spawn(
            async move { send(http().get(format!("{proxy}/slow/3000/x")), &app_token).await },
        );
    let deadline = Instant::now() + Duration::from_secs(20);
    let replayed = loop {
        let seen = setup.upstream.requests();
        if let Some(second) = seen.get(1) {
            break second.header("authorization").expect("authorization");
        }
        assert!(Instant::now() < deadline, "no replay reached the upstream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    setup.upstream.reject(&replayed);

    let answer = pending.await.expect("request task");
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{answer:?}");
    // The upstream's own 401, not one refgate wrote.
    assert_eq!(
        answer.body["authorization"],
        replayed.as_str(),
        "{answer:?}"
    );
    // refgate answers only after its last try, and the upstream records a
    // request before answering it: the count is final now.
    assert_eq!(setup.upstream.requests().len(), 2, "the gateway looped");
    assert_eq!(setup.oidc.refresh_count().await, 1);
}

/// Mints a token pair at the AS as `gateway-post`, authenticating in the
/// form body.
async fn mint_with_post_client(oidc: &OidcAs, sub: &str) -> (String, String) {
    let body: Value = http()
        .post(oidc.url("/token"))
        .form(&[
            ("grant_type", "urn:refgate:test:mint"),
            ("sub", sub),
            ("scope", "openid offline_access api"),
            ("client_id", "gateway-post"),
            ("client_secret", "gateway-post-secret"),
        ])
        .send()
        .await
        .expect("mint")
        .json()
        .await
        .expect("mint JSON");
    (
        str_of(&body, "access_token").to_string(),
        str_of(&body, "refresh_token").to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authority_with_client_secret_post_refreshes() {
    let oidc = OidcAs::start(3600);
    let authority = format!(
        "[[authorities]]\nname = \"photos-as\"\ntoken_endpoint = \"{}\"\nclient_id = \"gateway-post\"\nclient_secret = \"gateway-post-secret\"\nauth_method = \"client_secret_post\"\n",
        oidc.url("/token")
    );
    let setup = Setup::start_with_authority(oidc, &authority).await;
    let (old_access, old_refresh) = mint_with_post_client(&setup.oidc, "ivan").await;
    let app = setup
        .app_holding(&old_access, &old_refresh, unix_now() - 10)
        .await;

    let answer = setup.get(&app, "/photos/x").await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let stats = setup.oidc.stats().await;
    assert_eq!(stats["refresh"], 1, "{stats}");
    assert_eq!(stats["refresh_ok"], 1, "{stats}");
    let sent = setup.upstream.requests()[0]
        .header("authorization")
        .expect("authorization");
    assert_ne!(sent, bearer(&old_access));
    assert!(setup.oidc.is_active(token_in(&sent)).await);
    let stored = setup.stored(&app).await;
    assert_ne!(stored["refresh_token"], old_refresh.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_401_to_a_just_refreshed_credential_is_passed_through() {
    let setup = Setup::start().await;
    let (app, old_access, _) = setup.app_with_credential("judy", unix_now() - 10).await;

    // The request refreshes before it is forwarded; the upstream then
    // rejects the brand-new token.
    let proxy = setup.server.proxy.clone();
    let app_token = app.clone();
    let pending =
        tokio::spawn(
            async move { send(http().get(format!("{proxy}/slow/3000/x")), &app_token).await },
        );
    let fresh = wait_for_request(&setup.upstream, 0).await;
    assert_ne!(fresh, bearer(&old_access));
    setup.upstream.reject(&fresh);

    let answer = pending.await.expect("request task");
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{answer:?}");
    assert_eq!(answer.body["authorization"], fresh.as_str(), "{answer:?}");
    // refgate answers only after its last try: the count is final now.
    assert_eq!(setup.upstream.requests().len(), 1, "the gateway replayed");
    assert_eq!(setup.oidc.refresh_count().await, 1, "refreshed twice");
}

/// The `Authorization` of the `index`th request the upstream receives.
async fn wait_for_request(upstream: &Upstream, index: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(request) = upstream.requests().get(index) {
            return request.header("authorization").expect("authorization");
        }
        assert!(
            Instant::now() < deadline,
            "request {index} never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_401_with_a_large_body_is_passed_through_and_the_next_request_works() {
    let setup = Setup::start().await;
    let (app, old_access, _) = setup.app_with_credential("ken", unix_now() + 3600).await;
    setup.upstream.reject(&bearer(&old_access));
    // Larger than the 64 KiB replay buffer.
    let body = vec![b'x'; 200 * 1024];

    let request = http()
        .post(format!("{}/photos/upload", setup.server.proxy))
        .body(body.clone());
    let answer = send(request, &app).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{answer:?}");
    let seen = setup.upstream.requests();
    assert_eq!(seen.len(), 1, "a body that was not buffered was replayed");
    assert_eq!(seen[0].body.len(), body.len());

    // The rejection still refreshed the credential, so a retry succeeds.
    let request = http()
        .post(format!("{}/photos/upload", setup.server.proxy))
        .body(body.clone());
    let retry = send(request, &app).await;
    assert_eq!(retry.status, StatusCode::OK, "{retry:?}");
    assert_eq!(setup.oidc.refresh_count().await, 1);
    let seen = setup.upstream.requests();
    assert_eq!(seen.len(), 2);
    assert_ne!(seen[1].header("authorization"), Some(bearer(&old_access)));
    assert_eq!(seen[1].body.len(), body.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_401_then_refused_refresh_requires_reauth() {
    let setup = Setup::start().await;
    let (app, old_access, _) = setup.app_with_credential("liz", unix_now() + 3600).await;
    setup.upstream.reject(&bearer(&old_access));
    setup.oidc.revoke_all().await;

    let answer = setup.get(&app, "/photos/x").await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{answer:?}");
    assert_eq!(
        answer.body["error"], "credential_reauth_required",
        "{answer:?}"
    );
    assert_eq!(answer.body["credential"], "photos");
    assert_eq!(setup.oidc.refresh_count().await, 1);
    assert_eq!(setup.upstream.requests().len(), 1);

    let again = setup.get(&app, "/photos/x").await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED, "{again:?}");
    assert_eq!(again.body["error"], "credential_reauth_required");
    assert_eq!(
        setup.upstream.requests().len(),
        1,
        "forwarded a dead credential"
    );
    assert_eq!(setup.oidc.refresh_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_upstream_401s_share_one_refresh() {
    let setup = Setup::start().await;
    let (app, old_access, _) = setup
        .app_with_credential("mallory", unix_now() + 3600)
        .await;
    setup.upstream.reject(&bearer(&old_access));

    let client = http();
    let requests = (0..20).map(|i| {
        let request = client.get(format!("{}/photos/item/{i}", setup.server.proxy));
        let app = app.clone();
        async move { send(request, &app).await }
    });
    let answers = futures::future::join_all(requests).await;
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    }
    assert_eq!(setup.oidc.refresh_count().await, 1);
    let seen = setup.upstream.requests();
    let fresh: std::collections::HashSet<_> = seen
        .iter()
        .filter_map(|r| r.header("authorization"))
        .filter(|a| *a != bearer(&old_access))
        .collect();
    assert_eq!(fresh.len(), 1, "more than one new token: {fresh:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_answer_from_a_slow_authority_is_stored_not_lost() {
    let oidc = OidcAs::start(3600);
    let authority = oidc.authority_toml("photos-as");
    // Requests wait 3 s; the authority answers after 9 s.
    let setup = Setup::start_custom(oidc, &authority, "authority_timeout = \"3s\"").await;
    let (app, old_access, old_refresh) = setup.app_with_credential("nina", unix_now() - 10).await;
    setup.oidc.set_mode("slow", 9000).await;

    let started = Instant::now();
    let answer = setup.get(&app, "/photos/x").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{answer:?}");
    assert_eq!(answer.body["error"], "authority_unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(7),
        "waited for the slow authority"
    );

    // The authority finishes the refresh (rotating the refresh token)
    // after the client was answered; refgate keeps what it answered.
    let deadline = Instant::now() + Duration::from_secs(20);
    let stored = loop {
        let stored = setup.stored(&app).await;
        if stored["access_token"] != old_access.as_str() {
            break stored;
        }
        assert!(
            Instant::now() < deadline,
            "the late refresh was never stored"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(stored["refresh_token"], old_refresh.as_str());
    setup.oidc.set_mode("normal", 0).await;

    let answer = setup.get(&app, "/photos/x").await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let sent = setup.upstream.requests()[0]
        .header("authorization")
        .expect("authorization");
    assert_eq!(
        sent,
        format!(
            "Bearer {}",
            stored["access_token"].as_str().unwrap_or_default()
        )
    );
    let stats = setup.oidc.stats().await;
    assert_eq!(stats["refresh"], 1, "{stats}");
    assert_eq!(stats["refresh_failed"], 0, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_authority_does_not_queue_requests_behind_each_other() {
    let oidc = OidcAs::start(3600);
    let authority = oidc.authority_toml("photos-as");
    let setup = Setup::start_custom(oidc, &authority, "authority_timeout = \"3s\"").await;
    // Still valid, but inside the refresh skew.
    let (app, old_access, _) = setup.app_with_credential("oscar", unix_now() + 30).await;
    // Slower than the 3 s requests wait, faster than the call may take.
    setup.oidc.set_mode("slow", 9000).await;

    let started = Instant::now();
    let client = http();
    let requests = (0..4).map(|i| {
        let request = client.get(format!("{}/photos/item/{i}", setup.server.proxy));
        let app = app.clone();
        async move { send(request, &app).await }
    });
    let answers = futures::future::join_all(requests).await;
    let took = started.elapsed();
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        assert_eq!(answer.body["authorization"], bearer(&old_access).as_str());
    }
    // One after the other they would take 12 s.
    assert!(took < Duration::from_secs(7), "requests waited {took:?}");

    // One call reached the authority, and it counts once it is answered;
    // its answer is stored and is what the next request uses.
    let deadline = Instant::now() + Duration::from_secs(20);
    while setup.stored(&app).await["access_token"] == old_access.as_str() {
        assert!(Instant::now() < deadline, "the refresh was never stored");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(setup.oidc.refresh_count().await, 1);
    let answer = setup.get(&app, "/photos/next").await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_ne!(answer.body["authorization"], bearer(&old_access).as_str());
    assert_eq!(setup.oidc.refresh_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sharing_a_store_refresh_an_expired_credential_once() {
    let setup = Setup::start().await;
    let (app, old_access, _) = setup.app_with_credential("peggy", unix_now() - 10).await;

    // A second instance on the first one's store (its SQLite file, or its
    // PostgreSQL database when the suite runs on PostgreSQL).
    let shared = if test_store_is_postgres() {
        setup.server.store_url.clone()
    } else {
        format!("sqlite://{}", setup.server.db_path.display())
    };
    let second = Refgate::start_with(Options {
        gateway: "authority_timeout = \"20s\"".into(),
        extra: format!(
            "{}\n{}",
            setup.oidc.authority_toml("photos-as"),
            credential_route("photos", "/photos/", &setup.upstream.url(), "")
        ),
        store_url: Some(shared),
        ..Options::default()
    });

    let client = http();
    let requests = (0..40).map(|i| {
        let proxy = if i % 2 == 0 {
            &setup.server.proxy
        } else {
            &second.proxy
        };
        let request = client.get(format!("{proxy}/photos/item/{i}"));
        let app = app.clone();
        async move { send(request, &app).await }
    });
    let answers = futures::future::join_all(requests).await;
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    }
    let stats = setup.oidc.stats().await;
    assert_eq!(stats["refresh"], 1, "{stats}");
    let tokens: std::collections::HashSet<_> = setup
        .upstream
        .requests()
        .iter()
        .filter_map(|r| r.header("authorization"))
        .collect();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert!(!tokens.contains(&bearer(&old_access)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_naming_an_unknown_authority_is_never_sent_anywhere() {
    let setup = Setup::start().await;
    let (access, refresh, _) = setup.oidc.mint("rupert").await;
    let body = setup.server.client_token("app", None).await;
    let app = str_of(&body, "access_token").to_string();
    // Custom data may say anything; refgate only talks to configured
    // authorities. One stored (as clients could before writes were
    // checked) is never used...
    let credential = json!({
        "access_token": access, "refresh_token": refresh,
        "expires_at": unix_now() - 10, "authority": "elsewhere",
        "token_endpoint": setup.oidc.url("/token"),
    });
    plant_custom(
        &setup.server,
        &app,
        json!({"credentials": {"photos": credential}}),
    )
    .await;

    let answer = setup.get(&app, "/photos/x").await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{answer:?}");
    assert_eq!(answer.body["error"], "credential_invalid", "{answer:?}");
    assert_eq!(answer.body["credential"], "photos", "{answer:?}");
    assert!(setup.upstream.requests().is_empty());
    let stats = setup.oidc.stats().await;
    assert_eq!(stats["refresh"], 0, "{stats}");

    // ...and a client cannot store one any more.
    let (status, answer) = setup
        .server
        .mutate(&json!({"token": app, "patch": {"credentials": {"photos": credential}}}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_rejected_with_the_just_refreshed_token_do_not_refresh_again() {
    let setup = Setup::start().await;
    let (app, old_access, _) = setup.app_with_credential("sybil", unix_now() - 10).await;
    // A refresh slow enough that all ten are admitted while it runs, even
    // on a loaded machine.
    setup.oidc.set_mode("slow", 1500).await;

    // All of them wait for the one refresh; the upstream then rejects the
    // brand-new token.
    let client = http();
    let requests: Vec<_> = (0..10)
        .map(|i| {
            let request = client.get(format!("{}/slow/3000/{i}", setup.server.proxy));
            let app = app.clone();
            tokio::spawn(async move { send(request, &app).await })
        })
        .collect();
    let fresh = wait_for_request(&setup.upstream, 0).await;
    assert_ne!(fresh, bearer(&old_access));
    setup.upstream.reject(&fresh);

    for request in requests {
        let answer = request.await.expect("request task");
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{answer:?}");
        assert_eq!(answer.body["authorization"], fresh.as_str(), "{answer:?}");
    }
    assert_eq!(setup.upstream.requests().len(), 10, "some were replayed");
    assert_eq!(setup.oidc.refresh_count().await, 1, "refreshed again");
}

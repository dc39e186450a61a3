//! The answers the gateway writes itself (SPEC 4.5), end to end: status,
//! `WWW-Authenticate` challenge, JSON `error` / `error_description` (and
//! `credential` where the table lists it), and that a rejected request never
//! reaches the upstream. Also that revocation and scope changes made through
//! the token service are honoured by the gateway on the very next request,
//! cache or not.

use std::time::Duration;

use crate::common::upstream::Upstream;
use crate::common::*;
use serde_json::{json, Value};

fn start(routes: &str) -> Refgate {
    Refgate::start_with(Options {
        extra: format!("{AUTHORITY}\n{routes}"),
        ..Options::default()
    })
}

async fn get(server: &Refgate, path: &str, authorization: Option<&str>) -> reqwest::Response {
    let mut request = http().get(format!("{}{path}", server.proxy));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    request.send().await.expect("request to the proxy")
}

/// A parsed `WWW-Authenticate` challenge: scheme and auth-params.
#[derive(Debug)]
struct Challenge {
    scheme: String,
    params: Vec<(String, String)>,
}

impl Challenge {
    fn parse(text: &str) -> Challenge {
        let (scheme, mut rest) = text.split_once(' ').unwrap_or((text, ""));
        let mut params = Vec::new();
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            if rest.is_empty() {
                break;
            }
            let (name, after) = rest
                .split_once('=')
                .unwrap_or_else(|| panic!("auth-param without `=` in {text:?}"));
            let after = after
                .strip_prefix('"')
                .unwrap_or_else(|| panic!("unquoted auth-param in {text:?}"));
            let end = after
                .find('"')
                .unwrap_or_else(|| panic!("unterminated quote in {text:?}"));
            params.push((name.trim().to_string(), after[..end].to_string()));
            rest = &after[end + 1..];
        }
        Challenge {
            scheme: scheme.to_string(),
            params,
        }
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What a rejection must look like.
struct Expected<'a> {
    status: u16,
    error: &'a str,
    /// The challenge's `error` param: `Some(None)` for a challenge without
    /// one, `None` for no challenge at all.
    challenge: Option<Option<&'a str>>,
}

/// Checks a response the gateway wrote itself; returns its JSON body.
async fn assert_rejection(
    response: reqwest::Response,
    expected: Expected<'_>,
    case: &str,
) -> Value {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    assert_eq!(status, expected.status, "{case}: {text}");
    assert_eq!(
        headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/json"[..]),
        "{case}"
    );
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{case}: the body is not JSON ({e}): {text}"));
    assert_eq!(body["error"], expected.error, "{case}: {body}");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{case}: no error_description in {body}"
    );
    assert!(headers.contains_key("x-request-id"), "{case}");
    assert_eq!(
        headers.get("cache-control").map(|v| v.as_bytes()),
        Some(&b"no-store"[..]),
        "{case}"
    );
    let challenges: Vec<_> = headers.get_all("www-authenticate").iter().collect();
    match expected.challenge {
        None => assert!(challenges.is_empty(), "{case}: unexpected {challenges:?}"),
        Some(error) => {
            assert_eq!(challenges.len(), 1, "{case}: {challenges:?}");
            let challenge =
                Challenge::parse(challenges[0].to_str().expect("ASCII WWW-Authenticate"));
            assert_eq!(challenge.scheme, "Bearer", "{case}: {challenge:?}");
            assert_eq!(
                challenge.param("realm"),
                Some("refgate"),
                "{case}: {challenge:?}"
            );
            assert_eq!(challenge.param("error"), error, "{case}: {challenge:?}");
        }
    }
    body
}

// ---------------------------------------------------------------------------
// SPEC 4.5, row by row
// ---------------------------------------------------------------------------

#[tokio::test]
async fn no_token_is_401_missing_token_with_a_bare_realm_challenge() {
    let upstream = Upstream::start().await;
    let server = start(&photos_route(&upstream.url()));
    // No header, another scheme, and a scheme name glued to a token all
    // count as "no bearer token".
    for authorization in [None, Some("Basic dXNlcjpwYXNz"), Some("Bearerrgat_abc")] {
        let response = get(&server, "/photos/x", authorization).await;
        assert_rejection(
            response,
            Expected {
                status: 401,
                error: "missing_token",
                challenge: Some(None),
            },
            &format!("{authorization:?}"),
        )
        .await;
    }
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn malformed_authorization_or_token_in_query_is_400_invalid_request() {
    let upstream = Upstream::start().await;
    let server = start(&photos_route(&upstream.url()));
    let token = server.token_with_photos().await;
    let expected = || Expected {
        status: 400,
        error: "invalid_request",
        challenge: Some(Some("invalid_request")),
    };

    for value in ["Bearer", "Bearer    ", "bearer", "Bearer a b"] {
        let response = get(&server, "/photos/x", Some(value)).await;
        assert_rejection(response, expected(), value).await;
    }

    // Two Authorization headers, even both carrying the valid token.
    let response = http()
        .get(format!("{}/photos/x", server.proxy))
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .expect("request");
    assert_rejection(response, expected(), "two Authorization headers").await;

    // A token in the query (RFC 6750 §2.3) is refused, with or without a
    // header, so that it never sits in access logs unnoticed.
    let bearer = format!("Bearer {token}");
    for (path, header) in [
        (format!("/photos/x?access_token={token}"), None),
        (
            format!("/photos/x?a=1&access_token={token}"),
            Some(bearer.as_str()),
        ),
        ("/photos/x?access_token=".to_string(), Some(bearer.as_str())),
        // The same parameter to whoever decodes the query.
        (
            format!("/photos/x?access%5Ftoken={token}"),
            Some(bearer.as_str()),
        ),
    ] {
        let response = get(&server, &path, header).await;
        assert_rejection(response, expected(), &path).await;
    }
    assert!(upstream.requests().is_empty());

    // The same token, well sent, is fine.
    assert_eq!(
        get(&server, "/photos/x?a=1", Some(&bearer)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn unknown_token_is_401_invalid_token() {
    let upstream = Upstream::start().await;
    let server = start(&photos_route(&upstream.url()));
    for value in [
        "Bearer rgat_UnknownButWellFormedAccessToken0123456789abcdefg",
        "Bearer not-a-refgate-token",
        "Bearer rgat_",
    ] {
        // Twice: the second answer comes from the negative cache.
        for _ in 0..2 {
            let response = get(&server, "/photos/x", Some(value)).await;
            assert_rejection(
                response,
                Expected {
                    status: 401,
                    error: "invalid_token",
                    challenge: Some(Some("invalid_token")),
                },
                value,
            )
            .await;
        }
    }
    assert!(upstream.requests().is_empty());
}

/// A `minter` token living `lifetime` seconds, with the photos credential.
async fn short_lived_token(server: &Refgate, lifetime: u64) -> String {
    let lifetime = lifetime.to_string();
    let (status, body) = server
        .token(
            "minter",
            &[
                ("grant_type", "arbitrary_token"),
                ("subject", "alice"),
                ("issuer", "https://idp.example.com"),
                ("scope", "photos.read"),
                ("access_token_lifetime", &lifetime),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    str_of(&body, "access_token").to_string()
}

#[tokio::test]
async fn expired_token_is_401_invalid_token() {
    let upstream = Upstream::start().await;
    let server = start(&photos_route(&upstream.url()));
    let token = short_lived_token(&server, 1).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let response = get(&server, "/photos/x", Some(&format!("Bearer {token}"))).await;
    assert_rejection(
        response,
        Expected {
            status: 401,
            error: "invalid_token",
            challenge: Some(Some("invalid_token")),
        },
        "expired",
    )
    .await;
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn cached_token_is_rejected_once_it_expires() {
    let upstream = Upstream::start().await;
    let server = start(&photos_route(&upstream.url()));
    // Long enough that a loaded machine still uses it while valid.
    let token = short_lived_token(&server, 8).await;
    let minted = unix_now();
    server
        .store_credential(&token, "photos", credential("down-abc", "Bearer"))
        .await;
    let bearer = format!("Bearer {token}");
    // Warms the cache while the token is valid.
    let response = get(&server, "/photos/x", Some(&bearer)).await;
    assert_eq!(response.status(), StatusCode::OK);

    let wait = (minted + 9 - unix_now()).max(0) as u64;
    tokio::time::sleep(Duration::from_secs(wait) + Duration::from_millis(200)).await;
    let response = get(&server, "/photos/x", Some(&bearer)).await;
    assert_rejection(
        response,
        Expected {
            status: 401,
            error: "invalid_token",
            challenge: Some(Some("invalid_token")),
        },
        "expired after caching",
    )
    .await;
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn revoked_token_is_rejected_on_the_very_next_request() {
    let upstream = Upstream::start().await;
    let server = start(&photos_route(&upstream.url()));
    let token = server.token_with_photos().await;
    let bearer = format!("Bearer {token}");
    for _ in 0..2 {
        assert_eq!(
            get(&server, "/photos/x", Some(&bearer)).await.status(),
            StatusCode::OK
        );
    }

    let (status, body) = server
        .post_form(
            "/oauth2/revoke",
            Some(("app", "app-secret")),
            &[("token", &token)],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let response = get(&server, "/photos/x", Some(&bearer)).await;
    assert_rejection(
        response,
        Expected {
            status: 401,
            error: "invalid_token",
            challenge: Some(Some("invalid_token")),
        },
        "revoked",
    )
    .await;
    assert_eq!(upstream.requests().len(), 2);
}

#[tokio::test]
async fn revoking_the_refresh_token_cuts_off_its_access_token_at_the_gateway() {
    let upstream = Upstream::start().await;
    let server = start(&photos_route(&upstream.url()));
    let subject = server.access_token("app").await;
    let (status, body) = server
        .token(
            "app",
            &[
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", &subject),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
                ("scope", "photos.read offline_access"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let access = str_of(&body, "access_token").to_string();
    let refresh = str_of(&body, "refresh_token").to_string();
    server
        .store_credential(&access, "photos", credential("down-abc", "Bearer"))
        .await;
    let bearer = format!("Bearer {access}");
    assert_eq!(
        get(&server, "/photos/x", Some(&bearer)).await.status(),
        StatusCode::OK
    );

    let (status, _) = server
        .post_form(
            "/oauth2/revoke",
            Some(("app", "app-secret")),
            &[("token", &refresh), ("token_type_hint", "refresh_token")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let response = get(&server, "/photos/x", Some(&bearer)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["error"], "invalid_token");
}

#[tokio::test]
async fn another_clients_revocation_attempt_changes_nothing_at_the_gateway() {
    let upstream = Upstream::start().await;
    let server = start(&photos_route(&upstream.url()));
    let token = server.token_with_photos().await;
    let bearer = format!("Bearer {token}");
    assert_eq!(
        get(&server, "/photos/x", Some(&bearer)).await.status(),
        StatusCode::OK
    );
    let (status, _) = server
        .post_form(
            "/oauth2/revoke",
            Some(("other", "other-secret")),
            &[("token", &token)],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        get(&server, "/photos/x", Some(&bearer)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn missing_scope_is_403_insufficient_scope_naming_the_scopes() {
    let upstream = Upstream::start().await;
    let routes = [
        photos_route(&upstream.url()),
        route(
            "both",
            "/both/",
            &upstream.url(),
            "required_scopes = [\"photos.read\", \"photos.write\"]\ncredential = \"photos\"",
        ),
    ]
    .join("\n");
    let server = start(&routes);
    let narrow = str_of(
        &server
            .client_token("app", Some("reports.read photos.read"))
            .await,
        "access_token",
    )
    .to_string();
    server
        .store_credential(&narrow, "photos", credential("down-abc", "Bearer"))
        .await;
    let bearer = format!("Bearer {narrow}");
    assert_eq!(
        get(&server, "/photos/x", Some(&bearer)).await.status(),
        StatusCode::OK
    );
    upstream.clear();

    let response = get(&server, "/both/x", Some(&bearer)).await;
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| Challenge::parse(v.to_str().expect("ASCII")));
    assert_rejection(
        response,
        Expected {
            status: 403,
            error: "insufficient_scope",
            challenge: Some(Some("insufficient_scope")),
        },
        "missing photos.write",
    )
    .await;
    let scope = challenge
        .as_ref()
        .and_then(|c| c.param("scope"))
        .expect("scope param");
    let mut named: Vec<&str> = scope.split(' ').collect();
    named.sort_unstable();
    assert_eq!(named, ["photos.read", "photos.write"]);

    let only_reports = str_of(
        &server.client_token("app", Some("reports.read")).await,
        "access_token",
    )
    .to_string();
    server
        .store_credential(&only_reports, "photos", credential("down-abc", "Bearer"))
        .await;
    let response = get(
        &server,
        "/photos/x",
        Some(&format!("Bearer {only_reports}")),
    )
    .await;
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| Challenge::parse(v.to_str().expect("ASCII")))
        .expect("challenge");
    assert_eq!(challenge.param("scope"), Some("photos.read"));
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn token_without_the_routes_credential_is_401_credential_missing() {
    let upstream = Upstream::start().await;
    let server = start(&photos_route(&upstream.url()));
    let bare = server.access_token("app").await;
    let response = get(&server, "/photos/x", Some(&format!("Bearer {bare}"))).await;
    let body = assert_rejection(
        response,
        Expected {
            status: 401,
            error: "credential_missing",
            challenge: Some(Some("invalid_token")),
        },
        "no credentials at all",
    )
    .await;
    assert_eq!(body["credential"], "photos");

    // Credentials under other names, or an entry of the wrong shape (which
    // a client cannot store any more, but older data may hold), do not
    // count either.
    for patch in [
        json!({"credentials": {"videos": credential("down-abc", "Bearer")}}),
        json!({"credentials": {"photos": "down-abc"}}),
        json!({"credentials": {"photos": {"token_type": "Bearer"}}}),
    ] {
        let token = server.access_token("app").await;
        plant_custom(&server, &token, patch.clone()).await;
        let response = get(&server, "/photos/x", Some(&format!("Bearer {token}"))).await;
        let body = assert_rejection(
            response,
            Expected {
                status: 401,
                error: "credential_missing",
                challenge: Some(Some("invalid_token")),
            },
            &patch.to_string(),
        )
        .await;
        assert_eq!(body["credential"], "photos");
    }
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn unreachable_upstream_is_502_upstream_unavailable() {
    // A port that was free a moment ago: nothing listens there.
    let closed = closed_port();
    let closed = closed.port;
    let routes = [
        photos_route(&format!("http://127.0.0.1:{closed}")),
        route(
            "open",
            "/open/",
            &format!("http://127.0.0.1:{closed}"),
            "auth = \"none\"",
        ),
    ]
    .join("\n");
    let server = start(&routes);
    let token = server.token_with_photos().await;
    for (method, path, auth) in [
        ("GET", "/photos/x", true),
        ("POST", "/photos/x", true),
        ("GET", "/open/x", false),
    ] {
        let mut request = http()
            .request(
                method.parse().expect("method"),
                format!("{}{path}", server.proxy),
            )
            .body(if method == "POST" { "payload" } else { "" });
        if auth {
            request = request.bearer_auth(&token);
        }
        let response = request.send().await.expect("request");
        assert_rejection(
            response,
            Expected {
                status: 502,
                error: "upstream_unavailable",
                challenge: None,
            },
            &format!("{method} {path}"),
        )
        .await;
    }
    // The proxy is still serving.
    let response = get(&server, "/nowhere", None).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------------------
// Changes through the token service, honoured on the next request
// ---------------------------------------------------------------------------

#[tokio::test]
async fn scope_change_by_token_exchange_mutate_is_honoured_on_the_next_request() {
    let upstream = Upstream::start().await;
    let server = start(&photos_route(&upstream.url()));
    let token = server.token_with_photos().await;
    let bearer = format!("Bearer {token}");
    assert_eq!(
        get(&server, "/photos/x", Some(&bearer)).await.status(),
        StatusCode::OK
    );

    let rescope = |scope: &'static str| {
        let token = token.clone();
        let server = &server;
        async move {
            let (status, body) = server
                .token(
                    "app",
                    &[
                        ("grant_type", EXCHANGE_MUTATE),
                        ("subject_token", &token),
                        ("subject_token_type", ACCESS_TOKEN_TYPE),
                        ("scope", scope),
                    ],
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body["access_token"], token.as_str());
        }
    };

    rescope("photos.write reports.read").await;
    let response = get(&server, "/photos/x", Some(&bearer)).await;
    assert_rejection(
        response,
        Expected {
            status: 403,
            error: "insufficient_scope",
            challenge: Some(Some("insufficient_scope")),
        },
        "after dropping photos.read",
    )
    .await;

    // And back: the same token string works again at once.
    rescope("photos.read").await;
    assert_eq!(
        get(&server, "/photos/x", Some(&bearer)).await.status(),
        StatusCode::OK
    );
    assert_eq!(upstream.requests().len(), 2);
}

#[tokio::test]
async fn credential_mutation_is_used_on_the_next_request() {
    let upstream = Upstream::start().await;
    let server = start(&photos_route(&upstream.url()));
    let token = server.token_with_photos().await;
    let bearer = format!("Bearer {token}");
    assert_eq!(
        get(&server, "/photos/x", Some(&bearer)).await.status(),
        StatusCode::OK
    );
    let (status, _) = server
        .mutate(&json!({"token": token, "patch": {"credentials": {"photos": {"access_token": "down-new"}}}}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        get(&server, "/photos/x", Some(&bearer)).await.status(),
        StatusCode::OK
    );
    // Deleting the credential is honoured too.
    let (status, _) = server
        .mutate(&json!({"token": token, "patch": {"credentials": {"photos": null}}}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let response = get(&server, "/photos/x", Some(&bearer)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["error"], "credential_missing");

    let seen: Vec<_> = upstream
        .requests()
        .iter()
        .map(|r| r.header("authorization"))
        .collect();
    assert_eq!(
        seen,
        [
            Some("Bearer down-abc".to_string()),
            Some("Bearer down-new".to_string())
        ]
    );
}

#[tokio::test]
async fn local_answers_keep_the_connection_usable() {
    let upstream = Upstream::start().await;
    let server = start(&photos_route(&upstream.url()));
    let token = server.token_with_photos().await;

    // One HTTP/1.1 connection through a run of local answers, HEAD included
    // (no body may be written for it, or the next answer is garbled). A
    // rejected request with an unread body comes last: pingora closes such
    // a connection (announced by `Connection: close`) rather than drain it.
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", server.proxy_port))
        .await
        .expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("HTTP/1.1 handshake");
    let connection = tokio::spawn(connection);
    let steps: &[(&str, &str, Option<&str>, u16)] = &[
        ("GET", "/photos/x", None, 401),
        ("HEAD", "/photos/x", None, 401),
        ("GET", "/nowhere", None, 404),
        ("HEAD", "/nowhere", None, 404),
        ("GET", "/photos/x", Some("Bearer"), 400),
        (
            "GET",
            "/photos/x",
            Some("Bearer rgat_nopeNopeNopeNopeNopeNope"),
            401,
        ),
        ("GET", "/photos/x", Some("ok"), 200),
        ("HEAD", "/photos/x", Some("ok"), 200),
        ("GET", "/photos/x", Some("ok"), 200),
        ("GET", "/photos/x?access_token=x", None, 400),
        ("GET", "/photos/x", Some("ok"), 200),
        ("POST", "/photos/x", None, 401),
    ];
    for (method, path, authorization, status) in steps {
        let mut request = hyper::Request::builder()
            .method(*method)
            .uri(*path)
            .header("host", "127.0.0.1");
        match authorization {
            Some("ok") => request = request.header("authorization", format!("Bearer {token}")),
            Some(value) => request = request.header("authorization", *value),
            None => {}
        }
        let body = if *method == "POST" { "some body" } else { "" };
        let request = request
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .expect("request");
        let response = tokio::time::timeout(Duration::from_secs(20), sender.send_request(request))
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no answer"))
            .unwrap_or_else(|e| {
                panic!("{method} {path} {authorization:?}: the connection broke: {e}")
            });
        assert_eq!(response.status().as_u16(), *status, "{method} {path}");
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .expect("body")
            .to_bytes();
        if *method == "HEAD" {
            assert!(body.is_empty(), "{method} {path}: a HEAD answer had a body");
        }
    }
    drop(sender);
    let _ = connection.await;
    assert_eq!(upstream.requests().len(), 4);
}

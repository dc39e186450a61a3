//! Ending every session of one user: `/oauth2/revoke` with
//! `token_type_hint=subject`, for a client with `revoke_subject = true`.

use reqwest::StatusCode;

use crate::common::upstream::Upstream;
use crate::common::*;

const SUPPORT: &str = r#"
[[clients]]
id = "support"
secret_hash = "SUPPORT_HASH"
grant_types = ["client_credentials"]
revoke_subject = true
"#;

async fn revoke_subject(server: &Refgate, client: (&str, &str), subject: &str) -> StatusCode {
    http()
        .post(server.url("/oauth2/revoke"))
        .basic_auth(client.0, Some(client.1))
        .form(&[("token", subject), ("token_type_hint", "subject")])
        .send()
        .await
        .expect("revocation")
        .status()
}

#[tokio::test]
async fn a_subjects_grants_end_everywhere_and_only_theirs() {
    let upstream = Upstream::start().await;
    let server = Refgate::start_with(Options {
        extra: format!(
            "{}{}",
            SUPPORT.replace("SUPPORT_HASH", &secret_hash("support-secret")),
            photos_route(&upstream.url())
        ),
        ..Options::default()
    });
    let (alice_1, alice_refresh) = minted_pair(&server, "alice", &[]).await;
    let (alice_2, _) = minted_pair(&server, "alice", &[]).await;
    let (bob, bob_refresh) = minted_pair(&server, "bob", &[]).await;
    for token in [&alice_1, &bob] {
        server
            .store_credential(token, "photos", credential("down", "Bearer"))
            .await;
    }
    let through_gateway = |token: String| {
        let server = &server;
        async move {
            http()
                .get(format!("{}/photos/a", server.proxy))
                .bearer_auth(token)
                .send()
                .await
                .expect("proxy request")
                .status()
        }
    };
    // Cached by the gateway before the revocation.
    assert_eq!(through_gateway(alice_1.clone()).await, StatusCode::OK);
    assert_eq!(through_gateway(bob.clone()).await, StatusCode::OK);

    // A client without the permission changes nothing.
    let refused = http()
        .post(server.url("/oauth2/revoke"))
        .basic_auth("app", Some("app-secret"))
        .form(&[("token", "alice"), ("token_type_hint", "subject")])
        .send()
        .await
        .expect("revocation");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = refused.json().await.expect("JSON");
    assert_eq!(body["error"], "unauthorized_client");
    assert_eq!(server.introspect(&alice_1).await["active"], true);

    assert_eq!(
        revoke_subject(&server, ("support", "support-secret"), "alice").await,
        StatusCode::OK
    );
    for token in [&alice_1, &alice_2] {
        assert_eq!(server.introspect(token).await["active"], false, "{token}");
    }
    assert_eq!(
        through_gateway(alice_1.clone()).await,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = server.refresh("minter", &alice_refresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");
    // Bob's sessions are untouched.
    assert_eq!(server.introspect(&bob).await["active"], true);
    assert_eq!(through_gateway(bob.clone()).await, StatusCode::OK);
    let (status, body) = server.refresh("minter", &bob_refresh).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // An unknown subject, or one already ended, is no error (RFC 7009).
    assert_eq!(
        revoke_subject(&server, ("support", "support-secret"), "alice").await,
        StatusCode::OK
    );
    assert_eq!(
        revoke_subject(&server, ("support", "support-secret"), "nobody").await,
        StatusCode::OK
    );
}

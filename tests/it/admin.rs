//! The admin API on its own listener: grants by subject or client (paged,
//! newest first, metadata only), one grant, revoking a grant, a subject or
//! a client; only clients with `admin = true` get in.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::upstream::Upstream;
use crate::common::*;

const OPS: &str = r#"
[[clients]]
id = "ops"
secret_hash = "OPS_HASH"
grant_types = ["client_credentials"]
admin = true
"#;

struct Admin {
    base: String,
}

impl Admin {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        auth: Option<(&str, &str)>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = http().request(method, format!("{}{path}", self.base));
        if let Some((id, secret)) = auth {
            request = request.basic_auth(id, Some(secret));
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("admin request");
        let status = response.status();
        let cache = response.headers().get("cache-control").cloned();
        let body = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            assert_eq!(
                cache.as_ref().and_then(|v| v.to_str().ok()),
                Some("no-store")
            );
        }
        (status, body)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(
            reqwest::Method::GET,
            path,
            Some(("ops", "ops-secret")),
            None,
        )
        .await
    }
}

async fn start() -> (Refgate, Admin, Upstream) {
    let upstream = Upstream::start().await;
    let mut server = Refgate::start_with(Options {
        extra: format!(
            "{}{}\n[telemetry]\naudit_log = \"audit.log\"\n",
            OPS.replace("OPS_HASH", &secret_hash("ops-secret")),
            photos_route(&upstream.url())
        ),
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
    let admin = Admin {
        base: format!("http://127.0.0.1:{port}"),
    };
    (server, admin, upstream)
}

#[tokio::test]
async fn operators_list_show_and_revoke_grants_and_see_no_secrets() {
    let (server, admin, _upstream) = start().await;
    let (alice_1, _) = minted_pair(&server, "alice", &[]).await;
    let (alice_2, _) = minted_pair(&server, "alice", &[]).await;
    let (alice_3, _) = minted_pair(&server, "alice", &[]).await;
    let (bob, _) = minted_pair(&server, "bob", &[]).await;
    server
        .store_credential(
            &alice_3,
            "photos",
            credential("down-secret-value", "Bearer"),
        )
        .await;

    // Only admins get in, only on the admin listener.
    for auth in [None, Some(("ops", "wrong")), Some(("app", "app-secret"))] {
        let (status, body) = admin
            .call(
                reqwest::Method::GET,
                "/admin/grants?subject=alice",
                auth,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}: {body}");
    }
    let on_token_port = http()
        .get(server.url("/admin/grants?subject=alice"))
        .basic_auth("ops", Some("ops-secret"))
        .send()
        .await
        .expect("request");
    assert_eq!(on_token_port.status(), StatusCode::NOT_FOUND);

    // Paged, newest first.
    let (status, page) = admin.get("/admin/grants?subject=alice&limit=2").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let grants = page["grants"].as_array().expect("grants");
    assert_eq!(grants.len(), 2, "{page}");
    let cursor = page["next_cursor"].as_str().expect("a next page");
    let (status, rest) = admin
        .get(&format!(
            "/admin/grants?subject=alice&limit=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{rest}");
    let all: Vec<&Value> = grants
        .iter()
        .chain(rest["grants"].as_array().expect("grants"))
        .collect();
    assert_eq!(all.len(), 3, "{rest}");
    assert!(rest["next_cursor"].is_null(), "{rest}");
    let created: Vec<i64> = all
        .iter()
        .map(|g| g["created_at"].as_i64().unwrap())
        .collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "{created:?}");
    assert!(all
        .iter()
        .all(|g| g["sub"] == "alice" && g["client_id"] == "minter"));
    let listing = format!("{page}{rest}");
    for secret in [
        &alice_1,
        &alice_2,
        &alice_3,
        "down-secret-value",
        "minter-secret",
    ] {
        assert!(
            !listing.contains(secret),
            "a secret in the listing: {listing}"
        );
    }
    let (status, by_client) = admin.get("/admin/grants?client_id=minter&limit=500").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_client["grants"].as_array().map(Vec::len), Some(4));

    // One grant: the credential as metadata only.
    let with_credential = all
        .iter()
        .find(|g| g["credentials"]["photos"].is_object())
        .expect("the grant with a credential");
    let grant_id = with_credential["id"].as_str().expect("id").to_string();
    let (status, grant) = admin.get(&format!("/admin/grants/{grant_id}")).await;
    assert_eq!(status, StatusCode::OK, "{grant}");
    assert_eq!(grant["credentials"]["photos"]["authority"], "photos-as");
    assert_eq!(grant["credentials"]["photos"]["reauth_required"], false);
    assert!(grant["credentials"]["photos"]["expires_at"].is_i64());
    assert!(grant["expires_at"].is_i64(), "{grant}");
    assert!(!grant.to_string().contains("down-secret-value"));

    // Bad input.
    for path in [
        "/admin/grants",
        "/admin/grants?subject=alice&client_id=minter",
        "/admin/grants?subject=alice&limit=0",
        "/admin/grants?subject=alice&limit=501",
        "/admin/grants?subject=alice&cursor=%%%",
    ] {
        let (status, body) = admin.get(path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["error"], "invalid_request", "{path}");
    }
    let (status, body) = admin.get("/admin/grants/no-such-grant").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"], "not_found");

    // Revoke one grant.
    let (status, _) = admin
        .call(
            reqwest::Method::DELETE,
            &format!("/admin/grants/{grant_id}"),
            Some(("ops", "ops-secret")),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(server.introspect(&alice_3).await["active"], false);
    assert_eq!(server.introspect(&alice_1).await["active"], true);
    let (_, grant) = admin.get(&format!("/admin/grants/{grant_id}")).await;
    assert_eq!(grant["revoked"], true);
    let (status, _) = admin
        .call(
            reqwest::Method::DELETE,
            "/admin/grants/no-such-grant",
            Some(("ops", "ops-secret")),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Revoke a subject, then a client.
    let post = |body: Value| {
        let admin = &admin;
        async move {
            admin
                .call(
                    reqwest::Method::POST,
                    "/admin/revoke",
                    Some(("ops", "ops-secret")),
                    Some(body),
                )
                .await
        }
    };
    let (status, body) = post(json!({ "subject": "alice" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["revoked"], 2);
    assert_eq!(server.introspect(&alice_1).await["active"], false);
    assert_eq!(server.introspect(&bob).await["active"], true);
    let (status, body) = post(json!({ "client_id": "minter" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["revoked"], 1);
    assert_eq!(server.introspect(&bob).await["active"], false);
    for bad in [
        json!({}),
        json!({ "subject": "a", "client_id": "b" }),
        json!({ "who": "a" }),
    ] {
        let (status, body) = post(bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }

    // Each admin action is in the audit trail, with who did it.
    let audit = std::fs::read_to_string(server.dir.path().join("audit.log")).expect("audit log");
    let actions: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
        .filter(|l| l["event"] == "admin_action")
        .collect();
    let summary: Vec<(String, i64)> = actions
        .iter()
        .map(|a| {
            assert_eq!(a["client_id"], "ops", "{a}");
            assert!(a["request_id"].is_string(), "{a}");
            (
                a["action"].as_str().unwrap_or("-").to_string(),
                a["grants"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("revoke_grant".to_string(), 1),
            ("revoke_subject".to_string(), 2),
            ("revoke_client".to_string(), 1),
        ],
        "{audit}"
    );
    assert_eq!(actions[1]["sub"], "alice");
    assert_eq!(actions[2]["target_client_id"], "minter");
}

//! Several refgate instances on one PostgreSQL store: shared state, instant
//! cache invalidation, one downstream refresh across instances, and failing
//! closed while the store is unreachable. Always runs against the real
//! PostgreSQL server on 127.0.0.1:5432.

use std::time::{Duration, Instant};

use crate::common::oidc::OidcAs;
use crate::common::upstream::Upstream;
use crate::common::*;
use serde_json::{json, Value};

/// Two instances sharing a fresh database, with a `photos` credential route.
struct Cluster {
    a: Refgate,
    b: Refgate,
    _db: PgDatabase,
}

fn start_cluster(extra: &str) -> Cluster {
    let db = PgDatabase::create();
    let options = Options {
        extra: extra.to_string(),
        store_url: Some(db.url.clone()),
        ..Options::default()
    };
    let a = Refgate::start_with(options.clone());
    let b = Refgate::start_with(options);
    Cluster { a, b, _db: db }
}

async fn call(proxy: &str, token: &str) -> reqwest::Response {
    http()
        .get(format!("{proxy}/photos/list"))
        .bearer_auth(token)
        .send()
        .await
        .expect("proxy request")
}

#[tokio::test]
async fn token_issued_on_one_instance_introspects_on_the_other() {
    let upstream = Upstream::start().await;
    let cluster = start_cluster(&photos_route(&upstream.url()));
    let token = cluster.a.client_token("app", None).await;
    let view = cluster.b.introspect(str_of(&token, "access_token")).await;
    assert_eq!(view["active"], true);
    assert_eq!(view["client_id"], "app");
}

#[tokio::test]
async fn revocation_on_one_instance_is_rejected_by_the_other_at_once() {
    let upstream = Upstream::start().await;
    let cluster = start_cluster(&photos_route(&upstream.url()));
    let token = cluster.a.client_token("app", None).await;
    let at = str_of(&token, "access_token").to_string();
    cluster.a.store_credential(&at, "photos",
        json!({ "access_token": "down-1", "expires_at": unix_now() + 3600, "authority": "photos-as" }),
    )
    .await;
    // Warm B's cache: the token is now served from memory on B.
    for _ in 0..3 {
        assert_eq!(call(&cluster.b.proxy, &at).await.status(), StatusCode::OK);
    }
    let (status, _) = cluster
        .a
        .post_form(
            "/oauth2/revoke",
            Some(("app", "app-secret")),
            &[("token", &at)],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let revoked_at = Instant::now();
    let delay = loop {
        let status = call(&cluster.b.proxy, &at).await.status();
        if status == StatusCode::UNAUTHORIZED {
            break revoked_at.elapsed();
        }
        assert_eq!(status, StatusCode::OK, "unexpected status while waiting");
        assert!(
            revoked_at.elapsed() < Duration::from_secs(5),
            "B kept accepting a revoked token"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    // Typically a few milliseconds (printed); the bound is generous so that
    // a loaded machine does not fail it, and still far below any cache TTL.
    println!("revocation reached the other instance after {delay:?}");
    assert!(
        delay < Duration::from_secs(4),
        "revocation took {delay:?} to reach the other instance"
    );
}

#[tokio::test]
async fn revoking_a_source_grant_on_one_instance_ends_its_derived_tokens_on_the_other() {
    let upstream = Upstream::start().await;
    let cluster = start_cluster(&photos_route(&upstream.url()));
    let (source, source_refresh) = refreshable(&cluster.a, "photos.read offline_access").await;
    // `app` exchanges its token again: a derived grant, used at B.
    let (status, derived) = cluster
        .a
        .token(
            "app",
            &[
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ),
                ("subject_token", &source),
                (
                    "subject_token_type",
                    "urn:ietf:params:oauth:token-type:access_token",
                ),
                ("scope", "photos.read"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{derived}");
    let derived = str_of(&derived, "access_token").to_string();
    cluster.a.store_credential(&derived, "photos",
        json!({ "access_token": "down-1", "expires_at": unix_now() + 3600, "authority": "photos-as" }),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(
            call(&cluster.b.proxy, &derived).await.status(),
            StatusCode::OK
        );
    }
    let (status, _) = cluster
        .a
        .post_form(
            "/oauth2/revoke",
            Some(("app", "app-secret")),
            &[("token", &source_refresh)],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let revoked_at = Instant::now();
    loop {
        let status = call(&cluster.b.proxy, &derived).await.status();
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::OK, "unexpected status while waiting");
        assert!(
            revoked_at.elapsed() < Duration::from_secs(5),
            "B kept accepting a token derived from a revoked grant"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    println!(
        "the derived grant's revocation reached the other instance after {:?}",
        revoked_at.elapsed()
    );
}

#[tokio::test]
async fn expired_credential_stampede_across_instances_refreshes_once() {
    let oidc = OidcAs::start(300);
    let upstream = Upstream::start().await;
    let cluster = start_cluster(&format!(
        "{}\n{}",
        oidc.authority_toml("photos-as"),
        photos_route(&upstream.url())
    ));
    let token = cluster.a.client_token("app", None).await;
    let at = str_of(&token, "access_token").to_string();
    let (down_at, down_rt, _) = oidc.mint("alice").await;
    cluster
        .a
        .store_credential(
            &at,
            "photos",
            json!({
                "access_token": down_at, "refresh_token": down_rt, "token_type": "Bearer",
                "expires_at": unix_now() - 10, "authority": "photos-as",
            }),
        )
        .await;
    oidc.reset().await;

    let mut requests = Vec::new();
    for i in 0..60 {
        let proxy = if i % 2 == 0 {
            cluster.a.proxy.clone()
        } else {
            cluster.b.proxy.clone()
        };
        let at = at.clone();
        requests.push(tokio::spawn(
            async move { call(&proxy, &at).await.status() },
        ));
    }
    for request in requests {
        assert_eq!(request.await.expect("task"), StatusCode::OK);
    }
    assert_eq!(
        oidc.refresh_count().await,
        1,
        "the authority must see exactly one refresh"
    );
    let stored = &cluster.b.introspect(&at).await["custom"]["credentials"]["photos"];
    assert_ne!(
        stored["refresh_token"],
        json!(down_rt),
        "the rotated refresh token is stored"
    );
    let new_token = stored["access_token"].as_str().expect("access token");
    assert!(oidc.is_active(new_token).await);
    let sent: std::collections::HashSet<_> = upstream
        .requests()
        .iter()
        .filter_map(|r| r.header("authorization"))
        .collect();
    assert_eq!(
        sent.into_iter().collect::<Vec<_>>(),
        vec![format!("Bearer {new_token}")],
        "every request went out with the one refreshed token"
    );
}

#[tokio::test]
async fn concurrent_refreshes_across_instances_exactly_one_succeeds() {
    let cluster = start_cluster("");
    let (_, refresh) = refreshable(&cluster.a, "photos.read offline_access").await;
    let mut attempts = Vec::new();
    for i in 0..20 {
        let base = if i % 2 == 0 {
            cluster.a.base.clone()
        } else {
            cluster.b.base.clone()
        };
        let refresh = refresh.clone();
        attempts.push(tokio::spawn(async move {
            let response = http()
                .post(format!("{base}/oauth2/token"))
                .basic_auth("app", Some("app-secret"))
                .form(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)])
                .send()
                .await
                .expect("refresh");
            let status = response.status();
            let body: Value = response.json().await.expect("JSON");
            (status, body)
        }));
    }
    let mut winners = Vec::new();
    for attempt in attempts {
        let (status, body) = attempt.await.expect("task");
        if status == StatusCode::OK {
            winners.push(body);
        } else {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(body["error"], "invalid_grant", "{body}");
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one concurrent refresh may succeed"
    );
    // The losers replayed a used refresh token: the grant is revoked, the
    // winner's new tokens with it, on both instances.
    for key in ["access_token", "refresh_token"] {
        let token = str_of(&winners[0], key);
        for server in [&cluster.a, &cluster.b] {
            assert_eq!(server.introspect(token).await, json!({"active": false}));
        }
    }
}

#[tokio::test]
async fn store_outage_fails_closed_and_recovers_without_restart() {
    let upstream = Upstream::start().await;
    let cluster = start_cluster(&photos_route(&upstream.url()));
    let token = cluster.a.client_token("app", None).await;
    let at = str_of(&token, "access_token").to_string();
    cluster.a.store_credential(&at, "photos",
        json!({ "access_token": "down-1", "expires_at": unix_now() + 3600, "authority": "photos-as" }),
    )
    .await;
    assert_eq!(call(&cluster.a.proxy, &at).await.status(), StatusCode::OK);
    // A token issued and acknowledged before the outage must survive it.
    let survivor = cluster.b.client_token("other", None).await;
    let survivor = str_of(&survivor, "access_token").to_string();

    cluster._db.block();
    let outage = Instant::now();
    // Once the instances notice, nothing is forwarded on an unverified token.
    let mut saw_503 = false;
    while outage.elapsed() < Duration::from_secs(15) {
        let response = call(&cluster.a.proxy, &at).await;
        match response.status() {
            StatusCode::SERVICE_UNAVAILABLE => {
                let headers = response.headers().clone();
                let body: Value = response.json().await.expect("JSON");
                assert_eq!(body["error"], "store_unavailable");
                assert_eq!(headers["retry-after"], "1", "{headers:?}");
                assert_eq!(headers["cache-control"], "no-store", "{headers:?}");
                saw_503 = true;
                break;
            }
            StatusCode::OK => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("unexpected {other} during the outage"),
        }
    }
    assert!(
        saw_503,
        "the gateway kept forwarding while the store was down"
    );
    let upstream_before = upstream.requests().len();
    for proxy in [&cluster.a.proxy, &cluster.b.proxy] {
        for _ in 0..3 {
            let status = call(proxy, &at).await.status();
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        }
        // A token never seen before cannot be verified either.
        let status = call(proxy, "rgat_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
            .await
            .status();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(
        upstream.requests().len(),
        upstream_before,
        "nothing reached the upstream during the outage"
    );
    let response = http()
        .post(cluster.a.url("/oauth2/token"))
        .basic_auth("app", Some("app-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("token request");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    assert!(!raw_get_ok(cluster.a.token_port, "/readyz"));

    cluster._db.unblock();
    let recovery = Instant::now();
    loop {
        if call(&cluster.b.proxy, &at).await.status() == StatusCode::OK
            && raw_get_ok(cluster.a.token_port, "/readyz")
        {
            break;
        }
        assert!(
            recovery.elapsed() < Duration::from_secs(30),
            "refgate did not recover after the store came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "recovered {:?} after the store came back",
        recovery.elapsed()
    );
    assert_eq!(cluster.a.introspect(&survivor).await["active"], true);
    assert_eq!(call(&cluster.a.proxy, &at).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_admin_revocation_on_one_instance_reaches_the_other_at_once() {
    let ops = format!(
        "[[clients]]\nid = \"ops\"\nsecret_hash = \"{}\"\ngrant_types = [\"client_credentials\"]\nadmin = true\n",
        secret_hash("ops-secret")
    );
    let mut cluster = start_cluster(&ops);
    let port = cluster.a.reserve_admin_port();
    let config = std::fs::read_to_string(&cluster.a.config_path).expect("config");
    let config = config.replacen(
        "[listen]\n",
        &format!("[listen]\nadmin = \"127.0.0.1:{port}\"\n"),
        1,
    );
    std::fs::write(&cluster.a.config_path, config).expect("config");
    cluster.a.restart();
    let (token, _) = minted_pair(&cluster.a, "carol", &[]).await;
    // B has the token cached as active.
    assert_eq!(cluster.b.introspect(&token).await["active"], true);
    let revoked = http()
        .post(format!("http://127.0.0.1:{port}/admin/revoke"))
        .basic_auth("ops", Some("ops-secret"))
        .json(&json!({ "subject": "carol" }))
        .send()
        .await
        .expect("admin revoke");
    assert_eq!(revoked.status(), reqwest::StatusCode::OK);
    let started = std::time::Instant::now();
    while cluster.b.introspect(&token).await["active"] != false {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(4),
            "instance B still sees the token active"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    eprintln!("B saw the admin revocation after {:?}", started.elapsed());
}

/// A PostgreSQL role of this test's own, with the right to create in the
/// database's `public` schema, dropped with what it owns at the end.
struct Role {
    name: String,
    /// The database it may create in.
    database_url: String,
}

impl Role {
    fn create(db: &PgDatabase) -> Self {
        let name = format!("{}_role", db.name);
        psql(&format!("DROP ROLE IF EXISTS {name}"));
        psql(&format!("CREATE ROLE {name} LOGIN"));
        // Since PostgreSQL 15 only the database's owner may create in
        // `public`; the role creates refgate's tables.
        psql_in(&db.url, &format!("GRANT ALL ON SCHEMA public TO {name}"));
        Role {
            name,
            database_url: db.url.clone(),
        }
    }

    /// The role's connections open now.
    fn connections(&self) -> usize {
        let count = psql_rows(
            PG_ADMIN,
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = '{}'",
                self.name
            ),
        );
        count.first().and_then(|n| n.parse().ok()).expect("a count")
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        // Its objects (refgate's tables) and its grant go first: a role
        // that owns something cannot be dropped.
        psql_quietly(&self.database_url, &format!("DROP OWNED BY {}", self.name));
        psql_quietly(PG_ADMIN, &format!("DROP ROLE IF EXISTS {}", self.name));
    }
}

#[tokio::test]
async fn lookups_refused_for_the_servers_connection_limit_wait_for_the_instances_own() {
    let upstream = Upstream::start().await;
    // Dropped in reverse: refgate, then the role with its tables, then the
    // database.
    let db = PgDatabase::create();
    let role = Role::create(&db);
    let server = Refgate::start_with(Options {
        extra: photos_route(&upstream.url()),
        // Every request looks its token up in the store.
        gateway: "cache_capacity = 0".into(),
        store_url: Some(db.url.replacen(
            "postgres://postgres@",
            &format!("postgres://{}@", role.name),
            1,
        )),
        ..Options::default()
    });
    let token = server.client_token("app", None).await;
    let at = str_of(&token, "access_token").to_string();
    server
        .store_credential(
            &at,
            "photos",
            json!({ "access_token": "down-1", "expires_at": unix_now() + 3600, "authority": "photos-as" }),
        )
        .await;
    assert_eq!(call(&server.proxy, &at).await.status(), StatusCode::OK);
    // From now on the server takes no more connections of this role than
    // refgate holds: among them the one lookup connection the first
    // request opened, while refgate is configured for two.
    let held = role.connections();
    psql(&format!("ALTER ROLE {} CONNECTION LIMIT {held}", role.name));
    let mut requests = Vec::new();
    for _ in 0..60 {
        let proxy = server.proxy.clone();
        let at = at.clone();
        requests.push(tokio::spawn(async move {
            let response = call(&proxy, &at).await;
            let status = response.status();
            (status, response.text().await.unwrap_or_default())
        }));
    }
    for request in requests {
        let (status, body) = request.await.expect("task");
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let now = role.connections();
    assert!(now <= held, "the server's limit held: {now} connections");
    assert_eq!(upstream.requests().len(), 61);
}

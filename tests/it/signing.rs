//! refgate's signing keys (the `[signing]` table): the JWKS it publishes at
//! `/.well-known/jwks.json`, forced rotation with `refgate key
//! rotate-signing`, one key set for instances sharing a PostgreSQL store,
//! private keys sealed at rest, and `refgate check` on bad values.

use std::process::Output;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

use crate::common::*;

/// The JWKS answer: its `Cache-Control` and body.
async fn jwks(server: &Refgate) -> (String, Value) {
    let response = http()
        .get(server.url("/.well-known/jwks.json"))
        .send()
        .await
        .expect("jwks request");
    assert_eq!(response.status(), StatusCode::OK);
    let cache = response
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (cache, response.json().await.expect("jwks is JSON"))
}

fn kids(jwks: &Value) -> Vec<String> {
    let mut kids: Vec<String> = jwks["keys"]
        .as_array()
        .expect("keys array")
        .iter()
        .map(|k| str_of(k, "kid").to_string())
        .collect();
    kids.sort();
    kids
}

/// RFC 7638 thumbprint of a public EC or OKP JWK, computed here.
fn thumbprint(jwk: &Value) -> String {
    let canonical = match str_of(jwk, "kty") {
        "EC" => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            str_of(jwk, "crv"),
            str_of(jwk, "x"),
            str_of(jwk, "y")
        ),
        "OKP" => format!(
            r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#,
            str_of(jwk, "crv"),
            str_of(jwk, "x")
        ),
        "RSA" => format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            str_of(jwk, "e"),
            str_of(jwk, "n")
        ),
        other => panic!("unexpected kty {other}"),
    };
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        canonical.as_bytes(),
    ))
}

fn signing(lines: &str) -> Options {
    Options {
        extra: format!("[signing]\n{lines}\n"),
        ..Options::default()
    }
}

fn rotate_signing(server: &Refgate) -> Output {
    output_within(
        server
            .command()
            .args(["key", "rotate-signing", "--config"])
            .arg(&server.config_path),
        Duration::from_secs(30),
    )
}

/// Waits (the JWKS is re-read from the store at most once a second) until
/// the JWKS of `server` has exactly `expected` kids.
async fn wait_for_kids(server: &Refgate, expected: &[String]) -> Value {
    let mut expected = expected.to_vec();
    expected.sort();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = jwks(server).await;
        if kids(&body) == expected {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "JWKS kids {:?}, expected {expected:?}",
            kids(&body)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn jwks_publishes_one_public_es256_key_by_default_and_metadata_names_it() {
    let server = Refgate::start();
    let metadata: Value = http()
        .get(server.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .expect("metadata")
        .json()
        .await
        .expect("metadata JSON");
    assert_eq!(
        str_of(&metadata, "jwks_uri"),
        server.url("/.well-known/jwks.json")
    );

    let (cache, body) = jwks(&server).await;
    // publish_ahead defaults to 1d: a verifier may cache the set for less.
    let max_age: u64 = cache
        .strip_prefix("public, max-age=")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("Cache-Control {cache:?}"));
    assert!(max_age > 0 && max_age <= 86_400, "max-age {max_age}");
    let keys = body["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1, "{body}");
    let key = &keys[0];
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["crv"], "P-256");
    assert_eq!(key["alg"], "ES256");
    assert_eq!(key["use"], "sig");
    assert_eq!(str_of(key, "kid"), thumbprint(key));
    for private in ["d", "p", "q", "dp", "dq", "qi"] {
        assert!(
            key.get(private).is_none(),
            "private member {private}: {key}"
        );
    }
    // A JWT library reads it as a key set.
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(body.clone()).expect("JWK set");
    jsonwebtoken::DecodingKey::from_jwk(&set.keys[0]).expect("usable public key");
}

#[tokio::test]
async fn eddsa_keys_are_published_as_ed25519() {
    let server = Refgate::start_with(signing(r#"algorithm = "EdDSA""#));
    let (_, body) = jwks(&server).await;
    let key = &body["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    assert_eq!(str_of(key, "kid"), thumbprint(key));
    assert!(key.get("d").is_none());
}

#[tokio::test]
async fn rs256_keys_are_published_as_rsa_and_sign_what_jose_verifies() {
    let server = Refgate::start_with(signing(r#"algorithm = "RS256""#));
    let (_, body) = jwks(&server).await;
    let key = &body["keys"][0];
    assert_eq!(key["kty"], "RSA");
    assert_eq!(key["alg"], "RS256");
    assert_eq!(key["e"], "AQAB");
    // 2048 bits: 256 bytes of modulus, base64url without padding.
    assert_eq!(str_of(key, "n").len(), 342, "{key}");
    assert_eq!(str_of(key, "kid"), thumbprint(key));
    for private in ["d", "p", "q", "dp", "dq", "qi"] {
        assert!(
            key.get(private).is_none(),
            "private member {private}: {key}"
        );
    }
    // A token signed with it verifies outside refgate.
    let (status, minted) = server
        .token(
            "minter",
            &[
                ("grant_type", "arbitrary_token"),
                ("subject", "alice"),
                ("issuer", "https://idp.example.com"),
                ("access_token_type", "jwt"),
            ],
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{minted}");
    let verified = jose_verify(
        &server.url("/.well-known/jwks.json"),
        "https://idp.example.com",
        "-",
        str_of(&minted, "access_token"),
        "at+jwt",
    );
    assert_eq!(verified["ok"], true, "{verified}");
    assert_eq!(verified["header"]["alg"], "RS256");
}

/// The kid `refgate key rotate-signing` reports.
fn rotated_kid(output: &Output) -> String {
    let printed = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "rotate-signing failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    printed
        .strip_prefix("signing key ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no kid in {printed:?}"))
        .to_string()
}

#[tokio::test]
async fn forced_rotation_publishes_the_new_key_and_keeps_the_old_one() {
    let server = Refgate::start_with(signing(r#"publish_ahead = "1h""#));
    let (_, before) = jwks(&server).await;
    let old = kids(&before);
    assert_eq!(old.len(), 1);

    let new = rotated_kid(&rotate_signing(&server));
    assert_ne!(new, old[0]);
    let after = wait_for_kids(&server, &[old[0].clone(), new.clone()]).await;
    for key in after["keys"].as_array().expect("keys") {
        assert_eq!(str_of(key, "kid"), thumbprint(key));
    }

    // Across a restart the store still holds both.
    let mut server = server;
    server.restart();
    let (_, restarted) = jwks(&server).await;
    assert_eq!(kids(&restarted), kids(&after));
}

#[tokio::test]
async fn two_instances_on_one_postgres_store_publish_the_same_keys() {
    let db = PgDatabase::create();
    let options = Options {
        store_url: Some(db.url.clone()),
        ..signing(r#"publish_ahead = "1h""#)
    };
    // Started together: both find an empty key table.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Refgate::start_with(options.clone()));
        let b = s.spawn(|| Refgate::start_with(options.clone()));
        (a.join().expect("start a"), b.join().expect("start b"))
    });
    let (_, from_a) = jwks(&a).await;
    let (_, from_b) = jwks(&b).await;
    assert_eq!(kids(&from_a).len(), 1, "{from_a}");
    assert_eq!(kids(&from_a), kids(&from_b));

    let new = rotated_kid(&rotate_signing(&a));
    let expected = [kids(&from_a)[0].clone(), new];
    let on_a = wait_for_kids(&a, &expected).await;
    let on_b = wait_for_kids(&b, &expected).await;
    assert_eq!(on_a, on_b);
    drop((a, b));
}

#[tokio::test]
async fn private_signing_keys_are_sealed_in_the_store() {
    let server = Refgate::start();
    let (_, body) = jwks(&server).await;
    let key = &body["keys"][0];
    let kid = str_of(key, "kid").to_string();
    // A PKCS#8 P-256 key in clear holds the public point as raw bytes and
    // the algorithm identifiers (id-ecPublicKey, prime256v1) in DER.
    let x = URL_SAFE_NO_PAD.decode(str_of(key, "x")).expect("x");
    let y = URL_SAFE_NO_PAD.decode(str_of(key, "y")).expect("y");
    let ec_oids: &[u8] = &[
        0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
        0x3d, 0x03, 0x01, 0x07,
    ];
    if server.store_url.starts_with("postgres") {
        let dump = std::process::Command::new("pg_dump")
            .args(["--data-only", "--no-owner", &server.store_url])
            .output()
            .expect("run pg_dump");
        assert!(dump.status.success(), "pg_dump failed");
        let text = String::from_utf8_lossy(&dump.stdout).to_ascii_lowercase();
        assert!(
            text.contains(&kid.to_ascii_lowercase()),
            "the dump has no signing key"
        );
        for needle in [&x[..], &y[..], ec_oids] {
            assert!(
                !text.contains(&hex::encode(needle)),
                "key material in clear"
            );
        }
    } else {
        let files = crate::at_rest::store_files(&server.db_path);
        assert!(
            files.iter().any(|(_, b)| contains(b, kid.as_bytes())),
            "no store file holds the signing key"
        );
        for (path, bytes) in &files {
            for needle in [&x[..], &y[..], ec_oids] {
                assert!(
                    !contains(bytes, needle),
                    "{} holds signing key material in clear",
                    path.display()
                );
            }
        }
    }
    assert!(!server.log().contains("BEGIN PRIVATE KEY"));
}

#[test]
fn check_refuses_bad_signing_values_with_file_and_line() {
    let server_dir = tempfile::tempdir().expect("temp dir");
    let path = server_dir.path().join("refgate.toml");
    let text = format!(
        r#"issuer = "http://127.0.0.1:1"

[listen]
token_service = "127.0.0.1:1"

[store]
url = "sqlite://data/refgate.db"
data_key = "{DATA_KEY}"

[signing]
algorithm = "HS256"
rotate_every = "2h"
publish_ahead = "3h"
jwt_ttl = "forever"
"#
    );
    std::fs::write(&path, &text).expect("write config");
    let output = output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_refgate"))
            .args(["check", "--config"])
            .arg(&path),
        Duration::from_secs(30),
    );
    let errors = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(output.status.code(), Some(1), "{errors}");
    let line_of = |prefix: &str| {
        text.lines()
            .position(|l| l.starts_with(prefix))
            .expect("line")
            + 1
    };
    for (key, prefix) in [
        ("signing.algorithm", "algorithm"),
        ("signing.publish_ahead", "publish_ahead"),
        ("signing.jwt_ttl", "jwt_ttl"),
    ] {
        let line = format!("{}:{}", path.display(), line_of(prefix));
        assert!(
            errors.lines().any(|l| l.contains(&line) && l.contains(key)),
            "no problem names {key} at {line}:\n{errors}"
        );
    }
    assert!(
        errors.contains("ES256"),
        "the message names the choices: {errors}"
    );
}

#[tokio::test]
async fn signing_keys_keep_signing_across_a_data_key_rotation() {
    const NEW_DATA_KEY: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
    let upstream = crate::common::upstream::Upstream::start().await;
    let mut server = Refgate::start_with(Options {
        extra: route("api", "/api/", &upstream.url(), "forward = \"jwt\""),
        ..Options::default()
    });
    let (_, before) = jwks(&server).await;

    // The new data key current, the old one previous: the signing key is
    // sealed again with the new one...
    server.stop_cleanly();
    crate::data_keys::configure_keys(
        &server,
        NEW_DATA_KEY,
        &format!("previous_data_keys = [\"{DATA_KEY}\"]"),
    );
    server.restart();
    server.wait_for_log("signing key sealed with the current data key");

    // ...so it still signs once the old data key is gone.
    server.stop_cleanly();
    crate::data_keys::configure_keys(&server, NEW_DATA_KEY, "");
    server.restart();
    let (_, after) = jwks(&server).await;
    assert_eq!(kids(&after), kids(&before));
    let token = server.access_token("app").await;
    let status = http()
        .get(format!("{}/api/x", server.proxy))
        .bearer_auth(&token)
        .send()
        .await
        .expect("proxy request")
        .status();
    assert_eq!(status, StatusCode::OK);
    let sent = upstream
        .requests()
        .last()
        .expect("a request")
        .header("authorization");
    let jwt = sent.expect("Authorization");
    let header_part = jwt
        .trim_start_matches("Bearer ")
        .split('.')
        .next()
        .expect("header");
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header_part).expect("b64")).expect("JSON");
    assert_eq!(header["kid"].as_str(), Some(kids(&before)[0].as_str()));
    assert!(!server.log().contains(NEW_DATA_KEY));
}

#[tokio::test]
async fn concurrent_rotations_on_postgres_never_make_two_keys_sign_at_once() {
    let db = PgDatabase::create();
    let server = Refgate::start_with(Options {
        store_url: Some(db.url.clone()),
        ..signing(r#"publish_ahead = "1h""#)
    });
    let outputs: Vec<Output> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| rotate_signing(&server)))
            .collect();
        runs.into_iter()
            .map(|r| r.join().expect("rotation thread"))
            .collect()
    });
    let added = outputs.iter().filter(|o| o.status.success()).count();
    assert!(added >= 1, "no rotation succeeded");
    let rows = std::process::Command::new("psql")
        .args(["-X", "-A", "-t", "-F", " ", &db.url, "-c"])
        .arg("SELECT generation, signs_from, signs_until FROM signing_keys ORDER BY generation")
        .output()
        .expect("run psql");
    let text = String::from_utf8_lossy(&rows.stdout).to_string();
    let spans: Vec<(i64, i64, i64)> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let n: Vec<i64> = l
                .split_whitespace()
                .map(|x| x.parse().expect("number"))
                .collect();
            (n[0], n[1], n[2])
        })
        .collect();
    assert_eq!(spans.len(), 1 + added, "{text}");
    for (i, a) in spans.iter().enumerate() {
        for b in &spans[i + 1..] {
            let overlap = a.1.max(b.1) < a.2.min(b.2);
            assert!(!overlap, "keys {a:?} and {b:?} sign at the same time");
        }
    }
    // Within a second every key is in the JWKS.
    let deadline = Instant::now() + Duration::from_secs(10);
    while kids(&jwks(&server).await.1).len() != 1 + added {
        assert!(Instant::now() < deadline, "the JWKS lacks keys");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

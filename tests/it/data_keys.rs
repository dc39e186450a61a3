//! Custom data at rest (SPEC 3.5): sealed blobs name their data key and are
//! bound to their grant's version. A blob put back in place of a newer one
//! never shows its old data; `previous_data_keys` open data sealed before a
//! key rotation until refgate has sealed it again with the current key; a
//! store holding data of a key that is not configured refuses to start.
//! Each test runs on the store of the run (SQLite, or PostgreSQL with
//! `REFGATE_TEST_STORE=postgres`) and edits it directly, as someone holding
//! a dump or the database would.

use crate::common::*;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Another data key (standard base64 of 32 bytes).
const KEY_B: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

/// An access token of `app` whose grant holds `{"note": note}`.
async fn token_with_note(server: &Refgate, note: &str) -> String {
    let body = server.client_token("app", Some("photos.read")).await;
    let access = str_of(&body, "access_token").to_string();
    set_note(server, &access, note).await;
    access
}

/// Sets the note of the token's grant; returns the new version.
async fn set_note(server: &Refgate, access: &str, note: &str) -> i64 {
    let (status, body) = server
        .mutate(&json!({"token": access, "patch": {"note": note}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["version"].as_i64().expect("a version")
}

/// The note a `reveal_custom` caller sees.
async fn revealed_note(server: &Refgate, access: &str) -> Value {
    let view = server.introspect(access).await;
    assert_eq!(view["active"], true, "{view}");
    view["custom"]["note"].clone()
}

/// The sealed custom data and version of the one grant holding custom data,
/// read straight from the store.
fn stored_blob(server: &Refgate) -> (Vec<u8>, i64) {
    let rows = store_query(
        server,
        "SELECT hex(custom), version FROM grants WHERE custom IS NOT NULL",
        "SELECT encode(custom, 'hex'), version FROM grants WHERE custom IS NOT NULL",
    );
    let lines: Vec<&str> = rows.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 1, "one grant holds custom data: {rows:?}");
    let (blob, version) = lines[0].split_once('|').expect("two columns");
    (
        hex::decode(blob.to_ascii_lowercase()).expect("hex"),
        version.trim().parse().expect("a version"),
    )
}

/// Writes `blob` as the custom data of every grant holding some, leaving
/// the version as it is.
fn put_blob(server: &Refgate, blob: &[u8]) {
    let hex = hex::encode(blob);
    store_query(
        server,
        &format!("UPDATE grants SET custom = x'{hex}' WHERE custom IS NOT NULL"),
        &format!("UPDATE grants SET custom = '\\x{hex}'::bytea WHERE custom IS NOT NULL"),
    );
}

/// Runs one statement on the server's store with the sqlite3 or psql
/// client; returns its rows as `a|b` lines.
fn store_query(server: &Refgate, sqlite: &str, postgres: &str) -> String {
    let output = if server.store_url.starts_with("postgres") {
        Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg(&server.store_url)
            .args(["-c", postgres])
            .output()
            .expect("run psql")
    } else {
        Command::new("sqlite3")
            .arg(&server.db_path)
            .arg(sqlite)
            .output()
            .expect("run sqlite3")
    };
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// Rewrites the `[store]` keys of the server's configuration.
pub(crate) fn configure_keys(server: &Refgate, current: &str, previous: &str) {
    let text = std::fs::read_to_string(&server.config_path).expect("read config");
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("data_key") || line.starts_with("previous_data_keys") {
            continue;
        }
        out.push(line.to_string());
        if line == "[store]" {
            out.push(format!("data_key = \"{current}\""));
            if !previous.is_empty() {
                out.push(previous.to_string());
            }
        }
    }
    std::fs::write(&server.config_path, out.join("\n")).expect("write config");
}

/// Waits until the log has a line with `text` after the last `marker`.
fn wait_for_log(server: &Refgate, marker: &str, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = server.log();
        let since = log.rsplit(marker).next().unwrap_or_default().to_string();
        if since.contains(text) {
            return since;
        }
        assert!(
            Instant::now() < deadline,
            "no `{text}` in the log after `{marker}`:\n{since}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts refgate on (a copy of) the server's configuration expecting it to
/// refuse to start; returns what it logged. The copy listens on ports of
/// its own: the server's are held for its next start.
fn serve_expecting_refusal(server: &Refgate) -> String {
    let text = std::fs::read_to_string(&server.config_path).expect("read config");
    let text = text
        .replace(
            &format!("127.0.0.1:{}\"", server.token_port),
            "127.0.0.1:0\"",
        )
        .replace(
            &format!("127.0.0.1:{}\"", server.proxy_port),
            "127.0.0.1:0\"",
        );
    let config = server.config_path.with_file_name("refused.toml");
    std::fs::write(&config, text).expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_refgate"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start refgate");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("refgate started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = child.wait_with_output().expect("wait");
    let log = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    log
}

#[tokio::test]
async fn custom_data_put_back_from_an_older_version_is_never_shown() {
    let mut server = Refgate::start_with(Options {
        extra: format!("{AUTHORITY}\n{}", photos_route("http://127.0.0.1:9")),
        ..Options::default()
    });
    let access = token_with_note(&server, "old-note").await;
    let (old_blob, old_version) = stored_blob(&server);
    let version = set_note(&server, &access, "new-note").await;
    assert_eq!(version, old_version + 1);
    assert_eq!(revealed_note(&server, &access).await, "new-note");

    // The older blob of the same grant goes back in, the version stays:
    // what a restored dump or a hand in the database could do.
    server.stop_cleanly();
    put_blob(&server, &old_blob);
    server.restart();
    server.mark_log("blob-put-back");

    let view = server.introspect(&access).await;
    assert_eq!(view, json!({"active": false}), "the old data is not shown");
    let (status, body) = server
        .mutate(&json!({"token": access, "patch": {"note": "again"}}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_token");
    let response = http()
        .get(format!("{}/photos/x", server.proxy))
        .bearer_auth(&access)
        .send()
        .await
        .expect("gateway request");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let log = wait_for_log(&server, "blob-put-back", "treated as inactive");
    assert!(log.contains("altered or rolled back"), "{log}");
    assert!(!log.contains("old-note"), "{log}");
}

#[tokio::test]
async fn a_scope_change_keeps_custom_data_readable() {
    let server = Refgate::start();
    let access = token_with_note(&server, "kept-note").await;
    let (_, before) = stored_blob(&server);
    let (status, body) = server
        .token(
            "app",
            &[
                ("grant_type", EXCHANGE_MUTATE),
                ("subject_token", &access),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
                ("scope", "photos.read photos.write"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, after) = stored_blob(&server);
    assert_eq!(after, before + 1, "the scope change bumped the version");
    let view = server.introspect(&access).await;
    assert_eq!(view["custom"]["note"], "kept-note", "{view}");
    assert_eq!(
        sorted_scopes(&view["scope"]),
        ["photos.read", "photos.write"]
    );
    assert_eq!(set_note(&server, &access, "next").await, after + 1);
}

#[tokio::test]
async fn a_rotated_data_key_opens_old_data_until_it_is_sealed_again_then_can_be_dropped() {
    let mut server = Refgate::start();
    let access = token_with_note(&server, "before-rotation").await;
    let (blob_a, _) = stored_blob(&server);

    // Key B is current, key A listed as previous: old data still opens and
    // the pass at start seals it again with B.
    server.stop_cleanly();
    configure_keys(
        &server,
        KEY_B,
        &format!("previous_data_keys = [\"{DATA_KEY}\"]"),
    );
    server.mark_log("rotated");
    server.restart();
    assert_eq!(revealed_note(&server, &access).await, "before-rotation");
    let log = wait_for_log(&server, "rotated", "previous data keys can be removed");
    assert!(
        log.contains("sealed custom data again with the current data key grants=1"),
        "{log}"
    );
    let (blob_b, _) = stored_blob(&server);
    assert_ne!(blob_a[1..9], blob_b[1..9], "the blob names another key now");
    // New writes are sealed with B.
    let version = set_note(&server, &access, "during-rotation").await;
    let (blob_new, _) = stored_blob(&server);
    assert_eq!(blob_new[..9], blob_b[..9]);

    // Key A dropped: everything still opens.
    server.stop_cleanly();
    configure_keys(&server, KEY_B, "");
    server.restart();
    assert_eq!(revealed_note(&server, &access).await, "during-rotation");
    assert_eq!(set_note(&server, &access, "after").await, version + 1);
    for secret in [DATA_KEY, KEY_B] {
        assert!(!server.log().contains(secret), "a data key is in the log");
    }
}

#[tokio::test]
async fn a_store_sealed_with_a_key_that_is_not_configured_refuses_to_start() {
    let mut server = Refgate::start();
    let access = token_with_note(&server, "sealed-with-a").await;

    // Key A replaced by B without listing A: refused, saying what to do.
    server.stop_cleanly();
    configure_keys(&server, KEY_B, "");
    let log = serve_expecting_refusal(&server);
    assert!(log.contains("1 grant(s)"), "{log}");
    assert!(log.contains("not configured"), "{log}");
    assert!(log.contains("previous_data_keys"), "{log}");
    assert!(!log.contains(DATA_KEY) && !log.contains(KEY_B), "{log}");

    // A listed through the environment: starts, and the data opens.
    let variable = "REFGATE_TEST_PREVIOUS_KEY";
    server.set_env(variable, DATA_KEY);
    configure_keys(
        &server,
        KEY_B,
        &format!("previous_data_keys_env = [\"{variable}\"]"),
    );
    server.restart();
    assert_eq!(revealed_note(&server, &access).await, "sealed-with-a");
}

/// A blob as sealed before blobs named their key: `[1][nonce][ciphertext]`
/// with the grant id as the only associated data.
fn seal_without_key_id(key_base64: &str, grant_id: &str, plain: &[u8]) -> Vec<u8> {
    use base64::Engine;
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
    let raw = base64::engine::general_purpose::STANDARD
        .decode(key_base64)
        .expect("base64");
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &raw).expect("a 32-byte key"));
    let nonce = [7u8; 12];
    let mut body = plain.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(grant_id.as_bytes()),
        &mut body,
    )
    .expect("seal");
    [&[1u8][..], &nonce, &body].concat()
}

#[tokio::test]
async fn custom_data_sealed_before_blobs_named_their_key_still_opens_and_is_sealed_again() {
    let mut server = Refgate::start();
    let access = token_with_note(&server, "placeholder").await;
    let grant_id = store_query(
        &server,
        "SELECT id FROM grants WHERE custom IS NOT NULL",
        "SELECT id FROM grants WHERE custom IS NOT NULL",
    )
    .trim()
    .to_string();

    server.stop_cleanly();
    let legacy = seal_without_key_id(DATA_KEY, &grant_id, br#"{"note":"legacy-note"}"#);
    put_blob(&server, &legacy);
    server.mark_log("legacy");
    server.restart();
    assert_eq!(revealed_note(&server, &access).await, "legacy-note");
    wait_for_log(
        &server,
        "legacy",
        "sealed custom data again with the current data key grants=1",
    );
    let (blob, _) = stored_blob(&server);
    assert_eq!(blob[0], 2, "sealed again in the format that names its key");
    assert_eq!(revealed_note(&server, &access).await, "legacy-note");
}

#[tokio::test]
async fn sqlite_files_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let companions = |db: &std::path::Path| {
        ["", "-wal", "-shm"].map(|suffix| {
            let mut name = db.as_os_str().to_owned();
            name.push(suffix);
            std::path::PathBuf::from(name)
        })
    };
    // SQLite on purpose, whichever store the rest of the run uses.
    let mut server = Refgate::start_with(Options {
        store_url: Some("sqlite://data/refgate.db".into()),
        ..Options::default()
    });
    let data_dir = server.db_path.parent().expect("a directory").to_path_buf();
    assert_eq!(mode(&data_dir), 0o700, "the directory refgate created");
    for file in companions(&server.db_path) {
        assert_eq!(mode(&file), 0o600, "{} after start", file.display());
    }
    let access = token_with_note(&server, "written").await;
    set_note(&server, &access, "written again").await;
    for file in companions(&server.db_path) {
        assert_eq!(mode(&file), 0o600, "{} after writes", file.display());
    }

    // A store from before, readable by others: narrowed at start.
    server.stop_cleanly();
    std::fs::set_permissions(&server.db_path, std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    server.restart();
    for file in companions(&server.db_path) {
        assert_eq!(mode(&file), 0o600, "{} after restart", file.display());
    }
    assert_eq!(revealed_note(&server, &access).await, "written again");
}

#[tokio::test]
async fn instances_sharing_postgres_rotate_in_three_steps_and_always_read_each_others_data() {
    // PostgreSQL on purpose, whichever store the rest of the run uses.
    let db = PgDatabase::create();
    let shared = || Options {
        store_url: Some(db.url.clone()),
        ..Options::default()
    };
    let (mut one, mut two) = (Refgate::start_with(shared()), Refgate::start_with(shared()));
    let access = token_with_note(&one, "sealed-with-a").await;
    let with_a_current = format!("previous_data_keys = [\"{KEY_B}\"]");
    let with_b_current = format!("previous_data_keys = [\"{DATA_KEY}\"]");

    // 1. Every instance learns B while A still seals.
    for server in [&mut one, &mut two] {
        server.stop_cleanly();
        configure_keys(server, DATA_KEY, &with_a_current);
        server.restart();
    }
    // 2. B seals, one instance at a time: meanwhile each instance reads
    // what the other wrote.
    one.stop_cleanly();
    configure_keys(&one, KEY_B, &with_b_current);
    one.mark_log("step 2");
    one.restart();
    wait_for_log(&one, "step 2", "sealed custom data again");
    assert_eq!(revealed_note(&two, &access).await, "sealed-with-a");
    set_note(&two, &access, "written-with-a").await;
    assert_eq!(revealed_note(&one, &access).await, "written-with-a");
    set_note(&one, &access, "written-with-b").await;
    assert_eq!(revealed_note(&two, &access).await, "written-with-b");
    two.stop_cleanly();
    configure_keys(&two, KEY_B, &with_b_current);
    two.mark_log("step 2");
    two.restart();
    wait_for_log(&two, "step 2", "previous data keys can be removed");

    // 3. A goes everywhere.
    for server in [&mut one, &mut two] {
        server.stop_cleanly();
        configure_keys(server, KEY_B, "");
        server.restart();
        assert_eq!(revealed_note(server, &access).await, "written-with-b");
    }
}

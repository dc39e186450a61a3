//! Data at rest (SPEC 3.1, 3.5): a dump of the SQLite store shows neither
//! token strings nor custom data, while the server runs and after it
//! stopped; and neither reaches the log. These tests read the SQLite files
//! (the database and its `-wal`/`-shm` companions) as raw bytes, so they are
//! specific to the embedded store.

use crate::common::*;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

/// A string no other test or run produces.
fn unique(label: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!("{label}-{}-{nanos:x}", std::process::id())
}

/// Every token issued, and the strings that must never be stored in clear.
struct Issued {
    tokens: Vec<String>,
    /// Markers placed in custom data.
    markers: Vec<String>,
    /// A subject: stored in clear, so it proves the files read hold the data.
    subject: String,
}

/// Issues every kind of token and stores custom data holding markers:
/// client_credentials, arbitrary_token with offline_access and
/// arbitrary_json, a refresh rotation, a token exchange, and mutations.
async fn issue_everything(server: &Refgate) -> Issued {
    let mut tokens = Vec::new();
    let marker_mutate = unique("mutate-marker");
    let marker_minted = unique("minted-marker");
    let subject = unique("at-rest-subject");

    let body = server.client_token("app", None).await;
    let app_access = str_of(&body, "access_token").to_string();
    tokens.push(app_access.clone());

    let arbitrary_json = json!({"seed": marker_minted}).to_string();
    let (status, body) = server
        .token(
            "minter",
            &[
                ("grant_type", "arbitrary_token"),
                ("subject", &subject),
                ("issuer", "https://idp.example.com"),
                ("scope", "photos.read offline_access"),
                ("arbitrary_json", &arbitrary_json),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let minted_access = str_of(&body, "access_token").to_string();
    let minted_refresh = str_of(&body, "refresh_token").to_string();
    tokens.extend([minted_access.clone(), minted_refresh.clone()]);

    let (status, body) = server
        .mutate(&json!({
            "token": minted_access,
            "patch": {"credentials": {"photos": {
                "access_token": format!("downstream-{marker_mutate}"),
                "token_type": "Bearer",
                "expires_at": 1_767_225_600,
                "authority": "photos-as",
            }}, "note": marker_mutate},
        }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, body) = server
        .token(
            "minter",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &minted_refresh),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    tokens.push(str_of(&body, "access_token").to_string());
    tokens.push(str_of(&body, "refresh_token").to_string());

    let (status, body) = server
        .token(
            "app",
            &[
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", &app_access),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
                ("scope", "photos.read offline_access"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let exchanged = str_of(&body, "access_token").to_string();
    tokens.push(exchanged.clone());
    tokens.push(str_of(&body, "refresh_token").to_string());
    let (status, body) = server
        .mutate(&json!({"token": exchanged, "patch": {"note": marker_mutate}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // What was stored opens again for a reveal_custom caller.
    let view = server.introspect(&tokens[3]).await;
    assert_eq!(view["custom"]["seed"], marker_minted);
    assert_eq!(view["custom"]["note"], marker_mutate);

    Issued {
        tokens,
        markers: vec![marker_mutate, marker_minted],
        subject,
    }
}

/// The database file and every companion file next to it (`-wal`, `-shm`,
/// `-journal`), as raw bytes.
pub(crate) fn store_files(db_path: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = db_path.parent().expect("the database has a directory");
    let name = db_path
        .file_name()
        .expect("file name")
        .to_string_lossy()
        .to_string();
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read the data directory") {
        let path = entry.expect("directory entry").path();
        let file_name = path.file_name().expect("file name").to_string_lossy();
        if file_name.starts_with(&name) && path.is_file() {
            let bytes = std::fs::read(&path).expect("read a store file");
            out.push((path, bytes));
        }
    }
    assert!(
        out.iter().any(|(p, _)| p == db_path),
        "no database file at {}",
        db_path.display()
    );
    out
}

/// Asserts that no file holds a token (whole, or its random part without
/// the prefix) or a marker, and that the subject is found somewhere (so the
/// files read are the ones that hold the data).
fn assert_nothing_in_clear(files: &[(PathBuf, Vec<u8>)], issued: &Issued, phase: &str) {
    for (path, bytes) in files {
        for token in &issued.tokens {
            assert!(
                !contains(bytes, token.as_bytes()) && !contains(bytes, &token.as_bytes()[5..]),
                "{phase}: {} contains a token string",
                path.display()
            );
        }
        for marker in &issued.markers {
            assert!(
                !contains(bytes, marker.as_bytes()),
                "{phase}: {} contains custom data ({marker})",
                path.display()
            );
        }
    }
    assert!(
        files
            .iter()
            .any(|(_, b)| contains(b, issued.subject.as_bytes())),
        "{phase}: the subject is in none of {:?}: are these the store's files?",
        files.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn sqlite_files_hold_no_token_strings_or_custom_data_while_running_and_after_stop() {
    // SQLite on purpose, whichever store the rest of the run uses.
    let mut server = Refgate::start_with(Options {
        store_url: Some("sqlite://data/refgate.db".into()),
        ..Options::default()
    });
    let issued = issue_everything(&server).await;

    let running = store_files(&server.db_path);
    assert_nothing_in_clear(&running, &issued, "while running");

    assert_eq!(server.stop(), Some(0), "refgate did not exit cleanly");
    let stopped = store_files(&server.db_path);
    assert_nothing_in_clear(&stopped, &issued, "after SIGTERM");
}

#[tokio::test]
async fn tokens_secrets_and_custom_data_never_reach_the_log() {
    let mut server = Refgate::start();
    let issued = issue_everything(&server).await;
    // Failures log too: a replayed refresh token, a bad secret.
    let (status, _) = server
        .token(
            "minter",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &issued.tokens[2]),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = server
        .post_form(
            "/oauth2/introspect",
            Some(("middle", "a-wrong-secret-value")),
            &[("token", &issued.tokens[0])],
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(server.stop(), Some(0));

    let log = server.log();
    assert!(!log.is_empty(), "refgate logged nothing");
    for token in &issued.tokens {
        assert!(!log.contains(&token[5..]), "a token string is in the log");
    }
    for marker in &issued.markers {
        assert!(!log.contains(marker.as_str()), "custom data is in the log");
    }
    for secret in [
        "app-secret",
        "middle-secret",
        "minter-secret",
        "a-wrong-secret-value",
        DATA_KEY,
    ] {
        assert!(!log.contains(secret), "`{secret}` is in the log");
    }
}

#[tokio::test]
async fn postgres_dump_holds_no_token_strings_or_custom_data() {
    let db = PgDatabase::create();
    let server = Refgate::start_with(Options {
        store_url: Some(db.url.clone()),
        ..Options::default()
    });
    let issued = issue_everything(&server).await;
    let dump = std::process::Command::new("pg_dump")
        .args(["--data-only", "--no-owner", &db.url])
        .output()
        .expect("run pg_dump");
    assert!(
        dump.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    // BYTEA columns dump as hex: look for the hex forms too.
    let text = String::from_utf8_lossy(&dump.stdout).to_string();
    let hex_dump = text.to_ascii_lowercase();
    let as_hex = |s: &str| hex::encode(s.as_bytes());
    for token in &issued.tokens {
        assert!(
            !text.contains(token.as_str()),
            "the dump holds a token string"
        );
        assert!(
            !hex_dump.contains(&as_hex(&token[5..])),
            "the dump holds a token in hex"
        );
    }
    for marker in &issued.markers {
        assert!(
            !text.contains(marker.as_str()),
            "the dump holds custom data"
        );
        assert!(
            !hex_dump.contains(&as_hex(marker)),
            "the dump holds custom data in hex"
        );
    }
    assert!(
        text.contains(&issued.subject),
        "the subject is not in the dump: is this the store's database?"
    );
}

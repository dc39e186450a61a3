//! The SQLite store under concurrent callers, through the `Store` trait, on
//! real database files in temporary directories.

use std::path::Path;
use std::sync::Arc;

use refgate::crypto::{hash_token, TokenHash, TokenKind};
use refgate::store::{GrantRecord, NewToken, Rotation, SqliteStore, Store};

const NOW: i64 = 1_900_000_000;

fn grant(id: &str) -> GrantRecord {
    GrantRecord {
        id: id.to_string(),
        client_id: "client-a".to_string(),
        subject: "alice".to_string(),
        scopes: vec!["photos.read".to_string(), "offline_access".to_string()],
        audience: vec!["https://photos.example".to_string()],
        actor: None,
        issuer: None,
        claims: None,
        custom_sealed: Some(vec![7; 48]),
        version: 1,
        created_at: NOW,
        revoked: false,
        ..GrantRecord::default()
    }
}

fn token(name: &str, kind: TokenKind) -> NewToken {
    NewToken {
        hash: hash_token("", name),
        kind,
        scopes: None,
        issued_at: NOW,
        expires_at: NOW + 3600,
    }
}

async fn open(path: &Path) -> Arc<SqliteStore> {
    Arc::new(
        SqliteStore::open(path, 4)
            .await
            .expect("the store opens on a fresh file"),
    )
}

async fn grant_of(store: &SqliteStore, hash: &TokenHash) -> Option<String> {
    store
        .find_token(hash)
        .await
        .expect("lookups succeed")
        .map(|(_, grant)| grant.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundreds_of_concurrent_new_grants_are_all_stored_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = open(&path).await;

    let calls: Vec<_> = (0..400)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let access = token(&format!("access-{i}"), TokenKind::Access);
                store
                    .create_grant(&grant(&format!("g{i}")), &[access])
                    .await
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap().expect("every grant is stored");
    }

    for i in 0..400 {
        let hash = hash_token("", &format!("access-{i}"));
        assert_eq!(grant_of(&store, &hash).await, Some(format!("g{i}")));
    }
    drop(store);
    let reopened = open(&path).await;
    for i in 0..400 {
        let found = reopened.find_grant(&format!("g{i}")).await.unwrap();
        assert!(found.is_some(), "grant g{i} is in the file after reopening");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grant_that_breaks_a_unique_key_fails_alone_among_concurrent_grants() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("store.db")).await;
    let taken = token("taken", TokenKind::Access);
    store
        .create_grant(&grant("original"), std::slice::from_ref(&taken))
        .await
        .unwrap();

    // Every tenth grant reuses the stored token hash: its grant row goes in
    // before its token fails, so only rolling back the whole write keeps
    // the grant out.
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let store = store.clone();
            let taken = taken.clone();
            tokio::spawn(async move {
                let tokens = if i % 10 == 0 {
                    vec![taken]
                } else {
                    vec![token(&format!("fresh-{i}"), TokenKind::Access)]
                };
                store.create_grant(&grant(&format!("g{i}")), &tokens).await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for call in calls {
        outcomes.push(call.await.unwrap());
    }

    for (i, outcome) in outcomes.iter().enumerate() {
        let stored = store.find_grant(&format!("g{i}")).await.unwrap();
        if i % 10 == 0 {
            assert!(outcome.is_err(), "grant g{i} reused a token hash");
            assert!(stored.is_none(), "the failed grant g{i} left nothing");
        } else {
            assert!(outcome.is_ok(), "grant g{i}: {outcome:?}");
            assert!(stored.is_some(), "grant g{i} is stored");
        }
    }
    assert_eq!(
        grant_of(&store, &taken.hash).await.as_deref(),
        Some("original"),
        "the token that was reused still belongs to its grant"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_fifty_concurrent_rotations_of_one_refresh_token_exactly_one_rotates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = open(&path).await;
    let refresh = token("refresh-0", TokenKind::Refresh);
    store
        .create_grant(&grant("g"), std::slice::from_ref(&refresh))
        .await
        .unwrap();

    let calls: Vec<_> = (0..50)
        .map(|i| {
            let store = store.clone();
            let old = refresh.hash;
            tokio::spawn(async move {
                let next = token(&format!("refresh-1-{i}"), TokenKind::Refresh);
                let outcome = store.rotate_refresh(&old, NOW + 10, 0, &[next]).await;
                (i, outcome)
            })
        })
        .collect();
    let (mut rotated, mut replayed, mut inactive) = (Vec::new(), 0, 0);
    for call in calls {
        match call.await.unwrap() {
            (i, Ok(Rotation::Rotated)) => rotated.push(i),
            (_, Ok(Rotation::Replayed(_))) => replayed += 1,
            (_, Ok(Rotation::Inactive)) => inactive += 1,
            (i, Err(e)) => panic!("rotation {i}: {e}"),
        }
    }

    assert_eq!(rotated.len(), 1, "exactly one rotation wins: {rotated:?}");
    // The first call after the winner is a replay and revokes the grant;
    // the calls after it find the grant revoked.
    assert_eq!(replayed, 1, "one replay");
    assert_eq!(inactive, 48, "the rest find the grant revoked");
    for i in 0..50 {
        let next = hash_token("", &format!("refresh-1-{i}"));
        let stored = grant_of(&store, &next).await.is_some();
        assert_eq!(stored, rotated == [i], "successor of rotation {i}");
    }
    // A replay revokes the grant, and that revocation was committed.
    drop(store);
    let reopened = open(&path).await;
    let grant = reopened.find_grant("g").await.unwrap().expect("grant kept");
    assert!(grant.revoked, "the replays revoked the grant");
}

/// A store file written before tenants existed (the first seven
/// migrations, rows as that schema held them) opens, gains the tenant
/// columns, and its tokens are still found by their bare SHA-256 hashes as
/// the top level's, with their signing key.
#[tokio::test]
async fn a_store_from_before_tenants_keeps_its_tokens_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let migrations = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/migrations/sqlite");
    let mut files: Vec<_> = std::fs::read_dir(&migrations)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    let before: Vec<_> = files
        .iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            *name < *"0008"
        })
        .collect();
    assert_eq!(before.len(), 7, "{files:?}");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        for file in &before {
            conn.execute_batch(&std::fs::read_to_string(file).unwrap())
                .unwrap();
        }
        conn.pragma_update(None, "user_version", 7).unwrap();
        conn.execute_batch(&format!(
            "INSERT INTO grants (id, client_id, subject, scopes, version, created_at, revoked) \
             VALUES ('old-grant', 'app', 'app', 'photos.read', 1, {NOW}, 0); \
             INSERT INTO signing_keys VALUES (1, 'old-kid', 'ES256', '{{}}', x'00', {NOW}, {NOW}, {});",
            NOW + 3600
        ))
        .unwrap();
        conn.execute(
            "INSERT INTO tokens (hash, grant_id, kind, issued_at, expires_at, revoked) \
             VALUES (?1, 'old-grant', ?2, ?3, ?4, 0)",
            rusqlite::params![
                &hash_token("", "rgat_old").0[..],
                TokenKind::Access.code(),
                NOW,
                NOW + 3600
            ],
        )
        .unwrap();
    }
    let store = open(&path).await;
    let (_, grant) = store
        .find_token(&hash_token("", "rgat_old"))
        .await
        .unwrap()
        .expect("the old token is found as the top level's");
    assert_eq!(grant.id, "old-grant");
    assert_eq!(grant.tenant, "");
    // The same string in a tenant is another key, and not there.
    assert!(store
        .find_token(&hash_token("acme", "rgat_old"))
        .await
        .unwrap()
        .is_none());
    let keys = store.signing_keys("", NOW).await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].kid, "old-kid");
    assert!(store.signing_keys("acme", NOW).await.unwrap().is_empty());
}

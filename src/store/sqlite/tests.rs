//! The SQLite store's own tests: compiled only for `cargo test`.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use super::queries::insert_tokens;
use super::readers::Readers;
use super::writer::Writer;
use super::SqliteStore;
use crate::crypto::{hash_token, KeyId, TokenHash, TokenKind};
use crate::store::*;

const NOW: UnixTime = 1_900_000_000;

type Pending<'a> = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>;

fn grant(id: &str) -> GrantRecord {
    GrantRecord {
        id: id.to_string(),
        client_id: "client-a".to_string(),
        subject: "alice".to_string(),
        scopes: vec!["photos.read".to_string()],
        audience: Vec::new(),
        actor: None,
        issuer: None,
        claims: None,
        custom_sealed: None,
        version: 1,
        created_at: NOW,
        revoked: false,
        ..GrantRecord::default()
    }
}

fn access(name: &str) -> NewToken {
    NewToken {
        hash: hash_token("", name),
        kind: TokenKind::Access,
        scopes: None,
        issued_at: NOW,
        expires_at: NOW + 3600,
    }
}

async fn open(dir: &tempfile::TempDir) -> Arc<SqliteStore> {
    open_keeping(dir, super::readers::SNAPSHOT_LIFE).await
}

#[tokio::test]
async fn sealing_again_replaces_only_the_blob_that_was_read_and_keeps_the_version() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = open(&dir).await;
    let current = [2u8, 1, 1, 1, 1, 1, 1, 1, 1];
    for (id, blob) in [
        ("a-old-key", vec![2u8, 9, 9, 9, 9, 9, 9, 9, 9, 0xaa]),
        ("b-current", [&current[..], &[0xbb]].concat()),
        ("c-unnamed", vec![1u8, 0xcc]),
        ("d-changed", vec![2u8, 9, 9, 9, 9, 9, 9, 9, 9, 0xdd]),
    ] {
        let mut g = grant(id);
        g.custom_sealed = Some(blob);
        store
            .create_grant(&g, &[access(id)])
            .await
            .expect("the store answers");
    }
    let mut counts = store
        .count_sealed_by_key()
        .await
        .expect("the store answers");
    counts.sort_by_key(|(id, _)| id.map(|k| k.0));
    assert_eq!(
        counts,
        vec![
            (None, 1),
            (Some(KeyId([1; 8])), 1),
            (Some(KeyId([9; 8])), 2)
        ]
    );

    let stale = store
        .sealed_otherwise(&current, "", 10)
        .await
        .expect("the store answers");
    let ids: Vec<&str> = stale.iter().map(|s| s.grant_id.as_str()).collect();
    assert_eq!(ids, ["a-old-key", "c-unnamed", "d-changed"]);
    let page = store
        .sealed_otherwise(&current, "a-old-key", 1)
        .await
        .expect("the store answers");
    assert_eq!(page[0].grant_id, "c-unnamed", "pages follow the id order");

    // `d` changes between the read and the write: its new blob stays.
    let change = GrantChange {
        custom_sealed: Some(Some(vec![2, 1, 1, 1, 1, 1, 1, 1, 1, 0xde])),
        ..GrantChange::default()
    };
    assert_eq!(
        store
            .update_grant("d-changed", 1, &change)
            .await
            .expect("the store answers"),
        GrantUpdate::Updated(2)
    );
    store
        .revoke_grant("c-unnamed")
        .await
        .expect("the store answers");
    let mut replaced = Vec::new();
    for s in &stale {
        let resealed = [&current[..], &[0x11]].concat();
        replaced.push(
            store
                .reseal_custom(s, &resealed)
                .await
                .expect("the store answers"),
        );
    }
    assert_eq!(replaced, [true, false, false]);
    let a = store
        .find_grant("a-old-key")
        .await
        .expect("the store answers")
        .expect("the grant is stored");
    assert_eq!(a.version, 1, "the version stays");
    assert_eq!(a.custom_sealed.expect("sealed custom data")[..9], current);
    let d = store
        .find_grant("d-changed")
        .await
        .expect("the store answers")
        .expect("the grant is stored");
    assert_eq!(
        d.custom_sealed.expect("sealed custom data").last(),
        Some(&0xde)
    );
    assert!(store
        .sealed_otherwise(&current, "", 10)
        .await
        .expect("the store answers")
        .is_empty());
}

/// Keeps the writer thread busy inside a write until `release` is used,
/// so that every write queued meanwhile lands in its next batch.
async fn hold_writer(store: &Arc<SqliteStore>) -> mpsc::Sender<()> {
    let (running, started) = oneshot::channel();
    let (release, released) = mpsc::channel::<()>();
    let store = store.clone();
    tokio::spawn(async move {
        store
            .write(move |_| {
                let _ = running.send(());
                let _ = released.recv();
                Ok(())
            })
            .await
    });
    started.await.expect("the writer runs the holding write");
    release
}

/// Queues every write (in order) while the writer is held, then lets it
/// go, so that they all run in one batch.
async fn one_batch(
    writes: Vec<Pending<'_>>,
    release: mpsc::Sender<()>,
) -> Vec<Result<(), StoreError>> {
    let all = futures::future::join_all(writes);
    let (outcomes, ()) = tokio::join!(all, async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = release.send(());
    });
    outcomes
}

async fn stored(store: &SqliteStore, id: &str) -> bool {
    store
        .find_grant(id)
        .await
        .expect("lookups succeed")
        .is_some()
}

#[tokio::test]
async fn in_one_batch_a_write_that_fails_is_undone_alone_and_only_its_caller_hears() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = open(&dir).await;
    store
        .create_grant(&grant("original"), &[access("taken")])
        .await
        .expect("the store answers");

    // Every tenth grant reuses a stored token hash: its grant row is
    // written before its token fails.
    let grants: Vec<_> = (0..100).map(|i| grant(&format!("g{i}"))).collect();
    let tokens: Vec<_> = (0..100)
        .map(|i| match i % 10 {
            0 => vec![access("taken")],
            _ => vec![access(&format!("fresh-{i}"))],
        })
        .collect();
    let release = hold_writer(&store).await;
    let writes = grants
        .iter()
        .zip(&tokens)
        .map(|(g, t)| store.create_grant(g, t))
        .collect();
    let outcomes = one_batch(writes, release).await;

    for (i, outcome) in outcomes.iter().enumerate() {
        let id = format!("g{i}");
        if i % 10 == 0 {
            assert!(outcome.is_err(), "{id} reused a token hash");
            assert!(!stored(&store, &id).await, "{id} left nothing behind");
        } else {
            assert!(outcome.is_ok(), "{id}: {outcome:?}");
            assert!(stored(&store, &id).await, "{id} is stored");
        }
    }
}

#[tokio::test]
async fn a_write_that_panics_fails_alone_and_the_writer_keeps_serving() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = open(&dir).await;
    let (before, after) = (grant("before"), grant("after"));
    let (before_tokens, after_tokens) = ([access("a")], [access("b")]);

    let release = hold_writer(&store).await;
    let writes: Vec<Pending<'_>> = vec![
        store.create_grant(&before, &before_tokens),
        Box::pin(store.write(|conn| {
            revoke_everything(conn)?;
            panic!("a bug in a write");
        })),
        store.create_grant(&after, &after_tokens),
    ];
    let outcomes = one_batch(writes, release).await;

    assert!(outcomes[0].is_ok(), "{:?}", outcomes[0]);
    assert!(
        outcomes[1].is_err(),
        "the panicking write reports a failure"
    );
    assert!(outcomes[2].is_ok(), "{:?}", outcomes[2]);
    for id in ["before", "after"] {
        let found = store
            .find_grant(id)
            .await
            .expect("the store answers")
            .expect("stored");
        assert!(!found.revoked, "the panicking write's changes were undone");
    }
    store
        .create_grant(&grant("later"), &[access("c")])
        .await
        .expect("the writer still runs writes");
}

/// Part of a write that must never be committed.
fn revoke_everything(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute("UPDATE grants SET revoked = 1", [])
        .map(|_| ())
}

#[tokio::test]
async fn when_a_batch_cannot_commit_every_write_in_it_fails_and_none_is_stored() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = open(&dir).await;
    let (first, last) = (grant("first"), grant("last"));
    let (first_tokens, last_tokens) = ([access("a")], [access("b")]);

    let release = hold_writer(&store).await;
    // A token of a grant that does not exist, with the foreign key
    // checked only at COMMIT: the write itself succeeds, the commit of
    // its batch does not.
    let orphan = Box::pin(store.write(|conn| {
        conn.pragma_update(None, "defer_foreign_keys", true)?;
        insert_tokens(conn, "no-such-grant", &[access("orphan")])
    }));
    let writes: Vec<Pending<'_>> = vec![
        store.create_grant(&first, &first_tokens),
        orphan,
        store.create_grant(&last, &last_tokens),
    ];
    let outcomes = one_batch(writes, release).await;

    for (i, outcome) in outcomes.iter().enumerate() {
        assert!(outcome.is_err(), "write {i} was not committed: {outcome:?}");
    }
    assert!(!stored(&store, "first").await);
    assert!(!stored(&store, "last").await);
    assert!(store
        .find_token(&hash_token("", "orphan"))
        .await
        .expect("the store answers")
        .is_none());
    store
        .create_grant(&grant("later"), &[access("c")])
        .await
        .expect("the next batch commits");
    assert!(stored(&store, "later").await);
}

// A store's own connections hold a SHARED lock on the file as long as
// they are open in WAL mode, so no other connection can lock it
// exclusively while a store is open: these tests take the lock between
// two stores, and give the reading store no writer and reader
// connections that have not touched the file yet, like connections
// opened while another process holds the file.

/// Writes one grant with one token into a new file and closes it.
async fn file_with_one_grant(path: &Path) -> TokenHash {
    let store = SqliteStore::open(path, 4).await.expect("the store answers");
    store
        .create_grant(&grant("g"), &[access("t")])
        .await
        .expect("the store answers");
    hash_token("", "t")
}

fn store_with_readers(path: &Path, idle: Vec<Connection>) -> SqliteStore {
    SqliteStore {
        readers: Arc::new(Readers::new(
            path.to_path_buf(),
            idle,
            4,
            super::readers::SNAPSHOT_LIFE,
        )),
        writer: Writer {
            jobs: None,
            thread: None,
        },
    }
}

/// Locks the file as another process in exclusive locking mode would,
/// in the middle of a write; a thread lets go after `hold`.
fn lock_exclusively(path: &Path, hold: Duration) -> std::thread::JoinHandle<()> {
    let holder = Connection::open(path).expect("open the store file");
    holder
        .pragma_update(None, "locking_mode", "EXCLUSIVE")
        .expect("SQLite runs the statement");
    holder
        .execute_batch(
            "BEGIN IMMEDIATE; \
             INSERT INTO leases (key, holder, until) VALUES ('k', 'other', 0);",
        )
        .expect("SQLite runs the statement");
    std::thread::spawn(move || {
        std::thread::sleep(hold);
        holder
            .execute_batch("COMMIT")
            .expect("SQLite runs the statement");
        drop(holder);
    })
}

/// Looks `hash` up while the file is locked for 200 ms, on a runtime with
/// one thread, counting how often another task ran meanwhile.
async fn lookup_while_locked(store: &SqliteStore, path: &Path, hash: &TokenHash) {
    let unlocker = lock_exclusively(path, Duration::from_millis(200));
    let ticks = Arc::new(AtomicUsize::new(0));
    let ticker = tokio::spawn({
        let ticks = ticks.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                ticks.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let started = Instant::now();
    let found = store.find_token(hash).await;
    let waited = started.elapsed();
    ticker.abort();
    unlocker.join().expect("the unlocking thread ends");

    let found = found.expect("the lookup waits for the lock instead of failing");
    assert_eq!(found.map(|(_, g)| g.id).as_deref(), Some("g"));
    assert!(
        waited >= Duration::from_millis(150),
        "answered once the lock was released, not before: {waited:?}"
    );
    let ticks = ticks.load(Ordering::Relaxed);
    assert!(
        ticks >= 5,
        "the runtime's thread ran other tasks meanwhile: {ticks} ticks"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_lookup_on_a_locked_file_waits_off_the_calling_thread_and_then_answers() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("store.db");
    let hash = file_with_one_grant(&path).await;
    let idle = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("open the store file");
    idle.busy_timeout(Duration::ZERO)
        .expect("SQLite runs the statement");
    let store = store_with_readers(&path, vec![idle]);

    lookup_while_locked(&store, &path, &hash).await;
}

#[tokio::test(flavor = "current_thread")]
async fn with_no_idle_connection_a_lookup_on_a_locked_file_opens_one_off_the_calling_thread() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("store.db");
    let hash = file_with_one_grant(&path).await;
    let store = store_with_readers(&path, Vec::new());

    lookup_while_locked(&store, &path, &hash).await;
    assert_eq!(
        store
            .readers
            .idle
            .lock()
            .expect("the readers' idle list")
            .len(),
        1,
        "the connection opened for the lookup is kept for the next"
    );
}

fn signing_key(generation: i64, signs_from: i64, signs_until: i64) -> SigningKeyRecord {
    SigningKeyRecord {
        tenant: String::new(),
        generation,
        kid: format!("kid-{generation}"),
        algorithm: "ES256".into(),
        public_jwk: "{}".into(),
        private_sealed: vec![generation as u8; 4],
        created_at: 0,
        signs_from,
        signs_until,
    }
}

#[tokio::test]
async fn one_signing_key_per_generation_and_a_new_key_cuts_earlier_ones_short() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir).await;
    assert!(store
        .add_signing_key(&signing_key(1, 0, 1000))
        .await
        .expect("the store answers"));
    // A second key for generation 1 (another instance lost the race).
    assert!(!store
        .add_signing_key(&signing_key(1, 5, 1005))
        .await
        .expect("the store answers"));
    // A forced rotation starting at 500 ends generation 1 there.
    assert!(store
        .add_signing_key(&signing_key(2, 500, 1500))
        .await
        .expect("the store answers"));
    let keys = store.signing_keys("", 0).await.expect("the store answers");
    let spans: Vec<(i64, i64, i64)> = keys
        .iter()
        .map(|k| (k.generation, k.signs_from, k.signs_until))
        .collect();
    assert_eq!(spans, [(1, 0, 500), (2, 500, 1500)]);
    // Retired keys go, the latest generation stays even when retired.
    assert_eq!(
        store
            .purge_signing_keys("", 600)
            .await
            .expect("the store answers"),
        1
    );
    assert_eq!(
        store
            .purge_signing_keys("", 10_000)
            .await
            .expect("the store answers"),
        0
    );
    let left = store
        .signing_keys("", 10_000)
        .await
        .expect("the store answers");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].generation, 2);
}

/// The readers map the file; what the writer adds or changes after a reader
/// mapped it, whether still in the log or checkpointed into a file that has
/// grown well past the mapped size of the start, is what the reader finds.
#[tokio::test]
async fn mapped_readers_find_what_was_written_after_they_mapped_the_file() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = open(&dir).await;
    let mapped = store
        .readers
        .read_inline(&|conn| conn.pragma_query_value(None, "mmap_size", |r| r.get::<_, i64>(0)))
        .expect("an idle reader")
        .expect("SQLite reads mmap_size");
    assert_eq!(mapped, super::READER_MMAP_BYTES);
    let size = || {
        std::fs::metadata(dir.path().join("store.db"))
            .expect("the store file's size")
            .len()
    };
    let size_before = size();

    let checkpoint = Connection::open(dir.path().join("store.db")).expect("open the store file");
    for i in 0..2000 {
        store
            .create_grant(&grant(&format!("g{i}")), &[access(&format!("t{i}"))])
            .await
            .expect("the store answers");
        if i % 500 == 499 {
            // Now in the file itself rather than the log.
            checkpoint
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .expect("SQLite runs the statement");
        }
    }
    assert!(
        size() > 20 * size_before,
        "the file grew: {size_before} → {}",
        size()
    );
    for i in (0..2000).step_by(2) {
        store
            .revoke_grant(&format!("g{i}"))
            .await
            .expect("the store answers");
    }
    for i in 0..2000 {
        let (token, grant) = store
            .find_token(&hash_token("", &format!("t{i}")))
            .await
            .expect("the store answers")
            .unwrap_or_else(|| panic!("token t{i} is found"));
        assert_eq!(grant.id, format!("g{i}"));
        assert_eq!(token.grant_id, format!("g{i}"));
        assert_eq!(grant.revoked, i % 2 == 0, "g{i} revoked as written");
    }
    assert!(store
        .find_token(&hash_token("", "t-none"))
        .await
        .expect("the store answers")
        .is_none());
}

/// A store whose readers keep a read transaction for `life`.
async fn open_keeping(dir: &tempfile::TempDir, life: Duration) -> Arc<SqliteStore> {
    let store = SqliteStore::open_with(&dir.path().join("store.db"), 4, life).await;
    Arc::new(store.expect("the store opens on a fresh file"))
}

fn leases(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT count(*) FROM leases", [], |r| r.get(0))
}

/// A reader keeps its snapshot across reads; a write this store made ends
/// it, even one made while that reader was busy (so that the writer could
/// not end the snapshot itself): the first read after the write sees it.
#[tokio::test]
async fn a_read_after_a_write_sees_it_though_its_reader_kept_an_older_snapshot() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = open_keeping(&dir, Duration::from_secs(60)).await;
    let hash = hash_token("", "t");
    let during = store
        .readers
        .read_inline(&|conn| {
            // The snapshot is taken here, before the write.
            let before = leases(conn)?;
            futures::executor::block_on(store.create_grant(&grant("g"), &[access("t")]))
                .expect("the store answers");
            Ok(before)
        })
        .expect("an idle reader")
        .expect("SQLite reads");
    assert_eq!(during, 0);
    let found = store.find_token(&hash).await.expect("the store answers");
    assert_eq!(found.map(|(_, g)| g.id).as_deref(), Some("g"));

    // The same with a revocation: the next read says revoked.
    assert!(
        !store
            .find_grant("g")
            .await
            .expect("answers")
            .expect("found")
            .revoked
    );
    store.revoke_grant("g").await.expect("the store answers");
    assert!(
        store
            .find_grant("g")
            .await
            .expect("answers")
            .expect("found")
            .revoked
    );
}

/// Writes of another process are not counted by this store's writer: a
/// kept snapshot misses them for its life at most.
#[tokio::test]
async fn a_write_by_another_process_is_seen_once_the_kept_snapshot_is_past_its_life() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let life = Duration::from_millis(200);
    let store = open_keeping(&dir, life).await;
    let read = || {
        store
            .readers
            .read_inline(&leases)
            .expect("an idle reader")
            .expect("SQLite reads")
    };
    let kept_since = Instant::now();
    assert_eq!(read(), 0, "a snapshot is kept from here");
    let other = Connection::open(dir.path().join("store.db")).expect("open the store file");
    other
        .execute(
            "INSERT INTO leases (key, holder, until) VALUES ('k', 'other', 0)",
            [],
        )
        .expect("SQLite runs the statement");
    let written = Instant::now();
    // Within its life the kept snapshot may still answer; after it, never.
    while read() == 0 {
        assert!(
            written.elapsed() < life + Duration::from_secs(10),
            "the other process's write is still unseen after {:?}",
            written.elapsed()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        kept_since.elapsed() >= life,
        "the snapshot served reads for its life"
    );
}

/// Readers that keep snapshots must not keep the write-ahead log from
/// being checkpointed and started over: under writes and reads in turn the
/// log stays at SQLite's checkpoint size, not the sum of what was written.
#[tokio::test]
async fn kept_snapshots_do_not_keep_the_write_ahead_log_from_starting_over() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = open_keeping(&dir, Duration::from_secs(60)).await;
    for i in 0..3000 {
        store
            .create_grant(&grant(&format!("g{i}")), &[access(&format!("t{i}"))])
            .await
            .expect("the store answers");
        assert!(store
            .find_token(&hash_token("", &format!("t{i}")))
            .await
            .expect("the store answers")
            .is_some());
    }
    let wal = std::fs::metadata(dir.path().join("store.db-wal"))
        .expect("the log's size")
        .len();
    // SQLite checkpoints at 1,000 pages of 4 KiB; 3,000 writes of a grant
    // and a token (several pages each) are far more than that.
    assert!(
        wal < 6 * 1024 * 1024,
        "the log started over instead of growing: {wal} bytes"
    );
}

//! The PostgreSQL store's token lookups under concurrent callers, through
//! the `Store` trait, on a real database: more lookups at once than the
//! store has lookup connections, so that they wait for a turn, some of them
//! abandoned midway (a lookup abandoned during its query drops its
//! connection with it), some tokens asked for by several at once, one
//! whose row cannot be read, and an outage of the database.

use std::sync::Arc;
use std::time::Duration;

use refgate::crypto::{hash_token, TokenKind};
use refgate::store::{GrantRecord, NewToken, PostgresStore, Store, StoreError};
use tokio::task::JoinHandle;

use crate::common::{psql_in, PgDatabase};

const NOW: i64 = 1_900_000_000;

/// Tokens `access-0` … stored, each with a grant of its own; the names
/// from `STORED` on are asked for but were never stored.
const STORED: usize = 50;
const ASKED: usize = 60;

fn grant(i: usize) -> GrantRecord {
    GrantRecord {
        id: format!("g{i}"),
        client_id: "client-a".to_string(),
        subject: format!("subject-{i}"),
        scopes: vec!["photos.read".to_string()],
        version: 1,
        created_at: NOW,
        ..GrantRecord::default()
    }
}

/// A store with one lookup connection (`max_connections = 2`: half for
/// lookups), holding the `STORED` tokens.
async fn store_with_tokens(db: &PgDatabase) -> Arc<PostgresStore> {
    let store = Arc::new(
        PostgresStore::open(&db.url, 2)
            .await
            .expect("the store opens on an empty database"),
    );
    for i in 0..STORED {
        let token = NewToken {
            hash: hash_token("", &format!("access-{i}")),
            kind: TokenKind::Access,
            scopes: None,
            issued_at: NOW,
            expires_at: NOW + 3600,
        };
        store
            .create_grant(&grant(i), &[token])
            .await
            .expect("grant stored");
    }
    store
}

/// Looks token `i` up and checks the answer is that token's: its grant
/// and subject, or nothing for a token never stored.
async fn look_up_and_check(store: &PostgresStore, i: usize) {
    let hash = hash_token("", &format!("access-{i}"));
    let found = store.find_token(&hash).await.expect("the lookup succeeds");
    match found {
        Some((token, grant)) => {
            assert!(i < STORED, "token {i} was never stored, yet found");
            assert_eq!(token.hash, hash, "token {i}: another token's record");
            assert_eq!(token.grant_id, format!("g{i}"));
            assert_eq!(grant.id, format!("g{i}"));
            assert_eq!(grant.subject, format!("subject-{i}"));
        }
        None => assert!(i >= STORED, "token {i} is stored, yet not found"),
    }
}

/// `count` lookups at once, each of token `n % ASKED` and checking its
/// answer (see `look_up_and_check`).
fn checked_lookups(store: &Arc<PostgresStore>, count: usize) -> Vec<JoinHandle<()>> {
    (0..count)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move { look_up_and_check(&store, n % ASKED).await })
        })
        .collect()
}

/// Waits for every one of `lookups`, each of which checks its own answer.
async fn all_answered(lookups: Vec<JoinHandle<()>>) {
    for lookup in lookups {
        tokio::time::timeout(Duration::from_secs(30), lookup)
            .await
            .expect("every lookup is answered")
            .expect("and gets its own token's row");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lookups_waiting_for_a_connection_each_get_their_own_token() {
    let db = PgDatabase::create();
    let store = store_with_tokens(&db).await;
    // 600 at once on one lookup connection: nearly all of them wait for
    // it, each token asked for ten times.
    let lookups = checked_lookups(&store, 600);
    all_answered(lookups).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lookups_abandoned_midway_leave_the_others_answered() {
    let db = PgDatabase::create();
    let store = store_with_tokens(&db).await;
    for round in 0..10u64 {
        let lookups = checked_lookups(&store, 200);
        // Every third one abandoned, at moments spread over the time the
        // others take: waiting for a turn, or in the middle of its query.
        let mut kept = Vec::new();
        for (n, lookup) in lookups.into_iter().enumerate() {
            if n % 3 == 0 {
                tokio::time::sleep(Duration::from_micros((n as u64 * 37 + round * 101) % 400))
                    .await;
                lookup.abort();
            } else {
                kept.push(lookup);
            }
        }
        for lookup in kept {
            match tokio::time::timeout(Duration::from_secs(30), lookup).await {
                Ok(answered) => answered.expect("a lookup not abandoned gets its own token"),
                Err(_) => panic!("round {round}: a lookup was never answered"),
            }
        }
    }
    // No turn was lost with an abandoned lookup, and a connection dropped
    // midway was replaced: one more lookup alone is answered at once.
    tokio::time::timeout(Duration::from_secs(5), look_up_and_check(&store, 7))
        .await
        .expect("the connection's turn came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_row_that_cannot_be_read_fails_its_own_lookups_only() {
    let db = PgDatabase::create();
    let store = store_with_tokens(&db).await;
    // Token 3's row says a kind no token has.
    psql_in(&db.url, "UPDATE tokens SET kind = 99 WHERE grant_id = 'g3'");
    // Lookups waiting in line are answered together, several tokens by
    // one query: token 3's error goes to token 3's lookups alone.
    let lookups: Vec<_> = (0..600)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let i = n % ASKED;
                if i == 3 {
                    let hash = hash_token("", "access-3");
                    match store.find_token(&hash).await {
                        Err(StoreError::Corrupt(why)) => assert!(why.contains("kind"), "{why}"),
                        other => panic!("token 3's unreadable row: {other:?}"),
                    }
                } else {
                    look_up_and_check(&store, i).await
                }
            })
        })
        .collect();
    all_answered(lookups).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lookups_in_line_during_an_outage_fail_at_once_and_all_succeed_after() {
    let db = PgDatabase::create();
    let store = store_with_tokens(&db).await;
    // The lookup connection is open and idle when the database goes away.
    look_up_and_check(&store, 1).await;
    db.block();
    // Each lookup, whether it queried or waited in line for another's
    // query, is told the store is unavailable; none waits for long.
    let lookups: Vec<_> = (0..200)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let hash = hash_token("", &format!("access-{}", n % ASKED));
                match store.find_token(&hash).await {
                    Err(StoreError::Unavailable(_)) => {}
                    other => panic!("lookup {n} during the outage: {other:?}"),
                }
            })
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(10), all_answered(lookups))
        .await
        .expect("lookups during an outage fail at once");
    // No turn was lost with the failed queries: once the database is back,
    // every lookup is answered with its own token.
    db.unblock();
    let lookups = checked_lookups(&store, 200);
    all_answered(lookups).await;
}

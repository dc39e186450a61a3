//! Token lookups on PostgreSQL, on connections of their own.
//!
//! A lookup is the one query the gateway makes on every cache miss. Through
//! sqlx's pool it cost two or three round trips, not one: the pool pings a
//! connection before lending it and again as it comes back (in a task
//! spawned on whichever runtime dropped it, a busy proxy thread), and does
//! not lend it again until that ping is answered. Here a lookup takes an
//! idle connection (or makes one), runs its one query on the calling task
//! and puts the connection back. A lookup abandoned midway (its request
//! went away) drops its connection with it, so a connection is never lent
//! in the middle of an exchange. Running the query where it was asked for
//! matters: handing it to another runtime and back cost the proxy thread
//! two wake-ups and, on a busy machine, milliseconds of tail latency.
//!
//! When the server refuses a new connection because it has too many
//! (its own `max_connections`, or a role's connection limit) while this
//! instance has lookup connections open, the lookup waits for one of them
//! to come back, up to [`WAIT_FOR_OWN`], instead of failing: a burst then
//! runs on the connections the server allows.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Row};
use tokio::sync::{Notify, Semaphore};

use super::postgres::{corrupt, grant_from_row, unavailable};
use super::rows::{grant_columns, TokenRow};
use super::{GrantRecord, StoreError, TokenRecord};
use crate::crypto::TokenHash;

/// How long a lookup refused a new connection for the server's connection
/// limit waits for one of the instance's own to come back: the pool's
/// acquire timeout.
const WAIT_FOR_OWN: Duration = Duration::from_secs(3);

/// SQLSTATE `too_many_connections`: the server's `max_connections`, or
/// the role's or the database's connection limit.
const TOO_MANY_CONNECTIONS: &str = "53300";

pub(super) struct Lookups {
    options: PgConnectOptions,
    /// At most this many lookups at a time, hence connections.
    permits: Semaphore,
    idle: Mutex<Vec<Counted>>,
    count: Arc<Count>,
}

/// The lookup connections open now, idle or in use.
#[derive(Default)]
struct Count {
    open: AtomicUsize,
    /// Told when a connection goes back among the idle ones or is closed.
    changed: Notify,
}

/// A lookup connection, counted while it exists (a lookup abandoned midway
/// drops its connection without coming back).
struct Counted {
    connection: PgConnection,
    count: Arc<Count>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.count.open.fetch_sub(1, Ordering::Relaxed);
        self.count.changed.notify_one();
    }
}

impl Lookups {
    /// At most `count` connections (made when first needed) to the server
    /// of `options`.
    pub fn new(options: PgConnectOptions, count: usize) -> Self {
        Lookups {
            options,
            permits: Semaphore::new(count.max(1)),
            idle: Mutex::new(Vec::new()),
            count: Arc::default(),
        }
    }

    /// A token with its grant.
    pub async fn find_token(
        &self,
        hash: TokenHash,
    ) -> Result<Option<(TokenRecord, GrantRecord)>, StoreError> {
        let _turn = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("token lookups are closed".into()))?;
        if let Some(mut idle) = self.take_idle() {
            match find_token(&mut idle.connection, &hash).await {
                // The connection may have died while it sat idle (the
                // server restarted, say): one more try on a new one; a
                // lookup is a read, so trying again is safe.
                Err(StoreError::Unavailable(_)) => {}
                answer => return self.kept(idle, answer),
            }
        }
        let mut open = self.connect().await?;
        let answer = find_token(&mut open.connection, &hash).await;
        self.kept(open, answer)
    }

    fn take_idle(&self) -> Option<Counted> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    /// A new connection or, when the server has too many and some of ours
    /// are busy, the first of ours to come back.
    async fn connect(&self) -> Result<Counted, StoreError> {
        let refused = match self.open_new().await {
            Ok(counted) => return Ok(counted),
            Err(e) => e,
        };
        let too_many = refused
            .as_database_error()
            .and_then(|e| e.code())
            .is_some_and(|code| code == TOO_MANY_CONNECTIONS);
        if !too_many || self.count.open.load(Ordering::Relaxed) == 0 {
            return Err(cannot_connect(refused));
        }
        let waited = tokio::time::timeout(WAIT_FOR_OWN, async {
            loop {
                // Registered before looking, so that a connection put back
                // in between is not missed.
                let changed = self.count.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if let Some(idle) = self.take_idle() {
                    return Some(idle);
                }
                if self.count.open.load(Ordering::Relaxed) == 0 {
                    // Ours all went (broken, or their lookups abandoned):
                    // none will come back to wait for.
                    return None;
                }
                changed.await;
            }
        })
        .await;
        match waited {
            Ok(Some(idle)) => Ok(idle),
            // Ours were closed, which made room at the server: one more try.
            Ok(None) => self.open_new().await.map_err(cannot_connect),
            Err(_) => Err(cannot_connect(refused)),
        }
    }

    async fn open_new(&self) -> Result<Counted, sqlx::Error> {
        let connection = self.options.connect().await?;
        self.count.open.fetch_add(1, Ordering::Relaxed);
        Ok(Counted {
            connection,
            count: self.count.clone(),
        })
    }

    /// `answer`, with `connection` back among the idle ones unless it
    /// failed (it may be broken).
    fn kept<T>(&self, connection: Counted, answer: Result<T, StoreError>) -> Result<T, StoreError> {
        if !matches!(answer, Err(StoreError::Unavailable(_))) {
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(connection);
            self.count.changed.notify_one();
        }
        answer
    }
}

fn cannot_connect(e: sqlx::Error) -> StoreError {
    unavailable(format!("cannot connect: {e}"))
}

/// Reads a token with its grant on `executor`.
pub(super) async fn find_token<'e, E>(
    executor: E,
    hash: &TokenHash,
) -> Result<Option<(TokenRecord, GrantRecord)>, StoreError>
where
    E: sqlx::PgExecutor<'e>,
{
    let sql = concat!(
        "SELECT t.grant_id, t.kind, t.scopes, t.issued_at, t.expires_at, t.revoked, \
         t.consumed_at, ",
        grant_columns!(),
        " FROM tokens t JOIN grants g ON g.id = t.grant_id WHERE t.hash = $1"
    );
    let row = sqlx::query(sql)
        .bind(&hash.0[..])
        .fetch_optional(executor)
        .await
        .map_err(unavailable)?;
    let Some(row) = row else { return Ok(None) };
    let token = TokenRow {
        hash: *hash,
        grant_id: row.try_get(0).map_err(corrupt)?,
        kind: i64::from(row.try_get::<i16, _>(1).map_err(corrupt)?),
        scopes: row.try_get(2).map_err(corrupt)?,
        issued_at: row.try_get(3).map_err(corrupt)?,
        expires_at: row.try_get(4).map_err(corrupt)?,
        revoked: row.try_get(5).map_err(corrupt)?,
        consumed_at: row.try_get(6).map_err(corrupt)?,
    }
    .into_record()
    .map_err(corrupt)?;
    Ok(Some((token, grant_from_row(&row, 7)?)))
}

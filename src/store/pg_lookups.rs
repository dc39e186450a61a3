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

use std::sync::Mutex;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Row};
use tokio::sync::Semaphore;

use super::postgres::{corrupt, grant_from_row, unavailable};
use super::rows::{grant_columns, TokenRow};
use super::{GrantRecord, StoreError, TokenRecord};
use crate::crypto::TokenHash;

pub(super) struct Lookups {
    options: PgConnectOptions,
    /// At most this many lookups at a time, hence connections.
    permits: Semaphore,
    idle: Mutex<Vec<PgConnection>>,
}

impl Lookups {
    /// At most `count` connections (made when first needed) to the server
    /// of `options`.
    pub fn new(options: PgConnectOptions, count: usize) -> Self {
        Lookups {
            options,
            permits: Semaphore::new(count.max(1)),
            idle: Mutex::new(Vec::new()),
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
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if let Some(mut open) = idle {
            match find_token(&mut open, &hash).await {
                // The connection may have died while it sat idle (the
                // server restarted, say): one more try on a new one; a
                // lookup is a read, so trying again is safe.
                Err(StoreError::Unavailable(_)) => {}
                answer => return self.kept(open, answer),
            }
        }
        let mut open = self
            .options
            .connect()
            .await
            .map_err(|e| unavailable(format!("cannot connect: {e}")))?;
        let answer = find_token(&mut open, &hash).await;
        self.kept(open, answer)
    }

    /// `answer`, with `connection` back among the idle ones unless it
    /// failed (it may be broken).
    fn kept<T>(
        &self,
        connection: PgConnection,
        answer: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if !matches!(answer, Err(StoreError::Unavailable(_))) {
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(connection);
        }
        answer
    }
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

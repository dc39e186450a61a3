//! Token lookups on PostgreSQL, on connections of their own.
//!
//! A lookup is the one query the gateway makes on every cache miss. Through
//! sqlx's pool it cost two round trips, not one: the pool pings every
//! connection as it comes back (in a task spawned on whichever runtime
//! dropped it, a busy proxy thread), and the connection is not lent again
//! until that ping is answered. Here each connection is held by one lookup
//! at a time and goes straight back. Every lookup runs to its end on the
//! runtime that opened the store, even when the request that wanted it is
//! gone, so a connection is never left in the middle of an exchange, and
//! the connections' sockets are all driven by that one runtime.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Row};
use tokio::sync::Mutex;

use super::rows::{grant_columns, TokenRow};
use super::{GrantRecord, StoreError, TokenRecord};
use crate::crypto::TokenHash;

pub(super) struct Lookups {
    options: PgConnectOptions,
    /// `None` until first used, and again after a failure (reconnected on
    /// the next use).
    slots: Vec<Mutex<Option<PgConnection>>>,
    next: AtomicUsize,
    home: tokio::runtime::Handle,
}

impl Lookups {
    /// `count` connections (made when first needed) to the server of
    /// `options`; lookups run on `home`.
    pub fn new(options: PgConnectOptions, count: usize, home: tokio::runtime::Handle) -> Self {
        Lookups {
            options,
            slots: (0..count.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            home,
        }
    }

    /// A token with its grant.
    pub async fn find_token(
        self: &Arc<Self>,
        hash: TokenHash,
    ) -> Result<Option<(TokenRecord, GrantRecord)>, StoreError> {
        let this = self.clone();
        self.home
            .spawn(async move { this.find_token_here(hash).await })
            .await
            .map_err(|e| StoreError::Unavailable(format!("a token lookup did not finish: {e}")))?
    }

    async fn find_token_here(
        &self,
        hash: TokenHash,
    ) -> Result<Option<(TokenRecord, GrantRecord)>, StoreError> {
        // A free connection if there is one, else a turn at the next one.
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.slots.len();
        let free = (0..n).find_map(|i| self.slots[(start + i) % n].try_lock().ok());
        let mut slot = match free {
            Some(slot) => slot,
            None => self.slots[start % n].lock().await,
        };
        if let Some(connection) = slot.as_mut() {
            match find_token(connection, &hash).await {
                Err(StoreError::Unavailable(_)) => {
                    // The connection may have died while it sat idle (the
                    // server restarted, say): one more try on a new one; a
                    // lookup is a read, so trying again is safe.
                    *slot = None;
                }
                answer => return answer,
            }
        }
        let connection = slot.insert(
            self.options
                .connect()
                .await
                .map_err(|e| StoreError::Unavailable(format!("cannot connect: {e}")))?,
        );
        let found = find_token(connection, &hash).await;
        if matches!(found, Err(StoreError::Unavailable(_))) {
            *slot = None;
        }
        found
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
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let Some(row) = row else { return Ok(None) };
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(e.to_string());
    let token = TokenRow {
        hash: *hash,
        grant_id: row.try_get(0).map_err(|e| corrupt(&e))?,
        kind: i64::from(row.try_get::<i16, _>(1).map_err(|e| corrupt(&e))?),
        scopes: row.try_get(2).map_err(|e| corrupt(&e))?,
        issued_at: row.try_get(3).map_err(|e| corrupt(&e))?,
        expires_at: row.try_get(4).map_err(|e| corrupt(&e))?,
        revoked: row.try_get(5).map_err(|e| corrupt(&e))?,
        consumed_at: row.try_get(6).map_err(|e| corrupt(&e))?,
    }
    .into_record()
    .map_err(|e| corrupt(&e))?;
    Ok(Some((token, super::postgres::grant_from_row(&row, 7)?)))
}

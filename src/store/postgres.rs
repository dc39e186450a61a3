//! The shared store: PostgreSQL, for several refgate instances behind a
//! load balancer. Same guarantees as SQLite — token hashes and sealed custom
//! data only, atomic rotation (`SELECT … FOR UPDATE`), compare-and-set on
//! the grant version — plus cross-instance cache invalidation: every write
//! that changes what a token means sends `NOTIFY refgate_invalidate` in the
//! same transaction, and every instance listens.
//!
//! One file of about 600 lines on purpose: each [`Store`] method is one
//! transaction whose SQL reads best beside the others; the row mapping
//! and the rules it applies are shared with SQLite (`rows`, `crate::core`).

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};

use super::pg_lookups::Lookups;
use sqlx::{Postgres, Row, Transaction};
use tokio::sync::broadcast;

use super::rows::{grant_columns, own_first, presented, rotation_columns, GrantRow, GrantText};
use super::*;
use crate::core::device::PollWrite;
use crate::core::rotation::{self, Decision};
use crate::core::version;
use crate::crypto::{KeyId, TokenHash};

/// Migrations in order; `refgate_migrations` records how many ran.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/postgres/0001_grants_and_tokens.sql"),
    include_str!("migrations/postgres/0002_grant_lineage.sql"),
    include_str!("migrations/postgres/0003_signing_keys.sql"),
    include_str!("migrations/postgres/0004_grants_by_subject.sql"),
    include_str!("migrations/postgres/0005_kept_subject_token.sql"),
    include_str!("migrations/postgres/0006_device_codes.sql"),
    include_str!("migrations/postgres/0007_tenants.sql"),
];
/// The notification channel.
const CHANNEL: &str = "refgate_invalidate";
/// A pooled connection idle this long is checked before it is used.
const PING_IDLE_AFTER: Duration = Duration::from_secs(10);
/// Arbitrary key of the advisory lock that serialises migrations.
const MIGRATION_LOCK: i64 = 0x7265_6667_6174_6531;

/// PostgreSQL implementation of [`Store`].
pub struct PostgresStore {
    pool: PgPool,
    invalidations: broadcast::Sender<Invalidation>,
    /// Token lookups, on connections of their own (see [`Lookups`]).
    lookups: Lookups,
}

pub(super) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl PostgresStore {
    /// Connects, runs migrations and starts listening for invalidations.
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        // Half the connections for token lookups (see `Lookups`), the rest
        // for the pool: `max_connections` stays the instance's total.
        let lookups = (max_connections / 2).max(1);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.saturating_sub(lookups).max(2))
            .acquire_timeout(Duration::from_secs(3))
            // sqlx pings every idle connection before handing it out: a
            // second round trip for every query. Only a connection idle for
            // a while is checked; a busy one was just seen working, and one
            // that died since fails its query, is dropped, and the caller
            // answers as for any store failure.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IDLE_AFTER {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect(url)
            .await
            .map_err(|e| unavailable(format!("cannot connect to PostgreSQL: {e}")))?;
        migrate(&pool).await?;
        let (invalidations, _) = broadcast::channel(4096);
        tokio::spawn(listen(pool.clone(), invalidations.clone()));
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e| unavailable(format!("not a PostgreSQL URL: {e}")))?;
        let lookups = Lookups::new(options, turns(lookups as usize));
        Ok(PostgresStore {
            pool,
            invalidations,
            lookups,
        })
    }
}

/// How many token lookups may query at once, given `connections` for
/// them: two for each thread the gateway proxies on
/// ([`crate::app::proxy_threads`]), at most one a connection.
///
/// Every query in flight costs the proxy thread that sent it a write, a
/// read and a wake-up, however many tokens it reads. Lookups that find
/// every turn taken wait in line and are answered several to a query, so
/// fewer turns mean fewer of those costs for each miss, while each turn
/// still reads up to 32 tokens at a time. Measured with the gateway on one
/// CPU, every request a miss (`docs/benchmarks.md`): two turns took less
/// CPU per miss than one or eight (one a connection by default).
fn turns(connections: usize) -> usize {
    connections.min(2 * crate::app::proxy_threads()).max(1)
}

async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await.map_err(unavailable)?;
    // Instances starting together take turns.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
    sqlx::query("CREATE TABLE IF NOT EXISTS refgate_migrations (version INTEGER NOT NULL)")
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
    let done: Option<i32> = sqlx::query_scalar("SELECT max(version) FROM refgate_migrations")
        .fetch_one(&mut *tx)
        .await
        .map_err(unavailable)?;
    let done = done.unwrap_or(0).max(0) as usize;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        sqlx::raw_sql(sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| unavailable(format!("migration {} failed: {e}", i + 1)))?;
        sqlx::query("INSERT INTO refgate_migrations (version) VALUES ($1)")
            .bind((i + 1) as i32)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
    }
    tx.commit().await.map_err(unavailable)
}

/// Forwards notifications to subscribers. A lost connection may have lost
/// notifications, so subscribers are told to forget everything.
async fn listen(pool: PgPool, out: broadcast::Sender<Invalidation>) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "invalidation listener cannot connect; retrying");
                let _ = out.send(Invalidation::All);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %e, "cannot LISTEN for invalidations; retrying");
            let _ = out.send(Invalidation::All);
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    if let Some(i) = Invalidation::parse(n.payload()) {
                        let _ = out.send(i);
                    }
                }
                Ok(None) => {
                    tracing::warn!("invalidation listener lost its connection; flushing caches");
                    let _ = out.send(Invalidation::All);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "invalidation listener failed; flushing caches");
                    let _ = out.send(Invalidation::All);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
    }
}

async fn notify(tx: &mut Transaction<'_, Postgres>, what: Invalidation) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(what.to_payload())
        .execute(&mut **tx)
        .await
        .map(|_| ())
}

pub(super) fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// Reads a grant from columns starting at `at` (those of `grant_columns!`,
/// in that order). Each column is decoded as the type refgate's schema
/// gives it, without sqlx's check of the declared type first: the query
/// and the schema (its migrations) are refgate's own. A column of another
/// type mostly fails to decode all the same (a wrong length, say) and is
/// then reported as corrupt.
pub(super) fn grant_from_row(row: &PgRow, at: usize) -> Result<GrantRecord, StoreError> {
    GrantRow {
        id: row.try_get_unchecked(at).map_err(corrupt)?,
        client_id: row.try_get_unchecked(at + 1).map_err(corrupt)?,
        subject: row.try_get_unchecked(at + 2).map_err(corrupt)?,
        scopes: row.try_get_unchecked(at + 3).map_err(corrupt)?,
        audience: row.try_get_unchecked(at + 4).map_err(corrupt)?,
        actor: row.try_get_unchecked(at + 5).map_err(corrupt)?,
        issuer: row.try_get_unchecked(at + 6).map_err(corrupt)?,
        claims: row.try_get_unchecked(at + 7).map_err(corrupt)?,
        custom: row.try_get_unchecked(at + 8).map_err(corrupt)?,
        version: row.try_get_unchecked(at + 9).map_err(corrupt)?,
        created_at: row.try_get_unchecked(at + 10).map_err(corrupt)?,
        revoked: row.try_get_unchecked(at + 11).map_err(corrupt)?,
        parent_id: row.try_get_unchecked(at + 12).map_err(corrupt)?,
        not_after: row.try_get_unchecked(at + 13).map_err(corrupt)?,
        idp: row.try_get_unchecked(at + 14).map_err(corrupt)?,
        route: row.try_get_unchecked(at + 15).map_err(corrupt)?,
        tenant: row.try_get_unchecked(at + 16).map_err(corrupt)?,
    }
    .into_record()
    .map_err(corrupt)
}

/// Revokes a grant and every grant derived from it, transitively, and
/// tells every instance; returns their ids, the grant's own first.
async fn revoke_tree(
    tx: &mut Transaction<'_, Postgres>,
    id: &str,
) -> Result<Vec<String>, StoreError> {
    let mut ids: Vec<String> = sqlx::query_scalar(
        "WITH RECURSIVE tree(id) AS (SELECT id FROM grants WHERE id = $1 \
         UNION SELECT g.id FROM grants g JOIN tree ON g.parent_id = tree.id) \
         UPDATE grants SET revoked = TRUE WHERE id IN (SELECT id FROM tree) RETURNING id",
    )
    .bind(id)
    .fetch_all(&mut **tx)
    .await
    .map_err(unavailable)?;
    own_first(&mut ids, id);
    for grant in &ids {
        notify(tx, Invalidation::Grant(grant.clone()))
            .await
            .map_err(unavailable)?;
    }
    Ok(ids)
}

async fn insert_tokens(
    tx: &mut Transaction<'_, Postgres>,
    grant_id: &str,
    tokens: &[NewToken],
) -> sqlx::Result<()> {
    for t in tokens {
        sqlx::query(
            "INSERT INTO tokens (hash, grant_id, kind, scopes, issued_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&t.hash.0[..])
        .bind(grant_id)
        .bind(t.kind.code() as i16)
        .bind(t.scopes.as_deref().map(join_scopes))
        .bind(t.issued_at)
        .bind(t.expires_at)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn create_grant(
        &self,
        grant: &GrantRecord,
        tokens: &[NewToken],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let text = GrantText::of(grant);
        sqlx::query(
            "INSERT INTO grants (id, client_id, subject, scopes, audience, actor, issuer, \
             claims, custom, version, created_at, revoked, parent_id, not_after, idp, route, \
             kept_subject_token, tenant) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, FALSE, $12, $13, $14, $15, $16, \
             $17)",
        )
        .bind(&grant.id)
        .bind(&grant.client_id)
        .bind(&grant.subject)
        .bind(text.scopes)
        .bind(text.audience)
        .bind(text.actor)
        .bind(&grant.issuer)
        .bind(text.claims)
        .bind(&grant.custom_sealed)
        .bind(grant.version)
        .bind(grant.created_at)
        .bind(&grant.parent_id)
        .bind(grant.not_after)
        .bind(&grant.idp)
        .bind(&grant.route)
        .bind(&grant.kept_subject_token)
        .bind(&grant.tenant)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        insert_tokens(&mut tx, &grant.id, tokens)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }

    async fn find_token(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<(TokenRecord, GrantRecord)>, StoreError> {
        self.lookups.find_token(*hash).await
    }

    async fn find_grant(&self, id: &str) -> Result<Option<GrantRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            grant_columns!(),
            " FROM grants g WHERE g.id = $1"
        );
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.map(|r| grant_from_row(&r, 0)).transpose()
    }

    async fn kept_subject_token(&self, grant_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row: Option<(Option<Vec<u8>>,)> =
            sqlx::query_as("SELECT kept_subject_token FROM grants WHERE id = $1 AND NOT revoked")
                .bind(grant_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
        Ok(row.and_then(|(sealed,)| sealed))
    }

    async fn kept_sealed_otherwise(
        &self,
        header: &[u8],
        after: &str,
        limit: u32,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, kept_subject_token FROM grants \
             WHERE NOT revoked AND kept_subject_token IS NOT NULL \
             AND substring(kept_subject_token from 1 for $2) <> $1 AND id > $3 \
             ORDER BY id LIMIT $4",
        )
        .bind(header)
        .bind(header.len() as i32)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get(0).map_err(corrupt)?,
                    row.try_get(1).map_err(corrupt)?,
                ))
            })
            .collect()
    }

    async fn reseal_kept(
        &self,
        grant_id: &str,
        current: &[u8],
        resealed: &[u8],
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE grants SET kept_subject_token = $3 \
             WHERE id = $1 AND kept_subject_token = $2 AND NOT revoked",
        )
        .bind(grant_id)
        .bind(current)
        .bind(resealed)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }

    async fn rotate_refresh(
        &self,
        old: &TokenHash,
        now: UnixTime,
        grace: i64,
        new_tokens: &[NewToken],
    ) -> Result<Rotation, StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        // The row lock makes concurrent rotations of one token take turns.
        let row = sqlx::query(concat!(
            "SELECT ",
            rotation_columns!(),
            " FROM tokens t JOIN grants g ON g.id = t.grant_id WHERE t.hash = $1 \
             FOR UPDATE OF t"
        ))
        .bind(&old.0[..])
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        let Some(row) = row else {
            return Ok(Rotation::Inactive);
        };
        let grant_id: String = row.try_get(0).map_err(corrupt)?;
        let token = presented(
            i64::from(row.try_get::<i16, _>(1).map_err(corrupt)?),
            row.try_get(2).map_err(corrupt)?,
            row.try_get(3).map_err(corrupt)?,
            row.try_get(4).map_err(corrupt)?,
            row.try_get(5).map_err(corrupt)?,
        );
        match rotation::decide(&token, now, grace) {
            Decision::Inactive => return Ok(Rotation::Inactive),
            Decision::Reissue => {}
            Decision::Replay => {
                let revoked = revoke_tree(&mut tx, &grant_id).await?;
                tx.commit().await.map_err(unavailable)?;
                return Ok(Rotation::Replayed(revoked));
            }
            Decision::Consume => {
                sqlx::query("UPDATE tokens SET consumed_at = $2 WHERE hash = $1")
                    .bind(&old.0[..])
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                notify(&mut tx, Invalidation::Token(*old))
                    .await
                    .map_err(unavailable)?;
            }
        }
        insert_tokens(&mut tx, &grant_id, new_tokens)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Rotation::Rotated)
    }

    async fn revoke_token(&self, hash: &TokenHash) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let done = sqlx::query("UPDATE tokens SET revoked = TRUE WHERE hash = $1")
            .bind(&hash.0[..])
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?
            .rows_affected()
            > 0;
        notify(&mut tx, Invalidation::Token(*hash))
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(done)
    }

    async fn live_grants_of(&self, owner: &GrantsOf) -> Result<Vec<String>, StoreError> {
        let (column, value) = owner.filter();
        let sql = format!(
            "SELECT id FROM grants WHERE tenant = $2 AND {column} = $1 AND NOT revoked \
             ORDER BY created_at, id"
        );
        sqlx::query_scalar(&sql)
            .bind(value)
            .bind(&owner.tenant)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)
    }

    async fn list_grants(
        &self,
        owner: &GrantsOf,
        before: Option<&(UnixTime, String)>,
        limit: u32,
    ) -> Result<Vec<GrantRecord>, StoreError> {
        let (column, value) = owner.filter();
        let sql = format!(
            "SELECT {} FROM grants g WHERE g.tenant = $5 AND g.{column} = $1 \
             AND (g.created_at < $2 OR (g.created_at = $2 AND g.id < $3)) \
             ORDER BY g.created_at DESC, g.id DESC LIMIT $4",
            grant_columns!()
        );
        let (at, id) = before.cloned().unwrap_or((UnixTime::MAX, String::new()));
        let rows = sqlx::query(&sql)
            .bind(value)
            .bind(at)
            .bind(id)
            .bind(i64::from(limit))
            .bind(&owner.tenant)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(|r| grant_from_row(r, 0)).collect()
    }

    async fn revoke_grant(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let revoked = revoke_tree(&mut tx, id).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(revoked)
    }

    async fn grant_expiry(&self, id: &str, now: UnixTime) -> Result<Option<UnixTime>, StoreError> {
        let row = sqlx::query(
            "SELECT CASE WHEN g.not_after IS NULL THEN max(t.expires_at) \
             ELSE LEAST(max(t.expires_at), g.not_after) END \
             FROM grants g JOIN tokens t ON t.grant_id = g.id \
             WHERE g.id = $1 AND NOT g.revoked AND NOT t.revoked AND t.expires_at > $2 \
             AND t.consumed_at IS NULL GROUP BY g.id, g.not_after",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        match row {
            Some(row) => row.try_get::<Option<i64>, _>(0).map_err(corrupt),
            None => Ok(None),
        }
    }

    async fn update_grant(
        &self,
        id: &str,
        expected_version: i64,
        change: &GrantChange,
    ) -> Result<GrantUpdate, StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let current = sqlx::query("SELECT version, revoked FROM grants WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
        let current = match current {
            None => None,
            Some(row) => Some((
                row.try_get::<i64, _>(0).map_err(corrupt)?,
                row.try_get::<bool, _>(1).map_err(corrupt)?,
            )),
        };
        let version = match version::next(current, expected_version) {
            Ok(next) => next,
            Err(refused) => return Ok(refused),
        };
        if let Some(scopes) = &change.scopes {
            sqlx::query("UPDATE grants SET scopes = $2 WHERE id = $1")
                .bind(id)
                .bind(join_scopes(scopes))
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        if let Some(custom) = &change.custom_sealed {
            sqlx::query("UPDATE grants SET custom = $2 WHERE id = $1")
                .bind(id)
                .bind(custom)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        if change.revoke_refresh_tokens {
            sqlx::query("UPDATE tokens SET revoked = TRUE WHERE grant_id = $1 AND kind = $2")
                .bind(id)
                .bind(TokenKind::Refresh.code() as i16)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        if let Some(hash) = &change.reset_token_scopes {
            sqlx::query("UPDATE tokens SET scopes = NULL WHERE hash = $1 AND grant_id = $2")
                .bind(&hash.0[..])
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            notify(&mut tx, Invalidation::Token(*hash))
                .await
                .map_err(unavailable)?;
        }
        sqlx::query("UPDATE grants SET version = $2 WHERE id = $1")
            .bind(id)
            .bind(version)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        notify(&mut tx, Invalidation::Grant(id.to_string()))
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(GrantUpdate::Updated(version))
    }

    async fn sealed_otherwise(
        &self,
        header: &[u8],
        after: &str,
        limit: u32,
    ) -> Result<Vec<SealedCustom>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, version, custom FROM grants \
             WHERE NOT revoked AND custom IS NOT NULL \
             AND substring(custom from 1 for $2) <> $1 AND id > $3 ORDER BY id LIMIT $4",
        )
        .bind(header)
        .bind(header.len() as i32)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|row| {
                Ok(SealedCustom {
                    grant_id: row.try_get(0).map_err(corrupt)?,
                    version: row.try_get(1).map_err(corrupt)?,
                    sealed: row.try_get(2).map_err(corrupt)?,
                })
            })
            .collect()
    }

    async fn reseal_custom(
        &self,
        current: &SealedCustom,
        resealed: &[u8],
    ) -> Result<bool, StoreError> {
        // Same plaintext as before: cached views stay right, nothing to
        // notify.
        let done = sqlx::query(
            "UPDATE grants SET custom = $4 \
             WHERE id = $1 AND version = $2 AND custom = $3 AND NOT revoked",
        )
        .bind(&current.grant_id)
        .bind(current.version)
        .bind(&current.sealed)
        .bind(resealed)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }

    async fn count_sealed_by_key(&self) -> Result<Vec<(Option<KeyId>, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT CASE WHEN substring(custom from 1 for 1) = $1 \
             THEN substring(custom from 2 for $2) END AS k, count(*) \
             FROM grants WHERE NOT revoked AND custom IS NOT NULL GROUP BY k",
        )
        .bind(&[crate::crypto::SEAL_FORMAT_NAMED][..])
        .bind(crate::crypto::KEY_ID_LEN as i32)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|row| {
                let key: Option<Vec<u8>> = row.try_get(0).map_err(corrupt)?;
                let count: i64 = row.try_get(1).map_err(corrupt)?;
                Ok((key_id_column(key), count.max(0) as u64))
            })
            .collect()
    }

    async fn try_lease(
        &self,
        key: &str,
        holder: &str,
        now: UnixTime,
        until: UnixTime,
    ) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "INSERT INTO leases (key, holder, until) VALUES ($1, $2, $4) \
             ON CONFLICT (key) DO UPDATE SET holder = excluded.holder, until = excluded.until \
             WHERE leases.until <= $3 OR leases.holder = excluded.holder \
             RETURNING key",
        )
        .bind(key)
        .bind(holder)
        .bind(now)
        .bind(until)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(row.is_some())
    }

    async fn release_lease(&self, key: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM leases WHERE key = $1 AND holder = $2")
            .bind(key)
            .bind(holder)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn purge_expired(&self, before: UnixTime) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let gone = sqlx::query("DELETE FROM tokens WHERE expires_at < $1")
            .bind(before)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?
            .rows_affected();
        sqlx::query("DELETE FROM leases WHERE until < $1")
            .bind(before)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        sqlx::query("DELETE FROM device_codes WHERE expires_at < $1")
            .bind(before)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        sqlx::query(
            "DELETE FROM grants g WHERE NOT EXISTS (SELECT 1 FROM tokens t WHERE t.grant_id = g.id)",
        )
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(gone)
    }

    async fn signing_keys(
        &self,
        tenant: &str,
        signs_after: UnixTime,
    ) -> Result<Vec<SigningKeyRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT generation, kid, algorithm, public_jwk, private_sealed, created_at, \
             signs_from, signs_until FROM signing_keys \
             WHERE tenant = $2 AND (signs_until > $1 OR generation = \
             (SELECT max(generation) FROM signing_keys WHERE tenant = $2)) \
             ORDER BY generation",
        )
        .bind(signs_after)
        .bind(tenant)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|row| {
                Ok(SigningKeyRecord {
                    tenant: tenant.to_string(),
                    generation: row.try_get(0).map_err(corrupt)?,
                    kid: row.try_get(1).map_err(corrupt)?,
                    algorithm: row.try_get(2).map_err(corrupt)?,
                    public_jwk: row.try_get(3).map_err(corrupt)?,
                    private_sealed: row.try_get(4).map_err(corrupt)?,
                    created_at: row.try_get(5).map_err(corrupt)?,
                    signs_from: row.try_get(6).map_err(corrupt)?,
                    signs_until: row.try_get(7).map_err(corrupt)?,
                })
            })
            .collect()
    }

    async fn add_signing_key(&self, key: &SigningKeyRecord) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let added = sqlx::query(
            "INSERT INTO signing_keys (generation, kid, algorithm, public_jwk, private_sealed, \
             created_at, signs_from, signs_until, tenant) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
        )
        .bind(key.generation)
        .bind(&key.kid)
        .bind(&key.algorithm)
        .bind(&key.public_jwk)
        .bind(&key.private_sealed)
        .bind(key.created_at)
        .bind(key.signs_from)
        .bind(key.signs_until)
        .bind(&key.tenant)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?
        .rows_affected()
            == 1;
        if !added {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE signing_keys SET signs_until = $1 \
             WHERE tenant = $3 AND generation < $2 AND signs_until > $1",
        )
        .bind(key.signs_from)
        .bind(key.generation)
        .bind(&key.tenant)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(true)
    }

    async fn purge_signing_keys(&self, tenant: &str, before: UnixTime) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "DELETE FROM signing_keys WHERE tenant = $2 AND signs_until < $1 \
             AND generation < (SELECT max(generation) FROM signing_keys WHERE tenant = $2)",
        )
        .bind(before)
        .bind(tenant)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?
        .rows_affected())
    }

    async fn reseal_signing_key(
        &self,
        tenant: &str,
        generation: i64,
        current: &[u8],
        resealed: &[u8],
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE signing_keys SET private_sealed = $3 \
             WHERE tenant = $4 AND generation = $1 AND private_sealed = $2",
        )
        .bind(generation)
        .bind(current)
        .bind(resealed)
        .bind(tenant)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?
        .rows_affected();
        Ok(done == 1)
    }

    async fn create_device_code(&self, record: &DeviceCodeRecord) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO device_codes (device_hash, user_hash, client_id, scopes, status, \
             expires_at, interval_secs, tenant) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&record.device_hash.0[..])
        .bind(&record.user_hash.0[..])
        .bind(&record.client_id)
        .bind(join_scopes(&record.scopes))
        .bind(record.status.code() as i16)
        .bind(record.expires_at)
        .bind(record.interval)
        .bind(&record.tenant)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?
        .rows_affected();
        Ok(done == 1)
    }

    async fn decide_device_code(
        &self,
        tenant: &str,
        user_hash: &TokenHash,
        now: UnixTime,
        decision: &DeviceStatus,
    ) -> Result<bool, StoreError> {
        let (subject, idp) = match decision {
            DeviceStatus::Approved { subject, idp } => (Some(subject), Some(idp)),
            _ => (None, None),
        };
        let done = sqlx::query(
            "UPDATE device_codes SET status = $3, subject = $4, idp = $5 \
             WHERE user_hash = $1 AND tenant = $6 AND status = 0 AND NOT consumed \
             AND expires_at > $2",
        )
        .bind(&user_hash.0[..])
        .bind(now)
        .bind(decision.code() as i16)
        .bind(subject)
        .bind(idp)
        .bind(tenant)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?
        .rows_affected();
        Ok(done == 1)
    }

    async fn poll_device_code(
        &self,
        tenant: &str,
        device_hash: &TokenHash,
        client_id: &str,
        now_ms: i64,
    ) -> Result<DevicePoll, StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let row = sqlx::query(
            "SELECT client_id, scopes, status, subject, idp, expires_at, interval_secs, \
             last_poll_ms, consumed, user_hash FROM device_codes \
             WHERE device_hash = $1 AND tenant = $2 FOR UPDATE",
        )
        .bind(&device_hash.0[..])
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        let Some(row) = row else {
            return Ok(DevicePoll::Unknown);
        };
        let status: i16 = row.try_get(2).map_err(corrupt)?;
        let record = DeviceCodeRecord {
            tenant: tenant.to_string(),
            device_hash: *device_hash,
            user_hash: {
                let bytes: Vec<u8> = row.try_get(9).map_err(corrupt)?;
                TokenHash(
                    bytes
                        .try_into()
                        .map_err(|_| corrupt("bad user code hash"))?,
                )
            },
            client_id: row.try_get(0).map_err(corrupt)?,
            scopes: split_scopes(&row.try_get::<String, _>(1).map_err(corrupt)?),
            status: DeviceStatus::from_columns(
                i64::from(status),
                row.try_get(3).map_err(corrupt)?,
                row.try_get(4).map_err(corrupt)?,
            )?,
            expires_at: row.try_get(5).map_err(corrupt)?,
            interval: row.try_get(6).map_err(corrupt)?,
            last_poll_ms: row.try_get(7).map_err(corrupt)?,
            consumed: row.try_get(8).map_err(corrupt)?,
        };
        let (answer, write) = crate::core::device::decide_poll(&record, client_id, now_ms);
        match write {
            PollWrite::Nothing => return Ok(answer),
            PollWrite::Polled {
                last_poll_ms,
                interval,
            } => {
                sqlx::query(
                    "UPDATE device_codes SET last_poll_ms = $2, interval_secs = $3 \
                     WHERE device_hash = $1",
                )
                .bind(&device_hash.0[..])
                .bind(last_poll_ms)
                .bind(interval)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            }
            PollWrite::Consume => {
                sqlx::query("UPDATE device_codes SET consumed = TRUE WHERE device_hash = $1")
                    .bind(&device_hash.0[..])
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
            }
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(answer)
    }

    fn subscribe(&self) -> Option<broadcast::Receiver<Invalidation>> {
        Some(self.invalidations.subscribe())
    }
}

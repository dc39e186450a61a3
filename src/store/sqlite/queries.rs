//! The SQL of every [`Store`] method on SQLite. Reads go through
//! [`SqliteStore::read`], writes through [`SqliteStore::write`], so each
//! write runs in its own savepoint of the writer's batch transaction.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::SqliteStore;
use crate::core::device::PollWrite;
use crate::core::rotation::{self, Decision};
use crate::core::version;
use crate::crypto::{KeyId, TokenHash, TokenKind};
use crate::store::rows::{
    grant_columns, own_first, presented, rotation_columns, BadColumn, GrantRow, GrantText, TokenRow,
};
use crate::store::*;

const FIND_TOKEN_SQL: &str = concat!(
    "SELECT t.hash, t.grant_id, t.kind, t.scopes, t.issued_at, t.expires_at, \
     t.revoked, t.consumed_at, ",
    grant_columns!(),
    " FROM tokens t JOIN grants g ON g.id = t.grant_id WHERE t.hash = ?1"
);

/// Where the grant columns start in [`FIND_TOKEN_SQL`].
const GRANT_AT: usize = 8;

const FIND_GRANT_SQL: &str = concat!(
    "SELECT ",
    grant_columns!(),
    " FROM grants g WHERE g.id = ?1"
);

/// A record the shared mapping refused, as a column conversion error.
fn bad_column(at: usize, e: BadColumn) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(at, rusqlite::types::Type::Text, Box::new(e))
}

/// Reads a grant from columns starting at `at`.
fn grant_from_row(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<GrantRecord> {
    GrantRow {
        id: row.get(at)?,
        client_id: row.get(at + 1)?,
        subject: row.get(at + 2)?,
        scopes: row.get(at + 3)?,
        audience: row.get(at + 4)?,
        actor: row.get(at + 5)?,
        issuer: row.get(at + 6)?,
        claims: row.get(at + 7)?,
        custom: row.get(at + 8)?,
        version: row.get(at + 9)?,
        created_at: row.get(at + 10)?,
        revoked: row.get::<_, i64>(at + 11)? != 0,
        parent_id: row.get(at + 12)?,
        not_after: row.get(at + 13)?,
        idp: row.get(at + 14)?,
        route: row.get(at + 15)?,
        tenant: row.get(at + 16)?,
    }
    .into_record()
    .map_err(|e| bad_column(at, e))
}

fn hash_from_blob(blob: Vec<u8>) -> rusqlite::Result<TokenHash> {
    let bytes: [u8; 32] = blob.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Blob,
            "token hash is not 32 bytes".into(),
        )
    })?;
    Ok(TokenHash(bytes))
}

fn query_token(
    conn: &Connection,
    hash: &TokenHash,
) -> rusqlite::Result<Option<(TokenRecord, GrantRecord)>> {
    conn.prepare_cached(FIND_TOKEN_SQL)?
        .query_row(params![&hash.0[..]], |row| {
            let token = TokenRow {
                hash: hash_from_blob(row.get(0)?)?,
                grant_id: row.get(1)?,
                kind: row.get(2)?,
                scopes: row.get(3)?,
                issued_at: row.get(4)?,
                expires_at: row.get(5)?,
                revoked: row.get::<_, i64>(6)? != 0,
                consumed_at: row.get(7)?,
            }
            .into_record()
            .map_err(|e| bad_column(2, e))?;
            Ok((token, grant_from_row(row, GRANT_AT)?))
        })
        .optional()
}

fn query_grant(conn: &Connection, id: &str) -> rusqlite::Result<Option<GrantRecord>> {
    conn.prepare_cached(FIND_GRANT_SQL)?
        .query_row(params![id], |row| grant_from_row(row, 0))
        .optional()
}

pub(super) fn insert_tokens(
    conn: &Connection,
    grant_id: &str,
    tokens: &[NewToken],
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO tokens (hash, grant_id, kind, scopes, issued_at, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for t in tokens {
        stmt.execute(params![
            &t.hash.0[..],
            grant_id,
            t.kind.code(),
            t.scopes.as_deref().map(join_scopes),
            t.issued_at,
            t.expires_at
        ])?;
    }
    Ok(())
}

/// Revokes a grant and every grant derived from it, transitively; returns
/// their ids, the grant's own first (none when it does not exist).
fn revoke_tree(conn: &Connection, id: &str) -> rusqlite::Result<Vec<String>> {
    let mut ids: Vec<String> = conn
        .prepare_cached(
            "WITH RECURSIVE tree(id) AS (SELECT id FROM grants WHERE id = ?1 \
             UNION SELECT g.id FROM grants g JOIN tree ON g.parent_id = tree.id) \
             UPDATE grants SET revoked = 1 WHERE id IN (SELECT id FROM tree) RETURNING id",
        )?
        .query_map(params![id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    own_first(&mut ids, id);
    Ok(ids)
}

/// See [`Store::grant_expiry`].
const GRANT_EXPIRY_SQL: &str = "SELECT CASE WHEN g.not_after IS NULL THEN max(t.expires_at) \
     ELSE min(max(t.expires_at), g.not_after) END \
     FROM grants g JOIN tokens t ON t.grant_id = g.id \
     WHERE g.id = ?1 AND g.revoked = 0 AND t.revoked = 0 AND t.expires_at > ?2 \
     AND t.consumed_at IS NULL GROUP BY g.id";

// Every write below runs inside its own savepoint of the writer's batch
// transaction (see `run_batch`): it is atomic on its own without opening a
// transaction, and returning an error undoes all of it.
#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|c| {
            c.prepare_cached("SELECT 1")?
                .query_row([], |r| r.get::<_, i64>(0))
                .map(|_| ())
        })
        .await
    }

    async fn create_grant(
        &self,
        grant: &GrantRecord,
        tokens: &[NewToken],
    ) -> Result<(), StoreError> {
        let grant = grant.clone();
        let tokens = tokens.to_vec();
        self.write(move |conn| {
            let text = GrantText::of(&grant);
            conn.prepare_cached(
                "INSERT INTO grants (id, client_id, subject, scopes, audience, actor, issuer, \
                 claims, custom, version, created_at, revoked, parent_id, not_after, idp, route, \
                 kept_subject_token, tenant) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 0, ?12, ?13, ?14, ?15, ?16, \
                 ?17)",
            )?
            .execute(params![
                grant.id,
                grant.client_id,
                grant.subject,
                text.scopes,
                text.audience,
                text.actor,
                grant.issuer,
                text.claims,
                grant.custom_sealed,
                grant.version,
                grant.created_at,
                grant.parent_id,
                grant.not_after,
                grant.idp,
                grant.route,
                grant.kept_subject_token,
                grant.tenant
            ])?;
            insert_tokens(conn, &grant.id, &tokens)
        })
        .await
    }

    async fn find_token(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<(TokenRecord, GrantRecord)>, StoreError> {
        let hash = *hash;
        self.read(move |conn| query_token(conn, &hash)).await
    }

    async fn find_grant(&self, id: &str) -> Result<Option<GrantRecord>, StoreError> {
        let id = id.to_string();
        self.read(move |conn| query_grant(conn, &id)).await
    }

    async fn kept_subject_token(&self, grant_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let id = grant_id.to_string();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT kept_subject_token FROM grants WHERE id = ?1 AND revoked = 0",
            )?
            .query_row(params![id], |r| r.get::<_, Option<Vec<u8>>>(0))
            .optional()
            .map(Option::flatten)
        })
        .await
    }

    async fn kept_sealed_otherwise(
        &self,
        header: &[u8],
        after: &str,
        limit: u32,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let (header, after) = (header.to_vec(), after.to_string());
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT id, kept_subject_token FROM grants \
                 WHERE revoked = 0 AND kept_subject_token IS NOT NULL \
                 AND substr(kept_subject_token, 1, ?2) <> ?1 \
                 AND id > ?3 ORDER BY id LIMIT ?4",
            )?
            .query_map(params![header, header.len() as i64, after, limit], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?
            .collect()
        })
        .await
    }

    async fn reseal_kept(
        &self,
        grant_id: &str,
        current: &[u8],
        resealed: &[u8],
    ) -> Result<bool, StoreError> {
        let (id, current, resealed) = (grant_id.to_string(), current.to_vec(), resealed.to_vec());
        self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE grants SET kept_subject_token = ?3 \
                 WHERE id = ?1 AND kept_subject_token = ?2 AND revoked = 0",
            )?
            .execute(params![id, current, resealed])
            .map(|n| n == 1)
        })
        .await
    }

    async fn rotate_refresh(
        &self,
        old: &TokenHash,
        now: UnixTime,
        grace: i64,
        new_tokens: &[NewToken],
    ) -> Result<Rotation, StoreError> {
        let old = *old;
        let new_tokens = new_tokens.to_vec();
        // Writes run one after another on the writer thread, so of
        // concurrent rotations of one token the later ones see the first
        // one's `consumed_at`.
        self.write(move |conn| {
            let found = conn
                .prepare_cached(concat!(
                    "SELECT ",
                    rotation_columns!(),
                    " FROM tokens t JOIN grants g ON g.id = t.grant_id WHERE t.hash = ?1"
                ))?
                .query_row(params![&old.0[..]], |r| {
                    let token = presented(
                        r.get(1)?,
                        r.get(2)?,
                        r.get::<_, i64>(3)? != 0,
                        r.get(4)?,
                        r.get::<_, i64>(5)? != 0,
                    );
                    Ok((r.get::<_, String>(0)?, token))
                })
                .optional()?;
            let Some((grant_id, token)) = found else {
                return Ok(Rotation::Inactive);
            };
            match rotation::decide(&token, now, grace) {
                Decision::Inactive => return Ok(Rotation::Inactive),
                Decision::Reissue => {}
                Decision::Replay => {
                    // Kept: the caller hears `Replayed` only once the
                    // batch holding this revocation is committed.
                    return Ok(Rotation::Replayed(revoke_tree(conn, &grant_id)?));
                }
                Decision::Consume => {
                    conn.prepare_cached("UPDATE tokens SET consumed_at = ?2 WHERE hash = ?1")?
                        .execute(params![&old.0[..], now])?;
                }
            }
            insert_tokens(conn, &grant_id, &new_tokens)?;
            Ok(Rotation::Rotated)
        })
        .await
    }

    async fn revoke_token(&self, hash: &TokenHash) -> Result<bool, StoreError> {
        let hash = *hash;
        self.write(move |conn| {
            conn.prepare_cached("UPDATE tokens SET revoked = 1 WHERE hash = ?1")?
                .execute(params![&hash.0[..]])
                .map(|n| n > 0)
        })
        .await
    }

    async fn revoke_grant(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let id = id.to_string();
        self.write(move |conn| revoke_tree(conn, &id)).await
    }

    async fn live_grants_of(&self, owner: &GrantsOf) -> Result<Vec<String>, StoreError> {
        let (column, value) = owner.filter();
        let sql = format!(
            "SELECT id FROM grants WHERE tenant = ?2 AND {column} = ?1 AND revoked = 0 \
             ORDER BY created_at, id"
        );
        let value = value.to_string();
        let tenant = owner.tenant.clone();
        self.read(move |conn| {
            conn.prepare_cached(&sql)?
                .query_map(params![value, tenant], |r| r.get::<_, String>(0))?
                .collect()
        })
        .await
    }

    async fn list_grants(
        &self,
        owner: &GrantsOf,
        before: Option<&(UnixTime, String)>,
        limit: u32,
    ) -> Result<Vec<GrantRecord>, StoreError> {
        let (column, value) = owner.filter();
        let sql = format!(
            "SELECT {} FROM grants g WHERE g.tenant = ?5 AND g.{column} = ?1 \
             AND (g.created_at < ?2 OR (g.created_at = ?2 AND g.id < ?3)) \
             ORDER BY g.created_at DESC, g.id DESC LIMIT ?4",
            grant_columns!()
        );
        let value = value.to_string();
        let tenant = owner.tenant.clone();
        let (at, id) = before.cloned().unwrap_or((UnixTime::MAX, String::new()));
        self.read(move |conn| {
            conn.prepare_cached(&sql)?
                .query_map(params![value, at, id, limit, tenant], |row| {
                    grant_from_row(row, 0)
                })?
                .collect()
        })
        .await
    }

    async fn grant_expiry(&self, id: &str, now: UnixTime) -> Result<Option<UnixTime>, StoreError> {
        let id = id.to_string();
        self.read(move |conn| {
            // No live token: no row at all (the GROUP BY has no group).
            Ok(conn
                .prepare_cached(GRANT_EXPIRY_SQL)?
                .query_row(params![id, now], |r| r.get::<_, Option<i64>>(0))
                .optional()?
                .flatten())
        })
        .await
    }

    async fn update_grant(
        &self,
        id: &str,
        expected_version: i64,
        change: &GrantChange,
    ) -> Result<GrantUpdate, StoreError> {
        let id = id.to_string();
        let change = change.clone();
        self.write(move |conn| {
            let current = conn
                .prepare_cached("SELECT version, revoked FROM grants WHERE id = ?1")?
                .query_row(params![id], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? != 0))
                })
                .optional()?;
            let version = match version::next(current, expected_version) {
                Ok(next) => next,
                Err(refused) => return Ok(refused),
            };
            if let Some(scopes) = &change.scopes {
                conn.prepare_cached("UPDATE grants SET scopes = ?2 WHERE id = ?1")?
                    .execute(params![id, join_scopes(scopes)])?;
            }
            if let Some(custom) = &change.custom_sealed {
                conn.prepare_cached("UPDATE grants SET custom = ?2 WHERE id = ?1")?
                    .execute(params![id, custom])?;
            }
            if change.revoke_refresh_tokens {
                conn.prepare_cached(
                    "UPDATE tokens SET revoked = 1 WHERE grant_id = ?1 AND kind = ?2",
                )?
                .execute(params![id, TokenKind::Refresh.code()])?;
            }
            if let Some(hash) = &change.reset_token_scopes {
                conn.prepare_cached(
                    "UPDATE tokens SET scopes = NULL WHERE hash = ?1 AND grant_id = ?2",
                )?
                .execute(params![&hash.0[..], id])?;
            }
            conn.prepare_cached("UPDATE grants SET version = ?2 WHERE id = ?1")?
                .execute(params![id, version])?;
            Ok(GrantUpdate::Updated(version))
        })
        .await
    }

    async fn sealed_otherwise(
        &self,
        header: &[u8],
        after: &str,
        limit: u32,
    ) -> Result<Vec<SealedCustom>, StoreError> {
        let (header, after) = (header.to_vec(), after.to_string());
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT id, version, custom FROM grants \
                 WHERE revoked = 0 AND custom IS NOT NULL AND substr(custom, 1, ?2) <> ?1 \
                 AND id > ?3 ORDER BY id LIMIT ?4",
            )?
            .query_map(params![header, header.len() as i64, after, limit], |row| {
                Ok(SealedCustom {
                    grant_id: row.get(0)?,
                    version: row.get(1)?,
                    sealed: row.get(2)?,
                })
            })?
            .collect()
        })
        .await
    }

    async fn reseal_custom(
        &self,
        current: &SealedCustom,
        resealed: &[u8],
    ) -> Result<bool, StoreError> {
        let (current, resealed) = (current.clone(), resealed.to_vec());
        self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE grants SET custom = ?4 \
                 WHERE id = ?1 AND version = ?2 AND custom = ?3 AND revoked = 0",
            )?
            .execute(params![
                current.grant_id,
                current.version,
                current.sealed,
                resealed
            ])
            .map(|n| n == 1)
        })
        .await
    }

    async fn count_sealed_by_key(&self) -> Result<Vec<(Option<KeyId>, u64)>, StoreError> {
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT CASE WHEN substr(custom, 1, 1) = ?1 THEN substr(custom, 2, ?2) END AS k, \
                 count(*) FROM grants WHERE revoked = 0 AND custom IS NOT NULL GROUP BY k",
            )?
            .query_map(
                params![
                    &[crate::crypto::SEAL_FORMAT_NAMED][..],
                    crate::crypto::KEY_ID_LEN as i64
                ],
                |row| {
                    Ok((
                        key_id_column(row.get(0)?),
                        row.get::<_, i64>(1)?.max(0) as u64,
                    ))
                },
            )?
            .collect()
        })
        .await
    }

    async fn try_lease(
        &self,
        key: &str,
        holder: &str,
        now: UnixTime,
        until: UnixTime,
    ) -> Result<bool, StoreError> {
        let (key, holder) = (key.to_string(), holder.to_string());
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO leases (key, holder, until) VALUES (?1, ?2, ?4) \
                 ON CONFLICT (key) DO UPDATE SET holder = excluded.holder, until = excluded.until \
                 WHERE leases.until <= ?3 OR leases.holder = excluded.holder",
            )?
            .execute(params![key, holder, now, until])
            .map(|n| n == 1)
        })
        .await
    }

    async fn release_lease(&self, key: &str, holder: &str) -> Result<(), StoreError> {
        let (key, holder) = (key.to_string(), holder.to_string());
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM leases WHERE key = ?1 AND holder = ?2")?
                .execute(params![key, holder])
                .map(|_| ())
        })
        .await
    }

    async fn signing_keys(
        &self,
        tenant: &str,
        signs_after: UnixTime,
    ) -> Result<Vec<SigningKeyRecord>, StoreError> {
        let tenant = tenant.to_string();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT generation, kid, algorithm, public_jwk, private_sealed, created_at, \
                 signs_from, signs_until FROM signing_keys \
                 WHERE tenant = ?2 AND (signs_until > ?1 OR generation = \
                 (SELECT max(generation) FROM signing_keys WHERE tenant = ?2)) \
                 ORDER BY generation",
            )?
            .query_map(params![signs_after, tenant], |row| {
                Ok(SigningKeyRecord {
                    tenant: tenant.clone(),
                    generation: row.get(0)?,
                    kid: row.get(1)?,
                    algorithm: row.get(2)?,
                    public_jwk: row.get(3)?,
                    private_sealed: row.get(4)?,
                    created_at: row.get(5)?,
                    signs_from: row.get(6)?,
                    signs_until: row.get(7)?,
                })
            })?
            .collect()
        })
        .await
    }

    async fn add_signing_key(&self, key: &SigningKeyRecord) -> Result<bool, StoreError> {
        let key = key.clone();
        self.write(move |conn| {
            let added =
                conn.prepare_cached(
                    "INSERT INTO signing_keys (generation, kid, algorithm, public_jwk, \
                     private_sealed, created_at, signs_from, signs_until, tenant) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING",
                )?
                .execute(params![
                    key.generation,
                    key.kid,
                    key.algorithm,
                    key.public_jwk,
                    key.private_sealed,
                    key.created_at,
                    key.signs_from,
                    key.signs_until,
                    key.tenant
                ])? == 1;
            if added {
                conn.prepare_cached(
                    "UPDATE signing_keys SET signs_until = ?1 \
                     WHERE tenant = ?3 AND generation < ?2 AND signs_until > ?1",
                )?
                .execute(params![key.signs_from, key.generation, key.tenant])?;
            }
            Ok(added)
        })
        .await
    }

    async fn purge_signing_keys(&self, tenant: &str, before: UnixTime) -> Result<u64, StoreError> {
        let tenant = tenant.to_string();
        self.write(move |conn| {
            conn.prepare_cached(
                "DELETE FROM signing_keys WHERE tenant = ?2 AND signs_until < ?1 \
                 AND generation < (SELECT max(generation) FROM signing_keys WHERE tenant = ?2)",
            )?
            .execute(params![before, tenant])
            .map(|n| n as u64)
        })
        .await
    }

    async fn reseal_signing_key(
        &self,
        tenant: &str,
        generation: i64,
        current: &[u8],
        resealed: &[u8],
    ) -> Result<bool, StoreError> {
        let (current, resealed) = (current.to_vec(), resealed.to_vec());
        let tenant = tenant.to_string();
        self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE signing_keys SET private_sealed = ?3 \
                 WHERE tenant = ?4 AND generation = ?1 AND private_sealed = ?2",
            )?
            .execute(params![generation, current, resealed, tenant])
            .map(|n| n == 1)
        })
        .await
    }

    async fn purge_expired(&self, before: UnixTime) -> Result<u64, StoreError> {
        self.write(move |conn| {
            let gone = conn
                .prepare_cached("DELETE FROM tokens WHERE expires_at < ?1")?
                .execute(params![before])?;
            conn.prepare_cached("DELETE FROM leases WHERE until < ?1")?
                .execute(params![before])?;
            conn.prepare_cached("DELETE FROM device_codes WHERE expires_at < ?1")?
                .execute(params![before])?;
            conn.prepare_cached(
                "DELETE FROM grants WHERE NOT EXISTS \
                 (SELECT 1 FROM tokens t WHERE t.grant_id = grants.id)",
            )?
            .execute([])?;
            Ok(gone as u64)
        })
        .await
    }

    async fn create_device_code(&self, record: &DeviceCodeRecord) -> Result<bool, StoreError> {
        let r = record.clone();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO device_codes (device_hash, user_hash, client_id, scopes, status, \
                 expires_at, interval_secs, tenant) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                &r.device_hash.0[..],
                &r.user_hash.0[..],
                r.client_id,
                join_scopes(&r.scopes),
                r.status.code(),
                r.expires_at,
                r.interval,
                r.tenant
            ])
            .map(|n| n == 1)
        })
        .await
    }

    async fn decide_device_code(
        &self,
        tenant: &str,
        user_hash: &TokenHash,
        now: UnixTime,
        decision: &DeviceStatus,
    ) -> Result<bool, StoreError> {
        let (hash, decision) = (*user_hash, decision.clone());
        let tenant = tenant.to_string();
        self.write(move |conn| {
            let (subject, idp) = match &decision {
                DeviceStatus::Approved { subject, idp } => (Some(subject), Some(idp)),
                _ => (None, None),
            };
            conn.prepare_cached(
                "UPDATE device_codes SET status = ?3, subject = ?4, idp = ?5 \
                 WHERE user_hash = ?1 AND tenant = ?6 AND status = 0 AND consumed = 0 \
                 AND expires_at > ?2",
            )?
            .execute(params![
                &hash.0[..],
                now,
                decision.code(),
                subject,
                idp,
                tenant
            ])
            .map(|n| n == 1)
        })
        .await
    }

    async fn poll_device_code(
        &self,
        tenant: &str,
        device_hash: &TokenHash,
        client_id: &str,
        now_ms: i64,
    ) -> Result<DevicePoll, StoreError> {
        let (hash, client_id) = (*device_hash, client_id.to_string());
        let tenant = tenant.to_string();
        self.write(move |conn| {
            let found = conn
                .prepare_cached(
                    "SELECT device_hash, user_hash, client_id, scopes, status, subject, idp, \
                     expires_at, interval_secs, last_poll_ms, consumed \
                     FROM device_codes WHERE device_hash = ?1 AND tenant = ?2",
                )?
                .query_row(params![&hash.0[..], tenant], |row| {
                    let status = DeviceStatus::from_columns(row.get(4)?, row.get(5)?, row.get(6)?)
                        .map_err(|e| {
                            rusqlite::Error::FromSqlConversionFailure(
                                4,
                                rusqlite::types::Type::Integer,
                                Box::new(e),
                            )
                        })?;
                    Ok(DeviceCodeRecord {
                        tenant: tenant.clone(),
                        device_hash: hash_from_blob(row.get(0)?)?,
                        user_hash: hash_from_blob(row.get(1)?)?,
                        client_id: row.get(2)?,
                        scopes: split_scopes(&row.get::<_, String>(3)?),
                        status,
                        expires_at: row.get(7)?,
                        interval: row.get(8)?,
                        last_poll_ms: row.get(9)?,
                        consumed: row.get::<_, i64>(10)? != 0,
                    })
                })
                .optional()?;
            let Some(record) = found else {
                return Ok(DevicePoll::Unknown);
            };
            let (answer, write) = crate::core::device::decide_poll(&record, &client_id, now_ms);
            match write {
                PollWrite::Nothing => {}
                PollWrite::Polled {
                    last_poll_ms,
                    interval,
                } => {
                    conn.prepare_cached(
                        "UPDATE device_codes SET last_poll_ms = ?2, interval_secs = ?3 \
                         WHERE device_hash = ?1",
                    )?
                    .execute(params![&hash.0[..], last_poll_ms, interval])?;
                }
                PollWrite::Consume => {
                    conn.prepare_cached(
                        "UPDATE device_codes SET consumed = 1 WHERE device_hash = ?1",
                    )?
                    .execute(params![&hash.0[..]])?;
                }
            }
            Ok(answer)
        })
        .await
    }
}

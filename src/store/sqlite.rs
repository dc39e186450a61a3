//! The embedded store: one SQLite file in WAL mode.
//!
//! **Reads** (`find_token`, `find_grant`, `ping`) run on the calling thread,
//! on a pooled reader connection. A point lookup in a local WAL database
//! costs a few microseconds, less than handing the call to tokio's blocking
//! pool and back; the price is that a store on a very slow disk stalls the
//! calling thread for the duration of a page read. WAL readers are not
//! blocked by the writer, so an inline read does not wait for locks at all:
//! when SQLite reports the file busy anyway (rare in WAL mode: another
//! connection recovering it after a crash, or holding it in exclusive
//! locking mode) or no pooled connection is free, the read moves to the
//! blocking pool and waits there, up to [`BUSY_TIMEOUT`].
//!
//! **Writes** go to one writer thread that owns the only writer connection
//! (SQLite allows one writer at a time anyway). Each time it wakes it takes
//! every write queued by then, up to [`MAX_BATCH`], and runs them one after
//! another in one transaction, each in its own savepoint: a write that fails
//! is rolled back alone and only its caller gets the error, and one commit
//! serves the whole batch. Nothing waits to fill a batch: under light load a
//! batch is one write; under load the writes that queued during one commit
//! share the next. Every caller is answered after the commit, so a write
//! that was answered is in the file.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};
use tokio::sync::oneshot;

use super::*;
use crate::crypto::{KeyId, TokenHash};

/// Migrations in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/sqlite/0001_grants_and_tokens.sql"),
    include_str!("migrations/sqlite/0002_leases.sql"),
    include_str!("migrations/sqlite/0003_grant_lineage.sql"),
];

/// How long the writer, and a read moved off the calling thread, wait for
/// a lock another connection holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Page cache of each reader connection, in KiB (SQLite's default is about
/// 2 MB per connection). Lookups are point reads at random places in the
/// file: a cache keeps the B-trees' interior pages, a small fraction of the
/// file, while the leaves come from the OS page cache (not counted in RSS)
/// at any size that fits in memory. Measured on a 60 MB file of 100,000
/// grants, one lookup took 6.0 µs of CPU with 2,000, 512 or 256 KiB, 6.4 µs
/// with 128 and 6.9 µs with 16; 512 KiB keeps a margin above that knee for
/// larger files. No `mmap_size`: mapped pages would count in RSS.
///
/// Inline reads never overlap on one thread, so the pool holds about one
/// connection per thread that looks tokens up (one reader beside the writer
/// through the benchmark's memory check), at most `max_connections` of
/// them: with the default of 16, at most 8 MB of reader page cache.
const READER_CACHE_KIB: i64 = 512;

/// The most writes one transaction takes.
const MAX_BATCH: usize = 256;

/// Prepared statements the writer keeps: every write's statements plus the
/// transaction and savepoint statements (rusqlite keeps 16 by default).
const WRITER_STATEMENT_CACHE: usize = 64;

/// SQLite implementation of [`Store`].
pub struct SqliteStore {
    readers: Arc<Readers>,
    writer: Writer,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Opens the writer connection, creating the file and making it WAL.
fn open_writer(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL lets readers run beside the writer; NORMAL sync is durable across
    // process crashes and only risks the last commits on power loss.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(WRITER_STATEMENT_CACHE);
    Ok(conn)
}

/// Creates a missing directory (and its parents) readable by the owner only.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The store's files hold token hashes and sealed data: owner only (0600).
/// A missing database file is created so, before SQLite opens it, and
/// SQLite gives its `-wal` and `-shm` files the database file's mode. Files
/// of an existing store that group or others may read are narrowed.
fn make_files_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let name = path.as_os_str().to_owned();
    for suffix in ["", "-wal", "-shm"] {
        let mut file = name.clone();
        file.push(suffix);
        let file = PathBuf::from(file);
        let mode = match std::fs::metadata(&file) {
            Ok(m) => m.permissions().mode() & 0o777,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode & 0o700))?;
            tracing::warn!(
                file = %file.display(),
                "the store file was readable by group or others (mode {mode:04o}); now owner only"
            );
        }
    }
    Ok(())
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let done: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done.max(0) as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()
}

impl SqliteStore {
    /// Opens (creating when missing) the database file and its directory.
    pub async fn open(path: &Path, max_connections: u32) -> Result<Self, StoreError> {
        let path = path.to_path_buf();
        let (writer_conn, first_reader) = tokio::task::spawn_blocking({
            let path = path.clone();
            move || -> Result<_, StoreError> {
                if let Some(parent) = path.parent() {
                    create_private_dir(parent).map_err(|e| {
                        unavailable(format!("cannot create `{}`: {e}", parent.display()))
                    })?;
                }
                make_files_private(&path).map_err(|e| {
                    unavailable(format!(
                        "cannot restrict `{}` to its owner: {e}",
                        path.display()
                    ))
                })?;
                let mut writer = open_writer(&path)
                    .map_err(|e| unavailable(format!("cannot open `{}`: {e}", path.display())))?;
                migrate(&mut writer).map_err(|e| unavailable(format!("migration failed: {e}")))?;
                // One reader up front, so that the first lookups run inline.
                let reader = open_reader(&path).map_err(|e| {
                    unavailable(format!("cannot open `{}` for reading: {e}", path.display()))
                })?;
                Ok((writer, reader))
            }
        })
        .await
        .map_err(unavailable)??;
        let readers = Readers {
            path,
            idle: Mutex::new(vec![first_reader]),
            max_idle: max_connections.max(1) as usize,
        };
        Ok(SqliteStore {
            readers: Arc::new(readers),
            writer: Writer::start(writer_conn)?,
        })
    }

    /// Runs a read inline when it can, else on the blocking pool.
    async fn read<T, F>(&self, query: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        if let Some(answer) = self.readers.read_inline(&query) {
            return answer;
        }
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || readers.read_waiting(&query))
            .await
            .map_err(unavailable)?
    }

    /// Queues a write for the writer thread and waits for its batch.
    async fn write<T, F>(&self, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.writer.queue(Box::new(PendingWrite {
            write: Some(write),
            outcome: None,
            reply,
        }))?;
        answer
            .await
            .map_err(|_| unavailable(WriteFailure::WriterStopped))?
    }
}

// ---------------------------------------------------------------------------
// Readers

/// Opens a reader connection. It waits for locks ([`BUSY_TIMEOUT`]) while
/// it is set up, since that happens off the calling thread; see
/// [`Readers::read_inline`] for the timeout it has in the pool.
fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    // No CREATE and no journal mode: the writer created the file and made it
    // WAL, which is persistent.
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "cache_size", -READER_CACHE_KIB)?;
    conn.pragma_update(None, "query_only", true)?;
    conn.busy_timeout(Duration::ZERO)?;
    Ok(conn)
}

/// The reader connections, idle ones kept for reuse.
struct Readers {
    path: PathBuf,
    /// Idle connections, each with no busy timeout. The last one pushed is
    /// the next one taken, so under light load one connection (and its page
    /// cache) serves every read.
    idle: Mutex<Vec<Connection>>,
    max_idle: usize,
}

fn is_locked<T>(result: &rusqlite::Result<T>) -> bool {
    matches!(
        result
            .as_ref()
            .err()
            .and_then(rusqlite::Error::sqlite_error_code),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

impl Readers {
    fn take_idle(&self) -> Option<Connection> {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    fn put_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
    }

    /// Runs `query` on the calling thread on an idle connection. `None`
    /// when there is no idle connection or the database is locked: the
    /// caller then runs [`Readers::read_waiting`] off its thread.
    fn read_inline<T>(
        &self,
        query: &impl Fn(&Connection) -> rusqlite::Result<T>,
    ) -> Option<Result<T, StoreError>> {
        let conn = self.take_idle()?;
        let result = query(&conn);
        self.put_back(conn);
        if is_locked(&result) {
            return None;
        }
        Some(result.map_err(unavailable))
    }

    /// Runs `query` waiting for locks; blocks, so for the blocking pool.
    fn read_waiting<T>(
        &self,
        query: &impl Fn(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let conn = match self.take_idle() {
            Some(conn) => conn,
            None => open_reader(&self.path).map_err(unavailable)?,
        };
        conn.busy_timeout(BUSY_TIMEOUT).map_err(unavailable)?;
        let result = query(&conn).map_err(unavailable);
        // Back in the pool it must not wait on the calling thread again; a
        // connection whose timeout cannot be reset is dropped instead.
        if conn.busy_timeout(Duration::ZERO).is_ok() {
            self.put_back(conn);
        }
        result
    }
}

// ---------------------------------------------------------------------------
// The writer thread

/// Why a write was not done, beside the database's own errors.
#[derive(Debug, Clone, thiserror::Error)]
enum WriteFailure {
    #[error("the SQLite writer thread has stopped")]
    WriterStopped,
    #[error("the write panicked and was rolled back")]
    Panicked,
    #[error("the write was rolled back with its batch: {0}")]
    BatchRolledBack(String),
}

/// A write queued for the writer thread.
trait WriteJob: Send {
    /// Runs the write (inside its savepoint) and keeps the outcome; returns
    /// whether it succeeded, that is whether its changes should stay.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Records that the write failed around its own code (it panicked).
    fn fail(&mut self, failure: WriteFailure);
    /// Answers the caller: its outcome when the batch was committed (`None`),
    /// else the reason the batch was rolled back.
    fn answer(self: Box<Self>, rolled_back: Option<&WriteFailure>);
}

struct PendingWrite<T, F> {
    write: Option<F>,
    outcome: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> WriteJob for PendingWrite<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> rusqlite::Result<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(write) = self.write.take() else {
            return false;
        };
        let outcome = write(conn).map_err(unavailable);
        let succeeded = outcome.is_ok();
        self.outcome = Some(outcome);
        succeeded
    }

    fn fail(&mut self, failure: WriteFailure) {
        self.outcome = Some(Err(unavailable(failure)));
    }

    fn answer(self: Box<Self>, rolled_back: Option<&WriteFailure>) {
        let answer = match (self.outcome, rolled_back) {
            // A write that failed on its own keeps its own error.
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(value)), None) => Ok(value),
            (_, Some(why)) => Err(unavailable(why)),
            (None, None) => Err(unavailable(WriteFailure::BatchRolledBack(
                "the write did not run".to_string(),
            ))),
        };
        // The caller may have stopped waiting; the write stands regardless.
        let _ = self.reply.send(answer);
    }
}

/// The handle on the writer thread: dropping it lets the thread finish
/// what is queued, close the connection and exit.
struct Writer {
    /// `None` only while dropping.
    jobs: Option<mpsc::Sender<Box<dyn WriteJob>>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    fn start(conn: Connection) -> Result<Self, StoreError> {
        let (jobs, queue) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".to_string())
            .spawn(move || run_writer(conn, queue))
            .map_err(|e| unavailable(format!("cannot start the SQLite writer thread: {e}")))?;
        Ok(Writer {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    fn queue(&self, job: Box<dyn WriteJob>) -> Result<(), StoreError> {
        self.jobs
            .as_ref()
            .ok_or(WriteFailure::WriterStopped)
            .and_then(|jobs| jobs.send(job).map_err(|_| WriteFailure::WriterStopped))
            .map_err(unavailable)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop once the queue is empty;
        // joining it closes the connection before the store is gone, as a
        // reopened store or another process may expect.
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run_writer(conn: Connection, queue: mpsc::Receiver<Box<dyn WriteJob>>) {
    // `recv` fails once the store is dropped and the queue is empty.
    while let Ok(first) = queue.recv() {
        let mut batch = Vec::with_capacity(16);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&conn, batch);
    }
}

/// Runs a statement without parameters or rows, prepared once.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn rolled_back(e: rusqlite::Error) -> WriteFailure {
    WriteFailure::BatchRolledBack(e.to_string())
}

/// Rolls back the open transaction, if there is one.
fn abandon(conn: &Connection) {
    if !conn.is_autocommit() {
        if let Err(e) = exec(conn, "ROLLBACK") {
            tracing::error!(error = %e, "SQLite: rolling back a failed write batch failed");
        }
    }
}

/// Runs the writes of one batch in one transaction and answers them.
fn run_batch(conn: &Connection, batch: Vec<Box<dyn WriteJob>>) {
    // The writes of the open transaction, answered when it ends.
    let mut in_transaction: Vec<Box<dyn WriteJob>> = Vec::with_capacity(batch.len());
    for mut job in batch {
        if conn.is_autocommit() {
            if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
                job.answer(Some(&rolled_back(e)));
                continue;
            }
        }
        match run_in_savepoint(conn, job.as_mut()) {
            Ok(()) => in_transaction.push(job),
            Err(why) => {
                // The transaction cannot go on: what it held is lost. The
                // writes after this one start a new one.
                abandon(conn);
                job.answer(Some(&why));
                for done in in_transaction.drain(..) {
                    done.answer(Some(&why));
                }
            }
        }
    }
    if conn.is_autocommit() {
        return;
    }
    match exec(conn, "COMMIT") {
        Ok(()) => {
            for done in in_transaction {
                done.answer(None);
            }
        }
        Err(e) => {
            abandon(conn);
            let why = rolled_back(e);
            for done in in_transaction {
                done.answer(Some(&why));
            }
        }
    }
}

/// Runs one write in its own savepoint, rolled back when the write fails.
/// An error means the enclosing transaction is no longer usable.
fn run_in_savepoint(conn: &Connection, job: &mut dyn WriteJob) -> Result<(), WriteFailure> {
    exec(conn, "SAVEPOINT write").map_err(rolled_back)?;
    let succeeded = match catch_unwind(AssertUnwindSafe(|| job.run(conn))) {
        Ok(succeeded) => succeeded,
        Err(_) => {
            job.fail(WriteFailure::Panicked);
            false
        }
    };
    if !succeeded {
        // Some errors (a full disk, an I/O error) make SQLite roll back the
        // whole transaction, savepoints and all.
        if conn.is_autocommit() {
            return Err(WriteFailure::BatchRolledBack(
                "a failed write in the batch took the transaction with it".to_string(),
            ));
        }
        exec(conn, "ROLLBACK TO write").map_err(rolled_back)?;
    }
    exec(conn, "RELEASE write").map_err(rolled_back)?;
    if conn.is_autocommit() {
        return Err(WriteFailure::BatchRolledBack(
            "the transaction ended inside a write".to_string(),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Queries

/// The grant columns every grant query reads, in [`grant_from_row`]'s order;
/// a macro so that the SQL texts are built at compile time.
macro_rules! grant_columns {
    () => {
        "g.id, g.client_id, g.subject, g.scopes, g.audience, g.actor, \
         g.issuer, g.claims, g.custom, g.version, g.created_at, g.revoked, \
         g.parent_id, g.not_after, g.idp, g.route"
    };
}

const FIND_TOKEN_SQL: &str = concat!(
    "SELECT t.hash, t.grant_id, t.kind, t.scopes, t.issued_at, t.expires_at, \
     t.revoked, t.consumed_at, ",
    grant_columns!(),
    " FROM tokens t JOIN grants g ON g.id = t.grant_id WHERE t.hash = ?1"
);

const FIND_GRANT_SQL: &str = concat!(
    "SELECT ",
    grant_columns!(),
    " FROM grants g WHERE g.id = ?1"
);

fn json_column(text: Option<String>) -> rusqlite::Result<Option<serde_json::Value>> {
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })
    })
    .transpose()
}

/// Reads a grant from columns starting at `at`.
fn grant_from_row(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<GrantRecord> {
    let audience: Option<String> = row.get(at + 4)?;
    let audience = match json_column(audience)? {
        Some(serde_json::Value::Array(items)) => items
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    Ok(GrantRecord {
        id: row.get(at)?,
        client_id: row.get(at + 1)?,
        subject: row.get(at + 2)?,
        scopes: split_scopes(&row.get::<_, String>(at + 3)?),
        audience,
        actor: json_column(row.get(at + 5)?)?,
        issuer: row.get(at + 6)?,
        claims: json_column(row.get(at + 7)?)?,
        custom_sealed: row.get(at + 8)?,
        version: row.get(at + 9)?,
        created_at: row.get(at + 10)?,
        revoked: row.get::<_, i64>(at + 11)? != 0,
        parent_id: row.get(at + 12)?,
        not_after: row.get(at + 13)?,
        idp: row.get(at + 14)?,
        route: row.get(at + 15)?,
    })
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
            let kind = TokenKind::from_code(row.get(2)?).ok_or_else(|| {
                rusqlite::Error::FromSqlConversionFailure(
                    2,
                    rusqlite::types::Type::Integer,
                    "unknown token kind".into(),
                )
            })?;
            let token = TokenRecord {
                hash: hash_from_blob(row.get(0)?)?,
                grant_id: row.get(1)?,
                kind,
                scopes: row.get::<_, Option<String>>(3)?.map(|s| split_scopes(&s)),
                issued_at: row.get(4)?,
                expires_at: row.get(5)?,
                revoked: row.get::<_, i64>(6)? != 0,
                consumed_at: row.get(7)?,
            };
            Ok((token, grant_from_row(row, 8)?))
        })
        .optional()
}

fn query_grant(conn: &Connection, id: &str) -> rusqlite::Result<Option<GrantRecord>> {
    conn.prepare_cached(FIND_GRANT_SQL)?
        .query_row(params![id], |row| grant_from_row(row, 0))
        .optional()
}

fn insert_tokens(conn: &Connection, grant_id: &str, tokens: &[NewToken]) -> rusqlite::Result<()> {
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
    if let Some(own) = ids.iter().position(|g| g == id) {
        ids.swap(0, own);
    }
    Ok(ids)
}

/// See [`Store::grant_expiry`].
const GRANT_EXPIRY_SQL: &str = "SELECT CASE WHEN g.not_after IS NULL THEN max(t.expires_at) \
     ELSE min(max(t.expires_at), g.not_after) END \
     FROM grants g JOIN tokens t ON t.grant_id = g.id \
     WHERE g.id = ?1 AND g.revoked = 0 AND t.revoked = 0 AND t.expires_at > ?2 \
     AND t.consumed_at IS NULL GROUP BY g.id";

fn to_json_text(value: &Option<serde_json::Value>) -> Option<String> {
    value.as_ref().map(|v| v.to_string())
}

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
            let audience = (!grant.audience.is_empty())
                .then(|| serde_json::Value::from(grant.audience.clone()).to_string());
            conn.prepare_cached(
                "INSERT INTO grants (id, client_id, subject, scopes, audience, actor, issuer, \
                 claims, custom, version, created_at, revoked, parent_id, not_after, idp, route) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 0, ?12, ?13, ?14, ?15)",
            )?
            .execute(params![
                grant.id,
                grant.client_id,
                grant.subject,
                join_scopes(&grant.scopes),
                audience,
                to_json_text(&grant.actor),
                grant.issuer,
                to_json_text(&grant.claims),
                grant.custom_sealed,
                grant.version,
                grant.created_at,
                grant.parent_id,
                grant.not_after,
                grant.idp,
                grant.route
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
                .prepare_cached(
                    "SELECT t.grant_id, t.kind, t.expires_at, t.revoked, t.consumed_at, g.revoked \
                     FROM tokens t JOIN grants g ON g.id = t.grant_id WHERE t.hash = ?1",
                )?
                .query_row(params![&old.0[..]], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)? != 0,
                        r.get::<_, Option<i64>>(4)?,
                        r.get::<_, i64>(5)? != 0,
                    ))
                })
                .optional()?;
            let Some((grant_id, kind, expires_at, revoked, consumed_at, grant_revoked)) = found
            else {
                return Ok(Rotation::Inactive);
            };
            if kind != TokenKind::Refresh.code() || revoked || grant_revoked || expires_at <= now {
                return Ok(Rotation::Inactive);
            }
            match consumed_at {
                // `grace > 0` first: with no grace, a request that read the
                // clock a second before the winning rotation (now < at) is
                // a replay like any other, not a free second success.
                Some(at) if grace > 0 && now - at < grace => {}
                Some(_) => {
                    // Kept: the caller hears `Replayed` only once the
                    // batch holding this revocation is committed.
                    return Ok(Rotation::Replayed(revoke_tree(conn, &grant_id)?));
                }
                None => {
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

    async fn grant_expiry(&self, id: &str, now: UnixTime) -> Result<Option<UnixTime>, StoreError> {
        let id = id.to_string();
        self.read(move |conn| {
            conn.prepare_cached(GRANT_EXPIRY_SQL)?
                .query_row(params![id, now], |r| r.get::<_, Option<i64>>(0))
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
            let version = match current {
                None | Some((_, true)) => return Ok(GrantUpdate::Gone),
                Some((v, false)) if v != expected_version => return Ok(GrantUpdate::Conflict(v)),
                Some((v, false)) => v + 1,
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

    async fn purge_expired(&self, before: UnixTime) -> Result<u64, StoreError> {
        self.write(move |conn| {
            let gone = conn
                .prepare_cached("DELETE FROM tokens WHERE expires_at < ?1")?
                .execute(params![before])?;
            conn.prepare_cached("DELETE FROM leases WHERE until < ?1")?
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
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use super::*;
    use crate::crypto::hash_token;

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
            hash: hash_token(name),
            kind: TokenKind::Access,
            scopes: None,
            issued_at: NOW,
            expires_at: NOW + 3600,
        }
    }

    async fn open(dir: &tempfile::TempDir) -> Arc<SqliteStore> {
        let store = SqliteStore::open(&dir.path().join("store.db"), 4).await;
        Arc::new(store.expect("the store opens on a fresh file"))
    }

    #[tokio::test]
    async fn sealing_again_replaces_only_the_blob_that_was_read_and_keeps_the_version() {
        let dir = tempfile::tempdir().unwrap();
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
            store.create_grant(&g, &[access(id)]).await.unwrap();
        }
        let mut counts = store.count_sealed_by_key().await.unwrap();
        counts.sort_by_key(|(id, _)| id.map(|k| k.0));
        assert_eq!(
            counts,
            vec![
                (None, 1),
                (Some(KeyId([1; 8])), 1),
                (Some(KeyId([9; 8])), 2)
            ]
        );

        let stale = store.sealed_otherwise(&current, "", 10).await.unwrap();
        let ids: Vec<&str> = stale.iter().map(|s| s.grant_id.as_str()).collect();
        assert_eq!(ids, ["a-old-key", "c-unnamed", "d-changed"]);
        let page = store
            .sealed_otherwise(&current, "a-old-key", 1)
            .await
            .unwrap();
        assert_eq!(page[0].grant_id, "c-unnamed", "pages follow the id order");

        // `d` changes between the read and the write: its new blob stays.
        let change = GrantChange {
            custom_sealed: Some(Some(vec![2, 1, 1, 1, 1, 1, 1, 1, 1, 0xde])),
            ..GrantChange::default()
        };
        assert_eq!(
            store.update_grant("d-changed", 1, &change).await.unwrap(),
            GrantUpdate::Updated(2)
        );
        store.revoke_grant("c-unnamed").await.unwrap();
        let mut replaced = Vec::new();
        for s in &stale {
            let resealed = [&current[..], &[0x11]].concat();
            replaced.push(store.reseal_custom(s, &resealed).await.unwrap());
        }
        assert_eq!(replaced, [true, false, false]);
        let a = store.find_grant("a-old-key").await.unwrap().unwrap();
        assert_eq!(a.version, 1, "the version stays");
        assert_eq!(a.custom_sealed.unwrap()[..9], current);
        let d = store.find_grant("d-changed").await.unwrap().unwrap();
        assert_eq!(d.custom_sealed.unwrap().last(), Some(&0xde));
        assert!(store
            .sealed_otherwise(&current, "", 10)
            .await
            .unwrap()
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
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        store
            .create_grant(&grant("original"), &[access("taken")])
            .await
            .unwrap();

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
        let dir = tempfile::tempdir().unwrap();
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
            let found = store.find_grant(id).await.unwrap().expect("stored");
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
        let dir = tempfile::tempdir().unwrap();
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
            .find_token(&hash_token("orphan"))
            .await
            .unwrap()
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
        let store = SqliteStore::open(path, 4).await.unwrap();
        store
            .create_grant(&grant("g"), &[access("t")])
            .await
            .unwrap();
        hash_token("t")
    }

    fn store_with_readers(path: &Path, idle: Vec<Connection>) -> SqliteStore {
        SqliteStore {
            readers: Arc::new(Readers {
                path: path.to_path_buf(),
                idle: Mutex::new(idle),
                max_idle: 4,
            }),
            writer: Writer {
                jobs: None,
                thread: None,
            },
        }
    }

    /// Locks the file as another process in exclusive locking mode would,
    /// in the middle of a write; a thread lets go after `hold`.
    fn lock_exclusively(path: &Path, hold: Duration) -> std::thread::JoinHandle<()> {
        let holder = Connection::open(path).unwrap();
        holder
            .pragma_update(None, "locking_mode", "EXCLUSIVE")
            .unwrap();
        holder
            .execute_batch(
                "BEGIN IMMEDIATE; \
                 INSERT INTO leases (key, holder, until) VALUES ('k', 'other', 0);",
            )
            .unwrap();
        std::thread::spawn(move || {
            std::thread::sleep(hold);
            holder.execute_batch("COMMIT").unwrap();
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
        unlocker.join().unwrap();

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
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let hash = file_with_one_grant(&path).await;
        let idle = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .unwrap();
        idle.busy_timeout(Duration::ZERO).unwrap();
        let store = store_with_readers(&path, vec![idle]);

        lookup_while_locked(&store, &path, &hash).await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn with_no_idle_connection_a_lookup_on_a_locked_file_opens_one_off_the_calling_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let hash = file_with_one_grant(&path).await;
        let store = store_with_readers(&path, Vec::new());

        lookup_while_locked(&store, &path, &hash).await;
        assert_eq!(
            store.readers.idle.lock().unwrap().len(),
            1,
            "the connection opened for the lookup is kept for the next"
        );
    }
}

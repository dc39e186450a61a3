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
//! blocking pool and waits there, up to [`BUSY_TIMEOUT`]. A reader keeps
//! its read transaction from one read to the next while no write of this
//! store ended and for at most a millisecond (see `readers`).
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
//!
//! The jobs, one file each: `readers` (the pooled reader connections),
//! `writer` (the writer thread and its batches), `queries` (the SQL of
//! every [`super::Store`] method); this file opens the store and hands reads and
//! writes to the first two.

mod queries;
mod readers;
#[cfg(test)]
mod tests;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::oneshot;

use super::StoreError;
use readers::{open_reader, Readers, SNAPSHOT_LIFE};
use writer::{PendingWrite, WriteFailure, Writer};

/// Migrations in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/sqlite/0001_grants_and_tokens.sql"),
    include_str!("../migrations/sqlite/0002_leases.sql"),
    include_str!("../migrations/sqlite/0003_grant_lineage.sql"),
    include_str!("../migrations/sqlite/0004_signing_keys.sql"),
    include_str!("../migrations/sqlite/0005_grants_by_subject.sql"),
    include_str!("../migrations/sqlite/0006_kept_subject_token.sql"),
    include_str!("../migrations/sqlite/0007_device_codes.sql"),
    include_str!("../migrations/sqlite/0008_tenants.sql"),
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
/// larger files. With [`READER_MMAP_BYTES`] the leaves no longer go
/// through this cache at all.
///
/// Inline reads never overlap on one thread, so the pool holds about one
/// connection per thread that looks tokens up (one reader beside the writer
/// through the benchmark's memory check), at most `max_connections` of
/// them: with the default of 16, at most 8 MB of reader page cache.
const READER_CACHE_KIB: i64 = 512;

/// How much of the file each reader connection maps into memory
/// (`PRAGMA mmap_size`). A page of the mapped part is read where the
/// kernel's page cache holds it, without a `pread` and a copy into the
/// connection's own cache: a cache miss then costs about 10 µs of CPU less
/// (measured on the benchmark's cold path, 20,000 tokens in a 13 MB file;
/// see docs/benchmarks.md). Pages still in the write-ahead log are read from
/// it as before, and the part of a larger file beyond this is read with
/// `pread`. Only readers map the file, read-only; the writer writes as
/// before.
///
/// What it changes for an operator: the mapped pages the readers have
/// touched count in the process's RSS (as file pages, `RssFile`), up to the
/// file's size. They are the kernel's page cache, which held them before as
/// well, shared and dropped under memory pressure; the memory refgate itself
/// holds is `RssAnon`. And an I/O error while reading a mapped page (a
/// failing disk, or the file cut short by something other than SQLite)
/// ends the process with `SIGBUS` instead of failing that one lookup.
const READER_MMAP_BYTES: i64 = 1 << 30;

/// The most writes one transaction takes.
const MAX_BATCH: usize = 256;

/// Prepared statements the writer keeps: every write's statements plus the
/// transaction and savepoint statements (rusqlite keeps 16 by default).
const WRITER_STATEMENT_CACHE: usize = 64;

/// SQLite implementation of [`super::Store`].
pub struct SqliteStore {
    readers: Arc<Readers>,
    writer: Writer,
}

pub(super) fn unavailable(e: impl std::fmt::Display) -> StoreError {
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
        Self::open_with(path, max_connections, SNAPSHOT_LIFE).await
    }

    /// As [`SqliteStore::open`], with the readers' snapshot life given.
    async fn open_with(
        path: &Path,
        max_connections: u32,
        snapshot_life: Duration,
    ) -> Result<Self, StoreError> {
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
        let readers = Arc::new(Readers::new(
            path,
            vec![first_reader],
            max_connections.max(1) as usize,
            snapshot_life,
        ));
        Ok(SqliteStore {
            writer: Writer::start(writer_conn, readers.clone())?,
            readers,
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

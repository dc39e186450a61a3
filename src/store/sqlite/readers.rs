//! The reader connections: reads run inline on an idle pooled connection
//! and move to the blocking pool only when the file is locked or no
//! connection is idle (see the store's module comment).
//!
//! A reader keeps its read transaction open from one read to the next, so
//! that the reads of a busy moment share one transaction instead of taking
//! and dropping SQLite's read lock (two `fcntl` calls and the WAL index's
//! bookkeeping) each time. The snapshot it holds is ended before a read
//! when it may miss a write that matters:
//!
//! - this store's writer committed after it began ([`Readers::commits`],
//!   counted by the writer after every commit, before any caller is
//!   answered): a read that starts after a write was answered sees it;
//! - it is older than [`Readers::snapshot_life`] ([`SNAPSHOT_LIFE`]): writes
//!   of other processes (`refgate key rotate-signing`, an operator's
//!   `sqlite3`) are seen that much later at most.
//!
//! The writer also ends the snapshots of idle readers before each of its
//! transactions, so that they never keep the write-ahead log from being
//! checkpointed and started over.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::{unavailable, BUSY_TIMEOUT, READER_CACHE_KIB, READER_MMAP_BYTES};
use crate::store::StoreError;

/// Opens a reader connection. It waits for locks ([`BUSY_TIMEOUT`]) while
/// it is set up, since that happens off the calling thread; see
/// [`Readers::read_inline`] for the timeout it has in the pool.
pub(super) fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    // No CREATE and no journal mode: the writer created the file and made it
    // WAL, which is persistent.
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "cache_size", -READER_CACHE_KIB)?;
    conn.pragma_update(None, "query_only", true)?;
    conn.pragma_update(None, "mmap_size", READER_MMAP_BYTES)?;
    conn.busy_timeout(Duration::ZERO)?;
    Ok(conn)
}

/// How long a reader may keep one read transaction open for later reads:
/// the most a read lags behind a write made by another process. Reads in
/// a busy moment come microseconds apart and share it; one more millisecond
/// of staleness is far below anything a cached token already allows.
pub(super) const SNAPSHOT_LIFE: Duration = Duration::from_millis(1);

/// A read transaction a reader keeps open.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    began: Instant,
    /// [`Readers::commits`] when it began.
    commits: u64,
}

/// A reader connection and the read transaction it keeps, if any.
pub(super) struct Reader {
    conn: Connection,
    snapshot: Option<Snapshot>,
}

impl Reader {
    fn new(conn: Connection) -> Self {
        Reader {
            conn,
            snapshot: None,
        }
    }

    /// Ends the kept read transaction, if any. `false`: it could not be
    /// ended, and the connection must not be used again.
    fn end_snapshot(&mut self) -> bool {
        if self.snapshot.take().is_some() || !self.conn.is_autocommit() {
            let ended = self
                .conn
                .prepare_cached("COMMIT")
                .and_then(|mut s| s.execute([]));
            if ended.is_err() && !self.conn.is_autocommit() {
                let _ = self.conn.execute_batch("ROLLBACK");
            }
        }
        self.conn.is_autocommit()
    }

    /// Opens a read transaction to keep, unless one is open; its snapshot
    /// is taken by the first read in it.
    fn keep_snapshot(&mut self, commits: u64) {
        if self.snapshot.is_none()
            && self
                .conn
                .prepare_cached("BEGIN")
                .and_then(|mut s| s.execute([]))
                .is_ok()
        {
            self.snapshot = Some(Snapshot {
                began: Instant::now(),
                commits,
            });
        }
    }
}

/// The reader connections, idle ones kept for reuse.
pub(super) struct Readers {
    path: PathBuf,
    /// Idle connections, each with no busy timeout. The last one pushed is
    /// the next one taken, so under light load one connection (and its page
    /// cache) serves every read.
    pub(super) idle: Mutex<Vec<Reader>>,
    max_idle: usize,
    /// Commits the writer has made or tried (a batch that never got as far
    /// as its commit changed nothing).
    commits: AtomicU64,
    /// How long a kept read transaction may serve reads.
    snapshot_life: Duration,
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
    pub(super) fn new(
        path: PathBuf,
        idle: Vec<Connection>,
        max_idle: usize,
        snapshot_life: Duration,
    ) -> Self {
        Readers {
            path,
            idle: Mutex::new(idle.into_iter().map(Reader::new).collect()),
            max_idle,
            commits: AtomicU64::new(0),
            snapshot_life,
        }
    }

    fn take_idle(&self) -> Option<Reader> {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    fn put_back(&self, reader: Reader) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.max_idle {
            idle.push(reader);
        }
    }

    /// Called by the writer after each commit, whether it succeeded or not,
    /// before it answers the batch's callers.
    pub(super) fn committed(&self) {
        self.commits.fetch_add(1, Ordering::Release);
    }

    /// Called by the writer before it begins a transaction: idle readers
    /// let go of their snapshots, so that none keeps the write-ahead log
    /// from being checkpointed to its end and started over. A reader that
    /// cannot end its transaction is closed.
    pub(super) fn end_idle_snapshots(&self) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain_mut(Reader::end_snapshot);
    }

    /// Runs `query` on the calling thread on an idle connection, in the
    /// read transaction it keeps when that is still current (see the module
    /// comment). `None` when there is no idle connection or the database is
    /// locked: the caller then runs [`Readers::read_waiting`] off its
    /// thread.
    pub(super) fn read_inline<T>(
        &self,
        query: &impl Fn(&Connection) -> rusqlite::Result<T>,
    ) -> Option<Result<T, StoreError>> {
        let mut reader = self.take_idle()?;
        // Read before the snapshot is taken: a commit counted later ends it.
        let commits = self.commits.load(Ordering::Acquire);
        if let Some(kept) = reader.snapshot {
            if (kept.commits != commits || kept.began.elapsed() > self.snapshot_life)
                && !reader.end_snapshot()
            {
                return None;
            }
        }
        reader.keep_snapshot(commits);
        let result = query(&reader.conn);
        // A read that failed may have left the transaction in any state: it
        // is ended, and a reader that cannot end it is not kept.
        if result.is_ok() || reader.end_snapshot() {
            self.put_back(reader);
        }
        if is_locked(&result) {
            return None;
        }
        Some(result.map_err(unavailable))
    }

    /// Runs `query` waiting for locks; blocks, so for the blocking pool.
    /// It runs in a transaction of its own, not a kept one.
    pub(super) fn read_waiting<T>(
        &self,
        query: &impl Fn(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut reader = match self.take_idle() {
            Some(reader) => reader,
            None => Reader::new(open_reader(&self.path).map_err(unavailable)?),
        };
        if !reader.end_snapshot() {
            return Err(unavailable("a reader could not end its read transaction"));
        }
        let conn = &reader.conn;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(unavailable)?;
        let result = query(conn).map_err(unavailable);
        // Back in the pool it must not wait on the calling thread again; a
        // connection whose timeout cannot be reset is dropped instead.
        if conn.busy_timeout(Duration::ZERO).is_ok() {
            self.put_back(reader);
        }
        result
    }
}

//! The reader connections: reads run inline on an idle pooled connection
//! and move to the blocking pool only when the file is locked or no
//! connection is idle (see the store's module comment).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

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

/// The reader connections, idle ones kept for reuse.
pub(super) struct Readers {
    pub(super) path: PathBuf,
    /// Idle connections, each with no busy timeout. The last one pushed is
    /// the next one taken, so under light load one connection (and its page
    /// cache) serves every read.
    pub(super) idle: Mutex<Vec<Connection>>,
    pub(super) max_idle: usize,
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
    pub(super) fn read_inline<T>(
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
    pub(super) fn read_waiting<T>(
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

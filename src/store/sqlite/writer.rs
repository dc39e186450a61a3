//! The writer thread: it owns the only writer connection and runs the
//! queued writes in batches, one transaction per batch and one savepoint
//! per write (see the store's module comment).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::readers::Readers;
use super::{unavailable, MAX_BATCH};
use crate::store::StoreError;

/// Why a write was not done, beside the database's own errors.
#[derive(Debug, Clone, thiserror::Error)]
pub(super) enum WriteFailure {
    #[error("the SQLite writer thread has stopped")]
    WriterStopped,
    #[error("the write panicked and was rolled back")]
    Panicked,
    #[error("the write was rolled back with its batch: {0}")]
    BatchRolledBack(String),
}

/// A write queued for the writer thread.
pub(super) trait WriteJob: Send {
    /// Runs the write (inside its savepoint) and keeps the outcome; returns
    /// whether it succeeded, that is whether its changes should stay.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Records that the write failed around its own code (it panicked).
    fn fail(&mut self, failure: WriteFailure);
    /// Answers the caller: its outcome when the batch was committed (`None`),
    /// else the reason the batch was rolled back.
    fn answer(self: Box<Self>, rolled_back: Option<&WriteFailure>);
}

pub(super) struct PendingWrite<T, F> {
    pub(super) write: Option<F>,
    pub(super) outcome: Option<Result<T, StoreError>>,
    pub(super) reply: oneshot::Sender<Result<T, StoreError>>,
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
pub(super) struct Writer {
    /// `None` only while dropping.
    pub(super) jobs: Option<mpsc::Sender<Box<dyn WriteJob>>>,
    pub(super) thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread on `conn`; it tells `readers` when their
    /// kept snapshots must end (see the readers' module comment).
    pub(super) fn start(conn: Connection, readers: Arc<Readers>) -> Result<Self, StoreError> {
        let (jobs, queue) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".to_string())
            .spawn(move || run_writer(conn, &readers, queue))
            .map_err(|e| unavailable(format!("cannot start the SQLite writer thread: {e}")))?;
        Ok(Writer {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    pub(super) fn queue(&self, job: Box<dyn WriteJob>) -> Result<(), StoreError> {
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

fn run_writer(conn: Connection, readers: &Readers, queue: mpsc::Receiver<Box<dyn WriteJob>>) {
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
        run_batch(&conn, readers, batch);
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
fn run_batch(conn: &Connection, readers: &Readers, batch: Vec<Box<dyn WriteJob>>) {
    // The writes of the open transaction, answered when it ends.
    let mut in_transaction: Vec<Box<dyn WriteJob>> = Vec::with_capacity(batch.len());
    for mut job in batch {
        if conn.is_autocommit() {
            readers.end_idle_snapshots();
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
    let committed = exec(conn, "COMMIT");
    // Counted before anyone is answered: a read that starts after an answer
    // does not use a snapshot from before the commit.
    readers.committed();
    match committed {
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

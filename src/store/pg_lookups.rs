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
//! A lookup queries only when it holds a turn, and there are at most as
//! many turns as lookup connections (`turns` in `postgres.rs` says how
//! many). A lookup that finds every turn taken waits in line. When a
//! lookup is done with its turn it hands it to the first in line, which
//! then answers itself and up to `BATCH - 1` of those behind it with one
//! query (`WHERE t.hash = ANY($1)`), and tells each of them its row. A waiting
//! lookup wakes once, for its answer or for its turn; nothing waits to
//! fill a batch, so a lookup that finds a turn free runs alone at once. A
//! lookup abandoned while it answers for others passes its turn on, and
//! those it was answering for line up again.
//!
//! When the server refuses a new connection because it has too many
//! (its own `max_connections`, or a role's connection limit) while this
//! instance has lookup connections open, the lookup waits for one of them
//! to come back, up to [`WAIT_FOR_OWN`], instead of failing: a burst then
//! runs on the connections the server allows.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow};
use sqlx::{ConnectOptions, Row};
use tokio::sync::{oneshot, Notify};

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

/// At most this many tokens read by one query.
const BATCH: usize = 32;

/// A token with its grant, as a lookup answers.
type Found = (TokenRecord, GrantRecord);
type Answer = Result<Option<Found>, StoreError>;
/// One row as read: its token with its grant, or why it cannot be read.
type Read = Result<Found, StoreError>;

pub(super) struct Lookups {
    shared: Arc<Shared>,
}

struct Shared {
    options: PgConnectOptions,
    line: Mutex<Line>,
    idle: Mutex<Vec<Counted>>,
    count: Arc<Count>,
}

/// The turns and who waits for one.
struct Line {
    /// Turns nobody holds. Nobody waits while one is free.
    free: usize,
    waiting: VecDeque<Waiter>,
}

/// A lookup in line: its token, and where to tell it its answer or its
/// turn.
struct Waiter {
    hash: TokenHash,
    tell: oneshot::Sender<Told>,
}

enum Told {
    /// Another lookup's query answered this one.
    Answer(Box<Answer>),
    /// This one is to query, for itself and those behind it.
    Turn(Turn),
}

/// The right to run a query on one lookup connection. Dropped, wherever
/// that happens (its lookup done or abandoned, or never received), it goes
/// to the first lookup in line, or back among the free ones.
struct Turn {
    shared: Arc<Shared>,
    /// False once it has been handed on.
    held: bool,
}

impl Drop for Turn {
    fn drop(&mut self) {
        if std::mem::take(&mut self.held) {
            self.shared.pass_turn();
        }
    }
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
    /// At most `turns` queries at a time, each on a connection of its own
    /// (made when first needed), to the server of `options`.
    pub fn new(options: PgConnectOptions, turns: usize) -> Self {
        // sqlx would otherwise format a summary of every lookup's SQL and
        // build a `debug` event the log filter then drops. Slow lookups
        // are still logged (at `warn`, after a second).
        let options = options.log_statements(log::LevelFilter::Off);
        Lookups {
            shared: Arc::new(Shared {
                options,
                line: Mutex::new(Line {
                    free: turns.max(1),
                    waiting: VecDeque::new(),
                }),
                idle: Mutex::new(Vec::new()),
                count: Arc::default(),
            }),
        }
    }

    /// A token with its grant.
    pub async fn find_token(&self, hash: TokenHash) -> Answer {
        loop {
            let turn = match self.shared.turn_or_place(hash) {
                Ok(turn) => turn,
                Err(told) => match told.await {
                    Ok(Told::Answer(answer)) => return *answer,
                    Ok(Told::Turn(turn)) => turn,
                    // The lookup answering for this one was abandoned.
                    Err(_) => continue,
                },
            };
            return self.shared.answer(turn, hash).await;
        }
    }
}

impl Shared {
    fn line(&self) -> MutexGuard<'_, Line> {
        self.line.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A turn, taken from the free ones or from a lookup that let go of it.
    fn turn(self: &Arc<Self>) -> Turn {
        Turn {
            shared: self.clone(),
            held: true,
        }
    }

    /// A free turn, or a place at the end of the line.
    fn turn_or_place(self: &Arc<Self>, hash: TokenHash) -> Result<Turn, oneshot::Receiver<Told>> {
        let mut line = self.line();
        if line.free > 0 {
            line.free -= 1;
            return Ok(self.turn());
        }
        let (tell, told) = oneshot::channel();
        line.waiting.push_back(Waiter { hash, tell });
        Err(told)
    }

    /// Gives a turn that was let go to the first lookup in line still
    /// waiting, or makes it free.
    fn pass_turn(self: &Arc<Self>) {
        loop {
            let next = {
                let mut line = self.line();
                match line.waiting.pop_front() {
                    Some(next) => next,
                    None => {
                        line.free += 1;
                        return;
                    }
                }
            };
            match next.tell.send(Told::Turn(self.turn())) {
                Ok(()) => return,
                // That one was abandoned: the turn comes back, for the
                // next one.
                Err(told) => {
                    if let Told::Turn(mut turn) = told {
                        turn.held = false;
                    }
                }
            }
        }
    }

    /// Answers the lookup of `hash`, holding `turn`, and up to `BATCH - 1`
    /// of those waiting in line, with one query.
    async fn answer(self: &Arc<Self>, turn: Turn, hash: TokenHash) -> Answer {
        let riders: Vec<Waiter> = {
            let mut line = self.line();
            let mut riders = Vec::new();
            while riders.len() < BATCH - 1 {
                let Some(waiter) = line.waiting.pop_front() else {
                    break;
                };
                if !waiter.tell.is_closed() {
                    riders.push(waiter);
                }
            }
            riders
        };
        let mut hashes = Vec::with_capacity(riders.len() + 1);
        hashes.push(hash);
        hashes.extend(riders.iter().map(|r| r.hash));
        let rows = self.query(&hashes).await;
        // The turn goes on before the answers: the next batch's query can
        // be under way while these lookups resume.
        drop(turn);
        for rider in riders {
            let answer = match &rows {
                Ok(rows) => match rows.iter().find(|(h, _)| *h == rider.hash) {
                    Some((_, read)) => read.clone().map(Some),
                    None => Ok(None),
                },
                Err(e) => Err(e.clone()),
            };
            let _ = rider.tell.send(Told::Answer(Box::new(answer)));
        }
        // This lookup's own row is moved out, not copied.
        let mut rows = rows?;
        match rows.iter().position(|(h, _)| *h == hash) {
            Some(at) => rows.swap_remove(at).1.map(Some),
            None => Ok(None),
        }
    }

    /// The rows of `hashes` (one query), each with its hash; a row that
    /// cannot be read is an error for its token alone.
    async fn query(&self, hashes: &[TokenHash]) -> Result<Vec<(TokenHash, Read)>, StoreError> {
        if let Some(mut idle) = self.take_idle() {
            match find_tokens(&mut idle.connection, hashes).await {
                // The connection may have died while it sat idle (the
                // server restarted, say): one more try on a new one; a
                // lookup is a read, so trying again is safe.
                Err(StoreError::Unavailable(_)) => {}
                answer => return self.kept(idle, answer),
            }
        }
        let mut open = self.connect().await?;
        let answer = find_tokens(&mut open.connection, hashes).await;
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

/// Reads the tokens of `hashes` with their grants on `connection`.
async fn find_tokens(
    connection: &mut PgConnection,
    hashes: &[TokenHash],
) -> Result<Vec<(TokenHash, Read)>, StoreError> {
    macro_rules! select {
        ($condition:literal) => {
            concat!(
                "SELECT t.hash, t.grant_id, t.kind, t.scopes, t.issued_at, t.expires_at, \
                 t.revoked, t.consumed_at, ",
                grant_columns!(),
                " FROM tokens t JOIN grants g ON g.id = t.grant_id WHERE ",
                $condition
            )
        };
    }
    let query = match hashes {
        [hash] => sqlx::query(select!("t.hash = $1")).bind(&hash.0[..]),
        _ => sqlx::query(select!("t.hash = ANY($1)"))
            .bind(hashes.iter().map(|h| &h.0[..]).collect::<Vec<&[u8]>>()),
    };
    let rows = query.fetch_all(connection).await.map_err(unavailable)?;
    rows.iter().map(read_row).collect()
}

/// A row of [`find_tokens`]: its token's hash, and the token with its grant.
fn read_row(row: &PgRow) -> Result<(TokenHash, Read), StoreError> {
    let hash: &[u8] = row.try_get(0).map_err(corrupt)?;
    let hash = TokenHash(
        hash.try_into()
            .map_err(|_| corrupt("a token hash is not 32 bytes"))?,
    );
    let read = token_from_row(row, hash).and_then(|token| Ok((token, grant_from_row(row, 8)?)));
    Ok((hash, read))
}

/// Reads the token of `hash` from columns 1 to 7 of a [`find_tokens`] row
/// (decoded as `grant_from_row` decodes a grant's).
fn token_from_row(row: &PgRow, hash: TokenHash) -> Result<TokenRecord, StoreError> {
    TokenRow {
        hash,
        grant_id: row.try_get_unchecked(1).map_err(corrupt)?,
        kind: i64::from(row.try_get_unchecked::<i16, _>(2).map_err(corrupt)?),
        scopes: row.try_get_unchecked(3).map_err(corrupt)?,
        issued_at: row.try_get_unchecked(4).map_err(corrupt)?,
        expires_at: row.try_get_unchecked(5).map_err(corrupt)?,
        revoked: row.try_get_unchecked(6).map_err(corrupt)?,
        consumed_at: row.try_get_unchecked(7).map_err(corrupt)?,
    }
    .into_record()
    .map_err(corrupt)
}

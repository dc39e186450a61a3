//! The benchmark's store-read floor (see `bench/README.md`): what one cold
//! lookup costs on its own, step by step, on the store a bench instance
//! filled, away from the proxy's work.
//!
//! ```text
//! bench_store_read --config <refgate.toml> --tokens <file> [--passes 5]
//! ```
//!
//! Every token of `--tokens` is looked up once per pass, in the file's
//! order, on one thread; each step prints the median over the passes of its
//! thread CPU time per lookup, in nanoseconds:
//!
//! - `sqlite_token`: SQLite alone, one B-tree (`SELECT kind FROM tokens
//!   WHERE hash = ?`);
//! - `sqlite_token_same`, `sqlite_token_same_one_transaction`: that
//!   statement with the first token every time (its pages in the CPU's
//!   caches: the statement's fixed cost), alone and all in one read
//!   transaction (without each read's transaction and its two `fcntl` locks);
//! - `sqlite_join`: SQLite alone, the three B-trees a lookup descends (the
//!   token, the grants' id index, the grant's row) and one column;
//! - `store_find_token`: the store's read as refgate makes it (every column
//!   of the token and its grant, decoded into records);
//! - `lookup_cold`: a lookup with no cache (the read, the custom data opened
//!   and its credentials prepared): refgate's cold path without the proxy;
//! - `lookup_hot`: the same lookups from a cache holding every token: the
//!   hot path's share.
//!
//! The SQLite steps open the file as refgate's readers do (the same page
//! cache and memory map). Output: one `step nanoseconds` line each. Exits 1
//! when a token is not found active (the figures would not be lookups).

use std::path::PathBuf;
use std::time::Duration;

use futures::executor::block_on;
use refgate::config::{LoadMode, StoreUrl};
use refgate::crypto::{hash_token, TokenHash};
use refgate::lookup::{CacheSettings, TokenLookup};
use rusqlite::{params, Connection, OpenFlags};

/// As refgate's reader connections (`src/store/sqlite/mod.rs`).
const READER_CACHE_KIB: i64 = 512;
const READER_MMAP_BYTES: i64 = 1 << 30;

struct Args {
    config: PathBuf,
    tokens: PathBuf,
    passes: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut config = None;
    let mut tokens = None;
    let mut passes = 5;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--config" => config = Some(PathBuf::from(value)),
            "--tokens" => tokens = Some(PathBuf::from(value)),
            "--passes" => {
                passes = value
                    .parse()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("--passes: `{value}` is not a positive number"))?
            }
            other => return Err(format!("unknown flag `{other}`")),
        }
    }
    Ok(Args {
        config: config.ok_or("--config is required")?,
        tokens: tokens.ok_or("--tokens is required")?,
        passes,
    })
}

fn fail(message: &str) -> ! {
    eprintln!("bench_store_read: {message}");
    std::process::exit(2)
}

/// This thread's CPU time so far.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "CLOCK_THREAD_CPUTIME_ID is available on Linux");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The median over `passes` of the CPU time per lookup of one pass of
/// `each` over `hashes`, in nanoseconds. `each` answers whether the token
/// was found; a pass that misses one is an error.
fn measure(
    passes: usize,
    hashes: &[TokenHash],
    mut each: impl FnMut(&TokenHash) -> bool,
) -> Result<u64, String> {
    let mut per_lookup = Vec::with_capacity(passes);
    for _ in 0..passes {
        let start = thread_cpu();
        let found = hashes.iter().filter(|h| each(h)).count();
        let spent = thread_cpu() - start;
        if found != hashes.len() {
            return Err(format!("{} of {} tokens found", found, hashes.len()));
        }
        per_lookup.push(spent.as_nanos() as u64 / hashes.len() as u64);
    }
    per_lookup.sort_unstable();
    Ok(per_lookup[passes / 2])
}

fn open_like_a_reader(path: &std::path::Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.pragma_update(None, "cache_size", -READER_CACHE_KIB)?;
    conn.pragma_update(None, "mmap_size", READER_MMAP_BYTES)?;
    Ok(conn)
}

/// One SQLite statement over every hash; found when it returns a row.
fn sqlite_step(
    conn: &Connection,
    sql: &str,
    passes: usize,
    hashes: &[TokenHash],
) -> Result<u64, String> {
    let mut statement = conn.prepare(sql).map_err(|e| e.to_string())?;
    measure(passes, hashes, |hash| {
        statement
            .query_row(params![&hash.0[..]], |row| row.get::<_, i64>(0))
            .is_ok()
    })
}

fn run(args: &Args) -> Result<Vec<(&'static str, u64)>, String> {
    let config = refgate::config::load(&args.config, LoadMode::Check).map_err(|e| e.to_string())?;
    let StoreUrl::Sqlite(path) = &config.store.url else {
        return Err("the store is not an SQLite file".into());
    };
    let text = std::fs::read_to_string(&args.tokens)
        .map_err(|e| format!("{}: {e}", args.tokens.display()))?;
    let hashes: Vec<TokenHash> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|token| hash_token("", token))
        .collect();
    if hashes.is_empty() {
        return Err("no tokens".into());
    }

    let mut steps = Vec::new();
    let conn = open_like_a_reader(path).map_err(|e| e.to_string())?;
    steps.push((
        "sqlite_token",
        sqlite_step(
            &conn,
            "SELECT kind FROM tokens WHERE hash = ?1",
            args.passes,
            &hashes,
        )?,
    ));
    // The same token every time: its pages stay in the CPU's caches, so
    // what is left is the statement's fixed cost (a read transaction with
    // its locks, bind, step, reset).
    let same = vec![hashes[0]; hashes.len()];
    steps.push((
        "sqlite_token_same",
        sqlite_step(
            &conn,
            "SELECT kind FROM tokens WHERE hash = ?1",
            args.passes,
            &same,
        )?,
    ));
    // As above inside one read transaction: without each read's own
    // transaction and the two file locks (fcntl) it takes and drops.
    conn.execute_batch("BEGIN").map_err(|e| e.to_string())?;
    let in_one_transaction = sqlite_step(
        &conn,
        "SELECT kind FROM tokens WHERE hash = ?1",
        args.passes,
        &same,
    );
    conn.execute_batch("COMMIT").map_err(|e| e.to_string())?;
    steps.push(("sqlite_token_same_one_transaction", in_one_transaction?));
    steps.push((
        "sqlite_join",
        sqlite_step(
            &conn,
            "SELECT g.version FROM tokens t JOIN grants g ON g.id = t.grant_id \
             WHERE t.hash = ?1",
            args.passes,
            &hashes,
        )?,
    ));
    drop(conn);

    // The store's reads run inline on the calling thread when a reader is
    // idle, as here; the runtime is only entered (for anything that would
    // leave the thread), so every lookup's work is this thread's.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let _entered = runtime.enter();
    let store = runtime
        .block_on(refgate::store::open(
            &config.store.url,
            config.store.max_connections,
        ))
        .map_err(|e| e.to_string())?;
    steps.push((
        "store_find_token",
        measure(args.passes, &hashes, |hash| {
            matches!(block_on(store.find_token(hash)), Ok(Some(_)))
        })?,
    ));
    let keys = config.store.data_keys.clone();
    let settings = |capacity| CacheSettings {
        capacity,
        max_ttl: Duration::from_secs(3600),
        negative_ttl: Duration::from_secs(5),
    };
    let cold = TokenLookup::new(store.clone(), keys.clone(), &settings(0));
    let hot = TokenLookup::new(store, keys, &settings(hashes.len() as u64 * 2));
    let active = |lookup: &TokenLookup, hash: &TokenHash| {
        matches!(block_on(lookup.find_active_hash("", *hash)), Ok(Some(_)))
    };
    steps.push((
        "lookup_cold",
        measure(args.passes, &hashes, |hash| active(&cold, hash))?,
    ));
    // Fill the cache first, then count hits only.
    measure(1, &hashes, |hash| active(&hot, hash))?;
    steps.push((
        "lookup_hot",
        measure(args.passes, &hashes, |hash| active(&hot, hash))?,
    ));
    Ok(steps)
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| fail(&e));
    match run(&args) {
        Ok(steps) => {
            for (step, nanos) in steps {
                println!("{step} {nanos}");
            }
        }
        Err(e) => {
            eprintln!("bench_store_read: {e}");
            std::process::exit(1)
        }
    }
}

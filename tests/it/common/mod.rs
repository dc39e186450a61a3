//! Test harness: starts the real `refgate` binary on a temporary SQLite file
//! and talks HTTP to it. The harness binds refgate's loopback sockets itself
//! (port 0) and passes them to the process (`LISTEN_FDS`), keeping them
//! across restarts: no other process can take a port in between.
#![allow(dead_code)]

pub mod oidc;
pub mod raw;
pub mod upstream;

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use reqwest::StatusCode;

/// A fixed data key for tests (base64 of 32 bytes).
pub const DATA_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// A loopback listening socket on a port of the kernel's choosing.
pub fn loopback_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port")
}

/// A loopback port where nothing listens, reserved for as long as this
/// lives (bound without listening: a connection is refused, and no other
/// process can take the port meanwhile).
pub struct ClosedPort {
    pub port: u16,
    _socket: tokio::net::TcpSocket,
}

/// See [`ClosedPort`].
pub fn closed_port() -> ClosedPort {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind an ephemeral port");
    let port = socket.local_addr().expect("local address").port();
    ClosedPort {
        port,
        _socket: socket,
    }
}

/// Makes `command` start with `sockets` as its inherited listeners
/// (`LISTEN_FDS`, names in `LISTEN_FDNAMES`, descriptors from 3 on).
pub fn pass_listeners(command: &mut Command, sockets: &[(&str, &TcpListener)]) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    const MAX: usize = 8;
    assert!(sockets.len() <= MAX, "too many sockets");
    let mut fds = [-1; MAX];
    for (slot, (_, listener)) in fds.iter_mut().zip(sockets) {
        *slot = listener.as_raw_fd();
    }
    let count = sockets.len();
    let names: Vec<&str> = sockets.iter().map(|(name, _)| *name).collect();
    command
        .env("LISTEN_FDS", count.to_string())
        .env("LISTEN_FDNAMES", names.join(":"))
        .env_remove("LISTEN_PID");
    // SAFETY: only async-signal-safe calls (fcntl, dup2, close) on
    // descriptors this process owns, between fork and exec.
    unsafe {
        command.pre_exec(move || {
            // Move every source above the target range first, so that no
            // dup2 below overwrites a source that is still to be moved.
            let mut high = [-1; MAX];
            for i in 0..count {
                high[i] = libc::fcntl(fds[i], libc::F_DUPFD, 64);
                if high[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, fd) in high.iter().enumerate().take(count) {
                if libc::dup2(*fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(*fd);
            }
            Ok(())
        });
    }
}

/// Runs `command` to its end, capturing stdout and stderr, and fails the
/// test when it takes longer than `limit` (a hung child must not hang the
/// suite).
pub fn output_within(command: &mut Command, limit: Duration) -> std::process::Output {
    use std::io::Read;
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {command:?}: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    std::process::Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// How long a `refgate` command that should end by itself may take.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(30);

/// `sha256:<hex>` of a secret, as `refgate secret hash` prints it.
pub fn secret_hash(secret: &str) -> String {
    refgate::crypto::secret_hash_text(secret)
}

/// The standard test clients; each one's secret is `<id>-secret`.
pub fn standard_clients() -> String {
    let client = |id: &str, body: &str| {
        format!(
            "[[clients]]\nid = \"{id}\"\nsecret_hash = \"{}\"\n{body}\n",
            secret_hash(&format!("{id}-secret"))
        )
    };
    [
        client(
            "app",
            r#"grant_types = ["client_credentials", "refresh_token", "urn:ietf:params:oauth:grant-type:token-exchange", "urn:ietf:params:oauth:grant-type:token-exchange-mutate"]
scopes = ["photos.read", "photos.write", "reports.read", "offline_access"]
exchange_from = ["*", "https://accounts.test.example"]"#,
        ),
        client(
            "other",
            r#"grant_types = ["client_credentials", "refresh_token", "urn:ietf:params:oauth:grant-type:token-exchange-mutate"]
scopes = ["photos.read", "offline_access"]"#,
        ),
        client(
            "middle",
            r#"grant_types = ["client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange-mutate"]
scopes = ["photos.read", "photos.write", "reports.read", "offline_access"]
introspect = true
reveal_custom = true
mutate = true"#,
        ),
        client(
            "introspector",
            r#"grant_types = ["client_credentials"]
scopes = ["photos.read"]
introspect = true"#,
        ),
        client(
            "minter",
            r#"grant_types = ["arbitrary_token", "refresh_token"]
scopes = ["photos.read", "offline_access"]
allowed_issuers = ["https://idp.example.com"]
access_token_ttl = "10m""#,
        ),
        client(
            "gateway",
            r#"grant_types = ["urn:ietf:params:oauth:grant-type:token-exchange", "refresh_token"]
scopes = ["reports.read", "offline_access"]
exchange_from = ["*"]"#,
        ),
    ]
    .join("\n")
}

/// What to put in a test configuration.
#[derive(Clone)]
pub struct Options {
    /// `[tokens]` lines.
    pub tokens: String,
    /// `[gateway]` lines.
    pub gateway: String,
    /// Extra TOML appended at the end (clients, trusted issuers, routes...).
    pub extra: String,
    /// Whether to include [`standard_clients`].
    pub standard_clients: bool,
    /// A store URL to use instead of a fresh one (instances sharing a store).
    pub store_url: Option<String>,
    /// Environment variables of the refgate process (never of this test
    /// process: it runs tests on many threads).
    pub env: Vec<(String, String)>,
    /// The token service's socket, bound by the test beforehand (its port
    /// must be known before the configuration is written).
    pub token_listener: Option<std::sync::Arc<TcpListener>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tokens: String::new(),
            gateway: String::new(),
            extra: String::new(),
            standard_clients: true,
            store_url: None,
            env: Vec::new(),
            token_listener: None,
        }
    }
}

/// A running refgate process.
pub struct Refgate {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub db_path: PathBuf,
    pub log_path: PathBuf,
    pub token_port: u16,
    pub proxy_port: u16,
    pub base: String,
    pub proxy: String,
    /// The store URL in the configuration.
    pub store_url: String,
    /// The sockets passed to every start of this instance, by name.
    listeners: Vec<(&'static str, TcpListener)>,
    /// Environment variables set for every start of this instance.
    env: Vec<(String, String)>,
    child: Option<Child>,
    /// A database this instance created and drops at the end.
    owned_database: Option<PgDatabase>,
}

impl Refgate {
    /// Starts refgate with the standard clients.
    pub fn start() -> Self {
        Self::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let token_listener = match &options.token_listener {
            Some(l) => l.try_clone().expect("duplicate the token service socket"),
            None => loopback_listener(),
        };
        let proxy_listener = loopback_listener();
        let token_port = token_listener.local_addr().expect("address").port();
        let proxy_port = proxy_listener.local_addr().expect("address").port();
        let db_path = dir.path().join("data").join("refgate.db");
        let (store_url, owned_database) = match options.store_url.clone() {
            Some(url) => (url, None),
            None if test_store_is_postgres() => {
                let db = PgDatabase::create();
                (db.url.clone(), Some(db))
            }
            None => ("sqlite://data/refgate.db".to_string(), None),
        };
        let config = format!(
            r#"issuer = "http://127.0.0.1:{token_port}"

[listen]
proxy = "127.0.0.1:{proxy_port}"
token_service = "127.0.0.1:{token_port}"

[store]
url = "{store_url}"
data_key = "{DATA_KEY}"
{store_limits}
[tokens]
{tokens}

[gateway]
{gateway}

{clients}

{authority}

{extra}
"#,
            store_limits = if store_url.starts_with("postgres") {
                format!("max_connections = {PG_CONNECTIONS_PER_INSTANCE}\n")
            } else {
                String::new()
            },
            tokens = options.tokens,
            gateway = options.gateway,
            clients = if options.standard_clients {
                standard_clients()
            } else {
                String::new()
            },
            // Stored credentials must name a configured authority: tests
            // that store one without running an authority get `photos-as`,
            // which is never called.
            authority = if options.extra.contains("name = \"photos-as\"") {
                ""
            } else {
                AUTHORITY
            },
            extra = options.extra,
        );
        let config_path = dir.path().join("refgate.toml");
        std::fs::write(&config_path, config).expect("write config");
        let log_path = dir.path().join("refgate.log");
        let mut server = Refgate {
            base: format!("http://127.0.0.1:{token_port}"),
            proxy: format!("http://127.0.0.1:{proxy_port}"),
            dir,
            config_path,
            db_path,
            log_path,
            token_port,
            proxy_port,
            store_url,
            listeners: vec![("token_service", token_listener), ("proxy", proxy_listener)],
            env: options.env,
            child: None,
            owned_database,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open log");
        let mut command = self.command();
        command
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .env("RUST_LOG", "info,refgate=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = command.spawn().expect("start refgate");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("refgate exited early ({status}):\n{}", self.log());
                }
            }
            if raw_get_ok(self.token_port, "/healthz") && proxy_answers(self.proxy_port) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("refgate did not become ready:\n{}", self.log());
    }

    /// Everything refgate logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for exit; returns the exit code (`None`
    /// when it was not running).
    #[must_use = "check the exit code, or use stop_cleanly"]
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("refgate did not stop within 15 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The `refgate` binary, set to start with this instance's sockets;
    /// the caller adds the arguments. For tests that run it their own way
    /// (another log filter or format) while this instance is stopped.
    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_refgate"));
        let sockets: Vec<(&str, &TcpListener)> =
            self.listeners.iter().map(|(n, l)| (*n, l)).collect();
        pass_listeners(&mut command, &sockets);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Sets an environment variable for the next starts of this instance.
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.env.retain(|(n, _)| n != name);
        self.env.push((name.to_string(), value.to_string()));
    }

    /// A metrics listener for the next start (listeners take a restart);
    /// the caller adds `metrics = "127.0.0.1:<port>"` to `[listen]`.
    pub fn reserve_metrics_port(&mut self) -> u16 {
        self.reserve_listener("metrics")
    }

    /// The admin API's listener, as [`Refgate::reserve_metrics_port`]
    /// (`admin = "127.0.0.1:<port>"`).
    pub fn reserve_admin_port(&mut self) -> u16 {
        self.reserve_listener("admin")
    }

    fn reserve_listener(&mut self, name: &'static str) -> u16 {
        let listener = loopback_listener();
        let port = listener.local_addr().expect("address").port();
        self.listeners.retain(|(held, _)| *held != name);
        self.listeners.push((name, listener));
        port
    }

    /// Writes `config` as this instance's file and runs `refgate check` on
    /// it (within 30 s).
    pub fn check_config(&self, config: &str) -> std::process::Output {
        std::fs::write(&self.config_path, config).expect("write config");
        output_within(
            self.command()
                .arg("check")
                .arg("--config")
                .arg(&self.config_path),
            Duration::from_secs(30),
        )
    }

    /// Asserts that `refgate check` refuses `config` and names `key`.
    pub fn assert_check_refuses(&self, config: &str, key: &str) {
        let out = self.check_config(config);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{key}: accepted");
        assert!(stderr.contains(key), "{key}: {stderr}");
    }

    /// Stops and starts again on the same configuration and data.
    pub fn restart(&mut self) {
        if self.is_running() {
            self.stop_cleanly();
        }
        self.spawn();
    }

    /// Whether the harness started this instance and has not stopped it.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Sends SIGTERM and asserts that refgate exits 0.
    pub fn stop_cleanly(&mut self) {
        let code = self.stop();
        assert_eq!(code, Some(0), "refgate did not exit 0:\n{}", self.log());
    }

    /// Waits (up to 20 s) until the log holds `text`; returns the log.
    pub fn wait_for_log(&self, text: &str) -> String {
        wait_for_text(&self.log_path, text)
    }

    /// Appends to the log file a marker (useful to split phases).
    pub fn mark_log(&self, text: &str) {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log_path)
        {
            let _ = writeln!(f, "--- {text}");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POST a form with Basic client authentication; returns status and JSON
    /// (Null when the body is not JSON).
    pub async fn post_form(
        &self,
        path: &str,
        client: Option<(&str, &str)>,
        params: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut request = http().post(self.url(path)).form(params);
        if let Some((id, secret)) = client {
            request = request.basic_auth(id, Some(secret));
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let body = response.bytes().await.expect("body");
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// `POST /oauth2/token` as `client` (secret `<client>-secret`).
    pub async fn token(&self, client: &str, params: &[(&str, &str)]) -> (StatusCode, Value) {
        let secret = format!("{client}-secret");
        self.post_form("/oauth2/token", Some((client, &secret)), params)
            .await
    }

    /// `grant_type=refresh_token` as `client`.
    pub async fn refresh(&self, client: &str, refresh_token: &str) -> (StatusCode, Value) {
        self.token(
            client,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
        .await
    }

    /// A client_credentials token for `client`, asserting success.
    pub async fn client_token(&self, client: &str, scope: Option<&str>) -> Value {
        let mut params = vec![("grant_type", "client_credentials")];
        if let Some(s) = scope {
            params.push(("scope", s));
        }
        let (status, body) = self.token(client, &params).await;
        assert_eq!(status, StatusCode::OK, "token request failed: {body}");
        body
    }

    /// Introspects as `middle` (introspect + reveal_custom).
    pub async fn introspect(&self, token: &str) -> Value {
        let (status, body) = self.introspect_as("middle", token).await;
        assert_eq!(status, StatusCode::OK, "introspection failed: {body}");
        body
    }

    /// `POST /oauth2/introspect` as `client` (secret `<client>-secret`).
    pub async fn introspect_as(&self, client: &str, token: &str) -> (StatusCode, Value) {
        let secret = format!("{client}-secret");
        self.post_form(
            "/oauth2/introspect",
            Some((client, &secret)),
            &[("token", token)],
        )
        .await
    }

    /// An access token of `client` (client_credentials, its default scope).
    pub async fn access_token(&self, client: &str) -> String {
        str_of(&self.client_token(client, None).await, "access_token").to_string()
    }

    /// Stores `credential` as `custom.credentials.<name>` in the grant of
    /// `token` (a merge patch as `middle`), asserting success.
    pub async fn store_credential(&self, token: &str, name: &str, credential: Value) {
        let (status, body) = self
            .mutate(
                &serde_json::json!({"token": token, "patch": {"credentials": {name: credential}}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "mutate failed: {body}");
    }

    /// An `app` token whose grant holds the `photos` credential `down-abc`
    /// (see [`credential`]).
    pub async fn token_with_photos(&self) -> String {
        let token = self.access_token("app").await;
        self.store_credential(&token, "photos", credential("down-abc", "Bearer"))
            .await;
        token
    }

    /// `POST /oauth2/mutate` as `middle` with a JSON body.
    pub async fn mutate(&self, body: &Value) -> (StatusCode, Value) {
        let response = http()
            .post(self.url("/oauth2/mutate"))
            .basic_auth("middle", Some("middle-secret"))
            .json(body)
            .send()
            .await
            .expect("request");
        let status = response.status();
        let bytes = response.bytes().await.expect("body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

/// Waits (up to 20 s) until the file at `path` holds `text`; returns the
/// file's text.
pub fn wait_for_text(path: &std::path::Path, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = std::fs::read_to_string(path).unwrap_or_default();
        if found.contains(text) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no `{text}` in {} within 20 s:\n{found}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether this run tests against PostgreSQL (`REFGATE_TEST_STORE=postgres`)
/// instead of SQLite.
pub fn test_store_is_postgres() -> bool {
    std::env::var("REFGATE_TEST_STORE").is_ok_and(|v| v == "postgres")
}

/// The PostgreSQL server tests use (trust authentication on loopback).
pub const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// `store.max_connections` of an instance on PostgreSQL: half for token
/// lookups, half for the pool, one more for notifications. The server
/// allows 100 connections in all; up to eight tests run at once, some with
/// two instances, and at the default of 16 a burst of them went past that
/// limit ("too many clients"), which refgate rightly answers with 503.
const PG_CONNECTIONS_PER_INSTANCE: u32 = 4;

/// An empty database on the test PostgreSQL server, for one test at a time,
/// so runs and tests never collide.
///
/// `CREATE DATABASE` costs most of a second of disk writes, and the suite
/// needs hundreds: a database is emptied when its test is done (its
/// connections ended, its `public` schema dropped and made again) and
/// handed to the next test of this process. Databases of test processes
/// that are gone are dropped when the first one is needed.
pub struct PgDatabase {
    pub name: String,
    pub url: String,
}

/// Emptied databases of this process, ready for the next test.
static FREE_DATABASES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

impl PgDatabase {
    pub fn create() -> Self {
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(drop_leftovers_of_finished_runs);
        let reused = FREE_DATABASES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        let name = reused.unwrap_or_else(|| {
            static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let name = format!("{DATABASE_PREFIX}{}_{n}", this_process());
            psql(&format!("CREATE DATABASE {name}"));
            // A commit need not wait for its WAL flush: that only matters
            // when the PostgreSQL server itself crashes, which no test does.
            psql(&format!(
                "ALTER DATABASE {name} SET synchronous_commit = off"
            ));
            name
        });
        PgDatabase {
            url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
            name,
        }
    }

    /// Closes the database to new connections and ends the existing ones:
    /// an outage of this test's database only, leaving other tests' alone.
    pub fn block(&self) {
        psql(&format!(
            "ALTER DATABASE {} WITH ALLOW_CONNECTIONS false",
            self.name
        ));
        psql(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
            self.name
        ));
    }

    /// Ends the outage of [`PgDatabase::block`].
    pub fn unblock(&self) {
        psql(&format!(
            "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true",
            self.name
        ));
    }
}

/// Names of test databases: the prefix, the test process (see
/// `this_process`), a counter.
const DATABASE_PREFIX: &str = "refgate_test_";

/// A process as `<pid>_<start>`: its id and when it started (in clock ticks
/// since boot). Ids are reused, on a fresh machine often by the same test
/// run; with the start time a database of a finished run is never taken
/// for one of a running process, nor a new name for an old one.
fn this_process() -> String {
    let pid = std::process::id();
    format!("{pid}_{}", process_start(pid).unwrap_or(0))
}

/// When process `pid` started, if it runs.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: fields are counted after
    // its closing parenthesis; the start time is field 22.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Drops the test databases whose test process no longer runs (a process
/// keeps its emptied databases to the end and cannot drop them then), then
/// the roles such a process made for a test (named after its database).
fn drop_leftovers_of_finished_runs() {
    for name in names_of_finished_runs("pg_database", "datname") {
        psql_quietly(
            PG_ADMIN,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        );
    }
    for name in names_of_finished_runs("pg_roles", "rolname") {
        psql_quietly(PG_ADMIN, &format!("DROP ROLE IF EXISTS {name}"));
    }
}

/// The names in `column` of the catalog `table` that belong to a test
/// process that no longer runs.
fn names_of_finished_runs(table: &str, column: &str) -> Vec<String> {
    psql_rows(
        PG_ADMIN,
        &format!("SELECT {column} FROM {table} WHERE {column} LIKE '{DATABASE_PREFIX}%'"),
    )
    .into_iter()
    .filter(|name| {
        let mut parts = name.strip_prefix(DATABASE_PREFIX).unwrap_or("").split('_');
        let pid = parts.next().and_then(|pid| pid.parse::<u32>().ok());
        let start = parts.next().and_then(|start| start.parse::<u64>().ok());
        match (pid, start) {
            (Some(pid), Some(start)) => process_start(pid) != Some(start),
            _ => true,
        }
    })
    .collect()
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Open to connections again (a test may have closed it), end what
        // is still connected, and empty it.
        let emptied = Command::new("psql")
            .args(["-q", "-X", "-v", "ON_ERROR_STOP=1", PG_ADMIN])
            .arg("-c")
            .arg(format!(
                "ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true; \
                 SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{name}' AND pid <> pg_backend_pid()",
                name = self.name
            ))
            .arg("-c")
            .arg(format!("\\connect {}", self.name))
            .arg("-c")
            .arg("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if emptied {
            FREE_DATABASES
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(self.name.clone());
        } else {
            psql_quietly(
                PG_ADMIN,
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            );
        }
    }
}

/// Runs one SQL statement as the PostgreSQL superuser, asserting success.
pub fn psql(sql: &str) {
    psql_in(PG_ADMIN, sql);
}

/// Runs one SQL statement on the database of `url`, asserting success.
pub fn psql_in(url: &str, sql: &str) {
    psql_rows(url, sql);
}

/// Runs one query on the database of `url`, asserting success: the rows,
/// their columns joined by `|`.
pub fn psql_rows(url: &str, sql: &str) -> Vec<String> {
    let output = Command::new("psql")
        .args([
            "-q",
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            url,
            "-c",
            sql,
        ])
        .output()
        .expect("run psql (is the PostgreSQL client installed?)");
    assert!(
        output.status.success(),
        "psql `{sql}` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Runs one SQL statement on the database of `url`, whatever comes of it
/// (clean-up that must not panic): whether it succeeded.
pub fn psql_quietly(url: &str, sql: &str) -> bool {
    Command::new("psql")
        .args(["-q", "-X", "-v", "ON_ERROR_STOP=1", url, "-c", sql])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

impl Drop for Refgate {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // A failing test shows what refgate said: the cause of a 503 or a
        // refused start is in its log, and the temporary directory holding
        // it goes away with the test.
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(LOG_LINES_ON_FAILURE).collect();
            eprintln!(
                "---- the last {} lines of refgate's log ({}) ----",
                tail.len(),
                self.base
            );
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// How much of an instance's log a failing test prints.
const LOG_LINES_ON_FAILURE: usize = 40;

/// A plain blocking `GET` over a raw socket (usable from async tests):
/// whether the answer is 200.
pub fn raw_get_ok(port: u16, path: &str) -> bool {
    use std::io::Read;
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer.starts_with(b"HTTP/1.1 200")
}

/// Whether the proxy on `port` answers HTTP. The harness holds the
/// listening socket, so a connection succeeds before refgate serves: only
/// an answer says pingora is up. The request lacks `Host`, so refgate
/// refuses it itself and no upstream ever sees it.
pub fn proxy_answers(port: u16) -> bool {
    use std::io::Read;
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream
        .write_all(b"GET /ready HTTP/1.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = [0u8; 9];
    stream.read_exact(&mut answer).is_ok() && answer.starts_with(b"HTTP/1.")
}

/// A shared HTTP client for tests (no proxy from the environment).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// The string at `key` of a JSON body.
pub fn str_of<'a>(body: &'a Value, key: &str) -> &'a str {
    body[key]
        .as_str()
        .unwrap_or_else(|| panic!("`{key}` missing in {body}"))
}

/// Asserts an RFC 6749 §5.2 error answer: this status, this `error`, and
/// an `error_description`.
pub fn assert_oauth_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str) {
    assert_eq!(status, expected, "unexpected status, body: {body}");
    assert_eq!(body["error"], code, "unexpected error in {body}");
    assert!(
        body["error_description"].is_string(),
        "no error_description in {body}"
    );
}

/// [`assert_oauth_error`] for a 400.
pub fn assert_bad_request(status: StatusCode, body: &Value, code: &str) {
    assert_oauth_error(status, body, StatusCode::BAD_REQUEST, code);
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// An access and a refresh token of a grant held by `app`: `app` exchanges
/// its own client_credentials token, asking for `scope` (which must include
/// `offline_access`).
pub async fn refreshable(server: &Refgate, scope: &str) -> (String, String) {
    let subject = server.client_token("app", None).await;
    let (status, body) = server
        .token(
            "app",
            &[
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", str_of(&subject, "access_token")),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
                ("scope", scope),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "exchange failed: {body}");
    (
        str_of(&body, "access_token").to_string(),
        str_of(&body, "refresh_token").to_string(),
    )
}

/// A stored credential of the never-called `photos-as` authority (see
/// [`AUTHORITY`]) that is valid for an hour.
pub fn credential(access_token: &str, token_type: &str) -> Value {
    serde_json::json!({
        "access_token": access_token,
        "token_type": token_type,
        "expires_at": unix_now() + 3600,
        "authority": "photos-as",
    })
}

/// Whether `needle` occurs in `haystack` (an empty needle never does).
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The RFC 8693 token-exchange grant type.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// refgate's scope-mutating token exchange.
pub const EXCHANGE_MUTATE: &str = "urn:ietf:params:oauth:grant-type:token-exchange-mutate";
/// The RFC 8693 token type of an access token.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// An access and a refresh token `minter` mints for `subject` (issuer
/// `https://idp.example.com`, scope `photos.read offline_access`), with
/// `extra` form parameters.
pub async fn minted_pair(
    server: &Refgate,
    subject: &str,
    extra: &[(&str, &str)],
) -> (String, String) {
    let mut params = vec![
        ("grant_type", "arbitrary_token"),
        ("subject", subject),
        ("issuer", "https://idp.example.com"),
        ("scope", "photos.read offline_access"),
    ];
    params.extend_from_slice(extra);
    let (status, body) = server.token("minter", &params).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (
        str_of(&body, "access_token").to_string(),
        str_of(&body, "refresh_token").to_string(),
    )
}

/// An authority for route credentials in tests that never refresh: its
/// endpoint is never called.
pub const AUTHORITY: &str = r#"[[authorities]]
name = "photos-as"
token_endpoint = "http://127.0.0.1:9/token"
client_id = "gateway"
client_secret = "unused"
"#;

/// A `[[routes]]` entry; `more` holds extra lines.
pub fn route(name: &str, prefix: &str, upstream: &str, more: &str) -> String {
    format!(
        "[[routes]]\nname = \"{name}\"\npath_prefix = \"{prefix}\"\nupstream = \"{upstream}\"\n{more}\n"
    )
}

/// A route that requires `photos.read` and sends the credential `photos`;
/// `more` holds extra lines.
pub fn credential_route(name: &str, prefix: &str, upstream: &str, more: &str) -> String {
    route(
        name,
        prefix,
        upstream,
        &format!("required_scopes = [\"photos.read\"]\ncredential = \"photos\"\n{more}"),
    )
}

/// The standard protected route: `/photos/`, scope `photos.read`,
/// credential `photos`.
pub fn photos_route(upstream: &str) -> String {
    credential_route("photos", "/photos/", upstream, "")
}

/// A route without authentication; `more` holds extra lines.
pub fn public_route(name: &str, prefix: &str, upstream: &str, more: &str) -> String {
    route(name, prefix, upstream, &format!("auth = \"none\"\n{more}"))
}

/// The space-separated scopes of a JSON string, sorted.
pub fn sorted_scopes(value: &serde_json::Value) -> Vec<String> {
    let mut scopes: Vec<String> = value
        .as_str()
        .unwrap_or_else(|| panic!("scope is not a string: {value}"))
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    scopes.sort_unstable();
    scopes
}

/// Writes `custom` as the custom data of the grant of `token`, straight
/// into the store refgate uses, sealed with its data key: data as an older
/// refgate (or a store restored from elsewhere) may have left it, which the
/// endpoints would refuse to write today. Call it before refgate has
/// looked the token up (SQLite instances do not hear of other processes'
/// writes until their cache entry expires).
pub async fn plant_custom(server: &Refgate, token: &str, custom: serde_json::Value) {
    use refgate::config::{Secret, StoreUrl};
    use refgate::lookup::{CacheSettings, TokenLookup};
    use refgate::store::{GrantChange, GrantUpdate};
    let url = if server.store_url.starts_with("postgres") {
        StoreUrl::Postgres(Secret::new(server.store_url.clone()))
    } else {
        StoreUrl::Sqlite(server.db_path.clone())
    };
    let store = refgate::store::open(&url, 2).await.expect("open the store");
    let key = refgate::crypto::DataKey::from_base64(DATA_KEY).expect("data key");
    let settings = CacheSettings {
        capacity: 0,
        max_ttl: Duration::from_secs(1),
        negative_ttl: Duration::from_secs(1),
    };
    let keys = refgate::crypto::DataKeys::new(key, Vec::new());
    let lookup = TokenLookup::new(store.clone(), std::sync::Arc::new(keys), &settings);
    let (_, grant) = store
        .find_token(&refgate::crypto::hash_token("", token))
        .await
        .expect("store")
        .expect("the token is stored");
    let serde_json::Value::Object(custom) = custom else {
        panic!("custom data is an object");
    };
    let change = GrantChange {
        // Sealed for the version this write gives the grant.
        custom_sealed: Some(lookup.seal_custom(&grant.id, grant.version + 1, &custom)),
        ..GrantChange::default()
    };
    let updated = store
        .update_grant(&grant.id, grant.version, &change)
        .await
        .expect("store");
    assert!(matches!(updated, GrantUpdate::Updated(_)), "{updated:?}");
}

/// What `jose` (node, outside refgate) says of `jwt`, verified with only
/// the JWKS at `jwks_uri`: `{"ok":true,"header":…,"payload":…}` or
/// `{"ok":false,"error":…}`. `audience` `-`: none to check.
pub fn jose_verify(jwks_uri: &str, issuer: &str, audience: &str, jwt: &str, typ: &str) -> Value {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/oidc-as");
    let output = output_within(
        Command::new("node")
            .arg("verify-jwt.mjs")
            .arg(jwks_uri)
            .arg(issuer)
            .arg(audience)
            .arg(jwt)
            .arg(typ)
            .current_dir(dir),
        Duration::from_secs(30),
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "node printed {:?} / {:?}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

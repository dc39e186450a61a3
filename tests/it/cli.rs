//! The command line (SPEC 1): `secret hash`, `key generate`, `check`,
//! `--help` everywhere, and `--log-format json` before or after the
//! subcommand.

use crate::common::*;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Value;

fn refgate() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_refgate"));
    command.env_remove("RUST_LOG").stdin(Stdio::null());
    command
}

fn run(command: &mut Command) -> Output {
    output_within(command, COMMAND_LIMIT)
}

/// Runs `refgate secret hash` with `input` on stdin.
fn secret_hash_of(input: &[u8]) -> Output {
    let mut file = tempfile::tempfile().expect("temp file");
    file.write_all(input).expect("write the secret");
    std::io::Seek::rewind(&mut file).expect("rewind");
    run(refgate().args(["secret", "hash"]).stdin(Stdio::from(file)))
}

/// `sha256:` and the hex SHA-256 of `text`, computed independently.
fn expected_hash(text: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// A minimal valid configuration, with `extra` appended.
fn config_text(extra: &str) -> String {
    format!(
        r#"issuer = "http://127.0.0.1:8081"

[listen]
proxy = "127.0.0.1:8080"
token_service = "127.0.0.1:8081"

[store]
url = "sqlite://data/refgate.db"
data_key = "{DATA_KEY}"

{extra}
"#
    )
}

/// A configuration to serve on `port` (token service only).
fn serve_config(port: u16) -> String {
    format!(
        r#"issuer = "http://127.0.0.1:{port}"

[listen]
token_service = "127.0.0.1:{port}"

[store]
url = "sqlite://data/refgate.db"
data_key = "{DATA_KEY}"
"#
    )
}

/// Writes `text` as `refgate.toml` in a new temporary directory.
fn write_config(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("refgate.toml");
    std::fs::write(&path, text).expect("write config");
    (dir, path)
}

fn check(path: &Path) -> Output {
    run(refgate().arg("check").arg("--config").arg(path))
}

/// The 1-based number of the line of `text` that starts with `prefix`.
fn line_of(text: &str, prefix: &str) -> usize {
    text.lines()
        .position(|l| l.trim_start().starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starts with {prefix:?}"))
        + 1
}

/// Asserts that one line of `stderr` names `key` with the file and `line`.
fn assert_problem(stderr: &str, path: &Path, key: &str, line: usize) {
    let path = path.display().to_string();
    let found = stderr.lines().find(|l| {
        let Some(rest) = l.split_once(&path).map(|(_, rest)| rest) else {
            return false;
        };
        let numbers: Vec<&str> = rest
            .split(|c: char| !c.is_ascii_digit())
            .filter(|n| !n.is_empty())
            .collect();
        rest.contains(key) && numbers.first() == Some(&line.to_string().as_str())
    });
    assert!(
        found.is_some(),
        "no problem line names {path}, line {line} and `{key}`:\n{stderr}"
    );
}

// ---------------------------------------------------------------- secret hash

#[test]
fn secret_hash_prints_sha256_hex_of_the_secret() {
    let output = secret_hash_of(b"s3cret\n");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output).trim_end(), expected_hash(b"s3cret"));
    assert_eq!(stdout(&output).lines().count(), 1);
    assert!(!stdout(&output).contains("s3cret") && !stderr(&output).contains("s3cret"));
    // The harness's clients use the same form.
    assert_eq!(expected_hash(b"app-secret"), secret_hash("app-secret"));
}

#[test]
fn secret_hash_strips_exactly_one_trailing_newline() {
    let no_newline = secret_hash_of(b"s3cret");
    assert!(no_newline.status.success(), "{}", stderr(&no_newline));
    assert_eq!(stdout(&no_newline).trim_end(), expected_hash(b"s3cret"));

    let two = secret_hash_of(b"s3cret\n\n");
    assert!(two.status.success(), "{}", stderr(&two));
    assert_eq!(stdout(&two).trim_end(), expected_hash(b"s3cret\n"));

    // Other whitespace is part of the secret.
    let spaced = secret_hash_of(b" s3cret \n");
    assert_eq!(stdout(&spaced).trim_end(), expected_hash(b" s3cret "));
}

// ---------------------------------------------------------------- key generate

#[test]
fn key_generate_prints_padded_base64_of_32_fresh_bytes() {
    let mut keys = Vec::new();
    for _ in 0..2 {
        let output = run(refgate().args(["key", "generate"]));
        assert!(output.status.success(), "{}", stderr(&output));
        let text = stdout(&output);
        let key = text.trim_end().to_string();
        assert_eq!(text, format!("{key}\n"), "one line");
        assert_eq!(key.len(), 44, "{key}");
        assert!(key.ends_with('='), "standard padded base64: {key}");
        let bytes = STANDARD.decode(&key).expect("standard base64");
        assert_eq!(bytes.len(), 32);
        keys.push(key);
    }
    assert_ne!(keys[0], keys[1], "two keys are the same");
}

#[test]
fn generated_key_is_accepted_as_data_key() {
    let output = run(refgate().args(["key", "generate"]));
    let key = stdout(&output).trim().to_string();
    let text = config_text("").replace(DATA_KEY, &key);
    let (_dir, path) = write_config(&text);
    let output = check(&path);
    assert!(output.status.success(), "{}", stderr(&output));
}

// ---------------------------------------------------------------- check

#[test]
fn check_accepts_a_valid_config_and_writes_nothing() {
    let clients = standard_clients();
    let (dir, path) = write_config(&config_text(&clients));
    let output = check(&path);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        !dir.path().join("data").exists(),
        "check created the store's directory"
    );
}

#[test]
fn an_upstream_idle_timeout_that_is_not_a_duration_or_over_an_hour_is_refused_by_name() {
    // `refgate check`'s exit code and complaints for one value.
    let check_with = |value: &str| {
        let text = config_text(&format!("[gateway]\nupstream_idle_timeout = \"{value}\"\n"));
        let (_dir, path) = write_config(&text);
        let output = check(&path);
        (output.status.code(), stderr(&output))
    };
    for (value, says) in [("a while", "a while"), ("2h", "at most 1h")] {
        let (code, errors) = check_with(value);
        assert_eq!(code, Some(1), "{value}: {errors}");
        assert!(
            errors.contains("gateway.upstream_idle_timeout") && errors.contains(says),
            "{value}: {errors}"
        );
    }
    assert_eq!(check_with("1h"), (Some(0), String::new()));
}

#[test]
fn check_reports_every_problem_with_file_line_and_key() {
    let text = config_text(&format!(
        r#"colour = "blue"

[tokens]
access_token_ttl = "1h"
refresh_token_ttl = "ten days"
acess_token_ttl = "2h"

[[clients]]
id = "app"
secret_hash = "plaintext-secret-value"
grant_types = ["client_credentials"]
scopes = ["photos.read"]

[[clients]]
id = "middle"
secret_hash = "{}"
introspekt = true
"#,
        secret_hash("middle-secret")
    ));
    // A top-level key after a table belongs to that table: keep `colour` at
    // the top by moving it before `[listen]`.
    let text = text.replace("colour = \"blue\"\n", "").replacen(
        "\n[listen]",
        "colour = \"blue\"\n\n[listen]",
        1,
    );
    let (_dir, path) = write_config(&text);
    let output = check(&path);
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{errors}");

    assert_problem(&errors, &path, "colour", line_of(&text, "colour"));
    assert_problem(
        &errors,
        &path,
        "tokens.acess_token_ttl",
        line_of(&text, "acess_token_ttl"),
    );
    assert_problem(
        &errors,
        &path,
        "tokens.refresh_token_ttl",
        line_of(&text, "refresh_token_ttl"),
    );
    assert_problem(
        &errors,
        &path,
        "clients[0].secret_hash",
        line_of(&text, "secret_hash = \"plaintext"),
    );
    assert_problem(
        &errors,
        &path,
        "clients[1].introspekt",
        line_of(&text, "introspekt"),
    );
    assert!(
        !errors.contains("plaintext-secret-value"),
        "a secret_hash value was echoed: {errors}"
    );
    assert!(stdout(&output).is_empty(), "problems go to stderr only");
}

#[test]
fn check_reports_a_missing_data_key_variable() {
    let variable = format!("REFGATE_TEST_UNSET_KEY_{}", std::process::id());
    let text = config_text("").replace(
        &format!("data_key = \"{DATA_KEY}\""),
        &format!("data_key_env = \"{variable}\""),
    );
    let (_dir, path) = write_config(&text);

    let output = run(refgate()
        .env_remove(&variable)
        .arg("check")
        .arg("--config")
        .arg(&path));
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{errors}");
    assert!(errors.contains(&variable), "{errors}");
    assert_problem(
        &errors,
        &path,
        "store.data_key_env",
        line_of(&text, "data_key_env"),
    );

    // Set to a valid key, the same file is fine.
    let output = run(refgate()
        .env(&variable, DATA_KEY)
        .arg("check")
        .arg("--config")
        .arg(&path));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));

    // Set to something that is not a 32-byte key: refused, value not echoed.
    let output = run(refgate()
        .env(&variable, "not-a-key-but-secret-material")
        .arg("check")
        .arg("--config")
        .arg(&path));
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{errors}");
    assert!(errors.contains("store.data_key_env"), "{errors}");
    assert!(
        !errors.contains("not-a-key-but-secret-material"),
        "{errors}"
    );
}

#[test]
fn check_reports_a_data_key_that_is_not_32_bytes() {
    let short = STANDARD.encode([7u8; 16]);
    let text = config_text("").replace(DATA_KEY, &short);
    let (_dir, path) = write_config(&text);
    let output = check(&path);
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{errors}");
    assert_problem(&errors, &path, "store.data_key", line_of(&text, "data_key"));
    assert!(!errors.contains(&short), "the key was echoed: {errors}");
}

#[test]
fn check_reports_missing_files_and_secret_variables() {
    let variable = format!("REFGATE_TEST_UNSET_SECRET_{}", std::process::id());
    let text = config_text(&format!(
        r#"[[trusted_issuers]]
issuer = "https://accounts.example.com"
jwks_file = "keys/missing-jwks.json"
audiences = ["my-client-id"]

[[authorities]]
name = "photos-as"
token_endpoint = "https://photos-as.example.com/token"
client_id = "gateway"
client_secret_env = "{variable}"
"#
    ));
    let (_dir, path) = write_config(&text);
    let output = run(refgate()
        .env_remove(&variable)
        .arg("check")
        .arg("--config")
        .arg(&path));
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{errors}");
    assert_problem(
        &errors,
        &path,
        "trusted_issuers[0].jwks_file",
        line_of(&text, "jwks_file"),
    );
    assert!(errors.contains("missing-jwks.json"), "{errors}");
    assert_problem(
        &errors,
        &path,
        "authorities[0].client_secret_env",
        line_of(&text, "client_secret_env"),
    );
    assert!(errors.contains(&variable), "{errors}");
}

#[test]
fn check_of_a_missing_file_fails_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nowhere.toml");
    let output = check(&path);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains(&path.display().to_string()),
        "{}",
        stderr(&output)
    );
}

// ---------------------------------------------------------------- help

#[test]
fn help_works_on_every_command() {
    let commands: &[&[&str]] = &[
        &[],
        &["serve"],
        &["check"],
        &["secret"],
        &["secret", "hash"],
        &["key"],
        &["key", "generate"],
    ];
    for command in commands {
        let output = run(refgate().args(*command).arg("--help"));
        assert!(
            output.status.success(),
            "{command:?} --help: {}",
            stderr(&output)
        );
        let text = stdout(&output);
        assert!(text.contains("Usage"), "{command:?} --help: {text}");
    }
    let output = run(refgate().args(["help", "check"]));
    assert!(output.status.success());
    assert!(stdout(&output).contains("--config"));
    // The top-level help lists the subcommands.
    let top = stdout(&run(refgate().arg("--help")));
    for name in ["serve", "check", "secret", "key", "--log-format"] {
        assert!(top.contains(name), "`{name}` missing from --help:\n{top}");
    }
}

#[test]
fn unknown_command_or_log_format_is_a_usage_error() {
    let output = run(refgate().arg("frobnicate"));
    assert_eq!(output.status.code(), Some(2));
    let output = run(refgate().args(["--log-format", "xml", "key", "generate"]));
    assert_eq!(output.status.code(), Some(2));
}

// ---------------------------------------------------------------- log format

#[test]
fn log_format_json_is_accepted_before_and_after_the_subcommand() {
    let (_dir, path) = write_config(&config_text(""));
    let before = run(refgate()
        .args(["--log-format", "json", "check", "--config"])
        .arg(&path));
    assert_eq!(before.status.code(), Some(0), "{}", stderr(&before));
    let after = run(refgate()
        .args(["check", "--config"])
        .arg(&path)
        .args(["--log-format", "json"]));
    assert_eq!(after.status.code(), Some(0), "{}", stderr(&after));
    let key = run(refgate().args(["key", "generate", "--log-format", "json"]));
    assert!(key.status.success(), "{}", stderr(&key));
}

/// Runs `refgate` with `args` on the config at `path` until it answers
/// `/healthz`, stops it with SIGTERM, and returns exit code and stderr.
fn serve_and_stop(args: &[&str], path: &Path, listener: &TcpListener) -> (Option<i32>, String) {
    let port = listener.local_addr().expect("address").port();
    let log_path = path.with_extension("log");
    let log = std::fs::File::create(&log_path).expect("create log");
    let mut command = refgate();
    command
        .args(args)
        .arg("--config")
        .arg(path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log);
    pass_listeners(&mut command, &[("token_service", listener)]);
    let mut child = command.spawn().expect("start refgate");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !raw_get_ok(port, "/healthz") {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "refgate exited early ({status}): {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("refgate did not become ready");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: signalling a child process this test started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let code = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("refgate did not stop after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (code, std::fs::read_to_string(&log_path).unwrap_or_default())
}

/// Asserts that the log is non-empty JSON lines with a level and a message.
fn assert_json_lines(log: &str) {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log lines");
    for line in &lines {
        let value: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
        assert!(value.is_object(), "{line}");
        assert!(value.get("level").is_some(), "no level: {line}");
    }
    assert!(
        lines.iter().any(|l| l.contains("listening")),
        "no line says the service listens:\n{log}"
    );
}

#[test]
fn serve_writes_json_log_lines_with_the_flag_before_or_after_the_subcommand() {
    for args in [
        &["--log-format", "json", "serve"][..],
        &["serve", "--log-format", "json"],
    ] {
        let listener = loopback_listener();
        let port = listener.local_addr().expect("address").port();
        let (_dir, path) = write_config(&serve_config(port));
        let (code, log) = serve_and_stop(args, &path, &listener);
        assert_eq!(code, Some(0), "{args:?}:\n{log}");
        assert_json_lines(&log);
    }
}

#[test]
fn serve_writes_text_log_lines_by_default() {
    let listener = loopback_listener();
    let port = listener.local_addr().expect("address").port();
    let (dir, path) = write_config(&serve_config(port));
    let (code, log) = serve_and_stop(&["serve"], &path, &listener);
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("listening"), "{log}");
    let first = log.lines().next().unwrap_or_default();
    assert!(
        serde_json::from_str::<Value>(first).is_err(),
        "text logs by default: {first}"
    );
    // A relative SQLite path resolves against the config file's directory,
    // and its missing parent directory is created.
    assert!(dir.path().join("data").join("refgate.db").is_file());
}

#[test]
fn a_missing_key_file_is_created_for_a_new_store_but_refused_for_existing_data() {
    let text = config_text("").replace(
        &format!("data_key = \"{DATA_KEY}\""),
        "data_key_file = \"data/refgate.key\"",
    );
    let (dir, path) = write_config(&text);
    // A new store: `check` accepts it (serve would create the key).
    assert!(check(&path).status.success(), "{}", stderr(&check(&path)));
    // Existing data without its key: a fresh key could never open it.
    std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
    std::fs::write(dir.path().join("data/refgate.db"), b"").expect("db file");
    let output = check(&path);
    assert_eq!(output.status.code(), Some(1));
    let problems = stderr(&output);
    assert!(problems.contains("store.data_key_file"), "{problems}");
    assert!(problems.contains("already holds data"), "{problems}");
}

#[test]
fn serve_creates_a_missing_key_file_owner_only_and_keeps_it() {
    use std::os::unix::fs::PermissionsExt;
    let listener = loopback_listener();
    let port = listener.local_addr().expect("address").port();
    let text = serve_config(port).replace(
        &format!("data_key = \"{DATA_KEY}\""),
        "data_key_file = \"keys/refgate.key\"",
    );
    let (dir, path) = write_config(&text);
    let key_path = dir.path().join("keys").join("refgate.key");
    let output = check(&path);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!key_path.exists(), "check created the key file");

    let (code, log) = serve_and_stop(&["serve"], &path, &listener);
    assert_eq!(code, Some(0), "{log}");
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&key_path), 0o600, "the key file's mode");
    assert_eq!(
        mode(&dir.path().join("keys")),
        0o700,
        "its directory's mode"
    );
    let key = std::fs::read_to_string(&key_path).expect("read the key");
    let bytes = STANDARD.decode(key.trim()).expect("a base64 key");
    assert_eq!(bytes.len(), 32);
    assert!(!log.contains(key.trim()), "the key was logged");

    // From then on the store has data and this is its key: kept as it is.
    let (code, log) = serve_and_stop(&["serve"], &path, &listener);
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(std::fs::read_to_string(&key_path).expect("read"), key);
}

#[test]
fn serve_on_port_zero_logs_the_address_it_bound() {
    let (_dir, path) = write_config(&serve_config(0).replace(
        "issuer = \"http://127.0.0.1:0\"",
        "issuer = \"http://refgate.test\"",
    ));
    let log_path = path.with_extension("log");
    let log = std::fs::File::create(&log_path).expect("create log");
    let mut child = refgate()
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start refgate");
    let deadline = Instant::now() + Duration::from_secs(20);
    let port = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let bound = log
            .lines()
            .filter(|l| l.contains("token service listening"))
            .find_map(|l| l.split("address=127.0.0.1:").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|p| p.parse::<u16>().ok());
        if let Some(port) = bound {
            break port;
        }
        assert!(Instant::now() < deadline, "no address logged:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_ne!(port, 0);
    let answered = raw_get_ok(port, "/healthz");
    let _ = child.kill();
    let _ = child.wait();
    assert!(answered, "the logged address does not answer");
}

#[test]
fn serve_refuses_inherited_sockets_it_cannot_place() {
    let listener = loopback_listener();
    let port = listener.local_addr().expect("address").port();
    let (_dir, path) = write_config(&serve_config(port));
    // `metrics` is not enabled in [listen]: refgate must say so and exit,
    // not leave the socket unserved.
    let mut command = refgate();
    command
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    pass_listeners(&mut command, &[("metrics", &listener)]);
    let output = run(&mut command);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("\"metrics\""), "{stderr}");

    // Names that do not add up to LISTEN_FDS are refused, clearly.
    let output = run(refgate()
        .args(["serve", "--config"])
        .arg(&path)
        .env("LISTEN_FDS", "2")
        .env("LISTEN_FDNAMES", "token_service"));
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("LISTEN_FDNAMES"), "{stderr}");
}

#[test]
fn check_says_which_clients_an_exchange_route_client_may_not_exchange() {
    let hash = secret_hash("s");
    let text = config_text(&format!(
        r#"[[clients]]
id = "app"
secret_hash = "{hash}"
grant_types = ["client_credentials"]
scopes = ["reports.read"]

[[clients]]
id = "partner"
secret_hash = "{hash}"
grant_types = ["client_credentials"]
scopes = ["reports.read"]

[[clients]]
id = "gateway"
secret_hash = "{hash}"
grant_types = ["urn:ietf:params:oauth:grant-type:token-exchange"]
scopes = ["reports.read"]
exchange_from = ["app"]

[[routes]]
name = "reports"
path_prefix = "/reports/"
upstream = "http://127.0.0.1:9200"
required_scopes = ["reports.read"]
[routes.exchange]
client = "gateway"
scopes = ["reports.read"]
"#
    ));
    let (_dir, path) = write_config(&text);
    let output = check(&path);
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{errors}");
    assert_problem(
        &errors,
        &path,
        "routes[0].exchange.client",
        line_of(&text, "client = \"gateway\""),
    );
    assert!(errors.contains("`partner`"), "{errors}");
    assert!(!errors.contains("`app`"), "{errors}");
    assert!(errors.contains("exchange_from"), "{errors}");

    // With the partner listed, the same file is valid.
    let fixed = text.replace(
        "exchange_from = [\"app\"]",
        "exchange_from = [\"app\", \"partner\"]",
    );
    let (_dir, path) = write_config(&fixed);
    let output = check(&path);
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn check_refuses_exchange_from_naming_an_unknown_client() {
    let hash = secret_hash("s");
    let text = config_text(&format!(
        r#"[[clients]]
id = "gateway"
secret_hash = "{hash}"
grant_types = ["urn:ietf:params:oauth:grant-type:token-exchange"]
exchange_from = ["ap"]
"#
    ));
    let (_dir, path) = write_config(&text);
    let output = check(&path);
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{errors}");
    assert_problem(
        &errors,
        &path,
        "clients[0].exchange_from[0]",
        line_of(&text, "exchange_from"),
    );
}

#[test]
fn a_data_key_file_that_others_may_read_is_refused_by_check_and_serve() {
    use std::os::unix::fs::PermissionsExt;
    let text = serve_config(0).replace(
        &format!("data_key = \"{DATA_KEY}\""),
        "data_key_file = \"refgate.key\"",
    );
    let (dir, path) = write_config(&text);
    let key_path = dir.path().join("refgate.key");
    std::fs::write(&key_path, format!("{DATA_KEY}\n")).expect("write key");
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    let output = check(&path);
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{errors}");
    assert_problem(
        &errors,
        &path,
        "store.data_key_file",
        line_of(&text, "data_key_file"),
    );
    let fix = format!("chmod 600 {}", key_path.display());
    assert!(errors.contains(&fix), "{errors}");
    assert!(!errors.contains(DATA_KEY), "the key was echoed: {errors}");

    let output = run(refgate()
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null()));
    let log = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(log.contains(&fix), "{log}");
    assert!(!log.contains("listening"), "{log}");

    // Group-readable is refused too; owner-only is fine.
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    assert_eq!(check(&path).status.code(), Some(1));
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let output = check(&path);
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn check_reports_previous_data_keys_that_are_not_keys_or_not_set() {
    let variable = format!("REFGATE_TEST_UNSET_PREVIOUS_{}", std::process::id());
    let short = STANDARD.encode([7u8; 16]);
    let other = STANDARD.encode([9u8; 32]);
    let text = config_text("").replace(
        &format!("data_key = \"{DATA_KEY}\""),
        &format!(
            "data_key = \"{DATA_KEY}\"\nprevious_data_keys = [\n  \"{other}\",\n  \"{short}\",\n]\n\
             previous_data_keys_env = [\"{variable}\"]"
        ),
    );
    let (_dir, path) = write_config(&text);

    let output = run(refgate()
        .env_remove(&variable)
        .arg("check")
        .arg("--config")
        .arg(&path));
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{errors}");
    assert_problem(
        &errors,
        &path,
        "store.previous_data_keys[1]",
        line_of(&text, &format!("\"{short}\"")),
    );
    assert_problem(
        &errors,
        &path,
        "store.previous_data_keys_env[0]",
        line_of(&text, "previous_data_keys_env"),
    );
    assert!(errors.contains(&variable), "{errors}");
    assert!(!errors.contains("previous_data_keys[0]"), "{errors}");
    assert!(!errors.contains(&short), "the key was echoed: {errors}");

    // The variable holding something that is not a key: refused, not echoed.
    let output = run(refgate()
        .env(&variable, "not-a-key-but-secret-material")
        .arg("check")
        .arg("--config")
        .arg(&path));
    let errors = stderr(&output);
    assert_problem(
        &errors,
        &path,
        "store.previous_data_keys_env[0]",
        line_of(&text, "previous_data_keys_env"),
    );
    assert!(
        !errors.contains("not-a-key-but-secret-material"),
        "{errors}"
    );

    // Valid keys everywhere: accepted.
    let fixed = text.replace(&format!("  \"{short}\",\n"), "");
    std::fs::write(&path, &fixed).expect("write config");
    let output = run(refgate()
        .env(&variable, DATA_KEY)
        .arg("check")
        .arg("--config")
        .arg(&path));
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn check_refuses_whitespace_control_characters_and_absurd_sizes() {
    let text = config_text(
        r#"[tokens]
refresh_token_ttl = "30d\n"
access_token_ttl = " 1h"

[gateway]
cache_capacity = 9223372036854775807

[[authorities]]
name = "photos-as	"
token_endpoint = "http://127.0.0.1:9/token"
client_id = "gateway"
client_secret = "unused"

[[routes]]
name = "reports"
path_prefix = "/reports/\t"
upstream = "http://127.0.0.1:9200"
auth = "none"

[[routes]]
name = "merged"
path_prefix = "/a//b/"
upstream = "http://127.0.0.1:9200	"
auth = "none"

[[routes]]
name = "encoded"
path_prefix = "/%70hotos/"
upstream = "http://127.0.0.1:9200"
auth = "none"
"#,
    );
    let (_dir, path) = write_config(&text);
    let output = check(&path);
    let errors = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{errors}");
    for (key, line) in [
        ("tokens.refresh_token_ttl", "refresh_token_ttl"),
        ("tokens.access_token_ttl", "access_token_ttl"),
        ("gateway.cache_capacity", "cache_capacity"),
        ("authorities[0].name", "name = \"photos-as"),
        ("routes[0].path_prefix", "path_prefix = \"/reports/"),
        ("routes[1].path_prefix", "path_prefix = \"/a//b/"),
        ("routes[1].upstream", "upstream = \"http://127.0.0.1:9200\t"),
        ("routes[2].path_prefix", "path_prefix = \"/%70hotos/"),
    ] {
        assert_problem(&errors, &path, key, line_of(&text, line));
    }
    // Problems are one line each: a newline in a value is shown escaped.
    assert!(
        errors
            .lines()
            .all(|l| l.starts_with(&path.display().to_string())),
        "{errors}"
    );
}

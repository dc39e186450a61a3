//! The Debian package (`cargo deb`, `[package.metadata.deb]`): built from
//! the test build's own binary (`cargo deb --no-build` over a target
//! directory of the test's own whose `release/refgate` is that binary: no
//! release build in the test run, and the real `target/release` is left
//! alone), installed on this machine with `apt-get`, run as the unit runs
//! it, asked for a token, and purged.
//!
//! The packaged configuration listens on fixed loopback ports (8080, 8081,
//! 9090) that other tests or programs may hold: the test hands refgate its
//! listeners the way systemd socket activation does (`LISTEN_FDS`), as the
//! harness does, so it never binds those ports.
//!
//! The package is installed system-wide, so this test changes the machine
//! while it runs; it runs once per suite (skipped in the PostgreSQL pass)
//! and removes everything it installed, also when it fails.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const UNIT: &str = "/usr/lib/systemd/system/refgate.service";
const CONFIG: &str = "/etc/refgate/refgate.toml";
const STATE: &str = "/var/lib/refgate";
/// Long enough for apt-get on a loaded machine (and its lock).
const APT_LIMIT: Duration = Duration::from_secs(300);

fn run(command: &mut Command, limit: Duration) -> String {
    let shown = format!("{command:?}");
    let out = output_within(command, limit);
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn apt_get(args: &[&str], dir: &Path) -> String {
    run(
        Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=240", "-y", "-q"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .current_dir(dir)
            .stdin(Stdio::null()),
        APT_LIMIT,
    )
}

fn installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "refgate"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn purge() {
    let _ = output_within(
        Command::new("apt-get")
            .args([
                "-o",
                "DPkg::Lock::Timeout=240",
                "-y",
                "-q",
                "purge",
                "refgate",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null()),
        APT_LIMIT,
    );
}

/// Stops the packaged refgate and purges the package, whatever happened.
struct Installed {
    child: Option<Child>,
}

impl Installed {
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // runuser passes SIGTERM on to refgate and waits for it.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        self.stop();
        purge();
    }
}

fn mode_and_owner(path: &str) -> (u32, String, String) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let name = |spec: &str, id: u32| {
        let out = run(
            Command::new("getent").args([spec, &id.to_string()]),
            COMMAND_LIMIT,
        );
        out.split(':').next().unwrap_or_default().to_string()
    };
    (
        meta.mode() & 0o7777,
        name("passwd", meta.uid()),
        name("group", meta.gid()),
    )
}

/// The value of `key=` in the unit's `[Service]` section.
fn unit_value<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::trim)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_package_installs_runs_under_its_unit_command_and_purges() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "installing a package needs root (CI and the development machines run as root)"
    );
    let cargo_deb = Command::new("cargo").args(["deb", "--version"]).output();
    assert!(
        cargo_deb.is_ok_and(|o| o.status.success()),
        "cargo-deb is missing: run scripts/setup --with-test-peers"
    );
    if installed() {
        // Left by an interrupted run.
        purge();
    }

    // The package, from the binary this test build made.
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_refgate"));
    let target = binary
        .parent()
        .and_then(Path::parent)
        .expect("the target directory");
    let out = tempfile::Builder::new()
        .prefix("deb-package-")
        .tempdir_in(target)
        .expect("temp dir");
    let release = out.path().join("target").join("release");
    std::fs::create_dir_all(&release).expect("release dir");
    if std::fs::hard_link(&binary, release.join("refgate")).is_err() {
        std::fs::copy(&binary, release.join("refgate")).expect("copy the binary");
    }
    run(
        Command::new("cargo")
            .args(["deb", "--no-build", "--fast", "--output"])
            .arg(out.path())
            .env("CARGO_TARGET_DIR", out.path().join("target"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null()),
        Duration::from_secs(300),
    );
    let deb = std::fs::read_dir(out.path())
        .expect("output dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .find(|n| n.starts_with("refgate_") && n.ends_with(".deb"))
        .expect("a refgate_*.deb");
    let mut guard = Installed { child: None };
    apt_get(&["install", &format!("./{deb}")], out.path());
    assert!(installed());

    // The system user, and who owns what.
    let user = run(
        Command::new("getent").args(["passwd", "refgate"]),
        COMMAND_LIMIT,
    );
    let fields: Vec<&str> = user.trim().split(':').collect();
    assert!(fields[2].parse::<u32>().expect("uid") < 1000, "{user}");
    assert_eq!(fields[5], STATE, "{user}");
    assert!(fields[6].ends_with("nologin"), "{user}");
    assert_eq!(
        mode_and_owner("/usr/bin/refgate"),
        (0o755, "root".into(), "root".into())
    );
    assert_eq!(
        mode_and_owner(CONFIG),
        (0o640, "root".into(), "refgate".into())
    );
    assert_eq!(
        mode_and_owner(STATE),
        (0o750, "refgate".into(), "refgate".into())
    );
    let conffiles = run(
        Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "refgate"]),
        COMMAND_LIMIT,
    );
    assert!(conffiles.contains(CONFIG), "{conffiles}");

    // The unit: its user, its hardening, its command line.
    let unit = std::fs::read_to_string(UNIT).expect("the unit");
    assert_eq!(unit_value(&unit, "User"), Some("refgate"));
    for line in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=refgate",
        "ReadWritePaths=/var/lib/refgate /var/log/refgate",
        "CapabilityBoundingSet=",
    ] {
        assert!(unit.lines().any(|l| l == line), "no {line} in the unit");
    }
    let exec_start = unit_value(&unit, "ExecStart").expect("ExecStart");
    let exec_check = unit_value(&unit, "ExecStartPre").expect("ExecStartPre");
    let as_refgate = |command_line: &str| {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "refgate", "--"])
            .args(command_line.split_whitespace())
            .current_dir("/")
            .stdin(Stdio::null());
        command
    };

    // Its check passes as the refgate user, then it serves.
    run(&mut as_refgate(exec_check), COMMAND_LIMIT);
    let token_listener = loopback_listener();
    let proxy_listener = loopback_listener();
    let metrics_listener = loopback_listener();
    let token_port = token_listener.local_addr().expect("address").port();
    let proxy_port = proxy_listener.local_addr().expect("address").port();
    let log_path = out.path().join("refgate.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut command = as_refgate(exec_start);
    command.stdout(Stdio::null()).stderr(log);
    pass_listeners(
        &mut command,
        &[
            ("token_service", &token_listener),
            ("proxy", &proxy_listener),
            ("metrics", &metrics_listener),
        ],
    );
    guard.child = Some(command.spawn().expect("runuser"));
    drop((token_listener, proxy_listener, metrics_listener));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !raw_get_ok(token_port, "/healthz") {
        if let Some(Ok(Some(status))) = guard.child.as_mut().map(|c| c.try_wait()) {
            panic!(
                "the packaged refgate exited ({status}):\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the packaged refgate is not ready:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A token from the packaged demo client.
    let response = http()
        .post(format!("http://127.0.0.1:{token_port}/oauth2/token"))
        .basic_auth("app", Some("app-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("token request");
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert!(str_of(&body, "access_token").starts_with("rgat_"), "{body}");
    // The proxy answers too (no route is configured).
    let response = http()
        .get(format!("http://127.0.0.1:{proxy_port}/anything"))
        .send()
        .await
        .expect("proxy request");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // The data key and the database were made by and for the refgate user.
    assert_eq!(
        mode_and_owner(&format!("{STATE}/refgate.key")),
        (0o600, "refgate".into(), "refgate".into())
    );
    let (_, db_owner, _) = mode_and_owner(&format!("{STATE}/refgate.db"));
    assert_eq!(db_owner, "refgate");
    // The audit trail is on stderr (the journal under systemd).
    let logged = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(logged.contains("\"event\":\"token_issued\""), "{logged}");
    assert!(!logged.contains("app-secret"), "{logged}");

    guard.stop();
    purge();
    assert!(!installed());
    for gone in ["/usr/bin/refgate", CONFIG, UNIT, STATE, "/etc/refgate"] {
        assert!(
            !Path::new(gone).exists(),
            "{gone} is still there after purge"
        );
    }
    let user = Command::new("getent")
        .args(["passwd", "refgate"])
        .output()
        .expect("getent");
    assert!(!user.status.success(), "the refgate user is still there");
}

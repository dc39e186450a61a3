//! The benchmark harness (`bench/`) is code too: its scripts must parse, its
//! wrk scripts compile, its report must render, and the bench upstream must
//! behave as the harness's checks assume. No benchmark runs here (a
//! benchmark is never a timed assertion in a test); these checks take well
//! under a second.

use std::path::{Path, PathBuf};
use std::process::Command;

// The bench upstream is an example; compiled into this test as well, so
// `cargo test --test it bench_scripts::` proves it builds and can run it
// in-process on an ephemeral port.
#[allow(dead_code)]
#[path = "../../examples/bench_upstream.rs"]
mod bench_upstream;

fn bench_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bench")
}

/// Files under `bench/` (recursively) for which `keep` says yes.
fn bench_files(keep: &dyn Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![bench_dir()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("bench/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if keep(&path) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn is_shell_script(path: &Path) -> bool {
    if path.extension().is_some_and(|e| e == "sh") {
        return true;
    }
    std::fs::read_to_string(path)
        .map(|text| {
            let first = text.lines().next().unwrap_or_default();
            first.starts_with("#!") && first.contains("bash")
        })
        .unwrap_or(false)
}

/// The script bench/run builds its binaries with.
fn build_release_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-release")
}

#[test]
fn every_bench_shell_script_parses() {
    let mut scripts = bench_files(&is_shell_script);
    let run = bench_dir().join("run");
    assert!(scripts.contains(&run), "bench/run is missing: {scripts:?}");
    scripts.push(build_release_script());
    for script in &scripts {
        let output = Command::new("bash")
            .arg("-n")
            .arg(script)
            .output()
            .expect("bash runs");
        assert!(
            output.status.success(),
            "`bash -n {}` failed:\n{}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn bench_run_and_its_build_script_are_executable() {
    use std::os::unix::fs::PermissionsExt;
    for script in [bench_dir().join("run"), build_release_script()] {
        let mode = std::fs::metadata(&script)
            .unwrap_or_else(|e| panic!("{}: {e}", script.display()))
            .permissions()
            .mode();
        assert!(mode & 0o111 != 0, "{} is not executable", script.display());
    }
}

/// A Lua compiler that only checks syntax: LuaJIT (what wrk embeds) first.
fn lua_checker() -> Option<(&'static str, Vec<&'static str>)> {
    let candidates: [(&str, &[&str]); 5] = [
        ("luajit", &["-b"]),
        ("luac5.1", &["-p"]),
        ("luac", &["-p"]),
        ("luac5.4", &["-p"]),
        ("luac5.3", &["-p"]),
    ];
    candidates.into_iter().find_map(|(program, args)| {
        let present = Command::new(program)
            .arg("-v")
            .output()
            .is_ok_and(|o| o.status.success());
        present.then(|| (program, args.to_vec()))
    })
}

#[test]
fn bench_lua_scripts_compile() {
    let scripts = bench_files(&|p: &Path| p.extension().is_some_and(|e| e == "lua"));
    assert!(!scripts.is_empty(), "no wrk Lua scripts under bench/");
    let (program, args) = lua_checker().unwrap_or_else(|| {
        panic!(
            "no luajit or luac on PATH to syntax-check {} Lua scripts \
             (scripts/test installs lua5.1)",
            scripts.len()
        )
    });
    for script in &scripts {
        let mut command = Command::new(program);
        command.args(&args).arg(script);
        if program == "luajit" {
            // `luajit -b in out` compiles to bytecode; only success matters.
            command.arg("/dev/null");
        }
        let output = command.output().expect("the Lua compiler runs");
        assert!(
            output.status.success(),
            "{program} rejects {}:\n{}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Runs `bench/<script>` with awk on `inputs` (each written to a file of
/// its own, in order) and `-v` assignments `vars`; its standard output.
fn run_awk(script: &str, vars: &[&str], inputs: &[&str]) -> String {
    let dir = std::env::temp_dir().join(format!(
        "bench-awk-{}-{}",
        script.trim_end_matches(".awk"),
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let mut awk = Command::new("awk");
    for var in vars {
        awk.arg("-v").arg(var);
    }
    awk.arg("-f").arg(bench_dir().join(script));
    for (i, input) in inputs.iter().enumerate() {
        let path = dir.join(format!("input-{i}"));
        std::fs::write(&path, input).expect("write an input");
        awk.arg(path);
    }
    let output = awk.output().expect("awk runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        output.status.success(),
        "awk -f {script}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn bench_report_renders_medians_and_per_round_ratios() {
    // scenario conns round req/s p50_us p99_us rss_kb errors cpu_us_per_request
    let rows = [
        "direct\t16\t1\t100000\t150\t400\t5000\t0\t5.0",
        "nginx\t16\t1\t40000\t400\t900\t4000\t0\t10.0",
        "pingora-bare\t16\t1\t20000\t700\t1000\t9000\t0\t20.0",
        "pingora-core\t16\t1\t30000\t500\t800\t8000\t0\t15.0",
        "refgate-hot\t16\t1\t30000\t500\t1200\t30000\t0\t30.0",
        "refgate-cold\t16\t1\t6000\t2500\t6000\t40000\t0\t150.0",
        // Round 2 runs on a machine half as fast: ratios stay put.
        "direct\t16\t2\t50000\t300\t800\t5000\t0\t10.0",
        "nginx\t16\t2\t20000\t800\t1800\t4000\t0\t20.0",
        "pingora-bare\t16\t2\t10000\t1400\t2000\t9000\t0\t40.0",
        "pingora-core\t16\t2\t15000\t1000\t1600\t8000\t0\t30.0",
        "refgate-hot\t16\t2\t15000\t1000\t2400\t31000\t0\t60.0",
        "refgate-cold\t16\t2\t3000\t5000\t12000\t40000\t2\t300.0",
        "nginx-lua\t16\t1\t40000\t450\t1000\t5000\t0\t20.0",
        "nginx-lua\t16\t2\t20000\t900\t2000\t5000\t0\t40.0",
        "phantom-hot\t16\t1\t29000\t500\t1200\t30000\t0\t31.0",
        "phantom-cold\t16\t1\t5000\t3000\t7000\t40000\t0\t180.0",
        "phantom-hot\t16\t2\t15000\t1000\t2400\t31000\t0\t60.0",
        "phantom-cold\t16\t2\t2000\t6000\t14000\t40000\t0\t400.0",
    ];
    let report = run_awk("report.awk", &[], &[&(rows.join("\n") + "\n")]);
    assert!(
        report.contains(
            "| refgate-hot | 16 | 22500 | 15000–30000 | 0.75 ms | 1.80 ms | 45.0 µs | 30.3 MB | 0 |"
        ),
        "{report}"
    );
    assert!(report.contains("| refgate-cold | 16 | 4500 |"), "{report}");
    assert!(
        report.contains("| 16 | req/s | 0.75 | 0.30 | 1.50 | 0.50 | 0.40 | 0.20 |"),
        "{report}"
    );
    assert!(
        report.contains("| 16 | CPU per request | 3.00 | 6.00 | 1.50 | 2.00 | 2.00 | 5.00 |"),
        "{report}"
    );
    // Phantom route: per-round ratios 29000/30000 and 1.00 (median 0.98);
    // signing cost per token: the median of 30 and 100 µs.
    assert!(
        report.contains("| 16 | 0.98 | 1.02 | 0.75 | 65.0 µs |"),
        "{report}"
    );
    // Against nginx + Lua: 30000/40000 and 15000/20000; p99 medians 1.8 and
    // 1.5 ms.
    assert!(
        report.contains("| 16 | 0.75 | 1.50 | 1.00 | 0.30 ms |"),
        "{report}"
    );
    // What pingora allows: bare 20000/40000 and 10000/20000, core 30000/40000
    // and 15000/20000; core against bare 1.5 for req/s, 0.75 for CPU.
    assert!(report.contains("| pingora-core | 16 | 22500 |"), "{report}");
    assert!(
        report.contains("| 16 | 0.50 | 0.75 | 1.50 | 0.75 |"),
        "{report}"
    );
}

#[test]
fn bench_store_floor_section_sets_the_lookup_beside_the_proxy_and_the_budget() {
    let floor =
        "sqlite_token 2400\nsqlite_token_same 2300\nsqlite_token_same_one_transaction 300\n\
                 sqlite_join 3700\nstore_find_token 5600\nlookup_cold 7300\nlookup_hot 300\n";
    // Three rounds at 16 connections (hot 36, 45, 40; cold adds 20, 10,
    // 18), and round 3 at 64 connections, which must not count: taken for
    // the hot path it would make the medians 45 and 10, for the cold one 40
    // and 12. Medians of each side apart (56 - 40 = 16) are not the pairing.
    let rows = [
        "refgate-hot\t16\t1\t20000\t800\t1700\t30000\t0\t36.0",
        "refgate-cold\t16\t1\t14000\t1000\t2400\t40000\t0\t56.0",
        "refgate-hot\t16\t2\t20000\t800\t1700\t30000\t0\t45.0",
        "refgate-cold\t16\t2\t14000\t1000\t2400\t40000\t0\t55.0",
        "refgate-hot\t16\t3\t20000\t800\t1700\t30000\t0\t40.0",
        "refgate-cold\t16\t3\t14000\t1000\t2400\t40000\t0\t58.0",
        "refgate-hot\t64\t3\t20000\t800\t1700\t30000\t0\t90.0",
        "refgate-cold\t64\t3\t14000\t1000\t2400\t40000\t0\t52.0",
    ];
    let section = run_awk(
        "store_floor.awk",
        &["tokens=20000"],
        &[floor, &(rows.join("\n") + "\n")],
    );
    assert!(section.contains("its 20000 tokens"), "{section}");
    assert!(section.contains("| sqlite_token_same | 2.3 |"), "{section}");
    assert!(section.contains("| lookup_cold | 7.3 |"), "{section}");
    // Medians at 16 connections: hot 40.0, cold adds 18.0; the lookup alone
    // 7.0; 0.9 leaves 40 × (1/0.9 − 1) = 4.4.
    assert!(
        section.contains(
            "refgate-hot used 40.0 µs of CPU per request and refgate-cold 18.0 µs more. \
             A cold lookup alone costs 7.0 µs more than a cached one. \
             A cold/hot req/s ratio of 0.9 leaves a cold request 4.4 µs"
        ),
        "{section}"
    );
}

/// Runs the bench upstream on an ephemeral port; returns its base URL.
async fn start_upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind an ephemeral port");
    let address = listener.local_addr().expect("local address");
    tokio::spawn(bench_upstream::serve(listener));
    format!("http://{address}")
}

async fn stats(http: &reqwest::Client, base: &str) -> serde_json::Value {
    http.get(format!("{base}/_stats"))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats JSON")
}

#[tokio::test]
async fn bench_upstream_tells_a_swapped_header_from_a_leaked_token() {
    let base = start_upstream().await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");

    let swapped = http
        .get(format!("{base}/api/bench"))
        .header("authorization", "Bearer down-hot-0")
        .send()
        .await
        .expect("request");
    assert_eq!(swapped.status(), 200);
    assert_eq!(swapped.text().await.expect("body"), "hello, bench\n");

    // A leaked reference token is refused with 403, never 401 (which would
    // make refgate refresh and replay).
    let leaked = http
        .get(format!("{base}/api/bench"))
        .header("authorization", "Bearer rgat_abc")
        .send()
        .await
        .expect("request");
    assert_eq!(leaked.status(), 403);

    let echo = http
        .get(format!("{base}/api/_echo"))
        .header("authorization", "Bearer down-hot-0")
        .send()
        .await
        .expect("request");
    assert_eq!(echo.text().await.expect("body"), "Bearer down-hot-0");

    let seen = stats(&http, &base).await;
    assert_eq!(seen["requests"], 3, "{seen}");
    assert_eq!(seen["leaked_reference"], 1, "{seen}");
    assert_eq!(seen["downstream"], 2, "{seen}");
}

#[tokio::test]
async fn bench_authority_rotates_refresh_tokens_and_counts_replays() {
    let base = start_upstream().await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let refresh = || {
        http.post(format!("{base}/token"))
            .basic_auth("gateway", Some("bench-as-secret"))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", "rt-1")])
            .send()
    };

    let first = refresh().await.expect("refresh");
    assert_eq!(first.status(), 200);
    let body: serde_json::Value = first.json().await.expect("token JSON");
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["access_token"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(body["refresh_token"].as_str().is_some_and(|t| t != "rt-1"));

    let replay = refresh().await.expect("refresh");
    assert_eq!(replay.status(), 400);
    let body: serde_json::Value = replay.json().await.expect("error JSON");
    assert_eq!(body["error"], "invalid_grant");

    let seen = stats(&http, &base).await;
    assert_eq!(seen["refreshes"], 1, "{seen}");
    assert_eq!(seen["replays"], 1, "{seen}");

    http.post(format!("{base}/_reset"))
        .send()
        .await
        .expect("reset");
    let seen = stats(&http, &base).await;
    assert_eq!(seen["refreshes"], 0, "{seen}");
}

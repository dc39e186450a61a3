//! The core of refgate (`src/core/`) knows grants, tokens, credentials and
//! rules, and nothing of the protocols: no file under it may use axum,
//! hyper, http or pingora. The token service and the gateway adapt core to
//! HTTP, each in its own folder.

use std::path::{Path, PathBuf};

/// Crates that only the adapters may use (`pingora` covers `pingora_*`).
const PROTOCOL_CRATES: [&str; 5] = ["axum", "hyper", "hyper_util", "http", "pingora"];

/// The lines of `source` (comments left out) that name a protocol crate:
/// a path that starts with one (`http::StatusCode`), or `use hyper;`.
fn protocol_paths(source: &str) -> Vec<String> {
    let is_protocol = |name: &str| PROTOCOL_CRATES.contains(&name) || name.starts_with("pingora_");
    let mut found = Vec::new();
    for (number, line) in source.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        let path_starts = code.match_indices("::").any(|(at, _)| {
            let start = code[..at]
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(0, |i| i + 1);
            // `crate::http` or `super::http` is a module of refgate's own.
            let leading = !code[..start].ends_with("::");
            leading && is_protocol(&code[start..at])
        });
        let used_whole = code
            .trim()
            .strip_prefix("use ")
            .map(|rest| {
                rest.trim_end_matches(';')
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
            })
            .is_some_and(is_protocol);
        if path_starts || used_whole {
            found.push(format!("{}: {}", number + 1, line.trim()));
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_check_finds_protocol_crates_and_only_them() {
    let source = r#"
use axum::Router;
use std::time::Duration; // hyper::Body in a comment
let code = http::StatusCode::OK;
fn f(r: &pingora_core::Error) {}
use crate::http::view;
let url = "http://127.0.0.1/";
use hyper;
let x = super::pingora::thing();
"#;
    let found = protocol_paths(source);
    let lines: Vec<&str> = found
        .iter()
        .map(|f| f.split(':').next().unwrap_or_default())
        .collect();
    assert_eq!(lines, ["2", "4", "5", "8"], "{found:#?}");
}

#[test]
fn core_uses_no_axum_hyper_http_or_pingora() {
    let core = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join("core");
    if !core.is_dir() {
        eprintln!("no src/core/ yet: nothing to check");
        return;
    }
    let mut files = Vec::new();
    rust_files(&core, &mut files);
    assert!(!files.is_empty(), "src/core/ holds no Rust file");
    let mut offences = Vec::new();
    for file in files {
        let source = std::fs::read_to_string(&file).expect("read a source file");
        for found in protocol_paths(&source) {
            offences.push(format!("{}:{found}", file.display()));
        }
    }
    assert!(
        offences.is_empty(),
        "src/core/ must not use axum, hyper, http or pingora:\n{}",
        offences.join("\n")
    );
}

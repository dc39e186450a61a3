//! The grant operations and the rules that must hold everywhere, apart
//! from any protocol: nothing here imports axum, hyper, http or pingora
//! (a test below checks). The token service (`token/`, axum) and the
//! gateway (`gateway/`, pingora) are adapters: they turn requests into
//! these calls and [`Error`] into their responses, each in one place.
//!
//! - [`grants`]: [`Grants`], through which every write goes; it drops the
//!   cached lookups a write affects itself;
//! - [`error`]: the one error enum of the operations;
//! - [`issue`], [`refresh`], [`exchange`], [`rescope`], [`arbitrary`]: the
//!   grant types; [`custom`]: merge patches on custom data;
//! - [`rotation`]: the refresh grace/replay rule; [`version`]: the grant
//!   version check; [`scope`]: scope parameters and allowances.

pub mod arbitrary;
pub mod custom;
pub mod error;
pub mod exchange;
pub mod grants;
pub mod issue;
pub mod refresh;
pub mod rescope;
pub mod rotation;
pub mod scope;
pub mod version;

pub use error::{Contention, Error};
pub use grants::Grants;
pub use issue::TokenResponse;

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// Crates the core must not depend on: they belong to the adapters.
    const ADAPTER_CRATES: &[&str] = &["axum", "hyper", "http", "pingora"];

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(dir).expect("src/core is readable");
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// Whether `line` names `krate` as a path root (`use http::…`,
    /// `http::Method`, `::http::…`), not as part of another word
    /// (`http_body`, `reqwest::http`, `"https://"`).
    fn names_crate(line: &str, krate: &str) -> bool {
        let ident = |c: char| c.is_alphanumeric() || c == '_';
        let pattern = format!("{krate}::");
        let as_root = line.match_indices(&pattern).any(|(at, _)| {
            let before = &line[..at];
            // `::http::…` is the crate too; `reqwest::http::…` is not.
            let before = before.strip_suffix("::").unwrap_or(before);
            !before.chars().next_back().is_some_and(ident)
        });
        // `use http;`, `use axum as web;`, `extern crate hyper;`
        let whole = line
            .split(|c: char| !ident(c))
            .collect::<Vec<_>>()
            .windows(2)
            .any(|w| matches!(w[0], "use" | "crate") && w[1] == krate);
        as_root || whole
    }

    #[test]
    fn the_core_imports_no_adapter_crate() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
        let mut files = Vec::new();
        rust_files(&root, &mut files);
        assert!(files.len() > 5, "found the core's files: {files:?}");
        let mut offending = Vec::new();
        for file in &files {
            let text = std::fs::read_to_string(file).expect("a core file is readable");
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                for krate in ADAPTER_CRATES {
                    if names_crate(code, krate) {
                        offending.push(format!("{}:{}: {krate}", file.display(), n + 1));
                    }
                }
            }
        }
        assert!(offending.is_empty(), "src/core imports: {offending:?}");
    }

    /// Checked with a made-up crate `web`: this file must pass the check
    /// above itself.
    #[test]
    fn the_check_sees_imports_and_ignores_lookalikes() {
        for import in [
            "use web::HeaderValue;",
            "    let m = web::Method::GET;",
            "use web::{Router};",
            "fn f(s: &web::proxy::Session) {}",
            "use ::web::Body;",
            "use web;",
            "use web as server;",
            "extern crate web;",
        ] {
            assert!(names_crate(import, "web"), "{import}");
        }
        for lookalike in [
            "use web_body_util::Full;",
            "use reqwest::web::Method;",
            "let url = \"webs://example\";",
            "let web = 1;",
        ] {
            assert!(!names_crate(lookalike, "web"), "{lookalike}");
        }
    }
}

//! `[store]`: the store URL, the data key and the previous data keys,
//! and the key files' permissions.

use super::*;

pub(super) fn store_config(c: &mut Checker<'_>, s: &file::Store) -> Option<StoreConfig> {
    let url = if let Some(rest) = s.url.strip_prefix("sqlite://") {
        if rest.is_empty() {
            c.report("store.url", "the SQLite URL names no file");
            None
        } else {
            Some(StoreUrl::Sqlite(c.path(rest)))
        }
    } else if s.url.starts_with("postgres://") || s.url.starts_with("postgresql://") {
        Some(StoreUrl::Postgres(Secret::new(s.url.clone())))
    } else {
        c.report("store.url", "must start with sqlite:// or postgres://");
        None
    };

    let given = [
        s.data_key.is_some(),
        s.data_key_env.is_some(),
        s.data_key_file.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    if given != 1 {
        c.report(
            "store",
            "set exactly one of data_key, data_key_env or data_key_file",
        );
        return None;
    }
    let (key_name, encoded) = if let Some(inline) = &s.data_key {
        ("store.data_key", Some(inline.clone()))
    } else if let Some(name) = &s.data_key_env {
        (
            "store.data_key_env",
            c.env_secret("store.data_key_env", name),
        )
    } else {
        let path = c.path(s.data_key_file.as_deref().unwrap_or_default());
        // A new key for existing data would make that data unreadable.
        let data_exists = match &url {
            Some(StoreUrl::Sqlite(db)) => db.exists(),
            Some(StoreUrl::Postgres(_)) => true,
            None => false,
        };
        ("store.data_key_file", data_key_file(c, &path, data_exists))
    };
    let key = match encoded {
        Some(text) => match DataKey::from_base64(&text) {
            Some(k) => Some(k),
            None => {
                c.report(
                    key_name,
                    "the data key must be standard base64 of exactly 32 bytes (see `refgate key generate`)",
                );
                None
            }
        },
        None => None,
    };
    let previous = previous_data_keys(c, s);
    let data_keys = match (key, previous) {
        (Some(current), Some(mut previous)) => {
            // The current key listed again changes nothing.
            previous.retain(|p| p.id() != current.id());
            Some(Arc::new(DataKeys::new(current, previous)))
        }
        _ => None,
    };
    let max_connections = match s.max_connections {
        Some(n) if !(1..=10_000).contains(&n) => {
            c.report("store.max_connections", "must be between 1 and 10000");
            1
        }
        Some(n) => n,
        None => 16,
    };
    Some(StoreConfig {
        url: url?,
        data_keys: data_keys?,
        max_connections,
    })
}

/// Reads the key file; when serving, it is missing and the store is new,
/// writes a fresh key readable by the owner only.
pub(super) fn data_key_file(c: &mut Checker<'_>, path: &Path, data_exists: bool) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => check_private(c, path).then_some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && data_exists => {
            c.report(
                "store.data_key_file",
                format!(
                    "`{}` is missing but the store already holds data; restore the key \
                     (a new one could not open the stored custom data)",
                    path.display()
                ),
            );
            None
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && c.mode == LoadMode::Check => {
            // `serve` creates it; a valid key is what it will hold.
            Some(Random::default().data_key_base64())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Random::default().data_key_base64();
            match write_private(path, &key) {
                Ok(()) => Some(key),
                Err(e) => {
                    c.report(
                        "store.data_key_file",
                        format!("cannot create `{}`: {e}", path.display()),
                    );
                    None
                }
            }
        }
        Err(e) => {
            c.report(
                "store.data_key_file",
                format!("cannot read `{}`: {e}", path.display()),
            );
            None
        }
    }
}

/// The older keys of a rotation, inline and from the environment; `None`
/// when one of them is not a key (each is reported by its index).
pub(super) fn previous_data_keys(c: &mut Checker<'_>, s: &file::Store) -> Option<Vec<DataKey>> {
    let mut keys = Vec::new();
    let mut all_valid = true;
    let not_a_key = "not standard base64 of exactly 32 bytes (see `refgate key generate`)";
    for (i, text) in s.previous_data_keys.iter().flatten().enumerate() {
        match DataKey::from_base64(text) {
            Some(k) => keys.push(k),
            None => {
                c.report(format!("store.previous_data_keys[{i}]"), not_a_key);
                all_valid = false;
            }
        }
    }
    for (i, name) in s.previous_data_keys_env.iter().flatten().enumerate() {
        let key_name = format!("store.previous_data_keys_env[{i}]");
        match c.env_secret(&key_name, name) {
            Some(text) => match DataKey::from_base64(&text) {
                Some(k) => keys.push(k),
                None => {
                    c.report(
                        key_name,
                        format!("environment variable `{name}` is {not_a_key}"),
                    );
                    all_valid = false;
                }
            },
            None => all_valid = false,
        }
    }
    all_valid.then_some(keys)
}

/// Refuses a key file that group or others may read or write: the data key
/// opens every grant's custom data.
pub(super) fn check_private(c: &mut Checker<'_>, path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let mode = match std::fs::metadata(path) {
        Ok(m) => m.permissions().mode() & 0o777,
        Err(e) => {
            c.report(
                "store.data_key_file",
                format!("cannot read `{}`: {e}", path.display()),
            );
            return false;
        }
    };
    if mode & 0o077 != 0 {
        c.report(
            "store.data_key_file",
            format!(
                "`{path}` is accessible by group or others (mode {mode:04o}); the data key \
                 must be readable by refgate's user only: run `chmod 600 {path}`",
                path = path.display()
            ),
        );
        return false;
    }
    true
}

pub(super) fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        // Owner only, like the SQLite directory it usually shares.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(content.as_bytes())?;
    f.write_all(b"\n")
}

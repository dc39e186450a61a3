//! The audit trail: one JSON object per line for each security event
//! (a token issued, refreshed, exchanged or revoked, a grant changed, a
//! refresh replayed or refused, a request rate-limited), written to
//! `[telemetry] audit_log`, apart from the operational log.
//!
//! Callers pass identifiers only (client ids, subjects, grant ids, JSON
//! pointers); no token, secret, custom value or credential is ever given
//! to [`Audit::record`]. A line is written whole with one `write` on an
//! append-only file, under a plain mutex that is never held across an
//! await; a failed write is logged once and never fails the request.
//! With tracing on, a line carries the `trace_id` of the span it was
//! written in, and its `client_id` and `grant_id` become that span's
//! attributes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use serde_json::{Map, Value};

use crate::config::AuditTarget;

/// The request an audit line is written for: its id and, for work the
/// gateway does on a grant's behalf (a credential refresh), whose grant.
#[derive(Clone, Default)]
pub struct RequestScope {
    pub request_id: String,
    pub client_id: Option<String>,
    pub sub: Option<String>,
    /// The `[[tenants]]` name the request is for (`None`: the top level).
    pub tenant: Option<String>,
}

tokio::task_local! {
    static REQUEST: RequestScope;
}

/// Runs `work` with `id` as the request id audit lines carry, and
/// `tenant` (empty: the top level) as their tenant.
pub async fn with_request_id<F: std::future::Future>(
    id: String,
    tenant: &str,
    work: F,
) -> F::Output {
    let scope = RequestScope {
        request_id: id,
        tenant: (!tenant.is_empty()).then(|| tenant.to_string()),
        ..RequestScope::default()
    };
    REQUEST.scope(scope, work).await
}

/// Runs `work` for `scope`: its lines carry its request id, client and
/// subject unless they name others.
pub async fn with_request<F: std::future::Future>(scope: RequestScope, work: F) -> F::Output {
    REQUEST.scope(scope, work).await
}

/// The caller's `x-request-id` when it is short and plain, else a new one.
pub fn request_id(offered: Option<&str>) -> String {
    match sane_request_id(offered) {
        Some(id) => id.to_string(),
        None => new_request_id(),
    }
}

/// A request id a caller offered, if refgate may repeat it (in logs,
/// answers and audit lines): 1 to 128 letters, digits and `-_.:`. The
/// gateway and the token service keep the same ones.
pub fn sane_request_id(offered: Option<&str>) -> Option<&str> {
    offered.filter(|id| {
        (1..=128).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    })
}

fn new_request_id() -> String {
    // 128 random bits, hex, like a grant id.
    crate::crypto::Random::default().grant_id()
}

enum Sink {
    Stderr,
    File(Mutex<File>),
}

/// Where audit lines go; off when `[telemetry] audit_log` is absent.
pub struct Audit {
    sink: Option<Sink>,
    warned: AtomicBool,
}

impl Audit {
    /// Opens the target: a file is created with mode 0600 and appended to.
    pub fn open(target: Option<&AuditTarget>) -> std::io::Result<Self> {
        let sink = match target {
            None => None,
            Some(AuditTarget::Stderr) => Some(Sink::Stderr),
            Some(AuditTarget::File(path)) => {
                let mut options = OpenOptions::new();
                options.create(true).append(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let file = options.open(path).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("`{}`: {e}", path.display()))
                })?;
                Some(Sink::File(Mutex::new(file)))
            }
        };
        Ok(Audit {
            sink,
            warned: AtomicBool::new(false),
        })
    }

    /// Writes one event. `members` is a JSON object of identifiers; its
    /// null members are left out. The current [`RequestScope`] gives
    /// `request_id` (and `client_id`, `sub`) unless `members` has them.
    pub fn record(&self, event: &str, members: Value) {
        let Some(sink) = &self.sink else {
            return;
        };
        let mut line = Map::new();
        line.insert(
            "time".into(),
            humantime::format_rfc3339_millis(SystemTime::now())
                .to_string()
                .into(),
        );
        line.insert("event".into(), event.into());
        if let Ok(scope) = REQUEST.try_with(Clone::clone) {
            line.insert("request_id".into(), scope.request_id.into());
            if let Some(client_id) = scope.client_id {
                line.insert("client_id".into(), client_id.into());
            }
            if let Some(sub) = scope.sub {
                line.insert("sub".into(), sub.into());
            }
            if let Some(tenant) = scope.tenant {
                line.insert("tenant".into(), tenant.into());
            }
        }
        if let Value::Object(members) = members {
            for (key, value) in members {
                if !value.is_null() {
                    line.insert(key, value);
                }
            }
        }
        if let Some(trace_id) = crate::traces::current_trace_id() {
            line.insert("trace_id".into(), trace_id.into());
            crate::traces::note_ids(&line);
        }
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        let written = match sink {
            Sink::Stderr => std::io::stderr().lock().write_all(text.as_bytes()),
            Sink::File(file) => match file.lock() {
                Ok(mut file) => file.write_all(text.as_bytes()),
                Err(poisoned) => poisoned.into_inner().write_all(text.as_bytes()),
            },
        };
        if let Err(e) = written {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, "cannot write to the audit log; audit lines are lost");
            }
        }
    }
}

//! The listening sockets refgate serves on, opened before anything else
//! starts: bound from `[listen]`, or inherited from the process that started
//! refgate (systemd socket activation: `LISTEN_FDS` and `LISTEN_FDNAMES`).
//!
//! An inherited socket is never closed between the parent's bind and
//! refgate's accept, so a supervisor (or a test harness) can keep a port for
//! refgate across restarts without any other process taking it in between.
//! Binding port 0 works too: the address actually bound is logged.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, RawFd};

use anyhow::Context;

use crate::config::Listen;

/// The first inherited descriptor (`SD_LISTEN_FDS_START`).
const FIRST_INHERITED_FD: RawFd = 3;

/// The sockets of one refgate process.
#[derive(Debug)]
pub struct Listeners {
    /// OAuth endpoints.
    pub token_service: TcpListener,
    /// The gateway, when `[listen] proxy` is set.
    pub proxy: Option<TcpListener>,
    /// Prometheus `/metrics`, when `[listen] metrics` is set.
    pub metrics: Option<TcpListener>,
    /// The admin API, when `[listen] admin` is set.
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Takes each socket named in `LISTEN_FDNAMES` (`proxy`, `token_service`,
    /// `metrics`, `admin`) from the inherited descriptors and binds the others at the
    /// addresses in `listen`.
    pub fn open(listen: &Listen) -> anyhow::Result<Self> {
        let mut inherited = inherited_sockets()?;
        let enabled = |name: &str| match name {
            "proxy" => listen.proxy.is_some(),
            "metrics" => listen.metrics.is_some(),
            "admin" => listen.admin.is_some(),
            _ => true,
        };
        if let Some(name) = inherited.keys().find(|n| !enabled(n)) {
            anyhow::bail!("an inherited socket is named {name:?}, which [listen] does not enable");
        }
        let mut take = |name: &str, addr: Option<SocketAddr>| -> anyhow::Result<_> {
            let Some(addr) = addr else {
                return Ok(None);
            };
            if let Some(listener) = inherited.remove(name) {
                return Ok(Some(listener));
            }
            let listener = TcpListener::bind(addr)
                .with_context(|| format!("cannot listen on {addr} ({name})"))?;
            Ok(Some(listener))
        };
        let token_service = take("token_service", Some(listen.token_service))?
            .context("the token service needs a listener")?;
        let proxy = take("proxy", listen.proxy)?;
        let metrics = take("metrics", listen.metrics)?;
        let admin = take("admin", listen.admin)?;
        for listener in [
            Some(&token_service),
            proxy.as_ref(),
            metrics.as_ref(),
            admin.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            listener
                .set_nonblocking(true)
                .context("cannot make a listener non-blocking")?;
        }
        Ok(Listeners {
            token_service,
            proxy,
            metrics,
            admin,
        })
    }
}

/// The sockets passed by the parent process, by name. Empty when
/// `LISTEN_FDS` is absent or addressed to another process (`LISTEN_PID`).
fn inherited_sockets() -> anyhow::Result<std::collections::HashMap<String, TcpListener>> {
    let mut sockets = std::collections::HashMap::new();
    let Ok(count) = std::env::var("LISTEN_FDS") else {
        return Ok(sockets);
    };
    if let Ok(pid) = std::env::var("LISTEN_PID") {
        if pid.trim() != std::process::id().to_string() {
            return Ok(sockets);
        }
    }
    let count: RawFd = count
        .trim()
        .parse()
        .ok()
        .filter(|n| (0..=64).contains(n))
        .context("LISTEN_FDS must be a small number of descriptors")?;
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    let names: Vec<&str> = names.split(':').filter(|n| !n.is_empty()).collect();
    if names.len() != count as usize {
        anyhow::bail!(
            "LISTEN_FDNAMES must name each of the {count} inherited sockets \
             (proxy, token_service, metrics, admin), separated by ':'"
        );
    }
    for (i, name) in names.into_iter().enumerate() {
        if !["proxy", "token_service", "metrics", "admin"].contains(&name) {
            anyhow::bail!("unknown inherited socket name {name:?} in LISTEN_FDNAMES");
        }
        let fd = FIRST_INHERITED_FD + i as RawFd;
        // SAFETY: the parent passed descriptors FIRST_INHERITED_FD.. to this
        // process for exactly this use, and nothing else in it owns them.
        let listener = unsafe { TcpListener::from_raw_fd(fd) };
        listener
            .local_addr()
            .with_context(|| format!("inherited descriptor {fd} ({name}) is not a TCP socket"))?;
        if sockets.insert(name.to_string(), listener).is_some() {
            anyhow::bail!("LISTEN_FDNAMES names {name:?} twice");
        }
    }
    // The descriptors are ours now; nothing started later should take them.
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    std::env::remove_var("LISTEN_PID");
    Ok(sockets)
}

/// A pingora service whose listener was bound before pingora started: its
/// descriptor goes into pingora's table of listening sockets (the one it
/// uses for zero-downtime upgrades) under the address the service listens
/// on, so pingora serves on it instead of binding again.
pub struct PreBound<S> {
    inner: S,
    address: String,
    fd: Option<RawFd>,
}

impl<S> PreBound<S> {
    /// `inner` must listen on exactly `listener`'s local address.
    pub fn new(inner: S, listener: TcpListener) -> Self {
        use std::os::fd::IntoRawFd;
        let address = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        PreBound {
            inner,
            address,
            fd: Some(listener.into_raw_fd()),
        }
    }
}

#[async_trait::async_trait]
impl<S: pingora::services::ServiceWithDependents> pingora::services::ServiceWithDependents
    for PreBound<S>
{
    async fn start_service(
        &mut self,
        fds: Option<pingora::server::ListenFds>,
        shutdown: pingora::server::ShutdownWatch,
        listeners_per_fd: usize,
        ready_notifier: pingora::services::ServiceReadyNotifier,
    ) {
        // pingora always passes its table on Unix; it takes ownership of
        // the descriptor from there.
        if let (Some(table), Some(fd)) = (fds.as_ref(), self.fd.take()) {
            table.lock().add(self.address.clone(), fd);
        }
        self.inner
            .start_service(fds, shutdown, listeners_per_fd, ready_notifier)
            .await
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn threads(&self) -> Option<usize> {
        self.inner.threads()
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.inner.listen_addresses()
    }
}

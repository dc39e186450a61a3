//! The `refgate` command line: parses arguments, loads the configuration
//! and hands over to [`refgate::app::run`].

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// Many small per-request allocations (headers, tasks, buffers): mimalloc
// handles them with less CPU and less fragmentation than glibc's malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use refgate::config::{self, LoadMode};
use refgate::telemetry::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "refgate",
    version,
    about = "Reverse-proxy gateway and OAuth 2.0 reference-token service"
)]
struct Cli {
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway and the token service.
    Serve {
        /// Configuration file.
        #[arg(long, default_value = "config/refgate.toml")]
        config: PathBuf,
    },
    /// Validate a configuration file; print every problem.
    Check {
        /// Configuration file.
        #[arg(long, default_value = "config/refgate.toml")]
        config: PathBuf,
    },
    /// Client secrets.
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Data-encryption and signing keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
}

#[derive(Subcommand)]
enum SecretCommand {
    /// Read a client secret on stdin and print its `sha256:<hex>` form.
    Hash,
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Print a fresh 256-bit data-encryption key (standard base64).
    Generate,
    /// Add a new signing key now: published at once, it takes over from
    /// the current key after `[signing] publish_ahead`.
    RotateSigning {
        /// Configuration file (its store and data key are used).
        #[arg(long, default_value = "config/refgate.toml")]
        config: PathBuf,
        /// The `[[tenants]]` entry whose keys rotate (default: the top
        /// level's).
        #[arg(long)]
        tenant: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(&config, cli.log_format),
        Command::Check { config } => check(&config),
        Command::Secret {
            command: SecretCommand::Hash,
        } => secret_hash(),
        Command::Key {
            command: KeyCommand::Generate,
        } => {
            println!("{}", refgate::crypto::Random::default().data_key_base64());
            ExitCode::SUCCESS
        }
        Command::Key {
            command: KeyCommand::RotateSigning { config, tenant },
        } => rotate_signing(&config, tenant.as_deref().unwrap_or(""), cli.log_format),
    }
}

fn rotate_signing(path: &std::path::Path, tenant: &str, format: LogFormat) -> ExitCode {
    telemetry::init(format, None);
    let config = match config::load(path, LoadMode::Serve) {
        Ok(c) => c,
        Err(e) => {
            for problem in &e.0 {
                eprintln!("{problem}");
            }
            return ExitCode::FAILURE;
        }
    };
    if config.tenant(tenant).is_none() {
        eprintln!(
            "no [[tenants]] entry named `{tenant}` in {}",
            path.display()
        );
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let store = refgate::store::open(&config.store.url, 1).await?;
        let keys = refgate::signing::SigningKeys::new(
            tenant,
            store,
            config.store.data_keys.clone(),
            config.signing.clone(),
        );
        anyhow::Ok(keys.rotate().await?)
    });
    match outcome {
        Ok(added) => {
            println!(
                "signing key {} ({}) published; it signs from {} (Unix time)",
                added.kid, added.algorithm, added.signs_from
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot rotate the signing key: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(path: &std::path::Path, format: LogFormat) -> ExitCode {
    // Logging starts once the configuration says whether spans are
    // exported too.
    let config = match config::load(path, LoadMode::Serve) {
        Ok(c) => c,
        Err(e) => {
            telemetry::init(format, None);
            for problem in &e.0 {
                tracing::error!("{problem}");
            }
            return ExitCode::FAILURE;
        }
    };
    let export = match config.tracing.as_ref().map(refgate::traces::Export::start) {
        None => None,
        Some(Ok(export)) => Some(export),
        Some(Err(e)) => {
            telemetry::init(format, None);
            tracing::error!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    telemetry::init(format, export.as_ref().map(|e| e.tracer()));
    let listeners = match refgate::listeners::Listeners::open(&config.listen) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = refgate::app::run(config, listeners, shutdown_signal());
    // The spans of the last requests are exported before exiting.
    if let Some(export) = export {
        export.shutdown();
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load(path, LoadMode::Check) {
        Ok(c) => {
            for (key, unresolved) in refgate::dns::unresolvable(&c) {
                eprintln!(
                    "warning: {key}: {unresolved} (from here; refgate resolves it while serving)"
                );
            }
            println!(
                "{}: valid ({} clients, {} routes, {} authorities)",
                path.display(),
                c.clients.len(),
                c.routes.len(),
                c.authorities.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            for problem in &e.0 {
                eprintln!("{problem}");
            }
            ExitCode::FAILURE
        }
    }
}

fn secret_hash() -> ExitCode {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("cannot read the secret from stdin: {e}");
        return ExitCode::FAILURE;
    }
    let secret = input
        .strip_suffix("\r\n")
        .or_else(|| input.strip_suffix('\n'))
        .unwrap_or(&input);
    if secret.is_empty() {
        eprintln!("the secret is empty");
        return ExitCode::FAILURE;
    }
    println!("{}", refgate::crypto::secret_hash_text(secret));
    ExitCode::SUCCESS
}

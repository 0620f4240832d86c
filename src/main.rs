//! `uacd` command line: `run` (default), `check-config`, `status`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's malloc: thousands of small, long-lived
/// per-registration objects and per-call bursts fragment glibc's per-thread
/// arenas (measured with bench/register.sh: at 10k registrations only ~40%
/// of the RSS was live heap); mimalloc's size-class pages keep them dense
/// (PSS per connection 12.1 -> 8.7 KiB). It returns freed pages to the OS
/// only when the thread that freed them allocates again.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_CONFIG: &str = "/etc/uacd/uacd.toml";

/// Transparent huge pages stay off. mimalloc would ask for them on its
/// arenas (`MADV_HUGEPAGE`; built here with its `no_thp` feature, it does
/// not), and a first touch would then fault in and zero 2 MiB where the
/// daemon needed a few KiB; on kernels set to THP `always` the process
/// turns them off itself (`PR_SET_THP_DISABLE`, checked at each fault).
/// Measured with bench/register.sh at 10,000 connections: idle RSS 22.3 ->
/// 13.8 MiB, PSS per connection 6.5 -> 5.8 KiB, start-up from the config
/// file 0.29 -> 0.15 cpu-s. `MIMALLOC_ALLOW_THP=1` in the environment
/// leaves the process to the system's THP setting.
fn disable_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return;
    }
    // EINVAL on kernels before 3.15: nothing to turn off there.
    let _ = nix::sys::prctl::set_thp_disable(true);
}

#[derive(Parser)]
#[command(
    name = "uacd",
    version,
    about = "SIP UAC registration and routing daemon"
)]
struct Cli {
    /// Configuration file.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Run,
    /// Validate the configuration file: exit 0, or print every problem as
    /// `file:line: key: reason` and exit 1.
    CheckConfig,
    /// One line per connection of a running daemon (via its REST API).
    Status {
        /// The daemon's API.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        api: String,
        /// Bearer token; default: the first `api.tokens` entry of --config.
        #[arg(long)]
        token: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    disable_huge_pages();
    let cli = Cli::parse();
    let path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig => match uacd::config::load(&path) {
            Ok(cfg) => {
                println!(
                    "{}: OK ({} connections)",
                    path.display(),
                    cfg.connections.len()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprint!("{errors}");
                if !errors.to_string().ends_with('\n') {
                    eprintln!();
                }
                ExitCode::FAILURE
            }
        },
        Command::Run => run(&path, cli.log_format),
        Command::Status { api, token } => status(&path, &api, token),
    }
}

fn status(path: &std::path::Path, api: &str, token: Option<String>) -> ExitCode {
    let token = match token {
        Some(t) => t,
        None => match uacd::config::load(path) {
            Ok(cfg) => match cfg.api.tokens.first() {
                Some(t) => t.token.expose().to_owned(),
                None => {
                    eprintln!(
                        "uacd status: no --token and no api.tokens in {}",
                        path.display()
                    );
                    return ExitCode::FAILURE;
                }
            },
            Err(_) => {
                eprintln!(
                    "uacd status: no --token, and {} cannot be read for one",
                    path.display()
                );
                return ExitCode::FAILURE;
            }
        },
    };
    match uacd::status::collect(api, &token) {
        Ok(lines) => {
            print!("{}", uacd::status::render(&lines));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("uacd status: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: journald and log files get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(path: &std::path::Path, format: LogFormat) -> ExitCode {
    init_tracing(format);
    let config = match uacd::config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            for line in errors.to_string().lines() {
                tracing::error!("config: {line}");
            }
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        // Handlers first: a signal during start-up must not kill the daemon
        // with bindings left on the PBXes.
        let signals = match Signals::install() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot install signal handlers");
                return ExitCode::FAILURE;
            }
        };
        let statuses = uacd::registration::RegStatus::ALL.map(|s| s.label());
        let transports = uacd::config::Transport::ALL.map(|t| t.uri_param());
        let labels = uacd::metrics::Labels {
            registration_statuses: &statuses,
            transports: &transports,
        };
        match uacd::metrics::install(&labels) {
            Ok(()) => {
                tokio::spawn(uacd::metrics::upkeep());
            }
            Err(e) => tracing::warn!(error = %e, "metrics recorder not installed; /metrics is off"),
        }
        let app = match uacd::app::App::start(config).await {
            Ok(app) => app,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        let probe = app.probe();
        uacd::systemd::ready(&probe.status_line());
        let watchdog = tokio::spawn(probe.run(std::time::Duration::from_secs(10)));
        let mut signals = signals;
        let mut code = ExitCode::SUCCESS;
        loop {
            let event = tokio::select! {
                e = signals.next() => e,
                // Logged where it happened; systemd restarts us (Restart=).
                _ = app.failed() => {
                    code = ExitCode::FAILURE;
                    break;
                }
            };
            match event {
                SignalEvent::Stop => break,
                SignalEvent::Reload => {
                    uacd::systemd::reloading();
                    app.reload(path).await;
                    uacd::systemd::ready(&app.probe().status_line());
                }
            }
        }
        signals.exit_on_second();
        uacd::systemd::stopping(app.stop_budget());
        watchdog.abort();
        app.stop().await;
        code
    });
    // Blocking threads (getaddrinfo on a dead resolver) must not hold the
    // exit past the unregistration deadline.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal that matters: SIGTERM/SIGINT stop, SIGHUP reloads.
    async fn next(&mut self) -> SignalEvent {
        tokio::select! {
            _ = self.term.recv() => SignalEvent::Stop,
            _ = self.int.recv() => SignalEvent::Stop,
            _ = self.hup.recv() => SignalEvent::Reload,
        }
    }

    /// From now on a second SIGTERM/SIGINT exits at once (status 130),
    /// without waiting for the unregistrations.
    fn exit_on_second(mut self) {
        tokio::spawn(async move {
            tokio::select! {
                _ = self.term.recv() => {}
                _ = self.int.recv() => {}
            }
            tracing::warn!("second signal: exiting without unregistering");
            std::process::exit(130);
        });
    }
}

enum SignalEvent {
    Stop,
    Reload,
}

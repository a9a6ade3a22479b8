//! `rampart serve`: run a member until SIGINT or SIGTERM.

use anyhow::Context;

use super::CliError;
use crate::server::{MemberConfig, ServeArgs};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for journald and collectors.
    Json,
}

/// `rampart serve` flags: the member's settings plus logging.
#[derive(Debug, clap::Args)]
pub struct ServeCommand {
    #[command(flatten)]
    args: ServeArgs,
    /// Log level filter (e.g. info, debug, rampart=debug).
    #[arg(long, env = "RAMPART_LOG_LEVEL", default_value = "info,openraft=warn")]
    log_level: String,
    /// text or json.
    #[arg(long, env = "RAMPART_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn init_logging(level: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .with_context(|| format!("--log-level {level:?}"))?;
    // Colours only on a terminal: a log file or journald gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("{e}"))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Runs a member.
pub fn run(cmd: ServeCommand) -> Result<(), CliError> {
    init_logging(&cmd.log_level, cmd.log_format)?;
    let config = MemberConfig::resolve(cmd.args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("rampart")
        .build()?;
    runtime.block_on(crate::server::serve(config, shutdown_signal()))?;
    Ok(())
}

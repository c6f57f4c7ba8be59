//! `proc-mcp`: the MCP server binary. Parses the command line (and `PROC_MCP_*` environment
//! variables) into a [`proc_state::Config`] and serves MCP over stdio with the driver that
//! `--runtime` names: `proc-smol` (the default) or `proc-async-std`.

use std::process::ExitCode;
use std::time::Duration;

use clap::builder::RangedU64ValueParser;
use clap::{CommandFactory as _, Parser, ValueEnum};

/// MCP server that lets AI assistants start, watch, read and stop background processes
/// (dev servers, builds, test watchers) without blocking the conversation.
#[derive(Debug, Parser)]
#[command(
    name = "proc-mcp",
    version,
    long_about = "MCP server that lets AI assistants start, watch, read and stop background \
processes (dev servers, builds, test watchers) without blocking the conversation.

It speaks the Model Context Protocol over stdio: an MCP client starts it as a subprocess and \
exchanges JSON-RPC messages on its stdin and stdout, for example with this entry in the \
client's server configuration:

  { \"mcpServers\": { \"proc\": { \"command\": \"proc-mcp\" } } }

Every task runs in its own process group; when the client closes stdin, or on SIGTERM or \
SIGINT, proc-mcp stops them all and exits. Nothing but MCP messages is written to stdout; \
diagnostics go to stderr.

Sizes accept plain bytes or units: 4MiB, 512KiB, 64KB (KB/MB are powers of 1000, \
KiB/MiB powers of 1024).

At startup proc-mcp raises its own soft limit on open files (RLIMIT_NOFILE) to the hard limit, \
so that many tasks with their pipes fit; each task gets the original soft limit back, and \
inherits no file descriptor but stdin, stdout and stderr."
)]
struct Cli {
    /// Output kept per task (older lines are evicted)
    #[arg(long, env = "PROC_MCP_OUTPUT_BUDGET", value_name = "SIZE", default_value = "4MiB", value_parser = parse_bytes)]
    output_budget: usize,

    /// Output kept for all tasks together; past it, the oldest lines of the task holding the
    /// most are evicted first
    #[arg(long, env = "PROC_MCP_OUTPUT_BUDGET_TOTAL", value_name = "SIZE", default_value = "256MiB", value_parser = parse_bytes)]
    output_budget_total: usize,

    /// Longest output line stored as one line; longer lines are split
    #[arg(long, env = "PROC_MCP_MAX_LINE", value_name = "SIZE", default_value = "64KiB", value_parser = parse_bytes)]
    max_line: usize,

    /// Longest client message (one line on stdin); longer ones are rejected
    #[arg(long, env = "PROC_MCP_MAX_MESSAGE", value_name = "SIZE", default_value = "1MiB", value_parser = parse_bytes)]
    max_message: usize,

    /// Milliseconds `stop` waits after the first signal before SIGKILL
    #[arg(
        long,
        env = "PROC_MCP_STOP_GRACE_MS",
        value_name = "MS",
        default_value_t = 5000
    )]
    stop_grace_ms: u64,

    /// Milliseconds to wait at shutdown after SIGTERM to every task before SIGKILL
    #[arg(
        long,
        env = "PROC_MCP_SHUTDOWN_GRACE_MS",
        value_name = "MS",
        default_value_t = 1000
    )]
    shutdown_grace_ms: u64,

    /// Most tasks kept at once (running, or exited and not yet removed)
    #[arg(long, env = "PROC_MCP_MAX_TASKS", value_name = "N", default_value_t = 1024,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    max_tasks: usize,

    /// Most items on one page of `tools/list` and `resources/list` (clients follow `nextCursor`)
    #[arg(long, env = "PROC_MCP_PAGE_SIZE", value_name = "N", default_value_t = 100,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    page_size: usize,

    /// Put every task in a cgroup v2 of its own when the server may manage cgroups under its
    /// own (`auto`), or never (`off`); processes that leave a task's process group are found by
    /// an inherited environment tag either way
    #[arg(
        long,
        env = "PROC_MCP_CGROUPS",
        value_name = "WHEN",
        value_enum,
        default_value_t = Cgroups::Auto
    )]
    cgroups: Cgroups,

    /// Let `wait`'s `url` and `start`'s `wait_url` name any host, not only loopback ones
    #[arg(long, env = "PROC_MCP_PROBE_ANY_HOST")]
    probe_any_host: bool,

    /// Async runtime that drives the server; both behave the same (smol is the primary one,
    /// async-std is discontinued upstream)
    #[arg(
        long,
        env = "PROC_MCP_RUNTIME",
        value_name = "RUNTIME",
        value_enum,
        default_value_t = RuntimeName::Smol
    )]
    runtime: RuntimeName,
}

/// When `--cgroups` puts tasks in cgroups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Cgroups {
    /// whenever the server can manage cgroup v2 under its own cgroup
    Auto,
    /// never
    Off,
}

/// The drivers `--runtime` can pick.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum RuntimeName {
    /// the smol driver (proc-smol), the primary one
    Smol,
    /// the async-std driver (proc-async-std): the same behaviour on async-std
    AsyncStd,
}

/// Parses a byte size such as `4194304`, `4MiB` or `512 KiB`; at least one byte.
fn parse_bytes(text: &str) -> Result<usize, String> {
    let bytes =
        parse_size::parse_size(text).map_err(|err| format!("{err} (e.g. 4MiB, 512KiB, 65536)"))?;
    let bytes = usize::try_from(bytes).map_err(|_| "too large for this platform".to_owned())?;
    if bytes == 0 {
        return Err("must be at least 1 byte".to_owned());
    }
    Ok(bytes)
}

impl Cli {
    fn config(&self) -> proc_state::Config {
        let mut config = proc_state::Config::default();
        config.output_budget_bytes = self.output_budget;
        config.output_budget_total_bytes = self.output_budget_total;
        config.max_line_bytes = self.max_line;
        config.max_message_bytes = self.max_message;
        config.default_grace = Duration::from_millis(self.stop_grace_ms);
        config.shutdown_grace = Duration::from_millis(self.shutdown_grace_ms);
        config.max_tasks = self.max_tasks;
        config.page_size = self.page_size;
        config.probe_any_host = self.probe_any_host;
        config.server_version = env!("CARGO_PKG_VERSION").to_owned();
        config
    }
}

fn main() -> ExitCode {
    // The same executable is the server's watchdog (see proc_os::watchdog).
    proc_os::watchdog::run_if_requested();
    let cli = Cli::parse();
    if cli.max_line > cli.output_budget.min(cli.output_budget_total) {
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                format!(
                    "--max-line ({}) must not be larger than --output-budget ({}) or --output-budget-total ({})",
                    cli.max_line, cli.output_budget, cli.output_budget_total
                ),
            )
            .exit();
    }
    let mut contain = proc_os::contain::ContainOptions::all("/proc/self/exe".into());
    contain.cgroups = cli.cgroups == Cgroups::Auto;
    let served = match cli.runtime {
        RuntimeName::Smol => proc_smol::serve_stdio(cli.config(), contain),
        RuntimeName::AsyncStd => proc_async_std::serve_stdio(cli.config(), contain),
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("proc-mcp: {err}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("proc-mcp").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_match_the_core() {
        let config = parse(&[]).expect("no arguments").config();
        let core = proc_state::Config::default();
        assert_eq!(config.output_budget_bytes, core.output_budget_bytes);
        assert_eq!(
            config.output_budget_total_bytes,
            core.output_budget_total_bytes
        );
        assert_eq!(config.max_line_bytes, core.max_line_bytes);
        assert_eq!(config.max_message_bytes, core.max_message_bytes);
        assert_eq!(config.default_grace, core.default_grace);
        assert_eq!(config.shutdown_grace, core.shutdown_grace);
        assert_eq!(config.max_tasks, core.max_tasks);
        assert_eq!(config.exit_drain, core.exit_drain);
        assert_eq!(config.probe_any_host, core.probe_any_host);
        assert_eq!(config.server_name, "proc-mcp");
        assert_eq!(config.server_version, env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn sizes_take_units() {
        let cli = parse(&[
            "--output-budget",
            "512KiB",
            "--max-line",
            "1000",
            "--max-message",
            "2MB",
        ])
        .expect("valid");
        assert_eq!(
            (cli.output_budget, cli.max_line, cli.max_message),
            (512 << 10, 1000, 2_000_000)
        );
        for bad in ["0", "lots", "-1", "4 parsecs"] {
            assert!(parse(&["--output-budget", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_and_counts() {
        let config = parse(&[
            "--stop-grace-ms",
            "250",
            "--shutdown-grace-ms",
            "0",
            "--max-tasks",
            "3",
        ])
        .expect("valid")
        .config();
        assert_eq!(config.default_grace, Duration::from_millis(250));
        assert_eq!(config.shutdown_grace, Duration::ZERO);
        assert_eq!(config.max_tasks, 3);
        assert!(parse(&["--max-tasks", "0"]).is_err());
        assert!(
            parse(&["--probe-any-host"])
                .expect("a flag")
                .config()
                .probe_any_host
        );
        assert!(parse(&["--stop-grace-ms", "soon"]).is_err());
    }

    #[test]
    fn the_runtime_is_smol_unless_asked() {
        assert_eq!(parse(&[]).expect("default").runtime, RuntimeName::Smol);
        let cli = parse(&["--runtime", "async-std"]).expect("async-std");
        assert_eq!(cli.runtime, RuntimeName::AsyncStd);
        assert_eq!(
            parse(&["--runtime", "smol"]).expect("smol").runtime,
            RuntimeName::Smol
        );
        assert!(parse(&["--runtime", "tokio"]).is_err());
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}

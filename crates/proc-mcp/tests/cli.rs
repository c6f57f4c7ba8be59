//! The command line of the real binary: help, version, errors, environment variables.

use std::process::{Command, Output, Stdio};

/// Runs the binary to its end (within 20 s) with stdin `/dev/null`.
fn proc_mcp(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_proc-mcp"));
    command
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    let what = format!("proc-mcp {args:?}");
    proc_testkit::within(std::time::Duration::from_secs(20), &what, move || {
        command.output()
    })
    .expect("run proc-mcp")
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("utf-8")
}

#[test]
fn help_says_what_it_is_and_how_it_is_run() {
    let out = proc_mcp(&["--help"], &[]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for needle in [
        "MCP server",
        "background",
        "stdio",
        "mcpServers",
        "--output-budget <SIZE>",
        "PROC_MCP_OUTPUT_BUDGET",
        "[default: 4MiB]",
        "--max-line",
        "PROC_MCP_MAX_LINE",
        "--max-message",
        "PROC_MCP_MAX_MESSAGE",
        "--stop-grace-ms",
        "PROC_MCP_STOP_GRACE_MS",
        "--shutdown-grace-ms",
        "PROC_MCP_SHUTDOWN_GRACE_MS",
        "--max-tasks",
        "PROC_MCP_MAX_TASKS",
        "--runtime <RUNTIME>",
        "PROC_MCP_RUNTIME",
        "async-std",
        "[default: smol]",
        "RLIMIT_NOFILE",
    ] {
        assert!(help.contains(needle), "help lacks {needle:?}:\n{help}");
    }
}

#[test]
fn version() {
    let out = proc_mcp(&["--version"], &[]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout),
        format!("proc-mcp {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn invalid_options_exit_2_with_the_error_on_stderr_only() {
    for (args, env) in [
        (&["--no-such-option"][..], &[][..]),
        (&["--output-budget", "lots"], &[]),
        (&["--max-tasks", "0"], &[]),
        (&["--max-line", "2MiB", "--output-budget", "1MiB"], &[]),
        (&[], &[("PROC_MCP_MAX_MESSAGE", "0")]),
        (&[], &[("PROC_MCP_STOP_GRACE_MS", "soon")]),
        (&["--runtime", "tokio"], &[]),
        (&[], &[("PROC_MCP_RUNTIME", "async_std")]),
    ] {
        let out = proc_mcp(args, env);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}");
        assert!(out.stdout.is_empty(), "stdout must stay clean: {args:?}");
        assert!(
            text(&out.stderr).contains("error:"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn environment_variables_are_read() {
    // clap shows the value it took from the environment...
    let out = proc_mcp(&["--help"], &[("PROC_MCP_MAX_TASKS", "5")]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("[env: PROC_MCP_MAX_TASKS=5]"));
    // ...and validates it like the option.
    let out = proc_mcp(&[], &[("PROC_MCP_OUTPUT_BUDGET", "nonsense")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--output-budget"),
        "{}",
        text(&out.stderr)
    );
}

/// Starts the server with a task running, sends it `signal`, and checks that it stops the task
/// and exits 0 with stdout holding nothing but JSON-RPC lines.
fn stops_everything_on(runtime: &str, signal: nix::sys::signal::Signal) {
    use std::io::Write as _;
    use std::time::Duration;

    use proc_testkit::{Lines, proc_entry_exists, wait_child};

    const TIMEOUT: Duration = Duration::from_secs(20);

    let mut server = Command::new(env!("CARGO_BIN_EXE_proc-mcp"))
        .args(["--runtime", runtime])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start proc-mcp");
    let mut stdin = server.stdin.take().expect("stdin");
    let mut stdout = Lines::new(server.stdout.take().expect("stdout"), "proc-mcp's stdout");
    for message in [
        r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"cli-test","version":"0"}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"start","arguments":{"command":"sleep","args":["1000"]}}}"#,
    ] {
        writeln!(stdin, "{message}").expect("write to proc-mcp");
    }
    let pid = loop {
        let line = stdout.line(TIMEOUT);
        let message: serde_json::Value = serde_json::from_str(&line).expect("JSON-RPC line");
        if message["id"] == 1 {
            let pid = message["result"]["structuredContent"]["pid"].as_i64();
            break i32::try_from(pid.expect("pid in start result")).expect("pid");
        }
    };
    let server_pid = nix::unistd::Pid::from_raw(i32::try_from(server.id()).expect("pid"));
    nix::sys::signal::kill(server_pid, signal).expect("signal proc-mcp");

    let status = wait_child(&mut server, TIMEOUT, "proc-mcp after the signal");
    assert_eq!(status.code(), Some(0));
    // The task was reaped by the server (its /proc entry is gone): it did not outlive it.
    assert!(!proc_entry_exists(pid), "task {pid} outlived the server");
    while let Some(line) = stdout.next_within(TIMEOUT) {
        let _: serde_json::Value = serde_json::from_str(&line).expect("only JSON-RPC on stdout");
    }
    drop(stdin);
}

#[test]
fn sigterm_stops_every_task_and_exits_0() {
    for runtime in ["smol", "async-std"] {
        stops_everything_on(runtime, nix::sys::signal::Signal::SIGTERM);
    }
}

#[test]
fn sigint_stops_every_task_and_exits_0() {
    for runtime in ["smol", "async-std"] {
        stops_everything_on(runtime, nix::sys::signal::Signal::SIGINT);
    }
}

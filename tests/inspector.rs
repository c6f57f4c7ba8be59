//! The MCP Inspector's CLI mode (`@modelcontextprotocol/inspector`, the protocol's reference
//! debugging client) against the built binary, over stdio, in both protocol eras it speaks:
//! `--protocol-era legacy` (the `initialize` handshake) and `--protocol-era modern`
//! (2026-07-28, stateless). Each test is one Inspector run: it spawns the server, sends one
//! request, prints the result as JSON (`--format json`: `{"result": …}` on stdout) and closes
//! the server's stdin.
//!
//! The Inspector needs Node >= 22.19 and the machine may have an older one, so
//! `tests/interop/inspector/package-lock.json` pins both the Inspector and the npm package
//! `node` (a Node binary for this platform, fetched from the registry by its `preinstall`
//! script, the one install script `allowScripts` lets run). They are installed with `npm ci`
//! on first use into `<target>/interop/inspector` and reinstalled only when package.json or the
//! lockfile change.

mod common;
mod support;

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::kill;
use nix::unistd::Pid;
use proc_state::Config;
use proc_state::tools::Tool;
use serde_json::{Value, json};
use support::run_bounded;

/// Bound for `npm ci` (about 30 s with a cold npm cache; a loaded 2-core machine).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);
/// Bound for one Inspector run (it takes about a second: Node start, one request, close).
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound for a task's process group to disappear once the Inspector has exited.
const GROUP_GONE_TIMEOUT: Duration = Duration::from_secs(15);

/// The installed Inspector.
struct Inspector {
    /// The Node 22 binary of the pinned `node` package.
    node: PathBuf,
    /// The Inspector's launcher script (`mcp-inspector` in its package.json `bin`).
    launcher: PathBuf,
    /// HOME for the Inspector, so its catalog and config files stay under `target/`.
    home: PathBuf,
}

/// The pinned Inspector and Node, installed on first use (see the module docs).
fn inspector() -> &'static Inspector {
    static INSPECTOR: OnceLock<Inspector> = OnceLock::new();
    INSPECTOR.get_or_init(|| {
        let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/inspector");
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let dir = tmp.parent().unwrap_or(tmp).join("interop/inspector");
        let manifest = fs::read_to_string(sources.join("package.json")).expect("package.json");
        let lock =
            fs::read_to_string(sources.join("package-lock.json")).expect("package-lock.json");
        let node_version =
            serde_json::from_str::<Value>(&manifest).expect("package.json")["dependencies"]["node"]
                .as_str()
                .expect("package.json pins `node`")
                .to_owned();
        let inspector = Inspector {
            node: dir.join("node_modules/node/bin/node"),
            launcher: dir.join(
                "node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js",
            ),
            home: dir.join("home"),
        };

        let wanted = format!("{manifest}\n{lock}");
        let marker = dir.join(".proc-mcp-installed");
        let _lock = lock_file(&dir.with_extension("lock"));
        if fs::read_to_string(&marker).ok().as_deref() != Some(wanted.as_str()) {
            let started = Instant::now();
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("create the inspector dir");
            fs::write(dir.join("package.json"), &manifest).unwrap();
            fs::write(dir.join("package-lock.json"), &lock).unwrap();
            run_bounded(
                Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                    .current_dir(&dir),
                INSTALL_TIMEOUT,
            )
            .assert_success("npm ci (the MCP Inspector and Node 22)");
            // The binary comes from the `node` package's preinstall script: an npm that skips
            // install scripts leaves a placeholder, which must fail here rather than later.
            let version = run_bounded(Command::new(&inspector.node).arg("--version"), RUN_TIMEOUT);
            version.assert_success("node --version");
            assert_eq!(
                version.stdout.trim(),
                format!("v{node_version}"),
                "{} is not the pinned Node",
                inspector.node.display()
            );
            fs::write(&marker, &wanted).expect("write the inspector marker");
            eprintln!(
                "inspector: installed the MCP Inspector and Node {node_version} into {} in {:.1?}",
                dir.display(),
                started.elapsed()
            );
        }
        fs::create_dir_all(&inspector.home).expect("create the Inspector's HOME");
        inspector
    })
}

/// An exclusive lock on `path`: test binaries (or nextest's processes) never install at once.
fn lock_file(path: &Path) -> Flock<File> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    Flock::lock(file, FlockArg::LockExclusive).unwrap_or_else(|(_, e)| panic!("flock: {e}"))
}

/// Runs `mcp-inspector --cli` on the server with `era` (`legacy` or `modern`) and `args` (the
/// method and its options); the `result` it printed.
///
/// The Inspector gets a clean environment (PATH, and HOME under `target/`); the MCP SDK hands
/// the server only a few variables of its own (HOME, PATH, …) plus `-e` ones, so
/// `PROC_MCP_RUNTIME` is passed on with `-e` when set, and nothing else of the developer's
/// `PROC_MCP_*` reaches the server.
#[track_caller]
fn run(era: &str, args: &[&str]) -> Value {
    let inspector = inspector();
    let mut cmd = Command::new(&inspector.node);
    cmd.arg(&inspector.launcher)
        .args(["--cli", "--format", "json", "--protocol-era", era])
        .args(["--connect-timeout", "60000"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &inspector.home)
        .current_dir(&inspector.home);
    if let Ok(runtime) = std::env::var("PROC_MCP_RUNTIME") {
        cmd.arg("-e").arg(format!("PROC_MCP_RUNTIME={runtime}"));
    }
    cmd.arg(common::server_bin()).args(args);
    let shown = format!(
        "mcp-inspector --cli --protocol-era {era} {}",
        args.join(" ")
    );
    let run = run_bounded(&mut cmd, RUN_TIMEOUT);
    run.assert_success(&shown);
    let printed: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{shown} printed no JSON ({e}):\n{}", run.stdout));
    let Some(result) = printed.get("result") else {
        panic!("{shown} printed no result: {printed}");
    };
    result.clone()
}

/// Waits (bounded by [`GROUP_GONE_TIMEOUT`]) until `kill(-pgid, 0)` fails with ESRCH: no
/// process, zombies included, is left in the group (kill(2)).
fn assert_group_gone(pgid: i32) {
    let deadline = Instant::now() + GROUP_GONE_TIMEOUT;
    loop {
        match kill(Pid::from_raw(-pgid), None) {
            Err(Errno::ESRCH) => return,
            Ok(()) => {}
            Err(e) => panic!("kill(-{pgid}, 0): {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "process group {pgid} still exists {GROUP_GONE_TIMEOUT:?} after the Inspector's \
             session ended: the task outlived its server"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// tools/list
// ---------------------------------------------------------------------------------------------

/// The Inspector lists the ten tools, in order, each exactly as the server defines it (input
/// and output schemas included); `--strict` exits 6 on an error-severity schema portability
/// problem, so its success also says there is none (the warnings it prints are the nullable
/// `["string", "null"]` types of the output schemas).
fn tools_list(era: &str) {
    let result = run(era, &["--method", "tools/list", "--strict"]);
    let tools = result["tools"].as_array().expect("tools");
    let names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    let expected: Vec<&str> = Tool::ALL.iter().map(|t| t.name()).collect();
    assert_eq!(names, expected, "tools/list ({era}): {result}");
    for (listed, tool) in tools.iter().zip(Tool::ALL) {
        assert_eq!(
            *listed,
            tool.definition(&Config::default()),
            "tools/list ({era}): `{}` as the Inspector sees it",
            tool.name()
        );
    }
    let start = &tools[0]["inputSchema"];
    assert_eq!(start["required"], json!(["command"]), "start: {start}");
    assert_eq!(start["properties"]["wait_for"]["type"], "string");
}

#[test]
fn tools_list_shows_the_ten_tools_with_their_schemas_handshake_era() {
    tools_list("legacy");
}

#[test]
fn tools_list_shows_the_ten_tools_with_their_schemas_stateless_era() {
    tools_list("modern");
}

// ---------------------------------------------------------------------------------------------
// tools/call start with wait_for
// ---------------------------------------------------------------------------------------------

/// `start` with `wait_for` returns once the ready line is printed, with `ready` saying the
/// pattern matched; the task (which would run for a minute) ends with the Inspector's session,
/// when the server sees its stdin close (or, 2 s later, the SDK's SIGTERM). In the stateless
/// era every result carries the server's info in `_meta`, which tells the eras apart.
fn start_with_wait_for(era: &str) {
    let command = "sleep 0.3; echo ready; sleep 60";
    let result = run(
        era,
        &[
            "--method",
            "tools/call",
            "--tool-name",
            "start",
            "--tool-arg",
            &format!("command={command}"),
            "wait_for=^ready$",
            "wait_timeout_ms=60000",
        ],
    );
    assert_ne!(result["isError"], true, "start ({era}): {result}");
    let task = &result["structuredContent"];
    assert_eq!(
        task["ready"],
        json!({"matched": true, "line": "ready", "reason": "matched"}),
        "start ({era}): {result}"
    );
    assert_eq!(task["state"], "running", "start ({era}): {result}");
    assert_eq!(task["command"], command, "start ({era}): {result}");
    let server_info = &result["_meta"]["io.modelcontextprotocol/serverInfo"];
    match era {
        "modern" => assert_eq!(server_info["name"], "proc-mcp", "start ({era}): {result}"),
        _ => assert!(server_info.is_null(), "start ({era}): {result}"),
    }
    let pgid = task["pid"]
        .as_i64()
        .and_then(|pid| i32::try_from(pid).ok())
        .filter(|&pid| pid > 1)
        .unwrap_or_else(|| panic!("start ({era}): no pid in {result}"));
    // The task runs in its own process group (start's description), so its pid is its pgid.
    assert_group_gone(pgid);
}

#[test]
fn start_with_wait_for_returns_ready_and_the_task_ends_with_the_session_handshake_era() {
    start_with_wait_for("legacy");
}

#[test]
fn start_with_wait_for_returns_ready_and_the_task_ends_with_the_session_stateless_era() {
    start_with_wait_for("modern");
}

// ---------------------------------------------------------------------------------------------
// resources/templates/list
// ---------------------------------------------------------------------------------------------

/// The one template: a task's output by id or name, as text.
fn templates_list(era: &str) {
    let result = run(era, &["--method", "resources/templates/list"]);
    let templates = result["resourceTemplates"]
        .as_array()
        .unwrap_or_else(|| panic!("resources/templates/list ({era}): {result}"));
    assert_eq!(templates.len(), 1, "({era}): {result}");
    let template = &templates[0];
    assert_eq!(
        template["uriTemplate"], "proc://{id}/output",
        "({era}): {result}"
    );
    assert_eq!(template["name"], "task-output", "({era}): {result}");
    assert_eq!(template["mimeType"], "text/plain", "({era}): {result}");
    for key in ["title", "description"] {
        assert!(
            template[key].as_str().is_some_and(|s| !s.is_empty()),
            "({era}): no {key} in {result}"
        );
    }
}

#[test]
fn resource_templates_list_returns_the_task_output_template_handshake_era() {
    templates_list("legacy");
}

#[test]
fn resource_templates_list_returns_the_task_output_template_stateless_era() {
    templates_list("modern");
}

//! The server driven by a real MCP client: the official Rust SDK (`rmcp`), over its
//! child-process transport.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation,
    ProtocolVersion, ServerPeerInfo,
};
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;
use tokio::io::AsyncReadExt;

use super::{POLL_INTERVAL, POLL_TIMEOUT, RESPONSE_TIMEOUT, server_command};

/// Bound for one tool call (a `stop` may wait out its grace period).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// An rmcp client session with one `proc-mcp` server. Call [`Client::close`] at the end of
/// a test (closes the server's stdin and waits for it); when a test panics, dropping it prints
/// the server's stderr.
pub struct Client {
    service: Option<RunningService<RoleClient, ClientConfig>>,
    /// The server process's pid.
    pub server_pid: u32,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Client {
    /// Starts the server with default settings and completes the handshake at `version`.
    pub async fn connect(version: ProtocolVersion) -> Self {
        Self::connect_with(version, &[], &[]).await
    }

    /// Starts the server with CLI arguments and extra environment, then the handshake.
    pub async fn connect_with(
        version: ProtocolVersion,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let cmd = tokio::process::Command::from(server_command(args, env));
        let (transport, stderr) = TokioChildProcess::builder(cmd)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn proc-mcp");
        let server_pid = transport.id().expect("server pid");

        let log = Arc::new(Mutex::new(Vec::new()));
        if let Some(mut stderr) = stderr {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                while let Ok(n @ 1..) = stderr.read(&mut buf).await {
                    let mut log = log.lock().unwrap();
                    log.extend_from_slice(&buf[..n]);
                    let excess = log.len().saturating_sub(64 << 10);
                    log.drain(..excess);
                }
            });
        }

        let config = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("proc-mcp-suite", env!("CARGO_PKG_VERSION")),
        )
        .with_protocol_version(version.clone());
        let Ok(served) = tokio::time::timeout(RESPONSE_TIMEOUT, config.serve(transport)).await
        else {
            panic!("no initialize reply within {RESPONSE_TIMEOUT:?} ({version})");
        };
        let service = served.unwrap_or_else(|e| panic!("initialize at {version} failed: {e}"));
        Client {
            service: Some(service),
            server_pid,
            stderr: log,
        }
    }

    fn service(&self) -> &RunningService<RoleClient, ClientConfig> {
        self.service.as_ref().expect("client already closed")
    }

    /// What the server answered to `initialize`.
    pub fn server_info(&self) -> Arc<ServerPeerInfo> {
        self.service().peer_info().expect("handshake done")
    }

    /// `tools/list`, each tool as JSON (wire field names).
    pub async fn tools(&self) -> Vec<Value> {
        let listed = tokio::time::timeout(RESPONSE_TIMEOUT, self.service().list_tools(None))
            .await
            .expect("tools/list timed out")
            .expect("tools/list failed");
        listed
            .tools
            .iter()
            .map(|t| serde_json::to_value(t).expect("tool to JSON"))
            .collect()
    }

    /// `tools/call`: the whole result (panics on a JSON-RPC error or a timeout).
    pub async fn call_result(&self, tool: &str, arguments: Value) -> CallToolResult {
        let args = arguments
            .as_object()
            .unwrap_or_else(|| panic!("arguments must be an object: {arguments}"))
            .clone();
        let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(args);
        tokio::time::timeout(CALL_TIMEOUT, self.service().call_tool(params))
            .await
            .unwrap_or_else(|_| panic!("{tool} {arguments}: no reply within {CALL_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("{tool} {arguments}: {e}"))
    }

    /// `tools/call` that must succeed: its `structuredContent`.
    pub async fn call(&self, tool: &str, arguments: Value) -> Value {
        let result = self.call_result(tool, arguments.clone()).await;
        assert_ne!(
            result.is_error,
            Some(true),
            "{tool} {arguments} failed: {}",
            text(&result)
        );
        result
            .structured_content
            .unwrap_or_else(|| panic!("{tool} {arguments}: no structuredContent"))
    }

    /// `tools/call` that must be a tool execution error (`isError: true`): its text.
    pub async fn call_err(&self, tool: &str, arguments: Value) -> String {
        let result = self.call_result(tool, arguments.clone()).await;
        assert_eq!(
            result.is_error,
            Some(true),
            "{tool} {arguments} should be a tool error, got {:?}",
            result.structured_content
        );
        text(&result)
    }

    /// Calls `tool` every [`POLL_INTERVAL`] until `done(structuredContent)`, for at most
    /// `timeout`; returns the last structuredContent.
    pub async fn poll_within(
        &self,
        timeout: Duration,
        tool: &str,
        arguments: Value,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.call(tool, arguments.clone()).await;
            if done(&value) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "gave up after {timeout:?} polling {tool} {arguments}; last: {}",
                super::truncate(&value.to_string(), 2000)
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// [`Self::poll_within`] with [`POLL_TIMEOUT`].
    pub async fn poll(&self, tool: &str, arguments: Value, done: impl Fn(&Value) -> bool) -> Value {
        self.poll_within(POLL_TIMEOUT, tool, arguments, done).await
    }

    /// Polls `status` until the task's state is `exited`; returns that status.
    pub async fn wait_exited(&self, id: &str) -> Value {
        self.poll("status", serde_json::json!({"id": id, "tail": 0}), |s| {
            s["state"] == "exited"
        })
        .await
    }

    /// Polls `logs` (with `arguments`) until some line's text contains `needle`; returns
    /// that `logs` result.
    pub async fn wait_for_line(&self, arguments: Value, needle: &str) -> Value {
        self.poll("logs", arguments, |logs| {
            logs["lines"].as_array().is_some_and(|lines| {
                lines
                    .iter()
                    .any(|l| l["text"].as_str().is_some_and(|t| t.contains(needle)))
            })
        })
        .await
    }

    /// Ends the session the way MCP clients do: close the server's stdin and wait for it to
    /// exit (rmcp sends SIGTERM, then SIGKILL, if it lingers).
    pub async fn close(mut self) {
        if let Some(mut service) = self.service.take() {
            let _ = service.close_with_timeout(Duration::from_secs(10)).await;
        }
    }

    /// What the server wrote to stderr so far (the last 64 KiB).
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- proc-mcp (pid {}) stderr:\n{}",
                self.server_pid,
                self.stderr()
            );
        }
    }
}

/// The text of a result's first text block (empty if none).
pub fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .find_map(|c| c.as_text().map(|t| t.text.clone()))
        .unwrap_or_default()
}

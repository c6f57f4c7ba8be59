//! The MCP handshake and the tool list, as the official Rust SDK (rmcp) sees them.

mod common;

use common::client::Client;
use rmcp::model::ProtocolVersion;
use serde_json::Value;

/// The v1 tool set (wait, write, signal and restart come later).
const TOOLS: [&str; 12] = [
    "list", "logs", "remove", "resize", "restart", "screen", "signal", "start", "status", "stop",
    "wait", "write",
];

/// Handshake at `version`: the server echoes it, and `tools/list` names exactly the tools.
async fn assert_handshake(version: ProtocolVersion) {
    let client = Client::connect(version.clone()).await;
    let info = client.server_info();
    assert_eq!(
        info.protocol_version, version,
        "the server must answer with the version asked for"
    );
    assert_eq!(
        info.server_info.as_ref().map(|i| i.name.as_str()),
        Some("proc-mcp")
    );

    let mut names: Vec<String> = client
        .tools()
        .await
        .iter()
        .map(|t| t["name"].as_str().expect("tool name").to_owned())
        .collect();
    names.sort();
    assert_eq!(names, TOOLS);
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_at_2024_11_05_echoes_version_and_lists_tools() {
    assert_handshake(ProtocolVersion::V_2024_11_05).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_at_2025_03_26_echoes_version_and_lists_tools() {
    assert_handshake(ProtocolVersion::V_2025_03_26).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_at_2025_06_18_echoes_version_and_lists_tools() {
    assert_handshake(ProtocolVersion::V_2025_06_18).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_at_2025_11_25_echoes_version_and_lists_tools() {
    assert_handshake(ProtocolVersion::V_2025_11_25).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tool_has_title_schemas_and_honest_annotations() {
    let client = Client::connect(ProtocolVersion::V_2025_11_25).await;
    let tools = client.tools().await;
    assert_eq!(tools.len(), TOOLS.len(), "tools: {tools:#?}");
    for tool in &tools {
        let name = tool["name"].as_str().expect("name");
        let non_empty = |field: &str| tool[field].as_str().is_some_and(|s| !s.trim().is_empty());
        assert!(non_empty("title"), "{name}: no title in {tool}");
        assert!(non_empty("description"), "{name}: no description in {tool}");

        let input = &tool["inputSchema"];
        assert_eq!(input["type"], "object", "{name}: inputSchema {input}");
        assert_eq!(
            input["additionalProperties"], false,
            "{name}: inputSchema {input}"
        );
        let required = |field: &str| {
            input["required"]
                .as_array()
                .is_some_and(|r| r.iter().any(|f| f == field))
        };
        match name {
            "start" => assert!(required("command"), "start must require `command`: {input}"),
            "list" => {}
            _ => assert!(required("id"), "{name} must require `id`: {input}"),
        }
        assert_eq!(
            tool["outputSchema"]["type"], "object",
            "{name}: outputSchema {}",
            tool["outputSchema"]
        );

        let hints = &tool["annotations"];
        let hint = |h: &str| hints.get(h).cloned().unwrap_or(Value::Null);
        assert_eq!(hint("openWorldHint"), false, "{name}: annotations {hints}");
        match name {
            "status" | "logs" | "list" | "wait" | "screen" => {
                assert_eq!(
                    hint("readOnlyHint"),
                    true,
                    "{name} reads only: annotations {hints}"
                )
            }
            "stop" | "remove" | "signal" | "restart" => {
                assert_ne!(
                    hint("readOnlyHint"),
                    true,
                    "{name} is not read-only: annotations {hints}"
                );
                assert_eq!(
                    hint("destructiveHint"),
                    true,
                    "{name} is destructive: annotations {hints}"
                );
            }
            "start" | "write" | "resize" => assert_ne!(
                hint("readOnlyHint"),
                true,
                "{name} is not read-only: annotations {hints}"
            ),
            other => panic!("unexpected tool {other}"),
        }
    }
    client.close().await;
}

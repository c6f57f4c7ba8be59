//! The whole core under arbitrary client bytes and process events: it must never panic, and
//! everything it sends must be one compact JSON-RPC message per line without `"params": null`.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use proc_state::{Config, ExitStatus, Input, Instant, Now, Output, RunId, Server, Signal, Stream};

#[derive(Arbitrary, Debug)]
enum Op {
    /// Raw client bytes.
    Bytes(Vec<u8>),
    /// A well-formed message, so the fuzzer reaches the tools quickly.
    Call {
        id: i8,
        tool: u8,
        arguments: String,
    },
    Initialize {
        version: u8,
    },
    Spawned {
        run: u8,
        pid: u16,
    },
    SpawnFailed {
        run: u8,
    },
    Output {
        run: u8,
        stderr: bool,
        bytes: Vec<u8>,
    },
    Closed {
        run: u8,
        stderr: bool,
    },
    Exited {
        run: u8,
        code: i8,
        signaled: bool,
    },
    Advance {
        ms: u16,
    },
    Eof,
    Terminate,
}

const TOOLS: [&str; 7] = ["start", "status", "logs", "stop", "list", "remove", "nope"];
const VERSIONS: [&str; 5] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "x"];

fn check(output: &Output) {
    if let Output::Transmit(line) = output {
        assert_eq!(line.last(), Some(&b'\n'));
        let body = &line[..line.len() - 1];
        assert!(!body.contains(&b'\n'), "one message per line");
        let value: serde_json::Value = serde_json::from_slice(body).expect("valid JSON");
        let messages = match &value {
            serde_json::Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        };
        for message in messages {
            assert_eq!(message["jsonrpc"], "2.0");
            assert!(message.get("params").is_none_or(|p| p.is_object()));
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut config = Config::default();
    config.output_budget_bytes = 4096;
    config.max_line_bytes = 64;
    config.max_message_bytes = 4096;
    config.max_tasks = 4;
    let mut counter = 0u32;
    let mut server = Server::new(
        config,
        Box::new(move || {
            counter += 1;
            format!("id{}", counter % 6)
        }),
    );
    let mut ms = 0u64;
    for op in ops {
        let now = Now::new(Instant::from_nanos(ms * 1_000_000), ms);
        let line;
        let input = match &op {
            Op::Bytes(bytes) => Input::ClientBytes(bytes),
            Op::Call {
                id,
                tool,
                arguments,
            } => {
                let arguments: serde_json::Value =
                    serde_json::from_str(arguments).unwrap_or(serde_json::Value::Null);
                line = format!(
                    "{}\n",
                    serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                        "params": {"name": TOOLS[*tool as usize % TOOLS.len()], "arguments": arguments}})
                );
                Input::ClientBytes(line.as_bytes())
            }
            Op::Initialize { version } => {
                line = format!(
                    "{}\n",
                    serde_json::json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                        "params": {"protocolVersion": VERSIONS[*version as usize % VERSIONS.len()]}})
                );
                Input::ClientBytes(line.as_bytes())
            }
            Op::Spawned { run, pid } => Input::Spawned {
                run: RunId(u64::from(*run % 8)),
                pid: u32::from(*pid),
            },
            Op::SpawnFailed { run } => Input::SpawnFailed {
                run: RunId(u64::from(*run % 8)),
                error: "no".into(),
            },
            Op::Output { run, stderr, bytes } => Input::ProcessOutput {
                run: RunId(u64::from(*run % 8)),
                stream: if *stderr {
                    Stream::Stderr
                } else {
                    Stream::Stdout
                },
                bytes,
            },
            Op::Closed { run, stderr } => Input::StreamClosed {
                run: RunId(u64::from(*run % 8)),
                stream: if *stderr {
                    Stream::Stderr
                } else {
                    Stream::Stdout
                },
            },
            Op::Exited {
                run,
                code,
                signaled,
            } => Input::Exited {
                run: RunId(u64::from(*run % 8)),
                status: if *signaled {
                    ExitStatus::Signaled(Signal::Kill)
                } else {
                    ExitStatus::Code(i32::from(*code))
                },
                signalled: *signaled,
            },
            Op::Advance { ms: step } => {
                ms += u64::from(*step);
                server.handle_timeout(Now::new(Instant::from_nanos(ms * 1_000_000), ms));
                drain(&mut server);
                continue;
            }
            Op::Eof => Input::ClientEof,
            Op::Terminate => Input::Terminate,
        };
        server.handle_input(now, input);
        drain(&mut server);
    }
});

fn drain(server: &mut Server) {
    for _ in 0..10_000 {
        match server.poll_output() {
            Output::Timeout(_) => return,
            other => check(&other),
        }
    }
    panic!("poll_output never returned Timeout");
}

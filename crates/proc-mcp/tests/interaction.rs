//! The driver's side of the interactive tools, on the real binary under every runtime: `write`
//! reaches a task's stdin in order (then end-of-file), and `wait` sees a port start accepting.

mod support;

use std::net::TcpListener;

use proc_testkit::id_of;
use serde_json::json;
use support::{RUNTIMES, Server};

#[test]
fn write_feeds_a_tasks_stdin_in_order_then_eof() {
    for runtime in RUNTIMES {
        let mut server = Server::start(runtime);
        let task = server.call("start", json!({"command": "cat", "stdin": true}));
        let id = id_of(&task);
        let written = server.call("write", json!({"id": id, "data": "hello\n"}));
        assert_eq!(written["bytes_written"], 6, "{runtime}: {written}");
        server.wait_for_line(&id, "hello");
        // More than a pipe holds: answered at once with what is queued, and fed to `cat` as it
        // reads (while the server keeps reading its output).
        let big = "x".repeat(200_000) + "\n";
        let written = server.call("write", json!({"id": id, "data": big}));
        let accounted = written["bytes_written"].as_u64().unwrap_or(0)
            + written["bytes_queued"].as_u64().unwrap_or(0);
        assert_eq!(accounted, 200_001, "{runtime}: {written}");
        // `cat` has read it all once the line's last 64 KiB piece (the buffer splits long
        // lines) is echoed: 200000 = 3 × 65536 + 3392.
        let seen = server.call(
            "wait",
            json!({"id": id, "pattern": "^x{3392}$", "timeout_ms": 20000}),
        );
        assert_eq!(seen["reason"], "matched", "{runtime}: {seen}");
        let empty = server.call("write", json!({"id": id, "data": ""}));
        assert_eq!(empty["bytes_queued"], 0, "{runtime}: {empty}");
        let written = server.call("write", json!({"id": id, "data": "bye\n", "eof": true}));
        assert_eq!(written["bytes_written"], 4, "{runtime}: {written}");
        assert_eq!(written.get("bytes_dropped"), None, "{runtime}: {written}");
        // `cat` sees end-of-file and exits on its own.
        let status = server.wait_exited(&id);
        assert_eq!(status["exit_code"], 0, "{runtime}: {status}");
        // (`logs` shows the tail that fits its byte budget: the big line may be cut.)
        let texts = server.log_texts(&id);
        assert_eq!(texts.last().map(String::as_str), Some("bye"), "{runtime}");
        server.finish();
    }
}

#[test]
fn wait_sees_a_port_that_accepts() {
    for runtime in RUNTIMES {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mut server = Server::start(runtime);
        let task = server.call("start", json!({"command": "sleep", "args": ["1000"]}));
        let id = id_of(&task);
        let result = server.call("wait", json!({"id": id, "port": port, "timeout_ms": 20000}));
        assert_eq!(result["reason"], "port_open", "{runtime}: {result}");
        server.finish();
    }
}

//! Terminal tasks on virtual time: what the core asks of the driver for `tty: true`, the screen
//! it keeps from the task's output, keys, resize and end-of-file.

mod harness;

use harness::{Harness, spawned, transmitted};
use proc_state::{Input, Output, RunId, Stdio, Stream, WindowSize};
use serde_json::{Value, json};

fn tty_output(h: &mut Harness, run: RunId, bytes: &[u8]) -> Vec<Output> {
    h.input(Input::ProcessOutput {
        run,
        stream: Stream::Tty,
        bytes,
    })
}

/// A started terminal task: its run.
fn start_tty(h: &mut Harness, arguments: Value) -> RunId {
    h.start(arguments, 77).0
}

#[test]
fn tty_start_asks_for_a_terminal_with_term_set() {
    let mut h = Harness::initialized("2025-11-25");
    let outputs = h.call(1, "start", json!({"command": "python3 -q -i", "tty": true}));
    let (_, spec) = spawned(&outputs).expect("a spawn");
    assert_eq!(
        spec.stdio,
        Stdio::Terminal(WindowSize {
            rows: 40,
            cols: 120
        })
    );
    assert!(
        spec.env
            .iter()
            .any(|(k, v)| k == "TERM" && v == "xterm-256color")
    );

    let outputs = h.call(
        2,
        "start",
        json!({"command": "top", "tty": true, "rows": 10, "cols": 30, "env": {"TERM": "vt100"}}),
    );
    let (_, spec) = spawned(&outputs).expect("a spawn");
    assert_eq!(
        spec.stdio,
        Stdio::Terminal(WindowSize { rows: 10, cols: 30 })
    );
    let terms: Vec<&str> = spec
        .env
        .iter()
        .filter(|(k, _)| k == "TERM")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(terms, ["vt100"], "env overrides TERM");
}

#[test]
fn terminal_sizes_are_checked() {
    let mut h = Harness::initialized("2025-11-25");
    for arguments in [
        json!({"command": "x", "tty": true, "rows": 0}),
        json!({"command": "x", "tty": true, "cols": 501}),
        json!({"command": "x", "rows": 10}),
    ] {
        let result = h.call_now("start", arguments.clone());
        assert_eq!(result["isError"], true, "{arguments}");
    }
}

#[test]
fn screen_shows_what_the_output_drew_and_logs_keep_the_lines() {
    let mut h = Harness::initialized("2025-11-25");
    let run = start_tty(
        &mut h,
        json!({"command": "sh", "tty": true, "rows": 4, "cols": 20}),
    );
    // An escape sequence split between two reads.
    let _ = tty_output(&mut h, run, b"\x1b]2;my title\x07$ ls\r\nfile\r\n\x1b[1");
    let _ = tty_output(&mut h, run, b";31m$ \x1b[0m");
    let screen = h.call_now("screen", json!({"id": "t00001"}));
    let s = &screen["structuredContent"];
    assert_eq!(s["rows"], json!(["$ ls", "file", "$", ""]));
    assert_eq!(s["cursor"], json!({"row": 2, "col": 2}));
    assert_eq!(s["alternate_screen"], false);
    assert_eq!(s["title"], "my title");
    assert_eq!(s["size"], json!({"rows": 4, "cols": 20}));
    let text = screen["content"][0]["text"].as_str().unwrap();
    assert!(text.ends_with("$ ls\nfile\n$"), "{text}");

    let logs = h.call_now("logs", json!({"id": "t00001"}));
    let lines = &logs["structuredContent"]["lines"];
    assert_eq!(lines[0]["text"], "$ ls");
    assert_eq!(lines[0]["stream"], "tty");
    assert_eq!(lines[2]["text"], "$ ", "the prompt is a partial line");
    assert_eq!(lines[2]["partial"], true);
}

#[test]
fn screen_and_resize_need_a_terminal_task() {
    let mut h = Harness::initialized("2025-11-25");
    let _ = h.start(json!({"command": "cat", "stdin": true}), 5);
    for (tool, arguments) in [
        ("screen", json!({"id": "t00001"})),
        ("resize", json!({"id": "t00001", "rows": 5, "cols": 5})),
        ("write", json!({"id": "t00001", "keys": ["Enter"]})),
    ] {
        let result = h.call_now(tool, arguments);
        assert_eq!(result["isError"], true, "{tool}");
        assert!(
            result["content"][0]["text"]
                .as_str()
                .unwrap()
                .contains("tty: true"),
            "{tool}: {result}"
        );
    }
}

#[test]
fn keys_follow_data_and_the_programs_cursor_mode() {
    let mut h = Harness::initialized("2025-11-25");
    let run = start_tty(&mut h, json!({"command": "python3", "tty": true}));
    let outputs = h.call(
        2,
        "write",
        json!({"id": "t00001", "data": "6*7", "keys": ["Enter", "Up", "Ctrl-C"]}),
    );
    assert_eq!(
        outputs,
        [Output::WriteStdin {
            run,
            data: b"6*7\r\x1b[A\x03".to_vec()
        }]
    );
    let replies = transmitted(&h.input(Input::StdinWritten { run, result: Ok(8) }));
    assert_eq!(
        replies[0]["result"]["structuredContent"]["bytes_written"],
        8
    );

    // The program turns on application cursor keys (as readline does).
    let _ = tty_output(&mut h, run, b"\x1b[?1h");
    let outputs = h.call(3, "write", json!({"id": "t00001", "keys": ["up", "Home"]}));
    assert_eq!(
        outputs,
        [Output::WriteStdin {
            run,
            data: b"\x1bOA\x1bOH".to_vec()
        }]
    );
}

#[test]
fn an_unknown_key_writes_nothing_and_names_the_known_ones() {
    let mut h = Harness::initialized("2025-11-25");
    let _ = start_tty(&mut h, json!({"command": "sh", "tty": true}));
    let outputs = h.call(
        2,
        "write",
        json!({"id": "t00001", "data": "x", "keys": ["Hyper"]}),
    );
    assert!(
        !outputs
            .iter()
            .any(|o| matches!(o, Output::WriteStdin { .. })),
        "nothing written"
    );
    let replies = transmitted(&outputs);
    let result = &replies[0]["result"];
    assert_eq!(result["isError"], true);
    let text = result["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("\"Hyper\"") && text.contains("PageDown") && text.contains("Ctrl-A"));
}

#[test]
fn eof_on_a_terminal_sends_ctrl_d_and_closes_nothing() {
    let mut h = Harness::initialized("2025-11-25");
    let run = start_tty(&mut h, json!({"command": "cat", "tty": true}));
    let outputs = h.call(
        2,
        "write",
        json!({"id": "t00001", "data": "last\r", "eof": true}),
    );
    assert_eq!(
        outputs,
        [Output::WriteStdin {
            run,
            data: b"last\r\x04".to_vec()
        }]
    );
    let outputs = h.input(Input::StdinWritten { run, result: Ok(6) });
    assert!(
        !outputs
            .iter()
            .any(|o| matches!(o, Output::CloseStdin { .. })),
        "{outputs:?}"
    );
    let outputs = h.call(3, "write", json!({"id": "t00001", "keys": ["Enter"]}));
    assert_eq!(
        outputs,
        [Output::WriteStdin {
            run,
            data: b"\r".to_vec()
        }],
        "the terminal stays writable"
    );
}

#[test]
fn resize_sets_the_terminal_and_the_screen_and_outlives_a_restart() {
    let mut h = Harness::initialized("2025-11-25");
    let run = start_tty(&mut h, json!({"command": "top", "tty": true}));
    let size = WindowSize {
        rows: 50,
        cols: 160,
    };
    let outputs = h.call(
        2,
        "resize",
        json!({"id": "t00001", "rows": 50, "cols": 160}),
    );
    assert_eq!(outputs[0], Output::Resize { run, size });
    let screen = h.call_now("screen", json!({"id": "t00001"}));
    assert_eq!(
        screen["structuredContent"]["size"],
        json!({"rows": 50, "cols": 160})
    );

    let _ = tty_output(&mut h, run, b"drawn");
    let _ = h.input(Input::StreamClosed {
        run,
        stream: Stream::Tty,
    });
    let _ = h.input(Input::Exited {
        run,
        status: proc_state::ExitStatus::Code(0),
        signalled: false,
    });
    let _ = h.advance(1_000);
    let outputs = h.call(3, "restart", json!({"id": "t00001"}));
    let (_, spec) = spawned(&outputs).expect("a new run");
    assert_eq!(
        spec.stdio,
        Stdio::Terminal(size),
        "restarted at the new size"
    );
    let screen = h.call_now("screen", json!({"id": "t00001"}));
    assert_eq!(
        screen["structuredContent"]["rows"][0], "",
        "a new run starts on a blank screen"
    );
}

#[test]
fn a_prompt_without_a_newline_matches_once_output_pauses() {
    let mut h = Harness::initialized("2025-11-25");
    let run = start_tty(&mut h, json!({"command": "sh", "tty": true}));
    let outputs = h.call(2, "wait", json!({"id": "t00001", "pattern": "Continue\\?"}));
    assert!(transmitted(&outputs).is_empty());
    let _ = tty_output(&mut h, run, b"Continue? [y/N] ");
    let early = h.advance(50);
    assert!(transmitted(&early).is_empty(), "the line may still grow");
    let matched = h.advance(60);
    assert!(
        matched.contains(&Output::QueryInput { run }),
        "then the driver is asked whether it waits for input: {matched:?}"
    );
    let replies = transmitted(&h.input(Input::InputWanted {
        run,
        wanted: Some(true),
    }));
    let result = &replies[0]["result"]["structuredContent"];
    assert_eq!(result["reason"], "matched");
    assert_eq!(result["line"]["text"], "Continue? [y/N] ");
    assert_eq!(result["line"]["partial"], true);
    assert_eq!(result["input_wanted"], true);
}

#[test]
fn a_growing_partial_line_is_matched_only_when_it_settles() {
    let mut h = Harness::initialized("2025-11-25");
    let run = start_tty(&mut h, json!({"command": "sh", "tty": true}));
    let _ = h.call(2, "wait", json!({"id": "t00001", "pattern": "done \\d+%"}));
    let _ = tty_output(&mut h, run, b"done 1");
    let mut replies = transmitted(&h.advance(80));
    let _ = tty_output(&mut h, run, b"00%");
    replies.extend(transmitted(&h.advance(80)));
    assert!(replies.is_empty(), "{replies:?}");
    assert_eq!(h.advance(40), [Output::QueryInput { run }]);
    let replies = transmitted(&h.input(Input::InputWanted {
        run,
        wanted: Some(false),
    }));
    let result = &replies[0]["result"]["structuredContent"];
    assert_eq!(result["line"]["text"], "done 100%");
    assert_eq!(result["input_wanted"], false);
}

#[test]
fn write_with_prompt_returns_the_output_once_the_prompt_is_back() {
    let mut h = Harness::initialized("2025-11-25");
    let run = start_tty(&mut h, json!({"command": "python3 -q -i", "tty": true}));
    let _ = tty_output(&mut h, run, b">>> ");
    let outputs = h.call(
        2,
        "write",
        json!({"id": "t00001", "data": "print(6*7)", "keys": ["Enter"], "prompt": true}),
    );
    assert_eq!(
        outputs,
        [Output::WriteStdin {
            run,
            data: b"print(6*7)\r".to_vec()
        }]
    );
    let outputs = h.input(Input::StdinWritten {
        run,
        result: Ok(11),
    });
    assert!(
        transmitted(&outputs).is_empty(),
        "the old prompt does not count"
    );
    let _ = tty_output(&mut h, run, b"print(6*7)\r\n42\r\n");
    assert!(transmitted(&h.advance(500)).is_empty(), "no prompt yet");
    let _ = tty_output(&mut h, run, b">>> ");
    let replies = transmitted(&h.advance(100));
    let result = &replies[0]["result"]["structuredContent"];
    assert_eq!(result["reason"], "matched");
    let texts: Vec<&str> = result["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, [">>> print(6*7)", "42", ">>> "]);
    assert_eq!(result["screen_changed"], true);
    assert_eq!(result["next_cursor"], 2, "the prompt is still partial");
    let text = replies[0]["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("\n[1] 42"), "{text}");
}

#[test]
fn write_with_prompt_needs_a_prompt() {
    let mut h = Harness::initialized("2025-11-25");
    let run = start_tty(&mut h, json!({"command": "sh", "tty": true}));
    let _ = tty_output(&mut h, run, b"no prompt here\r\n");
    let result = h.call_now(
        "write",
        json!({"id": "t00001", "data": "x", "prompt": true}),
    );
    assert_eq!(result["isError"], true);
}

#[test]
fn write_with_quiet_ms_answers_once_output_pauses() {
    let mut h = Harness::initialized("2025-11-25");
    let run = start_tty(&mut h, json!({"command": "sh", "tty": true}));
    let _ = h.call(
        2,
        "write",
        json!({"id": "t00001", "data": "ls\r", "quiet_ms": 300}),
    );
    let _ = h.input(Input::StdinWritten { run, result: Ok(3) });
    let _ = tty_output(&mut h, run, b"ls\r\na\r\n");
    assert!(transmitted(&h.advance(200)).is_empty());
    let _ = tty_output(&mut h, run, b"b\r\n");
    assert!(
        transmitted(&h.advance(200)).is_empty(),
        "output came 200 ms ago"
    );
    let replies = transmitted(&h.advance(100));
    let result = &replies[0]["result"]["structuredContent"];
    assert_eq!(result["reason"], "quiet");
    assert_eq!(result["output"].as_array().map(Vec::len), Some(3));
}

#[test]
fn wait_for_the_screen_to_match() {
    let mut h = Harness::initialized("2025-11-25");
    let run = start_tty(&mut h, json!({"command": "top", "tty": true, "rows": 5}));
    let _ = h.call(
        2,
        "wait",
        json!({"id": "t00001", "screen": "(?m)^Tasks: \\d+"}),
    );
    let _ = tty_output(&mut h, run, b"\x1b[?1049h\x1b[2;1HTasks:");
    assert!(transmitted(&h.advance(10)).is_empty());
    assert_eq!(
        tty_output(&mut h, run, b" 12 total"),
        [Output::QueryInput { run }]
    );
    // The driver cannot tell: answered without `input_wanted`.
    let replies = transmitted(&h.input(Input::InputWanted { run, wanted: None }));
    let result = &replies[0]["result"]["structuredContent"];
    assert_eq!(result["reason"], "screen");
    assert!(result.get("input_wanted").is_none(), "{result}");
}

#[test]
fn status_asks_whether_an_interactive_task_waits_for_input() {
    let mut h = Harness::initialized("2025-11-25");
    let run = start_tty(&mut h, json!({"command": "python3", "tty": true}));
    let outputs = h.call(2, "status", json!({"id": "t00001"}));
    assert_eq!(outputs, [Output::QueryInput { run }]);
    // A second status while the question is out asks nothing more.
    assert_eq!(h.call(3, "status", json!({"id": "t00001"})), []);
    let replies = transmitted(&h.input(Input::InputWanted {
        run,
        wanted: Some(true),
    }));
    assert_eq!(replies.len(), 2, "both answered");
    for reply in &replies {
        assert_eq!(reply["result"]["structuredContent"]["input_wanted"], true);
        let text = reply["result"]["content"][0]["text"].as_str().unwrap();
        assert!(text.contains("waiting for input"), "{text}");
    }

    // A driver that does not answer delays status by at most half a second.
    let asked = h.call(4, "status", json!({"id": "t00001"}));
    assert_eq!(asked, [Output::QueryInput { run }]);
    assert!(transmitted(&h.advance(499)).is_empty());
    let late = h.advance(1);
    let replies = transmitted(&late);
    assert!(!replies.is_empty(), "{late:?}");
    assert!(
        replies[0]["result"]["structuredContent"]
            .get("input_wanted")
            .is_none()
    );
}

#[test]
fn status_of_a_task_without_stdin_answers_at_once() {
    let mut h = Harness::initialized("2025-11-25");
    let _ = h.start(json!({"command": "sleep 10"}), 5);
    let result = h.call_now("status", json!({"id": "t00001"}));
    assert!(result["structuredContent"].get("input_wanted").is_none());
}

/// Decodes a base64 PNG: width, height and the distinct colours of its pixels.
fn decode_png(data: &str) -> (u32, u32, usize) {
    use base64::Engine;
    let file = base64::prelude::BASE64_STANDARD
        .decode(data)
        .expect("base64");
    let decoder = png::Decoder::new(std::io::Cursor::new(file));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut rgb = vec![0; reader.output_buffer_size().expect("a size")];
    let info = reader.next_frame(&mut rgb).expect("a frame");
    let colours: std::collections::BTreeSet<&[u8]> = rgb.chunks_exact(3).collect();
    (info.width, info.height, colours.len())
}

#[test]
fn screen_as_png_is_an_image_content_of_the_cells() {
    let mut h = Harness::initialized("2025-11-25");
    let run = start_tty(
        &mut h,
        json!({"command": "sh", "tty": true, "rows": 4, "cols": 10}),
    );
    let _ = tty_output(&mut h, run, b"\x1b[1;31mred\x1b[0m ok");
    let result = h.call_now("screen", json!({"id": "t00001", "format": "png"}));
    let content = result["content"].as_array().unwrap();
    assert_eq!(content[0]["type"], "text");
    assert_eq!(content[1]["type"], "image");
    assert_eq!(content[1]["mimeType"], "image/png");
    let (width, height, colours) = decode_png(content[1]["data"].as_str().unwrap());
    let (cell_width, cell_height) = (
        proc_state::terminal::CELL_WIDTH,
        proc_state::terminal::CELL_HEIGHT,
    );
    assert_eq!((width, height), (10 * cell_width, 4 * cell_height));
    assert!(colours > 2, "background, text, red: {colours}");
    assert_eq!(result["structuredContent"]["rows"][0], "red ok");

    let text_only = h.call_now("screen", json!({"id": "t00001"}));
    assert_eq!(text_only["content"].as_array().map(Vec::len), Some(1));
}

//! Task output: bounded memory under a flood, line numbering and eviction accounting, and
//! the text a model gets back (UTF-8 repair, ANSI stripping, line-length cap).

mod common;

use std::time::Duration;

use common::client::Client;
use common::{id_of, texts, vm_kib};
use rmcp::model::ProtocolVersion;
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;

/// Bytes `seq 1 n` prints: every number's digits plus a newline.
fn seq_bytes(n: u64) -> u64 {
    (1..=n).map(|k| k.to_string().len() as u64 + 1).sum()
}

fn as_u64(value: &Value, what: &str) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("{what} is not an integer: {value}"))
}

/// Starts `command`, waits until it exited, and returns `logs` with `extra` arguments.
async fn logs_of_finished(c: &Client, command: &str, extra: Value) -> Value {
    let id = id_of(&c.call("start", json!({"command": command})).await);
    c.wait_exited(&id).await;
    let mut args = json!({"id": id});
    args.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    c.call("logs", args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_stays_within_output_budget_and_is_fully_accounted() {
    const LINES: u64 = 2_000_000;
    const BUDGET: u64 = 4 * MIB;
    let c = Client::connect_with(
        ProtocolVersion::V_2025_11_25,
        &["--output-budget", "4MiB"],
        &[],
    )
    .await;
    let id = id_of(
        &c.call("start", json!({"command": format!("seq 1 {LINES}")}))
            .await,
    );
    let status = c
        .poll_within(
            Duration::from_secs(120),
            "status",
            json!({"id": id, "tail": 0}),
            |s| s["state"] == "exited",
        )
        .await;

    let peak = vm_kib(c.server_pid, "VmHWM") * 1024;
    assert!(
        peak < BUDGET + 16 * MIB,
        "server peak RSS {} MiB with a 4 MiB output budget",
        peak / MIB
    );

    assert_eq!(status["exit_code"], 0, "status: {status}");
    let output = &status["output"];
    assert_eq!(output["lines"], LINES, "status.output: {output}");
    assert_eq!(output["bytes"], seq_bytes(LINES), "status.output: {output}");
    assert_eq!(output["next_cursor"], LINES, "status.output: {output}");
    let dropped = as_u64(&output["dropped_lines"], "dropped_lines");
    assert!(
        dropped > 0,
        "15 MB through a 4 MiB budget must evict: {output}"
    );
    // Every retained line holds at least 6 digits of text: the rest must fit in the budget.
    let retained = LINES - dropped;
    assert!(
        retained * 6 <= BUDGET,
        "{retained} lines retained exceed the 4 MiB budget: {output}"
    );

    let from_start = c.call("logs", json!({"id": id, "since": 0})).await;
    assert_eq!(
        from_start["skipped"], dropped,
        "logs since 0: skipped must be the evicted lines"
    );
    let first = &from_start["lines"][0];
    assert_eq!(
        first["n"], dropped,
        "the first retained line is numbered dropped_lines: {first}"
    );
    assert_eq!(
        first["text"],
        (dropped + 1).to_string(),
        "first retained line: {first}"
    );

    let tail = c.call("logs", json!({"id": id, "tail": 10})).await;
    let numbers: Vec<u64> = tail["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| as_u64(&l["n"], "n"))
        .collect();
    assert_eq!(
        numbers,
        (LINES - 10..LINES).collect::<Vec<_>>(),
        "logs tail 10: {tail}"
    );
    let expected: Vec<String> = (LINES - 9..=LINES).map(|k| k.to_string()).collect();
    assert_eq!(texts(&tail), expected, "logs tail 10: {tail}");
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_budget_can_be_set_by_environment() {
    const LINES: u64 = 500_000; // about 3.4 MB: fits the default 4 MiB, not 1 MiB
    let c = Client::connect_with(
        ProtocolVersion::V_2025_11_25,
        &[],
        &[("PROC_MCP_OUTPUT_BUDGET", "1MiB")],
    )
    .await;
    let id = id_of(
        &c.call("start", json!({"command": format!("seq 1 {LINES}")}))
            .await,
    );
    let status = c.wait_exited(&id).await;
    let output = &status["output"];
    assert_eq!(output["lines"], LINES, "status.output: {output}");
    let dropped = as_u64(&output["dropped_lines"], "dropped_lines");
    let retained = LINES - dropped;
    assert!(
        retained * 6 <= MIB,
        "{retained} lines retained exceed a 1 MiB budget: {output}"
    );
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exited_task_shows_all_its_output_including_an_unterminated_last_line() {
    let c = Client::connect(ProtocolVersion::V_2025_11_25).await;
    let logs = logs_of_finished(&c, r"printf 'one\ntwo\nlast without newline'", json!({})).await;
    assert_eq!(
        texts(&logs),
        ["one", "two", "last without newline"],
        "logs: {logs}"
    );
    assert_eq!(logs["state"], "exited", "logs: {logs}");
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_is_replaced_with_replacement_character() {
    let c = Client::connect(ProtocolVersion::V_2025_11_25).await;
    let logs = logs_of_finished(&c, r"printf 'a\377b\n'", json!({})).await;
    assert_eq!(texts(&logs), ["a\u{FFFD}b"], "logs: {logs}");
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utf8_character_split_across_writes_stays_whole() {
    let c = Client::connect(ProtocolVersion::V_2025_11_25).await;
    // "€" is E2 82 AC; the child writes it in two pieces with a pause between them.
    let logs = logs_of_finished(
        &c,
        r"printf 'x\342\202'; sleep 0.3; printf '\254y\n'",
        json!({}),
    )
    .await;
    assert_eq!(texts(&logs), ["x€y"], "logs: {logs}");
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ansi_escapes_are_stripped() {
    let c = Client::connect(ProtocolVersion::V_2025_11_25).await;
    let logs = logs_of_finished(&c, r"printf '\033[31mred\033[0m\n'", json!({})).await;
    assert_eq!(texts(&logs), ["red"], "logs: {logs}");
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_logs_keep_ansi_escapes() {
    let c = Client::connect(ProtocolVersion::V_2025_11_25).await;
    let logs = logs_of_finished(&c, r"printf '\033[31mred\033[0m\n'", json!({"raw": true})).await;
    assert_eq!(texts(&logs), ["\u{1b}[31mred\u{1b}[0m"], "logs: {logs}");
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_longer_than_max_line_is_split() {
    let c = Client::connect_with(ProtocolVersion::V_2025_11_25, &["--max-line", "1KiB"], &[]).await;
    let logs = logs_of_finished(&c, r"head -c 3000 /dev/zero | tr '\0' x; echo", json!({})).await;
    let pieces = texts(&logs);
    assert!(pieces.len() >= 3, "3000 bytes at 1 KiB per line: {logs}");
    for piece in &pieces {
        assert!(
            piece.len() <= 1024,
            "a line of {} bytes exceeds --max-line 1KiB",
            piece.len()
        );
    }
    assert_eq!(
        pieces.concat(),
        "x".repeat(3000),
        "the pieces must hold the whole line, in order"
    );
    c.close().await;
}

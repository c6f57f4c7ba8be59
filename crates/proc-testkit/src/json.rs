//! The fields of tool results (MCP `structuredContent`) the tests read. Each panics, naming the
//! value, when the field is missing or has another type: a test then fails with what it got.

use serde_json::Value;

/// A task's pid: the `pid` field of a `start`, `status` or `restart` result.
///
/// # Panics
/// If `task` has no integer `pid`, or it does not fit an `i32` (`pid_t`).
#[track_caller]
pub fn pid_of(task: &Value) -> i32 {
    let pid = task["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("no pid in {task}"));
    i32::try_from(pid).unwrap_or_else(|_| panic!("pid {pid} does not fit a pid_t"))
}

/// A task's id: the `id` field of a `start` result.
///
/// # Panics
/// If `task` has no string `id`.
#[track_caller]
pub fn id_of(task: &Value) -> String {
    task["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {task}"))
        .to_owned()
}

/// The `text` of every line of a `logs` result, in order.
///
/// # Panics
/// If `logs` has no `lines` array, or a line has no string `text`.
#[track_caller]
pub fn texts(logs: &Value) -> Vec<String> {
    logs["lines"]
        .as_array()
        .unwrap_or_else(|| panic!("no lines in {logs}"))
        .iter()
        .map(|line| {
            line["text"]
                .as_str()
                .unwrap_or_else(|| panic!("line without text: {line}"))
                .to_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn fields_are_read_from_a_result() {
        let task = json!({"id": "ab12cd", "pid": 4242});
        assert_eq!(pid_of(&task), 4242);
        assert_eq!(id_of(&task), "ab12cd");
        let logs = json!({"lines": [{"n": 0, "text": "a"}, {"n": 1, "text": "b"}]});
        assert_eq!(texts(&logs), ["a", "b"]);
    }

    #[test]
    #[should_panic(expected = "no pid in")]
    fn a_missing_pid_names_the_value() {
        pid_of(&json!({"id": "x"}));
    }
}

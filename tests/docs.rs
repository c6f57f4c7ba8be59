//! The documentation in `docs/` is checked against the code, so that it cannot drift from it.
//!
//! Two kinds of generated text, each rewritten from the code and compared with the file:
//!
//! - **Regions**: the lines between `<!-- generated:start ID -->` and `<!-- generated:end -->`.
//!   `tool=NAME`: one tool's title, hints, description and its parameter and result tables,
//!   rendered from [`definitions`](proc_state::tools::definitions), the tool list
//!   as `tools/list` shows it. The renderer only knows JSON Schema (`type`, `enum`, `const`,
//!   `default`, bounds, `format`, `description`, `required`, nested objects and arrays, `$ref`,
//!   `anyOf`/`oneOf`), so a schema change needs nothing but a re-bless. `cli`: the command-line
//!   options, from `proc-mcp --help`. `capabilities` and `instructions`: what a live
//!   [`Server`] answers to `initialize`; `resource-template`: its `resources/templates/list`.
//! - **Values**: `<!-- code:KEY -->text<!-- /code -->` inline, for numbers and names the code
//!   defines ([`Config`] defaults, tool limits, protocol versions); [`value`] lists the keys.
//!
//! Also checked, not generated: every `--option` the docs and the README name exists.
//!
//! When a file differs from what the code gives, the test fails with a line diff. Run
//! `PROC_MCP_BLESS=1 cargo test -p proc-mcp-suite --test docs` to rewrite the files instead,
//! then review the change and commit it.

mod common;

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use proc_state::limits;
use proc_state::tools::{self, Tool};
use proc_state::{Config, Input, Instant, Now, Output, ProtocolVersion, Server};
use serde_json::{Map, Value, json};

/// How long `proc-mcp --help` may take.
const HELP_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn tools_md_is_generated_from_the_code() {
    let defs = tools::definitions(&Config::default(), true);
    let names: Vec<String> = Tool::ALL
        .iter()
        .map(|t| format!("tool={}", t.name()))
        .collect();
    let help = proc_mcp_help();
    let live = LiveServer::initialized();
    check_doc("docs/tools.md", &names, |id| match id {
        "cli" => cli_table(&help),
        "capabilities" => Ok(format!(
            "```json\n{}\n```\n",
            serde_json::to_string_pretty(&live.initialize["capabilities"]).unwrap_or_default()
        )),
        "instructions" => Ok(format!(
            "> {}\n",
            live.initialize["instructions"].as_str().unwrap_or_default()
        )),
        "resource-template" => Ok(resource_template(&live.templates)),
        _ => {
            let name = id.strip_prefix("tool=").ok_or("unknown region")?;
            let definition = defs
                .iter()
                .find(|d| d["name"] == name)
                .ok_or_else(|| format!("no tool named {name:?} in the code"))?;
            Ok(tool_section(definition))
        }
    });
}

#[test]
fn architecture_md_states_the_codes_values() {
    check_doc("docs/architecture.md", &[], |id| {
        Err(format!("unknown region {id:?}"))
    });
}

/// Every command-line option the documentation names (`--output-budget`) is one `proc-mcp
/// --help` lists, under that spelling.
#[test]
fn every_option_the_docs_name_exists() {
    let options = parse_help(&proc_mcp_help());
    let known: Vec<&str> = options.iter().map(|o| o.flag.as_str()).collect();
    for path in ["docs/tools.md", "docs/architecture.md", "README.md"] {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let named = text
            .split('`')
            .skip(1)
            .step_by(2)
            .filter_map(|code| code.strip_prefix("--"))
            .map(|rest| {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                format!("--{name}")
            });
        for flag in named {
            assert!(
                known.contains(&flag.as_str()),
                "{path} names `{flag}`, which `proc-mcp --help` does not list ({known:?})"
            );
        }
    }
}

/// Schemas derived from types (schemars and the like) use `$ref`, `$defs`, `anyOf` and
/// `oneOf`; the tables must read the same as for hand-written ones.
#[test]
fn the_renderer_reads_derived_schemas() {
    let schema = json!({
        "type": "object",
        "properties": {
            "id": {"type": "string", "description": "The task's id | name."},
            "grace_ms": {"type": ["integer", "null"], "format": "uint64", "minimum": 0,
                "maximum": 300000, "default": 5000},
            "stream": {"$ref": "#/$defs/Stream", "default": "stdout", "description": "Which one."},
            "limit": {"anyOf": [{"$ref": "#/$defs/Limit"}, {"type": "null"}], "description": "At most."},
            "mode": {"oneOf": [{"const": "fast", "description": "Quick."},
                {"const": "slow", "description": "Careful."}]},
            "tags": {"type": "array", "items": {"type": "string", "minLength": 1}},
        },
        "required": ["id"],
        "$defs": {
            "Stream": {"type": "string", "enum": ["stdout", "stderr"], "description": "Which."},
            "Limit": {"type": "object", "properties": {"bytes": {"type": "integer",
                "exclusiveMinimum": 0}}, "required": ["bytes"]},
        },
    });
    assert_eq!(
        schema_table(&schema, "parameter", "required"),
        "| parameter | type | required | default | allowed | description |\n\
         | --- | --- | --- | --- | --- | --- |\n\
         | `id` | string | yes |  |  | The task's id \\| name. |\n\
         | `grace_ms` | integer or null |  | `5000` | 0 to 300000 |  |\n\
         | `stream` | string |  | `\"stdout\"` | `\"stdout\"`, `\"stderr\"` | Which one. |\n\
         | `limit` | object or null |  |  |  | At most. |\n\
         | `limit.bytes` | integer | yes |  | > 0 |  |\n\
         | `mode` | string |  |  | `\"fast\"` (Quick.); `\"slow\"` (Careful.) |  |\n\
         | `tags` | array of string |  |  | each: length ≥ 1 |  |\n"
    );
}

// ---------------------------------------------------------------------------------------------
// Regions, values, blessing
// ---------------------------------------------------------------------------------------------

const START: &str = "<!-- generated:start ";
const END: &str = "<!-- generated:end -->";
const VALUE: &str = "<!-- code:";
const VALUE_END: &str = "<!-- /code -->";

/// Regenerates every region and value of the file at `path` (relative to the repository),
/// checks that the regions `required` are all there, and compares: a difference fails with a
/// diff, or with `PROC_MCP_BLESS=1` rewrites the file.
fn check_doc(path: &str, required: &[String], region: impl Fn(&str) -> Result<String, String>) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
    let (regenerated, ids) = regenerate(&text, &region).unwrap_or_else(|e| panic!("{path}: {e}"));
    let missing: Vec<&String> = required.iter().filter(|id| !ids.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{path} has no generated region for {missing:?}: add `{START}ID -->` and `{END}` lines \
         where they belong, then run with PROC_MCP_BLESS=1"
    );
    let regenerated = fill_values(&regenerated).unwrap_or_else(|e| panic!("{path}: {e}"));
    if regenerated == text {
        return;
    }
    if std::env::var_os("PROC_MCP_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&file, &regenerated)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", file.display()));
        return;
    }
    panic!(
        "{path} is out of date with the code (lines with - are in the file, + is what the code \
         gives):\n{}\nIf the code is right, run `PROC_MCP_BLESS=1 cargo test -p proc-mcp-suite \
         --test docs` to rewrite the generated parts, then review and commit them.",
        diff(&text, &regenerated)
    );
}

/// Replaces the body of every region with `region(ID)`; returns the text and the ids seen.
fn regenerate(
    text: &str,
    region: &impl Fn(&str) -> Result<String, String>,
) -> Result<(String, Vec<String>), String> {
    let mut out = String::with_capacity(text.len());
    let mut ids = Vec::new();
    let mut lines = text.split_inclusive('\n').enumerate();
    while let Some((number, line)) = lines.next() {
        out.push_str(line);
        let Some(rest) = line.trim_end().strip_prefix(START) else {
            continue;
        };
        let id = rest
            .strip_suffix("-->")
            .map(str::trim)
            .ok_or_else(|| format!("line {}: a region start must end with `-->`", number + 1))?;
        if ids.iter().any(|seen| seen == id) {
            return Err(format!("line {}: a second region {id:?}", number + 1));
        }
        let body = region(id).map_err(|e| format!("line {}: region {id:?}: {e}", number + 1))?;
        out.push_str(&body);
        if !body.is_empty() && !body.ends_with('\n') {
            out.push('\n');
        }
        let end = lines.find(|(_, line)| line.trim_end() == END || line.starts_with(START));
        match end {
            Some((_, line)) if line.trim_end() == END => out.push_str(line),
            _ => return Err(format!("line {}: region {id:?} has no `{END}`", number + 1)),
        }
        ids.push(id.to_owned());
    }
    Ok((out, ids))
}

/// Replaces the text of every `<!-- code:KEY -->text<!-- /code -->` with the code's value.
fn fill_values(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(VALUE) {
        out.push_str(&rest[..at]);
        let after = &rest[at + VALUE.len()..];
        let close = after
            .find("-->")
            .ok_or_else(|| format!("a value marker without `-->` near {:?}", snippet(after)))?;
        let key = after[..close].trim();
        let body = &after[close + 3..];
        let end = body
            .find(VALUE_END)
            .filter(|end| !body[..*end].contains('\n'))
            .ok_or_else(|| format!("value {key:?} has no `{VALUE_END}` on its line"))?;
        let value = value(key).ok_or_else(|| {
            format!("unknown value key {key:?} (tests/docs.rs `value` lists the keys)")
        })?;
        write!(out, "{VALUE}{key} -->{value}{VALUE_END}").unwrap_or_default();
        rest = &body[end + VALUE_END.len()..];
    }
    out.push_str(rest);
    Ok(out)
}

fn snippet(text: &str) -> &str {
    let end = text.char_indices().nth(40).map_or(text.len(), |(i, _)| i);
    &text[..end]
}

/// The code's value for a `<!-- code:KEY -->` marker, as prose shows it.
fn value(key: &str) -> Option<String> {
    let config = Config::default();
    let text = match key {
        "config.output_budget_bytes" => bytes(config.output_budget_bytes),
        "config.output_budget_total_bytes" => bytes(config.output_budget_total_bytes),
        "config.max_line_bytes" => bytes(config.max_line_bytes),
        "config.max_message_bytes" => bytes(config.max_message_bytes),
        "config.max_client_backlog_bytes" => bytes(config.max_client_backlog_bytes),
        "config.max_stdin_queue_bytes" => bytes(config.max_stdin_queue_bytes),
        "config.default_grace" => duration(config.default_grace),
        "config.shutdown_grace" => duration(config.shutdown_grace),
        "config.exit_drain" => duration(config.exit_drain),
        "config.max_tasks" => config.max_tasks.to_string(),
        "config.page_size" => config.page_size.to_string(),
        "config.server_name" => config.server_name,
        "batch_reply_factor" => proc_state::BATCH_REPLY_FACTOR.to_string(),
        "probe_timeout" => duration(proc_state::PROBE_TIMEOUT),
        "http_probe_timeout" => duration(proc_state::HTTP_PROBE_TIMEOUT),
        "limits.memory_check_interval" => duration(limits::MEMORY_CHECK_INTERVAL),
        "limits.memory_strikes" => limits::MEMORY_STRIKES.to_string(),
        "limits.backoff_first" => duration(limits::BACKOFF_FIRST),
        "limits.backoff_max" => duration(limits::BACKOFF_MAX),
        "limits.backoff_reset" => duration(limits::BACKOFF_RESET),
        "limits.crash_loop_restarts" => limits::CRASH_LOOP_RESTARTS.to_string(),
        "limits.crash_loop_window" => duration(limits::CRASH_LOOP_WINDOW),
        "limits.max_urls" => limits::MAX_URLS.to_string(),
        "tools.usage_fresh" => duration(tools::USAGE_FRESH),
        "tools.usage_ttl" => duration(tools::USAGE_TTL),
        "tools.inspect_timeout" => duration(tools::INSPECT_TIMEOUT),
        "escaped_command_chars" => proc_state::EscapedProcess::COMMAND_CHARS.to_string(),
        "log.index_entry_bytes" => limits::INDEX_ENTRY_BYTES.to_string(),
        "log.default_tail_lines" => limits::DEFAULT_TAIL_LINES.to_string(),
        "escaped.max_listed" => limits::ESCAPED_MAX_LISTED.to_string(),
        "escaped.kill_settle" => duration(limits::ESCAPED_KILL_SETTLE),
        "stdin.chunk_bytes" => bytes(limits::STDIN_CHUNK_BYTES),
        "tools.count" => Tool::ALL.len().to_string(),
        "tools.names" => Tool::ALL.map(|t| format!("`{}`", t.name())).join(", "),
        "tools.max_pattern_bytes" => bytes(tools::MAX_PATTERN_BYTES),
        "tools.line_overhead_bytes" => tools::LINE_OVERHEAD_BYTES.to_string(),
        "tools.default_logs_bytes" => bytes(limits::DEFAULT_MAX_BYTES),
        "tools.max_logs_bytes" => bytes(tools::MAX_READ_BYTES),
        "tools.max_wait_ms" => duration(Duration::from_millis(tools::MAX_WAIT_MS)),
        "tools.max_grace_ms" => duration(Duration::from_millis(tools::MAX_GRACE_MS)),
        "tools.max_status_tail" => tools::MAX_STATUS_TAIL.to_string(),
        "tools.stop_signals" => tools::STOP_SIGNALS.map(|s| format!("`{s}`")).join(", "),
        "tools.signals" => tools::SIGNALS.map(|s| format!("`{s}`")).join(", "),
        "versions.handshake" => ProtocolVersion::ALL
            .map(|v| format!("`{}`", v.as_str()))
            .join(", "),
        "versions.latest" => format!("`{}`", ProtocolVersion::LATEST.as_str()),
        "versions.batches" => versions(ProtocolVersion::accepts_batches),
        "versions.structured_from" => format!(
            "`{}`",
            ProtocolVersion::ALL
                .into_iter()
                .find(|v| v.has_structured_content())?
                .as_str()
        ),
        "versions.stateless" => LiveServer::initialized().discover["supportedVersions"]
            .as_array()?
            .iter()
            .map(|v| format!("`{}`", v.as_str().unwrap_or("?")))
            .collect::<Vec<_>>()
            .join(", "),
        _ => return None,
    };
    Some(text)
}

fn versions(which: fn(ProtocolVersion) -> bool) -> String {
    ProtocolVersion::ALL
        .into_iter()
        .filter(|v| which(*v))
        .map(|v| format!("`{}`", v.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `4 MiB`, `64 KiB`, `1000 bytes`.
fn bytes(n: usize) -> String {
    match n {
        0 => "0 bytes".to_owned(),
        n if n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// `5 s`, `250 ms`, `5 min`.
fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0 ms".to_owned(),
        ms if ms % 60_000 == 0 => format!("{} min", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{} s", ms / 1000),
        ms => format!("{ms} ms"),
    }
}

/// A line diff (longest common subsequence) of `old` and `new`, with two lines of context
/// around each change.
fn diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // lcs[i][j]: length of the common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, usize, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', i, a[i]));
            (i, j) = (i + 1, j + 1);
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', i, a[i]));
            i += 1;
        } else {
            ops.push(('+', i, b[j]));
            j += 1;
        }
    }
    let changed: Vec<usize> = (0..ops.len()).filter(|k| ops[*k].0 != ' ').collect();
    let mut out = String::new();
    let mut shown_until = 0;
    for (k, (op, line, text)) in ops.iter().enumerate() {
        let near = changed.iter().any(|c| c.abs_diff(k) <= 2);
        if !near {
            continue;
        }
        if k > shown_until || k == 0 {
            writeln!(out, "@@ line {} @@", line + 1).unwrap_or_default();
        }
        writeln!(out, "{op} {text}").unwrap_or_default();
        shown_until = k + 1;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Tools: JSON Schema to Markdown
// ---------------------------------------------------------------------------------------------

/// One tool's generated section: title, hints, the description a model reads, and the tables.
fn tool_section(definition: &Value) -> String {
    let mut out = String::new();
    let title = definition["title"].as_str().unwrap_or_default();
    writeln!(
        out,
        "**{}** — {}\n",
        cell(title),
        hints(&definition["annotations"])
    )
    .unwrap_or_default();
    if let Some(description) = definition["description"].as_str() {
        writeln!(out, "> {}\n", description.replace('\n', "\n> ")).unwrap_or_default();
    }
    let input = &definition["inputSchema"];
    out.push_str("Parameters (`arguments`):\n\n");
    out.push_str(&schema_table(input, "parameter", "required"));
    if let Some(output) = definition.get("outputSchema") {
        out.push_str(
            "\nResult (`structuredContent`, next to a text block written for the model):\n\n",
        );
        out.push_str(&schema_table(output, "field", "always"));
    }
    out
}

/// The MCP tool annotations as a sentence.
fn hints(annotations: &Value) -> String {
    let Some(annotations) = annotations.as_object() else {
        return String::new();
    };
    let hint = |key: &str, yes: &str, no: &str| match annotations.get(key).and_then(Value::as_bool)
    {
        Some(true) => Some(yes.to_owned()),
        Some(false) => Some(no.to_owned()),
        None => None,
    };
    let parts: Vec<String> = [
        hint("readOnlyHint", "read-only", "not read-only"),
        hint("destructiveHint", "destructive", "not destructive"),
        hint("idempotentHint", "idempotent", "not idempotent"),
        hint("openWorldHint", "open world", "closed world"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("Annotations: {}.", parts.join(", "))
    }
}

/// A table column: its header, and what a row shows in it.
type Column<'a> = (&'a str, fn(&Row) -> String);

/// One row of a schema table.
struct Row {
    name: String,
    ty: String,
    required: bool,
    default: String,
    allowed: String,
    description: String,
}

/// The properties of an object schema, nested ones flattened (`a.b`, `a[].b`), as a table.
/// Columns that are empty in every row are left out.
fn schema_table(schema: &Value, name_header: &str, required_header: &str) -> String {
    let mut rows = Vec::new();
    properties(schema, schema, "", &mut rows);
    if rows.is_empty() {
        return "None.\n".to_owned();
    }
    let columns: [Column; 6] = [
        (name_header, |r: &Row| format!("`{}`", r.name)),
        ("type", |r: &Row| r.ty.clone()),
        (required_header, |r: &Row| {
            if r.required { "yes" } else { "" }.to_owned()
        }),
        ("default", |r: &Row| r.default.clone()),
        ("allowed", |r: &Row| r.allowed.clone()),
        ("description", |r: &Row| r.description.clone()),
    ];
    let kept: Vec<_> = columns
        .iter()
        .filter(|(header, f)| {
            *header == name_header
                || *header == "type"
                || *header == "description"
                || rows.iter().any(|r| !f(r).is_empty())
        })
        .collect();
    let mut out = String::new();
    let line = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
    out.push_str(&line(kept.iter().map(|(h, _)| (*h).to_owned()).collect()));
    out.push_str(&line(kept.iter().map(|_| "---".to_owned()).collect()));
    for row in &rows {
        out.push_str(&line(kept.iter().map(|(_, f)| cell(&f(row))).collect()));
    }
    out
}

/// Appends a row per property of `schema` (an object schema), and rows for what is nested in
/// each: an object's properties as `name.child`, an array's items' properties as
/// `name[].child`.
fn properties(schema: &Value, root: &Value, prefix: &str, rows: &mut Vec<Row>) {
    let schema = resolve(schema, root);
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = schema["properties"].as_object() else {
        return;
    };
    for (name, written) in props {
        // Keywords next to a `$ref` (a description, a default) win over the target's.
        let prop = resolve(written, root);
        let path = format!("{prefix}{name}");
        rows.push(Row {
            name: path.clone(),
            ty: type_name(prop, root),
            required: required.contains(&name.as_str()),
            default: written
                .get("default")
                .or(prop.get("default"))
                .map(code)
                .unwrap_or_default(),
            allowed: allowed(prop, root),
            description: match description(written) {
                own if own.is_empty() => description(prop),
                own => own,
            },
        });
        for (nested, suffix) in nested_objects(prop, root) {
            properties(nested, root, &format!("{path}{suffix}."), rows);
        }
    }
}

/// The object schemas nested in `schema` whose properties get rows of their own: itself (when
/// it has properties), its array items, and the alternatives of `anyOf`/`oneOf`.
fn nested_objects<'a>(schema: &'a Value, root: &'a Value) -> Vec<(&'a Value, &'static str)> {
    let schema = resolve(schema, root);
    let mut found = Vec::new();
    if schema.get("properties").is_some() {
        found.push((schema, ""));
    }
    if let Some(items) = schema.get("items") {
        let items = resolve(items, root);
        if items.get("properties").is_some() {
            found.push((items, "[]"));
        }
    }
    for alternative in alternatives(schema) {
        for (nested, suffix) in nested_objects(alternative, root) {
            if !found.iter().any(|(f, _)| std::ptr::eq(*f, nested)) {
                found.push((nested, suffix));
            }
        }
    }
    found
}

/// A local `$ref` (`#/$defs/X`, `#/definitions/X`) resolved against the root schema; a lone
/// `allOf` member is taken as the schema itself.
fn resolve<'a>(schema: &'a Value, root: &'a Value) -> &'a Value {
    if let Some(pointer) = schema.get("$ref").and_then(Value::as_str)
        && let Some(target) = pointer.strip_prefix('#').and_then(|p| root.pointer(p))
    {
        return resolve(target, root);
    }
    if let Some([only]) = schema
        .get("allOf")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
    {
        return resolve(only, root);
    }
    schema
}

fn alternatives(schema: &Value) -> Vec<&Value> {
    ["anyOf", "oneOf"]
        .iter()
        .filter_map(|key| schema.get(*key).and_then(Value::as_array))
        .flatten()
        .collect()
}

/// The type as a reader says it: `string`, `integer or null`, `array of string`,
/// `object: string → string`.
fn type_name(schema: &Value, root: &Value) -> String {
    let schema = resolve(schema, root);
    let alternatives = alternatives(schema);
    if !alternatives.is_empty() {
        let mut names: Vec<String> = Vec::new();
        for alternative in alternatives {
            let name = type_name(alternative, root);
            if !names.contains(&name) {
                names.push(name);
            }
        }
        // `null` last, as in `integer or null`.
        names.sort_by_key(|n| n == "null");
        return names.join(" or ");
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => match schema.get("enum").or(schema.get("const")) {
            Some(values) => {
                let values = values
                    .as_array()
                    .cloned()
                    .unwrap_or_else(|| vec![values.clone()]);
                if values.iter().all(Value::is_string) {
                    vec!["string"]
                } else {
                    vec![]
                }
            }
            None => vec![],
        },
    };
    if types.is_empty() {
        return "any".to_owned();
    }
    let mut names: Vec<String> = types
        .iter()
        .map(|t| match *t {
            "array" => match schema.get("items") {
                Some(items) => format!("array of {}", type_name(items, root)),
                None => "array".to_owned(),
            },
            "object" => match schema.get("additionalProperties") {
                Some(values) if values.is_object() => {
                    format!("object: string → {}", type_name(values, root))
                }
                _ => "object".to_owned(),
            },
            "string" => match schema.get("format").and_then(Value::as_str) {
                Some(format) => format!("string ({format})"),
                None => "string".to_owned(),
            },
            other => other.to_owned(),
        })
        .collect();
    names.sort_by_key(|n| n == "null");
    names.join(" or ")
}

/// The values a schema allows, when it restricts them: an enum, a constant, bounds.
fn allowed(schema: &Value, root: &Value) -> String {
    let schema = resolve(schema, root);
    let mut parts = Vec::new();
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        parts.push(values.iter().map(code).collect::<Vec<_>>().join(", "));
    }
    if let Some(value) = schema.get("const") {
        parts.push(code(value));
    }
    let number = |key: &str| {
        schema
            .get(key)
            .filter(|v| v.is_number())
            .map(Value::to_string)
    };
    let range = |low: Option<String>, high: Option<String>, what: &str| match (low, high) {
        (Some(low), Some(high)) => Some(format!("{what}{low} to {high}")),
        (Some(low), None) => Some(format!("{what}≥ {low}")),
        (None, Some(high)) => Some(format!("{what}≤ {high}")),
        (None, None) => None,
    };
    let exclusive = |key: &str, op: &str| number(key).map(|n| format!("{op} {n}"));
    parts.extend(range(number("minimum"), number("maximum"), ""));
    parts.extend(exclusive("exclusiveMinimum", ">"));
    parts.extend(exclusive("exclusiveMaximum", "<"));
    parts.extend(range(number("minLength"), number("maxLength"), "length "));
    parts.extend(range(number("minItems"), number("maxItems"), "items "));
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        parts.push(format!("matches `{pattern}`"));
    }
    if let Some(items) = schema.get("items") {
        let items = allowed(items, root);
        if !items.is_empty() {
            parts.push(format!("each: {items}"));
        }
    }
    for alternative in alternatives(schema) {
        let mut each = allowed(alternative, root);
        let meaning = description(alternative);
        if !each.is_empty() && !meaning.is_empty() {
            write!(each, " ({meaning})").unwrap_or_default();
        }
        if !each.is_empty() && !parts.contains(&each) {
            parts.push(each);
        }
    }
    parts.join("; ")
}

fn description(schema: &Value) -> String {
    schema
        .get("description")
        .or(schema.get("title"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// A JSON value as inline code.
fn code(value: &Value) -> String {
    format!("`{value}`")
}

/// Text fit for one table cell: no line breaks, `|` escaped.
fn cell(text: &str) -> String {
    text.replace('\n', " ").replace('|', "\\|")
}

// ---------------------------------------------------------------------------------------------
// The command line: `proc-mcp --help`
// ---------------------------------------------------------------------------------------------

/// `proc-mcp --help` of the built binary, with no `PROC_MCP_*` variable inherited (clap shows
/// a set variable's value in the help).
fn proc_mcp_help() -> String {
    let mut command = Command::new(common::server_bin());
    command.arg("--help").stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PROC_MCP_") {
            command.env_remove(name);
        }
    }
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn proc-mcp --help");
    let pid = child.id();
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = send.send(child.wait_with_output());
    });
    let output = match receive.recv_timeout(HELP_TIMEOUT) {
        Ok(output) => output.expect("wait for proc-mcp --help"),
        Err(_) => {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            panic!("proc-mcp --help did not finish within {HELP_TIMEOUT:?}");
        }
    };
    assert!(
        output.status.success(),
        "proc-mcp --help failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("help is UTF-8")
}

/// One option of `--help`.
#[derive(Debug, Default)]
struct CliOption {
    /// Every spelling, as `--help` lists them: `-h, --help`.
    flags: String,
    /// The long one: `--help`.
    flag: String,
    value_name: String,
    help: String,
    env: String,
    default: String,
    values: Vec<String>,
}

/// The options of clap's long help (`--help`): each starts on a line `  -x, --name <VALUE>`,
/// followed by its indented help paragraphs, `Possible values:` items and `[env: NAME=]`,
/// `[default: VALUE]` lines.
fn parse_help(help: &str) -> Vec<CliOption> {
    let mut options: Vec<CliOption> = Vec::new();
    let mut in_options = false;
    let mut in_values = false;
    for line in help.lines() {
        if line.trim_end() == "Options:" {
            in_options = true;
            continue;
        }
        if !in_options {
            continue;
        }
        let trimmed = line.trim();
        let indent = line.len() - line.trim_start().len();
        // An option's first line is indented less than its help (clap: 2 or 6 columns, then
        // 10), and starts with its flags: `-h, --help`, `--max-line <SIZE>`.
        if indent < 10 && trimmed.starts_with('-') {
            let head = trimmed.rsplit(", ").next().unwrap_or(trimmed);
            let mut words = head.splitn(2, ' ');
            let value_at = trimmed.find(" <").unwrap_or(trimmed.len());
            options.push(CliOption {
                flags: trimmed[..value_at].to_owned(),
                flag: words.next().unwrap_or_default().to_owned(),
                value_name: words.next().unwrap_or_default().to_owned(),
                ..CliOption::default()
            });
            in_values = false;
            continue;
        }
        let Some(option) = options.last_mut() else {
            continue;
        };
        if let Some(env) = trimmed
            .strip_prefix("[env: ")
            .and_then(|e| e.strip_suffix(']'))
        {
            option.env = env.trim_end_matches('=').to_owned();
        } else if let Some(default) = trimmed
            .strip_prefix("[default: ")
            .and_then(|d| d.strip_suffix(']'))
        {
            option.default = default.to_owned();
        } else if trimmed == "Possible values:" {
            in_values = true;
        } else if in_values && let Some(value) = trimmed.strip_prefix("- ") {
            option.values.push(value.to_owned());
        } else if !trimmed.is_empty() && !in_values {
            if !option.help.is_empty() {
                option.help.push(' ');
            }
            option.help.push_str(trimmed);
        }
    }
    options
}

/// The options as a table: flag, environment variable, default, values, meaning.
fn cli_table(help: &str) -> Result<String, String> {
    let options = parse_help(help);
    if !options.iter().any(|o| o.flag == "--help") {
        return Err(format!("`proc-mcp --help` was not understood:\n{help}"));
    }
    let mut out =
        String::from("| option | environment variable | default | meaning |\n|---|---|---|---|\n");
    for option in options.iter().filter(|o| !o.env.is_empty()) {
        let mut meaning = option.help.clone();
        if !option.values.is_empty() {
            let values: Vec<String> = option
                .values
                .iter()
                .map(|v| match v.split_once(": ") {
                    Some((name, what)) => format!("`{name}`: {}", what.trim()),
                    None => format!("`{v}`"),
                })
                .collect();
            write!(meaning, " (values: {})", values.join("; ")).unwrap_or_default();
        }
        let flag = if option.value_name.is_empty() {
            format!("`{}`", option.flag)
        } else {
            format!("`{} {}`", option.flag, option.value_name)
        };
        let default = if option.default.is_empty() {
            String::new()
        } else {
            format!("`{}`", option.default)
        };
        writeln!(
            out,
            "| {} | `{}` | {} | {} |",
            cell(&flag),
            option.env,
            cell(&default),
            cell(&meaning)
        )
        .unwrap_or_default();
    }
    let others: Vec<String> = options
        .iter()
        .filter(|o| o.env.is_empty())
        .map(|o| format!("`{}`", o.flags))
        .collect();
    if !others.is_empty() {
        write!(out, "\nAnd the usual {}.\n", others.join(" and ")).unwrap_or_default();
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// A live core: what the server says about itself
// ---------------------------------------------------------------------------------------------

/// Results of a [`Server`] with the default [`Config`], on virtual time.
struct LiveServer {
    /// The `initialize` result (latest handshake-era version).
    initialize: Value,
    /// The `resources/templates/list` result.
    templates: Value,
    /// The `server/discover` result (2026-07-28).
    discover: Value,
}

impl LiveServer {
    fn initialized() -> LiveServer {
        let mut server = Server::new(Config::default(), Box::new(|| "doc000".to_owned()));
        let now = Now::new(Instant::from_nanos(0), 0);
        let latest = ProtocolVersion::LATEST.as_str();
        let mut ask = |request: Value| -> Value {
            let mut line = serde_json::to_vec(&request).unwrap_or_default();
            line.push(b'\n');
            server.handle_input(now, Input::ClientBytes(&line));
            loop {
                match server.poll_output() {
                    Output::Transmit(line) => {
                        server.handle_input(now, Input::Transmitted { bytes: line.len() });
                        let message: Value = serde_json::from_slice(&line).unwrap_or_default();
                        if message.get("id") == request.get("id") {
                            return message
                                .get("result")
                                .cloned()
                                .unwrap_or_else(|| panic!("{request} failed: {message}"));
                        }
                    }
                    Output::Timeout(_) => panic!("no answer to {request}"),
                    other => panic!("unexpected {other:?} for {request}"),
                }
            }
        };
        let discover = ask(
            json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover",
            "params": {"_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
            }}}),
        );
        let initialize = ask(json!({"jsonrpc": "2.0", "id": 2, "method": "initialize",
            "params": {"protocolVersion": latest, "capabilities": {},
                "clientInfo": {"name": "docs", "version": "0"}}}));
        let templates = ask(
            json!({"jsonrpc": "2.0", "id": 3, "method": "resources/templates/list", "params": {}}),
        );
        LiveServer {
            initialize,
            templates,
            discover,
        }
    }
}

/// The resource templates as a table.
fn resource_template(templates: &Value) -> String {
    let mut out =
        String::from("| URI template | name | MIME type | description |\n|---|---|---|---|\n");
    let empty = Map::new();
    for template in templates["resourceTemplates"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let t = template.as_object().unwrap_or(&empty);
        let field = |key: &str| t.get(key).and_then(Value::as_str).unwrap_or_default();
        writeln!(
            out,
            "| `{}` | `{}` | `{}` | {} |",
            field("uriTemplate"),
            field("name"),
            field("mimeType"),
            cell(field("description"))
        )
        .unwrap_or_default();
    }
    out
}

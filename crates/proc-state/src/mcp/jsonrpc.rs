//! JSON-RPC 2.0 envelopes (<https://www.jsonrpc.org/specification>) as MCP uses them.
//!
//! jsonrpc-core supplies the vocabulary ([`Version`], [`ErrorCode`], [`Error`]); its `Call`
//! parser does not fit MCP, so messages are classified here from a [`serde_json::Value`]:
//! - ids are strings or integers of either sign and any size, and `0` is an id like any other
//!   (MCP "Base Protocol"); they are echoed back exactly as the client wrote them, digits
//!   beyond 64 bits included ([`RequestId`]); `1.5` is not an id;
//! - a message with `result` or `error` and no `method` is the client *answering* us: it is never
//!   answered, least of all with "Invalid Request";
//! - a message with a `method` and no `id` is a notification and is never answered, even when
//!   it is malformed (non-object `params`): JSON-RPC forbids replying to notifications;
//! - `"jsonrpc": "2.0"` is required;
//! - nothing sent carries `"params": null`.
//!
//! Outgoing messages are serialized straight to lines ([`success`], [`failure`],
//! [`notification`]), so an id is written back byte for byte.

use core::fmt;

pub use jsonrpc_core::types::{Error, ErrorCode, Version};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// A request id exactly as the client sent it: a JSON string, or an integer kept as its decimal
/// text (so `18446744073709551616` comes back as written, not as a float).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(Repr);

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Repr {
    String(String),
    /// The integer's JSON text: an optional `-` and digits.
    Integer(String),
}

impl RequestId {
    /// Reads an id from a decoded value: a string, or an integer that fits 64 bits. Anything
    /// else (null, a fraction, an integer too large for 64 bits, whose digits a `Value` has
    /// lost) is `None`; [`RequestId::from_json`] reads large integers exactly.
    pub fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::String(text) => Some(Self(Repr::String(text.clone()))),
            Value::Number(n) if n.is_i64() || n.is_u64() => {
                Some(Self(Repr::Integer(n.to_string())))
            }
            _ => None,
        }
    }

    /// Reads an id from its JSON text: a string, or an integer of any size. `None` for
    /// anything else (`1.5`, `1e3`, `null`, objects).
    pub fn from_json(text: &str) -> Option<Self> {
        let text = text.trim();
        let digits = text.strip_prefix('-').unwrap_or(text);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            return Some(Self(Repr::Integer(text.to_owned())));
        }
        match serde_json::from_str::<Value>(text).ok()? {
            Value::String(s) => Some(Self(Repr::String(s))),
            _ => None,
        }
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::String(s) => write!(f, "{s:?}"),
            Repr::Integer(text) => f.write_str(text),
        }
    }
}

impl Serialize for RequestId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Repr::String(s) => serializer.serialize_str(s),
            Repr::Integer(text) => {
                if let Ok(n) = text.parse::<i64>() {
                    serializer.serialize_i64(n)
                } else if let Ok(n) = text.parse::<u64>() {
                    serializer.serialize_u64(n)
                } else {
                    // Checked digits: valid JSON, written as is by serde_json's serializer.
                    match RawValue::from_string(text.clone()) {
                        Ok(raw) => raw.serialize(serializer),
                        Err(_) => serializer.serialize_none(),
                    }
                }
            }
        }
    }
}

/// A classified client message.
#[derive(Debug, PartialEq)]
pub enum Message {
    /// A call that expects exactly one response.
    Request {
        id: RequestId,
        method: String,
        params: Map<String, Value>,
    },
    /// A call that must never be answered. `params` is empty when the client sent something
    /// other than an object.
    Notification {
        method: String,
        params: Map<String, Value>,
    },
    /// The client's response to a request of ours: ignored, never answered.
    Response,
}

/// Why a value is not a valid message, with the id to echo when one could be read.
#[derive(Debug, PartialEq)]
pub struct Invalid {
    /// The request's id, when it was readable; errors without one are sent with `"id": null`.
    pub id: Option<RequestId>,
    /// The error to send.
    pub error: Error,
}

/// Classifies one message: `value` is its decoded JSON, `text` its JSON text (one element of a
/// batch, or a whole line), from which an integer id too large for 64 bits is read exactly.
///
/// Errors: `-32600` Invalid Request for a non-object, a missing or wrong `jsonrpc`, a missing
/// or non-string `method`, an id that is not a string or an integer; `-32602` Invalid params
/// for a request whose `params` is not an object (MCP params are always objects).
pub fn classify(value: Value, text: &[u8]) -> Result<Message, Box<Invalid>> {
    let Value::Object(mut object) = value else {
        return Err(invalid(None, "a JSON-RPC message must be a JSON object"));
    };
    let id = match object.remove("id") {
        None => None,
        Some(raw) => match RequestId::from_value(&raw).or_else(|| exact_id(&raw, text)) {
            Some(id) => Some(id),
            None => return Err(invalid(None, "`id` must be a string or an integer")),
        },
    };
    let version_ok = object
        .get("jsonrpc")
        .is_some_and(|v| serde_json::from_value::<Version>(v.clone()).is_ok());
    if !version_ok {
        return Err(invalid(id, "`jsonrpc` must be \"2.0\""));
    }
    let method = match object.remove("method") {
        Some(Value::String(method)) => method,
        Some(_) => return Err(invalid(id, "`method` must be a string")),
        None if object.contains_key("result") || object.contains_key("error") => {
            return Ok(Message::Response);
        }
        None => return Err(invalid(id, "a request needs a `method`")),
    };
    let params = match (object.remove("params"), &id) {
        (None, _) => Map::new(),
        (Some(Value::Object(params)), _) => params,
        // A notification is never answered, not even to say its params are wrong.
        (Some(_), None) => Map::new(),
        (Some(_), Some(_)) => {
            return Err(Box::new(Invalid {
                id,
                error: Error::invalid_params("`params` must be an object"),
            }));
        }
    };
    Ok(match id {
        Some(id) => Message::Request { id, method, params },
        None => Message::Notification { method, params },
    })
}

/// An integer id that a `Value` could only hold as a float: read again from the message text.
fn exact_id(decoded: &Value, text: &[u8]) -> Option<RequestId> {
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(borrow)]
        id: &'a RawValue,
    }
    if !decoded.is_f64() {
        return None;
    }
    let probe: Probe<'_> = serde_json::from_slice(text).ok()?;
    RequestId::from_json(probe.id.get())
}

/// The `requestId` of a `notifications/cancelled` exactly as sent (`params` decoded, `text` the
/// message's JSON text, for integers beyond 64 bits).
pub fn cancelled_request(params: &Map<String, Value>, text: &[u8]) -> Option<RequestId> {
    #[derive(Deserialize)]
    struct Params<'a> {
        #[serde(borrow, rename = "requestId")]
        request_id: &'a RawValue,
    }
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(borrow)]
        params: Params<'a>,
    }
    let decoded = params.get("requestId")?;
    RequestId::from_value(decoded).or_else(|| {
        let probe: Probe<'_> = serde_json::from_slice(text).ok()?;
        decoded
            .is_f64()
            .then(|| RequestId::from_json(probe.params.request_id.get()))
            .flatten()
    })
}

/// The JSON text of each element of a batch line (a JSON array), in order.
pub fn batch_elements(line: &[u8]) -> Option<Vec<&RawValue>> {
    serde_json::from_slice(line).ok()
}

/// Reads the `"id"` of a message from the start of its text, for a message that cannot be
/// decoded whole (too long, or not valid JSON): only the top-level object's members before the
/// first error or the end of `prefix` are looked at, so a message whose `id` comes before its
/// large `params` (as every SDK writes them) can still be answered with its id.
pub fn recover_id(prefix: &[u8]) -> Option<RequestId> {
    let mut scan = Scanner {
        bytes: prefix,
        at: 0,
    };
    scan.skip_ws();
    scan.eat(b'{')?;
    loop {
        scan.skip_ws();
        let key_start = scan.at;
        scan.string()?;
        let key = &prefix[key_start..scan.at];
        scan.skip_ws();
        scan.eat(b':')?;
        scan.skip_ws();
        let value_start = scan.at;
        scan.value()?;
        if key == b"\"id\"" {
            let text = core::str::from_utf8(&prefix[value_start..scan.at]).ok()?;
            return RequestId::from_json(text);
        }
        scan.skip_ws();
        scan.eat(b',')?;
    }
}

/// A forgiving cursor over JSON text for [`recover_id`]: every step returns `None` at the end
/// of the input or on anything unexpected.
struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// A string, escapes included.
    fn string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    return Some(());
                }
                b'\\' => self.at += 2,
                _ => self.at += 1,
            }
        }
    }

    /// Any value; nested arrays and objects are skipped by depth (strings respected).
    fn value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string(),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.at += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.at += 1;
                }
            }
            _ => {
                let start = self.at;
                while self
                    .peek()
                    .is_some_and(|b| !matches!(b, b',' | b'}' | b']') && !b.is_ascii_whitespace())
                {
                    self.at += 1;
                }
                // The value must be known to have ended, not merely cut by the prefix.
                (self.at > start && self.peek().is_some()).then_some(())
            }
        }
    }
}

fn invalid(id: Option<RequestId>, message: &str) -> Box<Invalid> {
    Box::new(Invalid {
        id,
        error: Error {
            code: ErrorCode::InvalidRequest,
            message: format!("Invalid Request: {message}"),
            data: None,
        },
    })
}

/// An error with `code` and `message` and no data.
pub fn error(code: ErrorCode, message: impl Into<String>) -> Error {
    Error {
        code,
        message: message.into(),
        data: None,
    }
}

#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    jsonrpc: &'static str,
    id: Option<&'a RequestId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a Error>,
}

/// A success response, `{"jsonrpc":"2.0","id":…,"result":…}`, as one compact JSON text
/// (without the line's `\n`; see [`to_line`]).
pub fn success(id: &RequestId, result: &impl Serialize) -> Vec<u8> {
    serialize(&Envelope {
        jsonrpc: "2.0",
        id: Some(id),
        result: Some(result),
        error: None,
    })
}

/// An error response as one compact JSON text; `id` is `null` when the request's id could not
/// be read.
pub fn failure(id: Option<&RequestId>, error: &Error) -> Vec<u8> {
    serialize(&Envelope::<()> {
        jsonrpc: "2.0",
        id,
        result: None,
        error: Some(error),
    })
}

/// A notification, `{"jsonrpc":"2.0","method":…,"params":…}` (`params` always an object), as
/// one compact JSON text.
pub fn notification(method: &str, params: &impl Serialize) -> Vec<u8> {
    #[derive(Serialize)]
    struct Notification<'a, P: Serialize> {
        jsonrpc: &'static str,
        method: &'a str,
        params: &'a P,
    }
    serialize(&Notification {
        jsonrpc: "2.0",
        method,
        params,
    })
}

/// Params with an id inside their `_meta` under `key` (e.g. a listen stream's subscription
/// id), serialized without going through a [`Value`], so the id stays exact.
#[derive(Serialize)]
pub struct WithMetaId<'a> {
    /// The params, without `_meta`.
    #[serde(flatten)]
    pub params: &'a Map<String, Value>,
    /// `{key: id}`.
    #[serde(rename = "_meta")]
    pub meta: MetaId<'a>,
}

/// `{key: id}` for [`WithMetaId`].
pub struct MetaId<'a> {
    /// The `_meta` key.
    pub key: &'a str,
    /// The id under it.
    pub id: &'a RequestId,
}

impl Serialize for MetaId<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(self.key, self.id)?;
        map.end()
    }
}

fn serialize(message: &impl Serialize) -> Vec<u8> {
    // Serializing plain data (maps with string keys) to memory cannot fail.
    serde_json::to_vec(message).unwrap_or_default()
}

/// Makes a line of a compact JSON text: appends the `\n` (serde_json escapes control
/// characters, so the text holds no other newline).
pub fn to_line(mut text: Vec<u8>) -> Vec<u8> {
    text.push(b'\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    fn classify_text(text: &str) -> Result<Message, Box<Invalid>> {
        let value: Value = serde_json::from_str(text).expect("valid JSON");
        classify(value, text.as_bytes())
    }

    fn id(text: &str) -> RequestId {
        RequestId::from_json(text).expect("an id")
    }

    #[rstest]
    #[case::zero_id(r#"{"jsonrpc":"2.0","id":0,"method":"ping"}"#, "0")]
    #[case::negative_id(r#"{"jsonrpc":"2.0","id":-7,"method":"ping"}"#, "-7")]
    #[case::string_id(r#"{"jsonrpc":"2.0","id":"a-1","method":"ping"}"#, "\"a-1\"")]
    #[case::u64_max(
        r#"{"jsonrpc":"2.0","id":18446744073709551615,"method":"ping"}"#,
        "18446744073709551615"
    )]
    #[case::beyond_64_bits(
        r#"{"jsonrpc":"2.0","id":18446744073709551616,"method":"ping"}"#,
        "18446744073709551616"
    )]
    #[case::very_negative(
        r#"{"jsonrpc":"2.0","id":-99999999999999999999999,"method":"ping"}"#,
        "-99999999999999999999999"
    )]
    fn request_ids_are_echoed_byte_for_byte(#[case] message: &str, #[case] expected: &str) {
        match classify_text(message) {
            Ok(Message::Request { id, method, .. }) => {
                assert_eq!(method, "ping");
                let line = String::from_utf8(success(&id, &json!({}))).unwrap();
                assert_eq!(
                    line,
                    format!(r#"{{"jsonrpc":"2.0","id":{expected},"result":{{}}}}"#)
                );
            }
            other => panic!("not a request: {other:?}"),
        }
    }

    #[rstest]
    #[case::number(r#"42"#, None, -32600)]
    #[case::string(r#""x""#, None, -32600)]
    #[case::null(r#"null"#, None, -32600)]
    #[case::missing_jsonrpc(r#"{"id":1,"method":"ping"}"#, Some("1"), -32600)]
    #[case::wrong_jsonrpc(r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#, Some("1"), -32600)]
    #[case::null_id(r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#, None, -32600)]
    #[case::object_id(r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#, None, -32600)]
    #[case::fractional_id(r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#, None, -32600)]
    #[case::exponent_id(r#"{"jsonrpc":"2.0","id":1e3,"method":"ping"}"#, None, -32600)]
    #[case::method_not_string(r#"{"jsonrpc":"2.0","id":2,"method":5}"#, Some("2"), -32600)]
    #[case::no_method(r#"{"jsonrpc":"2.0","id":3}"#, Some("3"), -32600)]
    #[case::array_params(r#"{"jsonrpc":"2.0","id":4,"method":"ping","params":[1]}"#, Some("4"), -32602)]
    #[case::null_params(r#"{"jsonrpc":"2.0","id":5,"method":"ping","params":null}"#, Some("5"), -32602)]
    fn invalid_messages_get_the_right_code(
        #[case] message: &str,
        #[case] expected_id: Option<&str>,
        #[case] code: i64,
    ) {
        let err = classify_text(message).expect_err("must be invalid");
        assert_eq!(err.id, expected_id.map(id));
        assert_eq!(err.error.code.code(), code);
    }

    #[rstest]
    #[case::result(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#)]
    #[case::error(r#"{"jsonrpc":"2.0","id":1,"error":{"code":-1,"message":"no"}}"#)]
    fn client_responses_are_recognised(#[case] message: &str) {
        assert_eq!(classify_text(message), Ok(Message::Response));
    }

    #[rstest]
    #[case::plain(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)]
    #[case::array_params(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":[1]}"#)]
    #[case::string_params(r#"{"jsonrpc":"2.0","method":"notifications/x","params":"p"}"#)]
    fn messages_without_id_are_notifications_even_when_malformed(#[case] message: &str) {
        assert!(matches!(
            classify_text(message),
            Ok(Message::Notification { .. })
        ));
    }

    #[test]
    fn cancelled_request_ids_are_read_exactly() {
        let text = r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":18446744073709551616}}"#;
        let Ok(Message::Notification { params, .. }) = classify_text(text) else {
            panic!("a notification");
        };
        assert_eq!(
            cancelled_request(&params, text.as_bytes()),
            Some(id("18446744073709551616"))
        );
        let text =
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"a"}}"#;
        let Ok(Message::Notification { params, .. }) = classify_text(text) else {
            panic!("a notification");
        };
        assert_eq!(
            cancelled_request(&params, text.as_bytes()),
            Some(id("\"a\""))
        );
    }

    #[rstest]
    #[case::first(
        br#"{"id": 7, "jsonrpc":"2.0","method":"tools/call","params":{"arguments":{"data":"xxxx"#,
        Some("7")
    )]
    #[case::after_method(
        br#"{"jsonrpc":"2.0","method":"tools/call","id":"req-9","params":{"x":"#,
        Some("\"req-9\"")
    )]
    #[case::after_nested(br#"{"params":{"a":[1,{"b":"}"}]},"id":-3,"jsonrpc""#, Some("-3"))]
    #[case::escaped_key_text(br#"{"m":"say \"id\":5","id":8,"#, Some("8"))]
    #[case::big(
        br#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"method""#,
        Some("123456789012345678901234567890")
    )]
    #[case::cut_in_the_id(br#"{"jsonrpc":"2.0","id":12"#, None)]
    #[case::after_the_cut(br#"{"jsonrpc":"2.0","params":{"data":"xxxxx"#, None)]
    #[case::not_an_object(br#"[{"id":1}]"#, None)]
    #[case::fractional(br#"{"id":1.5,"#, None)]
    fn ids_are_recovered_from_the_start_of_a_message(
        #[case] prefix: &[u8],
        #[case] expected: Option<&str>,
    ) {
        assert_eq!(recover_id(prefix), expected.map(id));
    }

    #[test]
    fn error_response_has_null_id_when_unknown_and_no_data_key() {
        let line = to_line(failure(None, &Error::parse_error()));
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32700,\"message\":\"Parse error\"}}\n"
        );
    }

    #[test]
    fn notifications_never_carry_null_params() {
        let line = to_line(notification("notifications/x", &Map::new()));
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/x\",\"params\":{}}\n"
        );
    }

    #[test]
    fn meta_ids_are_exact_inside_params() {
        let mut params = Map::new();
        params.insert("uri".into(), json!("proc://a/output"));
        let big = id("98765432109876543210");
        let text = notification(
            "notifications/resources/updated",
            &WithMetaId {
                params: &params,
                meta: MetaId { key: "k", id: &big },
            },
        );
        assert_eq!(
            String::from_utf8(text).unwrap(),
            r#"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"proc://a/output","_meta":{"k":98765432109876543210}}}"#
        );
    }
}

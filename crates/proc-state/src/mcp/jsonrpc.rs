//! JSON-RPC 2.0 envelopes (<https://www.jsonrpc.org/specification>) as MCP uses them.
//!
//! jsonrpc-core supplies the vocabulary ([`Version`], [`ErrorCode`], [`Error`]); its `Call`
//! parser does not fit MCP, so messages are classified here from a [`serde_json::Value`]:
//! - ids are strings or integers of either sign, and `0` is an id like any other (MCP "Base
//!   Protocol"); they are echoed back exactly as the client wrote them;
//! - a message with `result` or `error` and no `method` is the client *answering* us: it is never
//!   answered, least of all with "Invalid Request";
//! - `"jsonrpc": "2.0"` is required;
//! - nothing sent carries `"params": null`.

pub use jsonrpc_core::types::{Error, ErrorCode, Version};
use serde::Serialize;
use serde_json::{Map, Value};

/// A request id exactly as the client sent it: a JSON string or number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(Value);

impl RequestId {
    /// Accepts a string or a number; anything else (null included) is not an id in MCP.
    pub fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::String(_) | Value::Number(_) => Some(Self(value)),
            _ => None,
        }
    }

    /// The id as JSON.
    pub fn as_value(&self) -> &Value {
        &self.0
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
    /// A call that must never be answered.
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

/// Classifies one decoded JSON value (one element of a batch, or a whole line).
///
/// Errors: `-32600` Invalid Request for a non-object, a missing or wrong `jsonrpc`, a missing
/// or non-string `method`, an id that is not a string or number; `-32602` Invalid params for
/// `params` that is not an object (MCP params are always objects).
pub fn classify(value: Value) -> Result<Message, Box<Invalid>> {
    let Value::Object(mut object) = value else {
        return Err(invalid(None, "a JSON-RPC message must be a JSON object"));
    };
    let id = match object.remove("id") {
        None => None,
        Some(raw) => match RequestId::from_value(raw) {
            Some(id) => Some(id),
            None => {
                return Err(invalid(None, "`id` must be a string or an integer"));
            }
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
    let params = match object.remove("params") {
        None => Map::new(),
        Some(Value::Object(params)) => params,
        Some(_) => {
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

/// A success response: `{"jsonrpc":"2.0","id":…,"result":…}`.
pub fn success(id: &RequestId, result: Value) -> Value {
    envelope(Some(id), "result", result)
}

/// An error response; `id` is `null` when the request's id could not be read.
pub fn failure(id: Option<&RequestId>, error: &Error) -> Value {
    envelope(
        id,
        "error",
        serde_json::to_value(error).unwrap_or(Value::Null),
    )
}

/// A notification: `{"jsonrpc":"2.0","method":…,"params":…}` (`params` always an object).
pub fn notification(method: &str, params: Map<String, Value>) -> Value {
    let mut object = Map::with_capacity(3);
    object.insert("jsonrpc".into(), Value::from("2.0"));
    object.insert("method".into(), Value::from(method));
    object.insert("params".into(), Value::Object(params));
    Value::Object(object)
}

fn envelope(id: Option<&RequestId>, key: &str, body: Value) -> Value {
    let mut object = Map::with_capacity(3);
    object.insert("jsonrpc".into(), Value::from("2.0"));
    object.insert(
        "id".into(),
        id.map_or(Value::Null, |id| id.as_value().clone()),
    );
    object.insert(key.into(), body);
    Value::Object(object)
}

/// Serializes a message as one compact line ending in `\n` (serde_json escapes control
/// characters, so the line holds no other newline).
pub fn to_line(message: &impl Serialize) -> Vec<u8> {
    let mut line = serde_json::to_vec(message).unwrap_or_default();
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    fn id(v: Value) -> Option<RequestId> {
        RequestId::from_value(v)
    }

    #[rstest]
    #[case::zero_id(json!({"jsonrpc":"2.0","id":0,"method":"ping"}), json!(0))]
    #[case::negative_id(json!({"jsonrpc":"2.0","id":-7,"method":"ping"}), json!(-7))]
    #[case::string_id(json!({"jsonrpc":"2.0","id":"a-1","method":"ping"}), json!("a-1"))]
    #[case::huge_id(json!({"jsonrpc":"2.0","id":18446744073709551615u64,"method":"ping"}), json!(18446744073709551615u64))]
    fn request_ids_are_kept_exactly(#[case] message: Value, #[case] expected: Value) {
        match classify(message) {
            Ok(Message::Request { id, method, .. }) => {
                assert_eq!(id.as_value(), &expected);
                assert_eq!(method, "ping");
            }
            other => panic!("not a request: {other:?}"),
        }
    }

    #[rstest]
    #[case::number(json!(42), None, -32600)]
    #[case::string(json!("x"), None, -32600)]
    #[case::null(json!(null), None, -32600)]
    #[case::missing_jsonrpc(json!({"id":1,"method":"ping"}), Some(json!(1)), -32600)]
    #[case::wrong_jsonrpc(json!({"jsonrpc":"1.0","id":1,"method":"ping"}), Some(json!(1)), -32600)]
    #[case::null_id(json!({"jsonrpc":"2.0","id":null,"method":"ping"}), None, -32600)]
    #[case::object_id(json!({"jsonrpc":"2.0","id":{},"method":"ping"}), None, -32600)]
    #[case::method_not_string(json!({"jsonrpc":"2.0","id":2,"method":5}), Some(json!(2)), -32600)]
    #[case::no_method(json!({"jsonrpc":"2.0","id":3}), Some(json!(3)), -32600)]
    #[case::array_params(json!({"jsonrpc":"2.0","id":4,"method":"ping","params":[1]}), Some(json!(4)), -32602)]
    #[case::null_params(json!({"jsonrpc":"2.0","id":5,"method":"ping","params":null}), Some(json!(5)), -32602)]
    fn invalid_messages_get_the_right_code(
        #[case] message: Value,
        #[case] expected_id: Option<Value>,
        #[case] code: i64,
    ) {
        let err = classify(message).expect_err("must be invalid");
        assert_eq!(err.id, expected_id.and_then(id));
        assert_eq!(err.error.code.code(), code);
    }

    #[rstest]
    #[case::result(json!({"jsonrpc":"2.0","id":1,"result":{}}))]
    #[case::error(json!({"jsonrpc":"2.0","id":1,"error":{"code":-1,"message":"no"}}))]
    fn client_responses_are_recognised(#[case] message: Value) {
        assert_eq!(classify(message), Ok(Message::Response));
    }

    #[test]
    fn message_without_id_is_a_notification() {
        let message = json!({"jsonrpc":"2.0","method":"notifications/initialized"});
        assert!(matches!(
            classify(message),
            Ok(Message::Notification { .. })
        ));
    }

    #[test]
    fn error_response_has_null_id_when_unknown_and_no_data_key() {
        let line = to_line(&failure(None, &Error::parse_error()));
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32700,\"message\":\"Parse error\"}}\n"
        );
    }

    #[test]
    fn notifications_never_carry_null_params() {
        let line = to_line(&notification("notifications/x", Map::new()));
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/x\",\"params\":{}}\n"
        );
    }
}

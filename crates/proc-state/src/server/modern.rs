//! The 2026-07-28 protocol era: stateless requests that each carry their own envelope in
//! `params._meta`, served alongside the handshake era on the same connection (the spec lets a
//! dual-era server serve both; see its "Versioning" page).
//!
//! - A request is modern when `params._meta` holds `io.modelcontextprotocol/protocolVersion`
//!   (and it is not `initialize`).
//! - The envelope is checked first: `_meta` must be an object with the version (a string) and
//!   `io.modelcontextprotocol/clientCapabilities`, else `-32602`; an unknown version is
//!   `-32022` with `data: {supported, requested}`.
//! - Every result carries `resultType: "complete"` and `_meta` with the server's info; the
//!   results of `server/discover`, the lists and `resources/read` also carry the caching hints
//!   `ttlMs` and `cacheScope`.
//! - What the era removed (`ping`, `logging/setLevel`, `resources/subscribe`) is `-32601` here
//!   and stays available to handshake-era clients. Change notifications reach a modern client
//!   only through a `subscriptions/listen` stream, tagged with its id.

use serde_json::{Map, Value, json};

use super::{Pending, Reply, Server, capabilities};
use crate::mcp::jsonrpc::{self, Error, ErrorCode, MetaId, RequestId, WithMetaId};
use crate::time::Now;

/// The one stateless-era version this server speaks.
pub(super) const VERSION: &str = "2026-07-28";
const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
/// Tags every frame of a `subscriptions/listen` stream with the listen request's id.
pub(super) const META_SUBSCRIPTION: &str = "io.modelcontextprotocol/subscriptionId";
/// "Unsupported protocol version" (2026-07-28).
const UNSUPPORTED_VERSION: i64 = -32022;

/// How long a client may cache a result, and with whom it may share it.
#[derive(Clone, Copy)]
pub(super) enum Cache {
    /// The same for every client for the server's life (`tools/list`, templates, discover).
    Static,
    /// Changes as tasks come and go (`resources/list`, `resources/read`).
    Live,
}

/// An open `subscriptions/listen` stream.
#[derive(Debug)]
pub(super) struct Listener {
    /// The listen request: every frame carries its id, a `notifications/cancelled` for it
    /// closes the stream, and the shutdown answers it.
    pub(super) request: Pending,
    /// The client asked for `notifications/resources/list_changed`.
    pub(super) resources_list_changed: bool,
}

/// Whether a request belongs to the 2026-07-28 era.
pub(super) fn is_modern(method: &str, params: &Map<String, Value>) -> bool {
    method != "initialize"
        && params
            .get("_meta")
            .and_then(Value::as_object)
            .is_some_and(|meta| meta.contains_key(META_VERSION))
}

/// Checks the per-request envelope (spec 2026-07-28, "Base protocol: _meta").
fn check_envelope(params: &Map<String, Value>) -> Result<(), Error> {
    let meta = params.get("_meta").and_then(Value::as_object);
    let missing: Vec<&str> = [META_VERSION, META_CAPABILITIES]
        .into_iter()
        .filter(|key| meta.is_none_or(|m| !m.contains_key(*key)))
        .collect();
    if !missing.is_empty() {
        return Err(Error::invalid_params(format!(
            "Invalid params: params._meta is missing the required envelope key(s): {}",
            missing.join(", ")
        )));
    }
    let Some(version) = meta
        .and_then(|m| m.get(META_VERSION))
        .and_then(Value::as_str)
    else {
        return Err(Error::invalid_params(format!(
            "Invalid params: params._meta[\"{META_VERSION}\"] must be a string"
        )));
    };
    if version != VERSION {
        return Err(Error {
            code: ErrorCode::ServerError(UNSUPPORTED_VERSION),
            message: format!("Unsupported protocol version: {version}"),
            data: Some(json!({"supported": [VERSION], "requested": version})),
        });
    }
    Ok(())
}

/// Adds the caching hints a cacheable result must carry.
fn cacheable(mut result: Value, cache: Cache) -> Value {
    let (ttl_ms, scope) = match cache {
        Cache::Static => (300_000, "public"),
        Cache::Live => (0, "private"),
    };
    if let Some(object) = result.as_object_mut() {
        object.insert("ttlMs".into(), Value::from(ttl_ms));
        object.insert("cacheScope".into(), Value::from(scope));
    }
    result
}

impl Server {
    pub(super) fn handle_modern_request(
        &mut self,
        now: Now,
        request: &Pending,
        method: &str,
        params: Map<String, Value>,
    ) -> Result<Reply, Error> {
        check_envelope(&params)?;
        let reply = match method {
            "server/discover" => cacheable(
                json!({
                    "supportedVersions": [VERSION],
                    "capabilities": capabilities(),
                    "instructions": self.instructions(),
                }),
                Cache::Static,
            ),
            "tools/list" => cacheable(self.list_tools(request, &params)?, Cache::Static),
            "tools/call" => return self.call_tool(now, request, params),
            "resources/list" => cacheable(self.list_resources(&params)?, Cache::Live),
            "resources/templates/list" => cacheable(super::resources::templates(), Cache::Static),
            "resources/read" => cacheable(self.read_resource(now, &params, true)?, Cache::Live),
            "subscriptions/listen" => return self.listen(request, &params),
            _ => {
                return Err(Error {
                    code: ErrorCode::MethodNotFound,
                    message: format!(
                        "Method not found: `{method}` is not served in protocol version {VERSION}"
                    ),
                    data: Some(Value::from(method)),
                });
            }
        };
        Ok(Reply::Now(reply))
    }

    /// Stamps a modern result: `resultType` and the server's info in `_meta`.
    pub(super) fn modern_result(&self, mut result: Value) -> Value {
        if let Some(object) = result.as_object_mut() {
            object
                .entry("resultType")
                .or_insert_with(|| Value::from("complete"));
            let meta = object
                .entry("_meta")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(meta) = meta.as_object_mut() {
                meta.insert(META_SERVER_INFO.into(), self.server_info());
            }
        }
        result
    }

    /// The `_meta` of a modern result that has none of its own.
    pub(super) fn modern_meta(&self) -> Value {
        let mut meta = Map::new();
        meta.insert(META_SERVER_INFO.into(), self.server_info());
        Value::Object(meta)
    }

    fn server_info(&self) -> Value {
        json!({"name": self.config.server_name, "version": self.config.server_version})
    }

    /// `subscriptions/listen`: opens a stream of change notifications. Acknowledges what it
    /// honours (resource list changes and updates of task outputs; the tool list never
    /// changes), and is answered only when the client cancels it — with nothing.
    fn listen(&mut self, request: &Pending, params: &Map<String, Value>) -> Result<Reply, Error> {
        let Some(wanted) = params.get("notifications").and_then(Value::as_object) else {
            return Err(Error::invalid_params(
                "Invalid params: `notifications` (an object) is required",
            ));
        };
        let list_changed = wanted
            .get("resourcesListChanged")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let uris: Vec<&str> = wanted
            .get("resourceSubscriptions")
            .and_then(Value::as_array)
            .map(|uris| uris.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let listener = self.subscriptions.next_listener;
        self.subscriptions.next_listener += 1;
        let mut honoured_uris = Vec::new();
        for uri in uris {
            if let Some(key) = self.resource_key(uri) {
                self.subscriptions
                    .by_task
                    .entry(key)
                    .or_default()
                    .listeners
                    .insert(listener);
                honoured_uris.push(uri.to_owned());
            }
        }
        self.subscriptions.listeners.insert(
            listener,
            Listener {
                request: request.clone(),
                resources_list_changed: list_changed,
            },
        );
        let mut honoured = Map::new();
        if list_changed {
            honoured.insert("resourcesListChanged".into(), Value::Bool(true));
        }
        if !honoured_uris.is_empty() {
            honoured.insert("resourceSubscriptions".into(), json!(honoured_uris));
        }
        self.notify_listener(
            listener,
            "notifications/subscriptions/acknowledged",
            &json!({"notifications": honoured}),
        );
        Ok(Reply::Later)
    }

    /// Sends a notification on one listen stream, tagged with its id.
    pub(super) fn notify_listener(&mut self, listener: u64, method: &str, params: &Value) {
        let Some(Listener { request, .. }) = self.subscriptions.listeners.get(&listener) else {
            return;
        };
        let empty = Map::new();
        let params = params.as_object().unwrap_or(&empty);
        let text = jsonrpc::notification(
            method,
            &WithMetaId {
                params,
                meta: MetaId {
                    key: META_SUBSCRIPTION,
                    id: &request.id,
                },
            },
        );
        self.transmit(text);
    }

    /// At shutdown: every open listen stream is answered with an empty complete result, which
    /// ends it.
    pub(super) fn close_listeners(&mut self) {
        let listeners = core::mem::take(&mut self.subscriptions.listeners);
        for subscription in self.subscriptions.by_task.values_mut() {
            subscription.listeners.clear();
        }
        self.subscriptions.prune();
        for (_, listener) in listeners {
            self.respond(&listener.request, Ok(json!({})));
        }
    }

    /// A `notifications/cancelled` for a listen stream closes it (no response).
    pub(super) fn close_listener(&mut self, id: &RequestId) -> bool {
        let Some(key) = self
            .subscriptions
            .listeners
            .iter()
            .find(|(_, l)| l.request.id == *id)
            .map(|(k, _)| *k)
        else {
            return false;
        };
        self.subscriptions.listeners.remove(&key);
        for subscription in self.subscriptions.by_task.values_mut() {
            subscription.listeners.remove(&key);
        }
        self.subscriptions.prune();
        true
    }
}

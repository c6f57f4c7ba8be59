"""proc-mcp driven by the official MCP Python SDK (mcp==2.3.0, pinned in requirements.txt).

Run by tests/interop.rs:  python_client.py SERVER_BIN {session|auto} {smoke|devserver|notify}

- session: `ClientSession` over `stdio_client`, the initialize handshake (2025-11-25);
- auto:    `mcp.Client(..., mode="auto")`, which probes `server/discover` first.

Scenarios:
- smoke:     the issue-2 tools (start/status/logs/stop/list/remove) by id and by name;
- devserver: a real dev server started with `wait_for`, fetched from, `wait`ed on, read
             incrementally with `logs` + `since`, stopped;
- notify:    `notify_on_exit` seen by the logging callback, the message handler and a
             `process/exit` binding; a subscribed `proc://<id>/output` resource (session only).

Prints what it does; the last line is `PASS <mode> <scenario>`. Any failure raises, so the
exit status is non-zero and the traceback tells what went wrong.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import tempfile
import time
import urllib.request
import warnings
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import mcp
import mcp.types as types
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.extension import ClientExtension, NotificationBinding
from mcp.types import PaginatedRequestParams
from pydantic import BaseModel, ConfigDict

# The SDK marks the handshake-era APIs (resources/subscribe, setLevel) deprecated; they are
# exactly what a 2025-era client uses, so keep the output readable.
warnings.simplefilter("ignore", DeprecationWarning)
warnings.filterwarnings("ignore", category=mcp.MCPDeprecationWarning)

EVENT_TIMEOUT = 30.0  # seconds for anything the server should do "soon" (2-core CI, debug build)
CONNECT_BOUND = 3.0  # auto mode must not sit out the SDK's 10 s discover timeout

SERVER = sys.argv[1]
MODE = sys.argv[2]
SCENARIO = sys.argv[3]


def log(*parts: Any) -> None:
    print(*parts, flush=True)


def check(cond: bool, what: str, value: Any = None) -> None:
    if not cond:
        shown = "" if value is None else f": {json.dumps(value, default=str)[:2000]}"
        raise AssertionError(f"{what}{shown}")


class ProcessExit(BaseModel):
    """params of the `process/exit` notification (for clients written for process-mcp)."""

    model_config = ConfigDict(extra="allow")
    id: str
    status: Any = None
    exitCode: int | None = None
    timestamp: Any = None


class Events:
    """Everything the server sent on its own, with an event to await new arrivals."""

    def __init__(self) -> None:
        self.logs: list[types.LoggingMessageNotificationParams] = []
        self.messages: list[Any] = []
        self.exits: list[ProcessExit] = []
        self.changed = asyncio.Event()

    async def on_log(self, params: types.LoggingMessageNotificationParams) -> None:
        self.logs.append(params)
        self.changed.set()

    async def on_message(self, message: Any) -> None:
        self.messages.append(message)
        self.changed.set()

    async def on_exit(self, params: ProcessExit) -> None:
        self.exits.append(params)
        self.changed.set()

    async def until(self, cond: Callable[[], Any], what: str) -> Any:
        """Waits (event-driven, bounded) until `cond()` is truthy; returns its value."""
        deadline = time.monotonic() + EVENT_TIMEOUT
        while not (found := cond()):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"timed out waiting for {what}; logs={self.logs!r} "
                    f"messages={self.messages!r} exits={self.exits!r}"
                )
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except asyncio.TimeoutError:
                pass
        return found


class ExitBinding(ClientExtension):
    """Observes `process/exit` on a `mcp.Client` (an extension is how `Client` binds one)."""

    identifier = "io.github.proc-mcp/process-exit"

    def __init__(self, events: Events) -> None:
        self.events = events

    def notifications(self) -> list[NotificationBinding[Any]]:
        return [exit_binding(self.events)]


def exit_binding(events: Events) -> NotificationBinding[ProcessExit]:
    return NotificationBinding(method="process/exit", params_type=ProcessExit, handler=events.on_exit)


class Conn:
    """The few calls the scenarios need, over either a `ClientSession` or a `mcp.Client`."""

    def __init__(self, api: Any, session: ClientSession, version: str, connect_s: float) -> None:
        self.api = api
        self.session = session
        self.version = version
        self.connect_s = connect_s

    async def list_tools(self) -> list[types.Tool]:
        tools: list[types.Tool] = []
        cursor = None
        for _ in range(100):
            if isinstance(self.api, ClientSession):
                page = await self.api.list_tools(params=PaginatedRequestParams(cursor=cursor))
            else:
                page = await self.api.list_tools(cursor=cursor, cache_mode="bypass")
            tools.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                return tools
        raise AssertionError("tools/list never ended (100 pages)")

    async def call_result(self, name: str, args: dict[str, Any], **kwargs: Any) -> types.CallToolResult:
        # The SDK checks structuredContent against the tool's outputSchema here.
        return await self.api.call_tool(name, args, read_timeout_seconds=60, **kwargs)

    async def call(self, name: str, args: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        result = await self.call_result(name, args, **kwargs)
        text = " ".join(c.text for c in result.content if isinstance(c, types.TextContent))
        check(not result.is_error, f"{name} {args} failed: {text}")
        check(result.structured_content is not None, f"{name}: no structuredContent")
        check(text.strip() != "", f"{name}: no text block")
        return result.structured_content


@asynccontextmanager
async def connect(events: Events | None = None):
    params = StdioServerParameters(command=SERVER, args=[])
    handlers: dict[str, Any] = {}
    if events is not None:
        handlers = {"logging_callback": events.on_log, "message_handler": events.on_message}
    t0 = time.monotonic()
    if MODE == "session":
        bindings = [exit_binding(events)] if events is not None else None
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write, notification_bindings=bindings, **handlers) as session:
                init = await session.initialize()
                conn = Conn(session, session, init.protocol_version, time.monotonic() - t0)
                yield conn
    else:
        extensions = [ExitBinding(events)] if events is not None else None
        async with mcp.Client(params, mode="auto", extensions=extensions, **handlers) as client:
            conn = Conn(client, client.session, client.protocol_version, time.monotonic() - t0)
            yield conn
    log(f"closed the session ({MODE})")


def texts(logs: dict[str, Any]) -> list[str]:
    return [line["text"] for line in logs["lines"]]


def http_get(port: int, path: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
    with opener.open(f"http://127.0.0.1:{port}{path}", timeout=15) as response:
        check(response.status == 200, f"GET {path}: status {response.status}")
        return response.read().decode()


# ------------------------------------------------------------------------------------------
# Scenarios
# ------------------------------------------------------------------------------------------


async def smoke(conn: Conn) -> None:
    names = {tool.name for tool in await conn.list_tools()}
    check({"start", "status", "logs", "stop", "list", "remove"} <= names, "tools/list", sorted(names))

    name = f"py-smoke-{MODE}"
    task = await conn.call("start", {"command": "printf 'one\\ntwo\\n'; exec sleep 60", "name": name})
    task_id = task["id"]
    check(re.fullmatch(r"[A-Za-z0-9_-]{6}", task_id) is not None, "id is a 6-char nanoid", task)
    check(task["name"] == name and task["state"] in ("starting", "running"), "start result", task)

    # The issue-2 toolset has no `wait`: poll `logs` (bounded) until both lines are there.
    deadline = time.monotonic() + EVENT_TIMEOUT
    while texts(logs := await conn.call("logs", {"id": task_id})) != ["one", "two"]:
        check(time.monotonic() < deadline, "the two lines never showed up", logs)
        await asyncio.sleep(0.05)
    check(logs["next_cursor"] == 2, "next_cursor after two lines", logs)

    status = await conn.call("status", {"id": name})
    check(status["id"] == task_id and status["state"] == "running", "status by name", status)
    listed = await conn.call("list", {})
    check(task_id in [t["id"] for t in listed["tasks"]], "list has the task", listed)

    stopped = await conn.call("stop", {"id": task_id})
    check(stopped["state"] == "exited" and stopped["stopped"] is True, "stop", stopped)
    removed = await conn.call("remove", {"id": task_id})
    check(removed == {"id": task_id, "removed": True}, "remove", removed)
    listed = await conn.call("list", {})
    check(task_id not in [t["id"] for t in listed["tasks"]], "list after remove", listed)


async def devserver(conn: Conn) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "hello.txt").write_text("hello from the python client\n")
        Path(tmp, "second.txt").write_text("second file\n")

        task = await conn.call(
            "start",
            {
                "command": "python3 -m http.server 0 --bind 127.0.0.1",
                "cwd": tmp,
                "wait_for": r"Serving HTTP on 127\.0\.0\.1 port (\d+)",
                "wait_timeout_ms": 30000,
            },
        )
        task_id, ready = task["id"], task.get("ready")
        check(task["state"] == "running", "start state", task)
        check(ready is not None and ready["matched"] is True and ready["reason"] == "matched", "ready", task)
        port = int(re.search(r"port (\d+)", ready["line"]).group(1))
        log(f"dev server {task_id} ready on port {port}")

        body = await asyncio.to_thread(http_get, port, "/hello.txt")
        check(body == "hello from the python client\n", "fetched body", body)
        waited = await conn.call("wait", {"id": task_id, "pattern": r"GET /hello\.txt", "timeout_ms": 30000})
        check(waited["reason"] == "matched", "wait reason", waited)
        check("GET /hello.txt" in waited["line"]["text"], "wait line", waited)

        first = await conn.call("logs", {"id": task_id})
        check(any("Serving HTTP on 127.0.0.1 port" in t for t in texts(first)), "first logs: ready line", first)
        check(any("GET /hello.txt" in t for t in texts(first)), "first logs: request line", first)
        cursor = first["next_cursor"]

        await asyncio.to_thread(http_get, port, "/second.txt")
        waited = await conn.call(
            "wait", {"id": task_id, "pattern": r"GET /second\.txt", "since": cursor, "timeout_ms": 30000}
        )
        check(waited["reason"] == "matched" and waited["line"]["n"] >= cursor, "second wait", waited)
        new = await conn.call("logs", {"id": task_id, "since": cursor})
        check(new["lines"] and all(line["n"] >= cursor for line in new["lines"]), "only new lines", new)
        check(any("GET /second.txt" in t for t in texts(new)), "new request line", new)
        check(not any("Serving HTTP" in t or "GET /hello.txt" in t for t in texts(new)), "no old lines", new)
        check(new["next_cursor"] > cursor, "the cursor moves on", new)
        rest = await conn.call("logs", {"id": task_id, "since": new["next_cursor"]})
        check(rest["lines"] == [] and rest["next_cursor"] == new["next_cursor"], "nothing newer", rest)

        # A wait that runs out, reporting progress to the SDK's progress_callback meanwhile.
        progress: list[float] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append(value)

        args = {"id": task_id, "pattern": "never printed", "since": rest["next_cursor"], "timeout_ms": 2500}
        waited = await conn.call("wait", args, progress_callback=on_progress)
        check(waited["reason"] == "timeout" and "line" not in waited, "wait timeout", waited)
        check(len(progress) >= 1, "progress_callback was called", progress)
        check(all(a < b for a, b in zip(progress, progress[1:])), "progress increases", progress)

        stopped = await conn.call("stop", {"id": task_id})
        check(stopped["state"] == "exited" and stopped["stopped"] is True, "stop", stopped)


async def notify(conn: Conn, events: Events) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        gate = Path(tmp, "go")
        ok = await conn.call(
            "start",
            {
                "command": "while [ ! -e go ]; do sleep 0.05; done; echo done-ok",
                "cwd": tmp,
                "name": "py-notify-ok",
                "notify_on_exit": True,
            },
        )
        uri = f"proc://{ok['id']}/output"
        listed = await conn.api.list_resources(**({} if MODE == "session" else {"cache_mode": "bypass"}))
        check(uri in [str(r.uri) for r in listed.resources], "resources/list has the task", listed.model_dump())
        if MODE == "session":
            await conn.session.subscribe_resource(uri)
        gate.touch()

        failing = await conn.call("start", {"command": "exit 3", "notify_on_exit": True})

        def exit_log(task_id: str):
            return next(
                (m for m in events.logs if isinstance(m.data, dict) and m.data.get("id") == task_id), None
            )

        for task_id, code, level in ((ok["id"], 0, "info"), (failing["id"], 3, "warning")):
            message = await events.until(lambda: exit_log(task_id), f"notifications/message for {task_id}")
            data = message.data
            check(message.level == level and message.logger == "proc-mcp", "level and logger", message.model_dump())
            check(data["event"] == "exit" and data["state"] == "exited", "exit data", data)
            check(data["exit_code"] == code and data["signal"] is None, "exit code", data)
            check(isinstance(data["runtime_ms"], int) and "name" in data, "runtime_ms and name", data)
            exit_note = await events.until(
                lambda: next((e for e in events.exits if e.id == task_id), None), f"process/exit for {task_id}"
            )
            check(exit_note.exitCode == code and exit_note.timestamp is not None, "process/exit", exit_note.model_dump())
        check(exit_log(ok["id"]).data["name"] == "py-notify-ok", "name in the exit data")
        # message_handler sees every notification the SDK knows, logging ones included.
        check(
            any(isinstance(m, types.LoggingMessageNotification) for m in events.messages),
            "message_handler saw notifications/message",
            [repr(m) for m in events.messages],
        )

        if MODE == "session":
            await events.until(
                lambda: any(
                    isinstance(m, types.ResourceUpdatedNotification) and m.params.uri == uri
                    for m in events.messages
                ),
                f"notifications/resources/updated for {uri}",
            )
            read = await conn.session.read_resource(uri)
            text = "".join(getattr(c, "text", "") for c in read.contents)
            check("done-ok" in text, "resources/read has the output", read.model_dump())


async def main() -> None:
    events = Events() if SCENARIO == "notify" else None
    async with connect(events) as conn:
        log(f"connected: mode={MODE} protocol={conn.version} in {conn.connect_s:.2f}s")
        if MODE == "session":
            check(conn.version == "2025-11-25", "handshake version", conn.version)
        else:
            check(conn.connect_s < CONNECT_BOUND, f"auto mode connected within {CONNECT_BOUND}s", conn.connect_s)
            if SCENARIO != "smoke":
                check(conn.version == "2026-07-28", "auto mode lands on the stateless era", conn.version)
        if SCENARIO == "smoke":
            await smoke(conn)
        elif SCENARIO == "devserver":
            await devserver(conn)
        elif SCENARIO == "notify":
            await notify(conn, events)
        else:
            raise SystemExit(f"unknown scenario {SCENARIO}")
    log(f"PASS {MODE} {SCENARIO}")


def leaf(exc: BaseException) -> BaseException:
    """The first real error inside anyio's exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except BaseException as exc:  # report the cause first, then the whole traceback
        log(f"FAIL {MODE} {SCENARIO}: {type(leaf(exc)).__name__}: {leaf(exc)}")
        raise

"""MCP tool servers for agents: ``mcp_server(name, {...})``.

A notebook declares a server (a stdio command with its args and env, or an
HTTP URL); its tools become agent tools named ``NAME_TOOL`` (the reference
Tactus prefixes them with the server's name the same way). An agent lists
them all with ``toolsets = {"NAME"}``, or one with ``"NAME_TOOL"``.

The server is started by the kernel's Python through pydantic-ai's MCP
client (``pydantic_ai.mcp.MCPToolset``), never by Lua, and only when a live
turn first asks for its tools: a replayed turn returns its recorded result
without an agent run, so it needs neither the server nor the network. A
started server is held open by a task of its own (the MCP client's
contexts must be left by the task that entered them) until ``%tactus
reset``, kernel shutdown, or a changed declaration stops it.

Every call goes through :class:`_ServerTools`, which records it where a Lua
tool's call goes (the turn's ``tool_calls`` and the procedure's
``Tool.*``); the call and its result are in the turn's recorded pydantic-ai
messages as well. A server that does not start, or a call that fails, is one
``AgentError`` naming the server, its command or URL, and the end of what
it wrote on stderr.

This module is imported when the kernel starts (declaring a server must
cost nothing): pydantic-ai and the MCP client are imported at first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import shlex
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tactus_kernel.engine.errors import ParamError
from tactus_kernel.features.agents.tools import ToolSpec

if TYPE_CHECKING:
    from tactus_kernel.engine.runtime import Runtime

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
KEYS = ("command", "args", "env", "cwd", "url", "headers", "timeout", "read_timeout")
DEFAULT_TIMEOUT = 30.0  # seconds for the server to start and answer MCP's initialize
STDERR_LINES = 12  # lines at the end of a server's stderr quoted in an error
CONFIG = Path(".tactus") / "config.yml"  # where the reference Tactus lists its mcp_servers


class McpError(Exception):
    """A server that could not start, or a call that failed (the message says which)."""


@dataclass(frozen=True)
class ServerSpec:
    """A declared server: how to reach it."""

    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None
    url: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    read_timeout: float | None = None

    @property
    def where(self) -> str:
        """How the server is reached, for messages: its command line or URL."""
        if self.url is not None:
            return f"url {self.url}"
        return "command: " + shlex.join([self.command or "", *self.args])


@dataclass(frozen=True)
class McpRef(ToolSpec):
    """An MCP server's tools in an agent's tool list: all of them (``only``
    None) or the named ones. It stands in the list where a Lua tool's
    declaration does; the pydantic-ai Agent gets a toolset for it instead of
    a function tool. Its hash for the request digest is the server's name
    and the tools taken, not the server's tool list: working that out
    would need the server, and a replay must not start it."""

    server: str = ""
    only: tuple[str, ...] | None = None

    def for_hash(self) -> dict[str, Any]:
        return {"mcp": self.server, "tools": list(self.only) if self.only is not None else "*"}


def parse_server(name: str, raw: Any, root: Path) -> ServerSpec:
    """Validate a declaration; raises ParamError naming the server and the field."""
    where = f"mcp_server '{name}'"
    if not NAME.match(name):
        raise ParamError(f'mcp_server: the name must be an identifier such as "files", got {name!r}')
    if not isinstance(raw, dict):
        raise ParamError(f"{where}: expected a table {{command = ..., args = {{...}}}} or {{url = ...}}")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise ParamError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(KEYS)})")
    command, url = raw.get("command"), raw.get("url")
    if (command is None) == (url is None):
        raise ParamError(f"{where}: give either command = ... (a stdio server) or url = ... (an HTTP server)")
    timeout = _seconds(raw.get("timeout", DEFAULT_TIMEOUT), f"{where}: timeout")
    read = raw.get("read_timeout")
    read_timeout = None if read is None else _seconds(read, f"{where}: read_timeout")
    if url is not None:
        if not isinstance(url, str) or not re.match(r"^https?://", url):
            raise ParamError(f"{where}: url must be an http:// or https:// address, got {url!r}")
        for key in ("args", "env", "cwd"):
            if key in raw:
                raise ParamError(f"{where}: {key} is for a command; a url server takes headers and timeouts")
        return ServerSpec(
            name, url=url, headers=_pairs(raw.get("headers"), f"{where}: headers"), timeout=timeout,
            read_timeout=read_timeout,
        )  # fmt: skip
    if not isinstance(command, str) or not command:
        raise ParamError(f'{where}: command must be a program name such as "python", got {command!r}')
    if "headers" in raw:
        raise ParamError(f"{where}: headers are for a url server")
    args = raw.get("args", [])
    if args == {}:
        args = []
    if not isinstance(args, list) or not all(isinstance(a, (str, int, float)) for a in args):
        raise ParamError(f'{where}: args must be a list of strings such as {{"server.py"}}')
    cwd = raw.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise ParamError(f"{where}: cwd must be a folder path")
    folder = str((root / cwd).resolve()) if cwd else str(root)
    return ServerSpec(
        name,
        command=command,
        args=tuple(str(a) for a in args),
        env=_pairs(raw.get("env"), f"{where}: env"),
        cwd=folder,
        timeout=timeout,
        read_timeout=read_timeout,
    )


def _seconds(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ParamError(f"{where} must be a positive number of seconds, got {value!r}")
    return float(value)


def _pairs(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if value is None or value == [] or value == {}:
        return ()
    if not isinstance(value, dict) or not all(isinstance(v, (str, int, float)) for v in value.values()):
        raise ParamError(f'{where} must be a table of NAME = "value"')
    return tuple(sorted((str(k), str(v)) for k, v in value.items()))


def _expand(value: str) -> str:
    """``${VAR}`` in an env value or header: the kernel's environment variable (the reference's form)."""
    return re.sub(r"\$\{(\w+)\}", lambda m: os.environ.get(m.group(1), ""), value)


@dataclass
class _Running:
    """A started server: the task that holds its MCP session open."""

    loop: asyncio.AbstractEventLoop
    toolset: Any  # pydantic_ai.mcp.MCPToolset
    stderr: Path | None
    ready: asyncio.Future[None]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    stopped: threading.Event = field(default_factory=threading.Event)
    task: asyncio.Task[None] | None = None


class McpServers:
    """The MCP servers declared in one runtime, started on demand."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.servers: dict[str, ServerSpec] = {}
        self.aliases: dict[str, tuple[str, tuple[str, ...] | None]] = {}  # toolset name -> (server, tools)
        self.refs: dict[str, McpRef | None] = {}  # looked-up names, so a name is one object while unchanged
        self.running: dict[str, _Running] = {}
        self.starts = 0  # servers started (tests read it)
        self.config_read = False  # .tactus/config.yml's mcp_servers (the reference's place for them)
        runtime.closers.append(self.stop_all)  # %tactus reset and kernel shutdown stop the servers

    # ------------------------------------------------------------ declare
    def declare(self, name: str, raw: Any) -> bool:
        """Declare (or redeclare) a server, or a toolset of a declared server's
        tools (``{server = "files", tools = {...}}``). Returns whether anything
        changed: plans and Agents made with the old declaration are then stale."""
        if isinstance(raw, dict) and "server" in raw:
            alias = self._alias(name, raw)
            if self.aliases.get(name) == alias:
                return False
            self.aliases[name] = alias
        else:
            spec = parse_server(name, raw, self.runtime.root)
            if self.servers.get(name) == spec:
                return False
            self.servers[name] = spec
            self._stop(name)  # a changed declaration: the next live turn starts the new one
        self.refs.clear()
        return True

    def _alias(self, name: str, raw: dict[str, Any]) -> tuple[str, tuple[str, ...] | None]:
        where = f"toolset '{name}'"
        unknown = sorted(set(raw) - {"server", "tools"})
        if unknown:
            raise ParamError(f"{where}: unknown key '{unknown[0]}' for an MCP toolset (known: server, tools)")
        server = raw["server"]
        if not self.config_read:
            self.read_config()
        if not isinstance(server, str) or server not in self.servers:
            known = ", ".join(sorted(self.servers)) or "none yet"
            raise ParamError(f"{where}: unknown MCP server {server!r} (declared: {known}; declare it with mcp_server)")
        tools = raw.get("tools")
        if tools is None:
            return server, None
        if tools in ([], {}) or not isinstance(tools, list) or not all(isinstance(t, str) for t in tools):
            raise ParamError(f'{where}: tools must be a list of the server\'s tool names such as {{"read_file"}}')
        return server, tuple(tools)

    def ref(self, name: str) -> McpRef | None:
        """What an agent's tool or toolset name means here: a server (all its
        tools), a toolset of one, or one tool ``SERVER_TOOL``; None if none.
        Worked out from the declarations alone, without starting anything."""
        if name in self.refs:
            return self.refs[name]
        if not self.config_read:
            self.read_config()
        found: McpRef | None = None
        if name in self.servers:
            found = self._make_ref(name, name, None)
        elif name in self.aliases:
            server, only = self.aliases[name]
            found = self._make_ref(name, server, only)
        else:
            # the longest server name that prefixes it: "files_read" -> files, tool read
            for server in sorted(self.servers, key=len, reverse=True):
                if name.startswith(server + "_") and len(name) > len(server) + 1:
                    found = self._make_ref(name, server, (name[len(server) + 1 :],))
                    break
        self.refs[name] = found
        return found

    def read_config(self) -> None:
        """The servers of ``.tactus/config.yml`` in the notebook's folder
        (its ``mcp_servers`` section, as the reference Tactus reads it), read
        when a name is first looked up. A server the notebook declares itself
        wins over the file's."""
        self.config_read = True
        path = self.runtime.root / CONFIG
        if not path.is_file():
            return
        import yaml

        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ParamError(f"{CONFIG}: cannot read it: {exc}") from None
        servers = config.get("mcp_servers") if isinstance(config, dict) else None
        if servers is None:
            return
        if not isinstance(servers, dict):
            raise ParamError(f"{CONFIG}: mcp_servers must map server names to {{command, args, env}}")
        for name, raw in servers.items():
            if str(name) not in self.servers:
                try:
                    self.servers[str(name)] = parse_server(str(name), raw, self.runtime.root)
                except ParamError as exc:
                    raise ParamError(f"{CONFIG}: {exc}") from None
        self.refs.clear()

    def _make_ref(self, name: str, server: str, only: tuple[str, ...] | None) -> McpRef:
        return McpRef(name, f"tools of MCP server '{server}'", {}, {}, server=server, only=only)

    def names(self) -> list[str]:
        return sorted({*self.servers, *self.aliases})

    # ----------------------------------------------------------- toolsets
    def toolsets(self, tools: list[ToolSpec]) -> list[Any]:
        """pydantic-ai toolsets for the MCP entries of a turn's tool list, one per server."""
        wanted: dict[str, set[str] | None] = {}
        for t in tools:
            if isinstance(t, McpRef):
                have = wanted.get(t.server, set())
                wanted[t.server] = None if have is None or t.only is None else have | set(t.only)
        if not wanted:
            return []  # no MCP tools: nothing of the MCP client is imported
        make = _server_tools_class()
        return [make(self, server, None if only is None else frozenset(only)) for server, only in wanted.items()]

    # ------------------------------------------------------------- start
    async def session(self, server: str, agent: str) -> Any:
        """The server's open ``MCPToolset``, started now if it is not running."""
        running = self.running.get(server)
        loop = asyncio.get_running_loop()
        if running is not None and (running.loop is not loop or (running.task is not None and running.task.done())):
            # started on an event loop that has ended (each in-process cell runs its
            # own), or it stopped: start it again
            _forget(self.running.pop(server))
            running = None
        if running is None:
            running = self._start(server)
        try:
            await asyncio.shield(running.ready)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure to start is one clear error
            spec = self.servers[server]
            reason = _reason(exc)
            if _timed_out(exc):
                reason = f"no answer to MCP's initialize within {spec.timeout:g} s (its timeout; {reason})"
            message = f"agent '{agent}': MCP server '{server}' ({spec.where}) failed to start: {reason}"
            message += self._stderr(running)
            if self.running.get(server) is running:
                _forget(self.running.pop(server))
            raise McpError(message) from None
        return running.toolset

    def _start(self, name: str) -> _Running:
        from pydantic_ai.mcp import MCPToolset

        spec = self.servers[name]
        stderr: Path | None = None
        if spec.url is not None:
            client: Any = spec.url
            options: dict[str, Any] = {"headers": {k: _expand(v) for k, v in spec.headers} or None}
        else:
            from fastmcp.client.transports import StdioTransport

            fd, path = tempfile.mkstemp(prefix=f"tactus-mcp-{name}-", suffix=".stderr")
            os.close(fd)
            stderr = Path(path)
            env = {k: _expand(v) for k, v in spec.env} or None  # with the MCP SDK's safe defaults (PATH, HOME, ...)
            client = StdioTransport(
                spec.command or "", list(spec.args), env=env, cwd=spec.cwd, keep_alive=False, log_file=stderr
            )
            options = {}
        if spec.read_timeout is not None:
            options["read_timeout"] = spec.read_timeout
        # tool_error_behavior="error": a failing tool is the turn's AgentError (see _ServerTools.call_tool)
        toolset = MCPToolset(
            client, id=f"mcp-{name}", tool_error_behavior="error", init_timeout=spec.timeout, **options
        )
        loop = asyncio.get_running_loop()
        running = _Running(loop=loop, toolset=toolset, stderr=stderr, ready=loop.create_future())
        running.task = loop.create_task(self._hold(running), name=f"tactus-mcp-{name}")
        self.running[name] = running
        self.starts += 1
        return running

    @staticmethod
    async def _hold(running: _Running) -> None:
        """Enter the server's session, and leave it when told to stop (in this task, as the client requires)."""
        try:
            async with running.toolset:
                running.ready.set_result(None)
                await running.stop.wait()
        except BaseException as exc:
            if not running.ready.done():
                if isinstance(exc, asyncio.CancelledError):
                    running.ready.cancel()
                else:
                    running.ready.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            running.stopped.set()

    def _stderr(self, running: _Running | None) -> str:
        """The end of what the server wrote on stderr, for an error message."""
        if running is None or running.stderr is None:
            return ""
        try:
            text = running.stderr.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            return ""
        if not text:
            return " (the server wrote nothing on stderr)"
        lines = [line.rstrip() for line in text.splitlines()]
        tail = "\n".join(lines[-STDERR_LINES:])[-2000:]
        return f"\nthe server's stderr ends with:\n{tail}"

    def failure(self, server: str, agent: str, tool: str, exc: BaseException) -> McpError:
        """A failed tool call, as one error naming the server and what it said."""
        return McpError(
            f"agent '{agent}': MCP server '{server}' ({self.servers[server].where}): tool '{tool}' failed: "
            f"{_reason(exc)}{self._stderr(self.running.get(server))}"
        )

    # -------------------------------------------------------------- stop
    def _stop(self, name: str) -> threading.Event | None:
        running = self.running.pop(name, None)
        if running is None:
            return None
        try:
            running.loop.call_soon_threadsafe(running.stop.set)
        except RuntimeError:  # its event loop has ended, and ending it cancelled the task: already stopped
            running.stopped.set()
        _forget(running)
        return running.stopped

    def restart(self, name: str) -> None:
        """Stop a server whose session failed (it may have exited): the next live turn starts it afresh."""
        self._stop(name)

    def stop_all(self, wait: float = 0.0) -> None:
        """Stop every started server (``%tactus reset``, kernel shutdown).
        With ``wait``, block up to that many seconds for them to exit (call it
        from a thread other than the event loop's, which must run meanwhile)."""
        events = [e for e in (self._stop(name) for name in list(self.running)) if e is not None]
        for event in events:
            event.wait(wait)


def _forget(running: _Running) -> None:
    """Remove a server's stderr file (a process still writing keeps its open file)."""
    if running.stderr is not None:
        with contextlib.suppress(OSError):
            running.stderr.unlink()


def _timed_out(exc: BaseException | None) -> bool:
    """Whether a timeout is among an exception's causes (the MCP client wraps it)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, TimeoutError):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _reason(exc: BaseException) -> str:
    """The innermost, most telling message of an exception (groups unwrapped)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip()
    if isinstance(exc, TimeoutError) or not text:
        return f"{type(exc).__name__}{': ' + text if text else ''}"
    return text if isinstance(exc, McpError) else f"{type(exc).__name__}: {text}"


@functools.cache
def _server_tools_class() -> type:
    """The pydantic-ai toolset class (made at first use: pydantic-ai is imported then)."""
    from fastmcp.exceptions import ToolError
    from pydantic_ai.toolsets import AbstractToolset

    from tactus_kernel.engine.runtime import BridgeError
    from tactus_kernel.engine.values import NotRecordable, to_json, to_lua

    class _ServerTools(AbstractToolset[Any]):
        """One server's tools for an Agent: named ``SERVER_TOOL``, run one at a
        time (the model's order is the record's order), each call recorded.

        Entering it starts nothing: the server starts when a live turn first
        lists its tools, and stays up across turns and runs."""

        def __init__(self, servers: McpServers, server: str, only: frozenset[str] | None) -> None:
            self.servers, self.server, self.only = servers, server, only
            self.prefix = server + "_"

        @property
        def id(self) -> str | None:
            return f"mcp-{self.server}"

        @property
        def label(self) -> str:
            return f"MCP server '{self.server}'"

        async def __aenter__(self) -> Any:
            return self

        async def __aexit__(self, *args: Any) -> bool | None:
            return None

        async def _session(self, ctx: Any) -> Any:
            try:
                return await self.servers.session(self.server, ctx.deps.agent)
            except McpError as exc:
                raise BridgeError(f"AgentError: {exc}") from None

        async def get_tools(self, ctx: Any) -> dict[str, Any]:
            session = await self._session(ctx)
            try:
                tools = await session.get_tools(ctx)
            except (asyncio.CancelledError, BridgeError):
                raise
            except Exception as exc:  # noqa: BLE001 - a server that cannot list its tools is one clear error
                raise BridgeError(
                    f"AgentError: {self.servers.failure(self.server, ctx.deps.agent, 'tools/list', exc)}"
                ) from None
            if self.only is not None:
                missing = sorted(self.only - set(tools))
                if missing:
                    known = ", ".join(self.prefix + t for t in sorted(tools)) or "none"
                    raise BridgeError(
                        f"AgentError: agent '{ctx.deps.agent}': MCP server '{self.server}' has no tool "
                        f"'{missing[0]}' (its tools: {known})"
                    )
            return {
                self.prefix + name: replace(
                    tool, toolset=self, tool_def=replace(tool.tool_def, name=self.prefix + name, sequential=True)
                )
                for name, tool in tools.items()
                if self.only is None or name in self.only
            }

        async def call_tool(self, name: str, tool_args: dict[str, Any], ctx: Any, tool: Any) -> Any:
            session = await self._session(ctx)
            original = name.removeprefix(self.prefix)
            inner = replace(tool, toolset=session, tool_def=replace(tool.tool_def, name=original))
            try:
                result = await session.call_tool(original, tool_args, replace(ctx, tool_name=original), inner)
            except (asyncio.CancelledError, BridgeError):
                raise
            except Exception as exc:  # noqa: BLE001 - a failing tool is one clear, catchable error
                error = self.servers.failure(self.server, ctx.deps.agent, name, exc)
                if not isinstance(exc, ToolError):  # not the tool's own error: the server may be gone
                    self.servers.restart(self.server)
                raise BridgeError(f"AgentError: {error}") from None
            self._record(ctx.deps, name, tool_args, result)
            return result

        def _record(self, deps: Any, name: str, args: dict[str, Any], result: Any) -> None:
            """Where a Lua tool's call goes: the turn's tool_calls (the record,
            re-applied on replay) and the procedure's Tool.called / last_call."""
            try:
                value = to_json(result, f"the result of tool '{name}'")
            except NotRecordable:
                value = str(result)  # an image or other content: its text form
            deps.calls.append({"name": name, "args": args, "result": value})
            runtime = self.servers.runtime
            lua = runtime.lua
            runtime.K.record_tool_call_in(deps.lua_ctx, name, to_lua(lua, args), to_lua(lua, value))

    return _ServerTools

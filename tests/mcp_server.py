"""A small stdio MCP server for the tests of ``mcp_server(...)``.

Run as ``python mcp_server.py`` by the kernel (the MCP client in
pydantic-ai starts it as a child process and talks JSON-RPC over its
stdin/stdout). Tools: ``add(a, b)``, ``lookup(key)``, ``fail(message)``
(always errors) and ``crash()`` (the process exits). Each call appends one JSON line ``{"tool", "args"}`` to
the file named by ``MCP_CALL_LOG`` (when set), so a test can count the
calls a run made: a replayed run must make none. ``MCP_PID_FILE`` (when
set) receives the server's process id at start, so a test can check the
process is gone after a reset or a shutdown. ``--http PORT`` serves
streamable HTTP on 127.0.0.1:PORT (path ``/mcp``) instead of stdio.
"""

from __future__ import annotations

import json
import os
import sys
import time

try:  # the MCP SDK 2.x names; 1.x called the server FastMCP
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
except ImportError:  # pragma: no cover - MCP SDK 1.x
    from mcp.server.fastmcp import FastMCP as MCPServer
    from mcp.server.fastmcp.exceptions import ToolError

server = MCPServer("tactus-test")
TABLE = {"alpha": "first letter", "omega": "last letter"}


def _log(tool: str, **args: object) -> None:
    path = os.environ.get("MCP_CALL_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"tool": tool, "args": args}) + "\n")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    _log("add", a=a, b=b)
    return a + b


@server.tool()
def lookup(key: str) -> str:
    """Look a key up in a small table."""
    _log("lookup", key=key)
    return TABLE.get(key, f"no entry for {key}")


@server.tool()
def fail(message: str) -> str:
    """Always fails with the given message (and says so on stderr)."""
    _log("fail", message=message)
    print(f"fail tool: {message}", file=sys.stderr, flush=True)
    raise ToolError(message)  # the error a server reports to its client


@server.tool()
def crash() -> str:
    """Ends the server process at once, as a crash would."""
    _log("crash")
    print("crashing on purpose", file=sys.stderr, flush=True)
    os._exit(1)


if __name__ == "__main__":
    pid_file = os.environ.get("MCP_PID_FILE")
    if pid_file:
        with open(pid_file, "w", encoding="utf-8") as f:
            f.write(str(os.getpid()))
    if os.environ.get("MCP_SLEEP_AT_START"):  # a server that is slow to answer
        time.sleep(float(os.environ["MCP_SLEEP_AT_START"]))
    if os.environ.get("MCP_CRASH_AT_START"):
        print(f"cannot start: {os.environ['MCP_CRASH_AT_START']}", file=sys.stderr, flush=True)
        sys.exit(3)
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")

"""MCP tool servers for agents: ``mcp_server(name, {...})``.

The server is tests/mcp_server.py, a real stdio MCP server made with the
``mcp`` package, started by the kernel through pydantic-ai's MCP client.
It logs every call it serves to a file, so a test counts the calls a run
made: a replayed run must make none, and must not even start the server
(its script is removed before the replay). Agents run offline: scripted
mock responses say which MCP tool the "model" calls, with which args.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydantic_ai.models
import pytest
from replay_helpers import Cell, alive, load, record_notebook, run_cli, wait_gone

from tactus_kernel.features.agents.effects import AgentHub
from tactus_kernel.testing import KernelDriver

SERVER = Path(__file__).parent / "mcp_server.py"


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No model is ever reached; ``python`` is this interpreter (the one with ``mcp``)."""
    for var in ("TACTUS_OFFLINE", "TACTUS_MODEL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", False)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    yield


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A notebook folder holding the server script."""
    shutil.copy(SERVER, tmp_path / "server.py")
    return tmp_path


def logged(folder: Path) -> list[dict[str, Any]]:
    path = folder / "calls.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def hub(cells: Any) -> AgentHub:
    return cells.runtime.effects["agent.turn"].__self__  # type: ignore[no-any-return]


def agent_entries(procedures: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return [e for e in procedures[key]["checkpoints"] if e["kind"] == "agent"]


SUMS = """
mcp_server("calc", {command = "python", args = {"server.py"}, env = {MCP_CALL_LOG = "calls.log"}})
agent("clerk", {
  model = "test",
  toolsets = {"calc"},
  mock = {responses = {
    {tool = "calc_add", args = {a = 2, b = 3}},
    {tool = "calc_lookup", args = {key = "alpha"}},
    "2 + 3 = 5, and alpha is the first letter.",
  }},
})
procedure("sums", {}, function()
  local r = Clerk.turn({inject = "Add 2 and 3, then look up alpha."})
  return {text = r.data, sum = Tool.last_result("calc_add"), alpha = Tool.last_result("calc_lookup"),
          add_args = Tool.last_call("calc_add").args}
end)
"""

EXPECTED = {
    "text": "2 + 3 = 5, and alpha is the first letter.",
    "sum": 5,
    "alpha": "first letter",
    "add_args": {"a": 2, "b": 3},
}


# ------------------------------------------------------------ live calls
def test_an_agent_calls_the_servers_tools_and_each_call_is_recorded(cells: Any, folder: Path) -> None:
    assert cells(SUMS) == [EXPECTED]
    assert logged(folder) == [
        {"tool": "add", "args": {"a": 2, "b": 3}},
        {"tool": "lookup", "args": {"key": "alpha"}},
    ]
    [turn] = agent_entries(cells.runtime.records.procedures, "sums")
    assert turn["request"]["tools"] == ["calc"]  # the server's name: its tool list needs no server to hash
    assert turn["tool_calls"] == [
        {"name": "calc_add", "args": {"a": 2, "b": 3}, "result": 5},
        {"name": "calc_lookup", "args": {"key": "alpha"}, "result": "first letter"},
    ]
    # the call and its result are in the turn's recorded pydantic-ai messages too
    returns = [
        (p["tool_name"], p["content"]) for m in turn["messages"] for p in m["parts"] if p["part_kind"] == "tool-return"
    ]
    assert returns == [("calc_add", 5), ("calc_lookup", "first letter")]
    assert hub(cells).mcp.starts == 1


def test_a_rerun_replays_the_turn_without_starting_the_server(cells: Any, folder: Path) -> None:
    cells(SUMS)
    (folder / "server.py").rename(folder / "moved.py")  # a replay must not need it
    assert cells(SUMS) == [EXPECTED]
    assert len(logged(folder)) == 2  # the first run's calls only
    assert hub(cells).mcp.starts == 1


def test_offering_other_tools_of_the_server_is_a_divergence(cells: Any, folder: Path) -> None:
    cells(SUMS)
    err = cells.error(SUMS.replace('toolsets = {"calc"}', 'toolsets = {"calc_add", "calc_lookup"}'))
    assert err.ename == "DivergenceError"
    assert '  tools: recorded ["calc"]\n' in err.evalue
    assert '         now      ["calc_add", "calc_lookup"]\n' in err.evalue
    assert len(logged(folder)) == 2  # nothing called: the divergence is found before any live turn


def test_tools_named_one_by_one_offer_only_those(cells: Any, folder: Path) -> None:
    """The TestModel calls every tool it is offered: here only calc_lookup."""
    cells("""
    mcp_server("calc", {command = "python", args = {"server.py"}, env = {MCP_CALL_LOG = "calls.log"}})
    agent("picky", {model = "test", tools = {"calc_lookup"}})
    procedure("pick", {}, function() Picky.turn({inject = "look something up"}); return Tool.called("calc_add") end)
    """)
    [turn] = agent_entries(cells.runtime.records.procedures, "pick")
    assert turn["request"]["tools"] == ["calc_lookup"]
    assert [c["name"] for c in turn["tool_calls"]] == ["calc_lookup"]
    assert [c["tool"] for c in logged(folder)] == ["lookup"]


def test_a_turns_own_toolsets_option_takes_mcp_names_too(cells: Any, folder: Path) -> None:
    cells("""
    mcp_server("calc", {command = "python", args = {"server.py"}, env = {MCP_CALL_LOG = "calls.log"}})
    agent("a", {model = "test", toolsets = {"done"}})
    procedure("p", {}, function() A.turn({inject = "add", toolsets = {"calc_add"}}) end)
    """)
    [turn] = agent_entries(cells.runtime.records.procedures, "p")
    assert turn["request"]["tools"] == ["calc_add"]  # this turn's tools only: not the agent's done
    assert [c["name"] for c in turn["tool_calls"]] == ["calc_add"]
    assert [c["tool"] for c in logged(folder)] == ["add"]


def test_a_toolset_of_type_mcp_declares_the_server_as_the_reference_does(cells: Any, folder: Path) -> None:
    out = cells("""
    toolset("calc", {type = "mcp", command = "python", args = {"server.py"}, env = {MCP_CALL_LOG = "calls.log"}})
    toolset("lookups", {type = "mcp", server = "calc", tools = {"lookup"}})
    agent("a", {model = "test", toolsets = {"lookups", "done"}})
    procedure("p", {}, function()
      A.turn({inject = "go"})
      return {Tool.called("calc_lookup"), Tool.called("calc_add")}
    end)
    """)
    assert out == [[True, False]]
    assert [c["tool"] for c in logged(folder)] == ["lookup"]


def test_servers_listed_in_tactus_config_yml_as_the_reference_lists_them(
    cells: Any, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (folder / ".tactus").mkdir()
    (folder / ".tactus" / "config.yml").write_text(
        "mcp_servers:\n"
        "  test_server:\n"
        '    command: "python"\n'
        '    args: ["server.py"]\n'
        "    env:\n"
        "      MCP_CALL_LOG: ${CALL_LOG_NAME}\n"  # the reference's ${VAR}: read from the kernel's environment
    )
    monkeypatch.setenv("CALL_LOG_NAME", "calls.log")
    out = cells("""
    agent("a", {model = "test", toolsets = {"test_server_add", "done"}})
    procedure("p", {}, function() A.turn({inject = "go"}); return Tool.last_result("test_server_add") end)
    """)
    assert out == [0]  # the TestModel's add(0, 0)
    assert logged(folder) == [{"tool": "add", "args": {"a": 0, "b": 0}}]


def test_a_bad_config_yml_is_named(cells: Any, folder: Path) -> None:
    (folder / ".tactus").mkdir()
    (folder / ".tactus" / "config.yml").write_text("mcp_servers:\n  test_server:\n    comand: python\n")
    err = cells.error("""
    agent("a", {model = "test", toolsets = {"test_server"}})
    procedure("p", {}, function() return A.turn({inject = "go"}) end)
    """)
    assert err.ename == "AgentError"
    assert err.evalue.startswith(".tactus/config.yml: mcp_server 'test_server': unknown key 'comand' (known: command,")


def test_an_http_server_by_url(cells: Any, folder: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MCP_CALL_LOG": str(folder / "calls.log")}
    proc = subprocess.Popen([sys.executable, str(SERVER), "--http", str(port)], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:  # until the server accepts connections
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "the HTTP MCP server did not start"
                time.sleep(0.1)
        out = cells(f"""
        mcp_server("web", {{url = "http://127.0.0.1:{port}/mcp"}})
        agent("w", {{model = "test", toolsets = {{"web"}}, mock = {{responses = {{
          {{tool = "web_add", args = {{a = 40, b = 2}}}}, "42"}}}}}})
        procedure("h", {{}}, function() W.turn({{inject = "add"}}); return Tool.last_result("web_add") end)
        """)
        assert out == [42]
        assert logged(folder) == [{"tool": "add", "args": {"a": 40, "b": 2}}]
    finally:
        proc.terminate()
        proc.wait(10)


# ------------------------------------------------------------------ errors
def test_a_server_that_does_not_start_is_one_clear_error(cells: Any, folder: Path) -> None:
    err = cells.error("""
    mcp_server("calc", {command = "python", args = {"server.py"}, env = {MCP_CRASH_AT_START = "no licence key"}})
    agent("a", {model = "test", toolsets = {"calc"}})
    procedure("p", {}, function() return A.turn({inject = "go"}) end)
    """)
    assert err.ename == "AgentError"
    assert err.evalue.startswith("agent 'a': MCP server 'calc' (command: python server.py) failed to start: ")
    assert "the server's stderr ends with:\ncannot start: no licence key" in err.evalue


def test_a_server_slower_than_its_timeout_says_so(cells: Any, folder: Path) -> None:
    err = cells.error("""
    mcp_servers({slow = {command = "python", args = {"server.py"}, env = {MCP_SLEEP_AT_START = "60"}, timeout = 2}})
    agent("a", {model = "test", toolsets = {"slow"}})
    procedure("p", {}, function() return A.turn({inject = "go"}) end)
    """)
    assert err.ename == "AgentError"
    assert err.evalue.startswith(
        "agent 'a': MCP server 'slow' (command: python server.py) failed to start: "
        "no answer to MCP's initialize within 2 s (its timeout; "
    )


def test_a_missing_script_names_the_command_and_what_python_said(cells: Any, folder: Path) -> None:
    err = cells.error("""
    mcp_server("gone", {command = "python", args = {"missing_server.py"}, timeout = 20})
    agent("a", {model = "test", toolsets = {"gone"}})
    procedure("p", {}, function() return A.turn({inject = "go"}) end)
    """)
    assert err.ename == "AgentError"
    assert "MCP server 'gone' (command: python missing_server.py) failed to start: " in err.evalue
    assert "can't open file" in err.evalue and "missing_server.py" in err.evalue  # python's own stderr


def test_a_command_that_does_not_exist(cells: Any, folder: Path) -> None:
    err = cells.error("""
    mcp_server("nope", {command = "no-such-mcp-server-command"})
    agent("a", {model = "test", toolsets = {"nope"}})
    procedure("p", {}, function() return A.turn({inject = "go"}) end)
    """)
    assert err.ename == "AgentError"
    assert "MCP server 'nope' (command: no-such-mcp-server-command) failed to start: " in err.evalue
    assert "No such file or directory" in err.evalue


def test_a_failing_tool_call_is_a_catchable_error_naming_the_server(cells: Any, folder: Path) -> None:
    out = cells("""
    mcp_server("calc", {command = "python", args = {"server.py"}})
    agent("a", {model = "test", toolsets = {"calc"},
                mock = {responses = {{tool = "calc_fail", args = {message = "disk full"}}}}})
    procedure("p", {}, function()
      local ok, e = pcall(A.turn, {inject = "go"})
      return {ok = ok, message = tostring(e)}
    end)
    """)
    [result] = out
    assert result["ok"] is False
    assert (
        "AgentError: agent 'a': MCP server 'calc' (command: python server.py): tool 'calc_fail' failed: "
        "ToolError: Error executing tool fail: disk full\nthe server's stderr ends with:\nfail tool: disk full"
    ) in result["message"]


def test_a_server_that_crashes_mid_call_is_started_afresh_by_the_next_turn(cells: Any, folder: Path) -> None:
    [out] = cells("""
    mcp_server("calc", {command = "python", args = {"server.py"}, env = {MCP_CALL_LOG = "calls.log"}})
    agent("a", {model = "test", toolsets = {"calc"}, mock = {responses = {
      {tool = "calc_crash"}, {tool = "calc_add", args = {a = 1, b = 1}}, "two"}}})
    procedure("p", {}, function()
      local ok, e = pcall(A.turn, {inject = "crash"})
      A.turn({inject = "add"})
      return {ok, tostring(e), Tool.last_result("calc_add")}
    end)
    """)
    ok, message, added = out
    assert ok is False and added == 2
    assert "AgentError: agent 'a': MCP server 'calc' (command: python server.py): tool 'calc_crash' failed: " in message
    assert "the server's stderr ends with:\ncrashing on purpose" in message
    assert hub(cells).mcp.starts == 2
    assert [c["tool"] for c in logged(folder)] == ["crash", "add"]


def test_a_tool_the_server_does_not_have_is_named(cells: Any, folder: Path) -> None:
    err = cells.error("""
    mcp_server("calc", {command = "python", args = {"server.py"}})
    agent("a", {model = "test", tools = {"calc_divide"}})
    procedure("p", {}, function() return A.turn({inject = "go"}) end)
    """)
    assert err.ename == "AgentError"
    tools = "calc_add, calc_crash, calc_fail, calc_lookup"
    assert f"MCP server 'calc' has no tool 'divide' (its tools: {tools})" in err.evalue


@pytest.mark.parametrize(
    ("decl", "message"),
    [
        ("{}", "mcp_server 'x': give either command = ... (a stdio server) or url = ... (an HTTP server)"),
        ('{command = "python", url = "http://h/mcp"}', "mcp_server 'x': give either command = ..."),
        ('{command = "python", arg = {"s.py"}}', "mcp_server 'x': unknown key 'arg' (known: command, args, env"),
        ('{url = "ftp://h/mcp"}', "mcp_server 'x': url must be an http:// or https:// address, got 'ftp://h/mcp'"),
        (
            '{command = "python", args = "s.py"}',
            "mcp_server 'x': args must be a list of strings such as {\"server.py\"}",
        ),
        ('{command = "python", timeout = 0}', "mcp_server 'x': timeout must be a positive number of seconds, got 0"),
    ],
)
def test_bad_declarations_are_named(cells: Any, decl: str, message: str) -> None:
    err = cells.error(f'mcp_server("x", {decl})')
    assert err.ename == "AgentError"
    assert message in err.evalue


def test_an_unknown_name_lists_the_mcp_servers(cells: Any) -> None:
    err = cells.error("""
    mcp_server("calc", {command = "python", args = {"server.py"}})
    agent("a", {model = "test", toolsets = {"files"}})
    procedure("p", {}, function() return A.turn({inject = "go"}) end)
    """)
    assert err.ename == "AgentError"
    assert "unknown tool 'files' (defined: done; MCP servers: calc)" in err.evalue


def test_a_python_plugin_toolset_is_refused_and_an_mcp_server_suggested(cells: Any) -> None:
    err = cells.error('toolset("calcs", {type = "plugin", paths = {"./tools/calculations.py"}})')
    assert err.ename == "SandboxError"
    assert 'type = "plugin" loads Python files, which the sandbox refuses' in err.evalue
    assert 'serve those tools from an MCP server instead: mcp_server("calcs", {command = "python"' in err.evalue


def test_agents_without_mcp_servers_do_not_import_the_mcp_client(tmp_path: Path) -> None:
    """A declaration imports nothing, and an agent with no MCP tools never loads the MCP client."""
    code = f"""
import asyncio, sys
from tactus_kernel.features import default_runtime
rt = default_runtime(root={str(tmp_path)!r})
cell = 'mcp_server("calc", {{command = "python"}}); agent("a", {{model = "test"}})'
cell += '; procedure("p", {{}}, function() return A.turn({{inject = "hi"}}).data end)'
asyncio.run(rt.execute(cell, "[cell 1]", "c1"))
print(sorted(m for m in ("fastmcp", "mcp", "pydantic_ai.mcp") if m in sys.modules))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "[]"


# ------------------------------------------------ a real kernel, a real replay
def _server_pid(folder: Path) -> int:
    return int((folder / "server.pid").read_text())


KERNEL_SUMS = SUMS.replace('{MCP_CALL_LOG = "calls.log"}', '{MCP_CALL_LOG = "calls.log", MCP_PID_FILE = "server.pid"}')


def test_recorded_in_a_kernel_then_replayed_by_the_cli_without_the_server(folder: Path) -> None:
    path = folder / "sums.ipynb"
    record_notebook(path, [Cell(KERNEL_SUMS)])
    assert not wait_gone({_server_pid(folder)}), "the MCP server outlived its kernel"
    recorded = load(path)["metadata"]["tactus"]["procedures"]
    assert recorded["sums"]["output"] == EXPECTED
    [turn] = agent_entries(recorded, "sums")
    assert [c["result"] for c in turn["tool_calls"]] == [5, "first letter"]
    assert len(logged(folder)) == 2

    (folder / "server.py").unlink()  # nothing to start: the replay must not need it
    out = folder / "replayed.ipynb"
    run = run_cli("replay", path, "-o", out)
    assert run.returncode == 0, run.stderr
    assert load(out)["metadata"]["tactus"]["procedures"]["sums"]["output"] == EXPECTED
    assert len(logged(folder)) == 2  # zero calls in the replay


def test_the_server_runs_across_turns_and_stops_at_reset_and_shutdown(folder: Path) -> None:
    driver = KernelDriver(folder)
    try:
        first = driver.execute(KERNEL_SUMS, timeout=60)
        assert first.status == "ok", first.errors
        pid = _server_pid(folder)
        assert alive({pid})
        # a second procedure's live turn uses the running server: no second start
        again = KERNEL_SUMS.replace('procedure("sums"', 'procedure("more"')
        assert driver.execute(again, timeout=60).status == "ok"
        assert _server_pid(folder) == pid and len(logged(folder)) == 4
        reset = driver.execute("%tactus reset", timeout=30)
        assert reset.status == "ok", reset.errors
        assert not wait_gone({pid}), "%tactus reset left the MCP server running"
        # started again when a live turn needs it; stopped when the kernel shuts down
        assert driver.execute(KERNEL_SUMS, timeout=60).status == "ok"
        second = _server_pid(folder)
        assert second != pid and alive({second})
    finally:
        driver.kc.stop_channels()
        driver.km.shutdown_kernel(now=False)  # a shutdown request, as JupyterLab sends
        if driver.sockets is not None:
            driver.sockets.cleanup()
    assert not wait_gone({second}), "the MCP server outlived the kernel's shutdown"

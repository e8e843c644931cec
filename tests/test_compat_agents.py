"""Procedures written for the reference Tactus (v0.3 to v0.7) run as written.

Each file in ``tests/compat/agents/`` is a procedure in the reference's style, one
per feature of its agent surface plus combined ones. Each is pasted into a
one-cell notebook and run for real: a Tactus kernel started by nbclient
(the batch replay engine), offline (``TACTUS_OFFLINE=1``: TestModel, or the
agent's scripted ``mock``). The tests assert what the procedures produced
(the done tool called, structured output filled, message records' roles
and contents), read from the cell's output and the notebook's recorded
``metadata.tactus``.

Then the recorded notebook is run again with ``TACTUS_OFFLINE`` unset and
no provider key anywhere: every agent names a real provider, so a turn that
reached a model would fail for want of a key. The replay must give the same
result and leave the record unchanged.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import json
import os
import shutil
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat import NotebookNode

from tactus_kernel.replay.client import replay
from tactus_kernel.replay.notebook_io import prepare
from tactus_kernel.replay.outcome import ReplayOptions, ReplayResult

CORPUS = Path(__file__).parent / "compat" / "agents"
MCP_SERVER = Path(__file__).parent / "mcp_server.py"
KEYS = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_API_KEY",
    "GOOGLE_API_KEY",
    "GEMINI_API_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_PROFILE",
    "TACTUS_MODEL",
)


def _run(nb: NotebookNode, folder: Path, offline: bool) -> ReplayResult:
    """Run a notebook through nbclient on a real kernel, with or without TACTUS_OFFLINE."""
    saved = {k: os.environ.pop(k) for k in (*KEYS, "TACTUS_OFFLINE") if k in os.environ}
    if offline:
        os.environ["TACTUS_OFFLINE"] = "1"
    try:
        options = ReplayOptions(cwd=str(folder), timeout=120)
        prepare(nb, options)
        return asyncio.run(replay(nb, options, notebook_dir=folder))
    finally:
        os.environ.pop("TACTUS_OFFLINE", None)
        os.environ.update(saved)


# A second cell for the files whose declarations a later cell uses.
AFTER = {"08_required_params.tac": "%tactus test greet"}


@functools.cache
def recorded(name: str, folder: str) -> tuple[NotebookNode, ReplayResult]:
    """The corpus file as a one-cell notebook, run once offline (shared by the tests of a file)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "tactus", "display_name": "Tactus (Lua)", "language": "lua"}
    nb.cells = [nbformat.v4.new_code_cell((CORPUS / name).read_text())]
    if name in AFTER:
        nb.cells.append(nbformat.v4.new_code_cell(AFTER[name]))
    result = _run(nb, Path(folder), offline=True)
    assert result.failure is None, f"{name}: {result.failure}"
    return nb, result


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("compat")
    shutil.copy(MCP_SERVER, path / "mcp_server.py")  # 11_mcp_tools.tac's server (the replay runs elsewhere, without it)
    return str(path)


def procedures(nb: NotebookNode) -> dict[str, Any]:
    return dict((nb.metadata.get("tactus") or {"procedures": {}})["procedures"])


def output(nb: NotebookNode, procedure: str) -> Any:
    return procedures(nb)[procedure]["output"]


def agent_turns(record: dict[str, Any]) -> list[dict[str, Any]]:
    """A procedure's agent checkpoints, its children's included, in order."""
    turns = [e for e in record["checkpoints"] if e["kind"] == "agent"]
    for child in (record.get("children") or {}).values():
        turns.extend(agent_turns(child))
    return turns


def texts(nb: NotebookNode, output_type: str = "stream", cell: int = 0) -> str:
    out = []
    for o in nb.cells[cell].outputs:
        if o["output_type"] == output_type == "stream":
            out.append(o["text"])
        elif o["output_type"] == output_type:
            out.append(o["data"]["text/plain"])
    return "".join(out)


def _without_events(value: Any) -> Any:
    """A record without its ``events``: the audit trail of the last run, which
    a replay rewrites by design (docs/metadata.md); the checkpoints must not
    change. (Except the time of a child procedure call that failed: the
    composition hub runs a failed child again, its own checkpoints replayed,
    and writes that entry's ``at`` and ``duration`` afresh; not an agent
    matter, left to it.)"""
    if isinstance(value, dict):
        failed_call = value.get("kind") == "procedure" and value.get("status") == "failed"
        return {
            k: _without_events(v)
            for k, v in value.items()
            if k != "events" and not (failed_call and k in ("at", "duration"))
        }
    if isinstance(value, list):
        return [_without_events(v) for v in value]
    return value


CASES = sorted(p.name for p in CORPUS.glob("*.tac"))


def test_the_corpus_has_a_file_per_feature() -> None:
    assert len(CASES) >= 10


# ---------------------------------------------------------------- features
def test_provider_maps_to_pydantic_ai_model_names(folder: str) -> None:
    nb, _ = recorded("01_provider.tac", folder)
    out = output(nb, "providers")
    # the writer and the critic list no tools: each ends by calling the built-in done
    assert out["sentence"] != "writer did not finish" and out["verdict"] != "critic did not finish"
    assert out["filed"] == "success (no tool calls)" and out["turns"] == 5
    models = [t["request"]["model"] for t in agent_turns(procedures(nb)["providers"])]
    assert models == [
        "openai:gpt-4o-mini",
        "anthropic:claude-sonnet-4-5",
        "bedrock:us.amazon.nova-micro-v1:0",
        "openai:gpt-4o",
        "google-gla:gemini-2.0-flash",
    ]
    assert {t["model"] for t in agent_turns(procedures(nb)["providers"])} == {"test"}  # offline, every provider


def test_toolsets_name_an_agents_tools(folder: str) -> None:
    nb, _ = recorded("02_toolsets.tac", folder)
    assert output(nb, "toolsets") == {
        "answer": "a",
        "completed": True,
        "used_add": True,
        "toolset_tools": ["add", "multiply"],
        "chatter_called_done": False,
        "summary_called_tools": False,
    }
    turns = agent_turns(procedures(nb)["toolsets"])
    assert [t["request"]["tools"] for t in turns] == [["add", "multiply", "done"], [], []]
    assert [c["name"] for c in turns[0]["tool_calls"]] == ["add", "multiply", "done"]
    assert turns[0]["tool_calls"][0]["result"] == "0 + 0 = 0"  # the toolset's Lua handler ran


def test_done_is_built_in_and_the_did_not_complete_branch_is_not_taken(folder: str) -> None:
    nb, _ = recorded("03_done_default.tac", folder)
    out = output(nb, "greeting")
    assert out["completed"] is True and out["greeting"] != "Agent did not complete properly"
    assert out["scripted"] == "Hello from the script" and out["stop_reason"] == "Hello from the script"
    turns = agent_turns(procedures(nb)["greeting"])
    assert [t["name"] for t in turns] == ["greeter", "scripted", "scripted"]
    assert all(t["request"]["tools"] == ["done"] for t in turns)
    assert [c["name"] for c in turns[0]["tool_calls"]] == ["done"]  # TestModel called it on the first turn
    assert turns[2]["tool_calls"] == [
        {"name": "done", "args": {"reason": "Hello from the script", "success": True}, "result": {"stopped": True}}
    ]


def test_model_settings_request_limit_and_disable_streaming(folder: str) -> None:
    nb, _ = recorded("04_model_settings.tac", folder)
    out = output(nb, "settings")
    assert out == {"answer": "success (no tool calls)", "finished": True, "requests": 2}
    [physicist] = [t for t in agent_turns(procedures(nb)["settings"]) if t["name"] == "physicist"]
    assert physicist["request"]["settings"] == {"temperature": 0.2, "top_p": 0.9, "max_tokens": 200}
    # disable_streaming: the answer reaches the cell once, whole, not word by word
    chunks = [o["text"] for o in nb.cells[0].outputs if o["output_type"] == "stream"]
    assert "success (no tool calls)\n" in chunks


def test_prompts_session_and_return_and_error_prompts(folder: str) -> None:
    nb, _ = recorded("05_session_prompts.tac", folder)
    out = output(nb, "report")
    # research returned nothing: the return_prompt's summary turn is its result
    assert out["summary"] == "In short: the research found that lighthouses guide ships."
    assert out["failed"] is True and "the archive is offline" in out["error"]
    children = procedures(nb)["report"]["children"]
    research = agent_turns(children["research#1"])
    assert research[0]["request"]["system_prompt"] == "You research lighthouses. Call done with your findings."
    assert [t["request"]["message"] for t in research[1:]] == [
        "Summarise the findings.",
        "Summarise the result of your work concisely.",
    ]
    assert research[2]["request"]["tools"] == []
    assert research[1]["request"]["history"] == 2  # the shared session: the summarizer saw the researcher's turn
    failing = agent_turns(children["failing#1"])
    assert failing[-1]["request"]["message"] == (
        "Explain what went wrong and any partial progress made.\n\nThe error: [cell 1]:39: the archive is offline"
    )
    # the procedures with a required param were declared, not run, by the cell itself
    assert "procedure 'research' is declared, not run: it needs the param topic (string)" in texts(nb)


def test_turn_results_text_and_message_records(folder: str) -> None:
    nb, _ = recorded("06_results.tac", folder)
    out = output(nb, "results")
    assert out["first_text"] == "Paris is the capital of France."
    assert out["second_text"] == "About 2.1 million people live there."
    assert out["roles"] == ["user", "assistant", "user", "assistant"]
    assert out["contents"] == [
        "What is the capital of France?",
        "Paris is the capital of France.",
        "How many people live there?",
        "About 2.1 million people live there.",
    ]
    assert out["new_roles"] == ["user", "assistant"]
    assert out["raw_kinds"] == ["request", "response"] and out["raw_all"] == 4
    # structured output filled on the offline model, with done offered and called too
    assert out["city_is_text"] is True and out["country_is_text"] is True and out["extractor_done"] is True
    assert json.loads(out["extracted_text"]).keys() == {"city", "country"}


def test_message_history_keeps_the_appended_user_message(folder: str) -> None:
    nb, _ = recorded("07_message_history.tac", folder)
    assert output(nb, "chat") == {
        "history_length": 3,
        "roles": ["system", "user", "assistant"],
        "contents": ["You are having a friendly conversation", "Hello", "success (no tool calls)"],
        "all_roles": ["system", "user", "assistant"],
    }


def test_a_procedure_with_a_required_param_is_declared_not_failed(folder: str) -> None:
    nb, result = recorded("08_required_params.tac", folder)
    assert result.failure is None and "greet" not in procedures(nb)
    assert texts(nb) == (
        "procedure 'greet' is declared, not run: it needs the param name (string). Run it with "
        '`%tactus run greet name=...` or Procedure.run("greet", {...}).\n'
    )
    # the specifications declared after it in the same cell registered: the next cell runs them
    assert "1 passed" in texts(nb, "stream", cell=1) + texts(nb, "display_data", cell=1)


def test_multi_model_research_workflow(folder: str) -> None:
    nb, _ = recorded("09_multi_model.tac", folder)
    assert output(nb, "multi_model") == {"research": "a", "summary": "a", "done_calls": 2}
    turns = agent_turns(procedures(nb)["multi_model"])
    assert [t["request"]["model"] for t in turns] == ["openai:gpt-4o", "openai:gpt-4o-mini"]
    assert turns[1]["request"]["message"] == "Summarise this research and call done:\n\na"
    assert turns[1]["request"]["settings"] == {"temperature": 0.3}


def test_support_desk(folder: str) -> None:
    nb, _ = recorded("10_support_desk.tac", folder)
    out = output(nb, "desk")
    assert out["category"] in ("billing", "bug", "other") and isinstance(out["urgent"], bool)
    assert out["reply"] == "Hi Ada, your pro plan renews tomorrow." and out["customer"] == "Ada"
    assert out["note"] == "Ada asked about her renewal; I told her it is tomorrow."
    assert out["roles"] == ["user", "assistant", "tool", "assistant", "tool", "assistant", "user", "assistant"]
    turns = agent_turns(procedures(nb)["desk"])
    assert [t["request"]["tools"] for t in turns] == [[], ["lookup_customer", "done"], []]


# ------------------------------------------------------------------ replay
def test_mcp_server_tools_by_name_server_and_toolset(folder: str) -> None:
    nb, _ = recorded("11_mcp_tools.tac", folder)
    # the TestModel calls every tool it is offered: add(0, 0), then lookup("a"), each with done
    assert output(nb, "main") == {"success": True, "sum": 0, "definition": "no entry for a", "turns": 1}
    turns = agent_turns(procedures(nb)["main"])
    assert [t["request"]["tools"] for t in turns] == [["test_server_add", "done"], ["dictionary", "done"]]
    # (pydantic-ai offers an Agent's own tools before its toolsets': done comes first)
    assert [[c["name"] for c in t["tool_calls"]] for t in turns] == [
        ["done", "test_server_add"],
        ["done", "test_server_lookup"],
    ]
    assert turns[0]["tool_calls"][1] == {"name": "test_server_add", "args": {"a": 0, "b": 0}, "result": 0}
    calls = (Path(folder) / "mcp_calls.log").read_text().splitlines()
    assert [json.loads(c)["tool"] for c in calls] == ["add", "lookup"]  # served by the MCP server


@pytest.mark.parametrize("name", CASES)
def test_a_recorded_run_replays_without_a_model(name: str, folder: str, tmp_path: Path) -> None:
    nb, _ = recorded(name, folder)
    again = copy.deepcopy(nb)
    before = copy.deepcopy(again.metadata.get("tactus"))
    result = _run(again, tmp_path, offline=False)
    assert result.failure is None, f"{name}: {result.failure}"
    assert _without_events(again.metadata.get("tactus")) == _without_events(before)
    assert texts(again, "execute_result") == texts(nb, "execute_result")
    # every turn shown came from the record (a completed child procedure replays whole, showing none)
    usage = [o["data"]["text/plain"] for o in again.cells[0].outputs if o["output_type"] == "display_data"]
    assert all(line.endswith("recorded, no model call") for line in usage)
    assert bool(usage) == bool(before)


# ------------------------------------------------- in-process: the edges
@pytest.fixture
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    import pydantic_ai.models

    for var in (*KEYS, "TACTUS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", False)


def test_an_unknown_provider_is_one_clear_error(cells: Any, no_keys: None) -> None:
    err = cells.error('agent("a", {provider = "opnai", model = "gpt-4o"})')
    assert err.ename == "AgentError"
    assert "agent 'a': unknown provider 'opnai' (known: " in err.evalue and "bedrock" in err.evalue


def test_a_named_provider_without_a_key_still_asks_for_the_key(cells: Any, no_keys: None) -> None:
    # the rule of today: a real model and no key is an error naming the variable, not a silent offline run
    err = cells.error('agent("a", {provider = "openai", model = "gpt-4o-mini"})\nA.turn()')
    assert err.ename == "AgentError"
    assert "model 'openai:gpt-4o-mini' needs the environment variable OPENAI_API_KEY" in err.evalue
    err = cells.error('agent("b", {provider = "ollama"})\nB.turn()')
    assert "provider 'ollama' has no default model here" in err.evalue


def test_default_provider_and_default_model_together(cells: Any, no_keys: None, monkeypatch: Any) -> None:
    monkeypatch.setenv("TACTUS_OFFLINE", "1")
    cells(
        'default_provider("anthropic")\ndefault_model("claude-haiku-4-5")\n'
        'agent("a", {toolsets = {}})\nagent("b", {model = "openai:gpt-4o", toolsets = {}})\n'
        'procedure({name = "p"}, function() A.turn() B.turn() end)'
    )
    turns = [e for e in cells.runtime.records.procedures["p"]["checkpoints"] if e["kind"] == "agent"]
    assert [t["request"]["model"] for t in turns] == ["anthropic:claude-haiku-4-5", "openai:gpt-4o"]


def test_an_unknown_model_setting_is_named(cells: Any, no_keys: None) -> None:
    err = cells.error('agent("a", {provider = "openai", model_settings = {temprature = 0.5}})')
    assert err.ename == "AgentError"
    assert "agent 'a': model_settings: unknown model setting 'temprature'" in err.evalue
    cells('agent("b", {provider = "openai", model_settings = {openai_reasoning_effort = "low"}})')


def test_a_python_plugin_toolset_is_refused_by_the_sandbox(cells: Any) -> None:
    err = cells.error('toolset("math_tools", {type = "plugin", paths = {"./tools/calculations.py"}})')
    assert err.ename == "SandboxError"
    assert "toolset 'math_tools': type = \"plugin\" loads Python files, which the sandbox refuses" in err.evalue
    assert "serve those tools from an MCP server instead" in err.evalue


def test_python_iter_is_refused_with_a_hint(cells: Any) -> None:
    err = cells.error("for _, m in python.iter({1, 2}) do end")
    assert err.ename == "LuaError"
    assert "global 'python'" in err.evalue and "from an MCP server" in err.evalue


def test_toolset_lookups_that_fail_name_what_exists(cells: Any, no_keys: None) -> None:
    err = cells.error('Toolset.get("nope")')
    assert "Toolset.get: unknown toolset 'nope' (declare it with toolset(...))" in err.evalue
    cells('toolset("kit", {tools = {{name = "ping", handler = function() return "pong" end}}})')
    err = cells.error('agent("a", {model = "test", toolsets = {"kit", "nope"}})\nA.turn()')
    assert err.ename == "AgentError"
    assert "unknown tool 'nope' (defined: done, ping; toolsets: kit)" in err.evalue


def test_inject_system_then_append_keeps_the_user_message_and_replays(
    cells: Any, no_keys: None, monkeypatch: Any
) -> None:
    code = """
    agent("chatbot", {model = "test", toolsets = {}, mock = {responses = {"Hi there!", "Still here."}}})
    procedure({name = "chat"}, function()
      MessageHistory.inject_system("Be friendly.")
      MessageHistory.append({role = "user", content = "Hello"})
      local r = Chatbot.turn()
      local second = Chatbot.turn({inject = "Are you there?"})
      return {history = MessageHistory.get(), all = second.all_messages(), new = r.new_messages()}
    end)
    """
    first = cells(code)
    expected = [
        {"role": "system", "content": "Be friendly."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi there!"},
        {"role": "user", "content": "Are you there?"},
        {"role": "assistant", "content": "Still here."},
    ]
    assert first == [{"history": expected, "all": expected, "new": [expected[2]]}]
    turn = next(e for e in cells.runtime.records.procedures["chat"]["checkpoints"] if e["kind"] == "agent")
    assert turn.get("replaces") is None  # the user's message was folded into pydantic-ai's request, not replaced
    from tactus_kernel.features.agents.models import MockScript

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a replayed turn called the model")

    monkeypatch.setattr(MockScript, "_next", refuse)  # the script: the only model this cell has
    assert cells(code) == first


def test_request_limit_ends_a_turn_that_needs_more(cells: Any, no_keys: None, monkeypatch: Any) -> None:
    monkeypatch.setenv("TACTUS_OFFLINE", "1")
    [out] = cells(
        'agent("busy", {provider = "openai", request_limit = 1})\nlocal ok, err = pcall(Busy.turn)\nreturn {ok, err}'
    )
    assert out[0] is False
    assert (
        "AgentError: agent 'busy': usage limit exceeded: The next request would exceed the request_limit of 1" in out[1]
    )


def test_input_and_output_are_params_and_outputs(cells: Any) -> None:
    # some reference versions of the procedure({...}, fn) era name them so, and read `input.x`
    code = (
        'procedure({name = "p", input = {topic = {type = "string", default = "tides"}},'
        ' output = {summary = {type = "string", required = true}}, state = {}},'
        ' function() return {summary = "on " .. input.topic, extra = 1} end)'
    )
    assert cells(code) == [{"summary": "on tides"}]
    err = cells.error('Procedure.run("p", {topic = 3})', key="c2")
    assert err.ename == "ParamError" and "topic" in err.evalue


def test_tool_parameters_and_model_type(cells: Any, no_keys: None, monkeypatch: Any) -> None:
    monkeypatch.setenv("TACTUS_OFFLINE", "1")
    [out] = cells(
        'tool("echo", {description = "Echo", parameters = {text = {type = "string", required = true}}},'
        " function(a) return a.text end)\n"
        'agent("a", {provider = "openai", model = "gpt-5-mini", model_type = "responses", toolsets = {"echo"}})\n'
        "A.turn()\nreturn {Tool.last_call('echo').args, Tool.called('done')}"
    )
    assert out == [{"text": "a"}, False]  # the schema came from parameters; done was not listed
    [turn] = [e for e in cells.runtime.records.procedures["cell-a"]["checkpoints"] if e["kind"] == "agent"]
    assert turn["request"]["model"] == "openai-responses:gpt-5-mini"

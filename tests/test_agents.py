"""Agents in procedures (pydantic-ai), all offline: TestModel or scripted mocks.

No test may reach the network: model requests are forbidden module-wide,
and the offline models (TestModel, FunctionModel) are the only ones used.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import pydantic_ai.models
import pytest
from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart, ToolCallPart, ToolReturnPart, UserPromptPart
from pydantic_ai.models.test import TestModel

from tactus_kernel.features.agents import history as hist
from tactus_kernel.features.agents.effects import AgentHub
from tactus_kernel.features.agents.models import MockScript

pydantic_ai.models.ALLOW_MODEL_REQUESTS = False

ISSUE_EXAMPLE = """
agent("researcher", {model = "openai:gpt-4o-mini", system_prompt = "Research {params.topic}.", tools = {"search", "done"}})
tool("search", {description = "Search notes", params = {q = {type = "string", required = true}}}, function(a) return {hits = 2} end)
procedure({name = "research", params = {topic = {type = "string", default = "lupa"}}}, function()
  repeat Researcher.turn() until Tool.called("done") or Iterations.exceeded(5)
  return {summary = Tool.last_call("done").args.reason, turns = Iterations.current(), stopped = Stop.requested()}
end)
"""  # noqa: E501 - the issue's example, verbatim


@pytest.fixture(autouse=True)
def offline_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("TACTUS_OFFLINE", "TACTUS_MODEL", "OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", False)
    yield


def hub(cells: Any) -> AgentHub:
    handler = cells.runtime.effects["agent.turn"]
    return handler.__self__  # type: ignore[no-any-return]


def entries(cells: Any, key: str, kind: str = "agent") -> list[dict[str, Any]]:
    return [e for e in cells.runtime.records.procedures[key]["checkpoints"] if e["kind"] == kind]


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What each scripted model request was sent (messages, tools, settings)."""
    calls: list[dict[str, Any]] = []
    original = MockScript.stream

    def spy(self: MockScript, messages: list[Any], info: Any) -> Any:
        calls.append(
            {
                "messages": list(messages),
                "tools": [t.name for t in info.function_tools],
                "settings": dict(info.model_settings or {}),
                "instructions": info.instructions,
            }
        )
        return original(self, messages, info)

    monkeypatch.setattr(MockScript, "stream", spy)
    return calls


# ------------------------------------------------------------------ turns
def test_issue_example_runs_offline_with_the_test_model(cells, monkeypatch):
    monkeypatch.setenv("TACTUS_OFFLINE", "1")
    [out] = cells(ISSUE_EXAMPLE)
    # TestModel calls every offered tool once, then answers: done is called on turn 1
    assert out == {"summary": "a", "turns": 1, "stopped": True}
    [entry] = entries(cells, "research")
    assert entry["name"] == "researcher" and entry["model"] == "test"
    assert [c["name"] for c in entry["tool_calls"]] == ["search", "done"]
    assert entry["tool_calls"][0] == {"name": "search", "args": {"q": "a"}, "result": {"hits": 2}}
    assert entry["usage"]["total_tokens"] == entry["usage"]["prompt_tokens"] + entry["usage"]["completion_tokens"] > 0
    assert entry["request"]["system_prompt"] == "Research lupa."
    assert len(entry["request_hash"]) == 16
    kinds = [m["kind"] for m in entry["messages"]]
    assert kinds == ["request", "response", "request", "response"]
    json.dumps(cells.runtime.records.snapshot())  # the record is JSON


def test_text_turn_result(cells):
    cells("""
    agent("greeter", {model = "test", mock = {responses = {"Hello there, friend"}}})
    r = Greeter.turn({inject = "Say hello"})
    """)
    assert cells("r.data", key="c2") == ["Hello there, friend"]
    assert cells("r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens", key="c2") == [True]
    assert cells("Iterations.current()", key="c2") == [0]  # a later cell is a new run
    [cost] = cells("r.cost()", key="c2")
    assert cost["currency"] == "USD" and cost.get("total_cost") is None  # no price for the mock model
    [new] = cells("r.raw_messages()", key="c2")  # pydantic-ai's own messages (new_messages() gives records)
    assert [m["kind"] for m in new] == ["request", "response"]
    assert new[0]["parts"][0]["content"] == "Say hello"
    assert new[1]["parts"][0]["content"] == "Hello there, friend"
    assert cells("r.new_messages()", key="c2") == [
        [{"role": "user", "content": "Say hello"}, {"role": "assistant", "content": "Hello there, friend"}]
    ]


def test_a_turn_result_is_plain_data_that_a_procedure_can_return(cells):
    # cost, new_messages and all_messages are looked up, not stored: the
    # result shows, iterates, returns and records as the data it holds
    [out] = cells("""
    agent("bot", {mock = {responses = {"one"}}})
    procedure({name = "p"}, function()
      local r = Bot.turn()
      local keys = {}
      for k in pairs(r) do keys[#keys + 1] = k end
      table.sort(keys)
      assert(type(r.cost) == "function" and #r.new_messages() == 2 and r.nothing == nil)
      return {result = r, keys = table.concat(keys, ",")}
    end)
    """)
    assert out["keys"] == "agent,data,model,replayed,usage"
    assert out["result"]["data"] == "one" and out["result"]["usage"]["requests"] == 1
    assert cells.runtime.records.procedures["p"]["output"]["result"]["agent"] == "bot"


def test_each_turn_counts_one_iteration_and_all_messages_grows(cells):
    [out] = cells("""
    agent("bot", {mock = {responses = {"one", "two"}}})
    local a = Bot.turn()
    local b = Bot.turn({inject = "again"})
    return {Iterations.current(), #a.all_messages(), #b.all_messages(), #b.new_messages(), b.data}
    """)
    assert out == [2, 2, 4, 2, "two"]


def test_default_model_is_the_offline_test_model(cells):
    # tools = {}: an agent that lists no tools gets the built-in done tool, which TestModel would call
    [out] = cells('default_model("test")\nagent("plain", {tools = {}})\nreturn Plain.turn().data')
    assert out == "success (no tool calls)"


def test_lua_tool_gets_arguments_and_sees_the_procedure(cells):
    [out] = cells("""
    tool("search", {description = "Search", params = {q = {type = "string", required = true},
                                                     limit = {type = "integer", default = 3}}},
         function(args)
           State.append("queries", args.q)
           return {hits = args.limit, q = args.q}
         end)
    agent("finder", {tools = {"search"}, mock = {responses = {
      {tool = "search", args = {q = "lupa"}}, "found it"}}})
    procedure({name = "find"}, function()
      local r = Finder.turn({inject = "find lupa"})
      local call = Tool.last_call("search")
      return {data = r.data, q = call.args.q, limit = call.args.limit, result = Tool.last_result("search"),
              queries = State.get("queries")}
    end)
    """)
    assert out == {"data": "found it", "q": "lupa", "limit": 3, "result": {"hits": 3, "q": "lupa"}, "queries": ["lupa"]}
    [entry] = entries(cells, "find")
    assert entry["tool_calls"] == [
        {"name": "search", "args": {"q": "lupa", "limit": 3}, "result": {"hits": 3, "q": "lupa"}}
    ]


def test_invalid_tool_arguments_are_sent_back_to_the_model(cells, seen):
    [out] = cells("""
    tool("search", {params = {q = {type = "string", required = true}}}, function(a) return "ok " .. a.q end)
    agent("finder", {tools = {"search"}, mock = {responses = {
      {tool = "search", args = {query = "typo"}}, {tool = "search", args = {q = "x"}}, "done"}}})
    local r = Finder.turn()
    return {r.data, #Tool.last_call("search").args.q}
    """)
    assert out == ["done", 1]
    retry = seen[1]["messages"][-1].parts[0]
    assert "unknown param 'query'" in str(retry.content) or "required param 'q'" in str(retry.content)


def test_done_sets_stop(cells):
    [out] = cells("""
    agent("worker", {tools = {"done"}, mock = {responses = {
      {tool = "done", args = {reason = "could not finish", success = false}}, "bye"}}})
    procedure({name = "work"}, function()
      Worker.turn()
      return {Stop.requested(), Stop.reason(), Stop.success(), Tool.called("done")}
    end)
    """)
    assert out == [True, "could not finish", False, True]


def test_tool_error_is_a_catchable_agent_error(cells):
    [out] = cells("""
    tool("boom", function() error("the tool broke") end)
    agent("b", {tools = {"boom"}, mock = {responses = {{tool = "boom"}, "never"}}})
    local ok, err = pcall(B.turn)
    return {ok, err}
    """)
    assert out[0] is False
    assert "AgentError: agent 'b': tool 'boom' failed" in out[1] and "the tool broke" in out[1]


# ---------------------------------------------------------- structured output
def test_output_type_validates_and_the_model_retries(cells, seen):
    [out] = cells("""
    agent("extractor", {output_type = {city = {type = "string", required = true},
                                        country = {type = "string", default = "FR"}},
                        mock = {responses = {{output = {city = 5}}, {output = {city = "Paris"}}}}})
    local r = Extractor.turn({inject = "Where is the Louvre?"})
    return r.data
    """)
    assert out == {"city": "Paris", "country": "FR"}
    assert len(seen) == 2  # the invalid output was sent back once
    feedback = json.dumps(hist.dump(seen[1]["messages"][-1:]))
    assert "city" in feedback


def test_output_type_with_the_test_model_is_valid(cells):
    [out] = cells("""
    agent("x", {output_type = {n = {type = "integer", required = true}, tags = {type = "array", items = "string"},
                               level = {type = "string", enum = {"low", "high"}, required = true}}})
    return X.turn().data
    """)
    assert isinstance(out["n"], int) and out["level"] in ("low", "high")


def test_output_that_never_validates_is_an_agent_error(cells):
    err = cells.error("""
    agent("x", {output_type = {city = {type = "string", required = true}}, retries = 1,
                mock = {responses = {{output = {town = "a"}}, {output = {town = "b"}}, {output = {town = "c"}}}}})
    X.turn()
    """)
    assert err.ename == "AgentError"
    assert "output did not match output_type" in err.evalue


# ------------------------------------------------------------- overrides
def test_per_turn_overrides(cells, seen):
    cells("""
    tool("search", function() return 1 end)
    agent("bot", {model = {name = "test", temperature = 0.7, max_tokens = 100}, tools = {"search", "done"},
                  mock = {responses = {"a", "b"}}})
    procedure({name = "p"}, function()
      Bot.turn()
      Bot.turn({inject = "short please", tools = {}, temperature = 0, max_tokens = 5, top_p = 0.5})
    end)
    """)
    assert seen[0]["tools"] == ["search", "done"]
    assert seen[0]["settings"] == {"temperature": 0.7, "max_tokens": 100}
    assert seen[1]["tools"] == []
    assert seen[1]["settings"] == {"temperature": 0.0, "max_tokens": 5, "top_p": 0.5}
    last = seen[1]["messages"][-1]
    assert isinstance(last, ModelRequest) and last.parts[-1].content == "short please"
    _, second = entries(cells, "p")
    assert second["request"]["tools"] == [] and second["request"]["message"] == "short please"


def test_declarations_changed_between_turns_of_one_run_apply_to_the_next_turn(cells, seen):
    # a run works out what its turns share at the first turn; a tool, agent or
    # default model declared again inside the run must reach the next turn
    cells("""
    tool("search", {description = "v1"}, function() return 1 end)
    default_model({name = "test", temperature = 0.1})
    agent("bot", {tools = {"search"}, system_prompt = "first", mock = {responses = {"a", "b", "c", "d"}}})
    procedure({name = "p"}, function()
      Bot.turn()
      tool("search", {description = "v2", params = {q = {type = "string"}}}, function() return 2 end)
      Bot.turn()
      default_model({name = "test", temperature = 0.9})
      Bot.turn()
      agent("bot", {tools = {}, system_prompt = "second", mock = {responses = {"a", "b", "c", "d"}}})
      Bot.turn()
    end)
    """)
    assert [s["settings"] for s in seen] == [
        {"temperature": 0.1},
        {"temperature": 0.1},
        {"temperature": 0.9},
        {"temperature": 0.9},
    ]
    assert [s["tools"] for s in seen] == [["search"], ["search"], ["search"], []]
    assert [s["instructions"] for s in seen] == ["first", "first", "first", "second"]
    digests = [e["request"]["digests"]["tools"] for e in entries(cells, "p")]
    assert digests[0] != digests[1] == digests[2] != digests[3]


@pytest.mark.parametrize(
    "opts",
    ['{inject = "And be brief."}', '{inject = "And be brief.", temperature = 0}'],
    ids=["inject-only", "with-a-setting"],
)
def test_a_turns_inject_text_follows_an_injected_message(cells, opts):
    # an inject-only turn sends its text as a field, any other options as a table: both get the message
    cells(
        f"""
    agent("helper", {{model = "test", mock = {{responses = {{"noted"}}}}}})
    procedure({{name = "listener"}}, function()
      Sleep(0.1)
      local opts = {opts}
      local said = Helper.turn(opts).data
      return {{said = said, own = opts.inject}}
    end)""",
        key="c1",
    )
    out = cells(
        """
    local h = Procedure.spawn("listener")
    Procedure.inject(h, "Focus on the failing tests")
    return Procedure.wait(h)
    """,
        key="c2",
    )[0]
    assert out == {"said": "noted", "own": "And be brief."}  # the procedure's own table is left alone
    turn = cells.runtime.records.procedures["c2"]["children"]["listener#1"]["checkpoints"][-1]
    assert turn["request"]["message"] == "Focus on the failing tests\n\nAnd be brief."


def test_turn_options_that_are_not_utf8_are_a_clear_error(cells):
    cells('agent("bot", {model = "test", quiet = true})')
    for opts in ('{inject = "\\xff"}', '{inject = "\\xff", temperature = 1}'):
        err = cells.error(f"Bot.turn({opts})", key="c2")
        assert err.ename == "AgentError"
        assert "a string given to the kernel is not valid UTF-8 text (invalid start byte at byte 1)" in err.evalue


def test_unknown_turn_option_and_tool_are_clear_errors(cells):
    cells('agent("bot", {mock = {responses = {"x"}}})')
    err = cells.error("Bot.turn({temprature = 1})", key="c2")
    assert err.ename == "AgentError" and "unknown option 'temprature'" in err.evalue
    err = cells.error('Bot.turn({tools = {"nope"}})', key="c3")
    assert "unknown tool 'nope'" in err.evalue


# ------------------------------------------------------------- templates
def test_templates_fill_params_state_context_and_env(cells, seen, monkeypatch):
    monkeypatch.setenv("TACTUS_TEST_REGION", "eu-west")
    cells("""
    agent("r", {system_prompt = "Research {params.topic} for {state.user} in {env.TACTUS_TEST_REGION} {context.user}.",
                initial_message = "Begin with {params.topic}; unknown {params.nothing}|{json}",
                mock = {responses = {"ok", "ok"}}})
    procedure({name = "t", params = {topic = {type = "string", default = "lupa"}}}, function()
      State.set("user", "ada")
      R.turn()
      R.turn()
    end)
    """)
    assert seen[0]["instructions"] == "Research lupa for ada in eu-west ada."
    assert seen[0]["messages"][-1].parts[-1].content == "Begin with lupa; unknown |{json}"
    # the initial message is for the first turn; later turns continue
    assert seen[1]["messages"][-1].parts[-1].content == "Continue."


# ------------------------------------------------------------- histories
def test_isolated_histories_by_default_and_shared_on_request(cells):
    two_agents = """
    agent("a", {mock = {responses = {"from a"}}})
    agent("b", {mock = {responses = {"from b"}}})
    procedure({name = "%s", message_history = {mode = "%s"}}, function()
      A.turn({inject = "hi a"})
      B.turn({inject = "hi b"})
      return {#MessageHistory.get("a"), #MessageHistory.get("b")}
    end)
    """
    assert cells(two_agents % ("iso", "isolated"), key="k1") == [[2, 2]]
    assert cells(two_agents % ("sh", "shared"), key="k2") == [[4, 4]]


def test_message_history_operations(cells, seen):
    [out] = cells("""
    agent("bot", {mock = {responses = {"reply"}}})
    procedure({name = "h"}, function()
      MessageHistory.inject_system("Be terse.")
      MessageHistory.append({role = "user", content = "What is Lua?"})
      local before = MessageHistory.get()
      Bot.turn()
      local after = MessageHistory.get()
      MessageHistory.clear()
      return {before = before, after = after, cleared = #MessageHistory.get()}
    end)
    """)
    assert out["before"] == [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "What is Lua?"}]
    assert out["after"][-1] == {"role": "assistant", "content": "reply"}
    assert out["cleared"] == 0
    # an appended user message is the turn's prompt: no "Continue." is added
    assert [p.content for m in seen[0]["messages"] for p in m.parts] == ["Be terse.", "What is Lua?"]


def test_message_history_needs_an_agent_name_when_ambiguous(cells):
    err = cells.error("""
    agent("a", {}) agent("b", {})
    MessageHistory.append({role = "user", content = "x"})
    """)
    assert err.ename == "AgentError" and "several agents (a, b)" in err.evalue


def test_history_filters_shape_what_the_model_sees(cells, seen):
    cells("""
    agent("bot", {message_history = {filter = filters.last_n(2)}, mock = {responses = {"1", "2", "3"}}})
    Bot.turn() Bot.turn() Bot.turn()
    """)
    assert [len(s["messages"]) for s in seen] == [1, 3, 3]  # at most 2 earlier messages + the new prompt
    assert cells("#MessageHistory.get()", key="c2") == [0]  # a new cell is a new run, with a new history


def test_filter_functions():
    msgs: list[Any] = []
    for i in range(3):
        msgs.append(ModelRequest(parts=[UserPromptPart(f"question {i} " + "x" * 40)]))
        msgs.append(ModelResponse(parts=[ToolCallPart("search", {"q": str(i)}, tool_call_id=f"c{i}")]))
        msgs.append(ModelRequest(parts=[ToolReturnPart("search", "r", tool_call_id=f"c{i}")]))
        msgs.append(ModelResponse(parts=[TextPart(f"answer {i}")]))
    assert len(hist.apply_filter({"filter": "last_n", "n": 4}, msgs)) == 4
    # a cut that would start on a tool result drops the orphan
    cut = hist.apply_filter({"filter": "last_n", "n": 2}, msgs)
    assert [hist.role_of(m) for m in cut] == ["assistant"]
    users = hist.apply_filter({"filter": "by_role", "roles": ["user", "assistant"]}, msgs)
    assert all(not isinstance(p, (ToolCallPart, ToolReturnPart)) for m in users for p in m.parts)
    assert [hist.role_of(m) for m in users] == ["user", "assistant"] * 3
    budget = hist.apply_filter({"filter": "token_budget", "tokens": 20}, msgs)
    assert 0 < len(budget) < len(msgs) and sum(hist.estimate_tokens(m) for m in budget) <= 20
    composed = hist.apply_filter(
        {
            "filter": "compose",
            "filters": [{"filter": "by_role", "roles": ["user", "assistant"]}, {"filter": "last_n", "n": 2}],
        },
        msgs,
    )
    assert [hist.role_of(m) for m in composed] == ["user", "assistant"]
    with pytest.raises(hist.HistoryError):
        hist.apply_filter({"filter": "by_role", "roles": ["robot"]}, msgs)


# ------------------------------------------------------------- streaming
def test_text_streams_into_the_cell_and_usage_follows(cells):
    cells('agent("poet", {mock = {responses = {"roses are red, violets are blue"}}})\nPoet.turn()')
    chunks = [t for s, t in cells.host.out if s == "stdout"]
    assert len(chunks) >= 5 and "".join(chunks) == "roses are red, violets are blue\n"
    [usage] = cells.host.displayed
    assert usage["text/plain"].startswith("poet (mock) · ") and "tokens" in usage["text/plain"]


def test_quiet_agent_prints_nothing(cells):
    cells('agent("q", {quiet = true, mock = {responses = {"shh"}}})\nQ.turn()')
    assert cells.host.out == [] and cells.host.displayed == []


# ---------------------------------------------------------------- replay
def _forbid_models(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a replayed turn called the model")

    monkeypatch.setattr(TestModel, "request", refuse)
    monkeypatch.setattr(TestModel, "request_stream", refuse)
    monkeypatch.setattr(MockScript, "_next", refuse)


def test_rerun_replays_recorded_turns_without_a_model_or_key(cells, monkeypatch):
    monkeypatch.setenv("TACTUS_OFFLINE", "1")
    first = cells(ISSUE_EXAMPLE)
    calls = hub(cells).service.model_calls
    monkeypatch.delenv("TACTUS_OFFLINE")  # now a live turn would need OPENAI_API_KEY
    _forbid_models(monkeypatch)
    cells.host.out.clear()
    again = cells(ISSUE_EXAMPLE)
    assert again == first
    assert hub(cells).service.model_calls == calls
    assert "recorded, no model call" in cells.host.displayed[-1]["text/plain"]
    assert '{"search":{"hits":2},"done":{"stopped":true}}' in cells.host.stdout  # the recorded text is shown
    assert len(entries(cells, "research")) == 1


def test_replay_rebuilds_history_and_reapplies_tool_calls(cells, monkeypatch):
    code = """
    tool("note", {params = {text = {type = "string"}}}, function(a) State.append("notes", a.text) return "noted" end)
    agent("w", {tools = {"note", "done"}, mock = {responses = {
      {tool = "note", args = {text = "first"}}, "noted first",
      {calls = {{tool = "note", args = {text = "second"}}, {tool = "done", args = {reason = "finished"}}}}, "bye"}}})
    procedure({name = "multi"}, function()
      local r1 = W.turn({inject = "go"})
      local r2 = W.turn()
      return {r1.data, r2.data, #r2.raw_messages("all"), Tool.last_call("note").args.text, Stop.reason(),
              #MessageHistory.get()}
    end)
    """
    first = cells(code)
    assert first == [["noted first", "bye", 8, "second", "finished", 10]]
    _forbid_models(monkeypatch)
    assert cells(code) == first


def test_changed_prompt_is_a_divergence(cells, monkeypatch):
    monkeypatch.setenv("TACTUS_OFFLINE", "1")
    cells(ISSUE_EXAMPLE)
    changed = ISSUE_EXAMPLE.replace("Research {params.topic}.", "Investigate {params.topic}.")
    err = cells.error(changed)
    assert err.ename == "DivergenceError"
    assert "agent 'researcher'" in err.evalue
    assert 'recorded "Research lupa."' in err.evalue and 'now      "Investigate lupa."' in err.evalue
    assert "%tactus reset research" in err.evalue
    # as data too: which procedure, which checkpoint, and that the turn's request changed
    assert err.failure.divergence == "request" and err.failure.procedure == "research"
    assert err.failure.recorded == err.failure.asked == {"kind": "agent", "name": "researcher"}
    assert err.failure.position == 1


def test_changed_tools_or_history_are_divergences_too(cells):
    base = """
    tool("search", {params = {q = {type = "string"}}}, function() return 1 end)
    agent("r", {tools = {"search"}, mock = {responses = {"a", "b"}}})
    procedure({name = "d"}, function() R.turn({inject = "x"}) end)
    """
    cells(base)
    err = cells.error(base.replace('q = {type = "string"}', 'q = {type = "integer"}'))
    assert err.ename == "DivergenceError" and "tools: a tool's description or params differ" in err.evalue


def test_allowing_divergence_records_the_turn_afresh(cells, monkeypatch):
    monkeypatch.setenv("TACTUS_OFFLINE", "1")
    cells(ISSUE_EXAMPLE)
    cells.runtime.allow_divergence = True
    cells(ISSUE_EXAMPLE.replace("Research {params.topic}.", "Investigate {params.topic}."))
    [entry] = entries(cells, "research")
    assert entry["request"]["system_prompt"] == "Investigate lupa."


def test_hand_edited_value_is_what_replay_returns(cells):
    code = (
        'agent("e", {mock = {responses = {"original"}}})\nprocedure({name = "ed"}, function() return E.turn().data end)'
    )
    assert cells(code) == ["original"]
    entries(cells, "ed")[0]["value"] = "edited by hand"
    assert cells(code) == ["edited by hand"]


def test_human_answer_inside_a_failed_turn_is_replayed_when_it_runs_again(cells):
    ask = """
    tool("confirm", function() return Human.approve({message = "Proceed?"}) end)
    agent("a", {tools = {"confirm"}, mock = {responses = {{tool = "confirm"}, %s}}})
    procedure({name = "hp"}, function() return A.turn({inject = "go"}).data end)
    """
    cells.runtime.answers = {"Proceed?": True}
    err = cells.error(ask % '{error = "overloaded", status = 503}')
    assert err.ename == "AgentError" and "HTTP 503" in err.evalue
    [human] = entries(cells, "hp", "human")
    assert human["in_turn"] == "a" and human["value"] is True
    # run again (no answer supplied now): the tool's question replays from the record
    assert cells(ask % '"thanks"') == ["thanks"]
    [turn] = entries(cells, "hp")
    assert turn["tool_calls"][0]["result"] is True
    assert [e["kind"] for e in turn["nested"]] == ["human"]
    assert entries(cells, "hp", "human") == []  # now kept inside the turn's record


# ---------------------------------------------------------------- errors
def test_missing_key_names_the_environment_variable(cells):
    err = cells.error('agent("r", {model = "openai:gpt-4o-mini"})\nR.turn()')
    assert err.ename == "AgentError"
    assert "OPENAI_API_KEY" in err.evalue and "TACTUS_OFFLINE=1" in err.evalue


def test_rate_limit_is_catchable_and_retry_with_backoff_recovers(cells):
    [out] = cells("""
    agent("bot", {mock = {responses = {{error = "slow down", status = 429}, "finally"}}})
    local attempts = 0
    local r = Retry.with_backoff(function() attempts = attempts + 1; return Bot.turn() end,
                                 {max_attempts = 3, initial_delay = 0})
    return {r.data, attempts}
    """)
    assert out == ["finally", 2]
    err = cells.error(
        'agent("bot", {mock = {responses = {{error = "slow down", status = 429}}}})\nBot.turn()', key="c2"
    )
    assert err.ename == "AgentError" and "rate limited" in err.evalue and "429" in err.evalue


def test_used_up_mock_is_a_clear_error(cells):
    err = cells.error('agent("m", {mock = {responses = {"only"}}})\nM.turn()\nM.turn()')
    assert "used up its 1 scripted mock responses" in err.evalue


def test_max_turns(cells):
    err = cells.error('agent("m", {max_turns = 1})\nM.turn()\nM.turn()')
    assert err.ename == "AgentError" and "max_turns (1)" in err.evalue


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ('agent("a", {modle = "test"})', "unknown key 'modle'"),
        ('agent("a", {output_type = {x = {type = "strin"}}})', "output_type.x.type"),
        ('agent("a", {model = {name = "test", temprature = 1}})', "unknown model setting 'temprature'"),
        ('agent("a", {message_history = {mode = "global"}})', "isolated or shared"),
        ('agent("a", {mock = {responses = {{nope = 1}}}})', "mock.responses[1]"),
        ('tool("done", function() end)', "built in"),
        ('tool("t", {params = {q = {type = "text"}}}, function() end)', "params.q.type"),
        ('agent("bad name", {})', "identifier"),
    ],
)
def test_declaration_errors(cells, code, message):
    err = cells.error(code)
    assert message in err.evalue


def test_pydantic_ai_is_imported_only_by_the_first_agent():
    code = (
        "import sys, asyncio\n"
        "from tactus_kernel.features import default_runtime\n"
        "rt = default_runtime()\n"
        "asyncio.run(rt.execute('tool(\"t\", function() end)\\nprint(1)'))\n"
        "print('pydantic_ai' in sys.modules)\n"
        "asyncio.run(rt.execute('agent(\"a\", {})'))\n"
        "print('pydantic_ai' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1", "False", "True"]


# ---------------------------------------------------------------- kernel
TOOL_APPROVAL = """
tool("deploy", {description = "Deploy a version", params = {version = {type = "string", required = true}}},
     function(a)
       local ok = Human.approve({message = "Deploy " .. a.version .. "?"})
       return {deployed = ok}
     end)
agent("ops", {model = "test", tools = {"deploy"},
              mock = {responses = {{tool = "deploy", args = {version = "2.1"}}, "Deployment handled."}}})
procedure({name = "release"}, function()
  local r = Ops.turn({inject = "Ship 2.1"})
  return {said = r.data, deployed = Tool.last_result("deploy").deployed}
end)
"""


def test_a_lua_tool_waits_for_a_human_click(kernel):
    kernel.open_tactus(None)
    run = kernel.submit(TOOL_APPROVAL, cell_id="rel")
    kernel.wait_until(
        lambda: kernel.widgets_where(_model_name="ButtonModel", description="Approve", disabled=False), timeout=30
    )
    assert run.reply is None  # the turn waits inside the tool
    kernel.click(kernel.button("Approve"))
    kernel.wait(run)
    assert run.status == "ok", run.errors
    assert "Deployment handled." in run.stdout
    assert run.result == '{deployed = true, said = "Deployment handled."}'
    kernel.drain(0.3)
    updates = [
        op["procedures"]["release"]
        for op in kernel.tactus_ops()
        if op.get("op") == "update" and "release" in op["procedures"]
    ]
    [turn] = [e for e in updates[-1]["checkpoints"] if e["kind"] == "agent"]
    assert turn["nested"][0]["kind"] == "human" and turn["nested"][0]["value"] is True
    # re-running replays the turn: no model, no tool, no new card
    buttons = len(kernel.widgets_where(_model_name="ButtonModel", description="Approve"))
    again = kernel.execute(TOOL_APPROVAL, cell_id="rel")
    assert again.status == "ok" and again.result == run.result
    assert len(kernel.widgets_where(_model_name="ButtonModel", description="Approve")) == buttons


def test_streamed_text_reaches_the_notebook_before_the_turn_ends(kernel):
    run = kernel.submit(
        'agent("slow", {mock = {delay = 0.4, responses = {"one two three four"}}})\nSlow.turn()\nprint("after")',
        cell_id="s",
    )
    kernel.wait_until(lambda: "one" in run.stdout, timeout=30)
    assert run.reply is None and "four" not in run.stdout  # the first words are shown while the model talks
    kernel.wait(run)
    assert run.status == "ok", run.errors
    assert run.stdout == "one two three four\nafter\n"
    assert len([m for m in run.of_type("stream") if m["content"]["name"] == "stdout"]) >= 3


def test_default_model_table_method_call_and_returned_handle(cells, seen):
    [out] = cells("""
    default_model({name = "test", temperature = 0.2})
    local h = agent("helper", {mock = {responses = {"a", "b"}}})
    local r1 = Helper:turn({inject = "x"})
    local r2 = h.turn()
    return {h == Helper, r1.data, r2.data}
    """)
    assert out == [True, "a", "b"]
    assert seen[0]["settings"] == {"temperature": 0.2}


def test_interrupting_a_turn_keeps_the_kernel(kernel):
    run = kernel.submit('agent("slow", {mock = {delay = 2, responses = {"a b c d e f"}}})\nSlow.turn()', cell_id="i")
    kernel.wait_until(lambda: "a" in run.stdout, timeout=30)
    kernel.interrupt()
    kernel.wait(run)
    assert run.status == "error" and run.errors[0]["ename"] == "KeyboardInterrupt"
    after = kernel.execute("1 + 1", cell_id="j")
    assert after.status == "ok" and after.result == "2"


def test_templates_cannot_read_secret_variables(cells, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-prompts")
    err = cells.error('agent("leak", {system_prompt = "{env.OPENAI_API_KEY}"})\nLeak.turn()')
    assert err.ename == "AgentError" and "secret-looking" in err.evalue and "sk-not" not in err.evalue


PINNED_DIGESTS = ["4f53cda18c2baa0c", "be51447b08593016", "1c04079c52671d87"]  # of 0, 1 and 12 messages


def test_the_history_digest_is_the_recorded_form():
    """A turn's request hash covers the whole history as the digest of the
    list of each message's digest: the form recorded notebooks hold, so the
    values must never change (pinned here, computed by the code before)."""
    from tactus_kernel.features.agents.recording import digest, history_digest

    history: list[Any] = []
    for i in range(6):
        history.append(ModelRequest(parts=[UserPromptPart(f"question {i}")]))
        history.append(ModelResponse(parts=[TextPart(f"answer {i}")]))

    assert history_digest(history) == digest([digest(hist.projection([m])) for m in history])
    assert [history_digest(history[:k]) for k in (0, 1, 12)] == PINNED_DIGESTS
    changed = [*history[:4], ModelResponse(parts=[TextPart("edited")]), *history[5:]]
    assert history_digest(changed) != history_digest(history)


# ------------------------------------------- live history hashes like replay
MANY_KINDS_OF_TURN = """
tool("lookup", {params = {q = {type = "string", required = true}}},
     function(a) return {q = a.q, hits = {1, 2.5}, nested = {empty = false, text = "é"}} end)
agent("mixed", {tools = {"lookup", "done"}, mock = {responses = {
  {tool = "lookup", args = {query = "typo"}},            -- invalid args: a retry part
  {tool = "lookup", args = {q = "x"}}, "found it",
  {calls = {{tool = "lookup", args = {q = "y"}}, {tool = "done", args = {reason = "all found"}}}}, "bye",
  "plain text turn"}}})
agent("shaped", {output_type = {city = {type = "string", required = true}},
                 mock = {responses = {{output = {city = 5}}, {output = {city = "Paris"}}}},
                 message_history = {mode = "shared"}})
procedure({name = "kinds", message_history = {mode = "shared"}}, function()
  local out = {}
  for _, r in ipairs({Mixed.turn({inject = "go"}), Mixed.turn(), Shaped.turn({inject = "where?"}), Mixed.turn()}) do
    out[#out + 1] = r.data
  end
  return out
end)
"""


def test_a_recorded_history_replays_with_the_same_request_hashes(cells, tmp_path, monkeypatch):
    """Each turn's request hash covers the history so far. A live turn keeps
    pydantic-ai's own messages when they load back the same, and the loaded
    copies otherwise (a retry part loads as a different class); either way
    replay in a fresh kernel, from the saved JSON, must hash the same."""
    from tactus_kernel.features import default_runtime
    from tactus_kernel.protocol import parse_metadata

    [first] = cells(MANY_KINDS_OF_TURN, key="kinds")
    assert first == ["found it", "bye", {"city": "Paris"}, "plain text turn"]
    saved = json.dumps(cells.runtime.records.snapshot())
    hashes = [e["request_hash"] for e in entries(cells, "kinds")]
    assert len(set(hashes)) == 4

    _forbid_models(monkeypatch)
    fresh = type(cells)(tmp_path)
    fresh.runtime = default_runtime(root=tmp_path, host=fresh.host)
    fresh.runtime.records.load(parse_metadata(json.loads(saved)))
    fresh.runtime.batch = True
    assert fresh(MANY_KINDS_OF_TURN, key="kinds") == [first]
    assert [e["request_hash"] for e in entries(fresh, "kinds")] == hashes


def _retry_prompt(content: str, tool_name: str | None) -> Any:
    with warnings.catch_warnings():  # deprecated, yet older records and code paths still make it
        warnings.simplefilter("ignore")
        from pydantic_ai.messages import RetryPromptPart

        return RetryPromptPart(content, tool_name=tool_name, tool_call_id="c1")


def _message_lists() -> Any:
    """Hypothesis strategy: short lists of requests and responses with the
    usual parts, JSON-like tool args and returns among them."""
    from hypothesis import strategies as st
    from pydantic_ai.messages import BinaryContent, SystemPromptPart

    json_values = st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**53), 2**53)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["a", "kind", "url", "b"]), inner, max_size=3)
        ),
        max_leaves=8,
    )
    request_parts = st.one_of(
        st.builds(UserPromptPart, st.text(max_size=10)),
        st.builds(
            lambda b: UserPromptPart(["see", BinaryContent(data=b, media_type="image/png")]), st.binary(max_size=6)
        ),
        st.builds(SystemPromptPart, st.text(max_size=10)),
        st.builds(lambda c: ToolReturnPart("t", c, tool_call_id="c1"), json_values),
        st.builds(lambda c: ToolReturnPart("t", c, tool_call_id="c1", outcome="retried"), st.text(max_size=5)),
        st.builds(_retry_prompt, st.text(max_size=5), st.none() | st.just("t")),
    )
    response_parts = st.one_of(
        st.builds(TextPart, st.text(max_size=10)),
        st.builds(
            lambda a: ToolCallPart("t", a, tool_call_id="c1"),
            st.none() | st.text(max_size=6) | st.dictionaries(st.sampled_from(["q", "kind"]), json_values),
        ),
    )
    return st.lists(
        st.builds(lambda p: ModelRequest(parts=p), st.lists(request_parts, min_size=1, max_size=3))
        | st.builds(lambda p: ModelResponse(parts=p), st.lists(response_parts, min_size=1, max_size=3)),
        min_size=0,
        max_size=4,
    )


def test_the_recorded_messages_are_what_pydantic_ais_own_adapter_makes():
    """``hist.dump`` is ``ModelMessagesTypeAdapter``'s JSON dump without the
    None fields, except a tool return's required ``content``: records made
    before and after read the same, and a pydantic-ai upgrade that changes
    the form shows here."""
    import asyncio

    from hypothesis import given, settings
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelMessagesTypeAdapter

    def by_pydantic_ai(ms: list[Any]) -> list[Any]:
        dumped = ModelMessagesTypeAdapter.dump_python(ms, mode="json", exclude_none=True)
        for part in (p for m in dumped for p in m["parts"]):
            if part.get("part_kind") == "tool-return":
                part.setdefault("content", None)
        return dumped

    @settings(max_examples=300, deadline=None)
    @given(_message_lists())
    def check(ms: list[Any]) -> None:
        assert hist.dump(ms) == by_pydantic_ai(ms)

    check()

    def lookup(q: str) -> dict[str, Any]:
        """Look a word up."""
        return {"q": q}

    real = asyncio.run(Agent(TestModel(), instructions="Be brief.", tools=[lookup]).run("hi")).all_messages()
    assert [m.kind for m in real] == ["request", "response", "request", "response"]
    assert hist.dump(real) == by_pydantic_ai(real)
    assert json.dumps(hist.dump(real[2:3])) == json.dumps(by_pydantic_ai(real[2:3]))  # the key order too
    # bytes where the adapter's config decides how they are written (base64)
    raw = [
        ModelRequest(parts=[ToolReturnPart("t", b"\x00ab", tool_call_id="c1")]),
        ModelResponse(parts=[TextPart("x")], provider_details={"signature": b"\x01z"}),
    ]
    assert hist.dump(raw) == by_pydantic_ai(raw)
    assert hist.dump(raw)[1]["provider_details"] == {"signature": "AXo="}


def test_a_large_state_does_not_slow_or_stop_a_turn(cells):
    """A turn hands its procedure's context to the kernel without walking it
    (State and every tool call so far); only a template that reads State
    converts it, and an oversized State there is a clear error."""
    [out] = cells(
        """
    agent("a", {system_prompt = "plain"})
    agent("b", {system_prompt = "Facts: {state.small}"})
    procedure({name = "big"}, function()
      local big = {}
      for i = 1, 1100000 do big[i] = i end
      State.set("big", big)
      State.set("small", "few")
      local text = A.turn().data
      local ok, err = pcall(B.turn)
      return {text ~= nil, ok, err}
    end)
    """,
        key="big",
    )
    assert out[0] is True and out[1] is False
    assert "too large to hand to the kernel" in out[2]


def test_a_tool_that_returns_nothing_is_recorded_and_replayed(cells, monkeypatch):
    code = """
    tool("noop", function(a) State.increment("calls") end)
    agent("n", {tools = {"noop"}, mock = {responses = {{tool = "noop"}, "first", {tool = "noop"}, "second"}}})
    procedure({name = "nothing"}, function() N.turn(); return {N.turn().data, State.get("calls") or 0} end)
    """
    first = cells(code, key="nothing")
    assert first == [["second", 2]]
    [entry, _] = entries(cells, "nothing")
    assert entry["tool_calls"] == [{"name": "noop", "args": {}, "result": None}]
    _forbid_models(monkeypatch)
    assert cells(code, key="nothing") == [["second", 0]]  # replayed: the tool does not run again


# ------------------------------------------------------- recording a turn
TWO_TURNS = """
agent("writer", {model = "test", quiet = true, tools = {}})
procedure({name = "two"}, function()
  Writer.turn({inject = "one"})
  Writer.turn({inject = "two"})
  return "ok"
end)
"""


def test_a_turn_read_while_the_cell_runs_is_complete(cells, monkeypatch):
    """Whoever reads the records while the cell runs, such as the comm
    sending an update in the middle of a cell, gets each turn's whole entry:
    messages and request hash."""
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(cells.host, "records_changed", lambda: sent.extend(cells.runtime.records.take_changes()))
    cells(TWO_TURNS, key="two")
    turns = [e for op in sent for e in op["procedures"]["two"]["checkpoints"] if e["kind"] == "agent"]
    assert len(turns) >= 2
    for entry in turns:
        assert isinstance(entry["messages"], list) and entry["messages"]
        assert isinstance(entry["request_hash"], str) and entry["request"]["message"] in ("one", "two")
    json.dumps(sent)  # nothing left that the comm could not send


def test_messages_that_cannot_be_recorded_make_a_clear_replay_error(cells, monkeypatch):
    def broken(messages: Any) -> Any:
        raise RuntimeError("no serializer")

    monkeypatch.setattr(hist, "dump", broken)
    assert cells(TWO_TURNS, key="two") == ["ok"]
    [first, second] = entries(cells, "two")
    assert first["messages"] == "not recordable: RuntimeError: no serializer"
    assert isinstance(second["request_hash"], str)  # the rest of the entry is still filled in
    monkeypatch.undo()
    _forbid_models(monkeypatch)
    err = cells.error(TWO_TURNS, key="two")
    assert err.ename == "AgentError"
    assert "the recorded turn is unreadable: messages: not recordable: RuntimeError: no serializer" in err.evalue


def test_only_the_turn_whose_messages_cannot_be_recorded_is_marked(cells, monkeypatch):
    # the turns of a cell are dumped together; one that fails must not take the others with it
    dump = hist.dump

    def picky(messages: Any) -> Any:
        if any(getattr(p, "content", None) == "two" for m in messages for p in m.parts):
            raise RuntimeError("no serializer for two")
        return dump(messages)

    monkeypatch.setattr(hist, "dump", picky)
    assert cells(TWO_TURNS, key="two") == ["ok"]
    first, second = entries(cells, "two")
    assert [m["kind"] for m in first["messages"]] == ["request", "response"]
    assert first["messages"][0]["parts"][0]["content"] == "one"
    assert second["messages"] == "not recordable: RuntimeError: no serializer for two"
    assert isinstance(second["request_hash"], str) and second["request"]["message"] == "two"


def test_a_changed_declaration_replaces_the_agent(cells):
    """A cell run again declares its agent again; a changed declaration is
    the one later turns use."""
    code = """
    tool("lookup", {description = "Look up", params = {q = {type = "string"}}}, function(a) return 1 end)
    agent("finder", {model = "test", quiet = true, tools = {"lookup"}, retries = %d})
    procedure({name = "find%d"}, function() return Finder.turn().data end)
    """
    service = hub(cells).service
    cells(code % (2, 1), key="k1")
    assert service.agents["finder"].agent_options["retries"] == 2
    cells(code % (3, 3), key="k3")
    assert service.agents["finder"].agent_options["retries"] == 3

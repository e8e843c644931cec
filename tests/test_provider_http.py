"""The real provider HTTP path, offline: a kernel's agents against a fake provider on 127.0.0.1.

pydantic-ai's own OpenAI (Chat Completions and Responses) and Anthropic
models, with the real SDKs, send to :mod:`fake_provider` (the kernel's
``OPENAI_BASE_URL`` / ``ANTHROPIC_BASE_URL``, or an agent's ``base_url``),
with fake keys. Nothing reaches beyond 127.0.0.1: the kernel's
environment names no other endpoint and no proxy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pydantic_ai.models
import pytest
from fake_provider import CHAT, MESSAGES, RESPONSES, FakeProvider, error, free_port, hang, output, text, tool_call
from kernel_driver import KernelDriver

pytestmark = pytest.mark.timeout(120)

# provider declaration -> the API it speaks
APIS = {
    "chat": ('provider = "openai", model_type = "chat", model = "gpt-4o-mini"', CHAT),
    "responses": ('provider = "openai", model_type = "responses", model = "gpt-4o-mini"', RESPONSES),
    "anthropic": ('provider = "anthropic", model = "claude-sonnet-4-5"', MESSAGES),
}
LABELS = {
    "chat": "openai-chat:gpt-4o-mini",
    "responses": "openai-responses:gpt-4o-mini",
    "anthropic": "anthropic:claude-sonnet-4-5",
}
# the environment of the kernel: the fake server for both providers, fake keys, no proxy, not offline
DROPPED = (
    "TACTUS_OFFLINE",
    "TACTUS_MODEL",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as server:
        yield server


@pytest.fixture(scope="module")
def driver(fake: FakeProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelDriver]:
    env = {k: v for k, v in os.environ.items() if k.upper() not in DROPPED}
    env.update(
        OPENAI_API_KEY="sk-fake-key",
        OPENAI_BASE_URL=fake.openai_url,
        ANTHROPIC_API_KEY="sk-ant-fake-key",
        ANTHROPIC_BASE_URL=fake.url,
        NO_PROXY="127.0.0.1,localhost",
    )
    kernel = KernelDriver(tmp_path_factory.mktemp("provider-http"), env=env)
    try:
        yield kernel
    finally:
        kernel.shutdown()


@pytest.fixture(autouse=True)
def fresh(fake: FakeProvider) -> Iterator[None]:
    fake.script()
    fake.chunk_delay = 0.0
    yield


_cells = iter(range(10_000))


def run(driver: KernelDriver, code: str, cell_id: str | None = None) -> object:
    """Run a cell (each in a cell of its own unless ``cell_id`` says), return the finished run."""
    return driver.execute(code, cell_id=cell_id or f"cell-{next(_cells)}", timeout=60)


def agent_cell(api: str, body: str, extra: str = "", name: str = "writer") -> str:
    decl, _ = APIS[api]
    return f'agent("{name}", {{{decl}, tools = {{}}{extra}}})\n{body}'


# ---------------------------------------------------------------- answers
@pytest.mark.parametrize("api", APIS)
def test_streamed_text_reaches_the_cell_in_pieces(driver, fake, api):
    fake.chunk_delay = 0.15  # the server's pace: the kernel flushes streamed text 50 ms after it arrives
    fake.script(text("Tides follow the moon across the bay"))
    done = run(driver, agent_cell(api, "return Writer.turn().data"))
    assert done.status == "ok", done.error
    pieces = [m["content"]["text"] for m in done.of_type("stream") if m["content"]["name"] == "stdout"]
    streamed = [p for p in pieces if p.strip() and p.strip() in "Tides follow the moon across the bay"]
    assert len(streamed) >= 3, pieces  # several outputs while the model speaks, not one at the end
    assert "Tides follow the moon across the bay" in done.stdout
    assert "Tides follow the moon across the bay" in done.result
    [request] = fake.requests
    assert request.path == APIS[api][1] and request.stream is True
    assert request.headers.get("authorization", request.headers.get("x-api-key", "")).endswith("fake-key")


@pytest.mark.parametrize("api", APIS)
def test_disable_streaming_sends_one_plain_request(driver, fake, api):
    fake.script(text("A whole answer at once"))
    # pydantic-ai streams an Anthropic request behind the scenes when max_tokens is above about 21,000
    # (its default is the model's maximum): a smaller one goes as one plain request
    extra = ", disable_streaming = true" + (", max_tokens = 1024" if api == "anthropic" else "")
    done = run(driver, agent_cell(api, "return Writer.turn().data", extra))
    assert done.status == "ok", done.error
    assert "A whole answer at once" in done.result
    shown = [m["content"]["text"] for m in done.of_type("stream") if "whole" in m["content"]["text"]]
    assert shown == ["A whole answer at once\n"], shown  # shown once, when the turn ends
    [request] = fake.requests
    assert request.path == APIS[api][1] and request.stream is False


@pytest.mark.parametrize("api", APIS)
def test_a_tool_call_round_trip(driver, fake, api):
    fake.script(tool_call("add", {"a": 2, "b": 3}), text("The sum is 5"))
    done = run(
        driver,
        f"""
        tool("add", {{description = "Add two numbers", params = {{a = {{type = "number", required = true}},
                                                                  b = {{type = "number", required = true}}}}}},
             function(args) return {{sum = args.a + args.b}} end)
        agent("calc", {{{APIS[api][0]}, tools = {{"add"}}}})
        local r = Calc.turn({{inject = "What is 2 + 3?"}})
        return {{answer = r.data, called = Tool.called("add"), sum = Tool.last_call("add").result.sum}}
        """,
    )
    assert done.status == "ok", done.error
    assert 'answer = "The sum is 5"' in done.result and "called = true" in done.result and "sum = 5" in done.result
    first, second = fake.requests
    assert "add" in first.tool_names()
    # the second request carries the tool's result back to the model, in the API's own shape
    sent = json.dumps(second.body)
    assert '\\"sum\\": 5' in sent or '\\"sum\\":5' in sent, sent


@pytest.mark.parametrize("api", APIS)
def test_structured_output(driver, fake, api):
    fake.script(output({"city": "Lyon", "population": 522000}))
    done = run(
        driver,
        f"""
        agent("geo", {{{APIS[api][0]}, tools = {{}}, output_type = {{
          city = {{type = "string", required = true}}, population = {{type = "integer"}}}}}})
        local r = Geo.turn({{inject = "Which city?"}})
        return {{city = r.data.city, population = r.data.population}}
        """,
    )
    assert done.status == "ok", done.error
    assert done.result == '{city = "Lyon", population = 522000}'
    [request] = fake.requests
    assert [n for n in request.tool_names() if n.startswith("final_result")], request.tool_names()


def test_a_recorded_run_replays_with_the_server_stopped(driver):
    own = FakeProvider().start()
    own.script(text("Recorded once"))
    cell = f"""
    agent("echo", {{provider = "openai", model = "gpt-4o-mini", tools = {{}}, base_url = "{own.openai_url}"}})
    procedure({{name = "replayed"}}, function() return Echo.turn({{inject = "Say it"}}).data end)
    """
    first = run(driver, cell, cell_id="replay-cell")
    assert first.status == "ok", first.error
    assert "Recorded once" in first.result
    assert own.count() == 1
    own.stop()
    again = run(driver, cell, cell_id="replay-cell")
    assert again.status == "ok", again.error
    assert again.result == first.result
    assert own.count() == 1  # no request: the stopped server got none
    assert "recorded, no model call" in json.dumps([m["content"] for m in again.of_type("display_data")])


# ----------------------------------------------------------------- errors
ERROR_TEXT = {
    401: "Incorrect API key provided: sk-fake-key",
    429: "Rate limit reached for gpt-4o-mini on requests per min",
    500: "The server had an error while processing your request",
}


def assert_clear(evalue: str) -> None:
    """One line of the provider's words: never None, never a Python dict."""
    assert "None" not in evalue and "{'" not in evalue and "status_code:" not in evalue, evalue


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize(
    ("status", "says"),
    [(401, "refused the API key (HTTP 401)"), (429, "rate limited by model"), (500, "failed (HTTP 500)")],
)
def test_an_http_error_shows_the_providers_message(driver, fake, api, status, says):
    fake.script(error(status, ERROR_TEXT[status]))
    done = run(driver, agent_cell(api, "return Writer.turn().data", ", max_retries = 0"))
    assert done.status == "error"
    assert done.error["ename"] == "AgentError"
    evalue = done.error["evalue"]
    assert "agent 'writer': " in evalue and f"model '{LABELS[api]}'" in evalue
    assert says in evalue and f"HTTP {status}" in evalue
    assert ERROR_TEXT[status] in evalue
    assert_clear(evalue)
    assert fake.count() == 1


def test_the_openai_error_code_is_named(driver, fake):
    fake.script(error(401, ERROR_TEXT[401]))
    done = run(driver, agent_cell("chat", "return Writer.turn().data"))
    assert done.error["evalue"].endswith(f"refused the API key (HTTP 401): {ERROR_TEXT[401]} (invalid_api_key)")


def test_the_anthropic_error_is_its_message_not_a_dict(driver, fake):
    fake.script(error(401, "invalid x-api-key"))
    done = run(driver, agent_cell("anthropic", "return Writer.turn().data"))
    assert done.error["evalue"].endswith(
        "agent 'writer': model 'anthropic:claude-sonnet-4-5' refused the API key (HTTP 401): "
        "invalid x-api-key (authentication_error)"
    )


def test_an_error_is_catchable_and_the_kernel_goes_on(driver, fake):
    fake.script(error(500, "boom"), text("Recovered"))
    done = run(
        driver,
        agent_cell(
            "chat",
            """
            local ok, err = pcall(Writer.turn)
            local r = Writer.turn()
            return {first = tostring(err):match("HTTP 500[^\\n]*"), then_ = r.data}
            """,
            ", max_retries = 0",
        ),
    )
    assert done.status == "ok", done.error
    assert done.result == '{first = "HTTP 500): boom (server_error)", then_ = "Recovered"}'


@pytest.mark.parametrize("api", APIS)
def test_a_timeout_names_the_base_url(driver, fake, api):
    fake.script(hang(10))
    done = run(driver, agent_cell(api, "return Writer.turn().data", ", timeout = 0.5, max_retries = 0"))
    evalue = done.error["evalue"]
    base = fake.openai_url if api != "anthropic" else fake.url
    assert done.error["ename"] == "AgentError"
    assert f"model '{LABELS[api]}' did not answer in time at {base}" in evalue, evalue
    assert "timed out" in evalue.lower()
    assert_clear(evalue)
    assert fake.count() == 1


def test_request_timeout_bounds_the_whole_request(driver, fake):
    fake.script(hang(10), hang(10), hang(10))
    done = run(driver, agent_cell("chat", "return Writer.turn().data", ", request_timeout = 0.5"))
    assert done.error["evalue"].endswith(
        f"model 'openai-chat:gpt-4o-mini' did not answer in time at {fake.openai_url}: "
        "no complete answer within request_timeout = 0.5 s"
    ), done.error
    assert fake.count() == 1  # the deadline ended the request and its retries


@pytest.mark.parametrize("api", APIS)
def test_a_refused_connection_names_the_base_url(driver, fake, api):
    port = free_port()
    url = f"http://127.0.0.1:{port}" + ("/v1" if api != "anthropic" else "")
    done = run(driver, agent_cell(api, "return Writer.turn().data", f', base_url = "{url}", max_retries = 0'))
    evalue = done.error["evalue"]
    assert done.error["ename"] == "AgentError"
    assert f"could not reach model '{LABELS[api]}' at {url}" in evalue, evalue
    assert "Connect" in evalue  # the SDK's or the transport's words for it
    assert_clear(evalue)
    assert fake.count() == 0


# ---------------------------------------------------------------- retries
@pytest.mark.parametrize(
    ("decl", "requests"),
    [
        ('model_type = "chat", model = "gpt-4o-mini", max_retries = 0', 1),
        ('model = "gpt-4o-mini", max_retries = 2', 3),
        ('model = "gpt-4o-mini"', 3),  # not set: the SDK's own default (2 retries)
        ('model = "gpt-4o-mini", response = {retries = 1, retry_delay = 0.5}', 2),  # the reference's spelling
        ('model = {name = "gpt-4o-mini", max_retries = 1}', 2),
        ('model = "gpt-4o-mini", model_settings = {max_retries = 0}', 1),
    ],
)
def test_max_retries_is_how_often_a_failed_request_is_sent_again(driver, fake, decl, requests):
    fake.script(*[error(500, f"attempt {i} failed") for i in range(1, 5)])
    done = run(driver, f'agent("writer", {{provider = "openai", {decl}, tools = {{}}}})\nreturn Writer.turn().data')
    assert f"failed (HTTP 500): attempt {requests} failed" in done.error["evalue"], done.error
    assert fake.count() == requests


@pytest.mark.parametrize("api", ["responses", "anthropic"])
def test_max_retries_for_the_other_apis(driver, fake, api):
    fake.script(*[error(429, "slow down") for _ in range(4)])
    done = run(driver, agent_cell(api, "return Writer.turn().data", ", max_retries = 1"))
    assert "rate limited" in done.error["evalue"] and "slow down" in done.error["evalue"]
    assert fake.count() == 2


def test_retries_are_left_out_of_the_request_hash(driver, fake):
    """Adding max_retries to an agent whose turn is recorded replays it: it says how to send, not what."""
    fake.script(text("Kept"))
    cell = """
    agent("keeper", {provider = "openai", model = "gpt-4o-mini", tools = {}%s})
    procedure({name = "kept"}, function() return Keeper.turn({inject = "Keep"}).data end)
    """
    first = run(driver, cell % "", cell_id="hash-cell")
    assert "Kept" in first.result
    again = run(driver, cell % ", max_retries = 5, request_timeout = 30", cell_id="hash-cell")
    assert again.status == "ok", again.error
    assert again.result == first.result and fake.count() == 1


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("max_retries = -1", "agent 'bad': max_retries must not be negative, got -1"),
        ('max_retries = "two"', "agent 'bad': max_retries must be an integer, got 'two'"),
        (
            "response = {retries = 1, backoff = 2}",
            "agent 'bad': response: unknown key 'backoff' (known: retries, retry_delay)",
        ),
        ('base_url = "127.0.0.1:9"', "agent 'bad': base_url must be an http(s) URL"),
    ],
)
def test_bad_transport_settings_are_one_clear_error(driver, setting, message):
    done = run(driver, f'agent("bad", {{provider = "openai", {setting}}})')
    assert done.error["ename"] == "AgentError" and message in done.error["evalue"], done.error


# ------------------------------------------------------------- in process
@pytest.fixture
def local_requests(monkeypatch: pytest.MonkeyPatch, fake: FakeProvider) -> Iterator[FakeProvider]:
    """Model requests allowed in this process, for this test only, and only to the fake server."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fake-key")
    monkeypatch.setenv("OPENAI_BASE_URL", fake.openai_url)
    for var in DROPPED:
        monkeypatch.delenv(var, raising=False)
    assert fake.openai_url.startswith("http://127.0.0.1:")
    monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", True)  # restored after the test
    yield fake


def test_in_process_runtime_uses_the_same_path(cells, local_requests):
    local_requests.script(error(503, "overloaded, try later"), text("Second time lucky"))
    [out] = cells(
        'agent("w", {provider = "openai", model = "gpt-4o-mini", tools = {}, max_retries = 1})\nreturn W.turn().data'
    )
    assert out == "Second time lucky"
    assert local_requests.count() == 2


def test_base_url_needs_no_key(cells, local_requests, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.delenv("OPENAI_BASE_URL")
    local_requests.script(text("No key needed"))
    [out] = cells(
        f'agent("w", {{provider = "openai", tools = {{}}, base_url = "{local_requests.openai_url}"}})\n'
        "return W.turn().data"
    )
    assert out == "No key needed" and local_requests.count(RESPONSES) == 1


# ------------------------------------------------------- provider messages
@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"message": "Incorrect API key", "type": "invalid_request_error", "code": "invalid_api_key"},
            "Incorrect API key",
        ),
        ({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}, "slow down"),
        ({"error": {"message": "nested", "code": 7}}, "nested"),
        ({"error": "plain words"}, "plain words"),
        ({"detail": [{"loc": ["body"], "msg": "field required"}]}, "field required"),
        ('{"error": {"message": "from text"}}', "from text"),
        ("  Bad Gateway  ", "Bad Gateway"),
        ({"unexpected": 1}, None),
        (None, None),
    ],
)
def test_provider_message_finds_the_words_in_every_shape(body, message):
    from tactus_kernel.features.agents.provider_errors import provider_message

    assert provider_message(body) == message


def test_a_body_without_a_message_is_shown_as_json():
    from pydantic_ai.exceptions import ModelHTTPError

    from tactus_kernel.features.agents.provider_errors import describe

    failure = describe(ModelHTTPError(502, "m", {"unexpected": True}), "openai:gpt-4o")
    assert str(failure) == "model 'openai:gpt-4o' failed (HTTP 502): {\"unexpected\": true}"
    assert describe(ValueError("not a provider error"), "m") is None


# ------------------------------------------------------------ status_prompt
def test_status_prompt_is_accepted_and_ignored_with_one_notice(cells, monkeypatch):
    """The reference asks for a status only when a caller requests one of an
    async procedure, and its own runtime never does: no turn is taken for it."""
    monkeypatch.setenv("TACTUS_OFFLINE", "1")
    code = """
    status_prompt("Report your progress")
    agent("worker", {tools = {}})
    procedure({name = "work%s", status_prompt = "How far along are you?"}, function()
      return Worker.turn({inject = "Work"}).data
    end)
    """
    [first] = cells(code % "1", key="c1")
    [second] = cells(code % "2", key="c2")
    assert first == second == "success (no tool calls)"
    notices = [t for s, t in cells.host.out if s == "stderr" and "status_prompt" in t]
    assert notices == [
        "status_prompt is accepted and ignored here: nothing asks a running procedure for a status summary "
        "(Procedure.status(handle) reads its record). See docs/agents.md#prompts.\n"
    ]
    for key in ("work1", "work2"):  # one turn each: the status prompt asked for none
        turns = [e for e in cells.runtime.records.procedures[key]["checkpoints"] if e["kind"] == "agent"]
        assert [t["request"]["message"] for t in turns] == ["Work"]
    bad = cells.error("status_prompt(42)", key="c3")
    assert bad.evalue.endswith("status_prompt: expected a string")

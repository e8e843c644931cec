"""Bad input must end in one clear message, never a Python traceback.

A notebook's ``metadata.tactus`` is JSON that people edit by hand, merge in
pull requests and sometimes cut short; command-line params are typed by
people too. Whatever arrives, the kernel and ``tactus-kernel replay`` must
either use it or refuse it with the project's own error, naming the field
(or the procedure and checkpoint) to fix, and they must never overwrite or
drop the record they could not read.

1. Fuzzed metadata: Hypothesis mutates real recorded blocks (from
   notebooks/) and makes up random ones, and feeds them to every loader:
   ``parse_metadata``, the kernel's comm (``RecordsChannel.open``) and the
   replay CLI's ``read_notebook`` + ``prepare``.
2. Recorded values of the wrong type for their call, edited by hand.
3. Params of the wrong type from the command line.
4. String bombs inside a procedure (the top-level ones are in
   test_sandbox_escapes.py).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pydantic_ai.models
import pytest
from conftest import Cells
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from replay_helpers import load, run_cli

from tactus_kernel.cli import main
from tactus_kernel.engine.records import Records, field_path
from tactus_kernel.jupyter.notebook_host import RecordsChannel
from tactus_kernel.protocol import MetadataError, parse_metadata
from tactus_kernel.replay.notebook_io import prepare, read_notebook
from tactus_kernel.replay.outcome import ReplayOptions
from tactus_kernel.replay.params import InputError

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
QUICKSTART = NOTEBOOKS / "quickstart.ipynb"
# Valid blocks recorded for real: quickstart (a step and an approval) and
# composition (child records nested five deep, agent turns, spawned children).
SEEDS = {
    name: json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())["metadata"]["tactus"]
    for name in ("quickstart", "composition")
}

Loc = tuple[str | int, ...]


# ------------------------------------------------------------------ helpers
def paths(node: Any, prefix: Loc = ()) -> Iterator[Loc]:
    """Every place in a JSON value, the root first."""
    yield prefix
    if isinstance(node, dict):
        for key, child in node.items():
            yield from paths(child, (*prefix, key))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from paths(child, (*prefix, i))


def at(node: Any, path: Loc) -> Any:
    for part in path:
        node = node[part]
    return node


def names_a_place_under(message: str, touched: list[Loc]) -> bool:
    """Whether the message's field path is at or under one of the mutated
    places: everything else in the block is still valid, so the first bad
    field the loader reports must be there."""
    start = message.find("metadata.tactus")
    if start < 0:
        return False
    tail = message[start:]
    for path in touched:
        prefix = field_path(path)
        if tail.startswith(prefix) and tail[len(prefix) : len(prefix) + 1] in (".", ":"):
            return True
    return False


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["step", "human", "approve", "2026-01-01T00:00:00.000Z", "checkpoints", "version"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
FIELDS = ["kind", "name", "value", "at", "request", "message", "checkpoints", "children", "status"]
# Random blocks shaped enough like the schema to get past its first checks.
NEAR_VALID = st.fixed_dictionaries(
    {
        "version": st.just(1) | JSON,
        "procedures": st.dictionaries(
            st.text(max_size=8),
            st.dictionaries(st.sampled_from(FIELDS), JSON | st.lists(st.dictionaries(st.sampled_from(FIELDS), JSON))),
            max_size=3,
        )
        | JSON,
    }
)


@st.composite
def mutated_blocks(draw: st.DrawFn) -> tuple[Any, list[Loc]]:
    """A recorded block with one to three edits: a field dropped, a value of
    another type, a list or string cut short, the version bumped. Returns
    the block and the places edited."""
    block: Any = copy.deepcopy(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    touched: list[Loc] = []
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["drop", "retype", "truncate", "version"]))
        if op == "version":
            if isinstance(block, dict):
                block["version"] = draw(st.integers(-2, 3) | JSON)
                touched.append(("version",))
            continue
        path = draw(st.sampled_from(list(paths(block))))
        node = at(block, path)
        if op == "retype" or (op == "drop" and not path):
            new = draw(JSON)
            if path:
                at(block, path[:-1])[path[-1]] = new
            else:
                block = new
            touched.append(path)
        elif op == "drop":
            parent = at(block, path[:-1])
            del parent[path[-1]]
            # a list element dropped shifts the rest: the list is what changed
            touched.append(path if isinstance(parent, dict) else path[:-1])
        elif isinstance(node, (list, str)) and path:
            at(block, path[:-1])[path[-1]] = node[: draw(st.integers(0, max(0, len(node) - 1)))]
            touched.append(path)
    return block, touched


class FakeComm:
    """What the kernel's ``tactus`` comm needs: it sends, we keep."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, data: dict[str, Any]) -> None:
        json.dumps(data)  # a comm message must be JSON
        self.sent.append(data)

    def on_close(self, callback: Any) -> None:
        pass

    def on_msg(self, callback: Any) -> None:
        pass


def check_every_loader(block: Any, folder: Path, touched: list[Loc] | None = None) -> None:
    """The property: each loader takes the block, or refuses it with the
    project's error (MetadataError / one warning op / InputError) naming
    the bad field, and loads nothing from a block it refused."""
    # 1. The parser itself.
    refused: str | None = None
    try:
        records = parse_metadata(block)
    except MetadataError as exc:
        refused = message = str(exc)
        assert message.startswith("metadata.tactus") and "\n" not in message, message
        event("refused: " + message.split(" (found")[0].split(": ", 1)[-1])
        if touched is not None:
            assert names_a_place_under(message, touched), (message, touched)
    else:
        event("used")
        assert isinstance(records, dict)
        for rec in records.values():
            assert all(
                isinstance(e["kind"], str) and isinstance(e["name"], str) and "value" in e for e in rec["checkpoints"]
            )
        json.dumps(records)  # goes out on the comm as it is

    # 2. The kernel, when a frontend opens the comm with this block.
    comm = FakeComm()
    channel = RecordsChannel(Records())
    channel.open(comm, {"content": {"data": {"tactus": block}}})
    if refused is None:
        assert channel.records.procedures == records
        assert [op for op in comm.sent if op["op"] == "warning"] == []
    else:
        [warning] = comm.sent  # one warning, no update that could overwrite the block
        assert warning["op"] == "warning" and refused in warning["message"]
        assert "left untouched" in warning["message"]
        assert channel.records.procedures == {}

    # 3. tactus-kernel replay, before any kernel starts.
    nb = nbformat.v4.new_notebook()
    nb.metadata["tactus"] = block
    path = folder / "fuzzed.ipynb"
    path.write_text(json.dumps(nb))
    try:
        prepare(read_notebook(path), ReplayOptions())
    except InputError as exc:
        assert refused is not None and refused in str(exc) and "\n" not in str(exc), str(exc)
    else:
        assert refused is None


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for every Hypothesis example (function-scoped tmp_path
    would be shared between examples anyway)."""
    return tmp_path_factory.mktemp("fuzz")


# --------------------------------------------------- 1. fuzzed metadata
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=mutated_blocks())
def test_a_mutated_recorded_block_is_used_or_refused_naming_the_field(
    case: tuple[Any, list[Loc]], scratch: Path
) -> None:
    """Edits a person (or a bad merge) makes to a real record: each loader
    uses the block or names a field at or under the edited place."""
    block, touched = case
    check_every_loader(block, scratch, touched)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(block=JSON | NEAR_VALID)
def test_random_json_as_metadata_is_used_or_refused_cleanly(block: Any, scratch: Path) -> None:
    """Anything JSON at all, and blocks shaped almost like the schema."""
    check_every_loader(block, scratch)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(0, len(QUICKSTART.read_text().rstrip()) - 1))
def test_a_notebook_cut_short_is_refused_in_one_line(cut: int, scratch: Path) -> None:
    """A notebook file truncated anywhere (a disk full, a half-finished
    copy) is not JSON: refused before a kernel starts, in one line naming
    the file."""
    path = scratch / "cut.ipynb"
    path.write_text(QUICKSTART.read_text()[:cut])
    with pytest.raises(InputError) as info:
        read_notebook(path)
    assert str(info.value).startswith(f"{path}: not a Jupyter notebook") and "\n" not in str(info.value)


def test_a_truncated_block_exits_4_naming_the_field_and_leaves_the_file(tmp_path: Path) -> None:
    """End to end: the last checkpoint cut off after its name (as if the
    block had been truncated) makes ``tactus-kernel replay --inplace`` exit
    4 with one line naming the missing field, start no kernel, and leave
    the notebook byte for byte as it was."""
    nb = json.loads(QUICKSTART.read_text())
    entries = nb["metadata"]["tactus"]["procedures"]["report"]["checkpoints"]
    entries[-1] = {"kind": entries[-1]["kind"], "name": entries[-1]["name"]}
    path = tmp_path / "cut.ipynb"
    path.write_text(json.dumps(nb, indent=1))
    before = path.read_bytes()
    run = run_cli("replay", path, "--inplace")
    assert run.returncode == 4, run.stderr
    [line] = run.stderr.strip().splitlines()
    assert line.startswith("tactus-kernel replay: the notebook's checkpoint metadata cannot be replayed: ")
    assert "metadata.tactus.procedures.report.checkpoints.1.value: Field required" in line
    assert "'name': 'Publish the report?'" in line  # the entry is recognisable
    assert not run.kernels
    assert path.read_bytes() == before


# ------------------------------------- 2. recorded values of the wrong type
EDITED = """
procedure({name = "edit"}, function()
  local first = Step.run("first", function() print("first ran") return 1 end)
  Sleep(0.01)
  local ok = Human.approve({message = "Ship it?"})
  local second = Step.run("second", function() print("second ran") return 2 end)
  return {first = first, ok = ok, second = second}
end)"""


@pytest.fixture
def recorded_block(tmp_path: Path) -> dict[str, Any]:
    """The JSON a notebook holds after EDITED ran once, approved."""
    cells = Cells(tmp_path)
    cells.runtime.answers = {"Ship it?": True}
    assert cells(EDITED) == [{"first": 1, "ok": True, "second": 2}]
    block: dict[str, Any] = json.loads(json.dumps(cells.runtime.records.snapshot()))
    assert [e["kind"] for e in block["procedures"]["edit"]["checkpoints"]] == ["step", "sleep", "human", "step"]
    return block


def restarted(tmp_path: Path, block: dict[str, Any]) -> Cells:
    """A fresh runtime given the block as a kernel is after a restart, in
    batch mode (as ``tactus-kernel replay`` runs it)."""
    cells = Cells(tmp_path)
    cells.runtime.records.load(parse_metadata(block))
    cells.runtime.batch = True
    return cells


@pytest.mark.parametrize("value", ["false", "yes", 0, 1, [True], {"approved": False}])
def test_an_approval_edited_to_a_non_boolean_is_a_checkpoint_error(
    value: Any, recorded_block: dict[str, Any], tmp_path: Path
) -> None:
    """``"false"`` typed by hand used to approve (Python's bool("false") is
    True). Now replay stops at that checkpoint, naming the procedure, its
    position, kind and name, and keeps every record as it was."""
    checkpoints = recorded_block["procedures"]["edit"]["checkpoints"]
    checkpoints[2]["value"] = value
    before = copy.deepcopy(checkpoints)
    cells = restarted(tmp_path, recorded_block)
    err = cells.error(EDITED)
    assert err.ename == "CheckpointError"
    assert (
        "procedure 'edit', checkpoint #3 (human 'Ship it?'): a recorded Human.approve answer must be "
        "true or false" in err.evalue
    )
    assert json.dumps(value)[:20] in err.evalue
    assert "internal error" not in err.evalue and "Traceback" not in "\n".join(err.traceback)
    assert cells.runtime.records.procedures["edit"]["checkpoints"] == before
    assert "first ran" not in cells.host.stdout  # the step before it came from the record
    assert cells("1 + 1", key="after") == [2]


@pytest.mark.parametrize("value", [True, False, None])
def test_an_approval_edited_to_another_boolean_or_null_is_used(
    value: Any, recorded_block: dict[str, Any], tmp_path: Path
) -> None:
    """The documented hand edit still works; null is what a timed-out
    approval with no default records, and reads as not approved."""
    recorded_block["procedures"]["edit"]["checkpoints"][2]["value"] = value
    cells = restarted(tmp_path, recorded_block)
    assert cells(EDITED) == [{"first": 1, "ok": bool(value), "second": 2}]


def test_a_sleep_record_holding_a_table_is_harmless(recorded_block: dict[str, Any], tmp_path: Path) -> None:
    """A sleep's recorded value (its seconds) is never read back: replay
    only matches the call by name, so any value there replays fine."""
    recorded_block["procedures"]["edit"]["checkpoints"][1]["value"] = {"a": [1, {"b": None}]}
    cells = restarted(tmp_path, recorded_block)
    assert cells(EDITED) == [{"first": 1, "ok": True, "second": 2}]
    assert cells.runtime.records.procedures["edit"]["checkpoints"][1]["value"] == {"a": [1, {"b": None}]}


def test_a_step_record_without_a_value_is_refused_naming_it(recorded_block: dict[str, Any], tmp_path: Path) -> None:
    """A step without ``value`` used to replay as nil without a word. The
    schema requires it (null is a value), so the block is refused up front,
    naming the procedure, the position and (in the entry shown) the kind
    and name; the kernel warns once and leaves the block alone."""
    del recorded_block["procedures"]["edit"]["checkpoints"][3]["value"]
    with pytest.raises(MetadataError) as info:
        parse_metadata(recorded_block)
    message = str(info.value)
    assert message.startswith("metadata.tactus.procedures.edit.checkpoints.3.value: Field required")
    assert "'kind': 'step', 'name': 'second'" in message
    comm = FakeComm()
    channel = RecordsChannel(Records())
    channel.open(comm, {"content": {"data": {"tactus": recorded_block}}})
    assert [op["op"] for op in comm.sent] == ["warning"] and message in comm.sent[0]["message"]
    # null is a value, and replays as nil
    recorded_block["procedures"]["edit"]["checkpoints"][3]["value"] = None
    assert restarted(tmp_path, recorded_block)(EDITED) == [{"first": 1, "ok": True}]


AGENT = """
agent("scribe", {mock = {responses = {"drafted"}}})
procedure({name = "write"}, function()
  local outline = Step.run("outline", function() return "intro, body" end)
  return {outline = outline, text = Scribe.turn().data}
end)"""


@pytest.mark.parametrize(
    ("field", "garbage", "reason"),
    [
        ("messages", "garbage", "messages: Input should be a valid list"),
        ("messages", [1, 2], "messages.0: Input should be a valid dictionary"),
        ("messages", [{"kind": "nonsense"}], "messages.0: Input tag 'nonsense'"),
        ("usage", "lots", 'usage: expected an object, found "lots"'),
        ("replaces", "two", 'replaces: expected a number, found "two"'),
    ],
)
def test_an_agent_record_with_garbage_is_an_agent_error_naming_it(
    field: str, garbage: Any, reason: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A turn is replayed from its recorded messages; unreadable ones stop
    the replay at that turn with one line (not pydantic's multi-line report,
    not an ``internal error``), and the step before it is still replayed."""
    monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", False)
    cells = Cells(tmp_path)
    assert cells(AGENT) == [{"outline": "intro, body", "text": "drafted"}]
    block = json.loads(json.dumps(cells.runtime.records.snapshot()))
    block["procedures"]["write"]["checkpoints"][1][field] = garbage
    before = copy.deepcopy(block["procedures"]["write"]["checkpoints"])
    again = restarted(tmp_path, block)
    err = again.error(AGENT)
    assert err.ename == "AgentError"
    assert (
        "agent 'scribe': procedure 'write', checkpoint #2 (agent 'scribe'): the recorded turn is unreadable: " + reason
    ) in err.evalue
    assert "\n" not in err.evalue and "internal error" not in err.evalue
    assert again.runtime.records.procedures["write"]["checkpoints"] == before


def test_replay_cli_reports_an_edited_approval_in_one_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """End to end on the quickstart notebook: exit 1, the cell, the
    procedure and checkpoint named, no Python traceback; the written
    notebook keeps the whole record, the bad entry included, to fix."""
    nb = json.loads(QUICKSTART.read_text())
    entries = nb["metadata"]["tactus"]["procedures"]["report"]["checkpoints"]
    entries[1]["value"] = "false"
    path = tmp_path / "edited.ipynb"
    path.write_text(json.dumps(nb))
    out = tmp_path / "out.ipynb"
    code = main(["replay", str(path), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "CheckpointError" in err and "Traceback" not in err
    assert (
        "procedure 'report', checkpoint #2 (human 'Publish the report?'): a recorded Human.approve answer "
        'must be true or false, found "false"' in err
    )
    assert load(out)["metadata"]["tactus"]["procedures"]["report"]["checkpoints"] == entries


# ----------------------------------------- 3. params of the wrong type
PARAMS_NB = [
    ("count = 3", ["parameters"]),
    (
        'procedure({name = "tally", params = {count = {type = "number", default = 1}}}, function()\n'
        "  return {double = params.count * 2}\nend)",
        [],
    ),
    ('Procedure.run("tally", {count = count}).double', []),
    (
        'procedure({name = "scaled", params = {n = {type = "number", default = count}}}, function()\n'
        "  return params.n * 10\nend)",
        [],
    ),
]


@pytest.fixture(scope="module")
def params_notebook(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A papermill-style ``count`` global that reaches a ``number`` param two
    ways: passed to Procedure.run, and as a declared default. Nothing in it
    needs a record, so it is written, not recorded."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "tactus", "display_name": "Tactus (Lua)", "language": "lua"}
    nb.cells = [nbformat.v4.new_code_cell(src, metadata={"tags": tags}) for src, tags in PARAMS_NB]
    path = tmp_path_factory.mktemp("params") / "params.ipynb"
    nbformat.write(nb, str(path))
    return path


def test_params_of_the_right_type_run(params_notebook: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """The baseline for the failures below: the same notebook and flags,
    well typed, run through."""
    out = tmp_path / "out.ipynb"
    code = main(["replay", str(params_notebook), "-o", str(out), "-p", "count=5", "-P", "tally.count=4"])
    assert code == 0, capsys.readouterr().err
    shown = ["".join(o["data"]["text/plain"]) for c in load(out)["cells"] for o in c.get("outputs", []) if "data" in o]
    assert shown == ["{double = 8}", "10", "50"]


@pytest.mark.parametrize(
    ("args", "cell", "message"),
    [
        # the global, passed to Procedure.run
        (["-p", "count=notanumber"], 4, "procedure 'tally': param 'count' must be number, got string 'notanumber'"),
        (["-p", "count=[1, 2]"], 4, "procedure 'tally': param 'count' must be number, got array [1, 2]"),
        # the procedure param itself, when its cell runs it
        (
            ["-P", "tally.count=notanumber"],
            2,
            "procedure 'tally': param 'count' must be number, got string 'notanumber'",
        ),
        (["-P", "tally.count=true"], 2, "procedure 'tally': param 'count' must be number, got boolean True"),
    ],
)
def test_a_param_of_the_wrong_type_fails_its_cell_with_one_clear_line(
    args: list[str], cell: int, message: str, params_notebook: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Well-formed flags (so not the exit-4 usage errors of
    test_replay_cli.py) whose values the procedure's declaration refuses:
    exit 1, the cell (``-p`` injects a cell, so it counts one more) and a
    ParamError naming the procedure, the param, the type wanted and the
    value given."""
    code = main(["replay", str(params_notebook), *args])
    err = capsys.readouterr().err
    assert code == 1, err
    first = err.splitlines()[0]
    assert first.startswith(f"{params_notebook} cell {cell}: ParamError: ")
    assert message in first and "Traceback" not in err


def test_a_wrongly_typed_default_from_a_global_is_refused(cells: Cells) -> None:
    """``default = count`` with ``count = "notanumber"`` (what ``-p`` sets)
    used to reach the procedure unchecked; declared defaults are now
    checked like given params."""
    cells('count = "notanumber"')
    err = cells.error(PARAMS_NB[3][0])
    assert err.ename == "ParamError"
    assert err.evalue == "procedure 'scaled': default of param 'n' must be number, got string 'notanumber'"
    err = cells.error(
        'procedure({name = "pick", params = {n = {type = "number", enum = {1, 2}, default = 3}}}, '
        "function() return params.n end)"
    )
    assert "procedure 'pick': default of param 'n' must be one of 1, 2, got 3" in err.evalue
    cells("count = 2")
    assert cells(PARAMS_NB[3][0]) == [20]


def test_space_instead_of_equals_is_a_usage_error(params_notebook: Path, capsys: pytest.CaptureFixture[str]):
    """``-p count notanumber``: argparse takes ``count`` as the value and
    ``notanumber`` as a stray argument; exit 4 (never 2), before a kernel."""
    with pytest.raises(SystemExit) as info:
        main(["replay", str(params_notebook), "-p", "count", "notanumber"])
    assert info.value.code == 4
    assert "unrecognized arguments: notanumber" in capsys.readouterr().err


# ------------------------------------------------------- 4. string bombs
@pytest.mark.parametrize(
    ("bomb", "ename", "fragment"),
    [
        (
            'local s = string.rep("x", 2^40)',
            "LuaMemoryError",
            "string.rep: the result would be 1 TiB, over the memory limit of 512 MiB",
        ),
        (
            'local s = "x" while true do s = s .. s end',
            "LuaMemoryError",
            "the cell ran out of memory (limit 512 MiB); the kernel is still running",
        ),
    ],
    ids=["string.rep-2^40", "doubling"],
)
def test_a_string_bomb_in_a_step_fails_that_step_and_nothing_else(
    bomb: str, ename: str, fragment: str, cells: Cells
) -> None:
    """test_sandbox_escapes.py covers bombs at the top level of a cell on a
    small heap. Here they go off inside procedures on the default 512 MiB
    heap: caught by pcall, the procedure goes on and records; uncaught in a
    Step.run, the cell fails with one clear error, the failed step is not
    recorded, the steps before it are, and the runtime records again."""
    code = f"""
    procedure({{name = "bomb"}}, function()
      Step.run("before", function() return "kept" end)
      local ok, err = pcall(function() {bomb} end)
      Step.run("caught", function() return {{ok = ok, err = tostring(err)}} end)
      Step.run("boom", function() {bomb} end)
    end)"""
    err = cells.error(code)
    assert err.ename == ename and fragment in err.evalue
    rec = cells.runtime.records.procedures["bomb"]
    assert [e["name"] for e in rec["checkpoints"]] == ["before", "caught"] and rec["status"] == "failed"
    caught = rec["checkpoints"][1]["value"]
    assert caught["ok"] is False
    assert "string.rep: the result would be 1 TiB" in caught["err"] or "not enough memory" in caught["err"]
    assert cells.runtime.lua.get_memory_used() < 16 * 2**20  # the garbage was collected
    assert cells(
        'procedure({name = "after"}, function() return Step.run("s", function() return 7 end) end)', key="after"
    ) == [7]
    assert cells.runtime.records.procedures["after"]["checkpoints"][0]["value"] == 7


# ------------------------------------------- 5. strings that are not UTF-8
@pytest.mark.parametrize(
    ("call", "ename"),
    [
        ('Human.approve({message = "ok\\xff?"})', "SandboxError"),
        ('Human.input({message = "name\\xfe"})', "SandboxError"),
        ('tool("t", {description = "\\xff"}, function() return 1 end)', "AgentError"),
        ('agent("a", {model = "test", system_prompt = "\\xff"})', "AgentError"),
    ],
    ids=["Human.approve", "Human.input", "tool", "agent"],
)
def test_a_string_that_is_not_utf8_is_one_clear_catchable_error(call: str, ename: str, cells: Cells) -> None:
    """Lua strings are bytes; the kernel reads them as UTF-8. A stray byte in
    a message, a description or an option is the caller's error, named as
    such at its line and catchable with pcall, and the steps recorded before
    it stay."""
    cells.runtime.batch = True  # a human request with no answer fails at once instead of waiting
    code = f"""
    procedure({{name = "bytes"}}, function()
      Step.run("before", function() return "kept" end)
      local ok, err = pcall(function() {call} end)
      Step.run("caught", function() return tostring(err) end)
      {call}
    end)"""
    err = cells.error(code)
    assert err.ename == ename
    assert "a string given to the kernel is not valid UTF-8 text (invalid start byte at byte " in err.evalue
    rec = cells.runtime.records.procedures["bytes"]
    assert [e["name"] for e in rec["checkpoints"]] == ["before", "caught"]
    assert "not valid UTF-8 text" in rec["checkpoints"][1]["value"]

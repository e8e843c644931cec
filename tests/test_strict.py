"""Strict mode: a replay where anything not in the record is an error.

Over a real kernel (the ``tactus`` comm opened with ``"strict": true``), the
real ``tactus-kernel replay --strict`` and the real ``pytest --tactus-replay
--tactus-strict``, on notebooks recorded for real.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from kernel_driver import KernelDriver
from replay_helpers import GREET, RELEASE, Cell, click, edit_cell, record_notebook, run_cli, steps, type_answer
from test_pytest_plugin import pytest_run, summary

PARAMS = Cell('greeting = "hello"', tags=["parameters"])
WRITER = """\
agent("writer", {model = "openai:gpt-4o-mini", system_prompt = "Write one line."})
procedure({name = "write"}, function()
  return {line = Writer.turn({inject = "a haiku"}).data}
end)"""


@pytest.fixture
def strict_kernel(tmp_path: Path) -> Iterator[KernelDriver]:
    """A kernel told by its replay client to run strictly, with no record."""
    driver = KernelDriver(tmp_path, widgets=False)
    driver.open_tactus(None, replay=True, strict=True)
    try:
        yield driver
    finally:
        driver.shutdown()


def in_p(body: str) -> str:
    return f'procedure({{name = "p"}}, function()\n  {body}\nend)'


CHILD = (
    'procedure({name = "child", params = {x = {type = "number", required = true}}}, function() print("RAN LIVE") end)'
)


@pytest.mark.parametrize(
    ("code", "call"),
    [
        (
            in_p('Step.run("fetch", function() print("RAN LIVE"); return 1 end)'),
            "Step.run 'fetch' (checkpoint #1, kind step)",
        ),
        (in_p('Sleep(0.01); print("RAN LIVE")'), "Sleep 'sleep 0.01s' (checkpoint #1, kind sleep)"),
        (
            in_p('Human.approve({message = "Ship it?"}); print("RAN LIVE")'),
            "human request 'Ship it?' (checkpoint #1, kind human)",
        ),
        (
            CHILD + "\n" + in_p('Procedure.run("child", {x = 1})'),
            "child procedure 'child' (checkpoint #1, kind procedure)",
        ),
        (
            'agent("bot", {model = "test"})\n' + in_p('Bot.turn(); print("RAN LIVE")'),
            "agent turn 'bot' (checkpoint #1, kind agent)",
        ),
    ],
    ids=["step", "sleep", "human", "child", "agent"],
)
def test_each_kind_not_recorded_is_an_error(strict_kernel: KernelDriver, code: str, call: str):
    run = strict_kernel.run(code)
    assert run.error is not None, run.messages
    assert run.error["ename"] == "NotRecordedError"
    evalue = run.error["evalue"]
    assert "strict mode: procedure 'p': " + call in evalue, evalue
    assert "was not recorded, and strict mode runs nothing live" in evalue
    assert "[cell 1]:" in evalue  # the cell
    assert "RAN LIVE" not in run.stdout
    strict_kernel.drain(0.2)
    assert strict_kernel.run("1 + 1").result == "2"  # the kernel lives on


def test_a_pcall_does_not_hide_a_call_not_recorded(strict_kernel: KernelDriver):
    run = strict_kernel.run(
        'procedure({name = "p"}, function()\n'
        '  local ok = pcall(Step.run, "fetch", function() print("RAN LIVE") end)\n'
        "  return {caught = not ok}\nend)"
    )
    assert run.error is not None, run.messages
    assert run.error["ename"] == "NotRecordedError"
    assert run.error["evalue"].startswith("strict mode: procedure 'p': Step.run 'fetch' (checkpoint #1, kind step)")
    assert "RAN LIVE" not in run.stdout


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A release notebook recorded for real (steps), and a greeting notebook
    whose person answered both requests."""
    root = tmp_path_factory.mktemp("strict")
    record_notebook(root / "release.ipynb", [PARAMS, RELEASE])
    record_notebook(root / "greet.ipynb", [PARAMS, Cell(GREET, interact=steps(type_answer("Ada"), click("Approve")))])
    return root


def test_cli_a_recorded_notebook_passes_in_strict_mode(recorded: Path):
    run = run_cli("replay", recorded / "greet.ipynb", "--strict")
    assert run.returncode == 0, run.stderr
    assert "2 cells ran" in run.stderr


def test_cli_a_step_not_recorded_exits_2_naming_cell_procedure_and_call(recorded: Path, tmp_path: Path):
    nb = edit_cell(
        recorded / "release.ipynb",
        tmp_path / "more.ipynb",
        1,
        RELEASE.replace(
            "  return {", '  Step.run("deploy", function() print("DEPLOYED LIVE"); return 1 end)\n  return {'
        ),
    )
    out = tmp_path / "out.ipynb"
    run = run_cli("replay", nb, "--strict", "-o", out)
    assert run.returncode == 2, run.stderr
    assert 'more.ipynb cell 2, procedure "release": NotRecordedError: ' in run.stderr
    assert "strict mode: procedure 'release': Step.run 'deploy' (checkpoint #3, kind step) was not recorded" in (
        run.stderr
    )
    assert "Traceback (most recent call last)" not in run.stderr
    written = json.loads(out.read_text())
    outputs = [o for c in written["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    assert any(o["output_type"] == "error" and o["ename"] == "NotRecordedError" for o in outputs)
    assert "DEPLOYED LIVE" not in json.dumps(outputs)
    assert [c["name"] for c in written["metadata"]["tactus"]["procedures"]["release"]["checkpoints"]] == [
        "build",
        "test",
    ]
    # without --strict the same notebook runs the new step live and records it
    assert run_cli("replay", nb, "-o", out).returncode == 0


def test_cli_a_human_request_not_recorded(recorded: Path, tmp_path: Path):
    nb = json.loads((recorded / "greet.ipynb").read_text())
    rec = nb["metadata"]["tactus"]["procedures"]["greet"]
    rec["checkpoints"] = [c for c in rec["checkpoints"] if c["name"] != "Send the greeting?"]
    path = tmp_path / "greet.ipynb"
    path.write_text(json.dumps(nb))
    run = run_cli("replay", path, "--strict")
    assert run.returncode == 2, run.stderr
    assert "human request 'Send the greeting?' (checkpoint #2, kind human) was not recorded" in run.stderr


def test_cli_strict_refuses_flags_that_would_record(recorded: Path):
    run = run_cli("replay", recorded / "greet.ipynb", "--strict", "--answer", "Your name?=Ada")
    assert run.returncode == 4
    assert "strict mode records nothing new: it cannot be combined with --answer or --allow-divergence" in run.stderr


@pytest.fixture
def model_guarded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake key in the environment, and every kernel started with
    pydantic-ai's ALLOW_MODEL_REQUESTS = False (a sitecustomize), so a live
    turn fails before the network with pydantic-ai's own error."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import pydantic_ai.models\npydantic_ai.models.ALLOW_MODEL_REQUESTS = False\n"
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fake-key-for-strict-mode-test")
    for var in ("TACTUS_OFFLINE", "TACTUS_MODEL"):
        monkeypatch.delenv(var, raising=False)
    nb = tmp_path / "writer.ipynb"
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "tactus", "display_name": "Tactus (Lua)", "language": "lua"}
    notebook.cells.append(nbformat.v4.new_code_cell(WRITER))
    nbformat.write(notebook, str(nb))
    return nb


def test_cli_an_agent_turn_not_recorded_never_calls_the_model(model_guarded: Path):
    run = run_cli("replay", model_guarded, "--strict")
    assert run.returncode == 2, run.stderr
    assert "NotRecordedError: " in run.stderr
    assert "strict mode: procedure 'write': agent turn 'writer' (checkpoint #1, kind agent) was not recorded" in (
        run.stderr
    )
    assert "ALLOW_MODEL_REQUESTS" not in run.stderr
    # the control: without --strict the turn goes live and meets the guard
    live = run_cli("replay", model_guarded)
    assert live.returncode == 1, live.stderr
    assert "AgentError" in live.stderr and "may not be called here" in live.stderr


def test_pytest_plugin_strict(recorded: Path, tmp_path: Path):
    root = tmp_path / "project"
    (root / "notebooks").mkdir(parents=True)
    (root / "pytest.ini").write_text("[pytest]\n")
    (root / "notebooks" / "greet.ipynb").write_bytes((recorded / "greet.ipynb").read_bytes())
    edit_cell(
        recorded / "release.ipynb",
        root / "notebooks" / "more.ipynb",
        1,
        RELEASE.replace("  return {", "  Sleep(0.01)\n  return {"),
    )
    proc = pytest_run(root, "--tactus-replay", "--tactus-strict", "notebooks", "-q")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 failed, 1 passed" in summary(proc), proc.stdout
    assert 'notebooks/more.ipynb cell 2, procedure "release": NotRecordedError: ' in proc.stdout
    assert "Sleep 'sleep 0.01s' (checkpoint #3, kind sleep) was not recorded" in proc.stdout
    assert "FAILED notebooks/more.ipynb::replay" in proc.stdout


def test_the_example_notebooks_replay_strictly():
    """Every notebook of this project is fully recorded: it replays in strict mode."""
    repo = Path(__file__).resolve().parent.parent
    found = sorted((repo / "notebooks").glob("*.ipynb"))
    proc = pytest_run(repo, "--tactus-replay", "--tactus-strict", "notebooks", "-q", "-o", "addopts=", timeout=150)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert f"{len(found)} passed" in summary(proc)


def test_one_item_per_notebook_for_sharding():
    """Sharding plugins split by item: each notebook is exactly one item."""
    repo = Path(__file__).resolve().parent.parent
    found = sorted(p.name for p in (repo / "notebooks").glob("*.ipynb"))
    proc = pytest_run(repo, "--tactus-replay", "notebooks", "--collect-only", "-q", "-o", "addopts=")
    items = [line for line in proc.stdout.splitlines() if "::" in line]
    assert items == [f"notebooks/{name}::replay" for name in found], proc.stdout

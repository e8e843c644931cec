"""``tactus-kernel replay`` on notebooks recorded for real in tmp_path.

Each notebook is first recorded by driving a real kernel the way
JupyterLab does (tests/replay_helpers.py), then replayed: in-process
through ``cli.main`` where only the outcome matters, and as a real
subprocess where exit codes, timing, signals and leftover kernel
processes matter.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from replay_helpers import (
    GREET,
    RELEASE,
    Cell,
    alive,
    click,
    edit_cell,
    kernels_of,
    load,
    record_notebook,
    run_cli,
    steps,
    type_answer,
    wait_gone,
)

from tactus_kernel.cli import main
from tactus_kernel.replay.params import lua_literal

PARAMS = Cell('-- defaults\ngreeting = "hello"', tags=["parameters"])
UNNAMED = 'procedure(function() return Step.run("count", function() print("counting"); return 41 + 1 end) end)'


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Markdown, a parameters cell, a named procedure with two steps and
    an unnamed one (keyed by its cell id)."""
    path = tmp_path_factory.mktemp("rec") / "release.ipynb"
    record_notebook(path, [Cell("# Release", markdown=True), PARAMS, RELEASE, UNNAMED])
    return path


@pytest.fixture(scope="module")
def greet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A notebook whose answers a person gave by clicking the cards."""
    path = tmp_path_factory.mktemp("greet") / "greet.ipynb"
    record_notebook(path, [PARAMS, Cell(GREET, interact=steps(type_answer("Ada"), click("Approve")))])
    return path


def replay(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str]:
    code = main(["replay", *map(str, args)])
    return code, capsys.readouterr().err


def outputs_text(cell: Any) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            parts.append("".join(out["text"]))
        elif "data" in out:
            parts.append("".join(out["data"].get("text/plain", "")))
        elif out["output_type"] == "error":
            parts.append(f"{out['ename']}: {out['evalue']}")
    return "".join(parts)


# ------------------------------------------------------------------ success
def test_replay_runs_every_cell_and_writes_outputs_and_metadata(recorded: Path, tmp_path: Path, capsys):
    out = tmp_path / "out.ipynb"
    code, err = replay(capsys, recorded, "-o", out)
    assert code == 0, err
    assert "4 cells" not in err  # markdown is not a code cell
    assert "3 cells ran" in err
    nb = load(out)
    before = load(recorded)
    code_cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert [c["execution_count"] for c in code_cells] == [1, 2, 3]
    release, unnamed = code_cells[1], code_cells[2]
    assert 'env = "staging"' in outputs_text(release) and "passed = 3" in outputs_text(release)
    # Steps came from the record: their bodies did not run again.
    assert "building" not in outputs_text(release)
    assert outputs_text(unnamed).strip() == "42" and "counting" not in outputs_text(unnamed)
    # The unnamed procedure kept its cell-id key: the replay sent the same
    # cell ids as the live notebook, so nothing new was recorded.
    assert set(nb["metadata"]["tactus"]["procedures"]) == {"release", unnamed["id"]}
    for key, rec in before["metadata"]["tactus"]["procedures"].items():
        assert nb["metadata"]["tactus"]["procedures"][key]["checkpoints"] == rec["checkpoints"]
    assert nb["metadata"]["language_info"]["name"] == "lua"
    assert load(recorded)["cells"][1].get("outputs") == before["cells"][1].get("outputs")  # input untouched


def test_hand_edited_value_is_used(recorded: Path, tmp_path: Path, capsys):
    nb = load(recorded)
    [build] = [e for e in nb["metadata"]["tactus"]["procedures"]["release"]["checkpoints"] if e["name"] == "build"]
    build["value"] = {"ok": False}
    edited = tmp_path / "edited.ipynb"
    edited.write_text(json.dumps(nb))
    out = tmp_path / "out.ipynb"
    code, err = replay(capsys, edited, "-o", out)
    assert code == 0, err
    result = load(out)
    assert "built = false" in outputs_text(result["cells"][2])
    assert result["metadata"]["tactus"]["procedures"]["release"]["output"]["built"] is False


def test_delete_ops_remove_records(recorded: Path, tmp_path: Path, capsys):
    nb = load(recorded)
    nb["cells"].append(
        {
            "cell_type": "code",
            "id": "reset-cell",
            "metadata": {},
            "outputs": [],
            "execution_count": None,
            "source": "%tactus reset release",
        }
    )
    path = tmp_path / "reset.ipynb"
    path.write_text(json.dumps(nb))
    out = tmp_path / "out.ipynb"
    code, err = replay(capsys, path, "-o", out)
    assert code == 0, err
    assert list(load(out)["metadata"]["tactus"]["procedures"]) == [nb["cells"][3]["id"]]


def test_inplace_and_quiet(recorded: Path, tmp_path: Path, capsys):
    copy = tmp_path / "copy.ipynb"
    copy.write_bytes(recorded.read_bytes())
    code, err = replay(capsys, copy, "--inplace", "--quiet")
    assert code == 0 and err == ""
    assert load(copy)["cells"][2]["outputs"]


def test_progress_per_cell_on_a_terminal(recorded: Path):
    master, replica = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tactus_kernel", "replay", str(recorded), "-P", "nosuch.x=1"],
        stdout=subprocess.DEVNULL,
        stderr=replica,
    )
    os.close(replica)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the command exited and closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(60) == 0
    text = b"".join(chunks).decode().replace("\r\n", "\n")
    lines = [line.split() for line in text.splitlines()]
    assert ["cell", "2/3", "release"] in [line[:3] for line in lines], text
    assert any(line[:2] == ["cell", "3/3"] and line[3].endswith("s") for line in lines), text
    assert "procedure params given for procedures that did not run: nosuch" in text


def test_progress_and_summary_only_on_a_terminal(recorded: Path, tmp_path: Path):
    run = run_cli("replay", recorded, "-o", tmp_path / "o.ipynb")
    assert run.returncode == 0, run.stderr
    assert "cell 2/3" not in run.stderr  # stderr is a pipe here: no per-cell progress
    assert "3 cells ran" in run.stderr
    assert "Traceback" not in run.stderr and "without encryption" not in run.stderr
    assert run.kernels and alive(run.kernels) == []  # shut down, not orphaned


# -------------------------------------------------------------- divergence
DIVERGENCES = {
    "renamed": (RELEASE.replace('"build"', '"compile"'), "step 'build'", "step 'compile'", 1),
    "reordered": (
        RELEASE.replace(
            '  local b = Step.run("build"',
            '  local t0 = Step.run("test", function() return 0 end)\n  local b = Step.run("build"',
            1,
        ),
        "step 'build'",
        "step 'test'",
        1,
    ),
    "inserted": (
        RELEASE.replace(
            '  local t = Step.run("test"', '  Step.run("lint", function() return true end)\n  local t = Step.run("test"'
        ),
        "step 'test'",
        "step 'lint'",
        2,
    ),
    "removed": (
        RELEASE.replace(
            '  local t = Step.run("test", function() print("testing"); return {passed = 3} end)\n',
            "  local t = {passed = 0}\n",
        ),
        "step 'test'",
        "the end of the procedure",
        2,
    ),
}


@pytest.mark.parametrize("kind", sorted(DIVERGENCES))
def test_divergence_exits_3_and_shows_both_calls(kind: str, recorded: Path, tmp_path: Path, capsys):
    source, was, now, position = DIVERGENCES[kind]
    assert source != RELEASE
    nb_path = edit_cell(recorded, tmp_path / f"{kind}.ipynb", 2, source)
    out = tmp_path / "out.ipynb"
    code, err = replay(capsys, nb_path, "-o", out)
    assert code == 3, err
    headline = err.splitlines()[0]
    assert headline == f'{nb_path} cell 2, procedure "release": replay diverged from the recorded checkpoints'
    row = next(line for line in err.splitlines() if line.split()[:2] == ["->", str(position)])
    assert was in row and now in row and row.index(was) < row.index(now)
    assert "recorded" in err and "now" in err and "cell 2 source:" in err
    assert "--allow-divergence" in err
    result = load(out)
    assert result["cells"][0]["metadata"]["tags"] == ["tactus-replay-error"]
    errors = [o for c in result["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert errors and errors[0]["ename"] == "DivergenceError"


CHILD = """procedure({name = "double", params = {n = {type = "number", required = true}}}, function()
  return {v = Step.run("mul", function() return params.n * 2 end)}
end)"""
CALLER = 'procedure({name = "main"}, function() return Procedure.run("double", {n = 3}) end)'


def test_a_child_called_with_other_params_diverges_with_both_params(tmp_path: Path, capsys):
    """A params divergence is reported from its own fields: the recorded
    and the new params of the same child procedure, side by side."""
    path = tmp_path / "params.ipynb"
    record_notebook(path, [CHILD, CALLER])
    changed = edit_cell(path, tmp_path / "changed.ipynb", 1, CALLER.replace("n = 3", "n = 4"))
    code, err = replay(capsys, changed)
    assert code == 3, err
    assert err.splitlines()[0] == f'{changed} cell 2, procedure "main": replay diverged from the recorded checkpoints'
    row = next(line for line in err.splitlines() if line.split()[:2] == ["->", "1"])
    was, now = "procedure 'double' with params {\"n\": 3}", "procedure 'double' with params {\"n\": 4}"
    assert was in row and now in row and row.index(was) < row.index(now)


def test_allow_divergence_records_the_new_calls(recorded: Path, tmp_path: Path, capsys):
    source = DIVERGENCES["renamed"][0]
    nb_path = edit_cell(recorded, tmp_path / "renamed.ipynb", 2, source)
    out = tmp_path / "out.ipynb"
    code, err = replay(capsys, nb_path, "-o", out, "--allow-divergence")
    assert code == 0, err
    checkpoints = load(out)["metadata"]["tactus"]["procedures"]["release"]["checkpoints"]
    assert [e["name"] for e in checkpoints] == ["compile", "test"]
    assert "building" in outputs_text(load(out)["cells"][2])  # run for real this time


# -------------------------------------------------------------- parameters
def test_parameters_p_f_and_procedure_params(recorded: Path, tmp_path: Path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("greeting: from yaml\nunused: [1, 2]\n")
    out = tmp_path / "out.ipynb"
    code, err = replay(capsys, recorded, "-o", out, "-f", params, "-P", "release.env=prod")
    assert code == 0, err
    assert "not in the cell tagged `parameters` (set anyway): unused" in err
    nb = load(out)
    injected = nb["cells"][2]
    assert injected["metadata"]["tags"] == ["injected-parameters"]
    assert 'greeting = "from yaml"' in "".join(injected["source"])
    assert "unused = {1, 2}" in "".join(injected["source"])
    release = nb["metadata"]["tactus"]["procedures"]["release"]
    assert release["output"] == {"env": "prod", "built": True, "passed": 3, "greeting": "from yaml"}
    assert release["params"] == {"env": "prod"}

    # -p wins over -f, and a second replay replaces the injected cell.
    code, err = replay(capsys, out, "--inplace", "-f", params, "-p", "greeting=hi there")
    assert code == 0, err
    nb = load(out)
    assert sum("injected-parameters" in c["metadata"].get("tags", []) for c in nb["cells"]) == 1
    assert nb["metadata"]["tactus"]["procedures"]["release"]["output"]["greeting"] == "hi there"


def test_parameter_values_become_lua_literals(tmp_path: Path, capsys):
    path = tmp_path / "types.ipynb"
    show = Cell("print(Json.encode({n = n, f = f, b = b, s = s, l = l, o = o, q = q}))")
    record_notebook(path, [Cell("n, f, b, s, l, o, q = 0, 0, false, '', {}, {}, ''", tags=["parameters"]), show])
    out = tmp_path / "out.ipynb"
    code, err = replay(
        capsys,
        path,
        "-o",
        out,
        "-p",
        "n=3",
        "-p",
        "f=2.5",
        "-p",
        "b=true",
        "-p",
        "s=prod",
        "-p",
        'l=[1, "two"]',
        "-p",
        'o={"k": {"deep": null, "x": 1}}',
        "-p",
        'q=say "hi"\\n\n',
    )
    assert code == 0, err
    value = json.loads(outputs_text(load(out)["cells"][2]))
    assert value == {
        "n": 3,
        "f": 2.5,
        "b": True,
        "s": "prod",
        "l": [1, "two"],
        "o": {"k": {"x": 1}},
        "q": 'say "hi"\\n\n',
    }


@pytest.mark.parametrize(
    ("value", "lua"),
    [
        (None, "nil"),
        (True, "true"),
        (-7, "-7"),
        (1.5, "1.5"),
        (float("inf"), "math.huge"),
        ('a"b\\c\n\x01', '"a\\"b\\\\c\\n\\001"'),
        ([1, [2]], "{1, {2}}"),
        ({"end": 1, "ok": 2}, '{["end"] = 1, ok = 2}'),
    ],
)
def test_lua_literal(value: Any, lua: str):
    assert lua_literal(value) == lua


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "nokey"], "expected KEY=VALUE"),
        (["-p", "end=1"], "not a Lua variable name"),
        (["-P", "noproc=1"], "expected PROCEDURE.PARAM=VALUE"),
        (["--answers", "missing.json"], "cannot read it"),
        (["-f", "bad.yaml"], "not valid YAML"),
        (["-f", "list.yaml"], "expected a mapping"),
    ],
)
def test_bad_parameters_exit_4_with_a_clear_message(args, message, recorded: Path, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("a: [unclosed\n")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    code, err = replay(capsys, recorded, *args)
    assert code == 4
    assert message in err and "Traceback" not in err


def test_usage_errors_exit_4_not_2(recorded: Path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["replay", str(recorded), "--no-such-option"])
    assert info.value.code == 4
    with pytest.raises(SystemExit) as info:
        main(["replay", str(recorded), "-o", "x.ipynb", "--inplace"])
    assert info.value.code == 4


def test_not_json_notebook(tmp_path: Path):
    bad = tmp_path / "broken.ipynb"
    bad.write_text("{ this is not json")
    run = run_cli("replay", bad)
    assert run.returncode == 4
    assert run.stderr.strip() == f"tactus-kernel replay: {bad}: not a Jupyter notebook (not JSON)"
    assert not run.kernels  # refused before any kernel started
    missing = run_cli("replay", tmp_path / "nope.ipynb")
    assert missing.returncode == 4 and "no such notebook" in missing.stderr


def test_unusable_metadata_is_refused(recorded: Path, tmp_path: Path, capsys):
    nb = load(recorded)
    nb["metadata"]["tactus"]["version"] = 99
    bad = tmp_path / "bad-meta.ipynb"
    bad.write_text(json.dumps(nb))
    code, err = replay(capsys, bad)
    assert code == 4 and "metadata.tactus.version" in err


# ----------------------------------------------------------- cell failures
def test_cell_error_exits_1_marks_the_cell_and_shows_the_source(recorded: Path, tmp_path: Path, capsys):
    nb_path = edit_cell(recorded, tmp_path / "err.ipynb", 3, "local x = nil\nlocal y = 1\nreturn x.field")
    out = tmp_path / "out.ipynb"
    code, err = replay(capsys, nb_path, "-o", out)
    assert code == 1
    lines = err.splitlines()
    assert lines[0].startswith(f"{nb_path} cell 3: LuaError: [cell 3]:3: attempt to index a nil value")
    assert any(line.startswith("  > 3 | return x.field") for line in lines)
    nb = load(out)
    marker = [i for i, c in enumerate(nb["cells"]) if "tactus-replay-error" in c["metadata"].get("tags", [])]
    assert len(marker) == 2 and marker[0] == 0
    failing = nb["cells"][marker[1] + 1]
    assert "".join(failing["source"]).startswith("local x = nil")
    assert failing["outputs"][-1]["ename"] == "LuaError"
    # The record of the cells that ran is kept.
    assert "release" in nb["metadata"]["tactus"]["procedures"]
    # Replaying the marked output again drops the old markers.
    code, err = replay(capsys, out, "--inplace")
    assert code == 1
    assert len([c for c in load(out)["cells"] if "tactus-replay-error" in c["metadata"].get("tags", [])]) == 2


def test_timeout_exits_1_and_leaves_no_kernel(recorded: Path, tmp_path: Path):
    nb_path = edit_cell(recorded, tmp_path / "slow.ipynb", 3, "local n = 0\nwhile true do n = n + 1 end")
    out = tmp_path / "out.ipynb"
    run = run_cli("replay", nb_path, "-o", out, "--timeout", "2")
    assert run.returncode == 1, run.stderr
    assert f"{nb_path} cell 3: the cell did not finish within 2s (--timeout)" in run.stderr
    assert run.elapsed < 30
    assert run.kernels, "the kernel process was not seen"
    assert wait_gone(run.kernels) == []
    [cell] = [c for c in load(out)["cells"] if c["cell_type"] == "code" and "while true" in "".join(c["source"])]
    assert cell["outputs"][-1]["ename"] == "CellTimeoutError"


def test_no_orphan_kernels_after_error_and_divergence(recorded: Path, tmp_path: Path):
    cases = {
        "error": edit_cell(recorded, tmp_path / "e.ipynb", 3, "error('boom')"),
        "divergence": edit_cell(recorded, tmp_path / "d.ipynb", 2, DIVERGENCES["renamed"][0]),
    }
    for name, path in cases.items():
        run = run_cli("replay", path)
        assert run.returncode == {"error": 1, "divergence": 3}[name], run.stderr
        assert run.kernels, name
        assert alive(run.kernels) == [], f"{name}: kernel left running"


def test_sigterm_shuts_the_kernel_down(recorded: Path, tmp_path: Path):
    # the cell says it is running by writing a file (File.write is atomic), then sleeps
    nb_path = edit_cell(recorded, tmp_path / "slow.ipynb", 3, 'File.write("sleeping.txt", "yes")\nSleep(60)')
    marker = tmp_path / "sleeping.txt"
    seen: dict[str, Any] = {}

    def terminate_when_running(proc):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not marker.exists():  # the event itself: the Sleep cell runs
            assert proc.poll() is None, "the replay ended before its Sleep cell ran"
            time.sleep(0.02)
        assert marker.read_text() == "yes", "the Sleep cell did not start within 60 s"
        seen["kernels"] = set(kernels_of(proc.pid))
        os.kill(proc.pid, signal.SIGTERM)

    # the edited cell no longer matches its record: re-record it (and sleep)
    run = run_cli("replay", nb_path, "--allow-divergence", on_start=terminate_when_running)
    assert run.returncode == 130, run.stderr
    assert "interrupted" in run.stderr
    assert seen["kernels"] and wait_gone(seen["kernels"]) == []


# ------------------------------------------------------------------ humans
def test_recorded_answers_replay_without_anyone(greet: Path, tmp_path: Path, capsys):
    out = tmp_path / "out.ipynb"
    code, err = replay(capsys, greet, "-o", out)
    assert code == 0, err
    nb = load(out)
    assert nb["metadata"]["tactus"]["procedures"]["greet"]["output"] == {"text": "hello, Ada", "sent": True}
    shown = outputs_text(nb["cells"][1])  # the answered cards, as static output
    assert '[Tactus] Your name? -> Answered "Ada"' in shown and "(recorded)" in shown

    # A person edits the recorded answer in the JSON: the replay uses it.
    for entry in nb["metadata"]["tactus"]["procedures"]["greet"]["checkpoints"]:
        if entry["name"] == "Your name?":
            entry["value"] = "Grace"
    edited = tmp_path / "edited.ipynb"
    edited.write_text(json.dumps(nb))
    code, err = replay(capsys, edited, "--inplace")
    assert code == 0, err
    assert load(edited)["metadata"]["tactus"]["procedures"]["greet"]["output"]["text"] == "hello, Grace"


def test_missing_answer_exits_2_at_once(greet: Path, tmp_path: Path):
    nb = load(greet)
    checkpoints = nb["metadata"]["tactus"]["procedures"]["greet"]["checkpoints"]
    nb["metadata"]["tactus"]["procedures"]["greet"]["checkpoints"] = [
        c for c in checkpoints if c["name"] != "Send the greeting?"
    ]
    path = tmp_path / "unanswered.ipynb"
    path.write_text(json.dumps(nb))
    out = tmp_path / "out.ipynb"
    run = run_cli("replay", path, "-o", out)
    assert run.returncode == 2, run.stderr
    assert run.elapsed < 20
    lines = run.stderr.splitlines()
    assert lines[0] == f'{path} cell 2, procedure "greet": Human.approve "Send the greeting?" has no recorded answer'
    assert "--answer 'Send the greeting?=VALUE'" in lines[1]
    assert wait_gone(run.kernels) == []

    # --answer supplies it, and the answer is recorded in the output.
    run = run_cli("replay", path, "-o", out, "--answer", "Send the greeting?=false")
    assert run.returncode == 0, run.stderr
    rec = load(out)["metadata"]["tactus"]["procedures"]["greet"]
    assert rec["output"] == {"text": "hello, Ada", "sent": False}
    [entry] = [c for c in rec["checkpoints"] if c["name"] == "Send the greeting?"]
    assert entry["value"] is False and entry["kind"] == "human" and entry["request"] == "approve"


def test_answers_file(greet: Path, tmp_path: Path, capsys):
    nb = load(greet)
    nb["metadata"]["tactus"]["procedures"]["greet"]["checkpoints"] = []
    path = tmp_path / "blank.ipynb"
    path.write_text(json.dumps(nb))
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps({"Your name?": "Grace", "Send the greeting?": True}))
    out = tmp_path / "out.ipynb"
    code, err = replay(capsys, path, "-o", out, "--answers", answers, "--answer", "Your name?=Lin")
    assert code == 0, err
    assert load(out)["metadata"]["tactus"]["procedures"]["greet"]["output"]["text"] == "hello, Lin"


def test_removed_human_request_is_a_divergence(greet: Path, tmp_path: Path, capsys):
    source = GREET.replace('  local ok = Human.approve({message = "Send the greeting?"})\n', "  local ok = true\n")
    path = edit_cell(greet, tmp_path / "no-approve.ipynb", 1, source)
    code, err = replay(capsys, path)
    assert code == 3, err
    row = next(line for line in err.splitlines() if line.split()[:2] == ["->", "2"])
    assert "human 'Send the greeting?'" in row and "the end of the procedure" in row


def test_replay_api_shuts_the_kernel_down(recorded: Path):
    """The engine the CLI and the plugin share reports the kernel it ran."""
    from tactus_kernel.replay.client import replay as run_replay
    from tactus_kernel.replay.notebook_io import prepare, read_notebook
    from tactus_kernel.replay.outcome import ReplayOptions

    nb = read_notebook(recorded)
    options = ReplayOptions()
    prepare(nb, options)
    result = asyncio.run(run_replay(nb, options, recorded.parent))
    assert result.exit_code == 0 and result.kernel_pid
    assert wait_gone({result.kernel_pid}) == []
    assert [c.procedures for c in result.cells] == [[], ["release"], [nb.cells[3]["id"]]]


BROKEN_KERNEL = """
import sys
from ipykernel.kernelapp import IPKernelApp
from tactus_kernel.jupyter.kernel import TactusKernel


class BrokenKernel(TactusKernel):
    async def do_execute(self, code, *args, **kwargs):
        if "BREAK" in code:
            raise RuntimeError("simulated bug in the kernel")
        return await super().do_execute(code, *args, **kwargs)


IPKernelApp.launch_instance(kernel_class=BrokenKernel)
"""


def test_a_kernel_that_never_replies_fails_the_cell(recorded: Path, tmp_path: Path, monkeypatch):
    """ipykernel sends no execute_reply when its handler raises; a replay
    must not wait for it forever, and shows the kernel's log."""
    from tactus_kernel.replay import client as replay_client
    from tactus_kernel.replay.notebook_io import prepare, read_notebook
    from tactus_kernel.replay.outcome import ReplayOptions
    from tactus_kernel.replay.report import describe_failure

    spec = tmp_path / "kernels" / "broken"
    spec.mkdir(parents=True)
    (tmp_path / "broken_kernel.py").write_text(BROKEN_KERNEL)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, str(tmp_path / "broken_kernel.py"), "-f", "{connection_file}"],
                "display_name": "broken",
                "language": "lua",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    monkeypatch.setattr(replay_client, "NO_REPLY_GRACE", 2.0)
    nb = read_notebook(edit_cell(recorded, tmp_path / "b.ipynb", 3, "-- BREAK"))
    options = ReplayOptions(kernel_name="broken")
    prepare(nb, options)
    t0 = time.monotonic()
    result = asyncio.run(replay_client.replay(nb, options, tmp_path))
    assert time.monotonic() - t0 < 30
    assert result.exit_code == 1 and result.failure is not None and result.failure.kind == "dead-kernel"
    text = describe_failure(result, "b.ipynb")
    assert text.startswith("b.ipynb cell 3: the kernel went idle without replying to this cell")
    assert "simulated bug in the kernel" in text
    assert result.kernel_pid and wait_gone({result.kernel_pid}) == []


def test_startup_timeout(recorded: Path, tmp_path: Path, monkeypatch):
    """A kernel that does not come up in time: exit 1 at once, nothing left running."""
    spec = tmp_path / "kernels" / "tactus"  # shadows the installed spec through JUPYTER_PATH
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-c", "import time; time.sleep(120)", "{connection_file}"],
                "display_name": "slow",
                "language": "lua",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    run = run_cli("replay", recorded, "--startup-timeout", "2")
    assert run.returncode == 1, run.stderr
    assert f"{recorded}: the tactus kernel did not start" in run.stderr
    assert run.elapsed < 30
    assert run.kernels and wait_gone(run.kernels) == []


EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_replaying_an_example_leaves_its_record_unchanged(example: Path, tmp_path: Path, capsys):
    """Issue 24: a replay whose calls all match writes nothing into the record:
    ``metadata.tactus`` of the output is byte for byte the recorded one."""
    out = tmp_path / example.name
    code, err = replay(capsys, example, "-o", out, "--cwd", example.parent)
    assert code == 0, err
    before, after = load(example), load(out)
    assert json.dumps(after["metadata"]["tactus"]) == json.dumps(before["metadata"]["tactus"])
    assert json.dumps(after["metadata"]["tactus"], sort_keys=True) == json.dumps(
        before["metadata"]["tactus"], sort_keys=True
    )
    # nbclient writes outputs and execution counts (and language_info, from the kernel); the rest is as it was
    assert {k: v for k, v in after["metadata"].items() if k != "language_info"} == {
        k: v for k, v in before["metadata"].items() if k != "language_info"
    }
    assert [(c["id"], c["source"], c["metadata"]) for c in after["cells"]] == [
        (c["id"], c["source"], c["metadata"]) for c in before["cells"]
    ]

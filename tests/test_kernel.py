"""The kernel over jupyter_client: what a notebook user sees."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path


def test_kernel_info_says_lua(kernel):
    info = kernel.kc.kernel_info(reply=True)["content"]
    assert info["language_info"]["name"] == "lua"
    assert info["language_info"]["codemirror_mode"] == "lua"
    assert info["implementation"] == "tactus"


def test_globals_persist_and_results_show(kernel):
    assert kernel.execute("x = 41").status == "ok"
    run = kernel.execute("x + 1")
    assert run.result == "42"


def test_a_table_result_has_a_text_table_and_html(kernel):
    run = kernel.execute('{{name = "a", n = 1}, {name = "b", n = 2}}')
    data = run.of_type("execute_result")[0]["content"]["data"]
    assert data["text/plain"].splitlines() == ["n  name", "-  ----", "1  a", "2  b"]
    assert "<table" in data["text/html"] and "<td>a</td>" in data["text/html"]
    assert "application/json" not in data  # JupyterLab would show a JSON tree instead of the table


def test_print_goes_to_stdout_and_log_warn_to_stderr(kernel):
    run = kernel.execute('print("hello")\nLog.warn("careful", {n = 1})')
    assert run.stdout == "hello\n"
    assert run.stderr == '[WARN] careful {"n": 1}\n'


def test_one_error_output_per_failure_with_cell_and_line(kernel):
    run = kernel.execute("local a = 1\nerror('broken')")
    assert run.status == "error"
    assert len(run.errors) == 1
    err = run.errors[0]
    assert err["ename"] == "LuaError"
    assert err["evalue"] == f"[cell {run.reply['content']['execution_count']}]:2: broken"
    assert run.reply["content"]["ename"] == "LuaError"


def test_syntax_error(kernel):
    run = kernel.execute("x = = 1")
    assert run.errors[0]["ename"] == "LuaSyntaxError"
    assert ":1:" in run.errors[0]["evalue"]


def test_interrupt_stops_an_infinite_loop_and_the_kernel_lives(kernel):
    run = kernel.submit('Human.notify("looping")\nwhile true do end')
    kernel.wait_until(lambda: bool(run.of_type("display_data")), timeout=30)  # the loop is next
    t0 = time.monotonic()
    kernel.interrupt()
    kernel.wait(run, timeout=10)
    assert time.monotonic() - t0 < 1.0
    assert run.errors[0]["ename"] == "KeyboardInterrupt"
    assert kernel.execute("1 + 1").result == "2"


def test_interrupt_while_sleeping(kernel):
    run = kernel.submit('Human.notify("sleeping")\nSleep(30)')
    kernel.wait_until(lambda: bool(run.of_type("display_data")), timeout=30)  # the Sleep is next
    kernel.interrupt()
    kernel.wait(run, timeout=10)
    assert run.errors[0]["ename"] == "KeyboardInterrupt"
    assert kernel.execute("1 + 1").result == "2"


def test_memory_bomb_is_survived(tmp_path):
    import os

    from kernel_driver import KernelDriver

    driver = KernelDriver(tmp_path, env={**os.environ, "TACTUS_MAX_MEMORY": str(64 * 2**20)})
    try:
        run = driver.execute('local t = {} for i = 1, 1e9 do t[i] = string.rep("x", 4096) .. i end', timeout=60)
        assert run.errors[0]["ename"] == "LuaMemoryError"
        assert "64 MiB" in run.errors[0]["evalue"]
        assert driver.execute("1 + 1").result == "2"
    finally:
        driver.shutdown()


def test_a_shutdown_request_ends_the_kernel_promptly(tmp_path):
    """A client's shutdown (nbclient's at the end of every replay) exits the
    kernel by itself, with status 0, in a fraction of a second. After the
    reply ipykernel's control thread flushes the output streams and
    publishes a status through the IOPub thread while the main thread stops
    it; in one exit of three or four the kernel hung there until the
    manager sent SIGTERM 1.5 s later (exit status -15)."""
    from kernel_driver import KernelDriver

    times = []
    for _ in range(4):
        driver = KernelDriver(tmp_path)
        assert driver.execute('print("out") return 1').result == "1"
        process = driver.km.provisioner.process  # type: ignore[union-attr]
        driver.kc.stop_channels()
        t0 = time.perf_counter()
        driver.km.shutdown_kernel(now=False)
        times.append(time.perf_counter() - t0)
        assert process.wait(timeout=5) == 0
    assert max(times) < 1.2, times  # 0.1 to 0.3 s; the lost exits took 1.6 s


def test_completion_of_primitives_and_globals(kernel):
    kernel.execute("my_table = {alpha = 1, beta = 2}")
    reply = kernel.kc.complete("Human.a", 7, reply=True)["content"]
    assert "approve" in reply["matches"] and reply["cursor_start"] == 6
    reply = kernel.kc.complete("Human.", 6, reply=True)["content"]
    assert {"approve", "input", "review", "escalate", "notify"} <= set(reply["matches"])
    reply = kernel.kc.complete("my_table.b", 10, reply=True)["content"]
    assert reply["matches"] == ["beta"]
    reply = kernel.kc.complete("whi", 3, reply=True)["content"]
    assert "while" in reply["matches"]
    reply = kernel.kc.complete("Ste", 3, reply=True)["content"]
    assert "Step" in reply["matches"]


def test_inspection_shows_docs(kernel):
    reply = kernel.kc.inspect("Step.run", 6, reply=True)["content"]
    assert reply["found"] and "record" in reply["data"]["text/plain"]
    reply = kernel.kc.inspect("Human.approve", 8, reply=True)["content"]
    assert "Approve / Reject" in reply["data"]["text/plain"]


def test_is_complete(kernel):
    def status(code: str) -> str:
        msg_id = kernel.kc.is_complete(code)
        while True:  # skip replies to earlier requests (e.g. the start-up kernel_info)
            reply = kernel.kc.get_shell_msg(timeout=10)
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply["content"]["status"]

    assert status("function f()") == "incomplete"
    assert status("x = = 1") == "invalid"
    assert status("x = 1") == "complete"
    assert status("%tactus records") == "complete"


PROC = """
procedure({name = "demo"}, function()
  local v = Step.run("pick", function() print("computing"); return 42 end)
  return {v = v}
end)
"""


def test_rerunning_a_procedure_cell_replays_and_reset_starts_fresh(kernel):
    first = kernel.execute(PROC, cell_id="c1")
    assert first.stdout.count("computing") == 1
    assert first.result == "{v = 42}"
    again = kernel.execute(PROC, cell_id="c1")
    assert "computing" not in again.stdout and again.result == "{v = 42}"
    records = kernel.execute("%tactus records")
    assert "demo" in records.of_type("display_data")[0]["content"]["data"]["text/plain"]
    reset = kernel.execute("%tactus reset demo")
    assert "Forgot the checkpoints of: demo" in reset.stdout
    fresh = kernel.execute(PROC, cell_id="c1")
    assert "computing" in fresh.stdout


def test_run_magic_gives_params(kernel):
    kernel.execute(
        'procedure({name = "greet", params = {who = {type = "string", default = "world"}}}, '
        'function() return {text = "hi " .. params.who} end)'
    )
    run = kernel.execute("%tactus run greet who=Ada")
    assert run.result == '{text = "hi Ada"}'
    bad = kernel.execute("%tactus run greet whom=Ada")
    assert bad.errors[0]["ename"] == "ParamError"


def test_unknown_magic_is_a_usage_error(kernel):
    run = kernel.execute("%tactus frobnicate")
    assert run.errors[0]["ename"] == "UsageError"


def test_without_an_extension_the_kernel_says_once_that_nothing_is_saved(kernel):
    first = kernel.execute(PROC, cell_id="c1")
    assert "will not be saved into the notebook" in first.stderr
    second = kernel.execute(PROC, cell_id="c2")
    assert "will not be saved" not in second.stderr


def test_with_the_comm_open_updates_arrive_batched(kernel):
    kernel.open_tactus(None)
    run = kernel.execute(
        'procedure({name = "many"}, function()\n'
        '  for i = 1, 2000 do Step.run("item_" .. i, function() return i end) end\n'
        "  return {n = 2000}\nend)",
        cell_id="c1",
    )
    assert run.status == "ok"
    assert "will not be saved" not in run.stderr
    kernel.drain(0.3)
    ops = kernel.tactus_ops()
    assert 1 <= len(ops) <= 5, len(ops)
    final = ops[-1]["procedures"]["many"]
    assert len(final["checkpoints"]) == 2000 and final["status"] == "completed"


def test_stored_metadata_replays_after_a_restart(kernel):
    stored = {
        "version": 1,
        "procedures": {
            "demo": {"checkpoints": [{"kind": "step", "name": "pick", "value": 7, "at": "2026-01-01T00:00:00.000Z"}]}
        },
    }
    kernel.open_tactus(stored)
    run = kernel.execute(PROC, cell_id="c1")
    assert "computing" not in run.stdout
    assert run.result == "{v = 7}"


def test_corrupt_metadata_gives_one_warning_and_is_not_overwritten(kernel):
    kernel.open_tactus({"version": 99, "procedures": "nope"})
    run = kernel.execute("1 + 1")
    assert "cannot be used" in run.stderr and "metadata.tactus.version" in run.stderr
    assert any(op.get("op") == "warning" for op in kernel.tactus_ops())
    run2 = kernel.execute("2 + 2")
    assert "cannot be used" not in run2.stderr


def test_install_command_writes_a_kernelspec(tmp_path: Path):
    out = subprocess.run(
        [sys.executable, "-m", "tactus_kernel", "install", "--prefix", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    spec = json.loads((tmp_path / "share/jupyter/kernels/tactus/kernel.json").read_text())
    assert spec["display_name"] == "Tactus (Lua)" and spec["language"] == "lua"
    assert spec["argv"][0] == sys.executable
    assert "Installed" in out.stdout


def test_pip_install_ships_the_kernelspec():
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("tactus")
    assert spec.display_name == "Tactus (Lua)"
    assert spec.language == "lua"


def test_a_huge_output_is_truncated_with_a_note(kernel):
    code = 'local line = string.rep("x", 1023)\nfor i = 1, 3 * 1024 do print(line) end'  # 3 MiB
    run = kernel.execute(code, timeout=60)
    assert run.status == "ok"
    assert 2 * 2**20 - 4096 <= len(run.stdout) <= 2 * 2**20
    assert "[output truncated: this cell printed more than 2 MiB" in run.stderr
    assert kernel.execute("1 + 1").result == "2"

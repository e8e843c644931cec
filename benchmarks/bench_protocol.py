"""Bytes the kernel sends on the ``tactus`` comm for a big procedure (issue 24).

    python benchmarks/bench_protocol.py [--steps 50000] [--value 1000]

A procedure of STEPS steps, each recording a VALUE-byte string, run on a
real kernel opened as the lab extension opens it (protocol 1.1): once
computing without a pause, once yielding (``Sleep(0)``) every 50 steps so
the 0.25 s update timer fires while it runs, and then run again, which only
replays. Prints the ops and the bytes of their JSON for each. Run it with
PYTHONPATH pointing at another checkout to measure that one (the kernel
inherits the environment).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from typing import Any

from tactus_kernel.testing import KernelDriver

CODE = """
procedure({name = "%(name)s"}, function()
  local v = string.rep("x", %(value)d)
  for i = 1, %(steps)d do
    Step.run("s" .. i, function() return v end)
    if %(pause)s and i %% 50 == 0 then Sleep(0) end
  end
  return {n = %(steps)d}
end)
"""


def sent(kernel: KernelDriver) -> tuple[list[str], int]:
    """The record ops received since the last call (and forget them)."""
    ops, size = [], 0
    for m in kernel.comm_msgs:
        data = m["content"].get("data") or {}
        if m["msg_type"] == "comm_msg" and "op" in data:
            ops.append(str(data["op"]))
            size += len(json.dumps(data))
    kernel.comm_msgs.clear()
    return ops, size


def measure(steps: int, value: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        kernel = KernelDriver(tmp)
        try:
            kernel.open_tactus(None, protocol="1.1")
            kernel.execute("x = 1")
            sent(kernel)
            for label, name, pause in (("first run", "big", "false"), ("first run, yield every 50", "paused", "true")):
                t0 = time.perf_counter()
                run = kernel.execute(CODE % {"name": name, "value": value, "steps": steps, "pause": pause}, timeout=600)
                assert run.status == "ok", run.reply
                kernel.drain(0.5)
                out[label] = (*sent(kernel), time.perf_counter() - t0)
            t0 = time.perf_counter()
            again = CODE % {"name": "paused", "value": value, "steps": steps, "pause": "true"}
            run = kernel.execute(again, timeout=600)
            assert run.status == "ok", run.reply
            kernel.drain(0.5)
            out["re-run (replays)"] = (*sent(kernel), time.perf_counter() - t0)
        finally:
            kernel.shutdown()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--value", type=int, default=1000)
    args = parser.parse_args()
    for label, (ops, size, seconds) in measure(args.steps, args.value).items():
        kinds = ", ".join(f"{ops.count(k)} {k}" for k in sorted(set(ops))) or "no op"
        print(f"{label:28s} {size / 1e6:9.1f} MB  {kinds:24s} {seconds:6.1f} s")


if __name__ == "__main__":
    main()

"""Agent turn overhead counted, not timed: instructions under callgrind.

    python benchmarks/count_agents.py [--turns 20 40]

Why: timed, the kernel's share of a 20-turn conversation moves by 0.15 from
one process to the next (see ``bench_agents.measure``), so a change worth
0.01 cannot be seen. Valgrind's callgrind counts the instructions a region
executes, and with ``--cache-sim``/``--branch-sim`` the cache misses and
mispredicted branches of a simulated CPU, the same from run to run within
about 0.2%.

Each region runs in its own process, after the same warm-up as
``bench_agents.interleaved``: the kernel's cell of N quiet turns
(``bench_agents.CELL``), or N turns of the same agent called directly.
Only the region is counted: it runs inside libc's ``qsort`` (a one-shot
comparison callback), and callgrind collects only while inside
``*qsort*``. Two lengths split the kernel's extra into a cost per cell and
per turn.

The simulated caches are this machine kind's per core (32 KiB L1i, 48 KiB
L1d) with a 1 MiB last level standing in for the L2: callgrind simulates
two levels, and the L2 is where the kernel's and pydantic-ai's working sets
push each other out. ``cycles`` weighs the events with rough penalties
(L1 miss 5, L2 miss 30, mispredict 15): a model, not this CPU; timed, the
kernel's share has come out about twice what it says.

Needs valgrind (Debian: ``apt-get install valgrind``); takes about five
minutes on two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHES = ["--I1=32768,8,64", "--D1=49152,12,64", "--LL=1048576,16,64"]
EVENTS = {
    "instructions": "I   refs",
    "l1_misses": ("I1  misses", "D1  misses"),
    "l2_misses": "LL misses",
    "mispredicts": "Mispredicts",
}
WEIGHTS = {"instructions": 1, "l1_misses": 5, "l2_misses": 30, "mispredicts": 15}


def region(side: str, n: int) -> None:
    """Run one counted region in this process (under callgrind)."""
    sys.path.insert(0, str(HERE.parent))
    sys.path.insert(0, str(HERE))
    import bench_agents

    from tactus_kernel.engine.host import NullHost
    from tactus_kernel.features import default_runtime

    direct = bench_agents.DirectTurns(streaming=False)
    cell = bench_agents.kernel_cell(n, quiet=True)
    rt = default_runtime(root=tempfile.mkdtemp(), host=NullHost())
    loop = asyncio.new_event_loop()
    loop.run_until_complete(rt.execute(bench_agents.warm_cell(cell, n), "[warm]", "warm"))
    loop.run_until_complete(direct.agent.run("warm up"))

    async def counted() -> None:
        if side == "kernel":
            await rt.execute(cell, "[bench]", "bench")
        else:
            for _ in range(n):
                await direct.turn()

    loop.run_until_complete(direct.agent.run("warm up"))  # as bench_agents does after its collection
    gc.collect()
    ran: list[bool] = []

    def compare(_a: int, _b: int) -> int:
        if not ran:
            ran.append(True)
            loop.run_until_complete(counted())
        return 0

    callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)(compare)
    items = (ctypes.c_int * 2)(1, 2)
    ctypes.CDLL(None).qsort(items, 2, ctypes.sizeof(ctypes.c_int), callback)
    assert ran, "qsort did not call back"


def count(side: str, n: int) -> dict[str, int]:
    """Callgrind's totals for one region, in a process of its own."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            "valgrind",
            "--tool=callgrind",
            "--toggle-collect=*qsort*",
            "--cache-sim=yes",
            "--branch-sim=yes",
            *CACHES,
            f"--callgrind-out-file={tmp}/out",
            sys.executable,
            __file__,
            "--region",
            side,
            str(n),
        ]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        text = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stderr

    def total(label: str) -> int:
        found = re.search(re.escape(label) + r":\s+([\d,]+)", text)
        if found is None:
            raise RuntimeError(f"callgrind printed no '{label}':\n{text[-2000:]}")
        return int(found.group(1).replace(",", ""))

    out = {}
    for event, labels in EVENTS.items():
        out[event] = sum(total(label) for label in ((labels,) if isinstance(labels, str) else labels))
    out["cycles"] = sum(WEIGHTS[e] * out[e] for e in EVENTS)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, nargs=2, default=[20, 40], metavar=("SHORT", "LONG"))
    parser.add_argument("--region", nargs=2, metavar=("SIDE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.region:
        region(args.region[0], int(args.region[1]))
        return
    if shutil.which("valgrind") is None:
        sys.exit("count_agents needs valgrind (Debian: apt-get install valgrind)")
    regions = [(side, n) for n in args.turns for side in ("kernel", "direct")]
    with ThreadPoolExecutor(2) as pool:  # each region is a process of its own: two at a time on two cores
        counts = dict(zip(regions, pool.map(lambda r: count(*r), regions), strict=True))
    short, long = args.turns
    print(f"{'':>14} " + " ".join(f"{f'{n} turns':>22}" for n in args.turns) + f" {'a cell':>12} {'a turn':>10}")
    for event in (*EVENTS, "cycles"):
        cells = []
        extra = {}
        for n in args.turns:
            k, d = counts[("kernel", n)][event], counts[("direct", n)][event]
            extra[n] = k - d
            cells.append(f"{k / d:>8.4f}x ({(k - d) / 1e6:>8.2f}M)")
        per_turn = (extra[long] - extra[short]) / (long - short)
        per_cell = extra[short] - per_turn * short
        direct_turn = counts[("direct", short)][event] / short
        print(
            f"{event:>14} "
            + " ".join(f"{c:>22}" for c in cells)
            + f" {per_cell / 1e6:>11.2f}M {per_turn / 1e3:>9.0f}k  (a direct turn: {direct_turn / 1e6:.2f}M)"
        )


if __name__ == "__main__":
    main()
